// Vocab-parallel LM head (DESIGN.md 7, Megatron): tp rank r holds rows
// [vocab_start, vocab_start + vocab_local) of the [vocab, d] LM head (the embedding when
// tied; its lookup is ops' embedding_forward over the same range). No rank ever holds a
// row of full logits.
#pragma once
#include <stddef.h>

#include "par/process_grid.h"

// The LM head fused with softmax cross entropy over a vocabulary split across the tp
// group: ops' lm_head_cross_entropy (the same contract: returns the sum of per-row
// losses, rows with a negative target ignored, gradients scaled by loss_scale and
// accumulated) over this rank's vocabulary rows weight_local/d_weight_local, with the
// row statistics of each chunk combined over the tp group between its phases (the row
// maxima by an all-reduce max, then the sums of exp(z - max) with the target logit by an
// all-reduce sum), so every rank has the exact softmax normaliser and the same losses;
// d_hidden receives this rank's PARTIAL share (sum over the tp group = the full
// gradient). On tp = 1 it is lm_head_cross_entropy with no reduction at all.
// scratch holds lm_head_scratch_floats(rows, vocab_local) floats.
double vocab_parallel_cross_entropy(process_grid *grid, float *losses, float *d_hidden, float *d_weight_local,
                                    const float *hidden, const float *weight_local, const int *targets, int rows,
                                    int dim, int vocab_start, int vocab_local, float loss_scale, float *scratch);

// Decoding's full logits on every rank: logits[rows, vocab_local * tp] from each rank's
// logits_local[rows, vocab_local] (its vocabulary rows; every shard the same size, as
// process_grid_validate requires), by one all-gather over the tp group through the
// grid's staging buffer (reserve rows * vocab_local * tp floats beforehand). tp = 1: a copy.
void vocab_parallel_gather_logits(process_grid *grid, float *logits, const float *logits_local, int rows,
                                  int vocab_local);
