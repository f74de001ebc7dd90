// Row-wise ops: the linear layer (GEMMs through blas.h plus the bias), embedding,
// RMSNorm, RoPE, per-head embeddings. Sums over rows (bias, RMSNorm weight, embedding
// rows, per-head embedding) run in a fixed order, without atomics, so a step is
// reproducible bit for bit on one GPU.
#include <math.h>

#include "hip/backend.h"
#include "hip/blas.h"

// ---- column sums over rows, deterministic: partials over row slabs, then in order -------
enum { SLABS = 64 };

// Which column sum: of x (bias), of dy * x * rstd[row] (RMSNorm weight).
enum column_term { TERM_PLAIN, TERM_NORMALISED };

__global__ void column_partials_kernel(float *partials, const float *x, const float *dy, const float *rstd, int rows,
                                       int cols, int term) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, slab = blockIdx.y;
    if (col >= cols) return;
    int r0 = (int)((long)rows * slab / SLABS), r1 = (int)((long)rows * (slab + 1) / SLABS);
    double sum = 0.0;
    for (int r = r0; r < r1; r++) {
        size_t at = (size_t)r * cols + col;
        sum += term == TERM_PLAIN ? (double)x[at] : (double)(dy[at] * x[at] * rstd[r]);
    }
    partials[(size_t)slab * cols + col] = (float)sum;
}

__global__ void column_total_kernel(float *out, const float *partials, int cols) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    double sum = 0.0;
    for (int s = 0; s < SLABS; s++) sum += partials[(size_t)s * cols + col];
    out[col] += (float)sum;
}

static void column_sums_accumulate(float *out, const float *x, const float *dy, const float *rstd, int rows, int cols,
                                   int term) {
    if (rows <= 0 || cols <= 0) return;
    float *partials = gpu_workspace((size_t)SLABS * (size_t)cols);
    unsigned blocks = (unsigned)km_ceil_div(cols, GPU_THREADS);
    hipLaunchKernelGGL(column_partials_kernel, dim3(blocks, SLABS), dim3(GPU_THREADS), 0, 0, partials, x, dy, rstd,
                       rows, cols, term);
    GPU_CHECK_LAUNCH();
    hipLaunchKernelGGL(column_total_kernel, dim3(blocks), dim3(GPU_THREADS), 0, 0, out, partials, cols);
    GPU_CHECK_LAUNCH();
}

// ---- dense algebra ------------------------------------------------------------------
__global__ void broadcast_rows_kernel(float *out, const float *row, int rows, int cols) {
    size_t count = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        out[i] = row[i % cols];
}

extern "C" {

void gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
          const float *b, int ldb, float beta, float *c, int ldc) {
    blas_gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, gpu_bf16());
}

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int rows, int in_dim,
                    int out_dim) {
    float beta = 0.0f;
    if (bias != NULL && rows > 0) {
        size_t count = (size_t)rows * out_dim;
        hipLaunchKernelGGL(broadcast_rows_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, out, bias, rows,
                           out_dim);
        GPU_CHECK_LAUNCH();
        beta = 1.0f;
    }
    gemm(false, true, rows, out_dim, in_dim, 1.0f, inp, in_dim, weight, in_dim, beta, out, out_dim);
}

void linear_backward(float *d_inp, float *d_weight, float *d_bias, const float *d_out, const float *inp,
                     const float *weight, int rows, int in_dim, int out_dim) {
    if (d_inp != NULL) gemm(false, false, rows, in_dim, out_dim, 1.0f, d_out, out_dim, weight, in_dim, 1.0f, d_inp, in_dim);
    if (d_weight != NULL) gemm(true, false, out_dim, in_dim, rows, 1.0f, d_out, out_dim, inp, in_dim, 1.0f, d_weight, in_dim);
    if (d_bias != NULL) column_sums_accumulate(d_bias, d_out, NULL, NULL, rows, out_dim, TERM_PLAIN);
}

}  // extern "C"

// ---- embedding --------------------------------------------------------------------------
__global__ void embedding_forward_kernel(float *out, const int *tokens, const float *table, int rows, int dim,
                                         int vocab_start, int vocab_count) {
    size_t count = (size_t)rows * dim;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / dim), c = (int)(i % dim);
        int local = tokens[r] - vocab_start;
        out[i] = local >= 0 && local < vocab_count ? table[(size_t)local * dim + c] : 0.0f;
    }
}

// One thread per column walks every row in order (a token may repeat): no atomics, and
// the additions run in the CPU op's order.
__global__ void embedding_backward_kernel(float *d_table, const float *d_out, const int *tokens, int rows, int dim,
                                          int vocab_start, int vocab_count) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    for (int r = 0; r < rows; r++) {
        int local = tokens[r] - vocab_start;
        if (local >= 0 && local < vocab_count) d_table[(size_t)local * dim + c] += d_out[(size_t)r * dim + c];
    }
}

