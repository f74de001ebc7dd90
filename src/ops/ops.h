// Backend-neutral op declarations: the seam between the trainer and the hardware.
// The rule: exactly ONE backend implements this header in a binary, chosen by the
// Makefile (plain `make` links src/ops/cpu/; `make GPU=cuda|hip` links hip/*.hip). Every tensor
// (parameters, gradients, Adam moments, activations, scratch) is memory of that backend
// (ops_alloc, and the ops' workspace), allocated before the step loop, never inside it;
// the host touches tensor contents only through the ops below, and reads or writes them
// (loss, gradient norm, recordings, checkpoint I/O, MPI staging) through the explicit
// ops_to_host / ops_from_host copies. Conventions, as in llm.c:
//  * every op is a pair foo_forward / foo_backward, argument order: outputs, what forward
//    saves for backward, inputs, weights, sizes;
//  * tensors are row-major fp32; "rows" is the number of tokens (batch * seq_len);
//  * backward ops ACCUMULATE (+=) into every gradient they produce (inputs and weights),
//    so callers zero gradient buffers once and residual branches just add up; a NULL
//    gradient pointer means "not needed" and is skipped. Exceptions say so.
#pragma once
#include <stdbool.h>
#include <stddef.h>

// --- backend memory ------------------------------------------------------------
// Every tensor (parameters, gradients, Adam moments, activations, scratch) lives in
// memory from ops_alloc, and the ops' own scratch in the backend's workspace: host memory
// on the CPU backend, device memory on a GPU backend. Both are sized before the step
// loop (model_allocate, optimizer_allocate); nothing is allocated inside it.
void *ops_alloc(size_t bytes);              // 64-byte aligned, zeroed; fatal() on failure
void ops_free(void *tensor);
// The host reads and writes tensor memory only through these explicit copies (loss,
// gradient norm, recordings, checkpoint I/O, MPI staging). On the CPU backend tensors
// are host memory: a copy between one buffer and itself does nothing.
void ops_to_host(void *host, const void *tensor, size_t bytes);
void ops_from_host(void *tensor, const void *host, size_t bytes);
// The workspace the ops take their per-call scratch from (per-thread tiles, running
// states): grown to at least `floats` (it never shrinks). An op needing more than was
// reserved grows it, allocating; reserve ops_attention_workspace_floats of the largest
// shapes before the step loop so that it never does.
void ops_workspace_reserve(size_t floats);
size_t ops_workspace_reserved(void);
// The most workspace the attention ops (attention_*, taylor_attention_*,
// diag_attention_*, nonapx_attention_* forward and backward) take for these shapes at
// the current thread count (ops_set_threads); head_dim = the larger of the query/key and
// value head sizes.
size_t ops_attention_workspace_floats(int seq_len, int heads, int kv_heads, int head_dim);

// --- runtime ---------------------------------------------------------------
void ops_set_threads(int threads);          // OpenMP and BLAS threads
const char *ops_blas_core_name(void);       // openblas_get_corename(), or the GPU's BLAS
const char *ops_backend_name(void);         // "cpu", "cuda" or "hip"
// train.precision: false = fp32 everywhere; true = bf16 GEMM and attention inputs with
// fp32 accumulation, fp32 master weights, gradients and Adam state (GPU backends).
// Returns false where the backend cannot (the CPU backend computes in fp32 only).
bool ops_set_precision(bool bf16);
// NULL when this backend runs the named mixer (mixers/registry.c), else why not: the
// layer plan refuses such a configuration with one line before anything is allocated.
const char *ops_backend_refuses(const char *mixer);

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
void fill_floats(float *y, float value, size_t count);              // y = value
void copy_floats(float *y, const float *x, size_t count);           // y = x (no overlap)
// Rows of `width` floats at strides (a 2-D copy, cudaMemcpy2D's shape; the gather of rows
// that sequence parallelism's layouts need): y[r * y_stride + j] = x[r * x_stride + j] for
// r < rows, j < width, one row after another (no overlap).
void copy_strided_rows(float *y, size_t y_stride, const float *x, size_t x_stride, size_t rows, size_t width);
// Token ids in backend memory (the model's input rows): y = value, y = x (no overlap).
void fill_ints(int *y, int value, size_t count);
void copy_ints(int *y, const int *x, size_t count);
void add_inplace(float *y, const float *x, size_t count);           // y += x
void scale_inplace(float *y, float factor, size_t count);          // y *= factor
double sum_of_squares(const float *x, size_t count);                // accumulated in double

