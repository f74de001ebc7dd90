// The `approx` mixer's attention (DESIGN.md 5): softmax replaced by its second-order
// Taylor expansion, computed in linear time (Based, Arora et al. 2024).
//
//   x_it = scale q_i.k_t,  w_it = f(x_it) = 1 + x + x^2/2 (>= 1/2),  t <= i
//   out_i = num_i / den_i,  num_i = sum_t w_it v_t,  den_i = sum_t w_it  (>= (i+1)/2)
//
// Feature map. f(scale q.k) = phi(q).phi(k) with, exploiting the symmetry of x outer x,
//   phi(x) = [1, c1 x_m (m < d), c2 x_m^2 (m < d), c3 x_m x_n (m < n)],
//   c1 = sqrt(scale), c2 = scale / sqrt(2), c3 = scale,
// F = 1 + d + d(d+1)/2 features (2145 for d = 64 instead of 1 + d + d^2 = 4161): the
// diagonal products carry (scale^2/2) q_m^2 k_m^2, each unordered off-diagonal pair
// carries both of its ordered terms, 2 (scale^2/2) q_m q_n k_m k_n.
//
// Chunked form (chunks of CHUNK positions, one task per (sequence, kv head)):
//   inside a chunk the quadratic form (scores, f, W V);
//   across chunks the running states S = sum phi(k_t) v_t^T [F, d] and z = sum phi(k_t) [F]
//   of the earlier chunks: num_i += phi(q_i) S, den_i += phi(q_i).z.
// Every per-token cost is O(F d), every in-chunk cost O(CHUNK d): linear in seq_len.
//
// Backward. With do_i given: dnum_i = do_i / den_i, dden_i = -(do_i.out_i) / den_i and
//   dw_it = dnum_i.v_t + dden_i,  dv_t += w_it dnum_i,  dx_it = dw_it (1 + x_it),
//   dq_i += scale sum_t dx_it k_t,  dk_t += scale sum_i dx_it q_i          (in a chunk)
//   dphi(q_i) = S dnum_i + z dden_i   (S, z of the earlier chunks)          (across)
//   dS = sum_{later chunks} phi(q_i) dnum_i^T, dz = sum phi(q_i) dden_i:
//   dphi(k_t) = dS v_t + dz,  dv_t += dS^T phi(k_t)
// and dq, dk += J_phi^T dphi. Pass 1 walks the chunks forwards rebuilding S, z (the
// in-chunk terms and dq); pass 2 walks them backwards accumulating dS, dz (dk, dv of the
// cross-chunk terms). Nothing of size seq_len x seq_len or seq_len x F is ever stored.
//
// Layout inside a task: feature buffers are feature-major, phi[f * CHUNK + t], so the
// feature map, its transpose-Jacobian and every product vectorise along the chunk's
// positions, and all products are tile_gemm calls with contiguous columns. The states
// S and dS are row-major [F, d].
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/errors.h"
#include "ops/cpu/blocking.h"
#include "ops/cpu/workspace.h"
#include "ops/cpu/tile_gemm.h"
#include "ops/ops.h"

enum { CHUNK = 64 };

int taylor_feature_count(int head_dim) { return 1 + head_dim + head_dim * (head_dim + 1) / 2; }
int taylor_attention_chunk_size(void) { return CHUNK; }

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim, group, features;
    size_t q_ld, kv_ld;          // row strides of q/out and of k/v
    float scale, c1, c2, c3;     // feature-map coefficients (see the top)
} taylor_shape;

static taylor_shape make_shape(int batch, int seq_len, int heads, int kv_heads, int head_dim, float scale) {
    taylor_shape sh = {batch, seq_len, heads, kv_heads, head_dim, heads / kv_heads, taylor_feature_count(head_dim),
                       (size_t)heads * head_dim, (size_t)kv_heads * head_dim, scale, sqrtf(scale),
                       scale / sqrtf(2.0f), scale};
    return sh;
}

static float taylor_f(float x) { return 1.0f + x + 0.5f * x * x; }

// ----------------------------------------------------------------------------------
// small helpers on one chunk

// dst[m * CHUNK + t] = src[t * ld + m] for t < n: the chunk's rows of one head, transposed.
static void transpose_in(float *restrict dst, const float *restrict src, int n, size_t ld, int d) {
    for (int t = 0; t < n; t++)
        for (int m = 0; m < d; m++) dst[(size_t)m * CHUNK + t] = src[(size_t)t * ld + m];
}

