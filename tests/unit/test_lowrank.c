// A3 and the SVD baseline (analysis/lowrank_a3.h) against double-precision references
// written here (a Jacobi eigensolver, direct scores / head outputs / MLP outputs over
// the calibration tokens, least squares by Gaussian elimination), and the calibration
// statistics of a real model (analysis/lowrank_calibration.h), one rank against
// `mpirun -np 2 <self> --two-ranks FILE` over the same windows.
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../child_process.h"
#include "../testing.h"
#include "analysis/lowrank_a3.h"
#include "analysis/lowrank_calibration.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"

enum { D = 12, N = D + 1, DH = 6, HEADS = 4, M = 20, TOKENS = 300, POSITIONS = 64 };
static const double THETA = 10000.0;

// ---- synthetic layer and calibration data --------------------------------------------

typedef struct {
    int kv;
    float wq[HEADS * DH * D], bq[HEADS * DH], wk[HEADS * DH * D], bk[HEADS * DH], wv[HEADS * DH * D],
        bv[HEADS * DH], wo[D * HEADS * DH], gate[M * D], up[M * D], down[D * M];
    double x[TOKENS][N];               // x~ = [x; 1]
    double z[HEADS][TOKENS][N];        // z~ = A_j x~ (rows of A sum to 1)
    double h[TOKENS][M];               // SwiGLU activations
    double corr[N * N], head_corr[HEADS * N * N], mlp_corr[M * M];
} layer_data;

static double normal(uint64_t stream, uint64_t i) { return rng_normal(2024, stream, i); }

static void fill(float *w, size_t n, uint64_t stream, double scale) {
    for (size_t i = 0; i < n; i++) w[i] = (float)(scale * normal(stream, i));
}

static void make_layer(layer_data *L, int kv) {
    memset(L, 0, sizeof *L);
    L->kv = kv;
    fill(L->wq, sizeof L->wq / sizeof(float), 1, 0.4);
    fill(L->bq, (size_t)HEADS * DH, 2, 0.3);
    fill(L->wk, (size_t)kv * DH * D, 3, 0.4);
    fill(L->bk, (size_t)kv * DH, 4, 0.3);
    fill(L->wv, (size_t)kv * DH * D, 5, 0.4);
    fill(L->bv, (size_t)kv * DH, 6, 0.3);
    fill(L->wo, sizeof L->wo / sizeof(float), 7, 0.4);
    fill(L->gate, (size_t)M * D, 8, 0.5);
    fill(L->up, (size_t)M * D, 9, 0.5);
    fill(L->down, (size_t)D * M, 10, 0.5);
    // Anisotropic inputs: x = g Mix with a fixed mixing matrix, so C is far from I.
    double mix[D][D];
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) mix[a][b] = normal(11, (uint64_t)a * D + (uint64_t)b) * (a == b ? 2.0 : 0.6) / (1 + a);
    for (int t = 0; t < TOKENS; t++) {
        for (int b = 0; b < D; b++) {
            double v = 0.2;
            for (int a = 0; a < D; a++) v += normal(12, (uint64_t)t * D + (uint64_t)a) * mix[a][b];
            L->x[t][b] = v;
        }
        L->x[t][D] = 1.0;
    }
    for (int j = 0; j < HEADS; j++)  // causal, random row-stochastic weights per head
        for (int t = 0; t < TOKENS; t++) {
            double total = 0.0, w[TOKENS];
            for (int u = 0; u <= t; u++) total += w[u] = exp(2.0 * normal(13 + (uint64_t)j, (uint64_t)t * TOKENS + (uint64_t)u));
            for (int c = 0; c < N; c++) {
                double v = 0.0;
                for (int u = 0; u <= t; u++) v += w[u] / total * L->x[u][c];
                L->z[j][t][c] = v;
            }
        }
    for (int t = 0; t < TOKENS; t++)
        for (int i = 0; i < M; i++) {
            double g = 0.0, u = 0.0;
            for (int c = 0; c < D; c++) {
                g += L->gate[i * D + c] * L->x[t][c];
                u += L->up[i * D + c] * L->x[t][c];
            }
            L->h[t][i] = g / (1.0 + exp(-g)) * u;
        }
    for (int t = 0; t < TOKENS; t++) {
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                L->corr[a * N + b] += L->x[t][a] * L->x[t][b] / TOKENS;
                for (int j = 0; j < HEADS; j++) L->head_corr[(j * N + a) * N + b] += L->z[j][t][a] * L->z[j][t][b] / TOKENS;
            }
        for (int a = 0; a < M; a++)
            for (int b = 0; b < M; b++) L->mlp_corr[a * M + b] += L->h[t][a] * L->h[t][b] / TOKENS;
    }
}

// ---- double references ----------------------------------------------------------------

