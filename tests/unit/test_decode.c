// Cached decoding (model/decode.h) against the full forward (issue 13, DESIGN.md 12).
//
// For every mixer x {uniform, hybrid:even} on a tiny GQA model (d 32, 4 heads, 2 kv heads,
// d_h 8, 2 layers, max context 80 > the linear mixers' chunk of 64):
//  * batch: three prompts of unequal length (70 — longer than one chunk —, 5 and 33
//    tokens) prefilled together, then 8 steps of all three at once, each sequence at
//    its own position, fed the sequence's own next tokens (teacher forcing);
//  * long decode: prompts of 1 and 3 tokens, then 77 steps, so the recurrent states and
//    the caches cross the chunk boundary token by token and sequence 1 fills the
//    context; one more step must be refused with one line, changing nothing;
//  the logits after every token (prefill's last and each step's) must equal the full
//  forward's logits at that position: max |difference| <= 1e-4 x max |logit| (fp32: the
//  two differ only in summation order; measured worst ~2e-6, see the printed figures;
//  a wrong position, a missing token or a stale state gives O(1) differences).
//  * the bytes of every layer's decode state equal the mixer's formula (cache floats per
//    token x context + state floats, per sequence, + the fixed stream's shared part),
//    printed next to the study's Table 4.8 expression (half precision there, fp32 here);
//  * bad input: an empty prompt, a prompt longer than the context, a token outside the
//    vocabulary, a sequence outside the batch: refused with one line, nothing changed;
//  * decode_set_length_for_timing (bench_decode): bad sequences and lengths refused in one
//    line, nothing changed; set lengths are where the next step goes.
// Then the program launches itself under `mpirun -np 2` (tp = 2): on each rank the
// tensor-parallel session decodes the same batch as a single-rank session of the same
// logical parameters, and the logits must agree (1e-4 x max |logit|); the layer bytes
// over both ranks must sum to the formula (mhe's compact cache is head-independent and
// replicated on every rank: there each rank holds the formula).
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testing.h"
#include "child_process.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "eval/logits.h"
#include "model/decode.h"
#include "model/model.h"
#include "ops/ops.h"
#include "par/process_grid.h"
#include "support/model_test_helpers.h"

enum { D = 32, LAYERS = 2, HEADS = 4, KV_HEADS = 2, INTER = 48, VOCAB = 62, CONTEXT = 80, SEQUENCES = 3 };
static const double TOLERANCE = 1e-4;  // of the largest |logit|
static const uint64_t SEED = 1313;
static const char *const VARIANTS[] = {"standard", "mlp", "approx", "approx-diag", "nonapx", "rndembqk",
                                       "fixedseqqk", "staticembqk", "mhe-add", "mhe-mul"};
static const char *const LAYOUTS[] = {"uniform", "hybrid:even"};
enum { VARIANT_COUNT = sizeof VARIANTS / sizeof VARIANTS[0], LAYOUT_COUNT = 2 };

// Per-layer shapes (a compressed model, A3) in the cases that set it: layer 1 r_qk = r_v =
// 12, layer 2 r_qk 6 and r_v 10 (a standard layer in both layouts), MLP widths 24 and 56.
static bool layer_shapes;

static void config_of(decon_config *c, const char *variant, const char *layout, int kv_heads) {
    test_model_config(c, variant, layout, D, LAYERS, HEADS, kv_heads, INTER, VOCAB, false, true, 10000.0);
    if (!layer_shapes) return;
    snprintf(c->layer_head_dims, sizeof c->layer_head_dims, "12,6");
    snprintf(c->layer_value_head_dims, sizeof c->layer_value_head_dims, "12,10");
    snprintf(c->layer_intermediate_sizes, sizeof c->layer_intermediate_sizes, "24,56");
}

