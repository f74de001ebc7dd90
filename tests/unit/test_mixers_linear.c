// The linear-time mixers approx (Taylor softmax) and approx-diag (the study's recurrent
// form), DESIGN.md 5:
//  a. the op-level double references: the quadratic backwards against finite
//     differences, and the plain double recurrences (approx with the full, unsymmetrised
//     feature map) against the quadratic forms;
//  b. the fp32 ops: the chunked / scanned linear forms and the fp32 quadratic forms
//     against the double quadratic references, outputs and the gradients of q, k, v, at
//     L = 1, odd lengths and lengths around the chunk size, MHA and GQA, and the
//     materialised A;
//  c. the double reference model against finite differences, and the fp32 model against
//     it (uniform 1 layer; 2 layers hybrid:even; GQA, bias on/off): loss and every
//     gradient per tensor; the mixer's attention_matrix reproduces its own output;
//  d. parameter counts equal standard's (registered and analytic), FLOPs per token and
//     the cache are constant in the sequence length.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../reference/linear_attention_reference.h"
#include "../reference/model_reference.h"
#include "../testing.h"
#include "support/model_test_helpers.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "core/rng.h"
#include "mixers/mixer.h"
#include "model/model.h"
#include "ops/ops.h"

static const double DIAG_GUARD = 0.1;  // the default [attention] approx_diag_guard
static const double DIAG_EPS = 1e-6;   // the default [attention] approx_diag_eps

// ---- random data --------------------------------------------------------------------

static void fill_normal(double *x, size_t n, double sigma, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; i++) x[i] = sigma * rng_normal(seed, stream, i);
}