// --- embedding -------------------------------------------------------------------
// Over this rank's table rows [vocab_start, vocab_start + vocab_count) (0, vocab on one
// rank): out[rows,dim] = table_local[tokens[row] - vocab_start], zero for tokens it does
// not hold; d_table_local[tokens[row] - vocab_start] += d_out[row] for those it holds.
void embedding_forward(float *out, const int *tokens, const float *table_local, int rows, int dim,
                       int vocab_start, int vocab_count);
void embedding_backward(float *d_table_local, const float *d_out, const int *tokens, int rows, int dim,
                        int vocab_start, int vocab_count);

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
// q[batch,seq_len,heads,head_dim], k[batch,seq_len,kv_heads,head_dim],
// v[batch,seq_len,kv_heads,value_head_dim]; query head j reads kv head j / (heads /
// kv_heads) (GQA/MQA). out[batch,seq_len,heads,value_head_dim]. The value size may differ
// from the query/key size (per-layer shapes of a compressed model: A3's OV rank).
// Blocked with an online softmax: no seq_len x seq_len buffer. logsumexp[batch,heads,seq_len]
// is saved for backward, which recomputes the probabilities block by block.
void attention_forward(float *out, float *logsumexp, const float *q, const float *k,
                       const float *v, int batch, int seq_len, int heads, int kv_heads,
                       int head_dim, int value_head_dim, float scale);
void attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                        const float *out, const float *logsumexp, const float *q,
                        const float *k, const float *v, int batch, int seq_len, int heads,
                        int kv_heads, int head_dim, int value_head_dim, float scale);
// The quadratic reference: probs[heads, seq_len, seq_len] of ONE sequence (q, k as above
// with batch = 1), zeros above the diagonal. Used for recordings and tests.
void attention_probabilities(float *probs, const float *q, const float *k, int seq_len,
                             int heads, int kv_heads, int head_dim, float scale);
// The pre-softmax scores of ONE sequence: scores[h, i, t] = scale * q_i,h . k_t,g(h) for
// t <= i, zeros above the diagonal (the arguments attention_probabilities exponentiates,
// computed the same way). Used for recordings.
void attention_score_matrix(float *scores, const float *q, const float *k, int seq_len, int heads,
                            int kv_heads, int head_dim, float scale);

// --- nonapx: a softmax over per-token scores, in linear time -----------------------------
// Shapes as attention above. Per query head h and token t one score
// g_t = scale * silu(q_t) . k_t (k head h / (heads / kv_heads)); q holds PRE-activations
// (the op applies SiLU). out_i = sum_{t<=i} A_it v_t, A_it = exp(g_t) / sum_{t'<=i} exp(g_t'),
// by one scan per (sequence, head) with a running max and running sums; score and
// logsumexp [batch,heads,seq_len] (g_t and lse_i = log sum_{t'<=i} exp g_t') are saved.
void nonapx_attention_forward(float *out, float *score, float *logsumexp, const float *q,
                              const float *k, const float *v, int batch, int seq_len, int heads,
                              int kv_heads, int head_dim, float scale);
// One reverse scan per (sequence, head); d_q is the gradient of the pre-activations.
void nonapx_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                               const float *out, const float *score, const float *logsumexp,
                               const float *q, const float *k, const float *v, int batch,
                               int seq_len, int heads, int kv_heads, int head_dim, float scale);
// The quadratic reference: probs[heads, seq_len, seq_len] of ONE sequence, each row the
// plain softmax of g_0..g_i, zeros above the diagonal.
void nonapx_attention_probabilities(float *probs, const float *q, const float *k, int seq_len,
                                    int heads, int kv_heads, int head_dim, float scale);

