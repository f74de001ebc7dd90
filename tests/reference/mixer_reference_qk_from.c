// The double reference of mixers rndembqk, fixedseqqk, staticembqk
// (model_reference_internal.h): standard's tensors, Q and K from elsewhere.
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "model_reference_internal.h"

// The plainest form of each: Q, K are projected from qk_inp and V from v_inp. With
// qk_sequence >= 0 (the fixed stream) only that sequence's rows of qk_inp are projected
// and its Q, K are COPIED into every sequence, then every sequence runs ordinary causal
// attention: the shared map is recomputed per sequence here (the fp32 model materialises
// it once), and the backward sums the per-sequence d_q, d_k into the fixed rows.

static void qk_from_run(ref_context *x, int layer, const double *qk_inp, int qk_sequence, const double *v_inp,
                        standard_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    ref_standard_begin(x, layer, s, true);
    int H = s->heads, KV = s->kv_heads, dh = s->dh, group = H / KV;
    if (qk_sequence < 0) {
        ref_linear_forward(s->q, qk_inp, s->wq.w, s->bq.w, rows, d, H * dh);
        ref_linear_forward(s->k, qk_inp, s->wk.w, s->bk.w, rows, d, KV * dh);
    } else {  // the fixed sequence's Q, K, copied into every sequence
        const double *fixed = qk_inp + (size_t)qk_sequence * T * d;
        ref_linear_forward(s->q, fixed, s->wq.w, s->bq.w, T, d, H * dh);
        ref_linear_forward(s->k, fixed, s->wk.w, s->bk.w, T, d, KV * dh);
        for (int b = 1; b < B; b++) {
            memcpy(s->q + (size_t)b * T * H * dh, s->q, (size_t)T * H * dh * sizeof(double));
            memcpy(s->k + (size_t)b * T * KV * dh, s->k, (size_t)T * KV * dh * sizeof(double));
        }
    }
    ref_linear_forward(s->v, v_inp, s->wv.w, s->bv.w, rows, d, KV * dh);
    ref_rope(s->q, B, T, H, dh, c->rope_theta, 1.0);
    ref_rope(s->k, B, T, KV, dh, c->rope_theta, 1.0);

    double scale = 1.0 / sqrt((double)dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const double *qi = s->q + (((size_t)b * T + i) * H + h) * dh;
                double *p = s->probs + (((size_t)b * H + h) * T + i) * T;
                double max = -INFINITY, sum = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double *kj = s->k + (((size_t)b * T + j) * KV + h / group) * dh;
                    double dot = 0.0;
                    for (int e = 0; e < dh; e++) dot += qi[e] * kj[e];
                    p[j] = scale * dot;
                    max = fmax(max, p[j]);
                }
                for (int j = 0; j <= i; j++) sum += exp(p[j] - max);
                double *oi = s->av + (((size_t)b * T + i) * H + h) * dh;
                for (int j = 0; j <= i; j++) {
                    p[j] = exp(p[j] - max) / sum;
                    const double *vj = s->v + (((size_t)b * T + j) * KV + h / group) * dh;
                    for (int e = 0; e < dh; e++) oi[e] += p[j] * vj[e];
                }
            }
}