static float *to_float(const double *x, size_t n) {
    float *y = xcalloc(n ? n : 1, sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

// One op problem: q, k, v, d_out in double; sizes.
typedef struct {
    int batch, seq_len, heads, kv_heads, dh;
    size_t nq, nkv;
    double *q, *k, *v, *dout;
} problem;

// q, k ~ N(0, sigma^2) (sigma 1.5: scores of order 1, as RoPE'd projections produce);
// v, d_out ~ N(0, 1). Every value is rounded to fp32 so the fp32 ops and the double
// references see the same inputs. Zero-mean q and k make approx-diag's first-order sums
// U_i = sum_t u_it cancel on many rows: its guard is exercised, not avoided.
static problem make_problem(int batch, int seq_len, int heads, int kv_heads, int dh, uint64_t seed) {
    problem p = {batch, seq_len, heads, kv_heads, dh, 0, 0, NULL, NULL, NULL, NULL};
    p.nq = (size_t)batch * seq_len * heads * dh;
    p.nkv = (size_t)batch * seq_len * kv_heads * dh;
    p.q = xcalloc(p.nq, sizeof(double));
    p.k = xcalloc(p.nkv, sizeof(double));
    p.v = xcalloc(p.nkv, sizeof(double));
    p.dout = xcalloc(p.nq, sizeof(double));
    fill_normal(p.q, p.nq, 1.5, seed, 1);
    fill_normal(p.k, p.nkv, 1.5, seed, 2);
    fill_normal(p.v, p.nkv, 1.0, seed, 3);
    fill_normal(p.dout, p.nq, 1.0, seed, 4);
    double *all[4] = {p.q, p.k, p.v, p.dout};
    size_t sizes[4] = {p.nq, p.nkv, p.nkv, p.nq};
    for (int t = 0; t < 4; t++)
        for (size_t i = 0; i < sizes[t]; i++) all[t][i] = (float)all[t][i];
    return p;
}

static void free_problem(problem *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->dout);
}

static double scale_of(int dh) { return 1.0 / sqrt((double)dh); }

// Double quadratic forward / backward of either op (diag selects approx-diag).
static void ref_forward(bool diag, double *out, double *probs, const problem *p) {
    if (diag)
        ref_diag_attention_forward(out, probs, p->q, p->k, p->v, p->batch, p->seq_len, p->heads, p->kv_heads, p->dh,
                                   scale_of(p->dh), DIAG_GUARD, DIAG_EPS);
    else
        ref_taylor_attention_forward(out, probs, p->q, p->k, p->v, p->batch, p->seq_len, p->heads, p->kv_heads, p->dh,
                                     scale_of(p->dh));
}

static void ref_backward(bool diag, double *dq, double *dk, double *dv, const problem *p) {
    if (diag)
        ref_diag_attention_backward(dq, dk, dv, p->dout, p->q, p->k, p->v, p->batch, p->seq_len, p->heads,
                                    p->kv_heads, p->dh, scale_of(p->dh), DIAG_GUARD, DIAG_EPS);
    else
        ref_taylor_attention_backward(dq, dk, dv, p->dout, p->q, p->k, p->v, p->batch, p->seq_len, p->heads,
                                      p->kv_heads, p->dh, scale_of(p->dh));
}

// ---- a. the double references ---------------------------------------------------------

// loss = sum out . d_out; its gradient against fourth-order central differences.
static double ref_loss(bool diag, const problem *p, double *out) {
    ref_forward(diag, out, NULL, p);
    double sum = 0.0;
    for (size_t i = 0; i < p->nq; i++) sum += out[i] * p->dout[i];
    return sum;
}

static void check_reference_fd(bool diag, int batch, int seq_len, int heads, int kv_heads, int dh, uint64_t seed) {
    const char *name = diag ? "approx-diag" : "approx";
    problem p = make_problem(batch, seq_len, heads, kv_heads, dh, seed);
    double *dq = xcalloc(p.nq, sizeof(double)), *dk = xcalloc(p.nkv, sizeof(double));
    double *dv = xcalloc(p.nkv, sizeof(double)), *out = xcalloc(p.nq, sizeof(double));
    ref_backward(diag, dq, dk, dv, &p);
    double *tensors[3] = {p.q, p.k, p.v}, *grads[3] = {dq, dk, dv};
    size_t sizes[3] = {p.nq, p.nkv, p.nkv};
    const char *labels[3] = {"q", "k", "v"};
    const double h = 1e-3, steps[4] = {-2 * h, -h, h, 2 * h}, weights[4] = {1, -8, 8, -1};
    double worst = 0.0;
    const char *worst_label = "";
    for (int t = 0; t < 3; t++) {
        double *numeric = xcalloc(sizes[t], sizeof(double));
        for (size_t e = 0; e < sizes[t]; e++) {
            double saved = tensors[t][e], sum = 0.0;
            for (int s = 0; s < 4; s++) {
                tensors[t][e] = saved + steps[s];
                sum += weights[s] * ref_loss(diag, &p, out);
            }
            tensors[t][e] = saved;
            numeric[e] = sum / (12 * h);
        }
        double err = testing_relative_error_d(grads[t], numeric, sizes[t]);
        if (!(err <= worst)) {
            worst = err;
            worst_label = labels[t];
        }
        free(numeric);
    }
    char label[256];
    snprintf(label, sizeof label, "%s double quadratic backward vs finite differences (b=%d L=%d h=%d kv=%d dh=%d)",
             name, batch, seq_len, heads, kv_heads, dh);
    printf("# %s: worst %s %.3g\n", label, worst_label, worst);
    testing_report(worst < 1e-8, label, "d%s relative error %.3g >= 1e-8", worst_label, worst);
    free(dq);
    free(dk);
    free(dv);
    free(out);
    free_problem(&p);
}

static void check_reference_linear(bool diag, int batch, int seq_len, int heads, int kv_heads, int dh, uint64_t seed) {
    problem p = make_problem(batch, seq_len, heads, kv_heads, dh, seed);
    double *quadratic = xcalloc(p.nq, sizeof(double)), *linear = xcalloc(p.nq, sizeof(double));
    ref_forward(diag, quadratic, NULL, &p);
    if (diag)
        ref_diag_attention_linear(linear, p.q, p.k, p.v, batch, seq_len, heads, kv_heads, dh, scale_of(dh), DIAG_GUARD,
                                  DIAG_EPS);
    else
        ref_taylor_attention_linear(linear, p.q, p.k, p.v, batch, seq_len, heads, kv_heads, dh, scale_of(dh));
    double err = testing_relative_error_d(linear, quadratic, p.nq);
    char label[256];
    snprintf(label, sizeof label, "%s double recurrence equals the double quadratic form (L=%d h=%d kv=%d dh=%d)",
             diag ? "approx-diag" : "approx", seq_len, heads, kv_heads, dh);
    testing_report(err < 1e-12, label, "relative error %.3g >= 1e-12", err);
    free(quadratic);
    free(linear);
    free_problem(&p);
}

// ---- b. the fp32 ops against the double quadratic references ----------------------------

typedef struct {
    double out, dq, dk, dv;
} op_errors;

// ||a - b|| / max(||b||, floor): gradients that vanish (q, k at L = 1: A = 1) are
// compared against the problem's scale instead of their own rounding noise.
static double error_floor(const float *a, const double *b, size_t n, double floor) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        diff += d * d;
        ref += b[i] * b[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), floor);
}