// dst[t * ld + m] += src[m * CHUNK + t] for t < n.
static void transpose_add_out(float *restrict dst, size_t ld, const float *restrict src, int n, int d) {
    for (int t = 0; t < n; t++)
        for (int m = 0; m < d; m++) dst[(size_t)t * ld + m] += src[(size_t)m * CHUNK + t];
}

// phi[f * CHUNK + t] = phi(x_t)_f for t < n, from xt[m * CHUNK + t].
static void features(float *restrict phi, const float *restrict xt, int n, const taylor_shape *sh) {
    int d = sh->head_dim;
    float c1 = sh->c1, c2 = sh->c2, c3 = sh->c3;
    for (int t = 0; t < n; t++) phi[t] = 1.0f;
    float *p = phi + CHUNK;
    for (int m = 0; m < d; m++, p += CHUNK) {
        const float *xm = xt + (size_t)m * CHUNK;
        #pragma omp simd
        for (int t = 0; t < n; t++) p[t] = c1 * xm[t];
    }
    for (int m = 0; m < d; m++) {
        const float *xm = xt + (size_t)m * CHUNK;
        #pragma omp simd
        for (int t = 0; t < n; t++) p[t] = c2 * xm[t] * xm[t];
        p += CHUNK;
        for (int e = m + 1; e < d; e++, p += CHUNK) {
            const float *xe = xt + (size_t)e * CHUNK;
            #pragma omp simd
            for (int t = 0; t < n; t++) p[t] = c3 * xm[t] * xe[t];
        }
    }
}

// dxt[m * CHUNK + t] = (J_phi(x_t)^T g_t)_m for t < n (overwritten), g feature-major.
static void features_backward(float *restrict dxt, const float *restrict g, const float *restrict xt, int n,
                              const taylor_shape *sh) {
    int d = sh->head_dim;
    float c1 = sh->c1, c2x2 = 2.0f * sh->c2, c3 = sh->c3;
    const float *p = g + CHUNK;  // feature 0 is constant
    for (int m = 0; m < d; m++, p += CHUNK) {
        float *dm = dxt + (size_t)m * CHUNK;
        #pragma omp simd
        for (int t = 0; t < n; t++) dm[t] = c1 * p[t];
    }
    for (int m = 0; m < d; m++) {
        const float *xm = xt + (size_t)m * CHUNK;
        float *dm = dxt + (size_t)m * CHUNK;
        #pragma omp simd
        for (int t = 0; t < n; t++) dm[t] += c2x2 * xm[t] * p[t];
        p += CHUNK;
        for (int e = m + 1; e < d; e++, p += CHUNK) {
            const float *xe = xt + (size_t)e * CHUNK;
            float *de = dxt + (size_t)e * CHUNK;
            #pragma omp simd
            for (int t = 0; t < n; t++) {
                float ge = c3 * p[t];
                dm[t] += ge * xe[t];
                de[t] += ge * xm[t];
            }
        }
    }
}

// ----------------------------------------------------------------------------------
// per-thread workspace

typedef struct {
    float *state;              // [F, d]: S (forward, backward pass 1) or dS (pass 2)
    float *z;                  // [F]: z or dz
    float *phi_k, *phi_q, *dphi;   // [F, CHUNK] feature-major
    float *kt, *qt, *vt, *dnum_t, *dxt;  // [d, CHUNK] transposed chunk rows
    float *num, *dnum;         // [CHUNK, d]
    float *x, *ds;             // [CHUNK, CHUNK] scores -> weights; score gradients
    float *den, *dden;         // [CHUNK]
} workspace;

static size_t workspace_floats(const taylor_shape *sh) {
    size_t F = (size_t)sh->features, d = (size_t)sh->head_dim;
    size_t c = CHUNK;
    return round_to_line(F * d) + round_to_line(F) + 3 * F * c + 5 * d * c + 2 * c * d + 2 * c * c + 2 * c;
}

size_t taylor_attention_workspace_per_thread(int seq_len, int heads, int kv_heads, int head_dim) {
    taylor_shape sh = make_shape(1, seq_len, heads, kv_heads, head_dim, 1.0f);
    return workspace_floats(&sh);
}