// d_qk_inp += the Q, K paths, d_v_inp += the V path; parameter gradients += into x->grads.
static void qk_from_backward(ref_context *x, int layer, const double *qk_inp, int qk_sequence, double *d_qk_inp,
                             const double *v_inp, double *d_v_inp, const double *d_out) {
    standard_state s;
    qk_from_run(x, layer, qk_inp, qk_sequence, v_inp, &s);
    int d = x->config->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s.heads, KV = s.kv_heads, dh = s.dh, group = H / KV;
    double scale = 1.0 / sqrt((double)dh);
    double *d_av = ref_zeros((size_t)rows * H * dh);
    double *d_q = ref_zeros((size_t)rows * H * dh);
    double *d_k = ref_zeros((size_t)rows * KV * dh);
    double *d_v = ref_zeros((size_t)rows * KV * dh);
    double *d_p = ref_zeros((size_t)T);

    ref_linear_backward(d_av, s.wo.g, NULL, d_out, s.av, s.wo.w, rows, H * dh, d);
    // o_i = sum_j p_ij v_j;  p_ij = softmax_j(s_ij);  s_ij = scale q_i . k_j
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const double *p = s.probs + (((size_t)b * H + h) * T + i) * T;
                const double *qi = s.q + (((size_t)b * T + i) * H + h) * dh;
                const double *doi = d_av + (((size_t)b * T + i) * H + h) * dh;
                double *dqi = d_q + (((size_t)b * T + i) * H + h) * dh;
                double p_dot_dp = 0.0;
                for (int j = 0; j <= i; j++) {
                    size_t vj = (((size_t)b * T + j) * KV + h / group) * dh;
                    d_p[j] = 0.0;
                    for (int e = 0; e < dh; e++) {
                        d_p[j] += doi[e] * s.v[vj + e];
                        d_v[vj + e] += p[j] * doi[e];
                    }
                    p_dot_dp += p[j] * d_p[j];
                }
                for (int j = 0; j <= i; j++) {
                    double d_score = p[j] * (d_p[j] - p_dot_dp);
                    size_t kj = (((size_t)b * T + j) * KV + h / group) * dh;
                    for (int e = 0; e < dh; e++) {
                        dqi[e] += scale * d_score * s.k[kj + e];
                        d_k[kj + e] += scale * d_score * qi[e];
                    }
                }
            }
    ref_rope(d_q, B, T, H, dh, x->config->rope_theta, -1.0);
    ref_rope(d_k, B, T, KV, dh, x->config->rope_theta, -1.0);
    if (qk_sequence < 0) {
        ref_linear_backward(d_qk_inp, s.wq.g, s.bq.g, d_q, qk_inp, s.wq.w, rows, d, H * dh);
        ref_linear_backward(d_qk_inp, s.wk.g, s.bk.g, d_k, qk_inp, s.wk.w, rows, d, KV * dh);
    } else {  // every sequence's copy of the fixed Q, K sends its gradient to the fixed rows
        for (int b = 1; b < B; b++) {
            for (size_t e = 0; e < (size_t)T * H * dh; e++) d_q[e] += d_q[(size_t)b * T * H * dh + e];
            for (size_t e = 0; e < (size_t)T * KV * dh; e++) d_k[e] += d_k[(size_t)b * T * KV * dh + e];
        }
        size_t fixed = (size_t)qk_sequence * T * d;
        ref_linear_backward(d_qk_inp + fixed, s.wq.g, s.bq.g, d_q, qk_inp + fixed, s.wq.w, T, d, H * dh);
        ref_linear_backward(d_qk_inp + fixed, s.wk.g, s.bk.g, d_k, qk_inp + fixed, s.wk.w, T, d, KV * dh);
    }
    ref_linear_backward(d_v_inp, s.wv.g, s.bv.g, d_v, v_inp, s.wv.w, rows, d, KV * dh);
    free(d_av);
    free(d_q);
    free(d_k);
    free(d_v);
    free(d_p);
    ref_standard_free(&s);
}

static int ref_fixed_sequence(const ref_context *x, int layer) {
    if (x->fixed_sequence < 0) fatal("reference: layer %d needs the fixed stream but the batch has none", layer);
    return x->fixed_sequence;
}

// rndembqk / fixedseqqk (the same math; the fixed stream's input differs)
void ref_fixed_qk_forward(ref_context *x, int layer, double *out, const double *inp) {
    standard_state s;
    qk_from_run(x, layer, inp, ref_fixed_sequence(x, layer), inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    ref_standard_free(&s);
}

void ref_fixed_qk_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    qk_from_backward(x, layer, inp, ref_fixed_sequence(x, layer), d_inp, inp, d_inp, d_out);
}

// staticembqk: Q, K from E = RMSNorm(e) with the layer's input-norm weight, e the input
// embeddings; E's gradient goes to the norm weight and to x->d_embeddings.
static ref_tensor static_norm(ref_context *x, int layer, double **normed, double **rstd) {
    int d = x->config->hidden_size;
    if (!x->embeddings) fatal("reference: layer %d needs the input embeddings", layer);
    ref_tensor w = ref_lookup(x, true, d, 0, "layers.%d.input_layernorm", layer);
    *normed = ref_zeros((size_t)x->rows * d);
    *rstd = ref_zeros((size_t)x->rows);
    ref_rmsnorm_forward(*normed, *rstd, x->embeddings, w.w, x->rows, d, x->config->rms_norm_eps);
    return w;
}

void ref_static_qk_forward(ref_context *x, int layer, double *out, const double *inp) {
    double *normed, *rstd;
    static_norm(x, layer, &normed, &rstd);
    standard_state s;
    qk_from_run(x, layer, normed, -1, inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    ref_standard_free(&s);
    free(normed);
    free(rstd);
}

void ref_static_qk_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    double *normed, *rstd;
    ref_tensor w = static_norm(x, layer, &normed, &rstd);
    double *d_normed = ref_zeros((size_t)x->rows * x->config->hidden_size);
    qk_from_backward(x, layer, normed, -1, d_normed, inp, d_inp, d_out);
    ref_rmsnorm_backward(x->d_embeddings, w.g, d_normed, x->embeddings, w.w, rstd, x->rows, x->config->hidden_size);
    free(d_normed);
    free(normed);
    free(rstd);
}
