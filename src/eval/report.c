#include "eval/report.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "eval/json_file.h"

void report_print_model(const eval_report *r) {
    info("checkpoint  %s (step %lld)", r->checkpoint, (long long)r->step);
    info("model       %s, %s: %s (%d layers, %.2fM parameters, vocab %d), trained at %d tokens", r->variant, r->layout,
         r->plan, r->layers, (double)r->parameters / 1e6, r->vocab_size, r->trained_length);
    if (!r->skip_requested) return;
    if (r->skipped_count == 0) {
        info("skip        the model has no non-standard layer (plan %s): skipping would remove nothing, so no "
             "skip rows", r->plan);
        return;
    }
    char layers[1024] = "";
    size_t used = 0;
    for (int i = 0; i < r->skipped_count && used < sizeof layers; i++)
        used += (size_t)snprintf(layers + used, sizeof layers - used, "%s%d", i ? ", " : "", r->skipped_layers[i]);
    info("skip        layers %s (non-standard) removed, residual passed through; rows marked 'skip'", layers);
}

void report_print_perplexity_header(const eval_report *r) {
    info("%s", "");
    info("perplexity  %s (%lld tokens; window = context inputs, later windows score their last stride tokens)",
         r->perplexity_path, (long long)r->perplexity_tokens);
    info("  %-5s %8s %7s %15s %9s %9s %11s %8s", "model", "context", "stride", "windows", "tokens", "loss", "ppl",
         "seconds");
}

void report_print_perplexity_row(const eval_report *r, const report_perplexity_row *row) {
    (void)r;
    const perplexity_result *p = &row->result;
    char windows[48];
    if (p->windows < p->windows_total) snprintf(windows, sizeof windows, "%lld/%lld", (long long)p->windows,
                                                (long long)p->windows_total);
    else snprintf(windows, sizeof windows, "%lld", (long long)p->windows);
    info("  %-5s %7d%c %7d %15s %9lld %9.4f %11.3f %8.1f", row->mode, p->context, row->extrapolated ? '*' : ' ',
         p->stride, windows, (long long)p->tokens_scored, p->loss, p->perplexity, row->seconds);
}

void report_print_perplexity_footer(const eval_report *r) {
    bool extrapolated = false, capped = false;
    for (int i = 0; i < r->perplexity_rows; i++) {
        extrapolated |= r->perplexity[i].extrapolated;
        capped |= r->perplexity[i].result.windows < r->perplexity[i].result.windows_total;
    }
    if (extrapolated) info("  * longer than the trained %d tokens (RoPE extrapolation)", r->trained_length);
    if (capped) info("  windows a/b: the first a of b windows (--max-windows)");
}

void report_print_cloze_header(const eval_report *r, int examples) {
    info("%s", "");
    info("cloze       %s (%d passages; correct = greedy decoding reproduces every target token)", r->cloze_path,
         examples);
    info("  %-5s %9s %13s %16s %16s", "model", "accuracy", "correct", "mean log p(tgt)", "per token");
}

void report_print_cloze_row(const char *mode, const cloze_result *c) {
    char correct[48];
    snprintf(correct, sizeof correct, "%d/%d", c->correct, c->examples);
    info("  %-5s %8.2f%% %13s %16.4f %16.4f", mode, 100.0 * c->accuracy, correct, c->mean_log_likelihood,
         c->mean_token_log_likelihood);
}

void report_print_choice_header(const eval_report *r, int examples) {
    info("%s", "");
    info("choice      %s (%d examples; score = %s)", r->choice_path, examples,
         r->length_normalize ? "mean log p per choice token (--length-normalize)" : "sum log p(choice | context)");
    info("  %-5s %9s %13s %9s", "model", "accuracy", "correct", "chance");
}

void report_print_choice_row(const char *mode, const choice_result *c) {
    char correct[48];
    snprintf(correct, sizeof correct, "%d/%d", c->correct, c->examples);
    info("  %-5s %8.2f%% %13s %8.2f%%", mode, 100.0 * c->accuracy, correct, 100.0 * c->chance);
}

// ---- JSON -----------------------------------------------------------------------------

static cJSON *checked(cJSON *item) {
    if (!item) fatal("out of memory building the JSON report");
    return item;
}

static void add_number(cJSON *object, const char *key, double value) {
    checked(cJSON_AddNumberToObject(object, key, value));
}

static void add_string(cJSON *object, const char *key, const char *value) {
    checked(cJSON_AddStringToObject(object, key, value ? value : ""));
}

