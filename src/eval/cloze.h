// Last-word accuracy (LAMBADA-style cloze). File format, one JSON object per line:
//   {"context": [token ids], "target": [token ids of the passage's final word]}
// A passage is correct when greedy decoding after the context reproduces every target
// token (the argmax at each target position, given the context and the earlier target
// tokens, is the target token). Also reported: the target's mean log-likelihood.
#pragma once
#include <stdint.h>

#include "model/model.h"

typedef struct {
    int *context, *target;
    int context_length, target_length;
    int line;                       // in the file, for messages
} cloze_example;

typedef struct {
    char path[4096];
    cloze_example *examples;
    int count;
    int longest;                    // model inputs of the longest example
} cloze_task;

// Reads and checks the whole file (fatal "file:line: ..." on the first bad line): ids
// < vocab_size, context + target - 1 <= max_length, at least one example.
void cloze_load(cloze_task *task, const char *path, int vocab_size, int max_length);
void cloze_free(cloze_task *task);

typedef struct {
    int examples, correct;
    double accuracy;                    // correct / examples
    double mean_log_likelihood;         // mean over passages of log p(target | context) (nats)
    double mean_token_log_likelihood;   // summed over every target token / target tokens
    int64_t target_tokens;
} cloze_result;

cloze_result cloze_evaluate(model *m, const cloze_task *task);
