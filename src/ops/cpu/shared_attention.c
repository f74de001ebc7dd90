// Attention with one map shared by every sequence of the batch (rndembqk / fixedseqqk,
// DESIGN.md 5): A_h = causal softmax(scale q_h k_g^T) of one sequence's q, k, applied to
// every sequence's values.
//
// q, d_q are (seq_len, heads, head_dim); k, d_k are (seq_len, kv_heads, head_dim); v, d_v
// are (batch, seq_len, kv_heads, head_dim); out, d_out are (batch, seq_len, heads,
// head_dim); probs is (heads, seq_len, seq_len). Query head h reads kv head h / group.
//
// One head at a time, so only L x L floats of map exist at once. The batch is folded into
// the columns: the values of kv head g are packed as V_g [L, batch * head_dim] (row j holds
// v[b, j, g, :] for every b), so A_h V_g is ONE sgemm for the whole batch, and so are
// A_h^T dO_h and dA_h = dO_h V_g^T (whose k = batch * head_dim sums over the sequences).
// Every product is an OpenBLAS sgemm called outside any parallel region (it threads
// itself); the row-wise softmax and the packing are OpenMP loops. Causality: the rows are
// cut in `chunks` bands and a band [i0, i1) multiplies only keys 0 .. i1-1 (the work
// above the diagonal is (chunks + 1) / (2 chunks) of a square instead of 1).
#include <math.h>
#include <string.h>

#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

enum { BAND_MIN = 256, BANDS_MAX = 8 };

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim, group, bands;
    size_t q_dim, kv_dim, packed;  // packed: batch * head_dim, the row length of a packed head
} shared_shape;

static shared_shape make_shape(int batch, int seq_len, int heads, int kv_heads, int head_dim) {
    shared_shape s = {batch, seq_len, heads, kv_heads, head_dim, heads / kv_heads, 1, 0, 0, 0};
    s.bands = (seq_len + BAND_MIN - 1) / BAND_MIN;
    if (s.bands > BANDS_MAX) s.bands = BANDS_MAX;
    s.q_dim = (size_t)heads * head_dim;
    s.kv_dim = (size_t)kv_heads * head_dim;
    s.packed = (size_t)batch * head_dim;
    return s;
}

// Rows [*i0, *i1) of band `band`.
static void band_rows(const shared_shape *s, int band, int *i0, int *i1) {
    *i0 = (int)((long)s->seq_len * band / s->bands);
    *i1 = (int)((long)s->seq_len * (band + 1) / s->bands);
}

size_t shared_attention_workspace_floats(int batch, int seq_len, int heads, int kv_heads, int head_dim) {
    (void)heads;
    size_t L = (size_t)seq_len, packed = (size_t)(batch > 1 ? batch : 1) * (size_t)head_dim;
    return L * packed * (size_t)kv_heads + 2 * L * packed + 2 * L * L;
}

// packed[g][j][b * D + e] = x[b][j][head first + g][e] for g < count, where the rows of x
// hold `heads` heads.
static void pack_heads(float *packed, const float *x, const shared_shape *s, int heads, int first, int count) {
    int L = s->seq_len, D = s->head_dim;
    size_t row = (size_t)heads * D;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int g = 0; g < count; g++)
        for (int j = 0; j < L; j++)
            for (int b = 0; b < s->batch; b++)
                memcpy(packed + ((size_t)g * L + j) * s->packed + (size_t)b * D,
                       x + ((size_t)b * L + j) * row + (size_t)(first + g) * D, sizeof(float) * D);
}

// x[b][j][head h][e] (+)= packed[j][b * D + e]
static void unpack_head(float *x, const float *packed, const shared_shape *s, int heads, int h, bool accumulate) {
    int L = s->seq_len, D = s->head_dim;
    size_t row = (size_t)heads * D;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < s->batch; b++)
        for (int j = 0; j < L; j++) {
            float *dst = x + ((size_t)b * L + j) * row + (size_t)h * D;
            const float *src = packed + (size_t)j * s->packed + (size_t)b * D;
            if (accumulate)
                for (int e = 0; e < D; e++) dst[e] += src[e];
            else
                memcpy(dst, src, sizeof(float) * D);
        }
}

