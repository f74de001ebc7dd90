// Dense algebra on OpenBLAS: a row-major sgemm and the linear layer built from it.
// Weights follow the PyTorch nn.Linear layout, weight[out_dim, in_dim].
#include <cblas.h>
#include <string.h>

#include "ops/ops.h"

// c[m,n] = alpha * op(a) op(b) + beta * c; op(a) is m x k, op(b) is k x n.
void gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {  // nothing to multiply; BLAS would reject the leading dimensions
        for (int i = 0; i < m; i++) {
            float *ci = c + (size_t)i * ldc;
            for (int j = 0; j < n; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                transpose_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb,
                beta, c, ldc);
}

// out[rows,out_dim] = inp[rows,in_dim] weight[out_dim,in_dim]^T + bias[out_dim]
void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int rows, int in_dim, int out_dim) {
    float beta = 0.0f;
    if (bias != NULL) {  // start from the bias and let sgemm add the product to it
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) memcpy(out + (size_t)r * out_dim, bias, sizeof(float) * out_dim);
        beta = 1.0f;
    }
    gemm(false, true, rows, out_dim, in_dim, 1.0f, inp, in_dim, weight, in_dim, beta, out, out_dim);
}

// Column sums of d_out[rows,cols] added to d_bias[cols], in double, parallel over
// blocks of columns so no two threads touch the same output.
enum { BIAS_BLOCK = 128 };
static void column_sums_accumulate(float *d_bias, const float *d_out, int rows, int cols) {
    int blocks = (cols + BIAS_BLOCK - 1) / BIAS_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int block = 0; block < blocks; block++) {
        int c0 = block * BIAS_BLOCK;
        int width = cols - c0 < BIAS_BLOCK ? cols - c0 : BIAS_BLOCK;
        double sum[BIAS_BLOCK] = {0};
        for (int r = 0; r < rows; r++) {
            const float *row = d_out + (size_t)r * cols + c0;
            for (int c = 0; c < width; c++) sum[c] += row[c];
        }
        for (int c = 0; c < width; c++) d_bias[c0 + c] += (float)sum[c];
    }
}

// d_inp += d_out weight; d_weight += d_out^T inp; d_bias += column sums of d_out
void linear_backward(float *d_inp, float *d_weight, float *d_bias, const float *d_out,
                     const float *inp, const float *weight, int rows, int in_dim, int out_dim) {
    if (d_inp != NULL)
        gemm(false, false, rows, in_dim, out_dim, 1.0f, d_out, out_dim, weight, in_dim, 1.0f,
             d_inp, in_dim);
    if (d_weight != NULL)
        gemm(true, false, out_dim, in_dim, rows, 1.0f, d_out, out_dim, inp, in_dim, 1.0f,
             d_weight, in_dim);
    if (d_bias != NULL) column_sums_accumulate(d_bias, d_out, rows, out_dim);
}
