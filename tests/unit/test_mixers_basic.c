// The mixers mlp, nonapx, mhe-add and mhe-mul (DESIGN.md 5):
//  a. the double reference's hand-written backward against finite differences;
//  b. the fp32 model against the reference, loss and every gradient, each mixer alone
//     (uniform, 1 layer) and in 2-layer models (uniform and hybrid:even), MHA and GQA;
//  c. nonapx: the linear-time form against its quadratic form (attention_matrix) for the
//     outputs, at L = 1 and odd lengths and with huge scores, and its gradients against
//     the quadratic reference at the same lengths;
//  d. parameter counts: nonapx equals standard exactly and mlp is the nearest integer
//     width, for every preset in input/models/ (and its GQA/MQA/bias variants), and every
//     mixer's analytic count equals what it registers;
//  e. the companion study's BERT-base figures: MHE 8.88M vs MHA 28.32M.
#include <dirent.h>
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
#include "mixers/mixer.h"
#include "model/model.h"

static const char *const MIXERS[] = {"mlp", "nonapx", "mhe-add", "mhe-mul"};
enum { MIXER_COUNT = sizeof MIXERS / sizeof MIXERS[0] };

// ---- a, b. the reference backward against finite differences and the fp32 model against
// the reference: tests/support/model_test_helpers.c, called from main ---------------------

// ---- c. nonapx: the linear-time output against the quadratic form ---------------------

static const float *tensor_of(const model *m, const char *name) {
    int index = params_find(&m->registry, name);
    return index < 0 ? NULL : m->params + m->registry.items[index].offset;
}

// Runs the mixer of layer 0 on input_scale * N(0,1) rows, materialises A of every sequence
// with attention_matrix, and compares the output with concat_j(A_j V_g(j)) Wo^T computed
// in double from those matrices. Also checks that A is causal with rows summing to 1.
static void check_nonapx_quadratic(const char *label, const decon_config *c, int batch, int seq_len,
                                   double input_scale, uint64_t seed) {
    model m;
    test_model_setup(&m, c, label, batch, seq_len, seed);
    m.batch = batch;
    m.seq_len = seq_len;
    mixer_context x = model_mixer_context(&m);
    mixer_layer *layer = &m.mixers[0];
    int d = c->hidden_size, heads = c->num_attention_heads, dh = d / heads;
    int kv_heads = c->num_key_value_heads ? c->num_key_value_heads : heads, group = heads / kv_heads;
    int rows = batch * seq_len, kv_dim = kv_heads * dh;
    float *inp = xcalloc((size_t)rows * d, sizeof(float)), *out = xcalloc((size_t)rows * d, sizeof(float));
    float *probs = xcalloc((size_t)heads * seq_len * seq_len, sizeof(float));
    double *v = xcalloc((size_t)rows * kv_dim, sizeof(double)), *av = xcalloc((size_t)rows * d, sizeof(double));
    double *expected = xcalloc((size_t)rows * d, sizeof(double));
    for (size_t e = 0; e < (size_t)rows * d; e++) inp[e] = (float)(input_scale * rng_normal(seed, 9, e));
    layer->kind->forward(layer, &x, out, inp);

    const float *wv = tensor_of(&m, "layers.0.mixer.wv"), *bv = tensor_of(&m, "layers.0.mixer.bv");
    const float *wo = tensor_of(&m, "layers.0.mixer.wo");
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < kv_dim; o++) {
            double sum = bv ? bv[o] : 0.0;
            for (int i = 0; i < d; i++) sum += (double)inp[(size_t)r * d + i] * wv[(size_t)o * d + i];
            v[(size_t)r * kv_dim + o] = sum;
        }
    double worst_row_sum = 0.0;
    bool causal = true, finite = true;
    for (int b = 0; b < batch; b++) {
        layer->kind->attention_matrix(layer, &x, b, probs);
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq_len; i++) {
                const float *p = probs + ((size_t)h * seq_len + i) * seq_len;
                double row_sum = 0.0;
                for (int t = 0; t < seq_len; t++) {
                    finite &= isfinite(p[t]) != 0;
                    if (t > i) causal &= p[t] == 0.0f;
                    else row_sum += p[t];
                }
                worst_row_sum = fmax(worst_row_sum, fabs(row_sum - 1.0));
                double *ai = av + ((size_t)b * seq_len + i) * d + (size_t)h * dh;
                for (int t = 0; t <= i; t++)
                    for (int e = 0; e < dh; e++)
                        ai[e] += p[t] * v[((size_t)b * seq_len + t) * kv_dim + (size_t)(h / group) * dh + e];
            }
    }
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < d; o++) {
            double sum = 0.0;
            for (int i = 0; i < d; i++) sum += av[(size_t)r * d + i] * wo[(size_t)o * d + i];
            expected[(size_t)r * d + o] = sum;
        }
    double err = testing_relative_error_f(out, expected, (size_t)rows * d);
    printf("# nonapx linear vs quadratic (%s): output rel %.3g, worst |row sum - 1| %.3g\n", label, err,
           worst_row_sum);
    char name[512];
    snprintf(name, sizeof name, "nonapx: linear-time output == quadratic form A V Wo (%s)", label);
    testing_report(err < 2e-5, name, "norm-wise relative error %.3g", err);
    snprintf(name, sizeof name, "nonapx: attention_matrix causal, finite, rows sum to 1 (%s)", label);
    testing_report(causal && finite && worst_row_sum < 1e-5, name, "causal %d, finite %d, worst |row sum - 1| %.3g",
                   causal, finite, worst_row_sum);
    free(inp);
    free(out);
    free(probs);
    free(v);
    free(av);
    free(expected);
    model_free(&m);
}

