// `nonapx`: the exact-form relaxation (DESIGN.md 5). Standard's parameters (so the same
// count, GQA and Q/K/V biases included), but one score per token instead of one per pair:
//   q = SiLU(H Wq^T + bq), k = H Wk^T + bk, v = H Wv^T + bv        (rows = tokens)
//   g_t = s q_t . k_t per head (k/v head shared by a group, as standard), s = 1/sqrt(d_h)
//   A_it = exp(g_t) / sum_{t'<=i} exp(g_t') for t <= i;  O = concat_j(A_j V_g(j)) Wo^T
// A row depends on the query position only through its causal prefix, so the op computes
// O in linear time (running max, running sums) and its backward by a reverse scan
// (ops/cpu/nonapx_attention.c); attention_matrix materialises A, the quadratic form.
// No RoPE: RoPE rotates q and k by their positions so that q_i . k_t depends on i - t;
// here q and k always come from the same token (the rotation would cancel exactly).
#include <math.h>

#include "mixers/decode_qkvo.h"
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"

enum { S_Q, S_K, S_V, S_AV, S_SCORE, S_LSE };

// Standard's own tensors, shapes, shards and initialisation (mixers/qkvo.h): the counts match.
static void nonapx_register(mixer_layer *layer, param_registry *registry, const decon_config *c) {
    qkvo_register(layer, registry, c);
}

// q (pre-activation), k, v, av = A V, and per (sequence, head, token) the score g_t and
// the running logsumexp lse_i: everything the reverse scan needs.
static size_t nonapx_saved_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_saved_floats(c, batch, seq_len) + 2 * (qkvo_per_head_floats(c, batch, seq_len) + QKVO_PAD);
}

static size_t nonapx_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_scratch_floats(c, batch, seq_len);
}

static void nonapx_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    qkvo_bind_saved(layer, activations, c, batch, seq_len);
    layer->saved[S_SCORE] = arena_floats(activations, qkvo_per_head_floats(c, batch, seq_len));
    layer->saved[S_LSE] = arena_floats(activations, qkvo_per_head_floats(c, batch, seq_len));
}

static void nonapx_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V], *av = layer->saved[S_AV];
    qkvo_linear_forward(layer, x, q, k, v, inp);  // no RoPE: nonapx has no pairwise scores
    nonapx_attention_forward(av, layer->saved[S_SCORE], layer->saved[S_LSE], q, k, v, x->batch, x->seq_len, heads,
                             kv_heads, dh, 1.0f / sqrtf((float)dh));
    qkvo_output_forward(layer, x, out);
}

static void nonapx_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                            const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    qkvo_gradients g = qkvo_backward_begin(layer, x, d_out);
    nonapx_attention_backward(g.d_q, g.d_k, g.d_v, g.d_av, layer->saved[S_AV], layer->saved[S_SCORE],
                              layer->saved[S_LSE], layer->saved[S_Q], layer->saved[S_K], layer->saved[S_V], x->batch,
                              x->seq_len, heads, kv_heads, dh, 1.0f / sqrtf((float)dh));
    qkvo_linear_backward(layer, x, d_inp, g.d_q, g.d_k, g.d_v, inp);
    arena_release(x->scratch, g.mark);
}

// The quadratic form: A of every head of sequence `sequence`, from the saved q and k.
static void nonapx_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    nonapx_attention_probabilities(probs, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim,
                                   1.0f / sqrtf((float)s.head_dim));
}

// The per-token scores g_t of the forward ([batch, heads, L] saved), laid out as the
// arguments of each row's softmax: scores[h, i, t] = g_t for t <= i (scores_per_token).
static void nonapx_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    int heads = config_local_heads(x->config), L = x->seq_len;
    const float *g = layer->saved[S_SCORE] + (size_t)sequence * heads * L;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < L; i++) {
            float *row = scores + ((size_t)h * L + i) * L;
            copy_floats(row, g + (size_t)h * L, (size_t)i + 1);
            fill_floats(row + i + 1, 0.0f, (size_t)L - (size_t)i - 1);
        }
}

