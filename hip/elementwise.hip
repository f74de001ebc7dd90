// Elementwise ops and the reductions that return host scalars: fill, copy, strided rows,
// add, scale, sum of squares, SwiGLU, AdamW. One thread per element, grid-stride.
#include <math.h>

#include "hip/backend.h"

#define GRID_STRIDE(i, count) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (count); i += (size_t)gridDim.x * blockDim.x)

template <typename T> __global__ void fill_kernel(T *y, T value, size_t count) {
    GRID_STRIDE(i, count) y[i] = value;
}

__global__ void add_kernel(float *y, const float *x, size_t count) {
    GRID_STRIDE(i, count) y[i] += x[i];
}

__global__ void scale_kernel(float *y, float factor, size_t count) {
    GRID_STRIDE(i, count) y[i] *= factor;
}

#define LAUNCH(kernel, count, ...)                                                              \
    do {                                                                                        \
        if ((count) == 0) break;                                                                \
        hipLaunchKernelGGL(kernel, dim3(gpu_blocks(count)), dim3(GPU_THREADS), 0, 0, __VA_ARGS__); \
        GPU_CHECK_LAUNCH();                                                                     \
    } while (0)

extern "C" {

void fill_floats(float *y, float value, size_t count) { LAUNCH(fill_kernel<float>, count, y, value, count); }
void fill_ints(int *y, int value, size_t count) { LAUNCH(fill_kernel<int>, count, y, value, count); }
void copy_floats(float *y, const float *x, size_t count) { gpu_copy(y, x, count * sizeof(float)); }
void copy_ints(int *y, const int *x, size_t count) { gpu_copy(y, x, count * sizeof(int)); }

void copy_strided_rows(float *y, size_t y_stride, const float *x, size_t x_stride, size_t rows, size_t width) {
    if (rows == 0 || width == 0) return;
    GPU_CHECK(hipMemcpy2DAsync(y, y_stride * sizeof(float), x, x_stride * sizeof(float), width * sizeof(float), rows,
                               hipMemcpyDefault, 0));
}

void add_inplace(float *y, const float *x, size_t count) { LAUNCH(add_kernel, count, y, x, count); }
void scale_inplace(float *y, float factor, size_t count) { LAUNCH(scale_kernel, count, y, factor, count); }

}  // extern "C"

// ---- sum of squares, in double, deterministic: fixed blocks, partials summed in order ----
enum { SQUARE_BLOCKS = 512 };

__global__ void square_partials_kernel(double *partials, const float *x, size_t count) {
    __shared__ double scratch[GPU_MAX_WARPS];
    double sum = 0.0;
    GRID_STRIDE(i, count) sum += (double)x[i] * (double)x[i];
    sum = gpu_block_sum_double(sum, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(double *total, const double *partials, int count) {
    __shared__ double scratch[GPU_MAX_WARPS];
    double sum = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
    sum = gpu_block_sum_double(sum, scratch);
    if (threadIdx.x == 0) *total = sum;
}

extern "C" double sum_of_squares(const float *x, size_t count) {
    if (count == 0) return 0.0;
    double *partials = (double *)gpu_workspace(2 * (SQUARE_BLOCKS + 1));
    hipLaunchKernelGGL(square_partials_kernel, dim3(SQUARE_BLOCKS), dim3(GPU_THREADS), 0, 0, partials, x, count);
    GPU_CHECK_LAUNCH();
    hipLaunchKernelGGL(sum_partials_kernel, dim3(1), dim3(GPU_THREADS), 0, 0, partials + SQUARE_BLOCKS, partials,
                       (int)SQUARE_BLOCKS);
    GPU_CHECK_LAUNCH();
    double total = 0.0;
    GPU_CHECK(hipMemcpy(&total, partials + SQUARE_BLOCKS, sizeof total, hipMemcpyDefault));
    return total;
}

// ---- SwiGLU --------------------------------------------------------------------------
__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, size_t count) {
    GRID_STRIDE(i, count) {
        float g = gate[i];
        out[i] = g * gpu_sigmoid(g) * up[i];
    }
}

// d silu(g) / dg = s (1 + g (1 - s)), s = sigmoid(g)
__global__ void swiglu_backward_kernel(float *d_gate, float *d_up, const float *d_out, const float *gate,
                                       const float *up, size_t count) {
    GRID_STRIDE(i, count) {
        float g = gate[i], s = gpu_sigmoid(g), dy = d_out[i];
        if (d_gate) d_gate[i] += dy * up[i] * s * (1.0f + g * (1.0f - s));
        if (d_up) d_up[i] += dy * g * s;
    }
}

extern "C" void swiglu_forward(float *out, const float *gate, const float *up, size_t count) {
    LAUNCH(swiglu_forward_kernel, count, out, gate, up, count);
}

extern "C" void swiglu_backward(float *d_gate, float *d_up, const float *d_out, const float *gate, const float *up,
                                size_t count) {
    LAUNCH(swiglu_backward_kernel, count, d_gate, d_up, d_out, gate, up, count);
}

// ---- AdamW over the flat buffer; grad_scale carries the clip factor ----------------------
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t count, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float correction1, float correction2,
                             float grad_scale) {
    GRID_STRIDE(i, count) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float update = (mi / correction1) / (sqrtf(vi / correction2) + eps);
        param[i] -= lr * (update + weight_decay * param[i]);
    }
}

extern "C" void adamw_update(float *param, const float *grad, float *m, float *v, size_t count, float lr, float beta1,
                             float beta2, float eps, float weight_decay, int step, float grad_scale) {
    // Bias corrections in double on the host, as the CPU op does.
    float correction1 = (float)(1.0 - pow((double)beta1, step));
    float correction2 = (float)(1.0 - pow((double)beta2, step));
    LAUNCH(adamw_kernel, count, param, grad, m, v, count, lr, beta1, beta2, eps, weight_decay, correction1,
           correction2, grad_scale);
}
