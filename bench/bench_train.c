// Training throughput of one configuration: tokens/s and MFU of full training steps
// (forward, backward, AdamW) on random tokens, against this machine's measured OpenBLAS
// sgemm peak at the same thread count, plus activation memory and peak RSS.
//   bench_train <config.ini> [--set section.key=value]... [--steps N]
// Prints figures; never passes or fails on time.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/model.h"
#include "ops/ops.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "train/schedule.h"

int main(int argc, char **argv) {
    if (argc < 2) fatal("usage: bench_train <config.ini> [--set section.key=value]... [--steps N]");
    decon_config c;
    config_defaults(&c);
    config_load(&c, argv[1]);
    int steps = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--set") == 0) config_set(&c, argv[i + 1], "--set");
        else if (strcmp(argv[i], "--steps") == 0) steps = atoi(argv[i + 1]);
        else fatal("unknown option %s", argv[i]);
    }
    config_validate(&c, argv[1]);
    int threads = c.threads > 0 ? c.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    ops_set_threads(threads);

    model m;
    model_build(&m, &c, argv[1]);
    model_allocate(&m, c.micro_batch_size, c.sequence_length);
    model_initialize(&m, 1);
    adamw_state optimizer;
    optimizer_allocate(&optimizer, &m.registry);
    size_t rows = (size_t)c.micro_batch_size * (size_t)c.sequence_length;
    int *inputs = xmalloc(rows * sizeof(int)), *targets = xmalloc(rows * sizeof(int));
    for (size_t i = 0; i < rows; i++) {
        inputs[i] = (int)(rng_mix(7, 1, i) % (uint64_t)c.vocab_size);
        targets[i] = (int)(rng_mix(7, 2, i) % (uint64_t)c.vocab_size);
    }
    int accumulation = c.global_batch_size / c.micro_batch_size;
    double peak = measure_sgemm_peak_gflops();
    double flops_per_token = model_training_flops_per_token(&m, c.sequence_length);
    double tokens_per_step = (double)rows * accumulation;
    double best = 1e30, total = 0.0;
    for (int step = 0; step <= steps; step++) {  // step 0 warms caches and is not counted
        double t0 = wall_seconds();
        memset(m.grads, 0, m.registry.total * sizeof(float));
        for (int micro = 0; micro < accumulation; micro++) {
            model_forward(&m, inputs, c.micro_batch_size, c.sequence_length);
            model_backward(&m, targets, (float)(1.0 / tokens_per_step), NULL);
        }
        double norm = gradient_global_norm(m.grads, m.registry.total);
        optimizer_step(&optimizer, &m.registry, m.params, m.grads, &c, schedule_learning_rate(&c, step), norm, step + 1);
        double t = wall_seconds() - t0;
        if (step > 0) {
            total += t;
            if (t < best) best = t;
        }
    }
    double tokens_per_second = tokens_per_step * steps / total;
    double achieved = tokens_per_second * flops_per_token * 1e-9;
    printf("train %-10s d=%d L=%d seq=%d tokens/step=%.0f params=%lld threads=%d: %.0f tokens/s (best step %.0f), "
           "%.1f GFLOP/s, MFU %.1f%% of sgemm peak %.1f GFLOP/s (OpenBLAS %s), activations %.0f MB, peak RSS %.0f MB\n",
           c.variant, c.hidden_size, c.num_hidden_layers, c.sequence_length, tokens_per_step,
           (long long)params_total_logical(&m.registry), threads, tokens_per_second, tokens_per_step / best, achieved,
           100.0 * progress_mfu(tokens_per_step * steps, total, flops_per_token, peak), peak, ops_blas_core_name(), (double)model_activation_bytes(&m) * 1e-6,
           peak_resident_megabytes());
    free(inputs);
    free(targets);
    optimizer_free(&optimizer);
    model_free(&m);
    return 0;
}
