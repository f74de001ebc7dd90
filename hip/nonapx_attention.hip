// The nonapx mixer's attention (ops.h) on the GPU: the per-token scores
// g_t = scale silu(q_t) . k_t in parallel, then one scan per (sequence, head) as in the CPU
// op (src/ops/cpu/nonapx_attention.c, which derives the recurrences): a block of
// SCAN_THREADS threads walks the sequence, each thread holding PER_THREAD elements of the
// running output (forward) or of R_t (backward); the scalar recurrences (running max and
// sum, the decay, c_t) are computed identically by every thread from the same values, and
// the two dot products of a backward step are block sums in a fixed order. Backward runs
// one block per (sequence, kv head), scanning its query heads in turn, so no two blocks
// write the same d_k / d_v rows. Head sizes up to SCAN_THREADS * PER_THREAD = 256.
#include <math.h>

#include "hip/backend.h"

enum { SCAN_THREADS = 64, PER_THREAD = 4 };

// score[b, h, t] = scale silu(q_t,h) . k_t,g: one thread per (b, h, t).
__global__ void nonapx_score_kernel(float *score, const float *q, const float *k, int batch, int seq_len, int heads,
                                    int kv_heads, int head_dim, float scale) {
    size_t count = (size_t)batch * heads * seq_len;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(e % seq_len), h = (int)((e / seq_len) % heads), b = (int)(e / ((size_t)seq_len * heads));
        const float *qt = q + km_token_offset(b, t, h, seq_len, heads, head_dim);
        const float *kt = k + km_token_offset(b, t, km_kv_head(h, heads, kv_heads), seq_len, kv_heads, head_dim);
        float dot = 0.0f;
        for (int d = 0; d < head_dim; d++) dot += qt[d] * gpu_sigmoid(qt[d]) * kt[d];
        score[e] = scale * dot;
    }
}

__global__ void nonapx_forward_scan_kernel(float *out, float *logsumexp, const float *score, const float *v,
                                           int seq_len, int heads, int kv_heads, int head_dim) {
    int h = blockIdx.x, b = blockIdx.y, g = km_kv_head(h, heads, kv_heads);
    const float *gs = score + km_lse_offset(b, h, 0, heads, seq_len);
    float *lse = logsumexp + km_lse_offset(b, h, 0, heads, seq_len);
    float o[PER_THREAD] = {0.0f, 0.0f, 0.0f, 0.0f};
    float max = -INFINITY;
    double sum = 0.0;
    for (int t = 0; t < seq_len; t++) {
        float gt = gs[t];
        double old, w;  // the old sum in the new frame, and the new term (as the CPU op)
        if (gt > max) {
            old = t ? sum * exp((double)max - gt) : 0.0;
            w = 1.0;
            max = gt;
        } else {
            old = sum;
            w = exp((double)gt - max);
        }
        sum = old + w;
        float keep = (float)(old / sum), take = (float)(w / sum);
        const float *vt = v + km_token_offset(b, t, g, seq_len, kv_heads, head_dim);
        float *ot = out + km_token_offset(b, t, h, seq_len, heads, head_dim);
#pragma unroll
        for (int j = 0; j < PER_THREAD; j++) {
            int d = threadIdx.x + j * SCAN_THREADS;
            if (d >= head_dim) continue;
            o[j] = (t ? o[j] * keep : 0.0f) + vt[d] * take;
            ot[d] = o[j];
        }
        if (threadIdx.x == 0) lse[t] = max + (float)log(sum);
    }
}

__global__ void nonapx_backward_scan_kernel(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out,
                                            const float *score, const float *logsumexp, const float *q, const float *k,
                                            const float *v, int seq_len, int heads, int kv_heads, int head_dim,
                                            float scale) {
    __shared__ double scratch[GPU_MAX_WARPS];
    int kv = blockIdx.x, b = blockIdx.y, group = heads / kv_heads;
    for (int h = kv * group; h < (kv + 1) * group; h++) {
        const float *gs = score + km_lse_offset(b, h, 0, heads, seq_len);
        const float *lse = logsumexp + km_lse_offset(b, h, 0, heads, seq_len);
        float r[PER_THREAD] = {0.0f, 0.0f, 0.0f, 0.0f};
        double c = 0.0;
        for (int t = seq_len - 1; t >= 0; t--) {
            size_t qrow = km_token_offset(b, t, h, seq_len, heads, head_dim);
            size_t krow = km_token_offset(b, t, kv, seq_len, kv_heads, head_dim);
            float decay = t + 1 < seq_len ? expf(lse[t] - lse[t + 1]) : 0.0f;
            float o_dot = 0.0f, v_dot = 0.0f;
#pragma unroll
            for (int j = 0; j < PER_THREAD; j++) {
                int d = threadIdx.x + j * SCAN_THREADS;
                if (d >= head_dim) continue;
                r[j] = r[j] * decay + d_out[qrow + d];
                o_dot += d_out[qrow + d] * out[qrow + d];
                v_dot += v[krow + d] * r[j];
            }
            double o_total = gpu_block_sum_double(o_dot, scratch);
            double v_total = gpu_block_sum_double(v_dot, scratch);
            c = c * decay + o_total;
            float a = expf(gs[t] - lse[t]);
            float dg = scale * a * ((float)v_total - (float)c);
#pragma unroll
            for (int j = 0; j < PER_THREAD; j++) {
                int d = threadIdx.x + j * SCAN_THREADS;
                if (d >= head_dim) continue;
                float qd = q[qrow + d], s = gpu_sigmoid(qd);
                d_v[krow + d] += a * r[j];
                d_k[krow + d] += dg * qd * s;
                d_q[qrow + d] += dg * k[krow + d] * s * (1.0f + qd * (1.0f - s));
            }
        }
    }
}

