// Token embedding lookup. tokens[rows] index rows of table[vocab,dim]; out is (rows,dim).
#include <string.h>

#include <omp.h>

#include "ops/ops.h"

// out[row] = table[tokens[row]]
void embedding_forward(float *out, const int *tokens, const float *table, int rows, int dim) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        memcpy(out + (size_t)r * dim, table + (size_t)tokens[r] * dim, sizeof(float) * dim);
}

// d_table[tokens[row]] += d_out[row]. A token may repeat, so threads split the columns
// (every thread walks all rows over its own slice of dim): no races, and the order of
// the additions is fixed, so the result does not depend on the thread count.
void embedding_backward(float *d_table, const float *d_out, const int *tokens, int rows, int dim) {
    #pragma omp parallel
    {
        int threads = omp_get_num_threads(), t = omp_get_thread_num();
        int c0 = (int)((long)dim * t / threads), c1 = (int)((long)dim * (t + 1) / threads);
        for (int r = 0; r < rows; r++) {
            float *dst = d_table + (size_t)tokens[r] * dim;
            const float *src = d_out + (size_t)r * dim;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}
