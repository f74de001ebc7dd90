// Causal softmax attention, blocked in the FlashAttention style (Dao et al. 2022, 2023):
// queries and keys go in blocks of BLOCK rows, an online softmax keeps a running max and
// sum per query row, and no seq_len x seq_len buffer ever exists. Forward saves the
// logsumexp of each query row; backward recomputes the probabilities block by block.
//
// q, d_q are (batch,seq_len,heads,head_dim), k, d_k (batch,seq_len,kv_heads,head_dim);
// v, d_v are (batch,seq_len,kv_heads,value_head_dim) and out, d_out
// (batch,seq_len,heads,value_head_dim) (the value size may differ: A3's OV rank);
// logsumexp is (batch,heads,seq_len). Query head h
// reads kv head h / group, group = heads / kv_heads (GQA, MQA when kv_heads = 1).
//
// Threads: forward runs one task per (batch, head, query block); backward one task per
// (batch, kv head), which walks the key blocks and, inside, every query head of the
// group, so the d_k / d_v rows of a kv head and the d_q rows of its query heads belong
// to one task: no races, no atomics, and results independent of the thread count.
// The block products are small register-tiled gemms (tile_gemm.h) whose inner loops the
// compiler vectorises; OpenBLAS is never called here (we are inside a parallel region).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/errors.h"
#include "ops/cpu/blocking.h"
#include "ops/cpu/fast_exp.h"
#include "ops/cpu/tile_gemm.h"
#include "ops/cpu/workspace.h"
#include "ops/ops.h"

enum { BLOCK = 64 };                         // query and key rows per block

// dst[d][j] = src[j*ld + d] for j < rows: a block of key (or value) rows, transposed
// so that q k^T becomes a plain row-major product.
static void transpose_rows(float *restrict dst, const float *restrict src, int rows, int ld,
                           int head_dim) {
    for (int j = 0; j < rows; j++)
        for (int d = 0; d < head_dim; d++) dst[(size_t)d * BLOCK + j] = src[(size_t)j * ld + d];
}

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim, value_head_dim, group;
    int q_ld, kv_ld;  // row strides of q and of k
    int o_ld, v_ld;   // row strides of out and of v
    float scale;
} attention_shape;

static attention_shape make_shape(int batch, int seq_len, int heads, int kv_heads, int head_dim,
                                  int value_head_dim, float scale) {
    return (attention_shape){batch, seq_len, heads, kv_heads, head_dim, value_head_dim, heads / kv_heads,
                             heads * head_dim, kv_heads * head_dim, heads * value_head_dim,
                             kv_heads * value_head_dim, scale};
}

// The per-thread workspace is sized for the larger of the two head sizes.
static int larger(int a, int b) { return a > b ? a : b; }

// ----------------------------------------------------------------------------------
// forward

typedef struct {
    float *kt;        // (head_dim, BLOCK) transposed key block
    float *s;         // (BLOCK, BLOCK) scores, then probabilities
    float *o;         // (BLOCK, value_head_dim) unnormalised output rows
    float *row_max;   // (BLOCK)
    double *row_sum;  // (BLOCK)
} forward_workspace;

static size_t forward_workspace_floats(int head_dim) {
    return round_to_line(2 * (size_t)head_dim * BLOCK + (size_t)BLOCK * BLOCK + (size_t)3 * BLOCK);
}

static forward_workspace forward_workspace_at(float *base, int head_dim) {
    forward_workspace w;
    w.kt = base;
    w.s = w.kt + (size_t)head_dim * BLOCK;
    w.o = w.s + (size_t)BLOCK * BLOCK;
    w.row_sum = (double *)(w.o + (size_t)BLOCK * head_dim);  // 2 floats per double, 8-aligned
    w.row_max = (float *)(w.row_sum + BLOCK);
    return w;
}

