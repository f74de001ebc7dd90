// decon-eval: evaluate a checkpoint (perplexity at several contexts, cloze, multiple
// choice; optionally with a hybrid model's non-standard layers skipped).
//   decon-eval <checkpoint.h5> [--ppl tokens.bin] [--ctx 128,256,...] [--stride N] [--skip]
//              [--cloze cloze.jsonl] [--choice task.jsonl] [--length-normalize]
//              [--json out.json] [--logits out.npy] [--threads N] [--max-windows N] [--batch-tokens N]
//              [--record attn.h5 [--record-sequences K] [--record-layers all|1,3] [--record-dtype float16]
//               [--record-tokens FILE]] [--decode-check]
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/options.h"
#include "par/program.h"
#include "eval/decode_check.h"
#include "eval/evaluator.h"

static void usage(void) {
    fprintf(stderr,
            "usage: decon-eval <checkpoint.h5> [options]\n"
            "  --ppl FILE          perplexity on a token shard (e.g. data/corpus/test.bin)\n"
            "  --ctx C1,C2,...     context lengths for --ppl (default: the trained sequence length);\n"
            "                      longer than trained is allowed (RoPE extrapolation)\n"
            "  --stride N          window stride for --ppl (default: context / 2)\n"
            "  --max-windows N     score only the first N windows of each context\n"
            "  --skip              also evaluate with the non-standard layers of a hybrid model removed\n"
            "  --cloze FILE        last-word accuracy, JSON lines {\"context\": [ids], \"target\": [ids]}\n"
            "  --choice FILE       multiple choice, JSON lines {\"context\": [ids], \"choices\": [[ids], ...], \"label\": k}\n"
            "  --length-normalize  score choices by mean instead of summed log-likelihood\n"
            "  --json FILE         also write every figure as JSON\n"
            "  --logits FILE       write the logits of the first --ppl window (the first --ctx) as .npy,\n"
            "                      float32 [ctx, vocab], e.g. to compare with an export (decon-export)\n"
            "  --threads N         threads (default: every core)\n"
            "  --batch-tokens N    model inputs per forward pass (default %d; lower it for big models)\n"
            "  --record FILE       record attention (A and score histograms) at the checkpoint's step into\n"
            "                      FILE (HDF5; appended to when it exists), from the first K windows of\n"
            "                      the checkpoint's [data] validation shard\n"
            "  --record-sequences K  sequences to record (default: the checkpoint's [io] record_sequences)\n"
            "  --record-layers L   all or 1-based layer ids, e.g. 1,3 (default: [io] record_layers)\n"
            "  --record-dtype T    float32 or float16 (default: [io] record_dtype)\n"
            "  --record-tokens FILE  token shard to take the sequences from instead\n"
            "  --decode-check      greedy decoding from the model's caches must equal the full forward's argmax\n"
            "                      at every position (prompts from --ppl FILE or [data] validation; context:\n"
            "                      the first --ctx or the trained length); one line, exit 1 on a mismatch\n",
            EVAL_DEFAULT_BATCH_TOKENS);
}

// The options that take a value (checked before the value is required, so that a
// misspelt last option is reported as unknown, not as lacking a value).
static bool takes_value(const char *option) {
    static const char *const OPTIONS[] = {"--ppl", "--ctx", "--stride", "--max-windows", "--cloze", "--choice",
                                          "--json", "--logits", "--threads", "--batch-tokens", "--record",
                                          "--record-sequences", "--record-layers", "--record-dtype", "--record-tokens"};
    for (size_t i = 0; i < sizeof OPTIONS / sizeof *OPTIONS; i++)
        if (strcmp(option, OPTIONS[i]) == 0) return true;
    return false;
}

