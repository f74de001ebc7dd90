// Double-precision reference ops: plain loops, no blocking, no threads. See ops_reference.h.
#include "ops_reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *zeros(size_t count) {
    double *p = calloc(count ? count : 1, sizeof(double));
    if (p == NULL) abort();
    return p;
}

// --- dense algebra -------------------------------------------------------------------

void reference_gemm(bool transpose_a, bool transpose_b, int m, int n, int k, double alpha,
                    const double *a, int lda, const double *b, int ldb, double beta,
                    double *c, int ldc) {
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double sum = 0.0;
            for (int p = 0; p < k; p++) {
                double aip = transpose_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                double bpj = transpose_b ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                sum += aip * bpj;
            }
            double *cij = &c[(size_t)i * ldc + j];
            *cij = alpha * sum + (beta == 0.0 ? 0.0 : beta * *cij);
        }
    }
}

void reference_linear_forward(double *out, const double *inp, const double *weight,
                              const double *bias, int rows, int in_dim, int out_dim) {
    for (int r = 0; r < rows; r++) {
        for (int o = 0; o < out_dim; o++) {
            double sum = bias != NULL ? bias[o] : 0.0;
            for (int i = 0; i < in_dim; i++)
                sum += inp[(size_t)r * in_dim + i] * weight[(size_t)o * in_dim + i];
            out[(size_t)r * out_dim + o] = sum;
        }
    }
}

void reference_linear_backward(double *d_inp, double *d_weight, double *d_bias,
                               const double *d_out, const double *inp, const double *weight,
                               int rows, int in_dim, int out_dim) {
    for (int r = 0; r < rows; r++) {
        for (int o = 0; o < out_dim; o++) {
            double g = d_out[(size_t)r * out_dim + o];
            if (d_bias != NULL) d_bias[o] += g;
            for (int i = 0; i < in_dim; i++) {
                if (d_inp != NULL) d_inp[(size_t)r * in_dim + i] += g * weight[(size_t)o * in_dim + i];
                if (d_weight != NULL) d_weight[(size_t)o * in_dim + i] += g * inp[(size_t)r * in_dim + i];
            }
        }
    }
}

// --- elementwise -----------------------------------------------------------------------

void reference_add_inplace(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] += x[i];
}

void reference_scale_inplace(double *y, double factor, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] *= factor;
}

double reference_sum_of_squares(const double *x, size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += x[i] * x[i];
    return sum;
}

// --- embedding -----------------------------------------------------------------------

void reference_embedding_forward(double *out, const int *tokens, const double *table,
                                 int rows, int dim) {
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
            out[(size_t)r * dim + i] = table[(size_t)tokens[r] * dim + i];
}

void reference_embedding_backward(double *d_table, const double *d_out, const int *tokens,
                                  int rows, int dim) {
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
            d_table[(size_t)tokens[r] * dim + i] += d_out[(size_t)r * dim + i];
}

// --- RMSNorm -------------------------------------------------------------------------

void reference_rmsnorm_forward(double *out, double *rstd, const double *inp,
                               const double *weight, int rows, int dim, double eps) {
    for (int r = 0; r < rows; r++) {
        const double *x = inp + (size_t)r * dim;
        double mean_square = 0.0;
        for (int i = 0; i < dim; i++) mean_square += x[i] * x[i];
        mean_square /= dim;
        double s = 1.0 / sqrt(mean_square + eps);
        for (int i = 0; i < dim; i++) out[(size_t)r * dim + i] = x[i] * s * weight[i];
        rstd[r] = s;
    }
}

// The full Jacobian of each row: y_i = w_i x_i s, s = (mean(x^2) + eps)^(-1/2),
// dy_i/dx_j = w_i (s [i == j] - x_i s^3 x_j / dim), dy_i/dw_i = x_i s.
void reference_rmsnorm_backward(double *d_inp, double *d_weight, const double *d_out,
                                const double *inp, const double *weight, const double *rstd,
                                int rows, int dim) {
    for (int r = 0; r < rows; r++) {
        const double *x = inp + (size_t)r * dim, *dy = d_out + (size_t)r * dim;
        double s = rstd[r];
        for (int i = 0; i < dim; i++) {
            if (d_weight != NULL) d_weight[i] += dy[i] * x[i] * s;
            if (d_inp == NULL) continue;
            for (int j = 0; j < dim; j++) {
                double jacobian = weight[i] * ((i == j ? s : 0.0) - x[i] * s * s * s * x[j] / dim);
                d_inp[(size_t)r * dim + j] += dy[i] * jacobian;
            }
        }
    }
}

// --- RoPE ------------------------------------------------------------------------------

