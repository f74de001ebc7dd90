// Spectra of the per-head bilinear forms of a checkpoint (DESIGN.md section 10):
//   W_QK,j = Wq_j Wk_g(j)^T  (d x d; scores are x_i^T W_QK,j x_t before RoPE and biases)
//   W_OV,j = Wv_g(j) Wo_j    (d x d; what head j writes to the residual stream per value)
// in the math convention Q = H Wq. The checkpoint stores `[out, in]`, so with S_q the
// rows j d_h..(j+1) d_h of layers.<l>.mixer.wq (d_h x d) and S_o the matching columns of
// wo (d x d_h): W_QK,j = S_q^T S_k and W_OV,j = S_v^T S_o^T. Both are X Y^T with d x d_h
// factors, so their d_h possibly nonzero singular values come from the d_h x d_h core
// (svd_product_core); the other d - d_h are 0. d_h is the checkpoint's own ([model]
// head_dim: wq's rows / heads), not d / h; when d_h > d the last d_h - d values are 0.
// GQA: head j uses kv head g(j) = j / (h / kv).
#pragma once
#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis/recording.h"

typedef enum { WEIGHTS_OK, WEIGHTS_ABSENT, WEIGHTS_NOT_PER_HEAD } weights_layer_status;

typedef struct {
    char path[4096];
    int64_t step;                       // /state step
    int layers, heads, kv_heads, head_dim, hidden;
    weights_layer_status *status;       // per layer
    char (*note)[160];                  // per layer: why there are no spectra
} weights_info;

// Opens a checkpoint for reading (negative, with the line in `why`, when it cannot be).
hid_t weights_open(const char *path, char *why, size_t size);
// Checks the checkpoint and that it matches the recording (layer count, heads).
bool weights_scan(weights_info *info, const char *path, const recording_info *recording, char *why, size_t size);
void weights_free(weights_info *info);

// For an OK layer: qk and ov [heads][head_dim] singular values, descending.
bool weights_layer_spectra(hid_t file, const weights_info *info, int layer, double *qk, double *ov, char *why,
                           size_t size);
