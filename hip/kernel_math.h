// The index arithmetic and small numerics the GPU kernels (hip/*.hip) are built from,
// written once for host and device: nvcc/hipcc compile them as __host__ __device__, and
// the C compiler compiles them as plain C11 so tests/unit/test_gpu_math.c checks them on
// the CPU against the CPU ops (a flash-attention forward done on the host through these
// tile and merge functions equals src/ops/cpu/attention.c's result, and so on). A
// kernel that gets its tiles, its online-softmax merge or its warp reduction wrong is
// then caught here, without a GPU.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__) || defined(__HIPCC__) || defined(__HIP__)
#define KM_FN __host__ __device__ static inline
#include <math.h>
#define KM_EXP expf
#define KM_LOG logf
#else
#define KM_FN static inline
#include <math.h>
#define KM_EXP expf
#define KM_LOG logf
#endif

// ---- tiles -------------------------------------------------------------------------
KM_FN int km_ceil_div(int a, int b) { return (a + b - 1) / b; }
KM_FN size_t km_ceil_div_size(size_t a, size_t b) { return (a + b - 1) / b; }
// Rows in tile `tile` of `tile_rows` rows over `count` rows (the last one may be short).
KM_FN int km_tile_rows(int tile, int tile_rows, int count) {
    int left = count - tile * tile_rows;
    return left < tile_rows ? (left > 0 ? left : 0) : tile_rows;
}

// ---- causal attention index math (layouts of src/ops/ops.h) ---------------------------
// Query head h reads kv head h / (heads / kv_heads) (GQA; MQA when kv_heads = 1).
KM_FN int km_kv_head(int head, int heads, int kv_heads) { return head / (heads / kv_heads); }
// Offset of element d of token t, head h in a [batch, seq_len, heads, head_dim] tensor.
KM_FN size_t km_token_offset(int b, int t, int h, int seq_len, int heads, int head_dim) {
    return (((size_t)b * (size_t)seq_len + (size_t)t) * (size_t)heads + (size_t)h) * (size_t)head_dim;
}
// Offset of row t of head h in logsumexp [batch, heads, seq_len].
KM_FN size_t km_lse_offset(int b, int h, int t, int heads, int seq_len) {
    return ((size_t)b * (size_t)heads + (size_t)h) * (size_t)seq_len + (size_t)t;
}
// Causal: the key tiles a query tile [q0, q0 + rows) needs are 0 .. last, i.e. every key
// tile that starts at or before its last row.
KM_FN int km_causal_key_tiles(int query_tile, int query_tile_rows, int key_tile_rows, int seq_len) {
    int last_row = (query_tile + 1) * query_tile_rows - 1;
    if (last_row > seq_len - 1) last_row = seq_len - 1;
    return last_row / key_tile_rows + 1;
}
// Causal: the first query tile that sees any key of key tile [k0, k0 + rows).
KM_FN int km_causal_first_query_tile(int key_tile, int key_tile_rows, int query_tile_rows) {
    return key_tile * key_tile_rows / query_tile_rows;
}

// ---- the online softmax (FlashAttention's running max and sum) -------------------------
// One query row's state over the key tiles seen so far: max m, sum l = sum exp(s - m).
// Its output accumulator o = sum exp(s - m) v is kept by the caller and multiplied by the
// correction km_softmax_merge returns whenever the max moves.
typedef struct {
    float max, sum;
} km_softmax_state;