void reference_rope_tables(double *cos_table, double *sin_table, int max_positions,
                           int head_dim, double theta) {
    int half = head_dim / 2;
    for (int p = 0; p < max_positions; p++) {
        for (int i = 0; i < half; i++) {
            double inverse_frequency = 1.0 / pow(theta, (2.0 * i) / head_dim);
            cos_table[(size_t)p * half + i] = cos(p * inverse_frequency);
            sin_table[(size_t)p * half + i] = sin(p * inverse_frequency);
        }
    }
}

// x <- x * cos_full + rotate_half(x) * sin_full, cos_full = [cos, cos], sin_full = [sin, sin],
// rotate_half([x1, x2]) = [-x2, x1], with sign = -1 turning the other way.
static void reference_rope_apply(double *x, const double *cos_table, const double *sin_table,
                                 int batch, int seq_len, int heads, int head_dim, double sign) {
    int half = head_dim / 2;
    double *rotated = zeros((size_t)head_dim);
    for (int b = 0; b < batch; b++) {
        for (int t = 0; t < seq_len; t++) {
            for (int h = 0; h < heads; h++) {
                double *xh = x + (((size_t)b * seq_len + t) * heads + h) * head_dim;
                for (int i = 0; i < head_dim; i++)
                    rotated[i] = i < half ? -xh[i + half] : xh[i - half];
                for (int i = 0; i < head_dim; i++) {
                    double c = cos_table[(size_t)t * half + i % half];
                    double s = sin_table[(size_t)t * half + i % half];
                    xh[i] = xh[i] * c + sign * rotated[i] * s;
                }
            }
        }
    }
    free(rotated);
}

void reference_rope_forward(double *x, const double *cos_table, const double *sin_table,
                            int batch, int seq_len, int heads, int head_dim) {
    reference_rope_apply(x, cos_table, sin_table, batch, seq_len, heads, head_dim, 1.0);
}

void reference_rope_backward(double *d_x, const double *cos_table, const double *sin_table,
                             int batch, int seq_len, int heads, int head_dim) {
    reference_rope_apply(d_x, cos_table, sin_table, batch, seq_len, heads, head_dim, -1.0);
}

// --- attention -----------------------------------------------------------------------

static const double *row_of(const double *x, int b, int t, int head, int seq_len, int heads,
                            int head_dim) {
    return x + (((size_t)b * seq_len + t) * heads + head) * head_dim;
}

// p[0..i] = softmax_j(scale q_i.k_j) over the keys j <= i of query row i; returns the logsumexp.
static double reference_softmax_row(double *p, const double *q, const double *k, int b, int i,
                                    int h, int seq_len, int heads, int kv_heads, int head_dim,
                                    double scale) {
    int kvh = h / (heads / kv_heads);
    const double *qi = row_of(q, b, i, h, seq_len, heads, head_dim);
    double max = -INFINITY;
    for (int j = 0; j <= i; j++) {
        const double *kj = row_of(k, b, j, kvh, seq_len, kv_heads, head_dim);
        double dot = 0.0;
        for (int d = 0; d < head_dim; d++) dot += qi[d] * kj[d];
        p[j] = scale * dot;
        if (p[j] > max) max = p[j];
    }
    double sum = 0.0;
    for (int j = 0; j <= i; j++) sum += exp(p[j] - max);
    for (int j = 0; j <= i; j++) p[j] = exp(p[j] - max) / sum;
    return max + log(sum);
}

void reference_attention_forward(double *out, double *logsumexp, const double *q,
                                 const double *k, const double *v, int batch, int seq_len,
                                 int heads, int kv_heads, int head_dim, double scale) {
    double *p = zeros((size_t)seq_len);
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            int kvh = h / (heads / kv_heads);
            for (int i = 0; i < seq_len; i++) {
                logsumexp[((size_t)b * heads + h) * seq_len + i] = reference_softmax_row(
                    p, q, k, b, i, h, seq_len, heads, kv_heads, head_dim, scale);
                double *oi = out + (((size_t)b * seq_len + i) * heads + h) * head_dim;
                for (int d = 0; d < head_dim; d++) {
                    double sum = 0.0;
                    for (int j = 0; j <= i; j++)
                        sum += p[j] * row_of(v, b, j, kvh, seq_len, kv_heads, head_dim)[d];
                    oi[d] = sum;
                }
            }
        }
    }
    free(p);
}

