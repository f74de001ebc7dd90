// Attention with one map shared by the batch (rndembqk / fixedseqqk; ops.h): per query
// head, A_h = causal softmax(scale q_h k_g^T) of one sequence is formed in the caller's
// workspace by one GEMM and a row kernel, then applied to every sequence's values by
// GEMMs (strided views of the [seq, heads, head_dim] layouts: no packing). Backward
// recomputes A_h, forms dA_h = sum_b dO_h[b] v_g[b]^T, takes it through the softmax
// (dS = A (dA - rowsum(A dA))), and sends it to d_q, d_k and d_v by GEMMs. All products go
// through blas.h (bf16 inputs under train.precision = bf16); 2 L^2 floats of workspace.
#include <math.h>

#include "hip/backend.h"
#include "hip/blas.h"

// Row (i) of a [L, L] score block becomes its causal softmax; zeros above the diagonal.
__global__ void shared_softmax_rows_kernel(float *a, int seq_len) {
    __shared__ float max_scratch[GPU_MAX_WARPS];
    __shared__ double sum_scratch[GPU_MAX_WARPS];
    int i = blockIdx.x;
    float *row = a + (size_t)i * seq_len;
    float max = -INFINITY;
    for (int t = threadIdx.x; t <= i; t += blockDim.x) max = fmaxf(max, row[t]);
    max = gpu_block_max(max, max_scratch);
    double sum = 0.0;
    for (int t = threadIdx.x; t <= i; t += blockDim.x) {
        row[t] = expf(row[t] - max);
        sum += row[t];
    }
    sum = gpu_block_sum_double(sum, sum_scratch);
    float inv = (float)(1.0 / sum);
    for (int t = threadIdx.x; t < seq_len; t += blockDim.x) row[t] = t <= i ? row[t] * inv : 0.0f;
}

// dA (row i) becomes the score gradient dS = A (dA - sum_t A dA), zero above the diagonal.
__global__ void shared_softmax_backward_rows_kernel(float *d_a, const float *a, int seq_len) {
    __shared__ double scratch[GPU_MAX_WARPS];
    int i = blockIdx.x;
    const float *p = a + (size_t)i * seq_len;
    float *g = d_a + (size_t)i * seq_len;
    double dot = 0.0;
    for (int t = threadIdx.x; t <= i; t += blockDim.x) dot += (double)p[t] * g[t];
    dot = gpu_block_sum_double(dot, scratch);
    for (int t = threadIdx.x; t < seq_len; t += blockDim.x) g[t] = t <= i ? p[t] * (g[t] - (float)dot) : 0.0f;
}

struct shared_shape {
    int batch, seq_len, heads, kv_heads, head_dim;
    int q_dim, kv_dim;
    float scale;
};

static shared_shape make_shape(int batch, int seq_len, int heads, int kv_heads, int head_dim, float scale) {
    shared_shape s = {batch, seq_len, heads, kv_heads, head_dim, heads * head_dim, kv_heads * head_dim, scale};
    return s;
}

// a[L, L] = A_h (probabilities) of query head h.
static void form_map(float *a, const float *q, const float *k, int h, const shared_shape &s) {
    int g = km_kv_head(h, s.heads, s.kv_heads), L = s.seq_len, D = s.head_dim;
    blas_gemm(false, true, L, L, D, s.scale, q + (size_t)h * D, s.q_dim, k + (size_t)g * D, s.kv_dim, 0.0f, a, L,
              gpu_bf16());
    hipLaunchKernelGGL(shared_softmax_rows_kernel, dim3(L), dim3(GPU_THREADS), 0, 0, a, L);
    GPU_CHECK_LAUNCH();
}

extern "C" size_t shared_attention_workspace_floats(int batch, int seq_len, int heads, int kv_heads, int head_dim) {
    (void)heads;  // the CPU backend's formula (>= 2 L^2): a model sized on either backend fits both
    size_t L = (size_t)seq_len, packed = (size_t)(batch > 1 ? batch : 1) * (size_t)head_dim;
    return L * packed * (size_t)kv_heads + 2 * L * packed + 2 * L * L;
}

