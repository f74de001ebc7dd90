// Figures for cached decoding (docs/design.md "Inference"; never pass/fail): for every
// mixer at one model shape (default input/models/70m.ini, parameters randomly
// initialised: speed and bytes do not depend on training),
//  * prefill: the time of decode_prefill over one prompt of P tokens, next to our
//    analytic forward FLOPs (the mixer's forward_flops_per_token x P x layers, and the
//    whole model's count) -> GFLOP/s and MFU against this machine's sgemm peak;
//  * decode: for batch 1 and 16 and contexts 256 .. 16384, a session sized for that
//    context (decode_create(model, batch, context)), its measured cache bytes
//    (decode_cache_bytes) next to the formula (decode_formula_bytes), and the time of a
//    step at position context-1, i.e. the context-th token -> tokens/s = batch / step.
// Reaching position context-1 without prefilling it: every sequence is prefilled with a
// short real prompt, then decode_set_length_for_timing declares it context-1 tokens long.
// A step's work depends on positions, not on values (the positions past the prompt hold
// the zeros decode_create wrote, in memory that is really touched), so the time is the
// time of that context; the logits are not used. Prefilling 16 x 16384 tokens through the
// training forward would take hours on 2 cores.
// Prints a table per mixer, summary matrices at the end, and one JSON object per
// measurement (kind "machine", "prefill", "decode", "cap") to --json, which
// analysis/plot/decode_figure.py draws.
// Caps, printed where they apply (a "cap" JSON object each), to keep `make bench` within
// minutes on 2 cores: a session whose cache would exceed --max-cache-mb (default 4096) or
// half of MemAvailable is skipped with the larger contexts of that batch (standard at
// batch 16 stops after 8192: 16384 is 6.4 GB, whose allocation alone took 26 s under load, a step
// 5 s); rndembqk and fixedseqqk stop at --fixed-max-context (default 4096), since every
// session runs the fixed stream's full O(L^2) forward over its maximum context.
//   bench_decode [--config INI] [--quick] [--json PATH] [--threads N] [--prefill-threads N]
//                [--prefill-tokens P] [--max-context N] [--max-cache-mb M] [--fixed-max-context N]
//                [--mixers a,b,...]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/decode.h"
#include "model/model.h"
#include "ops/ops.h"
#include "train/progress.h"

// Every variant, and standard under GQA (2 kv heads) as one more row.
typedef struct {
    const char *label, *variant;
    int kv_heads;  // 0: the config's
} bench_mixer;
static const bench_mixer MIXERS[] = {
    {"standard", "standard", 0}, {"gqa-kv2", "standard", 2}, {"mlp", "mlp", 0},
    {"approx", "approx", 0},     {"approx-diag", "approx-diag", 0}, {"nonapx", "nonapx", 0},
    {"rndembqk", "rndembqk", 0}, {"fixedseqqk", "fixedseqqk", 0},   {"staticembqk", "staticembqk", 0},
    {"mhe-add", "mhe-add", 0},   {"mhe-mul", "mhe-mul", 0},
};
enum { MIXER_COUNT = sizeof MIXERS / sizeof MIXERS[0], MAX_CONTEXTS = 16, BATCHES = 2, PROMPT = 16 };

typedef struct {
    const char *config_path, *json_path, *only;
    bool quick;
    int threads, prefill_threads, prefill_tokens, max_context, fixed_max_context;
    double max_cache_bytes;
    int contexts[MAX_CONTEXTS], context_count, batches[BATCHES];
    double memory_fraction;  // a session may take this share of MemAvailable
} options;

typedef struct {  // one decode measurement, for the summary matrices
    bool done;
    double tokens_per_second, bytes;
} cell;

static double available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    double kilobytes = 0.0;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "MemAvailable:", 13) == 0) sscanf(line + 13, "%lf", &kilobytes);
    if (f) fclose(f);
    return kilobytes * 1024.0;
}

// /proc/loadavg's 1-minute figure: step times on a shared machine scale with it.
static double load_average(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double load = -1.0;
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = -1.0;
        fclose(f);
    }
    return load;
}

static void random_tokens(int *tokens, int count, int vocab, uint64_t stream) {
    for (int i = 0; i < count; i++) tokens[i] = (int)(rng_mix(11, stream, (uint64_t)i) % (uint64_t)vocab);
}

