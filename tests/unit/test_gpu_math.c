// hip/kernel_math.h on the CPU: the index arithmetic and numerics the GPU kernels are
// built from, compiled here as plain C11 and checked against the CPU ops:
//  * flash-attention forward done on the host through the kernels' tiles (the causal
//    key-tile range, the layouts, km_softmax_merge) equals src/ops/cpu/attention.c's
//    output and logsumexp (MHA, GQA, MQA; a sequence no tile size divides);
//  * its backward through the kernels' loops (d_q per query row over the causal key tiles,
//    d_k/d_v per key row from the first query tile that sees it) equals the CPU backward;
//  * the split combine of two softmax halves equals one pass;
//  * the fused LM head's chunk bookkeeping covers every row once, and the row loss and
//    logit gradient equal lm_head_cross_entropy's;
//  * the warp butterfly leaves the total in every lane for warps of 32 and 64;
//  * bf16 rounding is round-to-nearest-even; the tiled GEMM's indexing equals gemm().
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "hip/kernel_math.h"
#include "ops/ops.h"
#include "testing.h"

static float *random_floats(size_t n, float amplitude, uint64_t stream) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = amplitude * (float)(2.0 * rng_uniform(4242, stream, i) - 1.0);
    return x;
}

static double relative_error(const float *a, const float *b, size_t n) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        ref += (double)b[i] * b[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim;
    float scale;
} shape;

enum { Q_ROWS = 64, K_ROWS = 32, KEY_ROWS = 64, QUERIES = 16 };

// attention_forward_kernel's schedule on the host: blocks of Q_ROWS query rows, key tiles
// of K_ROWS up to km_causal_key_tiles, one running state per row.
static void host_flash_forward(float *out, float *lse, const float *q, const float *k, const float *v, shape s) {
    int query_tiles = km_ceil_div(s.seq_len, Q_ROWS);
    float *o = malloc(sizeof(float) * s.head_dim);
    for (int b = 0; b < s.batch; b++)
        for (int h = 0; h < s.heads; h++)
            for (int qt = 0; qt < query_tiles; qt++)
                for (int r = 0; r < km_tile_rows(qt, Q_ROWS, s.seq_len); r++) {
                    int i = qt * Q_ROWS + r, g = km_kv_head(h, s.heads, s.kv_heads);
                    const float *qi = q + km_token_offset(b, i, h, s.seq_len, s.heads, s.head_dim);
                    km_softmax_state state = km_softmax_start();
                    memset(o, 0, sizeof(float) * s.head_dim);
                    int key_tiles = km_causal_key_tiles(qt, Q_ROWS, K_ROWS, s.seq_len);
                    for (int kt = 0; kt < key_tiles; kt++) {
                        float score[K_ROWS], tile_max = -INFINITY;
                        for (int jj = 0; jj < K_ROWS; jj++) {
                            int j = kt * K_ROWS + jj;
                            score[jj] = -INFINITY;
                            if (j > i || j >= s.seq_len) continue;
                            const float *kj = k + km_token_offset(b, j, g, s.seq_len, s.kv_heads, s.head_dim);
                            float dot = 0.0f;
                            for (int d = 0; d < s.head_dim; d++) dot += qi[d] * kj[d];
                            score[jj] = dot * s.scale;
                            tile_max = fmaxf(tile_max, score[jj]);
                        }
                        float correction = km_softmax_merge(&state, tile_max);
                        for (int d = 0; d < s.head_dim; d++) o[d] *= correction;
                        for (int jj = 0; jj < K_ROWS; jj++) {
                            if (score[jj] == -INFINITY) continue;
                            float p = expf(score[jj] - state.max);
                            state.sum += p;
                            const float *vj = v + km_token_offset(b, kt * K_ROWS + jj, g, s.seq_len, s.kv_heads, s.head_dim);
                            for (int d = 0; d < s.head_dim; d++) o[d] += p * vj[d];
                        }
                    }
                    float *oi = out + km_token_offset(b, i, h, s.seq_len, s.heads, s.head_dim);
                    for (int d = 0; d < s.head_dim; d++) oi[d] = o[d] / state.sum;
                    lse[km_lse_offset(b, h, i, s.heads, s.seq_len)] = km_softmax_logsumexp(state);
                }
    free(o);
}

