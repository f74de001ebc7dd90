#include "eval/evaluator.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/errors.h"
#include "eval/json_file.h"
#include "eval/load.h"
#include "eval/logits.h"
#include "eval/skip.h"
#include "io/token_shard.h"
#include "model/layer_plan.h"
#include "ops/ops.h"
#include "record/recorder.h"

static const char *const MODES[REPORT_MODES] = {"full", "skip"};

// The report must not replace one of the inputs (a slip such as --json ckpt/latest.h5).
static void refuse_input_as_report(const eval_options *o) {
    struct stat report;
    if (stat(o->json_path, &report) != 0) return;
    const char *inputs[] = {o->checkpoint, o->perplexity_path, o->cloze_path, o->choice_path, o->record_path,
                            o->record_tokens};
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        struct stat input;
        if (inputs[i] && stat(inputs[i], &input) == 0 && input.st_dev == report.st_dev && input.st_ino == report.st_ino)
            fatal("--json %s is the input file %s: writing the report would replace it; give the report its own "
                  "name, e.g. eval.json", o->json_path, inputs[i]);
    }
}

// The whole token file as ids (checked < vocab_size by token_shard_open).
static int *read_tokens(const char *path, int vocab_size, int64_t *count) {
    token_shard shard;
    token_shard_open(&shard, path, vocab_size);
    int *tokens = xmalloc((size_t)shard.count * sizeof(int));
    for (uint64_t i = 0; i < shard.count; i++) tokens[i] = (int)token_shard_get(&shard, i);
    *count = (int64_t)shard.count;
    token_shard_close(&shard);
    return tokens;
}

static int max_int(int a, int b) { return a > b ? a : b; }

