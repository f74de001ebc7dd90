// The shapes of a compressed model (A3, issue 14; docs/design.md "Head size" and
// "Per-layer shapes"): a value head size r_v of its own ([model] value_head_dim) for the
// standard mixer (MHA, GQA, MQA):
//  a. the double reference's backward against finite differences of its own loss with
//     r_v > r_qk and r_v < r_qk (MHA and GQA);
//  b. the fp32 model against that reference (loss and every gradient tensor), GQA and MQA;
//  c. the registered shapes Wv [kv_heads r_v, d], Wo [d, heads r_v], param_count = what is
//     registered, the KV cache kv_heads (r_qk + r_v) floats per token;
//  d. config: value_head_dim absent reads as head_dim, is written resolved, and a config
//     with it equal to head_dim is the same model as one without it;
// and per-layer shapes ([model] layer_head_dims, layer_value_head_dims,
// layer_intermediate_sizes):
//  e. three layers of different r_qk, r_v and m: the double reference's backward against
//     finite differences, the fp32 model against it (standard GQA, and a hybrid with
//     nonapx layers whose r_qk differs per layer);
//  f. each layer registers its own shapes, the model's FLOPs sum the layers' by hand;
//  g. config_layer resolves each layer, config_parse_layer_sizes refuses a wrong length;
// and per-layer RoPE pairs ([model] layer_rope_pairs, an A3-reduced head):
//  h. a model whose layers have r_qk 4 with pairs {0,3} and r_qk 6 with pairs {1,2,3} of an
//     original head of 8 against an independent construction, the original 8-wide model
//     with the dropped pairs' rows of Wq, Wk (and biases) zeroed: the same pre-softmax
//     scores and logits (fp32), the reduced model's loss against the double reference of
//     the zeroed model, and cached decoding against the reduced model's full forward;
//     config_parse_rope_pairs refuses unsorted, repeated, out-of-range and miscounted groups.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testing.h"
#include "support/model_test_helpers.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "mixers/mixer.h"
#include "eval/logits.h"
#include "model/decode.h"
#include "model/model.h"
#include "reference/model_reference.h"
#include "ops/ops.h"

static void shaped_config(decon_config *c, const char *variant, const char *layout) {
    test_model_config(c, variant, layout, 24, 3, 4, 2, 24, 11, false, true, 100.0);
    snprintf(c->layer_head_dims, sizeof c->layer_head_dims, "4,8,6");
    snprintf(c->layer_value_head_dims, sizeof c->layer_value_head_dims, "%s",
             strcmp(variant, "standard") == 0 ? "6,2,8" : "4,2,6");  // hybrid:even: layer 2 is standard
    snprintf(c->layer_intermediate_sizes, sizeof c->layer_intermediate_sizes, "20,12,28");
}

static void value_config(decon_config *c, int d, int heads, int kv, int head_dim, int value_head_dim, bool tied,
                         bool bias) {
    test_model_config(c, "standard", "uniform", d, 1, heads, kv, 24, 11, tied, bias, 100.0);
    c->head_dim = head_dim;
    c->value_head_dim = value_head_dim;
}

// ---- a, b ----------------------------------------------------------------------------

static void check_value_gradients(void) {
    decon_config c;
    value_config(&c, 16, 2, 2, 0, 12, true, true);  // r_qk = d/h = 8
    test_check_reference_gradient("standard, d=16, 2 heads, r_qk=8, r_v=12 > r_qk, MHA, bias", &c, 2, 4, 1e-3, 0.0,
                                  700);
    value_config(&c, 16, 4, 2, 6, 2, false, true);
    test_check_reference_gradient("standard, d=16, 4 heads, r_qk=6, r_v=2 < r_qk, GQA kv=2, untied", &c, 2, 4, 1e-3,
                                  0.0, 701);
    value_config(&c, 32, 4, 2, 8, 12, true, true);
    test_compare_with_reference("standard, d=32, 4 heads, r_qk=8, r_v=12, GQA kv=2, 2x9", &c, 2, 9, 0, 702);
    value_config(&c, 32, 4, 1, 12, 4, false, false);
    test_compare_with_reference("standard, d=32, 4 heads, r_qk=12, r_v=4, MQA, no bias, 2x70 (spare)", &c, 2, 70, 2,
                                703);
}

