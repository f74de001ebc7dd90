// The nonapx mixer's attention (DESIGN.md 5) in linear time. Per query head h and token
// t one scalar score g_t = scale * silu(q_t) . k_t (q_t, k_t of the SAME token; q holds
// pre-activations), and A_it = exp(g_t) / sum_{t'<=i} exp(g_t') for t <= i: a softmax
// whose scores depend on the key position only, so one scan per (sequence, head) with
// a running max M, a running sum Z = sum exp(g_t - M) and a running output gives every
// row, and the backward is one reverse scan.
//
// q, out, d_q, d_out are (batch,seq_len,heads,head_dim); k, v, d_k, d_v are
// (batch,seq_len,kv_heads,head_dim); score and logsumexp are (batch,heads,seq_len).
// Query head h reads kv head h / group, group = heads / kv_heads.
//
// Forward. The running numerator sum_{t<=i} exp(g_t - M) v_t is kept divided by Z, i.e.
// as the output o_i itself: with Z' the old sum in the new max's frame and w the new
// term, o_i = o_{i-1} (Z' / Z) + v_i (w / Z), Z = Z' + w: a convex combination, so no
// exponential ever exceeds 1 and no extra buffer is needed. lse_i = M + log Z.
//
// Backward (derivation in docs/design.md, "Mixer: nonapx"). With A_it = exp(g_t - lse_i)
// and lse_i nondecreasing in i:
//   R_t = sum_{i>=t} exp(lse_t - lse_i) dO_i      = dO_t + exp(lse_t - lse_{t+1}) R_{t+1}
//   c_t = sum_{i>=t} exp(lse_t - lse_i) dO_i.O_i  (same recurrence)
//   a_t = exp(g_t - lse_t) = A_tt;  dv_t += a_t R_t;  dg_t = a_t (v_t . R_t - c_t)
// Every factor is <= 1. dg_t goes to k_t (scale silu(q_t)) and to the pre-activation of
// q_t (scale k_t silu'(q_t)).
//
// Threads: forward one task per (batch, head); backward one per (batch, kv head), which
// scans every query head of the group in turn, so no two tasks write the same rows.
#include <math.h>
#include <string.h>

#include <omp.h>

#include "core/errors.h"
#include "ops/cpu/blocking.h"
#include "ops/cpu/fast_exp.h"
#include "ops/cpu/workspace.h"
#include "ops/ops.h"

// g = scale * silu(q) . k over head_dim
static inline float nonapx_score(const float *q, const float *k, int head_dim, float scale) {
    float dot = 0.0f;
    #pragma omp simd reduction(+ : dot)
    for (int e = 0; e < head_dim; e++) dot += q[e] * sigmoid(q[e]) * k[e];
    return scale * dot;
}

void nonapx_attention_forward(float *out, float *score, float *logsumexp, const float *q, const float *k,
                              const float *v, int batch, int seq_len, int heads, int kv_heads, int head_dim,
                              float scale) {
    int group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            float *g = score + ((size_t)b * heads + h) * seq_len;
            float *lse = logsumexp + ((size_t)b * heads + h) * seq_len;
            float max = -INFINITY;
            double sum = 0.0;
            for (int t = 0; t < seq_len; t++) {
                size_t row = (size_t)b * seq_len + t;
                const float *qt = q + (row * heads + h) * head_dim;
                const float *kt = k + (row * kv_heads + h / group) * head_dim;
                const float *vt = v + (row * kv_heads + h / group) * head_dim;
                float *ot = out + (row * heads + h) * head_dim;
                const float *prev = t ? ot - (size_t)heads * head_dim : ot;  // o_{t-1} (unused at t = 0)
                g[t] = nonapx_score(qt, kt, head_dim, scale);
                double old, w;  // the old sum in the new frame, and the new term
                if (g[t] > max) {
                    old = t ? sum * exp((double)max - g[t]) : 0.0;
                    w = 1.0;
                    max = g[t];
                } else {
                    old = sum;
                    w = exp((double)g[t] - max);
                }
                sum = old + w;
                float keep = (float)(old / sum), take = (float)(w / sum);
                #pragma omp simd
                for (int e = 0; e < head_dim; e++) ot[e] = (t ? prev[e] * keep : 0.0f) + vt[e] * take;
                lse[t] = max + (float)log(sum);
            }
        }
    }
}

