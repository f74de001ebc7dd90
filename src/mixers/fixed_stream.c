// `rndembqk` and `fixedseqqk` (DESIGN.md 5): the attention map does not depend on the
// input. Q and K come from the fixed stream only — sequence x->fixed_sequence of the
// micro-batch, whose block input is X_l of the fixed stream (the model starts it from
// Gaussian noise for rndembqk, from Emb(t_s) for fixedseqqk; the mixer math is the same):
//   Hf = rows of inp of the fixed sequence            [L, d]
//   Qf = Hf Wq^T + bq, Kf = Hf Wk^T + bk, RoPE         [L, heads|kv_heads, d_h]
//   A_j = softmax(s Qf_j Kf_g(j)^T + causal mask)      [heads, L, L], once per micro-batch
//   V_b = H_b Wv^T + bv,  O_b = concat_j(A_j V_b,g(j)) Wo^T   for EVERY sequence b,
// the fixed sequence included (its X_{l+1} = Block_l(X_l) uses the same map).
// Backward: dA_j = sum_b dO_b,j V_b,g^T collects every sequence's contribution, so Wq, Wk,
// bq, bk and the fixed sequence's rows of d_inp get the gradient of the whole batch.
//
// The shared_attention_* ops materialise A one head at a time (L x L floats of scratch,
// recomputed in backward rather than kept per layer) and apply it to the whole batch with
// one sgemm per head: measured faster than broadcasting Qf, Kf over the batch through the
// flash attention op, which recomputes the same scores and exponentials for every
// sequence (docs/design.md).

#include "core/errors.h"
#include "mixers/decode_qkvo.h"
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"
#include "par/parallel_linear.h"

enum { S_Q, S_K, S_V, S_AV };  // Qf, Kf (after RoPE) of the fixed sequence; V, A V of all
static const size_t PAD = 16;    // alignment slack per arena tensor

static size_t fixed_saved_floats(const decon_config *c, int batch, int seq_len) {
    size_t dh = (size_t)config_head_dim(c), L = (size_t)seq_len, rows = (size_t)batch * L;
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    return L * (q_dim + kv_dim) + rows * (q_dim + kv_dim) + 4 * PAD;
}

// Forward: the ops' workspace. Backward: d_av, d_v, dQf, dKf and the workspace.
// attention_matrix: nothing (it writes into the caller's heads x L x L).
static size_t fixed_scratch_floats(const decon_config *c, int batch, int seq_len) {
    size_t dh = (size_t)config_head_dim(c), L = (size_t)seq_len, rows = (size_t)batch * L;
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    size_t workspace = shared_attention_workspace_floats(batch, seq_len, config_local_heads(c),
                                                         config_local_kv_heads(c), config_head_dim(c));
    return rows * (q_dim + kv_dim) + L * (q_dim + kv_dim) + workspace + 5 * PAD;
}

static void fixed_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    size_t dh = (size_t)config_head_dim(c), L = (size_t)seq_len, rows = (size_t)batch * L;
    size_t q_dim = (size_t)config_local_heads(c) * dh, kv_dim = (size_t)config_local_kv_heads(c) * dh;
    layer->saved[S_Q] = arena_floats(activations, L * q_dim);
    layer->saved[S_K] = arena_floats(activations, L * kv_dim);
    layer->saved[S_V] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_AV] = arena_floats(activations, rows * q_dim);
}

static float *workspace_from(const mixer_context *x, const qkvo_shape *s) {
    return arena_floats(x->scratch,
                        shared_attention_workspace_floats(s->batch, s->seq_len, s->heads, s->kv_heads, s->head_dim));
}

static void require_fixed_stream(const mixer_layer *layer, const mixer_context *x) {
    if (x->fixed_sequence < 0 || x->fixed_sequence >= x->batch)
        fatal("internal: layer %d (%s) needs the fixed stream, but the micro-batch has none", layer->layer,
              layer->kind->name);
}

static void fixed_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    require_fixed_stream(layer, x);
    qkvo_shape s = qkvo_shape_of(x);
    int L = s.seq_len, rows = s.batch * L, d = x->config->hidden_size;
    const float *fixed_inp = inp + (size_t)x->fixed_sequence * L * d;
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V], *av = layer->saved[S_AV];
    column_parallel_linear_forward(q, fixed_inp, qkvo_param(layer, x, QKVO_WQ), qkvo_param(layer, x, QKVO_BQ), L, d,
                                   s.q_dim);
    column_parallel_linear_forward(k, fixed_inp, qkvo_param(layer, x, QKVO_WK), qkvo_param(layer, x, QKVO_BK), L, d,
                                   s.kv_dim);
    column_parallel_linear_forward(v, inp, qkvo_param(layer, x, QKVO_WV), qkvo_param(layer, x, QKVO_BV), rows, d,
                                   s.kv_dim);
    rope_forward(q, x->rope_cos, x->rope_sin, 1, L, s.heads, s.head_dim);
    rope_forward(k, x->rope_cos, x->rope_sin, 1, L, s.kv_heads, s.head_dim);
    size_t mark = arena_mark(x->scratch);
    shared_attention_forward(av, q, k, v, s.batch, L, s.heads, s.kv_heads, s.head_dim, s.scale,
                             workspace_from(x, &s));
    arena_release(x->scratch, mark);
    row_parallel_linear_forward(out, av, qkvo_param(layer, x, QKVO_WO), rows, s.q_dim, d);
}

