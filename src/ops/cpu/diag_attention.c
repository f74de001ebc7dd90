// The `approx-diag` mixer's attention (DESIGN.md 5; the study's recurrent form, its
// eqs. 4.14-4.17): the Taylor terms of exp(scale q.k) up to second order, the second one
// without its cross terms, each normalised on its own.
//
//   u_it = scale q_i.k_t = a_i.k_t,                 a_i = scale q_i
//   w_it = scale^2/2 sum_m q_im^2 k_tm^2 = b_i.c_t,  b_i = scale^2/2 q_i^2, c_t = k_t^2
//   out_i = V_i / (i+1) + (a_i^T P_i) r_i + b_i^T R_i / (b_i.C_i + eps)
//   with the running sums (t <= i)  V = sum v_t, K = sum k_t, C = sum c_t,
//   P = sum k_t v_t^T [d, d], R = sum c_t v_t^T [d, d], and the first-order reciprocal
//   r_i = x / (x^2 + delta^2),  x = a_i.K_i,  delta^2 = guard^2 (i+1) |a_i|^2 sum_m C_im
// (docs/design.md, "approx-diag"). r is 1/x where the sum x = sum_t u_it does not cancel
// and goes smoothly through 0 where it does: (i+1) |a|^2 sum C bounds x^2 (Cauchy-Schwarz),
// so the first-order term stays below max|v| / (2 guard) and fp32 rounding in x moves the
// output by at most ~ulp / guard^2. b_i.C_i >= 0, so + eps suffices in the second term.
//
// Backward. With do_i given, D = x^2 + delta^2, E = b_i.C_i + eps, rho = do_i.(a_i^T P_i):
//   dn1_i = do_i r_i,   dd1_i = rho (delta^2 - x^2) / D^2   (d out / d x)
//   ds_i = -rho x / D^2 guard^2 (i+1)                       (d out / d (|a|^2 sum C), over it)
//   dn2_i = do_i / E,   dd2_i = -(do_i.(b_i^T R_i)) / E^2
//   dq_i += scale (P_i dn1_i + K_i dd1_i) + scale^2 q_i * (R_i dn2_i + C_i dd2_i + 2 ds_i sum C_i)
// and with the reverse running sums (i >= t) Pg = sum a_i dn1_i^T, kg = sum dd1_i a_i,
// Rg = sum b_i dn2_i^T, cg = sum dd2_i b_i, sg = sum ds_i |a_i|^2, Vg = sum do_i / (i+1):
//   dv_t += Vg + Pg^T k_t + Rg^T c_t
//   dk_t += Pg v_t + kg + 2 k_t * (Rg v_t + cg + sg)
// Pass 1 scans forwards (dq; it keeps dn1, dd1, dn2, dd2 and ds |a|^2 of every position of
// the task), pass 2 backwards (dk, dv). O(d^2) per token and head: linear in seq_len.
//
// Threads: one task per (sequence, kv head); it handles every query head of the group,
// so the rows it writes are its own.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/errors.h"
#include "ops/cpu/blocking.h"
#include "ops/cpu/workspace.h"
#include "ops/ops.h"

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim, group;
    size_t q_ld, kv_ld;
    float scale, guard, eps;
} diag_shape;

static diag_shape make_shape(int batch, int seq_len, int heads, int kv_heads, int head_dim, float scale, float guard,
                             float eps) {
    diag_shape sh = {batch, seq_len, heads, kv_heads, head_dim, heads / kv_heads,
                     (size_t)heads * head_dim, (size_t)kv_heads * head_dim, scale, guard, eps};
    return sh;
}

// The first-order reciprocal r = x / (x^2 + delta^2) at position i (0-based) and what the
// backward needs of it: d r / d x and d r / d(|a|^2 sum C). In double: x^2 and delta^2
// of small queries would underflow in fp32 (r itself is scale-free times 1/|a|).
typedef struct {
    float r, dr_dx, dr_dnorms;
} first_order;

