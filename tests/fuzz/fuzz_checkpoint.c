// libFuzzer harness: the checkpoint loader (io/checkpoint_*.c) as decon-train --resume and
// decon-eval drive it, on one MPI rank through the real MPI-IO driver: the validity check
// (checkpoint_is_valid), the stored config (checkpoint_read_config + config_load_text +
// config_validate), /params + /optim + /state into the registry of checkpoint_model.ini's
// model (checkpoint_read), and once more with the Adam moments held as a ZeRO-1 range that
// starts and ends inside tensors (checkpoint_read_partitioned). Each stage runs even when an
// earlier one rejected the file, so a damaged /config does not hide /params from the fuzzer.
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "fuzz/fuzz_support.h"
#include "io/checkpoint.h"
#include "model/model.h"

static decon_config config;
static model m;
static float *adam_m, *adam_v;
static const char *path;

static void build_model(void *arg) {
    (void)arg;
    config_defaults(&config);
    config_load(&config, FUZZ_DIR "/checkpoint_model.ini");
    config_validate(&config, "checkpoint_model.ini");
    model_build(&m, &config, "checkpoint_model.ini");
    model_allocate(&m, config.micro_batch_size, config.sequence_length);
    adam_m = calloc(m.registry.total, sizeof *adam_m);
    adam_v = calloc(m.registry.total, sizeof *adam_v);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_init_mpi(argc, argv);
    if (!fuzz_run_stage(build_model, NULL)) fuzz_invariant_failed("fuzz_checkpoint", "checkpoint_model.ini builds");
    return 0;
}

static void read_config(void *arg) {
    (void)arg;
    char *text = checkpoint_read_config(path, MPI_COMM_WORLD);
    decon_config stored;
    config_defaults(&stored);
    config_load_text(&stored, text, path);
    config_validate(&stored, path);
    const char *differing = NULL;
    (void)config_same_model(&stored, &config, &differing);
    free(text);
}

static void read_everything(void *arg) {
    (void)arg;
    train_state state;
    checkpoint_read(path, &m.registry, m.params, adam_m, adam_v, &state, MPI_COMM_WORLD);
}

static void read_zero_range(void *arg) {
    (void)arg;
    moment_range range = {m.registry.total / 3 + 1, 2 * m.registry.total / 3 + 1};
    checkpoint_read_partitioned(path, &m.registry, m.params, adam_m, adam_v, &range, NULL, MPI_COMM_WORLD);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    path = fuzz_write_input(data, size, ".h5");
    (void)checkpoint_is_valid(path, MPI_COMM_WORLD);  // never fatal: it answers
    fuzz_run_stage(read_config, NULL);
    fuzz_run_stage(read_everything, NULL);
    fuzz_run_stage(read_zero_range, NULL);
    return 0;
}
