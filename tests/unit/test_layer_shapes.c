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
//  g. config_layer resolves each layer, config_parse_layer_sizes refuses a wrong length.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testing.h"
#include "support/model_test_helpers.h"
#include "core/config.h"
#include "core/params.h"
#include "mixers/mixer.h"
#include "model/model.h"
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

int main(void) {
    ops_set_threads(1);  // tiny shapes: on shared cores extra OpenMP threads only wait (test_decode.c)
    check_value_config();
    check_value_shapes();
    check_value_gradients();
    check_layer_shapes();
    check_layer_gradients();
    return testing_exit_code();
}