static float dot(const float *a, const float *b, int n) {
    float sum = 0.0f;
    for (int d = 0; d < n; d++) sum += a[d] * b[d];
    return sum;
}

// The two backward kernels' schedules on the host (accumulating, as the op does).
static void host_flash_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out,
                                const float *lse, const float *q, const float *k, const float *v, shape s) {
    int D = s.head_dim;
    for (int b = 0; b < s.batch; b++)
        for (int h = 0; h < s.heads; h++)  // d_q: query rows over their causal key tiles
            for (int qt = 0; qt < km_ceil_div(s.seq_len, Q_ROWS); qt++)
                for (int r = 0; r < km_tile_rows(qt, Q_ROWS, s.seq_len); r++) {
                    int i = qt * Q_ROWS + r, g = km_kv_head(h, s.heads, s.kv_heads);
                    size_t row = km_token_offset(b, i, h, s.seq_len, s.heads, D);
                    float delta = dot(d_out + row, out + row, D), l = lse[km_lse_offset(b, h, i, s.heads, s.seq_len)];
                    for (int kt = 0; kt < km_causal_key_tiles(qt, Q_ROWS, K_ROWS, s.seq_len); kt++)
                        for (int jj = 0; jj < K_ROWS && kt * K_ROWS + jj <= i; jj++) {
                            size_t kr = km_token_offset(b, kt * K_ROWS + jj, g, s.seq_len, s.kv_heads, D);
                            float p = expf(dot(q + row, k + kr, D) * s.scale - l);
                            float ds = p * (dot(d_out + row, v + kr, D) - delta) * s.scale;
                            for (int d = 0; d < D; d++) d_q[row + d] += ds * k[kr + d];
                        }
                }
    int group = s.heads / s.kv_heads;
    for (int b = 0; b < s.batch; b++)
        for (int g = 0; g < s.kv_heads; g++)  // d_k, d_v: key rows from the first query tile that sees them
            for (int kt = 0; kt < km_ceil_div(s.seq_len, KEY_ROWS); kt++)
                for (int r = 0; r < km_tile_rows(kt, KEY_ROWS, s.seq_len); r++) {
                    int j = kt * KEY_ROWS + r;
                    size_t kr = km_token_offset(b, j, g, s.seq_len, s.kv_heads, D);
                    for (int h = g * group; h < (g + 1) * group; h++)
                        for (int qt = km_causal_first_query_tile(kt, KEY_ROWS, QUERIES);
                             qt < km_ceil_div(s.seq_len, QUERIES); qt++)
                            for (int ii = 0; ii < QUERIES; ii++) {
                                int i = qt * QUERIES + ii;
                                if (i < j || i >= s.seq_len) continue;
                                size_t row = km_token_offset(b, i, h, s.seq_len, s.heads, D);
                                float delta = dot(d_out + row, out + row, D);
                                float p = expf(dot(q + row, k + kr, D) * s.scale - lse[km_lse_offset(b, h, i, s.heads, s.seq_len)]);
                                float ds = p * (dot(d_out + row, v + kr, D) - delta) * s.scale;
                                for (int d = 0; d < D; d++) {
                                    d_v[kr + d] += p * d_out[row + d];
                                    d_k[kr + d] += ds * q[row + d];
                                }
                            }
                }
}

