// What a person watching a run sees: a live progress line (step, loss, LR, grad norm,
// tokens/s, MFU, ETA), the machine's measured sgemm peak that MFU is relative to, and
// peak resident memory.
#pragma once
#include <stdbool.h>

typedef struct {
    double start_time;      // wall clock at the first step of this process
    long first_step;        // step the process started at (non-zero after resume)
    long max_steps;
    bool live;              // stdout is a terminal: redraw one line with \r
} progress_meter;

void progress_start(progress_meter *meter, long first_step, long max_steps);
// Prints one progress line for a completed step.
void progress_print(progress_meter *meter, long step, double loss, double lr, double grad_norm,
                    double tokens_per_second, double mfu);
void progress_end_line(progress_meter *meter);   // finish a live line before other output
// Model FLOPs utilisation: the training FLOP/s of `tokens` in `seconds` at flops_per_token
// over the peak (GFLOP/s, of every rank together); a fraction, 1 = peak.
double progress_mfu(double tokens, double seconds, double flops_per_token, double peak_gflops);
// Best-of-10 GFLOP/s of a square OpenBLAS sgemm (n = 1024) on the current thread count.
double measure_sgemm_peak_gflops(void);
double peak_resident_megabytes(void);
void format_duration(char *out, int size, double seconds);
