// The double-precision reference model (see model_reference.h). Everything is a plain
// loop over plain arrays; the forward keeps every block's activations, the backward
// walks the blocks in reverse, line for line against the forward. Each mixer is one
// forward function and one backward function (the backward recomputes the mixer's
// internals from its input, so no mixer state is kept between the two), listed in
// REF_MIXERS by the name the layer plan uses.
//
// Shapes: rows = batch * seq_len tokens, row r = b * seq_len + t. Hidden states are
// [rows, d]; linear weights are [out, in] as in the registry; per-head tensors are
// [rows, heads, head_dim]; attention probabilities are [batch, heads, seq_len, seq_len].
#include "model_reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "mixers/mixer.h"
#include "model/layer_plan.h"
#include "linear_attention_reference.h"

typedef struct {
    const decon_config *config;
    const param_registry *registry;
    const double *params;
    double *grads;               // NULL: loss only
    bool *used;                  // [registry->count]: tensors the reference looked up
    int batch, seq_len, rows;    // batch counts the fixed-stream sequence when there is one
    int fixed_sequence;          // the fixed stream's sequence (the last), -1 when none
    const double *embeddings;      // input embeddings [rows, d] (staticembqk)
    double *d_embeddings;          // their gradient (+=), NULL without grads
} ref_context;

// One tensor's values and gradient (w NULL: an optional tensor that is absent;
// g NULL: no gradient requested).
typedef struct {
    const double *w;
    double *g;
} ref_tensor;

static double *ref_zeros(size_t count) { return xcalloc(count ? count : 1, sizeof(double)); }

// Finds a tensor by name and checks its logical shape [d0, d1] (d1 = 0: a vector of d0).
static ref_tensor ref_lookup(ref_context *x, bool required, int64_t d0, int64_t d1, const char *format, ...)
    DECON_PRINTF(5, 6);

static ref_tensor ref_lookup(ref_context *x, bool required, int64_t d0, int64_t d1, const char *format, ...) {
    char name[PARAM_NAME_MAX + 32];
    va_list args;
    va_start(args, format);
    vsnprintf(name, sizeof name, format, args);
    va_end(args);
    ref_tensor t = {NULL, NULL};
    int index = params_find(x->registry, name);
    if (index < 0) {
        if (required) fatal("reference: tensor %s is missing from the registry", name);
        return t;
    }
    const param_info *p = &x->registry->items[index];
    int ndim = d1 > 0 ? 2 : 1;
    int64_t cols = d1 > 0 ? d1 : 1;
    if (p->ndim != ndim || p->shape[0] != d0 || p->shape[1] != cols)
        fatal("reference: tensor %s has shape [%lld, %lld] (ndim %d); expected [%lld, %lld] (ndim %d)", name,
              (long long)p->shape[0], (long long)p->shape[1], p->ndim, (long long)d0, (long long)cols, ndim);
    if (p->local_count != (size_t)(d0 * cols)) fatal("reference: tensor %s is sharded; use one rank", name);
    x->used[index] = true;
    t.w = x->params + p->offset;
    t.g = x->grads ? x->grads + p->offset : NULL;
    return t;
}

// ---- plain building blocks ---------------------------------------------------------

// out[r,o] = sum_i inp[r,i] w[o,i] + b[o]   (b may be NULL)
static void ref_linear_forward(double *out, const double *inp, const double *w, const double *b, int rows, int in,
                               int out_dim) {
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out_dim; o++) {
            double sum = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++) sum += inp[(size_t)r * in + i] * w[(size_t)o * in + i];
            out[(size_t)r * out_dim + o] = sum;
        }
}

// d_inp[r,i] += sum_o d_out[r,o] w[o,i];  d_w[o,i] += sum_r d_out[r,o] inp[r,i];
// d_b[o] += sum_r d_out[r,o]   (any of the three may be NULL)
static void ref_linear_backward(double *d_inp, double *d_w, double *d_b, const double *d_out, const double *inp,
                                const double *w, int rows, int in, int out_dim) {
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out_dim; o++) {
            double dy = d_out[(size_t)r * out_dim + o];
            if (d_b) d_b[o] += dy;
            for (int i = 0; i < in; i++) {
                if (d_inp) d_inp[(size_t)r * in + i] += dy * w[(size_t)o * in + i];
                if (d_w) d_w[(size_t)o * in + i] += dy * inp[(size_t)r * in + i];
            }
        }
}

