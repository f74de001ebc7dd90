// The double reference of mixers `mhe-add` / `mhe-mul` (model_reference_internal.h): a
// shared projection plus per-head embeddings, then causal softmax attention on
// materialised probabilities.
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/errors.h"
#include "model_reference_internal.h"

// probs[B,H,T,T] = softmax_t<=i(scale q_i . k_t), av[rows,H,dh] = A V;
// q [rows,H,dh], k, v [rows,KV,dh], query head h reads kv head h / (H / KV).
static void ref_attention_forward(double *probs, double *av, const double *q, const double *k, const double *v,
                                  int B, int T, int H, int KV, int dh) {
    int group = H / KV;
    double scale = 1.0 / sqrt((double)dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const double *qi = q + (((size_t)b * T + i) * H + h) * dh;
                double *p = probs + (((size_t)b * H + h) * T + i) * T;
                double max = -INFINITY, sum = 0.0;
                for (int t = 0; t <= i; t++) {
                    const double *kt = k + (((size_t)b * T + t) * KV + h / group) * dh;
                    double dot = 0.0;
                    for (int e = 0; e < dh; e++) dot += qi[e] * kt[e];
                    p[t] = scale * dot;
                    max = fmax(max, p[t]);
                }
                for (int t = 0; t <= i; t++) sum += exp(p[t] - max);
                double *oi = av + (((size_t)b * T + i) * H + h) * dh;
                for (int t = 0; t <= i; t++) {
                    p[t] = exp(p[t] - max) / sum;
                    const double *vt = v + (((size_t)b * T + t) * KV + h / group) * dh;
                    for (int e = 0; e < dh; e++) oi[e] += p[t] * vt[e];
                }
            }
}

// d_p_it = dO_i . v_t;  d_score_it = p_it (d_p_it - sum_t' p_it' d_p_it');
// d_q_i += scale sum_t d_score_it k_t;  d_k_t += scale d_score_it q_i;  d_v_t += p_it dO_i
static void ref_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_av, const double *probs,
                                   const double *q, const double *k, const double *v, int B, int T, int H, int KV,
                                   int dh) {
    int group = H / KV;
    double scale = 1.0 / sqrt((double)dh);
    double *d_p = ref_zeros((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const double *p = probs + (((size_t)b * H + h) * T + i) * T;
                const double *qi = q + (((size_t)b * T + i) * H + h) * dh;
                const double *doi = d_av + (((size_t)b * T + i) * H + h) * dh;
                double *dqi = d_q + (((size_t)b * T + i) * H + h) * dh;
                double p_dot_dp = 0.0;
                for (int t = 0; t <= i; t++) {
                    const double *vt = v + (((size_t)b * T + t) * KV + h / group) * dh;
                    double *dvt = d_v + (((size_t)b * T + t) * KV + h / group) * dh;
                    d_p[t] = 0.0;
                    for (int e = 0; e < dh; e++) {
                        d_p[t] += doi[e] * vt[e];
                        dvt[e] += p[t] * doi[e];
                    }
                    p_dot_dp += p[t] * d_p[t];
                }
                for (int t = 0; t <= i; t++) {
                    double d_score = scale * p[t] * (d_p[t] - p_dot_dp);
                    const double *kt = k + (((size_t)b * T + t) * KV + h / group) * dh;
                    double *dkt = d_k + (((size_t)b * T + t) * KV + h / group) * dh;
                    for (int e = 0; e < dh; e++) {
                        dqi[e] += d_score * kt[e];
                        dkt[e] += d_score * qi[e];
                    }
                }
            }
    free(d_p);
}

typedef struct {
    ref_tensor wq, bq, wk, bk, wv, bv, eq, ek, ev, wo;
    int heads, kv_heads, dh;
    bool mul;
    double *qs, *ks, *vs;     // shared projections [rows, dh]
    double *q, *k, *v;        // per head [rows, heads|kv, dh], q and k after RoPE
    double *probs, *av;     // [batch, heads, T, T]; [rows, heads, dh]
} mhe_state;

// out[r, j] = inp[r] + e[j] (add) or inp[r] * (1 + e[j]) (mul)
static void ref_head_embed(double *out, const double *inp, const double *e, int rows, int heads, int dh, bool mul) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < heads; j++)
            for (int i = 0; i < dh; i++) {
                double xi = inp[(size_t)r * dh + i], ej = e[(size_t)j * dh + i];
                out[((size_t)r * heads + j) * dh + i] = mul ? xi * (1.0 + ej) : xi + ej;
            }
}

// d_inp[r] += sum_j d_out[r,j] (* (1 + e[j])); d_e[j] += sum_r d_out[r,j] (* inp[r])
static void ref_head_embed_backward(double *d_inp, double *d_e, const double *d_out, const double *inp,
                                    const double *e, int rows, int heads, int dh, bool mul) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < heads; j++)
            for (int i = 0; i < dh; i++) {
                double dy = d_out[((size_t)r * heads + j) * dh + i];
                d_inp[(size_t)r * dh + i] += mul ? dy * (1.0 + e[(size_t)j * dh + i]) : dy;
                if (d_e) d_e[(size_t)j * dh + i] += mul ? dy * inp[(size_t)r * dh + i] : dy;
            }
}