// ---- d. parameter counts ----------------------------------------------------------------

// One preset shape: nonapx == standard; mlp the nearest width (|diff| <= 3d/2, so within
// one width unit 3d); every mixer's analytic count == what it registers.
static bool check_counts(const char *label, const decon_config *c, char *why, size_t why_size) {
    int64_t d = c->hidden_size, standard = mixer_standard()->param_count(c);
    int64_t mlp = mixer_find("mlp")->param_count(c), nonapx = mixer_find("nonapx")->param_count(c);
    int64_t width = mlp / (3 * d), diff = mlp - standard;
    int64_t below = 3 * d * (width - 1) - standard, above = 3 * d * (width + 1) - standard;
    printf("# %s: standard %lld, nonapx %lld, mlp width %lld -> %lld (%+lld, %s), mhe %lld\n", label,
           (long long)standard, (long long)nonapx, (long long)width, (long long)mlp, (long long)diff,
           diff > 0 ? "rounded up" : diff < 0 ? "rounded down" : "exact",
           (long long)mixer_find("mhe-add")->param_count(c));
    if (nonapx != standard) {
        snprintf(why, why_size, "%s: nonapx %lld != standard %lld", label, (long long)nonapx, (long long)standard);
        return false;
    }
    if (mlp % (3 * d) || 2 * llabs(diff) > 3 * d || llabs(below) < llabs(diff) || llabs(above) < llabs(diff)) {
        snprintf(why, why_size, "%s: mlp %lld (width %lld) is not the nearest width to standard %lld", label,
                 (long long)mlp, (long long)width, (long long)standard);
        return false;
    }
    static const char *const all[] = {"standard", "mlp", "nonapx", "mhe-add", "mhe-mul"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        int64_t analytic = mixer_find(all[i])->param_count(c), registered = test_registered_mixer_params(c, all[i]);
        if (analytic != registered) {
            snprintf(why, why_size, "%s: %s counts %lld but registers %lld", label, all[i], (long long)analytic,
                     (long long)registered);
            return false;
        }
    }
    return true;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void check_preset_counts(void) {
    const char *dir_name = "input/models";
    DIR *dir = opendir(dir_name);
    if (!dir) {
        testing_report(0, "parameter counts of every preset", "cannot open %s (run from the repository root)",
                       dir_name);
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) && n < 64) {
        size_t len = strlen(entry->d_name);
        if (len > 4 && strcmp(entry->d_name + len - 4, ".ini") == 0) names[n++] = xstrdup(entry->d_name);
    }
    closedir(dir);
    qsort((void *)names, (size_t)n, sizeof names[0], compare_names);
    for (int i = 0; i < n; i++) {
        char path[512], label[256], why[512] = "";
        snprintf(path, sizeof path, "%s/%s", dir_name, names[i]);
        decon_config c;
        config_defaults(&c);
        config_load(&c, path);
        int heads = c.num_attention_heads;
        bool ok = true;
        // The preset as shipped, then with attention_bias flipped, GQA (kv = heads/2) and MQA.
        for (int variant = 0; variant < 4 && ok; variant++) {
            decon_config v = c;
            const char *what = "as shipped";
            if (variant == 1) {
                v.attention_bias = !c.attention_bias;
                what = v.attention_bias ? "bias" : "no bias";
            } else if (variant == 2) {
                if (heads % 2) continue;
                v.num_key_value_heads = heads / 2;
                what = "GQA kv=h/2";
            } else if (variant == 3) {
                v.num_key_value_heads = 1;
                what = "MQA";
            }
            snprintf(label, sizeof label, "%s, %s", names[i], what);
            ok = check_counts(label, &v, why, sizeof why);
        }
        snprintf(label, sizeof label, "parameter counts: nonapx == standard, mlp nearest width, registered == "
                                      "analytic (%s)", names[i]);
        testing_report(ok, label, "%s", why);
        free(names[i]);
    }
    testing_report(n >= 1, "parameter counts: presets found in input/models", "no *.ini in %s", dir_name);
}

