// `staticembqk` (DESIGN.md 5): queries and keys from the input token embeddings, values
// from the layer's input, so the map depends on the tokens but not on what the lower
// layers computed:
//   E = RMSNorm(e; this layer's input-norm weight, rms_norm_eps), e = Emb(t) of the tokens
//   Q = E Wq^T + bq, K = E Wk^T + bk (RoPE), V = H Wv^T + bv
//   O = concat_j(softmax(s Q_j K_g(j)^T + causal mask) V_g(j)) Wo^T,  per sequence
// The block's input norm weight thus serves two inputs (H = RMSNorm(x) and E) and gets
// both gradients; e's gradient goes to context->d_embedded (+=), which the model adds to
// the embedding's. E is recomputed in backward (one norm of rows x d) instead of kept.
#include <math.h>
#include <string.h>

#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"

enum { S_Q, S_K, S_V, S_ATTN, S_LSE };
static const size_t PAD = 16;  // alignment slack per arena tensor

typedef struct {
    int rows, d, heads, kv_heads, head_dim, q_dim, kv_dim;
    float scale;
} static_shape;

static static_shape shape_of(const mixer_context *x) {
    const decon_config *c = x->config;
    static_shape s;
    s.rows = x->batch * x->seq_len;
    s.d = c->hidden_size;
    s.heads = c->num_attention_heads;
    s.kv_heads = qkvo_kv_heads(c);
    s.head_dim = config_head_dim(c);
    s.q_dim = s.heads * s.head_dim;
    s.kv_dim = s.kv_heads * s.head_dim;
    s.scale = 1.0f / sqrtf((float)s.head_dim);
    return s;
}

static size_t static_saved_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)c->num_attention_heads * dh, kv_dim = (size_t)qkvo_kv_heads(c) * dh;
    return rows * (2 * q_dim + 2 * kv_dim) + (size_t)batch * (size_t)c->num_attention_heads * (size_t)seq_len + 5 * PAD;
}

// Forward: E and its rstd. Backward: d_attn, d_q, d_k, d_v, E, rstd, dE.
static size_t static_scratch_floats(const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)c->num_attention_heads * dh, kv_dim = (size_t)qkvo_kv_heads(c) * dh;
    return rows * (2 * q_dim + 2 * kv_dim) + rows * (2 * (size_t)c->hidden_size + 1) + 7 * PAD;
}

static void static_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    size_t rows = (size_t)batch * (size_t)seq_len, dh = (size_t)config_head_dim(c);
    size_t q_dim = (size_t)c->num_attention_heads * dh, kv_dim = (size_t)qkvo_kv_heads(c) * dh;
    layer->saved[S_Q] = arena_floats(activations, rows * q_dim);
    layer->saved[S_K] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_V] = arena_floats(activations, rows * kv_dim);
    layer->saved[S_ATTN] = arena_floats(activations, rows * q_dim);
    layer->saved[S_LSE] = arena_floats(activations, (size_t)batch * (size_t)c->num_attention_heads * (size_t)seq_len);
}

static const float *norm_weight(const mixer_layer *layer, const mixer_context *x) {
    return x->params + x->registry->items[layer->input_norm].offset;
}

// normed[rows, d] = RMSNorm(e) with this layer's input-norm weight; rstd[rows].
static void normed_embeddings(float *normed, float *rstd, const mixer_layer *layer, const mixer_context *x,
                              const static_shape *s) {
    rmsnorm_forward(normed, rstd, x->embedded, norm_weight(layer, x), s->rows, s->d, (float)x->config->rms_norm_eps);
}

static void static_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    static_shape s = shape_of(x);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V];
    size_t mark = arena_mark(x->scratch);
    float *normed = arena_floats(x->scratch, (size_t)s.rows * s.d);
    float *rstd = arena_floats(x->scratch, (size_t)s.rows);
    normed_embeddings(normed, rstd, layer, x, &s);
    linear_forward(q, normed, qkvo_param(layer, x, QKVO_WQ), qkvo_param(layer, x, QKVO_BQ), s.rows, s.d, s.q_dim);
    linear_forward(k, normed, qkvo_param(layer, x, QKVO_WK), qkvo_param(layer, x, QKVO_BK), s.rows, s.d, s.kv_dim);
    arena_release(x->scratch, mark);
    linear_forward(v, inp, qkvo_param(layer, x, QKVO_WV), qkvo_param(layer, x, QKVO_BV), s.rows, s.d, s.kv_dim);
    rope_forward(q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.heads, s.head_dim);
    rope_forward(k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.kv_heads, s.head_dim);
    attention_forward(layer->saved[S_ATTN], layer->saved[S_LSE], q, k, v, x->batch, x->seq_len, s.heads, s.kv_heads,
                      s.head_dim, s.scale);
    linear_forward(out, layer->saved[S_ATTN], qkvo_param(layer, x, QKVO_WO), NULL, s.rows, s.q_dim, s.d);
}

