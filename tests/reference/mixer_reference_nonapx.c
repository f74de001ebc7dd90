// The double reference of mixer `nonapx` (model_reference_internal.h): one score per
// token, the quadratic form.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_reference_internal.h"

// standard's state (probs: A_it = exp(g_t) / sum_{t'<=i} exp(g_t'); q = silu(q_pre), no
// RoPE); returns q_pre = H Wq^T + bq [rows, heads, dh].
static double *nonapx_run(ref_context *x, int layer, const double *inp, standard_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    ref_standard_begin(x, layer, s, true);
    int H = s->heads, KV = s->kv_heads, dh = s->dh, group = H / KV;
    double *q_pre = ref_zeros((size_t)rows * H * dh);
    ref_linear_forward(q_pre, inp, s->wq.w, s->bq.w, rows, d, H * dh);
    ref_linear_forward(s->k, inp, s->wk.w, s->bk.w, rows, d, KV * dh);
    ref_linear_forward(s->v, inp, s->wv.w, s->bv.w, rows, d, KV * dh);
    for (size_t e = 0; e < (size_t)rows * H * dh; e++) s->q[e] = q_pre[e] * ref_sigmoid(q_pre[e]);

    double scale = 1.0 / sqrt((double)dh);
    double *g = ref_zeros((size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const double *qt = s->q + (((size_t)b * T + t) * H + h) * dh;
                const double *kt = s->k + (((size_t)b * T + t) * KV + h / group) * dh;
                double dot = 0.0;
                for (int e = 0; e < dh; e++) dot += qt[e] * kt[e];
                g[t] = scale * dot;
            }
            for (int i = 0; i < T; i++) {
                double *p = s->probs + (((size_t)b * H + h) * T + i) * T;
                double max = -INFINITY, sum = 0.0;
                for (int t = 0; t <= i; t++) max = fmax(max, g[t]);
                for (int t = 0; t <= i; t++) sum += exp(g[t] - max);
                double *oi = s->av + (((size_t)b * T + i) * H + h) * dh;
                for (int t = 0; t <= i; t++) {
                    p[t] = exp(g[t] - max) / sum;
                    const double *vt = s->v + (((size_t)b * T + t) * KV + h / group) * dh;
                    for (int e = 0; e < dh; e++) oi[e] += p[t] * vt[e];
                }
            }
        }
    free(g);
    return q_pre;
}

void ref_nonapx_forward(ref_context *x, int layer, double *out, const double *inp) {
    standard_state s;
    double *q_pre = nonapx_run(x, layer, inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    free(q_pre);
    ref_standard_free(&s);
}

// o_i = sum_t p_it v_t, p_it = softmax_{t<=i}(g_t), g_t = scale q_t . k_t: row i gives
// d_g_t += p_it (dO_i . v_t - sum_t' p_it' dO_i . v_t') for every t <= i.
void ref_nonapx_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    standard_state s;
    double *q_pre = nonapx_run(x, layer, inp, &s);
    int d = x->config->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s.heads, KV = s.kv_heads, dh = s.dh, group = H / KV;
    double scale = 1.0 / sqrt((double)dh);
    double *d_av = ref_zeros((size_t)rows * H * dh);
    double *d_q = ref_zeros((size_t)rows * H * dh);
    double *d_k = ref_zeros((size_t)rows * KV * dh);
    double *d_v = ref_zeros((size_t)rows * KV * dh);
    double *d_p = ref_zeros((size_t)T), *d_g = ref_zeros((size_t)T);

    ref_linear_backward(d_av, s.wo.g, NULL, d_out, s.av, s.wo.w, rows, H * dh, d);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            memset(d_g, 0, (size_t)T * sizeof(double));
            for (int i = 0; i < T; i++) {
                const double *p = s.probs + (((size_t)b * H + h) * T + i) * T;
                const double *doi = d_av + (((size_t)b * T + i) * H + h) * dh;
                double p_dot_dp = 0.0;
                for (int t = 0; t <= i; t++) {
                    const double *vt = s.v + (((size_t)b * T + t) * KV + h / group) * dh;
                    double *dvt = d_v + (((size_t)b * T + t) * KV + h / group) * dh;
                    d_p[t] = 0.0;
                    for (int e = 0; e < dh; e++) {
                        d_p[t] += doi[e] * vt[e];
                        dvt[e] += p[t] * doi[e];
                    }
                    p_dot_dp += p[t] * d_p[t];
                }
                for (int t = 0; t <= i; t++) d_g[t] += p[t] * (d_p[t] - p_dot_dp);
            }
            for (int t = 0; t < T; t++) {
                size_t qo = (((size_t)b * T + t) * H + h) * dh, ko = (((size_t)b * T + t) * KV + h / group) * dh;
                for (int e = 0; e < dh; e++) {
                    d_q[qo + e] += scale * d_g[t] * s.k[ko + e];
                    d_k[ko + e] += scale * d_g[t] * s.q[qo + e];
                }
            }
        }
    // through the SiLU: silu'(z) = sigma(z) (1 + z (1 - sigma(z)))
    for (size_t e = 0; e < (size_t)rows * H * dh; e++) {
        double z = q_pre[e], sg = ref_sigmoid(z);
        d_q[e] *= sg * (1.0 + z * (1.0 - sg));
    }
    ref_linear_backward(d_inp, s.wq.g, s.bq.g, d_q, inp, s.wq.w, rows, d, H * dh);
    ref_linear_backward(d_inp, s.wk.g, s.bk.g, d_k, inp, s.wk.w, rows, d, KV * dh);
    ref_linear_backward(d_inp, s.wv.g, s.bv.g, d_v, inp, s.wv.w, rows, d, KV * dh);
    free(d_av);
    free(d_q);
    free(d_k);
    free(d_v);
    free(d_p);
    free(d_g);
    free(q_pre);
    ref_standard_free(&s);
}