// ---- e. the companion study's BERT-base figures ------------------------------------------

// d = 768, 12 heads, 12 layers, attention projections only, no Q/K/V biases, plus the one
// output bias of d per layer that the study counts (decon's Wo has none).
static void check_bert_base_counts(void) {
    decon_config c;
    test_model_config(&c, "standard", "uniform", 768, 12, 12, 12, 3072, 30522, true, false, 100.0);
    int64_t per_layer_bias = c.hidden_size;
    int64_t mha = c.num_hidden_layers * (mixer_standard()->param_count(&c) + per_layer_bias);
    int64_t mhe_add = c.num_hidden_layers * (mixer_find("mhe-add")->param_count(&c) + per_layer_bias);
    int64_t mhe_mul = c.num_hidden_layers * (mixer_find("mhe-mul")->param_count(&c) + per_layer_bias);
    double mha_m = round((double)mha / 1e4) / 100.0, mhe_m = round((double)mhe_add / 1e4) / 100.0;
    printf("# BERT-base attention: MHA %lld (%.2fM), MHE %lld (%.2fM)\n", (long long)mha, mha_m, (long long)mhe_add,
           mhe_m);
    testing_report(mha == 28320768 && fabs(mha_m - 28.32) < 1e-9, "BERT-base count: MHA 28.32M",
                   "%lld (%.2fM)", (long long)mha, mha_m);
    testing_report(mhe_add == 8884224 && mhe_mul == mhe_add && fabs(mhe_m - 8.88) < 1e-9,
                   "BERT-base count: MHE (add and mul) 8.88M", "add %lld, mul %lld (%.2fM)", (long long)mhe_add,
                   (long long)mhe_mul, mhe_m);
}

// The other analytic counts: FLOPs and cache sizes as docs/design.md states them.
static void check_other_counts(void) {
    decon_config c;
    test_model_config(&c, "standard", "uniform", 64, 2, 4, 2, 96, 50, true, true, 100.0);
    const mixer_kind *mlp = mixer_find("mlp"), *nonapx = mixer_find("nonapx"), *mhe = mixer_find("mhe-mul");
    bool ok = mlp->forward_flops_per_token(&c, 7) == 2.0 * (double)mlp->param_count(&c) &&
              mlp->forward_flops_per_token(&c, 7) == mlp->forward_flops_per_token(&c, 4096) &&
              nonapx->forward_flops_per_token(&c, 7) == nonapx->forward_flops_per_token(&c, 4096) &&
              nonapx->forward_flops_per_token(&c, 7) <
                  mixer_standard()->forward_flops_per_token(&c, 7) &&
              mhe->forward_flops_per_token(&c, 100) > mhe->forward_flops_per_token(&c, 10) &&
              mlp->cache_floats_per_token(&c) == 0 && nonapx->cache_floats_per_token(&c) == 0 &&
              mhe->cache_floats_per_token(&c) == (int64_t)2 * 16 && mlp->attention_matrix == NULL &&
              nonapx->attention_matrix && mhe->attention_matrix;
    testing_report(ok, "analytic FLOP and cache counts (mlp, nonapx: independent of L; mhe cache 2 d_h)", "mismatch");
}

