// Who holds what in a checkpoint transfer: every rank's tensor-parallel shard and Adam
// moment range, gathered once so that every rank reaches the same verdict
// (checkpoint_internal.h).
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/errors.h"
#include "io/checkpoint_internal.h"

static uint64_t field(const decomposition *d, int rank, int which) { return d->all[(size_t)rank * FIELD_COUNT + which]; }

// A verdict every rank reached from the same gathered data: rank 0 prints it, so the job
// shows one line, and the other ranks wait to be ended with it (by the exit hook's
// MPI_Abort, or by mpirun when rank 0 exits non-zero).
static _Noreturn DECON_PRINTF(2, 3) void fatal_from_root(MPI_Comm comm, const char *format, ...) {
    if (comm_rank(comm) == 0) {
        char message[MESSAGE_MAX];
        va_list args;
        va_start(args, format);
        vsnprintf(message, sizeof message, format, args);
        va_end(args);
        fatal("%s", message);
    }
    MPI_Barrier(comm);  // never completes: rank 0 does not take part
    exit(1);
}

decomposition checkpoint_gather_decomposition(const param_registry *registry, const moment_range *range, bool has_m,
                                              bool has_v, bool writing, const char *what, MPI_Comm comm) {
    decomposition d = {0};
    MPI_Comm_rank(comm, &d.rank);
    MPI_Comm_size(comm, &d.size);
    uint64_t mine[FIELD_COUNT] = {
        [FIELD_SHARD] = (uint64_t)registry->shard_rank, [FIELD_SHARDS] = (uint64_t)registry->shard_count,
        [FIELD_TENSORS] = (uint64_t)registry->count,    [FIELD_TOTAL] = registry->total,
        [FIELD_BEGIN] = range->begin,                   [FIELD_END] = range->end,
        [FIELD_HAS_M] = has_m,                          [FIELD_HAS_V] = has_v};
    d.all = xmalloc((size_t)d.size * sizeof mine);
    MPI_Allgather(mine, FIELD_COUNT, MPI_UINT64_T, d.all, FIELD_COUNT, MPI_UINT64_T, comm);

    d.lowest_of_shard = true;
    for (int r = 0; r < d.size; r++) {
        if (field(&d, r, FIELD_SHARDS) != field(&d, 0, FIELD_SHARDS) || field(&d, r, FIELD_TENSORS) != field(&d, 0, FIELD_TENSORS))
            fatal_from_root(comm, "%s: rank %d has %llu tensors in %llu shards, rank 0 has %llu in %llu: every rank of the "
                            "communicator must register the same model", what, r,
                            (unsigned long long)field(&d, r, FIELD_TENSORS), (unsigned long long)field(&d, r, FIELD_SHARDS),
                            (unsigned long long)field(&d, 0, FIELD_TENSORS), (unsigned long long)field(&d, 0, FIELD_SHARDS));
        if (field(&d, r, FIELD_BEGIN) > field(&d, r, FIELD_END) || field(&d, r, FIELD_END) > field(&d, r, FIELD_TOTAL))
            fatal_from_root(comm, "%s: rank %d holds Adam moments [%llu, %llu) of a buffer of %llu floats: a moment range "
                            "must satisfy begin <= end <= registry total", what, r,
                            (unsigned long long)field(&d, r, FIELD_BEGIN), (unsigned long long)field(&d, r, FIELD_END),
                            (unsigned long long)field(&d, r, FIELD_TOTAL));
        if (r < d.rank && field(&d, r, FIELD_SHARD) == (uint64_t)registry->shard_rank) d.lowest_of_shard = false;
        d.any_m = d.any_m || field(&d, r, FIELD_HAS_M);
        d.any_v = d.any_v || field(&d, r, FIELD_HAS_V);
    }
    for (int s = 0; writing && s < registry->shard_count; s++) {
        bool held = false;
        for (int r = 0; r < d.size; r++) held = held || field(&d, r, FIELD_SHARD) == (uint64_t)s;
        if (!held)
            fatal_from_root(comm, "%s: no rank of the communicator holds tensor-parallel shard %d of %d", what, s,
                            registry->shard_count);
    }
    // A rank with moments to transfer must pass them when the others do (an empty range
    // needs no array).
    for (int r = 0; r < d.size; r++) {
        bool holds = field(&d, r, FIELD_END) > field(&d, r, FIELD_BEGIN);
        if (holds && ((d.any_m && !field(&d, r, FIELD_HAS_M)) || (d.any_v && !field(&d, r, FIELD_HAS_V))))
            fatal_from_root(comm, "%s: rank %d passes no Adam moments for its range [%llu, %llu) while other ranks pass "
                            "theirs: pass m and v on every rank or on none", what, r,
                            (unsigned long long)field(&d, r, FIELD_BEGIN), (unsigned long long)field(&d, r, FIELD_END));
    }
    d.in_root_shard = (uint64_t)registry->shard_rank == field(&d, 0, FIELD_SHARD);
    return d;
}