extern "C" void shared_attention_forward(float *out, const float *q, const float *k, const float *v, int batch,
                                         int seq_len, int heads, int kv_heads, int head_dim, float scale,
                                         float *workspace) {
    if (batch <= 0 || seq_len <= 0) return;
    shared_shape s = make_shape(batch, seq_len, heads, kv_heads, head_dim, scale);
    size_t L = (size_t)seq_len, D = (size_t)head_dim;
    bool bf16 = gpu_bf16();
    for (int h = 0; h < heads; h++) {
        int g = km_kv_head(h, heads, kv_heads);
        form_map(workspace, q, k, h, s);
        for (int b = 0; b < batch; b++)  // out[b]_h = A_h v[b]_g
            blas_gemm(false, false, seq_len, head_dim, seq_len, 1.0f, workspace, seq_len,
                      v + (size_t)b * L * s.kv_dim + g * D, s.kv_dim, 0.0f, out + (size_t)b * L * s.q_dim + h * D,
                      s.q_dim, bf16);
    }
}

extern "C" void shared_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q,
                                          const float *k, const float *v, int batch, int seq_len, int heads,
                                          int kv_heads, int head_dim, float scale, float *workspace) {
    if (batch <= 0 || seq_len <= 0) return;
    shared_shape s = make_shape(batch, seq_len, heads, kv_heads, head_dim, scale);
    size_t L = (size_t)seq_len, D = (size_t)head_dim;
    bool bf16 = gpu_bf16();
    float *a = workspace, *d_a = workspace + L * L;
    for (int h = 0; h < heads; h++) {
        int g = km_kv_head(h, heads, kv_heads);
        form_map(a, q, k, h, s);
        for (int b = 0; b < batch; b++) {
            const float *d_out_b = d_out + (size_t)b * L * s.q_dim + h * D;
            const float *v_b = v + (size_t)b * L * s.kv_dim + g * D;
            // dA_h += dO[b]_h v[b]_g^T
            blas_gemm(false, true, seq_len, seq_len, head_dim, 1.0f, d_out_b, s.q_dim, v_b, s.kv_dim, b ? 1.0f : 0.0f,
                      d_a, seq_len, bf16);
            if (d_v != NULL)  // d_v[b]_g += A_h^T dO[b]_h
                blas_gemm(true, false, seq_len, head_dim, seq_len, 1.0f, a, seq_len, d_out_b, s.q_dim, 1.0f,
                          d_v + (size_t)b * L * s.kv_dim + g * D, s.kv_dim, bf16);
        }
        hipLaunchKernelGGL(shared_softmax_backward_rows_kernel, dim3(seq_len), dim3(GPU_THREADS), 0, 0, d_a, a,
                           seq_len);
        GPU_CHECK_LAUNCH();
        if (d_q != NULL)  // d_q_h += scale dS k_g
            blas_gemm(false, false, seq_len, head_dim, seq_len, scale, d_a, seq_len, k + g * D, s.kv_dim, 1.0f,
                      d_q + h * D, s.q_dim, bf16);
        if (d_k != NULL)  // d_k_g += scale dS^T q_h
            blas_gemm(true, false, seq_len, head_dim, seq_len, scale, d_a, seq_len, q + h * D, s.q_dim, 1.0f,
                      d_k + g * D, s.kv_dim, bf16);
    }
}

extern "C" void shared_attention_map(float *probs, const float *q, const float *k, int seq_len, int heads,
                                     int kv_heads, int head_dim, float scale) {
    shared_shape s = make_shape(1, seq_len, heads, kv_heads, head_dim, scale);
    for (int h = 0; h < heads; h++) form_map(probs + (size_t)h * seq_len * seq_len, q, k, h, s);
}
