// AdamW over the whole parameter registry: global-norm clipping, then one adamw_update
// per tensor (weight decay only on tensors registered with weight_decay: not on norms
// and biases). The moments mirror the parameter buffer's layout over the range of it
// this rank updates: the whole buffer, or with ZeRO-1 (par/zero.h) its dp partition.
#pragma once
#include "core/config.h"
#include "core/params.h"
#include "io/checkpoint.h"  // moment_range

typedef struct {
    float *m, *v;          // Adam moments of buffer elements [range.begin, range.end)
    size_t count;          // range.end - range.begin
    moment_range range;
} adamw_state;

// Moments for the whole buffer ({0, registry->total}).
void optimizer_allocate(adamw_state *state, const param_registry *registry);
// Moments for buffer elements [range.begin, range.end) only (ZeRO-1), zeroed; begin
// should be 16-float aligned (zero_partition's are) to keep the moments 64-byte aligned.
void optimizer_allocate_range(adamw_state *state, const param_registry *registry, moment_range range);
void optimizer_free(adamw_state *state);
// L2 norm of the whole gradient buffer.
double gradient_global_norm(const float *grads, size_t count);
// Clips by config->grad_clip (given the precomputed norm) and applies AdamW with lr to
// the elements of state->range (params and grads are whole buffers; other elements are
// left alone). step is 1-based (bias correction).
void optimizer_step(adamw_state *state, const param_registry *registry, float *params, const float *grads,
                    const decon_config *config, double lr, double grad_norm, long step);
