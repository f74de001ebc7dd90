#include "core/errors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

// How long a rank other than 0 waits in fatal() for rank 0 to end the job (errors.h).
enum { FATAL_GRACE_SECONDS = 5 };

static void (*exit_hook)(int) = NULL;
static void (*agreed_exit_hook)(int) = NULL;
static int current_rank = -1;
static int current_world = 1;

void fatal_set_exit_hook(void (*hook)(int code)) { exit_hook = hook; }
void fatal_set_agreed_exit_hook(void (*hook)(int code)) { agreed_exit_hook = hook; }

void log_set_rank(int rank, int world_size) {
    current_rank = rank;
    current_world = world_size;
}

int log_rank(void) { return current_rank < 0 ? 0 : current_rank; }

// Sleeps FATAL_GRACE_SECONDS in all, through signals (mpirun's SIGTERM then SIGKILL end it).
static void wait_for_rank_zero(void) {
    struct timespec left = {FATAL_GRACE_SECONDS, 0};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

_Noreturn void fatal(const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    // An error every rank meets (a bad flag, config, shard or checkpoint) reaches rank 0
    // within moments, and rank 0's exit hook ends the job: the line is printed once.
    if (current_world > 1 && current_rank > 0) wait_for_rank_zero();
    if (current_world > 1)
        fprintf(stderr, "decon: error (rank %d): %s\n", current_rank, message);
    else
        fprintf(stderr, "decon: error: %s\n", message);
    fflush(stderr);
    fflush(stdout);
    if (exit_hook) exit_hook(1);
    exit(1);
}

_Noreturn void fatal_exit(int code) {
    fflush(stderr);
    fflush(stdout);
    if (exit_hook) exit_hook(code);
    exit(code);
}

_Noreturn void fatal_agreed(const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (!agreed_exit_hook) fatal("%s", message);
    if (current_rank <= 0) fprintf(stderr, "decon: error: %s\n", message);
    fflush(stderr);
    fflush(stdout);
    agreed_exit_hook(1);
    exit(1);
}

void info(const char *format, ...) {
    if (current_rank > 0) return;
    va_list args;
    va_start(args, format);
    vfprintf(stdout, format, args);
    va_end(args);
    fputc('\n', stdout);
    fflush(stdout);
}

void warn(const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    fprintf(stderr, "decon: warning: %s\n", message);
}

static atomic_ullong allocations;

unsigned long long core_allocation_count(void) { return atomic_load_explicit(&allocations, memory_order_relaxed); }

static void count_allocation(void) { atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed); }

void *xmalloc(size_t bytes) {
    count_allocation();
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fatal("out of memory allocating %zu bytes; use a smaller model or batch", bytes);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    count_allocation();
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) fatal("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xgrow(void *array, int count, int *capacity, size_t element_size, int first) {
    if (count < *capacity) return array;
    *capacity = *capacity ? 2 * *capacity : first;
    void *grown = xmalloc((size_t)*capacity * element_size);
    if (count) memcpy(grown, array, (size_t)count * element_size);
    free(array);
    return grown;
}

void *xaligned_alloc(size_t bytes) {
    count_allocation();
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) fatal("out of memory allocating %zu bytes; use a smaller model or batch", bytes);
    memset(p, 0, rounded ? rounded : 64);
    return p;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}
