// The double-precision reference model (see model_reference.h): the mixer table and the
// model. Everything is a plain loop over plain arrays; the forward keeps every block's
// activations, the backward walks the blocks in reverse, line for line against the
// forward. Each mixer is one forward function and one backward function, in
// mixer_reference_<variant>.c (model_reference_internal.h: shapes, what they share),
// listed in REF_MIXERS by the name the layer plan uses.
#include "model_reference.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "mixers/mixer.h"
#include "model/layer_plan.h"
#include "model_reference_internal.h"

// ---- the mixer table: one row per variant with a reference ---------------------------

typedef struct {
    const char *name;
    // out[rows, d] = Mixer(inp[rows, d]) (looks up, and so marks as used, its tensors)
    void (*forward)(ref_context *x, int layer, double *out, const double *inp);
    // d_inp[rows, d] += (dMixer/dinp)^T d_out; parameter gradients += into x->grads
    void (*backward)(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
} ref_mixer;

static const ref_mixer REF_MIXERS[] = {
    {"standard", ref_standard_forward, ref_standard_backward},
    {"rndembqk", ref_fixed_qk_forward, ref_fixed_qk_backward},
    {"fixedseqqk", ref_fixed_qk_forward, ref_fixed_qk_backward},
    {"staticembqk", ref_static_qk_forward, ref_static_qk_backward},
    {"mlp", ref_mlp_forward, ref_mlp_backward},
    {"nonapx", ref_nonapx_forward, ref_nonapx_backward},
    {"mhe-add", ref_mhe_add_forward, ref_mhe_add_backward},
    {"mhe-mul", ref_mhe_mul_forward, ref_mhe_mul_backward},
    {"approx", ref_approx_forward, ref_approx_backward},
    {"approx-diag", ref_approx_diag_forward, ref_approx_diag_backward},
};

static const ref_mixer *ref_mixer_find(const char *name) {
    for (size_t i = 0; i < sizeof REF_MIXERS / sizeof REF_MIXERS[0]; i++)
        if (strcmp(REF_MIXERS[i].name, name) == 0) return &REF_MIXERS[i];
    fatal("reference: mixer '%s' has no reference implementation", name);
}

// ---- the model ---------------------------------------------------------------------

// Entry l of a per-layer list "a,b,c" (read here on its own, not through the config's
// parser), or fallback when the list is empty.
static int ref_layer_entry(const char *list, int l, int fallback) {
    if (!list[0]) return fallback;
    const char *p = list;
    for (int i = 0; i < l; i++) {
        p = strchr(p, ',');
        if (!p) fatal("reference: per-layer list '%s' has no entry %d", list, l + 1);
        p++;
    }
    return atoi(p);
}

typedef struct {
    decon_config config;                    // this layer's: head_dim r_qk, value_head_dim r_v, intermediate m
    int inter;
    const ref_mixer *mixer;
    ref_tensor input_norm, post_norm, gate, up, down;
    double *residual_in, *norm1, *rstd1;    // [rows, d], [rows, d], [rows]
    double *residual_mid, *norm2, *rstd2;   // after the mixer branch; MLP input
    double *gate_out, *up_out, *act;        // [rows, intermediate]
} ref_block;

double model_reference_loss_fixed(const decon_config *c, const param_registry *registry, const double *params,
                                  const int *loss_tokens, const int *loss_targets, int loss_batch, int seq_len,
                                  const double *fixed_input, const int *fixed_tokens, double *losses, double *grads) {
    int n = c->num_hidden_layers, d = c->hidden_size, uniform_inter = c->intermediate_size, vocab = c->vocab_size;
    int kv_heads = c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
    if ((!c->head_dim && d % c->num_attention_heads) || c->num_attention_heads % kv_heads || ref_head_dim(c) % 2)
        fatal("reference: hidden_size %d, heads %d, kv heads %d, head size %d do not fit", d, c->num_attention_heads,
              kv_heads, ref_head_dim(c));
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
    size_t rd = (size_t)rows * d, ri_max = 0;
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
        k->config = *c;
        k->config.head_dim = ref_layer_entry(c->layer_head_dims, l, ref_head_dim(c));
        k->config.value_head_dim = ref_layer_entry(c->layer_value_head_dims, l,
                                                   c->value_head_dim > 0 ? c->value_head_dim : k->config.head_dim);
        k->inter = k->config.intermediate_size = ref_layer_entry(c->layer_intermediate_sizes, l, uniform_inter);
        size_t ri = (size_t)rows * k->inter;
        if (ri > ri_max) ri_max = ri;
        int inter = k->inter;
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
        int inter = k->inter;
        size_t ri = (size_t)rows * inter;
        x.config = &k->config;
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
    x.config = c;
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
        double *d_act = ref_zeros(ri_max), *d_gate = ref_zeros(ri_max), *d_up = ref_zeros(ri_max);
        x.d_embeddings = ref_zeros(rd);
        ref_linear_backward(d_normed, head.g, NULL, logits, final_normed, head.w, rows, d, vocab);
        ref_rmsnorm_backward(d_res, final_norm.g, d_normed, residual_out, final_norm.w, final_rstd, rows, d);
        for (int l = n - 1; l >= 0; l--) {
            ref_block *k = &blocks[l];
            int inter = k->inter;
            size_t ri = (size_t)rows * inter;
            x.config = &k->config;
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
