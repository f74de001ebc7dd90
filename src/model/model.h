// The decoder-only model (DESIGN.md section 4): embedding, pre-norm blocks
//   x += Mixer(RMSNorm(x));  x += SwiGLU-MLP(RMSNorm(x))
// final RMSNorm and an LM head (tied to the embedding or not), softmax cross entropy.
// One parameter buffer, one gradient buffer (same layout, from the registry), one
// activation arena sized for the largest micro-batch, nothing allocated per step.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/params.h"
#include "mixers/mixer.h"

typedef struct {
    int input_norm, post_norm;          // RMSNorm weights
    int gate, up, down;                 // SwiGLU MLP
    float *residual_in;                 // [rows, d] input of the block
    float *norm1, *rstd1;               // RMSNorm before the mixer
    float *residual_mid;                // after the mixer branch
    float *norm2, *rstd2;               // RMSNorm before the MLP
    float *gate_out, *up_out, *act;     // [rows, intermediate]
} block_state;

typedef struct {
    decon_config config;
    param_registry registry;
    float *params, *grads;
    const mixer_kind **plan;
    mixer_layer *mixers;
    block_state *blocks;
    int embed, final_norm, lm_head;     // registry indices (lm_head == embed when tied)
    int max_batch, max_seq_len;
    arena activations, scratch;
    float *rope_cos, *rope_sin;
    int *inputs, *targets;              // the last micro-batch (+ the fixed stream's tokens)
    // The fixed stream (DESIGN.md 5), when a layer's mixer uses it: one extra sequence
    // appended to every micro-batch, whose input is fixed_input (rndembqk: Gaussian, never
    // trained) or the embedding of fixed_tokens (fixedseqqk), and which carries no loss.
    bool has_fixed_stream, fixed_stream_from_tokens;
    float *fixed_input;                 // [max_seq_len, d]
    int *fixed_tokens;                  // [max_seq_len]
    bool uses_embeddings;               // some mixer reads the input embeddings
    float *d_embedded;                  // [rows, d] their gradient
    bool *skipped;                      // per layer: removed for evaluation (skip)
    float *residual_out, *final_normed, *final_rstd;
    float *d_residual, *d_normed;       // backward: residual-stream and normed-input gradients
    float *lm_scratch;
    int batch, seq_len;                 // shape of the last forward
} model;

// Registers every tensor and builds the layer plan; fatal (naming origin) on a bad config.
void model_build(model *m, const decon_config *config, const char *origin);
// Allocates parameter/gradient buffers and the activation arena for up to
// max_batch x max_seq_len tokens.
void model_allocate(model *m, int max_batch, int max_seq_len);
void model_free(model *m);
void model_initialize(model *m, uint64_t seed);

// Forward pass and loss over batch x seq_len tokens. Returns the SUM of per-token
// losses (targets < 0 ignored); per-token losses written to losses[] when non-NULL.
// With backward set, also accumulates loss_scale * d(sum loss)/d(params) into m->grads.
double model_forward_backward(model *m, const int *inputs, const int *targets, int batch, int seq_len,
                              float loss_scale, bool backward, float *losses);
// The context the mixers see for the last forward (for recordings).
mixer_context model_mixer_context(model *m);
// fixedseqqk's fixed token sequence t_s (max_seq_len tokens; ids < vocab_size).
void model_set_fixed_tokens(model *m, const int *tokens);
// Skip (evaluation only): layers removed whole (mixer and MLP), the residual passing
// through. NULL restores the full model. Forward only: backward with skipped layers is
// an error.
void model_set_skipped(model *m, const bool *skipped);

// Matmul FLOPs of one training step per token (forward + backward = 3 x forward),
// counting the LM head and attention scores as DESIGN.md / docs/design.md describe.
double model_training_flops_per_token(const model *m, int seq_len);
size_t model_activation_bytes(const model *m);
// Prints the plan and the parameter count per component and per layer.
void model_print_summary(const model *m);
