// Sliding-window perplexity on a token stream (the study's Table 4.4).
//
// A window is C model inputs tokens[s .. s+C-1] with their next-token targets
// tokens[s+1 .. s+C] (the trainer's sequences: C inputs, C predictions). Windows start
// every S tokens (1 <= S <= C). The first window scores all C of its targets; every later
// window scores only its last S, so every target tokens[1 .. N-1] of an N-token stream is
// scored exactly once, with up to C tokens of context in front of it. The last window is
// moved back to end exactly at the stream's end (it then scores fewer than S new targets),
// so no window is ever shorter than C, except when the stream holds only N-1 < C targets:
// then there is one window of N-1. S = C gives the trainer's non-overlapping windows
// (window k starts at k*C). PPL = exp(sum of scored losses / tokens scored).
#pragma once
#include <stdint.h>

#include "model/model.h"

typedef struct {
    int64_t start;      // first input token
    int length;         // model inputs (= C, or N-1 for a stream shorter than C+1)
    int first_scored;   // positions [first_scored, length) carry the loss
} perplexity_window;

// Windows needed to score every target of a stream of `tokens` tokens (0 when tokens < 2).
int64_t perplexity_window_count(int64_t tokens, int context, int stride);
// Window `index` (< perplexity_window_count) of that stream.
perplexity_window perplexity_window_at(int64_t tokens, int context, int stride, int64_t index);

typedef struct {
    int context, stride;
    int64_t windows;          // evaluated (capped by max_windows)
    int64_t windows_total;    // needed for the whole stream
    int64_t tokens_scored;
    double loss_sum;          // summed per-token losses (nats)
    double loss;              // mean
    double perplexity;        // exp(loss)
} perplexity_result;

// Scores tokens[0 .. count-1] with windows of `context` and `stride`, at most max_windows
// of them (<= 0: all), batching up to m->max_batch windows per forward pass. The model
// must be allocated for seq_len >= context; every token must be < vocab_size.
perplexity_result perplexity_evaluate(model *m, const int *tokens, int64_t count, int context, int stride,
                                      int64_t max_windows);
