// What the files of the double reference model share (model_reference.h is the interface):
// the context of one evaluation, tensor lookup, the plain building blocks
// (model_reference_blocks.c) and one forward and one backward per mixer
// (mixer_reference_<variant>.c), which model_reference.c lists by the name the layer plan
// uses. A mixer's backward recomputes its internals from its input, so no mixer state is
// kept between the two.
//
// Shapes: rows = batch * seq_len tokens, row r = b * seq_len + t. Hidden states are
// [rows, d]; linear weights are [out, in] as in the registry; per-head tensors are
// [rows, heads, head_dim]; attention probabilities are [batch, heads, seq_len, seq_len].
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"

typedef struct {
    const decon_config *config;
    const param_registry *registry;
    const double *params;
    double *grads;               // NULL: loss only
    bool *used;                  // [registry->count]: tensors the reference looked up
    int batch, seq_len, rows;    // batch counts the fixed-stream sequence when there is one
    int fixed_sequence;          // the fixed stream's sequence (the last), -1 when none
    const double *embeddings;      // input embeddings [rows, d] (staticembqk)
    double *d_embeddings;          // their gradient (+=), NULL without grads
} ref_context;

// One tensor's values and gradient (w NULL: an optional tensor that is absent;
// g NULL: no gradient requested).
typedef struct {
    const double *w;
    double *g;
} ref_tensor;

static inline double *ref_zeros(size_t count) { return xcalloc(count ? count : 1, sizeof(double)); }

static inline double ref_sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

// The per-head size d_h: [model] head_dim, or d / heads when it is 0 (absent), read here
// from the config's own fields rather than through config_head_dim.
static inline int ref_head_dim(const decon_config *c) {
    return c->head_dim > 0 ? c->head_dim : c->hidden_size / c->num_attention_heads;
}
// The value head size: [model] value_head_dim, or the head size when it is 0 (absent).
static inline int ref_value_head_dim(const decon_config *c) {
    return c->value_head_dim > 0 ? c->value_head_dim : ref_head_dim(c);
}

// Finds a tensor by name and checks its logical shape [d0, d1] (d1 = 0: a vector of d0).
ref_tensor ref_lookup(ref_context *x, bool required, int64_t d0, int64_t d1, const char *format, ...)
    DECON_PRINTF(5, 6);

// ---- plain building blocks (model_reference_blocks.c) ----
// out[r,o] = sum_i inp[r,i] w[o,i] + b[o]   (b may be NULL)
void ref_linear_forward(double *out, const double *inp, const double *w, const double *b, int rows, int in,
                        int out_dim);
// d_inp += d_out w; d_w += d_out^T inp; d_b += column sums of d_out (any of the three NULL)
void ref_linear_backward(double *d_inp, double *d_w, double *d_b, const double *d_out, const double *inp,
                         const double *w, int rows, int in, int out_dim);
// out = inp * rstd * w, rstd[r] = (mean_i inp[r,i]^2 + eps)^(-1/2)
void ref_rmsnorm_forward(double *out, double *rstd, const double *inp, const double *w, int rows, int dim,
                         double eps);
void ref_rmsnorm_backward(double *d_inp, double *d_w, const double *d_out, const double *inp,
                          const double *w, const double *rstd, int rows, int dim);
// Rotates x[rows, heads, dh] in place (RoPE, rotate_half pairing); sign = -1 is the
// transpose (the backward of sign = +1).
void ref_rope(double *x, int batch, int seq_len, int heads, int dh, double theta, double sign);

// ---- the standard mixer's state, shared by the mixers built on its tensors ----
typedef struct {
    ref_tensor wq, bq, wk, bk, wv, bv, wo;
    int heads, kv_heads, dh, dv;  // dv: the value head size (v, av, Wv, Wo)
    double *q, *k, *v;        // [rows, heads|kv_heads, dh] (v: dv), q and k after RoPE
    double *probs;            // [batch, heads, seq_len, seq_len], 0 above the diagonal
    double *av;             // [rows, heads, dv] = A V, before the output projection
} standard_state;

// The start of every mixer built on standard's tensors: looks up wq, bq, wk, bk, wv, bv,
// wo of `layer` (fatal when biases are present with attention_bias = 0), sets heads,
// kv_heads, dh, and allocates q, av [rows, heads, dh], k, v [rows, kv_heads, dh] and (with
// probs) probs [batch, heads, seq_len, seq_len], all zero; probs is NULL without.
void ref_standard_begin(ref_context *x, int layer, standard_state *s, bool with_probs);
// Q, K, V = inp W^T + b into s->q, s->k, s->v, then RoPE on Q and K: standard's
// projections, for the mixers that take all three from the same input.
void ref_standard_project(ref_context *x, const double *inp, standard_state *s);
void ref_standard_free(standard_state *s);

// ---- the mixers: forward out[rows, d] = Mixer(inp[rows, d]) (looks up, and so marks as
// used, its tensors); backward d_inp[rows, d] += (dMixer/dinp)^T d_out, parameter
// gradients += into x->grads.
// mixer_reference_standard.c
void ref_standard_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_standard_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
// mixer_reference_mlp.c
void ref_mlp_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_mlp_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
// mixer_reference_nonapx.c
void ref_nonapx_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_nonapx_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
// mixer_reference_mhe.c: mhe-add, mhe-mul
void ref_mhe_add_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_mhe_add_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
void ref_mhe_mul_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_mhe_mul_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
// mixer_reference_qk_from.c: rndembqk, fixedseqqk
void ref_fixed_qk_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_fixed_qk_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
//   and staticembqk
void ref_static_qk_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_static_qk_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
// mixer_reference_approx.c: approx, approx-diag
void ref_approx_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_approx_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
void ref_approx_diag_forward(ref_context *x, int layer, double *out, const double *inp);
void ref_approx_diag_backward(ref_context *x, int layer, double *d_inp, const double *d_out, const double *inp);
