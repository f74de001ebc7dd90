// A3 (Wong et al., arXiv 2505.12942) and the per-weight truncated-SVD baseline for one
// standard layer: reduce the query/key head size (QK), the value/output head size (OV)
// and the SwiGLU width (MLP), each by the closed form that minimises that component's
// functional loss on calibration statistics (docs/design.md "Low-rank compression (A3)").
//
// Weights are as the registry stores them, row-major [out, in]: wq [heads*d_h, d],
// wk/wv [kv_heads*d_h, d], wo [d, heads*d_h], gate/up [m, d], down [d, m]; biases bq
// [heads*d_h], bk/bv [kv_heads*d_h] or NULL. Reduced weights come back in the same layout
// with d_h replaced by the rank r (wq [heads*r, d], wo [d, heads*r], ...), m by m'.
// Biases are handled by augmenting every input with a constant 1 (x~ = [x; 1], W~ = [W | b]),
// so statistics are (d+1) x (d+1) and biases are reduced with their rows.
//
// Methods: LOWRANK_A3 fits with the calibration statistics; LOWRANK_SVD runs the same
// closed forms with the statistics replaced by the identity (no data): for one head per
// kv head this is exactly the truncated SVD of Wq_j^T Wk_j and of Wo_j Wv_j (bias-augmented).
// Losses are always measured with the calibration statistics, so the two compare.
// Computation in double (LAPACK dsyevd / dpotrf); outputs rounded to float at the end.
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef enum { LOWRANK_A3, LOWRANK_SVD } lowrank_method;

// One layer's attention shape. rope: the QK component has decon's RoPE (rotate-half pairs
// (i, i + d_h/2), angle pos * theta^(-2i/d_h)); then QK keeps whole frequency pairs.
typedef struct {
    int d, heads, kv_heads, head_dim;
    bool rope;
} lowrank_shape;

// Per query head j: loss[j] = the functional loss after reduction, energy[j] = the same
// quantity of the original (loss at rank 0), so loss/energy is the relative error.
//   QK, no RoPE: E_{x,y}[(s x~^T (Wq~_j^T Wk~_g - Wq'_j^T Wk'_g) y~)^2], x, y drawn
//     independently from the calibration tokens (every query/key pair), s = 1/sqrt(d_h);
//     = s^2 tr(C D C D^T) with C = E[x~ x~^T] and D the difference of the products.
//   QK, RoPE: the same with the relative rotation's phase averaged per frequency:
//     s^2 sum over dropped pairs i of E|q_ji|^2 E|k_gi|^2 / 2 (q_ji = the pair as a
//     complex number); cross terms between distinct frequencies average out.
//   OV: E_z ||(Wo_j Wv~_g - Wo'_j Wv'_g) z~||^2, z = sum_n A_j(m,n) x_n the attention-
//     weighted input of head j (z~ = [z; 1]: rows of A sum to 1, so biases pass through).
//   MLP: E ||down (h) - down' (h_S)||^2, h = silu(gate x) * (up x), S the kept neurons.
typedef struct {
    double *loss, *energy;   // [heads] for QK and OV; [1] for the MLP
} lowrank_losses;

// QK to rank r per head (1 <= r <= d_h; even with RoPE). corr: (d+1)^2 row-major E[x~ x~^T]
// of the layer's normalised input (lowrank_calibration). query_scale multiplies wq' and bq'
// (pass sqrt(r / d_h) when the reduced model's softmax scale is 1/sqrt(r), 1 for raw
// products); losses are of the raw products. kept_pairs (RoPE, may be NULL): [r/2] original
// pair indices, ascending, the same for every head of the layer (one frequency table per
// layer: the reduced head's pair t must turn by theta^(-2 kept_pairs[t]/d_h), the original
// frequency). Outputs: wq_out [heads*r, d], bq_out [heads*r] (NULL when bq is NULL),
// wk_out [kv_heads*r, d], bk_out. Returns false with one line in `why` on bad input.
bool lowrank_qk(lowrank_method method, const lowrank_shape *shape, int rank, const float *wq, const float *bq,
                const float *wk, const float *bk, const double *corr, double query_scale, float *wq_out,
                float *bq_out, float *wk_out, float *bk_out, int *kept_pairs, lowrank_losses losses, char *why,
                size_t why_size);

// OV to rank r per head (1 <= r <= d_h). head_corr: [heads][(d+1)^2] E[z~ z~^T] per query
// head. GQA (h/kv heads share Wv): the shared Wv' = T Wv~ comes from the group's pooled
// statistics (mean over its heads, exact when they coincide, always for MHA), then each
// head's Wo'_j is the least-squares optimum for its own statistics given Wv' (closed form).
// Outputs: wv_out [kv_heads*r, d], bv_out (NULL when bv is NULL), wo_out [d, heads*r].
bool lowrank_ov(lowrank_method method, const lowrank_shape *shape, int rank, const float *wv, const float *bv,
                const float *wo, const double *head_corr, float *wv_out, float *bv_out, float *wo_out,
                lowrank_losses losses, char *why, size_t why_size);

// SwiGLU to width m' (1 <= m' <= m) by CUR: keep m' intermediate neurons (their gate and
// up rows unchanged, so the nonlinearity stays exact), A3: the neurons with the largest
// E[h_i^2] ||down[:, i]||^2, and down' = down H[:, S] H[S, S]^-1 (least squares on the
// calibration activations, H = E[h h^T], m x m row-major). SVD baseline (no data): the
// largest ||down[:, i]||, down' = down[:, S]. kept: [m'] neuron indices, ascending (may be
// NULL). Outputs gate_out/up_out [m', d], down_out [d, m'].
bool lowrank_mlp(lowrank_method method, int d, int m, int width, const float *gate, const float *up,
                 const float *down, const double *mlp_corr, float *gate_out, float *up_out, float *down_out, int *kept,
                 lowrank_losses losses, char *why, size_t why_size);

const char *lowrank_method_name(lowrank_method method);
// "a3" / "svd" -> method; false for anything else.
bool lowrank_method_parse(const char *text, lowrank_method *method);
