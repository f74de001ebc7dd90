// decon-eval's work: load a checkpoint, run the requested evaluations (perplexity at
// several contexts, cloze, multiple choice; each also with the non-standard layers
// skipped when asked), print the table and write the JSON report.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "eval/report.h"

// The longest context (and task example) when the model's config declares no
// max_position_embeddings: RoPE extrapolates, so longer than trained is allowed.
enum { EVAL_CONTEXT_LIMIT = 65536, EVAL_DEFAULT_BATCH_TOKENS = 4096 };

typedef struct {
    const char *checkpoint;
    const char *perplexity_path;
    int contexts[REPORT_MAX_CONTEXTS];
    int context_count;                  // 0: the trained sequence length
    int stride;                         // 0: context / 2
    bool skip;
    const char *cloze_path, *choice_path;
    bool length_normalize;
    const char *json_path;
    const char *logits_path;            // --logits: the first --ppl window's logits (.npy)
    int threads;                        // 0: every core
    int64_t max_windows;                // 0: all
    int batch_tokens;                   // model inputs per forward pass (0: the default)
    // --record: an attention recording at the checkpoint's step (record/recorder.h)
    const char *record_path;
    int record_sequences;               // 0: the checkpoint's [io] record_sequences
    const char *record_layers;          // NULL: the checkpoint's [io] record_layers
    const char *record_dtype;           // NULL: the checkpoint's [io] record_dtype
    const char *record_tokens;          // NULL: the checkpoint's [data] validation
} eval_options;

// Returns the exit code (0); every failure is fatal with one line.
int evaluator_run(const eval_options *options);
