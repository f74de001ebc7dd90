// Core pieces: counter RNG, sharding-independent initialisation, config round trip,
// LR schedule, gradient clipping, histogram quantiles.
#include <math.h>
#include <string.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/histogram.h"
#include "core/params.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "testing.h"
#include "train/optimizer.h"
#include "train/schedule.h"

static void test_rng(void) {
    int same = rng_mix(1, 2, 3) == rng_mix(1, 2, 3);
    int differs = rng_mix(1, 2, 3) != rng_mix(1, 2, 4) && rng_mix(1, 2, 3) != rng_mix(1, 3, 3) &&
                  rng_mix(1, 2, 3) != rng_mix(2, 2, 3);
    testing_report(same && differs, "rng: pure function of (seed, stream, index)", "same=%d differs=%d", same, differs);
    double mean = 0, var = 0;
    enum { N = 200000 };
    for (int i = 0; i < N; i++) {
        double x = rng_normal(7, 11, (uint64_t)i);
        mean += x;
        var += x * x;
    }
    mean /= N;
    var = var / N - mean * mean;
    testing_report(fabs(mean) < 0.01 && fabs(var - 1.0) < 0.02, "rng: normal has mean 0, variance 1",
                   "mean %g var %g", mean, var);
}

// A tensor initialised on 2 tensor-parallel shards equals the slices of the same tensor
// initialised unsharded: initial values never depend on the decomposition.
static void test_sharding_independent_init(void) {
    param_registry whole;
    params_init(&whole, 0, 1);
    params_add(&whole, "a.rows", "mixer", 0, 6, 4, SHARD_ROWS, INIT_NORMAL, 0.5f, true);
    params_add(&whole, "a.cols", "mixer", 0, 4, 6, SHARD_COLS, INIT_NORMAL, 0.5f, true);
    params_add(&whole, "a.norm", "norm", 0, 5, 0, SHARD_NONE, INIT_ONES, 0, false);
    float *full = xaligned_alloc(whole.total * sizeof(float));
    params_initialize(&whole, full, 99);
    int ok = 1;
    for (int rank = 0; rank < 2; rank++) {
        param_registry part;
        params_init(&part, rank, 2);
        params_add(&part, "a.rows", "mixer", 0, 6, 4, SHARD_ROWS, INIT_NORMAL, 0.5f, true);
        params_add(&part, "a.cols", "mixer", 0, 4, 6, SHARD_COLS, INIT_NORMAL, 0.5f, true);
        params_add(&part, "a.norm", "norm", 0, 5, 0, SHARD_NONE, INIT_ONES, 0, false);
        float *slice = xaligned_alloc(part.total * sizeof(float));
        params_initialize(&part, slice, 99);
        for (int t = 0; t < part.count; t++) {
            const param_info *p = &part.items[t];
            float *expected = xmalloc(p->local_count * sizeof(float));
            params_logical_to_slice(p, full + whole.items[t].offset, expected);
            ok &= memcmp(expected, slice + p->offset, p->local_count * sizeof(float)) == 0;
            free(expected);
        }
        free(slice);
        params_free(&part);
    }
    testing_report(ok, "params: initial values are the same on 1 and 2 tensor-parallel shards", "slices differ");
    free(full);
    params_free(&whole);
}

static void test_config_round_trip(void) {
    decon_config a, b;
    config_defaults(&a);
    const char *required[] = {"model.hidden_size=64", "model.intermediate_size=96", "model.num_hidden_layers=2",
                              "model.num_attention_heads=4", "model.vocab_size=100"};
    for (int i = 0; i < 5; i++) config_set(&a, required[i], "test");
    config_set(&a, "train.learning_rate=1.25e-3", "test");
    config_set(&a, "attention.layout=hybrid:top", "test");
    config_set(&a, "model.attention_bias=false", "test");
    char *text = config_to_text(&a);
    config_defaults(&b);
    config_load_text(&b, text, "round trip");
    const char *key = NULL;
    int same = config_same_model(&a, &b, &key) && a.learning_rate == b.learning_rate && !b.attention_bias;
    testing_report(same, "config: resolved text parses back to the same config", "differs at %s", key ? key : "train");
    free(text);
}