// ---- c ---------------------------------------------------------------------------------

static void check_value_shapes(void) {
    const int64_t d = 48, h = 4, kv = 2, dh = 10, dv = 6;
    decon_config c;
    value_config(&c, (int)d, (int)h, (int)kv, (int)dh, (int)dv, true, true);
    model m;
    model_build(&m, &c, "value_head_dim");
    char why[256] = "";
    bool ok = test_shape_is(&m.registry, "layers.0.mixer.wq", h * dh, d, why, sizeof why) &&
              test_shape_is(&m.registry, "layers.0.mixer.wk", kv * dh, d, why, sizeof why) &&
              test_shape_is(&m.registry, "layers.0.mixer.wv", kv * dv, d, why, sizeof why) &&
              test_shape_is(&m.registry, "layers.0.mixer.bv", kv * dv, 1, why, sizeof why) &&
              test_shape_is(&m.registry, "layers.0.mixer.wo", d, h * dv, why, sizeof why);
    testing_report(ok, "r_qk=10, r_v=6: Wq [40,48], Wk [20,48], Wv [12,48], bv [12], Wo [48,24]", "%s", why);
    model_free(&m);
    // by hand: 40*48 + 20*48 + 12*48 + 48*24 + biases 40 + 20 + 12 = 4680
    int64_t by_hand = 40 * 48 + 20 * 48 + 12 * 48 + 48 * 24 + 40 + 20 + 12;
    int64_t analytic = mixer_standard()->param_count(&c), registered = test_registered_mixer_params(&c, "standard");
    testing_report(analytic == by_hand && registered == by_hand, "r_v=6: standard's param_count = registered = 4680",
                   "param_count %lld, registered %lld", (long long)analytic, (long long)registered);
    testing_report(mixer_standard()->cache_floats_per_token(&c) == kv * (dh + dv),
                   "r_v=6: the KV cache is kv_heads (r_qk + r_v) = 32 floats per token", "%lld",
                   (long long)mixer_standard()->cache_floats_per_token(&c));
    // FLOPs: 2 d (q + k + v + o widths) + (L + 1)(heads r_qk + heads r_v), at L = 15.
    double want = 2.0 * 48 * (40 + 20 + 12 + 24) + 16.0 * (40 + 24);
    double got = mixer_standard()->forward_flops_per_token(&c, 15);
    testing_report(got == want, "r_v=6: standard's forward FLOPs per token count both head sizes", "%.0f vs %.0f",
                   got, want);
}

// ---- d ---------------------------------------------------------------------------------

static void check_value_config(void) {
    decon_config absent, same, other;
    test_model_config(&absent, NULL, NULL, 64, 2, 4, 0, 96, 50, true, true, 100.0);
    absent.head_dim = 20;
    same = absent;
    same.value_head_dim = 20;
    other = absent;
    other.value_head_dim = 8;
    testing_report(config_value_head_dim(&absent) == 20 && config_value_head_dim(&other) == 8,
                   "value_head_dim absent reads as head_dim (20); set, as itself (8)", "%d, %d",
                   config_value_head_dim(&absent), config_value_head_dim(&other));
    char *text = config_to_text(&absent);
    testing_report(strstr(text, "\nvalue_head_dim = 20\n") != NULL, "config_to_text writes value_head_dim resolved",
                   "no 'value_head_dim = 20' line");
    free(text);
    const char *key = NULL;
    testing_report(config_same_model(&absent, &same, &key), "value_head_dim absent == head_dim: the same model",
                   "differs in %s", key);
    key = NULL;
    bool differs = !config_same_model(&absent, &other, &key) && key && strcmp(key, "value_head_dim") == 0;
    testing_report(differs, "value_head_dim 8 != absent: another model, named value_head_dim", "key %s",
                   key ? key : "(none)");
}

// ---- e, f, g ------------------------------------------------------------------------

