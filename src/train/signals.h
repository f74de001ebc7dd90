// SIGINT / SIGTERM (Ctrl-C, Slurm's pre-emption warning) ask the loop to stop after the
// current step; the trainer then writes a checkpoint and exits, so no work is lost.
#pragma once
#include <stdbool.h>

void signals_install(void);
bool signals_stop_requested(void);
int signals_received(void);   // the signal number, 0 when none
