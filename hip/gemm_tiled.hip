// Our own GEMM kernel: 64 x 64 tiles of c per block, 256 threads each computing a 4 x 4
// patch, the k dimension in steps of 16 through shared memory; fp32 accumulation, inputs
// rounded to bf16 when asked. Correct for any shapes, strides and transposes (the edges
// are guarded), independent of the warp width. It serves where no vendor BLAS exists
// (AMD without ROCm's rocBLAS) and is what the gfx942 compile check builds; the vendor
// libraries are faster on both platforms.
#include "hip/backend.h"
#include "hip/blas.h"

enum { TILE_M = 64, TILE_N = 64, TILE_K = 16, PATCH = 4 };

__global__ void gemm_tiled_kernel(int transpose_a, int transpose_b, int m, int n, int k, float alpha,
                                  const float *a, int lda, const float *b, int ldb, float beta, float *c,
                                  int ldc, bool bf16) {
    __shared__ float a_tile[TILE_K][TILE_M + 1];
    __shared__ float b_tile[TILE_K][TILE_N + 1];
    int tx = threadIdx.x % (TILE_N / PATCH), ty = threadIdx.x / (TILE_N / PATCH);
    int row0 = blockIdx.y * TILE_M, col0 = blockIdx.x * TILE_N;
    float acc[PATCH][PATCH];
    for (int i = 0; i < PATCH; i++)
        for (int j = 0; j < PATCH; j++) acc[i][j] = 0.0f;
    for (int p0 = 0; p0 < k; p0 += TILE_K) {
        // 256 threads load 64 x 16 of op(a) and 16 x 64 of op(b): 4 elements each.
        for (int e = threadIdx.x; e < TILE_M * TILE_K; e += blockDim.x) {
            int i = e / TILE_K, p = e % TILE_K;
            int gi = row0 + i, gp = p0 + p;
            a_tile[p][i] = gi < m && gp < k ? gpu_input(a[km_gemm_a_index(transpose_a, lda, gi, gp)], bf16) : 0.0f;
        }
        for (int e = threadIdx.x; e < TILE_K * TILE_N; e += blockDim.x) {
            int p = e / TILE_N, j = e % TILE_N;
            int gp = p0 + p, gj = col0 + j;
            b_tile[p][j] = gp < k && gj < n ? gpu_input(b[km_gemm_b_index(transpose_b, ldb, gp, gj)], bf16) : 0.0f;
        }
        __syncthreads();
        for (int p = 0; p < TILE_K; p++) {
            float av[PATCH], bv[PATCH];
            for (int i = 0; i < PATCH; i++) av[i] = a_tile[p][ty * PATCH + i];
            for (int j = 0; j < PATCH; j++) bv[j] = b_tile[p][tx * PATCH + j];
            for (int i = 0; i < PATCH; i++)
                for (int j = 0; j < PATCH; j++) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < PATCH; i++) {
        int gi = row0 + ty * PATCH + i;
        if (gi >= m) continue;
        for (int j = 0; j < PATCH; j++) {
            int gj = col0 + tx * PATCH + j;
            if (gj >= n) continue;
            float *cij = c + (size_t)gi * ldc + gj;
            *cij = km_gemm_epilogue(acc[i][j], alpha, beta, beta == 0.0f ? 0.0f : *cij);
        }
    }
}

void gemm_tiled(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc, bool bf16) {
    if (m <= 0 || n <= 0) return;
    dim3 grid((unsigned)km_ceil_div(n, TILE_N), (unsigned)km_ceil_div(m, TILE_M));
    hipLaunchKernelGGL(gemm_tiled_kernel, grid, dim3((TILE_M / PATCH) * (TILE_N / PATCH)), 0, 0,
                       (int)transpose_a, (int)transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bf16);
    GPU_CHECK_LAUNCH();
}
