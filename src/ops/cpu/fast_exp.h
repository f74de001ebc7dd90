// Private to the CPU backend: an expf that the compiler vectorises. glibc's expf is a
// scalar call without -ffast-math, and the softmaxes of attention and of the LM head
// evaluate one exponential per score, so a scalar call would dominate their time.
// Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, and the Cephes degree-7
// polynomial; relative error below 1e-7 on [-87, 88]. Arguments are clamped to that
// range (exp(-87) ~ 1.6e-38 stands in for anything smaller), so there is no overflow,
// no denormal and no branch. Needs the default round-to-nearest mode.
#pragma once
#include <stdint.h>
#include <string.h>

static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer.
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;  // ln2 split in a short high part and a correction
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;  // 2^n
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return y * two_n;
}

// The logistic function on fast_expf (SiLU of SwiGLU and of nonapx's scores).
static inline float sigmoid(float x) { return 1.0f / (1.0f + fast_expf(-x)); }
