// decon-train: pre-train a decoder-only language model.
//   [mpirun -np N] decon-train <config.ini> [--set section.key=value]... [--run-dir DIR] [--resume]
//                                         [--tp T] [--sp] [--zero 1]
//   decon-train <config.ini> [...] --check N   validate for N ranks and exit (no MPI, no training)
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/errors.h"
#include "model/layer_plan.h"
#include "par/process_grid.h"
#include "train/signals.h"
#include "train/trainer.h"

static void abort_all_ranks(int code) { MPI_Abort(MPI_COMM_WORLD, code); exit(code); }
// One rank: leave without exit handlers. HDF5's would close a file whose write just
// failed, and crash doing it (measured: SIGSEGV in H5F__close_cb after EFBIG).
static void leave_now(int code) {
    fflush(NULL);
    _exit(code);
}
// Every rank reached the same verdict (fatal_agreed): a clean exit, no abort.
static void finalize_and_exit(int code) {
    MPI_Finalize();
    exit(code);
}

static void usage(void) {
    fprintf(stderr,
            "usage: [mpirun -np N] decon-train <config.ini> [--set section.key=value]... [--run-dir DIR] [--resume]\n"
            "                                 [--tp T] [--sp] [--zero 1]\n"
            "  --set      override one config key (repeatable), e.g. --set train.max_steps=200\n"
            "  --run-dir  where checkpoints, metrics.jsonl and config.ini go (= --set io.run_dir=DIR)\n"
            "  --resume   continue from the newest valid checkpoint in <run_dir>/ckpt (written at any\n"
            "             tp/dp/sp/zero decomposition)\n"
            "  --tp T     tensor-parallel ranks; the N ranks form N/T data-parallel replicas\n"
            "             (= --set parallel.tensor_parallel=T)\n"
            "  --sp       sequence parallelism inside the tp group (= --set parallel.sequence_parallel=1)\n"
            "  --zero 1   shard the Adam moments over the data-parallel replicas (= --set parallel.zero_stage=1)\n"
            "  --check N  only validate: the config, its layer layout, its data files and its decomposition\n"
            "             over N ranks; prints one line and exits 0, or the error and 1 (jobs/sweep uses it)\n");
}

// --check N: everything a job would refuse at start-up, without MPI and without training.
static int check_only(const decon_config *c, const char *origin, int ranks) {
    const mixer_kind **plan = (const mixer_kind **)xcalloc((size_t)c->num_hidden_layers, sizeof *plan);
    layer_plan_build(plan, c, origin);
    process_grid_validate(c, ranks, origin);
    const char *shards[2][2] = {{c->train, "train"}, {c->validation, "validation"}};
    for (int i = 0; i < 2; i++)
        if (shards[i][0][0] && access(shards[i][0], R_OK) != 0)
            fatal("%s: [data] %s = %s cannot be read; build the corpus (bash input/corpus/build.sh data/corpus) or "
                  "fix the path", origin, shards[i][1], shards[i][0]);
    char *letters = xmalloc((size_t)c->num_hidden_layers + 1);
    layer_plan_letters(letters, plan, c->num_hidden_layers);
    printf("ok: %s, layers %s, %d ranks (tp %d)\n", origin, letters, ranks, c->tensor_parallel);
    free(letters);
    free((void *)plan);
    return 0;
}

int main(int argc, char **argv) {
    int check_ranks = 0;  // --check N: no MPI at all
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--check") == 0) check_ranks = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : -1;
    if (check_ranks < 0) fatal("--check needs a positive number of ranks, e.g. --check 4");
    if (!check_ranks) MPI_Init(&argc, &argv);
    int rank, world;
    if (check_ranks) {
        rank = 0;
        world = 1;
    } else {
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &world);
        log_set_rank(rank, world);
        // One rank's fatal error (bad input it alone sees) ends every rank at once, never a hang.
        fatal_set_exit_hook(world > 1 ? abort_all_ranks : leave_now);
        signals_ignore_file_size_limit();  // a full quota or ulimit -f: one error line, not SIGXFSZ
        fatal_set_agreed_exit_hook(finalize_and_exit);
    }

    trainer_options options = {0};
    config_defaults(&options.config);
    const char *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            if (!check_ranks) MPI_Finalize();
            return 0;
        }
        if (strcmp(argv[i], "--resume") == 0 || strcmp(argv[i], "--sp") == 0) {
            options.resume |= strcmp(argv[i], "--resume") == 0;
        } else if (strcmp(argv[i], "--set") == 0 || strcmp(argv[i], "--run-dir") == 0 ||
                   strcmp(argv[i], "--tp") == 0 || strcmp(argv[i], "--zero") == 0 || strcmp(argv[i], "--check") == 0) {
            if (i + 1 >= argc) fatal("%s needs a value; see decon-train --help", argv[i]);
            i++;
        } else if (argv[i][0] == '-') fatal("unknown option %s; see decon-train --help", argv[i]);
        else if (!config_path) config_path = argv[i];
        else fatal("more than one config file given (%s and %s)", config_path, argv[i]);
    }
    if (!config_path) {
        usage();
        fatal("no config file given; e.g. decon-train input/models/tiny.ini");
    }
    // The file first, then the command-line overrides in order.
    config_load(&options.config, config_path);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0) config_set(&options.config, argv[++i], "--set");
        else if (strcmp(argv[i], "--run-dir") == 0 || strcmp(argv[i], "--tp") == 0 || strcmp(argv[i], "--zero") == 0) {
            const char *key = strcmp(argv[i], "--run-dir") == 0 ? "io.run_dir"
                              : strcmp(argv[i], "--tp") == 0    ? "parallel.tensor_parallel"
                                                                : "parallel.zero_stage";
            char assignment[CONFIG_STRING_MAX + 64];
            snprintf(assignment, sizeof assignment, "%s=%s", key, argv[i + 1]);
            config_set(&options.config, assignment, argv[i]);
            i++;
        } else if (strcmp(argv[i], "--sp") == 0) {
            config_set(&options.config, "parallel.sequence_parallel=1", "--sp");
        }
    }
    config_validate(&options.config, config_path);
    if (check_ranks) return check_only(&options.config, config_path, check_ranks);
    options.origin = config_path;
    int code = trainer_run(&options);
    MPI_Finalize();
    return code;
}
