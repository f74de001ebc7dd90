// blas.h's seam: the vendor GEMM where there is one, our tiled kernel elsewhere.
// Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T, so the column-major
// vendor call takes b first, with n and m swapped.
#include "hip/backend.h"
#include "hip/blas.h"

#if defined(__CUDACC__) && !defined(__HIP__)
#include <cublas_v2.h>

static cublasHandle_t handle;

static void check(cublasStatus_t status, const char *what) {
    if (status != CUBLAS_STATUS_SUCCESS) fatal("cuBLAS %s failed (status %d)", what, (int)status);
}

void blas_gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc, bool bf16) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {  // nothing to multiply (cuBLAS would reject the leading dimensions): c = beta c
        gemm_tiled(transpose_a, transpose_b, m, n, 0, alpha, a, lda, b, ldb, beta, c, ldc, bf16);
        return;
    }
    if (!handle) {
        gpu_runtime_start();
        check(cublasCreate(&handle), "cublasCreate");
    }
    // FAST_16BF: cuBLAS rounds the fp32 inputs to bf16 and runs the bf16 tensor cores,
    // accumulating in fp32 (what train.precision = bf16 means for a GEMM).
    cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    check(cublasGemmEx(handle, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                       k, &alpha, b, CUDA_R_32F, ldb, a, CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc, compute,
                       CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
}

const char *blas_name(void) { return "cuBLAS"; }

#elif defined(DECON_ROCBLAS)
#include <rocblas/rocblas.h>

static rocblas_handle handle;

void blas_gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc, bool bf16) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || bf16) {  // rocBLAS has no fp32-in bf16-compute mode: our kernel rounds
        gemm_tiled(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bf16);
        return;
    }
    if (!handle) {
        gpu_runtime_start();
        if (rocblas_create_handle(&handle) != rocblas_status_success) fatal("rocblas_create_handle failed");
    }
    rocblas_status status = rocblas_sgemm(handle, transpose_b ? rocblas_operation_transpose : rocblas_operation_none,
                                          transpose_a ? rocblas_operation_transpose : rocblas_operation_none, n, m,
                                          k, &alpha, b, ldb, a, lda, &beta, c, ldc);
    if (status != rocblas_status_success) fatal("rocblas_sgemm failed (status %d)", (int)status);
}

const char *blas_name(void) { return "rocBLAS"; }

#else
void blas_gemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc, bool bf16) {
    gemm_tiled(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bf16);
}

const char *blas_name(void) { return "tiled"; }
#endif
