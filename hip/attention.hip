// Causal softmax attention, flash style (Dao et al. 2022, 2023): one thread per query
// row (forward, d_q) or key row (d_k, d_v) holds its row and accumulators in registers;
// the block walks the other side in tiles staged through shared memory; an online softmax
// (hip/kernel_math.h's km_softmax_merge) keeps the running max and sum, forward saves the
// logsumexp, and backward recomputes the probabilities tile by tile, with
// D_i = dO_i . O_i recomputed where needed. No seq_len x seq_len buffer, no workspace, no
// atomics: d_q is one kernel over query rows, d_k and d_v one over key rows (walking the
// query heads of their kv head: GQA/MQA), so results do not depend on scheduling.
// Inputs are rounded to bf16 under train.precision = bf16; accumulation is fp32.
// The tile index math (causal tile ranges, layouts) is kernel_math.h's, tested on the CPU.
// Head sizes up to 128 (a template per bound keeps the row arrays in registers); the value
// head size (v, out, d_out) may differ from the query/key one (per-layer shapes, A3).
//
// Part 1 computes with CUDA-core / VALU FMAs; a tensor-core (MFMA / WMMA) tile kernel is
// part 2's (docs/design.md, "GPU backend").
#include <math.h>

#include "hip/backend.h"

enum { FWD_ROWS = 64, FWD_KEYS = 32, BWD_KEY_ROWS = 64, BWD_QUERIES = 16 };

struct attention_shape {
    int batch, seq_len, heads, kv_heads, head_dim, value_head_dim;
    float scale;
    bool bf16;
};

// Loads rows [row0, row0 + rows) of head `head` of a [batch, seq_len, heads_of, dim]
// tensor into tile[rows][DMAX] (zeros past seq_len and dim), rounded when bf16.
template <int DMAX>
__device__ static void load_rows(float (*tile)[DMAX], const float *x, int b, int row0, int rows, int head, int heads_of,
                                 int dim, const attention_shape &s) {
    for (int e = threadIdx.x; e < rows * DMAX; e += blockDim.x) {
        int r = e / DMAX, d = e % DMAX, t = row0 + r;
        tile[r][d] = t < s.seq_len && d < dim
                         ? gpu_input(x[km_token_offset(b, t, head, s.seq_len, heads_of, dim) + d], s.bf16)
                         : 0.0f;
    }
}

// ---- forward ---------------------------------------------------------------------------------
template <int DMAX>
__global__ void attention_forward_kernel(float *out, float *logsumexp, const float *q, const float *k, const float *v,
                                         attention_shape s) {
    __shared__ float k_tile[FWD_KEYS][DMAX];
    __shared__ float v_tile[FWD_KEYS][DMAX];
    int query_tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int g = km_kv_head(h, s.heads, s.kv_heads);
    int i = query_tile * FWD_ROWS + threadIdx.x;
    bool valid = i < s.seq_len;
    float qi[DMAX], o[DMAX];
    const float *q_row = q + km_token_offset(b, valid ? i : 0, h, s.seq_len, s.heads, s.head_dim);
#pragma unroll
    for (int d = 0; d < DMAX; d++) {
        qi[d] = valid && d < s.head_dim ? gpu_input(q_row[d], s.bf16) : 0.0f;
        o[d] = 0.0f;
    }
    km_softmax_state state = km_softmax_start();
    int key_tiles = km_causal_key_tiles(query_tile, FWD_ROWS, FWD_KEYS, s.seq_len);
    for (int kt = 0; kt < key_tiles; kt++) {
        int j0 = kt * FWD_KEYS;
        __syncthreads();
        load_rows<DMAX>(k_tile, k, b, j0, FWD_KEYS, g, s.kv_heads, s.head_dim, s);
        load_rows<DMAX>(v_tile, v, b, j0, FWD_KEYS, g, s.kv_heads, s.value_head_dim, s);
        __syncthreads();
        if (!valid) continue;
        float score[FWD_KEYS];
        float tile_max = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < FWD_KEYS; jj++) {
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < DMAX; d++) dot += qi[d] * k_tile[jj][d];
            score[jj] = j0 + jj <= i ? dot * s.scale : -INFINITY;
            tile_max = fmaxf(tile_max, score[jj]);
        }
        float correction = km_softmax_merge(&state, tile_max);
        if (correction != 1.0f) {
#pragma unroll
            for (int d = 0; d < DMAX; d++) o[d] *= correction;
        }
