// A3's closed forms (docs/design.md "Low-rank compression (A3)"). Everything is solved in
// head coordinates: the products Wq_j^T Wk and Wo_j Wv have rank <= d_h, so the optimal
// reduced factors are r x d_h maps T of the original rows (Wk' = T Wk~, Wv' = T Wv~), and
// the eigenproblems are d_h x d_h; no (d+1) x (d+1) inverse square root is ever formed.
#include "analysis/lowrank_a3.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/lowrank_linalg.h"
#include "core/errors.h"

static double *zeros(size_t n) { return xcalloc(n, sizeof(double)); }

// [W | b] as double: rows x (d + 1), b = 0 when NULL.
static double *augment(int rows, int d, const float *w, const float *b) {
    int dd = d + 1;
    double *out = zeros((size_t)rows * dd);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < d; c++) out[(size_t)r * dd + c] = w[(size_t)r * d + c];
        out[(size_t)r * dd + d] = b ? b[r] : 0.0;
    }
    return out;
}

static double *identity(int n) {
    double *out = zeros((size_t)n * n);
    for (int i = 0; i < n; i++) out[(size_t)i * n + i] = 1.0;
    return out;
}

// out[ra x rb] = A C B^T for A [ra x n], C [n x n], B [rb x n].
static void gram(int ra, int rb, int n, const double *a, const double *c, const double *b, double *out) {
    double *ac = zeros((size_t)ra * n);
    lr_gemm(false, false, ra, n, n, 1.0, a, c, 0.0, ac);
    lr_gemm(false, true, ra, rb, n, 1.0, ac, b, 0.0, out);
    free(ac);
}

// Splits augmented rows back into float weights (scaled) and bias (NULL: dropped).
static void split_rows(int rows, int d, const double *aug, double scale, float *w, float *b) {
    int dd = d + 1;
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < d; c++) w[(size_t)r * d + c] = (float)(scale * aug[(size_t)r * dd + c]);
        if (b) b[r] = (float)(scale * aug[(size_t)r * dd + d]);
    }
}

static bool rank_ok(int rank, int limit, const char *what, const char *dimension, char *why, size_t why_size) {
    if (rank >= 1 && rank <= limit) return true;
    snprintf(why, why_size, "%s %d is outside 1..%d (%s): choose a value in that range", what, rank, limit,
             dimension);
    return false;
}

const char *lowrank_method_name(lowrank_method method) { return method == LOWRANK_A3 ? "a3" : "svd"; }

bool lowrank_method_parse(const char *text, lowrank_method *method) {
    if (strcmp(text, "a3") == 0) *method = LOWRANK_A3;
    else if (strcmp(text, "svd") == 0) *method = LOWRANK_SVD;
    else return false;
    return true;
}

// ---- QK ------------------------------------------------------------------------------

// s^2 E[(x~^T (Aq^T Ak - Bq^T Bk) y~)^2] = s^2 [tr(AqCAq^T AkCAk^T) - 2 tr(BqCAq^T AkCBk^T)
// + tr(BqCBq^T BkCBk^T)] for Aq, Ak [dh x D] and Bq, Bk [r x D] (r = 0: the energy).
static double qk_loss(int dh, int r, int n, const double *aq, const double *ak, const double *bq, const double *bk,
                      const double *c, double scale2) {
    double *qq = zeros((size_t)dh * dh), *kk = zeros((size_t)dh * dh);
    gram(dh, dh, n, aq, c, aq, qq);
    gram(dh, dh, n, ak, c, ak, kk);
    double loss = lr_trace_product(dh, dh, qq, kk);
    if (r > 0) {
        double *bqa = zeros((size_t)r * dh), *akb = zeros((size_t)dh * r), *bqq = zeros((size_t)r * r),
               *bkk = zeros((size_t)r * r);
        gram(r, dh, n, bq, c, aq, bqa);
        gram(dh, r, n, ak, c, bk, akb);
        gram(r, r, n, bq, c, bq, bqq);
        gram(r, r, n, bk, c, bk, bkk);
        loss += -2.0 * lr_trace_product(r, dh, bqa, akb) + lr_trace_product(r, r, bqq, bkk);
        free(bqa);
        free(akb);
        free(bqq);
        free(bkk);
    }
    free(qq);
    free(kk);
    return scale2 * loss;
}

