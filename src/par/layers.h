// Megatron-Core's column- and row-parallel linear layers (tensor_parallel/layers.py;
// DESIGN.md 7): their compute is par/parallel_linear.h; here are their edges, where an
// activation enters or leaves the tensor-parallel region through the region ops of
// par/mappings.h, each forward with its conjugate backward:
//   column-parallel input   forward: copy_to (identity), with sp gather_from the
//                           sequence-parallel region; backward: all-reduce / reduce-scatter
//   row-parallel output     forward: reduce_from (all-reduce), with sp reduce_scatter_to
//                           the sequence-parallel region; backward: identity / all-gather
// One input edge serves every column-parallel layer reading the same input (Q, K and V;
// gate and up; Megatron fuses such layers into one), and each branch ends in one
// row-parallel layer (Wo; down). The vocab-parallel embedding is row-parallel (each rank
// embeds its vocabulary rows, the group sums) and the LM head column-parallel.
// Rows are batch sequences of seq_len positions, width floats each.
#pragma once
#include <stddef.h>

#include "par/mappings.h"
#include "par/parallel_linear.h"
#include "par/process_grid.h"

// An activation (or its gradient) at the edge of the region: `shard` outside it, where
// the residual stream and the norms live (this rank's positions of every sequence with
// sp), `full` inside (every row). Without sp nothing is sharded and both name one
// buffer, so the edges move nothing or sum in place.
typedef struct {
    float *shard, *full;
} region_activation;

// The input of column-parallel layers (or its gradient), kept in `full` (what the layers
// read and backward needs; where their d_x accumulate); with sp the shard is
// shard_buffer.
region_activation column_parallel_input_of(const process_grid *grid, float *full, float *shard_buffer);
// The output of a row-parallel layer (or its gradient), kept in `shard` (the residual
// stream); with sp the full rows are full_buffer.
region_activation row_parallel_output_of(const process_grid *grid, float *shard, float *full_buffer);

// x.full = x.shard brought into the region (an all-gather with sp; nothing without).
void column_parallel_input_forward(process_grid *grid, region_activation x, int batch, int seq_len, int width);
// d_x.shard = the sum over the tp group of the partial d_x.full (a reduce-scatter with
// sp; an all-reduce in place without).
void column_parallel_input_backward(process_grid *grid, region_activation d_x, int batch, int seq_len, int width);
// y.shard = the sum over the tp group of the partial y.full (a reduce-scatter with sp;
// an all-reduce in place without).
void row_parallel_output_forward(process_grid *grid, region_activation y, int batch, int seq_len, int width);
// d_y.full = d_y.shard brought into the region (an all-gather with sp; nothing without).
void row_parallel_output_backward(process_grid *grid, region_activation d_y, int batch, int seq_len, int width);