// Parameters away from initialisation, the same logical values at any tensor-parallel
// split: element (i, j) of the logical tensor draws from its logical index.
static void perturb_logical(model *m) {
    model_initialize(m, SEED);
    const param_registry *r = &m->registry;
    for (int i = 0; i < r->count; i++) {
        const param_info *p = &r->items[i];
        uint64_t stream = rng_hash_string(p->name);
        int64_t cols = p->ndim == 2 ? p->shape[1] : 1, local_cols = p->ndim == 2 ? p->local_shape[1] : 1;
        bool norm = strstr(p->name, "norm") != NULL, bias = p->ndim == 1 && !norm;
        for (int64_t row = 0; row < p->local_shape[0]; row++)
            for (int64_t col = 0; col < local_cols; col++) {
                int64_t logical = (p->local_start[0] + row) * cols + (p->ndim == 2 ? p->local_start[1] : 0) + col;
                double z = rng_normal(SEED + 7, stream, (uint64_t)logical);
                float *v = m->params + p->offset + (size_t)(row * local_cols + col);
                if (norm) *v += (float)(0.2 * z);
                else if (bias) *v = (float)(0.2 * z);
                else *v += (float)(0.5 * z / sqrt((double)cols));
            }
    }
    if (m->fixed_stream_from_tokens) {
        int fixed[CONTEXT];
        for (int i = 0; i < CONTEXT; i++) fixed[i] = (i * 7 + 3) % VOCAB;
        model_set_fixed_tokens(m, fixed);
    }
}

static void tokens_of(int *tokens, int count) {
    for (int i = 0; i < count; i++) tokens[i] = (int)(rng_uniform(SEED, 99, (uint64_t)i) * VOCAB) % VOCAB;
}

typedef struct {
    double worst, scale;  // max |decode - reference|, max |reference|
    int compared;
} comparison;

static void compare_rows(comparison *cmp, const float *got, const float *want) {
    for (int v = 0; v < VOCAB; v++) {
        double diff = fabs((double)got[v] - want[v]);
        if (!(diff <= cmp->worst)) cmp->worst = isnan(diff) ? INFINITY : diff;  // NaN counts as worst
        if (fabs((double)want[v]) > cmp->scale) cmp->scale = fabs((double)want[v]);
    }
    cmp->compared++;
}

// Prefill prompts[b] = the first lengths[b] tokens of sequence b, then `steps` steps of
// each sequence's next tokens; every logits row compared with reference [sequence, pos].
static void decode_and_compare(decode_session *s, comparison *cmp, const int *tokens, const int *lengths, int count,
                               int steps, const float *reference) {
    float *logits = xmalloc((size_t)count * VOCAB * sizeof(float));
    int sequences[SEQUENCES];
    const int *prompts[SEQUENCES];
    for (int b = 0; b < count; b++) {
        sequences[b] = b;
        prompts[b] = tokens + (size_t)b * CONTEXT;
    }
    if (!decode_prefill(s, count, sequences, prompts, lengths, logits)) fatal("prefill: %s", decode_error(s));
    for (int b = 0; b < count; b++)
        compare_rows(cmp, logits + (size_t)b * VOCAB, reference + ((size_t)b * CONTEXT + lengths[b] - 1) * VOCAB);
    int next[SEQUENCES];
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < count; b++) next[b] = tokens[(size_t)b * CONTEXT + lengths[b] + step];
        if (!decode_step(s, next, logits)) fatal("step %d: %s", step, decode_error(s));
        for (int b = 0; b < count; b++)
            compare_rows(cmp, logits + (size_t)b * VOCAB, reference + ((size_t)b * CONTEXT + lengths[b] + step) * VOCAB);
    }
    free(logits);
}

static void setup(model *m, const decon_config *c, const char *label, process_grid *grid) {
    model_build_parallel(m, c, label, grid);
    model_allocate(m, SEQUENCES, CONTEXT);
    perturb_logical(m);
}

// The full forward's logits of all SEQUENCES x CONTEXT positions (single rank).
static float *reference_logits(model *m, const int *tokens) {
    float *reference = xmalloc((size_t)SEQUENCES * CONTEXT * VOCAB * sizeof(float));
    model_forward(m, tokens, SEQUENCES, CONTEXT);
    eval_logits(m, 0, SEQUENCES * CONTEXT, reference);
    return reference;
}

