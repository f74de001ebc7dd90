// make gpu-test, part 1: every op the GPU backend implements, forward and backward,
// against the CPU backend linked into the same program under cpu_* names
// (tests/gpu/cpu_ops_prefix.h). Inputs are drawn on the host, go to the GPU with
// ops_from_host and come back with ops_to_host; gradient buffers start from the same
// random values on both sides, so the check also proves that backward accumulates.
// Tolerances (norm-wise relative error, testing.h): fp32 1e-5 for exact-order ops,
// 1e-4 for reductions, GEMMs, attention and cross entropy (summation order differs);
// bf16 (inputs rounded to 8 mantissa bits, fp32 accumulation) 2e-2.
// Decoding ops likewise (copies exact, RoPE 1e-5, attention and nonapx's step 1e-4, bf16
// attention 2e-2). Also: which mixers the backend refuses, and our tiled GEMM against
// cuBLAS/rocBLAS.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "core/rng.h"
#include "hip/blas.h"
#include "ops/ops.h"
#include "testing.h"
#include "gpu/cpu_ops_decls.h"  // generated: ops.h renamed cpu_* (Makefile)

#define EXACT 1e-5
#define FP32 1e-4
#define BF16 2e-2

static uint64_t stream = 1;

static float *host_random(size_t n, float amplitude) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    uint64_t s = stream++;
    for (size_t i = 0; i < n; i++) x[i] = amplitude * (float)(2.0 * rng_uniform(777, s, i) - 1.0);
    return x;
}

static float *host_copy(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * (n ? n : 1));
    memcpy(y, x, sizeof(float) * n);
    return y;
}

// A GPU tensor holding the host values.
static float *device_of(const float *x, size_t n) {
    float *d = ops_alloc(sizeof(float) * (n ? n : 1));
    ops_from_host(d, x, sizeof(float) * n);
    return d;
}

static int *device_ints(const int *x, size_t n) {
    int *d = ops_alloc(sizeof(int) * (n ? n : 1));
    ops_from_host(d, x, sizeof(int) * n);
    return d;
}

// Norm-wise relative error of the GPU tensor against the CPU result; frees nothing.
static double gpu_error(const float *device, const float *cpu, size_t n) {
    float *back = malloc(sizeof(float) * (n ? n : 1));
    ops_to_host(back, device, sizeof(float) * n);
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)back[i] - cpu[i];
        diff += d * d;
        ref += (double)cpu[i] * cpu[i];
    }
    free(back);
    if (diff != diff) return INFINITY;
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

static void check(const char *name, double error, double tolerance) {
    testing_report(error <= tolerance, name, "relative error %.3g above %.3g", error, tolerance);
}

