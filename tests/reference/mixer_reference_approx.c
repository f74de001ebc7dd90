// The double reference of mixers `approx`, `approx-diag` (model_reference_internal.h):
// standard's tensors, linear-time attention ops.
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "model_reference_internal.h"
#include "linear_attention_reference.h"

// Q, K, V projected and rotated as in standard; the attention is the double quadratic
// reference of linear_attention_reference.h (approx: Taylor softmax; approx-diag: the
// study's three-term form with [attention] approx_diag_guard and approx_diag_eps, as the
// mixer).

// Projections and RoPE into s (probs unused), then the attention into s->av.
static void linear_mixer_run(ref_context *x, int layer, const double *inp, standard_state *s, bool diag) {
    const decon_config *c = x->config;
    int B = x->batch, T = x->seq_len;
    ref_standard_begin(x, layer, s, false);
    ref_standard_project(x, inp, s);
    int H = s->heads, KV = s->kv_heads, dh = s->dh;
    double scale = 1.0 / sqrt((double)dh);
    if (diag)
        ref_diag_attention_forward(s->av, NULL, s->q, s->k, s->v, B, T, H, KV, dh, scale, c->approx_diag_guard,
                                   c->approx_diag_eps);
    else
        ref_taylor_attention_forward(s->av, NULL, s->q, s->k, s->v, B, T, H, KV, dh, scale);
}

static void linear_mixer_forward(ref_context *x, int layer, double *out, const double *inp, bool diag) {
    standard_state s;
    linear_mixer_run(x, layer, inp, &s, diag);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    ref_standard_free(&s);
}

static void linear_mixer_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp,
                                  bool diag) {
    standard_state s;
    linear_mixer_run(x, layer, inp, &s, diag);
    int d = x->config->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s.heads, KV = s.kv_heads, dh = s.dh;
    double scale = 1.0 / sqrt((double)dh);
    double *d_av = ref_zeros((size_t)rows * H * dh), *d_q = ref_zeros((size_t)rows * H * dh);
    double *d_k = ref_zeros((size_t)rows * KV * dh), *d_v = ref_zeros((size_t)rows * KV * dh);
    ref_linear_backward(d_av, s.wo.g, NULL, d_out, s.av, s.wo.w, rows, H * dh, d);
    if (diag)
        ref_diag_attention_backward(d_q, d_k, d_v, d_av, s.q, s.k, s.v, B, T, H, KV, dh, scale,
                                    x->config->approx_diag_guard, x->config->approx_diag_eps);
    else
        ref_taylor_attention_backward(d_q, d_k, d_v, d_av, s.q, s.k, s.v, B, T, H, KV, dh, scale);
    ref_rope(d_q, B, T, H, dh, x->config->rope_theta, -1.0);
    ref_rope(d_k, B, T, KV, dh, x->config->rope_theta, -1.0);
    ref_linear_backward(d_inp, s.wq.g, s.bq.g, d_q, inp, s.wq.w, rows, d, H * dh);
    ref_linear_backward(d_inp, s.wk.g, s.bk.g, d_k, inp, s.wk.w, rows, d, KV * dh);
    ref_linear_backward(d_inp, s.wv.g, s.bv.g, d_v, inp, s.wv.w, rows, d, KV * dh);
    free(d_av);
    free(d_q);
    free(d_k);
    free(d_v);
    ref_standard_free(&s);
}

void ref_approx_forward(ref_context *x, int layer, double *out, const double *inp) {
    linear_mixer_forward(x, layer, out, inp, false);
}
void ref_approx_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    linear_mixer_backward(x, layer, d_inp, d_out, inp, false);
}
void ref_approx_diag_forward(ref_context *x, int layer, double *out, const double *inp) {
    linear_mixer_forward(x, layer, out, inp, true);
}
void ref_approx_diag_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    linear_mixer_backward(x, layer, d_inp, d_out, inp, true);
}
