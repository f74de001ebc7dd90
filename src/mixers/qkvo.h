// Mixers that keep exactly `standard`'s parameters (DESIGN.md 5: the study matches the
// counts strictly): they register through standard's own register_params, so names,
// shapes, sharding and initialisation cannot drift, then find their tensors by name.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "core/arena.h"
#include "core/params.h"
#include "mixers/mixer.h"
#include "ops/ops.h"
#include "par/parallel_linear.h"

enum { QKVO_WQ, QKVO_BQ, QKVO_WK, QKVO_BK, QKVO_WV, QKVO_BV, QKVO_WO, QKVO_COUNT };

// The dimensions of one call on this rank (local heads), and the softmax scale 1/sqrt(d_h).
// Queries and keys have head_dim (r_qk), values and the attention output value_head_dim
// (r_v, = head_dim unless [model] value_head_dim or layer_value_head_dims set it): q_dim =
// heads r_qk, kv_dim = kv_heads r_qk, av_dim = heads r_v, v_dim = kv_heads r_v.
typedef struct {
    int batch, seq_len, rows, d, heads, kv_heads, head_dim, q_dim, kv_dim;
    int value_head_dim, av_dim, v_dim;
    float scale;
} qkvo_shape;

static inline qkvo_shape qkvo_shape_of(const mixer_context *x) {
    const decon_config *c = x->config;
    qkvo_shape s;
    s.batch = x->batch;
    s.seq_len = x->seq_len;
    s.rows = x->batch * x->seq_len;
    s.d = c->hidden_size;
    s.heads = config_local_heads(c);
    s.kv_heads = config_local_kv_heads(c);
    s.head_dim = config_head_dim(c);
    s.q_dim = s.heads * s.head_dim;
    s.kv_dim = s.kv_heads * s.head_dim;
    s.value_head_dim = config_value_head_dim(c);
    s.av_dim = s.heads * s.value_head_dim;
    s.v_dim = s.kv_heads * s.value_head_dim;
    s.scale = 1.0f / sqrtf((float)s.head_dim);
    return s;
}

// Wq, Wk, Wv [q_rows, kv_rows or v_rows, d] ~ N(0, initializer_range), then
// (attention_bias) zero biases bq, bk, bv, into layer->params[QKVO_WQ..QKVO_BV]; every
// other slot -1.
// standard shards them by heads (SHARD_ROWS); mhe's shared head-size projections are
// replicated (SHARD_NONE). The order of registration fixes the layout of the parameters.
static inline void qkvo_register_projections(mixer_layer *layer, param_registry *registry, const decon_config *c,
                                             int64_t q_rows, int64_t kv_rows, int64_t v_rows, shard_kind shard) {
    static const char *const weight[3] = {"wq", "wk", "wv"}, *const bias[3] = {"bq", "bk", "bv"};
    static const int weight_slot[3] = {QKVO_WQ, QKVO_WK, QKVO_WV}, bias_slot[3] = {QKVO_BQ, QKVO_BK, QKVO_BV};
    const int64_t rows[3] = {q_rows, kv_rows, v_rows};
    float std = (float)c->initializer_range;
    char name[PARAM_NAME_MAX];
    int l = layer->layer;
    for (int i = 0; i < MIXER_MAX_PARAMS; i++) layer->params[i] = -1;
    for (int i = 0; i < 3; i++) {
        mixer_param_name(name, sizeof name, l, weight[i]);
        layer->params[weight_slot[i]] =
            params_add(registry, name, "mixer", l, rows[i], c->hidden_size, shard, INIT_NORMAL, std, true);
    }
    if (!c->attention_bias) return;
    for (int i = 0; i < 3; i++) {
        mixer_param_name(name, sizeof name, l, bias[i]);
        layer->params[bias_slot[i]] = params_add(registry, name, "mixer", l, rows[i], 0, shard, INIT_ZEROS, 0, false);
    }
}

