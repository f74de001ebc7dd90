#include "train/evaluate.h"

#include "core/errors.h"

double evaluate_loss(model *m, data_loader *loader, int batches, int micro_batch, int seq_len, int *inputs,
                     int *targets) {
    uint64_t available = loader->window_count / (uint64_t)micro_batch;
    if (available == 0) fatal("%s: validation shard holds fewer than %d sequences of %d tokens", loader->shard.path,
                              micro_batch, seq_len);
    if ((uint64_t)batches > available) batches = (int)available;
    size_t rows = (size_t)micro_batch * (size_t)seq_len;
    data_position start = {0, 0};
    data_loader_seek(loader, start);
    double sum = 0.0;
    for (int b = 0; b < batches; b++) {
        data_loader_next(loader, inputs, targets, micro_batch, 0, 1);
        model_forward(m, inputs, micro_batch, seq_len);
        sum += model_loss(m, targets, NULL);
    }
    return sum / ((double)batches * (double)rows);
}
