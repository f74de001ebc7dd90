// Double-precision references of the linear-time attention ops (ops.h, "linear-time
// attention"): the quadratic forms (materialised A, O = A V) with hand-written
// backwards, and the plain per-token recurrences of the linear forms (forward only),
// written independently of src/ops: no chunks, and approx's feature map in its full,
// unsymmetrised form phi(x) = [1, sqrt(s) x, s/sqrt(2) (x outer x)] (1 + d + d^2 features).
//
// Shapes: q, out [batch, seq_len, heads, dh]; k, v [batch, seq_len, kv_heads, dh]; head h
// reads kv head h / (heads / kv_heads). probs (may be NULL) [batch, heads, seq_len,
// seq_len], zeros above the diagonal. Backwards accumulate (+=) into d_q, d_k, d_v.
#pragma once

// approx: A_it = f(s q_i.k_t) / sum_{t'<=i} f(s q_i.k_t'), f(x) = 1 + x + x^2/2.
void ref_taylor_attention_forward(double *out, double *probs, const double *q, const double *k, const double *v,
                                  int batch, int seq_len, int heads, int kv_heads, int dh, double scale);
void ref_taylor_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_out, const double *q,
                                   const double *k, const double *v, int batch, int seq_len, int heads, int kv_heads,
                                   int dh, double scale);
void ref_taylor_attention_linear(double *out, const double *q, const double *k, const double *v, int batch,
                                 int seq_len, int heads, int kv_heads, int dh, double scale);

// approx-diag: A_it = 1/(i+1) + u_it r_i + w_it / (sum w + eps), u_it = s q_i.k_t,
// w_it = s^2/2 sum_m q_im^2 k_tm^2, r_i = U / (U^2 + guard^2 (i+1) s^2 |q_i|^2 sum_t |k_t|^2)
// with U = sum_t u_it (0 where the denominator is 0).
void ref_diag_attention_forward(double *out, double *probs, const double *q, const double *k, const double *v,
                                int batch, int seq_len, int heads, int kv_heads, int dh, double scale, double guard,
                                double eps);
void ref_diag_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_out, const double *q,
                                 const double *k, const double *v, int batch, int seq_len, int heads, int kv_heads,
                                 int dh, double scale, double guard, double eps);
void ref_diag_attention_linear(double *out, const double *q, const double *k, const double *v, int batch,
                               int seq_len, int heads, int kv_heads, int dh, double scale, double guard, double eps);
