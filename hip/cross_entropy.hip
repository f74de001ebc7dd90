// The LM head fused with softmax cross entropy (ops.h), on the GPU: per chunk of rows one
// GEMM makes the chunk's logits in the caller's scratch, a block per row finds the row's
// max, sum of exp(z - max) and target logit, then turns the row into the gradient
// loss_scale * (softmax - onehot) and writes its loss, and two GEMMs send the gradient
// back to d_hidden and d_weight. The full [rows, vocab] matrix never exists. Per-row
// losses stay on the device (in double) and come back with one copy at the end. With a
// vocab shard the row statistics go to the host between the phases (the caller's MPI
// combine; part 2 does it on device buffers). Chunk bookkeeping is kernel_math.h's.
#include <math.h>
#include <string.h>

#include "hip/backend.h"
#include "hip/blas.h"

// Larger chunks than the CPU op's: a GEMM of 1024 rows keeps a GPU busy.
enum { CHUNK_ROWS = 1024, MIN_CHUNK_ROWS = 64 };
static const size_t CHUNK_FLOATS = (size_t)1 << 25;

static int chunk_rows(int rows, int vocab) {
    return km_ce_chunk_rows(rows, vocab, CHUNK_FLOATS, MIN_CHUNK_ROWS, CHUNK_ROWS);
}

extern "C" size_t lm_head_scratch_floats(int rows, int vocab) {
    return (size_t)chunk_rows(rows, vocab) * (size_t)vocab;
}

// Phase 2a: row maxima.
__global__ void row_max_kernel(float *maxima, const float *z, int vocab) {
    __shared__ float scratch[GPU_MAX_WARPS];
    const float *row = z + (size_t)blockIdx.x * vocab;
    float max = -INFINITY;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) max = fmaxf(max, row[j]);
    max = gpu_block_max(max, scratch);
    if (threadIdx.x == 0) maxima[blockIdx.x] = max;
}

// Phase 2b: stats[row] = {sum exp(z - max), z[target]} (0 where this shard lacks it).
__global__ void row_sums_kernel(double *stats, const float *maxima, const float *z, const int *targets,
                                int vocab_start, int vocab) {
    __shared__ double scratch[GPU_MAX_WARPS];
    const float *row = z + (size_t)blockIdx.x * vocab;
    float max = maxima[blockIdx.x];
    double sum = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += (double)expf(row[j] - max);
    sum = gpu_block_sum_double(sum, scratch);
    if (threadIdx.x == 0) {
        int local = targets[blockIdx.x] - vocab_start;
        stats[2 * blockIdx.x] = sum;
        stats[2 * blockIdx.x + 1] = local >= 0 && local < vocab ? (double)row[local] : 0.0;
    }
}

// Phase 3: the row's loss, and the row becomes its gradient (zeros for an ignored row).
__global__ void row_loss_gradient_kernel(float *losses, double *row_losses, float *z, const float *maxima,
                                         const double *stats, const int *targets, int vocab_start, int vocab,
                                         float loss_scale, bool want_gradient) {
    float *row = z + (size_t)blockIdx.x * vocab;
    int target = targets[blockIdx.x];
    bool active = target >= 0;
    float max = maxima[blockIdx.x];
    double sum = stats[2 * blockIdx.x];
    if (threadIdx.x == 0) {
        double loss = active ? km_ce_row_loss(max, sum, stats[2 * blockIdx.x + 1]) : 0.0;
        row_losses[blockIdx.x] = loss;
        losses[blockIdx.x] = (float)loss;
    }
    if (!want_gradient) return;
    int local = target - vocab_start;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        row[j] = active ? km_ce_logit_gradient(row[j], max, sum, j == local, loss_scale) : 0.0f;
}

__global__ void sum_rows_kernel(double *total, const double *row_losses, int rows) {
    __shared__ double scratch[GPU_MAX_WARPS];
    double sum = 0.0;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) sum += row_losses[i];
    sum = gpu_block_sum_double(sum, scratch);
    if (threadIdx.x == 0) *total = sum;
}

