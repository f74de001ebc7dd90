// Double-precision reference of every op in src/ops/ops.h, written as the plainest loops
// (full softmax over every key, the whole logits matrix, explicit Jacobians) so that it
// shares no code and no trick with the fast CPU backend. The unit tests check it by
// finite differences and then hold the fp32 ops against it; the whole-model reference
// builds on it.
//
// Conventions are those of ops.h with double for float: same argument order (outputs,
// saved state, inputs, weights, sizes), same shapes, and backward functions ACCUMULATE
// (+=) into every gradient they produce, a NULL gradient meaning "not needed". As in
// ops.h, reference_rope_backward is in place and not accumulating.
#pragma once
#include <stdbool.h>
#include <stddef.h>

// c[m,n] = alpha * op(a) op(b) + beta * c, row-major; op(a) is m x k, op(b) is k x n.
void reference_gemm(bool transpose_a, bool transpose_b, int m, int n, int k, double alpha,
                    const double *a, int lda, const double *b, int ldb, double beta,
                    double *c, int ldc);

// out[rows,out_dim] = inp[rows,in_dim] weight[out_dim,in_dim]^T + bias[out_dim] (bias may be NULL)
void reference_linear_forward(double *out, const double *inp, const double *weight,
                              const double *bias, int rows, int in_dim, int out_dim);
void reference_linear_backward(double *d_inp, double *d_weight, double *d_bias,
                               const double *d_out, const double *inp, const double *weight,
                               int rows, int in_dim, int out_dim);

void reference_add_inplace(double *y, const double *x, size_t count);
void reference_scale_inplace(double *y, double factor, size_t count);
double reference_sum_of_squares(const double *x, size_t count);

// out[rows,dim] = table[tokens[row]]; d_table[tokens[row]] += d_out[row]
void reference_embedding_forward(double *out, const int *tokens, const double *table,
                                 int rows, int dim);
void reference_embedding_backward(double *d_table, const double *d_out, const int *tokens,
                                  int rows, int dim);

// out = inp * rstd * weight, rstd[row] = 1 / sqrt(mean(inp[row]^2) + eps)
void reference_rmsnorm_forward(double *out, double *rstd, const double *inp,
                               const double *weight, int rows, int dim, double eps);
void reference_rmsnorm_backward(double *d_inp, double *d_weight, const double *d_out,
                                const double *inp, const double *weight, const double *rstd,
                                int rows, int dim);

// Tables [max_positions, head_dim/2]; x is [batch, seq_len, heads, head_dim], in place.
void reference_rope_tables(double *cos_table, double *sin_table, int max_positions,
                           int head_dim, double theta);
void reference_rope_forward(double *x, const double *cos_table, const double *sin_table,
                            int batch, int seq_len, int heads, int head_dim);
void reference_rope_backward(double *d_x, const double *cos_table, const double *sin_table,
                             int batch, int seq_len, int heads, int head_dim);

// Causal attention, q[batch,seq_len,heads,head_dim], k,v[batch,seq_len,kv_heads,head_dim],
// out like q, logsumexp[batch,heads,seq_len]. Backward recomputes the full softmax of
// every row from q and k (out and logsumexp are accepted for the common signature).
void reference_attention_forward(double *out, double *logsumexp, const double *q,
                                 const double *k, const double *v, int batch, int seq_len,
                                 int heads, int kv_heads, int head_dim, double scale);
void reference_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_out,
                                  const double *out, const double *logsumexp, const double *q,
                                  const double *k, const double *v, int batch, int seq_len,
                                  int heads, int kv_heads, int head_dim, double scale);
// probs[heads, seq_len, seq_len] of one sequence, zeros above the diagonal.
void reference_attention_probabilities(double *probs, const double *q, const double *k,
                                       int seq_len, int heads, int kv_heads, int head_dim,
                                       double scale);

// out = silu(gate) * up
void reference_swiglu_forward(double *out, const double *gate, const double *up, size_t count);
void reference_swiglu_backward(double *d_gate, double *d_up, const double *d_out,
                               const double *gate, const double *up, size_t count);

// Full logits [rows, vocab]; returns the sum of the per-row losses (rows with target < 0
// ignored, loss 0); back-propagates loss_scale * sum into d_hidden / d_weight when non-NULL.
double reference_lm_head_cross_entropy(double *losses, double *d_hidden, double *d_weight,
                                       const double *hidden, const double *weight,
                                       const int *targets, int rows, int dim, int vocab,
                                       double loss_scale);

// The formula of ops.h, step counting from 1.
void reference_adamw_update(double *param, const double *grad, double *m, double *v,
                            size_t count, double lr, double beta1, double beta2, double eps,
                            double weight_decay, int step, double grad_scale);