// Without RoPE, per kv group g (query heads J sharing Wk~): minimise
//   sum_j ||C^1/2 (Wq~_j^T Wk~ - Wq'_j^T Wk') C^1/2||_F^2.
// With B = Wk~ C^1/2 and A_j = Wq~_j C^1/2 the optimum keeps the top-r right singular
// subspace V of the stacked [A_j^T B]; V = T B with T = U_r^T G^-1/2, G = Wk~ C Wk~^T and
// U_r the top-r eigenvectors of G^1/2 K G^1/2, K = sum_j Wq~_j C Wq~_j^T. Then
//   Wk' = U_r^T G^-1/2 Wk~,  Wq'_j = U_r^T G^1/2 Wq~_j.
// One query head per group: the best rank-r approximation of C^1/2 Wq~^T Wk~ C^1/2 (A3).
static void qk_group(int dh, int r, int n, int group, const double *const *aq, const double *ak, const double *fit,
                     double **bq, double *bk) {
    double *g = zeros((size_t)dh * dh), *k = zeros((size_t)dh * dh), *one = zeros((size_t)dh * dh);
    gram(dh, dh, n, ak, fit, ak, g);
    for (int j = 0; j < group; j++) {
        gram(dh, dh, n, aq[j], fit, aq[j], one);
        for (size_t i = 0; i < (size_t)dh * dh; i++) k[i] += one[i];
    }
    double *root = zeros((size_t)dh * dh), *inverse_root = zeros((size_t)dh * dh), *h = zeros((size_t)dh * dh),
           *values = zeros((size_t)dh), *vectors = zeros((size_t)dh * dh), *ur = zeros((size_t)dh * r),
           *t = zeros((size_t)r * dh);
    if (lr_psd_roots(dh, g, root, inverse_root) != 0) fatal("lowrank: dsyevd failed on the key Gram matrix");
    lr_gemm(false, false, dh, dh, dh, 1.0, root, k, 0.0, one);
    lr_gemm(false, false, dh, dh, dh, 1.0, one, root, 0.0, h);
    if (lr_symmetric_eigen(dh, h, values, vectors) != 0) fatal("lowrank: dsyevd failed on the QK core");
    for (int row = 0; row < dh; row++)
        for (int c = 0; c < r; c++) ur[(size_t)row * r + c] = vectors[(size_t)row * dh + c];
    lr_gemm(true, false, r, dh, dh, 1.0, ur, inverse_root, 0.0, t);
    lr_gemm(false, false, r, n, dh, 1.0, t, ak, 0.0, bk);
    lr_gemm(true, false, r, dh, dh, 1.0, ur, root, 0.0, t);
    for (int j = 0; j < group; j++) lr_gemm(false, false, r, n, dh, 1.0, t, aq[j], 0.0, bq[j]);
    free(g);
    free(k);
    free(one);
    free(root);
    free(inverse_root);
    free(h);
    free(values);
    free(vectors);
    free(ur);
    free(t);
}

// E|q_i|^2 of RoPE pair i (rows i and i + d_h/2 of a head's augmented rows): [d_h/2].
static void pair_energies(int dh, int n, const double *a, const double *c, double *out) {
    double *all = zeros((size_t)dh * dh);
    gram(dh, dh, n, a, c, a, all);
    int half = dh / 2;
    for (int i = 0; i < half; i++) out[i] = all[(size_t)i * dh + i] + all[(size_t)(i + half) * dh + i + half];
    free(all);
}

