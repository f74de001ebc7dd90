// The region ops at the edges of the tensor-parallel region (Megatron-Core's
// tensor_parallel/mappings.py; DESIGN.md 7), each counted in grid->traffic. Every one is a
// forward and a backward that are each other's conjugates:
//   copy_to_tensor_parallel_region              forward identity        backward all-reduce
//   reduce_from_tensor_parallel_region          forward all-reduce      backward identity
//   scatter_to_sequence_parallel_region         forward split           backward all-gather
//   gather_from_sequence_parallel_region        forward all-gather      backward reduce-scatter
//   reduce_scatter_to_sequence_parallel_region  forward reduce-scatter  backward all-gather
// An identity is no call: the tensor stays where it is. The sequence forms work on
// [batch, seq, width] row-major activations; rank r's shard holds positions
// [r*seq/tp, (r+1)*seq/tp) of every sequence. The column- and row-parallel layers
// (par/layers.h) are what the model calls; rndembqk's X_1 is the one direct use.
#pragma once
#include <stddef.h>

#include "par/process_grid.h"

// Backward of copy_to: the gradient grad[count] summed over the tp group, in place.
void copy_to_tensor_parallel_region_backward(process_grid *grid, float *grad, size_t count);
// Forward of reduce_from: x[count] summed over the tp group, in place.
void reduce_from_tensor_parallel_region_forward(process_grid *grid, float *x, size_t count);

// Forward of scatter_to: shard = this rank's positions of full (no communication; for
// inputs every rank holds). Its backward, the all-gather, is not needed: the one input
// scattered (rndembqk's X_1, fixed noise) takes no gradient.
void scatter_to_sequence_parallel_region_forward(const process_grid *grid, float *shard, const float *full, int batch,
                                                 int seq_len, int width);

// Forward of gather_from: full[batch, seq, width] = the shards of every tp rank,
// concatenated along the sequence. Backward: d_shard = this rank's positions of the sum
// over the tp group of d_full.
void gather_from_sequence_parallel_region_forward(process_grid *grid, float *full, const float *shard, int batch,
                                                  int seq_len, int width);
void gather_from_sequence_parallel_region_backward(process_grid *grid, float *d_shard, const float *d_full, int batch,
                                                   int seq_len, int width);

// Forward of reduce_scatter_to: shard = this rank's positions of the sum over the tp group
// of full. Backward: d_full = the shards of d_shard of every tp rank, concatenated.
void reduce_scatter_to_sequence_parallel_region_forward(process_grid *grid, float *shard, const float *full, int batch,
                                                        int seq_len, int width);
void reduce_scatter_to_sequence_parallel_region_backward(process_grid *grid, float *d_full, const float *d_shard,
                                                         int batch, int seq_len, int width);