static void test_flash_attention(void) {
    const shape shapes[] = {{2, 100, 4, 4, 16, 0.25f}, {1, 203, 6, 2, 8, 0.35f}, {2, 77, 4, 1, 12, 0.3f}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        shape s = shapes[c];
        size_t nq = (size_t)s.batch * s.seq_len * s.heads * s.head_dim;
        size_t nk = (size_t)s.batch * s.seq_len * s.kv_heads * s.head_dim, nl = (size_t)s.batch * s.heads * s.seq_len;
        float *q = random_floats(nq, 2.0f, 1 + c), *k = random_floats(nk, 2.0f, 11 + c), *v = random_floats(nk, 1.0f, 21 + c);
        float *dout = random_floats(nq, 1.0f, 31 + c);
        float *out = calloc(nq, sizeof(float)), *lse = calloc(nl, sizeof(float));
        float *ref_out = calloc(nq, sizeof(float)), *ref_lse = calloc(nl, sizeof(float));
        ops_workspace_reserve(ops_attention_workspace_floats(s.seq_len, s.heads, s.kv_heads, s.head_dim));
        attention_forward(ref_out, ref_lse, q, k, v, s.batch, s.seq_len, s.heads, s.kv_heads, s.head_dim, s.head_dim, s.scale);
        host_flash_forward(out, lse, q, k, v, s);
        char name[160];
        snprintf(name, sizeof name, "gpu tiles: flash forward on the host = CPU attention (L=%d h=%d kv=%d)", s.seq_len,
                 s.heads, s.kv_heads);
        double error = fmax(relative_error(out, ref_out, nq), relative_error(lse, ref_lse, nl));
        testing_report(error < 1e-5, name, "relative error %.3g", error);
        float *dq = random_floats(nq, 1.0f, 41 + c), *dk = random_floats(nk, 1.0f, 51 + c), *dv = random_floats(nk, 1.0f, 61 + c);
        float *rdq = malloc(sizeof(float) * nq), *rdk = malloc(sizeof(float) * nk), *rdv = malloc(sizeof(float) * nk);
        memcpy(rdq, dq, sizeof(float) * nq), memcpy(rdk, dk, sizeof(float) * nk), memcpy(rdv, dv, sizeof(float) * nk);
        attention_backward(rdq, rdk, rdv, dout, ref_out, ref_lse, q, k, v, s.batch, s.seq_len, s.heads, s.kv_heads,
                           s.head_dim, s.head_dim, s.scale);
        host_flash_backward(dq, dk, dv, dout, ref_out, ref_lse, q, k, v, s);
        snprintf(name, sizeof name, "gpu tiles: flash backward on the host = CPU attention (L=%d h=%d kv=%d)", s.seq_len,
                 s.heads, s.kv_heads);
        error = fmax(relative_error(dq, rdq, nq), fmax(relative_error(dk, rdk, nk), relative_error(dv, rdv, nk)));
        testing_report(error < 1e-5, name, "relative error %.3g", error);
        free(q), free(k), free(v), free(dout), free(out), free(lse), free(ref_out), free(ref_lse);
        free(dq), free(dk), free(dv), free(rdq), free(rdk), free(rdv);
    }
}

static void test_softmax_combine(void) {
    float scores[300];
    for (int i = 0; i < 300; i++) scores[i] = 8.0f * (float)(2.0 * rng_uniform(5, 5, (uint64_t)i) - 1.0);
    km_softmax_state whole = km_softmax_start(), left = km_softmax_start(), right = km_softmax_start();
    for (int i = 0; i < 300; i++) {
        km_softmax_state *half = i < 123 ? &left : &right;
        for (int pass = 0; pass < 2; pass++) {
            km_softmax_state *st = pass ? half : &whole;
            km_softmax_merge(st, scores[i]);
            st->sum += expf(scores[i] - st->max);
        }
    }
    float a, b;
    km_softmax_state joined = km_softmax_combine(left, right, &a, &b);
    double exact = 0.0, max = -INFINITY;
    for (int i = 0; i < 300; i++) max = fmax(max, scores[i]);
    for (int i = 0; i < 300; i++) exact += exp(scores[i] - max);
    exact = max + log(exact);
    double e1 = fabs(km_softmax_logsumexp(whole) - exact), e2 = fabs(km_softmax_logsumexp(joined) - exact);
    testing_report(e1 < 1e-5 && e2 < 1e-5 && km_softmax_combine(km_softmax_start(), whole, &a, &b).max == whole.max && a == 0.0f,
                   "gpu online softmax: merge tile by tile and combine of halves = exact logsumexp",
                   "errors %.3g, %.3g", e1, e2);
}