// Row by row: dp_j = do.v_j, ds_j = p_j (dp_j - sum_t p_t dp_t) (the softmax Jacobian),
// dq += scale sum_j ds_j k_j, dk_j += scale ds_j q, dv_j += p_j do.
void reference_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_out,
                                  const double *out, const double *logsumexp, const double *q,
                                  const double *k, const double *v, int batch, int seq_len,
                                  int heads, int kv_heads, int head_dim, double scale) {
    (void)out;
    (void)logsumexp;
    double *p = zeros((size_t)seq_len), *dp = zeros((size_t)seq_len);
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            int kvh = h / (heads / kv_heads);
            for (int i = 0; i < seq_len; i++) {
                reference_softmax_row(p, q, k, b, i, h, seq_len, heads, kv_heads, head_dim, scale);
                const double *doi = row_of(d_out, b, i, h, seq_len, heads, head_dim);
                const double *qi = row_of(q, b, i, h, seq_len, heads, head_dim);
                double expected = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double *vj = row_of(v, b, j, kvh, seq_len, kv_heads, head_dim);
                    dp[j] = 0.0;
                    for (int d = 0; d < head_dim; d++) dp[j] += doi[d] * vj[d];
                    expected += p[j] * dp[j];
                }
                for (int j = 0; j <= i; j++) {
                    double ds = p[j] * (dp[j] - expected);
                    size_t kv_row = (((size_t)b * seq_len + j) * kv_heads + kvh) * head_dim;
                    size_t q_row = (((size_t)b * seq_len + i) * heads + h) * head_dim;
                    for (int d = 0; d < head_dim; d++) {
                        if (d_q != NULL) d_q[q_row + d] += scale * ds * k[kv_row + d];
                        if (d_k != NULL) d_k[kv_row + d] += scale * ds * qi[d];
                        if (d_v != NULL) d_v[kv_row + d] += p[j] * doi[d];
                    }
                }
            }
        }
    }
    free(p);
    free(dp);
}

void reference_attention_probabilities(double *probs, const double *q, const double *k,
                                       int seq_len, int heads, int kv_heads, int head_dim,
                                       double scale) {
    for (int h = 0; h < heads; h++) {
        for (int i = 0; i < seq_len; i++) {
            double *row = probs + ((size_t)h * seq_len + i) * seq_len;
            for (int j = 0; j < seq_len; j++) row[j] = 0.0;
            reference_softmax_row(row, q, k, 0, i, h, seq_len, heads, kv_heads, head_dim, scale);
        }
    }
}

// --- SwiGLU ----------------------------------------------------------------------------

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

void reference_swiglu_forward(double *out, const double *gate, const double *up, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void reference_swiglu_backward(double *d_gate, double *d_up, const double *d_out,
                               const double *gate, const double *up, size_t count) {
    for (size_t i = 0; i < count; i++) {
        double s = sigmoid(gate[i]);
        double dsilu = s + gate[i] * s * (1.0 - s);  // d/dg (g s(g))
        if (d_gate != NULL) d_gate[i] += d_out[i] * up[i] * dsilu;
        if (d_up != NULL) d_up[i] += d_out[i] * gate[i] * s;
    }
}

// --- LM head + cross entropy ---------------------------------------------------------

double reference_lm_head_cross_entropy(double *losses, double *d_hidden, double *d_weight,
                                       const double *hidden, const double *weight,
                                       const int *targets, int rows, int dim, int vocab,
                                       double loss_scale) {
    double *logits = zeros((size_t)rows * vocab);
    reference_gemm(false, true, rows, vocab, dim, 1.0, hidden, dim, weight, dim, 0.0, logits, vocab);
    double total = 0.0;
    for (int r = 0; r < rows; r++) {
        double *z = logits + (size_t)r * vocab;
        if (targets[r] < 0) {
            if (losses != NULL) losses[r] = 0.0;
            memset(z, 0, sizeof(double) * vocab);  // no gradient from this row
            continue;
        }
        double max = z[0];
        for (int j = 0; j < vocab; j++) max = z[j] > max ? z[j] : max;
        double sum = 0.0;
        for (int j = 0; j < vocab; j++) sum += exp(z[j] - max);
        double loss = max + log(sum) - z[targets[r]];
        if (losses != NULL) losses[r] = loss;
        total += loss;
        // z becomes d(loss_scale * loss) / d logits = loss_scale (softmax - onehot)
        for (int j = 0; j < vocab; j++)
            z[j] = loss_scale * (exp(z[j] - max) / sum - (j == targets[r] ? 1.0 : 0.0));
    }
    if (d_hidden != NULL)
        reference_gemm(false, false, rows, dim, vocab, 1.0, logits, vocab, weight, dim, 1.0,
                       d_hidden, dim);
    if (d_weight != NULL)
        reference_gemm(true, false, vocab, dim, rows, 1.0, logits, vocab, hidden, dim, 1.0,
                       d_weight, dim);
    free(logits);
    return total;
}

// --- AdamW -----------------------------------------------------------------------------

void reference_adamw_update(double *param, const double *grad, double *m, double *v,
                            size_t count, double lr, double beta1, double beta2, double eps,
                            double weight_decay, int step, double grad_scale) {
    for (size_t i = 0; i < count; i++) {
        double g = grad[i] * grad_scale;
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        double m_hat = m[i] / (1.0 - pow(beta1, step));
        double v_hat = v[i] / (1.0 - pow(beta2, step));
        param[i] -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * param[i]);
    }
}
