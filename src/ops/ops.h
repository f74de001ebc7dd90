// Backend-neutral op declarations. Exactly one implementation is linked per binary
// (ops/cpu/ now; hip/ later). Conventions, as in llm.c:
//  * every op is a pair foo_forward / foo_backward, argument order: outputs, what forward
//    saves for backward, inputs, weights, sizes;
//  * tensors are row-major fp32; "rows" is the number of tokens (batch * seq_len);
//  * backward ops ACCUMULATE (+=) into every gradient they produce (inputs and weights),
//    so callers zero gradient buffers once and residual branches just add up; a NULL
//    gradient pointer means "not needed" and is skipped. Exceptions say so.
#pragma once
#include <stdbool.h>
#include <stddef.h>

// --- runtime ---------------------------------------------------------------
void ops_set_threads(int threads);          // OpenMP and BLAS threads
const char *ops_blas_core_name(void);       // openblas_get_corename()

// --- dense algebra -----------------------------------------------------------
// c[m,n] = alpha * op(a) op(b) + beta * c, row-major; op(a) is m x k, op(b) is k x n.
void gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha,
          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

// out[rows,out_dim] = inp[rows,in_dim] weight[out_dim,in_dim]^T + bias[out_dim] (bias may be NULL)
void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int rows, int in_dim, int out_dim);
// d_inp += d_out weight; d_weight += d_out^T inp; d_bias += column sums of d_out
void linear_backward(float *d_inp, float *d_weight, float *d_bias, const float *d_out,
                     const float *inp, const float *weight, int rows, int in_dim, int out_dim);

// --- elementwise and reductions ------------------------------------------------
void add_inplace(float *y, const float *x, size_t count);           // y += x
void scale_inplace(float *y, float factor, size_t count);          // y *= factor
double sum_of_squares(const float *x, size_t count);                // accumulated in double

// --- embedding -------------------------------------------------------------------
// out[rows,dim] = table[tokens[row]]
void embedding_forward(float *out, const int *tokens, const float *table, int rows, int dim);
// d_table[tokens[row]] += d_out[row]
void embedding_backward(float *d_table, const float *d_out, const int *tokens, int rows, int dim);

// --- RMSNorm -------------------------------------------------------------------
// out = inp * rstd * weight, rstd[row] = 1 / sqrt(mean(inp[row]^2) + eps)
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                     int rows, int dim, float eps);
void rmsnorm_backward(float *d_inp, float *d_weight, const float *d_out, const float *inp,
                      const float *weight, const float *rstd, int rows, int dim);

// --- RoPE (Hugging Face rotate_half convention) --------------------------------
// Pairs (i, i + head_dim/2) rotate by angle pos * theta^(-2i/head_dim).
// Tables are [max_positions, head_dim/2].
void rope_tables(float *cos_table, float *sin_table, int max_positions, int head_dim, float theta);
// In place on x[batch, seq_len, heads, head_dim]; position = index within the sequence.
void rope_forward(float *x, const float *cos_table, const float *sin_table,
                  int batch, int seq_len, int heads, int head_dim);
// In place on d_x (rotation by the negative angle): NOT accumulating.
void rope_backward(float *d_x, const float *cos_table, const float *sin_table,
                   int batch, int seq_len, int heads, int head_dim);

// --- causal softmax attention ----------------------------------------------------
// q[batch,seq_len,heads,head_dim], k,v[batch,seq_len,kv_heads,head_dim]; query head j
// reads kv head j / (heads / kv_heads) (GQA/MQA). out[batch,seq_len,heads,head_dim].
// Blocked with an online softmax: no seq_len x seq_len buffer. logsumexp[batch,heads,seq_len]
// is saved for backward, which recomputes the probabilities block by block.
void attention_forward(float *out, float *logsumexp, const float *q, const float *k,
                       const float *v, int batch, int seq_len, int heads, int kv_heads,
                       int head_dim, float scale);
void attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                        const float *out, const float *logsumexp, const float *q,
                        const float *k, const float *v, int batch, int seq_len, int heads,
                        int kv_heads, int head_dim, float scale);
// The quadratic reference: probs[heads, seq_len, seq_len] of ONE sequence (q, k as above
// with batch = 1), zeros above the diagonal. Used for recordings and tests.
void attention_probabilities(float *probs, const float *q, const float *k, int seq_len,
                             int heads, int kv_heads, int head_dim, float scale);

// --- SwiGLU ------------------------------------------------------------------------
// out = silu(gate) * up, elementwise over count
void swiglu_forward(float *out, const float *gate, const float *up, size_t count);
void swiglu_backward(float *d_gate, float *d_up, const float *d_out, const float *gate,
                     const float *up, size_t count);

// --- LM head fused with softmax cross entropy ----------------------------------------
// logits = hidden[rows,dim] weight[vocab,dim]^T, computed chunk by chunk of rows so the
// full [rows,vocab] matrix never exists. Rows whose target is < 0 are ignored.
// Returns the sum of the per-row losses (-log softmax(logits)[target]); writes them to
// losses[rows] when non-NULL (0 for ignored rows). When d_hidden / d_weight are non-NULL
// it also back-propagates loss_scale * (sum of losses) into them (+=).
// scratch holds lm_head_scratch_floats(rows, vocab) floats.
double lm_head_cross_entropy(float *losses, float *d_hidden, float *d_weight,
                             const float *hidden, const float *weight, const int *targets,
                             int rows, int dim, int vocab, float loss_scale, float *scratch);
size_t lm_head_scratch_floats(int rows, int vocab);

// --- AdamW (decoupled weight decay, Loshchilov & Hutter) -------------------------------
// g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// param -= lr * ( (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps) + weight_decay * param )
// step counts from 1.
void adamw_update(float *param, const float *grad, float *m, float *v, size_t count,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  int step, float grad_scale);