static void check_bad_input(decode_session *s, const int *tokens) {
    int empty_length = 0, long_length = CONTEXT + 1, zero = 0, bad_token[1] = {VOCAB}, one = 1, sequence = 0;
    int outside = SEQUENCES + 5;
    const int *prompt[1] = {tokens};
    const int *bad_prompt[1] = {bad_token};
    int before = decode_length(s, 0);
    struct {
        const char *name, *expect;
        const int *sequence, *length;
        const int *const *prompts;
    } cases[] = {
        {"empty prompt", "empty", &sequence, &empty_length, prompt},
        {"prompt longer than the context", "raise the maximum context", &sequence, &long_length, prompt},
        {"token outside the vocabulary", "outside the vocabulary", &sequence, &one, bad_prompt},
        {"sequence outside the batch", "outside the session's batch", &outside, &one, prompt},
    };
    (void)zero;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool ok = decode_prefill(s, 1, cases[i].sequence, cases[i].prompts, cases[i].length, NULL);
        char name[160];
        snprintf(name, sizeof name, "decode refuses bad input: %s, in one line", cases[i].name);
        const char *why = decode_error(s);
        testing_report(!ok && strstr(why, cases[i].expect) && !strchr(why, '\n') && decode_length(s, 0) == before,
                       name, "accepted=%d, message '%s'", ok, why);
        printf("    decon: error: %s\n", why);
    }
}

// decode_set_length_for_timing (bench_decode's way to a long context): refuses a sequence
// outside the batch, one without a prompt and a length outside [1, max context) in one
// line, changing nothing; a valid length is what the next step's position becomes.
static bool check_set_length(decode_session *s, char *why, size_t size) {
    int before = decode_length(s, 0);
    struct {
        int sequence, length;
        const char *expect;
    } refused[] = {{SEQUENCES, 5, "outside the session's batch"}, {-1, 5, "outside the session's batch"},
                   {0, 0, "outside [1,"}, {0, CONTEXT, "outside [1,"}};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        bool ok = decode_set_length_for_timing(s, refused[i].sequence, refused[i].length);
        const char *error = decode_error(s);
        if (ok || !strstr(error, refused[i].expect) || strchr(error, '\n') || decode_length(s, 0) != before) {
            snprintf(why, size, "sequence %d length %d: accepted=%d, '%s'", refused[i].sequence, refused[i].length,
                     ok, error);
            return false;
        }
    }
    decode_reset(s, 2);
    if (decode_set_length_for_timing(s, 2, 5) || !strstr(decode_error(s), "no prompt")) {
        snprintf(why, size, "a sequence without a prompt: '%s'", decode_error(s));
        return false;
    }
    int prompt[1] = {1}, one = 1, two = 2;
    const int *prompts[1] = {prompt};
    int next[SEQUENCES] = {1, 2, 3};
    if (!decode_prefill(s, 1, &two, prompts, &one, NULL) || !decode_set_length_for_timing(s, 0, CONTEXT - 1) ||
        !decode_set_length_for_timing(s, 1, 3) || !decode_set_length_for_timing(s, 2, 40) ||
        !decode_step(s, next, NULL) || decode_length(s, 0) != CONTEXT || decode_length(s, 1) != 4 ||
        decode_length(s, 2) != 41) {
        snprintf(why, size, "lengths %d %d %d after setting 79, 3, 40 and a step: '%s'", decode_length(s, 0),
                 decode_length(s, 1), decode_length(s, 2), decode_error(s));
        return false;
    }
    return true;
}

// Table 4.8 of the study (cache bytes per layer, half precision), where issue 13 quotes it.
static const char *table_expression(const mixer_kind *kind, const decon_config *c) {
    if (kind->shared_cache_floats_per_token) return "2(B+1)Ld";
    if (kind->cache_floats_per_token(c) > 0 && kind->state_floats == NULL && strncmp(kind->name, "mhe", 3) != 0)
        return "4BLd";
    return "(not quoted)";
}

static double table_bytes(const char *expression, int batch, int context, int d) {
    if (strcmp(expression, "2(B+1)Ld") == 0) return 2.0 * (batch + 1) * context * d;
    if (strcmp(expression, "4BLd") == 0) return 4.0 * batch * context * d;
    return 0.0;
}