static void test_elementwise(void) {
    size_t n = 100003;
    float *x = host_random(n, 1.0f), *y = host_random(n, 1.0f);
    float *dx = device_of(x, n), *dy = device_of(y, n);
    add_inplace(dy, dx, n);
    cpu_add_inplace(y, x, n);
    check("gpu add_inplace", gpu_error(dy, y, n), EXACT);
    scale_inplace(dy, 0.37f, n);
    cpu_scale_inplace(y, 0.37f, n);
    check("gpu scale_inplace", gpu_error(dy, y, n), EXACT);
    double s = sum_of_squares(dy, n), c = cpu_sum_of_squares(y, n);
    check("gpu sum_of_squares", fabs(s - c) / c, 1e-12);
    fill_floats(dy, 2.5f, n);
    cpu_fill_floats(y, 2.5f, n);
    check("gpu fill_floats", gpu_error(dy, y, n), 0.0);
    copy_floats(dy, dx, n);
    check("gpu copy_floats", gpu_error(dy, x, n), 0.0);
    // strided rows: 37 rows of 50 from a stride of 70 into a stride of 64
    float *ys = host_random(37 * 64, 1.0f), *dys = device_of(ys, 37 * 64);
    copy_strided_rows(dys, 64, dx, 70, 37, 50);
    cpu_copy_strided_rows(ys, 64, x, 70, 37, 50);
    check("gpu copy_strided_rows", gpu_error(dys, ys, 37 * 64), 0.0);
    int ints[1000], back[1000];
    int *di = ops_alloc(sizeof ints);
    fill_ints(di, 7, 1000);
    ops_to_host(back, di, sizeof back);
    bool same = true;
    for (int i = 0; i < 1000; i++) same &= back[i] == 7;
    for (int i = 0; i < 1000; i++) ints[i] = i * 3 - 5;
    int *dj = device_ints(ints, 1000);
    copy_ints(di, dj, 1000);
    ops_to_host(back, di, sizeof back);
    for (int i = 0; i < 1000; i++) same &= back[i] == ints[i];
    testing_report(same, "gpu fill_ints copy_ints", "an int differs");
    // SwiGLU
    float *g = host_random(n, 3.0f), *u = host_random(n, 1.0f), *dout = host_random(n, 1.0f);
    float *out = host_random(n, 1.0f), *dg = host_random(n, 1.0f), *du = host_random(n, 1.0f);
    float *Dg = device_of(g, n), *Du = device_of(u, n), *Ddout = device_of(dout, n), *Dout = device_of(out, n);
    float *Ddg = device_of(dg, n), *Ddu = device_of(du, n);
    swiglu_forward(Dout, Dg, Du, n);
    cpu_swiglu_forward(out, g, u, n);
    check("gpu swiglu_forward", gpu_error(Dout, out, n), EXACT);
    swiglu_backward(Ddg, Ddu, Ddout, Dg, Du, n);
    cpu_swiglu_backward(dg, du, dout, g, u, n);
    check("gpu swiglu_backward d_gate", gpu_error(Ddg, dg, n), EXACT);
    check("gpu swiglu_backward d_up", gpu_error(Ddu, du, n), EXACT);
    // AdamW, with a clip factor
    float *p = host_random(n, 1.0f), *m = host_random(n, 0.01f), *v = host_random(n, 0.0f);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(m[i]) * 0.1f;
    float *Dp = device_of(p, n), *Dm = device_of(m, n), *Dv = device_of(v, n);
    for (int step = 1; step <= 3; step++) {
        adamw_update(Dp, dx, Dm, Dv, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step, 0.5f);
        cpu_adamw_update(p, x, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step, 0.5f);
    }
    check("gpu adamw_update param", gpu_error(Dp, p, n), EXACT);
    check("gpu adamw_update moments", fmax(gpu_error(Dm, m, n), gpu_error(Dv, v, n)), EXACT);
}

// All four transposes, odd shapes, alpha/beta, vendor and tiled, fp32 and bf16.
static void test_gemm(void) {
    int m = 67, n = 131, k = 93;
    for (int variant = 0; variant < 4; variant++) {
        bool ta = variant & 1, tb = variant & 2;
        int lda = ta ? m + 3 : k + 1, ldb = tb ? k + 2 : n + 5, ldc = n + 7;
        size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb, nc = (size_t)m * ldc;
        float *a = host_random(na, 1.0f), *b = host_random(nb, 1.0f), *c = host_random(nc, 1.0f);
        float *Da = device_of(a, na), *Db = device_of(b, nb);
        for (int precision = 0; precision < 2; precision++) {
            for (int tiled = 0; tiled < 2; tiled++) {
                float *cc = host_copy(c, nc), *Dc = device_of(c, nc);
                ops_set_precision(precision == 1);
                if (tiled) gemm_tiled(ta, tb, m, n, k, 0.7f, Da, lda, Db, ldb, 0.3f, Dc, ldc, precision == 1);
                else gemm(ta, tb, m, n, k, 0.7f, Da, lda, Db, ldb, 0.3f, Dc, ldc);
                cpu_gemm(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, cc, ldc);
                char name[128];
                snprintf(name, sizeof name, "gpu gemm%s ta=%d tb=%d %s", tiled ? " (tiled)" : "", ta, tb,
                         precision ? "bf16" : "fp32");
                check(name, gpu_error(Dc, cc, nc), precision ? BF16 : FP32);
                ops_free(Dc);
                free(cc);
            }
        }
        ops_set_precision(false);
        ops_free(Da), ops_free(Db);
        free(a), free(b), free(c);
    }
}

