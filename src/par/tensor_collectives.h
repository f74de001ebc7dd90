// The activation collectives of the tensor-parallel group (DESIGN.md 7, Megatron's f/g
// operators), each counted in grid->traffic:
//   without sp: a column-parallel input is used as is (backward: all-reduce its
//   gradient); a row-parallel output is all-reduced (backward: identity).
//   with sp: activations between blocks are sequence shards [batch, seq/tp, width]; a
//   column-parallel input is all-gathered along the sequence (backward: reduce-scatter)
//   and a row-parallel output reduce-scattered (backward: all-gather).
// Full activations are [batch, seq, width] row-major; rank r's shard holds positions
// [r*seq/tp, (r+1)*seq/tp) of every sequence.
#pragma once
#include <stddef.h>

#include "par/process_grid.h"

// Sums x[count] over the tp group in place (kind: which counter it is charged to).
void tensor_all_reduce(process_grid *grid, float *x, size_t count, traffic_kind kind);
// full[batch, seq, width] = the shards of every tp rank, concatenated along the sequence.
void sequence_all_gather(process_grid *grid, float *full, const float *shard, int batch, int seq_len, int width);
// shard = this rank's positions of the sum over the tp group of full[batch, seq, width].
void sequence_reduce_scatter(process_grid *grid, float *shard, const float *full, int batch, int seq_len,
                             int width);
// This rank's positions of full (no communication), for inputs every rank already has.
void sequence_take_shard(const process_grid *grid, float *shard, const float *full, int batch, int seq_len,
                         int width);