// out = inp * rstd * w, rstd[r] = (mean_i inp[r,i]^2 + eps)^(-1/2)
static void ref_rmsnorm_forward(double *out, double *rstd, const double *inp, const double *w, int rows, int dim,
                                double eps) {
    for (int r = 0; r < rows; r++) {
        const double *xr = inp + (size_t)r * dim;
        double sum = 0.0;
        for (int i = 0; i < dim; i++) sum += xr[i] * xr[i];
        rstd[r] = 1.0 / sqrt(sum / dim + eps);
        for (int i = 0; i < dim; i++) out[(size_t)r * dim + i] = xr[i] * rstd[r] * w[i];
    }
}

// With y_i = x_i s w_i and ds/dx_j = -s^3 x_j / dim:
//   d_x[j] += s w_j dy_j - (s^3 x_j / dim) sum_i dy_i w_i x_i;  d_w[i] += sum_r dy_i x_i s
static void ref_rmsnorm_backward(double *d_inp, double *d_w, const double *d_out, const double *inp,
                                 const double *w, const double *rstd, int rows, int dim) {
    for (int r = 0; r < rows; r++) {
        const double *xr = inp + (size_t)r * dim, *dy = d_out + (size_t)r * dim;
        double s = rstd[r], dot = 0.0;
        for (int i = 0; i < dim; i++) dot += dy[i] * w[i] * xr[i];
        for (int j = 0; j < dim; j++) {
            d_inp[(size_t)r * dim + j] += s * w[j] * dy[j] - s * s * s * xr[j] / dim * dot;
            if (d_w) d_w[j] += dy[j] * xr[j] * s;
        }
    }
}

// Rotates x[rows, heads, dh] in place, Hugging Face rotate_half layout: element i pairs
// with i + dh/2 and turns by sign * pos * theta^(-2i/dh), pos = position in the sequence.
// sign = -1 is the transpose (the backward of sign = +1).
static void ref_rope(double *x, int batch, int seq_len, int heads, int dh, double theta, double sign) {
    int half = dh / 2;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < seq_len; t++)
            for (int h = 0; h < heads; h++) {
                double *v = x + (((size_t)b * seq_len + t) * heads + h) * dh;
                for (int i = 0; i < half; i++) {
                    double angle = t * pow(theta, -2.0 * i / dh);
                    double c = cos(angle), s = sign * sin(angle);
                    double x1 = v[i], x2 = v[i + half];
                    v[i] = x1 * c - x2 * s;
                    v[i + half] = x2 * c + x1 * s;
                }
            }
}

static double ref_sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

// ---- mixer `standard`: causal softmax attention with RoPE, GQA, optional Q/K/V bias ----

typedef struct {
    ref_tensor wq, bq, wk, bk, wv, bv, wo;
    int heads, kv_heads, dh;
    double *q, *k, *v;        // [rows, heads|kv_heads, dh], q and k after RoPE
    double *probs;            // [batch, heads, seq_len, seq_len], 0 above the diagonal
    double *av;             // [rows, heads, dh] = A V, before the output projection
} standard_state;

// Everything of the standard mixer up to (not including) the output projection.
static void standard_run(ref_context *x, int layer, const double *inp, standard_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    s->heads = c->num_attention_heads;
    s->kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    s->dh = d / s->heads;
    int H = s->heads, KV = s->kv_heads, dh = s->dh, group = H / KV;
    bool bias = c->attention_bias;
    s->wq = ref_lookup(x, true, (int64_t)H * dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, (int64_t)H * dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bv", layer);
    s->wo = ref_lookup(x, true, d, (int64_t)H * dh, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);

    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dh);
    s->probs = ref_zeros((size_t)B * H * T * T);
    s->av = ref_zeros((size_t)rows * H * dh);
    ref_linear_forward(s->q, inp, s->wq.w, s->bq.w, rows, d, H * dh);
    ref_linear_forward(s->k, inp, s->wk.w, s->bk.w, rows, d, KV * dh);
    ref_linear_forward(s->v, inp, s->wv.w, s->bv.w, rows, d, KV * dh);
    ref_rope(s->q, B, T, H, dh, c->rope_theta, 1.0);
    ref_rope(s->k, B, T, KV, dh, c->rope_theta, 1.0);

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
                double *oi = s->av + (((size_t)b * T + i) * H + h) * dh;
                for (int j = 0; j <= i; j++) {
                    p[j] = exp(scores[j] - max) / sum;
                    const double *vj = s->v + (((size_t)b * T + j) * KV + g) * dh;
                    for (int e = 0; e < dh; e++) oi[e] += p[j] * vj[e];
                }
            }
        }
    free(scores);
}

