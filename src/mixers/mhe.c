// `mhe-add` / `mhe-mul`: multi-head embedding attention (the companion study, DESIGN.md 5).
// One shared projection of head size replaces the per-head projections; each head gets
// its own learned vectors instead:
//   Q = H Wq^T + bq, K = H Wk^T + bk, V = H Wv^T + bv           Wq, Wk, Wv [d_h, d]
//   add: Q_j = Q + 1 e^Q_j^T        mul: Q_j = Q * (1 + e^Q_j)   (K_j, V_j likewise)
//   Q_j, K_j rotated by RoPE; A_j = softmax(s Q_j K_g(j)^T + causal mask); O = concat_j(A_j V_g(j)) Wo^T
// e^Q is [heads, d_h]; e^K, e^V are [kv_heads, d_h]: with GQA the K/V embeddings belong to
// the kv heads that standard shares across a group (at MHA this is the study's 3 h d_h).
// Biases bq, bk, bv [d_h] when attention_bias; Wo [d, heads d_h] as standard.
// Tensor parallel: every rank computes the shared Q, K, V whole (Wq, Wk, Wv and biases
// replicated, grad_partial_over_tp) and then only its own heads (its rows of e^Q, e^K,
// e^V, its columns of Wo).
#include <math.h>

#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"
#include "par/parallel_linear.h"

// The projections sit in the slots qkvo_register_projections fills (QKVO_WQ..QKVO_BV).
enum { P_WQ = QKVO_WQ, P_BQ = QKVO_BQ, P_WK = QKVO_WK, P_BK = QKVO_BK, P_WV = QKVO_WV, P_BV = QKVO_BV };
enum { P_EQ = QKVO_BV + 1, P_EK, P_EV, P_WO };
// shared projections [rows, d_h]; per-head Q_j (after RoPE) [rows, heads, d_h], K_j (after
// RoPE), V_j [rows, kv_heads, d_h]; attention output [rows, heads, d_h]; logsumexp.
enum { S_QS, S_KS, S_VS, S_Q, S_K, S_V, S_AV, S_LSE };

static void mhe_register(mixer_layer *layer, param_registry *registry, const decon_config *c) {
    int dh = config_head_dim(c), heads = c->num_attention_heads, kv_heads = config_kv_heads(c);
    float std = (float)c->initializer_range;
    char name[PARAM_NAME_MAX];
    int l = layer->layer;
    // The shared projections are replicated over tensor-parallel ranks (their gradients
    // are summed over tp); the head embeddings follow their heads (rows), Wo is
    // row-parallel (its columns are the heads) as standard's.
    qkvo_register_projections(layer, registry, c, dh, dh, dh, SHARD_NONE);
    // Each rank backpropagates only its own heads through them: its gradient is a share.
    for (int p = P_WQ; p <= P_BV; p++)
        if (layer->params[p] >= 0) registry->items[layer->params[p]].grad_partial_over_tp = true;
    // Head embeddings ~ N(0, initializer_range) for both forms (mul: 1 + e stays near
    // the identity), without weight decay: decay would pull every head to the same copy.
    mixer_param_name(name, sizeof name, l, "eq");
    layer->params[P_EQ] = params_add(registry, name, "mixer", l, heads, dh, SHARD_ROWS, INIT_NORMAL, std, false);
    mixer_param_name(name, sizeof name, l, "ek");
    layer->params[P_EK] = params_add(registry, name, "mixer", l, kv_heads, dh, SHARD_ROWS, INIT_NORMAL, std, false);
    mixer_param_name(name, sizeof name, l, "ev");
    layer->params[P_EV] = params_add(registry, name, "mixer", l, kv_heads, dh, SHARD_ROWS, INIT_NORMAL, std, false);
    layer->params[P_WO] = qkvo_register_output(layer, registry, c);
}

static size_t mhe_saved_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    size_t lse = (size_t)batch * (size_t)config_local_heads(c) * (size_t)seq_len;
    return rows * (3 * dh + 2 * q_dim + 2 * kv_dim) + lse + 8 * (size_t)16;
}

// d_av, d_q [rows, q_dim]; d_k, d_v [rows, kv_dim]; d_qs, d_ks, d_vs [rows, d_h]
static size_t mhe_scratch_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    return rows * (2 * q_dim + 2 * kv_dim + 3 * dh) + 7 * (size_t)16;
}

