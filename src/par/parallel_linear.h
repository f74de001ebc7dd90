// The compute of Megatron-Core's ColumnParallelLinear and RowParallelLinear
// (tensor_parallel/layers.py; DESIGN.md 7) on this rank's shard of the weight: what the
// mixers and the MLP call for their projections. No communication and no MPI here (the
// mixers know nothing of MPI): the sums over the tp group at the region's edges are
// par/layers.h's, called by the model. Weights are [out, in] (PyTorch's layout).
//
// Column-parallel: W split by rows, rank r holds out_local output features (its heads,
// its slice of the MLP width). Forward: y[rows, out_local] = x W_r^T + b_r from the full
// input x[rows, in]. Backward: dW_r, db_r += (complete for the slice); d_x += this
// rank's PARTIAL share: the sum over the tp group is dL/dx.
//
// Row-parallel: W split by columns, rank r holds in_local input features (the outputs
// of its column-parallel layers). Forward: y[rows, out] = x_r W_r^T, this rank's
// PARTIAL output: the sum over the tp group is the output (no bias: one would be added
// after the sum). Backward, from the full d_y: dW_r += , d_x_r += (complete for the slice).
#pragma once
#include "ops/ops.h"

static inline void column_parallel_linear_forward(float *y, const float *x, const float *weight, const float *bias,
                                                  int rows, int in, int out_local) {
    linear_forward(y, x, weight, bias, rows, in, out_local);
}

static inline void column_parallel_linear_backward(float *d_x, float *d_weight, float *d_bias, const float *d_y,
                                                   const float *x, const float *weight, int rows, int in,
                                                   int out_local) {
    linear_backward(d_x, d_weight, d_bias, d_y, x, weight, rows, in, out_local);
}

static inline void row_parallel_linear_forward(float *y, const float *x, const float *weight, int rows, int in_local,
                                               int out) {
    linear_forward(y, x, weight, NULL, rows, in_local, out);
}

static inline void row_parallel_linear_backward(float *d_x, float *d_weight, const float *d_y, const float *x,
                                                const float *weight, int rows, int in_local, int out) {
    linear_backward(d_x, d_weight, NULL, d_y, x, weight, rows, in_local, out);
}
