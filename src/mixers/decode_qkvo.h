// Decoding for the mixers with standard's q/k/v/o tensors (docs/design.md "Inference"):
// the step's temporaries, the KV cache of softmax attention (standard, GQA/MQA,
// staticembqk; rndembqk/fixedseqqk keep its V half) and the output projection.
// A sequence's KV cache is K [max_context, local_kv_heads * r_qk] then V [max_context,
// local_kv_heads * r_v]: only the kv heads are stored (GQA/MQA), K after RoPE, exactly
// what attention reads.
#pragma once
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"
#include "par/parallel_linear.h"

// The step's q [batch, local q_dim], k [batch, local kv_dim], v [batch, local v_dim] and
// av [batch, local av_dim] (qkvo_shape), from the scratch.
typedef struct {
    float *q, *k, *v, *av;
} decode_rows;

static inline size_t decode_rows_floats(const decon_config *c, int batch) {
    size_t dh = (size_t)config_head_dim(c), dv = (size_t)config_value_head_dim(c);
    size_t heads = (size_t)config_local_heads(c), kv_heads = (size_t)config_local_kv_heads(c);
    return (size_t)batch * (heads * (dh + dv) + kv_heads * (dh + dv)) + 4 * QKVO_PAD;
}

static inline decode_rows decode_rows_take(const mixer_decode *x) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    decode_rows r;
    r.q = arena_floats(x->step.scratch, (size_t)s.rows * s.q_dim);
    r.k = arena_floats(x->step.scratch, (size_t)s.rows * s.kv_dim);
    r.v = arena_floats(x->step.scratch, (size_t)s.rows * s.v_dim);
    r.av = arena_floats(x->step.scratch, (size_t)s.rows * s.av_dim);
    return r;
}

static inline size_t kv_cache_floats(const decon_config *c, int max_context) {
    return (size_t)max_context * (size_t)config_local_kv_heads(c) *
           (size_t)(config_head_dim(c) + config_value_head_dim(c));
}

// The cache after the first `length` positions of the forward's sequence `sequence`: its
// rows of the saved k (after RoPE) and v.
static inline void kv_cache_prefill(const mixer_context *forward, int max_context, const float *k, const float *v,
                                    float *cache, int sequence, int length) {
    qkvo_shape s = qkvo_shape_of(forward);
    size_t kv_dim = (size_t)s.kv_dim, v_dim = (size_t)s.v_dim, row = (size_t)sequence * (size_t)forward->seq_len;
    copy_floats(cache, k + row * kv_dim, (size_t)length * kv_dim);
    copy_floats(cache + (size_t)max_context * kv_dim, v + row * v_dim, (size_t)length * v_dim);
}

// RoPE on the step's q and k at each sequence's position, both appended to the caches,
// then av = softmax attention of q over each sequence's cache.
static inline void kv_cache_attend(const mixer_decode *x, decode_rows r) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    size_t kv_dim = (size_t)s.kv_dim, v_offset = (size_t)x->max_context * kv_dim;
    rope_at_positions(r.q, x->step.rope_cos, x->step.rope_sin, x->positions, s.batch, s.heads, s.head_dim);
    rope_at_positions(r.k, x->step.rope_cos, x->step.rope_sin, x->positions, s.batch, s.kv_heads, s.head_dim);
    copy_rows_to_positions(x->states, x->state_stride, r.k, x->positions, s.batch, kv_dim);
    copy_rows_to_positions(x->states + v_offset, x->state_stride, r.v, x->positions, s.batch, (size_t)s.v_dim);
    attention_decode(r.av, r.q, x->states, x->states + v_offset, x->positions, s.batch, s.heads, s.kv_heads,
                     s.head_dim, s.value_head_dim, s.scale, x->state_stride, x->state_stride);
}

// out = av Wo^T: row-parallel, this rank's partial share.
static inline void decode_output(const mixer_layer *layer, const mixer_decode *x, float *out, const float *av) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    row_parallel_linear_forward(out, av, qkvo_param(layer, &x->step, QKVO_WO), s.rows, s.av_dim, s.d);
}