static void mhe_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    layer->saved[S_QS] = arena_floats(activations, rows * dh);
    layer->saved[S_KS] = arena_floats(activations, rows * dh);
    layer->saved[S_VS] = arena_floats(activations, rows * dh);
    layer->saved[S_Q] = arena_floats(activations, rows * q_dim);
    layer->saved[S_K] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_V] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_AV] = arena_floats(activations, rows * q_dim);
    layer->saved[S_LSE] = arena_floats(activations, (size_t)batch * (size_t)config_local_heads(c) * (size_t)seq_len);
}

static const float *param_or_null(const mixer_layer *layer, const mixer_context *x, int which) {
    int index = layer->params[which];
    return index < 0 ? NULL : x->params + x->registry->items[index].offset;
}

static float *grad_or_null(const mixer_layer *layer, const mixer_context *x, int which) {
    int index = layer->params[which];
    return index < 0 ? NULL : x->grads + x->registry->items[index].offset;
}

static void mhe_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp, bool mul) {
    const decon_config *c = x->config;
    int rows = x->batch * x->seq_len, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    float *qs = layer->saved[S_QS], *ks = layer->saved[S_KS], *vs = layer->saved[S_VS];
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V];
    linear_forward(qs, inp, param_or_null(layer, x, P_WQ), param_or_null(layer, x, P_BQ), rows, d, dh);
    linear_forward(ks, inp, param_or_null(layer, x, P_WK), param_or_null(layer, x, P_BK), rows, d, dh);
    linear_forward(vs, inp, param_or_null(layer, x, P_WV), param_or_null(layer, x, P_BV), rows, d, dh);
    head_embedding_forward(q, qs, param_or_null(layer, x, P_EQ), rows, heads, dh, mul);
    head_embedding_forward(k, ks, param_or_null(layer, x, P_EK), rows, kv_heads, dh, mul);
    head_embedding_forward(v, vs, param_or_null(layer, x, P_EV), rows, kv_heads, dh, mul);
    rope_forward(q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, heads, dh);
    rope_forward(k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, kv_heads, dh);
    attention_forward(layer->saved[S_AV], layer->saved[S_LSE], q, k, v, x->batch, x->seq_len, heads, kv_heads, dh, dh,
                      1.0f / sqrtf((float)dh));
    row_parallel_linear_forward(out, layer->saved[S_AV], param_or_null(layer, x, P_WO), rows, heads * dh, d);
}

static void mhe_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                         const float *inp, bool mul) {
    const decon_config *c = x->config;
    int rows = x->batch * x->seq_len, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    size_t q_size = (size_t)rows * (size_t)(heads * dh), kv_size = (size_t)rows * (size_t)(kv_heads * dh);
    size_t s_size = (size_t)rows * (size_t)dh;
    size_t mark = arena_mark(x->scratch);
    float *d_av = arena_floats(x->scratch, q_size);
    float *d_q = arena_floats(x->scratch, q_size);
    float *d_k = arena_floats(x->scratch, kv_size);
    float *d_v = arena_floats(x->scratch, kv_size);
    float *d_qs = arena_floats(x->scratch, s_size);
    float *d_ks = arena_floats(x->scratch, s_size);
    float *d_vs = arena_floats(x->scratch, s_size);
    fill_floats(d_av, 0.0f, q_size);
    fill_floats(d_q, 0.0f, q_size);
    fill_floats(d_k, 0.0f, kv_size);
    fill_floats(d_v, 0.0f, kv_size);
    fill_floats(d_qs, 0.0f, s_size);
    fill_floats(d_ks, 0.0f, s_size);
    fill_floats(d_vs, 0.0f, s_size);

    row_parallel_linear_backward(d_av, grad_or_null(layer, x, P_WO), d_out, layer->saved[S_AV],
                                 param_or_null(layer, x, P_WO), rows, heads * dh, d);
    attention_backward(d_q, d_k, d_v, d_av, layer->saved[S_AV], layer->saved[S_LSE], layer->saved[S_Q],
                       layer->saved[S_K], layer->saved[S_V], x->batch, x->seq_len, heads, kv_heads, dh, dh,
                       1.0f / sqrtf((float)dh));
    rope_backward(d_q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, heads, dh);
    rope_backward(d_k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, kv_heads, dh);
    head_embedding_backward(d_qs, grad_or_null(layer, x, P_EQ), d_q, layer->saved[S_QS], param_or_null(layer, x, P_EQ),
                            rows, heads, dh, mul);
    head_embedding_backward(d_ks, grad_or_null(layer, x, P_EK), d_k, layer->saved[S_KS], param_or_null(layer, x, P_EK),
                            rows, kv_heads, dh, mul);
    head_embedding_backward(d_vs, grad_or_null(layer, x, P_EV), d_v, layer->saved[S_VS], param_or_null(layer, x, P_EV),
                            rows, kv_heads, dh, mul);
    linear_backward(d_inp, grad_or_null(layer, x, P_WQ), grad_or_null(layer, x, P_BQ), d_qs, inp,
                    param_or_null(layer, x, P_WQ), rows, d, dh);
    linear_backward(d_inp, grad_or_null(layer, x, P_WK), grad_or_null(layer, x, P_BK), d_ks, inp,
                    param_or_null(layer, x, P_WK), rows, d, dh);
    linear_backward(d_inp, grad_or_null(layer, x, P_WV), grad_or_null(layer, x, P_BV), d_vs, inp,
                    param_or_null(layer, x, P_WV), rows, d, dh);
    arena_release(x->scratch, mark);
}

