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

typedef struct {
    const decon_config *config;
    const param_registry *registry;
    const double *params;
    double *grads;               // NULL: loss only
    bool *used;                  // [registry->count]: tensors the reference looked up
    int batch, seq_len, rows;
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
    double *attn;             // [rows, heads, dh] = A V, before the output projection
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
    s->wq = ref_lookup(x, true, H * dh, d, "layers.%d.mixer.wq", layer);
    s->wk = ref_lookup(x, true, KV * dh, d, "layers.%d.mixer.wk", layer);
    s->wv = ref_lookup(x, true, KV * dh, d, "layers.%d.mixer.wv", layer);
    s->bq = ref_lookup(x, bias, H * dh, 0, "layers.%d.mixer.bq", layer);
    s->bk = ref_lookup(x, bias, KV * dh, 0, "layers.%d.mixer.bk", layer);
    s->bv = ref_lookup(x, bias, KV * dh, 0, "layers.%d.mixer.bv", layer);
    s->wo = ref_lookup(x, true, d, H * dh, "layers.%d.mixer.wo", layer);
    if (!bias && (s->bq.w || s->bk.w || s->bv.w))
        fatal("reference: layer %d has Q/K/V biases but attention_bias = 0", layer);

    s->q = ref_zeros((size_t)rows * H * dh);
    s->k = ref_zeros((size_t)rows * KV * dh);
    s->v = ref_zeros((size_t)rows * KV * dh);
    s->probs = ref_zeros((size_t)B * H * T * T);
    s->attn = ref_zeros((size_t)rows * H * dh);
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
                double *oi = s->attn + (((size_t)b * T + i) * H + h) * dh;
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
    free(s->attn);
}

// out[rows, d] = concat_h(A_h V_g(h)) Wo^T
static void standard_forward(ref_context *x, int layer, double *out, const double *inp) {
    standard_state s;
    standard_run(x, layer, inp, &s);
    ref_linear_forward(out, s.attn, s.wo.w, NULL, x->rows, s.heads * s.dh, x->config->hidden_size);
    standard_free(&s);
}

// d_inp += (dMixer/dinp)^T d_out; parameter gradients += into x->grads.
static void standard_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    standard_state s;
    standard_run(x, layer, inp, &s);
    int d = x->config->hidden_size, B = x->batch, T = x->seq_len, rows = x->rows;
    int H = s.heads, KV = s.kv_heads, dh = s.dh, group = H / KV;
    double scale = 1.0 / sqrt((double)dh);
    double *d_attn = ref_zeros((size_t)rows * H * dh);
    double *d_q = ref_zeros((size_t)rows * H * dh);
    double *d_k = ref_zeros((size_t)rows * KV * dh);
    double *d_v = ref_zeros((size_t)rows * KV * dh);
    double *d_p = ref_zeros((size_t)T);

    ref_linear_backward(d_attn, s.wo.g, NULL, d_out, s.attn, s.wo.w, rows, H * dh, d);
    // o_i = sum_j p_ij v_j;  p_ij = softmax_j(s_ij);  s_ij = scale q_i . k_j
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / group;
            for (int i = 0; i < T; i++) {
                const double *p = s.probs + (((size_t)b * H + h) * T + i) * T;
                const double *qi = s.q + (((size_t)b * T + i) * H + h) * dh;
                const double *doi = d_attn + (((size_t)b * T + i) * H + h) * dh;
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
    free(d_attn);
    free(d_q);
    free(d_k);
    free(d_v);
    free(d_p);
    standard_free(&s);
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

double model_reference_loss(const decon_config *c, const param_registry *registry, const double *params,
                            const int *tokens, const int *targets, int batch, int seq_len, double *losses,
                            double *grads) {
    int n = c->num_hidden_layers, d = c->hidden_size, inter = c->intermediate_size, vocab = c->vocab_size;
    int kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    if (d % c->num_attention_heads || c->num_attention_heads % kv_heads || (d / c->num_attention_heads) % 2)
        fatal("reference: hidden_size %d, heads %d, kv heads %d do not fit", d, c->num_attention_heads, kv_heads);
    int rows = batch * seq_len;
    size_t rd = (size_t)rows * d, ri = (size_t)rows * inter;
    double eps = c->rms_norm_eps;
    for (int r = 0; r < rows; r++)
        if (tokens[r] < 0 || tokens[r] >= vocab || targets[r] >= vocab)
            fatal("reference: token %d or target %d out of range at row %d", tokens[r], targets[r], r);

    ref_context x = {c, registry, params, grads, xcalloc((size_t)registry->count, sizeof(bool)), batch, seq_len, rows};
    if (grads) memset(grads, 0, registry->total * sizeof(double));

    const mixer_kind **plan = xcalloc((size_t)n, sizeof *plan);
    layer_plan_build(plan, c, "reference");
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
        for (int i = 0; i < d; i++) blocks[0].residual_in[(size_t)r * d + i] = embed.w[(size_t)tokens[r] * d + i];
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
        if (losses) losses[r] = loss;
        loss_sum += loss;
    }

    // ---- backward, mirroring the forward ----
    if (grads) {
        double *d_normed = ref_zeros(rd), *d_res = ref_zeros(rd), *d_mid = ref_zeros(rd);
        double *d_act = ref_zeros(ri), *d_gate = ref_zeros(ri), *d_up = ref_zeros(ri);
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
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < d; i++) embed.g[(size_t)tokens[r] * d + i] += d_res[(size_t)r * d + i];
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
    free(plan);
    free(x.used);
    free(mixer_out);
    free(residual_out);
    free(final_normed);
    free(final_rstd);
    free(logits);
    return loss_sum;
}