static first_order first_order_reciprocal(float x, float a_norm2, float c_sum, int i, float guard) {
    double g2n = (double)guard * guard * (double)(i + 1);
    double x2 = (double)x * x, delta2 = g2n * (double)a_norm2 * (double)c_sum, D = x2 + delta2;
    first_order f = {0.0f, 0.0f, 0.0f};
    if (D > 0.0) {  // D = 0 only when a = 0 or every k_t = 0: then a^T P = 0 too
        f.r = (float)((double)x / D);
        f.dr_dx = (float)((delta2 - x2) / (D * D));
        f.dr_dnorms = (float)(-(double)x / (D * D) * g2n);
    }
    return f;
}

// ----------------------------------------------------------------------------------
// running sums

typedef struct {
    float *P, *R;          // [d, d]
    float *K, *C, *V;      // [d]
    float *a, *b, *n1, *n2, *t1, *t2;  // [d] per-head temporaries
    float c_sum;           // sum_m C_m (the reverse pass: sg)
} diag_state;

static size_t state_floats(int d) { return 2 * round_to_line((size_t)d * d) + 9 * round_to_line((size_t)d); }

static diag_state state_at(float *base, int d) {
    size_t dd = round_to_line((size_t)d * d), dl = round_to_line((size_t)d);
    diag_state s;
    s.P = base;
    s.R = s.P + dd;
    s.K = s.R + dd;
    s.C = s.K + dl;
    s.V = s.C + dl;
    s.a = s.V + dl;
    s.b = s.a + dl;
    s.n1 = s.b + dl;
    s.n2 = s.n1 + dl;
    s.t1 = s.n2 + dl;
    s.t2 = s.t1 + dl;
    return s;
}

static void state_clear(diag_state *s, int d) {
    memset(s->P, 0, sizeof(float) * state_floats(d));
    s->c_sum = 0.0f;
}

// Adds position t (k_t, v_t) to the running sums.
static void state_add(diag_state *s, const float *restrict kt, const float *restrict vt, int d) {
    float c_new = 0.0f;
    for (int m = 0; m < d; m++) {
        float km = kt[m], cm = km * km;
        float *Pm = s->P + (size_t)m * d, *Rm = s->R + (size_t)m * d;
        #pragma omp simd
        for (int e = 0; e < d; e++) {
            Pm[e] = fmaf(km, vt[e], Pm[e]);
            Rm[e] = fmaf(cm, vt[e], Rm[e]);
        }
        s->K[m] += km;
        s->C[m] += cm;
        c_new += cm;
    }
    s->c_sum += c_new;
    for (int e = 0; e < d; e++) s->V[e] += vt[e];
}

// For query row qi: s->a, s->b, s->n1 = a^T P, s->n2 = b^T R; returns the two raw
// denominators a.K and b.C, and |a|^2.
static void state_query(diag_state *s, const float *restrict qi, const diag_shape *sh, float *den1, float *den2,
                        float *a_norm2) {
    int d = sh->head_dim;
    float half_s2 = 0.5f * sh->scale * sh->scale, d1 = 0.0f, d2 = 0.0f, aa = 0.0f;
    for (int m = 0; m < d; m++) {
        s->a[m] = sh->scale * qi[m];
        s->b[m] = half_s2 * qi[m] * qi[m];
        d1 += s->a[m] * s->K[m];
        d2 += s->b[m] * s->C[m];
        aa += s->a[m] * s->a[m];
    }
    *a_norm2 = aa;
    memset(s->n1, 0, sizeof(float) * (size_t)d);
    memset(s->n2, 0, sizeof(float) * (size_t)d);
    for (int m = 0; m < d; m++) {
        float am = s->a[m], bm = s->b[m];
        const float *Pm = s->P + (size_t)m * d, *Rm = s->R + (size_t)m * d;
        #pragma omp simd
        for (int e = 0; e < d; e++) {
            s->n1[e] = fmaf(am, Pm[e], s->n1[e]);
            s->n2[e] = fmaf(bm, Rm[e], s->n2[e]);
        }
    }
    *den1 = d1;
    *den2 = d2;
}