static void test_schedule(void) {
    decon_config c;
    config_defaults(&c);
    c.learning_rate = 1.0;
    c.warmup_steps = 10;
    c.max_steps = 110;
    c.cosine_cycles = 0.5;
    c.min_learning_rate_ratio = 0.1;
    double first = schedule_learning_rate(&c, 0), peak = schedule_learning_rate(&c, 10);
    double middle = schedule_learning_rate(&c, 60), end = schedule_learning_rate(&c, 110);
    int ok = fabs(first - 0.1) < 1e-12 && fabs(peak - 1.0) < 1e-12 && fabs(middle - 0.55) < 1e-12 &&
             fabs(end - 0.1) < 1e-12;
    testing_report(ok, "schedule: warm-up (step+1)/warmup, half cosine to the floor", "%g %g %g %g", first, peak,
                   middle, end);
}

// Clipping: with grad_clip c and norm n > c, the update equals AdamW on grads * c/n.
static void test_clipping(void) {
    decon_config c;
    config_defaults(&c);
    c.grad_clip = 1.0;
    c.weight_decay = 0.0;
    param_registry r;
    params_init(&r, 0, 1);
    params_add(&r, "w", "mlp", 0, 3, 0, SHARD_NONE, INIT_ZEROS, 0, true);
    float params[16] = {0}, grads[16] = {3.0f, 4.0f, 0.0f};
    double norm = gradient_global_norm(grads, r.total);
    adamw_state state;
    optimizer_allocate(&state, &r);
    optimizer_step(&state, &r, params, grads, &c, 0.1, norm, 1);
    // After one step m/(1-b1) = g_clipped, v/(1-b2) = g_clipped^2: update = lr * sign(g).
    int ok = fabs(norm - 5.0) < 1e-12 && fabsf(state.m[0] - 0.1f * 0.6f) < 1e-6f && fabsf(state.m[1] - 0.1f * 0.8f) < 1e-6f &&
             fabsf(params[0] + 0.1f) < 1e-6f;
    testing_report(ok, "optimizer: global-norm clipping scales the gradient before AdamW", "norm %g m0 %g p0 %g", norm,
                   state.m[0], params[0]);
    optimizer_free(&state);
    params_free(&r);
}

// The one quantile rule (core/histogram.h), on hand-computed cases: interpolation inside a
// bin, open bins with and without known bounds, a bound inside an inner bin, empty bins
// skipped, an empty histogram.
static void test_histogram_quantile(void) {
    const double edges[5] = {-INFINITY, -1.0, 0.0, 1.0, INFINITY}, counts[4] = {1, 2, 3, 4};
    const double sparse[4] = {0, 5, 0, 5}, empty[4] = {0, 0, 0, 0};
    struct {
        const char *what;
        const double *counts;
        double q, min, max, want;
    } cases[] = {
        {"inner bin", counts, 0.2, -3.0, 5.0, -0.5},
        {"open low bin bounded by min", counts, 0.05, -3.0, 5.0, -2.0},
        {"open low bin, min unknown: its finite edge", counts, 0.05, -INFINITY, INFINITY, -1.0},
        {"open high bin bounded by max", counts, 0.95, -3.0, 5.0, 4.5},
        {"open high bin, max unknown: its finite edge", counts, 0.95, -INFINITY, INFINITY, 1.0},
        {"min inside an inner bin clips it", counts, 0.2, -0.5, 5.0, -0.25},
        {"NaN bounds count as unknown", counts, 0.95, NAN, NAN, 1.0},
        {"empty bins skipped", sparse, 0.5, -3.0, 5.0, 0.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double got = histogram_quantile(cases[i].counts, edges, 4, cases[i].q, cases[i].min, cases[i].max);
        char name[128];
        snprintf(name, sizeof name, "histogram_quantile: %s", cases[i].what);
        testing_report(fabs(got - cases[i].want) < 1e-12, name, "got %.17g, want %.17g", got, cases[i].want);
    }
    double none = histogram_quantile(empty, edges, 4, 0.5, -1.0, 1.0);
    testing_report(isnan(none), "histogram_quantile: empty histogram is NaN", "got %g", none);
}

int main(void) {
    test_histogram_quantile();
    test_rng();
    test_sharding_independent_init();
    test_config_round_trip();
    test_schedule();
    test_clipping();
    return testing_exit_code();
}
