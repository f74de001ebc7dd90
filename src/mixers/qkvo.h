// Mixers that keep exactly `standard`'s parameters (DESIGN.md 5: the study matches the
// counts strictly): they register through standard's own register_params, so names,
// shapes, sharding and initialisation cannot drift, then find their tensors by name.
#pragma once
#include <stdio.h>

#include "core/params.h"
#include "mixers/mixer.h"

enum { QKVO_WQ, QKVO_BQ, QKVO_WK, QKVO_BK, QKVO_WV, QKVO_BV, QKVO_WO, QKVO_COUNT };

static inline int qkvo_kv_heads(const decon_config *c) {
    return c->num_key_value_heads ? c->num_key_value_heads : c->num_attention_heads;
}

// Registers standard's tensors for this layer; layer->params[QKVO_*] = their registry
// indices (-1 for the biases when attention_bias = 0).
static inline void qkvo_register(mixer_layer *layer, param_registry *registry, const decon_config *c) {
    static const char *const suffix[QKVO_COUNT] = {"wq", "bq", "wk", "bk", "wv", "bv", "wo"};
    mixer_standard()->register_params(layer, registry, c);
    for (int i = 0; i < MIXER_MAX_PARAMS; i++) layer->params[i] = -1;
    char name[PARAM_NAME_MAX];
    for (int i = 0; i < QKVO_COUNT; i++) {
        mixer_param_name(name, sizeof name, layer->layer, suffix[i]);
        layer->params[i] = params_find(registry, name);
    }
}

static inline const float *qkvo_param(const mixer_layer *layer, const mixer_context *x, int which) {
    int index = layer->params[which];
    return index < 0 ? NULL : x->params + x->registry->items[index].offset;
}

static inline float *qkvo_grad(const mixer_layer *layer, const mixer_context *x, int which) {
    int index = layer->params[which];
    return index < 0 ? NULL : x->grads + x->registry->items[index].offset;
}
