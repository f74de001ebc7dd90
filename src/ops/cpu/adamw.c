// AdamW (Loshchilov & Hutter 2019): Adam moments with decoupled weight decay, one flat
// loop over param, grad, m and v (all of length count). Memory-bound; sqrtf keeps its
// errno branch under the project flags, so the loop runs scalar (about 3 ns/element on
// one core), which is negligible next to a training step.
#include <math.h>

#include "ops/ops.h"

// g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// param -= lr * ( (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps) + weight_decay * param )
void adamw_update(float *param, const float *grad, float *m, float *v, size_t count,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  int step, float grad_scale) {
    // Bias corrections in double: 1 - 0.9999^step loses digits in float for small steps.
    float correction1 = (float)(1.0 - pow((double)beta1, step));
    float correction2 = (float)(1.0 - pow((double)beta2, step));
    float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2;
    long n = (long)count;
    #pragma omp parallel for schedule(static) if (n >= (1 << 15))
    for (long i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + one_minus_beta1 * g;
        float vi = beta2 * v[i] + one_minus_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float update = (mi / correction1) / (sqrtf(vi / correction2) + eps);
        param[i] -= lr * (update + weight_decay * param[i]);
    }
}
