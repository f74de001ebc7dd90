// Megatron tensor parallelism inside every mixer (DESIGN.md 7), in one process, no MPI:
// each mixer runs once on the whole registry (shard 0 of 1) and once per shard of a tp
// split (config.tensor_parallel = tp, the registry of shard r of tp), on the same input,
// output gradient and logical parameters. What the model's collectives would do is done
// here by hand, and every shard must agree with the whole layer:
//  - the sum over shards of the partial outputs is the full output (row-parallel Wo);
//  - the sum over shards of the d_inp shares is the full d_inp (and of staticembqk's
//    d_normed_embeddings shares the full d_normed_embeddings);
//  - a sharded tensor's gradient on a shard is the matching slice of the full gradient;
//    a grad_partial_over_tp tensor's gradients sum to the full one; any other replicated
//    tensor gets the full gradient on every shard;
//  - shard r's attention matrix and scores are heads [r*hl, (r+1)*hl) of the full ones;
//  - the analytic parameter count stays logical: it equals the shard registry's logical total.
//  - the split is real: each shard holds its share of the heads (mlp: of the width) and
//    fewer parameter floats than the whole layer, and its partial output alone is far
//    from the full output.
// Cases: every mixer at MHA (tp 2, 4) and GQA kv=2 (tp 2); mlp's width is 44 at MHA and
// 33 at GQA, which splits unevenly over 2 and (an extra case) over 4.
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testing.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "core/rng.h"
#include "mixers/mixer.h"
#include "ops/ops.h"

// The shards compute the same per-head math as the whole layer; only the order of the
// floating-point sums differs (Wo's and the input projections' reductions split over
// ranks, then added, and BLAS blocks narrower matrices differently), so fp32 results
// agree to rounding: measured at most 3e-7 (norm-wise) for outputs and input gradients,
// 1.2e-6 for the K/Q bias gradients, which nearly cancel (softmax ignores a shift of a
// row's scores). A wrong slice gives O(1) errors (a replicated Wo: 1.5; a missing
// grad_partial_over_tp: 1.3).
static const double TOLERANCE = 1e-5;

enum { HIDDEN = 32, HEADS = 4, SEQ_LEN = 9, BATCH = 2, MAX_TP = 4 };
static const uint64_t SEED = 20240613;

typedef struct {
    decon_config config;       // tensor_parallel = the shard count
    param_registry registry;
    mixer_layer layer;
    float *params, *grads;
    arena activations, scratch;
    float *out, *d_inp, *d_normed_embeddings;
    float *probs, *scores;     // [local_heads, L, L] of sequence 0, NULL when the mixer has none
} shard_run;

// The shared inputs of one case: the block input, the output gradient, staticembqk's E.
typedef struct {
    int batch, seq_len, fixed_sequence;
    float *inp, *d_out, *normed_embeddings;
    float *rope_cos, *rope_sin;
} case_inputs;

static void make_config(decon_config *c, const char *variant, int kv_heads, int tp) {
    config_defaults(c);
    snprintf(c->variant, sizeof c->variant, "%s", variant);
    c->hidden_size = HIDDEN;
    c->num_hidden_layers = 2;
    c->num_attention_heads = HEADS;
    c->num_key_value_heads = kv_heads;
    c->intermediate_size = 48;
    c->vocab_size = 64;
    c->attention_bias = true;
    c->rope_theta = 100.0;
    c->initializer_range = 0.2;  // scores of order 1: peaked maps, gradients far from zero
    c->tensor_parallel = tp;
}

static float *random_floats(size_t count, uint64_t stream, double std) {
    float *values = xaligned_alloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) values[i] = (float)(std * rng_normal(SEED, stream, i));
    return values;
}

static float *zero_floats(size_t count) {
    float *values = xaligned_alloc(count * sizeof(float));
    memset(values, 0, count * sizeof(float));
    return values;
}