// One query block [i0, i0+nq) of head h of sequence b against every key block up to
// the diagonal, with the online softmax: per row, m = running max of the scaled scores,
// l = running sum of exp(score - m), o = running sum of exp(score - m) v.
static void forward_query_block(float *out, float *logsumexp, const float *q, const float *k,
                                const float *v, const attention_shape *sh, int b, int h, int i0,
                                forward_workspace w) {
    int L = sh->seq_len, D = sh->head_dim, DV = sh->value_head_dim;
    int nq = min_int(BLOCK, L - i0);
    int kvh = h / sh->group;
    const float *qb = q + ((size_t)(b * L + i0) * sh->heads + h) * D;
    const float *kbase = k + ((size_t)b * L * sh->kv_heads + kvh) * D;
    const float *vbase = v + ((size_t)b * L * sh->kv_heads + kvh) * DV;
    memset(w.o, 0, sizeof(float) * (size_t)nq * DV);
    for (int i = 0; i < nq; i++) {
        w.row_max[i] = -INFINITY;
        w.row_sum[i] = 0.0;
    }
    for (int j0 = 0; j0 < i0 + nq; j0 += BLOCK) {
        int nk = min_int(BLOCK, L - j0);
        const float *kb = kbase + (size_t)j0 * sh->kv_ld, *vb = vbase + (size_t)j0 * sh->v_ld;
        transpose_rows(w.kt, kb, nk, sh->kv_ld, D);
        // s[nq,nk] = q_block[nq,D] k_block^T
        tile_gemm(nq, nk, D, qb, sh->q_ld, 1, w.kt, BLOCK, w.s, BLOCK, false);
        for (int i = 0; i < nq; i++) {
            float *row = w.s + (size_t)i * BLOCK;
            int valid = min_int(nk, i0 + i - j0 + 1);  // causal: keys j0 .. i0+i
            if (valid <= 0) {
                memset(row, 0, sizeof(float) * nk);
                continue;
            }
            float scale = sh->scale, block_max = -INFINITY;
            #pragma omp simd reduction(max : block_max)
            for (int j = 0; j < valid; j++) block_max = row[j] * scale > block_max ? row[j] * scale : block_max;
            float m_old = w.row_max[i], m_new = fmaxf(m_old, block_max);
            float sum = 0.0f;
            #pragma omp simd reduction(+ : sum)
            for (int j = 0; j < valid; j++) {
                float p = fast_expf(row[j] * scale - m_new);
                row[j] = p;
                sum += p;
            }
            for (int j = valid; j < nk; j++) row[j] = 0.0f;
            if (m_old != m_new) {  // rescale what was summed under the old max
                float alpha = expf(m_old - m_new);
                w.row_sum[i] *= alpha;
                float *o = w.o + (size_t)i * DV;
                for (int d = 0; d < DV; d++) o[d] *= alpha;
            }
            w.row_sum[i] += sum;
            w.row_max[i] = m_new;
        }
        // o[nq,DV] += p[nq,nk] v_block[nk,DV]
        tile_gemm(nq, DV, nk, w.s, BLOCK, 1, vb, sh->v_ld, w.o, DV, true);
    }
    float *ob = out + ((size_t)(b * L + i0) * sh->heads + h) * DV;
    float *lse = logsumexp + ((size_t)b * sh->heads + h) * L + i0;
    for (int i = 0; i < nq; i++) {
        float inv = (float)(1.0 / w.row_sum[i]);
        const float *o = w.o + (size_t)i * DV;
        float *dst = ob + (size_t)i * sh->o_ld;
        for (int d = 0; d < DV; d++) dst[d] = o[d] * inv;
        lse[i] = (float)(w.row_max[i] + log(w.row_sum[i]));
    }
}

void attention_forward(float *out, float *logsumexp, const float *q, const float *k,
                       const float *v, int batch, int seq_len, int heads, int kv_heads,
                       int head_dim, int value_head_dim, float scale) {
    attention_shape sh = make_shape(batch, seq_len, heads, kv_heads, head_dim, value_head_dim, scale);
    int blocks = (seq_len + BLOCK - 1) / BLOCK;
    int tasks = batch * heads * blocks;
    int widest = larger(head_dim, value_head_dim);
    size_t per_thread = forward_workspace_floats(widest);
    float *workspace = ops_workspace_take(per_thread);
    #pragma omp parallel
    {
        forward_workspace w =
            forward_workspace_at(workspace + per_thread * omp_get_thread_num(), widest);
        // Later query blocks cost more (more keys): hand them out first.
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++) {
            int block = blocks - 1 - task / (batch * heads);
            int bh = task % (batch * heads);
            forward_query_block(out, logsumexp, q, k, v, &sh, bh / heads, bh % heads,
                                block * BLOCK, w);
        }
    }
}

// ----------------------------------------------------------------------------------
// backward
//
// With s_ij = scale q_i.k_j, p_ij = exp(s_ij - logsumexp_i), o_i = sum_j p_ij v_j:
//   dv_j += sum_i p_ij do_i
//   dp_ij = do_i.v_j (value_head_dim),  ds_ij = p_ij (dp_ij - delta_i),  delta_i = do_i.o_i
//   dq_i += scale sum_j ds_ij k_j,   dk_j += scale sum_i ds_ij q_i

typedef struct {
    float *kt, *vt;     // (head_dim | value_head_dim, BLOCK) transposed key and value blocks
    float *p, *ds;      // (BLOCK, BLOCK) probabilities; dp then scale * ds
    float *dk, *dv;     // (BLOCK, head_dim | value_head_dim) gradients of the key block, summed over heads
    float *delta;       // (group, seq_len) do_i.o_i of every query row of the group
} backward_workspace;