// Cyclic Jacobi: eigenvalues of the symmetric n x n `a` (destroyed), descending, with
// eigenvectors as columns of v.
static void jacobi(int n, double *a, double *values, double *v) {
    for (int i = 0; i < n * n; i++) v[i] = i % (n + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        if (off < 1e-30) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                if (fabs(a[p * n + q]) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * a[p * n + q]);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) {  // columns p, q
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {  // rows p, q
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    int order[64];
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            if (a[order[k] * n + order[k]] > a[order[i] * n + order[i]]) {
                int t = order[i];
                order[i] = order[k];
                order[k] = t;
            }
    double *copy = malloc((size_t)n * n * sizeof *copy);
    memcpy(copy, v, (size_t)n * n * sizeof *copy);
    for (int i = 0; i < n; i++) {
        values[i] = a[order[i] * n + order[i]];
        for (int k = 0; k < n; k++) v[k * n + i] = copy[k * n + order[i]];
    }
    free(copy);
}

// C^(power) for symmetric positive definite C (N x N).
static void matrix_power(const double *c, double power, double *out) {
    double a[N * N], values[N], v[N * N];
    memcpy(a, c, sizeof a);
    jacobi(N, a, values, v);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < N; k++) {
            double sum = 0.0;
            for (int e = 0; e < N; e++) sum += v[i * N + e] * pow(values[e], power) * v[k * N + e];
            out[i * N + k] = sum;
        }
}

// Row `row` of a weight block with its bias, augmented: [w | b].
static double aug(const float *w, const float *b, int row, int col) { return col < D ? w[row * D + col] : (b ? b[row] : 0.0); }

// ---- QK ------------------------------------------------------------------------------

typedef struct {
    float wq[HEADS * DH * D], bq[HEADS * DH], wk[HEADS * DH * D], bk[HEADS * DH];
    double loss[HEADS], energy[HEADS];
    int kept[DH / 2];
} qk_result;

static bool run_qk(const layer_data *L, lowrank_method method, bool rope, int rank, qk_result *r, char *why) {
    lowrank_shape s = {D, HEADS, L->kv, DH, rope};
    lowrank_losses losses = {r->loss, r->energy};
    return lowrank_qk(method, &s, rank, L->wq, L->bq, L->wk, L->bk, L->corr, 1.0, r->wq, r->bq, r->wk, r->bk,
                      r->kept, losses, why, 256);
}

// Query / key vector of head j (rows `rows` of the [w|b] block) for token t.
static void project(const float *w, const float *b, int head, int rows, const double *x, double *out) {
    for (int i = 0; i < rows; i++) {
        double v = 0.0;
        for (int c = 0; c < N; c++) v += aug(w + (size_t)head * rows * D, b ? b + (size_t)head * rows : NULL, i, c) * x[c];
        out[i] = v;
    }
}

// Rotates (rotate-half pairs) a vector of `pairs` pairs whose pair t has original index
// index[t] (NULL: t) by position p.
static void rotate(double *v, int pairs, const int *index, int p) {
    for (int t = 0; t < pairs; t++) {
        int i = index ? index[t] : t;
        double angle = p * pow(THETA, -2.0 * i / DH), a = v[t], b = v[t + pairs];
        v[t] = a * cos(angle) - b * sin(angle);
        v[t + pairs] = b * cos(angle) + a * sin(angle);
    }
}

// Max relative error of the reduced scores (all query/key token pairs of a subset) against
// the original, with RoPE (positions t % POSITIONS) when rope; kept: pairs at their
// original frequency. With `partial`, the reference is the sum over the kept pairs only.
static double qk_score_error(const layer_data *L, const qk_result *r, int rank, bool rope, bool partial) {
    int group = HEADS / L->kv;
    double worst = 0.0, ref_norm = 0.0, diff_norm = 0.0;
    for (int j = 0; j < HEADS; j++)
        for (int a = 0; a < TOKENS; a += 7)
            for (int b = 0; b < TOKENS; b += 5) {
                double q[DH], k[DH], q2[DH], k2[DH];
                project(L->wq, L->bq, j, DH, L->x[a], q);
                project(L->wk, L->bk, j / group, DH, L->x[b], k);
                project(r->wq, r->bq, j, rank, L->x[a], q2);
                project(r->wk, r->bk, j / group, rank, L->x[b], k2);
                double ref = 0.0, got = 0.0;
                if (rope) {
                    rotate(q, DH / 2, NULL, a % POSITIONS);
                    rotate(k, DH / 2, NULL, b % POSITIONS);
                    rotate(q2, rank / 2, r->kept, a % POSITIONS);
                    rotate(k2, rank / 2, r->kept, b % POSITIONS);
                    bool in[DH / 2] = {false};
                    for (int t = 0; t < rank / 2; t++) in[r->kept[t]] = true;
                    for (int i = 0; i < DH / 2; i++)
                        if (!partial || in[i]) ref += q[i] * k[i] + q[i + DH / 2] * k[i + DH / 2];
                } else {
                    for (int i = 0; i < DH; i++) ref += q[i] * k[i];
                }
                for (int i = 0; i < rank; i++) got += q2[i] * k2[i];
                ref_norm += ref * ref;
                diff_norm += (got - ref) * (got - ref);
            }
    worst = sqrt(diff_norm / ref_norm);
    return worst;
}

static double sum(const double *v, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    return s;
}

// Reference A3-QK (no RoPE): per kv group the stacked S_j = C^1/2 Wq~_j^T Wk~ C^1/2; the
// best rank r leaves sum_{i>r} sigma_i^2 (Jacobi on S^T S), scaled by s^2 = 1/d_h.
static double qk_reference_tail(const layer_data *L, int g, int rank, double *product_out, int head_out) {
    int group = HEADS / L->kv;
    double half_c[N * N], inv_half[N * N], sts[N * N] = {0}, s_j[HEADS][N * N];
    matrix_power(L->corr, 0.5, half_c);
    matrix_power(L->corr, -0.5, inv_half);
    for (int jj = 0; jj < group; jj++) {
        int j = g * group + jj;
        double prod[N * N], tmp[N * N];
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double v = 0.0;
                for (int i = 0; i < DH; i++)
                    v += aug(L->wq + (size_t)j * DH * D, L->bq + (size_t)j * DH, i, a) * aug(L->wk + (size_t)g * DH * D, L->bk + (size_t)g * DH, i, b);
                prod[a * N + b] = v;
            }
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double v = 0.0;
                for (int e = 0; e < N; e++) v += half_c[a * N + e] * prod[e * N + b];
                tmp[a * N + b] = v;
            }
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double v = 0.0;
                for (int e = 0; e < N; e++) v += tmp[a * N + e] * half_c[e * N + b];
                s_j[jj][a * N + b] = v;
            }
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++)
                for (int e = 0; e < N; e++) sts[a * N + b] += s_j[jj][e * N + a] * s_j[jj][e * N + b];
    }
    double values[N], v[N * N];
    jacobi(N, sts, values, v);
    double tail = 0.0;
    for (int i = rank; i < N; i++) tail += fmax(values[i], 0.0);
    if (product_out) {  // C^-1/2 S_j V_r V_r^T C^-1/2 for head head_out
        double proj[N * N], t1[N * N], t2[N * N];
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double p = 0.0;
                for (int i = 0; i < rank; i++) p += v[a * N + i] * v[b * N + i];
                proj[a * N + b] = p;
            }
        const double *sj = s_j[head_out - g * group];
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double x1 = 0.0;
                for (int e = 0; e < N; e++) x1 += sj[a * N + e] * proj[e * N + b];
                t1[a * N + b] = x1;
            }
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double x1 = 0.0;
                for (int e = 0; e < N; e++) x1 += inv_half[a * N + e] * t1[e * N + b];
                t2[a * N + b] = x1;
            }
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double x1 = 0.0;
                for (int e = 0; e < N; e++) x1 += t2[a * N + e] * inv_half[e * N + b];
                product_out[a * N + b] = x1;
            }
    }
    return tail / DH;
}