// ----------------------------------------------------------------------------------
// forward

static void forward_task(float *out, const float *q, const float *k, const float *v, const diag_shape *sh, int b,
                         int kvh, diag_state s) {
    int L = sh->seq_len, d = sh->head_dim;
    state_clear(&s, d);
    for (int t = 0; t < L; t++) {
        size_t kv_off = ((size_t)(b * L + t) * sh->kv_heads + kvh) * d;
        state_add(&s, k + kv_off, v + kv_off, d);
        float inv_count = 1.0f / (float)(t + 1);
        for (int h = kvh * sh->group; h < (kvh + 1) * sh->group; h++) {
            size_t q_off = ((size_t)(b * L + t) * sh->heads + h) * d;
            float den1, den2, a_norm2;
            state_query(&s, q + q_off, sh, &den1, &den2, &a_norm2);
            float inv1 = first_order_reciprocal(den1, a_norm2, s.c_sum, t, sh->guard).r, inv2 = 1.0f / (den2 + sh->eps);
            float *o = out + q_off;
            for (int e = 0; e < d; e++) o[e] = s.V[e] * inv_count + s.n1[e] * inv1 + s.n2[e] * inv2;
        }
    }
}

void diag_attention_forward(float *out, const float *q, const float *k, const float *v, int batch, int seq_len,
                            int heads, int kv_heads, int head_dim, float scale, float guard, float eps) {
    diag_shape sh = make_shape(batch, seq_len, heads, kv_heads, head_dim, scale, guard, eps);
    size_t per_thread = state_floats(head_dim);
    float *buffer = ops_workspace_take(per_thread);
    int tasks = batch * kv_heads;
    #pragma omp parallel
    {
        diag_state s = state_at(buffer + per_thread * (size_t)omp_get_thread_num(), head_dim);
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++) forward_task(out, q, k, v, &sh, task / kv_heads, task % kv_heads, s);
    }
}

// ----------------------------------------------------------------------------------
// backward

// Per position and query head of the task, pass 1 keeps [dn1 (d), dn2 (d), dd1, dd2, ds |a|^2].
static size_t saved_stride(int d) { return 2 * (size_t)d + 3; }