// The fused LM head's bookkeeping: chunks cover every row once; the row loss and the
// logit gradient from kernel_math equal the CPU op's losses and d_hidden.
static void test_cross_entropy_math(void) {
    bool covered = true;
    const int cases[][2] = {{1, 8192}, {1500, 3001}, {4096, 8192}, {100000, 151936}, {63, 50}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rows = cases[c][0], vocab = cases[c][1];
        int chunk = km_ce_chunk_rows(rows, vocab, (size_t)1 << 25, 64, 1024);
        int seen = 0;
        for (int ch = 0; ch < km_ce_chunk_count(rows, chunk); ch++) seen += km_tile_rows(ch, chunk, rows);
        covered &= seen == rows && chunk >= 1 && chunk <= 1024 && (size_t)chunk * vocab <= ((size_t)1 << 25) + (size_t)64 * vocab;
    }
    testing_report(covered, "gpu cross entropy: chunks cover every row once, within the scratch", "a case fails");
    int rows = 70, dim = 16, vocab = 257;
    float *h = random_floats((size_t)rows * dim, 1.0f, 71), *w = random_floats((size_t)vocab * dim, 0.5f, 72);
    int targets[70];
    for (int r = 0; r < rows; r++) targets[r] = r % 9 == 4 ? -1 : (r * 31) % vocab;
    float *losses = calloc(rows, sizeof(float)), *dh = calloc((size_t)rows * dim, sizeof(float));
    float *scratch = calloc(lm_head_scratch_floats(rows, vocab), sizeof(float));
    lm_head_cross_entropy(losses, dh, NULL, h, w, targets, rows, dim, vocab, 0.5f, scratch, NULL);
    float *mine = calloc(rows, sizeof(float)), *mdh = calloc((size_t)rows * dim, sizeof(float));
    float *z = malloc(sizeof(float) * vocab);
    for (int r = 0; r < rows; r++) {
        if (targets[r] < 0) continue;
        float max = -INFINITY;
        for (int j = 0; j < vocab; j++) z[j] = dot(h + (size_t)r * dim, w + (size_t)j * dim, dim), max = fmaxf(max, z[j]);
        double sum = 0.0;
        for (int j = 0; j < vocab; j++) sum += expf(z[j] - max);
        mine[r] = (float)km_ce_row_loss(max, sum, z[targets[r]]);
        for (int j = 0; j < vocab; j++) {
            float g = km_ce_logit_gradient(z[j], max, sum, j == targets[r], 0.5f);
            for (int d = 0; d < dim; d++) mdh[(size_t)r * dim + d] += g * w[(size_t)j * dim + d];
        }
    }
    double error = fmax(relative_error(mine, losses, rows), relative_error(mdh, dh, (size_t)rows * dim));
    testing_report(error < 1e-5, "gpu cross entropy: row loss and logit gradient = lm_head_cross_entropy",
                   "relative error %.3g", error);
    free(h), free(w), free(losses), free(dh), free(scratch), free(mine), free(mdh), free(z);
}

// The butterfly simulated lane by lane for warps of 32 and 64: every lane ends with the
// total, in log2(width) rounds; lane/warp split and the 64-bit lane masks.
static void test_warp_reduction(void) {
    bool ok = true;
    for (int width = 32; width <= 64; width *= 2) {
        double lanes[64], next[64], total = 0.0;
        for (int l = 0; l < width; l++) total += lanes[l] = (double)(l * 7 % 13) - 3.5;
        int rounds = 0;
        for (int offset = km_butterfly_first_offset(width); offset > 0; offset /= 2, rounds++) {
            for (int l = 0; l < width; l++) next[l] = lanes[l] + lanes[km_butterfly_partner(l, offset)];
            memcpy(lanes, next, sizeof(double) * width);
        }
        for (int l = 0; l < width; l++) ok &= lanes[l] == total;
        ok &= rounds == km_butterfly_rounds(width);
        ok &= km_warps_per_block(256, width) == 256 / width && km_warps_per_block(257, width) == 256 / width + 1;
        ok &= km_lane_of(width + 3, width) == 3 && km_warp_of(width + 3, width) == 1;
    }
    ok &= km_lane_mask(64) == ~(uint64_t)0 && km_lane_mask(32) == 0xffffffffull && km_lane_mask(1) == 1;
    testing_report(ok, "gpu warp butterfly: every lane holds the total for warps of 32 and 64, 64-bit masks",
                   "a lane or a count is wrong");
}