static void test_qk(const layer_data *L, const char *label) {
    char name[200], why[256];
    int group = HEADS / L->kv;
    qk_result *a3 = malloc(sizeof *a3), *svd = malloc(sizeof *svd);
    for (int rope = 0; rope <= 1; rope++) {
        const char *kind = rope ? "rope" : "plain";
        double previous = INFINITY;
        bool below = true, monotone = true, reference = true, product = true;
        double worst_gap = 0.0, worst_product = 0.0;
        for (int rank = rope ? 2 : 1; rank <= DH; rank += rope ? 2 : 1) {
            if (!run_qk(L, LOWRANK_A3, rope, rank, a3, why) || !run_qk(L, LOWRANK_SVD, rope, rank, svd, why)) {
                testing_report(0, "qk run", "%s", why);
                return;
            }
            double la = sum(a3->loss, HEADS), ls = sum(svd->loss, HEADS), energy = sum(a3->energy, HEADS);
            below &= la <= ls * (1 + 1e-9) + 1e-12 * energy;
            monotone &= la <= previous * (1 + 1e-9) + 1e-12 * energy;
            previous = la;
            if (!rope) {
                for (int g = 0; g < L->kv; g++) {
                    double ref_product[N * N], got = 0.0;
                    double tail = qk_reference_tail(L, g, rank, ref_product, g * group);
                    for (int jj = 0; jj < group; jj++) got += a3->loss[g * group + jj];
                    worst_gap = fmax(worst_gap, fabs(got - tail) / energy);
                    // The library's product Wq'_j^T Wk' (from its float weights) for head g*group.
                    double diff = 0.0, ref = 0.0;
                    for (int x1 = 0; x1 < N; x1++)
                        for (int x2 = 0; x2 < N; x2++) {
                            double p = 0.0;
                            for (int i = 0; i < rank; i++)
                                p += aug(a3->wq + (size_t)g * group * rank * D, a3->bq + (size_t)g * group * rank, i, x1) *
                                     aug(a3->wk + (size_t)g * rank * D, a3->bk + (size_t)g * rank, i, x2);
                            diff += (p - ref_product[x1 * N + x2]) * (p - ref_product[x1 * N + x2]);
                            ref += ref_product[x1 * N + x2] * ref_product[x1 * N + x2];
                        }
                    worst_product = fmax(worst_product, sqrt(diff / ref));
                }
                reference &= worst_gap < 1e-9;
                product &= worst_product < 2e-4;
            }
            if (rank == DH) {
                double error_a3 = qk_score_error(L, a3, rank, rope, false), error_svd = qk_score_error(L, svd, rank, rope, false);
                snprintf(name, sizeof name, "qk %s %s: full rank reproduces the scores (a3 %.2g, svd %.2g)", kind, label,
                         error_a3, error_svd);
                testing_report(error_a3 < 1e-5 && error_svd < 1e-5 && la < 1e-9 * energy, name, "loss %.3g of %.3g", la,
                               energy);
            }
            if (rope && rank == DH / 2 + (DH / 2) % 2) {
                double error = qk_score_error(L, a3, rank, true, true);
                snprintf(name, sizeof name,
                         "qk rope %s: rank %d keeps pairs at their original frequencies (rotated scores = kept pairs' "
                         "sum, error %.2g)", label, rank, error);
                testing_report(error < 1e-5, name, "error %.3g", error);
            }
        }
        snprintf(name, sizeof name, "qk %s %s: A3 loss <= SVD loss at every rank", kind, label);
        testing_report(below, name, "A3 above SVD");
        snprintf(name, sizeof name, "qk %s %s: A3 loss non-increasing in rank", kind, label);
        testing_report(monotone, name, "not monotone");
        if (!rope) {
            snprintf(name, sizeof name, "qk plain %s: loss = Jacobi reference tail (gap %.2g), product = reference (%.2g)",
                     label, worst_gap, worst_product);
            testing_report(reference && product, name, "gap %.3g, product error %.3g", worst_gap, worst_product);
        }
    }
    free(a3);
    free(svd);
}

