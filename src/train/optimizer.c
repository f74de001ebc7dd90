#include "train/optimizer.h"

#include <math.h>

#include "core/errors.h"
#include "ops/ops.h"

void optimizer_allocate(adamw_state *state, const param_registry *registry) {
    state->count = registry->total;
    state->m = xaligned_alloc(state->count * sizeof(float));
    state->v = xaligned_alloc(state->count * sizeof(float));
}

void optimizer_free(adamw_state *state) {
    free(state->m);
    free(state->v);
    state->m = state->v = NULL;
}

double gradient_global_norm(const float *grads, size_t count) { return sqrt(sum_of_squares(grads, count)); }

void optimizer_step(adamw_state *state, const param_registry *registry, float *params, const float *grads,
                    const decon_config *c, double lr, double grad_norm, long step) {
    float scale = 1.0f;
    if (c->grad_clip > 0 && grad_norm > c->grad_clip) scale = (float)(c->grad_clip / (grad_norm + 1e-6));
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        adamw_update(params + p->offset, grads + p->offset, state->m + p->offset, state->v + p->offset,
                     p->local_count, (float)lr, (float)c->adam_beta1, (float)c->adam_beta2, (float)c->adam_epsilon,
                     p->weight_decay ? (float)c->weight_decay : 0.0f, (int)step, scale);
    }
}
