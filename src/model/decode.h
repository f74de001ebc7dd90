// Cached decoding of a model (DESIGN.md 12; docs/design.md "Inference"): a session holds,
// per layer, every sequence's decode state of that layer's mixer (a KV cache, a
// recurrent state, or values next to the fixed stream's shared queries and keys), sized
// once for `batch` sequences of up to max_context tokens. Prefill runs the model's
// training forward over the prompts and hands each mixer its saved tensors; a step
// takes one new token per sequence (each at its own position) through every block and
// returns the next-token logits. Cached decoding equals the full forward at every
// position to fp32 rounding (tests/unit/test_decode.c, decon-eval --decode-check).
//
// Tensor parallel: every rank of the model's tp group makes the same calls with the same
// tokens; heads are split as in training, the blocks' edges all-reduce as the training
// forward's do (par/layers.h), and the vocab-parallel LM head's logits are all-gathered,
// so EVERY rank gets the full logits [rows, vocab]. Sequence parallelism is refused.
// Memory: ops_alloc at decode_create, nothing allocated by prefill or step.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"

typedef struct decode_session decode_session;

// A session for `batch` sequences of up to max_context tokens each, over m (built,
// allocated, parameters loaded; m must outlive it). Prefill runs m's forward, so a
// prompt is at most m->max_seq_len tokens and m->max_batch prompts go through at a time;
// a model with a fixed stream (rndembqk, fixedseqqk) computes it here once for
// max_context positions, which needs m->max_seq_len >= max_context. Fatal (one line) on
// sizes the model cannot serve.
decode_session *decode_create(model *m, int batch, int max_context);
void decode_free(decode_session *s);

// Prefill: sequence sequences[i] (0 <= . < batch) starts anew with prompts[i], lengths[i]
// >= 1 tokens, for i < count (different lengths welcome); logits[i * vocab ..] receive the
// logits after the prompt's last token (logits may be NULL). Returns false, leaving every
// sequence as it was, on bad input (decode_error says why: an empty or too long prompt,
// a token outside the vocabulary, a sequence out of range).
bool decode_prefill(decode_session *s, int count, const int *sequences, const int *const *prompts,
                    const int *lengths, float *logits);
// One step: tokens[b] is appended to sequence b at position decode_length(s, b), for every
// b < batch; logits[b * vocab ..] receive the logits after it. tokens[b] = DECODE_IDLE
// instead retires sequence b (a finished one, full or not): it is computed along (the
// batch is one GEMM) but its row's logits mean nothing, and afterwards it holds no tokens,
// as after decode_reset, until a prefill gives it a new prompt. Returns false, changing
// nothing, when a sequence has no prompt yet or is full (max_context tokens), or a token
// is outside the vocabulary (decode_error says which).
enum { DECODE_IDLE = -1 };
bool decode_step(decode_session *s, const int *tokens, float *logits);
// Benchmarks only (bench/bench_decode.c): sequence b, already prefilled, is declared to
// hold `length` tokens (1 <= length < max_context; shorter or longer than it holds), so a
// step's cost at a long context can be timed without prefilling that context. Positions
// past what the sequence was given keep what its state holds there (zeros from
// decode_create, or earlier steps' rows): the next step does exactly the work of position
// `length` (a step's work depends on the positions, never on the values), but its logits
// mean nothing. Returns false, changing nothing, for a sequence out of range, one without
// a prompt, or a length outside [1, max_context).
bool decode_set_length_for_timing(decode_session *s, int sequence, int length);
// Forgets sequence b: it takes no step until a prefill gives it a new prompt.
void decode_reset(decode_session *s, int sequence);
// Tokens held by sequence b (prompt + steps); 0 after decode_reset.
int decode_length(const decode_session *s, int sequence);
const char *decode_error(const decode_session *s);

int decode_batch(const decode_session *s);
int decode_max_context(const decode_session *s);
// Bytes of layer l's decode state on this rank (every sequence's + the shared part), and
// of all layers: the cache that grows with batch and max_context, fp32.
size_t decode_layer_bytes(const decode_session *s, int layer);
size_t decode_cache_bytes(const decode_session *s);
// The logical count of layer l's formula (mixer_kind's cache_floats_per_token,
// state_floats and shared_cache_floats_per_token), in fp32 bytes, for batch sequences of
// max_context tokens: what decode_layer_bytes sums to over the tp ranks.
double decode_formula_bytes(const mixer_kind *kind, const decon_config *config, int batch, int max_context);