// Wo [d, heads*r_v], row-parallel (its columns are the heads), its initialisation scaled
// down with depth (GPT-2 style) so the residual stream does not grow with the number of
// layers. Returns its registry index.
static inline int qkvo_register_output(const mixer_layer *layer, param_registry *registry, const decon_config *c) {
    float out_std = (float)c->initializer_range / sqrtf(2.0f * (float)c->num_hidden_layers);
    int64_t av_dim = (int64_t)c->num_attention_heads * config_value_head_dim(c);
    char name[PARAM_NAME_MAX];
    mixer_param_name(name, sizeof name, layer->layer, "wo");
    return params_add(registry, name, "mixer", layer->layer, c->hidden_size, av_dim, SHARD_COLS, INIT_NORMAL, out_std,
                      true);
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

// Q, K, V = inp W^T + b: standard's projections, shared by the mixers that keep them.
// Column-parallel: this rank's heads only (its rows of Wq, Wk, Wv), q [rows,
// local_heads*r_qk], k [rows, local_kv_heads*r_qk], v [rows, local_kv_heads*r_v].
static inline void qkvo_linear_forward(const mixer_layer *layer, const mixer_context *x, float *q, float *k, float *v,
                                       const float *inp) {
    qkvo_shape s = qkvo_shape_of(x);
    column_parallel_linear_forward(q, inp, qkvo_param(layer, x, QKVO_WQ), qkvo_param(layer, x, QKVO_BQ), s.rows, s.d,
                                   s.q_dim);
    column_parallel_linear_forward(k, inp, qkvo_param(layer, x, QKVO_WK), qkvo_param(layer, x, QKVO_BK), s.rows, s.d,
                                   s.kv_dim);
    column_parallel_linear_forward(v, inp, qkvo_param(layer, x, QKVO_WV), qkvo_param(layer, x, QKVO_BV), s.rows, s.d,
                                   s.v_dim);
}

// Its backward: d_inp += (this rank's partial share; the model sums it over tp) and the
// weight and bias gradients += from d_q, d_k, d_v.
static inline void qkvo_linear_backward(const mixer_layer *layer, const mixer_context *x, float *d_inp,
                                        const float *d_q, const float *d_k, const float *d_v, const float *inp) {
    qkvo_shape s = qkvo_shape_of(x);
    column_parallel_linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WQ), qkvo_grad(layer, x, QKVO_BQ), d_q, inp,
                                    qkvo_param(layer, x, QKVO_WQ), s.rows, s.d, s.q_dim);
    column_parallel_linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WK), qkvo_grad(layer, x, QKVO_BK), d_k, inp,
                                    qkvo_param(layer, x, QKVO_WK), s.rows, s.d, s.kv_dim);
    column_parallel_linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WV), qkvo_grad(layer, x, QKVO_BV), d_v, inp,
                                    qkvo_param(layer, x, QKVO_WV), s.rows, s.d, s.v_dim);
}

// The projections, then RoPE on Q and K.
static inline void qkvo_project_forward(const mixer_layer *layer, const mixer_context *x, float *q, float *k,
                                        float *v, const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c), heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    qkvo_linear_forward(layer, x, q, k, v, inp);
    rope_forward(q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, heads, dh);
    rope_forward(k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, kv_heads, dh);
}

// Its backward: RoPE backward on d_q and d_k (in place), then qkvo_linear_backward.
static inline void qkvo_project_backward(const mixer_layer *layer, const mixer_context *x, float *d_inp, float *d_q,
                                         float *d_k, const float *d_v, const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c), heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    rope_backward(d_q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, heads, dh);
    rope_backward(d_k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, kv_heads, dh);
    qkvo_linear_backward(layer, x, d_inp, d_q, d_k, d_v, inp);
}

// ---- the saved tensors and the backward scratch of a q/k/v/o mixer -------------------
// Every such mixer saves q, k (after RoPE where it has it), v and av = A V in
// saved[0..3] (its own enum starts S_Q, S_K, S_V, S_AV), then what its op needs.
enum { QKVO_SAVED = 4, QKVO_PAD = 16 };  // PAD: alignment slack of each arena tensor