// --- per-head embeddings (mhe-add / mhe-mul) -----------------------------------------------
// out[rows,heads,head_dim] = inp[rows,head_dim] + emb[heads,head_dim] (multiplicative false)
// or inp * (1 + emb) (true), broadcast over rows and heads.
void head_embedding_forward(float *out, const float *inp, const float *emb, int rows, int heads,
                            int head_dim, bool multiplicative);
// d_inp[r] += sum_j d_out[r,j] (* (1 + emb[j])); d_emb[j] += sum_r d_out[r,j] (* inp[r])
void head_embedding_backward(float *d_inp, float *d_emb, const float *d_out, const float *inp,
                             const float *emb, int rows, int heads, int head_dim,
                             bool multiplicative);

// --- attention with one map shared by the batch (rndembqk / fixedseqqk) -------------------
// A_h = causal softmax(scale q_h k_g^T) of ONE sequence's q [seq_len, heads, head_dim] and
// k [seq_len, kv_heads, head_dim] (GQA as above), applied to every sequence's values:
// out[b] = A v[b], v [batch, seq_len, kv_heads, head_dim], out [batch, seq_len, heads,
// head_dim]. The map is formed one head at a time in the workspace and not kept.
void shared_attention_forward(float *out, const float *q, const float *k, const float *v, int batch, int seq_len,
                              int heads, int kv_heads, int head_dim, float scale, float *workspace);
// d_v += A^T d_out[b]; d_q, d_k (one sequence's shapes) += the gradient through A of the
// whole batch (dA = sum_b d_out[b] v[b]^T, through the softmax and q k^T). Recomputes A.
void shared_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q,
                               const float *k, const float *v, int batch, int seq_len, int heads, int kv_heads,
                               int head_dim, float scale, float *workspace);
// Floats of workspace either call needs.
size_t shared_attention_workspace_floats(int batch, int seq_len, int heads, int kv_heads, int head_dim);
// The map probs[heads, seq_len, seq_len], zeros above the diagonal, exactly as the two
// calls above form it (attention_probabilities' result up to rounding).
void shared_attention_map(float *probs, const float *q, const float *k, int seq_len, int heads, int kv_heads,
                          int head_dim, float scale);

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
// shard NULL: weight is the whole vocabulary. Otherwise weight holds the rows
// [shard->vocab_start, + vocab) of a vocabulary split across ranks (par/vocab_parallel.h),
// and between the op's phases (logits and row statistics; loss and gradient) the caller
// combines each chunk's row statistics over the shards: combine_max replaces row_max[n]
// by the maximum over the shards, then combine_sums replaces stats[n][2] = {sum of
// exp(z - max), target logit (0 where the shard lacks it)} by the sums over the shards.
// Losses are then the same on every shard; d_hidden receives this shard's partial share.
typedef struct {
    int vocab_start;
    void (*combine_max)(void *context, float *row_max, int n);
    void (*combine_sums)(void *context, double *stats, int n);
    void *context;
} lm_head_vocab_shard;
double lm_head_cross_entropy(float *losses, float *d_hidden, float *d_weight,
                             const float *hidden, const float *weight, const int *targets,
                             int rows, int dim, int vocab, float loss_scale, float *scratch,
                             const lm_head_vocab_shard *shard);
size_t lm_head_scratch_floats(int rows, int vocab);

// --- AdamW (decoupled weight decay, Loshchilov & Hutter) -------------------------------
// g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// param -= lr * ( (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps) + weight_decay * param )
// step counts from 1.
void adamw_update(float *param, const float *grad, float *m, float *v, size_t count,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  int step, float grad_scale);

