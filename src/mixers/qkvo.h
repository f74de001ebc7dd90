// Mixers that keep exactly `standard`'s parameters (DESIGN.md 5: the study matches the
// counts strictly): they register through standard's own register_params, so names,
// shapes, sharding and initialisation cannot drift, then find their tensors by name.
#pragma once
#include <stdio.h>

#include "core/params.h"
#include "mixers/mixer.h"
#include "ops/ops.h"

enum { QKVO_WQ, QKVO_BQ, QKVO_WK, QKVO_BK, QKVO_WV, QKVO_BV, QKVO_WO, QKVO_COUNT };

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

// Q, K, V = inp W^T + b, then RoPE on Q and K: standard's projections, shared by the
// mixers that keep them. Column-parallel: this rank's heads only (its rows of Wq, Wk, Wv),
// q [rows, local_heads*d_h], k and v [rows, local_kv_heads*d_h].
static inline void qkvo_project_forward(const mixer_layer *layer, const mixer_context *x, float *q, float *k,
                                        float *v, const float *inp) {
    const decon_config *c = x->config;
    int rows = x->batch * x->seq_len, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    linear_forward(q, inp, qkvo_param(layer, x, QKVO_WQ), qkvo_param(layer, x, QKVO_BQ), rows, d, heads * dh);
    linear_forward(k, inp, qkvo_param(layer, x, QKVO_WK), qkvo_param(layer, x, QKVO_BK), rows, d, kv_heads * dh);
    linear_forward(v, inp, qkvo_param(layer, x, QKVO_WV), qkvo_param(layer, x, QKVO_BV), rows, d, kv_heads * dh);
    rope_forward(q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, heads, dh);
    rope_forward(k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, kv_heads, dh);
}

// Its backward: RoPE backward on d_q and d_k (in place), then d_inp += (this rank's
// partial share; the model sums it over tp) and the weight and bias gradients += from
// d_q, d_k, d_v.
static inline void qkvo_project_backward(const mixer_layer *layer, const mixer_context *x, float *d_inp, float *d_q,
                                         float *d_k, const float *d_v, const float *inp) {
    const decon_config *c = x->config;
    int rows = x->batch * x->seq_len, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    rope_backward(d_q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, heads, dh);
    rope_backward(d_k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, kv_heads, dh);
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WQ), qkvo_grad(layer, x, QKVO_BQ), d_q, inp,
                    qkvo_param(layer, x, QKVO_WQ), rows, d, heads * dh);
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WK), qkvo_grad(layer, x, QKVO_BK), d_k, inp,
                    qkvo_param(layer, x, QKVO_WK), rows, d, kv_heads * dh);
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WV), qkvo_grad(layer, x, QKVO_BV), d_v, inp,
                    qkvo_param(layer, x, QKVO_WV), rows, d, kv_heads * dh);
}
