// Every op of src/ops/ops.h, twice:
//  (a) the double reference backward (tests/reference/ops_reference.c) against central
//      finite differences (fourth order) of L = sum(out * R), R fixed and random:
//      norm-wise relative error below 1e-8 for every input and weight gradient;
//  (b) the fp32 CPU op, forward and backward, against the double reference on the same
//      inputs: norm-wise relative error below 1e-4. Gradient buffers start from random
//      values, so the check also proves that backward accumulates (+=).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/ops.h"
#include "../reference/ops_reference.h"
#include "../testing.h"

#define FD_TOLERANCE 1e-8
#define OP_TOLERANCE 1e-4
#define FD_STEP 1e-3

// --- buffers ---------------------------------------------------------------------------

static uint64_t next_stream = 1;

// count values uniform in [-amplitude, amplitude], each exactly representable in float,
// so the fp32 op and the double reference read the same numbers.
static double *random_doubles(size_t count, double amplitude) {
    double *x = malloc(sizeof(double) * (count ? count : 1));
    uint64_t stream = next_stream++;
    for (size_t i = 0; i < count; i++)
        x[i] = (double)(float)(amplitude * (2.0 * rng_uniform(20240611, stream, i) - 1.0));
    return x;
}

static double *zeros_d(size_t count) { return calloc(count ? count : 1, sizeof(double)); }

static double *copy_d(const double *x, size_t count) {
    double *y = malloc(sizeof(double) * (count ? count : 1));
    memcpy(y, x, sizeof(double) * count);
    return y;
}

static float *to_float(const double *x, size_t count) {
    float *y = malloc(sizeof(float) * (count ? count : 1));
    for (size_t i = 0; i < count; i++) y[i] = (float)x[i];
    return y;
}

static double dot_d(const double *a, const double *b, size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += a[i] * b[i];
    return sum;
}

// --- checks ----------------------------------------------------------------------------

static bool verbose = false;  // TEST_OPS_VERBOSE=1 prints every error next to its check

static void check(const char *name, double error, double tolerance) {
    if (verbose) printf("     %-72s error %.3g\n", name, error);
    testing_report(error < tolerance, name, "relative error %.3g (tolerance %.0e)", error, tolerance);
}

static void check_f(const char *name, const float *got, const double *want, size_t count) {
    check(name, testing_relative_error_f(got, want, count), OP_TOLERANCE);
}

// An fp32 gradient that backward added on top of prefill, against the reference
// gradient accumulated from zero.
static void check_accumulated(const char *name, const float *got, const double *prefill,
                              const double *want, size_t count) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = ((double)got[i] - prefill[i]) - want[i];
        diff += d * d;
        ref += want[i] * want[i];
    }
    if (ref == 0.0) {  // an exactly zero gradient (d_q at seq_len 1): fp32 leaves rounding
        testing_report(sqrt(diff) < 1e-5, name, "norm %.3g where zero is expected", sqrt(diff));
        return;
    }
    check(name, sqrt(diff) / sqrt(ref), OP_TOLERANCE);
}

// Central differences of objective() with respect to every element of x, against the
// analytic gradient: the fourth-order stencil
//   f'(x) ~ (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h,
// whose truncation error (h^4) and rounding error (eps / h) both stay near 1e-12 at h = 1e-3.
typedef double (*objective_fn)(void *context);

static void check_fd(const char *name, objective_fn objective, void *context, double *x,
                     size_t count, const double *analytic) {
    double *numeric = zeros_d(count);
    for (size_t i = 0; i < count; i++) {
        double x0 = x[i], h = FD_STEP * fmax(1.0, fabs(x0)), f[4];
        const double offsets[4] = {-2.0, -1.0, 1.0, 2.0};
        for (int s = 0; s < 4; s++) {
            x[i] = x0 + offsets[s] * h;
            f[s] = objective(context);
        }
        x[i] = x0;
        numeric[i] = (8.0 * (f[2] - f[1]) - (f[3] - f[0])) / (12.0 * h);
    }
    check(name, testing_relative_error_d(analytic, numeric, count), FD_TOLERANCE);
    free(numeric);
}

static char name_buffer[256];
#define NAME(...) (snprintf(name_buffer, sizeof name_buffer, __VA_ARGS__), name_buffer)

// --- gemm ------------------------------------------------------------------------------

static void test_gemm(bool ta, bool tb) {
    int m = 37, n = 29, k = 53;
    int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    int lda = a_cols + 3, ldb = b_cols + 2, ldc = n + 1;
    double *a = random_doubles((size_t)a_rows * lda, 1.0), *b = random_doubles((size_t)b_rows * ldb, 1.0);
    double *c = random_doubles((size_t)m * ldc, 1.0);
    float *af = to_float(a, (size_t)a_rows * lda), *bf = to_float(b, (size_t)b_rows * ldb);
    float *cf = to_float(c, (size_t)m * ldc);
    reference_gemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, 0.3, c, ldc);
    gemm(ta, tb, m, n, k, 0.7f, af, lda, bf, ldb, 0.3f, cf, ldc);
    check_f(NAME("gemm %s%s %dx%dx%d", ta ? "t" : "n", tb ? "t" : "n", m, n, k), cf, c, (size_t)m * ldc);
    free(a), free(b), free(c), free(af), free(bf), free(cf);
}