// RoPE puts a position-dependent rotation between q and k, so the product cannot be
// mixed across pairs: a reduced head keeps whole frequency pairs. Under the phase-averaged
// loss (lowrank_losses) dropping pair i costs sum_j E|q_ji|^2 E|k_gi|^2 / 2, additive over
// pairs, so keeping the pairs of largest summed cost is the exact minimiser. One set per
// layer (every head), so the reduced layer needs one frequency table.
static void qk_rope_pairs(const lowrank_shape *s, int keep, double *const *aq, double *const *ak, const double *fit,
                          int *kept) {
    int dh = s->head_dim, half = dh / 2, n = s->d + 1, group = s->heads / s->kv_heads;
    double *importance = zeros((size_t)half), *eq = zeros((size_t)half), *ek = zeros((size_t)half);
    for (int j = 0; j < s->heads; j++) {
        pair_energies(dh, n, aq[j], fit, eq);
        pair_energies(dh, n, ak[j / group], fit, ek);
        for (int i = 0; i < half; i++) importance[i] += eq[i] * ek[i];
    }
    bool *taken = xcalloc((size_t)half, sizeof *taken);
    for (int t = 0; t < keep; t++) {
        int best = -1;
        for (int i = 0; i < half; i++)
            if (!taken[i] && (best < 0 || importance[i] > importance[best])) best = i;
        taken[best] = true;
    }
    for (int i = 0, t = 0; i < half; i++)
        if (taken[i]) kept[t++] = i;
    free(taken);
    free(importance);
    free(eq);
    free(ek);
}

bool lowrank_qk(lowrank_method method, const lowrank_shape *s, int rank, const float *wq, const float *bq,
                const float *wk, const float *bk, const double *corr, double query_scale, float *wq_out,
                float *bq_out, float *wk_out, float *bk_out, int *kept_pairs, lowrank_losses losses, char *why,
                size_t why_size) {
    int dh = s->head_dim, d = s->d, n = d + 1, group = s->heads / s->kv_heads;
    if (!rank_ok(rank, dh, "QK rank", "the query/key head size d_h", why, why_size)) return false;
    if (s->rope && rank % 2 != 0) {
        snprintf(why, why_size, "QK rank %d is odd: RoPE keeps whole frequency pairs, choose an even rank", rank);
        return false;
    }
    double scale2 = 1.0 / dh;  // the softmax scale s = 1/sqrt(d_h), squared
    double *fit = method == LOWRANK_A3 ? NULL : identity(n);
    const double *fit_corr = fit ? fit : corr;
    double **aq = (double **)xmalloc((size_t)s->heads * sizeof *aq), **ak = (double **)xmalloc((size_t)s->kv_heads * sizeof *ak);
    double **rq = (double **)xmalloc((size_t)s->heads * sizeof *rq), **rk = (double **)xmalloc((size_t)s->kv_heads * sizeof *rk);
    for (int j = 0; j < s->heads; j++) {
        aq[j] = augment(dh, d, wq + (size_t)j * dh * d, bq ? bq + (size_t)j * dh : NULL);
        rq[j] = zeros((size_t)rank * n);
    }
    for (int g = 0; g < s->kv_heads; g++) {
        ak[g] = augment(dh, d, wk + (size_t)g * dh * d, bk ? bk + (size_t)g * dh : NULL);
        rk[g] = zeros((size_t)rank * n);
    }
    if (s->rope) {
        int keep = rank / 2, half = dh / 2;
        int *kept = xmalloc((size_t)keep * sizeof *kept);
        qk_rope_pairs(s, keep, aq, ak, fit_corr, kept);
        for (int t = 0; t < keep; t++)
            for (int side = 0; side < 2; side++) {
                size_t to = (size_t)(t + side * keep) * n, from = (size_t)(kept[t] + side * half) * n;
                for (int j = 0; j < s->heads; j++) memcpy(rq[j] + to, aq[j] + from, (size_t)n * sizeof(double));
                for (int g = 0; g < s->kv_heads; g++) memcpy(rk[g] + to, ak[g] + from, (size_t)n * sizeof(double));
            }
        // Phase-averaged loss: the dropped pairs' E|q|^2 E|k|^2 / 2 on the calibration data.
        double *eq = zeros((size_t)half), *ek = zeros((size_t)half);
        bool *is_kept = xcalloc((size_t)half, sizeof *is_kept);
        for (int t = 0; t < keep; t++) is_kept[kept[t]] = true;
        for (int j = 0; j < s->heads; j++) {
            pair_energies(dh, n, aq[j], corr, eq);
            pair_energies(dh, n, ak[j / group], corr, ek);
            losses.loss[j] = losses.energy[j] = 0.0;
            for (int i = 0; i < half; i++) {
                double cost = scale2 * eq[i] * ek[i] / 2.0;
                losses.energy[j] += cost;
                if (!is_kept[i]) losses.loss[j] += cost;
            }
        }
        if (kept_pairs) memcpy(kept_pairs, kept, (size_t)keep * sizeof *kept);
        free(eq);
        free(ek);
        free(is_kept);
        free(kept);
    } else {
        for (int g = 0; g < s->kv_heads; g++)
            qk_group(dh, rank, n, group, (const double *const *)(aq + (size_t)g * group), ak[g], fit_corr,
                     rq + (size_t)g * group, rk[g]);
        for (int j = 0; j < s->heads; j++) {
            losses.loss[j] = qk_loss(dh, rank, n, aq[j], ak[j / group], rq[j], rk[j / group], corr, scale2);
            losses.energy[j] = qk_loss(dh, 0, n, aq[j], ak[j / group], NULL, NULL, corr, scale2);
        }
    }
    for (int j = 0; j < s->heads; j++)
        split_rows(rank, d, rq[j], query_scale, wq_out + (size_t)j * rank * d, bq && bq_out ? bq_out + (size_t)j * rank : NULL);
    for (int g = 0; g < s->kv_heads; g++)
        split_rows(rank, d, rk[g], 1.0, wk_out + (size_t)g * rank * d, bk && bk_out ? bk_out + (size_t)g * rank : NULL);
    for (int j = 0; j < s->heads; j++) {
        free(aq[j]);
        free(rq[j]);
    }
    for (int g = 0; g < s->kv_heads; g++) {
        free(ak[g]);
        free(rk[g]);
    }
    free((void *)aq);
    free((void *)ak);
    free((void *)rq);
    free((void *)rk);
    free(fit);
    return true;
}

