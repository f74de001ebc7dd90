// Vocab-parallel LM head (DESIGN.md 7, Megatron): tp rank r holds rows
// [vocab_start, vocab_start + vocab_local) of the [vocab, d] LM head (the embedding when
// tied; its lookup is ops' embedding_forward over the same range). No rank ever holds a
// row of full logits.
#pragma once
#include <stddef.h>

#include "par/process_grid.h"

// The LM head fused with softmax cross entropy over a vocabulary split across the tp
// group; the same contract as ops' lm_head_cross_entropy (returns the sum of per-row
// losses, rows with a negative target ignored, gradients scaled by loss_scale and
// accumulated), except that weight_local/d_weight_local are this rank's vocabulary rows
// and d_hidden receives this rank's PARTIAL share (sum over the tp group = the full
// gradient). Per chunk of rows: local logits from one sgemm, then the row maxima
// (all-reduce max) and the sums of exp(z - max) with the target logit (all-reduce sum)
// give every rank the exact softmax normaliser; losses are the same on every rank.
// scratch holds vocab_parallel_scratch_floats(rows, vocab_local) floats.
double vocab_parallel_cross_entropy(process_grid *grid, float *losses, float *d_hidden, float *d_weight_local,
                                    const float *hidden, const float *weight_local, const int *targets, int rows,
                                    int dim, int vocab_start, int vocab_local, float loss_scale, float *scratch);
size_t vocab_parallel_scratch_floats(int rows, int vocab_local);