static void parse_contexts(eval_options *o, const char *text) {
    char buffer[1024];
    if (strlen(text) >= sizeof buffer) fatal("--ctx '%.40s...': too long", text);
    snprintf(buffer, sizeof buffer, "%s", text);
    o->context_count = 0;
    char *save = NULL;
    for (char *item = strtok_r(buffer, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (o->context_count == REPORT_MAX_CONTEXTS) fatal("--ctx: at most %d contexts", REPORT_MAX_CONTEXTS);
        o->contexts[o->context_count++] = (int)option_integer("--ctx", item, 1, INT_MAX);
    }
    if (o->context_count == 0) fatal("--ctx '%s': expected context lengths such as 128,256,512", text);
}

int main(int argc, char **argv) {
    int rank, world;
    program_start(&argc, &argv, &rank, &world);
    if (world > 1) fatal("decon-eval runs on one rank; run it without mpirun -np %d", world);

    eval_options o = {0};
    bool decode_check = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            MPI_Finalize();
            return 0;
        }
        if (strcmp(a, "--skip") == 0) { o.skip = true; continue; }
        if (strcmp(a, "--length-normalize") == 0) { o.length_normalize = true; continue; }
        if (strcmp(a, "--decode-check") == 0) { decode_check = true; continue; }
        if (a[0] != '-') {
            if (o.checkpoint) fatal("more than one checkpoint given (%s and %s)", o.checkpoint, a);
            o.checkpoint = a;
            continue;
        }
        if (!takes_value(a)) fatal("unknown option %s; see decon-eval --help", a);
        if (i + 1 >= argc) fatal("%s needs a value; see decon-eval --help", a);
        const char *value = argv[++i];
        if (strcmp(a, "--ppl") == 0) o.perplexity_path = value;
        else if (strcmp(a, "--ctx") == 0) parse_contexts(&o, value);
        else if (strcmp(a, "--stride") == 0) o.stride = (int)option_integer(a, value, 1, INT_MAX);
        else if (strcmp(a, "--cloze") == 0) o.cloze_path = value;
        else if (strcmp(a, "--choice") == 0) o.choice_path = value;
        else if (strcmp(a, "--json") == 0) o.json_path = value;
        else if (strcmp(a, "--logits") == 0) o.logits_path = value;
        else if (strcmp(a, "--threads") == 0) o.threads = (int)option_integer(a, value, 1, 4096);
        else if (strcmp(a, "--max-windows") == 0) o.max_windows = option_integer(a, value, 1, LONG_MAX);
        else if (strcmp(a, "--batch-tokens") == 0) o.batch_tokens = (int)option_integer(a, value, 1, INT_MAX);
        else if (strcmp(a, "--record") == 0) o.record_path = value;
        else if (strcmp(a, "--record-sequences") == 0) o.record_sequences = (int)option_integer(a, value, 1, 4096);
        else if (strcmp(a, "--record-layers") == 0) o.record_layers = value;
        else if (strcmp(a, "--record-dtype") == 0) o.record_dtype = value;
        else if (strcmp(a, "--record-tokens") == 0) o.record_tokens = value;
        else fatal("internal: option %s has no handler", a);
    }
    if (!o.record_path && (o.record_sequences || o.record_layers || o.record_dtype || o.record_tokens))
        fatal("--record-sequences, --record-layers, --record-dtype and --record-tokens need --record FILE");
    if (o.logits_path && !o.perplexity_path) fatal("--logits needs --ppl FILE: it writes the logits of its first window");
    if (!o.checkpoint) {
        usage();
        fatal("no checkpoint given; e.g. decon-eval runs/tiny/ckpt/latest.h5 --ppl data/corpus/test.bin");
    }
    // --decode-check alone runs only the check; with other evaluations, after them.
    bool evaluations = o.perplexity_path || o.cloze_path || o.choice_path || o.record_path;
    int code = decode_check && !evaluations ? 0 : evaluator_run(&o);
    if (decode_check && code == 0)
        code = eval_decode_check(o.checkpoint, o.perplexity_path, o.context_count ? o.contexts[0] : 0, o.threads);
    MPI_Finalize();
    return code;
}
