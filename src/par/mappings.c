// The region ops are pairs of four primitives (all-reduce, all-gather and reduce-scatter
// along the sequence, split along the sequence); a backward is its partner's forward.
#include "par/mappings.h"

#include "ops/ops.h"

// model_allocate reserves the largest shape, so this never allocates; a caller that did
// not reserve enough grows it here (an allocation the step-loop test sees).
static float *staging(process_grid *grid, size_t floats) {
    process_grid_reserve_staging(grid, floats);
    return grid->staging;
}

static void all_reduce(process_grid *grid, float *x, size_t count) {
    if (grid->tensor_size == 1) return;
    // MPI reads tensors from the host: wait for the kernels that wrote them (a GPU
    // backend's staging point; nothing on the CPU backend). The same before each call below.
    ops_to_host(x, x, count * sizeof(float));
    MPI_Allreduce(MPI_IN_PLACE, x, (int)count, MPI_FLOAT, MPI_SUM, grid->tensor);
    traffic_add(&grid->traffic, TRAFFIC_TP_ALL_REDUCE,
                traffic_all_reduce_bytes((double)count * sizeof(float), grid->tensor_size));
}

// MPI's gather/scatter work on rank-major blocks [tp][batch][seq/tp][width]; the model's
// layout is [batch][seq][width]. These move one layout to the other.
static void rank_major_from_full(float *blocks, const float *full, int tp, int batch, int seq_len, int width) {
    size_t piece = (size_t)(seq_len / tp) * (size_t)width, sequence = (size_t)seq_len * (size_t)width;
    for (int r = 0; r < tp; r++)
        copy_strided_rows(blocks + (size_t)r * batch * piece, piece, full + r * piece, sequence, (size_t)batch, piece);
}

static void full_from_rank_major(float *full, const float *blocks, int tp, int batch, int seq_len, int width) {
    size_t piece = (size_t)(seq_len / tp) * (size_t)width, sequence = (size_t)seq_len * (size_t)width;
    for (int r = 0; r < tp; r++)
        copy_strided_rows(full + r * piece, sequence, blocks + (size_t)r * batch * piece, piece, (size_t)batch, piece);
}

static void all_gather_sequence(process_grid *grid, float *full, const float *shard, int batch, int seq_len,
                                int width) {
    int tp = grid->tensor_size;
    size_t shard_floats = (size_t)batch * (size_t)(seq_len / tp) * (size_t)width;
    if (tp == 1) {
        copy_floats(full, shard, shard_floats);
        return;
    }
    float *blocks = staging(grid, shard_floats * (size_t)tp);
    ops_to_host((void *)shard, shard, shard_floats * sizeof(float));
    MPI_Allgather(shard, (int)shard_floats, MPI_FLOAT, blocks, (int)shard_floats, MPI_FLOAT, grid->tensor);
    full_from_rank_major(full, blocks, tp, batch, seq_len, width);
    traffic_add(&grid->traffic, TRAFFIC_TP_ALL_GATHER,
                traffic_all_gather_bytes((double)shard_floats * tp * sizeof(float), tp));
}

static void reduce_scatter_sequence(process_grid *grid, float *shard, const float *full, int batch, int seq_len,
                                    int width) {
    int tp = grid->tensor_size;
    size_t shard_floats = (size_t)batch * (size_t)(seq_len / tp) * (size_t)width;
    if (tp == 1) {
        copy_floats(shard, full, shard_floats);
        return;
    }
    float *blocks = staging(grid, shard_floats * (size_t)tp);
    rank_major_from_full(blocks, full, tp, batch, seq_len, width);
    ops_to_host(blocks, blocks, shard_floats * (size_t)tp * sizeof(float));
    MPI_Reduce_scatter_block(blocks, shard, (int)shard_floats, MPI_FLOAT, MPI_SUM, grid->tensor);
    traffic_add(&grid->traffic, TRAFFIC_TP_REDUCE_SCATTER,
                traffic_reduce_scatter_bytes((double)shard_floats * tp * sizeof(float), tp));
}

void copy_to_tensor_parallel_region_backward(process_grid *grid, float *grad, size_t count) {
    all_reduce(grid, grad, count);
}

void reduce_from_tensor_parallel_region_forward(process_grid *grid, float *x, size_t count) {
    all_reduce(grid, x, count);
}

void scatter_to_sequence_parallel_region_forward(const process_grid *grid, float *shard, const float *full, int batch,
                                                 int seq_len, int width) {
    int tp = grid->tensor_size, r = grid->tensor_rank;
    size_t piece = (size_t)(seq_len / tp) * (size_t)width, sequence = (size_t)seq_len * (size_t)width;
    copy_strided_rows(shard, piece, full + (size_t)r * piece, sequence, (size_t)batch, piece);
}

void gather_from_sequence_parallel_region_forward(process_grid *grid, float *full, const float *shard, int batch,
                                                  int seq_len, int width) {
    all_gather_sequence(grid, full, shard, batch, seq_len, width);
}

void gather_from_sequence_parallel_region_backward(process_grid *grid, float *d_shard, const float *d_full, int batch,
                                                   int seq_len, int width) {
    reduce_scatter_sequence(grid, d_shard, d_full, batch, seq_len, width);
}

void reduce_scatter_to_sequence_parallel_region_forward(process_grid *grid, float *shard, const float *full, int batch,
                                                        int seq_len, int width) {
    reduce_scatter_sequence(grid, shard, full, batch, seq_len, width);
}

void reduce_scatter_to_sequence_parallel_region_backward(process_grid *grid, float *d_full, const float *d_shard,
                                                         int batch, int seq_len, int width) {
    all_gather_sequence(grid, d_full, d_shard, batch, seq_len, width);
}
