// Private to hip/: what the GPU backend's files share. The ops of src/ops/ops.h (C) are
// defined here with C linkage; the kernels are C++ (HIP, or CUDA through gpu_compat.h).
// All work goes to one stream (the default), in order, so an op may follow another
// without synchronising; the host waits only where it reads results (ops_to_host, the
// scalars sum_of_squares and lm_head_cross_entropy return).
#pragma once
#include "hip/gpu_compat.h"
#include "hip/kernel_math.h"

extern "C" {
#include "ops/ops.h"
// core/errors.h uses C11's _Noreturn, which C++ lacks: the one function we need.
__attribute__((noreturn)) void fatal(const char *format, ...);
}

// Threads per block of the elementwise and row kernels (a multiple of every warp width).
enum { GPU_THREADS = 256 };

// Blocks for count elements, one per thread, capped (the kernels loop grid-stride).
static inline unsigned gpu_blocks(size_t count) {
    size_t blocks = km_ceil_div_size(count, GPU_THREADS);
    if (blocks < 1) blocks = 1;
    return blocks > 65535u * 4u ? 65535u * 4u : (unsigned)blocks;
}

// Starts the runtime once: picks this rank's device (memory.hip).
void gpu_runtime_start(void);
// Whether GEMM and attention inputs are rounded to bf16 (train.precision = bf16).
bool gpu_bf16(void);
// The backend's workspace (device memory), at least floats long; grows only when an op
// needs more than was reserved (ops_workspace_reserve before the step loop).
float *gpu_workspace(size_t floats);
// A device copy of count bytes (any direction; managed or device memory), on the stream.
void gpu_copy(void *dst, const void *src, size_t bytes);

// The logistic sigmoid of silu(x) = x sigmoid(x) (SwiGLU; nonapx's query activation).
__device__ static inline float gpu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Rounds to bf16 when the precision asks for it: the one place inputs lose precision.
__device__ static inline float gpu_input(float x, bool bf16) { return bf16 ? km_round_bf16(x) : x; }