// Zero-initialised tensors (the biases) get N(0, 0.3^2) values so that a wrong bias slice
// shows in the outputs; set per logical element, so every sharding sees the same values.
static void give_biases_values(const param_registry *registry, float *params) {
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        if (p->init != INIT_ZEROS) continue;
        int64_t n = params_logical_count(p);
        float *logical = xcalloc((size_t)n, sizeof(float));
        uint64_t stream = rng_hash_string(p->name);
        for (int64_t e = 0; e < n; e++) logical[e] = (float)(0.3 * rng_normal(SEED, stream, (uint64_t)e));
        params_logical_to_slice(p, logical, params + p->offset);
        free(logical);
    }
}

// Registers, initialises and runs the mixer as shard `rank` of `tp`: forward, backward,
// and the attention matrix and scores of sequence 0.
static void run_shard(shard_run *run, const mixer_kind *kind, const char *variant, int kv_heads, int rank, int tp,
                      const case_inputs *in) {
    memset(run, 0, sizeof *run);
    make_config(&run->config, variant, kv_heads, tp);
    const decon_config *c = &run->config;
    params_init(&run->registry, rank, tp);
    run->layer.kind = kind;
    run->layer.layer = 0;
    kind->register_params(&run->layer, &run->registry, c);
    run->params = zero_floats(run->registry.total);
    run->grads = zero_floats(run->registry.total);
    params_initialize(&run->registry, run->params, SEED);
    give_biases_values(&run->registry, run->params);

    size_t pad = (size_t)64 * 16;
    arena_reserve(&run->activations, (kind->saved_floats(c, in->batch, in->seq_len) + pad) * sizeof(float));
    arena_reserve(&run->scratch, (kind->scratch_floats(c, in->batch, in->seq_len) + pad) * sizeof(float));
    kind->bind_saved(&run->layer, &run->activations, c, in->batch, in->seq_len);

    size_t rd = (size_t)in->batch * (size_t)in->seq_len * HIDDEN;
    run->out = zero_floats(rd);
    run->d_inp = zero_floats(rd);
    run->d_normed_embeddings = zero_floats(rd);
    mixer_context x = {
        .config = c,
        .registry = &run->registry,
        .params = run->params,
        .grads = run->grads,
        .rope_cos = in->rope_cos,
        .rope_sin = in->rope_sin,
        .scratch = &run->scratch,
        .batch = in->batch,
        .seq_len = in->seq_len,
        .fixed_sequence = in->fixed_sequence,
        .normed_embeddings = in->normed_embeddings,
        .d_normed_embeddings = run->d_normed_embeddings,
    };
    kind->forward(&run->layer, &x, run->out, in->inp);
    kind->backward(&run->layer, &x, run->d_inp, in->d_out, in->inp);
    size_t map = (size_t)config_local_heads(c) * in->seq_len * in->seq_len;
    if (kind->attention_matrix) {
        run->probs = zero_floats(map);
        kind->attention_matrix(&run->layer, &x, 0, run->probs);
    }
    if (kind->attention_scores) {
        run->scores = zero_floats(map);
        kind->attention_scores(&run->layer, &x, 0, run->scores);
    }
}

static void free_run(shard_run *run) {
    free(run->params);
    free(run->grads);
    free(run->out);
    free(run->d_inp);
    free(run->d_normed_embeddings);
    free(run->probs);
    free(run->scores);
    arena_free(&run->activations);
    arena_free(&run->scratch);
    params_free(&run->registry);
}

// ||a - b|| / ||b|| with b the full run's values.
static double relative_error(const float *a, const float *b, size_t n) {
    double *reference = xcalloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) reference[i] = b[i];
    double error = testing_relative_error_f(a, reference, n);
    free(reference);
    return error;
}

typedef enum { OUT, D_INP, D_EMBEDDED } partial_buffer;

static const float *buffer_of(const shard_run *run, partial_buffer which) {
    return which == OUT ? run->out : which == D_INP ? run->d_inp : run->d_normed_embeddings;
}