int evaluator_run(const eval_options *o) {
    double t_start = wall_seconds();
    int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    ops_set_threads(threads);
    if (!o->perplexity_path && !o->cloze_path && !o->choice_path && !o->record_path)
        fatal("nothing to evaluate: give --ppl tokens.bin, --cloze file.jsonl, --choice file.jsonl or --record "
              "attn.h5");
    if (o->json_path) {
        refuse_input_as_report(o);
        json_file_probe(o->json_path, "eval.json");  // fails now, not after a long evaluation
    }

    // The model's config first: a missing or damaged checkpoint fails before anything else.
    decon_config config;
    eval_read_config(&config, o->checkpoint);
    int limit = config.max_position_embeddings > 0 ? config.max_position_embeddings : EVAL_CONTEXT_LIMIT;
    const char *limit_source = config.max_position_embeddings > 0 ? "the model's max_position_embeddings" : "decon-eval's limit";

    // Every input is read and checked before the model is loaded.
    int contexts[REPORT_MAX_CONTEXTS], context_count = o->context_count;
    memcpy(contexts, o->contexts, sizeof contexts);
    if (context_count == 0) contexts[context_count++] = config.sequence_length;
    int longest = 0;
    int64_t token_count = 0, most_windows = 0;
    int *tokens = NULL;
    if (o->perplexity_path) {
        tokens = read_tokens(o->perplexity_path, config.vocab_size, &token_count);
        for (int i = 0; i < context_count; i++) {
            int c = contexts[i];
            if (c > limit)
                fatal("--ctx %d is longer than the %d tokens allowed (%s); use a shorter context", c, limit, limit_source);
            if (token_count < (int64_t)c + 1)
                fatal("--ctx %d needs at least %d tokens of %s, which holds %lld; use a shorter context or a longer "
                      "file", c, c + 1, o->perplexity_path, (long long)token_count);
            int stride = o->stride > 0 ? o->stride : max_int(1, c / 2);
            if (stride > c) fatal("--stride %d is longer than --ctx %d; a stride must be at most the context", stride, c);
            longest = max_int(longest, c);
            int64_t windows = perplexity_window_count(token_count, c, stride);
            if (o->max_windows > 0 && windows > o->max_windows) windows = o->max_windows;
            if (windows > most_windows) most_windows = windows;
        }
    }
    cloze_task cloze = {0};
    choice_task choice = {0};
    if (o->cloze_path) {
        cloze_load(&cloze, o->cloze_path, config.vocab_size, limit);
        longest = max_int(longest, cloze.longest);
        if (cloze.count > most_windows) most_windows = cloze.count;
    }
    if (o->choice_path) {
        choice_load(&choice, o->choice_path, config.vocab_size, limit);
        longest = max_int(longest, choice.longest);
        if (choice.requests > most_windows) most_windows = choice.requests;
    }

    // --record: the first K windows of the validation shard (or --record-tokens) at the
    // trained length, read and checked before the model is loaded.
    attention_recorder recorder;
    if (o->record_path) {
        const char *shard = o->record_tokens ? o->record_tokens : config.validation;
        if (!shard[0])
            fatal("--record: %s names no [data] validation shard to take the sequences from; give --record-tokens "
                  "FILE", o->checkpoint);
        recorder_init(&recorder, &config, o->record_path, shard,
                      o->record_sequences > 0 ? o->record_sequences : config.record_sequences,
                      o->record_layers ? o->record_layers : config.record_layers,
                      o->record_dtype ? o->record_dtype : config.record_dtype, "decon-eval", "--record",
                      MPI_COMM_WORLD);
        longest = max_int(longest, config.sequence_length);
        if (recorder.sequences > most_windows) most_windows = recorder.sequences;
    }

    // One allocation for the longest input; as many sequences per pass as the budget allows.
    int batch_tokens = o->batch_tokens > 0 ? o->batch_tokens : EVAL_DEFAULT_BATCH_TOKENS;
    int64_t batch = max_int(1, batch_tokens / longest);
    if (batch > most_windows) batch = most_windows;
    model m;
    train_state state;
    eval_load_model(&m, &config, o->checkpoint, (int)batch, longest, &state);

    eval_report r = {
        .checkpoint = o->checkpoint,
        .step = state.step,
        .parameters = params_total_logical(&m.registry),
        .variant = config.variant,
        .layout = config.layout,
        .layers = config.num_hidden_layers,
        .trained_length = config.sequence_length,
        .vocab_size = config.vocab_size,
        .skip_requested = o->skip,
        .perplexity_path = o->perplexity_path,
        .perplexity_tokens = token_count,
        .cloze_path = o->cloze_path,
        .choice_path = o->choice_path,
        .length_normalize = o->length_normalize,
    };
    int n = config.num_hidden_layers;
    char *letters = xmalloc((size_t)n + 1);
    layer_plan_letters(letters, (const mixer_kind *const *)m.plan, n);
    snprintf(r.plan, sizeof r.plan, "%s", letters);
    free(letters);
    bool *skipped = xcalloc((size_t)n, sizeof(bool));
    skip_mask_from_plan(skipped, (const mixer_kind *const *)m.plan, n);
    for (int l = 0; l < n; l++)
        if (skipped[l] && r.skipped_count < (int)(sizeof r.skipped_layers / sizeof r.skipped_layers[0]))
            r.skipped_layers[r.skipped_count++] = l + 1;
    int modes = o->skip && r.skipped_count > 0 ? 2 : 1;
    report_print_model(&r);

    if (o->record_path) {  // the full model (nothing skipped), at the checkpoint's step
        char *config_text = config_to_text(&config);
        recording_result recorded = recorder_record(&recorder, &m, state.step, config_text, MPI_COMM_WORLD);
        info("recorded attention at step %lld: %d layers x %d sequences, loss %.4f -> %s (%.1f MB, %.2f s)",
             (long long)state.step, recorded.layers, recorder.sequences, recorded.loss, o->record_path,
             (double)recorded.bytes * 1e-6, recorded.seconds);
        free(config_text);
        recorder_free(&recorder);
    }

    if (o->perplexity_path) {
        report_print_perplexity_header(&r);
        for (int mode = 0; mode < modes; mode++) {
            model_set_skipped(&m, mode ? skipped : NULL);
            for (int i = 0; i < context_count; i++) {
                int c = contexts[i], stride = o->stride > 0 ? o->stride : max_int(1, c / 2);
                double t0 = wall_seconds();
                report_perplexity_row *row = &r.perplexity[r.perplexity_rows++];
                row->result = perplexity_evaluate(&m, tokens, token_count, c, stride, o->max_windows);
                row->mode = MODES[mode];
                row->extrapolated = c > config.sequence_length;
                row->seconds = wall_seconds() - t0;
                report_print_perplexity_row(&r, row);
            }
        }
        report_print_perplexity_footer(&r);
    }
    if (o->logits_path) {  // the full model, the first window of the first context
        model_set_skipped(&m, NULL);
        eval_write_logits(&m, tokens, contexts[0], o->logits_path);
        info("wrote the logits of tokens 0..%d of %s to %s", contexts[0] - 1, o->perplexity_path, o->logits_path);
    }
    if (o->cloze_path) {
        report_print_cloze_header(&r, cloze.count);
        for (int mode = 0; mode < modes; mode++) {
            model_set_skipped(&m, mode ? skipped : NULL);
            r.cloze[mode] = cloze_evaluate(&m, &cloze);
            r.cloze_modes[mode] = MODES[mode];
            r.cloze_rows++;
            report_print_cloze_row(MODES[mode], &r.cloze[mode]);
        }
    }
    if (o->choice_path) {
        report_print_choice_header(&r, choice.count);
        for (int mode = 0; mode < modes; mode++) {
            model_set_skipped(&m, mode ? skipped : NULL);
            r.choice[mode] = choice_evaluate(&m, &choice, o->length_normalize);
            r.choice_modes[mode] = MODES[mode];
            r.choice_rows++;
            report_print_choice_row(MODES[mode], &r.choice[mode]);
        }
    }
    model_set_skipped(&m, NULL);
    r.seconds = wall_seconds() - t_start;
    info("%s", "");
    if (o->json_path) {
        report_write_json(&r, o->json_path);
        info("wrote %s (%.1f s, threads %d)", o->json_path, r.seconds, threads);
    } else {
        info("done in %.1f s (threads %d)", r.seconds, threads);
    }
    free(skipped);
    free(tokens);
    if (o->cloze_path) cloze_free(&cloze);
    if (o->choice_path) choice_free(&choice);
    model_free(&m);
    return 0;
}
