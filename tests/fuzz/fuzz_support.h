// What every libFuzzer harness in tests/fuzz/ shares: surviving fatal(), writing the input
// to a file the real loader opens, and MPI for the loaders that are collective.
//
// fatal() is how the project rejects bad input (one line, exit 1). Under the fuzzer an exit
// would end the run, so the harnesses install an exit hook (core/errors.h's
// fatal_set_exit_hook, the one MPI programs use for MPI_Abort) that jumps back into
// fuzz_run_stage. Production code is unchanged. What a process that exits leaves behind is
// released here instead, so it is neither reported nor accumulated: the heap blocks still
// live are marked for LeakSanitizer (they are freed by the exit in production, so they are
// not leaks), HDF5 is shut down (closing every id the loader left open), and file
// descriptors opened since the stage began are closed. Leaks on paths that return normally
// are still reported.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Runs stage(arg); true when it returned, false when it ended in fatal() (after the clean-up
// above). Stages do not nest.
bool fuzz_run_stage(void (*stage)(void *arg), void *arg);

// Writes data to this process's scratch file (on /dev/shm when present) and returns its path.
// The file is rewritten for every input; suffix is e.g. ".h5".
const char *fuzz_write_input(const uint8_t *data, size_t size, const char *suffix);

// MPI_Init (a singleton: the fuzzers run without mpirun) and quiet logging. Call from
// LLVMFuzzerInitialize.
void fuzz_init_mpi(int *argc, char ***argv);

// A failed invariant of a loader that accepted the input: print and abort (a finding).
_Noreturn void fuzz_invariant_failed(const char *harness, const char *what);
#define FUZZ_CHECK(harness, condition) \
    do {                               \
        if (!(condition)) fuzz_invariant_failed(harness, #condition); \
    } while (0)