// k = 0: nothing to multiply, c = beta c (BLAS itself would reject the leading dimensions).
static void test_gemm_empty_inner(void) {
    float c[6] = {1, 2, 3, 4, 5, 6}, a[1] = {0}, b[1] = {0};
    gemm(false, false, 2, 3, 0, 1.0f, a, 1, b, 3, 0.5f, c, 3);
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= c[i] == 0.5f * (float)(i + 1);
    testing_report(ok, "gemm k=0 scales c by beta", "c = %g %g %g ...", c[0], c[1], c[2]);
}

// --- linear ----------------------------------------------------------------------------

typedef struct {
    int rows, in_dim, out_dim;
    double *inp, *weight, *bias, *r;
} linear_case;

static double linear_objective(void *context) {
    linear_case *c = context;
    double *out = zeros_d((size_t)c->rows * c->out_dim);
    reference_linear_forward(out, c->inp, c->weight, c->bias, c->rows, c->in_dim, c->out_dim);
    double loss = dot_d(out, c->r, (size_t)c->rows * c->out_dim);
    free(out);
    return loss;
}

static void test_linear(bool with_bias, int rows, int in_dim, int out_dim, bool fd) {
    const char *label = with_bias ? "linear+bias" : "linear";
    size_t n_in = (size_t)rows * in_dim, n_w = (size_t)out_dim * in_dim, n_out = (size_t)rows * out_dim;
    linear_case c = {rows, in_dim, out_dim, random_doubles(n_in, 1.0), random_doubles(n_w, 1.0),
                     with_bias ? random_doubles(out_dim, 1.0) : NULL, random_doubles(n_out, 1.0)};
    double *out = zeros_d(n_out), *d_inp = zeros_d(n_in), *d_w = zeros_d(n_w), *d_b = zeros_d(out_dim);
    reference_linear_forward(out, c.inp, c.weight, c.bias, rows, in_dim, out_dim);
    reference_linear_backward(d_inp, d_w, with_bias ? d_b : NULL, c.r, c.inp, c.weight, rows, in_dim, out_dim);
    if (fd) {
        check_fd(NAME("fd reference %s d_inp", label), linear_objective, &c, c.inp, n_in, d_inp);
        check_fd(NAME("fd reference %s d_weight", label), linear_objective, &c, c.weight, n_w, d_w);
        if (with_bias) check_fd(NAME("fd reference %s d_bias", label), linear_objective, &c, c.bias, out_dim, d_b);
    } else {
        float *inp = to_float(c.inp, n_in), *w = to_float(c.weight, n_w), *r = to_float(c.r, n_out);
        float *bias = with_bias ? to_float(c.bias, out_dim) : NULL, *outf = malloc(sizeof(float) * n_out);
        double *p_in = random_doubles(n_in, 1.0), *p_w = random_doubles(n_w, 1.0), *p_b = random_doubles(out_dim, 1.0);
        float *g_in = to_float(p_in, n_in), *g_w = to_float(p_w, n_w), *g_b = to_float(p_b, out_dim);
        linear_forward(outf, inp, w, bias, rows, in_dim, out_dim);
        linear_backward(g_in, g_w, with_bias ? g_b : NULL, r, inp, w, rows, in_dim, out_dim);
        check_f(NAME("%s %dx%d->%d forward", label, rows, in_dim, out_dim), outf, out, n_out);
        check_accumulated(NAME("%s %dx%d->%d d_inp", label, rows, in_dim, out_dim), g_in, p_in, d_inp, n_in);
        check_accumulated(NAME("%s %dx%d->%d d_weight", label, rows, in_dim, out_dim), g_w, p_w, d_w, n_w);
        if (with_bias)
            check_accumulated(NAME("%s %dx%d->%d d_bias", label, rows, in_dim, out_dim), g_b, p_b, d_b, out_dim);
        free(inp), free(w), free(r), free(bias), free(outf);
        free(p_in), free(p_w), free(p_b), free(g_in), free(g_w), free(g_b);
    }
    free(c.inp), free(c.weight), free(c.bias), free(c.r);
    free(out), free(d_inp), free(d_w), free(d_b);
}

// --- elementwise -----------------------------------------------------------------------

static void test_elementwise(void) {
    size_t n = 100003;
    double *x = random_doubles(n, 1.0), *y = random_doubles(n, 1.0);
    float *xf = to_float(x, n), *yf = to_float(y, n);
    reference_add_inplace(y, x, n);
    add_inplace(yf, xf, n);
    check_f("add_inplace", yf, y, n);
    reference_scale_inplace(y, 0.37, n);
    scale_inplace(yf, 0.37f, n);
    check_f("scale_inplace", yf, y, n);
    double want = reference_sum_of_squares(x, n), got = sum_of_squares(xf, n);
    check("sum_of_squares", fabs(got - want) / want, 1e-12);  // same inputs, double sums
    free(x), free(y), free(xf), free(yf);
}

// fill, copy and the strided row copy move floats without arithmetic: exact against
// plain loops. The strided copy gathers 5 rows of 7 at stride 11 into stride 9 (the gaps
// keep their fill, so a row written at the wrong stride or too wide shows).
static bool same_floats(const float *a, const float *b, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (a[i] != b[i]) return false;
    return true;
}

