// The double-precision references of linear_attention_reference.h: plain loops, one
// (sequence, head) at a time, nothing shared with src/ops.
#include "linear_attention_reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

static double dot(const double *a, const double *b, int n) {
    double sum = 0.0;
    for (int e = 0; e < n; e++) sum += a[e] * b[e];
    return sum;
}

// Row offsets of position t of sequence b, head h (query side) or kv head g.
static size_t q_at(int b, int t, int h, int L, int heads, int dh) { return (((size_t)b * L + t) * heads + h) * dh; }
static size_t kv_at(int b, int t, int g, int L, int kv_heads, int dh) {
    return (((size_t)b * L + t) * kv_heads + g) * dh;
}

static double taylor_f(double x) { return 1.0 + x + 0.5 * x * x; }

// ---- approx ------------------------------------------------------------------------

void ref_taylor_attention_forward(double *out, double *probs, const double *q, const double *k, const double *v,
                                  int batch, int seq_len, int heads, int kv_heads, int dh, double scale) {
    int L = seq_len, group = heads / kv_heads;
    double *row = xcalloc((size_t)L, sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < L; i++) {
                const double *qi = q + q_at(b, i, h, L, heads, dh);
                double den = 0.0;
                for (int t = 0; t <= i; t++) {
                    row[t] = taylor_f(scale * dot(qi, k + kv_at(b, t, h / group, L, kv_heads, dh), dh));
                    den += row[t];
                }
                double *oi = out + q_at(b, i, h, L, heads, dh);
                memset(oi, 0, sizeof(double) * (size_t)dh);
                for (int t = 0; t <= i; t++) {
                    row[t] /= den;
                    const double *vt = v + kv_at(b, t, h / group, L, kv_heads, dh);
                    for (int e = 0; e < dh; e++) oi[e] += row[t] * vt[e];
                }
                if (probs) {
                    double *p = probs + (((size_t)b * heads + h) * L + i) * L;
                    for (int t = 0; t < L; t++) p[t] = t <= i ? row[t] : 0.0;
                }
            }
    free(row);
}

// Through A, as for a softmax: dA_it = do_i.v_t, dv_t += A_it do_i,
// dw_it = (dA_it - sum_t' A_it' dA_it') / den_i, dx_it = dw_it f'(x_it) = dw_it (1 + x_it).
void ref_taylor_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_out, const double *q,
                                   const double *k, const double *v, int batch, int seq_len, int heads, int kv_heads,
                                   int dh, double scale) {
    int L = seq_len, group = heads / kv_heads;
    double *x = xcalloc((size_t)L, sizeof(double)), *a = xcalloc((size_t)L, sizeof(double));
    double *da = xcalloc((size_t)L, sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            int g = h / group;
            for (int i = 0; i < L; i++) {
                size_t qi_off = q_at(b, i, h, L, heads, dh);
                const double *qi = q + qi_off, *doi = d_out + qi_off;
                double den = 0.0, a_da = 0.0;
                for (int t = 0; t <= i; t++) {
                    x[t] = scale * dot(qi, k + kv_at(b, t, g, L, kv_heads, dh), dh);
                    den += taylor_f(x[t]);
                }
                for (int t = 0; t <= i; t++) {
                    size_t kv = kv_at(b, t, g, L, kv_heads, dh);
                    a[t] = taylor_f(x[t]) / den;
                    da[t] = dot(doi, v + kv, dh);
                    a_da += a[t] * da[t];
                    for (int e = 0; e < dh; e++) d_v[kv + e] += a[t] * doi[e];
                }
                for (int t = 0; t <= i; t++) {
                    size_t kv = kv_at(b, t, g, L, kv_heads, dh);
                    double dx = (da[t] - a_da) / den * (1.0 + x[t]) * scale;
                    for (int e = 0; e < dh; e++) {
                        d_q[qi_off + e] += dx * k[kv + e];
                        d_k[kv + e] += dx * qi[e];
                    }
                }
            }
        }
    free(x);
    free(a);
    free(da);
}

// phi(x) = [1, sqrt(s) x_m, s/sqrt(2) x_m x_n for every ordered pair (m, n)].
static void full_features(double *phi, const double *x, int dh, double scale) {
    phi[0] = 1.0;
    for (int m = 0; m < dh; m++) phi[1 + m] = sqrt(scale) * x[m];
    for (int m = 0; m < dh; m++)
        for (int n = 0; n < dh; n++) phi[1 + dh + m * dh + n] = scale / sqrt(2.0) * x[m] * x[n];
}