static workspace workspace_at(float *base, const taylor_shape *sh) {
    size_t F = (size_t)sh->features, d = (size_t)sh->head_dim;
    workspace w;
    w.state = base;
    w.z = w.state + round_to_line(F * d);
    w.phi_k = w.z + round_to_line(F);
    w.phi_q = w.phi_k + F * CHUNK;
    w.dphi = w.phi_q + F * CHUNK;
    w.kt = w.dphi + F * CHUNK;
    w.qt = w.kt + d * CHUNK;
    w.vt = w.qt + d * CHUNK;
    w.dnum_t = w.vt + d * CHUNK;
    w.dxt = w.dnum_t + d * CHUNK;
    w.num = w.dxt + d * CHUNK;
    w.dnum = w.num + CHUNK * d;
    w.x = w.dnum + CHUNK * d;
    w.ds = w.x + (size_t)CHUNK * CHUNK;
    w.den = w.ds + (size_t)CHUNK * CHUNK;
    w.dden = w.den + CHUNK;
    return w;
}

// S += phi_k^T V_chunk, z += column sums of phi_k (phi_k already computed for n rows).
static void state_update(workspace *w, const float *vb, int n, const taylor_shape *sh) {
    int F = sh->features, d = sh->head_dim;
    tile_gemm(F, d, n, w->phi_k, CHUNK, 1, vb, sh->kv_ld, w->state, (size_t)d, true);
    for (int f = 0; f < F; f++) {
        const float *pf = w->phi_k + (size_t)f * CHUNK;
        float sum = 0.0f;
        #pragma omp simd reduction(+ : sum)
        for (int t = 0; t < n; t++) sum += pf[t];
        w->z[f] += sum;
    }
}

// w->x[i, j] = scale q_i.k_j for the chunk (j <= i; zero above), from w->kt.
static void chunk_scores(workspace *w, const float *qb, int n, const taylor_shape *sh) {
    tile_gemm(n, n, sh->head_dim, qb, sh->q_ld, 1, w->kt, CHUNK, w->x, CHUNK, false);
    for (int i = 0; i < n; i++) {
        float *row = w->x + (size_t)i * CHUNK;
        for (int j = 0; j <= i; j++) row[j] *= sh->scale;
        for (int j = i + 1; j < n; j++) row[j] = 0.0f;
    }
}

// ----------------------------------------------------------------------------------
// forward

static void forward_task(float *out, float *den, const float *q, const float *k, const float *v,
                         const taylor_shape *sh, int b, int kvh, workspace w) {
    int L = sh->seq_len, d = sh->head_dim, F = sh->features;
    memset(w.state, 0, sizeof(float) * (size_t)F * d);
    memset(w.z, 0, sizeof(float) * (size_t)F);
    for (int c0 = 0; c0 < L; c0 += CHUNK) {
        int n = min_int(CHUNK, L - c0);
        const float *kb = k + ((size_t)(b * L + c0) * sh->kv_heads + kvh) * d;
        const float *vb = v + ((size_t)(b * L + c0) * sh->kv_heads + kvh) * d;
        transpose_in(w.kt, kb, n, sh->kv_ld, d);
        for (int g = 0; g < sh->group; g++) {
            int h = kvh * sh->group + g;
            size_t q_off = ((size_t)(b * L + c0) * sh->heads + h) * d;
            const float *qb = q + q_off;
            // in the chunk: w = f(x) (0 above the diagonal), num = W V, den = row sums
            chunk_scores(&w, qb, n, sh);
            for (int i = 0; i < n; i++) {
                float *row = w.x + (size_t)i * CHUNK, sum = 0.0f;
                for (int j = 0; j <= i; j++) {
                    row[j] = taylor_f(row[j]);
                    sum += row[j];
                }
                w.den[i] = sum;
            }
            tile_gemm(n, d, n, w.x, CHUNK, 1, vb, sh->kv_ld, w.num, (size_t)d, false);
            // the earlier chunks through the states
            if (c0 > 0) {
                transpose_in(w.qt, qb, n, sh->q_ld, d);
                features(w.phi_q, w.qt, n, sh);
                tile_gemm(n, d, F, w.phi_q, 1, CHUNK, w.state, (size_t)d, w.num, (size_t)d, true);
                for (int f = 0; f < F; f++) {
                    const float *pf = w.phi_q + (size_t)f * CHUNK;
                    float zf = w.z[f];
                    #pragma omp simd
                    for (int i = 0; i < n; i++) w.den[i] += zf * pf[i];
                }
            }
            float *ob = out + q_off, *db = den + ((size_t)b * sh->heads + h) * L + c0;
            for (int i = 0; i < n; i++) {
                float inv = 1.0f / w.den[i];
                for (int e = 0; e < d; e++) ob[(size_t)i * sh->q_ld + e] = w.num[(size_t)i * d + e] * inv;
                db[i] = w.den[i];
            }
        }
        if (c0 + n < L) {  // the last chunk's keys serve no later chunk
            features(w.phi_k, w.kt, n, sh);
            state_update(&w, vb, n, sh);
        }
    }
}

