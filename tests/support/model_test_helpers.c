#include "support/model_test_helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/rng.h"
#include "reference/model_reference.h"
#include "testing.h"

void test_model_config(decon_config *c, const char *variant, const char *layout, int d, int layers, int heads,
                       int kv_heads, int inter, int vocab, bool tied, bool bias, double rope_theta) {
    config_defaults(c);
    if (variant) snprintf(c->variant, sizeof c->variant, "%s", variant);
    if (layout) snprintf(c->layout, sizeof c->layout, "%s", layout);
    c->hidden_size = d;
    c->num_hidden_layers = layers;
    c->num_attention_heads = heads;
    c->num_key_value_heads = kv_heads;
    c->intermediate_size = inter;
    c->vocab_size = vocab;
    c->tie_word_embeddings = tied;
    c->attention_bias = bias;
    c->rope_theta = rope_theta;
}

void test_model_batch(int *tokens, int *targets, int rows, int low, int high, int vocab, uint64_t seed) {
    for (int r = 0; r < rows; r++) {
        tokens[r] = low + (int)(rng_mix(seed, 1, (uint64_t)r) % (uint64_t)(high - low));
        if (targets) targets[r] = r % 7 == 3 ? -1 : (int)(rng_mix(seed, 2, (uint64_t)r) % (uint64_t)vocab);
    }
}

static bool is_bias(const param_info *p) { return p->ndim == 1 && p->init == INIT_ZEROS; }
static bool is_norm(const param_info *p) { return p->ndim == 1 && p->init == INIT_ONES; }

void test_params_randomize(const param_registry *registry, double *params, uint64_t seed) {
    memset(params, 0, registry->total * sizeof(double));
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        uint64_t stream = rng_hash_string(p->name);
        for (size_t e = 0; e < p->local_count; e++) {
            double z = rng_normal(seed, stream, e);
            params[p->offset + e] = is_norm(p) ? 1.0 + 0.3 * z : is_bias(p) ? 0.3 * z : z / sqrt((double)p->shape[1]);
        }
    }
}

void test_params_perturb(const param_registry *registry, float *params, uint64_t seed, const char *name_part) {
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        if (name_part && !strstr(p->name, name_part)) continue;
        uint64_t stream = rng_hash_string(p->name) ^ 0x5bd1e995u;
        for (size_t e = 0; e < p->local_count; e++) {
            double z = rng_normal(seed, stream, e);
            float *v = &params[p->offset + e];
            if (is_norm(p)) *v += (float)(0.2 * z);
            else if (is_bias(p)) *v = (float)(0.2 * z);
            else *v += (float)(0.5 * z / sqrt((double)p->shape[1]));
        }
    }
}

void test_model_setup(model *m, const decon_config *c, const char *label, int batch, int seq_len, uint64_t seed) {
    model_build(m, c, label);
    model_allocate(m, batch, seq_len);
    model_initialize(m, seed);
    test_params_perturb(&m->registry, m->params, seed + 1, NULL);
    if (m->fixed_stream_from_tokens) {  // t_s: any max_seq_len ids; tokens 10.. when the vocabulary allows
        int *fixed = xcalloc((size_t)seq_len, sizeof(int));
        int low = c->vocab_size > 20 ? 10 : 0;
        test_model_batch(fixed, NULL, seq_len, low, c->vocab_size, c->vocab_size, seed + 2);
        model_set_fixed_tokens(m, fixed);
        free(fixed);
    }
}

int64_t test_registered_mixer_params(const decon_config *base, const char *variant) {
    decon_config c = *base;
    snprintf(c.variant, sizeof c.variant, "%s", variant);
    snprintf(c.layout, sizeof c.layout, "uniform");
    model m;
    model_build(&m, &c, variant);
    int64_t count = 0;
    for (int i = 0; i < m.registry.count; i++) {
        const param_info *p = &m.registry.items[i];
        if (p->layer == 0 && strcmp(p->group, "mixer") == 0) count += params_logical_count(p);
    }
    model_free(&m);
    return count;
}

