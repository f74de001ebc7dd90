// One source for AMD and NVIDIA: the hip/*.hip files are written against the HIP runtime
// API; hipcc / clang -x hip compile them for AMD (gfx942 = MI300X, gfx90a), and nvcc
// compiles them as CUDA (-x cu), where this header maps the HIP names they use onto
// CUDA's. Also here: the bf16 type (__hip_bfloat16 <-> __nv_bfloat16), and the warp
// intrinsics, behind functions that never assume a warp width (warpSize: 64 on CDNA,
// 32 on NVIDIA; lane masks are 64-bit, as AMD's ballot returns).
#pragma once

#if defined(__CUDACC__) && !defined(__HIP__)
// ---- NVIDIA: HIP names onto CUDA ---------------------------------------------------
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define GPU_PLATFORM_NAME "cuda"
typedef cudaError_t hipError_t;
typedef cudaStream_t hipStream_t;
typedef cudaDeviceProp hipDeviceProp_t;
typedef __nv_bfloat16 __hip_bfloat16;
#define hipSuccess cudaSuccess
#define hipGetErrorString cudaGetErrorString
#define hipGetLastError cudaGetLastError
#define hipGetDeviceCount cudaGetDeviceCount
#define hipSetDevice cudaSetDevice
#define hipGetDevice cudaGetDevice
#define hipGetDeviceProperties cudaGetDeviceProperties
#define hipDeviceSynchronize cudaDeviceSynchronize
#define hipMallocManaged cudaMallocManaged
#define hipMemAttachGlobal cudaMemAttachGlobal
#define hipMalloc cudaMalloc
#define hipFree cudaFree
#define hipMemset cudaMemset
#define hipMemsetAsync cudaMemsetAsync
#define hipMemcpy cudaMemcpy
#define hipMemcpyAsync cudaMemcpyAsync
#define hipMemcpy2DAsync cudaMemcpy2DAsync
#define hipMemcpyDefault cudaMemcpyDefault
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipMemcpyDeviceToDevice cudaMemcpyDeviceToDevice
// CUDA 13 takes a cudaMemLocation where earlier CUDA and HIP take a device number.
static inline cudaError_t hipMemPrefetchAsync(const void *ptr, size_t bytes, int device, cudaStream_t stream) {
#if CUDART_VERSION >= 13000
    cudaMemLocation location = {};
    location.type = cudaMemLocationTypeDevice;
    location.id = device;
    return cudaMemPrefetchAsync(ptr, bytes, location, 0, stream);
#else
    return cudaMemPrefetchAsync(ptr, bytes, device, stream);
#endif
}
#define hipStreamSynchronize cudaStreamSynchronize
#define hipFuncSetAttribute cudaFuncSetAttribute
#define hipFuncAttributeMaxDynamicSharedMemorySize cudaFuncAttributeMaxDynamicSharedMemorySize
#define hipLaunchKernelGGL(kernel, grid, block, shared, stream, ...) \
    kernel<<<(grid), (block), (shared), (stream)>>>(__VA_ARGS__)
#define __float2bfloat16 __float2bfloat16
#define __bfloat162float __bfloat162float
// Warp intrinsics: CUDA's take a lane mask (32-bit there: warps are 32 wide).
#define GPU_FULL_MASK 0xffffffffu
__device__ static inline float gpu_shfl_xor(float v, int offset) { return __shfl_xor_sync(GPU_FULL_MASK, v, offset); }
__device__ static inline double gpu_shfl_xor_double(double v, int offset) {
    return __shfl_xor_sync(GPU_FULL_MASK, v, offset);
}
__device__ static inline unsigned long long gpu_ballot(int predicate) {
    return (unsigned long long)__ballot_sync(GPU_FULL_MASK, predicate);
}
#else
// ---- AMD (hipcc, clang -x hip): HIP itself ---------------------------------------------
#include <hip/hip_runtime.h>
#if __has_include(<hip/hip_bf16.h>)
#include <hip/hip_bf16.h>  // ROCm >= 5.7: __hip_bfloat16
#else
#include <hip/hip_bfloat16.h>  // Debian's HIP 5.2: hip_bfloat16 under the newer name
typedef hip_bfloat16 __hip_bfloat16;
#endif
#define GPU_PLATFORM_NAME "hip"
// HIP's warp intrinsics take no mask; __ballot returns a 64-bit mask on every target.
__device__ static inline float gpu_shfl_xor(float v, int offset) { return __shfl_xor(v, offset); }
__device__ static inline double gpu_shfl_xor_double(double v, int offset) { return __shfl_xor(v, offset); }
__device__ static inline unsigned long long gpu_ballot(int predicate) {
    return (unsigned long long)__ballot(predicate);
}
#endif

#include <stdio.h>
#include <stdlib.h>

// Any runtime failure is fatal, with the call and the runtime's reason, in the project's
// one-line error form.
#define GPU_CHECK(call)                                                                      \
    do {                                                                                     \
        hipError_t gpu_check_error_ = (call);                                                \
        if (gpu_check_error_ != hipSuccess) {                                                \
            fprintf(stderr, "decon: error: GPU call %s failed at %s:%d: %s\n", #call, __FILE__, \
                    __LINE__, hipGetErrorString(gpu_check_error_));                          \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)
// After a kernel launch: a bad launch configuration is reported where it happened.
#define GPU_CHECK_LAUNCH() GPU_CHECK(hipGetLastError())

// ---- warp-size-generic reductions (hip/kernel_math.h holds the index math) --------------
// The butterfly over all warpSize lanes: every lane ends with the total.
__device__ static inline float gpu_warp_sum(float v) {
    for (int offset = warpSize / 2; offset > 0; offset /= 2) v += gpu_shfl_xor(v, offset);
    return v;
}
__device__ static inline double gpu_warp_sum_double(double v) {
    for (int offset = warpSize / 2; offset > 0; offset /= 2) v += gpu_shfl_xor_double(v, offset);
    return v;
}
__device__ static inline float gpu_warp_max(float v) {
    for (int offset = warpSize / 2; offset > 0; offset /= 2) v = fmaxf(v, gpu_shfl_xor(v, offset));
    return v;
}
// A block-wide sum through shared memory: scratch holds one value per warp (at most
// 1024 / warpSize). Every thread returns the total. All threads of the block must call.
__device__ static inline double gpu_block_sum_double(double v, double *scratch) {
    int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
    int warps = (blockDim.x + warpSize - 1) / warpSize;
    v = gpu_warp_sum_double(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < warps; w++) total += scratch[w];
    return total;
}
__device__ static inline float gpu_block_max(float v, float *scratch) {
    int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
    int warps = (blockDim.x + warpSize - 1) / warpSize;
    v = gpu_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float best = scratch[0];
    for (int w = 1; w < warps; w++) best = fmaxf(best, scratch[w]);
    return best;
}
// Most warps a block of 1024 threads can have on any target (warpSize >= 32).
#define GPU_MAX_WARPS 32