static double worst_of(op_errors e) { return fmax(fmax(e.out, e.dq), fmax(e.dk, e.dv)); }

// The fp32 op (linear form unless quadratic) against the double quadratic reference.
static op_errors fp32_op_errors(bool diag, bool quadratic, const problem *p) {
    int B = p->batch, L = p->seq_len, H = p->heads, KV = p->kv_heads, dh = p->dh;
    float scale = (float)scale_of(dh), guard = (float)DIAG_GUARD, eps = (float)DIAG_EPS;
    float *q = to_float(p->q, p->nq), *k = to_float(p->k, p->nkv), *v = to_float(p->v, p->nkv);
    float *dout = to_float(p->dout, p->nq);
    float *out = xcalloc(p->nq, sizeof(float)), *den = xcalloc((size_t)B * H * L, sizeof(float));
    float *dq = xcalloc(p->nq, sizeof(float)), *dk = xcalloc(p->nkv, sizeof(float));
    float *dv = xcalloc(p->nkv, sizeof(float));
    // Backward accumulates: start from 1 and take it off again.
    for (size_t i = 0; i < p->nq; i++) dq[i] = 1.0f;
    for (size_t i = 0; i < p->nkv; i++) dk[i] = dv[i] = 1.0f;
    if (diag && quadratic) {
        diag_attention_quadratic_forward(out, q, k, v, B, L, H, KV, dh, scale, guard, eps);
        diag_attention_quadratic_backward(dq, dk, dv, dout, q, k, v, B, L, H, KV, dh, scale, guard, eps);
    } else if (diag) {
        diag_attention_forward(out, q, k, v, B, L, H, KV, dh, scale, guard, eps);
        diag_attention_backward(dq, dk, dv, dout, q, k, v, B, L, H, KV, dh, scale, guard, eps);
    } else if (quadratic) {
        taylor_attention_quadratic_forward(out, q, k, v, B, L, H, KV, dh, scale);
        taylor_attention_quadratic_backward(dq, dk, dv, dout, q, k, v, B, L, H, KV, dh, scale);
    } else {
        taylor_attention_forward(out, den, q, k, v, B, L, H, KV, dh, scale);
        taylor_attention_backward(dq, dk, dv, dout, out, den, q, k, v, B, L, H, KV, dh, scale);
    }
    for (size_t i = 0; i < p->nq; i++) dq[i] -= 1.0f;
    for (size_t i = 0; i < p->nkv; i++) dk[i] -= 1.0f, dv[i] -= 1.0f;

    double *ref_out = xcalloc(p->nq, sizeof(double)), *ref_dq = xcalloc(p->nq, sizeof(double));
    double *ref_dk = xcalloc(p->nkv, sizeof(double)), *ref_dv = xcalloc(p->nkv, sizeof(double));
    ref_forward(diag, ref_out, NULL, p);
    ref_backward(diag, ref_dq, ref_dk, ref_dv, p);
    double floor = 1e-3 * sqrt((double)p->nq);  // 1e-3 x ||d_out||
    op_errors e = {error_floor(out, ref_out, p->nq, floor), error_floor(dq, ref_dq, p->nq, floor),
                   error_floor(dk, ref_dk, p->nkv, floor), error_floor(dv, ref_dv, p->nkv, floor)};
    free(q), free(k), free(v), free(dout), free(out), free(den), free(dq), free(dk), free(dv);
    free(ref_out), free(ref_dq), free(ref_dk), free(ref_dv);
    return e;
}