// RoPE: the phase-averaged loss = the dropped pairs' rotated scores averaged over 8
// equally spaced relative angles (each pair's own), over every query/key token pair;
// and the kept pairs are the largest sum_j E|q_ji|^2 E|k_gi|^2.
static void test_rope_loss(const layer_data *L) {
    char why[256];
    int group = HEADS / L->kv, rank = 2, half = DH / 2;
    qk_result *r = malloc(sizeof *r);
    if (!run_qk(L, LOWRANK_A3, true, rank, r, why)) {
        testing_report(0, "qk rope loss", "%s", why);
        free(r);
        return;
    }
    double direct = 0.0, importance[DH / 2] = {0};
    static double q[HEADS][TOKENS][DH], k[HEADS][TOKENS][DH];
    for (int j = 0; j < HEADS; j++)
        for (int t = 0; t < TOKENS; t++) {
            project(L->wq, L->bq, j, DH, L->x[t], q[j][t]);
            project(L->wk, L->bk, j / group, DH, L->x[t], k[j][t]);
        }
    for (int j = 0; j < HEADS; j++) {
        double eq[DH / 2] = {0}, ek[DH / 2] = {0};
        for (int t = 0; t < TOKENS; t++)
            for (int i = 0; i < half; i++) {
                eq[i] += (q[j][t][i] * q[j][t][i] + q[j][t][i + half] * q[j][t][i + half]) / TOKENS;
                ek[i] += (k[j][t][i] * k[j][t][i] + k[j][t][i + half] * k[j][t][i + half]) / TOKENS;
            }
        for (int i = 0; i < half; i++) importance[i] += eq[i] * ek[i];
        for (int i = 0; i < half; i++) {
            if (i == r->kept[0]) continue;
            double acc = 0.0;
            for (int a = 0; a < TOKENS; a++)
                for (int b = 0; b < TOKENS; b++)
                    for (int p = 0; p < 8; p++) {
                        double phi = 2.0 * M_PI * p / 8.0, c = cos(phi), s = sin(phi);
                        double k1 = k[j][b][i] * c - k[j][b][i + half] * s, k2 = k[j][b][i + half] * c + k[j][b][i] * s;
                        double score = q[j][a][i] * k1 + q[j][a][i + half] * k2;
                        acc += score * score;
                    }
            direct += acc / (8.0 * TOKENS * TOKENS) / DH;
        }
    }
    int best = 0;
    for (int i = 1; i < half; i++)
        if (importance[i] > importance[best]) best = i;
    double got = sum(r->loss, HEADS);
    testing_report(fabs(got - direct) < 1e-9 * direct && r->kept[0] == best,
                   "qk rope: phase-averaged loss = direct rotated scores over 8 angles; kept pair = largest E|q|^2 E|k|^2",
                   "library %.12g vs direct %.12g, kept %d vs %d", got, direct, r->kept[0], best);
    free(r);
}

// ---- OV ------------------------------------------------------------------------------

typedef struct {
    float wv[HEADS * DH * D], bv[HEADS * DH], wo[D * HEADS * DH];
    double loss[HEADS], energy[HEADS];
} ov_result;

static bool run_ov(const layer_data *L, lowrank_method method, int rank, ov_result *r, char *why) {
    lowrank_shape s = {D, HEADS, L->kv, DH, true};
    lowrank_losses losses = {r->loss, r->energy};
    return lowrank_ov(method, &s, rank, L->wv, L->bv, L->wo, L->head_corr, r->wv, r->bv, r->wo, losses, why, 256);
}

