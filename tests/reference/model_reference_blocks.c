// The plain building blocks of the double reference (model_reference_internal.h): tensor
// lookup by name, linear layers, RMSNorm and RoPE, each a loop over plain arrays.
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/errors.h"
#include "model_reference_internal.h"

ref_tensor ref_lookup(ref_context *x, bool required, int64_t d0, int64_t d1, const char *format, ...) {
    char name[PARAM_NAME_MAX + 32];
    va_list args;
    va_start(args, format);
    vsnprintf(name, sizeof name, format, args);
    va_end(args);
    ref_tensor t = {NULL, NULL};
    int index = params_find(x->registry, name);
    if (index < 0) {
        if (required) fatal("reference: tensor %s is missing from the registry", name);
        return t;
    }
    const param_info *p = &x->registry->items[index];
    int ndim = d1 > 0 ? 2 : 1;
    int64_t cols = d1 > 0 ? d1 : 1;
    if (p->ndim != ndim || p->shape[0] != d0 || p->shape[1] != cols)
        fatal("reference: tensor %s has shape [%lld, %lld] (ndim %d); expected [%lld, %lld] (ndim %d)", name,
              (long long)p->shape[0], (long long)p->shape[1], p->ndim, (long long)d0, (long long)cols, ndim);
    if (p->local_count != (size_t)(d0 * cols)) fatal("reference: tensor %s is sharded; use one rank", name);
    x->used[index] = true;
    t.w = x->params + p->offset;
    t.g = x->grads ? x->grads + p->offset : NULL;
    return t;
}

// out[r,o] = sum_i inp[r,i] w[o,i] + b[o]   (b may be NULL)
void ref_linear_forward(double *out, const double *inp, const double *w, const double *b, int rows, int in,
                        int out_dim) {
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out_dim; o++) {
            double sum = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++) sum += inp[(size_t)r * in + i] * w[(size_t)o * in + i];
            out[(size_t)r * out_dim + o] = sum;
        }
}

// d_inp[r,i] += sum_o d_out[r,o] w[o,i];  d_w[o,i] += sum_r d_out[r,o] inp[r,i];
// d_b[o] += sum_r d_out[r,o]   (any of the three may be NULL)
void ref_linear_backward(double *d_inp, double *d_w, double *d_b, const double *d_out, const double *inp,
                         const double *w, int rows, int in, int out_dim) {
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out_dim; o++) {
            double dy = d_out[(size_t)r * out_dim + o];
            if (d_b) d_b[o] += dy;
            for (int i = 0; i < in; i++) {
                if (d_inp) d_inp[(size_t)r * in + i] += dy * w[(size_t)o * in + i];
                if (d_w) d_w[(size_t)o * in + i] += dy * inp[(size_t)r * in + i];
            }
        }
}

// out = inp * rstd * w, rstd[r] = (mean_i inp[r,i]^2 + eps)^(-1/2)
void ref_rmsnorm_forward(double *out, double *rstd, const double *inp, const double *w, int rows, int dim,
                         double eps) {
    for (int r = 0; r < rows; r++) {
        const double *xr = inp + (size_t)r * dim;
        double sum = 0.0;
        for (int i = 0; i < dim; i++) sum += xr[i] * xr[i];
        rstd[r] = 1.0 / sqrt(sum / dim + eps);
        for (int i = 0; i < dim; i++) out[(size_t)r * dim + i] = xr[i] * rstd[r] * w[i];
    }
}

// With y_i = x_i s w_i and ds/dx_j = -s^3 x_j / dim:
//   d_x[j] += s w_j dy_j - (s^3 x_j / dim) sum_i dy_i w_i x_i;  d_w[i] += sum_r dy_i x_i s
void ref_rmsnorm_backward(double *d_inp, double *d_w, const double *d_out, const double *inp,
                          const double *w, const double *rstd, int rows, int dim) {
    for (int r = 0; r < rows; r++) {
        const double *xr = inp + (size_t)r * dim, *dy = d_out + (size_t)r * dim;
        double s = rstd[r], dot = 0.0;
        for (int i = 0; i < dim; i++) dot += dy[i] * w[i] * xr[i];
        for (int j = 0; j < dim; j++) {
            d_inp[(size_t)r * dim + j] += s * w[j] * dy[j] - s * s * s * xr[j] / dim * dot;
            if (d_w) d_w[j] += dy[j] * xr[j] * s;
        }
    }
}

// Rotates x[rows, heads, dh] in place, Hugging Face rotate_half layout: element i pairs
// with i + dh/2 and turns by sign * pos * theta^(-2i/dh), pos = position in the sequence.
// sign = -1 is the transpose (the backward of sign = +1).
void ref_rope(double *x, int batch, int seq_len, int heads, int dh, double theta, double sign) {
    int half = dh / 2;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < seq_len; t++)
            for (int h = 0; h < heads; h++) {
                double *v = x + (((size_t)b * seq_len + t) * heads + h) * dh;
                for (int i = 0; i < half; i++) {
                    double angle = t * pow(theta, -2.0 * i / dh);
                    double c = cos(angle), s = sign * sin(angle);
                    double x1 = v[i], x2 = v[i + half];
                    v[i] = x1 * c - x2 * s;
                    v[i + half] = x2 * c + x1 * s;
                }
            }
}