static void static_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                            const float *inp) {
    static_shape s = shape_of(x);
    size_t q_size = (size_t)s.rows * s.q_dim, kv_size = (size_t)s.rows * s.kv_dim, rd = (size_t)s.rows * s.d;
    size_t mark = arena_mark(x->scratch);
    float *d_attn = arena_floats(x->scratch, q_size);
    float *d_q = arena_floats(x->scratch, q_size);
    float *d_k = arena_floats(x->scratch, kv_size);
    float *d_v = arena_floats(x->scratch, kv_size);
    float *normed = arena_floats(x->scratch, rd);
    float *rstd = arena_floats(x->scratch, (size_t)s.rows);
    float *d_normed = arena_floats(x->scratch, rd);
    memset(d_attn, 0, q_size * sizeof(float));
    memset(d_q, 0, q_size * sizeof(float));
    memset(d_k, 0, kv_size * sizeof(float));
    memset(d_v, 0, kv_size * sizeof(float));
    memset(d_normed, 0, rd * sizeof(float));

    linear_backward(d_attn, qkvo_grad(layer, x, QKVO_WO), NULL, d_out, layer->saved[S_ATTN],
                    qkvo_param(layer, x, QKVO_WO), s.rows, s.q_dim, s.d);
    attention_backward(d_q, d_k, d_v, d_attn, layer->saved[S_ATTN], layer->saved[S_LSE], layer->saved[S_Q],
                       layer->saved[S_K], layer->saved[S_V], x->batch, x->seq_len, s.heads, s.kv_heads, s.head_dim,
                       s.scale);
    rope_backward(d_q, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.heads, s.head_dim);
    rope_backward(d_k, x->rope_cos, x->rope_sin, x->batch, x->seq_len, s.kv_heads, s.head_dim);
    normed_embeddings(normed, rstd, layer, x, &s);
    linear_backward(d_normed, qkvo_grad(layer, x, QKVO_WQ), qkvo_grad(layer, x, QKVO_BQ), d_q, normed,
                    qkvo_param(layer, x, QKVO_WQ), s.rows, s.d, s.q_dim);
    linear_backward(d_normed, qkvo_grad(layer, x, QKVO_WK), qkvo_grad(layer, x, QKVO_BK), d_k, normed,
                    qkvo_param(layer, x, QKVO_WK), s.rows, s.d, s.kv_dim);
    rmsnorm_backward(x->d_embedded, x->grads + x->registry->items[layer->input_norm].offset, d_normed, x->embedded,
                     norm_weight(layer, x), rstd, s.rows, s.d);
    linear_backward(d_inp, qkvo_grad(layer, x, QKVO_WV), qkvo_grad(layer, x, QKVO_BV), d_v, inp,
                    qkvo_param(layer, x, QKVO_WV), s.rows, s.d, s.kv_dim);
    arena_release(x->scratch, mark);
}

static void static_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    static_shape s = shape_of(x);
    size_t offset = (size_t)sequence * (size_t)x->seq_len;
    attention_probabilities(probs, layer->saved[S_Q] + offset * s.q_dim, layer->saved[S_K] + offset * s.kv_dim,
                            x->seq_len, s.heads, s.kv_heads, s.head_dim, s.scale);
}

static void static_attention_scores(mixer_layer *layer, const mixer_context *x, int sequence, float *scores) {
    static_shape s = shape_of(x);
    size_t offset = (size_t)sequence * (size_t)x->seq_len;
    attention_scores(scores, layer->saved[S_Q] + offset * s.q_dim, layer->saved[S_K] + offset * s.kv_dim, x->seq_len,
                     s.heads, s.kv_heads, s.head_dim, s.scale);
}

// Parameters, matmul FLOPs and the inference cache are standard's: the same projections
// and scores (the extra RMSNorm of e is not a matmul); K and V are cached per token.
static int64_t static_param_count(const decon_config *c) { return mixer_standard()->param_count(c); }
static double static_forward_flops(const decon_config *c, int seq_len) {
    return mixer_standard()->forward_flops_per_token(c, seq_len);
}
static int64_t static_cache_floats(const decon_config *c) { return mixer_standard()->cache_floats_per_token(c); }

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
};
