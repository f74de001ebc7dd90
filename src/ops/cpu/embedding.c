// Token embedding lookup over this rank's rows [vocab_start, vocab_start + vocab_count)
// of a [vocab, dim] table (the whole table on one rank; a vocab-parallel shard under
// tensor parallelism, DESIGN.md 7). tokens[rows]; out is (rows, dim).
#include <string.h>

#include <omp.h>

#include "ops/ops.h"

// out[row] = table_local[token - vocab_start] when this rank holds the token, else 0
// (the tensor-parallel group sums the shards' outputs).
void embedding_forward(float *out, const int *tokens, const float *table_local, int rows, int dim,
                       int vocab_start, int vocab_count) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int local = tokens[r] - vocab_start;
        if (local >= 0 && local < vocab_count)
            memcpy(out + (size_t)r * dim, table_local + (size_t)local * dim, sizeof(float) * dim);
        else
            memset(out + (size_t)r * dim, 0, sizeof(float) * dim);
    }
}

// d_table_local[token - vocab_start] += d_out[row] for the tokens this rank holds. A token
// may repeat, so threads split the columns (every thread walks all rows over its own
// slice of dim): no races, and the order of the additions is fixed, so the result does
// not depend on the thread count.
void embedding_backward(float *d_table_local, const float *d_out, const int *tokens, int rows, int dim,
                        int vocab_start, int vocab_count) {
    #pragma omp parallel
    {
        int threads = omp_get_num_threads(), t = omp_get_thread_num();
        int c0 = (int)((long)dim * t / threads), c1 = (int)((long)dim * (t + 1) / threads);
        for (int r = 0; r < rows; r++) {
            int local = tokens[r] - vocab_start;
            if (local < 0 || local >= vocab_count) continue;
            float *dst = d_table_local + (size_t)local * dim;
            const float *src = d_out + (size_t)r * dim;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}
