// The LM head fused with softmax cross entropy. hidden is (rows,dim), weight (vocab,dim)
// (the embedding table when tied, or this rank's rows of it), targets (rows); rows with a
// negative target are ignored. The logits exist one chunk of rows at a time, in scratch
// (chunk,vocab). Per chunk the op runs in phases:
//   1. logits: one sgemm;
//   2. row statistics: the row maximum, then exp(z - max) in place, its sum and the
//      target logit (between the two, and after, the caller's vocab shard combines them
//      over the ranks that hold the other vocabulary rows; nothing on one rank);
//   3. gradient: each row becomes loss_scale * (softmax - onehot), which two more sgemms
//      send back to d_hidden (+= dlogits weight) and d_weight (+= dlogits^T hidden).
// Without a vocab shard every row runs phases 2 and 3 at once, while it is in cache; the
// phase functions are the same either way, so one rank and several compute the same
// numbers up to the order of the sums. The one exponential is fast_expf (relative error
// below 1e-7, ops/cpu/fast_exp.h).
#include <math.h>
#include <string.h>

#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

// Rows per chunk: 256 keeps the three sgemms near their peak (512 or more gains under 5%
// at vocab 8192), and a large vocabulary shrinks the chunk so scratch stays within
// CHUNK_FLOATS (64 MiB), but never below 64 rows.
enum { CHUNK_ROWS = 256, MIN_CHUNK_ROWS = 64, CHUNK_FLOATS = 1 << 24 };

static int chunk_rows(int rows, int vocab) {
    int chunk = CHUNK_FLOATS / (vocab > 0 ? vocab : 1);
    chunk = chunk > CHUNK_ROWS ? CHUNK_ROWS : chunk < MIN_CHUNK_ROWS ? MIN_CHUNK_ROWS : chunk;
    if (rows < 1) rows = 1;
    return rows < chunk ? rows : chunk;
}

size_t lm_head_scratch_floats(int rows, int vocab) {
    return (size_t)chunk_rows(rows, vocab) * (size_t)vocab;
}

// Phase 2a: the maximum of one row of logits z[vocab].
static float row_max(const float *z, int vocab) {
    float max = z[0];
    #pragma omp simd reduction(max : max)
    for (int j = 0; j < vocab; j++) max = z[j] > max ? z[j] : max;
    return max;
}

// Phase 2b: z becomes exp(z - max); stats = {sum of it, z[target]} (0 when this shard
// does not hold the target, local_target outside [0, vocab)).
static void row_sums(double stats[2], float *z, float max, int local_target, int vocab) {
    stats[1] = local_target >= 0 && local_target < vocab ? (double)z[local_target] : 0.0;
    // Two passes: GCC 12 does not vectorise one loop that both exponentiates and sums in double.
    #pragma omp simd
    for (int j = 0; j < vocab; j++) z[j] = fast_expf(z[j] - max);
    double sum = 0.0;
    #pragma omp simd reduction(+ : sum)
    for (int j = 0; j < vocab; j++) sum += z[j];
    stats[0] = sum;
}

// Phase 3: the row's loss -log softmax[target] from the (combined) statistics; when
// want_gradient, z = exp(z - max) becomes loss_scale * (softmax - onehot(target)).
static double row_loss_gradient(float *z, float max, const double stats[2], int local_target, int vocab,
                                float loss_scale, bool want_gradient) {
    double loss = (double)max + log(stats[0]) - stats[1];
    if (want_gradient) {
        float factor = (float)(loss_scale / stats[0]);
        #pragma omp simd
        for (int j = 0; j < vocab; j++) z[j] *= factor;
        if (local_target >= 0 && local_target < vocab) z[local_target] -= loss_scale;
    }
    return loss;
}

double lm_head_cross_entropy(float *losses, float *d_hidden, float *d_weight,
                             const float *hidden, const float *weight, const int *targets,
                             int rows, int dim, int vocab, float loss_scale, float *scratch,
                             const lm_head_vocab_shard *shard) {
    bool want_gradient = d_hidden != NULL || d_weight != NULL;
    int vocab_start = shard != NULL ? shard->vocab_start : 0;
    int chunk = chunk_rows(rows, vocab);
    float maxima[CHUNK_ROWS];
    double stats[CHUNK_ROWS][2];
    double total = 0.0;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int n = rows - r0 < chunk ? rows - r0 : chunk;
        const float *h = hidden + (size_t)r0 * dim;
        const int *t = targets + r0;
        int active = 0;
        for (int i = 0; i < n; i++) active += t[i] >= 0;
        if (active == 0) {  // the same on every shard: targets are replicated
            if (losses != NULL) memset(losses + r0, 0, sizeof(float) * n);
            continue;
        }
        // Phase 1: logits[n,vocab] = h[n,dim] weight[vocab,dim]^T
        gemm(false, true, n, vocab, dim, 1.0f, h, dim, weight, dim, 0.0f, scratch, vocab);
        if (shard != NULL) {  // phase 2 for every row, combined over the shards
            #pragma omp parallel for schedule(static)
            for (int i = 0; i < n; i++) maxima[i] = row_max(scratch + (size_t)i * vocab, vocab);
            shard->combine_max(shard->context, maxima, n);
            #pragma omp parallel for schedule(static)
            for (int i = 0; i < n; i++)
                row_sums(stats[i], scratch + (size_t)i * vocab, maxima[i], t[i] - vocab_start, vocab);
            shard->combine_sums(shard->context, &stats[0][0], n);
        }
        double chunk_loss = 0.0;
        #pragma omp parallel for schedule(static) reduction(+ : chunk_loss)
        for (int i = 0; i < n; i++) {
            float *z = scratch + (size_t)i * vocab;
            double loss = 0.0;
            if (t[i] >= 0) {
                if (shard == NULL) {  // phase 2 of this row alone: the whole vocabulary is here
                    maxima[i] = row_max(z, vocab);
                    row_sums(stats[i], z, maxima[i], t[i], vocab);
                }
                loss = row_loss_gradient(z, maxima[i], stats[i], t[i] - vocab_start, vocab, loss_scale,
                                         want_gradient);
            } else if (want_gradient) {
                memset(z, 0, sizeof(float) * vocab);  // an ignored row sends back nothing
            }
            if (losses != NULL) losses[r0 + i] = (float)loss;
            chunk_loss += loss;
        }
        total += chunk_loss;
        if (d_hidden != NULL)  // d_hidden[n,dim] += dlogits[n,vocab] weight[vocab,dim]
            gemm(false, false, n, dim, vocab, 1.0f, scratch, vocab, weight, dim, 1.0f,
                 d_hidden + (size_t)r0 * dim, dim);
        if (d_weight != NULL)  // d_weight[vocab,dim] += dlogits^T h[n,dim]
            gemm(true, false, vocab, dim, n, 1.0f, scratch, vocab, h, dim, 1.0f, d_weight, dim);
    }
    return total;
}