static void usage(void) {
    fatal("usage: bench_decode [--config INI] [--quick] [--json PATH] [--threads N] [--prefill-threads N] "
          "[--prefill-tokens P] [--max-context N] [--max-cache-mb M] [--fixed-max-context N] [--mixers a,b,...]");
}

static int positive(const char *text, const char *option) {
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < 1 || v > 1 << 20) fatal("bench_decode: %s %s is not a positive integer", option, text);
    return (int)v;
}

static options parse(int argc, char **argv) {
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    options o = {.config_path = "input/models/70m.ini", .json_path = "bench/results/decode.jsonl",
                 .threads = 1, .prefill_threads = cores > 0 ? cores : 1, .prefill_tokens = 1024,
                 .max_context = 16384, .fixed_max_context = 4096, .max_cache_bytes = 4096e6, .batches = {1, 16}, .memory_fraction = 0.5};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            o.quick = true;
            continue;
        }
        if (!v) usage();
        if (strcmp(a, "--config") == 0) o.config_path = v, i++;
        else if (strcmp(a, "--json") == 0) o.json_path = v, i++;
        else if (strcmp(a, "--mixers") == 0) o.only = v, i++;
        else if (strcmp(a, "--threads") == 0) o.threads = positive(v, a), i++;
        else if (strcmp(a, "--prefill-threads") == 0) o.prefill_threads = positive(v, a), i++;
        else if (strcmp(a, "--prefill-tokens") == 0) o.prefill_tokens = positive(v, a), i++;
        else if (strcmp(a, "--max-context") == 0) o.max_context = positive(v, a), i++;
        else if (strcmp(a, "--fixed-max-context") == 0) o.fixed_max_context = positive(v, a), i++;
        else if (strcmp(a, "--max-cache-mb") == 0) o.max_cache_bytes = positive(v, a) * 1e6, i++;
        else usage();
    }
    for (const char *p = o.only; p && *p;) {  // every name in --mixers must be one of MIXERS
        size_t n = strcspn(p, ",");
        bool known = false;
        for (int x = 0; x < MIXER_COUNT; x++) known |= strlen(MIXERS[x].label) == n && strncmp(p, MIXERS[x].label, n) == 0;
        if (!known) fatal("bench_decode: --mixers names '%.*s', which is none of standard, gqa-kv2, mlp, approx, "
                          "approx-diag, nonapx, rndembqk, fixedseqqk, staticembqk, mhe-add, mhe-mul", (int)n, p);
        p += n + (p[n] == ',');
    }
    int first = 256;
    if (o.quick) {  // the tiny shape, two contexts, batches 1 and 4: seconds, for tests/scripts/test_bench_decode.sh
        o.config_path = "input/models/tiny.ini";
        o.prefill_tokens = 64;
        o.max_context = o.fixed_max_context = 128;
        o.batches[1] = 4;
        first = 64;
    }
    for (int L = first; L <= o.max_context && o.context_count < MAX_CONTEXTS; L *= 2) o.contexts[o.context_count++] = L;
    if (o.context_count == 0) fatal("bench_decode: --max-context %d is below the first context %d", o.max_context, first);
    return o;
}

