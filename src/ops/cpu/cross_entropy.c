// The LM head fused with softmax cross entropy. hidden is (rows,dim), weight (vocab,dim)
// (the embedding table when tied), targets (rows); rows with a negative target are
// ignored. The logits exist one chunk of rows at a time, in scratch (chunk,vocab): the
// chunk's logits come from one sgemm, each row becomes its softmax in place, then its
// gradient loss_scale * (softmax - onehot), which two more sgemms send back to
// d_hidden (+= dlogits weight) and d_weight (+= dlogits^T hidden).
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

// One row of logits z[vocab]: returns -log softmax(z)[target]. When want_gradient, z
// becomes loss_scale * (softmax(z) - onehot(target)).
static double row_loss(float *z, int target, int vocab, float loss_scale, bool want_gradient) {
    float max = z[0];
    #pragma omp simd reduction(max : max)
    for (int j = 0; j < vocab; j++) max = z[j] > max ? z[j] : max;
    float target_logit = z[target];
    // Two passes: GCC 12 does not vectorise one loop that both exponentiates and sums in double.
    #pragma omp simd
    for (int j = 0; j < vocab; j++) z[j] = fast_expf(z[j] - max);
    double sum = 0.0;
    #pragma omp simd reduction(+ : sum)
    for (int j = 0; j < vocab; j++) sum += z[j];
    double loss = (double)max + log(sum) - (double)target_logit;
    if (want_gradient) {
        float factor = (float)(loss_scale / sum);
        #pragma omp simd
        for (int j = 0; j < vocab; j++) z[j] *= factor;
        z[target] -= loss_scale;
    }
    return loss;
}

double lm_head_cross_entropy(float *losses, float *d_hidden, float *d_weight,
                             const float *hidden, const float *weight, const int *targets,
                             int rows, int dim, int vocab, float loss_scale, float *scratch) {
    bool want_gradient = d_hidden != NULL || d_weight != NULL;
    int chunk = chunk_rows(rows, vocab);
    double total = 0.0;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int n = rows - r0 < chunk ? rows - r0 : chunk;
        const float *h = hidden + (size_t)r0 * dim;
        int active = 0;
        for (int i = 0; i < n; i++) active += targets[r0 + i] >= 0;
        if (active == 0) {
            if (losses != NULL) memset(losses + r0, 0, sizeof(float) * n);
            continue;
        }
        // logits[n,vocab] = h[n,dim] weight[vocab,dim]^T
        gemm(false, true, n, vocab, dim, 1.0f, h, dim, weight, dim, 0.0f, scratch, vocab);
        double chunk_loss = 0.0;
        #pragma omp parallel for schedule(static) reduction(+ : chunk_loss)
        for (int i = 0; i < n; i++) {
            float *z = scratch + (size_t)i * vocab;
            int target = targets[r0 + i];
            double loss = 0.0;
            if (target >= 0) {
                loss = row_loss(z, target, vocab, loss_scale, want_gradient);
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