#pragma unroll
        for (int jj = 0; jj < FWD_KEYS; jj++) {
            float p = score[jj] == -INFINITY ? 0.0f : expf(score[jj] - state.max);
            state.sum += p;
#pragma unroll
            for (int d = 0; d < DMAX; d++) o[d] += p * v_tile[jj][d];
        }
    }
    if (!valid) return;
    float inv = 1.0f / state.sum;
    float *out_row = out + km_token_offset(b, i, h, s.seq_len, s.heads, s.value_head_dim);
    for (int d = 0; d < s.value_head_dim; d++) out_row[d] = o[d] * inv;
    logsumexp[km_lse_offset(b, h, i, s.heads, s.seq_len)] = km_softmax_logsumexp(state);
}

// ---- backward: d_q, one thread per query row --------------------------------------------------
template <int DMAX>
__global__ void attention_backward_query_kernel(float *d_q, const float *d_out, const float *out,
                                                const float *logsumexp, const float *q, const float *k,
                                                const float *v, attention_shape s) {
    __shared__ float k_tile[FWD_KEYS][DMAX];
    __shared__ float v_tile[FWD_KEYS][DMAX];
    int query_tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int g = km_kv_head(h, s.heads, s.kv_heads);
    int i = query_tile * FWD_ROWS + threadIdx.x;
    bool valid = i < s.seq_len;
    size_t row = km_token_offset(b, valid ? i : 0, h, s.seq_len, s.heads, s.head_dim);
    size_t out_row = km_token_offset(b, valid ? i : 0, h, s.seq_len, s.heads, s.value_head_dim);
    float qi[DMAX], doi[DMAX], dq[DMAX];
    float delta = 0.0f;  // D_i = dO_i . O_i
#pragma unroll
    for (int d = 0; d < DMAX; d++) {
        bool in = valid && d < s.head_dim, in_v = valid && d < s.value_head_dim;
        qi[d] = in ? gpu_input(q[row + d], s.bf16) : 0.0f;
        doi[d] = in_v ? gpu_input(d_out[out_row + d], s.bf16) : 0.0f;
        delta += in_v ? d_out[out_row + d] * out[out_row + d] : 0.0f;
        dq[d] = 0.0f;
    }
    float lse = valid ? logsumexp[km_lse_offset(b, h, i, s.heads, s.seq_len)] : 0.0f;
    int key_tiles = km_causal_key_tiles(query_tile, FWD_ROWS, FWD_KEYS, s.seq_len);
    for (int kt = 0; kt < key_tiles; kt++) {
        int j0 = kt * FWD_KEYS;
        __syncthreads();
        load_rows<DMAX>(k_tile, k, b, j0, FWD_KEYS, g, s.kv_heads, s.head_dim, s);
        load_rows<DMAX>(v_tile, v, b, j0, FWD_KEYS, g, s.kv_heads, s.value_head_dim, s);
        __syncthreads();
        if (!valid) continue;
        for (int jj = 0; jj < FWD_KEYS && j0 + jj <= i; jj++) {
            float dot = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < DMAX; d++) {
                dot += qi[d] * k_tile[jj][d];
                dp += doi[d] * v_tile[jj][d];
            }
            float p = expf(dot * s.scale - lse);
            float ds = p * (dp - delta) * s.scale;
#pragma unroll
            for (int d = 0; d < DMAX; d++) dq[d] += ds * k_tile[jj][d];
        }
    }
    if (!valid) return;
    for (int d = 0; d < s.head_dim; d++) d_q[row + d] += dq[d];
}

