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
// decon-eval --logits: the logits of one window tokens[0 .. length-1] (one forward pass
// of m, allocated for length) written as a NumPy .npy file, float32 [length, vocab], via
// "<path>.tmp" and a rename; for comparing decon with other implementations (an export).
void eval_write_logits(model *m, const int *tokens, int length, const char *path);
