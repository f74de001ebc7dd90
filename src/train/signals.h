// SIGINT, SIGTERM and SIGUSR1 (Ctrl-C; Slurm's cancel, pre-emption and `--signal=USR1@T`
// time-limit warning) ask the loop to stop after the current step; the trainer then writes
// a checkpoint and exits with 128 + the signal number (SIGUSR1: 138, which
// jobs/train.sbatch takes as "requeue me"), so no work is lost. A run that reached
// max_steps in that step has finished and exits 0.
#pragma once
#include <stdbool.h>

void signals_install(void);
int signals_received(void);   // the signal number, 0 when none

// A file size limit (ulimit -f, RLIMIT_FSIZE) must fail the write (EFBIG), reported in
// one line with the earlier outputs intact, not kill the process with SIGXFSZ and a
// core dump in the middle of a checkpoint: ignore SIGXFSZ. Call once at start-up.
void signals_ignore_file_size_limit(void);