static void mhe_add_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    mhe_forward(layer, x, out, inp, false);
}

static void mhe_mul_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    mhe_forward(layer, x, out, inp, true);
}

static void mhe_add_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                             const float *inp) {
    mhe_backward(layer, x, d_inp, d_out, inp, false);
}

static void mhe_mul_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                             const float *inp) {
    mhe_backward(layer, x, d_inp, d_out, inp, true);
}

static void mhe_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_probabilities(probs, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim,
                            1.0f / sqrtf((float)s.head_dim));
}

// s q_i,j.k_t,g(j) of the per-head Q_j, K_j after RoPE (recordings).
static void mhe_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    attention_score_matrix(scores, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim,
                           1.0f / sqrtf((float)s.head_dim));
}

// 3 d d_h (shared projections) + 3 d_h (biases) + (heads + 2 kv_heads) d_h (embeddings)
// + d heads d_h (Wo). At MHA without biases: 3 d d_h + d^2 + 3 h d_h (the study's count).
static int64_t mhe_param_count(const decon_config *c) {
    int64_t d = c->hidden_size, dh = config_head_dim(c), heads = c->num_attention_heads, kv = config_kv_heads(c);
    return 3 * d * dh + (c->attention_bias ? 3 * dh : 0) + (heads + 2 * kv) * dh + d * heads * dh;
}

// Projections 2 d (3 d_h) + Wo 2 d q_dim; scores and A V 2 (seq_len + 1) q_dim per token
// (causal average, as standard). The head embeddings are elementwise (not counted).
static double mhe_forward_flops(const decon_config *c, int seq_len) {
    double d = c->hidden_size, dh = config_head_dim(c), q_dim = c->num_attention_heads * dh;
    return 2.0 * d * 3.0 * dh + 2.0 * d * q_dim + 2.0 * (seq_len + 1.0) * q_dim;
}

// The shared K and V before the head embeddings and RoPE (2 d_h per token): each head's
// K_j, V_j is an elementwise function of them, its embedding and the position, so a
// decoder caches heads (or kv_heads) times less than standard and re-expands on the fly.
static int64_t mhe_cache_floats(const decon_config *c) { return 2 * (int64_t)config_head_dim(c); }

// Decoding with the compact cache (mhe_cache_floats): per sequence the shared K and V
// BEFORE the head embeddings and RoPE, KS then VS [max_context, d_h]. They do not depend
// on the head, so they are the same on every tensor-parallel rank (replicated, like the
// shared projections). A step re-expands one sequence's cache at a time into the scratch
// (K_g = RoPE(KS (+|*) e_g), V_g = VS (+|*) e_g, the forward's own ops), then attends:
// d_h per token instead of standard's 2 kv_heads d_h, for O(L kv_heads d_h) more work.
static size_t mhe_decode_state_floats(const decon_config *c, int max_context) {
    return 2 * (size_t)max_context * (size_t)config_head_dim(c);
}

// qs, ks, vs [batch, d_h]; q, av [batch, q_dim]; one sequence's expanded K, V
// [max_context, kv_dim].
static size_t mhe_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    size_t dh = (size_t)config_head_dim(c), q_dim = (size_t)config_local_heads(c) * dh;
    size_t kv_dim = (size_t)config_local_kv_heads(c) * dh;
    return (size_t)batch * (3 * dh + 2 * q_dim) + 2 * (size_t)max_context * kv_dim + 7 * (size_t)16;
}

static void mhe_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                               int sequence, int length) {
    size_t dh = (size_t)config_head_dim(forward->config), offset = (size_t)sequence * (size_t)forward->seq_len * dh;
    copy_floats(state, layer->saved[S_KS] + offset, (size_t)length * dh);
    copy_floats(state + (size_t)max_context * dh, layer->saved[S_VS] + offset, (size_t)length * dh);
}