void taylor_attention_forward(float *out, float *den, const float *q, const float *k, const float *v, int batch,
                              int seq_len, int heads, int kv_heads, int head_dim, float scale) {
    taylor_shape sh = make_shape(batch, seq_len, heads, kv_heads, head_dim, scale);
    size_t per_thread = workspace_floats(&sh);
    float *buffer = ops_workspace_take(per_thread);
    int tasks = batch * kv_heads;
    #pragma omp parallel
    {
        workspace w = workspace_at(buffer + per_thread * (size_t)omp_get_thread_num(), &sh);
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++) forward_task(out, den, q, k, v, &sh, task / kv_heads, task % kv_heads, w);
    }
}

// ----------------------------------------------------------------------------------
// backward

// w->dnum[i] = do_i / den_i, w->dden[i] = -(do_i.out_i) / den_i for the chunk's rows of head h.
static void output_gradients(workspace *w, const float *dob, const float *ob, const float *db, int n,
                             const taylor_shape *sh) {
    int d = sh->head_dim;
    for (int i = 0; i < n; i++) {
        const float *doi = dob + (size_t)i * sh->q_ld, *oi = ob + (size_t)i * sh->q_ld;
        float inv = 1.0f / db[i], dot = 0.0f;
        #pragma omp simd reduction(+ : dot)
        for (int e = 0; e < d; e++) {
            w->dnum[(size_t)i * d + e] = doi[e] * inv;
            dot += doi[e] * oi[e];
        }
        w->dden[i] = -dot * inv;
    }
}

