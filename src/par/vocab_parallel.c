// The vocab-parallel cross entropy is ops' lm_head_cross_entropy over this rank's
// vocabulary rows; what par/ adds is the reduction between its phases: two all-reduces
// over the tp group per chunk of rows, each counted in TRAFFIC_TP_LOSS.
#include "par/vocab_parallel.h"

#include "ops/ops.h"

static void combine_max(void *context, float *row_max, int n) {
    process_grid *grid = context;
    MPI_Allreduce(MPI_IN_PLACE, row_max, n, MPI_FLOAT, MPI_MAX, grid->tensor);
    traffic_add(&grid->traffic, TRAFFIC_TP_LOSS,
                traffic_all_reduce_bytes((double)n * sizeof(float), grid->tensor_size));
}

static void combine_sums(void *context, double *stats, int n) {
    process_grid *grid = context;
    MPI_Allreduce(MPI_IN_PLACE, stats, 2 * n, MPI_DOUBLE, MPI_SUM, grid->tensor);
    traffic_add(&grid->traffic, TRAFFIC_TP_LOSS,
                traffic_all_reduce_bytes((double)n * 2 * sizeof(double), grid->tensor_size));
}

double vocab_parallel_cross_entropy(process_grid *grid, float *losses, float *d_hidden, float *d_weight_local,
                                    const float *hidden, const float *weight_local, const int *targets, int rows,
                                    int dim, int vocab_start, int vocab_local, float loss_scale, float *scratch) {
    lm_head_vocab_shard shard = {vocab_start, combine_max, combine_sums, grid};
    return lm_head_cross_entropy(losses, d_hidden, d_weight_local, hidden, weight_local, targets, rows, dim,
                                 vocab_local, loss_scale, scratch, grid->tensor_size > 1 ? &shard : NULL);
}

void vocab_parallel_gather_logits(process_grid *grid, float *logits, const float *logits_local, int rows,
                                  int vocab_local) {
    int tp = grid->tensor_size;
    size_t block = (size_t)rows * (size_t)vocab_local, vocab = (size_t)vocab_local * (size_t)tp;
    if (tp == 1) {
        copy_floats(logits, logits_local, block);
        return;
    }
    process_grid_reserve_staging(grid, block * (size_t)tp);
    MPI_Allgather(logits_local, (int)block, MPI_FLOAT, grid->staging, (int)block, MPI_FLOAT, grid->tensor);
    traffic_add(&grid->traffic, TRAFFIC_TP_ALL_GATHER, traffic_all_gather_bytes((double)block * tp * sizeof(float), tp));
    // rank-major blocks [tp][rows][vocab_local] -> [rows][vocab]
    for (int r = 0; r < tp; r++)
        copy_strided_rows(logits + (size_t)r * vocab_local, vocab, grid->staging + (size_t)r * block,
                          (size_t)vocab_local, (size_t)rows, (size_t)vocab_local);
}