static void test_bf16(void) {
    bool ok = km_round_bf16(1.0f) == 1.0f && km_round_bf16(-2.5f) == -2.5f;
    ok &= km_round_bf16(1.0f + 1.0f / 256.0f) == 1.0f;                          // a tie: to even (down)
    ok &= km_round_bf16(1.0f + 3.0f / 256.0f) == 1.0f + 4.0f / 256.0f;          // a tie: to even (up)
    ok &= km_round_bf16(1.0f + 1.5f / 256.0f) == 1.0f + 2.0f / 256.0f;          // above the tie
    ok &= isinf(km_round_bf16(INFINITY)) && isnan(km_round_bf16(NAN));
    ok &= km_bf16_to_float(km_bf16_bits(3.140625f)) == 3.140625f && km_bf16_bits(1.0f) == 0x3f80;
    double worst = 0.0;
    for (int i = 0; i < 10000; i++) {
        float x = (float)(100.0 * (2.0 * rng_uniform(9, 9, (uint64_t)i) - 1.0));
        worst = fmax(worst, fabs(km_round_bf16(x) - x) / fabs(x));
    }
    ok &= worst <= 1.0 / 256.0;
    testing_report(ok, "gpu bf16: round to nearest even, relative error at most 2^-8", "worst %.3g", worst);
}

// The tiled GEMM's indexing: every transpose of a row-major product equals gemm().
static void test_gemm_indexing(void) {
    int m = 13, n = 17, k = 11;
    bool ok = true;
    for (int variant = 0; variant < 4; variant++) {
        int ta = variant & 1, tb = (variant >> 1) & 1;
        int lda = ta ? m + 2 : k + 3, ldb = tb ? k + 1 : n + 4, ldc = n + 2;
        float *a = random_floats((size_t)(ta ? k : m) * lda, 1.0f, 80 + variant);
        float *b = random_floats((size_t)(tb ? n : k) * ldb, 1.0f, 90 + variant);
        float *c = random_floats((size_t)m * ldc, 1.0f, 100 + variant);
        float *ref = malloc(sizeof(float) * (size_t)m * ldc);
        memcpy(ref, c, sizeof(float) * (size_t)m * ldc);
        gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, ref, ldc);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                float acc = 0.0f;
                for (int p = 0; p < k; p++) acc += a[km_gemm_a_index(ta, lda, i, p)] * b[km_gemm_b_index(tb, ldb, p, j)];
                c[(size_t)i * ldc + j] = km_gemm_epilogue(acc, 0.5f, 2.0f, c[(size_t)i * ldc + j]);
            }
        ok &= relative_error(c, ref, (size_t)m * ldc) < 1e-6;
        free(a), free(b), free(c), free(ref);
    }
    ok &= km_gemm_epilogue(2.0f, 3.0f, 0.0f, NAN) == 6.0f;  // beta 0 never reads c
    testing_report(ok, "gpu tiled GEMM indexing: all four transposes = gemm()", "a variant differs");
}

