#include "train/optimizer.h"

#include <math.h>

#include "core/errors.h"
#include "ops/ops.h"

void optimizer_allocate(adamw_state *state, const param_registry *registry) {
    optimizer_allocate_range(state, registry, (moment_range){0, registry->total});
}

// The range is checked here once so optimizer_step can index moments without bounds tests.
void optimizer_allocate_range(adamw_state *state, const param_registry *registry, moment_range range) {
    if (range.begin > range.end || range.end > registry->total)
        fatal("optimizer: moment range [%zu, %zu) is outside the parameter buffer of %zu floats", range.begin,
              range.end, registry->total);
    state->range = range;
    state->count = range.end - range.begin;
    state->m = ops_alloc(state->count * sizeof(float));
    state->v = ops_alloc(state->count * sizeof(float));
}

void optimizer_free(adamw_state *state) {
    ops_free(state->m);
    ops_free(state->v);
    state->m = state->v = NULL;
}

double gradient_global_norm(const float *grads, size_t count) { return sqrt(sum_of_squares(grads, count)); }

// Each tensor's intersection with the range gets one adamw_update: the same per-element
// arithmetic as the whole tensor, so a partitioned step equals the unpartitioned one.
void optimizer_step(adamw_state *state, const param_registry *registry, float *params, const float *grads,
                    const decon_config *c, double lr, double grad_norm, long step) {
    float scale = 1.0f;
    if (c->grad_clip > 0 && grad_norm > c->grad_clip) scale = (float)(c->grad_clip / (grad_norm + 1e-6));
    size_t begin = state->range.begin, end = state->range.end;
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        size_t lo = p->offset > begin ? p->offset : begin;
        size_t hi = p->offset + p->local_count < end ? p->offset + p->local_count : end;
        if (lo >= hi) continue;
        adamw_update(params + lo, grads + lo, state->m + (lo - begin), state->v + (lo - begin), hi - lo, (float)lr,
                     (float)c->adam_beta1, (float)c->adam_beta2, (float)c->adam_epsilon,
                     p->weight_decay ? (float)c->weight_decay : 0.0f, (int)step, scale);
    }
}