// Head j's output Wo_j Wv~ z~ for every token, relative error of the reduced one.
static double ov_output_error(const layer_data *L, const ov_result *r, int rank) {
    int group = HEADS / L->kv;
    double diff = 0.0, ref = 0.0;
    for (int j = 0; j < HEADS; j++)
        for (int t = 0; t < TOKENS; t++) {
            double v[DH], v2[DH];
            project(L->wv, L->bv, j / group, DH, L->z[j][t], v);
            project(r->wv, r->bv, j / group, rank, L->z[j][t], v2);
            for (int o = 0; o < D; o++) {
                double a = 0.0, b = 0.0;
                for (int i = 0; i < DH; i++) a += L->wo[o * HEADS * DH + j * DH + i] * v[i];
                for (int i = 0; i < rank; i++) b += r->wo[o * HEADS * rank + j * rank + i] * v2[i];
                diff += (a - b) * (a - b);
                ref += a * a;
            }
        }
    return sqrt(diff / ref);
}

// Reference A3-OV for one query head per kv head: sum_{i>r} sigma_i^2 of Wo_j Wv~ C_j^1/2.
static double ov_reference_tail(const layer_data *L, int j, int rank) {
    double half_c[N * N], mj[D * N], mtm[N * N] = {0}, values[N], v[N * N];
    matrix_power(L->head_corr + (size_t)j * N * N, 0.5, half_c);
    double prod[D * N];
    for (int o = 0; o < D; o++)
        for (int c = 0; c < N; c++) {
            double s = 0.0;
            for (int i = 0; i < DH; i++) s += L->wo[o * HEADS * DH + j * DH + i] * aug(L->wv + (size_t)j * DH * D, L->bv + (size_t)j * DH, i, c);
            prod[o * N + c] = s;
        }
    for (int o = 0; o < D; o++)
        for (int c = 0; c < N; c++) {
            double s = 0.0;
            for (int e = 0; e < N; e++) s += prod[o * N + e] * half_c[e * N + c];
            mj[o * N + c] = s;
        }
    for (int a = 0; a < N; a++)
        for (int b = 0; b < N; b++)
            for (int o = 0; o < D; o++) mtm[a * N + b] += mj[o * N + a] * mj[o * N + b];
    jacobi(N, mtm, values, v);
    double tail = 0.0;
    for (int i = rank; i < N; i++) tail += fmax(values[i], 0.0);
    return tail;
}

static void test_ov(const layer_data *L, const char *label) {
    char name[200], why[256];
    ov_result *a3 = malloc(sizeof *a3), *svd = malloc(sizeof *svd);
    double previous = INFINITY, worst_gap = 0.0;
    bool below = true, monotone = true;
    for (int rank = 1; rank <= DH; rank++) {
        if (!run_ov(L, LOWRANK_A3, rank, a3, why) || !run_ov(L, LOWRANK_SVD, rank, svd, why)) {
            testing_report(0, "ov run", "%s", why);
            return;
        }
        double la = sum(a3->loss, HEADS), ls = sum(svd->loss, HEADS), energy = sum(a3->energy, HEADS);
        below &= la <= ls * (1 + 1e-9) + 1e-12 * energy;
        monotone &= la <= previous * (1 + 1e-9) + 1e-12 * energy;
        previous = la;
        if (L->kv == HEADS)
            for (int j = 0; j < HEADS; j++)
                worst_gap = fmax(worst_gap, fabs(a3->loss[j] - ov_reference_tail(L, j, rank)) / energy);
        if (rank == DH) {
            double ea = ov_output_error(L, a3, rank), es = ov_output_error(L, svd, rank);
            snprintf(name, sizeof name, "ov %s: full rank reproduces every head's output (a3 %.2g, svd %.2g)", label, ea, es);
            testing_report(ea < 1e-5 && es < 1e-5 && la < 1e-9 * energy, name, "loss %.3g of %.3g", la, energy);
        }
        if (rank == 2) {  // the reported loss is the mean squared head-output error on the data
            double direct = 0.0;
            double err = ov_output_error(L, a3, rank), ref = 0.0;
            for (int j = 0; j < HEADS; j++) ref += a3->energy[j];
            direct = err * err * ref;
            snprintf(name, sizeof name, "ov %s: reported loss = mean squared head-output error over the tokens", label);
            testing_report(fabs(direct - la) < 1e-4 * la, name, "%.10g vs %.10g", la, direct);
        }
    }
    snprintf(name, sizeof name, "ov %s: A3 loss <= SVD loss at every rank", label);
    testing_report(below, name, "A3 above SVD");
    snprintf(name, sizeof name, "ov %s: A3 loss non-increasing in rank", label);
    testing_report(monotone, name, "not monotone");
    if (L->kv == HEADS) {
        snprintf(name, sizeof name, "ov %s: loss = Jacobi reference tail of Wo_j Wv C_j^1/2 (gap %.2g)", label, worst_gap);
        testing_report(worst_gap < 1e-9, name, "gap %.3g", worst_gap);
    }
    free(a3);
    free(svd);
}

// ---- MLP -----------------------------------------------------------------------------