// ---- OV ------------------------------------------------------------------------------

// Wo_j [d x dh] = columns j*dh.. of wo [d, heads*dh], as double.
static double *head_columns(int d, int heads, int dh, const float *wo, int j) {
    double *out = zeros((size_t)d * dh);
    for (int r = 0; r < d; r++)
        for (int c = 0; c < dh; c++) out[(size_t)r * dh + c] = wo[(size_t)r * heads * dh + (size_t)j * dh + c];
    return out;
}

bool lowrank_ov(lowrank_method method, const lowrank_shape *s, int rank, const float *wv, const float *bv,
                const float *wo, const double *head_corr, float *wv_out, float *bv_out, float *wo_out,
                lowrank_losses losses, char *why, size_t why_size) {
    int dh = s->head_dim, d = s->d, n = d + 1, group = s->heads / s->kv_heads, r = rank;
    if (!rank_ok(rank, dh, "OV rank", "the value head size d_h", why, why_size)) return false;
    size_t nn = (size_t)n * n;
    double *id = method == LOWRANK_A3 ? NULL : identity(n);
    for (int g = 0; g < s->kv_heads; g++) {
        double *av = augment(dh, d, wv + (size_t)g * dh * d, bv ? bv + (size_t)g * dh : NULL);
        double **wo_j = (double **)xmalloc((size_t)group * sizeof *wo_j), **p = (double **)xmalloc((size_t)group * sizeof *p);
        double *pfit = zeros((size_t)dh * dh), *ofit = zeros((size_t)dh * dh), *o = zeros((size_t)dh * dh);
        for (int i = 0; i < group; i++) {
            int j = g * group + i;
            wo_j[i] = head_columns(d, s->heads, dh, wo, j);
            p[i] = zeros((size_t)dh * dh);
            gram(dh, dh, n, av, head_corr + (size_t)j * nn, av, p[i]);
            lr_gemm(true, false, dh, dh, d, 1.0, wo_j[i], wo_j[i], 1.0, ofit);  // sum_j Wo_j^T Wo_j
            for (size_t e = 0; e < (size_t)dh * dh; e++) pfit[e] += p[i][e] / group;
        }
        if (id) gram(dh, dh, n, av, id, av, pfit);  // SVD baseline: Wv~ Wv~^T
        // Best rank r of the stacked [Wo_j] Wv~ C^1/2: with P = Wv~ C Wv~^T, the top-r
        // eigenvectors W_r of P^1/2 O P^1/2 (O = sum Wo_j^T Wo_j) give T = W_r^T P^-1/2.
        double *root = zeros((size_t)dh * dh), *inverse_root = zeros((size_t)dh * dh), *h = zeros((size_t)dh * dh),
               *values = zeros((size_t)dh), *vectors = zeros((size_t)dh * dh), *wr = zeros((size_t)dh * r),
               *t = zeros((size_t)r * dh), *rv = zeros((size_t)r * n);
        if (lr_psd_roots(dh, pfit, root, inverse_root) != 0) fatal("lowrank: dsyevd failed on the value Gram matrix");
        lr_gemm(false, false, dh, dh, dh, 1.0, root, ofit, 0.0, o);
        lr_gemm(false, false, dh, dh, dh, 1.0, o, root, 0.0, h);
        if (lr_symmetric_eigen(dh, h, values, vectors) != 0) fatal("lowrank: dsyevd failed on the OV core");
        for (int row = 0; row < dh; row++)
            for (int c = 0; c < r; c++) wr[(size_t)row * r + c] = vectors[(size_t)row * dh + c];
        lr_gemm(true, false, r, dh, dh, 1.0, wr, inverse_root, 0.0, t);
        lr_gemm(false, false, r, n, dh, 1.0, t, av, 0.0, rv);
        split_rows(r, d, rv, 1.0, wv_out + (size_t)g * r * d, bv && bv_out ? bv_out + (size_t)g * r : NULL);
        // Each head's Wo'_j = Wo_j P_j T^T (T P_j T^T)^+: least squares given Wv' (A3: its
        // own statistics; baseline: P = Wv~ Wv~^T, which makes it Wo_j P^1/2 W_r).
        double *tp = zeros((size_t)r * dh), *m = zeros((size_t)r * r), *x = zeros((size_t)r * dh),
               *rwo = zeros((size_t)d * r), *cross = zeros((size_t)r * dh), *rr = zeros((size_t)r * r),
               *vca = zeros((size_t)r * dh), *vcv = zeros((size_t)r * r);
        for (int i = 0; i < group; i++) {
            int j = g * group + i;
            const double *pj = id ? pfit : p[i];
            lr_gemm(false, false, r, dh, dh, 1.0, t, pj, 0.0, tp);
            lr_gemm(false, true, r, r, dh, 1.0, tp, t, 0.0, m);
            if (lr_psd_solve(r, dh, m, tp, x) != 0) fatal("lowrank: dsyevd failed on the OV refit");
            lr_gemm(false, true, d, r, dh, 1.0, wo_j[i], x, 0.0, rwo);
            for (int row = 0; row < d; row++)
                for (int c = 0; c < r; c++)
                    wo_out[(size_t)row * s->heads * r + (size_t)j * r + c] = (float)rwo[(size_t)row * r + c];
            // loss = tr(O_j P_j) - 2 tr((Wo'^T Wo_j)(Wv' C Wv~^T)) + tr((Wo'^T Wo')(Wv' C Wv'^T))
            const double *c = head_corr + (size_t)j * nn;
            lr_gemm(true, false, dh, dh, d, 1.0, wo_j[i], wo_j[i], 0.0, o);
            double energy = lr_trace_product(dh, dh, o, p[i]);
            gram(dh, r, n, av, c, rv, vca);  // Wv~ C Wv'^T [dh x r]
            gram(r, r, n, rv, c, rv, vcv);
            lr_gemm(true, false, r, dh, d, 1.0, rwo, wo_j[i], 0.0, cross);
            lr_gemm(true, false, r, r, d, 1.0, rwo, rwo, 0.0, rr);
            losses.energy[j] = energy;
            losses.loss[j] = energy - 2.0 * lr_trace_product(r, dh, cross, vca) + lr_trace_product(r, r, rr, vcv);
        }
        for (int i = 0; i < group; i++) {
            free(wo_j[i]);
            free(p[i]);
        }
        free((void *)wo_j);
        free((void *)p);
        free(av);
        free(pfit);
        free(ofit);
        free(o);
        free(root);
        free(inverse_root);
        free(h);
        free(values);
        free(vectors);
        free(wr);
        free(t);
        free(rv);
        free(tp);
        free(m);
        free(x);
        free(rwo);
        free(cross);
        free(rr);
        free(vca);
        free(vcv);
    }
    free(id);
    return true;
}

