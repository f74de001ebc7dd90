// libFuzzer harness: the config loader (core/config.c) as decon-train drives it.
// Input: an INI file, except that lines starting with "--set " are command-line
// assignments (section.key=value) applied after the file, as `decon-train file --set ...`.
// Stages: load, --set, validate, the layer plan, and then the round trip a checkpoint
// makes (config_to_text, config_load_text): an accepted config must read back as the same
// model with the same text, or resuming and evaluating would build another model.
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "fuzz/fuzz_support.h"
#include "model/layer_plan.h"

enum { MAX_SETS = 64 };

typedef struct {
    const char *path;
    char *sets[MAX_SETS];
    int set_count;
    decon_config config;
} config_input;

static void load(void *arg) {
    config_input *in = arg;
    config_defaults(&in->config);
    config_load(&in->config, in->path);
}

static int set_index;
static void apply_set(void *arg) {
    config_input *in = arg;
    config_set(&in->config, in->sets[set_index], "--set");
}

static void validate(void *arg) {
    config_input *in = arg;
    config_validate(&in->config, in->path);
    const mixer_kind **plan = (const mixer_kind **)calloc((size_t)in->config.num_hidden_layers, sizeof(const mixer_kind *));
    layer_plan_build(plan, &in->config, in->path);
    free((void *)plan);
}

static void round_trip(void *arg) {
    const decon_config *accepted = arg;
    char *text = config_to_text(accepted);
    decon_config again;
    config_defaults(&again);
    config_load_text(&again, text, "config_to_text");
    config_validate(&again, "config_to_text");
    const char *key = NULL;
    FUZZ_CHECK("fuzz_config", config_same_model(accepted, &again, &key));
    char *text_again = config_to_text(&again);
    FUZZ_CHECK("fuzz_config", strcmp(text, text_again) == 0);
    free(text_again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // Split the input into the file part and the --set lines.
    static config_input in;
    memset(&in, 0, sizeof in);
    char *file_text = malloc(size + 1), *sets_text = malloc(size + 1);
    size_t file_size = 0, sets_size = 0;
    for (size_t start = 0; start < size;) {
        const uint8_t *newline = memchr(data + start, '\n', size - start);
        size_t end = newline ? (size_t)(newline - data) + 1 : size;
        if (end - start >= 6 && memcmp(data + start, "--set ", 6) == 0 && in.set_count < MAX_SETS) {
            in.sets[in.set_count++] = sets_text + sets_size;
            size_t n = end - start - 6 - (newline ? 1 : 0);
            memcpy(sets_text + sets_size, data + start + 6, n);
            sets_size += n;
            sets_text[sets_size++] = '\0';
        } else {
            memcpy(file_text + file_size, data + start, end - start);
            file_size += end - start;
        }
        start = end;
    }
    in.path = fuzz_write_input((const uint8_t *)file_text, file_size, ".ini");

    bool ok = fuzz_run_stage(load, &in);
    for (set_index = 0; ok && set_index < in.set_count; set_index++) ok = fuzz_run_stage(apply_set, &in);
    if (ok && fuzz_run_stage(validate, &in) && !fuzz_run_stage(round_trip, &in.config))
        fuzz_invariant_failed("fuzz_config", "an accepted config does not load back from config_to_text");
    free(file_text);
    free(sets_text);
    return 0;
}