// Floats of one [batch, local_heads, seq_len] tensor (a logsumexp, a denominator, ...).
static inline size_t qkvo_per_head_floats(const decon_config *c, int batch, int seq_len) {
    return (size_t)batch * (size_t)config_local_heads(c) * (size_t)seq_len;
}

// Floats of q, k, v and av with their slack (saved_floats adds the mixer's own).
static inline size_t qkvo_saved_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c), dv = (size_t)config_value_head_dim(c);
    size_t heads = (size_t)config_local_heads(c), kv_heads = (size_t)config_local_kv_heads(c);
    return rows * (heads * (dh + dv) + kv_heads * (dh + dv)) + QKVO_SAVED * QKVO_PAD;
}

// The scratch of the backward: d_av, d_q, d_k, d_v (qkvo_gradients_take).
static inline size_t qkvo_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_saved_floats(c, batch, seq_len);
}

// saved[0..3] = q, k, v, av from the activation arena.
static inline void qkvo_bind_saved(mixer_layer *layer, arena *activations, const decon_config *c, int batch,
                                   int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c), dv = (size_t)config_value_head_dim(c);
    size_t heads = (size_t)config_local_heads(c), kv_heads = (size_t)config_local_kv_heads(c);
    layer->saved[0] = arena_floats(activations, rows * heads * dh);
    layer->saved[1] = arena_floats(activations, rows * kv_heads * dh);
    layer->saved[2] = arena_floats(activations, rows * kv_heads * dv);
    layer->saved[3] = arena_floats(activations, rows * heads * dv);
}

// The backward temporaries of a q/k/v/o mixer, zeroed, from the scratch arena
// (qkvo_scratch_floats counts them):
// d_q [rows, local_heads*r_qk], d_k [rows, local_kv_heads*r_qk], d_av [rows,
// local_heads*r_v], d_v [rows, local_kv_heads*r_v]. The mixer
// gives them back with arena_release(x->scratch, mark).
typedef struct {
    float *d_av, *d_q, *d_k, *d_v;
    size_t mark;
} qkvo_gradients;

static inline qkvo_gradients qkvo_gradients_take(const mixer_context *x) {
    qkvo_shape s = qkvo_shape_of(x);
    size_t rows = (size_t)s.rows, q_size = rows * (size_t)s.q_dim, kv_size = rows * (size_t)s.kv_dim;
    size_t av_size = rows * (size_t)s.av_dim, v_size = rows * (size_t)s.v_dim;
    qkvo_gradients g;
    g.mark = arena_mark(x->scratch);
    g.d_av = arena_floats(x->scratch, av_size);
    g.d_q = arena_floats(x->scratch, q_size);
    g.d_k = arena_floats(x->scratch, kv_size);
    g.d_v = arena_floats(x->scratch, v_size);
    fill_floats(g.d_av, 0.0f, av_size);
    fill_floats(g.d_q, 0.0f, q_size);
    fill_floats(g.d_k, 0.0f, kv_size);
    fill_floats(g.d_v, 0.0f, v_size);
    return g;
}


// out = av Wo^T (av = saved[3], [rows, local_heads*r_v]): row-parallel, this rank's
// partial share (the model sums it over tp).
static inline void qkvo_output_forward(const mixer_layer *layer, const mixer_context *x, float *out) {
    qkvo_shape s = qkvo_shape_of(x);
    row_parallel_linear_forward(out, layer->saved[3], qkvo_param(layer, x, QKVO_WO), s.rows, s.av_dim, s.d);
}

// The start of every q/k/v/o backward: the temporaries (qkvo_gradients_take), then the
// output projection's backward: d_av = d_out Wo, dWo += d_out^T av.
static inline qkvo_gradients qkvo_backward_begin(const mixer_layer *layer, const mixer_context *x,
                                                 const float *d_out) {
    qkvo_shape s = qkvo_shape_of(x);
    qkvo_gradients g = qkvo_gradients_take(x);
    row_parallel_linear_backward(g.d_av, qkvo_grad(layer, x, QKVO_WO), d_out, layer->saved[3],
                                 qkvo_param(layer, x, QKVO_WO), s.rows, s.av_dim, s.d);
    return g;
}
