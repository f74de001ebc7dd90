// A model ready for evaluation from any checkpoint: the model config comes from the
// resolved config text stored in the checkpoint (any layout, any variant that is
// registered), the parameters from /params. fixedseqqk's fixed token sequence is the
// first max_seq_len tokens of the checkpoint's [data] train shard, as in training.
#pragma once
#include "core/config.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "par/process_grid.h"

// The checkpoint's stored config (fatal, one line, when the file is missing or damaged).
void eval_read_config(decon_config *config, const char *checkpoint);
// model_build + model_allocate(max_batch, max_seq_len) + the checkpoint's parameters
// (+ fixed tokens); state receives /state.
void eval_load_model(model *m, const decon_config *config, const char *checkpoint, int max_batch, int max_seq_len,
                     train_state *state);
// eval_load_model in two halves, for a caller that sizes the model from what it is built
// as (decon-generate: a fixed stream needs the whole context) or builds it over a tensor-
// parallel grid (grid NULL: one rank; else config->tensor_parallel = the grid's tp). Every
// rank of the grid calls both (the read is collective over MPI_COMM_WORLD).
void eval_build_model(model *m, const decon_config *config, const char *checkpoint, process_grid *grid);
void eval_read_model(model *m, const char *checkpoint, int max_batch, int max_seq_len, train_state *state);