static void check_layer_gradients(void) {
    decon_config c;
    shaped_config(&c, "standard", "uniform");
    test_check_reference_gradient("3 layers r_qk 4,8,6 r_v 6,2,8 m 20,12,28, GQA", &c, 2, 4, 1e-3, 0.0, 710);
    test_compare_with_reference("3 layers r_qk 4,8,6 r_v 6,2,8 m 20,12,28, GQA, 2x9", &c, 2, 9, 1, 711);
    shaped_config(&c, "nonapx", "hybrid:even");
    test_check_reference_gradient("nonapx hybrid:even, r_qk 4,8,6 r_v 4,2,6 m 20,12,28", &c, 2, 4, 1e-3, 0.0, 712);
    test_compare_with_reference("nonapx hybrid:even, r_qk 4,8,6 r_v 4,2,6 m 20,12,28, 2x9", &c, 2, 9, 0, 713);
}

static void check_layer_shapes(void) {
    decon_config c;
    shaped_config(&c, "standard", "uniform");
    model m;
    model_build(&m, &c, "per-layer shapes");
    static const int64_t dh[3] = {4, 8, 6}, dv[3] = {6, 2, 8}, inter[3] = {20, 12, 28};
    char why[256] = "", name[96];
    bool ok = true;
    double flops = 2.0 * 24 * 11;  // the LM head
    for (int l = 0; l < 3 && ok; l++) {
        snprintf(name, sizeof name, "layers.%d.mixer.wq", l);
        ok = test_shape_is(&m.registry, name, 4 * dh[l], 24, why, sizeof why);
        snprintf(name, sizeof name, "layers.%d.mixer.wk", l);
        ok = ok && test_shape_is(&m.registry, name, 2 * dh[l], 24, why, sizeof why);
        snprintf(name, sizeof name, "layers.%d.mixer.wv", l);
        ok = ok && test_shape_is(&m.registry, name, 2 * dv[l], 24, why, sizeof why);
        snprintf(name, sizeof name, "layers.%d.mixer.wo", l);
        ok = ok && test_shape_is(&m.registry, name, 24, 4 * dv[l], why, sizeof why);
        snprintf(name, sizeof name, "layers.%d.mlp.gate_proj", l);
        ok = ok && test_shape_is(&m.registry, name, inter[l], 24, why, sizeof why);
        snprintf(name, sizeof name, "layers.%d.mlp.down_proj", l);
        ok = ok && test_shape_is(&m.registry, name, 24, inter[l], why, sizeof why);
        double q = 4.0 * (double)dh[l], k = 2.0 * (double)dh[l], v = 2.0 * (double)dv[l], o = 4.0 * (double)dv[l];
        flops += 2.0 * 24 * (q + k + v + o) + 16.0 * (q + o) + 6.0 * 24 * (double)inter[l];  // at L = 15
    }
    testing_report(ok, "per-layer shapes: every layer registers its own Wq, Wk, Wv, Wo and MLP widths", "%s", why);
    double got = model_training_flops_per_token(&m, 15);
    testing_report(fabs(got - 3.0 * flops) <= 1e-12 * got, "per-layer shapes: training FLOPs sum the layers' own",
                   "%.0f vs %.0f", got, 3.0 * flops);
    model_free(&m);

    decon_config layer;
    config_layer(&c, 1, &layer);
    testing_report(config_head_dim(&layer) == 8 && config_value_head_dim(&layer) == 2 &&
                       layer.intermediate_size == 12 && !config_has_layer_shapes(&layer) &&
                       config_has_layer_shapes(&c),
                   "config_layer: layer 2 is r_qk 8, r_v 2, m 12, its lists emptied", "%d %d %d",
                   config_head_dim(&layer), config_value_head_dim(&layer), layer.intermediate_size);
    decon_config plain;
    test_model_config(&plain, NULL, NULL, 24, 3, 4, 2, 24, 11, false, true, 100.0);
    plain.value_head_dim = 4;
    config_layer(&plain, 2, &layer);
    testing_report(config_head_dim(&layer) == 6 && config_value_head_dim(&layer) == 4 &&
                       layer.intermediate_size == 24 && !config_has_layer_shapes(&plain),
                   "config_layer without lists: the uniform keys (r_qk d/h 6, value_head_dim 4, m 24)", "%d %d %d",
                   config_head_dim(&layer), config_value_head_dim(&layer), layer.intermediate_size);
    int sizes[3];
    char reason[256] = "";
    bool refused = !config_parse_layer_sizes("4,8", 3, sizes, reason, sizeof reason) &&
                   strstr(reason, "2 entries for 3 layers") != NULL;
    testing_report(refused, "a per-layer list of 2 entries for 3 layers is refused, naming both", "%s", reason);
}

