// `staticembqk` (DESIGN.md 5): queries and keys from the input token embeddings, values
// from the layer's input, so the map depends on the tokens but not on what the lower
// layers computed:
//   E = RMSNorm(e; this layer's input-norm weight, rms_norm_eps), e = Emb(t) of the tokens
//   Q = E Wq^T + bq, K = E Wk^T + bk (RoPE), V = H Wv^T + bv
//   O = concat_j(softmax(s Q_j K_g(j)^T + causal mask) V_g(j)) Wo^T,  per sequence
// The model computes E (context->normed_embeddings) and backpropagates
// context->d_normed_embeddings (+=, dLoss/dE) through the norm to e and to the norm weight, which thus serves two inputs
// (H = RMSNorm(x) and E). Keeping the norm in the model lets it run once per layer on
// full rows, before the tensor-parallel split: every rank sees the same E, and the sum
// over ranks of their d_normed_embeddings shares is the full gradient, like d_inp's.
#include <string.h>

#include "mixers/decode_qkvo.h"
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"
#include "par/parallel_linear.h"

enum { S_Q, S_K, S_V, S_AV, S_LSE };

static size_t static_saved_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_saved_floats(c, batch, seq_len) + qkvo_per_head_floats(c, batch, seq_len) + QKVO_PAD;  // + lse
}

// Backward: d_av, d_q, d_k, d_v.
static size_t static_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_scratch_floats(c, batch, seq_len);
}

static void static_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    qkvo_bind_saved(layer, activations, c, batch, seq_len);
    layer->saved[S_LSE] = arena_floats(activations, qkvo_per_head_floats(c, batch, seq_len));
}

static void static_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    qkvo_shape s = qkvo_shape_of(x);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V];
    const float *normed = x->normed_embeddings;  // E = RMSNorm(e), from the model
    column_parallel_linear_forward(q, normed, qkvo_param(layer, x, QKVO_WQ), qkvo_param(layer, x, QKVO_BQ), s.rows, s.d,
                                   s.q_dim);
    column_parallel_linear_forward(k, normed, qkvo_param(layer, x, QKVO_WK), qkvo_param(layer, x, QKVO_BK), s.rows, s.d,
                                   s.kv_dim);
    column_parallel_linear_forward(v, inp, qkvo_param(layer, x, QKVO_WV), qkvo_param(layer, x, QKVO_BV), s.rows, s.d,
                                   s.kv_dim);
    rope_forward(q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.heads, s.head_dim);
    rope_forward(k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.kv_heads, s.head_dim);
    attention_forward(layer->saved[S_AV], layer->saved[S_LSE], q, k, v, x->batch, x->seq_len, s.heads, s.kv_heads,
                      s.head_dim, s.head_dim, s.scale);
    qkvo_output_forward(layer, x, out);
}

static void static_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                            const float *inp) {
    qkvo_shape s = qkvo_shape_of(x);
    qkvo_gradients g = qkvo_backward_begin(layer, x, d_out);
    attention_backward(g.d_q, g.d_k, g.d_v, g.d_av, layer->saved[S_AV], layer->saved[S_LSE], layer->saved[S_Q],
                       layer->saved[S_K], layer->saved[S_V], x->batch, x->seq_len, s.heads, s.kv_heads, s.head_dim, s.head_dim,
                       s.scale);
    rope_backward(g.d_q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.heads, s.head_dim);
    rope_backward(g.d_k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.kv_heads, s.head_dim);
    // dE += this rank's share (its heads' rows of Wq, Wk); the model sums it over tp.
    column_parallel_linear_backward(x->d_normed_embeddings, qkvo_grad(layer, x, QKVO_WQ), qkvo_grad(layer, x, QKVO_BQ),
                                    g.d_q, x->normed_embeddings, qkvo_param(layer, x, QKVO_WQ), s.rows, s.d, s.q_dim);
    column_parallel_linear_backward(x->d_normed_embeddings, qkvo_grad(layer, x, QKVO_WK), qkvo_grad(layer, x, QKVO_BK),
                                    g.d_k, x->normed_embeddings, qkvo_param(layer, x, QKVO_WK), s.rows, s.d, s.kv_dim);
    column_parallel_linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WV), qkvo_grad(layer, x, QKVO_BV), g.d_v, inp,
                                    qkvo_param(layer, x, QKVO_WV), s.rows, s.d, s.kv_dim);
    arena_release(x->scratch, g.mark);
}

static void static_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    qkvo_shape shape = qkvo_shape_of(x);
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_probabilities(probs, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim, shape.scale);
}

static void static_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    qkvo_shape shape = qkvo_shape_of(x);
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_score_matrix(scores, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim, shape.scale);
}

// Parameters, matmul FLOPs and the inference cache are standard's: the same projections
// and scores (the RMSNorm of e, in the model, is not a matmul); K and V are cached per token.
static int64_t static_param_count(const decon_config *c) { return mixer_standard()->param_count(c); }
static double static_forward_flops(const decon_config *c, int seq_len) {
    return mixer_standard()->forward_flops_per_token(c, seq_len);
}
static int64_t static_cache_floats(const decon_config *c) { return mixer_standard()->cache_floats_per_token(c); }

// Decoding: standard's KV cache (kv heads, after RoPE); K comes from RMSNorm(e) of the
// new token, which the session computes with this layer's norm weight.
static size_t static_decode_state_floats(const decon_config *c, int max_context) {
    return kv_cache_floats(c, max_context);
}

static size_t static_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return decode_rows_floats(c, batch);
}

static void static_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                                  int sequence, int length) {
    kv_cache_prefill(forward, max_context, layer->saved[S_K], layer->saved[S_V], state, sequence, length);
}

static void static_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    size_t mark = arena_mark(x->step.scratch);
    decode_rows r = decode_rows_take(x);
    const float *normed = x->step.normed_embeddings;
    column_parallel_linear_forward(r.q, normed, qkvo_param(layer, &x->step, QKVO_WQ),
                                   qkvo_param(layer, &x->step, QKVO_BQ), s.rows, s.d, s.q_dim);
    column_parallel_linear_forward(r.k, normed, qkvo_param(layer, &x->step, QKVO_WK),
                                   qkvo_param(layer, &x->step, QKVO_BK), s.rows, s.d, s.kv_dim);
    column_parallel_linear_forward(r.v, inp, qkvo_param(layer, &x->step, QKVO_WV), qkvo_param(layer, &x->step, QKVO_BV),
                                   s.rows, s.d, s.kv_dim);
    kv_cache_attend(x, r);
    decode_output(layer, x, out, r.av);
    arena_release(x->step.scratch, mark);
}

const mixer_kind mixer_kind_staticembqk = {
    .name = "staticembqk",
    .letter = 'Q',
    .uses_embeddings = true,
    .register_params = qkvo_register,
    .saved_floats = static_saved_floats,
    .scratch_floats = static_scratch_floats,
    .bind_saved = static_bind,
    .forward = static_forward,
    .backward = static_backward,
    .attention_matrix = static_attention_matrix,
    .attention_scores = static_attention_scores,
    .param_count = static_param_count,
    .forward_flops_per_token = static_forward_flops,
    .cache_floats_per_token = static_cache_floats,
    .decode_state_floats = static_decode_state_floats,
    .decode_scratch_floats = static_decode_scratch_floats,
    .decode_prefill = static_decode_prefill,
    .decode_step = static_decode_step,
};