// Exactly standard's tensors.
static int64_t nonapx_param_count(const decon_config *c) { return mixer_standard()->param_count(c); }

// Projections 2 d (2 q_dim + 2 kv_dim) as standard; then per head and token d_h
// multiply-adds for g_t and d_h for the running sum of v: 4 q_dim, whatever seq_len.
static double nonapx_forward_flops(const decon_config *c, int seq_len) {
    (void)seq_len;
    double d = c->hidden_size, dh = config_head_dim(c);
    double q_dim = c->num_attention_heads * dh, kv_dim = config_kv_heads(c) * dh;
    return 2.0 * d * (2.0 * q_dim + 2.0 * kv_dim) + 4.0 * q_dim;
}

// Generation needs only the running state per query head: the normalised output and the
// logsumexp of the scores so far (d_h + 1 floats), constant in the sequence length.
// Nothing grows per token.
static int64_t nonapx_cache_floats(const decon_config *c) {
    (void)c;
    return 0;
}

static int64_t nonapx_state_floats(const decon_config *c) {
    return (int64_t)c->num_attention_heads * (config_head_dim(c) + 1);
}

// Decoding: per query head the normalised output o and the logsumexp of the scores so far
// (d_h + 1 floats, ops' nonapx_state_step), constant in the context. The training
// forward already holds both at every position (A V and lse), so prefill copies them at
// the prompt's last position: nothing is recomputed.
static size_t nonapx_decode_state_floats(const decon_config *c, int max_context) {
    (void)max_context;
    return (size_t)config_local_heads(c) * (size_t)(config_head_dim(c) + 1);
}

static size_t nonapx_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return decode_rows_floats(c, batch);
}

static void nonapx_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                                  int sequence, int length) {
    (void)max_context;
    const decon_config *c = forward->config;
    size_t dh = (size_t)config_head_dim(c), heads = (size_t)config_local_heads(c), L = (size_t)forward->seq_len;
    size_t last = (size_t)sequence * L + (size_t)length - 1;
    copy_strided_rows(state, dh + 1, layer->saved[S_AV] + last * heads * dh, dh, heads, dh);
    copy_strided_rows(state + dh, dh + 1, layer->saved[S_LSE] + (size_t)sequence * heads * L + (size_t)length - 1, L,
                      heads, 1);
}

static void nonapx_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    size_t mark = arena_mark(x->step.scratch);
    decode_rows r = decode_rows_take(x);
    qkvo_linear_forward(layer, &x->step, r.q, r.k, r.v, inp);  // no RoPE, as in training
    nonapx_state_step(r.av, x->states, x->state_stride, r.q, r.k, r.v, s.batch, s.heads, s.kv_heads, s.head_dim,
                      s.scale);
    decode_output(layer, x, out, r.av);
    arena_release(x->step.scratch, mark);
}

const mixer_kind mixer_kind_nonapx = {
    .name = "nonapx",
    .letter = 'N',
    .scores_per_token = true,
    .register_params = nonapx_register,
    .saved_floats = nonapx_saved_floats,
    .scratch_floats = nonapx_scratch_floats,
    .bind_saved = nonapx_bind,
    .forward = nonapx_forward,
    .backward = nonapx_backward,
    .attention_matrix = nonapx_attention_matrix,
    .attention_scores = nonapx_attention_scores,
    .param_count = nonapx_param_count,
    .forward_flops_per_token = nonapx_forward_flops,
    .cache_floats_per_token = nonapx_cache_floats,
    .state_floats = nonapx_state_floats,
    .decode_state_floats = nonapx_decode_state_floats,
    .decode_scratch_floats = nonapx_decode_scratch_floats,
    .decode_prefill = nonapx_decode_prefill,
    .decode_step = nonapx_decode_step,
};