static void test_linear_norm_embedding_rope(void) {
    int rows = 301, in = 96, out = 160, vocab = 250;
    size_t ni = (size_t)rows * in, no = (size_t)rows * out, nw = (size_t)out * in;
    float *x = host_random(ni, 1.0f), *w = host_random(nw, 0.2f), *bias = host_random(out, 0.5f);
    float *y = host_random(no, 1.0f), *dy = host_random(no, 1.0f);
    float *dx = host_random(ni, 1.0f), *dw = host_random(nw, 1.0f), *db = host_random(out, 1.0f);
    float *Dx = device_of(x, ni), *Dw = device_of(w, nw), *Dbias = device_of(bias, out), *Dy = device_of(y, no);
    float *Ddy = device_of(dy, no), *Ddx = device_of(dx, ni), *Ddw = device_of(dw, nw), *Ddb = device_of(db, out);
    linear_forward(Dy, Dx, Dw, Dbias, rows, in, out);
    cpu_linear_forward(y, x, w, bias, rows, in, out);
    check("gpu linear_forward", gpu_error(Dy, y, no), FP32);
    linear_backward(Ddx, Ddw, Ddb, Ddy, Dx, Dw, rows, in, out);
    cpu_linear_backward(dx, dw, db, dy, x, w, rows, in, out);
    check("gpu linear_backward d_inp", gpu_error(Ddx, dx, ni), FP32);
    check("gpu linear_backward d_weight", gpu_error(Ddw, dw, nw), FP32);
    check("gpu linear_backward d_bias", gpu_error(Ddb, db, out), FP32);
    // RMSNorm
    float *nw1 = host_random(in, 1.0f), *rstd = host_random(rows, 1.0f), *o = host_random(ni, 1.0f);
    float *Dnw = device_of(nw1, in), *Drstd = device_of(rstd, rows), *Do = device_of(o, ni);
    rmsnorm_forward(Do, Drstd, Dx, Dnw, rows, in, 1e-6f);
    cpu_rmsnorm_forward(o, rstd, x, nw1, rows, in, 1e-6f);
    check("gpu rmsnorm_forward", gpu_error(Do, o, ni), EXACT);
    check("gpu rmsnorm_forward rstd", gpu_error(Drstd, rstd, rows), EXACT);
    float *dnw = host_random(in, 1.0f), *Ddnw = device_of(dnw, in), *dyn = host_random(ni, 1.0f);
    float *Ddyn = device_of(dyn, ni);
    rmsnorm_backward(Ddx, Ddnw, Ddyn, Dx, Dnw, Drstd, rows, in);
    cpu_rmsnorm_backward(dx, dnw, dyn, x, nw1, rstd, rows, in);
    check("gpu rmsnorm_backward d_inp", gpu_error(Ddx, dx, ni), FP32);
    check("gpu rmsnorm_backward d_weight", gpu_error(Ddnw, dnw, in), FP32);
    // Embedding over a vocab range [50, 200) of 250, tokens repeating
    int tokens[301];
    for (int r = 0; r < rows; r++) tokens[r] = (r * 37) % vocab;
    int *Dt = device_ints(tokens, rows);
    float *table = host_random((size_t)150 * in, 1.0f), *dtable = host_random((size_t)150 * in, 1.0f);
    float *Dtable = device_of(table, (size_t)150 * in), *Ddtable = device_of(dtable, (size_t)150 * in);
    embedding_forward(Do, Dt, Dtable, rows, in, 50, 150);
    cpu_embedding_forward(o, tokens, table, rows, in, 50, 150);
    check("gpu embedding_forward (vocab range)", gpu_error(Do, o, ni), 0.0);
    embedding_backward(Ddtable, Ddyn, Dt, rows, in, 50, 150);
    cpu_embedding_backward(dtable, dyn, tokens, rows, in, 50, 150);
    check("gpu embedding_backward (vocab range)", gpu_error(Ddtable, dtable, (size_t)150 * in), EXACT);
    // RoPE: batch 3 x seq 37 x 4 heads x 24
    int batch = 3, seq = 37, heads = 4, hd = 24, half = hd / 2;
    size_t nx = (size_t)batch * seq * heads * hd;
    float *ct = host_random((size_t)seq * half, 1.0f), *st = host_random((size_t)seq * half, 1.0f);
    float *Dct = device_of(ct, (size_t)seq * half), *Dst = device_of(st, (size_t)seq * half);
    rope_tables(Dct, Dst, seq, hd, 10000.0f);
    cpu_rope_tables(ct, st, seq, hd, 10000.0f);
    check("gpu rope_tables", fmax(gpu_error(Dct, ct, (size_t)seq * half), gpu_error(Dst, st, (size_t)seq * half)), EXACT);
    float *rx = host_random(nx, 1.0f), *Drx = device_of(rx, nx);
    rope_forward(Drx, Dct, Dst, batch, seq, heads, hd);
    cpu_rope_forward(rx, ct, st, batch, seq, heads, hd);
    check("gpu rope_forward", gpu_error(Drx, rx, nx), EXACT);
    rope_backward(Drx, Dct, Dst, batch, seq, heads, hd);
    cpu_rope_backward(rx, ct, st, batch, seq, heads, hd);
    check("gpu rope_backward", gpu_error(Drx, rx, nx), EXACT);
    // Per-head embeddings (mhe-add, mhe-mul)
    for (int mul = 0; mul < 2; mul++) {
        size_t nin = (size_t)rows * hd, nout = nin * heads;
        float *hin = host_random(nin, 1.0f), *emb = host_random((size_t)heads * hd, 0.5f);
        float *hout = host_random(nout, 1.0f), *hdout = host_random(nout, 1.0f);
        float *hdin = host_random(nin, 1.0f), *hdemb = host_random((size_t)heads * hd, 1.0f);
        float *Dhin = device_of(hin, nin), *Demb = device_of(emb, (size_t)heads * hd), *Dhout = device_of(hout, nout);
        float *Dhdout = device_of(hdout, nout), *Dhdin = device_of(hdin, nin), *Dhdemb = device_of(hdemb, (size_t)heads * hd);
        head_embedding_forward(Dhout, Dhin, Demb, rows, heads, hd, mul);
        cpu_head_embedding_forward(hout, hin, emb, rows, heads, hd, mul);
        head_embedding_backward(Dhdin, Dhdemb, Dhdout, Dhin, Demb, rows, heads, hd, mul);
        cpu_head_embedding_backward(hdin, hdemb, hdout, hin, emb, rows, heads, hd, mul);
        char name[96];
        snprintf(name, sizeof name, "gpu head_embedding %s forward and backward", mul ? "mul" : "add");
        check(name, fmax(gpu_error(Dhout, hout, nout),
                         fmax(gpu_error(Dhdin, hdin, nin), gpu_error(Dhdemb, hdemb, (size_t)heads * hd))), FP32);
    }
}

