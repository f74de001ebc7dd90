// `approx`: softmax attention with exp replaced by its second-order Taylor expansion,
// in linear time (DESIGN.md 5; Based, Arora et al. 2024). Exactly standard's tensors
// (qkvo.h), so the parameter counts match by construction.
//   Q = H Wq^T + bq, K = H Wk^T + bk, V = H Wv^T + bv;  Q, K rotated by RoPE
//   A_it = f(s q_i.k_t) / sum_{t'<=i} f(s q_i.k_t'), f(x) = 1 + x + x^2/2, s = 1/sqrt(d_h)
//   O = concat_j(A_j V_g(j)) Wo^T
// RoPE: applied to q, k before the feature map, as standard applies it before the
// scores, so `approx` is the Taylor approximation of standard's own scores (f >= 1/2,
// so the rotated scores need no positivity trick). The op is chunked (ops.h,
// taylor_attention_*); training never forms A.
#include <math.h>
#include <string.h>

#include "core/errors.h"
#include "mixers/decode_qkvo.h"
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"

enum { S_Q, S_K, S_V, S_AV, S_DEN };

static size_t approx_saved_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_saved_floats(c, batch, seq_len) + qkvo_per_head_floats(c, batch, seq_len) + QKVO_PAD;  // + den
}

static size_t approx_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_scratch_floats(c, batch, seq_len);
}

static void approx_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    qkvo_bind_saved(layer, activations, c, batch, seq_len);
    layer->saved[S_DEN] = arena_floats(activations, qkvo_per_head_floats(c, batch, seq_len));
}

static float scale_of(const decon_config *c) { return 1.0f / sqrtf((float)config_head_dim(c)); }

static void approx_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V];
    qkvo_project_forward(layer, x, q, k, v, inp);
    taylor_attention_forward(layer->saved[S_AV], layer->saved[S_DEN], q, k, v, x->batch, x->seq_len, heads,
                             kv_heads, dh, scale_of(c));
    qkvo_output_forward(layer, x, out);
}

static void approx_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                            const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    qkvo_gradients g = qkvo_backward_begin(layer, x, d_out);
    taylor_attention_backward(g.d_q, g.d_k, g.d_v, g.d_av, layer->saved[S_AV], layer->saved[S_DEN], layer->saved[S_Q],
                              layer->saved[S_K], layer->saved[S_V], x->batch, x->seq_len, heads, kv_heads, dh,
                              scale_of(c));
    qkvo_project_backward(layer, x, d_inp, g.d_q, g.d_k, g.d_v, inp);
    arena_release(x->scratch, g.mark);
}

// A_it = f(s q_i.k_t) / sum_{t'<=i} f(s q_i.k_t'): the quadratic form (rows sum to 1).
static void approx_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    taylor_attention_quadratic_probabilities(probs, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim,
                                             scale_of(x->config));
}

// The Taylor argument x_it = s q_i.k_t (after RoPE) that f(x) = 1 + x + x^2/2 weights.
static void approx_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_score_matrix(scores, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim, scale_of(x->config));
}

static int64_t approx_param_count(const decon_config *c) { return mixer_standard()->param_count(c); }

// Per token, with F = 1 + d_h + d_h(d_h+1)/2 features, chunk C, L = seq_len, and the
// denominator counted as one more value column (d_h + 1):
//   projections 2 d (2 q_dim + 2 kv_dim) (as standard);
//   across chunks, per query head 2 F (d_h+1) (phi(q) [S|z]) for the tokens after the
//   first chunk, per kv head 2 F (d_h+1) (the state update) for the tokens before the
//   last chunk;
//   in a chunk, per query head (4 d_h + 2) per causal pair (q.k, W V, row sum):
//   sum over chunks of n(n+1)/2 pairs, about (C+1)/2 per token.
// Linear in seq_len: the per-token value tends to a constant.
static double approx_forward_flops(const decon_config *c, int seq_len) {
    double d = c->hidden_size, dh = config_head_dim(c), heads = c->num_attention_heads, kv = config_kv_heads(c);
    double q_dim = heads * dh, kv_dim = kv * dh, F = taylor_feature_count((int)dh);
    int C = taylor_attention_chunk_size(), L = seq_len;
    if (L < 1) L = 1;
    int first = L < C ? L : C, chunks = (L + C - 1) / C;
    double pairs = 0.0;
    for (int c0 = 0; c0 < L; c0 += C) {
        double n = L - c0 < C ? L - c0 : C;
        pairs += n * (n + 1) / 2;
    }
    double across = heads * 2 * F * (dh + 1) * (L - first) + kv * 2 * F * (dh + 1) * (double)(chunks - 1) * C;
    double within = heads * (4 * dh + 2) * pairs;
    return 2.0 * d * (2.0 * q_dim + 2.0 * kv_dim) + (across + within) / L;
}