static void test_copies(void) {
    enum { ROWS = 5, WIDTH = 7, X_STRIDE = 11, Y_STRIDE = 9, X_FLOATS = ROWS * X_STRIDE, Y_FLOATS = ROWS * Y_STRIDE };
    float x[X_FLOATS], y[Y_FLOATS], want[Y_FLOATS];
    for (int i = 0; i < X_FLOATS; i++) x[i] = (float)(i * 7 % 23) - 11.5f;
    fill_floats(y, -2.5f, Y_FLOATS);
    for (int i = 0; i < Y_FLOATS; i++) want[i] = -2.5f;
    testing_report(same_floats(y, want, Y_FLOATS), "fill_floats", "an element differs from the value filled");
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < WIDTH; j++) want[r * Y_STRIDE + j] = x[r * X_STRIDE + j];
    copy_strided_rows(y, Y_STRIDE, x, X_STRIDE, ROWS, WIDTH);
    testing_report(same_floats(y, want, Y_FLOATS), "copy_strided_rows", "differs from the plain row loop");
    copy_floats(y, x, Y_FLOATS);
    testing_report(same_floats(y, x, Y_FLOATS), "copy_floats", "differs from its source");
    int tokens[13], got[13];
    for (int i = 0; i < 13; i++) tokens[i] = 3 * i - 7;
    copy_ints(got, tokens, 13);
    bool copied = memcmp(got, tokens, sizeof got) == 0;
    fill_ints(got + 4, -1, 6);
    for (int i = 0; i < 13; i++) copied &= got[i] == (i >= 4 && i < 10 ? -1 : tokens[i]);
    testing_report(copied, "copy_ints and fill_ints", "an id differs from the plain loop's");
}

// --- embedding -------------------------------------------------------------------------

typedef struct {
    int rows, dim;
    int *tokens;
    double *table, *r;
} embedding_case;

static double embedding_objective(void *context) {
    embedding_case *c = context;
    double *out = zeros_d((size_t)c->rows * c->dim);
    reference_embedding_forward(out, c->tokens, c->table, c->rows, c->dim);
    double loss = dot_d(out, c->r, (size_t)c->rows * c->dim);
    free(out);
    return loss;
}

static void test_embedding(int rows, int vocab, int dim) {
    size_t n_out = (size_t)rows * dim, n_t = (size_t)vocab * dim;
    embedding_case c = {rows, dim, malloc(sizeof(int) * rows), random_doubles(n_t, 1.0),
                        random_doubles(n_out, 1.0)};
    for (int r = 0; r < rows; r++) c.tokens[r] = (r * 5 + r / 3) % vocab;  // every token repeats
    double *out = zeros_d(n_out), *d_table = zeros_d(n_t);
    reference_embedding_forward(out, c.tokens, c.table, rows, dim);
    reference_embedding_backward(d_table, c.r, c.tokens, rows, dim);
    check_fd(NAME("fd reference embedding %dx%d d_table", rows, dim), embedding_objective, &c,
             c.table, n_t, d_table);
    float *table = to_float(c.table, n_t), *r = to_float(c.r, n_out), *outf = malloc(sizeof(float) * n_out);
    double *prefill = random_doubles(n_t, 1.0);
    float *g = to_float(prefill, n_t);
    embedding_forward(outf, c.tokens, table, rows, dim, 0, vocab);
    embedding_backward(g, r, c.tokens, rows, dim, 0, vocab);
    check_f(NAME("embedding %dx%d forward", rows, dim), outf, out, n_out);
    check_accumulated(NAME("embedding %dx%d d_table (repeated tokens)", rows, dim), g, prefill, d_table, n_t);
    free(c.tokens), free(c.table), free(c.r), free(out), free(d_table);
    free(table), free(r), free(outf), free(prefill), free(g);
}

// --- RMSNorm ---------------------------------------------------------------------------

typedef struct {
    int rows, dim;
    double *inp, *weight, *r;
} rmsnorm_case;

static const double RMS_EPS = 1e-6;

static double rmsnorm_objective(void *context) {
    rmsnorm_case *c = context;
    double *out = zeros_d((size_t)c->rows * c->dim), *rstd = zeros_d(c->rows);
    reference_rmsnorm_forward(out, rstd, c->inp, c->weight, c->rows, c->dim, RMS_EPS);
    double loss = dot_d(out, c->r, (size_t)c->rows * c->dim);
    free(out), free(rstd);
    return loss;
}