static void fixed_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                           const float *inp) {
    require_fixed_stream(layer, x);
    qkvo_shape s = qkvo_shape_of(x);
    int L = s.seq_len, rows = s.batch * L, d = x->config->hidden_size;
    size_t fixed_offset = (size_t)x->fixed_sequence * L * d;
    size_t mark = arena_mark(x->scratch);
    float *d_av = arena_floats(x->scratch, (size_t)rows * s.q_dim);
    float *d_v = arena_floats(x->scratch, (size_t)rows * s.kv_dim);
    float *d_q = arena_floats(x->scratch, (size_t)L * s.q_dim);
    float *d_k = arena_floats(x->scratch, (size_t)L * s.kv_dim);
    float *workspace = workspace_from(x, &s);
    fill_floats(d_av, 0.0f, (size_t)rows * s.q_dim);
    fill_floats(d_v, 0.0f, (size_t)rows * s.kv_dim);
    fill_floats(d_q, 0.0f, (size_t)L * s.q_dim);
    fill_floats(d_k, 0.0f, (size_t)L * s.kv_dim);

    row_parallel_linear_backward(d_av, qkvo_grad(layer, x, QKVO_WO), d_out, layer->saved[S_AV],
                                 qkvo_param(layer, x, QKVO_WO), rows, s.q_dim, d);
    shared_attention_backward(d_q, d_k, d_v, d_av, layer->saved[S_Q], layer->saved[S_K], layer->saved[S_V], s.batch,
                              L, s.heads, s.kv_heads, s.head_dim, s.scale, workspace);
    rope_backward(d_q, x->rope_cos, x->rope_sin, 1, L, s.heads, s.head_dim);
    rope_backward(d_k, x->rope_cos, x->rope_sin, 1, L, s.kv_heads, s.head_dim);
    column_parallel_linear_backward(d_inp + fixed_offset, qkvo_grad(layer, x, QKVO_WQ), qkvo_grad(layer, x, QKVO_BQ),
                                    d_q, inp + fixed_offset, qkvo_param(layer, x, QKVO_WQ), L, d, s.q_dim);
    column_parallel_linear_backward(d_inp + fixed_offset, qkvo_grad(layer, x, QKVO_WK), qkvo_grad(layer, x, QKVO_BK),
                                    d_k, inp + fixed_offset, qkvo_param(layer, x, QKVO_WK), L, d, s.kv_dim);
    column_parallel_linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WV), qkvo_grad(layer, x, QKVO_BV), d_v, inp,
                                    qkvo_param(layer, x, QKVO_WV), rows, d, s.kv_dim);
    arena_release(x->scratch, mark);
}

// The one map of the last forward, whichever sequence is asked for.
static void fixed_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    (void)sequence;
    qkvo_shape s = qkvo_shape_of(x);
    shared_attention_map(probs, layer->saved[S_Q], layer->saved[S_K], s.seq_len, s.heads, s.kv_heads, s.head_dim,
                         s.scale);
}

// s Qf_i.Kf_t of the fixed stream (after RoPE): the same for every sequence.
static void fixed_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    (void)sequence;
    qkvo_shape s = qkvo_shape_of(x);
    attention_score_matrix(scores, layer->saved[S_Q], layer->saved[S_K], s.seq_len, s.heads, s.kv_heads, s.head_dim,
                           s.scale);
}

static int64_t fixed_param_count(const decon_config *c) { return mixer_standard()->param_count(c); }

// Per loss token: V and output projections 2 d (kv_dim + q_dim) and A V (t+1) d_h per head
// for the t-th token, (L + 1) q_dim on average (causal). The fixed stream's Q, K
// projections 2 d (q_dim + kv_dim) and scores (L + 1) q_dim are computed once per
// micro-batch for L tokens, so they count 1 / micro_batch_size per token (amortised).
// The fixed sequence's own share of the per-token work, like its MLP, is not counted.
static double fixed_forward_flops(const decon_config *c, int seq_len) {
    double d = c->hidden_size, dh = config_head_dim(c);
    double q_dim = c->num_attention_heads * dh, kv_dim = config_kv_heads(c) * dh;
    double sequences = c->micro_batch_size > 0 ? c->micro_batch_size : 1;
    double per_token = 2.0 * d * (kv_dim + q_dim) + (seq_len + 1.0) * q_dim;
    double fixed_map = 2.0 * d * (q_dim + kv_dim) + (seq_len + 1.0) * q_dim;
    return per_token + fixed_map / sequences;
}

// At inference the map is input-independent and can be computed once and cached (heads x
// L_max x L_max per layer, or Qf, Kf: L_max (q_dim + kv_dim)), shared by every request;
// per token of the input only V is cached.
static int64_t fixed_cache_floats(const decon_config *c) { return (int64_t)config_kv_heads(c) * config_head_dim(c); }