static void standard_free(standard_state *s) {
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->probs);
    free(s->av);
}

// out[rows, d] = concat_h(A_h V_g(h)) Wo^T
static void standard_forward(ref_context *x, int layer, double *out, const double *inp) {
    standard_state s;
    standard_run(x, layer, inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    standard_free(&s);
}

// d_inp += (dMixer/dinp)^T d_out; parameter gradients += into x->grads.
static void standard_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    standard_state s;
    standard_run(x, layer, inp, &s);
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
        for (int h = 0; h < H; h++) {
            int g = h / group;
            for (int i = 0; i < T; i++) {
                const double *p = s.probs + (((size_t)b * H + h) * T + i) * T;
                const double *qi = s.q + (((size_t)b * T + i) * H + h) * dh;
                const double *doi = d_av + (((size_t)b * T + i) * H + h) * dh;
                double *dqi = d_q + (((size_t)b * T + i) * H + h) * dh;
                double p_dot_dp = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double *vj = s.v + (((size_t)b * T + j) * KV + g) * dh;
                    double *dvj = d_v + (((size_t)b * T + j) * KV + g) * dh;
                    d_p[j] = 0.0;
                    for (int e = 0; e < dh; e++) {
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
    ref_linear_backward(d_inp, s.wv.g, s.bv.g, d_v, inp, s.wv.w, rows, d, KV * dh);
    free(d_av);
    free(d_q);
    free(d_k);
    free(d_v);
    free(d_p);
    standard_free(&s);
}

// ---- causal softmax attention on materialised probabilities (mhe-*) -----------------

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

// ---- mixer `mlp`: gated MLP, no mixing across positions ------------------------------

// The width: the integer m nearest to standard's parameter count / 3d (a tie goes up),
// counted here from the shapes, independently of the mixer's code.
static int ref_mlp_width(const decon_config *c) {
    int64_t d = c->hidden_size, H = c->num_attention_heads;
    int64_t KV = c->num_key_value_heads ? c->num_key_value_heads : H, dh = d / H;
    int64_t standard = d * H * dh * 2 + 2 * d * KV * dh + (c->attention_bias ? H * dh + 2 * KV * dh : 0);
    return (int)floor((double)standard / (3.0 * (double)d) + 0.5);
}

typedef struct {
    ref_tensor gate, up, down;
    int m;
    double *gate_out, *up_out, *act;   // [rows, m]
} mlp_state;

// gate_out = H Wgt^T, up_out = H Wup^T, act = silu(gate_out) * up_out
static void mlp_run(ref_context *x, int layer, const double *inp, mlp_state *s) {
    int d = x->config->hidden_size, rows = x->rows;
    s->m = ref_mlp_width(x->config);
    s->gate = ref_lookup(x, true, s->m, d, "layers.%d.mixer.gate_proj", layer);
    s->up = ref_lookup(x, true, s->m, d, "layers.%d.mixer.up_proj", layer);
    s->down = ref_lookup(x, true, d, s->m, "layers.%d.mixer.down_proj", layer);
    size_t size = (size_t)rows * s->m;
    s->gate_out = ref_zeros(size);
    s->up_out = ref_zeros(size);
    s->act = ref_zeros(size);
    ref_linear_forward(s->gate_out, inp, s->gate.w, NULL, rows, d, s->m);
    ref_linear_forward(s->up_out, inp, s->up.w, NULL, rows, d, s->m);
    for (size_t e = 0; e < size; e++) s->act[e] = s->gate_out[e] * ref_sigmoid(s->gate_out[e]) * s->up_out[e];
}

static void mlp_free(mlp_state *s) {
    free(s->gate_out);
    free(s->up_out);
    free(s->act);
}

// out = act Wdn^T
static void mlp_forward(ref_context *x, int layer, double *out, const double *inp) {
    mlp_state s;
    mlp_run(x, layer, inp, &s);
    ref_linear_forward(out, s.act, s.down.w, NULL, x->rows, s.m, x->config->hidden_size);
    mlp_free(&s);
}

static void mlp_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    mlp_state s;
    mlp_run(x, layer, inp, &s);
    int d = x->config->hidden_size, rows = x->rows;
    size_t size = (size_t)rows * s.m;
    double *d_act = ref_zeros(size), *d_gate = ref_zeros(size), *d_up = ref_zeros(size);
    ref_linear_backward(d_act, s.down.g, NULL, d_out, s.act, s.down.w, rows, s.m, d);
    for (size_t e = 0; e < size; e++) {
        double g = s.gate_out[e], sg = ref_sigmoid(g);
        d_gate[e] = d_act[e] * s.up_out[e] * sg * (1.0 + g * (1.0 - sg));
        d_up[e] = d_act[e] * g * sg;
    }
    ref_linear_backward(d_inp, s.gate.g, NULL, d_gate, inp, s.gate.w, rows, d, s.m);
    ref_linear_backward(d_inp, s.up.g, NULL, d_up, inp, s.up.w, rows, d, s.m);
    free(d_act);
    free(d_gate);
    free(d_up);
    mlp_free(&s);
}

// ---- mixer `nonapx`: one score per token, the quadratic form -------------------------

typedef struct {
    ref_tensor wq, bq, wk, bk, wv, bv, wo;
    int heads, kv_heads, dh;
    double *q_pre, *q, *k, *v;  // q_pre = H Wq^T + bq, q = silu(q_pre) [rows, heads, dh]; k, v [rows, kv, dh]
    double *probs;              // [batch, heads, seq_len, seq_len]: A_it = exp(g_t) / sum_{t'<=i} exp(g_t')
    double *av;               // [rows, heads, dh] = A V
} nonapx_state;

static void nonapx_run(ref_context *x, int layer, const double *inp, nonapx_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    s->heads = c->num_attention_heads;
    s->kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    s->dh = d / s->heads;
    int H = s->heads, KV = s->kv_heads, dh = s->dh, group = H / KV;
    bool bias = c->attention_bias;
    s->wq = ref_lookup(x, true, (int64_t)H * dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, (int64_t)H * dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bv", layer);
    s->wo = ref_lookup(x, true, d, (int64_t)H * dh, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);
    s->q_pre = ref_zeros((size_t)rows * H * dh);
    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dh);
    s->probs = ref_zeros((size_t)B * H * T * T);
    s->av = ref_zeros((size_t)rows * H * dh);
    ref_linear_forward(s->q_pre, inp, s->wq.w, s->bq.w, rows, d, H * dh);
    ref_linear_forward(s->k, inp, s->wk.w, s->bk.w, rows, d, KV * dh);
    ref_linear_forward(s->v, inp, s->wv.w, s->bv.w, rows, d, KV * dh);
    for (size_t e = 0; e < (size_t)rows * H * dh; e++) s->q[e] = s->q_pre[e] * ref_sigmoid(s->q_pre[e]);

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
}

static void nonapx_free(nonapx_state *s) {
    free(s->q_pre);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->probs);
    free(s->av);
}

static void nonapx_forward(ref_context *x, int layer, double *out, const double *inp) {
    nonapx_state s;
    nonapx_run(x, layer, inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    nonapx_free(&s);
}

// o_i = sum_t p_it v_t, p_it = softmax_{t<=i}(g_t), g_t = scale q_t . k_t: row i gives
// d_g_t += p_it (dO_i . v_t - sum_t' p_it' dO_i . v_t') for every t <= i.
static void nonapx_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    nonapx_state s;
    nonapx_run(x, layer, inp, &s);
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
        double z = s.q_pre[e], sg = ref_sigmoid(z);
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
    nonapx_free(&s);
}

// ---- mixers `mhe-add` / `mhe-mul`: shared projection + per-head embeddings ------------

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
    s->dh = d / s->heads;
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

static void mhe_add_forward(ref_context *x, int layer, double *out, const double *inp) {
    mhe_forward(x, layer, out, inp, false);
}
static void mhe_mul_forward(ref_context *x, int layer, double *out, const double *inp) {
    mhe_forward(x, layer, out, inp, true);
}
static void mhe_add_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    mhe_backward(x, layer, d_inp, d_out, inp, false);
}
static void mhe_mul_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    mhe_backward(x, layer, d_inp, d_out, inp, true);
}