static void backward_task(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out, const float *den,
                          const float *q, const float *k, const float *v, const taylor_shape *sh, int b, int kvh,
                          workspace w) {
    int L = sh->seq_len, d = sh->head_dim, F = sh->features;
    // Pass 1, forwards: the in-chunk terms (dq, dk, dv) and dq through S, z.
    memset(w.state, 0, sizeof(float) * (size_t)F * d);
    memset(w.z, 0, sizeof(float) * (size_t)F);
    for (int c0 = 0; c0 < L; c0 += CHUNK) {
        int n = min_int(CHUNK, L - c0);
        size_t kv_off = ((size_t)(b * L + c0) * sh->kv_heads + kvh) * d;
        const float *kb = k + kv_off, *vb = v + kv_off;
        transpose_in(w.kt, kb, n, sh->kv_ld, d);
        transpose_in(w.vt, vb, n, sh->kv_ld, d);
        for (int g = 0; g < sh->group; g++) {
            int h = kvh * sh->group + g;
            size_t q_off = ((size_t)(b * L + c0) * sh->heads + h) * d;
            const float *qb = q + q_off;
            output_gradients(&w, d_out + q_off, out + q_off, den + ((size_t)b * sh->heads + h) * L + c0, n, sh);
            // in the chunk: ds = scale (dnum.v_j + dden_i) (1 + x_ij); x becomes w = f(x)
            chunk_scores(&w, qb, n, sh);
            tile_gemm(n, n, d, w.dnum, (size_t)d, 1, w.vt, CHUNK, w.ds, CHUNK, false);
            for (int i = 0; i < n; i++) {
                float *xi = w.x + (size_t)i * CHUNK, *dsi = w.ds + (size_t)i * CHUNK;
                float dden = w.dden[i];
                for (int j = 0; j <= i; j++) {
                    dsi[j] = sh->scale * (dsi[j] + dden) * (1.0f + xi[j]);
                    xi[j] = taylor_f(xi[j]);
                }
                for (int j = i + 1; j < n; j++) dsi[j] = 0.0f;
            }
            tile_gemm(n, d, n, w.ds, CHUNK, 1, kb, sh->kv_ld, d_q + q_off, sh->q_ld, true);      // dq += ds K
            tile_gemm(n, d, n, w.ds, 1, CHUNK, qb, sh->q_ld, d_k + kv_off, sh->kv_ld, true);     // dk += ds^T Q
            tile_gemm(n, d, n, w.x, 1, CHUNK, w.dnum, (size_t)d, d_v + kv_off, sh->kv_ld, true); // dv += W^T dnum
            // across chunks: dphi(q)^T = S dnum^T + z dden^T, dq += J^T dphi
            if (c0 > 0) {
                transpose_in(w.dnum_t, w.dnum, n, (size_t)d, d);
                tile_gemm(F, n, d, w.state, (size_t)d, 1, w.dnum_t, CHUNK, w.dphi, CHUNK, false);
                for (int f = 0; f < F; f++) {
                    float *pf = w.dphi + (size_t)f * CHUNK, zf = w.z[f];
                    #pragma omp simd
                    for (int i = 0; i < n; i++) pf[i] += zf * w.dden[i];
                }
                transpose_in(w.qt, qb, n, sh->q_ld, d);
                features_backward(w.dxt, w.dphi, w.qt, n, sh);
                transpose_add_out(d_q + q_off, sh->q_ld, w.dxt, n, d);
            }
        }
        if (c0 + n < L) {
            features(w.phi_k, w.kt, n, sh);
            state_update(&w, vb, n, sh);
        }
    }
    // Pass 2, backwards: dS, dz of the later chunks' queries into dk, dv.
    memset(w.state, 0, sizeof(float) * (size_t)F * d);
    memset(w.z, 0, sizeof(float) * (size_t)F);
    int last = (L - 1) / CHUNK * CHUNK;
    for (int c0 = last; c0 >= 0; c0 -= CHUNK) {
        int n = min_int(CHUNK, L - c0);
        size_t kv_off = ((size_t)(b * L + c0) * sh->kv_heads + kvh) * d;
        if (c0 != last) {  // dS = 0 for the last chunk's keys
            const float *kb = k + kv_off, *vb = v + kv_off;
            transpose_in(w.kt, kb, n, sh->kv_ld, d);
            transpose_in(w.vt, vb, n, sh->kv_ld, d);
            features(w.phi_k, w.kt, n, sh);
            // dphi(k)^T = dS V^T + dz 1^T;  dk += J^T dphi;  dv += phi(k) dS
            tile_gemm(F, n, d, w.state, (size_t)d, 1, w.vt, CHUNK, w.dphi, CHUNK, false);
            for (int f = 0; f < F; f++) {
                float *pf = w.dphi + (size_t)f * CHUNK, zf = w.z[f];
                #pragma omp simd
                for (int t = 0; t < n; t++) pf[t] += zf;
            }
            features_backward(w.dxt, w.dphi, w.kt, n, sh);
            transpose_add_out(d_k + kv_off, sh->kv_ld, w.dxt, n, d);
            tile_gemm(n, d, F, w.phi_k, 1, CHUNK, w.state, (size_t)d, d_v + kv_off, sh->kv_ld, true);
        }
        if (c0 == 0) break;  // the first chunk's queries see no earlier chunk
        for (int g = 0; g < sh->group; g++) {
            int h = kvh * sh->group + g;
            size_t q_off = ((size_t)(b * L + c0) * sh->heads + h) * d;
            const float *qb = q + q_off;
            output_gradients(&w, d_out + q_off, out + q_off, den + ((size_t)b * sh->heads + h) * L + c0, n, sh);
            transpose_in(w.qt, qb, n, sh->q_ld, d);
            features(w.phi_q, w.qt, n, sh);
            // dS += phi(q) dnum, dz += phi(q) dden
            tile_gemm(F, d, n, w.phi_q, CHUNK, 1, w.dnum, (size_t)d, w.state, (size_t)d, true);
            for (int f = 0; f < F; f++) {
                const float *pf = w.phi_q + (size_t)f * CHUNK;
                float sum = 0.0f;
                #pragma omp simd reduction(+ : sum)
                for (int i = 0; i < n; i++) sum += pf[i] * w.dden[i];
                w.z[f] += sum;
            }
        }
    }
}

void taylor_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *out,
                               const float *den, const float *q, const float *k, const float *v, int batch,
                               int seq_len, int heads, int kv_heads, int head_dim, float scale) {
    taylor_shape sh = make_shape(batch, seq_len, heads, kv_heads, head_dim, scale);
    size_t per_thread = workspace_floats(&sh);
    float *buffer = ops_workspace_take(per_thread);
    int tasks = batch * kv_heads;
    #pragma omp parallel
    {
        workspace w = workspace_at(buffer + per_thread * (size_t)omp_get_thread_num(), &sh);
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++)
            backward_task(d_q, d_k, d_v, d_out, out, den, q, k, v, &sh, task / kv_heads, task % kv_heads, w);
    }
}