static void mhe_run(ref_context *x, int layer, const double *inp, bool mul, mhe_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    s->heads = c->num_attention_heads;
    s->kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    s->dh = ref_head_dim(c);
    s->mul = mul;
    int H = s->heads, KV = s->kv_heads, dh = s->dh;
    bool bias = c->attention_bias;
    s->wq = ref_lookup(x, true, dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, dh, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, dh, 0, "layers.%d.mixer.bv", layer);
    s->eq = ref_lookup(x, true, H, dh, "layers.%d.mixer.eq", layer);
    s->ek = ref_lookup(x, true, KV, dh, "layers.%d.mixer.ek", layer);
    s->ev = ref_lookup(x, true, KV, dh, "layers.%d.mixer.ev", layer);
    s->wo = ref_lookup(x, true, d, (int64_t)H * dh, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);
    s->qs = ref_zeros((size_t)rows * dh);
    s->ks = ref_zeros((size_t)rows * dh);
    s->vs = ref_zeros((size_t)rows * dh);
    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dh);
    s->probs = ref_zeros((size_t)B * H * T * T);
    s->av = ref_zeros((size_t)rows * H * dh);
    ref_linear_forward(s->qs, inp, s->wq.w, s->bq.w, rows, d, dh);
    ref_linear_forward(s->ks, inp, s->wk.w, s->bk.w, rows, d, dh);
    ref_linear_forward(s->vs, inp, s->wv.w, s->bv.w, rows, d, dh);
    ref_head_embed(s->q, s->qs, s->eq.w, rows, H, dh, mul);
    ref_head_embed(s->k, s->ks, s->ek.w, rows, KV, dh, mul);
    ref_head_embed(s->v, s->vs, s->ev.w, rows, KV, dh, mul);
    ref_rope(s->q, B, T, H, dh, c->rope_theta, 1.0);
    ref_rope(s->k, B, T, KV, dh, c->rope_theta, 1.0);
    ref_attention_forward(s->probs, s->av, s->q, s->k, s->v, B, T, H, KV, dh);
}

static void mhe_free(mhe_state *s) {
    free(s->qs);
    free(s->ks);
    free(s->vs);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->probs);
    free(s->av);
}

static void mhe_forward(ref_context *x, int layer, double *out, const double *inp, bool mul) {
    mhe_state s;
    mhe_run(x, layer, inp, mul, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    mhe_free(&s);
}

static void mhe_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp, bool mul) {
    mhe_state s;
    mhe_run(x, layer, inp, mul, &s);
    int d = x->config->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s.heads, KV = s.kv_heads, dh = s.dh;
    double *d_av = ref_zeros((size_t)rows * H * dh);
    double *d_q = ref_zeros((size_t)rows * H * dh), *d_k = ref_zeros((size_t)rows * KV * dh);
    double *d_v = ref_zeros((size_t)rows * KV * dh);
    double *d_qs = ref_zeros((size_t)rows * dh), *d_ks = ref_zeros((size_t)rows * dh);
    double *d_vs = ref_zeros((size_t)rows * dh);
    ref_linear_backward(d_av, s.wo.g, NULL, d_out, s.av, s.wo.w, rows, H * dh, d);
    ref_attention_backward(d_q, d_k, d_v, d_av, s.probs, s.q, s.k, s.v, B, T, H, KV, dh);
    ref_rope(d_q, B, T, H, dh, x->config->rope_theta, -1.0);
    ref_rope(d_k, B, T, KV, dh, x->config->rope_theta, -1.0);
    ref_head_embed_backward(d_qs, s.eq.g, d_q, s.qs, s.eq.w, rows, H, dh, mul);
    ref_head_embed_backward(d_ks, s.ek.g, d_k, s.ks, s.ek.w, rows, KV, dh, mul);
    ref_head_embed_backward(d_vs, s.ev.g, d_v, s.vs, s.ev.w, rows, KV, dh, mul);
    ref_linear_backward(d_inp, s.wq.g, s.bq.g, d_qs, inp, s.wq.w, rows, d, dh);
    ref_linear_backward(d_inp, s.wk.g, s.bk.g, d_ks, inp, s.wk.w, rows, d, dh);
    ref_linear_backward(d_inp, s.wv.g, s.bv.g, d_vs, inp, s.wv.w, rows, d, dh);
    free(d_av);
    free(d_q);
    free(d_k);
    free(d_v);
    free(d_qs);
    free(d_ks);
    free(d_vs);
    mhe_free(&s);
}

void ref_mhe_add_forward(ref_context *x, int layer, double *out, const double *inp) {
    mhe_forward(x, layer, out, inp, false);
}
void ref_mhe_mul_forward(ref_context *x, int layer, double *out, const double *inp) {
    mhe_forward(x, layer, out, inp, true);
}
void ref_mhe_add_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    mhe_backward(x, layer, d_inp, d_out, inp, false);
}
void ref_mhe_mul_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    mhe_backward(x, layer, d_inp, d_out, inp, true);
}