// Decoding. Shared by the batch, computed once for the maximum context (decode_share):
// the fixed stream's Qf [max_context, q_dim] and Kf [max_context, kv_dim] after RoPE,
// the factors of the one map (the map itself, heads x L^2 / 2, would be 8.6 GB per layer
// at L = 16k and 8 heads); each step reads the map's row of a sequence's position
// against Kf. Per sequence: its values V [max_context, kv_dim], a V-only KV cache.
static size_t fixed_decode_state_floats(const decon_config *c, int max_context) {
    return (size_t)max_context * (size_t)config_local_kv_heads(c) * (size_t)config_head_dim(c);
}

static size_t fixed_decode_shared_floats(const decon_config *c, int max_context) {
    size_t dh = (size_t)config_head_dim(c);
    return (size_t)max_context * ((size_t)config_local_heads(c) + (size_t)config_local_kv_heads(c)) * dh;
}

static size_t fixed_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return decode_rows_floats(c, batch);
}

static void fixed_decode_share(mixer_layer *layer, const mixer_context *forward, float *shared) {
    qkvo_shape s = qkvo_shape_of(forward);
    size_t L = (size_t)s.seq_len;
    copy_floats(shared, layer->saved[S_Q], L * s.q_dim);
    copy_floats(shared + L * s.q_dim, layer->saved[S_K], L * s.kv_dim);
}

static void fixed_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                                 int sequence, int length) {
    (void)max_context;
    qkvo_shape s = qkvo_shape_of(forward);
    copy_floats(state, layer->saved[S_V] + (size_t)sequence * s.seq_len * s.kv_dim, (size_t)length * s.kv_dim);
}

static void fixed_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    qkvo_shape s = qkvo_shape_of(&x->step);
    size_t mark = arena_mark(x->step.scratch);
    decode_rows r = decode_rows_take(x);
    const float *qf = x->shared, *kf = x->shared + (size_t)x->max_context * s.q_dim;
    column_parallel_linear_forward(r.v, inp, qkvo_param(layer, &x->step, QKVO_WV), qkvo_param(layer, &x->step, QKVO_BV),
                                   s.rows, s.d, s.kv_dim);
    copy_rows_to_positions(x->states, x->state_stride, r.v, x->positions, s.batch, (size_t)s.kv_dim);
    copy_rows_from_positions(r.q, qf, 0, x->positions, s.batch, (size_t)s.q_dim);
    attention_decode(r.av, r.q, kf, x->states, x->positions, s.batch, s.heads, s.kv_heads, s.head_dim, s.head_dim, s.scale, 0,
                     x->state_stride);
    decode_output(layer, x, out, r.av);
    arena_release(x->step.scratch, mark);
}

// Shared by the batch: Qf and Kf of every position of the maximum context.
static int64_t fixed_shared_cache_floats(const decon_config *c) {
    return ((int64_t)c->num_attention_heads + config_kv_heads(c)) * config_head_dim(c);
}

#define FIXED_DECODE_MEMBERS                                      \
    .shared_cache_floats_per_token = fixed_shared_cache_floats,  \
    .decode_state_floats = fixed_decode_state_floats,             \
    .decode_shared_floats = fixed_decode_shared_floats,           \
    .decode_scratch_floats = fixed_decode_scratch_floats,         \
    .decode_share = fixed_decode_share,                           \
    .decode_prefill = fixed_decode_prefill,                       \
    .decode_step = fixed_decode_step,

const mixer_kind mixer_kind_rndembqk = {
    .name = "rndembqk",
    .letter = 'R',
    .uses_fixed_stream = true,
    .register_params = qkvo_register,
    .saved_floats = fixed_saved_floats,
    .scratch_floats = fixed_scratch_floats,
    .bind_saved = fixed_bind,
    .forward = fixed_forward,
    .backward = fixed_backward,
    .attention_matrix = fixed_attention_matrix,
    .attention_scores = fixed_attention_scores,
    .param_count = fixed_param_count,
    .forward_flops_per_token = fixed_forward_flops,
    .cache_floats_per_token = fixed_cache_floats,
    FIXED_DECODE_MEMBERS
};

// The same mixer; the model starts fixedseqqk's fixed stream from Emb(t_s) instead.
const mixer_kind mixer_kind_fixedseqqk = {
    .name = "fixedseqqk",
    .letter = 'F',
    .uses_fixed_stream = true,
    .fixed_stream_from_tokens = true,
    .register_params = qkvo_register,
    .saved_floats = fixed_saved_floats,
    .scratch_floats = fixed_scratch_floats,
    .bind_saved = fixed_bind,
    .forward = fixed_forward,
    .backward = fixed_backward,
    .attention_matrix = fixed_attention_matrix,
    .attention_scores = fixed_attention_scores,
    .param_count = fixed_param_count,
    .forward_flops_per_token = fixed_forward_flops,
    .cache_floats_per_token = fixed_cache_floats,
    FIXED_DECODE_MEMBERS
};