// ----------------------------------------------------------------------------------
// The quadratic forms: plain loops over the causal triangle, the reference the chunked
// form is tested against, and the materialised A for recordings.

static float dot_f(const float *a, const float *b, int n) {
    float sum = 0.0f;
    #pragma omp simd reduction(+ : sum)
    for (int e = 0; e < n; e++) sum += a[e] * b[e];
    return sum;
}

void taylor_attention_quadratic_probabilities(float *probs, const float *q, const float *k, int seq_len, int heads,
                                              int kv_heads, int head_dim, float scale) {
    int group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(dynamic, 8)
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < seq_len; i++) {
            const float *qi = q + ((size_t)i * heads + h) * head_dim;
            float *row = probs + ((size_t)h * seq_len + i) * seq_len;
            double sum = 0.0;
            for (int t = 0; t <= i; t++) {
                row[t] = taylor_f(scale * dot_f(qi, k + ((size_t)t * kv_heads + h / group) * head_dim, head_dim));
                sum += row[t];
            }
            float inv = (float)(1.0 / sum);
            for (int t = 0; t <= i; t++) row[t] *= inv;
            for (int t = i + 1; t < seq_len; t++) row[t] = 0.0f;
        }
}

void taylor_attention_quadratic_forward(float *out, const float *q, const float *k, const float *v, int batch,
                                        int seq_len, int heads, int kv_heads, int head_dim, float scale) {
    int group = heads / kv_heads, L = seq_len, d = head_dim;
    #pragma omp parallel for collapse(3) schedule(dynamic, 8)
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < L; i++) {
                const float *qi = q + ((size_t)(b * L + i) * heads + h) * d;
                float *oi = out + ((size_t)(b * L + i) * heads + h) * d;
                double den = 0.0;
                for (int e = 0; e < d; e++) oi[e] = 0.0f;
                for (int t = 0; t <= i; t++) {
                    size_t kv = ((size_t)(b * L + t) * kv_heads + h / group) * d;
                    float w = taylor_f(scale * dot_f(qi, k + kv, d));
                    den += w;
                    for (int e = 0; e < d; e++) oi[e] += w * v[kv + e];
                }
                float inv = (float)(1.0 / den);
                for (int e = 0; e < d; e++) oi[e] *= inv;
            }
}

// One task per (sequence, kv head), so the d_k, d_v rows it writes are its own.
void taylor_attention_quadratic_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q,
                                         const float *k, const float *v, int batch, int seq_len, int heads,
                                         int kv_heads, int head_dim, float scale) {
    int group = heads / kv_heads, L = seq_len, d = head_dim;
    #pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < batch; b++)
        for (int kvh = 0; kvh < kv_heads; kvh++) {
            float *w = xmalloc(sizeof(float) * 2 * (size_t)(L + d));
            float *x = w + L, *o = x + L, *dnum = o + d;
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int i = 0; i < L; i++) {
                    size_t qi_off = ((size_t)(b * L + i) * heads + h) * d;
                    const float *qi = q + qi_off, *doi = d_out + qi_off;
                    double den = 0.0;
                    for (int e = 0; e < d; e++) o[e] = 0.0f;
                    for (int t = 0; t <= i; t++) {
                        size_t kv = ((size_t)(b * L + t) * kv_heads + kvh) * d;
                        x[t] = scale * dot_f(qi, k + kv, d);
                        w[t] = taylor_f(x[t]);
                        den += w[t];
                        for (int e = 0; e < d; e++) o[e] += w[t] * v[kv + e];
                    }
                    float inv = (float)(1.0 / den), dden = 0.0f;
                    for (int e = 0; e < d; e++) {
                        dnum[e] = doi[e] * inv;
                        dden -= doi[e] * o[e] * inv * inv;
                    }
                    for (int t = 0; t <= i; t++) {
                        size_t kv = ((size_t)(b * L + t) * kv_heads + kvh) * d;
                        float dx = scale * (dot_f(dnum, v + kv, d) + dden) * (1.0f + x[t]);
                        for (int e = 0; e < d; e++) {
                            d_v[kv + e] += w[t] * dnum[e];
                            d_q[qi_off + e] += dx * k[kv + e];
                            d_k[kv + e] += dx * qi[e];
                        }
                    }
                }
            free(w);
        }
}