static cJSON *model_json(const eval_report *r) {
    cJSON *o = checked(cJSON_CreateObject());
    add_string(o, "variant", r->variant);
    add_string(o, "layout", r->layout);
    add_string(o, "plan", r->plan);
    add_number(o, "layers", r->layers);
    add_number(o, "parameters", (double)r->parameters);
    add_number(o, "vocab_size", r->vocab_size);
    add_number(o, "sequence_length", r->trained_length);
    return o;
}

static cJSON *skip_json(const eval_report *r) {
    cJSON *o = checked(cJSON_CreateObject());
    checked(cJSON_AddBoolToObject(o, "requested", r->skip_requested));
    cJSON *layers = checked(cJSON_AddArrayToObject(o, "skipped_layers"));
    for (int i = 0; i < r->skipped_count; i++) cJSON_AddItemToArray(layers, checked(cJSON_CreateNumber(r->skipped_layers[i])));
    if (r->skipped_count == 0) add_string(o, "note", "no non-standard layer: nothing to skip");
    return o;
}

static cJSON *perplexity_json(const eval_report *r) {
    cJSON *o = checked(cJSON_CreateObject());
    add_string(o, "file", r->perplexity_path);
    add_number(o, "tokens", (double)r->perplexity_tokens);
    cJSON *rows = checked(cJSON_AddArrayToObject(o, "results"));
    for (int i = 0; i < r->perplexity_rows; i++) {
        const report_perplexity_row *row = &r->perplexity[i];
        const perplexity_result *p = &row->result;
        cJSON *x = checked(cJSON_CreateObject());
        add_string(x, "model", row->mode);
        add_number(x, "context", p->context);
        add_number(x, "stride", p->stride);
        add_number(x, "windows", (double)p->windows);
        add_number(x, "windows_total", (double)p->windows_total);
        add_number(x, "tokens_scored", (double)p->tokens_scored);
        add_number(x, "loss", p->loss);
        add_number(x, "perplexity", p->perplexity);
        checked(cJSON_AddBoolToObject(x, "extrapolated", row->extrapolated));
        add_number(x, "seconds", row->seconds);
        cJSON_AddItemToArray(rows, x);
    }
    return o;
}

static cJSON *cloze_json(const eval_report *r) {
    cJSON *o = checked(cJSON_CreateObject());
    add_string(o, "file", r->cloze_path);
    cJSON *rows = checked(cJSON_AddArrayToObject(o, "results"));
    for (int i = 0; i < r->cloze_rows; i++) {
        const cloze_result *c = &r->cloze[i];
        cJSON *x = checked(cJSON_CreateObject());
        add_string(x, "model", r->cloze_modes[i]);
        add_number(x, "examples", c->examples);
        add_number(x, "correct", c->correct);
        add_number(x, "accuracy", c->accuracy);
        add_number(x, "mean_log_likelihood", c->mean_log_likelihood);
        add_number(x, "mean_token_log_likelihood", c->mean_token_log_likelihood);
        add_number(x, "target_tokens", (double)c->target_tokens);
        cJSON_AddItemToArray(rows, x);
    }
    return o;
}

static cJSON *choice_json(const eval_report *r) {
    cJSON *o = checked(cJSON_CreateObject());
    add_string(o, "file", r->choice_path);
    checked(cJSON_AddBoolToObject(o, "length_normalized", r->length_normalize));
    cJSON *rows = checked(cJSON_AddArrayToObject(o, "results"));
    for (int i = 0; i < r->choice_rows; i++) {
        const choice_result *c = &r->choice[i];
        cJSON *x = checked(cJSON_CreateObject());
        add_string(x, "model", r->choice_modes[i]);
        add_number(x, "examples", c->examples);
        add_number(x, "correct", c->correct);
        add_number(x, "accuracy", c->accuracy);
        add_number(x, "chance", c->chance);
        cJSON_AddItemToArray(rows, x);
    }
    return o;
}

void report_write_json(const eval_report *r, const char *path) {
    cJSON *root = checked(cJSON_CreateObject());
    add_string(root, "checkpoint", r->checkpoint);
    add_number(root, "step", (double)r->step);
    cJSON_AddItemToObject(root, "model", model_json(r));
    cJSON_AddItemToObject(root, "skip", skip_json(r));
    if (r->perplexity_path) cJSON_AddItemToObject(root, "perplexity", perplexity_json(r));
    if (r->cloze_path) cJSON_AddItemToObject(root, "cloze", cloze_json(r));
    if (r->choice_path) cJSON_AddItemToObject(root, "choice", choice_json(r));
    add_number(root, "seconds", r->seconds);
    json_file_write(root, path);
    cJSON_Delete(root);
}
