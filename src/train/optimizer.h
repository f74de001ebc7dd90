// AdamW over the whole parameter registry: global-norm clipping, then one adamw_update
// per tensor (weight decay only on tensors registered with weight_decay: not on norms
// and biases). The moments mirror the parameter buffer's layout.
#pragma once
#include "core/config.h"
#include "core/params.h"

typedef struct {
    float *m, *v;          // Adam moments, registry->total floats each
    size_t count;
} adamw_state;

void optimizer_allocate(adamw_state *state, const param_registry *registry);
void optimizer_free(adamw_state *state);
// L2 norm of the whole gradient buffer.
double gradient_global_norm(const float *grads, size_t count);
// Clips by config->grad_clip (given the precomputed norm) and applies AdamW with lr.
// step is 1-based (bias correction).
void optimizer_step(adamw_state *state, const param_registry *registry, float *params, const float *grads,
                    const decon_config *config, double lr, double grad_norm, long step);
