// libFuzzer harness: token shards (io/token_shard.c) — the 64-byte header and the body —
// opened as the trainer opens them: through the data loader (io/data_loader.c, windows of
// SEQ_LEN + 1 tokens) with the shard's own vocabulary, and directly against a model
// vocabulary of MODEL_VOCAB ids. An accepted shard must only ever yield ids below both.
#include <string.h>

#include "fuzz/fuzz_support.h"
#include "io/data_loader.h"
#include "io/token_shard.h"

enum { SEQ_LEN = 4, SEQUENCES = 2, BATCHES = 3, MODEL_VOCAB = 1000 };

static data_loader loader;
static token_shard shard;
static const char *path;

static void load_batches(void *arg) {
    (void)arg;
    data_loader_open(&loader, path, SEQ_LEN, 1234, 0);
    int inputs[SEQUENCES * SEQ_LEN], targets[SEQUENCES * SEQ_LEN];
    for (int b = 0; b < BATCHES; b++) {
        data_loader_next(&loader, inputs, targets, SEQUENCES, 0, 1);
        for (int i = 0; i < SEQUENCES * SEQ_LEN; i++) {
            FUZZ_CHECK("fuzz_token_shard", inputs[i] >= 0 && (uint32_t)inputs[i] < loader.shard.vocab_size);
            FUZZ_CHECK("fuzz_token_shard", targets[i] >= 0 && (uint32_t)targets[i] < loader.shard.vocab_size);
        }
    }
    data_loader_seek(&loader, (data_position){7, loader.window_count - 1});
}

static void open_for_model(void *arg) {
    (void)arg;
    token_shard_open(&shard, path, MODEL_VOCAB);
    FUZZ_CHECK("fuzz_token_shard", shard.vocab_size <= MODEL_VOCAB);
    for (uint64_t i = 0; i < shard.count; i++) FUZZ_CHECK("fuzz_token_shard", token_shard_get(&shard, i) < shard.vocab_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    path = fuzz_write_input(data, size, ".bin");
    fuzz_run_stage(load_batches, NULL);
    data_loader_close(&loader);  // also after a fatal(): unmaps the shard, frees the order
    fuzz_run_stage(open_for_model, NULL);
    token_shard_close(&shard);
    return 0;
}
