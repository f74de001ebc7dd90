// Calibration statistics for A3 (analysis/lowrank_a3.h), accumulated from a decon model's
// forward passes over token windows, in double, and summed over MPI ranks (each rank runs
// its own windows through a single-rank model: data parallel). Per standard layer l, with
// x~ = [x; 1] the layer's normalised mixer input (RMSNorm output, the rows Wq, Wk, Wv see):
//   input_corr[l]   E[x~ x~^T]                     (d+1) x (d+1)   QK
//   head_corr[l][j] E[z~ z~^T], z~ = sum_n A_j(m, n) x~_n, per query head  OV
//   mlp_corr[l]     E[h h^T], h = silu(gate x') * (up x') the SwiGLU activations  MLP
// the expectations over every token of the windows. Non-standard layers get none.
#pragma once
#include <mpi.h>
#include <stdbool.h>

#include "model/model.h"

typedef struct {
    int layers, d, heads, head_dim, intermediate;
    bool *collected;          // [layers] a standard layer (statistics below non-NULL)
    double **input_corr;      // [layers][(d+1)^2] row-major
    double **head_corr;       // [layers][heads * (d+1)^2]
    double **mlp_corr;        // [layers][m^2]
    double tokens;            // tokens accumulated (after lowrank_calibration_finish: all ranks')
    bool finished;            // sums reduced and divided by tokens
} lowrank_calibration;

// Sizes the statistics for m (a single-rank model: tensor_parallel 1), zeroed.
void lowrank_calibration_init(lowrank_calibration *stats, const model *m);
// model_forward over batch x seq_len tokens (inputs, row-major), then adds every standard
// layer's sums. seq_len <= what m was allocated for.
void lowrank_calibration_accumulate(lowrank_calibration *stats, model *m, const int *inputs, int batch, int seq_len);
// Collective over comm: sums every statistic and the token count over the ranks
// (MPI_Allreduce), then divides by the tokens; every rank gets the same means.
void lowrank_calibration_finish(lowrank_calibration *stats, MPI_Comm comm);
void lowrank_calibration_free(lowrank_calibration *stats);
