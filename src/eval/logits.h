// Logits of chosen rows of the last forward pass. The model fuses its LM head with the
// loss (the [tokens, vocab] matrix never exists); the evaluator needs the argmax at a few
// positions, so it recomputes those rows: logits = final_normed[rows] W_lmhead^T, one
// sgemm, from the final normalised hidden states model_forward keeps in
// m->final_normed (rows of the loss-carrying sequences, batch-major).
#pragma once
#include "model/model.h"

// logits[rows, vocab] (backend memory: ops_alloc) for hidden rows first_row .. first_row+rows-1 of the last forward.
void eval_logits(const model *m, int first_row, int rows, float *logits);
// Index of the largest of logits[0 .. vocab-1] (the first one on ties).
int eval_argmax(const float *logits, int vocab);