// Solves the n x n system a x = b (k right-hand sides) by Gaussian elimination with pivoting.
static void gauss(int n, int k, double *a, double *b) {
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r * n + c]) > fabs(a[p * n + c])) p = r;
        for (int e = 0; e < n; e++) {
            double t = a[c * n + e];
            a[c * n + e] = a[p * n + e];
            a[p * n + e] = t;
        }
        for (int e = 0; e < k; e++) {
            double t = b[c * k + e];
            b[c * k + e] = b[p * k + e];
            b[p * k + e] = t;
        }
        for (int r = 0; r < n; r++) {
            if (r == c) continue;
            double f = a[r * n + c] / a[c * n + c];
            for (int e = 0; e < n; e++) a[r * n + e] -= f * a[c * n + e];
            for (int e = 0; e < k; e++) b[r * k + e] -= f * b[c * k + e];
        }
    }
    for (int r = 0; r < n; r++)
        for (int e = 0; e < k; e++) b[r * k + e] /= a[r * n + r];
}

static void test_mlp(const layer_data *L) {
    char why[256];
    float gate[M * D], up[M * D], down[D * M];
    int kept[M];
    double loss_a3, energy, loss_svd, energy_svd, previous = INFINITY, worst_down = 0.0, worst_loss = 0.0;
    bool below = true, monotone = true, selection = true;
    for (int w = 1; w <= M; w++) {
        lowrank_losses la = {&loss_a3, &energy}, ls = {&loss_svd, &energy_svd};
        if (!lowrank_mlp(LOWRANK_SVD, D, M, w, L->gate, L->up, L->down, L->mlp_corr, gate, up, down, NULL, ls, why, 256) ||
            !lowrank_mlp(LOWRANK_A3, D, M, w, L->gate, L->up, L->down, L->mlp_corr, gate, up, down, kept, la, why, 256)) {
            testing_report(0, "mlp run", "%s", why);
            return;
        }
        below &= loss_a3 <= loss_svd * (1 + 1e-9) + 1e-12 * energy;
        monotone &= loss_a3 <= previous * (1 + 1e-9) + 1e-12 * energy;
        previous = loss_a3;
        // Reference: the kept set is the w largest E[h_i^2] ||down_i||^2 (checked by count),
        // down' = least squares on the tokens, loss = the direct mean squared output error.
        double score[M];
        for (int i = 0; i < M; i++) {
            double n2 = 0.0;
            for (int o = 0; o < D; o++) n2 += (double)L->down[o * M + i] * L->down[o * M + i];
            score[i] = L->mlp_corr[i * M + i] * n2;
        }
        for (int t = 0; t < w; t++) {
            int larger = 0;
            for (int i = 0; i < M; i++) larger += score[i] > score[kept[t]];
            selection &= larger < w;
        }
        double a[M * M], b[M * D];
        for (int s1 = 0; s1 < w; s1++) {
            for (int s2 = 0; s2 < w; s2++) {
                double v = 0.0;
                for (int t = 0; t < TOKENS; t++) v += L->h[t][kept[s1]] * L->h[t][kept[s2]];
                a[s1 * w + s2] = v;
            }
            for (int o = 0; o < D; o++) {
                double v = 0.0;
                for (int t = 0; t < TOKENS; t++) {
                    double y = 0.0;
                    for (int i = 0; i < M; i++) y += L->down[o * M + i] * L->h[t][i];
                    v += L->h[t][kept[s1]] * y;
                }
                b[s1 * D + o] = v;
            }
        }
        gauss(w, D, a, b);
        double diff = 0.0, ref = 0.0, direct = 0.0;
        for (int s1 = 0; s1 < w; s1++)
            for (int o = 0; o < D; o++) {
                diff += (down[o * w + s1] - b[s1 * D + o]) * (down[o * w + s1] - b[s1 * D + o]);
                ref += b[s1 * D + o] * b[s1 * D + o];
            }
        for (int t = 0; t < TOKENS; t++)
            for (int o = 0; o < D; o++) {
                double y = 0.0, y2 = 0.0;
                for (int i = 0; i < M; i++) y += L->down[o * M + i] * L->h[t][i];
                for (int s1 = 0; s1 < w; s1++) y2 += (double)down[o * w + s1] * L->h[t][kept[s1]];
                direct += (y - y2) * (y - y2) / TOKENS;
            }
        worst_down = fmax(worst_down, sqrt(diff / ref));
        worst_loss = fmax(worst_loss, fabs(direct - loss_a3) / energy);
        if (w == M) {
            testing_report(loss_a3 < 1e-9 * energy && direct < 1e-10 * energy,
                           "mlp: full width reproduces the MLP output", "loss %.3g, direct %.3g of %.3g", loss_a3,
                           direct, energy);
        }
    }
    testing_report(below, "mlp: A3 (CUR + least-squares down) loss <= baseline loss at every width", "A3 above baseline");
    testing_report(monotone, "mlp: A3 loss non-increasing in width", "not monotone");
    char name[200];
    snprintf(name, sizeof name,
             "mlp: kept neurons = largest E[h^2]||down||^2, down' = least squares on the tokens (%.2g), loss = "
             "direct error (%.2g)", worst_down, worst_loss);
    testing_report(selection && worst_down < 1e-5 && worst_loss < 1e-6, name, "selection %d", selection);
}