void ref_taylor_attention_linear(double *out, const double *q, const double *k, const double *v, int batch,
                                 int seq_len, int heads, int kv_heads, int dh, double scale) {
    int L = seq_len, group = heads / kv_heads, F = 1 + dh + dh * dh;
    double *S = xcalloc((size_t)F * dh, sizeof(double)), *z = xcalloc((size_t)F, sizeof(double));
    double *phi = xcalloc((size_t)F, sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            int g = h / group;
            memset(S, 0, sizeof(double) * (size_t)F * dh);
            memset(z, 0, sizeof(double) * (size_t)F);
            for (int i = 0; i < L; i++) {
                size_t kv = kv_at(b, i, g, L, kv_heads, dh);
                full_features(phi, k + kv, dh, scale);
                for (int f = 0; f < F; f++) {
                    z[f] += phi[f];
                    for (int e = 0; e < dh; e++) S[(size_t)f * dh + e] += phi[f] * v[kv + e];
                }
                full_features(phi, q + q_at(b, i, h, L, heads, dh), dh, scale);
                double den = dot(phi, z, F);
                double *oi = out + q_at(b, i, h, L, heads, dh);
                for (int e = 0; e < dh; e++) {
                    double num = 0.0;
                    for (int f = 0; f < F; f++) num += phi[f] * S[(size_t)f * dh + e];
                    oi[e] = num / den;
                }
            }
        }
    free(S);
    free(z);
    free(phi);
}

// ---- approx-diag -------------------------------------------------------------------

// The guarded first-order reciprocal r = x / (x^2 + delta2), 0 where both vanish.
static double diag_reciprocal(double x, double delta2) {
    double D = x * x + delta2;
    return D > 0.0 ? x / D : 0.0;
}

static double diag_w(const double *qi, const double *kt, int dh, double scale) {
    double sum = 0.0;
    for (int e = 0; e < dh; e++) sum += qi[e] * qi[e] * kt[e] * kt[e];
    return 0.5 * scale * scale * sum;
}

// Row i of head h: u_t, w_t (t <= i) and the sums U, W, sum_t |k_t|^2.
static void diag_row_terms(double *u, double *w, double *U, double *W, double *k_norms, const double *qi,
                           const double *k, int b, int i, int g, int L, int kv_heads, int dh, double scale) {
    *U = *W = *k_norms = 0.0;
    for (int t = 0; t <= i; t++) {
        const double *kt = k + kv_at(b, t, g, L, kv_heads, dh);
        u[t] = scale * dot(qi, kt, dh);
        w[t] = diag_w(qi, kt, dh, scale);
        *U += u[t];
        *W += w[t];
        *k_norms += dot(kt, kt, dh);
    }
}

void ref_diag_attention_forward(double *out, double *probs, const double *q, const double *k, const double *v,
                                int batch, int seq_len, int heads, int kv_heads, int dh, double scale, double guard,
                                double eps) {
    int L = seq_len, group = heads / kv_heads;
    double *u = xcalloc((size_t)L, sizeof(double)), *w = xcalloc((size_t)L, sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < L; i++) {
                const double *qi = q + q_at(b, i, h, L, heads, dh);
                double U, W, k_norms;
                diag_row_terms(u, w, &U, &W, &k_norms, qi, k, b, i, h / group, L, kv_heads, dh, scale);
                double delta2 = guard * guard * (i + 1) * scale * scale * dot(qi, qi, dh) * k_norms;
                double r = diag_reciprocal(U, delta2);
                double *oi = out + q_at(b, i, h, L, heads, dh);
                double *p = probs ? probs + (((size_t)b * heads + h) * L + i) * L : NULL;
                memset(oi, 0, sizeof(double) * (size_t)dh);
                for (int t = 0; t < L; t++) {
                    double a = t <= i ? 1.0 / (i + 1) + u[t] * r + w[t] / (W + eps) : 0.0;
                    if (p) p[t] = a;
                    if (t > i) continue;
                    const double *vt = v + kv_at(b, t, h / group, L, kv_heads, dh);
                    for (int e = 0; e < dh; e++) oi[e] += a * vt[e];
                }
            }
    free(u);
    free(w);
}

