// The mixers whose Q, K do not come from the current layer's input (DESIGN.md 5):
// rndembqk and fixedseqqk (Q, K from the fixed stream; one map for the whole batch) and
// staticembqk (Q, K from the normalised input embeddings).
//  a. the double reference's backward against finite differences of its own loss;
//  b. the fp32 model against the reference: loss and every gradient tensor, uniform and
//     hybrid:even, MHA/GQA, bias on/off, tied/untied, micro-batches shorter than allocated;
//  c. the fixed map: every sequence's A V uses the map computed here from the fixed
//     stream's Q, K; identical for different input batches, different when the weights
//     change; the fixed stream's backward reaches the lower blocks (a cut changes exactly
//     the lower layer's gradients; fixedseqqk's t_s embeddings get a gradient);
//  d. staticembqk's map ignores the lower layers' weights and follows the tokens;
//  e. the parameters are exactly standard's;
//  f. the shared-map ops (materialised A) agree with the flash attention op.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../reference/model_reference.h"
#include "../testing.h"
#include "support/model_test_helpers.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "core/rng.h"
#include "model/model.h"
#include "ops/ops.h"

// ---- a, b. the reference backward against finite differences and the fp32 model against
// the reference: tests/support/model_test_helpers.c, called from main ---------------------

// ---- c. the fixed map ------------------------------------------------------------------

// probs[heads, seq_len, seq_len] of layer `layer`, sequence `sequence`, of the last forward.
static void map_of(model *m, int layer, int sequence, float *probs) {
    mixer_context context = model_mixer_context(m);
    m->plan[layer]->attention_matrix(&m->mixers[layer], &context, sequence, probs);
}