// ---- MLP -----------------------------------------------------------------------------

bool lowrank_mlp(lowrank_method method, int d, int m, int width, const float *gate, const float *up,
                 const float *down, const double *h, float *gate_out, float *up_out, float *down_out, int *kept,
                 lowrank_losses losses, char *why, size_t why_size) {
    if (!rank_ok(width, m, "MLP width", "the intermediate size m", why, why_size)) return false;
    int w = width;
    double *dn = zeros((size_t)d * m), *score = zeros((size_t)m);
    for (int r = 0; r < d; r++)
        for (int c = 0; c < m; c++) dn[(size_t)r * m + c] = down[(size_t)r * m + c];
    for (int c = 0; c < m; c++) {
        for (int r = 0; r < d; r++) score[c] += dn[(size_t)r * m + c] * dn[(size_t)r * m + c];
        if (method == LOWRANK_A3) score[c] *= h[(size_t)c * m + c];  // E[h_c^2] ||down[:, c]||^2
    }
    bool *taken = xcalloc((size_t)m, sizeof *taken);
    for (int t = 0; t < w; t++) {
        int best = -1;
        for (int c = 0; c < m; c++)
            if (!taken[c] && (best < 0 || score[c] > score[best])) best = c;
        taken[best] = true;
    }
    int *set = xmalloc((size_t)w * sizeof *set);
    for (int c = 0, t = 0; c < m; c++)
        if (taken[c]) set[t++] = c;
    double *hs = zeros((size_t)w * m), *hss = zeros((size_t)w * w), *y = zeros((size_t)w * d),
           *x = zeros((size_t)w * d);  // x = down'^T [w x d]
    for (int t = 0; t < w; t++) {
        memcpy(hs + (size_t)t * m, h + (size_t)set[t] * m, (size_t)m * sizeof(double));  // H[S, :]
        for (int u = 0; u < w; u++) hss[(size_t)t * w + u] = h[(size_t)set[t] * m + set[u]];
    }
    lr_gemm(false, true, w, d, m, 1.0, hs, dn, 0.0, y);  // H[S, :] down^T
    if (method == LOWRANK_A3) {
        if (lr_psd_solve(w, d, hss, y, x) != 0) fatal("lowrank: dsyevd failed on the MLP refit");
    } else {
        for (int t = 0; t < w; t++)
            for (int r = 0; r < d; r++) x[(size_t)t * d + r] = dn[(size_t)r * m + set[t]];
    }
    // loss = tr(down H down^T) - 2 tr(down' H[S,:] down^T) + tr(down' H[S,S] down'^T)
    double *dh_ = zeros((size_t)d * m), *xh = zeros((size_t)w * d);
    lr_gemm(false, false, d, m, m, 1.0, dn, h, 0.0, dh_);
    double energy = 0.0;
    for (size_t e = 0; e < (size_t)d * m; e++) energy += dh_[e] * dn[e];
    lr_gemm(false, false, w, d, w, 1.0, hss, x, 0.0, xh);
    double cross = 0.0, self = 0.0;
    for (size_t e = 0; e < (size_t)w * d; e++) {
        cross += x[e] * y[e];
        self += x[e] * xh[e];
    }
    losses.energy[0] = energy;
    losses.loss[0] = energy - 2.0 * cross + self;
    for (int t = 0; t < w; t++) {
        memcpy(gate_out + (size_t)t * d, gate + (size_t)set[t] * d, (size_t)d * sizeof(float));
        memcpy(up_out + (size_t)t * d, up + (size_t)set[t] * d, (size_t)d * sizeof(float));
        for (int r = 0; r < d; r++) down_out[(size_t)r * w + t] = (float)x[(size_t)t * d + r];
    }
    if (kept) memcpy(kept, set, (size_t)w * sizeof *set);
    free(dn);
    free(score);
    free(taken);
    free(set);
    free(hs);
    free(hss);
    free(y);
    free(x);
    free(dh_);
    free(xh);
    return true;
}
