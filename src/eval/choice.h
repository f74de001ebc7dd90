// Zero-shot multiple choice. File format, one JSON object per line:
//   {"context": [token ids], "choices": [[ids], [ids], ...], "label": k}
// (at least two choices; label is the 0-based index of the right one). Each choice is
// scored by sum log p(choice | context), or that sum divided by the choice's token count
// with length normalisation; the prediction is the best-scoring choice (the first one on
// ties) and accuracy counts predictions equal to the label.
#pragma once
#include <stdbool.h>

#include "model/model.h"

typedef struct {
    int *context;
    int context_length;
    int **choices;
    int *choice_lengths;
    int choice_count;
    int label;
    int line;
} choice_example;

typedef struct {
    char path[4096];
    choice_example *examples;
    int count;
    int requests;                   // choices over all examples
    int longest;                    // model inputs of the longest (context, choice)
} choice_task;

// Reads and checks the whole file (fatal "file:line: ..." on the first bad line).
void choice_load(choice_task *task, const char *path, int vocab_size, int max_length);
void choice_free(choice_task *task);

typedef struct {
    int examples, correct;
    double accuracy;
    double chance;                  // mean over examples of 1 / choices
    bool length_normalized;
} choice_result;

choice_result choice_evaluate(model *m, const choice_task *task, bool length_normalize);
// The prediction for one example from its per-choice log-likelihoods.
int choice_predict(const double *log_likelihoods, const int *choice_lengths, int choice_count, bool length_normalize);