static size_t backward_workspace_floats(int head_dim, int group, int seq_len) {
    return round_to_line(4 * (size_t)head_dim * BLOCK + 2 * (size_t)BLOCK * BLOCK +
                         (size_t)group * seq_len);
}

static backward_workspace backward_workspace_at(float *base, int head_dim) {
    backward_workspace w;
    w.kt = base;
    w.vt = w.kt + (size_t)head_dim * BLOCK;
    w.dk = w.vt + (size_t)head_dim * BLOCK;
    w.dv = w.dk + (size_t)head_dim * BLOCK;
    w.p = w.dv + (size_t)head_dim * BLOCK;
    w.ds = w.p + (size_t)BLOCK * BLOCK;
    w.delta = w.ds + (size_t)BLOCK * BLOCK;
    return w;
}

// One query block [i0, i0+nq) of head h against the key block [j0, j0+nk) already in
// w.kt / w.vt: adds to w.dk, w.dv and to the d_q rows of the block.
static void backward_block_pair(float *d_q, bool want_dk, bool want_dv, const float *d_out,
                                const float *logsumexp, const float *q, const float *k,
                                const attention_shape *sh, int b, int h, int i0, int j0,
                                backward_workspace w) {
    int L = sh->seq_len, D = sh->head_dim, DV = sh->value_head_dim;
    int nq = min_int(BLOCK, L - i0), nk = min_int(BLOCK, L - j0);
    size_t q_off = ((size_t)(b * L + i0) * sh->heads + h) * D;
    const float *qb = q + q_off, *dob = d_out + ((size_t)(b * L + i0) * sh->heads + h) * DV;
    const float *kb = k + ((size_t)(b * L + j0) * sh->kv_heads + h / sh->group) * D;
    const float *lse = logsumexp + ((size_t)b * sh->heads + h) * L + i0;
    const float *delta = w.delta + (size_t)(h % sh->group) * L + i0;
    float scale = sh->scale;

    tile_gemm(nq, nk, D, qb, sh->q_ld, 1, w.kt, BLOCK, w.p, BLOCK, false);    // q k^T
    tile_gemm(nq, nk, DV, dob, sh->o_ld, 1, w.vt, BLOCK, w.ds, BLOCK, false);  // dp = do v^T
    for (int i = 0; i < nq; i++) {
        float *p = w.p + (size_t)i * BLOCK, *ds = w.ds + (size_t)i * BLOCK;
        int valid = min_int(nk, i0 + i - j0 + 1);  // causal: keys j0 .. i0+i (i0 >= j0 here)
        float lse_i = lse[i], delta_i = delta[i];
        #pragma omp simd
        for (int j = 0; j < valid; j++) {
            float pij = fast_expf(p[j] * scale - lse_i);
            p[j] = pij;
            ds[j] = scale * pij * (ds[j] - delta_i);
        }
        for (int j = valid; j < nk; j++) p[j] = ds[j] = 0.0f;
    }
    if (want_dv)  // dv[nk,DV] += p^T[nk,nq] do[nq,DV]
        tile_gemm(nk, DV, nq, w.p, 1, BLOCK, dob, sh->o_ld, w.dv, DV, true);
    if (want_dk)  // dk[nk,D] += ds^T[nk,nq] q[nq,D]
        tile_gemm(nk, D, nq, w.ds, 1, BLOCK, qb, sh->q_ld, w.dk, D, true);
    if (d_q != NULL)  // dq[nq,D] += ds[nq,nk] k[nk,D]
        tile_gemm(nq, D, nk, w.ds, BLOCK, 1, kb, sh->kv_ld, d_q + q_off, sh->q_ld, true);
}

