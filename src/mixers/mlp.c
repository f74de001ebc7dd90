// `mlp`: the token-mixing relaxation (DESIGN.md 5). A gated MLP in the mixer's place,
// applied to every token on its own, so nothing mixes across positions:
//   O = (SiLU(H Wgt^T) * (H Wup^T)) Wdn^T      Wgt, Wup [m, d], Wdn [d, m], no biases
// The width m makes its 3 d m parameters the integer width closest to standard
// attention's count P_std (GQA and Q/K/V biases included): m = round(P_std / 3d), a tie
// rounding up, so |3 d m - P_std| <= 3d/2 (docs/design.md, "Mixer: mlp").
// No biases: Qwen2.5's MLPs have none, and biases (2m + d) would only shift the count by
// less than one width unit. No attention matrix (attention_matrix is NULL).
// Tensor parallel (Megatron): each rank holds a slice of the width, m_r of the balanced
// split (m need not divide tp), and its output is the partial sum over its slice.
#include <math.h>

#include "mixers/mixer.h"
#include "ops/ops.h"
#include "par/parallel_linear.h"

enum { P_GATE, P_UP, P_DOWN };
enum { S_GATE, S_UP, S_ACT };

// round(P_std / 3d) with a tie going up: floor((2 P_std + 3d) / 6d), at least 1.
static int mlp_width(const decon_config *c) {
    int64_t d = c->hidden_size, p = mixer_standard()->param_count(c);
    int64_t m = (2 * p + 3 * d) / (6 * d);
    return m < 1 ? 1 : (int)m;
}

static void mlp_register(mixer_layer *layer, param_registry *registry, const decon_config *c) {
    int d = c->hidden_size, m = mlp_width(c), l = layer->layer;
    float std = (float)c->initializer_range;
    float out_std = std / sqrtf(2.0f * (float)c->num_hidden_layers);  // as standard's wo
    char name[PARAM_NAME_MAX];
    for (int i = 0; i < MIXER_MAX_PARAMS; i++) layer->params[i] = -1;
    // Megatron: gate/up column-parallel (rows of [m, d]), down row-parallel: tp splits m.
    mixer_param_name(name, sizeof name, l, "gate_proj");
    layer->params[P_GATE] = params_add(registry, name, "mixer", l, m, d, SHARD_ROWS, INIT_NORMAL, std, true);
    mixer_param_name(name, sizeof name, l, "up_proj");
    layer->params[P_UP] = params_add(registry, name, "mixer", l, m, d, SHARD_ROWS, INIT_NORMAL, std, true);
    mixer_param_name(name, sizeof name, l, "down_proj");
    layer->params[P_DOWN] = params_add(registry, name, "mixer", l, d, m, SHARD_COLS, INIT_NORMAL, out_std, true);
}

// The most columns any rank holds: ceil(m / tp), the largest slice of the balanced split
// (only the config is known here, not which rank).
static int mlp_max_local_width(const decon_config *c) {
    return (mlp_width(c) + c->tensor_parallel - 1) / c->tensor_parallel;
}

// This rank's slice of the width, from the registry.
static int mlp_local_width(const mixer_layer *layer, const mixer_context *x) {
    return (int)x->registry->items[layer->params[P_GATE]].local_shape[0];
}

// gate, up and act [rows, m_r], + 16 floats of alignment slack each
static size_t mlp_saved_floats(const decon_config *c, int batch, int seq_len) {
    return 3 * ((size_t)batch * (size_t)seq_len * (size_t)mlp_max_local_width(c) + 16);
}

// d_act, d_gate, d_up [rows, m_r]
static size_t mlp_scratch_floats(const decon_config *c, int batch, int seq_len) {
    return mlp_saved_floats(c, batch, seq_len);
}

static void mlp_bind(mixer_layer *layer, arena *activations, const decon_config *c, int batch, int seq_len) {
    size_t size = (size_t)batch * (size_t)seq_len * (size_t)mlp_max_local_width(c);
    layer->saved[S_GATE] = arena_floats(activations, size);
    layer->saved[S_UP] = arena_floats(activations, size);
    layer->saved[S_ACT] = arena_floats(activations, size);
}

static const float *param_at(const mixer_layer *layer, const mixer_context *x, int which) {
    return x->params + x->registry->items[layer->params[which]].offset;
}

static float *grad_at(const mixer_layer *layer, const mixer_context *x, int which) {
    return x->grads + x->registry->items[layer->params[which]].offset;
}