bool checkpoint_moments_partitioned(const decomposition *d, const char *what, MPI_Comm comm) {
    int *holders = xmalloc((size_t)d->size * sizeof *holders);
    bool mine_partitioned = false;
    for (uint64_t s = 0; s < field(d, 0, FIELD_SHARDS); s++) {
        int n = 0;
        bool identical = true;
        for (int r = 0; r < d->size; r++) {
            if (field(d, r, FIELD_SHARD) != s) continue;
            if (n && field(d, r, FIELD_TOTAL) != field(d, holders[0], FIELD_TOTAL))
                fatal_from_root(comm, "%s: ranks %d and %d hold tensor-parallel shard %llu in buffers of %llu and %llu "
                                "floats: every rank must register the same model", what, holders[0], r,
                                (unsigned long long)s, (unsigned long long)field(d, holders[0], FIELD_TOTAL),
                                (unsigned long long)field(d, r, FIELD_TOTAL));
            identical = identical && (!n || (field(d, r, FIELD_BEGIN) == field(d, holders[0], FIELD_BEGIN) &&
                                             field(d, r, FIELD_END) == field(d, holders[0], FIELD_END)));
            holders[n++] = r;
        }
        // Walk the ranges by begin (one of them when identical; empty ones cover nothing).
        int walked = 0;
        for (int i = 0; i < (identical ? 1 : n); i++)
            if (field(d, holders[i], FIELD_END) > field(d, holders[i], FIELD_BEGIN)) holders[walked++] = holders[i];
        for (int i = 1; i < walked; i++)  // insertion sort: a handful of data-parallel ranks
            for (int j = i; j > 0 && field(d, holders[j], FIELD_BEGIN) < field(d, holders[j - 1], FIELD_BEGIN); j--) {
                int t = holders[j];
                holders[j] = holders[j - 1];
                holders[j - 1] = t;
            }
        uint64_t covered = 0, total = field(d, holders[0], FIELD_TOTAL);
        for (int i = 0; i < walked; i++) {
            uint64_t begin = field(d, holders[i], FIELD_BEGIN), end = field(d, holders[i], FIELD_END);
            if (begin < covered)
                fatal_from_root(comm, "%s: ranks %d and %d hold tensor-parallel shard %llu with overlapping Adam moment "
                                "ranges [%llu, %llu) and [%llu, %llu): the ranges of a shard's data-parallel ranks must "
                                "be pairwise disjoint (ZeRO-1) or all [0, %llu)", what,
                                holders[i - 1], holders[i], (unsigned long long)s,
                                (unsigned long long)field(d, holders[i - 1], FIELD_BEGIN),
                                (unsigned long long)field(d, holders[i - 1], FIELD_END), (unsigned long long)begin,
                                (unsigned long long)end, (unsigned long long)total);
            if (begin > covered) break;
            covered = end;
        }
        if (covered < total) {
            uint64_t gap_end = total;
            for (int i = 0; i < walked; i++)
                if (field(d, holders[i], FIELD_BEGIN) > covered) {
                    gap_end = field(d, holders[i], FIELD_BEGIN);
                    break;
                }
            fatal_from_root(comm, "%s: no rank holding tensor-parallel shard %llu holds Adam moments [%llu, %llu): the "
                            "ranges of a shard's ranks must together cover [0, %llu)", what, (unsigned long long)s,
                            (unsigned long long)covered, (unsigned long long)gap_end, (unsigned long long)total);
        }
        if (s == field(d, d->rank, FIELD_SHARD)) mine_partitioned = !identical;
    }
    free(holders);
    return mine_partitioned;
}