static void check_variant(const char *variant, const char *layout, int kv_heads) {
    decon_config c;
    config_of(&c, variant, layout, kv_heads);
    char label[96];
    snprintf(label, sizeof label, "%s %s kv=%d%s", variant, layout, kv_heads, layer_shapes ? " per-layer shapes" : "");
    model m;
    setup(&m, &c, label, NULL);
    int *tokens = xmalloc((size_t)SEQUENCES * CONTEXT * sizeof(int));
    tokens_of(tokens, SEQUENCES * CONTEXT);
    float *reference = reference_logits(&m, tokens);

    comparison batch = {0, 0, 0}, long_run = {0, 0, 0};
    decode_session *s = decode_create(&m, SEQUENCES, CONTEXT);
    int unequal[SEQUENCES] = {70, 5, 33};
    decode_and_compare(s, &batch, tokens, unequal, SEQUENCES, 8, reference);
    check_bad_input(s, tokens);
    char why[240] = "";
    char set_name[256];
    snprintf(set_name, sizeof set_name, "%s: decode_set_length_for_timing sets lengths, refuses bad ones in one line",
             label);
    testing_report(check_set_length(s, why, sizeof why), set_name, "%s", why);
    // Layer bytes = the formula.
    for (int l = 0; l < LAYERS; l++) {
        const mixer_kind *kind = m.plan[l];
        decon_config layer;  // its own r_qk and r_v
        config_layer(&c, l, &layer);
        double formula = decode_formula_bytes(kind, &layer, SEQUENCES, CONTEXT);
        size_t measured = decode_layer_bytes(s, l);
        char name[200];
        snprintf(name, sizeof name, "%s: layer %d (%s) decode state %zu bytes = its formula", label, l + 1,
                 kind->name, measured);
        testing_report((double)measured == formula, name, "formula %.0f", formula);
        if (strcmp(layout, "uniform") == 0 && l == 0) {
            const char *expression = table_expression(kind, &c);
            printf("    cache per layer, %-11s kv=%d (B=%d, L=%d, d=%d): %zu bytes fp32 (formula %.0f); "
                   "Table 4.8 fp16: %s = %.0f bytes\n",
                   kind->name, kv_heads, SEQUENCES, CONTEXT, D, measured, formula, expression,
                   table_bytes(expression, SEQUENCES, CONTEXT, D));
        }
    }
    decode_free(s);

    s = decode_create(&m, 2, CONTEXT);
    int short_prompts[2] = {1, 3};
    decode_and_compare(s, &long_run, tokens, short_prompts, 2, CONTEXT - 3, reference);
    int next[2] = {1, 2};
    bool refused = !decode_step(s, next, NULL);
    char name[320];
    snprintf(name, sizeof name, "%s: a step past the maximum context is refused in one line, nothing changed", label);
    testing_report(refused && strstr(decode_error(s), "maximum context") && decode_length(s, 0) == CONTEXT - 2 &&
                       decode_length(s, 1) == CONTEXT,
                   name, "refused=%d '%s'", refused, decode_error(s));
    // The full sequence 1 retires (DECODE_IDLE) while sequence 0 takes its last position:
    // sequence 0's logits are still the full forward's, sequence 1 then holds nothing.
    float idle_logits[2 * VOCAB];
    int retire[2] = {tokens[CONTEXT - 2], DECODE_IDLE};
    bool stepped = decode_step(s, retire, idle_logits);
    comparison idle = {0, 0, 0};
    compare_rows(&idle, idle_logits, reference + (size_t)(CONTEXT - 2) * VOCAB);
    int revive[2] = {DECODE_IDLE, 2};
    bool revive_refused = !decode_step(s, revive, NULL) && strstr(decode_error(s), "no prompt");
    snprintf(name, sizeof name, "%s: a retired (DECODE_IDLE) full sequence steps along, the other's logits unchanged, "
             "then it holds nothing", label);
    testing_report(stepped && idle.worst <= TOLERANCE * idle.scale && decode_length(s, 0) == CONTEXT - 1 &&
                       decode_length(s, 1) == 0 && revive_refused,
                   name, "stepped=%d max |diff| %.3g lengths %d %d revive refused=%d", stepped, idle.worst,
                   decode_length(s, 0), decode_length(s, 1), revive_refused);
    decode_free(s);

    snprintf(name, sizeof name, "%s: cached decoding = full forward, prompts 70/5/33 + 8 steps (%d rows)", label,
             batch.compared);
    testing_report(batch.worst <= TOLERANCE * batch.scale, name, "max |diff| %.3g, max |logit| %.3g", batch.worst,
                   batch.scale);
    printf("    max |logit diff| %.3g of max |logit| %.3g (%.2g)\n", batch.worst, batch.scale, batch.worst / batch.scale);
    snprintf(name, sizeof name, "%s: cached decoding = full forward, prompts 1/3 + 77 steps (%d rows)", label,
             long_run.compared);
    testing_report(long_run.worst <= TOLERANCE * long_run.scale, name, "max |diff| %.3g, max |logit| %.3g",
                   long_run.worst, long_run.scale);
    printf("    max |logit diff| %.3g of max |logit| %.3g (%.2g)\n", long_run.worst, long_run.scale,
           long_run.worst / long_run.scale);
    free(reference);
    free(tokens);
    model_free(&m);
}

