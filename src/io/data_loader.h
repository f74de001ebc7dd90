// Deterministic batches from a token shard. The shard is cut into non-overlapping
// windows of seq_len + 1 tokens (inputs and next-token targets); each epoch visits every
// window once in an order that is a pure function of (seed, epoch). The position
// (epoch, index) is all a checkpoint needs to resume the exact same batch sequence.
// Data-parallel ranks take consecutive blocks of the same global order.
#pragma once
#include <stdint.h>

#include "io/token_shard.h"

typedef struct {
    uint64_t epoch;
    uint64_t index;    // next window within the epoch's order (global, across dp ranks)
} data_position;

typedef struct {
    token_shard shard;
    int seq_len;
    uint64_t seed;
    uint64_t window_count;
    uint64_t *order;           // permutation of the current epoch
    uint64_t order_epoch;      // epoch the permutation belongs to
    data_position position;
} data_loader;

// window_count = (tokens - 1) / seq_len; fatal when the shard holds less than one window.
// The permutation of epoch e: Fisher-Yates from the last element down, swapping i with
// rng_mix(seed, e, i) % (i + 1).
void data_loader_open(data_loader *loader, const char *path, int seq_len, uint64_t seed, int model_vocab);
void data_loader_close(data_loader *loader);
// Resumes at a saved position; fatal when index >= window_count (a different shard or
// seq_len than the checkpoint was trained with).
void data_loader_seek(data_loader *loader, data_position position);
// Fills inputs/targets [sequences, seq_len]: rank r takes windows index + r*sequences ...
// index + r*sequences + sequences-1 of the global order (wrapping into the next epoch),
// and every rank advances the position by sequences * rank_count, so ranks stay in step
// and together see exactly what one rank would see with sequences * rank_count.
void data_loader_next(data_loader *loader, int *inputs, int *targets, int sequences,
                      int rank, int rank_count);