static bool selected(const options *o, const char *label) {
    if (!o->only) return true;
    size_t n = strlen(label);
    for (const char *p = o->only; (p = strstr(p, label)) != NULL; p += n)
        if ((p == o->only || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return true;
    return false;
}

static double formula_bytes(const model *m, int batch, int context) {
    double total = 0.0;
    for (int l = 0; l < m->config.num_hidden_layers; l++)
        total += decode_formula_bytes(m->plan[l], &m->layer_configs[l], batch, context);
    return total;
}

// The whole model's forward FLOPs of a prefill of `tokens` tokens: the blocks on every
// row (the fixed stream's extra sequence too: prefill runs it along), the LM head on the
// prompt's last row only.
static double model_prefill_flops(const model *m, int tokens) {
    const decon_config *c = &m->config;
    double lm_head = 2.0 * c->hidden_size * (double)c->vocab_size;
    double blocks = model_training_flops_per_token(m, tokens) / 3.0 - lm_head;
    return (1.0 + m->has_fixed_stream) * tokens * blocks + lm_head;
}

// Time of one step at position context-1 for every sequence: best of the timed steps
// after one warm-up; at least 2 and until 0.4 s (at most 20) are timed.
static double time_step(decode_session *s, int batch, int context, const int *tokens, int *steps) {
    double best = INFINITY, spent = 0.0;
    int n = 0;
    for (int rep = 0; rep <= 20; rep++) {
        for (int b = 0; b < batch; b++)
            if (!decode_set_length_for_timing(s, b, context - 1)) fatal("bench_decode: %s", decode_error(s));
        double t0 = wall_seconds();
        if (!decode_step(s, tokens, NULL)) fatal("bench_decode: %s", decode_error(s));
        double t = wall_seconds() - t0;
        if (rep == 0) continue;  // warm-up
        n++;
        spent += t;
        if (t < best) best = t;
        if (n >= 2 && spent >= 0.4) break;
    }
    *steps = n;
    return best;
}

int main(int argc, char **argv) {
    options o = parse(argc, argv);
    FILE *json = fopen(o.json_path, "w");
    if (!json) fatal("bench_decode: cannot write %s; give --json PATH in a writable directory", o.json_path);
    ops_set_threads(o.prefill_threads);
    double peak = measure_sgemm_peak_gflops();
    decon_config base;
    config_defaults(&base);
    config_load(&base, o.config_path);
    snprintf(base.layout, sizeof base.layout, "uniform");
    printf("cached decoding at %s: d=%d, %d layers, %d heads (kv %d), d_h=%d, vocab %d; parameters randomly "
           "initialised (speed and bytes do not depend on training)\n",
           o.config_path, base.hidden_size, base.num_hidden_layers, base.num_attention_heads, config_kv_heads(&base),
           config_head_dim(&base), base.vocab_size);
    printf("machine: %ld cores, load average %.2f at the start (timings scale with it on a shared machine)\n",
           sysconf(_SC_NPROCESSORS_ONLN), load_average());
    printf("threads: prefill and fixed-stream forward %d, decode steps %d (small steps are dominated by OpenMP "
           "overhead at more threads); sgemm peak %.1f GFLOP/s at %d threads (OpenBLAS %s)\n",
           o.prefill_threads, o.threads, peak, o.prefill_threads, ops_blas_core_name());
    printf("caps: caches over %.0f MB or half of MemAvailable, and rndembqk/fixedseqqk contexts over %d (each "
           "session runs the fixed stream's O(L^2) forward over its maximum context), are skipped and printed\n",
           o.max_cache_bytes * 1e-6, o.fixed_max_context);
    printf("decode: each sequence gets a %d-token prompt, then is set to context-1 tokens "
           "(decode_set_length_for_timing) and one step is timed at position context-1: best of >= 2 after a "
           "warm-up. Cache bytes fp32; the study's Table 4.8 counts half precision (docs/design.md).\n",
           PROMPT);
    printf("prefill FLOPs: our analytic counts (matmul FLOPs, 2 per multiply-add, causal; mixers' "
           "forward_flops_per_token); the study's Table 4.6 expressions are not quoted in this project, so "
           "they are not printed.\n");
    fprintf(json,
            "{\"kind\": \"machine\", \"config\": \"%s\", \"hidden\": %d, \"layers\": %d, \"heads\": %d, "
            "\"kv_heads\": %d, \"vocab\": %d, \"threads\": %d, \"prefill_threads\": %d, \"sgemm_peak_gflops\": %.2f, "
            "\"blas_core\": \"%s\", \"cores\": %ld, \"load_average\": %.2f, \"quick\": %s}\n",
            o.config_path, base.hidden_size, base.num_hidden_layers, base.num_attention_heads, config_kv_heads(&base),
            base.vocab_size, o.threads, o.prefill_threads, peak, ops_blas_core_name(), sysconf(_SC_NPROCESSORS_ONLN),
            load_average(), o.quick ? "true" : "false");

    static cell cells[MIXER_COUNT][BATCHES][MAX_CONTEXTS];
    double started = wall_seconds();
    for (int x = 0; x < MIXER_COUNT; x++) {
        const bench_mixer *bm = &MIXERS[x];
        if (!selected(&o, bm->label)) continue;
        decon_config c = base;
        snprintf(c.variant, sizeof c.variant, "%s", bm->variant);
        if (bm->kv_heads) c.num_key_value_heads = bm->kv_heads;
        config_validate(&c, o.config_path);
        model m;
        model_build(&m, &c, o.config_path);
        const mixer_kind *kind = m.plan[0];
        int longest = o.prefill_tokens > PROMPT ? o.prefill_tokens : PROMPT;
        // The fixed stream is computed once per session for its maximum context, by the
        // model's forward: those models are allocated for the longest context.
        int last = o.context_count - 1;
        while (m.has_fixed_stream && last > 0 && o.contexts[last] > o.fixed_max_context) last--;
        if (m.has_fixed_stream && o.contexts[last] > longest) longest = o.contexts[last];
        model_allocate(&m, 1, longest);
        model_initialize(&m, 1);
        int *tokens = xmalloc((size_t)longest * sizeof(int));
        random_tokens(tokens, longest, c.vocab_size, 1);
        if (m.has_fixed_stream && m.fixed_stream_from_tokens) model_set_fixed_tokens(&m, tokens);
        int layers = c.num_hidden_layers;
        long long per_token = (long long)kind->cache_floats_per_token(&c);
        long long state = kind->state_floats ? (long long)kind->state_floats(&c) : 0;
        long long shared = kind->shared_cache_floats_per_token ? (long long)kind->shared_cache_floats_per_token(&c) : 0;
        printf("\n== %s (variant %s, kv heads %d): %d layers; decode formula per layer: %lld floats/token/sequence, "
               "%lld state floats/sequence, %lld shared floats/token; model activations %.0f MB\n",
               bm->label, bm->variant, config_kv_heads(&c), layers, per_token, state, shared,
               (double)model_activation_bytes(&m) * 1e-6);

        // Prefill: one prompt of P tokens, best of 2. MFU against the best sgemm peak seen so
        // far, measured again right before (one measurement under load undersells the peak;
        // --quick keeps its first).
        ops_set_threads(o.prefill_threads);
        if (!o.quick) peak = fmax(peak, measure_sgemm_peak_gflops());
        int P = o.prefill_tokens;
        decode_session *s = decode_create(&m, 1, P);
        const int *prompt = tokens;
        int sequence = 0;
        double prefill = INFINITY;
        for (int rep = 0; rep < 2; rep++) {
            double t0 = wall_seconds();
            if (!decode_prefill(s, 1, &sequence, &prompt, &P, NULL)) fatal("bench_decode: %s", decode_error(s));
            double t = wall_seconds() - t0;
            if (t < prefill) prefill = t;
        }
        decode_free(s);
        double mixer_flops = kind->forward_flops_per_token(&c, P) * P * layers, all_flops = model_prefill_flops(&m, P);
        double gflops = all_flops / prefill * 1e-9;
        printf("  prefill %d tokens: %.3f s = %.0f tokens/s; FLOPs (ours): mixers %.2f G (%.2f M/token/layer), "
               "model %.2f G%s -> %.1f GFLOP/s, MFU %.1f%% of %.1f\n",
               P, prefill, P / prefill, mixer_flops * 1e-9, kind->forward_flops_per_token(&c, P) * 1e-6,
               all_flops * 1e-9, m.has_fixed_stream ? " (incl. the fixed stream's sequence)" : "", gflops,
               100.0 * gflops / peak, peak);
        fprintf(json,
                "{\"kind\": \"prefill\", \"mixer\": \"%s\", \"variant\": \"%s\", \"kv_heads\": %d, \"tokens\": %d, "
                "\"seconds\": %.6g, \"mixer_flops_per_token_per_layer\": %.6g, \"mixer_flops\": %.6g, "
                "\"model_flops\": %.6g, \"gflops_per_s\": %.6g, \"mfu\": %.6g, \"sgemm_peak_gflops\": %.2f, "
                "\"threads\": %d}\n",
                bm->label, bm->variant, config_kv_heads(&c), P, prefill, kind->forward_flops_per_token(&c, P),
                mixer_flops, all_flops, gflops, gflops / peak, peak, o.prefill_threads);

        printf("  %5s %7s %10s %10s %12s %12s %6s %9s\n", "batch", "context", "step ms", "tokens/s", "cache MB",
               "formula MB", "steps", "create s");
        for (int bi = 0; bi < BATCHES; bi++) {
            int batch = o.batches[bi];
            int *step_tokens = xmalloc((size_t)batch * sizeof(int)), *sequences = xmalloc((size_t)batch * sizeof(int));
            int *lengths = xmalloc((size_t)batch * sizeof(int));
            const int **prompts = (const int **)xmalloc((size_t)batch * sizeof(int *));
            random_tokens(step_tokens, batch, c.vocab_size, 2);
            for (int ci = 0; ci < o.context_count; ci++) {
                int context = o.contexts[ci];
                double formula = formula_bytes(&m, batch, context), available = available_bytes();
                char why[160] = "";
                if (m.has_fixed_stream && context > o.fixed_max_context)
                    snprintf(why, sizeof why, "the fixed stream's forward over %d positions (--fixed-max-context %d)",
                             context, o.fixed_max_context);
                else if (formula > o.max_cache_bytes)
                    snprintf(why, sizeof why, "a cache of %.0f MB (--max-cache-mb %.0f)", formula * 1e-6,
                             o.max_cache_bytes * 1e-6);
                else if (formula > o.memory_fraction * available)
                    snprintf(why, sizeof why, "a cache of %.0f MB, over %.0f%% of the %.0f MB available",
                             formula * 1e-6, 100.0 * o.memory_fraction, available * 1e-6);
                if (why[0]) {
                    printf("  %5d %7d capped: %s; this and larger contexts skipped\n", batch, context, why);
                    fprintf(json,
                            "{\"kind\": \"cap\", \"mixer\": \"%s\", \"batch\": %d, \"context\": %d, "
                            "\"formula_bytes\": %.0f, \"why\": \"%s\"}\n",
                            bm->label, batch, context, formula, why);
                    break;
                }
                ops_set_threads(o.prefill_threads);
                double t0 = wall_seconds();
                s = decode_create(&m, batch, context);
                double create = wall_seconds() - t0;
                int length = PROMPT < context - 1 ? PROMPT : context - 1;
                for (int b = 0; b < batch; b++) sequences[b] = b, lengths[b] = length, prompts[b] = tokens + b;
                if (!decode_prefill(s, batch, sequences, prompts, lengths, NULL)) fatal("bench_decode: %s", decode_error(s));
                ops_set_threads(o.threads);
                int steps = 0;
                double step = time_step(s, batch, context, step_tokens, &steps);
                double bytes = (double)decode_cache_bytes(s);
                decode_free(s);
                cells[x][bi][ci] = (cell){true, batch / step, bytes};
                printf("  %5d %7d %10.3f %10.1f %12.6g %12.6g %6d %9.2f\n", batch, context, step * 1e3, batch / step,
                       bytes * 1e-6, formula * 1e-6, steps, create);
                fprintf(json,
                        "{\"kind\": \"decode\", \"mixer\": \"%s\", \"variant\": \"%s\", \"kv_heads\": %d, "
                        "\"batch\": %d, \"context\": %d, \"step_seconds\": %.6g, \"tokens_per_s\": %.6g, "
                        "\"cache_bytes\": %.0f, \"formula_bytes\": %.0f, \"steps_timed\": %d, \"create_seconds\": "
                        "%.6g, \"threads\": %d}\n",
                        bm->label, bm->variant, config_kv_heads(&c), batch, context, step, batch / step, bytes,
                        formula, steps, create, o.threads);
                fflush(json);
            }
            free(step_tokens), free(sequences), free(lengths), free((void *)prompts);
        }
        free(tokens);
        model_free(&m);
        fflush(stdout);
    }

    // The figure's table: one row per mixer, one column per context.
    const char *titles[] = {"decode tokens/s", "decode tokens/s", "cache MB (measured = formula)"};
    for (int t = 0; t < 3; t++) {
        int bi = t == 2 ? 0 : t;
        printf("\n%s, batch %d\n  %-12s", titles[t], o.batches[bi], "mixer");
        for (int ci = 0; ci < o.context_count; ci++) printf(" %9d", o.contexts[ci]);
        printf("\n");
        for (int x = 0; x < MIXER_COUNT; x++) {
            if (!selected(&o, MIXERS[x].label)) continue;
            printf("  %-12s", MIXERS[x].label);
            for (int ci = 0; ci < o.context_count; ci++) {
                const cell *e = &cells[x][bi][ci];
                if (!e->done) printf(" %9s", "capped");
                else if (t == 2) printf(" %9.4g", e->bytes * 1e-6);
                else printf(" %9.1f", e->tokens_per_second);
            }
            printf("\n");
        }
    }
    printf("\ncache MB at batch %d = batch x the batch-1 figure for every mixer but rndembqk/fixedseqqk (their "
           "shared Qf, Kf are per layer, not per sequence); see %s\n",
           o.batches[1], o.json_path);
    printf("\nsgemm peak (best seen, %d threads): %.1f GFLOP/s\n", o.prefill_threads, peak);
    printf("bench_decode: %.0f s in all (load average %.2f at the end); JSON lines in %s\n", wall_seconds() - started,
           load_average(), o.json_path);
    fclose(json);
    return 0;
}