// ---- h -------------------------------------------------------------------------------

enum { PAIR_D = 16, PAIR_HEADS = 2, PAIR_KV = 1, PAIR_HEAD = 8, PAIR_VOCAB = 11, PAIR_BATCH = 2, PAIR_LEN = 7 };
static const int PAIR_RANK[2] = {4, 6};
static const int PAIR_KEPT[2][3] = {{0, 3, -1}, {1, 2, 3}};

static bool pair_kept(int layer, int pair) {
    for (int t = 0; t < PAIR_RANK[layer] / 2; t++)
        if (PAIR_KEPT[layer][t] == pair) return true;
    return false;
}

// Layer l's reduced wq/wk/bq/bk from the original's kept pairs (rotate-half: element t
// pairs with t + r/2), queries times sqrt(r/d_h) so that 1/sqrt(r) scores as 1/sqrt(d_h).
static void copy_reduced(const model *original, model *reduced) {
    for (int i = 0; i < reduced->registry.count; i++) {
        const param_info *to = &reduced->registry.items[i];
        const param_info *from = &original->registry.items[params_find(&original->registry, to->name)];
        int layer;
        char what[8] = "";
        if (sscanf(to->name, "layers.%d.mixer.%7s", &layer, what) != 2 ||
            (strcmp(what, "wq") != 0 && strcmp(what, "wk") != 0 && strcmp(what, "bq") != 0 && strcmp(what, "bk") != 0)) {
            memcpy(reduced->params + to->offset, original->params + from->offset,
                   (size_t)params_logical_count(to) * sizeof(float));
            continue;
        }
        int r = PAIR_RANK[layer], half = r / 2, heads = what[1] == 'q' ? PAIR_HEADS : PAIR_KV;
        int cols = what[0] == 'w' ? PAIR_D : 1;
        float scale = what[1] == 'q' ? (float)sqrt((double)r / PAIR_HEAD) : 1.0f;
        for (int j = 0; j < heads; j++)
            for (int t = 0; t < r; t++) {
                int source = j * PAIR_HEAD + PAIR_KEPT[layer][t % half] + (t < half ? 0 : PAIR_HEAD / 2);
                for (int e = 0; e < cols; e++)
                    reduced->params[to->offset + (size_t)(j * r + t) * (size_t)cols + (size_t)e] =
                        scale * original->params[from->offset + (size_t)source * (size_t)cols + (size_t)e];
            }
    }
}

// Zeroes the original's dropped pairs (rows i and i + d_h/2 of every head of wq, wk, bq, bk).
static void zero_dropped(model *original) {
    static const char *const WHAT[] = {"wq", "wk", "bq", "bk"};
    char name[96];
    for (int l = 0; l < 2; l++)
        for (int w = 0; w < 4; w++) {
            snprintf(name, sizeof name, "layers.%d.mixer.%s", l, WHAT[w]);
            const param_info *p = &original->registry.items[params_find(&original->registry, name)];
            int heads = WHAT[w][1] == 'q' ? PAIR_HEADS : PAIR_KV, cols = WHAT[w][0] == 'w' ? PAIR_D : 1;
            for (int j = 0; j < heads; j++)
                for (int i = 0; i < PAIR_HEAD / 2; i++) {
                    if (pair_kept(l, i)) continue;
                    for (int half = 0; half < 2; half++)
                        memset(original->params + p->offset + (size_t)(j * PAIR_HEAD + i + half * PAIR_HEAD / 2) * (size_t)cols,
                               0, (size_t)cols * sizeof(float));
                }
        }
}

static double max_abs_difference(const float *a, const float *b, size_t n, double *largest) {
    double worst = 0.0;
    *largest = 0.0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
        *largest = fmax(*largest, fabs((double)b[i]));
    }
    return worst;
}

