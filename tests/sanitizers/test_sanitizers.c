// The sanitized build can fail (`make test SANITIZE=1` only): this program starts itself
// with a deliberate bug of each kind the sanitizers must catch and checks that the child
// ends with a non-zero status and the sanitizer's report, also as a rank under mpirun;
// and that MPI_Init/MPI_Finalize alone stay clean, i.e. tests/sanitizers/lsan.supp hides
// Open MPI's own allocations but not a leak of ours (made inside an OpenMP region, whose
// stack passes through libgomp, and after MPI_Init).
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child_process.h"
#include "core/errors.h"
#include "testing.h"

// The bugs. `argc`-dependent values keep the compiler from folding them away.
static int heap_overflow(int argc) {
    unsigned char *bytes = xmalloc(16);
    memset(bytes, 0, 16);
    bytes[15 + argc] = 1;  // argc >= 2: past the end
    int value = bytes[0];
    free(bytes);
    return value;
}

static int signed_overflow(int argc) {
    int big = INT_MAX - 1;
    return big + argc;  // argc >= 2: overflows
}

static void *leaked;  // cleared below, so the block is unreachable at exit

static int leak_after_mpi_init(int argc, char **argv) {
    MPI_Init(&argc, &argv);
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        leaked = xmalloc(4096);
    }
    memset(leaked, 1, 4096);
    leaked = NULL;
    MPI_Finalize();
    return 0;
}

static int mpi_init_finalize(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Finalize();
    return 0;
}

static char self_path[4096];

// Runs `<self> mode`, under `mpirun -np ranks` unless ranks is NULL, and checks its status
// and whether its output holds `report` (NULL: must exit 0 with no sanitizer report).
static void expect(const char *name, const char *ranks, const char *mode, const char *report) {
    child_result r = ranks ? child_run((const char *[]){"timeout", "120", "mpirun", "--oversubscribe", "-np", ranks,
                                                        self_path, mode, NULL},
                                       CHILD_STDOUT | CHILD_STDERR)
                           : child_run((const char *[]){self_path, mode, NULL}, CHILD_STDOUT | CHILD_STDERR);
    int exited_zero = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
    if (!report)
        testing_report(exited_zero && !strstr(r.output, "Sanitizer"), name, "status %d, output:\n%s", r.status,
                       r.output);
    else
        testing_report(!exited_zero && strstr(r.output, report), name,
                       "status %d, want non-zero and \"%s\"; output:\n%s", r.status, report, r.output);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--heap-overflow") == 0) return heap_overflow(argc);
    if (argc == 2 && strcmp(argv[1], "--signed-overflow") == 0) return signed_overflow(argc);
    if (argc == 2 && strcmp(argv[1], "--leak") == 0) return leak_after_mpi_init(argc, argv);
    if (argc == 2 && strcmp(argv[1], "--clean") == 0) return mpi_init_finalize(argc, argv);
    child_keep_environment();
    ssize_t length = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (length <= 0) fatal("cannot find this test's own path");
    self_path[length] = '\0';
    const char *options = getenv("LSAN_OPTIONS");
    testing_report(options && strstr(options, "lsan.supp"), "sanitizer options are set",
                   "LSAN_OPTIONS names no suppressions: run through tests/run_all.sh, or first "
                   "`. tests/sanitizers/options.sh`");
    expect("AddressSanitizer stops a heap buffer overflow", NULL, "--heap-overflow", "heap-buffer-overflow");
    expect("UBSan stops a signed integer overflow", NULL, "--signed-overflow", "signed integer overflow");
    expect("LeakSanitizer reports our leak made in an OpenMP region after MPI_Init", NULL, "--leak",
           "detected memory leaks");
    expect("MPI_Init and MPI_Finalize alone are clean (Open MPI's leaks suppressed)", NULL, "--clean", NULL);
    expect("under mpirun -np 2, a rank's leak fails the job", "2", "--leak", "detected memory leaks");
    expect("under mpirun -np 2, MPI_Init and MPI_Finalize alone are clean", "2", "--clean", NULL);
    return testing_exit_code();
}