static void test_rmsnorm(int rows, int dim, bool fd) {
    size_t n = (size_t)rows * dim;
    rmsnorm_case c = {rows, dim, random_doubles(n, 2.0), random_doubles(dim, 1.5), random_doubles(n, 1.0)};
    double *out = zeros_d(n), *rstd = zeros_d(rows), *d_inp = zeros_d(n), *d_w = zeros_d(dim);
    reference_rmsnorm_forward(out, rstd, c.inp, c.weight, rows, dim, RMS_EPS);
    reference_rmsnorm_backward(d_inp, d_w, c.r, c.inp, c.weight, rstd, rows, dim);
    if (fd) {
        check_fd(NAME("fd reference rmsnorm %dx%d d_inp", rows, dim), rmsnorm_objective, &c, c.inp, n, d_inp);
        check_fd(NAME("fd reference rmsnorm %dx%d d_weight", rows, dim), rmsnorm_objective, &c, c.weight, dim, d_w);
    } else {
        float *inp = to_float(c.inp, n), *w = to_float(c.weight, dim), *r = to_float(c.r, n);
        float *outf = malloc(sizeof(float) * n), *rstdf = malloc(sizeof(float) * rows);
        double *p_in = random_doubles(n, 1.0), *p_w = random_doubles(dim, 1.0);
        float *g_in = to_float(p_in, n), *g_w = to_float(p_w, dim);
        rmsnorm_forward(outf, rstdf, inp, w, rows, dim, (float)RMS_EPS);
        rmsnorm_backward(g_in, g_w, r, inp, w, rstdf, rows, dim);
        check_f(NAME("rmsnorm %dx%d forward", rows, dim), outf, out, n);
        check_f(NAME("rmsnorm %dx%d rstd", rows, dim), rstdf, rstd, rows);
        check_accumulated(NAME("rmsnorm %dx%d d_inp", rows, dim), g_in, p_in, d_inp, n);
        check_accumulated(NAME("rmsnorm %dx%d d_weight", rows, dim), g_w, p_w, d_w, dim);
        free(inp), free(w), free(r), free(outf), free(rstdf), free(p_in), free(p_w), free(g_in), free(g_w);
    }
    free(c.inp), free(c.weight), free(c.r), free(out), free(rstd), free(d_inp), free(d_w);
}

// --- RoPE ------------------------------------------------------------------------------

typedef struct {
    int batch, seq_len, heads, head_dim;
    double *x, *r, *cos_table, *sin_table;
} rope_case;

static double rope_objective(void *context) {
    rope_case *c = context;
    size_t n = (size_t)c->batch * c->seq_len * c->heads * c->head_dim;
    double *y = copy_d(c->x, n);
    reference_rope_forward(y, c->cos_table, c->sin_table, c->batch, c->seq_len, c->heads, c->head_dim);
    double loss = dot_d(y, c->r, n);
    free(y);
    return loss;
}

static void test_rope(int batch, int seq_len, int heads, int head_dim, bool fd) {
    size_t n = (size_t)batch * seq_len * heads * head_dim;
    int positions = seq_len + 3, half = head_dim / 2;
    size_t n_table = (size_t)positions * half;
    double theta = 10000.0;
    rope_case c = {batch, seq_len, heads, head_dim, random_doubles(n, 1.0), random_doubles(n, 1.0),
                   zeros_d(n_table), zeros_d(n_table)};
    reference_rope_tables(c.cos_table, c.sin_table, positions, head_dim, theta);
    double *y = copy_d(c.x, n), *dx = copy_d(c.r, n);
    reference_rope_forward(y, c.cos_table, c.sin_table, batch, seq_len, heads, head_dim);
    reference_rope_backward(dx, c.cos_table, c.sin_table, batch, seq_len, heads, head_dim);
    if (fd) {
        check_fd(NAME("fd reference rope seq=%d d_x", seq_len), rope_objective, &c, c.x, n, dx);
    } else {
        float *cosf_ = malloc(sizeof(float) * n_table), *sinf_ = malloc(sizeof(float) * n_table);
        rope_tables(cosf_, sinf_, positions, head_dim, (float)theta);
        check_f(NAME("rope tables positions=%d head_dim=%d cos", positions, head_dim), cosf_, c.cos_table, n_table);
        check_f(NAME("rope tables positions=%d head_dim=%d sin", positions, head_dim), sinf_, c.sin_table, n_table);
        float *x = to_float(c.x, n), *g = to_float(c.r, n);
        rope_forward(x, cosf_, sinf_, batch, seq_len, heads, head_dim);
        rope_backward(g, cosf_, sinf_, batch, seq_len, heads, head_dim);
        check_f(NAME("rope seq=%d forward", seq_len), x, y, n);
        check_f(NAME("rope seq=%d backward", seq_len), g, dx, n);
        free(cosf_), free(sinf_), free(x), free(g);
    }
    free(c.x), free(c.r), free(c.cos_table), free(c.sin_table), free(y), free(dx);
}

// --- attention -------------------------------------------------------------------------

typedef struct {
    int batch, seq_len, heads, kv_heads, head_dim;
    double scale;
    double *q, *k, *v, *r;
} attention_case;

static double attention_objective(void *context) {
    attention_case *c = context;
    size_t n_q = (size_t)c->batch * c->seq_len * c->heads * c->head_dim;
    double *out = zeros_d(n_q), *lse = zeros_d((size_t)c->batch * c->heads * c->seq_len);
    reference_attention_forward(out, lse, c->q, c->k, c->v, c->batch, c->seq_len, c->heads,
                                c->kv_heads, c->head_dim, c->scale);
    double loss = dot_d(out, c->r, n_q);
    free(out), free(lse);
    return loss;
}

