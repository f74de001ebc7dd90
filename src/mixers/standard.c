// `standard`: multi-head causal softmax attention with RoPE, optional Q/K/V bias, and
// grouped-query sharing when num_key_value_heads < num_attention_heads (DESIGN.md 5).
//   Q = H Wq^T + bq, K = H Wk^T + bk, V = H Wv^T + bv      (rows = tokens)
//   Q, K rotated by RoPE;  A_j = softmax(s Q_j K_g(j)^T + causal mask), s = 1/sqrt(d_h)
//   O = concat_j(A_j V_g(j)) Wo^T
// Queries and keys have d_h = r_qk (config_head_dim), values r_v (config_value_head_dim):
// the two differ in a compressed model (A3's QK and OV ranks).
// The attention op is blocked with an online softmax, so training never forms A.
#include <math.h>
#include <string.h>

#include "mixers/decode_qkvo.h"
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"

enum { S_Q, S_K, S_V, S_AV, S_LSE };

// Megatron: Wq, Wk, Wv and biases column-parallel (rows are heads), Wo row-parallel
// (columns are heads), so each tensor-parallel rank holds whole heads.
static void standard_register(mixer_layer *layer, param_registry *registry, const decon_config *c) {
    int64_t dh = config_head_dim(c), dv = config_value_head_dim(c), kv_heads = config_kv_heads(c);
    qkvo_register_projections(layer, registry, c, c->num_attention_heads * dh, kv_heads * dh, kv_heads * dv,
                              SHARD_ROWS);
    layer->params[QKVO_WO] = qkvo_register_output(layer, registry, c);
}

static size_t standard_saved_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_saved_floats(c, batch, seq_len) + qkvo_per_head_floats(c, batch, seq_len) + QKVO_PAD;  // + lse
}

static size_t standard_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_scratch_floats(c, batch, seq_len);
}

static void standard_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    qkvo_bind_saved(layer, activations, c, batch, seq_len);
    layer->saved[S_LSE] = arena_floats(activations, qkvo_per_head_floats(c, batch, seq_len));
}

static void standard_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    qkvo_shape s = qkvo_shape_of(x);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V];
    float *av = layer->saved[S_AV], *lse = layer->saved[S_LSE];
    qkvo_project_forward(layer, x, q, k, v, inp);
    attention_forward(av, lse, q, k, v, x->batch, x->seq_len, s.heads, s.kv_heads, s.head_dim, s.value_head_dim,
                      s.scale);
    qkvo_output_forward(layer, x, out);
}

static void standard_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                              const float *inp) {
    qkvo_shape s = qkvo_shape_of(x);
    qkvo_gradients g = qkvo_backward_begin(layer, x, d_out);
    attention_backward(g.d_q, g.d_k, g.d_v, g.d_av, layer->saved[S_AV], layer->saved[S_LSE], layer->saved[S_Q],
                       layer->saved[S_K], layer->saved[S_V], x->batch, x->seq_len, s.heads, s.kv_heads, s.head_dim,
                       s.value_head_dim, s.scale);
    qkvo_project_backward(layer, x, d_inp, g.d_q, g.d_k, g.d_v, inp);
    arena_release(x->scratch, g.mark);
}

static void standard_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_probabilities(probs, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim,
                            1.0f / sqrtf((float)s.head_dim));
}

// s q_i.k_t after RoPE, the argument of the softmax (recordings).
static void standard_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_score_matrix(scores, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim,
                           1.0f / sqrtf((float)s.head_dim));
}

static int64_t standard_param_count(const decon_config *c) {
    int64_t d = c->hidden_size, dh = config_head_dim(c), dv = config_value_head_dim(c);
    int64_t q_dim = c->num_attention_heads * dh, kv_dim = config_kv_heads(c) * dh;
    int64_t av_dim = c->num_attention_heads * dv, v_dim = config_kv_heads(c) * dv;
    return d * (q_dim + kv_dim + v_dim + av_dim) + (c->attention_bias ? q_dim + kv_dim + v_dim : 0);
}

// Projections 2*d*(q_dim + kv_dim + v_dim + av_dim) per token (= 2d(2 q_dim + 2 kv_dim)
// when r_v = r_qk); scores 2 (t+1) r_qk and A V 2 (t+1) r_v per head for the t-th token, on
// average (seq_len + 1) (q_dim + av_dim) per token (causal).
static double standard_forward_flops(const decon_config *c, int seq_len) {
    double d = c->hidden_size, dh = config_head_dim(c), dv = config_value_head_dim(c);
    double q_dim = c->num_attention_heads * dh, kv_dim = config_kv_heads(c) * dh;
    double av_dim = c->num_attention_heads * dv, v_dim = config_kv_heads(c) * dv;
    return 2.0 * d * (q_dim + kv_dim + v_dim + av_dim) + (seq_len + 1.0) * (q_dim + av_dim);
}

static int64_t standard_cache_floats(const decon_config *c) {
    return (int64_t)config_kv_heads(c) * (config_head_dim(c) + config_value_head_dim(c));
}

// Decoding: the KV cache (mixers/decode_qkvo.h), kv heads only.
static size_t standard_decode_state_floats(const decon_config *c, int max_context) {
    return kv_cache_floats(c, max_context);
}

static size_t standard_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return decode_rows_floats(c, batch);
}

static void standard_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                                    int sequence, int length) {
    kv_cache_prefill(forward, max_context, layer->saved[S_K], layer->saved[S_V], state, sequence, length);
}

static void standard_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    size_t mark = arena_mark(x->step.scratch);
    decode_rows r = decode_rows_take(x);
    qkvo_linear_forward(layer, &x->step, r.q, r.k, r.v, inp);
    kv_cache_attend(x, r);
    decode_output(layer, x, out, r.av);
    arena_release(x->step.scratch, mark);
}

const mixer_kind mixer_kind_standard = {
    .name = "standard",
    .letter = 'S',
    .is_standard = true,
    .register_params = standard_register,
    .saved_floats = standard_saved_floats,
    .scratch_floats = standard_scratch_floats,
    .bind_saved = standard_bind,
    .forward = standard_forward,
    .backward = standard_backward,
    .attention_matrix = standard_attention_matrix,
    .attention_scores = standard_attention_scores,
    .param_count = standard_param_count,
    .forward_flops_per_token = standard_forward_flops,
    .cache_floats_per_token = standard_cache_floats,
    .decode_state_floats = standard_decode_state_floats,
    .decode_scratch_floats = standard_decode_scratch_floats,
    .decode_prefill = standard_decode_prefill,
    .decode_step = standard_decode_step,
};