// Flash attention against the CPU's blocked attention: MHA, GQA, MQA, head sizes 32, 64,
// 128, a sequence that is no multiple of any tile; fp32 and bf16.
static void test_attention(void) {
    const int shapes[][5] = {{2, 100, 4, 4, 32}, {2, 203, 8, 2, 64}, {1, 130, 4, 1, 128}, {3, 64, 6, 3, 64}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int batch = shapes[c][0], seq = shapes[c][1], heads = shapes[c][2], kvh = shapes[c][3], hd = shapes[c][4];
        float scale = 1.0f / sqrtf((float)hd);
        size_t nq = (size_t)batch * seq * heads * hd, nk = (size_t)batch * seq * kvh * hd, nl = (size_t)batch * heads * seq;
        float *q = host_random(nq, 1.5f), *k = host_random(nk, 1.5f), *v = host_random(nk, 1.0f);
        float *dout = host_random(nq, 1.0f);
        float *Dq = device_of(q, nq), *Dk = device_of(k, nk), *Dv = device_of(v, nk), *Ddout = device_of(dout, nq);
        for (int precision = 0; precision < 2; precision++) {
            ops_set_precision(precision == 1);
            double tolerance = precision ? BF16 : FP32;
            float *out = host_random(nq, 1.0f), *lse = host_random(nl, 1.0f);
            float *dq = host_random(nq, 1.0f), *dk = host_random(nk, 1.0f), *dv = host_random(nk, 1.0f);
            float *Dout = device_of(out, nq), *Dlse = device_of(lse, nl);
            float *Ddq = device_of(dq, nq), *Ddk = device_of(dk, nk), *Ddv = device_of(dv, nk);
            attention_forward(Dout, Dlse, Dq, Dk, Dv, batch, seq, heads, kvh, hd, hd, scale);
            cpu_ops_workspace_reserve(cpu_ops_attention_workspace_floats(seq, heads, kvh, hd));
            cpu_attention_forward(out, lse, q, k, v, batch, seq, heads, kvh, hd, hd, scale);
            char name[160];
            snprintf(name, sizeof name, "gpu attention_forward b=%d L=%d h=%d kv=%d d=%d %s", batch, seq, heads, kvh, hd,
                     precision ? "bf16" : "fp32");
            check(name, fmax(gpu_error(Dout, out, nq), gpu_error(Dlse, lse, nl)), tolerance);
            // backward from the CPU's own forward results on both sides
            ops_from_host(Dout, out, sizeof(float) * nq);
            ops_from_host(Dlse, lse, sizeof(float) * nl);
            attention_backward(Ddq, Ddk, Ddv, Ddout, Dout, Dlse, Dq, Dk, Dv, batch, seq, heads, kvh, hd, hd, scale);
            cpu_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, batch, seq, heads, kvh, hd, hd, scale);
            snprintf(name, sizeof name, "gpu attention_backward b=%d L=%d h=%d kv=%d d=%d %s", batch, seq, heads, kvh,
                     hd, precision ? "bf16" : "fp32");
            check(name, fmax(gpu_error(Ddq, dq, nq), fmax(gpu_error(Ddk, dk, nk), gpu_error(Ddv, dv, nk))), tolerance);
            ops_free(Dout), ops_free(Dlse), ops_free(Ddq), ops_free(Ddk), ops_free(Ddv);
            free(out), free(lse), free(dq), free(dk), free(dv);
        }
        ops_set_precision(false);
        // the quadratic forms of one sequence
        size_t np = (size_t)heads * seq * seq;
        float *probs = host_random(np, 1.0f), *Dprobs = device_of(probs, np);
        attention_probabilities(Dprobs, Dq, Dk, seq, heads, kvh, hd, scale);
        cpu_attention_probabilities(probs, q, k, seq, heads, kvh, hd, scale);
        check("gpu attention_probabilities", gpu_error(Dprobs, probs, np), FP32);
        attention_score_matrix(Dprobs, Dq, Dk, seq, heads, kvh, hd, scale);
        cpu_attention_score_matrix(probs, q, k, seq, heads, kvh, hd, scale);
        check("gpu attention_score_matrix", gpu_error(Dprobs, probs, np), FP32);
        ops_free(Dprobs), ops_free(Dq), ops_free(Dk), ops_free(Dv), ops_free(Ddout);
        free(probs), free(q), free(k), free(v), free(dout);
    }
}