static void check_rope_pairs(void) {
    decon_config original_config, reduced_config;
    test_model_config(&original_config, NULL, NULL, PAIR_D, 2, PAIR_HEADS, PAIR_KV, 24, PAIR_VOCAB, false, true, 100.0);
    original_config.head_dim = PAIR_HEAD;
    reduced_config = original_config;
    reduced_config.value_head_dim = PAIR_HEAD;
    snprintf(reduced_config.layer_head_dims, sizeof reduced_config.layer_head_dims, "4,6");
    snprintf(reduced_config.layer_rope_pairs, sizeof reduced_config.layer_rope_pairs, "0,3;1-3");
    // Through the config text, as a checkpoint's /config carries it (validated there).
    char *text = config_to_text(&reduced_config);
    decon_config back;
    config_defaults(&back);
    config_load_text(&back, text, "test_layer_shapes (rope pairs)");
    config_validate(&back, "test_layer_shapes (rope pairs)");
    testing_report(strcmp(back.layer_rope_pairs, "0,3;1-3") == 0, "rope pairs: layer_rope_pairs survives the config text",
                   "read back '%s'", back.layer_rope_pairs);
    free(text);
    model original, reduced;
    test_model_setup(&original, &original_config, "original head 8", PAIR_BATCH, PAIR_LEN, 1401);
    test_model_setup(&reduced, &reduced_config, "reduced heads 4 {0,3}, 6 {1,2,3}", PAIR_BATCH, PAIR_LEN, 1402);
    zero_dropped(&original);
    copy_reduced(&original, &reduced);

    int rows = PAIR_BATCH * PAIR_LEN;
    int tokens[PAIR_BATCH * PAIR_LEN], targets[PAIR_BATCH * PAIR_LEN];
    test_model_batch(tokens, targets, rows, 0, PAIR_VOCAB, PAIR_VOCAB, 1403);
    size_t score_count = (size_t)PAIR_HEADS * PAIR_LEN * PAIR_LEN;
    float *want_scores = xcalloc((size_t)2 * PAIR_BATCH * score_count, sizeof(float));
    float *got_scores = xcalloc((size_t)2 * PAIR_BATCH * score_count, sizeof(float));
    float *want_logits = xcalloc((size_t)rows * PAIR_VOCAB, sizeof(float));
    float *got_logits = xcalloc((size_t)rows * PAIR_VOCAB, sizeof(float));
    model *models[2] = {&original, &reduced};
    float *scores[2] = {want_scores, got_scores}, *logits[2] = {want_logits, got_logits};
    for (int which = 0; which < 2; which++) {
        model *m = models[which];
        model_forward(m, tokens, PAIR_BATCH, PAIR_LEN);
        mixer_context context = model_mixer_context(m);
        for (int l = 0; l < 2; l++) {
            model_layer_context(m, l, &context);
            for (int b = 0; b < PAIR_BATCH; b++)
                m->plan[l]->attention_scores(&m->mixers[l], &context, b,
                                             scores[which] + (size_t)(l * PAIR_BATCH + b) * score_count);
        }
        eval_logits(m, 0, rows, logits[which]);
    }
    double largest, score_error = max_abs_difference(got_scores, want_scores, (size_t)2 * PAIR_BATCH * score_count, &largest);
    testing_report(score_error <= 1e-5 * largest,
                   "rope pairs: reduced heads (4 {0,3}, 6 {1,2,3}) score as the 8-wide heads with the other pairs zeroed",
                   "max |difference| %.3g of max |score| %.3g", score_error, largest);
    double logit_error = max_abs_difference(got_logits, want_logits, (size_t)rows * PAIR_VOCAB, &largest);
    testing_report(logit_error <= 1e-5 * largest, "rope pairs: the reduced model's logits equal the zeroed original's",
                   "max |difference| %.3g of max |logit| %.3g", logit_error, largest);

    double *params = xcalloc(original.registry.total, sizeof(double));
    for (size_t e = 0; e < original.registry.total; e++) params[e] = original.params[e];
    double reference = model_reference_loss(&original_config, &original.registry, params, tokens, targets,
                                            PAIR_BATCH, PAIR_LEN, NULL, NULL);
    model_forward(&reduced, tokens, PAIR_BATCH, PAIR_LEN);
    double loss = model_loss(&reduced, targets, NULL), loss_error = fabs(loss - reference) / fabs(reference);
    testing_report(loss_error < 1e-5, "rope pairs: the reduced model's loss equals the double reference of the zeroed original",
                   "%.8g vs %.8g (relative %.3g)", loss, reference, loss_error);
    free(params);

    // Cached decoding: prefill one token, then a step per position, against the full forward.
    decode_session *session = decode_create(&reduced, PAIR_BATCH, PAIR_LEN);
    float *step_logits = xcalloc((size_t)PAIR_BATCH * PAIR_VOCAB, sizeof(float));
    int sequences[PAIR_BATCH], lengths[PAIR_BATCH], step_tokens[PAIR_BATCH];
    const int *prompts[PAIR_BATCH];
    for (int b = 0; b < PAIR_BATCH; b++) sequences[b] = b, lengths[b] = 1, prompts[b] = tokens + (ptrdiff_t)b * PAIR_LEN;
    bool ok = decode_prefill(session, PAIR_BATCH, sequences, prompts, lengths, step_logits);
    double step_error = 0.0, decode_largest = 0.0;
    for (int position = 0; ok && position < PAIR_LEN; position++) {
        if (position > 0) {
            for (int b = 0; b < PAIR_BATCH; b++) step_tokens[b] = tokens[b * PAIR_LEN + position];
            ok = decode_step(session, step_tokens, step_logits);
        }
        for (int b = 0; ok && b < PAIR_BATCH; b++) {
            double l_largest, e = max_abs_difference(step_logits + (size_t)b * PAIR_VOCAB,
                                                     got_logits + (size_t)(b * PAIR_LEN + position) * PAIR_VOCAB,
                                                     PAIR_VOCAB, &l_largest);
            step_error = fmax(step_error, e);
            decode_largest = fmax(decode_largest, l_largest);
        }
    }
    testing_report(ok && step_error <= 1e-4 * decode_largest,
                   "rope pairs: cached decoding of the reduced model equals its full forward",
                   "%s max |difference| %.3g of max |logit| %.3g", ok ? "" : decode_error(session), step_error,
                   decode_largest);
    decode_free(session);
    free(step_logits), free(want_scores), free(got_scores), free(want_logits), free(got_logits);
    model_free(&original);
    model_free(&reduced);

    // Syntax: n groups of increasing pairs in [0, d_h/2).
    static const struct {
        const char *text, *reason;
    } BAD[] = {{"3,0;1-3", "must increase"}, {"0,0;1-3", "must increase"}, {"0,4;1-3", "outside 0..3"},
               {"0,3", "1 ';'-separated groups for 2 layers"}, {"0,3;1;2", "more than 2"}, {"0,,3;1", "expected"},
               {"0,3;3-1", "must increase"}};
    int pairs[4], count;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char reason[256] = "", name[160];
        bool refused = !config_parse_rope_pairs(BAD[i].text, 2, 0, pairs, 4, &count, reason, sizeof reason) &&
                       strstr(reason, BAD[i].reason) != NULL;
        snprintf(name, sizeof name, "layer_rope_pairs '%s' for 2 layers of head 8 is refused (%s)", BAD[i].text,
                 BAD[i].reason);
        testing_report(refused, name, "%s", reason);
    }
    bool parsed = config_parse_rope_pairs("0,3;;", 2, 0, pairs, 4, &count, NULL, 0) && count == 2 && pairs[0] == 0 &&
                  pairs[1] == 3 && config_parse_rope_pairs("0,3;;", 2, 1, pairs, 4, &count, NULL, 0) && count == 0;
    testing_report(parsed, "layer_rope_pairs '0,3;;': layer 1 keeps pairs 0 and 3, layer 2 the default", "count %d",
                   count);
}

int main(void) {
    ops_set_threads(1);  // tiny shapes: on shared cores extra OpenMP threads only wait (test_decode.c)
    check_value_config();
    check_value_shapes();
    check_value_gradients();
    check_layer_shapes();
    check_layer_gradients();
    check_rope_pairs();
    return testing_exit_code();
}
