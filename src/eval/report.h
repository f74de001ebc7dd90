// What decon-eval reports: an aligned table on stdout, printed row by row as results
// arrive, and the same figures as one JSON document (--json), written atomically.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "eval/choice.h"
#include "eval/cloze.h"
#include "eval/perplexity.h"

enum { REPORT_MAX_CONTEXTS = 32, REPORT_MODES = 2 };  // modes: full, skip

typedef struct {
    perplexity_result result;
    const char *mode;           // "full" | "skip"
    bool extrapolated;          // context > the trained sequence length
    double seconds;
} report_perplexity_row;

typedef struct {
    // the model
    const char *checkpoint;
    int64_t step, parameters;
    const char *variant, *layout;
    char plan[256];             // one letter per layer (layer_plan_letters)
    int layers, trained_length, vocab_size;
    // skip
    bool skip_requested;
    int skipped_count;
    int skipped_layers[256];    // 1-based
    // perplexity
    const char *perplexity_path;
    int64_t perplexity_tokens;
    report_perplexity_row perplexity[REPORT_MAX_CONTEXTS * REPORT_MODES];
    int perplexity_rows;
    // cloze and multiple choice, one result per mode
    const char *cloze_path;
    cloze_result cloze[REPORT_MODES];
    const char *cloze_modes[REPORT_MODES];
    int cloze_rows;
    const char *choice_path;
    choice_result choice[REPORT_MODES];
    const char *choice_modes[REPORT_MODES];
    int choice_rows;
    bool length_normalize;
    double seconds;
} eval_report;

void report_print_model(const eval_report *r);
void report_print_perplexity_header(const eval_report *r);
void report_print_perplexity_row(const eval_report *r, const report_perplexity_row *row);
void report_print_perplexity_footer(const eval_report *r);
void report_print_cloze_header(const eval_report *r, int examples);
void report_print_cloze_row(const char *mode, const cloze_result *result);
void report_print_choice_header(const eval_report *r, int examples);
void report_print_choice_row(const char *mode, const choice_result *result);
// Writes the whole report as JSON to "<path>.tmp", then renames it (fatal on failure).
void report_write_json(const eval_report *r, const char *path);
