// The generation loop of decon-generate (docs/design.md "Generating text"): prefill every
// sequence's prompt, then one decode step per new token for the whole batch, choosing each
// running sequence's next token with its own sampler (eval/sampler.h) until it stops:
//   eos          it chose the end-of-sequence token (kept as its last generated id);
//   max-new      it has max_new generated tokens;
//   max-context  prompt + generated fill max_context (no position is left to predict).
// A step takes every sequence of the session, so a stopped one is fed DECODE_IDLE
// (model/decode.h: retired, its logits ignored): a running sequence never waits for a
// stopped one. The loop ends when every sequence has stopped.
//
// Under MPI (comm of several ranks: one tensor-parallel group) every rank runs the same
// source calls; rank 0 alone samples and broadcasts the chosen tokens (MPI_Bcast), so the
// ranks cannot diverge, and rank 0 alone calls the listener.
#pragma once
#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "eval/sampler.h"
#include "model/decode.h"

typedef enum { GENERATE_RUNNING, GENERATE_EOS, GENERATE_MAX_NEW, GENERATE_MAX_CONTEXT } generate_stop;

// "running", "eos", "max-new", "max-context".
const char *generate_stop_name(generate_stop stop);

// Where logits come from: decode_prefill / decode_step / decode_error of a session
// (generate_source_of), or, in the loop's unit test, a scripted source.
typedef struct {
    void *context;
    bool (*prefill)(void *context, int count, const int *sequences, const int *const *prompts, const int *lengths,
                    float *logits);
    bool (*step)(void *context, const int *tokens, float *logits);
    const char *(*error)(void *context);
} generate_source;

generate_source generate_source_of(decode_session *s);

typedef struct {
    int max_new;            // >= 1
    int max_context;        // every prompt is shorter
    int eos_id;             // -1: none (no sequence stops at EOS)
    int vocab;              // the logits' row length
    int choices;            // tokens 0 .. choices-1 may be chosen (<= vocab: the tokenizer's pieces)
    sampler_settings sampling;
    MPI_Comm comm;          // rank 0 samples and broadcasts; MPI_COMM_SELF on one rank
} generate_settings;

typedef struct {
    const int *prompt;      // not owned
    int prompt_length;
    uint64_t stream;        // its sampler's random stream
    int *generated;         // [max_new], filled by generate_run (owned by the caller)
    int count;
    generate_stop stop;
} generate_sequence;

// Rank 0 only: each chosen token as it is chosen, and each sequence once it has stopped.
typedef struct {
    void *context;
    void (*token)(void *context, int sequence, int token);
    void (*stopped)(void *context, int sequence);
} generate_listener;

typedef struct {
    double prefill_seconds, decode_seconds;
    long long prefill_tokens;   // the prompts' tokens
    long long decode_steps;     // decode steps of the whole batch
    long long decode_tokens;    // tokens fed by those steps for running sequences (dummies not counted)
} generate_timing;

// Runs sequences[0 .. count) (the source's batch) to their stops. Returns false with
// error set (the source's decode_error, or a prompt the settings refuse) and sequences
// unfinished on bad input; every rank returns the same. listener may be NULL.
bool generate_run(const generate_settings *settings, generate_source *source, generate_sequence *sequences,
                  int count, const generate_listener *listener, generate_timing *timing, char *error,
                  size_t error_size);
