// Per-head embeddings of multi-head embedding attention (mhe-add / mhe-mul, DESIGN.md 5):
// one shared projection inp[rows, head_dim] is expanded into heads by a learned vector
// per head, out[r, j] = inp[r] + emb[j] (add) or inp[r] * (1 + emb[j]) (mul).
// d_inp is reduced over heads (one task per row), d_emb over rows (one task per head),
// so neither has races and the sums do not depend on the thread count.
#include "ops/ops.h"

enum { PARALLEL_MIN = 1 << 14 };

void head_embedding_forward(float *out, const float *inp, const float *emb, int rows, int heads, int head_dim,
                            bool multiplicative) {
    long n = (long)rows * heads * head_dim;
    #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = inp + (size_t)r * head_dim;
        for (int j = 0; j < heads; j++) {
            const float *e = emb + (size_t)j * head_dim;
            float *y = out + ((size_t)r * heads + j) * head_dim;
            #pragma omp simd
            for (int i = 0; i < head_dim; i++) y[i] = multiplicative ? x[i] * (1.0f + e[i]) : x[i] + e[i];
        }
    }
}

// d_inp[r] += sum_j d_out[r,j] (* (1 + emb[j]));  d_emb[j] += sum_r d_out[r,j] (* inp[r])
void head_embedding_backward(float *d_inp, float *d_emb, const float *d_out, const float *inp, const float *emb,
                             int rows, int heads, int head_dim, bool multiplicative) {
    long n = (long)rows * heads * head_dim;
    if (d_inp != NULL) {
        #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (int r = 0; r < rows; r++) {
            float *dx = d_inp + (size_t)r * head_dim;
            for (int j = 0; j < heads; j++) {
                const float *e = emb + (size_t)j * head_dim, *dy = d_out + ((size_t)r * heads + j) * head_dim;
                #pragma omp simd
                for (int i = 0; i < head_dim; i++) dx[i] += multiplicative ? dy[i] * (1.0f + e[i]) : dy[i];
            }
        }
    }
    if (d_emb != NULL) {
        #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (int j = 0; j < heads; j++) {
            float *de = d_emb + (size_t)j * head_dim;
            for (int r = 0; r < rows; r++) {
                const float *x = inp + (size_t)r * head_dim, *dy = d_out + ((size_t)r * heads + j) * head_dim;
                #pragma omp simd
                for (int i = 0; i < head_dim; i++) de[i] += multiplicative ? dy[i] * x[i] : dy[i];
            }
        }
    }
}
