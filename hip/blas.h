// The GEMM seam of the GPU backend: a row-major c = alpha op(a) op(b) + beta c with fp32
// storage and fp32 accumulation, inputs rounded to bf16 when bf16 is set. Behind it:
// cuBLAS (cublasGemmEx, CUBLAS_COMPUTE_32F or CUBLAS_COMPUTE_32F_FAST_16BF: bf16 tensor
// cores) on NVIDIA; rocBLAS on AMD where ROCm provides it (DECON_ROCBLAS, set by the
// Makefile when rocblas.h is found: Debian has none); our own tiled kernel
// (gemm_tiled.hip) everywhere else, and it is the one the gfx942 compile check builds.
#pragma once
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {  // C linkage: tests/gpu/test_gpu_ops.c (C) calls gemm_tiled directly
#endif

void blas_gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc, bool bf16);
// Our own kernel, callable directly (tests/gpu compares it with the vendor path).
void gemm_tiled(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc, bool bf16);
// "cuBLAS", "rocBLAS" or "tiled": what blas_gemm calls (ops_blas_core_name).
const char *blas_name(void);

#ifdef __cplusplus
}
#endif