static void backward_task(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q, const float *k,
                          const float *v, const diag_shape *sh, int b, int kvh, diag_state s, float *kept) {
    int L = sh->seq_len, d = sh->head_dim, G = sh->group;
    size_t stride = saved_stride(d);
    float scale = sh->scale, s2 = scale * scale;
    // Pass 1, forwards: dq, and the gradients of each ratio's numerator and denominator.
    state_clear(&s, d);
    for (int t = 0; t < L; t++) {
        size_t kv_off = ((size_t)(b * L + t) * sh->kv_heads + kvh) * d;
        state_add(&s, k + kv_off, v + kv_off, d);
        for (int g = 0; g < G; g++) {
            int h = kvh * G + g;
            size_t q_off = ((size_t)(b * L + t) * sh->heads + h) * d;
            const float *qi = q + q_off, *doi = d_out + q_off;
            float den1, den2, a_norm2;
            state_query(&s, qi, sh, &den1, &den2, &a_norm2);
            first_order f = first_order_reciprocal(den1, a_norm2, s.c_sum, t, sh->guard);
            float inv1 = f.r, inv2 = 1.0f / (den2 + sh->eps), dot1 = 0.0f, dot2 = 0.0f;
            float *keep = kept + ((size_t)g * L + t) * stride, *dn1 = keep, *dn2 = keep + d;
            for (int e = 0; e < d; e++) {
                dn1[e] = doi[e] * inv1;
                dn2[e] = doi[e] * inv2;
                dot1 += doi[e] * s.n1[e];
                dot2 += doi[e] * s.n2[e];
            }
            float dd1 = dot1 * f.dr_dx, ds = dot1 * f.dr_dnorms, dd2 = -dot2 * inv2 * inv2;
            keep[(size_t)2 * d] = dd1;
            keep[(size_t)2 * d + 1] = dd2;
            keep[(size_t)2 * d + 2] = ds * a_norm2;
            float q_term = 2.0f * ds * s.c_sum;
            float *dq = d_q + q_off;
            for (int m = 0; m < d; m++) {
                const float *Pm = s.P + (size_t)m * d, *Rm = s.R + (size_t)m * d;
                float p = 0.0f, r = 0.0f;
                #pragma omp simd reduction(+ : p, r)
                for (int e = 0; e < d; e++) {
                    p += Pm[e] * dn1[e];
                    r += Rm[e] * dn2[e];
                }
                dq[m] += scale * (p + s.K[m] * dd1) + s2 * qi[m] * (r + s.C[m] * dd2 + q_term);
            }
        }
    }
    // Pass 2, backwards: the reverse sums Pg, Rg (in P, R), kg, cg (in K, C), Vg (in V),
    // sg (in c_sum).
    state_clear(&s, d);
    for (int t = L - 1; t >= 0; t--) {
        float inv_count = 1.0f / (float)(t + 1);
        for (int g = 0; g < G; g++) {
            int h = kvh * G + g;
            size_t q_off = ((size_t)(b * L + t) * sh->heads + h) * d;
            const float *qi = q + q_off, *doi = d_out + q_off;
            const float *keep = kept + ((size_t)g * L + t) * stride, *dn1 = keep, *dn2 = keep + d;
            float dd1 = keep[(size_t)2 * d], dd2 = keep[(size_t)2 * d + 1];
            s.c_sum += keep[(size_t)2 * d + 2];
            for (int m = 0; m < d; m++) {
                float am = scale * qi[m], bm = 0.5f * s2 * qi[m] * qi[m];
                float *Pm = s.P + (size_t)m * d, *Rm = s.R + (size_t)m * d;
                #pragma omp simd
                for (int e = 0; e < d; e++) {
                    Pm[e] = fmaf(am, dn1[e], Pm[e]);
                    Rm[e] = fmaf(bm, dn2[e], Rm[e]);
                }
                s.K[m] += dd1 * am;
                s.C[m] += dd2 * bm;
            }
            for (int e = 0; e < d; e++) s.V[e] += doi[e] * inv_count;
        }
        size_t kv_off = ((size_t)(b * L + t) * sh->kv_heads + kvh) * d;
        const float *kt = k + kv_off, *vt = v + kv_off;
        float *dk = d_k + kv_off, *dv = d_v + kv_off;
        float *dv_acc = s.t1;
        memcpy(dv_acc, s.V, sizeof(float) * (size_t)d);
        for (int m = 0; m < d; m++) {
            const float *Pm = s.P + (size_t)m * d, *Rm = s.R + (size_t)m * d;
            float km = kt[m], cm = km * km, p = 0.0f, r = 0.0f;
            #pragma omp simd reduction(+ : p, r)
            for (int e = 0; e < d; e++) {
                dv_acc[e] += km * Pm[e] + cm * Rm[e];
                p += Pm[e] * vt[e];
                r += Rm[e] * vt[e];
            }
            dk[m] += p + s.K[m] + 2.0f * km * (r + s.C[m] + s.c_sum);
        }
        for (int e = 0; e < d; e++) dv[e] += dv_acc[e];
    }
}

size_t diag_attention_workspace_per_thread(int seq_len, int heads, int kv_heads, int head_dim) {
    return state_floats(head_dim) + round_to_line((size_t)(heads / kv_heads) * seq_len * saved_stride(head_dim));
}

