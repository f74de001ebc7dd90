#include "io/write_failure.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

// How long a failing rank waits for the others to report their failure.
static const double AGREEMENT_SECONDS = 5.0;

_Noreturn void write_failure_fatal(MPI_Comm comm, const char *partial, const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    unlink(partial);
    int size, rank;
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    if (size == 1) fatal("%s", message);
    // Every rank of comm failed if this reduction completes (the ranks still writing never
    // join it): then the lowest prints, the others wait for it, and all leave together.
    int lowest = rank, done = 0;
    MPI_Request request;
    MPI_Iallreduce(MPI_IN_PLACE, &lowest, 1, MPI_INT, MPI_MIN, comm, &request);
    double start = MPI_Wtime();
    while (!done && MPI_Wtime() - start < AGREEMENT_SECONDS) {
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (!done) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    if (!done) fatal("%s", message);
    if (rank == lowest) {
        fprintf(stderr, "decon: error: %s\n", message);
        fflush(stderr);
    }
    MPI_Barrier(comm);  // the line is out before any rank's exit can end the job
    fatal_exit(1);
}

void fatal_if_root_failed(char *message, int size, MPI_Comm comm) {
    MPI_Bcast(message, size, MPI_CHAR, 0, comm);
    if (message[0]) fatal_agreed("%s", message);  // every rank has the verdict: one line
}