static void check_fp32_ops(bool diag, const int *lengths, int n_lengths, int batch, int heads, int kv_heads, int dh,
                           uint64_t seed) {
    const char *name = diag ? "approx-diag" : "approx";
    for (int quadratic = 0; quadratic < 2; quadratic++) {
        bool ok = true;
        char why[512] = "";
        for (int i = 0; i < n_lengths; i++) {
            problem p = make_problem(batch, lengths[i], heads, kv_heads, dh, seed + (uint64_t)i);
            op_errors e = fp32_op_errors(diag, quadratic, &p);
            printf("# %s fp32 %s L=%d h=%d kv=%d dh=%d: out %.2g dq %.2g dk %.2g dv %.2g\n", name,
                   quadratic ? "quadratic" : "linear", lengths[i], heads, kv_heads, dh, e.out, e.dq, e.dk, e.dv);
            if (!(worst_of(e) < 1e-4) && ok) {
                ok = false;
                snprintf(why, sizeof why, "L=%d: out %.3g dq %.3g dk %.3g dv %.3g (limit 1e-4)", lengths[i], e.out,
                         e.dq, e.dk, e.dv);
            }
            free_problem(&p);
        }
        char label[256];
        snprintf(label, sizeof label, "%s fp32 %s form = double quadratic reference, out/dq/dk/dv (h=%d kv=%d dh=%d)",
                 name, quadratic ? "quadratic" : "linear", heads, kv_heads, dh);
        testing_report(ok, label, "%s", why);
    }
}

// The fp32 materialised A of one sequence against the double reference's.
static void check_probabilities(bool diag, int seq_len, int heads, int kv_heads, int dh, uint64_t seed) {
    problem p = make_problem(1, seq_len, heads, kv_heads, dh, seed);
    size_t np = (size_t)heads * seq_len * seq_len;
    float *q = to_float(p.q, p.nq), *k = to_float(p.k, p.nkv), *probs = xcalloc(np, sizeof(float));
    double *ref_probs = xcalloc(np, sizeof(double)), *out = xcalloc(p.nq, sizeof(double));
    float scale = (float)scale_of(dh);
    if (diag)
        diag_attention_quadratic_probabilities(probs, q, k, seq_len, heads, kv_heads, dh, scale, (float)DIAG_GUARD,
                                               (float)DIAG_EPS);
    else
        taylor_attention_quadratic_probabilities(probs, q, k, seq_len, heads, kv_heads, dh, scale);
    ref_forward(diag, out, ref_probs, &p);
    double err = testing_relative_error_f(probs, ref_probs, np);
    // Row sums: 1 for approx; for approx-diag one per term, each normalised on its own:
    // 1 + U^2 / (U^2 + delta^2) + W / (W + eps) (the first term's weights sum to U r).
    double worst_sum = 0.0;
    for (int r = 0; r < heads * seq_len; r++) {
        double sum = 0.0, expected = 1.0;
        for (int t = 0; t < seq_len; t++) sum += probs[(size_t)r * seq_len + t];
        if (diag) {
            int h = r / seq_len, i = r % seq_len;
            const double *qi = p.q + ((size_t)i * heads + h) * dh;
            double U = 0.0, W = 0.0, q_norm = 0.0, k_norms = 0.0;
            for (int e = 0; e < dh; e++) q_norm += qi[e] * qi[e];
            for (int t = 0; t <= i; t++) {
                const double *kt = p.k + ((size_t)t * kv_heads + h / (heads / kv_heads)) * dh;
                for (int e = 0; e < dh; e++) {
                    U += qi[e] * kt[e] / sqrt((double)dh);
                    W += qi[e] * qi[e] * kt[e] * kt[e] / (2.0 * dh);
                    k_norms += kt[e] * kt[e];
                }
            }
            double delta2 = DIAG_GUARD * DIAG_GUARD * (i + 1) * q_norm / dh * k_norms;
            expected = 1.0 + U * U / (U * U + delta2) + W / (W + DIAG_EPS);
        }
        worst_sum = fmax(worst_sum, fabs(sum - expected));
    }
    char label[256];
    snprintf(label, sizeof label, "%s materialised A = double reference, rows sum to %s (L=%d)",
             diag ? "approx-diag" : "approx", diag ? "1 + U^2/(U^2+delta^2) + W/(W+eps)" : "1", seq_len);
    testing_report(err < 1e-4 && worst_sum < 1e-4, label, "relative error %.3g, worst row-sum deviation %.3g", err,
                   worst_sum);
    free(q), free(k), free(probs), free(ref_probs), free(out);
    free_problem(&p);
}