// The map shared by the batch (rndembqk / fixedseqqk): forward, backward, the map itself.
static void test_shared_attention(void) {
    int batch = 3, seq = 150, heads = 4, kvh = 2, hd = 32;
    float scale = 1.0f / sqrtf((float)hd);
    size_t nq = (size_t)seq * heads * hd, nk = (size_t)seq * kvh * hd;
    size_t nv = (size_t)batch * nk, no = (size_t)batch * nq, np = (size_t)heads * seq * seq;
    size_t nw = cpu_shared_attention_workspace_floats(batch, seq, heads, kvh, hd);
    float *q = host_random(nq, 1.5f), *k = host_random(nk, 1.5f), *v = host_random(nv, 1.0f), *dout = host_random(no, 1.0f);
    float *out = host_random(no, 1.0f), *dq = host_random(nq, 1.0f), *dk = host_random(nk, 1.0f), *dv = host_random(nv, 1.0f);
    float *probs = host_random(np, 1.0f), *work = malloc(sizeof(float) * nw);
    float *Dq = device_of(q, nq), *Dk = device_of(k, nk), *Dv = device_of(v, nv), *Ddout = device_of(dout, no);
    float *Dout = device_of(out, no), *Ddq = device_of(dq, nq), *Ddk = device_of(dk, nk), *Ddv = device_of(dv, nv);
    float *Dprobs = device_of(probs, np), *Dwork = ops_alloc(sizeof(float) * shared_attention_workspace_floats(batch, seq, heads, kvh, hd));
    shared_attention_forward(Dout, Dq, Dk, Dv, batch, seq, heads, kvh, hd, scale, Dwork);
    cpu_shared_attention_forward(out, q, k, v, batch, seq, heads, kvh, hd, scale, work);
    check("gpu shared_attention_forward", gpu_error(Dout, out, no), FP32);
    shared_attention_backward(Ddq, Ddk, Ddv, Ddout, Dq, Dk, Dv, batch, seq, heads, kvh, hd, scale, Dwork);
    cpu_shared_attention_backward(dq, dk, dv, dout, q, k, v, batch, seq, heads, kvh, hd, scale, work);
    check("gpu shared_attention_backward", fmax(gpu_error(Ddq, dq, nq), fmax(gpu_error(Ddk, dk, nk), gpu_error(Ddv, dv, nv))),
          FP32);
    shared_attention_map(Dprobs, Dq, Dk, seq, heads, kvh, hd, scale);
    cpu_shared_attention_map(probs, q, k, seq, heads, kvh, hd, scale);
    check("gpu shared_attention_map", gpu_error(Dprobs, probs, np), FP32);
}