extern "C" void embedding_forward(float *out, const int *tokens, const float *table_local, int rows, int dim,
                                  int vocab_start, int vocab_count) {
    size_t count = (size_t)rows * dim;
    if (count == 0) return;
    hipLaunchKernelGGL(embedding_forward_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, out, tokens,
                       table_local, rows, dim, vocab_start, vocab_count);
    GPU_CHECK_LAUNCH();
}

extern "C" void embedding_backward(float *d_table_local, const float *d_out, const int *tokens, int rows, int dim,
                                   int vocab_start, int vocab_count) {
    if (rows <= 0 || dim <= 0) return;
    hipLaunchKernelGGL(embedding_backward_kernel, dim3((unsigned)km_ceil_div(dim, GPU_THREADS)), dim3(GPU_THREADS), 0,
                       0, d_table_local, d_out, tokens, rows, dim, vocab_start, vocab_count);
    GPU_CHECK_LAUNCH();
}

// ---- RMSNorm: one block per row -------------------------------------------------------
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *weight, int dim,
                                       float eps) {
    __shared__ double scratch[GPU_MAX_WARPS];
    size_t row = blockIdx.x;
    const float *x = inp + row * dim;
    double sum = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += (double)x[i] * x[i];
    sum = gpu_block_sum_double(sum, scratch);
    float s = (float)(1.0 / sqrt(sum / dim + (double)eps));
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[row * dim + i] = x[i] * s * weight[i];
    if (threadIdx.x == 0) rstd[row] = s;
}

__global__ void rmsnorm_backward_kernel(float *d_inp, const float *d_out, const float *inp, const float *weight,
                                        const float *rstd, int dim) {
    __shared__ double scratch[GPU_MAX_WARPS];
    size_t row = blockIdx.x;
    const float *x = inp + row * dim, *dy = d_out + row * dim;
    double dot = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += (double)dy[i] * weight[i] * x[i];
    dot = gpu_block_sum_double(dot, scratch);
    float s = rstd[row];
    float c = (float)(dot * s * s * s / dim);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) d_inp[row * dim + i] += s * weight[i] * dy[i] - x[i] * c;
}

extern "C" void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int rows, int dim,
                                float eps) {
    if (rows <= 0) return;
    hipLaunchKernelGGL(rmsnorm_forward_kernel, dim3(rows), dim3(GPU_THREADS), 0, 0, out, rstd, inp, weight, dim, eps);
    GPU_CHECK_LAUNCH();
}

extern "C" void rmsnorm_backward(float *d_inp, float *d_weight, const float *d_out, const float *inp,
                                 const float *weight, const float *rstd, int rows, int dim) {
    if (rows <= 0) return;
    if (d_inp != NULL) {
        hipLaunchKernelGGL(rmsnorm_backward_kernel, dim3(rows), dim3(GPU_THREADS), 0, 0, d_inp, d_out, inp, weight,
                           rstd, dim);
        GPU_CHECK_LAUNCH();
    }
    if (d_weight != NULL) column_sums_accumulate(d_weight, inp, d_out, rstd, rows, dim, TERM_NORMALISED);
}

// ---- RoPE ---------------------------------------------------------------------------------
__global__ void rope_tables_kernel(float *cos_table, float *sin_table, int max_positions, int head_dim, float theta) {
    int half = head_dim / 2;
    size_t count = (size_t)max_positions * half;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        int p = (int)(e / half), i = (int)(e % half);
        double angle = p * pow((double)theta, -2.0 * i / head_dim);
        cos_table[e] = (float)cos(angle);
        sin_table[e] = (float)sin(angle);
    }
}

// Token r of `tokens` sits at position positions[r] (decoding: one row per sequence) or,
// with positions NULL, at r % seq_len (training: [batch, seq_len] rows).
__global__ void rope_rotate_kernel(float *x, const float *cos_table, const float *sin_table, const int *positions,
                                   int tokens, int seq_len, int heads, int head_dim, float sign) {
    int half = head_dim / 2;
    size_t count = (size_t)tokens * heads * half;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(e % half);
        size_t th = e / half;  // token * heads + head
        size_t token = th / heads;
        int pos = positions ? positions[token] : (int)(token % seq_len);
        float *x1 = x + th * head_dim, *x2 = x1 + half;
        float c = cos_table[(size_t)pos * half + i], s = sign * sin_table[(size_t)pos * half + i];
        float a = x1[i], b = x2[i];
        x1[i] = a * c - b * s;
        x2[i] = b * c + a * s;
    }
}

extern "C" void rope_tables(float *cos_table, float *sin_table, int max_positions, int head_dim, float theta) {
    size_t count = (size_t)max_positions * (head_dim / 2);
    if (count == 0) return;
    hipLaunchKernelGGL(rope_tables_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, cos_table, sin_table,
                       max_positions, head_dim, theta);
    GPU_CHECK_LAUNCH();
}

