// The double reference of mixer `mlp` (model_reference_internal.h): a gated MLP, no
// mixing across positions.
#include <stdbool.h>
#include <stdlib.h>

#include "model_reference_internal.h"

// The width: the integer m nearest to standard's parameter count / 3d (a tie goes up),
// counted here from the shapes, independently of the mixer's code.
static int ref_mlp_width(const decon_config *c) {
    int64_t d = c->hidden_size, H = c->num_attention_heads;
    int64_t KV = c->num_key_value_heads ? c->num_key_value_heads : H, dh = ref_head_dim(c);
    int64_t standard = d * H * dh * 2 + 2 * d * KV * dh + (c->attention_bias ? H * dh + 2 * KV * dh : 0);
    return (int)floor((double)standard / (3.0 * (double)d) + 0.5);
}

typedef struct {
    ref_tensor gate, up, down;
    int m;
    double *gate_out, *up_out, *act;   // [rows, m]
} mlp_state;

// gate_out = H Wgt^T, up_out = H Wup^T, act = silu(gate_out) * up_out
static void mlp_run(ref_context *x, int layer, const double *inp, mlp_state *s) {
    int d = x->config->hidden_size, rows = x->rows;
    s->m = ref_mlp_width(x->config);
    s->gate = ref_lookup(x, true, s->m, d, "layers.%d.mixer.gate_proj", layer);
    s->up = ref_lookup(x, true, s->m, d, "layers.%d.mixer.up_proj", layer);
    s->down = ref_lookup(x, true, d, s->m, "layers.%d.mixer.down_proj", layer);
    size_t size = (size_t)rows * s->m;
    s->gate_out = ref_zeros(size);
    s->up_out = ref_zeros(size);
    s->act = ref_zeros(size);
    ref_linear_forward(s->gate_out, inp, s->gate.w, NULL, rows, d, s->m);
    ref_linear_forward(s->up_out, inp, s->up.w, NULL, rows, d, s->m);
    for (size_t e = 0; e < size; e++) s->act[e] = s->gate_out[e] * ref_sigmoid(s->gate_out[e]) * s->up_out[e];
}

static void mlp_free(mlp_state *s) {
    free(s->gate_out);
    free(s->up_out);
    free(s->act);
}

// out = act Wdn^T
void ref_mlp_forward(ref_context *x, int layer, double *out, const double *inp) {
    mlp_state s;
    mlp_run(x, layer, inp, &s);
    ref_linear_forward(out, s.act, s.down.w, NULL, x->rows, s.m, x->config->hidden_size);
    mlp_free(&s);
}

void ref_mlp_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp) {
    mlp_state s;
    mlp_run(x, layer, inp, &s);
    int d = x->config->hidden_size, rows = x->rows;
    size_t size = (size_t)rows * s.m;
    double *d_act = ref_zeros(size), *d_gate = ref_zeros(size), *d_up = ref_zeros(size);
    ref_linear_backward(d_act, s.down.g, NULL, d_out, s.act, s.down.w, rows, s.m, d);
    for (size_t e = 0; e < size; e++) {
        double g = s.gate_out[e], sg = ref_sigmoid(g);
        d_gate[e] = d_act[e] * s.up_out[e] * sg * (1.0 + g * (1.0 - sg));
        d_up[e] = d_act[e] * g * sg;
    }
    ref_linear_backward(d_inp, s.gate.g, NULL, d_gate, inp, s.gate.w, rows, d, s.m);
    ref_linear_backward(d_inp, s.up.g, NULL, d_up, inp, s.up.w, rows, d, s.m);
    free(d_act);
    free(d_gate);
    free(d_up);
    mlp_free(&s);
}