// row[0:n] = softmax(row[0:n]) in place, row[n:L] = 0.
static void softmax_row(float *restrict row, int n, int L) {
    float max = -INFINITY, sum = 0.0f;
    #pragma omp simd reduction(max : max)
    for (int j = 0; j < n; j++) max = row[j] > max ? row[j] : max;
    #pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        float p = fast_expf(row[j] - max);
        row[j] = p;
        sum += p;
    }
    float inv = 1.0f / sum;
    #pragma omp simd
    for (int j = 0; j < n; j++) row[j] *= inv;
    memset(row + n, 0, sizeof(float) * (size_t)(L - n));
}

// dp[0:n] = scale * p * (dp - p.dp) in place (the softmax backward), dp[n:L] = 0.
static void softmax_backward_row(float *restrict dp, const float *restrict p, int n, int L, float scale) {
    float dot = 0.0f;
    #pragma omp simd reduction(+ : dot)
    for (int j = 0; j < n; j++) dot += p[j] * dp[j];
    #pragma omp simd
    for (int j = 0; j < n; j++) dp[j] = scale * p[j] * (dp[j] - dot);
    memset(dp + n, 0, sizeof(float) * (size_t)(L - n));
}

// map[L, L] = causal softmax(scale q_h k_g^T) of head h, zeros above the diagonal; each
// band's softmax right after its product, while the band is still in cache.
static void head_map(float *map, const float *q, const float *k, const shared_shape *s, int h, float scale) {
    int L = s->seq_len, D = s->head_dim;
    for (int band = 0; band < s->bands; band++) {
        int i0, i1;
        band_rows(s, band, &i0, &i1);
        gemm(false, true, i1 - i0, i1, D, scale, q + (size_t)i0 * s->q_dim + (size_t)h * D, (int)s->q_dim,
             k + (size_t)(h / s->group) * D, (int)s->kv_dim, 0.0f, map + (size_t)i0 * L, L);
        #pragma omp parallel for schedule(static)
        for (int i = i0; i < i1; i++) softmax_row(map + (size_t)i * L, i + 1, L);
    }
}

void shared_attention_map(float *probs, const float *q, const float *k, int seq_len, int heads, int kv_heads,
                          int head_dim, float scale) {
    shared_shape s = make_shape(1, seq_len, heads, kv_heads, head_dim);
    for (int h = 0; h < heads; h++) head_map(probs + (size_t)h * seq_len * seq_len, q, k, &s, h, scale);
}

// workspace: packed values [kv_heads, L, batch * D], the map [L, L], one packed output head.
void shared_attention_forward(float *out, const float *q, const float *k, const float *v, int batch, int seq_len,
                              int heads, int kv_heads, int head_dim, float scale, float *workspace) {
    shared_shape s = make_shape(batch, seq_len, heads, kv_heads, head_dim);
    int L = seq_len;
    float *values = workspace, *map = values + (size_t)kv_heads * L * s.packed, *head_out = map + (size_t)L * L;
    pack_heads(values, v, &s, kv_heads, 0, kv_heads);
    for (int h = 0; h < heads; h++) {
        head_map(map, q, k, &s, h, scale);
        const float *values_g = values + (size_t)(h / s.group) * L * s.packed;
        for (int band = 0; band < s.bands; band++) {  // O_h[i0:i1] = A_h[i0:i1, 0:i1] V_g[0:i1]
            int i0, i1;
            band_rows(&s, band, &i0, &i1);
            gemm(false, false, i1 - i0, (int)s.packed, i1, 1.0f, map + (size_t)i0 * L, L, values_g, (int)s.packed,
                 0.0f, head_out + (size_t)i0 * s.packed, (int)s.packed);
        }
        unpack_head(out, head_out, &s, heads, h, false);
    }
}