// ---- decoding ---------------------------------------------------------------------------
// attention_decode_kernel on the host: block (h, b); per tile, "thread" j scores key j, the
// running state moves by the tile's max, the scores become weights, the sum takes the
// tile's, and output element d accumulates the tile's value rows in key order.
static void host_attention_decode(float *out, const float *q, const float *k, const float *v, const int *positions,
                                  int batch, int heads, int kv_heads, int head_dim, int value_head_dim, float scale,
                                  size_t k_stride, size_t v_stride) {
    float weight[KM_DECODE_KEYS], o[KM_DECODE_KEYS];
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            int g = km_kv_head(h, heads, kv_heads), position = positions[b];
            const float *qh = q + ((size_t)b * heads + h) * head_dim;
            km_softmax_state state = km_softmax_start();
            memset(o, 0, sizeof o);
            for (int tile = 0; tile < km_decode_key_tiles(position); tile++) {
                int t0 = tile * KM_DECODE_KEYS, count = km_tile_rows(tile, KM_DECODE_KEYS, position + 1);
                for (int j = 0; j < count; j++)
                    weight[j] = dot(qh, k + km_decode_kv_offset(b, t0 + j, g, k_stride, kv_heads, head_dim), head_dim) *
                                scale;
                float correction = km_softmax_merge(&state, km_decode_tile_max(weight, count));
                for (int j = 0; j < count; j++) weight[j] = expf(weight[j] - state.max);
                state.sum += km_decode_tile_sum(weight, count);
                for (int d = 0; d < value_head_dim; d++) {
                    o[d] *= correction;
                    for (int j = 0; j < count; j++)
                        o[d] += weight[j] * v[km_decode_kv_offset(b, t0 + j, g, v_stride, kv_heads, value_head_dim) + d];
                }
            }
            for (int d = 0; d < value_head_dim; d++)
                out[((size_t)b * heads + h) * value_head_dim + d] = o[d] / state.sum;
        }
}

static void test_attention_decode(void) {
    // {heads, kv_heads, head_dim, value_head_dim, shared cache}: MHA, GQA, MQA, rndembqk's
    // shared stream, and value heads narrower and wider than the query/key heads
    const int shapes[][5] = {{4, 4, 16, 16, 0}, {6, 2, 24, 24, 0}, {4, 1, 32, 32, 0}, {4, 2, 16, 16, 1},
                             {4, 2, 16, 6, 0}, {6, 3, 8, 20, 0}};
    int positions[] = {0, 5, KM_DECODE_KEYS - 1, KM_DECODE_KEYS, 2 * KM_DECODE_KEYS + 44};
    int batch = (int)(sizeof positions / sizeof positions[0]), context = 3 * KM_DECODE_KEYS;
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int heads = shapes[c][0], kvh = shapes[c][1], hd = shapes[c][2], vd = shapes[c][3], shared = shapes[c][4];
        size_t k_stride = shared ? 0 : (size_t)context * kvh * hd, v_stride = shared ? 0 : (size_t)context * kvh * vd;
        size_t sequences = shared ? 1 : (size_t)batch;
        size_t nq = (size_t)batch * heads * hd, nout = (size_t)batch * heads * vd;
        float *q = random_floats(nq, 3.0f, 200 + c), *k = random_floats(sequences * context * kvh * hd, 2.0f, 210 + c);
        float *v = random_floats(sequences * context * kvh * vd, 1.0f, 220 + c);
        float *out = calloc(nout, sizeof(float)), *ref = calloc(nout, sizeof(float));
        float scale = 1.0f / sqrtf((float)hd);
        attention_decode(ref, q, k, v, positions, batch, heads, kvh, hd, vd, scale, k_stride, v_stride);
        host_attention_decode(out, q, k, v, positions, batch, heads, kvh, hd, vd, scale, k_stride, v_stride);
        char name[160];
        snprintf(name, sizeof name, "gpu decode: attention_decode's tiles on the host = CPU attention_decode (h=%d kv=%d "
                 "d=%d dv=%d%s)", heads, kvh, hd, vd, shared ? ", shared cache" : "");
        double error = relative_error(out, ref, nout);
        testing_report(error < 1e-5, name, "relative error %.3g", error);
        free(q), free(k), free(v), free(out), free(ref);
    }
}

