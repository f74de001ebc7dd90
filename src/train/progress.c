#include "train/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/errors.h"
#include "ops/ops.h"

void progress_start(progress_meter *meter, long first_step, long max_steps) {
    meter->start_time = wall_seconds();
    meter->first_step = first_step;
    meter->max_steps = max_steps;
    meter->live = isatty(STDOUT_FILENO) && log_rank() == 0;
}

void format_duration(char *out, int size, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, (size_t)size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(out, (size_t)size, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, (size_t)size, "%lds", s);
}

void progress_print(progress_meter *meter, long step, double loss, double lr, double grad_norm,
                    double tokens_per_second, double mfu) {
    if (log_rank() != 0) return;
    double elapsed = wall_seconds() - meter->start_time;
    long done = step - meter->first_step, left = meter->max_steps - step;
    char eta[32];
    format_duration(eta, sizeof eta, done > 0 ? elapsed / (double)done * (double)left : 0.0);
    printf("%sstep %6ld/%ld | loss %7.4f | lr %.2e | gnorm %6.3f | %8.0f tok/s | MFU %5.1f%% | ETA %s%s",
           meter->live ? "\r" : "", step, meter->max_steps, loss, lr, grad_norm, tokens_per_second, 100.0 * mfu, eta,
           meter->live ? "   " : "\n");
    fflush(stdout);
}

double progress_mfu(double tokens, double seconds, double flops_per_token, double peak_gflops) {
    return tokens / seconds * flops_per_token / (peak_gflops * 1e9);
}

void progress_end_line(progress_meter *meter) {
    if (meter->live && log_rank() == 0) {
        putchar('\n');
        fflush(stdout);
    }
}

double measure_sgemm_peak_gflops(void) {
    enum { N = 1024 };
    // Backend memory, drawn on the host and handed over (a GPU backend's GEMM needs it);
    // ops_to_host of c waits for the GEMM, so the time is the GEMM's on any backend.
    size_t bytes = (size_t)N * N * sizeof(float);
    float *a = ops_alloc(bytes), *b = ops_alloc(bytes), *c = ops_alloc(bytes);
    for (size_t i = 0; i < (size_t)N * N; i++) {
        a[i] = (float)(i % 7) * 0.01f;
        b[i] = (float)(i % 5) * 0.01f;
    }
    ops_from_host(a, a, bytes);
    ops_from_host(b, b, bytes);
    gemm(false, true, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);  // warm-up
    ops_to_host(c, c, bytes);
    double best = 1e30;
    for (int rep = 0; rep < 10; rep++) {
        double t0 = wall_seconds();
        gemm(false, true, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        ops_to_host(c, c, bytes);
        double t = wall_seconds() - t0;
        if (t < best) best = t;
    }
    ops_free(a);
    ops_free(b);
    ops_free(c);
    return 2.0 * N * (double)N * N / best * 1e-9;
}

double peak_resident_megabytes(void) {
    FILE *status = fopen("/proc/self/status", "r");
    if (!status) return 0.0;
    char line[256];
    double kilobytes = 0.0;
    while (fgets(line, sizeof line, status))
        if (strncmp(line, "VmHWM:", 6) == 0) sscanf(line + 6, "%lf", &kilobytes);
    fclose(status);
    return kilobytes / 1024.0;
}