void diag_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q, const float *k,
                             const float *v, int batch, int seq_len, int heads, int kv_heads, int head_dim,
                             float scale, float guard, float eps) {
    diag_shape sh = make_shape(batch, seq_len, heads, kv_heads, head_dim, scale, guard, eps);
    size_t kept = round_to_line((size_t)sh.group * seq_len * saved_stride(head_dim));
    size_t per_thread = state_floats(head_dim) + kept;
    float *buffer = ops_workspace_take(per_thread);
    int tasks = batch * kv_heads;
    #pragma omp parallel
    {
        float *mine = buffer + per_thread * (size_t)omp_get_thread_num();
        diag_state s = state_at(mine, head_dim);
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++)
            backward_task(d_q, d_k, d_v, d_out, q, k, v, &sh, task / kv_heads, task % kv_heads, s,
                          mine + state_floats(head_dim));
    }
}

// ----------------------------------------------------------------------------------
// The quadratic forms: A materialised row by row, O = A V; the reference for the scans.

static float dot_f(const float *a, const float *b, int n) {
    float sum = 0.0f;
    for (int e = 0; e < n; e++) sum += a[e] * b[e];
    return sum;
}

// w_it = scale^2/2 sum_m q_m^2 k_m^2
static float diag_w(const float *qi, const float *kt, int d, float scale) {
    float sum = 0.0f;
    for (int e = 0; e < d; e++) sum += qi[e] * qi[e] * kt[e] * kt[e];
    return 0.5f * scale * scale * sum;
}

// What row i of A needs besides u and w: the first-order reciprocal and the sums it is
// made of.
typedef struct {
    first_order f;
    float W, a_norm2, c_sum;
} diag_row_sums;

// Row i of A for query qi against keys kbase (row stride ld): u, w into the scratch rows,
// A into row.
static diag_row_sums diag_row(float *row, float *u, float *w, const float *qi, const float *kbase, size_t ld, int i,
                              int d, float scale, float guard, float eps) {
    double su = 0.0, sw = 0.0, sc = 0.0;
    for (int t = 0; t <= i; t++) {
        const float *kt = kbase + (size_t)t * ld;
        u[t] = scale * dot_f(qi, kt, d);
        w[t] = diag_w(qi, kt, d, scale);
        su += u[t];
        sw += w[t];
        sc += dot_f(kt, kt, d);
    }
    diag_row_sums sums = {.W = (float)sw, .a_norm2 = scale * scale * dot_f(qi, qi, d), .c_sum = (float)sc};
    sums.f = first_order_reciprocal((float)su, sums.a_norm2, sums.c_sum, i, guard);
    float inv2 = 1.0f / (sums.W + eps), inv0 = 1.0f / (float)(i + 1);
    for (int t = 0; t <= i; t++) row[t] = inv0 + u[t] * sums.f.r + w[t] * inv2;
    return sums;
}

void diag_attention_quadratic_probabilities(float *probs, const float *q, const float *k, int seq_len, int heads,
                                            int kv_heads, int head_dim, float scale, float guard, float eps) {
    int group = heads / kv_heads, L = seq_len;
    #pragma omp parallel
    {
        float *u = xmalloc(sizeof(float) * 2 * (size_t)L), *w = u + L;
        #pragma omp for collapse(2) schedule(dynamic, 8)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < L; i++) {
                float *row = probs + ((size_t)h * L + i) * L;
                diag_row(row, u, w, q + ((size_t)i * heads + h) * head_dim, k + (size_t)(h / group) * head_dim,
                         (size_t)kv_heads * head_dim, i, head_dim, scale, guard, eps);
                for (int t = i + 1; t < L; t++) row[t] = 0.0f;
            }
        free(u);
    }
}

void diag_attention_quadratic_forward(float *out, const float *q, const float *k, const float *v, int batch,
                                      int seq_len, int heads, int kv_heads, int head_dim, float scale, float guard,
                                      float eps) {
    int group = heads / kv_heads, L = seq_len, d = head_dim;
    size_t kv_ld = (size_t)kv_heads * d;
    #pragma omp parallel
    {
        float *row = xmalloc(sizeof(float) * 3 * (size_t)L), *u = row + L, *w = u + L;
        #pragma omp for collapse(3) schedule(dynamic, 8)
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < L; i++) {
                    size_t q_off = ((size_t)(b * L + i) * heads + h) * d;
                    const float *kbase = k + ((size_t)b * L * kv_heads + h / group) * d;
                    const float *vbase = v + ((size_t)b * L * kv_heads + h / group) * d;
                    diag_row(row, u, w, q + q_off, kbase, kv_ld, i, d, scale, guard, eps);
                    float *o = out + q_off;
                    for (int e = 0; e < d; e++) o[e] = 0.0f;
                    for (int t = 0; t <= i; t++)
                        for (int e = 0; e < d; e++) o[e] += row[t] * vbase[(size_t)t * kv_ld + e];
                }
        free(row);
    }
}