// approx-diag with the first-order sum exactly 0 (r = 0 there, the guard fully active): q_0 is
// orthogonal to k_0, and u_10 = -u_11. Outputs and gradients finite, fp32 = double.
static void check_diag_guard(void) {
    enum { L = 3, DH = 4 };
    problem p = make_problem(1, L, 1, 1, DH, 700);
    static const double q[L][DH] = {{1, 0, 0.5, 0}, {1, 1, 0, 0}, {0.5, -1, 1, 2}};
    static const double k[L][DH] = {{0, 1, 0, 0.25}, {0, -1, 0, 0}, {1, 1, -1, 0.5}};
    for (int t = 0; t < L; t++)
        for (int e = 0; e < DH; e++) p.q[t * DH + e] = q[t][e], p.k[t * DH + e] = k[t][e];
    op_errors lin = fp32_op_errors(true, false, &p), quad = fp32_op_errors(true, true, &p);
    double *out = xcalloc(p.nq, sizeof(double));
    ref_forward(true, out, NULL, &p);
    bool finite = true;
    for (size_t i = 0; i < p.nq; i++) finite &= isfinite(out[i]);
    printf("# approx-diag guard: linear out %.2g dq %.2g dk %.2g dv %.2g; quadratic out %.2g dq %.2g dk %.2g dv %.2g\n",
           lin.out, lin.dq, lin.dk, lin.dv, quad.out, quad.dq, quad.dk, quad.dv);
    testing_report(finite && worst_of(lin) < 1e-4 && worst_of(quad) < 1e-4,
                   "approx-diag guard (first-order denominator exactly 0): finite, fp32 = double",
                   "finite %d, linear worst %.3g, quadratic worst %.3g", finite, worst_of(lin), worst_of(quad));
    free(out);
    free_problem(&p);
}

// ---- c. the models ----------------------------------------------------------------------

// Layer l's saved tensor by the mixers' layout (q, k, v, av first in both).
enum { SAVED_Q, SAVED_K, SAVED_V, SAVED_AV };