// With S = scale q k^T, A = causal softmax(S), O[b] = A V[b], per head:
//   dV_g  += A_h^T dO_h                   (dO_h packed: [L, batch * D])
//   dA_h   = dO_h V_g^T                   (sums over the batch)
//   dS_h   = scale A_h * (dA_h - rowsum(A_h * dA_h))
//   d_q_h += dS_h k_g,   d_k_g += dS_h^T q_h
// workspace: packed values, dO_h and dV_g [L, batch * D], A_h and dA_h [L, L].
void shared_attention_backward(float *d_q, float *d_k, float *d_v, const float *d_out, const float *q,
                               const float *k, const float *v, int batch, int seq_len, int heads, int kv_heads,
                               int head_dim, float scale, float *workspace) {
    shared_shape s = make_shape(batch, seq_len, heads, kv_heads, head_dim);
    int L = seq_len, D = head_dim;
    float *values = workspace, *d_head = values + (size_t)kv_heads * L * s.packed;
    float *d_values = d_head + (size_t)L * s.packed, *map = d_values + (size_t)L * s.packed;
    float *d_map = map + (size_t)L * L;
    pack_heads(values, v, &s, kv_heads, 0, kv_heads);
    for (int h = 0; h < heads; h++) {
        int g = h / s.group;
        bool first_of_group = h % s.group == 0, last_of_group = h % s.group == s.group - 1;
        const float *values_g = values + (size_t)g * L * s.packed;
        head_map(map, q, k, &s, h, scale);
        pack_heads(d_head, d_out, &s, heads, h, 1);
        for (int band = 0; band < s.bands; band++) {
            int i0, i1;
            band_rows(&s, band, &i0, &i1);
            // keys [i0, i1) are read by queries i0 .. L-1: dV_g[i0:i1] (+)= A_h[i0:L, i0:i1]^T dO_h[i0:L]
            gemm(true, false, i1 - i0, (int)s.packed, L - i0, 1.0f, map + (size_t)i0 * L + i0, L,
                 d_head + (size_t)i0 * s.packed, (int)s.packed, first_of_group ? 0.0f : 1.0f,
                 d_values + (size_t)i0 * s.packed, (int)s.packed);
            // dA_h[i0:i1, 0:i1] = dO_h[i0:i1] V_g[0:i1]^T
            gemm(false, true, i1 - i0, i1, (int)s.packed, 1.0f, d_head + (size_t)i0 * s.packed, (int)s.packed,
                 values_g, (int)s.packed, 0.0f, d_map + (size_t)i0 * L, L);
        }
        if (last_of_group) unpack_head(d_v, d_values, &s, kv_heads, g, true);
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < L; i++) softmax_backward_row(d_map + (size_t)i * L, map + (size_t)i * L, i + 1, L, scale);
        for (int band = 0; band < s.bands; band++) {
            int i0, i1;
            band_rows(&s, band, &i0, &i1);
            // d_q[i0:i1, h] += dS_h[i0:i1, 0:i1] k[0:i1, g]
            gemm(false, false, i1 - i0, D, i1, 1.0f, d_map + (size_t)i0 * L, L, k + (size_t)g * D, (int)s.kv_dim,
                 1.0f, d_q + (size_t)i0 * s.q_dim + (size_t)h * D, (int)s.q_dim);
            // d_k[i0:i1, g] += dS_h[i0:L, i0:i1]^T q[i0:L, h]
            gemm(true, false, i1 - i0, D, L - i0, 1.0f, d_map + (size_t)i0 * L + i0, L,
                 q + (size_t)i0 * s.q_dim + (size_t)h * D, (int)s.q_dim, 1.0f,
                 d_k + (size_t)i0 * s.kv_dim + (size_t)g * D, (int)s.kv_dim);
        }
    }
}
