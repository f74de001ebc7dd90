// Ending a run whose collective write failed (HDF5 through MPI-IO; docs/design.md
// "Storage failures"). On a full disk, a quota or a file size limit every rank of the
// write usually fails at the same call; without agreement each would print its own line.
#pragma once
#include <mpi.h>

#include "core/errors.h"

// Deletes `partial` (the temporary file: it never takes the final name, and its space
// comes back), then ends the run with `message`: the ranks of comm that fail within a
// few seconds of each other agree, and the lowest of them prints the one "decon: error"
// line; when some rank does not fail (it waits in the next collective), this rank prints
// its own line and the exit hook (MPI_Abort) ends the others, never a hang.
_Noreturn void write_failure_fatal(MPI_Comm comm, const char *partial, const char *format, ...) DECON_PRINTF(3, 4);

// Rank 0 of comm filled message[size] with its verdict (empty when all is well): every
// rank receives it and, when it is not empty, ends with that same one line. Collective.
void fatal_if_root_failed(char *message, int size, MPI_Comm comm);