// The sum over shards of one of their partial [rows, d] buffers, against the full run's.
static double relative_error_of_sum(const shard_run *shards, int tp, partial_buffer which, size_t n,
                                    const shard_run *full) {
    float *sum = zero_floats(n);
    for (int r = 0; r < tp; r++) {
        const float *part = buffer_of(&shards[r], which);
        for (size_t i = 0; i < n; i++) sum[i] += part[i];
    }
    double error = relative_error(sum, buffer_of(full, which), n);
    free(sum);
    return error;
}

// Worst relative error over the tensors' gradients; names the worst tensor in *worst_name.
static double gradient_error(const shard_run *full, const shard_run *shards, int tp, const char **worst_name) {
    double worst = 0.0;
    *worst_name = "-";
    const param_registry *whole = &full->registry;
    for (int i = 0; i < whole->count; i++) {
        const param_info *p = &whole->items[i];
        size_t n = (size_t)params_logical_count(p);
        float *full_grad = xcalloc(n, sizeof(float)), *gathered = xcalloc(n, sizeof(float));
        params_slice_to_logical(p, full->grads + p->offset, full_grad);
        double error = 0.0;
        for (int r = 0; r < tp; r++) {
            const param_info *q = &shards[r].registry.items[params_find(&shards[r].registry, p->name)];
            const float *g = shards[r].grads + q->offset;
            if (q->shard != SHARD_NONE) {  // its slice of the full gradient
                float *expected = xcalloc(q->local_count, sizeof(float));
                params_logical_to_slice(q, full_grad, expected);
                double e = relative_error(g, expected, q->local_count);
                if (e > error) error = e;
                free(expected);
            } else if (q->grad_partial_over_tp) {  // a share: compared once summed
                for (size_t e = 0; e < n; e++) gathered[e] += g[e];
                if (r == tp - 1) error = relative_error(gathered, full_grad, n);
            } else {  // replicated and used whole on every rank: the full gradient
                double e = relative_error(g, full_grad, n);
                if (e > error) error = e;
            }
        }
        if (error > worst || error != error) {
            worst = error;
            *worst_name = p->name;
        }
        free(full_grad);
        free(gathered);
    }
    return worst;
}

// Shard r's [hl, L, L] against heads [r*hl, (r+1)*hl) of the full [heads, L, L].
static double map_error(const shard_run *shards, int tp, bool scores, const float *full, int seq_len) {
    double worst = 0.0;
    for (int r = 0; r < tp; r++) {
        size_t block = (size_t)config_local_heads(&shards[r].config) * seq_len * seq_len;
        const float *part = scores ? shards[r].scores : shards[r].probs;
        double e = relative_error(part, full + (size_t)r * block, block);
        if (e > worst || e != e) worst = e;
    }
    return worst;
}

static void report(double error, const char *label, const char *what, const char *detail) {
    char name[256];
    snprintf(name, sizeof name, "%s: %s", label, what);
    testing_report(error <= TOLERANCE, name, "relative error %.3g > %.0e%s%s", error, TOLERANCE,
                   detail ? " at " : "", detail ? detail : "");
}