static double max_abs_diff(const float *a, const float *b, size_t count) {
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

// The map applied to every sequence, checked against a computation here: the causal
// softmax of s Qf.Kf in double from the fixed stream's saved Qf, Kf (post-RoPE), which
// attention_matrix must return for each sequence, and each sequence's saved A V against
// that map times the sequence's own V. fixed_stream.c saves Qf, Kf, V and A V (all rows,
// the fixed sequence last) as saved[0..3]. Returns the worst of the two errors.
static double per_sequence_map_error(model *m, int layer, double *map_diff) {
    const decon_config *c = &m->config;
    int L = m->seq_len, sequences = m->batch, heads = c->num_attention_heads, kv = config_kv_heads(c);
    size_t dh = (size_t)config_head_dim(c), group = (size_t)(heads / kv), q_dim = heads * dh, kv_dim = kv * dh;
    const float *q = m->mixers[layer].saved[0], *k = m->mixers[layer].saved[1];
    const float *v = m->mixers[layer].saved[2], *av = m->mixers[layer].saved[3];
    size_t map_size = (size_t)heads * L * L, rows = (size_t)sequences * L;
    double *map = xcalloc(map_size, sizeof(double)), *expected = xcalloc(rows * q_dim, sizeof(double));
    for (int j = 0; j < heads; j++)
        for (int i = 0; i < L; i++) {
            double *row = map + ((size_t)j * L + i) * L, max = -INFINITY, sum = 0.0;
            for (int t = 0; t <= i; t++) {
                double dot = 0.0;
                for (size_t e = 0; e < dh; e++)
                    dot += (double)q[(size_t)i * q_dim + j * dh + e] * k[(size_t)t * kv_dim + j / group * dh + e];
                row[t] = dot / sqrt((double)dh);
                max = fmax(max, row[t]);
            }
            for (int t = 0; t <= i; t++) sum += row[t] = exp(row[t] - max);
            for (int t = 0; t <= i; t++) row[t] /= sum;
        }
    *map_diff = 0.0;
    float *probs = xcalloc(map_size, sizeof(float));
    mixer_context context = model_mixer_context(m);
    for (int b = 0; b < sequences; b++) {
        m->plan[layer]->attention_matrix(&m->mixers[layer], &context, b, probs);
        for (size_t e = 0; e < map_size; e++) *map_diff = fmax(*map_diff, fabs(probs[e] - map[e]));
        for (int j = 0; j < heads; j++)
            for (int i = 0; i < L; i++)
                for (int t = 0; t <= i; t++)
                    for (size_t e = 0; e < dh; e++)
                        expected[((size_t)b * L + i) * q_dim + j * dh + e] +=
                            map[((size_t)j * L + i) * L + t] * v[((size_t)b * L + t) * kv_dim + j / group * dh + e];
    }
    double err = testing_relative_error_f(av, expected, rows * q_dim);
    free(map);
    free(expected);
    free(probs);
    return err;
}

static void check_fixed_map(const char *variant) {
    decon_config c;
    test_model_config(&c, variant, "uniform", 32, 2, 4, 2, 48, 41, true, true, 1000.0);
    int batch = 3, seq_len = 21, rows = batch * seq_len;
    model m;
    test_model_setup(&m, &c, variant, batch, seq_len, 401);
    size_t map_size = (size_t)c.num_attention_heads * seq_len * seq_len;
    float *first = xcalloc(map_size, sizeof(float)), *other = xcalloc(map_size, sizeof(float));
    float *first0 = xcalloc(map_size, sizeof(float)), *other0 = xcalloc(map_size, sizeof(float));
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    char name[256];

    test_model_batch(tokens, targets, rows, 0, c.vocab_size, c.vocab_size, 402);
    model_forward(&m, tokens, batch, seq_len);
    map_of(&m, 1, 0, first);
    map_of(&m, 0, 0, first0);
    double map_diff[2], av_err[2];
    for (int l = 0; l < 2; l++) av_err[l] = per_sequence_map_error(&m, l, &map_diff[l]);
    snprintf(name, sizeof name, "%s: every sequence (the fixed one too) gets one map, computed independently", variant);
    testing_report(fmax(map_diff[0], map_diff[1]) < 1e-6 && fmax(av_err[0], av_err[1]) < 1e-5, name,
                   "map max |diff| %.3g / %.3g, A V relative error %.3g / %.3g (layers 0 / 1)", map_diff[0],
                   map_diff[1], av_err[0], av_err[1]);
    test_model_batch(tokens, targets, rows, 0, c.vocab_size, c.vocab_size, 403);  // other tokens, same shape
    model_forward(&m, tokens, batch, seq_len);
    map_of(&m, 1, 1, other);
    map_of(&m, 0, 1, other0);
    bool same_across = memcmp(first, other, map_size * sizeof(float)) == 0 &&
                      memcmp(first0, other0, map_size * sizeof(float)) == 0;
    snprintf(name, sizeof name, "%s: the map is identical for two different batches", variant);
    testing_report(same_across, name, "the maps of layer 0 or 1 differ between the batches");

    // A different micro-batch size: the same map up to the rounding of differently-shaped sgemms.
    model_forward(&m, tokens, 1, seq_len);
    map_of(&m, 1, 0, other);
    double diff = max_abs_diff(first, other, map_size);
    snprintf(name, sizeof name, "%s: the map does not depend on the micro-batch size", variant);
    testing_report(diff < 1e-6, name, "max |difference| %.3g between batch 3 and batch 1", diff);

    // The map follows the weights: layer 1's through the fixed stream's pass through layer 0.
    test_params_perturb(&m.registry, m.params, 404, "layers.0.mlp.down_proj");
    model_forward(&m, tokens, batch, seq_len);
    map_of(&m, 1, 0, other);
    map_of(&m, 0, 0, other0);
    double diff1 = max_abs_diff(first, other, map_size), diff0 = max_abs_diff(first0, other0, map_size);
    test_params_perturb(&m.registry, m.params, 405, "layers.1.mixer.wk");
    model_forward(&m, tokens, batch, seq_len);
    float *third = first0;  // reuse: layer 1's map after the second change
    map_of(&m, 1, 0, third);
    double diff_wk = max_abs_diff(other, third, map_size);
    snprintf(name, sizeof name, "%s: the map changes with the weights (layer-0 MLP -> layer-1 map; layer-1 Wk)",
             variant);
    testing_report(diff1 > 1e-4 && diff0 == 0.0 && diff_wk > 1e-4, name,
                   "layer-1 map moved %.3g, layer-0 map moved %.3g (must be 0), after Wk %.3g", diff1, diff0, diff_wk);
    free(first);
    free(other);
    free(first0);
    free(other0);
    free(tokens);
    free(targets);
    model_free(&m);
}

// The real mixer with the fixed stream's backward cut below it: the fixed sequence's rows
// of d_inp are dropped, so no gradient flows down the fixed stream from this layer.
static const mixer_kind *cut_real;
static void cut_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                         const float *inp) {
    cut_real->backward(layer, x, d_inp, d_out, inp);
    size_t row = (size_t)x->fixed_sequence * x->seq_len, d = (size_t)x->config->hidden_size;
    memset(d_inp + row * d, 0, (size_t)x->seq_len * d * sizeof(float));
}

