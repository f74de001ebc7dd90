// decon-generate's work (docs/design.md "Generating text"): load a checkpoint (on one
// rank, or split over the ranks of mpirun as one tensor-parallel group), turn the prompts
// into ids through the checkpoint's tokenizer, generate from the model's decode caches
// (model/decode.h) with the loop of eval/generate.h, print the text as it is produced,
// and write the JSON report.
#pragma once
#include <stdbool.h>

#include "eval/sampler.h"

enum { GENERATE_DEFAULT_MAX_NEW = 64 };

typedef struct {
    const char *checkpoint;
    // Exactly one source of prompts: a text, a file of one text per line, or ids.
    const char *prompt_text;
    const char *prompt_file;
    const int *prompt_ids;
    int prompt_id_count;
    int max_new;                // >= 1
    int max_context;            // 0: the checkpoint's train sequence length
    int batch;                  // samples per prompt (>= 1), independent streams
    sampler_settings sampling;
    const char *json_path;      // NULL: none
    const char *tokenizer;      // NULL: the checkpoint's (io/tokenizer_path.h)
    int threads;                // 0: every core
} generator_options;

// Returns the exit code (0); every failure is fatal with one line.
int generator_run(const generator_options *options);
