// An independent double-precision reference of the decon model (DESIGN.md sections 4-5)
// for the tests: the same loss as model_forward + model_loss, written in the plainest loops
// (full logits, naive full-softmax attention), and its gradient by a hand-written reverse
// pass. It shares nothing with src/ops or src/model except the parameter registry (to
// find each tensor by name) and the layer plan (which mixer runs in which layer).
#pragma once
#include "core/config.h"
#include "core/params.h"

// Sum over tokens of -log softmax(logits)[target] for tokens[batch, seq_len] (targets < 0
// ignored). params holds registry->total doubles laid out exactly like the fp32 buffer
// (same offsets); the registry must be unsharded (one tensor-parallel rank). When losses
// is non-NULL the per-token losses are written to it (0 for ignored tokens). When grads is
// non-NULL it receives d(sum loss)/d(params) in the same layout (overwritten, padding 0).
// Fatal when a tensor the model needs is missing or has the wrong shape, when the
// registry holds a tensor the reference does not use, or when a layer's mixer has no
// reference.
double model_reference_loss(const decon_config *config, const param_registry *registry, const double *params,
                            const int *tokens, const int *targets, int batch, int seq_len, double *losses,
                            double *grads);
// The same with the fixed stream (DESIGN.md 5) of rndembqk / fixedseqqk models: batch
// counts the loss sequences only; the reference appends one more sequence (index batch)
// whose input is fixed_input [seq_len, d] (rndembqk: not trained) or Emb(fixed_tokens
// [seq_len]) (fixedseqqk), which carries no loss and passes through every block with the
// same parameters. Pass NULL for what the model does not use. model_reference_loss is
// this with both NULL (fatal for a model with a fixed stream).
double model_reference_loss_fixed(const decon_config *config, const param_registry *registry, const double *params,
                                  const int *tokens, const int *targets, int batch, int seq_len,
                                  const double *fixed_input, const int *fixed_tokens, double *losses, double *grads);