static void test_attention(int batch, int seq_len, int heads, int kv_heads, int head_dim, bool fd) {
    const char *kind = kv_heads == heads ? "mha" : kv_heads == 1 ? "mqa" : "gqa";
    size_t n_q = (size_t)batch * seq_len * heads * head_dim;
    size_t n_kv = (size_t)batch * seq_len * kv_heads * head_dim;
    size_t n_lse = (size_t)batch * heads * seq_len;
    // Scores of a few units: the softmax is neither uniform nor one-hot.
    attention_case c = {batch, seq_len, heads, kv_heads, head_dim, 1.0 / sqrt(head_dim),
                        random_doubles(n_q, 1.5), random_doubles(n_kv, 1.5),
                        random_doubles(n_kv, 1.0), random_doubles(n_q, 1.0)};
    double *out = zeros_d(n_q), *lse = zeros_d(n_lse);
    double *d_q = zeros_d(n_q), *d_k = zeros_d(n_kv), *d_v = zeros_d(n_kv);
    reference_attention_forward(out, lse, c.q, c.k, c.v, batch, seq_len, heads, kv_heads, head_dim, c.scale);
    reference_attention_backward(d_q, d_k, d_v, c.r, out, lse, c.q, c.k, c.v, batch, seq_len, heads,
                                 kv_heads, head_dim, c.scale);
    char label[96];
    snprintf(label, sizeof label, "attention %s b=%d seq=%d h=%d kv=%d d=%d", kind, batch, seq_len,
             heads, kv_heads, head_dim);
    if (fd) {
        check_fd(NAME("fd reference %s d_q", label), attention_objective, &c, c.q, n_q, d_q);
        check_fd(NAME("fd reference %s d_k", label), attention_objective, &c, c.k, n_kv, d_k);
        check_fd(NAME("fd reference %s d_v", label), attention_objective, &c, c.v, n_kv, d_v);
    }
    float *q = to_float(c.q, n_q), *k = to_float(c.k, n_kv), *v = to_float(c.v, n_kv), *r = to_float(c.r, n_q);
    float *outf = malloc(sizeof(float) * n_q), *lsef = malloc(sizeof(float) * n_lse);
    double *p_q = random_doubles(n_q, 1.0), *p_k = random_doubles(n_kv, 1.0), *p_v = random_doubles(n_kv, 1.0);
    float *g_q = to_float(p_q, n_q), *g_k = to_float(p_k, n_kv), *g_v = to_float(p_v, n_kv);
    attention_forward(outf, lsef, q, k, v, batch, seq_len, heads, kv_heads, head_dim, head_dim, (float)c.scale);
    attention_backward(g_q, g_k, g_v, r, outf, lsef, q, k, v, batch, seq_len, heads, kv_heads,
                       head_dim, head_dim, (float)c.scale);
    check_f(NAME("%s forward", label), outf, out, n_q);
    check_f(NAME("%s logsumexp", label), lsef, lse, n_lse);
    check_accumulated(NAME("%s d_q", label), g_q, p_q, d_q, n_q);
    check_accumulated(NAME("%s d_k", label), g_k, p_k, d_k, n_kv);
    check_accumulated(NAME("%s d_v", label), g_v, p_v, d_v, n_kv);
    free(c.q), free(c.k), free(c.v), free(c.r), free(out), free(lse), free(d_q), free(d_k), free(d_v);
    free(q), free(k), free(v), free(r), free(outf), free(lsef);
    free(p_q), free(p_k), free(p_v), free(g_q), free(g_k), free(g_v);
}

// Forward and backward give bit-identical results at 1 and 2 threads: every output
// element is summed by one thread in a fixed order.
static void test_attention_thread_independence(void) {
    int batch = 2, seq_len = 100, heads = 4, kv_heads = 2, head_dim = 32;
    size_t n_q = (size_t)batch * seq_len * heads * head_dim, n_kv = n_q / 2, n_lse = (size_t)batch * heads * seq_len;
    float scale = 1.0f / sqrtf((float)head_dim);
    double *qd = random_doubles(n_q, 1.5), *kd = random_doubles(n_kv, 1.5), *vd = random_doubles(n_kv, 1.0);
    double *rd = random_doubles(n_q, 1.0);
    float *q = to_float(qd, n_q), *k = to_float(kd, n_kv), *v = to_float(vd, n_kv), *r = to_float(rd, n_q);
    float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
    for (int t = 0; t < 2; t++) {
        ops_set_threads(t + 1);
        out[t] = malloc(sizeof(float) * n_q), lse[t] = malloc(sizeof(float) * n_lse);
        dq[t] = calloc(n_q, sizeof(float)), dk[t] = calloc(n_kv, sizeof(float)), dv[t] = calloc(n_kv, sizeof(float));
        attention_forward(out[t], lse[t], q, k, v, batch, seq_len, heads, kv_heads, head_dim, head_dim, scale);
        attention_backward(dq[t], dk[t], dv[t], r, out[t], lse[t], q, k, v, batch, seq_len, heads, kv_heads,
                           head_dim, head_dim, scale);
    }
    ops_set_threads(2);
    bool same = memcmp(out[0], out[1], sizeof(float) * n_q) == 0 && memcmp(lse[0], lse[1], sizeof(float) * n_lse) == 0 &&
                memcmp(dq[0], dq[1], sizeof(float) * n_q) == 0 && memcmp(dk[0], dk[1], sizeof(float) * n_kv) == 0 &&
                memcmp(dv[0], dv[1], sizeof(float) * n_kv) == 0;
    testing_report(same, "attention forward+backward identical at 1 and 2 threads", "results differ");
    for (int t = 0; t < 2; t++) free(out[t]), free(lse[t]), free(dq[t]), free(dk[t]), free(dv[t]);
    free(qd), free(kd), free(vd), free(rd), free(q), free(k), free(v), free(r);
}