static void check_head_dim(int head_dim) {
    if (head_dim > SCAN_THREADS * PER_THREAD)
        fatal("nonapx attention with head size %d: the GPU kernels take head sizes up to %d; use more heads or the "
              "CPU build", head_dim, SCAN_THREADS * PER_THREAD);
}

static void scores(float *score, const float *q, const float *k, int batch, int seq_len, int heads, int kv_heads,
                   int head_dim, float scale) {
    size_t count = (size_t)batch * heads * seq_len;
    hipLaunchKernelGGL(nonapx_score_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, score, q, k, batch,
                       seq_len, heads, kv_heads, head_dim, scale);
    GPU_CHECK_LAUNCH();
}

extern "C" void nonapx_attention_forward(float *out, float *score, float *logsumexp, const float *q, const float *k,
                                         const float *v, int batch, int seq_len, int heads, int kv_heads,
                                         int head_dim, float scale) {
    if (batch <= 0 || seq_len <= 0) return;
    check_head_dim(head_dim);
    scores(score, q, k, batch, seq_len, heads, kv_heads, head_dim, scale);
    hipLaunchKernelGGL(nonapx_forward_scan_kernel, dim3(heads, batch), dim3(SCAN_THREADS), 0, 0, out, logsumexp, score,
                       v, seq_len, heads, kv_heads, head_dim);
    GPU_CHECK_LAUNCH();
}

extern "C" void nonapx_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out,
                                          const float *score, const float *logsumexp, const float *q, const float *k,
                                          const float *v, int batch, int seq_len, int heads, int kv_heads,
                                          int head_dim, float scale) {
    if (batch <= 0 || seq_len <= 0) return;
    check_head_dim(head_dim);
    hipLaunchKernelGGL(nonapx_backward_scan_kernel, dim3(kv_heads, batch), dim3(SCAN_THREADS), 0, 0, d_q, d_k, d_v,
                       d_out, out, score, logsumexp, q, k, v, seq_len, heads, kv_heads, head_dim, scale);
    GPU_CHECK_LAUNCH();
}

// Row i of head h: the plain softmax of g_0..g_i (scores in the workspace): one block per row.
__global__ void nonapx_probability_rows_kernel(float *probs, const float *score, int seq_len) {
    __shared__ float max_scratch[GPU_MAX_WARPS];
    __shared__ double sum_scratch[GPU_MAX_WARPS];
    size_t row_index = blockIdx.x;
    int i = (int)(row_index % seq_len), h = (int)(row_index / seq_len);
    const float *g = score + (size_t)h * seq_len;
    float *row = probs + row_index * seq_len;
    float max = -INFINITY;
    for (int t = threadIdx.x; t <= i; t += blockDim.x) max = fmaxf(max, g[t]);
    max = gpu_block_max(max, max_scratch);
    double sum = 0.0;
    for (int t = threadIdx.x; t <= i; t += blockDim.x) sum += exp((double)g[t] - max);
    sum = gpu_block_sum_double(sum, sum_scratch);
    for (int t = threadIdx.x; t < seq_len; t += blockDim.x)
        row[t] = t <= i ? (float)(exp((double)g[t] - max) / sum) : 0.0f;
}

extern "C" void nonapx_attention_probabilities(float *probs, const float *q, const float *k, int seq_len, int heads,
                                               int kv_heads, int head_dim, float scale) {
    if (seq_len <= 0 || heads <= 0) return;
    float *score = gpu_workspace((size_t)heads * seq_len);
    scores(score, q, k, 1, seq_len, heads, kv_heads, head_dim, scale);
    hipLaunchKernelGGL(nonapx_probability_rows_kernel, dim3((unsigned)(heads * seq_len)), dim3(GPU_THREADS), 0, 0,
                       probs, score, seq_len);
    GPU_CHECK_LAUNCH();
}