// nonapx's scans (MHA and GQA): forward output, scores and logsumexp; backward; the map.
static void test_nonapx(void) {
    const int shapes[][5] = {{2, 97, 4, 4, 32}, {2, 130, 6, 2, 64}};
    for (int c = 0; c < 2; c++) {
        int batch = shapes[c][0], seq = shapes[c][1], heads = shapes[c][2], kvh = shapes[c][3], hd = shapes[c][4];
        float scale = 1.0f / sqrtf((float)hd);
        size_t nq = (size_t)batch * seq * heads * hd, nk = (size_t)batch * seq * kvh * hd, nl = (size_t)batch * heads * seq;
        size_t np = (size_t)heads * seq * seq;
        float *q = host_random(nq, 1.5f), *k = host_random(nk, 1.5f), *v = host_random(nk, 1.0f), *dout = host_random(nq, 1.0f);
        float *out = host_random(nq, 1.0f), *sc = host_random(nl, 1.0f), *lse = host_random(nl, 1.0f);
        float *dq = host_random(nq, 1.0f), *dk = host_random(nk, 1.0f), *dv = host_random(nk, 1.0f), *probs = host_random(np, 1.0f);
        float *Dq = device_of(q, nq), *Dk = device_of(k, nk), *Dv = device_of(v, nk), *Ddout = device_of(dout, nq);
        float *Dout = device_of(out, nq), *Dsc = device_of(sc, nl), *Dlse = device_of(lse, nl), *Dprobs = device_of(probs, np);
        float *Ddq = device_of(dq, nq), *Ddk = device_of(dk, nk), *Ddv = device_of(dv, nk);
        nonapx_attention_forward(Dout, Dsc, Dlse, Dq, Dk, Dv, batch, seq, heads, kvh, hd, scale);
        cpu_ops_workspace_reserve(cpu_ops_attention_workspace_floats(seq, heads, kvh, hd));
        cpu_nonapx_attention_forward(out, sc, lse, q, k, v, batch, seq, heads, kvh, hd, scale);
        char name[128];
        snprintf(name, sizeof name, "gpu nonapx_attention_forward h=%d kv=%d", heads, kvh);
        check(name, fmax(gpu_error(Dout, out, nq), fmax(gpu_error(Dsc, sc, nl), gpu_error(Dlse, lse, nl))), FP32);
        nonapx_attention_backward(Ddq, Ddk, Ddv, Ddout, Dout, Dsc, Dlse, Dq, Dk, Dv, batch, seq, heads, kvh, hd, scale);
        cpu_nonapx_attention_backward(dq, dk, dv, dout, out, sc, lse, q, k, v, batch, seq, heads, kvh, hd, scale);
        snprintf(name, sizeof name, "gpu nonapx_attention_backward h=%d kv=%d", heads, kvh);
        check(name, fmax(gpu_error(Ddq, dq, nq), fmax(gpu_error(Ddk, dk, nk), gpu_error(Ddv, dv, nk))), FP32);
        nonapx_attention_probabilities(Dprobs, Dq, Dk, seq, heads, kvh, hd, scale);
        cpu_nonapx_attention_probabilities(probs, q, k, seq, heads, kvh, hd, scale);
        snprintf(name, sizeof name, "gpu nonapx_attention_probabilities h=%d kv=%d", heads, kvh);
        check(name, gpu_error(Dprobs, probs, np), FP32);
    }
}

