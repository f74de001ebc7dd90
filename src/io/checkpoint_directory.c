// The directory of checkpoints, <dir>/step_<08d>.h5: the newest valid one, and pruning
// the older ones (checkpoint.h).
#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/checkpoint_internal.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

typedef struct {
    unsigned long long step;
    char *path;
} checkpoint_entry;

// Parses "step_<digits>.h5" (nothing else: not .tmp, not latest.h5).
static bool parse_checkpoint_name(const char *name, unsigned long long *step) {
    if (strncmp(name, "step_", 5) != 0) return false;
    const char *digits = name + 5, *end = digits;
    while (*end >= '0' && *end <= '9') end++;
    if (end == digits || strcmp(end, ".h5") != 0) return false;
    *step = strtoull(digits, NULL, 10);
    return true;
}

static int newest_first(const void *a, const void *b) {
    unsigned long long x = ((const checkpoint_entry *)a)->step, y = ((const checkpoint_entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

// Checkpoints in dir, newest first; *count = 0 when the directory does not exist.
static checkpoint_entry *list_checkpoints(const char *dir, int *count) {
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int capacity = 16;
    checkpoint_entry *entries = xmalloc((size_t)capacity * sizeof *entries);
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        unsigned long long step;
        if (!parse_checkpoint_name(e->d_name, &step)) continue;
        if (*count == capacity) {
            capacity *= 2;
            checkpoint_entry *grown = realloc(entries, (size_t)capacity * sizeof *entries);
            if (!grown) fatal("out of memory listing checkpoints in %s", dir);
            entries = grown;
        }
        size_t length = strlen(dir) + strlen(e->d_name) + 2;
        entries[*count].step = step;
        entries[*count].path = xmalloc(length);
        snprintf(entries[*count].path, length, "%s/%s", dir, e->d_name);
        (*count)++;
    }
    closedir(d);
    qsort(entries, (size_t)*count, sizeof *entries, newest_first);
    return entries;
}

static void free_checkpoints(checkpoint_entry *entries, int count) {
    for (int i = 0; i < count; i++) free(entries[i].path);
    free(entries);
}

char *checkpoint_find_latest(const char *dir, MPI_Comm comm) {
    hdf5_quiet();
    char *found = NULL;
    unsigned long long length = 0;
    char message[MESSAGE_MAX] = "";
    if (comm_rank(comm) == 0) {
        int count;
        checkpoint_entry *entries = list_checkpoints(dir, &count);
        // The damaged files are reported once it is known whether an older one is valid.
        char (*why)[MESSAGE_MAX] = xcalloc((size_t)count + 1, sizeof *why);
        int valid = 0;
        while (valid < count && !checkpoint_diagnose(entries[valid].path, why[valid], sizeof why[valid])) valid++;
        if (valid < count) {
            found = xstrdup(entries[valid].path);
            for (int i = 0; i < valid; i++) warn("skipping checkpoint: %s", why[i]);
        } else if (count) {  // starting from scratch would overwrite them, and they may be recoverable
            char *advice = strstr(why[0], ": " DAMAGED_ADVICE);
            if (advice) *advice = '\0';
            snprintf(message, sizeof message, "cannot resume: none of the %d checkpoint%s in %s is valid (the newest: "
                     "%.1000s); restore an intact copy, or move them away to start from scratch", count,
                     count == 1 ? "" : "s", dir, why[0]);
        }
        free(why);
        free_checkpoints(entries, count);
        length = found ? strlen(found) + 1 : 0;
    }
    fatal_if_root_failed(message, MESSAGE_MAX, comm);
    MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
    if (!length) return NULL;
    if (!found) found = xmalloc(length);
    MPI_Bcast(found, (int)length, MPI_CHAR, 0, comm);
    return found;
}

void checkpoint_prune(const char *dir, int keep, MPI_Comm comm) {
    hdf5_quiet();
    if (keep > 0 && comm_rank(comm) == 0) {
        int count, kept = 0;
        checkpoint_entry *entries = list_checkpoints(dir, &count);
        for (int i = 0; i < count; i++) {
            char why[MESSAGE_MAX];
            if (kept < keep) {
                kept += checkpoint_diagnose(entries[i].path, why, sizeof why);  // damaged newer files are left alone
            } else if (unlink(entries[i].path) != 0) {
                warn("cannot delete old checkpoint %s: %s", entries[i].path, strerror(errno));
            }
        }
        free_checkpoints(entries, count);
    }
    MPI_Barrier(comm);
}
