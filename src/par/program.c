#include "par/program.h"

#include <mpi.h>
#include <signal.h>
#include <stdlib.h>

#include "core/errors.h"

static void abort_all_ranks(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void program_start(int *argc, char ***argv, int *rank, int *world) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, world);
    log_set_rank(*rank, *world);
    if (*world > 1) fatal_set_exit_hook(abort_all_ranks);
    signal(SIGXFSZ, SIG_IGN);
}
