// Harness support (fuzz_support.h): the fatal() trap and its clean-up, the scratch file, MPI.
#include "fuzz/fuzz_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <mpi.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/lsan_interface.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"

// ---- live heap blocks of the running stage ----------------------------------------------
// An open-addressing set of the blocks allocated since the stage began and not yet freed,
// kept by the sanitizer allocator's hooks (which must not allocate). Only consulted when
// the stage ends in fatal().
enum { LIVE_SLOTS = 1 << 18, LIVE_MAX = LIVE_SLOTS / 2 };
static uintptr_t live[LIVE_SLOTS];
static size_t live_count;
static bool tracking;
static atomic_flag live_lock = ATOMIC_FLAG_INIT;

static size_t slot_of(uintptr_t p) { return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ull >> 46) & (LIVE_SLOTS - 1); }

static void lock(void) {
    while (atomic_flag_test_and_set_explicit(&live_lock, memory_order_acquire)) {
    }
}
static void unlock(void) { atomic_flag_clear_explicit(&live_lock, memory_order_release); }

static void on_malloc(const volatile void *pointer, size_t size) {
    (void)size;
    uintptr_t p = (uintptr_t)pointer;
    if (!p) return;
    lock();
    if (tracking) {
        if (live_count >= LIVE_MAX) {
            unlock();
            fprintf(stderr, "fuzz_support: more than %d live allocations in one stage\n", LIVE_MAX);
            abort();
        }
        size_t i = slot_of(p);
        while (live[i] && live[i] != p) i = (i + 1) & (LIVE_SLOTS - 1);
        if (!live[i]) live_count++;
        live[i] = p;
    }
    unlock();
}

// Linear probing with backward-shift deletion: no tombstones.
static void on_free(const volatile void *pointer) {
    uintptr_t p = (uintptr_t)pointer;
    if (!p) return;
    lock();
    if (tracking) {
        size_t i = slot_of(p);
        while (live[i] && live[i] != p) i = (i + 1) & (LIVE_SLOTS - 1);
        if (live[i]) {
            live_count--;
            size_t hole = i;
            for (size_t j = (i + 1) & (LIVE_SLOTS - 1); live[j]; j = (j + 1) & (LIVE_SLOTS - 1)) {
                size_t home = slot_of(live[j]);
                // Move live[j] into the hole unless its home lies cyclically in (hole, j].
                bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
                if (!stays) {
                    live[hole] = live[j];
                    hole = j;
                }
            }
            live[hole] = 0;
        }
    }
    unlock();
}

// The set is empty (all zeros) whenever live_count is 0: deletion leaves no tombstones.
static void start_tracking(void) {
    lock();
    if (live_count) memset(live, 0, sizeof live);
    live_count = 0;
    tracking = true;
    unlock();
}

// Stops tracking; with `ignore`, every block still live is marked as not leaked.
static void stop_tracking(bool ignore) {
    lock();
    tracking = false;
    unlock();
    if (!ignore || !live_count) return;
    for (size_t i = 0; i < LIVE_SLOTS; i++)
        if (live[i]) __lsan_ignore_object((const void *)live[i]);
}

// ---- file descriptors opened during the stage -------------------------------------------
enum { FD_LIMIT = 4096 };
static unsigned char fd_open_before[FD_LIMIT];

static void list_fds(unsigned char *open_fds) {
    memset(open_fds, 0, FD_LIMIT);
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    int own = dirfd(d);
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != own && fd >= 0 && fd < FD_LIMIT) open_fds[fd] = 1;
    }
    closedir(d);
}

static void close_new_fds(void) {
    unsigned char now[FD_LIMIT];
    list_fds(now);
    for (int fd = 0; fd < FD_LIMIT; fd++)
        if (now[fd] && !fd_open_before[fd]) close(fd);
}

// ---- the stage ----------------------------------------------------------------------------
static jmp_buf fatal_return;
static bool in_stage;

static void return_to_stage(int code) {
    (void)code;
    if (!in_stage) abort();  // fatal() outside a stage: a harness bug, reported as a crash
    longjmp(fatal_return, 1);
}

bool fuzz_run_stage(void (*stage)(void *arg), void *arg) {
    static bool hooks_installed;
    if (!hooks_installed) {
        __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
        fatal_set_exit_hook(return_to_stage);
        hooks_installed = true;
    }
    list_fds(fd_open_before);
    start_tracking();
    in_stage = true;
    if (setjmp(fatal_return) == 0) {
        stage(arg);
        in_stage = false;
        stop_tracking(false);
        return true;
    }
    in_stage = false;
    stop_tracking(true);
    H5close();  // closes every HDF5 id left open (the next HDF5 call opens the library again)
    close_new_fds();
    return false;
}

// ---- input file, MPI, invariants -----------------------------------------------------------
// $TMPDIR when set (the test script points it at its scratch directory), else /dev/shm.
static const char *scratch_dir(void) {
    const char *tmpdir = getenv("TMPDIR");
    if (tmpdir && *tmpdir) return tmpdir;
    return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

const char *fuzz_write_input(const uint8_t *data, size_t size, const char *suffix) {
    static char path[512];
    const char *dir = scratch_dir();
    snprintf(path, sizeof path, "%s/decon-fuzz-%ld%s", dir, (long)getpid(), suffix);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            perror(path);
            abort();
        }
        done += (size_t)n;
    }
    close(fd);
    return path;
}

static void remove_input(void) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "decon-fuzz-%ld.", (long)getpid());  // suffixes start with "."
    const char *dir = scratch_dir();
    DIR *listing = opendir(dir);
    if (!listing) return;
    for (struct dirent *e = readdir(listing); e; e = readdir(listing))
        if (strncmp(e->d_name, pattern, strlen(pattern)) == 0) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(listing);
}

void fuzz_init_mpi(int *argc, char ***argv) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) MPI_Init(argc, argv);
    atexit(remove_input);
}

_Noreturn void fuzz_invariant_failed(const char *harness, const char *what) {
    fprintf(stderr, "%s: invariant failed on an accepted input: %s\n", harness, what);
    abort();
}
