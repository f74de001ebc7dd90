// Rotary position embedding (Su et al. 2021) in the Hugging Face rotate_half layout:
// element i of a head pairs with element i + head_dim/2, and the pair turns by the
// angle pos * theta^(-2i/head_dim). x and d_x are (batch,seq_len,heads,head_dim);
// cos_table and sin_table are (max_positions, head_dim/2).
#include <math.h>

#include "ops/ops.h"

void rope_tables(float *cos_table, float *sin_table, int max_positions, int head_dim, float theta) {
    int half = head_dim / 2;
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < max_positions; p++) {
        for (int i = 0; i < half; i++) {
            double angle = p * pow((double)theta, -2.0 * i / head_dim);
            cos_table[(size_t)p * half + i] = (float)cos(angle);
            sin_table[(size_t)p * half + i] = (float)sin(angle);
        }
    }
}

// Rotates every head of every token by +angle (sign = 1) or -angle (sign = -1).
static void rope_rotate(float *x, const float *cos_table, const float *sin_table, int batch,
                        int seq_len, int heads, int head_dim, float sign) {
    int half = head_dim / 2;
    int tokens = batch * seq_len;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < tokens; t++) {
        int pos = t % seq_len;
        const float *c = cos_table + (size_t)pos * half, *s = sin_table + (size_t)pos * half;
        for (int h = 0; h < heads; h++) {
            float *x1 = x + ((size_t)t * heads + h) * head_dim, *x2 = x1 + half;
            #pragma omp simd
            for (int i = 0; i < half; i++) {
                float a = x1[i], b = x2[i], si = sign * s[i];
                x1[i] = a * c[i] - b * si;
                x2[i] = b * c[i] + a * si;
            }
        }
    }
}

// x <- x cos + rotate_half(x) sin, rotate_half([x1, x2]) = [-x2, x1]
void rope_forward(float *x, const float *cos_table, const float *sin_table, int batch,
                  int seq_len, int heads, int head_dim) {
    rope_rotate(x, cos_table, sin_table, batch, seq_len, heads, head_dim, 1.0f);
}

// The rotation is orthogonal, so its transpose (the gradient) turns by -angle; in place.
void rope_backward(float *d_x, const float *cos_table, const float *sin_table, int batch,
                   int seq_len, int heads, int head_dim) {
    rope_rotate(d_x, cos_table, sin_table, batch, seq_len, heads, head_dim, -1.0f);
}