// Only some gradients wanted: the others are NULL and the wanted ones still match.
static void test_attention_partial_gradients(void) {
    int batch = 1, seq_len = 70, heads = 2, kv_heads = 1, head_dim = 32;
    size_t n_q = (size_t)batch * seq_len * heads * head_dim, n_kv = n_q / 2;
    float scale = 1.0f / sqrtf((float)head_dim);
    double *qd = random_doubles(n_q, 1.5), *kd = random_doubles(n_kv, 1.5), *vd = random_doubles(n_kv, 1.0);
    double *rd = random_doubles(n_q, 1.0);
    float *q = to_float(qd, n_q), *k = to_float(kd, n_kv), *v = to_float(vd, n_kv), *r = to_float(rd, n_q);
    float *out = malloc(sizeof(float) * n_q), *lse = malloc(sizeof(float) * heads * seq_len);
    float *all_k = calloc(n_kv, sizeof(float)), *only_k = calloc(n_kv, sizeof(float));
    attention_forward(out, lse, q, k, v, batch, seq_len, heads, kv_heads, head_dim, head_dim, scale);
    float *all_q = calloc(n_q, sizeof(float)), *all_v = calloc(n_kv, sizeof(float));
    attention_backward(all_q, all_k, all_v, r, out, lse, q, k, v, batch, seq_len, heads, kv_heads, head_dim, head_dim, scale);
    attention_backward(NULL, only_k, NULL, r, out, lse, q, k, v, batch, seq_len, heads, kv_heads, head_dim, head_dim, scale);
    testing_report(memcmp(all_k, only_k, sizeof(float) * n_kv) == 0, "attention backward d_k alone (NULL d_q, d_v)",
                   "d_k differs from the full backward");
    free(qd), free(kd), free(vd), free(rd), free(q), free(k), free(v), free(r), free(out), free(lse);
    free(all_k), free(only_k), free(all_q), free(all_v);
}

static void test_attention_probabilities(int seq_len, int heads, int kv_heads, int head_dim) {
    size_t n_q = (size_t)seq_len * heads * head_dim, n_kv = (size_t)seq_len * kv_heads * head_dim;
    size_t n_p = (size_t)heads * seq_len * seq_len;
    double scale = 1.0 / sqrt(head_dim);
    double *q = random_doubles(n_q, 1.5), *k = random_doubles(n_kv, 1.5), *probs = zeros_d(n_p);
    float *qf = to_float(q, n_q), *kf = to_float(k, n_kv), *pf = malloc(sizeof(float) * n_p);
    reference_attention_probabilities(probs, q, k, seq_len, heads, kv_heads, head_dim, scale);
    attention_probabilities(pf, qf, kf, seq_len, heads, kv_heads, head_dim, (float)scale);
    check_f(NAME("attention_probabilities seq=%d h=%d kv=%d vs reference", seq_len, heads, kv_heads), pf, probs, n_p);
    double worst_sum = 0.0;
    int nonzero_above = 0;
    for (int h = 0; h < heads; h++) {
        for (int i = 0; i < seq_len; i++) {
            const float *row = pf + ((size_t)h * seq_len + i) * seq_len;
            double sum = 0.0;
            for (int j = 0; j < seq_len; j++) {
                sum += row[j];
                nonzero_above += j > i && row[j] != 0.0f;
            }
            worst_sum = fmax(worst_sum, fabs(sum - 1.0));
        }
    }
    testing_report(worst_sum < 1e-5, "attention_probabilities rows sum to 1", "worst |sum - 1| = %.3g", worst_sum);
    testing_report(nonzero_above == 0, "attention_probabilities zeros above the diagonal",
                   "%d non-zero entries above the diagonal", nonzero_above);
    // The blocked forward agrees with the materialised matrix: out = probs v.
    double *v = random_doubles(n_kv, 1.0), *want = zeros_d(n_q);
    float *vf = to_float(v, n_kv), *out = malloc(sizeof(float) * n_q), *lse = malloc(sizeof(float) * heads * seq_len);
    int group = heads / kv_heads;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < seq_len; i++)
            for (int j = 0; j <= i; j++)
                for (int d = 0; d < head_dim; d++)
                    want[((size_t)i * heads + h) * head_dim + d] +=
                        probs[((size_t)h * seq_len + i) * seq_len + j] * v[((size_t)j * kv_heads + h / group) * head_dim + d];
    attention_forward(out, lse, qf, kf, vf, 1, seq_len, heads, kv_heads, head_dim, head_dim, (float)scale);
    check_f("attention_forward equals attention_probabilities times v", out, want, n_q);
    free(q), free(k), free(probs), free(qf), free(kf), free(pf), free(v), free(want), free(vf), free(out), free(lse);
}

// --- SwiGLU ----------------------------------------------------------------------------

typedef struct {
    size_t count;
    double *gate, *up, *r;
} swiglu_case;

static double swiglu_objective(void *context) {
    swiglu_case *c = context;
    double *out = zeros_d(c->count);
    reference_swiglu_forward(out, c->gate, c->up, c->count);
    double loss = dot_d(out, c->r, c->count);
    free(out);
    return loss;
}

