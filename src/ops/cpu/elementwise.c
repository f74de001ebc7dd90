// Elementwise updates and reductions over flat buffers (residual adds, gradient
// scaling, the global gradient norm). Short buffers stay on one thread.
#include <string.h>

#include "ops/ops.h"

enum { PARALLEL_MIN = 1 << 15 };  // below this many elements a thread team costs more than it saves

// y = value (zero, the common case, as memset)
void fill_floats(float *y, float value, size_t count) {
    if (value == 0.0f) {
        memset(y, 0, count * sizeof(float));
        return;
    }
    for (size_t i = 0; i < count; i++) y[i] = value;
}

void copy_floats(float *y, const float *x, size_t count) { memcpy(y, x, count * sizeof(float)); }

void copy_strided_rows(float *y, size_t y_stride, const float *x, size_t x_stride, size_t rows, size_t width) {
    for (size_t r = 0; r < rows; r++) memcpy(y + r * y_stride, x + r * x_stride, width * sizeof(float));
}

void fill_ints(int *y, int value, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = value;
}

void copy_ints(int *y, const int *x, size_t count) { memcpy(y, x, count * sizeof(int)); }

// y += x
void add_inplace(float *y, const float *x, size_t count) {
    long n = (long)count;
    #pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (long i = 0; i < n; i++) y[i] += x[i];
}

// y *= factor
void scale_inplace(float *y, float factor, size_t count) {
    long n = (long)count;
    #pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (long i = 0; i < n; i++) y[i] *= factor;
}

// sum of x^2, accumulated in double
double sum_of_squares(const float *x, size_t count) {
    long n = (long)count;
    double sum = 0.0;
    #pragma omp parallel for simd schedule(static) reduction(+ : sum) if (n >= PARALLEL_MIN)
    for (long i = 0; i < n; i++) sum += (double)x[i] * x[i];
    return sum;
}