// ---- bad input -----------------------------------------------------------------------

static void test_bad_input(const layer_data *L) {
    char why[256];
    qk_result *q = malloc(sizeof *q);
    ov_result *o = malloc(sizeof *o);
    float gate[M * D], up[M * D], down[D * M];
    double loss, energy;
    lowrank_losses one = {&loss, &energy};
    struct {
        const char *name, *expect;
        bool ok;
    } cases[5];
    why[0] = '\0';
    cases[0].ok = run_qk(L, LOWRANK_A3, false, DH + 1, q, why);
    cases[0].name = "bad input: QK rank above d_h is refused";
    char c0[256];
    snprintf(c0, sizeof c0, "%s", why);
    cases[1].ok = run_qk(L, LOWRANK_A3, false, 0, q, why);
    char c1[256];
    snprintf(c1, sizeof c1, "%s", why);
    cases[2].ok = run_ov(L, LOWRANK_SVD, -3, o, why);
    char c2[256];
    snprintf(c2, sizeof c2, "%s", why);
    cases[3].ok = lowrank_mlp(LOWRANK_A3, D, M, M + 1, L->gate, L->up, L->down, L->mlp_corr, gate, up, down, NULL, one,
                              why, sizeof why);
    char c3[256];
    snprintf(c3, sizeof c3, "%s", why);
    cases[4].ok = run_qk(L, LOWRANK_A3, true, 3, q, why);
    char c4[256];
    snprintf(c4, sizeof c4, "%s", why);
    const char *lines[5] = {c0, c1, c2, c3, c4};
    const char *names[5] = {"bad input: QK rank 7 > d_h 6 refused with one line",
                            "bad input: QK rank 0 refused with one line", "bad input: OV rank -3 refused with one line",
                            "bad input: MLP width 21 > m 20 refused with one line",
                            "bad input: odd QK rank with RoPE refused with one line"};
    const char *numbers[5] = {"7", "0", "-3", "21", "3"};
    for (int i = 0; i < 5; i++) {
        bool ok = !cases[i].ok && strstr(lines[i], numbers[i]) && !strchr(lines[i], '\n') && strlen(lines[i]) > 20;
        testing_report(ok, names[i], "returned %d, line \"%s\"", cases[i].ok, lines[i]);
    }
    free(q);
    free(o);
}

// ---- calibration statistics of a real model -------------------------------------------

enum { LM = 16, WINDOWS = 4, VOCAB = 40 };

static void model_config(decon_config *c) {
    config_defaults(c);
    const char *settings[] = {"model.hidden_size=16", "model.intermediate_size=24", "model.num_hidden_layers=2",
                              "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.vocab_size=40",
                              "model.rope_theta=10000", "train.sequence_length=16", "train.micro_batch_size=2",
                              "train.global_batch_size=2", "attention.variant=standard", "model.attention_bias=true"};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++) config_set(c, settings[i], "test");
    config_validate(c, "test");
}

static int window_token(int w, int t) { return (int)(rng_mix(5, (uint64_t)w, (uint64_t)t) % VOCAB); }

// Statistics of windows [first, first + count) (one forward each, batch 1), reduced over comm.
static void collect(lowrank_calibration *s, model *m, int first, int count, MPI_Comm comm) {
    lowrank_calibration_init(s, m);
    int tokens[LM];
    for (int w = first; w < first + count; w++) {
        for (int t = 0; t < LM; t++) tokens[t] = window_token(w, t);
        lowrank_calibration_accumulate(s, m, tokens, 1, LM);
    }
    lowrank_calibration_finish(s, comm);
}

static void build_model(model *m) {
    decon_config c;
    model_config(&c);
    model_build(m, &c, "test");
    model_allocate(m, 1, LM);
    model_initialize(m, 3);
    // Non-zero biases so the augmented statistics matter.
    for (int i = 0; i < m->registry.count; i++)
        if (strstr(m->registry.items[i].name, ".b"))
            for (size_t e = 0; e < m->registry.items[i].local_count; e++)
                m->params[m->registry.items[i].offset + e] = (float)(0.1 * normal(99, (uint64_t)e));
}

static size_t stats_values(const lowrank_calibration *s, double **out) {
    size_t nn = (size_t)(s->d + 1) * (s->d + 1), mm = (size_t)s->intermediate * s->intermediate, total = 0;
    for (int l = 0; l < s->layers; l++) total += nn + nn * s->heads + mm;
    double *v = malloc(total * sizeof *v);
    size_t at = 0;
    for (int l = 0; l < s->layers; l++) {
        memcpy(v + at, s->input_corr[l], nn * sizeof *v);
        at += nn;
        memcpy(v + at, s->head_corr[l], nn * s->heads * sizeof *v);
        at += nn * s->heads;
        memcpy(v + at, s->mlp_corr[l], mm * sizeof *v);
        at += mm;
    }
    *out = v;
    return total;
}