static void test_swiglu(size_t count, bool fd) {
    swiglu_case c = {count, random_doubles(count, 6.0), random_doubles(count, 2.0), random_doubles(count, 1.0)};
    double *out = zeros_d(count), *d_gate = zeros_d(count), *d_up = zeros_d(count);
    reference_swiglu_forward(out, c.gate, c.up, count);
    reference_swiglu_backward(d_gate, d_up, c.r, c.gate, c.up, count);
    if (fd) {
        check_fd(NAME("fd reference swiglu n=%zu d_gate", count), swiglu_objective, &c, c.gate, count, d_gate);
        check_fd(NAME("fd reference swiglu n=%zu d_up", count), swiglu_objective, &c, c.up, count, d_up);
    } else {
        float *gate = to_float(c.gate, count), *up = to_float(c.up, count), *r = to_float(c.r, count);
        float *outf = malloc(sizeof(float) * count);
        double *p_g = random_doubles(count, 1.0), *p_u = random_doubles(count, 1.0);
        float *g_g = to_float(p_g, count), *g_u = to_float(p_u, count);
        swiglu_forward(outf, gate, up, count);
        swiglu_backward(g_g, g_u, r, gate, up, count);
        check_f(NAME("swiglu n=%zu forward", count), outf, out, count);
        check_accumulated(NAME("swiglu n=%zu d_gate", count), g_g, p_g, d_gate, count);
        check_accumulated(NAME("swiglu n=%zu d_up", count), g_u, p_u, d_up, count);
        free(gate), free(up), free(r), free(outf), free(p_g), free(p_u), free(g_g), free(g_u);
    }
    free(c.gate), free(c.up), free(c.r), free(out), free(d_gate), free(d_up);
}

// --- LM head + cross entropy ---------------------------------------------------------

typedef struct {
    int rows, dim, vocab;
    int *targets;
    double loss_scale;
    double *hidden, *weight;
} xent_case;

// A vocab shard that holds the whole vocabulary: its combines leave the statistics as they
// are, so the phased path must give the unsharded result bit for bit.
static void count_combine_max(void *context, float *row_max, int n) { (void)row_max, (void)n, ++*(int *)context; }
static void count_combine_sums(void *context, double *stats, int n) { (void)stats, (void)n, ++*(int *)context; }

static double xent_objective(void *context) {
    xent_case *c = context;
    return c->loss_scale * reference_lm_head_cross_entropy(NULL, NULL, NULL, c->hidden, c->weight,
                                                           c->targets, c->rows, c->dim, c->vocab, c->loss_scale);
}

// Targets: row r ignored when r % 7 == 3 and for every row in [ignore_from, ignore_to).
static void test_cross_entropy(int rows, int dim, int vocab, int ignore_from, int ignore_to, bool fd) {
    size_t n_h = (size_t)rows * dim, n_w = (size_t)vocab * dim;
    xent_case c = {rows, dim, vocab, malloc(sizeof(int) * rows), 0.37, random_doubles(n_h, 1.0),
                   random_doubles(n_w, 1.0)};
    for (int r = 0; r < rows; r++)
        c.targets[r] = (r % 7 == 3 || (r >= ignore_from && r < ignore_to)) ? -1 : (r * 13 + 5) % vocab;
    double *losses = zeros_d(rows), *d_h = zeros_d(n_h), *d_w = zeros_d(n_w);
    double total = reference_lm_head_cross_entropy(losses, d_h, d_w, c.hidden, c.weight, c.targets,
                                                   rows, dim, vocab, c.loss_scale);
    char label[96];
    snprintf(label, sizeof label, "lm_head_cross_entropy rows=%d dim=%d vocab=%d", rows, dim, vocab);
    if (fd) {
        check_fd(NAME("fd reference %s d_hidden", label), xent_objective, &c, c.hidden, n_h, d_h);
        check_fd(NAME("fd reference %s d_weight", label), xent_objective, &c, c.weight, n_w, d_w);
    } else {
        float *hidden = to_float(c.hidden, n_h), *weight = to_float(c.weight, n_w);
        float *lossesf = malloc(sizeof(float) * rows), *loss_only = malloc(sizeof(float) * rows);
        float *scratch = malloc(sizeof(float) * lm_head_scratch_floats(rows, vocab));
        double *p_h = random_doubles(n_h, 1.0), *p_w = random_doubles(n_w, 1.0);
        float *g_h = to_float(p_h, n_h), *g_w = to_float(p_w, n_w);
        double got = lm_head_cross_entropy(lossesf, g_h, g_w, hidden, weight, c.targets, rows, dim,
                                           vocab, (float)c.loss_scale, scratch, NULL);
        double got_forward_only = lm_head_cross_entropy(loss_only, NULL, NULL, hidden, weight, c.targets,
                                                        rows, dim, vocab, (float)c.loss_scale, scratch, NULL);
        float *s_h = to_float(p_h, n_h), *s_w = to_float(p_w, n_w), *s_losses = malloc(sizeof(float) * rows);
        int combines = 0;
        lm_head_vocab_shard whole = {0, count_combine_max, count_combine_sums, &combines};
        double got_sharded = lm_head_cross_entropy(s_losses, s_h, s_w, hidden, weight, c.targets, rows, dim,
                                                   vocab, (float)c.loss_scale, scratch, &whole);
        bool same = got_sharded == got && combines > 0 && memcmp(s_losses, lossesf, sizeof(float) * rows) == 0 &&
                    memcmp(s_h, g_h, sizeof(float) * n_h) == 0 && memcmp(s_w, g_w, sizeof(float) * n_w) == 0;
        testing_report(same, NAME("%s phased through a whole-vocabulary shard equals unsharded", label),
                       "loss %.17g vs %.17g, %d combines", got_sharded, got, combines);
        free(s_h), free(s_w), free(s_losses);
        check(NAME("%s total loss", label), fabs(got - total) / total, OP_TOLERANCE);
        check_f(NAME("%s per-row losses (0 when ignored)", label), lossesf, losses, rows);
        check(NAME("%s loss without gradients", label), fabs(got_forward_only - total) / total, OP_TOLERANCE);
        check_accumulated(NAME("%s d_hidden", label), g_h, p_h, d_h, n_h);
        check_accumulated(NAME("%s d_weight", label), g_w, p_w, d_w, n_w);
        free(hidden), free(weight), free(lossesf), free(loss_only), free(scratch);
        free(p_h), free(p_w), free(g_h), free(g_w);
    }
    free(c.targets), free(c.hidden), free(c.weight), free(losses), free(d_h), free(d_w);
}

