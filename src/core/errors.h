// One-line user-facing errors and fatal exits.
// Every failure the user can cause ends in fatal(): one line on stderr naming the
// file/key/rank and what to do, then a non-zero exit. core/ knows nothing about MPI;
// programs that run under MPI install an exit hook (MPI_Abort) with fatal_set_exit_hook.
#pragma once
#include <stdio.h>
#include <stdlib.h>

#if defined(__GNUC__)
#define DECON_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DECON_PRINTF(a, b)
#endif

// Prints "decon: error: <message>" and exits 1. Under mpirun (a world of several ranks)
// the line reads "decon: error (rank R): ..." and is printed once per job, not once per
// rank: rank 0 prints at once and its exit hook ends every rank; any other rank first
// waits a few seconds for that, and prints its own line only when it is still running
// (an error that rank alone met).
_Noreturn void fatal(const char *format, ...) DECON_PRINTF(1, 2);
// Informational line on stdout (rank 0 only when a rank is set).
void info(const char *format, ...) DECON_PRINTF(1, 2);
void warn(const char *format, ...) DECON_PRINTF(1, 2);

void fatal_set_exit_hook(void (*hook)(int code));  // must not return
// Leaves as fatal() does, printing nothing: for a caller that printed the line itself.
_Noreturn void fatal_exit(int code);

// For a failure every rank has detected together (a collective verdict: each rank calls
// it with the same message): rank 0 alone prints "decon: error: <message>" and every rank
// leaves through the agreed-exit hook, a clean non-zero exit (MPI_Finalize) instead of
// MPI_Abort, so the user sees one line, not one per rank plus an abort banner. Without
// that hook it is fatal().
_Noreturn void fatal_agreed(const char *format, ...) DECON_PRINTF(1, 2);
void fatal_set_agreed_exit_hook(void (*hook)(int code));  // must not return
void log_set_rank(int rank, int world_size);
int log_rank(void);

void *xmalloc(size_t bytes);          // fatal() on failure
void *xcalloc(size_t count, size_t size);
void *xaligned_alloc(size_t bytes);   // 64-byte aligned, zeroed
// A growing array with room for element `count`: returns `array` while count < *capacity,
// else a copy at twice the capacity (`first` elements the first time), freeing the old one.
void *xgrow(void *array, int count, int *capacity, size_t element_size, int first);
char *xstrdup(const char *s);
// How many allocations the x*alloc functions above have made in this process (one atomic
// increment each): the test that nothing is allocated inside the step loop reads it.
unsigned long long core_allocation_count(void);