// In a uniform 2-layer model the loss depends on layer 0 through layer 1's map, computed
// from the fixed stream's pass through layer 0. Cutting the fixed stream's backward below
// every mixer must change exactly the tensors the fixed stream passes through below layer
// 1's Q, K: every layer-0 tensor, layer 1's input norm, and for fixedseqqk the embedding
// (t_s); every other gradient must stay bit-identical.
static void check_fixed_stream_backward(const char *variant) {
    decon_config c;
    test_model_config(&c, variant, "uniform", 32, 2, 4, 2, 48, 41, true, true, 1000.0);
    int batch = 2, seq_len = 17, rows = batch * seq_len;
    model m;
    test_model_setup(&m, &c, variant, batch, seq_len, 501);
    size_t total = m.registry.total;
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    test_model_batch(tokens, targets, rows, 0, c.vocab_size, c.vocab_size, 502);
    float *full = xcalloc(total, sizeof(float));
    memset(m.grads, 0, total * sizeof(float));
    model_forward(&m, tokens, batch, seq_len);
    model_backward(&m, targets, 1.0f, NULL);
    memcpy(full, m.grads, total * sizeof(float));

    static mixer_kind cut;
    cut_real = m.plan[0];
    cut = *cut_real;
    cut.backward = cut_backward;
    for (int l = 0; l < c.num_hidden_layers; l++) m.plan[l] = &cut;
    memset(m.grads, 0, total * sizeof(float));
    model_forward(&m, tokens, batch, seq_len);
    model_backward(&m, targets, 1.0f, NULL);

    bool others_same = true, lower_all_moved = true;
    double smallest = INFINITY;
    const char *smallest_name = "", *moved_name = "";
    for (int i = 0; i < m.registry.count; i++) {
        const param_info *p = &m.registry.items[i];
        double *ref = xcalloc(p->local_count, sizeof(double));
        for (size_t e = 0; e < p->local_count; e++) ref[e] = full[p->offset + e];
        double change = testing_relative_error_f(m.grads + p->offset, ref, p->local_count);
        free(ref);
        bool below = p->layer == 0 || strcmp(p->name, "layers.1.input_layernorm") == 0 ||
                     (m.fixed_stream_from_tokens && i == m.embed);
        if (below) {
            if (change < smallest) {
                smallest = change;
                smallest_name = p->name;
            }
            if (!(change > 1e-3)) lower_all_moved = false;
        } else if (change != 0.0) {
            others_same = false;
            moved_name = p->name;
        }
    }
    printf("# %s: cutting the fixed stream's backward changes the gradients below by >= %.3g (%s)\n", variant,
           smallest, smallest_name);
    char name[256];
    snprintf(name, sizeof name,
             "%s: the fixed stream's backward reaches every tensor below layer 1's map (cut: change > 1e-3)", variant);
    testing_report(lower_all_moved, name, "tensor %s changed by only %.3g", smallest_name, smallest);
    snprintf(name, sizeof name, "%s: cutting the fixed stream's backward leaves the other tensors bit-identical",
             variant);
    testing_report(others_same, name, "tensor %s changed", moved_name);
    free(full);
    free(tokens);
    free(targets);
    model_free(&m);
}

