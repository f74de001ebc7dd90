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
#include <string.h>

#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"

enum { S_Q, S_K, S_V, S_ATTN, S_SCORE, S_LSE };

// Standard's own tensors, shapes, shards and initialisation (mixers/qkvo.h): the counts match.
static void nonapx_register(mixer_layer *layer, param_registry *registry, const decon_config *c) {
    qkvo_register(layer, registry, c);
}

// q (pre-activation), k, v, attn = A V, and per (sequence, head, token) the score g_t and
// the running logsumexp lse_i: everything the reverse scan needs.
static size_t nonapx_saved_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    size_t per_head = (size_t)batch * (size_t)config_local_heads(c) * (size_t)seq_len;
    return rows * (2 * q_dim + 2 * kv_dim) + 2 * per_head + 6 * (size_t)16;
}

static size_t nonapx_scratch_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    return rows * (2 * q_dim + 2 * kv_dim) + 4 * (size_t)16;  // d_attn, d_q, d_k, d_v
}

static void nonapx_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    size_t per_head = (size_t)batch * (size_t)config_local_heads(c) * (size_t)seq_len;
    layer->saved[S_Q] = arena_floats(activations, rows * q_dim);
    layer->saved[S_K] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_V] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_ATTN] = arena_floats(activations, rows * q_dim);
    layer->saved[S_SCORE] = arena_floats(activations, per_head);
    layer->saved[S_LSE] = arena_floats(activations, per_head);
}

static void nonapx_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    const decon_config *c = x->config;
    int rows = x->batch * x->seq_len, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V], *attn = layer->saved[S_ATTN];
    linear_forward(q, inp, qkvo_param(layer, x, QKVO_WQ), qkvo_param(layer, x, QKVO_BQ), rows, d, heads * dh);
    linear_forward(k, inp, qkvo_param(layer, x, QKVO_WK), qkvo_param(layer, x, QKVO_BK), rows, d, kv_heads * dh);
    linear_forward(v, inp, qkvo_param(layer, x, QKVO_WV), qkvo_param(layer, x, QKVO_BV), rows, d, kv_heads * dh);
    nonapx_attention_forward(attn, layer->saved[S_SCORE], layer->saved[S_LSE], q, k, v, x->batch, x->seq_len, heads,
                             kv_heads, dh, 1.0f / sqrtf((float)dh));
    linear_forward(out, attn, qkvo_param(layer, x, QKVO_WO), NULL, rows, heads * dh, d);
}

static void nonapx_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                            const float *inp) {
    const decon_config *c = x->config;
    int rows = x->batch * x->seq_len, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    size_t q_size = (size_t)rows * (size_t)(heads * dh), kv_size = (size_t)rows * (size_t)(kv_heads * dh);
    size_t mark = arena_mark(x->scratch);
    float *d_attn = arena_floats(x->scratch, q_size);
    float *d_q = arena_floats(x->scratch, q_size);
    float *d_k = arena_floats(x->scratch, kv_size);
    float *d_v = arena_floats(x->scratch, kv_size);
    memset(d_attn, 0, q_size * sizeof(float));
    memset(d_q, 0, q_size * sizeof(float));
    memset(d_k, 0, kv_size * sizeof(float));
    memset(d_v, 0, kv_size * sizeof(float));

    linear_backward(d_attn, qkvo_grad(layer, x, QKVO_WO), NULL, d_out, layer->saved[S_ATTN],
                    qkvo_param(layer, x, QKVO_WO), rows, heads * dh, d);
    nonapx_attention_backward(d_q, d_k, d_v, d_attn, layer->saved[S_ATTN], layer->saved[S_SCORE],
                              layer->saved[S_LSE], layer->saved[S_Q], layer->saved[S_K], layer->saved[S_V], x->batch,
                              x->seq_len, heads, kv_heads, dh, 1.0f / sqrtf((float)dh));
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WQ), qkvo_grad(layer, x, QKVO_BQ), d_q, inp,
                    qkvo_param(layer, x, QKVO_WQ), rows, d, heads * dh);
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WK), qkvo_grad(layer, x, QKVO_BK), d_k, inp,
                    qkvo_param(layer, x, QKVO_WK), rows, d, kv_heads * dh);
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WV), qkvo_grad(layer, x, QKVO_BV), d_v, inp,
                    qkvo_param(layer, x, QKVO_WV), rows, d, kv_heads * dh);
    arena_release(x->scratch, mark);
}

// The quadratic form: A of every head of sequence `sequence`, from the saved q and k.
static void nonapx_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c), heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    size_t offset = (size_t)sequence * (size_t)x->seq_len;
    nonapx_attention_probabilities(probs, layer->saved[S_Q] + offset * (size_t)(heads * dh),
                                   layer->saved[S_K] + offset * (size_t)(kv_heads * dh), x->seq_len, heads, kv_heads,
                                   dh, 1.0f / sqrtf((float)dh));
}

// The per-token scores g_t of the forward ([batch, heads, L] saved), laid out as the
// arguments of each row's softmax: scores[h, i, t] = g_t for t <= i (scores_per_token).
static void nonapx_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    int heads = config_local_heads(x->config), L = x->seq_len;
    const float *g = layer->saved[S_SCORE] + (size_t)sequence * heads * L;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < L; i++) {
            float *row = scores + ((size_t)h * L + i) * L;
            memcpy(row, g + (size_t)h * L, (size_t)(i + 1) * sizeof(float));
            memset(row + i + 1, 0, (size_t)(L - i - 1) * sizeof(float));
        }
}

// Exactly standard's tensors.
static int64_t nonapx_param_count(const decon_config *c) {
    int64_t d = c->hidden_size, dh = config_head_dim(c);
    int64_t q_dim = c->num_attention_heads * dh, kv_dim = config_kv_heads(c) * dh;
    return 2 * d * q_dim + 2 * d * kv_dim + (c->attention_bias ? q_dim + 2 * kv_dim : 0);
}

// Projections 2 d (2 q_dim + 2 kv_dim) as standard; then per head and token d_h
// multiply-adds for g_t and d_h for the running sum of v: 4 q_dim, whatever seq_len.
static double nonapx_forward_flops(const decon_config *c, int seq_len) {
    (void)seq_len;
    double d = c->hidden_size, dh = config_head_dim(c);
    double q_dim = c->num_attention_heads * dh, kv_dim = config_kv_heads(c) * dh;
    return 2.0 * d * (2.0 * q_dim + 2.0 * kv_dim) + 4.0 * q_dim;
}

// Generation needs only the running state per query head: max, sum and the normalised
// output (d_h + 2 floats), constant in the sequence length. Nothing grows per token.
static int64_t nonapx_cache_floats(const decon_config *c) {
    (void)c;
    return 0;
}

static int64_t nonapx_state_floats(const decon_config *c) {
    return (int64_t)c->num_attention_heads * (config_head_dim(c) + 2);
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
};