// The fp32 model vs the double reference; then, for every non-standard layer, A V from
// attention_matrix against the layer's own saved output (the recording path).
static void compare_with_reference(const char *label, const decon_config *c, int batch, int seq_len, uint64_t seed) {
    model m;
    test_model_setup(&m, c, label, batch, seq_len, seed);
    test_compare_model_with_reference(&m, label, batch, seq_len, seed);

    // The recording path: A of each sequence times its V equals the saved attention output.
    mixer_context context = model_mixer_context(&m);
    int heads = c->num_attention_heads, kv = c->num_key_value_heads ? c->num_key_value_heads : heads;
    int dh = c->hidden_size / heads, group = heads / kv;
    float *probs = xcalloc((size_t)heads * seq_len * seq_len, sizeof(float));
    double worst_av = 0.0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (m.plan[l]->is_standard) continue;
        const mixer_layer *layer = &m.mixers[l];
        for (int b = 0; b < batch; b++) {
            m.plan[l]->attention_matrix(&m.mixers[l], &context, b, probs);
            size_t n = (size_t)seq_len * heads * dh;
            double *expected = xcalloc(n, sizeof(double));
            const float *v = layer->saved[SAVED_V] + (size_t)b * seq_len * kv * dh;
            const float *av = layer->saved[SAVED_AV] + (size_t)b * seq_len * heads * dh;
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < seq_len; i++)
                    for (int t = 0; t <= i; t++) {
                        double a = probs[((size_t)h * seq_len + i) * seq_len + t];
                        for (int e = 0; e < dh; e++)
                            expected[((size_t)i * heads + h) * dh + e] += a * v[((size_t)t * kv + h / group) * dh + e];
                    }
            // the saved A V (float) against A times V in double
            worst_av = fmax(worst_av, testing_relative_error_f(av, expected, n));
            free(expected);
        }
    }
    char name[256];
    snprintf(name, sizeof name, "attention_matrix times V = the layer's output (%s)", label);
    testing_report(worst_av < 1e-4, name, "relative error %.3g", worst_av);
    free(probs);
    model_free(&m);
}

// ---- d. counts ----------------------------------------------------------------------------

static void check_counts(void) {
    static const char *const variants[] = {"approx", "approx-diag"};
    const mixer_kind *standard = mixer_standard();
    struct {
        int d, heads, kv;
        bool bias;
    } shapes[] = {{256, 4, 4, true}, {512, 8, 2, true}, {896, 14, 2, false}, {64, 4, 1, true}};
    for (int v = 0; v < 2; v++) {
        const mixer_kind *kind = mixer_find(variants[v]);
        bool ok = kind != NULL;
        char why[256] = "not registered";
        for (size_t s = 0; ok && s < sizeof shapes / sizeof shapes[0]; s++) {
            decon_config c;
            test_model_config(&c, variants[v], "uniform", shapes[s].d, 2, shapes[s].heads, shapes[s].kv, 64, 50, true,
                        shapes[s].bias, 100.0);
            int64_t want = standard->param_count(&c), analytic = kind->param_count(&c);
            int64_t registered = test_registered_mixer_params(&c, variants[v]);
            int64_t registered_std = test_registered_mixer_params(&c, "standard");
            if (analytic != want || registered != want || registered_std != want) {
                ok = false;
                snprintf(why, sizeof why, "d=%d h=%d kv=%d: analytic %lld, registered %lld, standard %lld/%lld",
                         shapes[s].d, shapes[s].heads, shapes[s].kv, (long long)analytic, (long long)registered,
                         (long long)want, (long long)registered_std);
            }
        }
        char label[128];
        snprintf(label, sizeof label, "%s parameter count equals standard's (analytic and registered)", variants[v]);
        testing_report(ok, label, "%s", why);

        // FLOPs per token tend to a constant (linear time); the cache does not depend on L.
        if (!kind) continue;
        decon_config c;
        test_model_config(&c, variants[v], "uniform", 256, 1, 4, 4, 64, 50, true, true, 100.0);
        double f1 = kind->forward_flops_per_token(&c, 8192), f2 = kind->forward_flops_per_token(&c, 65536);
        double s1 = standard->forward_flops_per_token(&c, 8192), s2 = standard->forward_flops_per_token(&c, 65536);
        snprintf(label, sizeof label, "%s FLOPs per token constant in L (standard's grow)", variants[v]);
        testing_report(fabs(f2 / f1 - 1.0) < 0.01 && s2 / s1 > 4.0, label, "%s %.4g -> %.4g, standard %.4g -> %.4g",
                       variants[v], f1, f2, s1, s2);
        snprintf(label, sizeof label, "%s: no per-token cache, a recurrent state (%lld floats, > 0)", variants[v],
                 (long long)(kind->state_floats ? kind->state_floats(&c) : 0));
        testing_report(kind->cache_floats_per_token(&c) == 0 && kind->state_floats && kind->state_floats(&c) > 0,
                       label, "cache %lld per token", (long long)kind->cache_floats_per_token(&c));
    }
}