// With dA_it = do_i.v_t:  dv_t += A_it do_i;  rho = sum_t dA_it u_it;
//   du_it = dA_it r + rho dr/dx  (x = U = sum_t u_it)
//   ds = rho dr/d(|a|^2 sum C):  dq_i += 2 scale^2 q_i ds sum C;  dk_t += 2 k_t ds |a|^2
//   dw_it = dA_it / (W+eps) + dW,  dW = -sum_t dA_it w_it / (W+eps)^2
//   dq_i += scale du_it k_t + scale^2 dw_it q_i * k_t^2;  dk_t += scale du_it q_i + scale^2 dw_it k_t * q_i^2
void diag_attention_quadratic_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q,
                                       const float *k, const float *v, int batch, int seq_len, int heads,
                                       int kv_heads, int head_dim, float scale, float guard, float eps) {
    int group = heads / kv_heads, L = seq_len, d = head_dim;
    size_t kv_ld = (size_t)kv_heads * d;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < batch; b++)
        for (int kvh = 0; kvh < kv_heads; kvh++) {
            float *row = xmalloc(sizeof(float) * 4 * (size_t)L), *u = row + L, *w = u + L, *dA = w + L;
            const float *kbase = k + ((size_t)b * L * kv_heads + kvh) * d;
            const float *vbase = v + ((size_t)b * L * kv_heads + kvh) * d;
            float *dkbase = d_k + ((size_t)b * L * kv_heads + kvh) * d;
            float *dvbase = d_v + ((size_t)b * L * kv_heads + kvh) * d;
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int i = 0; i < L; i++) {
                    size_t q_off = ((size_t)(b * L + i) * heads + h) * d;
                    const float *qi = q + q_off, *doi = d_out + q_off;
                    diag_row_sums sums = diag_row(row, u, w, qi, kbase, kv_ld, i, d, scale, guard, eps);
                    float e2 = sums.W + eps, rho = 0.0f, sw = 0.0f;
                    for (int t = 0; t <= i; t++) {
                        dA[t] = dot_f(doi, vbase + (size_t)t * kv_ld, d);
                        rho += dA[t] * u[t];
                        sw += dA[t] * w[t];
                        for (int e = 0; e < d; e++) dvbase[(size_t)t * kv_ld + e] += row[t] * doi[e];
                    }
                    float dU = rho * sums.f.dr_dx, ds = rho * sums.f.dr_dnorms, dW = -sw / (e2 * e2);
                    float q_norm_term = 2.0f * scale * scale * ds * sums.c_sum, k_norm_term = 2.0f * ds * sums.a_norm2;
                    for (int e = 0; e < d; e++) d_q[q_off + e] += q_norm_term * qi[e];
                    for (int t = 0; t <= i; t++) {
                        const float *kt = kbase + (size_t)t * kv_ld;
                        float *dk = dkbase + (size_t)t * kv_ld;
                        float du = dA[t] * sums.f.r + dU, dw = dA[t] / e2 + dW;
                        for (int e = 0; e < d; e++) {
                            d_q[q_off + e] += scale * du * kt[e] + scale * scale * dw * qi[e] * kt[e] * kt[e];
                            dk[e] += scale * du * qi[e] + scale * scale * dw * kt[e] * qi[e] * qi[e] +
                                     k_norm_term * kt[e];
                        }
                    }
                }
            free(row);
        }
}