// ---- mixers rndembqk, fixedseqqk, staticembqk: standard's tensors, Q and K from elsewhere ----
// The plainest form of each: Q, K are projected from qk_inp and V from v_inp. With
// qk_sequence >= 0 (the fixed stream) only that sequence's rows of qk_inp are projected
// and its Q, K are COPIED into every sequence, then every sequence runs ordinary causal
// attention: the shared map is recomputed per sequence here (the fp32 model materialises
// it once), and the backward sums the per-sequence d_q, d_k into the fixed rows.

static void qk_from_run(ref_context *x, int layer, const double *qk_inp, int qk_sequence, const double *v_inp,
                        standard_state *s) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    s->heads = c->num_attention_heads;
    s->kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    s->dh = d / s->heads;
    int H = s->heads, KV = s->kv_heads, dh = s->dh, group = H / KV;
    bool bias = c->attention_bias;
    s->wq = ref_lookup(x, true, (int64_t)H * dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, (int64_t)H * dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bv", layer);
    s->wo = ref_lookup(x, true, d, (int64_t)H * dh, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);

    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dh);
    s->probs = ref_zeros((size_t)B * H * T * T);
    s->av = ref_zeros((size_t)rows * H * dh);
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
    standard_free(&s);
}

static int ref_fixed_sequence(const ref_context *x, int layer) {
    if (x->fixed_sequence < 0) fatal("reference: layer %d needs the fixed stream but the batch has none", layer);
    return x->fixed_sequence;
}