// dA_it = do_i.v_t; dv_t += A_it do_i. The first-order term sum_t u_t v_t r(U, delta2),
// D = U^2 + delta2, rho = sum_t dA_t u_t: du_t = dA_t r + rho (delta2 - U^2) / D^2 and
// d delta2 = -rho U / D^2, with delta2 = guard^2 (i+1) s^2 |q_i|^2 sum_t |k_t|^2; the
// second-order one: dw_t = dA_t / (W + eps) - sum_t' dA_t' w_t' / (W + eps)^2; then
// u_t = s q_i.k_t and w_t = s^2/2 sum q^2 k^2 by the chain rule.
void ref_diag_attention_backward(double *d_q, double *d_k, double *d_v, const double *d_out, const double *q,
                                 const double *k, const double *v, int batch, int seq_len, int heads, int kv_heads,
                                 int dh, double scale, double guard, double eps) {
    int L = seq_len, group = heads / kv_heads;
    double *u = xcalloc((size_t)L, sizeof(double)), *w = xcalloc((size_t)L, sizeof(double));
    double *da = xcalloc((size_t)L, sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            int g = h / group;
            for (int i = 0; i < L; i++) {
                size_t qi_off = q_at(b, i, h, L, heads, dh);
                const double *qi = q + qi_off, *doi = d_out + qi_off;
                double U, W, k_norms;
                diag_row_terms(u, w, &U, &W, &k_norms, qi, k, b, i, g, L, kv_heads, dh, scale);
                double q_norm = scale * scale * dot(qi, qi, dh), n = guard * guard * (i + 1);
                double delta2 = n * q_norm * k_norms, D = U * U + delta2;
                double r = diag_reciprocal(U, delta2), e2 = W + eps, rho = 0.0, sw = 0.0;
                for (int t = 0; t <= i; t++) {
                    size_t kv = kv_at(b, t, g, L, kv_heads, dh);
                    double a = 1.0 / (i + 1) + u[t] * r + w[t] / e2;
                    da[t] = dot(doi, v + kv, dh);
                    rho += da[t] * u[t];
                    sw += da[t] * w[t];
                    for (int e = 0; e < dh; e++) d_v[kv + e] += a * doi[e];
                }
                double dU = D > 0.0 ? rho * (delta2 - U * U) / (D * D) : 0.0;
                double d_delta2 = D > 0.0 ? -rho * U / (D * D) : 0.0, dW = -sw / (e2 * e2);
                for (int e = 0; e < dh; e++) d_q[qi_off + e] += d_delta2 * n * k_norms * 2.0 * scale * scale * qi[e];
                for (int t = 0; t <= i; t++) {
                    size_t kv = kv_at(b, t, g, L, kv_heads, dh);
                    const double *kt = k + kv;
                    double du = da[t] * r + dU, dw = da[t] / e2 + dW;
                    for (int e = 0; e < dh; e++) {
                        d_q[qi_off + e] += scale * du * kt[e] + scale * scale * dw * qi[e] * kt[e] * kt[e];
                        d_k[kv + e] += scale * du * qi[e] + scale * scale * dw * kt[e] * qi[e] * qi[e] +
                                       d_delta2 * n * q_norm * 2.0 * kt[e];
                    }
                }
            }
        }
    free(u);
    free(w);
    free(da);
}

// The study's recurrence: running sums of v, k, k^2, k v^T, k^2 v^T; each query reads them.
void ref_diag_attention_linear(double *out, const double *q, const double *k, const double *v, int batch,
                               int seq_len, int heads, int kv_heads, int dh, double scale, double guard, double eps) {
    int L = seq_len, group = heads / kv_heads;
    size_t dd = (size_t)dh * dh;
    double *P = xcalloc(dd, sizeof(double)), *R = xcalloc(dd, sizeof(double));
    double *K = xcalloc((size_t)dh, sizeof(double)), *C = xcalloc((size_t)dh, sizeof(double));
    double *V = xcalloc((size_t)dh, sizeof(double));
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++) {
            int g = h / group;
            memset(P, 0, sizeof(double) * dd);
            memset(R, 0, sizeof(double) * dd);
            memset(K, 0, sizeof(double) * (size_t)dh);
            memset(C, 0, sizeof(double) * (size_t)dh);
            memset(V, 0, sizeof(double) * (size_t)dh);
            for (int i = 0; i < L; i++) {
                size_t kv = kv_at(b, i, g, L, kv_heads, dh);
                const double *kt = k + kv, *vt = v + kv;
                for (int m = 0; m < dh; m++) {
                    K[m] += kt[m];
                    C[m] += kt[m] * kt[m];
                    V[m] += vt[m];
                    for (int e = 0; e < dh; e++) {
                        P[(size_t)m * dh + e] += kt[m] * vt[e];
                        R[(size_t)m * dh + e] += kt[m] * kt[m] * vt[e];
                    }
                }
                const double *qi = q + q_at(b, i, h, L, heads, dh);
                double den1 = 0.0, den2 = 0.0, a_norm2 = 0.0, c_sum = 0.0;
                for (int m = 0; m < dh; m++) {
                    den1 += scale * qi[m] * K[m];
                    den2 += 0.5 * scale * scale * qi[m] * qi[m] * C[m];
                    a_norm2 += scale * scale * qi[m] * qi[m];
                    c_sum += C[m];
                }
                double r1 = diag_reciprocal(den1, guard * guard * (i + 1) * a_norm2 * c_sum), e2 = den2 + eps;
                double *oi = out + q_at(b, i, h, L, heads, dh);
                for (int e = 0; e < dh; e++) {
                    double n1 = 0.0, n2 = 0.0;
                    for (int m = 0; m < dh; m++) {
                        n1 += scale * qi[m] * P[(size_t)m * dh + e];
                        n2 += 0.5 * scale * scale * qi[m] * qi[m] * R[(size_t)m * dh + e];
                    }
                    oi[e] = V[e] / (i + 1) + n1 * r1 + n2 / e2;
                }
            }
        }
    free(P);
    free(R);
    free(K);
    free(C);
    free(V);
}