// --- linear-time attention (approx, approx-diag) ---------------------------------------
// Shapes as attention_forward: q, out, d_q, d_out [batch,seq_len,heads,head_dim]; k, v,
// d_k, d_v [batch,seq_len,kv_heads,head_dim]; query head j reads kv head j / (heads /
// kv_heads). Backward ops accumulate (+=) into d_q, d_k, d_v, which must all be non-NULL.
// Each linear form has a plain quadratic form beside it (*_quadratic_*: materialised A,
// O = A V) for recordings and tests.
//
// approx: second-order Taylor softmax (Based, Arora et al. 2024). x_it = scale q_i.k_t,
// w_it = f(x_it) = 1 + x + x^2/2 (>= 1/2), A_it = w_it / den_i, den_i = sum_{t<=i} w_it.
// Linear form: w_it = phi(q_i).phi(k_t) with the symmetric feature map
// phi(x) = [1, sqrt(scale) x_m, scale/sqrt(2) x_m^2, scale x_m x_n (m < n)] of
// taylor_feature_count(head_dim) = 1 + d + d(d+1)/2 features, in chunks of
// taylor_attention_chunk_size() positions (quadratic inside a chunk, running states
// S = sum phi(k) v^T, z = sum phi(k) across chunks). den[batch,heads,seq_len] is saved.
int taylor_feature_count(int head_dim);
int taylor_attention_chunk_size(void);
void taylor_attention_forward(float *out, float *den, const float *q, const float *k,
                              const float *v, int batch, int seq_len, int heads, int kv_heads,
                              int head_dim, float scale);
void taylor_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                               const float *out, const float *den, const float *q,
                               const float *k, const float *v, int batch, int seq_len,
                               int heads, int kv_heads, int head_dim, float scale);
// probs[heads, seq_len, seq_len] of ONE sequence (batch = 1), zeros above the diagonal.
void taylor_attention_quadratic_probabilities(float *probs, const float *q, const float *k,
                                              int seq_len, int heads, int kv_heads,
                                              int head_dim, float scale);
void taylor_attention_quadratic_forward(float *out, const float *q, const float *k,
                                        const float *v, int batch, int seq_len, int heads,
                                        int kv_heads, int head_dim, float scale);
void taylor_attention_quadratic_backward(float *d_q, float *d_k, float *d_v,
                                         const float *d_out, const float *q, const float *k,
                                         const float *v, int batch, int seq_len, int heads,
                                         int kv_heads, int head_dim, float scale);
//
// approx-diag (the study's recurrent form): u_it = scale q_i.k_t (first-order Taylor
// term), w_it = scale^2/2 sum_m q_im^2 k_tm^2 (second-order term without cross terms),
// out_i = mean_{t<=i} v_t + sum_t u_it v_t r_i + sum_t w_it v_t / (W_i + eps),
// U_i = sum_{t<=i} u_it, W_i = sum_{t<=i} w_it (>= 0), and the guarded reciprocal of U_i
// r_i = U_i / (U_i^2 + guard^2 (i+1) scale^2 |q_i|^2 sum_{t<=i} |k_t|^2) (smooth; = 1/U_i
// where the sum does not cancel). Linear form: one scan per (sequence, kv head) with
// running sums of k, k^2, v, k v^T and k^2 v^T.
void diag_attention_forward(float *out, const float *q, const float *k, const float *v,
                            int batch, int seq_len, int heads, int kv_heads, int head_dim,
                            float scale, float guard, float eps);
void diag_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                             const float *q, const float *k, const float *v, int batch,
                             int seq_len, int heads, int kv_heads, int head_dim, float scale,
                             float guard, float eps);
// probs[heads, seq_len, seq_len] of ONE sequence: the weights with out_i = sum_t A_it v_t,
// A_it = 1/(i+1) + u_it r_i + w_it / (W_i + eps) (rows sum to ~3, not 1).
void diag_attention_quadratic_probabilities(float *probs, const float *q, const float *k,
                                            int seq_len, int heads, int kv_heads,
                                            int head_dim, float scale, float guard, float eps);
void diag_attention_quadratic_forward(float *out, const float *q, const float *k,
                                      const float *v, int batch, int seq_len, int heads,
                                      int kv_heads, int head_dim, float scale, float guard,
                                      float eps);
