// The decoding ops (ops.h, "decoding") on the GPU: one new row per sequence, each at its
// own position (positions[] in backend memory, read by the kernels), against a KV cache
// or nonapx's recurrent state. Like the CPU op (src/ops/cpu/decode_attention.c) they
// allocate nothing. rope_at_positions is rows.hip's rotation with per-row positions.
//  * copy_rows_to/from_positions: one thread per element, grid-stride.
//  * attention_decode: one block of KM_DECODE_KEYS threads per (sequence, head); the
//    block walks the cache in tiles of KM_DECODE_KEYS keys: thread j scores key j of the
//    tile, every thread moves the same running softmax by the tile's max and sum
//    (hip/kernel_math.h's km_decode_tile_max / km_softmax_merge / km_decode_tile_sum, in
//    key order: no reduction tree, no warp width), and thread d accumulates output element
//    d over the tile's value rows (coalesced). Head sizes up to KM_DECODE_KEYS (128, as
//    the training kernels). Under train.precision = bf16, q, k and v are rounded on load,
//    as attention_forward rounds them, so cached decoding follows the full forward.
//    One block per (sequence, head) leaves long single-sequence contexts with few blocks;
//    a split-K over the cache (km_softmax_combine) is part 2's.
//  * nonapx_state_step: one thread per (sequence, head), the CPU op's loop.
#include <math.h>

#include "hip/backend.h"

// ---- rows at positions --------------------------------------------------------------------
__global__ void copy_rows_to_positions_kernel(float *cache, size_t sequence_stride, const float *rows,
                                              const int *positions, int batch, size_t width) {
    size_t count = (size_t)batch * width;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        int b = (int)(e / width);
        cache[km_decode_row_offset(b, positions[b], sequence_stride, width) + e % width] = rows[e];
    }
}

__global__ void copy_rows_from_positions_kernel(float *rows, const float *table, size_t sequence_stride,
                                                const int *positions, int batch, size_t width) {
    size_t count = (size_t)batch * width;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (size_t)gridDim.x * blockDim.x) {
        int b = (int)(e / width);
        rows[e] = table[km_decode_row_offset(b, positions[b], sequence_stride, width) + e % width];
    }
}

extern "C" void copy_rows_to_positions(float *cache, size_t sequence_stride, const float *rows, const int *positions,
                                       int batch, size_t width) {
    size_t count = (size_t)(batch > 0 ? batch : 0) * width;
    if (count == 0) return;
    hipLaunchKernelGGL(copy_rows_to_positions_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, cache,
                       sequence_stride, rows, positions, batch, width);
    GPU_CHECK_LAUNCH();
}

extern "C" void copy_rows_from_positions(float *rows, const float *table, size_t sequence_stride,
                                         const int *positions, int batch, size_t width) {
    size_t count = (size_t)(batch > 0 ? batch : 0) * width;
    if (count == 0) return;
    hipLaunchKernelGGL(copy_rows_from_positions_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, rows, table,
                       sequence_stride, positions, batch, width);
    GPU_CHECK_LAUNCH();
}

// ---- softmax attention of one query row over its cache -----------------------------------
struct decode_shape {
    int heads, kv_heads, head_dim, value_head_dim;
    float scale;
    size_t k_stride, v_stride;
    bool bf16;
};

