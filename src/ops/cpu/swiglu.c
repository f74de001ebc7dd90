// SwiGLU gating of the MLP: out = silu(gate) * up, elementwise; silu(g) = g * sigmoid(g).
#include "ops/cpu/fast_exp.h"
#include "ops/ops.h"

enum { PARALLEL_MIN = 1 << 14 };

void swiglu_forward(float *out, const float *gate, const float *up, size_t count) {
    long n = (long)count;
    #pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (long i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// d_gate += d_out * up * silu'(gate), silu'(g) = s (1 + g (1 - s)); d_up += d_out * silu(gate)
void swiglu_backward(float *d_gate, float *d_up, const float *d_out, const float *gate,
                     const float *up, size_t count) {
    long n = (long)count;
    #pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (long i = 0; i < n; i++) {
        float g = gate[i], s = sigmoid(g);
        if (d_gate != NULL) d_gate[i] += d_out[i] * up[i] * s * (1.0f + g * (1.0f - s));
        if (d_up != NULL) d_up[i] += d_out[i] * g * s;
    }
}