void diag_attention_quadratic_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                                       const float *q, const float *k, const float *v,
                                       int batch, int seq_len, int heads, int kv_heads,
                                       int head_dim, float scale, float guard, float eps);

// --- decoding: one new token per sequence against a cache or a recurrent state ----------
// (DESIGN.md 12; docs/design.md "Inference"). `batch` sequences each take one row (its
// new token) at its own position positions[b] (backend memory, 0-based); per-sequence
// caches and states lie `*_stride` floats apart. No op allocates: they run on the
// caller's buffers (sized once when the decode session is created).
//
// cache[b * sequence_stride + positions[b] * width + j] = rows[b * width + j]: each
// sequence's new row written at its position.
void copy_rows_to_positions(float *cache, size_t sequence_stride, const float *rows, const int *positions, int batch,
                            size_t width);
// rows[b * width + j] = table[b * sequence_stride + positions[b] * width + j] (stride 0:
// one table shared by the batch, e.g. the fixed stream's queries).
void copy_rows_from_positions(float *rows, const float *table, size_t sequence_stride, const int *positions,
                              int batch, size_t width);
// RoPE of row b (heads x head_dim) at position positions[b] (rope_forward's rotation).
void rope_at_positions(float *x, const float *cos_table, const float *sin_table, const int *positions, int batch,
                       int heads, int head_dim);
// Causal softmax attention of one query row per sequence over its cached keys and values
// 0..positions[b] (the new token's included): q [batch, heads, head_dim], out [batch,
// heads, value_head_dim]; key row t of sequence b at k + b * k_stride + t * kv_heads *
// head_dim, value row t at v + b * v_stride + t * kv_heads * value_head_dim (k_stride 0:
// one key cache shared by the batch, rndembqk's fixed stream). GQA as above.
void attention_decode(float *out, const float *q, const float *k, const float *v, const int *positions, int batch,
                      int heads, int kv_heads, int head_dim, int value_head_dim, float scale, size_t k_stride,
                      size_t v_stride);
// approx's recurrent state (taylor_attention_*): per kv head, S = sum_t phi(k_t) v_t^T and
// z = sum_t phi(k_t), stored as one [F, head_dim + 1] matrix (z its last column),
// taylor_decode_state_floats per kv head. update: adds `rows` tokens of each sequence
// (k, v [batch, rows, kv_heads, head_dim]) to its state; read: out_b = phi(q_b) S / phi(q_b).z.
size_t taylor_decode_state_floats(int head_dim);
void taylor_state_update(float *state, size_t state_stride, const float *k, const float *v, int batch, int rows,
                         int kv_heads, int head_dim, float scale);
void taylor_state_read(float *out, const float *state, size_t state_stride, const float *q, int batch, int heads,
                       int kv_heads, int head_dim, float scale);
// approx-diag's recurrent state (diag_attention_*): per kv head P = sum k v^T, R = sum k^2
// v^T [head_dim, head_dim], then K = sum k, C = sum k^2, V = sum v [head_dim]
// (diag_decode_state_floats per kv head). update as above; read: out_b with the count
// positions[b] + 1 of tokens in the state.
size_t diag_decode_state_floats(int head_dim);
void diag_state_update(float *state, size_t state_stride, const float *k, const float *v, int batch, int rows,
                       int kv_heads, int head_dim);
void diag_state_read(float *out, const float *state, size_t state_stride, const float *q, const int *positions,
                     int batch, int heads, int kv_heads, int head_dim, float scale, float guard, float eps);
// nonapx's recurrent state per query head: the normalised output o [head_dim] and the
// logsumexp of the scores so far (head_dim + 1 floats). One step per sequence: g =
// scale silu(q).k (q pre-activation), lse' = log(exp lse + exp g), o' = o exp(lse - lse')
// + v exp(g - lse'); out = o'.
void nonapx_state_step(float *out, float *state, size_t state_stride, const float *q, const float *k, const float *v,
                       int batch, int heads, int kv_heads, int head_dim, float scale);