// rndembqk / fixedseqqk (the same math; the fixed stream's input differs)
static void fixed_qk_forward(ref_context *x, int layer, double *out, const double *inp) {
    standard_state s;
    qk_from_run(x, layer, inp, ref_fixed_sequence(x, layer), inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    standard_free(&s);
}

static void fixed_qk_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
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

static void static_qk_forward(ref_context *x, int layer, double *out, const double *inp) {
    double *normed, *rstd;
    static_norm(x, layer, &normed, &rstd);
    standard_state s;
    qk_from_run(x, layer, normed, -1, inp, &s);
    ref_linear_forward(out, s.av, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    standard_free(&s);
    free(normed);
    free(rstd);
}

static void static_qk_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    double *normed, *rstd;
    ref_tensor w = static_norm(x, layer, &normed, &rstd);
    double *d_normed = ref_zeros((size_t)x->rows * x->config->hidden_size);
    qk_from_backward(x, layer, normed, -1, d_normed, inp, d_inp, d_out);
    ref_rmsnorm_backward(x->d_embeddings, w.g, d_normed, x->embeddings, w.w, rstd, x->rows, x->config->hidden_size);
    free(d_normed);
    free(normed);
    free(rstd);
}

// ---- mixers `approx`, `approx-diag`: standard's tensors, linear-time attention ops ----
// Q, K, V projected and rotated as in standard; the attention is the double quadratic
// reference of linear_attention_reference.h (approx: Taylor softmax; approx-diag: the
// study's three-term form with [attention] approx_diag_guard and approx_diag_eps, as the
// mixer).

// Projections and RoPE into s (probs unused), then the attention into s->av.
static void linear_mixer_run(ref_context *x, int layer, const double *inp, standard_state *s, bool diag) {
    const decon_config *c = x->config;
    int d = c->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    s->heads = c->num_attention_heads;
    s->kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    s->dh = d / s->heads;
    int H = s->heads, KV = s->kv_heads, dh = s->dh;
    bool bias = c->attention_bias;
    s->wq = ref_lookup(x, true, (int64_t)H * dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, (int64_t)KV * dh, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, (int64_t)H * dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, (int64_t)KV * dh, 0, "layers.%d.mixer.bv", layer);
    s->wo = ref_lookup(x, true, d, (int64_t)H * dh, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);
    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dh);
    s->probs = NULL;
    s->av = ref_zeros((size_t)rows * H * dh);
    ref_linear_forward(s->q, inp, s->wq.w, s->bq.w, rows, d, H * dh);
    ref_linear_forward(s->k, inp, s->wk.w, s->bk.w, rows, d, KV * dh);
    ref_linear_forward(s->v, inp, s->wv.w, s->bv.w, rows, d, KV * dh);
    ref_rope(s->q, B, T, H, dh, c->rope_theta, 1.0);
    ref_rope(s->k, B, T, KV, dh, c->rope_theta, 1.0);
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
    standard_free(&s);
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
    standard_free(&s);
}