size_t nonapx_attention_workspace_per_thread(int head_dim) { return round_to_line((size_t)head_dim); }

void nonapx_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out,
                               const float *score, const float *logsumexp, const float *q, const float *k,
                               const float *v, int batch, int seq_len, int heads, int kv_heads, int head_dim,
                               float scale) {
    int group = heads / kv_heads;
    size_t per_thread = nonapx_attention_workspace_per_thread(head_dim);
    float *workspace = ops_workspace_take(per_thread);
    #pragma omp parallel
    {
        float *r = workspace + per_thread * (size_t)omp_get_thread_num();
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < batch; b++) {
            for (int kv = 0; kv < kv_heads; kv++) {
                for (int h = kv * group; h < (kv + 1) * group; h++) {
                    const float *g = score + ((size_t)b * heads + h) * seq_len;
                    const float *lse = logsumexp + ((size_t)b * heads + h) * seq_len;
                    memset(r, 0, sizeof(float) * (size_t)head_dim);
                    double c = 0.0;
                    for (int t = seq_len - 1; t >= 0; t--) {
                        size_t row = (size_t)b * seq_len + t;
                        const float *qt = q + (row * heads + h) * head_dim;
                        const float *kt = k + (row * kv_heads + kv) * head_dim;
                        const float *vt = v + (row * kv_heads + kv) * head_dim;
                        const float *ot = out + (row * heads + h) * head_dim;
                        const float *dot_ = d_out + (row * heads + h) * head_dim;
                        float *dqt = d_q + (row * heads + h) * head_dim;
                        float *dkt = d_k + (row * kv_heads + kv) * head_dim;
                        float *dvt = d_v + (row * kv_heads + kv) * head_dim;
                        float decay = t + 1 < seq_len ? expf(lse[t] - lse[t + 1]) : 0.0f;
                        float o_dot = 0.0f;
                        #pragma omp simd reduction(+ : o_dot)
                        for (int e = 0; e < head_dim; e++) {
                            r[e] = r[e] * decay + dot_[e];
                            o_dot += dot_[e] * ot[e];
                        }
                        c = c * decay + o_dot;
                        float a = expf(g[t] - lse[t]);
                        float v_dot = 0.0f;
                        #pragma omp simd reduction(+ : v_dot)
                        for (int e = 0; e < head_dim; e++) {
                            v_dot += vt[e] * r[e];
                            dvt[e] += a * r[e];
                        }
                        float dg = scale * a * (v_dot - (float)c);
                        #pragma omp simd
                        for (int e = 0; e < head_dim; e++) {
                            float s = sigmoid(qt[e]);
                            dkt[e] += dg * qt[e] * s;
                            dqt[e] += dg * kt[e] * s * (1.0f + qt[e] * (1.0f - s));
                        }
                    }
                }
            }
        }
    }
}

// The quadratic reference: per head, the scores g_t of every token go into the last row
// of the head's block first; each row i then takes the plain softmax of g_0..g_i (its own
// max and sum), the last row last, in place.
void nonapx_attention_probabilities(float *probs, const float *q, const float *k, int seq_len, int heads,
                                    int kv_heads, int head_dim, float scale) {
    int group = heads / kv_heads;
    #pragma omp parallel for schedule(static)
    for (int h = 0; h < heads; h++) {
        float *block = probs + (size_t)h * seq_len * seq_len;
        float *g = block + (size_t)(seq_len - 1) * seq_len;
        for (int t = 0; t < seq_len; t++) {
            const float *qt = q + ((size_t)t * heads + h) * head_dim;
            g[t] = nonapx_score(qt, k + ((size_t)t * kv_heads + h / group) * head_dim, head_dim, scale);
        }
        for (int i = 0; i < seq_len; i++) {
            float *row = block + (size_t)i * seq_len;
            float max = -INFINITY;
            for (int t = 0; t <= i; t++) max = fmaxf(max, g[t]);
            double sum = 0.0;
            for (int t = 0; t <= i; t++) sum += exp((double)g[t] - max);
            for (int t = 0; t <= i; t++) row[t] = (float)(exp((double)g[t] - max) / sum);
            for (int t = i + 1; t < seq_len; t++) row[t] = 0.0f;
        }
    }
}
