// `approx-diag`: the study's recurrent form of the Taylor-approximated attention
// (DESIGN.md 5, the study's eqs. 4.14-4.17), in linear time. Exactly standard's tensors
// (qkvo.h), so the parameter counts match by construction.
//   Q, K, V as standard (biases, GQA), Q and K rotated by RoPE; per head, squares
//   elementwise, sums over t <= i:
//   o_i = mean_t v_t + [a_i.(sum k_t v_t^T)] r(a_i.sum k_t)
//                    + [b_i.(sum k_t^2 v_t^T)] / (b_i.sum k_t^2 + eps)
//   a_i = s q_i, b_i = s^2/2 q_i^2 (the first- and second-order Taylor terms of
//   exp(s q.k), the latter without cross terms), s = 1/sqrt(d_h)
//   r(x) = x / (x^2 + guard^2 (i+1) |a_i|^2 sum_t |k_t|^2), the smooth reciprocal;
//   guard = [attention] approx_diag_guard (default 0.1), eps = approx_diag_eps (1e-6).
//   O = concat_j(o_j) Wo^T
// s and the 1/2 cancel inside each ratio. RoPE: the first-order term is standard's score
// s q.k, so q and k are rotated as in standard.
// Guards (docs/design.md, "approx-diag"): the first-order denominator a.sum k changes sign,
// and any guard that keeps 1/x's sign jumps there; r instead passes smoothly through 0
// where the sum cancels, is 1/x (to guard^2) where it does not, and is scale-free, so the
// term is bounded by max|v| / (2 guard) and fp32 reordering cannot flip it. The
// second-order denominator is >= 0, so + eps keeps it smooth.
#include <math.h>
#include <string.h>

#include "mixers/decode_qkvo.h"
#include "mixers/mixer.h"
#include "mixers/qkvo.h"
#include "ops/ops.h"


enum { S_Q, S_K, S_V, S_AV };

static size_t diag_saved_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_saved_floats(c, batch, seq_len);
}

static size_t diag_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return qkvo_scratch_floats(c, batch, seq_len);
}

static void diag_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    qkvo_bind_saved(layer, activations, c, batch, seq_len);
}

static float scale_of(const decon_config *c) { return 1.0f / sqrtf((float)config_head_dim(c)); }

static void diag_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    float *q = layer->saved[S_Q], *k = layer->saved[S_K], *v = layer->saved[S_V];
    qkvo_project_forward(layer, x, q, k, v, inp);
    diag_attention_forward(layer->saved[S_AV], q, k, v, x->batch, x->seq_len, heads, kv_heads, dh, scale_of(c),
                           (float)c->approx_diag_guard, (float)c->approx_diag_eps);
    qkvo_output_forward(layer, x, out);
}

static void diag_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                          const float *inp) {
    const decon_config *c = x->config;
    int dh = config_head_dim(c);
    int heads = config_local_heads(c), kv_heads = config_local_kv_heads(c);
    qkvo_gradients g = qkvo_backward_begin(layer, x, d_out);
    diag_attention_backward(g.d_q, g.d_k, g.d_v, g.d_av, layer->saved[S_Q], layer->saved[S_K], layer->saved[S_V], x->batch,
                            x->seq_len, heads, kv_heads, dh, scale_of(c), (float)c->approx_diag_guard,
                            (float)c->approx_diag_eps);
    qkvo_project_backward(layer, x, d_inp, g.d_q, g.d_k, g.d_v, inp);
    arena_release(x->scratch, g.mark);
}

// The per-position weights of o_i = sum_t A_it v_t:
// A_it = 1/(i+1) + u_it / g(sum u) + w_it / (sum w + eps), rows summing to ~3 (one per term).
static void diag_attention_matrix(mixer_layer *layer, const mixer_context *x, int sequence, float *probs) {
    const decon_config *c = x->config;
    mixer_sequence_qk s = mixer_sequence_qk_of(x, layer->saved[S_Q], layer->saved[S_K], sequence);
    diag_attention_quadratic_probabilities(probs, s.q, s.k, s.seq_len, s.heads, s.kv_heads, s.head_dim, scale_of(c),
                                           (float)c->approx_diag_guard, (float)c->approx_diag_eps);
}

static int64_t diag_param_count(const decon_config *c) { return mixer_standard()->param_count(c); }

