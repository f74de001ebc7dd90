// Decoding ops (ops.h, "decoding"): one new row per sequence, each at its own position,
// against a KV cache (softmax attention) or a recurrent state (approx, approx-diag,
// nonapx). Plain loops, parallel over (sequence, head): a step has batch x heads rows of
// work, no tiles to block. Every op computes the same sums as the training forward's
// kernels in another order, so cached decoding equals the full forward to fp32 rounding
// (tests/unit/test_decode.c).
#include <math.h>
#include <string.h>

#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

void copy_rows_to_positions(float *cache, size_t sequence_stride, const float *rows, const int *positions, int batch,
                            size_t width) {
    for (int b = 0; b < batch; b++)
        memcpy(cache + (size_t)b * sequence_stride + (size_t)positions[b] * width, rows + (size_t)b * width,
               width * sizeof(float));
}

void copy_rows_from_positions(float *rows, const float *table, size_t sequence_stride, const int *positions,
                              int batch, size_t width) {
    for (int b = 0; b < batch; b++)
        memcpy(rows + (size_t)b * width, table + (size_t)b * sequence_stride + (size_t)positions[b] * width,
               width * sizeof(float));
}

void rope_at_positions(float *x, const float *cos_table, const float *sin_table, const int *positions, int batch,
                       int heads, int head_dim) {
    int half = head_dim / 2;
    for (int b = 0; b < batch; b++) {
        const float *c = cos_table + (size_t)positions[b] * half, *s = sin_table + (size_t)positions[b] * half;
        for (int h = 0; h < heads; h++) {
            float *x1 = x + ((size_t)b * heads + h) * head_dim, *x2 = x1 + half;
            for (int i = 0; i < half; i++) {
                float a = x1[i], bb = x2[i];
                x1[i] = a * c[i] - bb * s[i];
                x2[i] = bb * c[i] + a * s[i];
            }
        }
    }
}

// ---- softmax attention over a cache: online softmax, one pass, no buffer -------------
void attention_decode(float *out, const float *q, const float *k, const float *v, const int *positions, int batch,
                      int heads, int kv_heads, int head_dim, int value_head_dim, float scale, size_t k_stride,
                      size_t v_stride) {
    int group = heads / kv_heads, dv = value_head_dim;
    size_t k_ld = (size_t)kv_heads * head_dim, v_ld = (size_t)kv_heads * dv;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            const float *qh = q + ((size_t)b * heads + h) * head_dim;
            const float *kb = k + (size_t)b * k_stride + (size_t)(h / group) * head_dim;
            const float *vb = v + (size_t)b * v_stride + (size_t)(h / group) * dv;
            float *o = out + ((size_t)b * heads + h) * dv;
            float max = -INFINITY, sum = 0.0f;
            for (int e = 0; e < dv; e++) o[e] = 0.0f;
            for (int t = 0; t <= positions[b]; t++) {
                const float *kt = kb + (size_t)t * k_ld, *vt = vb + (size_t)t * v_ld;
                float s = 0.0f;
                for (int e = 0; e < head_dim; e++) s += qh[e] * kt[e];
                s *= scale;
                if (s > max) {  // rescale what was summed in the old frame
                    float keep = expf(max - s);
                    sum *= keep;
                    for (int e = 0; e < dv; e++) o[e] *= keep;
                    max = s;
                }
                float w = expf(s - max);
                sum += w;
                for (int e = 0; e < dv; e++) o[e] += w * vt[e];
            }
            for (int e = 0; e < dv; e++) o[e] /= sum;
        }
}

// ---- approx: S = sum phi(k) v^T, z = sum phi(k) per kv head ---------------------------
// phi(x) = [1, c1 x_m, c2 x_m^2, c3 x_m x_n (m < n)], c1 = sqrt(s), c2 = s / sqrt(2),
// c3 = s: taylor_attention.c's symmetric feature map, phi(q).phi(k) = 1 + x + x^2/2.
static void taylor_features(float *phi, const float *x, int d, float scale) {
    float c1 = sqrtf(scale), c2 = scale / sqrtf(2.0f), c3 = scale;
    int f = 0;
    phi[f++] = 1.0f;
    for (int m = 0; m < d; m++) phi[f++] = c1 * x[m];
    for (int m = 0; m < d; m++) phi[f++] = c2 * x[m] * x[m];
    for (int m = 0; m < d; m++)
        for (int n = m + 1; n < d; n++) phi[f++] = c3 * x[m] * x[n];
}

size_t taylor_decode_state_floats(int head_dim) { return (size_t)taylor_feature_count(head_dim) * (head_dim + 1); }

enum { TAYLOR_MAX_FEATURES = 1 + 128 + 128 * 129 / 2 };  // head_dim <= 128 (checked by the mixer)

void taylor_state_update(float *state, size_t state_stride, const float *k, const float *v, int batch, int rows,
                         int kv_heads, int head_dim, float scale) {
    int F = taylor_feature_count(head_dim), w = head_dim + 1;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int g = 0; g < kv_heads; g++) {
            float phi[TAYLOR_MAX_FEATURES];
            float *S = state + (size_t)b * state_stride + (size_t)g * F * w;
            for (int t = 0; t < rows; t++) {
                size_t row = ((size_t)b * rows + t) * kv_heads + g;
                const float *kt = k + row * head_dim, *vt = v + row * head_dim;
                taylor_features(phi, kt, head_dim, scale);
                for (int f = 0; f < F; f++) {
                    float *Sf = S + (size_t)f * w, p = phi[f];
                    for (int e = 0; e < head_dim; e++) Sf[e] += p * vt[e];
                    Sf[head_dim] += p;
                }
            }
        }
}