// Nothing grows per token: an inference step needs only the recurrent state below.
static int64_t approx_cache_floats(const decon_config *c) {
    (void)c;
    return 0;
}

// The recurrent state of a sequence (S and z per kv head), constant in the length:
// S [F, d_h] and z [F] per kv head.
static int64_t approx_state_floats(const decon_config *c) {
    int64_t dh = config_head_dim(c);
    return (int64_t)config_kv_heads(c) * taylor_feature_count((int)dh) * (dh + 1);
}

// Decoding: the recurrent state S, z per kv head ([F, d_h + 1], ops' taylor_state_*),
// constant in the context: prefill sums the prompt's rotated k, v into it; a step adds
// the new token, then reads phi(q) S / phi(q).z.
static size_t approx_decode_state_floats(const decon_config *c, int max_context) {
    (void)max_context;
    if (config_head_dim(c) > 128) fatal("approx: decoding supports head_dim <= 128 (got %d)", config_head_dim(c));
    return (size_t)config_local_kv_heads(c) * taylor_decode_state_floats(config_head_dim(c));
}

static size_t approx_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return decode_rows_floats(c, batch);
}

static void approx_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                                  int sequence, int length) {
    const decon_config *c = forward->config;
    int dh = config_head_dim(c), kv_heads = config_local_kv_heads(c);
    size_t offset = (size_t)sequence * (size_t)forward->seq_len * (size_t)(kv_heads * dh);
    fill_floats(state, 0.0f, approx_decode_state_floats(c, max_context));
    taylor_state_update(state, 0, layer->saved[S_K] + offset, layer->saved[S_V] + offset, 1, length, kv_heads, dh,
                        scale_of(c));
}

static void approx_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    size_t mark = arena_mark(x->step.scratch);
    decode_rows r = decode_rows_take(x);
    qkvo_linear_forward(layer, &x->step, r.q, r.k, r.v, inp);
    rope_at_positions(r.q, x->step.rope_cos, x->step.rope_sin, x->positions, s.batch, s.heads, s.head_dim);
    rope_at_positions(r.k, x->step.rope_cos, x->step.rope_sin, x->positions, s.batch, s.kv_heads, s.head_dim);
    taylor_state_update(x->states, x->state_stride, r.k, r.v, s.batch, 1, s.kv_heads, s.head_dim, s.scale);
    taylor_state_read(r.av, x->states, x->state_stride, r.q, s.batch, s.heads, s.kv_heads, s.head_dim, s.scale);
    decode_output(layer, x, out, r.av);
    arena_release(x->step.scratch, mark);
}

const mixer_kind mixer_kind_approx = {
    .name = "approx",
    .letter = 'T',
    .register_params = qkvo_register,
    .saved_floats = approx_saved_floats,
    .scratch_floats = approx_scratch_floats,
    .bind_saved = approx_bind,
    .forward = approx_forward,
    .backward = approx_backward,
    .attention_matrix = approx_attention_matrix,
    .attention_scores = approx_attention_scores,
    .param_count = approx_param_count,
    .forward_flops_per_token = approx_forward_flops,
    .cache_floats_per_token = approx_cache_floats,
    .state_floats = approx_state_floats,
    .decode_state_floats = approx_decode_state_floats,
    .decode_scratch_floats = approx_decode_scratch_floats,
    .decode_prefill = approx_decode_prefill,
    .decode_step = approx_decode_step,
};
