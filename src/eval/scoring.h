// Scoring continuations: log p(continuation | context) and whether greedy decoding
// reproduces the continuation, for many (context, continuation) pairs at once. The model
// reads context ++ continuation[0 .. n-2] and predicts continuation[i] at input position
// |context|-1+i. Pairs are sorted by length and packed into micro-batches, right-padded
// (causal mixers never look right, so padding cannot change a scored position; padded
// positions carry no loss). Used by the cloze and multiple-choice tasks.
#pragma once
#include <stdbool.h>

#include "model/model.h"

typedef struct {
    const int *context;
    int context_length;         // >= 1
    const int *continuation;
    int continuation_length;    // >= 1
} scoring_request;

typedef struct {
    double log_likelihood;      // sum over the continuation's tokens of log p (nats)
    bool greedy_match;          // argmax at every continuation position is the token (when asked)
} scoring_result;

// Model inputs a request needs: context_length + continuation_length - 1.
int scoring_request_length(const scoring_request *request);
// Fills results[count]. With want_greedy, also compares the argmax of the logits at every
// continuation position with the continuation (teacher forcing: every earlier position
// matching is what makes the greedy decode match). The model must be allocated for the
// longest request.
void scoring_evaluate(model *m, const scoring_request *requests, int count, scoring_result *results, bool want_greedy);
