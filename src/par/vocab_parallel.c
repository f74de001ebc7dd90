#include "par/vocab_parallel.h"

#include <math.h>
#include <string.h>

#include "ops/ops.h"

// The chunk is ops' (lm_head_scratch_floats sizes it for rows x vocab_local), at most
// MAX_CHUNK rows so the per-row statistics fit on the stack.
enum { MAX_CHUNK = 256 };

size_t vocab_parallel_scratch_floats(int rows, int vocab_local) { return lm_head_scratch_floats(rows, vocab_local); }

double vocab_parallel_cross_entropy(process_grid *grid, float *losses, float *d_hidden, float *d_weight_local,
                                    const float *hidden, const float *weight_local, const int *targets, int rows,
                                    int dim, int vocab_start, int vocab_local, float loss_scale, float *scratch) {
    bool want_gradient = d_hidden != NULL || d_weight_local != NULL;
    int chunk = (int)(lm_head_scratch_floats(rows, vocab_local) / (size_t)vocab_local);
    if (chunk > MAX_CHUNK) chunk = MAX_CHUNK;
    float row_max[MAX_CHUNK];
    double sums[MAX_CHUNK][2];  // [sum of exp(z - max), target logit] per row
    double total = 0.0;
    int tp = grid->tensor_size;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int n = rows - r0 < chunk ? rows - r0 : chunk;
        const float *h = hidden + (size_t)r0 * dim;
        int active = 0;
        for (int i = 0; i < n; i++) active += targets[r0 + i] >= 0;
        if (active == 0) {  // the same on every tp rank: targets are replicated
            if (losses != NULL) memset(losses + r0, 0, sizeof(float) * n);
            continue;
        }
        gemm(false, true, n, vocab_local, dim, 1.0f, h, dim, weight_local, dim, 0.0f, scratch, vocab_local);
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            const float *z = scratch + (size_t)i * vocab_local;
            float max = z[0];
            for (int j = 1; j < vocab_local; j++) max = z[j] > max ? z[j] : max;
            row_max[i] = max;
        }
        MPI_Allreduce(MPI_IN_PLACE, row_max, n, MPI_FLOAT, MPI_MAX, grid->tensor);
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            float *z = scratch + (size_t)i * vocab_local;
            int local_target = targets[r0 + i] - vocab_start;
            bool holds_target = targets[r0 + i] >= 0 && local_target >= 0 && local_target < vocab_local;
            sums[i][1] = holds_target ? (double)z[local_target] : 0.0;
            double sum = 0.0;
            for (int j = 0; j < vocab_local; j++) {
                z[j] = expf(z[j] - row_max[i]);
                sum += z[j];
            }
            sums[i][0] = sum;
        }
        MPI_Allreduce(MPI_IN_PLACE, &sums[0][0], 2 * n, MPI_DOUBLE, MPI_SUM, grid->tensor);
        traffic_add(&grid->traffic, TRAFFIC_TP_LOSS,
                    traffic_all_reduce_bytes((double)n * (sizeof(float) + 2 * sizeof(double)), tp));
        double chunk_loss = 0.0;
        #pragma omp parallel for schedule(static) reduction(+ : chunk_loss)
        for (int i = 0; i < n; i++) {
            float *z = scratch + (size_t)i * vocab_local;
            int target = targets[r0 + i], local_target = target - vocab_start;
            double loss = 0.0;
            if (target >= 0) {
                loss = (double)row_max[i] + log(sums[i][0]) - sums[i][1];
                if (want_gradient) {
                    float factor = (float)(loss_scale / sums[i][0]);
                    for (int j = 0; j < vocab_local; j++) z[j] *= factor;
                    if (local_target >= 0 && local_target < vocab_local) z[local_target] -= loss_scale;
                }
            } else if (want_gradient) {
                memset(z, 0, sizeof(float) * vocab_local);
            }
            if (losses != NULL) losses[r0 + i] = (float)loss;
            chunk_loss += loss;
        }
        total += chunk_loss;
        if (d_hidden != NULL)
            gemm(false, false, n, dim, vocab_local, 1.0f, scratch, vocab_local, weight_local, dim, 1.0f,
                 d_hidden + (size_t)r0 * dim, dim);
        if (d_weight_local != NULL)
            gemm(true, false, vocab_local, dim, n, 1.0f, scratch, vocab_local, h, dim, 1.0f, d_weight_local, dim);
    }
    return total;
}
