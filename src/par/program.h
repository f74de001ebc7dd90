// The start every MPI program of decon shares (decon-eval, -generate, -export, -analyze,
// the MPI benches): MPI_Init, this rank's prefix on log lines, and, when several ranks
// run, a fatal error on one rank (bad input it alone sees) ends every rank at once with
// MPI_Abort instead of leaving the others waiting in a collective. A full quota or
// `ulimit -f` becomes one error line from the write that failed, not a SIGXFSZ kill.
#pragma once

// *rank and *world of MPI_COMM_WORLD.
void program_start(int *argc, char ***argv, int *rank, int *world);
