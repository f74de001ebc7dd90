// One training micro-step of a model, dumped for comparison across backends: built by the
// CPU build (build/tests/dump_step) and by a GPU build (build-<gpu>/tests/dump_step) from
// this one source; tests/gpu/run_gpu_test.sh runs both on the same config, seed and
// tokens, and tests/gpu/compare_steps.py compares the loss and every parameter's gradient.
//   dump_step CONFIG OUT [section.key=value ...]
//   dump_step CONFIG --flops-per-token [section.key=value ...]   (prints the training FLOPs per token)
// OUT: "loss <value>" then per parameter "<name> <count>" and its gradient as raw floats,
// after the header line; the parameters' initial values are drawn by model_initialize
// (the same on both backends: drawn on the host).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/rng.h"
#include "model/model.h"
#include "ops/ops.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    if (argc < 3) fatal("usage: dump_step CONFIG OUT [section.key=value ...]");
    decon_config c;
    config_defaults(&c);
    config_load(&c, argv[1]);
    for (int i = 3; i < argc; i++) config_set(&c, argv[i], "command line");
    config_validate(&c, argv[1]);
    ops_set_threads(2);
    if (!ops_set_precision(strcmp(c.precision, "bf16") == 0))
        fatal("%s: [train] precision = %s: this %s build computes in fp32", argv[1], c.precision, ops_backend_name());
    int batch = c.micro_batch_size, seq = c.sequence_length;
    size_t rows = (size_t)batch * seq;
    model m;
    model_build(&m, &c, argv[1]);
    if (strcmp(argv[2], "--flops-per-token") == 0) {  // for run_gpu_test.sh's MFU
        printf("%.6g\n", model_training_flops_per_token(&m, seq));
        model_free(&m);
        MPI_Finalize();
        return 0;
    }
    model_allocate(&m, batch, seq);
    model_initialize(&m, (uint64_t)c.seed);
    int *tokens = malloc(sizeof(int) * rows), *targets = malloc(sizeof(int) * rows);
    for (size_t i = 0; i < rows; i++) {
        tokens[i] = (int)(rng_uniform(99, 1, i) * c.vocab_size) % c.vocab_size;
        targets[i] = (int)(rng_uniform(99, 2, i) * c.vocab_size) % c.vocab_size;
    }
    model_forward(&m, tokens, batch, seq);
    double loss = model_backward(&m, targets, 1.0f / (float)rows, NULL);
    FILE *out = fopen(argv[2], "wb");
    if (!out) fatal("cannot write %s", argv[2]);
    fprintf(out, "loss %.17g params %d\n", loss / (double)rows, m.registry.count);
    for (int p = 0; p < m.registry.count; p++) {
        const param_info *info = &m.registry.items[p];
        float *host = malloc(sizeof(float) * (info->local_count ? info->local_count : 1));
        ops_to_host(host, m.grads + info->offset, sizeof(float) * info->local_count);
        fprintf(out, "%s %zu\n", info->name, info->local_count);
        fwrite(host, sizeof(float), info->local_count, out);
        fputc('\n', out);
        free(host);
    }
    fclose(out);
    printf("%s backend: loss %.6f, %d gradients written to %s\n", ops_backend_name(), loss / (double)rows,
           m.registry.count, argv[2]);
    model_free(&m);
    free(tokens), free(targets);
    MPI_Finalize();
    return 0;
}
