// Checkpoint throughput: writes and reads a checkpoint of about --mb megabytes (params +
// Adam m + v, a transformer-shaped registry) and prints one line of MB/s. Under mpirun
// -np N the ranks form tp x dp = N (--tp, default N): rank r holds tensor-parallel shard
// r % tp; with --zero the Adam moments are split over the dp ranks of each shard
// (ZeRO-1, 16-float-aligned ranges), else the lowest dp rank writes each shard.
//
//   build/bench/bench_checkpoint [--mb 200] [--dir /tmp] [--reps 3] [--tp N] [--zero]
//   mpirun -np 4 build/bench/bench_checkpoint --tp 2 --zero
//
// Write time includes everything checkpoint_write does (flush, fsync, rename). Reads are
// timed twice: cold, after dropping the page cache (echo 3 > /proc/sys/vm/drop_caches
// when allowed, else posix_fadvise DONTNEED on the file: what a resume after a restart
// sees), and again with the file cached. Best of --reps repetitions; MB = 1e6 bytes of
// logical float32 data (params + m + v).
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/params.h"
#include "io/checkpoint.h"

static void build_model(param_registry *registry, int rank, int ranks, int layers) {
    enum { VOCAB = 8192, D = 512, FF = 1536 };
    char name[PARAM_NAME_MAX];
    params_init(registry, rank, ranks);
    params_add(registry, "embed.weight", "embedding", -1, VOCAB, D, SHARD_ROWS, INIT_NORMAL, 0.02f, false);
    for (int l = 0; l < layers; l++) {
        const struct {
            const char *suffix;
            int64_t d0, d1;
            shard_kind shard;
        } tensors[] = {
            {"mixer_norm.weight", D, 0, SHARD_NONE}, {"mixer.wq", D, D, SHARD_ROWS}, {"mixer.bq", D, 0, SHARD_ROWS},
            {"mixer.wk", D, D, SHARD_ROWS},          {"mixer.bk", D, 0, SHARD_ROWS}, {"mixer.wv", D, D, SHARD_ROWS},
            {"mixer.bv", D, 0, SHARD_ROWS},          {"mixer.wo", D, D, SHARD_COLS}, {"mlp_norm.weight", D, 0, SHARD_NONE},
            {"mlp.gate", FF, D, SHARD_ROWS},         {"mlp.up", FF, D, SHARD_ROWS},  {"mlp.down", D, FF, SHARD_COLS},
        };
        for (size_t t = 0; t < sizeof tensors / sizeof *tensors; t++) {
            snprintf(name, sizeof name, "layers.%d.%s", l, tensors[t].suffix);
            params_add(registry, name, "layer", l, tensors[t].d0, tensors[t].d1, tensors[t].shard, INIT_NORMAL, 0.02f,
                       tensors[t].d1 > 0);
        }
    }
    params_add(registry, "final_norm.weight", "norm", -1, D, 0, SHARD_NONE, INIT_ONES, 0, false);
}

// Drops the page cache (the whole cache when allowed, else the file's pages); returns
// how, for the report.
static const char *drop_from_page_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return "not dropped";
    fdatasync(fd);
    sync();
    const char *how = "fadvise DONTNEED";
    FILE *drop = fopen("/proc/sys/vm/drop_caches", "w");
    if (drop) {
        if (fputs("3\n", drop) >= 0 && fclose(drop) == 0) how = "drop_caches";
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return how;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    log_set_rank(rank, ranks);
    double target_mb = 200;
    const char *dir = "/tmp";
    int reps = 3, tp = ranks, zero = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--zero") == 0) zero = 1;
        else if (i + 1 == argc) fatal("option %s needs a value", argv[i]);
        else if (strcmp(argv[i], "--mb") == 0) target_mb = atof(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0) dir = argv[++i];
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tp") == 0) tp = atoi(argv[++i]);
        else fatal("unknown option %s (use --mb, --dir, --reps, --tp, --zero)", argv[i]);
    }
    if (tp < 1 || ranks % tp != 0) fatal("--tp %d does not divide the %d ranks", tp, ranks);
    int dp = ranks / tp, dp_rank = rank / tp;

    // Layers so that params + m + v come to about target_mb.
    param_registry probe;
    build_model(&probe, 0, 1, 1);
    double one_layer = (double)params_total_logical(&probe);
    params_free(&probe);
    build_model(&probe, 0, 1, 2);
    double per_layer = (double)params_total_logical(&probe) - one_layer;
    params_free(&probe);
    int layers = (int)((target_mb * 1e6 / 12.0 - (one_layer - per_layer)) / per_layer + 0.5);
    if (layers < 1) layers = 1;
    param_registry registry;
    build_model(&registry, rank % tp, tp, layers);
    double mb = 12.0 * (double)params_total_logical(&registry) / 1e6;
    // ZeRO-1: this dp rank's share of the buffer in 16-float units.
    size_t units = registry.total / 16;
    moment_range range = {0, registry.total};
    if (zero) range = (moment_range){units * (size_t)dp_rank / (size_t)dp * 16, units * (size_t)(dp_rank + 1) / (size_t)dp * 16};
    size_t held = range.end - range.begin;

    float *params = xaligned_alloc(registry.total * sizeof(float));
    float *m = xaligned_alloc(held * sizeof(float));
    float *v = xaligned_alloc(held * sizeof(float));
    params_initialize(&registry, params, 1);
    for (size_t i = 0; i < held; i++) {
        m[i] = 1e-3f * params[range.begin + i];
        v[i] = params[range.begin + i] * params[range.begin + i];
    }
    train_state state = {.step = 1000, .tokens_seen = 1000000, .seed = 1, .learning_rate = 4e-4, .loss = 3.0};
    char path[4096];
    snprintf(path, sizeof path, "%s/bench_checkpoint_%d.h5", dir, (int)getpid() * (rank == 0));
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);

    double best_write = 1e30, best_cold = 1e30, best_warm = 1e30;
    const char *dropped = "not dropped";
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        checkpoint_write_partitioned(path, &registry, params, m, v, &range, &state, "[bench]\n", MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t1 = MPI_Wtime();
        if (rank == 0) dropped = drop_from_page_cache(path);
        MPI_Barrier(MPI_COMM_WORLD);
        double t2 = MPI_Wtime();
        checkpoint_read_partitioned(path, &registry, params, m, v, &range, &state, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t3 = MPI_Wtime();
        checkpoint_read_partitioned(path, &registry, params, m, v, &range, &state, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t4 = MPI_Wtime();
        if (t1 - t0 < best_write) best_write = t1 - t0;
        if (t3 - t2 < best_cold) best_cold = t3 - t2;
        if (t4 - t3 < best_warm) best_warm = t4 - t3;
    }
    if (rank == 0) {
        char layout[64];
        snprintf(layout, sizeof layout, "tp %d x dp %d%s", tp, dp, zero && dp > 1 ? ", ZeRO-1" : "");
        printf("checkpoint np %d (%s): write %.0f MB/s, read %.0f MB/s cold (%s), %.0f MB/s warm "
               "[%.0f MB, %d tensors x 3, best of %d, %s]\n", ranks, layout, mb / best_write, mb / best_cold, dropped,
               mb / best_warm, mb, registry.count, reps, dir);
        unlink(path);
    }
    free(params);
    free(m);
    free(v);
    params_free(&registry);
    MPI_Finalize();
    return 0;
}