// ---- backward: d_k and d_v, one thread per key row of a kv head ---------------------------------
template <int DMAX>
__global__ void attention_backward_key_kernel(float *d_k, float *d_v, const float *d_out, const float *out,
                                              const float *logsumexp, const float *q, const float *k, const float *v,
                                              attention_shape s) {
    __shared__ float q_tile[BWD_QUERIES][DMAX];
    __shared__ float do_tile[BWD_QUERIES][DMAX];
    __shared__ float lse_tile[BWD_QUERIES], delta_tile[BWD_QUERIES];
    int key_tile = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
    int j = key_tile * BWD_KEY_ROWS + threadIdx.x;
    bool valid = j < s.seq_len;
    size_t row = km_token_offset(b, valid ? j : 0, g, s.seq_len, s.kv_heads, s.head_dim);
    size_t v_row = km_token_offset(b, valid ? j : 0, g, s.seq_len, s.kv_heads, s.value_head_dim);
    float kj[DMAX], vj[DMAX], dk[DMAX], dv[DMAX];
#pragma unroll
    for (int d = 0; d < DMAX; d++) {
        bool in = valid && d < s.head_dim, in_v = valid && d < s.value_head_dim;
        kj[d] = in ? gpu_input(k[row + d], s.bf16) : 0.0f;
        vj[d] = in_v ? gpu_input(v[v_row + d], s.bf16) : 0.0f;
        dk[d] = dv[d] = 0.0f;
    }
    int group = s.heads / s.kv_heads;
    int first_query_tile = km_causal_first_query_tile(key_tile, BWD_KEY_ROWS, BWD_QUERIES);
    int query_tiles = km_ceil_div(s.seq_len, BWD_QUERIES);
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int qt = first_query_tile; qt < query_tiles; qt++) {
            int i0 = qt * BWD_QUERIES;
            __syncthreads();
            load_rows<DMAX>(q_tile, q, b, i0, BWD_QUERIES, h, s.heads, s.head_dim, s);
            load_rows<DMAX>(do_tile, d_out, b, i0, BWD_QUERIES, h, s.heads, s.value_head_dim, s);
            if (threadIdx.x < BWD_QUERIES) {  // this tile's logsumexp and D_i
                int i = i0 + threadIdx.x;
                float delta = 0.0f, lse = 0.0f;
                if (i < s.seq_len) {
                    size_t qrow = km_token_offset(b, i, h, s.seq_len, s.heads, s.value_head_dim);
                    for (int d = 0; d < s.value_head_dim; d++) delta += d_out[qrow + d] * out[qrow + d];
                    lse = logsumexp[km_lse_offset(b, h, i, s.heads, s.seq_len)];
                }
                delta_tile[threadIdx.x] = delta;
                lse_tile[threadIdx.x] = lse;
            }
            __syncthreads();
            if (!valid) continue;
            for (int ii = 0; ii < BWD_QUERIES; ii++) {
                int i = i0 + ii;
                if (i < j || i >= s.seq_len) continue;
                float dot = 0.0f, dp = 0.0f;
#pragma unroll
                for (int d = 0; d < DMAX; d++) {
                    dot += q_tile[ii][d] * kj[d];
                    dp += do_tile[ii][d] * vj[d];
                }
                float p = expf(dot * s.scale - lse_tile[ii]);
                float ds = p * (dp - delta_tile[ii]) * s.scale;
#pragma unroll
                for (int d = 0; d < DMAX; d++) {
                    dv[d] += p * do_tile[ii][d];
                    dk[d] += ds * q_tile[ii][d];
                }
            }
        }
    }
    if (!valid) return;
    for (int d = 0; d < s.head_dim; d++)
        if (d_k) d_k[row + d] += dk[d];
    for (int d = 0; d < s.value_head_dim; d++)
        if (d_v) d_v[v_row + d] += dv[d];
}

static attention_shape make_shape(int batch, int seq_len, int heads, int kv_heads, int head_dim, int value_head_dim,
                                  float scale) {
    if (head_dim > 128 || value_head_dim > 128)
        fatal("attention with head sizes %d (query/key) and %d (value): the GPU kernels take head sizes up to 128 "
              "([model] head_dim, value_head_dim); use smaller heads or the CPU build", head_dim, value_head_dim);
    attention_shape s = {batch, seq_len, heads, kv_heads, head_dim, value_head_dim, scale, gpu_bf16()};
    return s;
}

// The template bound: the larger head size.
static int widest(int head_dim, int value_head_dim) { return head_dim > value_head_dim ? head_dim : value_head_dim; }

#define DISPATCH(DIM, call) \
    do {                    \
        if ((DIM) <= 32) {  \
            enum { D = 32 };  \
            call;           \
        } else if ((DIM) <= 64) { \
            enum { D = 64 };  \
            call;           \
        } else {            \
            enum { D = 128 }; \
            call;           \
        }                   \
    } while (0)