static void approx_forward(ref_context *x, int layer, double *out, const double *inp) {
    linear_mixer_forward(x, layer, out, inp, false);
}
static void approx_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    linear_mixer_backward(x, layer, d_inp, d_out, inp, false);
}
static void approx_diag_forward(ref_context *x, int layer, double *out, const double *inp) {
    linear_mixer_forward(x, layer, out, inp, true);
}
static void approx_diag_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    linear_mixer_backward(x, layer, d_inp, d_out, inp, true);
}

// ---- the mixer table: one row per variant with a reference ---------------------------

typedef struct {
    const char *name;
    // out[rows, d] = Mixer(inp[rows, d]) (looks up, and so marks as used, its tensors)
    void (*forward)(ref_context *x, int layer, double *out, const double *inp);
    // d_inp[rows, d] += (dMixer/dinp)^T d_out; parameter gradients += into x->grads
    void (*backward)(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
} ref_mixer;

static const ref_mixer REF_MIXERS[] = {
    {"standard", standard_forward, standard_backward},
    {"rndembqk", fixed_qk_forward, fixed_qk_backward},
    {"fixedseqqk", fixed_qk_forward, fixed_qk_backward},
    {"staticembqk", static_qk_forward, static_qk_backward},
    {"mlp", mlp_forward, mlp_backward},
    {"nonapx", nonapx_forward, nonapx_backward},
    {"mhe-add", mhe_add_forward, mhe_add_backward},
    {"mhe-mul", mhe_mul_forward, mhe_mul_backward},
    {"approx", approx_forward, approx_backward},
    {"approx-diag", approx_diag_forward, approx_diag_backward},
};

static const ref_mixer *ref_mixer_find(const char *name) {
    for (size_t i = 0; i < sizeof REF_MIXERS / sizeof REF_MIXERS[0]; i++)
        if (strcmp(REF_MIXERS[i].name, name) == 0) return &REF_MIXERS[i];
    fatal("reference: mixer '%s' has no reference implementation", name);
}

// ---- the model ---------------------------------------------------------------------

typedef struct {
    const ref_mixer *mixer;
    ref_tensor input_norm, post_norm, gate, up, down;
    double *residual_in, *norm1, *rstd1;    // [rows, d], [rows, d], [rows]
    double *residual_mid, *norm2, *rstd2;   // after the mixer branch; MLP input
    double *gate_out, *up_out, *act;        // [rows, intermediate]
} ref_block;

double model_reference_loss_fixed(const decon_config *c, const param_registry *registry, const double *params,
                                  const int *loss_tokens, const int *loss_targets, int loss_batch, int seq_len,
                                  const double *fixed_input, const int *fixed_tokens, double *losses, double *grads) {
    int n = c->num_hidden_layers, d = c->hidden_size, inter = c->intermediate_size, vocab = c->vocab_size;
    int kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    if (d % c->num_attention_heads || c->num_attention_heads % kv_heads || (d / c->num_attention_heads) % 2)
        fatal("reference: hidden_size %d, heads %d, kv heads %d do not fit", d, c->num_attention_heads, kv_heads);
    const mixer_kind **plan = (const mixer_kind **)xcalloc((size_t)n, sizeof(const mixer_kind *));
    layer_plan_build(plan, c, "reference");
    // The fixed stream (DESIGN.md 5): one more sequence after the loss sequences, whose
    // input is fixed_input (rndembqk) or Emb(fixed_tokens) (fixedseqqk), with no loss.
    bool has_fixed = false, fixed_from_tokens = false;
    for (int l = 0; l < n; l++) {
        has_fixed |= plan[l]->uses_fixed_stream;
        fixed_from_tokens |= strcmp(plan[l]->name, "fixedseqqk") == 0;
    }
    if (has_fixed && (fixed_from_tokens ? fixed_tokens == NULL : fixed_input == NULL))
        fatal("reference: the model has a fixed stream; pass its %s", fixed_from_tokens ? "tokens" : "input");
    int batch = loss_batch + has_fixed, loss_rows = loss_batch * seq_len, rows = batch * seq_len;
    size_t rd = (size_t)rows * d, ri = (size_t)rows * inter;
    double eps = c->rms_norm_eps;
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    for (int r = 0; r < rows; r++) {  // token -1: a row of fixed_input
        bool fixed = r >= loss_rows;
        tokens[r] = !fixed ? loss_tokens[r] : fixed_from_tokens ? fixed_tokens[r - loss_rows] : -1;
        targets[r] = !fixed ? loss_targets[r] : -1;
        if (tokens[r] < (fixed && !fixed_from_tokens ? -1 : 0) || tokens[r] >= vocab || targets[r] >= vocab)
            fatal("reference: token %d or target %d out of range at row %d", tokens[r], targets[r], r);
    }

    ref_context x = {.config = c, .registry = registry, .params = params, .grads = grads,
                     .used = xcalloc((size_t)registry->count, sizeof(bool)), .batch = batch, .seq_len = seq_len,
                     .rows = rows, .fixed_sequence = has_fixed ? loss_batch : -1};
    if (grads) memset(grads, 0, registry->total * sizeof(double));

    ref_tensor embed = ref_lookup(&x, true, vocab, d, "embed_tokens");
    ref_block *blocks = xcalloc((size_t)n, sizeof *blocks);
    for (int l = 0; l < n; l++) {
        ref_block *k = &blocks[l];
        k->mixer = ref_mixer_find(plan[l]->name);
        k->input_norm = ref_lookup(&x, true, d, 0, "layers.%d.input_layernorm", l);
        k->post_norm = ref_lookup(&x, true, d, 0, "layers.%d.post_attention_layernorm", l);
        k->gate = ref_lookup(&x, true, inter, d, "layers.%d.mlp.gate_proj", l);
        k->up = ref_lookup(&x, true, inter, d, "layers.%d.mlp.up_proj", l);
        k->down = ref_lookup(&x, true, d, inter, "layers.%d.mlp.down_proj", l);
        k->residual_in = ref_zeros(rd);
        k->norm1 = ref_zeros(rd);
        k->rstd1 = ref_zeros((size_t)rows);
        k->residual_mid = ref_zeros(rd);
        k->norm2 = ref_zeros(rd);
        k->rstd2 = ref_zeros((size_t)rows);
        k->gate_out = ref_zeros(ri);
        k->up_out = ref_zeros(ri);
        k->act = ref_zeros(ri);
    }
    ref_tensor final_norm = ref_lookup(&x, true, d, 0, "norm");
    ref_tensor head = embed;
    if (!c->tie_word_embeddings) head = ref_lookup(&x, true, vocab, d, "lm_head");
    else if (params_find(registry, "lm_head") >= 0) fatal("reference: tied LM head but the registry has lm_head");

    // ---- forward ----
    double *mixer_out = ref_zeros(rd), *residual_out = ref_zeros(rd), *final_normed = ref_zeros(rd);
    double *final_rstd = ref_zeros((size_t)rows), *logits = ref_zeros((size_t)rows * vocab);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < d; i++)
            blocks[0].residual_in[(size_t)r * d + i] =
                tokens[r] >= 0 ? embed.w[(size_t)tokens[r] * d + i] : fixed_input[(size_t)(r - loss_rows) * d + i];
    x.embeddings = blocks[0].residual_in;
    for (int l = 0; l < n; l++) {
        ref_block *k = &blocks[l];
        double *next = l + 1 < n ? blocks[l + 1].residual_in : residual_out;
        ref_rmsnorm_forward(k->norm1, k->rstd1, k->residual_in, k->input_norm.w, rows, d, eps);
        k->mixer->forward(&x, l, mixer_out, k->norm1);
        for (size_t e = 0; e < rd; e++) k->residual_mid[e] = k->residual_in[e] + mixer_out[e];
        ref_rmsnorm_forward(k->norm2, k->rstd2, k->residual_mid, k->post_norm.w, rows, d, eps);
        ref_linear_forward(k->gate_out, k->norm2, k->gate.w, NULL, rows, d, inter);
        ref_linear_forward(k->up_out, k->norm2, k->up.w, NULL, rows, d, inter);
        for (size_t e = 0; e < ri; e++) k->act[e] = k->gate_out[e] * ref_sigmoid(k->gate_out[e]) * k->up_out[e];
        ref_linear_forward(next, k->act, k->down.w, NULL, rows, inter, d);
        for (size_t e = 0; e < rd; e++) next[e] += k->residual_mid[e];
    }
    for (int i = 0; i < registry->count; i++)
        if (!x.used[i]) fatal("reference: registry tensor %s is not part of the model", registry->items[i].name);
    ref_rmsnorm_forward(final_normed, final_rstd, residual_out, final_norm.w, rows, d, eps);
    ref_linear_forward(logits, final_normed, head.w, NULL, rows, d, vocab);

    // ---- loss; logits becomes d(loss)/d(logits) = softmax - onehot (0 for ignored rows) ----
    double loss_sum = 0.0;
    for (int r = 0; r < rows; r++) {
        double *z = logits + (size_t)r * vocab;
        double loss = 0.0;
        if (targets[r] >= 0) {
            double max = -INFINITY, sum = 0.0;
            for (int v = 0; v < vocab; v++) max = fmax(max, z[v]);
            for (int v = 0; v < vocab; v++) sum += exp(z[v] - max);
            double lse = max + log(sum);
            loss = lse - z[targets[r]];
            for (int v = 0; v < vocab; v++) z[v] = exp(z[v] - lse) - (v == targets[r] ? 1.0 : 0.0);
        } else {
            for (int v = 0; v < vocab; v++) z[v] = 0.0;
        }
        if (losses && r < loss_rows) losses[r] = loss;
        loss_sum += loss;
    }

    // ---- backward, mirroring the forward ----
    if (grads) {
        double *d_normed = ref_zeros(rd), *d_res = ref_zeros(rd), *d_mid = ref_zeros(rd);
        double *d_act = ref_zeros(ri), *d_gate = ref_zeros(ri), *d_up = ref_zeros(ri);
        x.d_embeddings = ref_zeros(rd);
        ref_linear_backward(d_normed, head.g, NULL, logits, final_normed, head.w, rows, d, vocab);
        ref_rmsnorm_backward(d_res, final_norm.g, d_normed, residual_out, final_norm.w, final_rstd, rows, d);
        for (int l = n - 1; l >= 0; l--) {
            ref_block *k = &blocks[l];
            // d_res = d(block output); the skip connection passes it to residual_mid.
            memcpy(d_mid, d_res, rd * sizeof(double));
            memset(d_act, 0, ri * sizeof(double));
            ref_linear_backward(d_act, k->down.g, NULL, d_res, k->act, k->down.w, rows, inter, d);
            for (size_t e = 0; e < ri; e++) {
                double g = k->gate_out[e], sg = ref_sigmoid(g);
                d_gate[e] = d_act[e] * k->up_out[e] * sg * (1.0 + g * (1.0 - sg));
                d_up[e] = d_act[e] * g * sg;
            }
            memset(d_normed, 0, rd * sizeof(double));
            ref_linear_backward(d_normed, k->gate.g, NULL, d_gate, k->norm2, k->gate.w, rows, d, inter);
            ref_linear_backward(d_normed, k->up.g, NULL, d_up, k->norm2, k->up.w, rows, d, inter);
            ref_rmsnorm_backward(d_mid, k->post_norm.g, d_normed, k->residual_mid, k->post_norm.w, k->rstd2, rows, d);
            // d_mid = d(residual_mid); the skip connection passes it to residual_in.
            memcpy(d_res, d_mid, rd * sizeof(double));
            memset(d_normed, 0, rd * sizeof(double));
            k->mixer->backward(&x, l, d_normed, d_mid, k->norm1);
            ref_rmsnorm_backward(d_res, k->input_norm.g, d_normed, k->residual_in, k->input_norm.w, k->rstd1, rows, d);
        }
        for (size_t e = 0; e < rd; e++) d_res[e] += x.d_embeddings[e];
        for (int r = 0; r < rows; r++)  // fixed_input (rndembqk's noise) is not trained
            for (int i = 0; i < d && tokens[r] >= 0; i++) embed.g[(size_t)tokens[r] * d + i] += d_res[(size_t)r * d + i];
        free(x.d_embeddings);
        free(d_normed);
        free(d_res);
        free(d_mid);
        free(d_act);
        free(d_gate);
        free(d_up);
    }

    for (int l = 0; l < n; l++) {
        ref_block *k = &blocks[l];
        free(k->residual_in);
        free(k->norm1);
        free(k->rstd1);
        free(k->residual_mid);
        free(k->norm2);
        free(k->rstd2);
        free(k->gate_out);
        free(k->up_out);
        free(k->act);
    }
    free(blocks);
    free((void *)plan);
    free(x.used);
    free(mixer_out);
    free(residual_out);
    free(final_normed);
    free(final_rstd);
    free(logits);
    free(tokens);
    free(targets);
    return loss_sum;
}

double model_reference_loss(const decon_config *c, const param_registry *registry, const double *params,
                            const int *tokens, const int *targets, int batch, int seq_len, double *losses,
                            double *grads) {
    return model_reference_loss_fixed(c, registry, params, tokens, targets, batch, seq_len, NULL, NULL, losses, grads);
}