static void rope_rotate(float *x, const float *cos_table, const float *sin_table, const int *positions, int batch,
                        int seq_len, int heads, int head_dim, float sign) {
    size_t count = (size_t)batch * seq_len * heads * (head_dim / 2);
    if (count == 0) return;
    hipLaunchKernelGGL(rope_rotate_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, x, cos_table, sin_table,
                       positions, batch * seq_len, seq_len, heads, head_dim, sign);
    GPU_CHECK_LAUNCH();
}

extern "C" void rope_forward(float *x, const float *cos_table, const float *sin_table, int batch, int seq_len,
                             int heads, int head_dim) {
    rope_rotate(x, cos_table, sin_table, NULL, batch, seq_len, heads, head_dim, 1.0f);
}

extern "C" void rope_backward(float *d_x, const float *cos_table, const float *sin_table, int batch, int seq_len,
                              int heads, int head_dim) {
    rope_rotate(d_x, cos_table, sin_table, NULL, batch, seq_len, heads, head_dim, -1.0f);
}

// Decoding: row b (heads x head_dim) at its own position positions[b].
extern "C" void rope_at_positions(float *x, const float *cos_table, const float *sin_table, const int *positions,
                                  int batch, int heads, int head_dim) {
    rope_rotate(x, cos_table, sin_table, positions, batch, 1, heads, head_dim, 1.0f);
}

// ---- per-head embeddings (mhe-add / mhe-mul) -------------------------------------------------
__global__ void head_embedding_forward_kernel(float *out, const float *inp, const float *emb, int rows, int heads,
                                              int head_dim, bool multiplicative) {
    size_t count = (size_t)rows * heads * head_dim;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        size_t j = e % ((size_t)heads * head_dim);  // head * head_dim + d
        size_t r = e / ((size_t)heads * head_dim);
        float x = inp[r * head_dim + j % head_dim];
        out[e] = multiplicative ? x * (1.0f + emb[j]) : x + emb[j];
    }
}

// d_inp[r, d] += sum_h d_out[r, h, d] (* (1 + emb[h, d])), heads summed in order.
__global__ void head_embedding_input_kernel(float *d_inp, const float *d_out, const float *emb, int rows, int heads,
                                            int head_dim, bool multiplicative) {
    size_t count = (size_t)rows * head_dim;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        size_t r = e / head_dim;
        int d = (int)(e % head_dim);
        float sum = 0.0f;
        for (int h = 0; h < heads; h++) {
            float g = d_out[(r * heads + h) * head_dim + d];
            sum += multiplicative ? g * (1.0f + emb[(size_t)h * head_dim + d]) : g;
        }
        d_inp[e] += sum;
    }
}

// d_emb[h, d] += sum_r d_out[r, h, d] (* inp[r, d]): one thread per (h, d), rows in order.
__global__ void head_embedding_weight_kernel(float *d_emb, const float *d_out, const float *inp, int rows, int heads,
                                             int head_dim, bool multiplicative) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, width = heads * head_dim;
    if (j >= width) return;
    double sum = 0.0;
    for (int r = 0; r < rows; r++) {
        float g = d_out[(size_t)r * width + j];
        sum += multiplicative ? (double)(g * inp[(size_t)r * head_dim + j % head_dim]) : (double)g;
    }
    d_emb[j] += (float)sum;
}

extern "C" void head_embedding_forward(float *out, const float *inp, const float *emb, int rows, int heads,
                                       int head_dim, bool multiplicative) {
    size_t count = (size_t)rows * heads * head_dim;
    if (count == 0) return;
    hipLaunchKernelGGL(head_embedding_forward_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, out, inp, emb,
                       rows, heads, head_dim, multiplicative);
    GPU_CHECK_LAUNCH();
}

extern "C" void head_embedding_backward(float *d_inp, float *d_emb, const float *d_out, const float *inp,
                                        const float *emb, int rows, int heads, int head_dim, bool multiplicative) {
    if (rows <= 0) return;
    if (d_inp != NULL) {
        size_t count = (size_t)rows * head_dim;
        hipLaunchKernelGGL(head_embedding_input_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, d_inp, d_out,
                           emb, rows, heads, head_dim, multiplicative);
        GPU_CHECK_LAUNCH();
    }
    if (d_emb != NULL) {
        hipLaunchKernelGGL(head_embedding_weight_kernel, dim3((unsigned)km_ceil_div(heads * head_dim, GPU_THREADS)),
                           dim3(GPU_THREADS), 0, 0, d_emb, d_out, inp, rows, heads, head_dim, multiplicative);
        GPU_CHECK_LAUNCH();
    }
}