// fixedseqqk, list:1 (layer 0 standard, layer 1 fixedseqqk), untied: the batch uses tokens
// 0..9 only and t_s tokens 10..; those embedding rows get gradient only through layer 1's
// map, down the fixed stream through layer 0. Non-zero and equal to the reference.
static void check_fixed_tokens_gradient(void) {
    decon_config c;
    test_model_config(&c, "fixedseqqk", "list:1", 32, 2, 4, 4, 48, 29, false, true, 1000.0);
    int batch = 2, seq_len = 15, rows = batch * seq_len, d = c.hidden_size;
    model m;
    test_model_setup(&m, &c, "fixedseqqk t_s", batch, seq_len, 601);
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    test_model_batch(tokens, targets, rows, 0, 10, c.vocab_size, 602);
    size_t total = m.registry.total;
    double *params = xcalloc(total, sizeof(double)), *grads = xcalloc(total, sizeof(double));
    for (size_t e = 0; e < total; e++) params[e] = m.params[e];
    memset(m.grads, 0, total * sizeof(float));
    model_forward(&m, tokens, batch, seq_len);
    model_backward(&m, targets, 1.0f, NULL);
    model_reference_loss_fixed(&c, &m.registry, params, tokens, targets, batch, seq_len, NULL, m.fixed_tokens, NULL,
                               grads);
    size_t start = m.registry.items[m.embed].offset + (size_t)10 * d, count = (size_t)(c.vocab_size - 10) * d;
    double norm = sqrt(sum_of_squares(m.grads + start, count));
    double err = testing_relative_error_f(m.grads + start, grads + start, count);
    printf("# fixedseqqk: gradient norm of the t_s-only embedding rows %.3g, relative error %.3g\n", norm, err);
    testing_report(norm > 1e-3 && err < 1e-4,
                   "fixedseqqk: t_s's embeddings get gradient through layer 1's map and layer 0 (as the reference)",
                   "norm %.3g, relative error vs reference %.3g", norm, err);
    free(params);
    free(grads);
    free(tokens);
    free(targets);
    model_free(&m);
}

// ---- d. staticembqk's map -----------------------------------------------------------------

static void check_static_map(void) {
    decon_config c;
    test_model_config(&c, "staticembqk", "uniform", 32, 2, 4, 2, 48, 41, true, true, 1000.0);
    int batch = 2, seq_len = 19, rows = batch * seq_len;
    model m;
    test_model_setup(&m, &c, "staticembqk map", batch, seq_len, 701);
    size_t map_size = (size_t)c.num_attention_heads * seq_len * seq_len;
    float *before = xcalloc(map_size, sizeof(float)), *after = xcalloc(map_size, sizeof(float));
    float *second = xcalloc(map_size, sizeof(float));
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    test_model_batch(tokens, targets, rows, 0, c.vocab_size, c.vocab_size, 702);
    model_forward(&m, tokens, batch, seq_len);
    map_of(&m, 1, 0, before);
    map_of(&m, 1, 1, second);
    double across = max_abs_diff(before, second, map_size);
    test_params_perturb(&m.registry, m.params, 703, "layers.0.");
    model_forward(&m, tokens, batch, seq_len);
    map_of(&m, 1, 0, after);
    bool unchanged = memcmp(before, after, map_size * sizeof(float)) == 0;
    testing_report(unchanged, "staticembqk: perturbing every layer-0 weight leaves the layer-1 map bit-identical",
                   "max |difference| %.3g", max_abs_diff(before, after, map_size));
    test_params_perturb(&m.registry, m.params, 704, "layers.1.input_layernorm");
    model_forward(&m, tokens, batch, seq_len);
    map_of(&m, 1, 0, after);
    double moved = max_abs_diff(before, after, map_size);
    testing_report(moved > 1e-4 && across > 1e-4,
                   "staticembqk: the map follows the tokens and the layer's own input-norm weight",
                   "sequence 0 vs 1 differ by %.3g, after the norm change by %.3g", across, moved);
    free(before);
    free(after);
    free(second);
    free(tokens);
    free(targets);
    model_free(&m);
}

// ---- f. the shared-map ops against the flash attention op ---------------------------------