void taylor_state_read(float *out, const float *state, size_t state_stride, const float *q, int batch, int heads,
                       int kv_heads, int head_dim, float scale) {
    int F = taylor_feature_count(head_dim), w = head_dim + 1, group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            float phi[TAYLOR_MAX_FEATURES], num[129];
            const float *S = state + (size_t)b * state_stride + (size_t)(h / group) * F * w;
            float *o = out + ((size_t)b * heads + h) * head_dim;
            taylor_features(phi, q + ((size_t)b * heads + h) * head_dim, head_dim, scale);
            for (int e = 0; e <= head_dim; e++) num[e] = 0.0f;
            for (int f = 0; f < F; f++) {
                const float *Sf = S + (size_t)f * w;
                for (int e = 0; e <= head_dim; e++) num[e] += phi[f] * Sf[e];
            }
            for (int e = 0; e < head_dim; e++) o[e] = num[e] / num[head_dim];
        }
}

// ---- approx-diag: P, R [d, d], K, C, V [d] per kv head --------------------------------
size_t diag_decode_state_floats(int head_dim) { return 2 * (size_t)head_dim * head_dim + 3 * (size_t)head_dim; }

void diag_state_update(float *state, size_t state_stride, const float *k, const float *v, int batch, int rows,
                       int kv_heads, int head_dim) {
    int d = head_dim;
    size_t per_head = diag_decode_state_floats(d);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int g = 0; g < kv_heads; g++) {
            float *P = state + (size_t)b * state_stride + (size_t)g * per_head, *R = P + (size_t)d * d;
            float *K = R + (size_t)d * d, *C = K + d, *V = C + d;
            for (int t = 0; t < rows; t++) {
                size_t row = ((size_t)b * rows + t) * kv_heads + g;
                const float *kt = k + row * d, *vt = v + row * d;
                for (int m = 0; m < d; m++) {
                    float km = kt[m], cm = km * km;
                    for (int e = 0; e < d; e++) {
                        P[(size_t)m * d + e] = fmaf(km, vt[e], P[(size_t)m * d + e]);
                        R[(size_t)m * d + e] = fmaf(cm, vt[e], R[(size_t)m * d + e]);
                    }
                    K[m] += km;
                    C[m] += cm;
                }
                for (int e = 0; e < d; e++) V[e] += vt[e];
            }
        }
}

void diag_state_read(float *out, const float *state, size_t state_stride, const float *q, const int *positions,
                     int batch, int heads, int kv_heads, int head_dim, float scale, float guard, float eps) {
    int d = head_dim, group = heads / kv_heads;
    size_t per_head = diag_decode_state_floats(d);
    float half_s2 = 0.5f * scale * scale;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            const float *P = state + (size_t)b * state_stride + (size_t)(h / group) * per_head;
            const float *R = P + (size_t)d * d, *K = R + (size_t)d * d, *C = K + d, *V = C + d;
            const float *qi = q + ((size_t)b * heads + h) * d;
            float *o = out + ((size_t)b * heads + h) * d;
            float x = 0.0f, den2 = 0.0f, a_norm2 = 0.0f, c_sum = 0.0f;
            for (int m = 0; m < d; m++) {
                float a = scale * qi[m];
                x += a * K[m];
                den2 += half_s2 * qi[m] * qi[m] * C[m];
                a_norm2 += a * a;
                c_sum += C[m];
            }
            // diag_attention.c's smooth first-order reciprocal, in double for the same reason
            int count = positions[b] + 1;
            double delta2 = (double)guard * guard * count * (double)a_norm2 * (double)c_sum;
            double D = (double)x * x + delta2;
            float r = D > 0.0 ? (float)((double)x / D) : 0.0f, inv2 = 1.0f / (den2 + eps), inv_count = 1.0f / (float)count;
            for (int e = 0; e < d; e++) {
                float n1 = 0.0f, n2 = 0.0f;
                for (int m = 0; m < d; m++) {
                    n1 = fmaf(scale * qi[m], P[(size_t)m * d + e], n1);
                    n2 = fmaf(half_s2 * qi[m] * qi[m], R[(size_t)m * d + e], n2);
                }
                o[e] = V[e] * inv_count + n1 * r + n2 * inv2;
            }
        }
}

// ---- nonapx: per query head [o (head_dim), lse] ----------------------------------------
void nonapx_state_step(float *out, float *state, size_t state_stride, const float *q, const float *k, const float *v,
                       int batch, int heads, int kv_heads, int head_dim, float scale) {
    int group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            const float *qh = q + ((size_t)b * heads + h) * head_dim;
            const float *kh = k + ((size_t)b * kv_heads + h / group) * head_dim;
            const float *vh = v + ((size_t)b * kv_heads + h / group) * head_dim;
            float *o = state + (size_t)b * state_stride + (size_t)h * (head_dim + 1), *lse = o + head_dim;
            float dot = 0.0f;
            for (int e = 0; e < head_dim; e++) dot += qh[e] * sigmoid(qh[e]) * kh[e];
            float g = scale * dot;
            double hi = g > *lse ? g : *lse, lo = g > *lse ? *lse : g;
            double next = hi + log1p(exp(lo - hi));
            float keep = (float)exp((double)*lse - next), take = (float)exp((double)g - next);
            float *y = out + ((size_t)b * heads + h) * head_dim;
            for (int e = 0; e < head_dim; e++) {
                o[e] = o[e] * keep + vh[e] * take;
                y[e] = o[e];
            }
            *lse = (float)next;
        }
}