__global__ void attention_decode_kernel(float *out, const float *q, const float *k, const float *v,
                                        const int *positions, decode_shape s) {
    __shared__ float q_row[KM_DECODE_KEYS];
    __shared__ float weight[KM_DECODE_KEYS];  // the tile's scores, then their weights
    int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;  // d: this thread's key in a tile, output element
    int g = km_kv_head(h, s.heads, s.kv_heads), position = positions[b];
    size_t row = ((size_t)b * s.heads + h) * s.head_dim, out_row = ((size_t)b * s.heads + h) * s.value_head_dim;
    if (d < s.head_dim) q_row[d] = gpu_input(q[row + d], s.bf16);
    km_softmax_state state = km_softmax_start();
    float o = 0.0f;
    int tiles = km_decode_key_tiles(position);
    for (int tile = 0; tile < tiles; tile++) {
        int t0 = tile * KM_DECODE_KEYS, count = km_tile_rows(tile, KM_DECODE_KEYS, position + 1);
        __syncthreads();  // q_row is written; the previous tile's weights are read
        if (d < count) {
            const float *key = k + km_decode_kv_offset(b, t0 + d, g, s.k_stride, s.kv_heads, s.head_dim);
            float dot = 0.0f;
            for (int e = 0; e < s.head_dim; e++) dot += q_row[e] * gpu_input(key[e], s.bf16);
            weight[d] = dot * s.scale;
        }
        __syncthreads();
        float correction = km_softmax_merge(&state, km_decode_tile_max(weight, count));
        __syncthreads();  // every thread has the tile's max before scores become weights
        if (d < count) weight[d] = expf(weight[d] - state.max);
        __syncthreads();
        state.sum += km_decode_tile_sum(weight, count);
        if (d < s.value_head_dim) {
            o *= correction;
            const float *value = v + km_decode_kv_offset(b, t0, g, s.v_stride, s.kv_heads, s.value_head_dim) + d;
            for (int j = 0; j < count; j++)
                o += weight[j] * gpu_input(value[(size_t)j * s.kv_heads * s.value_head_dim], s.bf16);
        }
    }
    if (d < s.value_head_dim) out[out_row + d] = o / state.sum;
}

extern "C" void attention_decode(float *out, const float *q, const float *k, const float *v, const int *positions,
                                 int batch, int heads, int kv_heads, int head_dim, int value_head_dim, float scale,
                                 size_t k_stride, size_t v_stride) {
    if (batch <= 0 || heads <= 0) return;
    if (head_dim > KM_DECODE_KEYS || value_head_dim > KM_DECODE_KEYS)
        fatal("attention decoding with head sizes %d (query/key) and %d (value): the GPU kernels take head sizes up to "
              "%d; use more heads or the CPU build", head_dim, value_head_dim, (int)KM_DECODE_KEYS);
    decode_shape s = {heads, kv_heads, head_dim, value_head_dim, scale, k_stride, v_stride, gpu_bf16()};
    hipLaunchKernelGGL(attention_decode_kernel, dim3((unsigned)heads, (unsigned)batch), dim3(KM_DECODE_KEYS), 0, 0, out,
                       q, k, v, positions, s);
    GPU_CHECK_LAUNCH();
}

// ---- nonapx: per query head [o (head_dim), lse] ---------------------------------------------
__global__ void nonapx_state_step_kernel(float *out, float *state, size_t state_stride, const float *q, const float *k,
                                         const float *v, int batch, int heads, int kv_heads, int head_dim,
                                         float scale) {
    int count = batch * heads;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < count; e += gridDim.x * blockDim.x) {
        int b = e / heads, h = e % heads, g = km_kv_head(h, heads, kv_heads);
        const float *qh = q + (size_t)e * head_dim;
        const float *kh = k + ((size_t)b * kv_heads + g) * head_dim, *vh = v + ((size_t)b * kv_heads + g) * head_dim;
        float *o = state + (size_t)b * state_stride + (size_t)h * (head_dim + 1), *lse = o + head_dim;
        float dot = 0.0f;
        for (int i = 0; i < head_dim; i++) dot += qh[i] * gpu_sigmoid(qh[i]) * kh[i];
        float keep, take;
        *lse = km_nonapx_step(*lse, scale * dot, &keep, &take);
        float *y = out + (size_t)e * head_dim;
        for (int i = 0; i < head_dim; i++) y[i] = o[i] = o[i] * keep + vh[i] * take;
    }
}

extern "C" void nonapx_state_step(float *out, float *state, size_t state_stride, const float *q, const float *k,
                                  const float *v, int batch, int heads, int kv_heads, int head_dim, float scale) {
    size_t count = (size_t)(batch > 0 ? batch : 0) * (heads > 0 ? heads : 0);
    if (count == 0) return;
    hipLaunchKernelGGL(nonapx_state_step_kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, out, state,
                       state_stride, q, k, v, batch, heads, kv_heads, head_dim, scale);
    GPU_CHECK_LAUNCH();
}