static void mlp_forward(mixer_layer *layer, const mixer_context *x, float *out, const float *inp) {
    int rows = x->batch * x->seq_len, d = x->config->hidden_size, m = mlp_local_width(layer, x);
    float *gate = layer->saved[S_GATE], *up = layer->saved[S_UP], *act = layer->saved[S_ACT];
    column_parallel_linear_forward(gate, inp, param_at(layer, x, P_GATE), NULL, rows, d, m);
    column_parallel_linear_forward(up, inp, param_at(layer, x, P_UP), NULL, rows, d, m);
    swiglu_forward(act, gate, up, (size_t)rows * (size_t)m);
    row_parallel_linear_forward(out, act, param_at(layer, x, P_DOWN), rows, m, d);
}

static void mlp_backward(mixer_layer *layer, const mixer_context *x, float *d_inp, const float *d_out,
                         const float *inp) {
    int rows = x->batch * x->seq_len, d = x->config->hidden_size, m = mlp_local_width(layer, x);
    size_t size = (size_t)rows * (size_t)m;
    size_t mark = arena_mark(x->scratch);
    float *d_act = arena_floats(x->scratch, size);
    float *d_gate = arena_floats(x->scratch, size);
    float *d_up = arena_floats(x->scratch, size);
    fill_floats(d_act, 0.0f, size);
    fill_floats(d_gate, 0.0f, size);
    fill_floats(d_up, 0.0f, size);
    row_parallel_linear_backward(d_act, grad_at(layer, x, P_DOWN), d_out, layer->saved[S_ACT],
                                 param_at(layer, x, P_DOWN), rows, m, d);
    swiglu_backward(d_gate, d_up, d_act, layer->saved[S_GATE], layer->saved[S_UP], size);
    column_parallel_linear_backward(d_inp, grad_at(layer, x, P_GATE), NULL, d_gate, inp, param_at(layer, x, P_GATE),
                                    rows, d, m);
    column_parallel_linear_backward(d_inp, grad_at(layer, x, P_UP), NULL, d_up, inp, param_at(layer, x, P_UP), rows, d,
                                    m);
    arena_release(x->scratch, mark);
}

static int64_t mlp_param_count(const decon_config *c) { return 3 * (int64_t)c->hidden_size * mlp_width(c); }

// Three projections of d x m: 2 * 3 d m per token, independent of the sequence length.
static double mlp_forward_flops(const decon_config *c, int seq_len) {
    (void)seq_len;
    return 2.0 * 3.0 * c->hidden_size * mlp_width(c);
}

// Nothing is carried from one token to the next: no inference cache.
static int64_t mlp_cache_floats(const decon_config *c) {
    (void)c;
    return 0;
}

// Decoding: each token is mixed with nothing but itself, so a step is the forward on the
// step's rows and the state is empty (0 floats); the prompt leaves nothing behind.
static size_t mlp_decode_state_floats(const decon_config *c, int max_context) {
    (void)c;
    (void)max_context;
    return 0;
}

static size_t mlp_decode_scratch_floats(const decon_config *c, int batch, int max_context) {
    (void)max_context;
    return 3 * ((size_t)batch * (size_t)mlp_max_local_width(c) + 16);
}

static void mlp_decode_step(mixer_layer *layer, const mixer_decode *x, float *out, const float *inp) {
    int rows = x->step.batch, d = x->step.config->hidden_size, m = mlp_local_width(layer, &x->step);
    size_t size = (size_t)rows * (size_t)m, mark = arena_mark(x->step.scratch);
    float *gate = arena_floats(x->step.scratch, size), *up = arena_floats(x->step.scratch, size);
    float *act = arena_floats(x->step.scratch, size);
    column_parallel_linear_forward(gate, inp, param_at(layer, &x->step, P_GATE), NULL, rows, d, m);
    column_parallel_linear_forward(up, inp, param_at(layer, &x->step, P_UP), NULL, rows, d, m);
    swiglu_forward(act, gate, up, size);
    row_parallel_linear_forward(out, act, param_at(layer, &x->step, P_DOWN), rows, m, d);
    arena_release(x->step.scratch, mark);
}

const mixer_kind mixer_kind_mlp = {
    .name = "mlp",
    .letter = 'M',
    .register_params = mlp_register,
    .saved_floats = mlp_saved_floats,
    .scratch_floats = mlp_scratch_floats,
    .bind_saved = mlp_bind,
    .forward = mlp_forward,
    .backward = mlp_backward,
    .attention_matrix = NULL,
    .param_count = mlp_param_count,
    .forward_flops_per_token = mlp_forward_flops,
    .cache_floats_per_token = mlp_cache_floats,
    .decode_state_floats = mlp_decode_state_floats,
    .decode_scratch_floats = mlp_decode_scratch_floats,
    .decode_step = mlp_decode_step,
};