KM_FN km_softmax_state km_softmax_start(void) {
    km_softmax_state s;
    s.max = -INFINITY;
    s.sum = 0.0f;
    return s;
}
// Takes in a tile whose largest score is tile_max: moves the running max and returns
// the factor the running sum (already applied here) and the caller's o must be
// multiplied by; the tile's own terms are then exp(s - state->max).
KM_FN float km_softmax_merge(km_softmax_state *state, float tile_max) {
    if (tile_max <= state->max) return 1.0f;
    float correction = state->max == -INFINITY ? 0.0f : KM_EXP(state->max - tile_max);
    state->max = tile_max;
    state->sum *= correction;
    return correction;
}
// Merges two partial states (two halves of one row's keys): the combined state, with
// the factors each side's o must be multiplied by before adding (split-K combine).
KM_FN km_softmax_state km_softmax_combine(km_softmax_state a, km_softmax_state b, float *scale_a, float *scale_b) {
    km_softmax_state out;
    out.max = a.max > b.max ? a.max : b.max;
    *scale_a = a.max == -INFINITY ? 0.0f : KM_EXP(a.max - out.max);
    *scale_b = b.max == -INFINITY ? 0.0f : KM_EXP(b.max - out.max);
    out.sum = a.sum * *scale_a + b.sum * *scale_b;
    return out;
}
KM_FN float km_softmax_logsumexp(km_softmax_state state) { return state.max + KM_LOG(state.sum); }

// ---- decoding: one new row per sequence (hip/decode.hip; ops.h "decoding") --------------
// Keys per tile of attention_decode_kernel (and its threads): one thread per key scores
// the tile, every thread moves the running softmax by the tile (km_softmax_merge), and
// thread d accumulates output element d (so head sizes up to KM_DECODE_KEYS).
enum { KM_DECODE_KEYS = 128 };
// Where sequence b's row at `position` starts in a cache of rows `width` wide whose
// sequences lie sequence_stride floats apart (copy_rows_to/from_positions, caches).
KM_FN size_t km_decode_row_offset(int b, int position, size_t sequence_stride, size_t width) {
    return (size_t)b * sequence_stride + (size_t)position * width;
}
// Key / value row t of kv head g of sequence b in a cache with sequences `stride`
// floats apart (stride 0: one cache shared by the batch).
KM_FN size_t km_decode_kv_offset(int b, int t, int g, size_t stride, int kv_heads, int head_dim) {
    return (size_t)b * stride + ((size_t)t * (size_t)kv_heads + (size_t)g) * (size_t)head_dim;
}
// Key tiles a query at `position` reads: keys 0 .. position, the new token's included.
KM_FN int km_decode_key_tiles(int position) { return km_ceil_div(position + 1, KM_DECODE_KEYS); }
// A tile's largest score, and the sum of its weights exp(score - max), each in key order:
// every thread of the block computes them from the same shared scores (no reduction
// tree, so no warp width, and the same order on every target and on the host).
KM_FN float km_decode_tile_max(const float *score, int count) {
    float max = -INFINITY;
    for (int j = 0; j < count; j++) max = score[j] > max ? score[j] : max;
    return max;
}
KM_FN float km_decode_tile_sum(const float *weight, int count) {
    float sum = 0.0f;
    for (int j = 0; j < count; j++) sum += weight[j];
    return sum;
}
// nonapx's recurrent step on one head's running logsumexp: folds in the new score g and
// returns the new logsumexp, with the factors the old output (*keep) and the new value
// row (*take) are weighted by (o' = o keep + v take). In double, as the CPU op; an
// empty state (lse = -inf) keeps nothing.
KM_FN float km_nonapx_step(float lse, float g, float *keep, float *take) {
    double hi = g > lse ? g : lse, lo = g > lse ? lse : g;
    double next = hi + log1p(exp(lo - hi));
    *keep = (float)exp((double)lse - next);
    *take = (float)exp((double)g - next);
    return (float)next;
}