static void mhe_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp, bool mul) {
    const mixer_context *step = &x->step;
    const decon_config *c = step->config;
    int B = step->batch, d = c->hidden_size, dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    size_t q_dim = (size_t)heads * dh, kv_dim = (size_t)kv_heads * dh, vs_offset = (size_t)x->max_context * dh;
    size_t mark = arena_mark(step->scratch);
    float *qs = arena_floats(step->scratch, (size_t)B * dh), *ks = arena_floats(step->scratch, (size_t)B * dh);
    float *vs = arena_floats(step->scratch, (size_t)B * dh), *q = arena_floats(step->scratch, (size_t)B * q_dim);
    float *av = arena_floats(step->scratch, (size_t)B * q_dim);
    float *k_all = arena_floats(step->scratch, (size_t)x->max_context * kv_dim);
    float *v_all = arena_floats(step->scratch, (size_t)x->max_context * kv_dim);
    linear_forward(qs, inp, param_or_null(layer, step, P_WQ), param_or_null(layer, step, P_BQ), B, d, dh);
    linear_forward(ks, inp, param_or_null(layer, step, P_WK), param_or_null(layer, step, P_BK), B, d, dh);
    linear_forward(vs, inp, param_or_null(layer, step, P_WV), param_or_null(layer, step, P_BV), B, d, dh);
    copy_rows_to_positions(x->states, x->state_stride, ks, x->positions, B, (size_t)dh);
    copy_rows_to_positions(x->states + vs_offset, x->state_stride, vs, x->positions, B, (size_t)dh);
    head_embedding_forward(q, qs, param_or_null(layer, step, P_EQ), B, heads, dh, mul);
    rope_at_positions(q, step->rope_cos, step->rope_sin, x->positions, B, heads, dh);
    for (int b = 0; b < B; b++) {
        const float *cache = x->states + (size_t)b * x->state_stride;
        int tokens = x->host_positions[b] + 1;
        head_embedding_forward(k_all, cache, param_or_null(layer, step, P_EK), tokens, kv_heads, dh, mul);
        rope_forward(k_all, step->rope_cos, step->rope_sin, 1, tokens, kv_heads, dh);
        head_embedding_forward(v_all, cache + vs_offset, param_or_null(layer, step, P_EV), tokens, kv_heads, dh, mul);
        attention_decode(av + (size_t)b * q_dim, q + (size_t)b * q_dim, k_all, v_all, x->positions + b, 1, heads,
                         kv_heads, dh, dh, 1.0f / sqrtf((float)dh), 0, 0);
    }
    row_parallel_linear_forward(out, av, param_or_null(layer, step, P_WO), B, (int)q_dim, d);
    arena_release(step->scratch, mark);
}

static void mhe_add_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    mhe_decode_step(layer, x, out, inp, false);
}

static void mhe_mul_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    mhe_decode_step(layer, x, out, inp, true);
}

const mixer_kind mixer_kind_mhe_add = {
    .name = "mhe-add",
    .letter = 'E',
    .register_params = mhe_register,
    .saved_floats = mhe_saved_floats,
    .scratch_floats = mhe_scratch_floats,
    .bind_saved = mhe_bind,
    .forward = mhe_add_forward,
    .backward = mhe_add_backward,
    .attention_matrix = mhe_attention_matrix,
    .attention_scores = mhe_attention_scores,
    .param_count = mhe_param_count,
    .forward_flops_per_token = mhe_forward_flops,
    .cache_floats_per_token = mhe_cache_floats,
    .decode_state_floats = mhe_decode_state_floats,
    .decode_scratch_floats = mhe_decode_scratch_floats,
    .decode_prefill = mhe_decode_prefill,
    .decode_step = mhe_add_decode_step,
};

const mixer_kind mixer_kind_mhe_mul = {
    .name = "mhe-mul",
    .letter = 'X',
    .register_params = mhe_register,
    .saved_floats = mhe_saved_floats,
    .scratch_floats = mhe_scratch_floats,
    .bind_saved = mhe_bind,
    .forward = mhe_mul_forward,
    .backward = mhe_mul_backward,
    .attention_matrix = mhe_attention_matrix,
    .attention_scores = mhe_attention_scores,
    .param_count = mhe_param_count,
    .forward_flops_per_token = mhe_forward_flops,
    .cache_floats_per_token = mhe_cache_floats,
    .decode_state_floats = mhe_decode_state_floats,
    .decode_scratch_floats = mhe_decode_scratch_floats,
    .decode_prefill = mhe_decode_prefill,
    .decode_step = mhe_mul_decode_step,
};