extern "C" double lm_head_cross_entropy(float *losses, float *d_hidden, float *d_weight, const float *hidden,
                                        const float *weight, const int *targets, int rows, int dim, int vocab,
                                        float loss_scale, float *scratch, const lm_head_vocab_shard *shard) {
    if (rows <= 0) return 0.0;
    bool want_gradient = d_hidden != NULL || d_weight != NULL;
    bool bf16 = gpu_bf16();
    int vocab_start = shard != NULL ? shard->vocab_start : 0;
    int chunk = chunk_rows(rows, vocab);
    // Workspace: maxima[chunk] | stats[chunk][2] (double) | row_losses[rows] (double) |
    // total (double) | targets[rows] (int) | losses[rows]. The model passes targets and
    // losses as host arrays (the trainer's batch): they are staged through the workspace.
    size_t stats_at = km_ceil_div_size((size_t)chunk, 2) * 2;
    size_t losses_at = stats_at + 4 * (size_t)chunk;
    size_t targets_at = losses_at + 2 * (size_t)rows + 2;
    size_t float_losses_at = targets_at + (size_t)rows;
    float *work = gpu_workspace(float_losses_at + (size_t)rows);
    float *maxima = work;
    double *stats = (double *)(work + stats_at);
    double *row_losses = (double *)(work + losses_at);
    int *device_targets = (int *)(work + targets_at);
    float *device_losses = work + float_losses_at;
    gpu_copy(device_targets, targets, sizeof(int) * (size_t)rows);
    targets = device_targets;
    static float host_maxima[CHUNK_ROWS];
    static double host_stats[2 * CHUNK_ROWS];
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int n = rows - r0 < chunk ? rows - r0 : chunk;
        const float *h = hidden + (size_t)r0 * dim;
        const int *t = targets + r0;
        // Phase 1: logits[n, vocab] = h[n, dim] weight[vocab, dim]^T
        blas_gemm(false, true, n, vocab, dim, 1.0f, h, dim, weight, dim, 0.0f, scratch, vocab, bf16);
        hipLaunchKernelGGL(row_max_kernel, dim3(n), dim3(GPU_THREADS), 0, 0, maxima, scratch, vocab);
        GPU_CHECK_LAUNCH();
        if (shard != NULL) {  // combined over the shards through the host (MPI)
            GPU_CHECK(hipMemcpy(host_maxima, maxima, sizeof(float) * n, hipMemcpyDefault));
            shard->combine_max(shard->context, host_maxima, n);
            GPU_CHECK(hipMemcpy(maxima, host_maxima, sizeof(float) * n, hipMemcpyDefault));
        }
        hipLaunchKernelGGL(row_sums_kernel, dim3(n), dim3(GPU_THREADS), 0, 0, stats, maxima, scratch, t, vocab_start,
                           vocab);
        GPU_CHECK_LAUNCH();
        if (shard != NULL) {
            GPU_CHECK(hipMemcpy(host_stats, stats, sizeof(double) * 2 * n, hipMemcpyDefault));
            shard->combine_sums(shard->context, host_stats, n);
            GPU_CHECK(hipMemcpy(stats, host_stats, sizeof(double) * 2 * n, hipMemcpyDefault));
        }
        hipLaunchKernelGGL(row_loss_gradient_kernel, dim3(n), dim3(GPU_THREADS), 0, 0, device_losses + r0,
                           row_losses + r0, scratch, maxima, stats, t, vocab_start, vocab, loss_scale, want_gradient);
        GPU_CHECK_LAUNCH();
        if (d_hidden != NULL)  // d_hidden[n, dim] += dlogits[n, vocab] weight[vocab, dim]
            blas_gemm(false, false, n, dim, vocab, 1.0f, scratch, vocab, weight, dim, 1.0f, d_hidden + (size_t)r0 * dim,
                      dim, bf16);
        if (d_weight != NULL)  // d_weight[vocab, dim] += dlogits^T h[n, dim]
            blas_gemm(true, false, vocab, dim, n, 1.0f, scratch, vocab, h, dim, 1.0f, d_weight, dim, bf16);
    }
    double *total = row_losses + rows;
    hipLaunchKernelGGL(sum_rows_kernel, dim3(1), dim3(GPU_THREADS), 0, 0, total, row_losses, rows);
    GPU_CHECK_LAUNCH();
    if (losses != NULL) GPU_CHECK(hipMemcpy(losses, device_losses, sizeof(float) * (size_t)rows, hipMemcpyDefault));
    double result = 0.0;
    GPU_CHECK(hipMemcpy(&result, total, sizeof result, hipMemcpyDefault));
    return result;
}