// The worst per-tensor norm-wise relative error (NaN counts as worst) of got (fp32 in
// got_f or double in got_d, the other NULL) against want, and its tensor.
static double worst_tensor(const param_registry *registry, const float *got_f, const double *got_d,
                           const double *want, const char **name) {
    double worst = 0.0;
    *name = "";
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        double err = got_f ? testing_relative_error_f(got_f + p->offset, want + p->offset, p->local_count)
                           : testing_relative_error_d(got_d + p->offset, want + p->offset, p->local_count);
        if (!(err <= worst)) {
            worst = err;
            *name = p->name;
        }
    }
    return worst;
}

void test_check_reference_gradient(const char *label, const decon_config *c, int batch, int seq_len, double h,
                                   double shared_qk_bias, uint64_t seed) {
    model m;
    model_build(&m, c, label);  // the registry only
    const param_registry *registry = &m.registry;
    size_t total = registry->total;
    int rows = batch * seq_len, d = c->hidden_size, dh = config_head_dim(c);
    double *params = xcalloc(total, sizeof(double)), *grads = xcalloc(total, sizeof(double));
    double *numeric = xcalloc(total, sizeof(double)), *fixed_input = NULL;
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    int *fixed_tokens = NULL;
    test_params_randomize(registry, params, seed);
    for (int i = 0; shared_qk_bias > 0.0 && i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        if (!strstr(p->name, ".mixer.bq") && !strstr(p->name, ".mixer.bk")) continue;
        for (size_t e = 0; e < p->local_count; e++)
            if ((int)(e % (size_t)dh) % (dh / 2) == dh / 2 - 1) params[p->offset + e] = shared_qk_bias;
    }
    test_model_batch(tokens, targets, rows, 0, c->vocab_size, c->vocab_size, seed);
    if (m.has_fixed_stream && m.fixed_stream_from_tokens) {
        fixed_tokens = xcalloc((size_t)seq_len, sizeof(int));
        test_model_batch(fixed_tokens, NULL, seq_len, 0, c->vocab_size, c->vocab_size, seed + 7);
    } else if (m.has_fixed_stream) {
        fixed_input = xcalloc((size_t)seq_len * d, sizeof(double));
        for (size_t e = 0; e < (size_t)seq_len * d; e++) fixed_input[e] = rng_normal(seed, 99, e);
    }
    model_reference_loss_fixed(c, registry, params, tokens, targets, batch, seq_len, fixed_input, fixed_tokens, NULL,
                               grads);
    // Fourth-order central differences: f'(x) ~ (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h.
    const double steps[4] = {-2 * h, -h, h, 2 * h}, weights[4] = {1, -8, 8, -1};
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        for (size_t e = 0; e < p->local_count; e++) {
            double *v = &params[p->offset + e], saved = *v, sum = 0.0;
            for (int s = 0; s < 4; s++) {
                *v = saved + steps[s];
                sum += weights[s] * model_reference_loss_fixed(c, registry, params, tokens, targets, batch, seq_len,
                                                               fixed_input, fixed_tokens, NULL, NULL);
            }
            *v = saved;
            numeric[p->offset + e] = sum / (12 * h);
        }
    }
    const char *worst_name;
    double worst = worst_tensor(registry, NULL, grads, numeric, &worst_name);
    double err = testing_relative_error_d(grads, numeric, total);
    printf("# %s: %lld parameters, relative error %.3g (worst tensor %s %.3g)\n", label,
           (long long)params_total_logical(registry), err, worst_name, worst);
    char name[512];
    snprintf(name, sizeof name, "reference backward vs finite differences (%s)", label);
    testing_report(err < 1e-8 && worst < 1e-8, name, "norm-wise relative error %.3g (worst tensor %s: %.3g)", err,
                   worst_name, worst);
    free(params), free(grads), free(numeric), free(fixed_input), free(fixed_tokens), free(tokens), free(targets);
    model_free(&m);
}