// Per token: projections 2 d (2 q_dim + 2 kv_dim) (as standard); per kv head the state
// update k v^T and k^2 v^T, 4 d_h^2; per query head the two read-outs a^T P, b^T R and the
// two denominators, 4 d_h (d_h + 1). Independent of seq_len.
static double diag_forward_flops(const decon_config *c, int seq_len) {
    (void)seq_len;
    double d = c->hidden_size, dh = config_head_dim(c), heads = c->num_attention_heads, kv = config_kv_heads(c);
    double q_dim = heads * dh, kv_dim = kv * dh;
    return 2.0 * d * (2.0 * q_dim + 2.0 * kv_dim) + kv * 4.0 * dh * dh + heads * 4.0 * dh * (dh + 1.0);
}

// Nothing grows per token: an inference step needs only the recurrent state below.
static int64_t diag_cache_floats(const decon_config *c) {
    (void)c;
    return 0;
}

// The recurrent state of a sequence, constant in the length: per kv head
// sum k v^T, sum k^2 v^T (d_h^2 each) and sum k, sum k^2, sum v (d_h each).
static int64_t diag_state_floats(const decon_config *c) {
    int64_t dh = config_head_dim(c);
    return (int64_t)config_kv_heads(c) * (2 * dh * dh + 3 * dh);
}

// Decoding: the recurrent state P, R, K, C, V per kv head (ops' diag_state_*), constant in
// the context: prefill sums the prompt's rotated k, v into it; a step adds the new token
// and reads o as the forward does at that position.
static size_t diag_decode_floats(const decon_config *c, int max_context) {
    (void)max_context;
    return (size_t)config_local_kv_heads(c) * diag_decode_state_floats(config_head_dim(c));
}

static size_t diag_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return decode_rows_floats(c, batch);
}

static void diag_decode_prefill(mixer_layer *layer, const mixer_context *forward, float *state, int max_context,
                                int sequence, int length) {
    const decon_config *c = forward->config;
    int dh = config_head_dim(c), kv_heads = config_local_kv_heads(c);
    size_t offset = (size_t)sequence * (size_t)forward->seq_len * (size_t)(kv_heads * dh);
    fill_floats(state, 0.0f, diag_decode_floats(c, max_context));
    diag_state_update(state, 0, layer->saved[S_K] + offset, layer->saved[S_V] + offset, 1, length, kv_heads, dh);
}

static void diag_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    const decon_config *c = x->step.config;
    qkvo_shape s = qkvo_shape_of(&x->step);
    size_t mark = arena_mark(x->step.scratch);
    decode_rows r = decode_rows_take(x);
    qkvo_linear_forward(layer, &x->step, r.q, r.k, r.v, inp);
    rope_at_positions(r.q, x->step.rope_cos, x->step.rope_sin, x->positions, s.batch, s.heads, s.head_dim);
    rope_at_positions(r.k, x->step.rope_cos, x->step.rope_sin, x->positions, s.batch, s.kv_heads, s.head_dim);
    diag_state_update(x->states, x->state_stride, r.k, r.v, s.batch, 1, s.kv_heads, s.head_dim);
    diag_state_read(r.av, x->states, x->state_stride, r.q, x->positions, s.batch, s.heads, s.kv_heads, s.head_dim,
                    s.scale, (float)c->approx_diag_guard, (float)c->approx_diag_eps);
    decode_output(layer, x, out, r.av);
    arena_release(x->step.scratch, mark);
}

const mixer_kind mixer_kind_approx_diag = {
    .name = "approx-diag",
    .letter = 'D',
    .register_params = qkvo_register,
    .saved_floats = diag_saved_floats,
    .scratch_floats = diag_scratch_floats,
    .bind_saved = diag_bind,
    .forward = diag_forward,
    .backward = diag_backward,
    .attention_matrix = diag_attention_matrix,
    .param_count = diag_param_count,
    .forward_flops_per_token = diag_forward_flops,
    .cache_floats_per_token = diag_cache_floats,
    .state_floats = diag_state_floats,
    .decode_state_floats = diag_decode_floats,
    .decode_scratch_floats = diag_decode_scratch_floats,
    .decode_prefill = diag_decode_prefill,
    .decode_step = diag_decode_step,
};