// ---- tp = 2 under mpirun --------------------------------------------------------------
static int child_main(void) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (int v = 0; v < VARIANT_COUNT; v++)
        for (int l = 0; l < LAYOUT_COUNT; l++) {
            decon_config c;
            config_of(&c, VARIANTS[v], LAYOUTS[l], KV_HEADS);
            c.tensor_parallel = 2;
            char label[96];
            snprintf(label, sizeof label, "tp=2 %s %s", VARIANTS[v], LAYOUTS[l]);
            process_grid grid;
            process_grid_create(&grid, MPI_COMM_WORLD, &c, label);
            model parallel, single;
            setup(&parallel, &c, label, &grid);
            c.tensor_parallel = 1;
            setup(&single, &c, label, NULL);
            int *tokens = xmalloc((size_t)SEQUENCES * CONTEXT * sizeof(int));
            tokens_of(tokens, SEQUENCES * CONTEXT);
            float *reference = reference_logits(&single, tokens);
            decode_session *sp = decode_create(&parallel, SEQUENCES, CONTEXT);
            int unequal[SEQUENCES] = {70, 5, 33};
            comparison cmp = {0, 0, 0};
            decode_and_compare(sp, &cmp, tokens, unequal, SEQUENCES, 8, reference);
            bool bytes_ok = true;
            for (int layer = 0; layer < LAYERS; layer++) {
                unsigned long long mine = decode_layer_bytes(sp, layer), sum = 0;
                MPI_Allreduce(&mine, &sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
                double formula = decode_formula_bytes(parallel.plan[layer], &c, SEQUENCES, CONTEXT);
                bool replicated = strncmp(parallel.plan[layer]->name, "mhe", 3) == 0;
                bytes_ok &= replicated ? (double)mine == formula : (double)sum == formula && (mine < sum || sum == 0);
            }
            double worst = cmp.worst;
            MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (rank == 0) {
                char name[160];
                snprintf(name, sizeof name, "%s: decoding equals the full forward (%d rows)", label, cmp.compared);
                testing_report(worst <= TOLERANCE * cmp.scale, name, "max |diff| %.3g, max |logit| %.3g", worst,
                               cmp.scale);
                snprintf(name, sizeof name, "%s: layer bytes over the ranks sum to the formula", label);
                testing_report(bytes_ok, name, "mismatch");
            }
            decode_free(sp);
            free(reference);
            free(tokens);
            model_free(&parallel);
            model_free(&single);
            process_grid_free(&grid);
        }
    return testing_exit_code();
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--child") == 0) {
        MPI_Init(&argc, &argv);
        ops_set_threads(1);
        int code = child_main();
        MPI_Finalize();
        return code;
    }
    child_keep_environment();
    MPI_Init(&argc, &argv);
    // One thread: the shapes are tiny, and on a loaded machine every OpenMP region of a
    // step waits for a core (measured: 1.6 s at 1 thread, 49 s at 2 under load 10). One
    // case runs at 2 threads below, for the ops' parallel loops.
    ops_set_threads(1);
    for (int v = 0; v < VARIANT_COUNT; v++)
        for (int l = 0; l < LAYOUT_COUNT; l++) check_variant(VARIANTS[v], LAYOUTS[l], KV_HEADS);
    check_variant("standard", "uniform", 1);   // MQA: one kv head cached
    check_variant("standard", "uniform", HEADS);  // MHA
    layer_shapes = true;
    check_variant("standard", "uniform", KV_HEADS);
    check_variant("nonapx", "hybrid:even", 1);
    layer_shapes = false;
    ops_set_threads(2);
    check_variant("approx", "hybrid:even", KV_HEADS);
    MPI_Finalize();
    const char *argv_child[] = {"timeout", "300", "mpirun", "--oversubscribe", "-np", "2", argv[0], "--child", NULL};
    static child_result result;
    result = child_run(argv_child, CHILD_STDOUT | CHILD_STDERR);
    fputs(result.output, stdout);
    testing_report(result.status == 0, "tp=2 decoding: mpirun -np 2 finished cleanly", "status %d", result.status);
    return testing_exit_code();
}
