// The training loop: data -> forward/backward with gradient accumulation -> clip ->
// AdamW -> progress, metrics, validation, checkpoints; resume from the newest valid
// checkpoint of the run directory.
#pragma once
#include <stdbool.h>

#include "core/config.h"

typedef struct {
    decon_config config;
    const char *origin;        // config file, for messages
    bool resume;               // continue from <run_dir>/ckpt/ when a valid checkpoint exists
} trainer_options;

// Returns the process exit code (0, or 128 + signal when stopped by a signal).
int trainer_run(const trainer_options *options);
