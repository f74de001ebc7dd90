// Validation loss on held-out tokens: the first `batches` micro-batches of the
// validation shard's fixed order (the same windows every time, so values are comparable
// across steps and runs).
#pragma once
#include "io/data_loader.h"
#include "model/model.h"

// Mean per-token loss; batches is capped by what the shard holds. inputs and targets hold
// micro_batch x seq_len tokens each (the caller's, so that nothing is allocated here).
double evaluate_loss(model *m, data_loader *loader, int batches, int micro_batch, int seq_len, int *inputs,
                     int *targets);