// ---- cross entropy chunk bookkeeping ---------------------------------------------------
// Rows per chunk of the fused LM head: as many as fit max_floats logits, clamped to
// [min_rows, max_rows], never more than rows (at least 1).
KM_FN int km_ce_chunk_rows(int rows, int vocab, size_t max_floats, int min_rows, int max_rows) {
    size_t fit = max_floats / (size_t)(vocab > 0 ? vocab : 1);
    int chunk = fit > (size_t)max_rows ? max_rows : (int)fit;
    if (chunk < min_rows) chunk = min_rows;
    if (rows < 1) rows = 1;
    return rows < chunk ? rows : chunk;
}
KM_FN int km_ce_chunk_count(int rows, int chunk) { return rows <= 0 ? 0 : km_ceil_div(rows, chunk); }
// -log softmax(z)[target] from the row's statistics: max, sum of exp(z - max), z[target].
KM_FN double km_ce_row_loss(float max, double sum, double target_logit) {
    return (double)max + log(sum) - target_logit;
}
// One logit's gradient: loss_scale * (softmax - onehot).
KM_FN float km_ce_logit_gradient(float z, float max, double sum, int is_target, float loss_scale) {
    float p = KM_EXP(z - max) * (float)(1.0 / sum);
    return loss_scale * (p - (is_target ? 1.0f : 0.0f));
}

// ---- warp-size-generic reduction ---------------------------------------------------------
// A butterfly over a warp of any power-of-two width (32 on NVIDIA, 64 on AMD CDNA):
// in round r lane l adds lane l ^ offset, offset = width/2, width/4, ..., 1; after the
// last round every lane holds the total. No kernel hard-codes the width: it is warpSize
// at run time (hip/gpu_compat.h), and lane masks are 64-bit.
KM_FN int km_butterfly_first_offset(int warp_size) { return warp_size / 2; }
KM_FN int km_butterfly_partner(int lane, int offset) { return lane ^ offset; }
KM_FN int km_butterfly_rounds(int warp_size) {
    int rounds = 0;
    for (int w = warp_size; w > 1; w >>= 1) rounds++;
    return rounds;
}
// Warps in a block of `threads`, and where thread t sits.
KM_FN int km_warps_per_block(int threads, int warp_size) { return km_ceil_div(threads, warp_size); }
KM_FN int km_lane_of(int thread, int warp_size) { return thread % warp_size; }
KM_FN int km_warp_of(int thread, int warp_size) { return thread / warp_size; }
// The 64-bit lane mask of lanes [0, active) (ballot/shuffle masks; all lanes when active
// is 64).
KM_FN uint64_t km_lane_mask(int active) { return active >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << active) - 1); }

// ---- bf16 ------------------------------------------------------------------------------
// Round-to-nearest-even to bfloat16, returned widened back to float: what the bf16
// precision does to GEMM and attention inputs before the fp32 accumulation. NaN stays NaN.
KM_FN float km_round_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
        bits |= 0x00400000u;  // quiet NaN, keeps a payload bit in the kept half
    } else {
        uint32_t lsb = (bits >> 16) & 1u;
        bits += 0x7fffu + lsb;
    }
    bits &= 0xffff0000u;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
KM_FN uint16_t km_bf16_bits(float x) {
    float r = km_round_bf16(x);
    uint32_t bits;
    memcpy(&bits, &r, sizeof bits);
    return (uint16_t)(bits >> 16);
}
KM_FN float km_bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

// ---- GEMM tiles (our own kernel, hip/gemm_tiled.hip) --------------------------------------
// Element (i, p) of op(a) for row-major a with leading dimension lda: a[i][p], or
// a[p][i] when transposed.
KM_FN size_t km_gemm_a_index(int transpose, int lda, int i, int p) {
    return transpose ? (size_t)p * (size_t)lda + (size_t)i : (size_t)i * (size_t)lda + (size_t)p;
}
// Element (p, j) of op(b): b[p][j], or b[j][p] when transposed.
KM_FN size_t km_gemm_b_index(int transpose, int ldb, int p, int j) {
    return transpose ? (size_t)j * (size_t)ldb + (size_t)p : (size_t)p * (size_t)ldb + (size_t)j;
}
// c = alpha * acc + beta * c, with beta == 0 never reading c (it may hold NaN garbage).
KM_FN float km_gemm_epilogue(float acc, float alpha, float beta, float c) {
    return beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
}
