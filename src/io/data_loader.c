// Deterministic batches from a token shard (data_loader.h). Window w covers tokens
// [w*seq_len, w*seq_len + seq_len]: inputs are the first seq_len, targets the last seq_len.
// Epoch e visits the windows in the order of a Fisher-Yates shuffle whose swap at step i
// draws rng_mix(seed, e, i), so the order of any epoch can be rebuilt from (seed, e) alone.
#include "io/data_loader.h"

#include <string.h>

#include "core/errors.h"
#include "core/rng.h"

static const uint64_t NO_EPOCH = UINT64_MAX;

// Builds the permutation of `epoch` into loader->order (O(window_count)).
static void build_order(data_loader *loader, uint64_t epoch) {
    uint64_t n = loader->window_count;
    uint64_t *order = loader->order;
    for (uint64_t i = 0; i < n; i++) order[i] = i;
    for (uint64_t i = n - 1; i > 0; i--) {
        uint64_t j = rng_mix(loader->seed, epoch, i) % (i + 1);  // bias <= n / 2^64
        uint64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    loader->order_epoch = epoch;
}

void data_loader_open(data_loader *loader, const char *path, int seq_len, uint64_t seed, int model_vocab) {
    memset(loader, 0, sizeof *loader);
    if (seq_len <= 0) fatal("data loader for %s: seq_len must be positive (got %d)", path, seq_len);
    token_shard_open(&loader->shard, path, model_vocab);
    uint64_t count = loader->shard.count;
    if (count < (uint64_t)seq_len + 1)
        fatal("token shard %s has %llu tokens, fewer than one window of seq_len + 1 = %d tokens; "
              "use a shorter sequence length or a bigger shard",
              path, (unsigned long long)count, seq_len + 1);
    loader->seq_len = seq_len;
    loader->seed = seed;
    loader->window_count = (count - 1) / (uint64_t)seq_len;
    loader->order = xmalloc(loader->window_count * sizeof *loader->order);
    loader->order_epoch = NO_EPOCH;
    loader->position = (data_position){0, 0};
}

void data_loader_close(data_loader *loader) {
    token_shard_close(&loader->shard);
    free(loader->order);
    memset(loader, 0, sizeof *loader);
}

void data_loader_seek(data_loader *loader, data_position position) {
    if (position.index >= loader->window_count)
        fatal("data position (epoch %llu, window %llu) is past the %llu windows of %s at seq_len %d: "
              "resume with the same token shard and sequence length the checkpoint was trained with",
              (unsigned long long)position.epoch, (unsigned long long)position.index,
              (unsigned long long)loader->window_count, loader->shard.path, loader->seq_len);
    loader->position = position;
}

void data_loader_next(data_loader *loader, int *inputs, int *targets, int sequences, int rank, int rank_count) {
    if (sequences <= 0 || rank_count <= 0 || rank < 0 || rank >= rank_count)
        fatal("data_loader_next: bad arguments (sequences %d, rank %d of %d)", sequences, rank, rank_count);
    uint64_t n = loader->window_count;
    int seq_len = loader->seq_len;
    uint64_t first = loader->position.index + (uint64_t)rank * (uint64_t)sequences;
    for (int s = 0; s < sequences; s++) {
        uint64_t global = first + (uint64_t)s;   // may run past this epoch: wrap into the next
        uint64_t epoch = loader->position.epoch + global / n;
        if (epoch != loader->order_epoch) build_order(loader, epoch);
        uint64_t start = loader->order[global % n] * (uint64_t)seq_len;
        int *in = inputs + (size_t)s * (size_t)seq_len;
        int *out = targets + (size_t)s * (size_t)seq_len;
        for (int t = 0; t < seq_len; t++) {
            in[t] = (int)token_shard_get(&loader->shard, start + (uint64_t)t);
            out[t] = (int)token_shard_get(&loader->shard, start + (uint64_t)t + 1);
        }
    }
    uint64_t next = loader->position.index + (uint64_t)sequences * (uint64_t)rank_count;
    loader->position.epoch += next / n;
    loader->position.index = next % n;
}