extern "C" void attention_forward(float *out, float *logsumexp, const float *q, const float *k, const float *v,
                                  int batch, int seq_len, int heads, int kv_heads, int head_dim, int value_head_dim,
                                  float scale) {
    if (batch <= 0 || seq_len <= 0) return;
    attention_shape s = make_shape(batch, seq_len, heads, kv_heads, head_dim, value_head_dim, scale);
    dim3 grid((unsigned)km_ceil_div(seq_len, FWD_ROWS), (unsigned)heads, (unsigned)batch);
    DISPATCH(widest(head_dim, value_head_dim), hipLaunchKernelGGL(attention_forward_kernel<D>, grid, dim3(FWD_ROWS), 0, 0, out, logsumexp, q,
                                          k, v, s));
    GPU_CHECK_LAUNCH();
}

extern "C" void attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out,
                                   const float *logsumexp, const float *q, const float *k, const float *v, int batch,
                                   int seq_len, int heads, int kv_heads, int head_dim, int value_head_dim,
                                   float scale) {
    if (batch <= 0 || seq_len <= 0) return;
    attention_shape s = make_shape(batch, seq_len, heads, kv_heads, head_dim, value_head_dim, scale);
    if (d_q != NULL) {
        dim3 grid((unsigned)km_ceil_div(seq_len, FWD_ROWS), (unsigned)heads, (unsigned)batch);
        DISPATCH(widest(head_dim, value_head_dim), hipLaunchKernelGGL(attention_backward_query_kernel<D>, grid, dim3(FWD_ROWS), 0, 0, d_q,
                                              d_out, out, logsumexp, q, k, v, s));
        GPU_CHECK_LAUNCH();
    }
    if (d_k != NULL || d_v != NULL) {
        dim3 grid((unsigned)km_ceil_div(seq_len, BWD_KEY_ROWS), (unsigned)kv_heads, (unsigned)batch);
        DISPATCH(widest(head_dim, value_head_dim), hipLaunchKernelGGL(attention_backward_key_kernel<D>, grid, dim3(BWD_KEY_ROWS), 0, 0, d_k,
                                              d_v, d_out, out, logsumexp, q, k, v, s));
        GPU_CHECK_LAUNCH();
    }
}

// ---- the quadratic forms of one sequence (recordings, tests) ------------------------------------
// scores[h, i, t] = scale q_i . k_t for t <= i, zeros above the diagonal.
__global__ void score_matrix_kernel(float *scores, const float *q, const float *k, int seq_len, int heads,
                                    int kv_heads, int head_dim, float scale) {
    size_t count = (size_t)heads * seq_len * seq_len;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(e % seq_len), i = (int)((e / seq_len) % seq_len), h = (int)(e / ((size_t)seq_len * seq_len));
        if (t > i) {
            scores[e] = 0.0f;
            continue;
        }
        const float *qi = q + km_token_offset(0, i, h, seq_len, heads, head_dim);
        const float *kt = k + km_token_offset(0, t, km_kv_head(h, heads, kv_heads), seq_len, kv_heads, head_dim);
        float dot = 0.0f;
        for (int d = 0; d < head_dim; d++) dot += qi[d] * kt[d];
        scores[e] = dot * scale;
    }
}

// Row (h, i) of scores becomes its causal softmax: one block per row.
__global__ void causal_softmax_rows_kernel(float *probs, int seq_len) {
    __shared__ float max_scratch[GPU_MAX_WARPS];
    __shared__ double sum_scratch[GPU_MAX_WARPS];
    size_t row_index = blockIdx.x;
    int i = (int)(row_index % seq_len);
    float *row = probs + row_index * seq_len;
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
    for (int t = threadIdx.x; t <= i; t += blockDim.x) row[t] *= inv;
}

extern "C" void attention_score_matrix(float *scores, const float *q, const float *k, int seq_len, int heads,
                                       int kv_heads, int head_dim, float scale) {
    size_t count = (size_t)heads * seq_len * seq_len;
    if (count == 0) return;
    hipLaunchKernelGGL(score_matrix_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, scores, q, k, seq_len,
                       heads, kv_heads, head_dim, scale);
    GPU_CHECK_LAUNCH();
}

extern "C" void attention_probabilities(float *probs, const float *q, const float *k, int seq_len, int heads,
                                        int kv_heads, int head_dim, float scale) {
    attention_score_matrix(probs, q, k, seq_len, heads, kv_heads, head_dim, scale);
    if (heads <= 0 || seq_len <= 0) return;
    hipLaunchKernelGGL(causal_softmax_rows_kernel, dim3((unsigned)(heads * seq_len)), dim3(GPU_THREADS), 0, 0, probs,
                       seq_len);
    GPU_CHECK_LAUNCH();
}