// shared_attention_* against attention_* run on a batch whose every sequence carries the
// same q, k (the broadcast form), with d_q, d_k summed over the batch; L crosses blocks.
static void check_shared_attention_ops(int heads, int kv_heads, int seq_len, int batch) {
    int dh = 16, L = seq_len;
    size_t q_dim = (size_t)heads * dh, kv_dim = (size_t)kv_heads * dh, rows = (size_t)batch * L;
    float scale = 1.0f / sqrtf((float)dh);
    float *q = xcalloc(L * q_dim, sizeof(float)), *k = xcalloc(L * kv_dim, sizeof(float));
    float *qb = xcalloc(rows * q_dim, sizeof(float)), *kb = xcalloc(rows * kv_dim, sizeof(float));
    float *v = xcalloc(rows * kv_dim, sizeof(float)), *d_out = xcalloc(rows * q_dim, sizeof(float));
    for (size_t e = 0; e < L * q_dim; e++) q[e] = (float)rng_normal(801, 1, e);
    for (size_t e = 0; e < L * kv_dim; e++) k[e] = (float)rng_normal(801, 2, e);
    for (size_t e = 0; e < rows * kv_dim; e++) v[e] = (float)rng_normal(801, 3, e);
    for (size_t e = 0; e < rows * q_dim; e++) d_out[e] = (float)rng_normal(801, 4, e);
    for (int b = 0; b < batch; b++) {
        memcpy(qb + (size_t)b * L * q_dim, q, L * q_dim * sizeof(float));
        memcpy(kb + (size_t)b * L * kv_dim, k, L * kv_dim * sizeof(float));
    }
    size_t map_size = (size_t)heads * L * L;
    float *probs = xcalloc(map_size, sizeof(float)), *expected = xcalloc(map_size, sizeof(float));
    float *workspace = xcalloc(shared_attention_workspace_floats(batch, L, heads, kv_heads, dh), sizeof(float));
    shared_attention_map(probs, q, k, L, heads, kv_heads, dh, scale);
    attention_probabilities(expected, q, k, L, heads, kv_heads, dh, scale);
    double map_diff = max_abs_diff(probs, expected, map_size);

    float *out = xcalloc(rows * q_dim, sizeof(float)), *flash = xcalloc(rows * q_dim, sizeof(float));
    float *lse = xcalloc(rows * heads, sizeof(float));
    shared_attention_forward(out, q, k, v, batch, L, heads, kv_heads, dh, scale, workspace);
    attention_forward(flash, lse, qb, kb, v, batch, L, heads, kv_heads, dh, dh, scale);
    double *ref = xcalloc(rows * q_dim, sizeof(double));
    for (size_t e = 0; e < rows * q_dim; e++) ref[e] = flash[e];
    double out_err = testing_relative_error_f(out, ref, rows * q_dim);

    float *d_q = xcalloc(L * q_dim, sizeof(float)), *d_k = xcalloc(L * kv_dim, sizeof(float));
    float *d_v = xcalloc(rows * kv_dim, sizeof(float)), *d_qb = xcalloc(rows * q_dim, sizeof(float));
    float *d_kb = xcalloc(rows * kv_dim, sizeof(float)), *d_vb = xcalloc(rows * kv_dim, sizeof(float));
    shared_attention_backward(d_q, d_k, d_v, d_out, q, k, v, batch, L, heads, kv_heads, dh, scale, workspace);
    attention_backward(d_qb, d_kb, d_vb, d_out, flash, lse, qb, kb, v, batch, L, heads, kv_heads, dh, dh, scale);
    for (int b = 1; b < batch; b++) {
        add_inplace(d_qb, d_qb + (size_t)b * L * q_dim, L * q_dim);
        add_inplace(d_kb, d_kb + (size_t)b * L * kv_dim, L * kv_dim);
    }
    double err = 0.0;
    const float *got[3] = {d_q, d_k, d_v}, *want[3] = {d_qb, d_kb, d_vb};
    size_t count[3] = {L * q_dim, L * kv_dim, rows * kv_dim};
    for (int t = 0; t < 3; t++) {
        double *w = xcalloc(count[t], sizeof(double));
        for (size_t e = 0; e < count[t]; e++) w[e] = want[t][e];
        err = fmax(err, testing_relative_error_f(got[t], w, count[t]));
        free(w);
    }
    char name[256];
    snprintf(name, sizeof name,
             "shared-map ops = attention ops on the broadcast batch (heads %d, kv %d, L %d, batch %d)", heads,
             kv_heads, L, batch);
    testing_report(map_diff < 1e-6 && out_err < 1e-5 && err < 1e-5, name,
                   "map max |diff| %.3g, output rel %.3g, worst of d_q/d_k/d_v rel %.3g", map_diff, out_err, err);
    free(q), free(k), free(qb), free(kb), free(v), free(d_out), free(probs), free(expected), free(workspace);
    free(out), free(flash), free(lse), free(ref), free(d_q), free(d_k), free(d_v), free(d_qb), free(d_kb), free(d_vb);
}

