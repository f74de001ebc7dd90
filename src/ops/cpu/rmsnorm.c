// RMSNorm (Zhang & Sennrich 2019), as in Qwen2.5: no mean subtraction, no bias.
// inp, out, d_inp, d_out are (rows,dim); weight, d_weight are (dim); rstd is (rows).
#include <math.h>

#include "ops/ops.h"

// out = inp * rstd * weight, rstd[row] = 1 / sqrt(mean(inp[row]^2) + eps)
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                     int rows, int dim, float eps) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *x = inp + (size_t)r * dim;
        float *y = out + (size_t)r * dim;
        double sum = 0.0;
        #pragma omp simd reduction(+ : sum)
        for (int i = 0; i < dim; i++) sum += (double)x[i] * x[i];
        float s = (float)(1.0 / sqrt(sum / dim + (double)eps));
        for (int i = 0; i < dim; i++) y[i] = x[i] * s * weight[i];
        rstd[r] = s;
    }
}

enum { WEIGHT_BLOCK = 128 };  // columns of d_weight one task sums over all rows

// With y = x r w and r = (mean(x^2) + eps)^(-1/2):
//   d_x[i] += r w[i] dy[i] - x[i] r^3 / dim * sum_j dy[j] w[j] x[j]
//   d_w[i] += sum over rows of dy[i] x[i] r
void rmsnorm_backward(float *d_inp, float *d_weight, const float *d_out, const float *inp,
                      const float *weight, const float *rstd, int rows, int dim) {
    if (d_inp != NULL) {
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *x = inp + (size_t)r * dim, *dy = d_out + (size_t)r * dim;
            float *dx = d_inp + (size_t)r * dim;
            double dot = 0.0;
            #pragma omp simd reduction(+ : dot)
            for (int i = 0; i < dim; i++) dot += (double)dy[i] * weight[i] * x[i];
            float s = rstd[r];
            float c = (float)(dot * s * s * s / dim);
            for (int i = 0; i < dim; i++) dx[i] += s * weight[i] * dy[i] - x[i] * c;
        }
    }
    if (d_weight != NULL) {
        // Parallel over blocks of columns (not rows) so no two threads share an output.
        int blocks = (dim + WEIGHT_BLOCK - 1) / WEIGHT_BLOCK;
        #pragma omp parallel for schedule(static)
        for (int block = 0; block < blocks; block++) {
            int c0 = block * WEIGHT_BLOCK;
            int width = dim - c0 < WEIGHT_BLOCK ? dim - c0 : WEIGHT_BLOCK;
            double sum[WEIGHT_BLOCK] = {0};
            for (int r = 0; r < rows; r++) {
                const float *x = inp + (size_t)r * dim + c0, *dy = d_out + (size_t)r * dim + c0;
                float s = rstd[r];
                for (int i = 0; i < width; i++) sum[i] += (double)(dy[i] * x[i] * s);
            }
            for (int i = 0; i < width; i++) d_weight[c0 + i] += (float)sum[i];
        }
    }
}