static void check_case(const char *variant, int kv_heads, int tp) {
    const mixer_kind *kind = mixer_find(variant);
    if (!kind) fatal("unknown mixer %s", variant);
    if (tp < 2 || tp > MAX_TP) fatal("tp = %d: the cases split over 2..%d shards", tp, MAX_TP);
    case_inputs in = {.batch = BATCH, .seq_len = SEQ_LEN, .fixed_sequence = -1};
    if (kind->uses_fixed_stream) {  // the fixed stream rides along as the last sequence, as in the model
        in.batch = BATCH + 1;
        in.fixed_sequence = BATCH;
    }
    size_t rd = (size_t)in.batch * (size_t)in.seq_len * HIDDEN;
    in.inp = random_floats(rd, 1, 1.0);
    in.d_out = random_floats(rd, 2, 1.0);
    in.normed_embeddings = random_floats(rd, 3, 1.0);
    int half = HIDDEN / HEADS / 2;
    in.rope_cos = zero_floats((size_t)in.seq_len * half);
    in.rope_sin = zero_floats((size_t)in.seq_len * half);
    rope_tables(in.rope_cos, in.rope_sin, in.seq_len, HIDDEN / HEADS, 100.0f);

    shard_run full, shards[MAX_TP];
    run_shard(&full, kind, variant, kv_heads, 0, 1, &in);
    for (int r = 0; r < tp; r++) run_shard(&shards[r], kind, variant, kv_heads, r, tp, &in);

    char label[128];
    snprintf(label, sizeof label, "tp %s kv=%d tp=%d", variant, kv_heads, tp);
    report(relative_error_of_sum(shards, tp, OUT, rd, &full), label,
           "the partial outputs sum to the full output", NULL);
    report(relative_error_of_sum(shards, tp, D_INP, rd, &full), label,
           "the d_inp shares sum to the full d_inp", NULL);
    if (kind->uses_embeddings)
        report(relative_error_of_sum(shards, tp, D_EMBEDDED, rd, &full), label,
               "the d_normed_embeddings shares sum to the full d_normed_embeddings", NULL);
    const char *worst_name;
    double worst = gradient_error(&full, shards, tp, &worst_name);
    report(worst, label, "every parameter gradient is its slice (or share) of the full one", worst_name);
    if (kind->attention_matrix)
        report(map_error(shards, tp, false, full.probs, in.seq_len), label,
               "each shard's attention matrix is its heads of the full one", NULL);
    if (kind->attention_scores)
        report(map_error(shards, tp, true, full.scores, in.seq_len), label,
               "each shard's attention scores are its heads of the full ones", NULL);
    // A shard is a part: its heads, fewer parameter floats, a partial output.
    bool split = true;
    double nearest = INFINITY;
    for (int r = 0; r < tp; r++) {
        split &= config_local_heads(&shards[r].config) * tp == HEADS &&
                 shards[r].registry.total < full.registry.total;
        nearest = fmin(nearest, relative_error(shards[r].out, full.out, rd));
    }
    char name[256];
    snprintf(name, sizeof name, "%s: each shard holds 1/%d of the heads and a partial output", label, tp);
    testing_report(split && nearest > 0.1, name,
                   "local heads %d of %d, %zu of %zu parameter floats; nearest partial output at relative %.3g",
                   config_local_heads(&shards[0].config), HEADS, shards[0].registry.total, full.registry.total, nearest);
    bool counts_logical = true;
    for (int r = 0; r < tp; r++)
        counts_logical &= kind->param_count(&shards[r].config) == params_total_logical(&shards[r].registry) &&
                          kind->param_count(&shards[r].config) == kind->param_count(&full.config);
    snprintf(name, sizeof name, "%s: param_count stays logical", label);
    testing_report(counts_logical, name, "param_count %lld, registry %lld",
                   (long long)kind->param_count(&shards[0].config),
                   (long long)params_total_logical(&shards[0].registry));

    free_run(&full);
    for (int r = 0; r < tp; r++) free_run(&shards[r]);
    free(in.inp);
    free(in.d_out);
    free(in.normed_embeddings);
    free(in.rope_cos);
    free(in.rope_sin);
}

int main(void) {
    static const char *const MIXERS[] = {"standard", "mlp",        "approx",      "approx-diag", "nonapx",
                                         "rndembqk", "fixedseqqk", "staticembqk", "mhe-add",     "mhe-mul"};
    for (size_t i = 0; i < sizeof MIXERS / sizeof MIXERS[0]; i++) {
        const char *variant = MIXERS[i];
        check_case(variant, HEADS, 2);
        check_case(variant, HEADS, 4);
        check_case(variant, 2, 2);
        if (strcmp(variant, "mlp") == 0) check_case(variant, 2, 4);  // width 33 over 4: 8, 8, 8, 9
    }
    return testing_exit_code();
}