int main(void) {
    char label[256];
    decon_config c;

    for (int i = 0; i < MIXER_COUNT; i++) {
        const char *mixer = MIXERS[i];
        // a. d=16, 4 heads, vocab 11, batch 2 x seq 5 (1 layer) / 2 x 4 (2 layers, hybrid:even).
        test_model_config(&c, mixer, "uniform", 16, 1, 4, 4, 8, 11, true, true, 100.0);
        snprintf(label, sizeof label, "%s, 1 layer, tied, bias, MHA", mixer);
        test_check_reference_gradient(label, &c, 2, 5, 1e-3, 0.0, 100 + (uint64_t)i);
        test_model_config(&c, mixer, "hybrid:even", 16, 2, 4, 2, 8, 11, false, false, 100.0);
        snprintf(label, sizeof label, "%s, 2 layers hybrid:even, untied, no bias, GQA kv=2", mixer);
        test_check_reference_gradient(label, &c, 2, 4, 1e-3, 0.0, 110 + (uint64_t)i);

        // b. alone (uniform, 1 layer), then inside 2-layer models.
        test_model_config(&c, mixer, "uniform", 32, 1, 4, 4, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "%s alone, MHA, bias, 2x9", mixer);
        test_compare_with_reference(label, &c, 2, 9, 0, 200 + (uint64_t)i);
        test_model_config(&c, mixer, "uniform", 32, 1, 4, 2, 48, 41, false, false, 100.0);
        snprintf(label, sizeof label, "%s alone, GQA kv=2, no bias, 3x17 (spare)", mixer);
        test_compare_with_reference(label, &c, 3, 17, 3, 210 + (uint64_t)i);
        test_model_config(&c, mixer, "uniform", 32, 2, 4, 2, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "%s, 2 layers uniform, GQA kv=2, bias, 2x13", mixer);
        test_compare_with_reference(label, &c, 2, 13, 0, 220 + (uint64_t)i);
        test_model_config(&c, mixer, "hybrid:even", 32, 2, 4, 4, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "%s, 2 layers hybrid:even, MHA, bias, 2x13", mixer);
        test_compare_with_reference(label, &c, 2, 13, 0, 230 + (uint64_t)i);
    }

    // c. nonapx: linear vs quadratic outputs, and gradients (linear backward) against the
    // quadratic reference, at L = 1, odd lengths and lengths crossing powers of two.
    static const int lengths[] = {1, 2, 3, 7, 31, 64, 65, 129};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        int L = lengths[i];
        test_model_config(&c, "nonapx", "uniform", 32, 1, 4, 2, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "GQA kv=2, 3 x L=%d", L);
        check_nonapx_quadratic(label, &c, 3, L, 1.0, 300 + (uint64_t)L);
        test_model_config(&c, "nonapx", "uniform", 32, 1, 4, 2, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "nonapx linear backward vs quadratic reference, GQA kv=2, 2 x L=%d", L);
        test_compare_with_reference(label, &c, 2, L, 0, 400 + (uint64_t)L);
    }
    test_model_config(&c, "nonapx", "uniform", 32, 1, 4, 4, 48, 41, true, true, 100.0);
    check_nonapx_quadratic("MHA, inputs x 30 (scores in the hundreds), 2 x L=77", &c, 2, 77, 30.0, 500);

    // d, e.
    check_preset_counts();
    check_bert_base_counts();
    check_other_counts();
    return testing_exit_code();
}
