// Figures for the token mixers (never pass/fail): forward + backward time of one mixer
// layer (d = 256, 4 heads, d_h = 64, Q/K/V bias) through the mixer interface, against the
// sequence length at a fixed number of tokens per step (batch = tokens / L), for every
// registered mixer. Printed per length: ms per step, ms per token, the analytic training
// FLOPs per token (3 x forward_flops_per_token, the trainer's convention), the achieved
// GFLOP/s on them, and how time per token and analytic FLOPs per token grow relative to
// the shortest length (linear-time mixers: ~1; standard: its attention part grows ~L).
// Per mixer: activation floats saved for backward per token (saved_floats / tokens) and
// inference cache floats per token (for the linear-time mixers the constant recurrent
// state of a sequence, not per token).
// Usage: bench_mixers [threads] [tokens] [max_len]   (defaults 2, 8192, 8192)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "mixers/mixer.h"
#include "ops/ops.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fill(float *x, size_t count, float amplitude, unsigned seed) {
    for (size_t i = 0; i < count; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = amplitude * ((float)(seed >> 8) / 8388608.0f - 1.0f);
    }
}

// Every variant the project knows of; the ones not registered in this build are skipped.
static const char *const NAMES[] = {"standard", "mlp",     "nonapx",  "approx",     "approx-diag", "rndembqk",
                                    "fixedseqqk", "staticembqk", "mhe-add", "mhe-mul"};

typedef struct {
    double seconds, flops_per_token;
} measurement;

static const double TIME_CAP = 4.0;  // seconds per step beyond which a mixer's sweep stops

// One layer of `kind` at batch x seq_len: forward+backward after a warm-up, best of two
// runs (one when a run takes over a second).
static measurement run_one(const mixer_kind *kind, const decon_config *c, int batch, int seq_len) {
    int d = c->hidden_size, dh = config_head_dim(c);
    size_t rows = (size_t)batch * seq_len;
    param_registry registry;
    params_init(&registry, 0, 1);
    mixer_layer layer;
    memset(&layer, 0, sizeof layer);
    layer.kind = kind;
    layer.layer = 0;
    kind->register_params(&layer, &registry, c);
    float *params = xaligned_alloc(registry.total * sizeof(float));
    float *grads = xaligned_alloc(registry.total * sizeof(float));
    params_initialize(&registry, params, 1234);

    arena activations = {0}, scratch = {0};
    arena_reserve(&activations, (kind->saved_floats(c, batch, seq_len) + (size_t)64 * 16) * sizeof(float));
    arena_reserve(&scratch, (kind->scratch_floats(c, batch, seq_len) + (size_t)64 * 16) * sizeof(float));
    kind->bind_saved(&layer, &activations, c, batch, seq_len);
    float *rope_cos = xaligned_alloc((size_t)seq_len * (dh / 2) * sizeof(float));
    float *rope_sin = xaligned_alloc((size_t)seq_len * (dh / 2) * sizeof(float));
    rope_tables(rope_cos, rope_sin, seq_len, dh, (float)c->rope_theta);
    float *inp = xaligned_alloc(rows * d * sizeof(float)), *out = xaligned_alloc(rows * d * sizeof(float));
    float *d_out = xaligned_alloc(rows * d * sizeof(float)), *d_inp = xaligned_alloc(rows * d * sizeof(float));
    float *d_normed_embeddings = xaligned_alloc(rows * d * sizeof(float));
    fill(inp, rows * d, 1.0f, 7);
    fill(d_out, rows * d, 1e-2f, 8);
    mixer_context context = {
        .config = c,
        .registry = &registry,
        .params = params,
        .grads = grads,
        .rope_cos = rope_cos,
        .rope_sin = rope_sin,
        .scratch = &scratch,
        .batch = batch,
        .seq_len = seq_len,
        .fixed_sequence = kind->uses_fixed_stream ? batch - 1 : -1,
        .normed_embeddings = inp,
        .d_normed_embeddings = d_normed_embeddings,
    };
    measurement m = {INFINITY, kind->forward_flops_per_token(c, seq_len)};
    for (int rep = 0; rep <= 2; rep++) {  // rep 0 is the warm-up
        double t0 = now();
        kind->forward(&layer, &context, out, inp);
        kind->backward(&layer, &context, d_inp, d_out, inp);
        double dt = now() - t0;
        if (rep > 0 && dt < m.seconds) m.seconds = dt;
        if (rep > 0 && dt > 1.0) break;
    }
    free(params), free(grads), free(rope_cos), free(rope_sin), free(inp), free(out), free(d_out), free(d_inp);
    free(d_normed_embeddings);
    arena_free(&activations);
    arena_free(&scratch);
    params_free(&registry);
    return m;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int tokens = argc > 2 ? atoi(argv[2]) : 8192;
    int max_len = argc > 3 ? atoi(argv[3]) : 8192;
    if (threads < 1 || tokens < 256 || max_len < 256) {
        fprintf(stderr, "usage: bench_mixers [threads >= 1] [tokens >= 256] [max_len >= 256]\n");
        return 2;
    }
    ops_set_threads(threads);
    decon_config c;
    config_defaults(&c);
    c.hidden_size = 256;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 4;
    c.num_hidden_layers = 1;
    c.intermediate_size = 1024;
    c.attention_bias = true;
    printf("one mixer layer, d=%d, %d heads (d_h=%d), bias; %d tokens per step; %d threads; forward+backward, "
           "best of 2 after a warm-up\n",
           c.hidden_size, c.num_attention_heads, config_head_dim(&c), tokens, threads);
    double start = now();
    for (size_t n = 0; n < sizeof NAMES / sizeof NAMES[0]; n++) {
        const mixer_kind *kind = mixer_find(NAMES[n]);
        if (kind == NULL) {
            printf("%s: not registered in this build, skipped\n", NAMES[n]);
            continue;
        }
        snprintf(c.variant, sizeof c.variant, "%s", NAMES[n]);
        double saved = (double)kind->saved_floats(&c, tokens / 256, 256) / tokens;
        printf("== %s: %lld params/layer, saved activations %.0f floats/token, inference cache %lld floats/token, "
               "recurrent state %lld floats/sequence\n",
               kind->name, (long long)kind->param_count(&c), saved, (long long)kind->cache_floats_per_token(&c),
               (long long)(kind->state_floats ? kind->state_floats(&c) : 0));
        printf("  %6s %6s %10s %10s %12s %8s %14s %14s\n", "L", "batch", "ms", "ms/token", "MFLOP/token", "GFLOP/s",
               "time/tok xL0", "FLOP/tok xL0");
        double base_time = 0.0, base_flops = 0.0;
        for (int L = 256; L <= max_len && L <= tokens; L *= 2) {
            int batch = tokens / L;
            measurement m = run_one(kind, &c, batch, L);
            double per_token = m.seconds / ((double)batch * L), train_flops = 3.0 * m.flops_per_token;
            if (L == 256) base_time = per_token, base_flops = train_flops;
            printf("  %6d %6d %10.2f %10.5f %12.3f %8.1f %14.2f %14.2f\n", L, batch, m.seconds * 1e3, per_token * 1e3,
                   train_flops * 1e-6, train_flops / per_token * 1e-9, per_token / base_time, train_flops / base_flops);
            if (m.seconds > TIME_CAP && L * 2 <= max_len && L * 2 <= tokens) {  // keeps the whole run short
                printf("  (longer lengths skipped: %.1f s per step > %.0f s)\n", m.seconds, TIME_CAP);
                break;
            }
        }
    }
    printf("total %.1f s\n", now() - start);
    return 0;
}