// ---- e. standard's parameters ----------------------------------------------------------

static void check_params(const char *variant) {
    decon_config c;
    test_model_config(&c, "standard", "uniform", 32, 3, 4, 2, 48, 41, false, true, 1000.0);
    model standard, other;
    model_build(&standard, &c, "standard");
    snprintf(c.variant, sizeof c.variant, "%s", variant);
    model_build(&other, &c, variant);
    bool same = standard.registry.count == other.registry.count && standard.registry.total == other.registry.total;
    for (int i = 0; same && i < standard.registry.count; i++) {
        const param_info *a = &standard.registry.items[i], *b = &other.registry.items[i];
        same = strcmp(a->name, b->name) == 0 && a->offset == b->offset && a->shape[0] == b->shape[0] &&
               a->shape[1] == b->shape[1] && a->init == b->init && a->init_std == b->init_std;
    }
    int64_t count = other.plan[0]->param_count(&c), expected = standard.plan[0]->param_count(&c);
    char name[256];
    snprintf(name, sizeof name, "%s: exactly standard's tensors (names, shapes, init) and parameter count", variant);
    testing_report(same && count == expected, name, "registries equal %d, param_count %lld vs %lld", same,
                   (long long)count, (long long)expected);
    model_free(&standard);
    model_free(&other);
}

int main(void) {
    static const char *const variants[] = {"rndembqk", "fixedseqqk", "staticembqk"};
    decon_config c;
    char label[128];
    for (int v = 0; v < 3; v++) check_params(variants[v]);

    // a. d=16, 4 heads, vocab 23, 2 x 5 tokens (+ the fixed sequence).
    test_model_config(&c, "rndembqk", "uniform", 16, 2, 4, 2, 24, 23, true, true, 1000.0);
    test_check_reference_gradient("rndembqk, tied, bias, GQA kv=2", &c, 2, 5, 5e-4, 0.0, 101);
    test_model_config(&c, "fixedseqqk", "uniform", 16, 2, 4, 4, 24, 23, false, false, 1000.0);
    test_check_reference_gradient("fixedseqqk, untied, no bias, MHA", &c, 2, 5, 5e-4, 0.0, 102);
    test_model_config(&c, "staticembqk", "uniform", 16, 2, 4, 2, 24, 23, false, true, 1000.0);
    test_check_reference_gradient("staticembqk, untied, bias, GQA kv=2", &c, 2, 5, 5e-4, 0.0, 103);

    // b. every variant uniform and hybrid:even (3 layers: variant, standard, variant), GQA
    // with a micro-batch smaller than allocated; then MHA over a block boundary (L > 64).
    for (int v = 0; v < 3; v++) {
        test_model_config(&c, variants[v], "uniform", 32, 2, 4, 2, 48, 41, true, true, 1000.0);
        snprintf(label, sizeof label, "%s uniform, GQA kv=2, tied, bias, 3x19 of 5x24", variants[v]);
        test_compare_with_reference(label, &c, 3, 19, 5, 201 + v);
        test_model_config(&c, variants[v], "hybrid:even", 32, 3, 4, 1, 48, 41, false, true, 1000.0);
        snprintf(label, sizeof label, "%s hybrid:even, MQA kv=1, untied, bias, 2x13", variants[v]);
        test_compare_with_reference(label, &c, 2, 13, 0, 211 + v);
        test_model_config(&c, variants[v], "uniform", 64, 2, 4, 4, 72, 61, false, false, 1000.0);
        snprintf(label, sizeof label, "%s uniform, MHA, untied, no bias, 2x77", variants[v]);
        test_compare_with_reference(label, &c, 2, 77, 0, 221 + v);
    }

    // c, d.
    check_fixed_map("rndembqk");
    check_fixed_map("fixedseqqk");
    check_fixed_stream_backward("rndembqk");
    check_fixed_stream_backward("fixedseqqk");
    check_fixed_tokens_gradient();
    check_static_map();

    // f.
    check_shared_attention_ops(4, 4, 150, 3);
    check_shared_attention_ops(6, 2, 130, 2);
    check_shared_attention_ops(4, 1, 64, 1);
    check_shared_attention_ops(2, 1, 600, 2);  // 3 uneven causal bands
    return testing_exit_code();
}