// The decoding ops: rows to and from each sequence's position (and from a table shared by
// the batch), RoPE at positions, softmax attention of one row over its cache (MHA, GQA,
// MQA, a cache shared by the batch; positions on both sides of the kernel's key tiles;
// fp32 and bf16), nonapx's state step over a run of steps from an empty state, and the
// approx / approx-diag state sizes (their update and read are refused on the GPU).
static void test_decode(void) {
    enum { BATCH = 4, CONTEXT = 300 };
    int positions[BATCH] = {0, 127, 128, CONTEXT - 1};
    int *Dpos = device_ints(positions, BATCH);
    // rows at positions (copies: exact)
    size_t width = 48, stride = (size_t)CONTEXT * width + 5, ncache = BATCH * stride, nrows = BATCH * width;
    float *cache = host_random(ncache, 1.0f), *rows = host_random(nrows, 1.0f), *back = host_random(nrows, 1.0f);
    float *Dcache = device_of(cache, ncache), *Drows = device_of(rows, nrows), *Dback = device_of(back, nrows);
    copy_rows_to_positions(Dcache, stride, Drows, Dpos, BATCH, width);
    cpu_copy_rows_to_positions(cache, stride, rows, positions, BATCH, width);
    check("gpu copy_rows_to_positions", gpu_error(Dcache, cache, ncache), 0.0);
    for (int shared = 0; shared < 2; shared++) {
        copy_rows_from_positions(Dback, Dcache, shared ? 0 : stride, Dpos, BATCH, width);
        cpu_copy_rows_from_positions(back, cache, shared ? 0 : stride, positions, BATCH, width);
        check(shared ? "gpu copy_rows_from_positions (one table for the batch)" : "gpu copy_rows_from_positions",
              gpu_error(Dback, back, nrows), 0.0);
    }
    ops_free(Dcache), ops_free(Drows), ops_free(Dback);
    free(cache), free(rows), free(back);
    // RoPE at positions, from the same tables on both sides
    int heads = 4, hd = 24, half = hd / 2;
    size_t ntab = (size_t)CONTEXT * half, nx = (size_t)BATCH * heads * hd;
    float *ct = malloc(sizeof(float) * ntab), *st = malloc(sizeof(float) * ntab), *x = host_random(nx, 1.0f);
    cpu_rope_tables(ct, st, CONTEXT, hd, 10000.0f);
    float *Dct = device_of(ct, ntab), *Dst = device_of(st, ntab), *Dx = device_of(x, nx);
    rope_at_positions(Dx, Dct, Dst, Dpos, BATCH, heads, hd);
    cpu_rope_at_positions(x, ct, st, positions, BATCH, heads, hd);
    check("gpu rope_at_positions", gpu_error(Dx, x, nx), EXACT);
    ops_free(Dct), ops_free(Dst), ops_free(Dx);
    free(ct), free(st), free(x);
    // attention over the cache: {heads, kv_heads, head_dim, one cache for the batch}
    const int shapes[][4] = {{4, 4, 32, 0}, {8, 2, 64, 0}, {4, 1, 128, 0}, {4, 2, 64, 1}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int h = shapes[c][0], kvh = shapes[c][1], d = shapes[c][2], shared = shapes[c][3];
        size_t kv_stride = shared ? 0 : (size_t)CONTEXT * kvh * d, nkv = (shared ? 1 : BATCH) * (size_t)CONTEXT * kvh * d;
        size_t nq = (size_t)BATCH * h * d;
        float scale = 1.0f / sqrtf((float)d);
        float *q = host_random(nq, 2.0f), *k = host_random(nkv, 2.0f), *v = host_random(nkv, 1.0f), *out = host_random(nq, 1.0f);
        float *Dq = device_of(q, nq), *Dk = device_of(k, nkv), *Dv = device_of(v, nkv), *Dout = device_of(out, nq);
        cpu_attention_decode(out, q, k, v, positions, BATCH, h, kvh, d, d, scale, kv_stride, kv_stride);
        for (int precision = 0; precision < 2; precision++) {
            ops_set_precision(precision == 1);
            attention_decode(Dout, Dq, Dk, Dv, Dpos, BATCH, h, kvh, d, d, scale, kv_stride, kv_stride);
            char name[160];
            snprintf(name, sizeof name, "gpu attention_decode h=%d kv=%d d=%d%s %s", h, kvh, d,
                     shared ? " (one cache for the batch)" : "", precision ? "bf16" : "fp32");
            check(name, gpu_error(Dout, out, nq), precision ? BF16 : FP32);
        }
        ops_set_precision(false);
        ops_free(Dq), ops_free(Dk), ops_free(Dv), ops_free(Dout);
        free(q), free(k), free(v), free(out);
    }
    // nonapx: 30 steps of GQA from an empty state (o = 0, lse = -inf)
    int kvh = 2, d = 32, steps = 30;
    size_t state_stride = (size_t)heads * (d + 1), ns = BATCH * state_stride, nq = (size_t)BATCH * heads * d;
    size_t nk = (size_t)BATCH * kvh * d;
    float *state = malloc(sizeof(float) * ns), *out = host_random(nq, 1.0f);
    for (size_t i = 0; i < ns; i++) state[i] = i % (d + 1) == (size_t)d ? -INFINITY : 0.0f;
    float *Dstate = device_of(state, ns), *Dout = device_of(out, nq);
    double worst = 0.0;
    for (int t = 0; t < steps; t++) {
        float *q = host_random(nq, 2.0f), *k = host_random(nk, 2.0f), *v = host_random(nk, 1.0f);
        float *Dq = device_of(q, nq), *Dk = device_of(k, nk), *Dv = device_of(v, nk);
        nonapx_state_step(Dout, Dstate, state_stride, Dq, Dk, Dv, BATCH, heads, kvh, d, 1.0f / sqrtf((float)d));
        cpu_nonapx_state_step(out, state, state_stride, q, k, v, BATCH, heads, kvh, d, 1.0f / sqrtf((float)d));
        worst = fmax(worst, fmax(gpu_error(Dout, out, nq), gpu_error(Dstate, state, ns)));
        ops_free(Dq), ops_free(Dk), ops_free(Dv);
        free(q), free(k), free(v);
    }
    check("gpu nonapx_state_step (30 steps from an empty state)", worst, FP32);
    ops_free(Dstate), ops_free(Dout), ops_free(Dpos);
    free(state), free(out);
    bool sizes = true;
    for (int dim = 8; dim <= 128; dim *= 2)
        sizes &= taylor_decode_state_floats(dim) == cpu_taylor_decode_state_floats(dim) &&
                 diag_decode_state_floats(dim) == cpu_diag_decode_state_floats(dim);
    testing_report(sizes, "gpu taylor/diag decode state sizes = the CPU's", "a size differs");
}