static int two_ranks_child(const char *path) {
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    model m;
    build_model(&m);
    lowrank_calibration s;
    collect(&s, &m, rank * (WINDOWS / world), WINDOWS / world, MPI_COMM_WORLD);
    if (rank == 0) {
        double *v;
        size_t n = stats_values(&s, &v);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(&s.tokens, sizeof(double), 1, f) != 1 || fwrite(v, sizeof *v, n, f) != n) return 1;
        fclose(f);
        free(v);
    }
    lowrank_calibration_free(&s);
    model_free(&m);
    return 0;
}

static void test_calibration(const char *self) {
    model m;
    build_model(&m);
    // Head statistics against attention computed here from the saved (rotated) q and k.
    lowrank_calibration one;
    collect(&one, &m, 0, 1, MPI_COMM_SELF);
    int d = 16, n = d + 1, dh = 4, heads = 4, group = 2, layer = 1;
    const float *q = m.mixers[layer].saved[0], *k = m.mixers[layer].saved[1], *x = m.blocks[layer].mixer_input;
    double worst = 0.0;
    for (int j = 0; j < heads; j++) {
        double corr[17 * 17] = {0};
        for (int t = 0; t < LM; t++) {
            double score[LM], total = 0.0, top = -INFINITY, z[17] = {0};
            for (int u = 0; u <= t; u++) {
                double s = 0.0;
                for (int i = 0; i < dh; i++) s += (double)q[(t * heads + j) * dh + i] * k[(u * heads / group + j / group) * dh + i];
                score[u] = s / sqrt(dh);
                top = fmax(top, score[u]);
            }
            for (int u = 0; u <= t; u++) total += score[u] = exp(score[u] - top);
            for (int u = 0; u <= t; u++) {
                for (int c = 0; c < d; c++) z[c] += score[u] / total * x[u * d + c];
                z[d] += score[u] / total;
            }
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++) corr[a * n + b] += z[a] * z[b] / LM;
        }
        double diff = 0.0, ref = 0.0;
        for (int e = 0; e < n * n; e++) {
            diff += (corr[e] - one.head_corr[layer][(size_t)j * n * n + e]) * (corr[e] - one.head_corr[layer][(size_t)j * n * n + e]);
            ref += corr[e] * corr[e];
        }
        worst = fmax(worst, sqrt(diff / ref));
    }
    bool ones = one.input_corr[0][(size_t)n * n - 1] == 1.0 && fabs(one.head_corr[1][(size_t)n * n - 1] - 1.0) < 1e-5;
    char name[200];
    snprintf(name, sizeof name, "calibration: per-head E[(A x~)(A x~)^T] = attention recomputed from saved q, k (%.2g)", worst);
    testing_report(worst < 1e-5 && ones && one.collected[0] && one.collected[1], name, "error %.3g, ones %d", worst, ones);
    lowrank_calibration_free(&one);

    // Statistics over 2 ranks (2 windows each) = one rank's over the same 4 windows.
    lowrank_calibration all;
    collect(&all, &m, 0, WINDOWS, MPI_COMM_SELF);
    double *v;
    size_t count = stats_values(&all, &v);
    char path[] = "/tmp/decon_test_lowrank_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    child_result r = child_run((const char *[]){"mpirun", "--oversubscribe", "-np", "2", self, "--two-ranks", path, NULL},
                               CHILD_STDOUT);
    bool ran = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
    double *w = malloc(count * sizeof *w), tokens = 0.0, gap = INFINITY;
    FILE *f = fopen(path, "rb");
    if (ran && f && fread(&tokens, sizeof tokens, 1, f) == 1 && fread(w, sizeof *w, count, f) == count) {
        gap = 0.0;
        double scale = 0.0;
        for (size_t e = 0; e < count; e++) scale = fmax(scale, fabs(v[e]));
        for (size_t e = 0; e < count; e++) gap = fmax(gap, fabs(w[e] - v[e]) / scale);
    }
    if (f) fclose(f);
    unlink(path);
    snprintf(name, sizeof name, "calibration: mpirun -np 2 (2 windows each) = one rank over the same 4 windows (%.2g)", gap);
    testing_report(ran && tokens == all.tokens && gap < 1e-12, name, "%s, tokens %g vs %g, gap %.3g",
                   ran ? "ran" : "mpirun -np 2 failed", tokens, all.tokens, gap);
    free(v);
    free(w);
    lowrank_calibration_free(&all);
    model_free(&m);
}

int main(int argc, char **argv) {
    child_keep_environment();  // before MPI_Init adds to it
    MPI_Init(&argc, &argv);
    if (argc == 3 && strcmp(argv[1], "--two-ranks") == 0) {
        int code = two_ranks_child(argv[2]);
        MPI_Finalize();
        return code;
    }
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    self[length > 0 ? length : 0] = '\0';
    layer_data *gqa = malloc(sizeof *gqa), *mha = malloc(sizeof *mha);
    make_layer(mha, HEADS);
    make_layer(gqa, 2);
    test_qk(mha, "mha");
    test_qk(gqa, "gqa");
    test_rope_loss(gqa);
    test_ov(mha, "mha");
    test_ov(gqa, "gqa");
    test_mlp(mha);
    test_bad_input(gqa);
    test_calibration(self);
    free(gqa);
    free(mha);
    MPI_Finalize();
    return testing_exit_code();
}
