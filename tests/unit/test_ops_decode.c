// The decoding ops (ops.h, "decoding"; ops/cpu/decode_attention.c) against plain loops
// and the training kernels they must agree with, one row at a time: the attention of the
// query at position i over a cache of rows 0..i is row i of attention_forward; a
// recurrent state fed rows 0..i and read with query i is row i of the linear mixers'
// forward (taylor: across the chunk boundary at 64). fp32 in different summation orders:
// limit 1e-5 norm-wise (measured ~1e-7); a wrong position or a missing row is O(1).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../testing.h"
#include "core/errors.h"
#include "core/rng.h"
#include "ops/ops.h"

enum { L = 70, HEADS = 4, KV = 2, DH = 8, Q_DIM = HEADS * DH, KV_DIM = KV * DH };
static const double LIMIT = 1e-5;

static float *random_floats(size_t n, uint64_t stream) {
    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(77, stream, i);
    return x;
}

static double relative(const float *a, const float *b, size_t n) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        ref += (double)b[i] * b[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

int main(void) {
    ops_set_threads(2);
    float *q = random_floats((size_t)L * Q_DIM, 1), *k = random_floats((size_t)L * KV_DIM, 2);
    float *v = random_floats((size_t)L * KV_DIM, 3), *want = xmalloc((size_t)L * Q_DIM * sizeof(float));
    float *got = xcalloc((size_t)L * Q_DIM, sizeof(float)), *lse = xmalloc((size_t)L * HEADS * sizeof(float));
    float scale = 1.0f / sqrtf((float)DH);
    int positions[L];
    for (int i = 0; i < L; i++) positions[i] = i;

    // rows to and from positions: plain loops, exact
    float cache[3 * 5 * 4] = {0}, rows[3 * 4], back[3 * 4];
    for (int i = 0; i < 12; i++) rows[i] = (float)i + 1;
    int at[3] = {4, 0, 2};
    copy_rows_to_positions(cache, 20, rows, at, 3, 4);
    copy_rows_from_positions(back, cache, 20, at, 3, 4);
    bool exact = true;
    for (int i = 0; i < 12; i++) exact &= back[i] == rows[i];
    for (int b = 0; b < 3; b++)
        for (int j = 0; j < 4; j++) exact &= cache[b * 20 + at[b] * 4 + j] == rows[b * 4 + j];
    testing_report(exact, "copy_rows_to_positions / copy_rows_from_positions = plain loops", "differ");

    // RoPE at positions = rope_forward's row at that position
    float *cos_t = xmalloc((size_t)L * DH / 2 * sizeof(float)), *sin_t = xmalloc((size_t)L * DH / 2 * sizeof(float));
    rope_tables(cos_t, sin_t, L, DH, 10000.0f);
    memcpy(want, q, (size_t)L * Q_DIM * sizeof(float));
    memcpy(got, q, (size_t)L * Q_DIM * sizeof(float));
    rope_forward(want, cos_t, sin_t, 1, L, HEADS, DH);
    rope_at_positions(got, cos_t, sin_t, positions, L, HEADS, DH);
    double e = relative(got, want, (size_t)L * Q_DIM);
    testing_report(e < LIMIT, "rope_at_positions = rope_forward row by row", "%.3g", e);

    // attention over a cache: L sequences sharing one cache (stride 0), query i at position i
    attention_forward(want, lse, q, k, v, 1, L, HEADS, KV, DH, DH, scale);
    attention_decode(got, q, k, v, positions, L, HEADS, KV, DH, DH, scale, 0, 0);
    e = relative(got, want, (size_t)L * Q_DIM);
    testing_report(e < LIMIT, "attention_decode = attention_forward at every position (GQA)", "%.3g", e);

    // approx: the recurrent state fed one row at a time
    size_t taylor = KV * taylor_decode_state_floats(DH);
    float *state = xcalloc(taylor, sizeof(float));
    taylor_attention_forward(want, lse, q, k, v, 1, L, HEADS, KV, DH, scale);
    for (int i = 0; i < L; i++) {
        taylor_state_update(state, 0, k + (size_t)i * KV_DIM, v + (size_t)i * KV_DIM, 1, 1, KV, DH, scale);
        taylor_state_read(got + (size_t)i * Q_DIM, state, 0, q + (size_t)i * Q_DIM, 1, HEADS, KV, DH, scale);
    }
    e = relative(got, want, (size_t)L * Q_DIM);
    testing_report(e < LIMIT, "taylor_state_update/read = taylor_attention_forward (chunked) at every position", "%.3g",
                   e);
    free(state);

    // approx-diag
    state = xcalloc(KV * diag_decode_state_floats(DH), sizeof(float));
    diag_attention_forward(want, q, k, v, 1, L, HEADS, KV, DH, scale, 0.1f, 1e-6f);
    for (int i = 0; i < L; i++) {
        diag_state_update(state, 0, k + (size_t)i * KV_DIM, v + (size_t)i * KV_DIM, 1, 1, KV, DH);
        diag_state_read(got + (size_t)i * Q_DIM, state, 0, q + (size_t)i * Q_DIM, positions + i, 1, HEADS, KV, DH,
                        scale, 0.1f, 1e-6f);
    }
    e = relative(got, want, (size_t)L * Q_DIM);
    testing_report(e < LIMIT, "diag_state_update/read = diag_attention_forward at every position", "%.3g", e);
    free(state);

    // nonapx from the empty state (o = 0, lse = -inf)
    state = xcalloc((size_t)HEADS * (DH + 1), sizeof(float));
    for (int h = 0; h < HEADS; h++) state[h * (DH + 1) + DH] = -INFINITY;
    float *score = xmalloc((size_t)L * HEADS * sizeof(float));
    nonapx_attention_forward(want, score, lse, q, k, v, 1, L, HEADS, KV, DH, scale);
    for (int i = 0; i < L; i++)
        nonapx_state_step(got + (size_t)i * Q_DIM, state, 0, q + (size_t)i * Q_DIM, k + (size_t)i * KV_DIM,
                          v + (size_t)i * KV_DIM, 1, HEADS, KV, DH, scale);
    e = relative(got, want, (size_t)L * Q_DIM);
    testing_report(e < LIMIT, "nonapx_state_step = nonapx_attention_forward at every position", "%.3g", e);
    bool lse_ok = true;
    for (int h = 0; h < HEADS; h++)
        lse_ok &= fabsf(state[h * (DH + 1) + DH] - lse[(size_t)h * L + L - 1]) < 1e-5f * (1.0f + fabsf(lse[(size_t)h * L + L - 1]));
    testing_report(lse_ok, "nonapx_state_step's logsumexp = the forward's at the last position", "differ");
    free(score);
    free(state);
    free(q);
    free(k);
    free(v);
    free(want);
    free(got);
    free(lse);
    free(cos_t);
    free(sin_t);
    return testing_exit_code();
}