// The fused LM head: losses, d_hidden, d_weight, ignored rows, more rows than one chunk.
static void test_cross_entropy(void) {
    int rows = 1500, dim = 64, vocab = 3001;
    size_t nh = (size_t)rows * dim, nw = (size_t)vocab * dim;
    float *h = host_random(nh, 1.0f), *w = host_random(nw, 0.3f), *dh = host_random(nh, 1.0f), *dw = host_random(nw, 1.0f);
    int *t = malloc(sizeof(int) * rows);
    for (int r = 0; r < rows; r++) t[r] = r % 7 == 3 ? -1 : (r * 131) % vocab;
    float *losses = malloc(sizeof(float) * rows);
    float *Dh = device_of(h, nh), *Dw = device_of(w, nw), *Ddh = device_of(dh, nh), *Ddw = device_of(dw, nw);
    int *Dt = device_ints(t, rows);
    float *Dlosses = ops_alloc(sizeof(float) * rows);
    float *Dscratch = ops_alloc(sizeof(float) * lm_head_scratch_floats(rows, vocab));
    float *scratch = malloc(sizeof(float) * cpu_lm_head_scratch_floats(rows, vocab));
    for (int precision = 0; precision < 2; precision++) {
        ops_set_precision(precision == 1);
        double tolerance = precision ? BF16 : FP32;
        double gl = lm_head_cross_entropy(Dlosses, Ddh, Ddw, Dh, Dw, Dt, rows, dim, vocab, 1.0f / rows, Dscratch, NULL);
        double cl = cpu_lm_head_cross_entropy(losses, dh, dw, h, w, t, rows, dim, vocab, 1.0f / rows, scratch, NULL);
        char name[96];
        snprintf(name, sizeof name, "gpu lm_head_cross_entropy loss %s", precision ? "bf16" : "fp32");
        check(name, fabs(gl - cl) / fabs(cl), precision ? 1e-3 : 1e-6);
        snprintf(name, sizeof name, "gpu lm_head_cross_entropy losses, d_hidden, d_weight %s", precision ? "bf16" : "fp32");
        check(name, fmax(gpu_error(Dlosses, losses, rows), fmax(gpu_error(Ddh, dh, nh), gpu_error(Ddw, dw, nw))), tolerance);
    }
    ops_set_precision(false);
}

static void test_refusals(void) {
    const char *refused[] = {"approx", "approx-diag"};
    const char *runs[] = {"standard", "staticembqk", "rndembqk", "fixedseqqk", "nonapx", "mhe-add", "mhe-mul", "mlp"};
    bool ok = true;
    for (int i = 0; i < 2; i++) ok &= ops_backend_refuses(refused[i]) != NULL;
    for (int i = 0; i < 8; i++) ok &= ops_backend_refuses(runs[i]) == NULL;
    testing_report(ok, "gpu backend refuses exactly the mixers without kernels", "wrong verdict");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    cpu_ops_set_threads(4);
    printf("backend %s, BLAS %s\n", ops_backend_name(), ops_blas_core_name());
    test_elementwise();
    test_gemm();
    test_linear_norm_embedding_rope();
    test_attention();
    test_shared_attention();
    test_nonapx();
    test_decode();
    test_cross_entropy();
    test_refusals();
    MPI_Finalize();
    return testing_exit_code();
}