int main(void) {
    // a. double references (small: finite differences cost 4 forwards per element)
    for (int diag = 0; diag < 2; diag++) {
        check_reference_fd(diag, 2, 6, 4, 2, 6, 11);
        check_reference_fd(diag, 1, 5, 2, 1, 4, 12);
        check_reference_linear(diag, 2, 37, 4, 2, 6, 13);
        check_reference_linear(diag, 1, 9, 2, 2, 8, 14);
    }

    // b. fp32 ops: L = 1, odd lengths, and lengths around the chunk size (64).
    static const int lengths[] = {1, 2, 7, 63, 64, 65, 129, 200};
    int n_lengths = (int)(sizeof lengths / sizeof lengths[0]);
    for (int diag = 0; diag < 2; diag++) {
        check_fp32_ops(diag, lengths, n_lengths, 2, 4, 2, 16, 100);  // GQA
        check_fp32_ops(diag, lengths + 3, 3, 1, 3, 3, 8, 200);       // MHA, odd head count
        static const int long_lengths[] = {130};
        check_fp32_ops(diag, long_lengths, 1, 1, 2, 1, 64, 300);     // d_h = 64 (2145 features), MQA
        check_probabilities(diag, 70, 4, 2, 16, 400);
    }
    check_diag_guard();

    // c. models: reference FD, then fp32 vs reference
    decon_config c;
    test_model_config(&c, "approx", "uniform", 16, 1, 4, 2, 24, 11, true, true, 100.0);
    test_check_reference_gradient("approx, 1 layer, GQA kv=2, bias", &c, 2, 5, 1e-3, 0.0, 501);
    test_model_config(&c, "approx-diag", "uniform", 16, 1, 4, 2, 24, 11, false, true, 100.0);
    // shared_qk_bias 3: every query and key head's bias gets 3 on the lowest rotary
    // frequency pair (elements dh/2-1 and dh-1, which RoPE barely turns over a few
    // positions), so q.k has a positive mean: approx-diag's first-order sums then stay out
    // of its guard's region, where the reciprocal's higher derivatives (of order 1/delta^k)
    // make fourth-order differences with h = 1e-3 inexact (2.6e-8 against the 1e-8 limit).
    // This check is about the model's chain rule; the op-level checks above cover the
    // guard's region on zero-mean q and k.
    test_check_reference_gradient("approx-diag, 1 layer, GQA kv=2, bias, untied", &c, 2, 5, 1e-3, 3.0, 502);

    static const char *const variants[] = {"approx", "approx-diag"};
    for (int v = 0; v < 2; v++) {
        char label[128];
        test_model_config(&c, variants[v], "uniform", 32, 1, 4, 4, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "%s uniform 1 layer MHA bias, 2x70", variants[v]);
        compare_with_reference(label, &c, 2, 70, 601);
        test_model_config(&c, variants[v], "hybrid:even", 32, 2, 4, 2, 48, 41, false, false, 100.0);
        snprintf(label, sizeof label, "%s hybrid:even 2 layers GQA kv=2 no bias, 3x19", variants[v]);
        compare_with_reference(label, &c, 3, 19, 602);
        test_model_config(&c, variants[v], "hybrid:even", 64, 2, 2, 1, 48, 41, true, true, 100.0);
        snprintf(label, sizeof label, "%s hybrid:even 2 layers MQA d_h=32, 1x130", variants[v]);
        compare_with_reference(label, &c, 1, 130, 603);
    }

    // d. counts
    check_counts();
    return testing_exit_code();
}