// The fixed stream's input for the reference, prefix of seq_len rows (NULL where unused).
static double *fixed_input_of(const model *m, int seq_len) {
    if (!m->has_fixed_stream || m->fixed_stream_from_tokens) return NULL;
    size_t count = (size_t)seq_len * (size_t)m->config.hidden_size;
    double *input = xcalloc(count, sizeof(double));
    for (size_t e = 0; e < count; e++) input[e] = m->fixed_input[e];
    return input;
}

void test_compare_model_with_reference(model *m, const char *label, int batch, int seq_len, uint64_t seed) {
    const decon_config *c = &m->config;
    const param_registry *registry = &m->registry;
    size_t total = registry->total;
    int rows = batch * seq_len;
    int *tokens = xcalloc((size_t)rows, sizeof(int)), *targets = xcalloc((size_t)rows, sizeof(int));
    test_model_batch(tokens, targets, rows, 0, c->vocab_size, c->vocab_size, seed);
    double *params = xcalloc(total, sizeof(double)), *grads = xcalloc(total, sizeof(double));
    for (size_t e = 0; e < total; e++) params[e] = m->params[e];
    double *fixed_input = fixed_input_of(m, seq_len);

    memset(m->grads, 0, total * sizeof(float));
    model_forward(m, tokens, batch, seq_len);
    double loss = model_backward(m, targets, 1.0f, NULL);
    double ref_loss = model_reference_loss_fixed(c, registry, params, tokens, targets, batch, seq_len, fixed_input,
                                                 m->fixed_stream_from_tokens ? m->fixed_tokens : NULL, NULL, grads);
    double loss_err = fabs(loss - ref_loss) / fabs(ref_loss);
    double grad_err = testing_relative_error_f(m->grads, grads, total);
    const char *worst_name;
    double worst = worst_tensor(registry, m->grads, NULL, grads, &worst_name);
    printf("# %s: loss %.6f (reference %.6f, rel %.3g), gradient rel %.3g, worst tensor %s %.3g\n", label, loss,
           ref_loss, loss_err, grad_err, worst_name, worst);
    char name[512];
    snprintf(name, sizeof name, "fp32 model vs reference: loss (%s)", label);
    testing_report(loss_err < 1e-5, name, "loss %.8g vs reference %.8g: relative error %.3g", loss, ref_loss, loss_err);
    snprintf(name, sizeof name, "fp32 model vs reference: gradient overall (%s)", label);
    testing_report(grad_err < 1e-4, name, "norm-wise relative error %.3g >= 1e-4 (worst tensor %s: %.3g)", grad_err,
                   worst_name, worst);
    snprintf(name, sizeof name, "fp32 model vs reference: gradient per tensor (%s)", label);
    testing_report(worst < 1e-4, name, "worst tensor %s: norm-wise relative error %.3g >= 1e-4", worst_name, worst);
    free(fixed_input), free(params), free(grads), free(tokens), free(targets);
}

void test_compare_with_reference(const char *label, const decon_config *c, int batch, int seq_len, int spare,
                                 uint64_t seed) {
    model m;
    test_model_setup(&m, c, label, batch + spare, seq_len + spare, seed);
    test_compare_model_with_reference(&m, label, batch, seq_len, seed);
    model_free(&m);
}

bool test_shape_is(const param_registry *r, const char *name, int64_t rows, int64_t cols, char *why, size_t size) {
    int index = params_find(r, name);
    if (index < 0) {
        snprintf(why, size, "%s is not registered", name);
        return false;
    }
    const param_info *p = &r->items[index];
    if (p->shape[0] != rows || p->shape[1] != cols) {
        snprintf(why, size, "%s is [%lld, %lld], expected [%lld, %lld]", name, (long long)p->shape[0],
                 (long long)p->shape[1], (long long)rows, (long long)cols);
        return false;
    }
    return true;
}
