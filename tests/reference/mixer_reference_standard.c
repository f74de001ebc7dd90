// The double reference of mixer `standard` (model_reference_internal.h): causal softmax
// attention with RoPE, GQA, optional Q/K/V bias; queries and keys of head size dh,
// values (and A V) of their own size dv (= dh unless [model] value_head_dim says).
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/errors.h"
#include "model_reference_internal.h"

// Everything of the standard mixer up to (not including) the output projection.
static void standard_run(ref_context *x, int layer, const double *inp, standard_state *s) {
    int B = x->batch, T = x->seq_len;
    ref_standard_begin(x, layer, s, true);
    ref_standard_project(x, inp, s);
    int H = s->heads, KV = s->kv_heads, dh = s->dh, dv = s->dv, group = H / KV;

    double scale = 1.0 / sqrt((double)dh);
    double *scores = ref_zeros((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / group;
            for (int i = 0; i < T; i++) {
                const double *qi = s->q + (((size_t)b * T + i) * H + h) * dh;
                double max = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    const double *kj = s->k + (((size_t)b * T + j) * KV + g) * dh;
                    double dot = 0.0;
                    for (int e = 0; e < dh; e++) dot += qi[e] * kj[e];
                    scores[j] = scale * dot;
                    if (scores[j] > max) max = scores[j];
                }
                double sum = 0.0;
                for (int j = 0; j <= i; j++) sum += exp(scores[j] - max);
                double *p = s->probs + (((size_t)b * H + h) * T + i) * T;
                double *oi = s->av + (((size_t)b * T + i) * H + h) * dv;
                for (int j = 0; j <= i; j++) {
                    p[j] = exp(scores[j] - max) / sum;
                    const double *vj = s->v + (((size_t)b * T + j) * KV + g) * dv;
                    for (int e = 0; e < dv; e++) oi[e] += p[j] * vj[e];
                }
            }
        }
    free(scores);
}

void ref_standard_begin(ref_context *x, int layer, standard_state *s, bool with_probs) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    s->heads = c->num_attention_heads;
    s->kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    s->dh = ref_head_dim(c);
    s->dv = ref_value_head_dim(c);
    int H = s->heads, KV = s->kv_heads, dh = s->dh, dv = s->dv;
    bool bias = c->attention_bias;
    s->wq = ref_lookup(x, true, (int64_t)H * dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, (int64_t)KV * dv, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, (int64_t)H * dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, (int64_t)KV * dv, 0, "layers.%d.mixer.bv", layer);
    s->wo = ref_lookup(x, true, d, (int64_t)H * dv, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);
    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dv);
    s->probs = with_probs ? ref_zeros((size_t)B * H * T * T) : NULL;
    s->av = ref_zeros((size_t)rows * H * dv);
}

void ref_standard_project(ref_context *x, const double *inp, standard_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s->heads, KV = s->kv_heads, dh = s->dh;
    ref_linear_forward(s->q, inp, s->wq.w, s->bq.w, rows, d, H * dh);
    ref_linear_forward(s->k, inp, s->wk.w, s->bk.w, rows, d, KV * dh);
    ref_linear_forward(s->v, inp, s->wv.w, s->bv.w, rows, d, KV * s->dv);
    ref_rope(s->q, B, T, H, dh, c->rope_theta, 1.0);
    ref_rope(s->k, B, T, KV, dh, c->rope_theta, 1.0);
}

void ref_standard_free(standard_state *s) {
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->probs);
    free(s->av);
}

// out[rows, d] = concat_h(A_h V_g(h)) Wo^T
void ref_standard_forward(ref_context *x, int layer, double *out, const double *inp) {
    standard_state s;
    standard_run(x, layer, inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dv, x->config->hidden_size);
    ref_standard_free(&s);
}

// d_inp += (dMixer/dinp)^T d_out; parameter gradients += into x->grads.
void ref_standard_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    standard_state s;
    standard_run(x, layer, inp, &s);
    int d = x->config->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s.heads, KV = s.kv_heads, dh = s.dh, dv = s.dv, group = H / KV;
    double scale = 1.0 / sqrt((double)dh);
    double *d_av = ref_zeros((size_t)rows * H * dv);
    double *d_q = ref_zeros((size_t)rows * H * dh);
    double *d_k = ref_zeros((size_t)rows * KV * dh);
    double *d_v = ref_zeros((size_t)rows * KV * dv);
    double *d_p = ref_zeros((size_t)T);

    ref_linear_backward(d_av, s.wo.g, NULL, d_out, s.av, s.wo.w, rows, H * dv, d);
    // o_i = sum_j p_ij v_j;  p_ij = softmax_j(s_ij);  s_ij = scale q_i . k_j
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / group;
            for (int i = 0; i < T; i++) {
                const double *p = s.probs + (((size_t)b * H + h) * T + i) * T;
                const double *qi = s.q + (((size_t)b * T + i) * H + h) * dh;
                const double *doi = d_av + (((size_t)b * T + i) * H + h) * dv;
                double *dqi = d_q + (((size_t)b * T + i) * H + h) * dh;
                double p_dot_dp = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double *vj = s.v + (((size_t)b * T + j) * KV + g) * dv;
                    double *dvj = d_v + (((size_t)b * T + j) * KV + g) * dv;
                    d_p[j] = 0.0;
                    for (int e = 0; e < dv; e++) {
                        d_p[j] += doi[e] * vj[e];
                        dvj[e] += p[j] * doi[e];
                    }
                    p_dot_dp += p[j] * d_p[j];
                }
                for (int j = 0; j <= i; j++) {
                    double d_score = p[j] * (d_p[j] - p_dot_dp);
                    const double *kj = s.k + (((size_t)b * T + j) * KV + g) * dh;
                    double *dkj = d_k + (((size_t)b * T + j) * KV + g) * dh;
                    for (int e = 0; e < dh; e++) {
                        dqi[e] += scale * d_score * kj[e];
                        dkj[e] += scale * d_score * qi[e];
                    }
                }
            }
        }
    ref_rope(d_q, B, T, H, dh, x->config->rope_theta, -1.0);
    ref_rope(d_k, B, T, KV, dh, x->config->rope_theta, -1.0);
    ref_linear_backward(d_inp, s.wq.g, s.bq.g, d_q, inp, s.wq.w, rows, d, H * dh);
    ref_linear_backward(d_inp, s.wk.g, s.bk.g, d_k, inp, s.wk.w, rows, d, KV * dh);
    ref_linear_backward(d_inp, s.wv.g, s.bv.g, d_v, inp, s.wv.w, rows, d, KV * dv);
    free(d_av);
    free(d_q);
    free(d_k);
    free(d_v);
    free(d_p);
    ref_standard_free(&s);
}