static void test_decode_rows_and_nonapx(void) {
    // rows at positions: the kernels' offsets against the CPU ops, exactly
    int batch = 3, context = 9, positions[] = {4, 0, 8};
    size_t width = 10, stride = (size_t)context * width + 3;
    float *rows = random_floats((size_t)batch * width, 1.0f, 300), *cache = random_floats(batch * stride, 1.0f, 301);
    float *mine = malloc(sizeof(float) * batch * stride), *back = malloc(sizeof(float) * batch * width);
    float *ref_back = malloc(sizeof(float) * batch * width);
    memcpy(mine, cache, sizeof(float) * batch * stride);
    copy_rows_to_positions(cache, stride, rows, positions, batch, width);
    for (int b = 0; b < batch; b++)
        for (size_t j = 0; j < width; j++) mine[km_decode_row_offset(b, positions[b], stride, width) + j] = rows[b * width + j];
    bool ok = memcmp(mine, cache, sizeof(float) * batch * stride) == 0;
    for (size_t shared = 0; shared < 2; shared++) {  // stride 0: one table for the batch
        size_t s = shared ? 0 : stride;
        copy_rows_from_positions(ref_back, cache, s, positions, batch, width);
        for (int b = 0; b < batch; b++)
            for (size_t j = 0; j < width; j++) back[b * width + j] = cache[km_decode_row_offset(b, positions[b], s, width) + j];
        ok &= memcmp(back, ref_back, sizeof(float) * batch * width) == 0;
    }
    testing_report(ok, "gpu decode: rows-at-positions offsets = copy_rows_to/from_positions", "a row differs");
    free(rows), free(cache), free(mine), free(back), free(ref_back);
    // nonapx: 40 steps of 2 sequences from an empty state (o = 0, lse = -inf), GQA
    int heads = 4, kvh = 2, hd = 8, steps = 40, nb = 2;
    size_t state_stride = (size_t)heads * (hd + 1), ns = nb * state_stride, nq = (size_t)nb * heads * hd;
    float *state = malloc(sizeof(float) * ns), *ref_state = malloc(sizeof(float) * ns);
    for (size_t i = 0; i < ns; i++) state[i] = (i % (hd + 1)) == (size_t)hd ? -INFINITY : 0.0f;
    memcpy(ref_state, state, sizeof(float) * ns);
    float *out = malloc(sizeof(float) * nq), *ref_out = malloc(sizeof(float) * nq);
    double worst = 0.0;
    for (int t = 0; t < steps; t++) {
        float *q = random_floats(nq, 2.0f, 400 + t), *k = random_floats((size_t)nb * kvh * hd, 2.0f, 500 + t);
        float *v = random_floats((size_t)nb * kvh * hd, 1.0f, 600 + t);
        float scale = 1.0f / sqrtf((float)hd);
        nonapx_state_step(ref_out, ref_state, state_stride, q, k, v, nb, heads, kvh, hd, scale);
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < heads; h++) {
                const float *qh = q + ((size_t)b * heads + h) * hd;
                const float *kh = k + ((size_t)b * kvh + km_kv_head(h, heads, kvh)) * hd;
                const float *vh = v + ((size_t)b * kvh + km_kv_head(h, heads, kvh)) * hd;
                float *o = state + b * state_stride + (size_t)h * (hd + 1), g = 0.0f, keep, take;
                for (int d = 0; d < hd; d++) g += qh[d] * (1.0f / (1.0f + expf(-qh[d]))) * kh[d];
                o[hd] = km_nonapx_step(o[hd], scale * g, &keep, &take);
                for (int d = 0; d < hd; d++) out[((size_t)b * heads + h) * hd + d] = o[d] = o[d] * keep + vh[d] * take;
            }
        worst = fmax(worst, fmax(relative_error(out, ref_out, nq), relative_error(state, ref_state, ns)));
        free(q), free(k), free(v);
    }
    testing_report(worst < 1e-5, "gpu decode: km_nonapx_step = nonapx_state_step over 40 steps from an empty state",
                   "relative error %.3g", worst);
    free(state), free(ref_state), free(out), free(ref_out);
}

int main(void) {
    ops_set_threads(2);
    test_flash_attention();
    test_softmax_combine();
    test_attention_decode();
    test_decode_rows_and_nonapx();
    test_cross_entropy_math();
    test_warp_reduction();
    test_bf16();
    test_gemm_indexing();
    return testing_exit_code();
}
