// Figures for the CPU ops (never pass/fail): the OpenBLAS sgemm peak the other figures
// should be read against, blocked causal attention forward + backward, and the fused
// LM head + cross entropy. Run with OPENBLAS_CORETYPE=SkylakeX where OpenBLAS 0.3.21
// misdetects the CPU. Usage: bench_ops [threads]   (default 2; sgemm also at 1)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/ops.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t count, float amplitude, unsigned seed) {
    float *x = malloc(sizeof(float) * count);
    if (x == NULL) {
        fprintf(stderr, "bench_ops: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < count; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = amplitude * ((float)(seed >> 8) / 8388608.0f - 1.0f);
    }
    return x;
}

// The fastest of `repeats` runs (after one warm-up) of a benchmark body.
#define BEST_SECONDS(result, repeats, body)                         \
    do {                                                            \
        body;                                                       \
        (result) = INFINITY;                                        \
        for (int rep_ = 0; rep_ < (repeats); rep_++) {              \
            double t0_ = now();                                     \
            body;                                                   \
            double dt_ = now() - t0_;                               \
            if (dt_ < (result)) (result) = dt_;                       \
        }                                                           \
    } while (0)

static double bench_sgemm(int n, int threads) {
    ops_set_threads(threads);
    float *a = random_floats((size_t)n * n, 1.0f, 1), *b = random_floats((size_t)n * n, 1.0f, 2);
    float *c = random_floats((size_t)n * n, 1.0f, 3);
    double seconds;
    BEST_SECONDS(seconds, 3, gemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n));
    double gflops = 2.0 * n * n * (double)n / seconds * 1e-9;
    printf("sgemm %d^3 threads=%d: %.1f GFLOP/s (core %s)\n", n, threads, gflops, ops_blas_core_name());
    free(a), free(b), free(c);
    return gflops;
}

static void bench_attention(int batch, int seq_len, int heads, int kv_heads, int head_dim,
                            int threads, double sgemm_peak) {
    ops_set_threads(threads);
    size_t n_q = (size_t)batch * seq_len * heads * head_dim;
    size_t n_kv = (size_t)batch * seq_len * kv_heads * head_dim;
    float *q = random_floats(n_q, 1.5f, 4), *k = random_floats(n_kv, 1.5f, 5);
    float *v = random_floats(n_kv, 1.0f, 6), *d_out = random_floats(n_q, 1.0f, 7);
    float *out = malloc(sizeof(float) * n_q), *lse = malloc(sizeof(float) * batch * heads * seq_len);
    float *d_q = calloc(n_q, sizeof(float)), *d_k = calloc(n_kv, sizeof(float)), *d_v = calloc(n_kv, sizeof(float));
    float scale = 1.0f / sqrtf((float)head_dim);
    double forward, backward;
    BEST_SECONDS(forward, 5, attention_forward(out, lse, q, k, v, batch, seq_len, heads, kv_heads, head_dim, head_dim, scale));
    BEST_SECONDS(backward, 5, attention_backward(d_q, d_k, d_v, d_out, out, lse, q, k, v, batch, seq_len, heads,
                                                 kv_heads, head_dim, head_dim, scale));
    // Useful flops of the causal triangle (seq_len (seq_len + 1) / 2 score pairs):
    // forward 2 products (q k^T, p v), backward 5 (q k^T again, do v^T, p^T do, ds^T q, ds k).
    double pairs = (double)batch * heads * seq_len * (seq_len + 1) / 2.0;
    double flops_forward = 4.0 * pairs * head_dim, flops_backward = 10.0 * pairs * head_dim;
    double gflops = (flops_forward + flops_backward) / (forward + backward) * 1e-9;
    printf("attention b=%d seq=%d h=%d kv=%d d=%d threads=%d: forward %.1f ms (%.1f GFLOP/s), "
           "backward %.1f ms (%.1f GFLOP/s), forward+backward %.1f GFLOP/s (%.0f%% of sgemm)\n",
           batch, seq_len, heads, kv_heads, head_dim, threads, forward * 1e3,
           flops_forward / forward * 1e-9, backward * 1e3, flops_backward / backward * 1e-9, gflops,
           100.0 * gflops / sgemm_peak);
    free(q), free(k), free(v), free(d_out), free(out), free(lse), free(d_q), free(d_k), free(d_v);
}

static void bench_cross_entropy(int rows, int dim, int vocab, int threads, double sgemm_peak) {
    ops_set_threads(threads);
    float *hidden = random_floats((size_t)rows * dim, 1.0f, 8);
    float *weight = random_floats((size_t)vocab * dim, 0.05f, 9);
    float *d_hidden = calloc((size_t)rows * dim, sizeof(float)), *d_weight = calloc((size_t)vocab * dim, sizeof(float));
    float *losses = malloc(sizeof(float) * rows);
    float *scratch = malloc(sizeof(float) * lm_head_scratch_floats(rows, vocab));
    int *targets = malloc(sizeof(int) * rows);
    for (int r = 0; r < rows; r++) targets[r] = (r * 7919) % vocab;
    double forward, both;
    BEST_SECONDS(forward, 3, lm_head_cross_entropy(losses, NULL, NULL, hidden, weight, targets, rows, dim,
                                                   vocab, 1.0f / rows, scratch, NULL));
    BEST_SECONDS(both, 3, lm_head_cross_entropy(losses, d_hidden, d_weight, hidden, weight, targets, rows,
                                                dim, vocab, 1.0f / rows, scratch, NULL));
    double flops = 2.0 * rows * (double)dim * vocab;  // one of the three products
    double gflops = 3.0 * flops / both * 1e-9;
    printf("lm_head_cross_entropy rows=%d dim=%d vocab=%d threads=%d: loss only %.1f ms (%.1f GFLOP/s), "
           "loss+gradients %.1f ms (%.1f GFLOP/s, %.0f%% of sgemm), scratch %.1f MiB\n",
           rows, dim, vocab, threads, forward * 1e3, flops / forward * 1e-9, both * 1e3, gflops,
           100.0 * gflops / sgemm_peak, (double)lm_head_scratch_floats(rows, vocab) * 4.0 / 1048576.0);
    free(hidden), free(weight), free(d_hidden), free(d_weight), free(losses), free(scratch), free(targets);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1) threads = 1;
    double peak1 = bench_sgemm(2048, 1);
    double peak = threads == 1 ? peak1 : bench_sgemm(2048, threads);
    bench_attention(4, 512, 8, 8, 64, threads, peak);
    if (threads != 1) bench_attention(4, 512, 8, 8, 64, 1, peak1);
    bench_attention(4, 512, 8, 2, 64, threads, peak);
    bench_cross_entropy(2048, 512, 8192, threads, peak);
    if (threads != 1) bench_cross_entropy(2048, 512, 8192, 1, peak1);
    return 0;
}