// --- AdamW -----------------------------------------------------------------------------

static void test_adamw(size_t count, float beta2) {
    float lr = 1e-2f, beta1 = 0.9f, eps = 1e-8f, weight_decay = 0.1f, grad_scale = 0.5f;
    double *param = random_doubles(count, 1.0), *m = zeros_d(count), *v = zeros_d(count);
    double *start = copy_d(param, count);
    float *paramf = to_float(param, count), *mf = calloc(count, sizeof(float)), *vf = calloc(count, sizeof(float));
    for (int step = 1; step <= 4; step++) {
        double *grad = random_doubles(count, 1.0);
        float *gradf = to_float(grad, count);
        reference_adamw_update(param, grad, m, v, count, lr, beta1, beta2, eps, weight_decay, step, grad_scale);
        adamw_update(paramf, gradf, mf, vf, count, lr, beta1, beta2, eps, weight_decay, step, grad_scale);
        free(grad), free(gradf);
    }
    // Compare the change of the parameters, not the parameters (which barely move).
    double *delta = zeros_d(count);
    float *deltaf = malloc(sizeof(float) * count);
    for (size_t i = 0; i < count; i++) {
        delta[i] = param[i] - start[i];
        deltaf[i] = (float)((double)paramf[i] - start[i]);
    }
    check_f(NAME("adamw n=%zu beta2=%g param change over 4 steps", count, beta2), deltaf, delta, count);
    check_f(NAME("adamw n=%zu beta2=%g m", count, beta2), mf, m, count);
    check_f(NAME("adamw n=%zu beta2=%g v", count, beta2), vf, v, count);
    free(param), free(m), free(v), free(start), free(paramf), free(mf), free(vf), free(delta), free(deltaf);
}

int main(void) {
    verbose = getenv("TEST_OPS_VERBOSE") != NULL;
    ops_set_threads(2);

    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) test_gemm(ta, tb);
    test_gemm_empty_inner();

    test_linear(true, 5, 7, 6, true);
    test_linear(false, 5, 7, 6, true);
    test_linear(true, 67, 45, 33, false);
    test_linear(false, 67, 45, 33, false);

    test_elementwise();
    test_copies();

    test_embedding(20, 7, 9);
    test_embedding(300, 50, 64);

    test_rmsnorm(4, 17, true);
    test_rmsnorm(64, 96, false);
    test_rmsnorm(33, 300, false);

    test_rope(2, 5, 3, 8, true);
    test_rope(2, 13, 4, 64, false);
    test_rope(1, 1, 2, 16, false);

    // batch, seq_len, heads, kv_heads, head_dim, finite differences of the reference
    test_attention(2, 1, 4, 4, 8, true);
    test_attention(2, 7, 4, 4, 8, true);
    test_attention(2, 7, 4, 2, 8, true);
    test_attention(1, 7, 4, 1, 8, true);
    test_attention(2, 64, 4, 4, 64, false);
    test_attention(2, 130, 4, 4, 64, false);
    test_attention(2, 130, 4, 2, 32, false);
    test_attention(2, 130, 4, 1, 40, false);
    test_attention(1, 64, 4, 2, 16, false);
    test_attention(1, 129, 2, 1, 64, false);
    test_attention_partial_gradients();
    test_attention_thread_independence();
    test_attention_probabilities(70, 4, 2, 16);

    test_swiglu(257, true);
    test_swiglu(100003, false);

    test_cross_entropy(6, 5, 7, 0, 0, true);
    test_cross_entropy(600, 24, 50, 256, 512, false);  // three chunks, the second all ignored
    test_cross_entropy(37, 16, 300, 0, 0, false);
    test_cross_entropy(150, 4, 140000, 0, 0, false);  // a large vocabulary shrinks the chunk

    test_adamw(1000, 0.999f);
    test_adamw(100000, 0.9999f);

    return testing_exit_code();
}