// Every gradient that kv head kvh of sequence b takes part in.
static void backward_kv_head(float *d_q, float *d_k, float *d_v, const float *d_out,
                             const float *out, const float *logsumexp, const float *q,
                             const float *k, const float *v, const attention_shape *sh,
                             int b, int kvh, backward_workspace w) {
    int L = sh->seq_len, D = sh->head_dim, DV = sh->value_head_dim;
    for (int g = 0; g < sh->group; g++) {
        int h = kvh * sh->group + g;
        for (int i = 0; i < L; i++) {
            size_t off = ((size_t)(b * L + i) * sh->heads + h) * DV;
            double dot = 0.0;
            #pragma omp simd reduction(+ : dot)
            for (int d = 0; d < DV; d++) dot += (double)d_out[off + d] * out[off + d];
            w.delta[(size_t)g * L + i] = (float)dot;
        }
    }
    for (int j0 = 0; j0 < L; j0 += BLOCK) {
        int nk = min_int(BLOCK, L - j0);
        size_t kv_off = ((size_t)(b * L + j0) * sh->kv_heads + kvh) * D;
        size_t v_off = ((size_t)(b * L + j0) * sh->kv_heads + kvh) * DV;
        transpose_rows(w.kt, k + kv_off, nk, sh->kv_ld, D);
        transpose_rows(w.vt, v + v_off, nk, sh->v_ld, DV);
        memset(w.dk, 0, sizeof(float) * (size_t)nk * D);
        memset(w.dv, 0, sizeof(float) * (size_t)nk * DV);
        for (int g = 0; g < sh->group; g++)
            for (int i0 = j0; i0 < L; i0 += BLOCK)  // the query blocks on or below the diagonal
                backward_block_pair(d_q, d_k != NULL, d_v != NULL, d_out, logsumexp, q, k, sh,
                                    b, kvh * sh->group + g, i0, j0, w);
        for (int j = 0; j < nk; j++) {
            size_t row = kv_off + (size_t)j * sh->kv_ld, v_row = v_off + (size_t)j * sh->v_ld;
            if (d_k != NULL)
                for (int d = 0; d < D; d++) d_k[row + d] += w.dk[(size_t)j * D + d];
            if (d_v != NULL)
                for (int d = 0; d < DV; d++) d_v[v_row + d] += w.dv[(size_t)j * DV + d];
        }
    }
}

void attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out,
                        const float *out, const float *logsumexp, const float *q,
                        const float *k, const float *v, int batch, int seq_len, int heads,
                        int kv_heads, int head_dim, int value_head_dim, float scale) {
    if (d_q == NULL && d_k == NULL && d_v == NULL) return;
    attention_shape sh = make_shape(batch, seq_len, heads, kv_heads, head_dim, value_head_dim, scale);
    int tasks = batch * kv_heads;
    int widest = larger(head_dim, value_head_dim);
    size_t per_thread = backward_workspace_floats(widest, sh.group, seq_len);
    float *workspace = ops_workspace_take(per_thread);
    #pragma omp parallel
    {
        backward_workspace w =
            backward_workspace_at(workspace + per_thread * omp_get_thread_num(), widest);
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++)
            backward_kv_head(d_q, d_k, d_v, d_out, out, logsumexp, q, k, v, &sh,
                             task / kv_heads, task % kv_heads, w);
    }
}

size_t attention_workspace_per_thread(int seq_len, int heads, int kv_heads, int head_dim) {
    size_t forward = forward_workspace_floats(head_dim);
    size_t backward = backward_workspace_floats(head_dim, heads / kv_heads, seq_len);
    return forward > backward ? forward : backward;
}

// ----------------------------------------------------------------------------------
// The quadratic form, for recordings and tests: probs[heads, seq_len, seq_len] of one
// sequence, row i holding softmax_j(scale q_i.k_j) for j <= i and zeros above.
void attention_probabilities(float *probs, const float *q, const float *k, int seq_len,
                             int heads, int kv_heads, int head_dim, float scale) {
    int group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(dynamic, 8)
    for (int h = 0; h < heads; h++) {
        for (int i = 0; i < seq_len; i++) {
            const float *qi = q + ((size_t)i * heads + h) * head_dim;
            float *row = probs + ((size_t)h * seq_len + i) * seq_len;
            float max = -INFINITY;
            for (int j = 0; j <= i; j++) {
                const float *kj = k + ((size_t)j * kv_heads + h / group) * head_dim;
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int d = 0; d < head_dim; d++) dot += qi[d] * kj[d];
                row[j] = dot * scale;
                max = fmaxf(max, row[j]);
            }
            double sum = 0.0;
            for (int j = 0; j <= i; j++) {
                row[j] = expf(row[j] - max);
                sum += row[j];
            }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j <= i; j++) row[j] *= inv;
            for (int j = i + 1; j < seq_len; j++) row[j] = 0.0f;
        }
    }
}

void attention_score_matrix(float *scores, const float *q, const float *k, int seq_len, int heads, int kv_heads,
                            int head_dim, float scale) {
    int group = heads / kv_heads;
    #pragma omp parallel for collapse(2) schedule(dynamic, 8)
    for (int h = 0; h < heads; h++) {
        for (int i = 0; i < seq_len; i++) {
            const float *qi = q + ((size_t)i * heads + h) * head_dim;
            float *row = scores + ((size_t)h * seq_len + i) * seq_len;
            for (int j = 0; j <= i; j++) {
                const float *kj = k + ((size_t)j * kv_heads + h / group) * head_dim;
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int d = 0; d < head_dim; d++) dot += qi[d] * kj[d];
                row[j] = dot * scale;
            }
            for (int j = i + 1; j < seq_len; j++) row[j] = 0.0f;
        }
    }
}
