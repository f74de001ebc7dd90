// HDF5 checkpoints through parallel HDF5 (checkpoint.h).
//
// File layout (format version 1):
//   /                 attributes format_version (int32), writer ("decon"),
//                     tensor_parallel_size and ranks at write time (int32, informational)
//   /params/<name>    float32 dataset in the tensor's logical shape, attribute shard
//                     ("none" | "rows" | "cols"); group attributes parameter_count (int64)
//                     and tensor_count (int32)
//   /optim/m/<name>, /optim/v/<name>   Adam moments, same shapes (absent when not saved)
//   /state            attributes step, tokens_seen (int64), data_epoch, data_index,
//                     seed (uint64), learning_rate, loss (double), skipped_steps (int64,
//                     optional: files without it read as 0)
//   /config           the resolved config text, a fixed-length string
//
// Every rank writes the hyperslab of its slice (local_start, local_shape). A slice held
// by several ranks (replicated tensors, or the same tensor-parallel shard on several
// data-parallel ranks) is written by one of them only: the lowest rank of comm that
// holds it. Adam moments sharded over the data-parallel ranks (ZeRO-1, a contiguous
// range of the flat buffer per rank) are written by every rank, each the run of each
// slice its range covers: a partial first row, whole rows, a partial last row. Reading
// selects the same way (the reader's slice, or its range's runs), so the decomposition
// may differ between writing and reading. The file does not record how it was split.
//
// Failures the user can meet (missing, damaged, foreign or mismatched files) end in one
// fatal line; HDF5's own error stacks are silenced. Damage is first diagnosed by rank 0
// with the serial driver and the verdict broadcast, so every rank fails the same way
// before any collective open.
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/durable_file.h"
#include "io/hdf5_format.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

enum { MESSAGE_MAX = 1536 };

// What diagnose() tells the user to do with a damaged checkpoint when resuming.
#define DAMAGED_ADVICE "delete it to resume from an older one"

static const char *const STATE_ATTRIBUTES[] = {"step", "tokens_seen", "data_epoch", "data_index",
                                               "seed", "learning_rate", "loss"};

static int comm_rank(MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    return rank;
}

static const char *shard_name(shard_kind shard) {
    return shard == SHARD_ROWS ? "rows" : shard == SHARD_COLS ? "cols" : "none";
}

// ---------------------------------------------------------------------------------------
// Diagnosis (serial, no MPI): the one place that tells damaged from foreign from fine.

// Checks the format version and that /state, /params and /config are complete.
// Returns true when fine, else writes the user-facing line into `why`.
static bool check_structure(hid_t file, const char *path, char *why, size_t size) {
    int version = 0;
    if (H5Aexists(file, "format_version") <= 0) {
        snprintf(why, size, "%s is an HDF5 file but not a decon checkpoint (no format_version attribute): "
                 "pass a checkpoint written by decon-train", path);
        return false;
    }
    if (!hdf5_read_scalar(file, "format_version", H5T_NATIVE_INT, &version)) {
        snprintf(why, size, "checkpoint %s is damaged (unreadable format_version): " DAMAGED_ADVICE,
                 path);
        return false;
    }
    if (version != CHECKPOINT_FORMAT_VERSION) {
        snprintf(why, size, "checkpoint %s has format version %d but this build reads version %d: "
                 "load it with the decon version that wrote it", path, version, CHECKPOINT_FORMAT_VERSION);
        return false;
    }
    const char *missing = NULL;
    if (H5Lexists(file, "params", H5P_DEFAULT) <= 0) missing = "/params";
    else if (H5Lexists(file, "config", H5P_DEFAULT) <= 0) missing = "/config";
    else if (H5Lexists(file, "state", H5P_DEFAULT) <= 0) missing = "/state";
    if (!missing) {
        hid_t state = H5Gopen2(file, "state", H5P_DEFAULT);
        if (state < 0) {
            missing = "/state";
        } else {
            for (size_t i = 0; i < sizeof STATE_ATTRIBUTES / sizeof *STATE_ATTRIBUTES && !missing; i++) {
                double value;
                if (!hdf5_read_scalar(state, STATE_ATTRIBUTES[i], H5T_NATIVE_DOUBLE, &value)) missing = STATE_ATTRIBUTES[i];
            }
            H5Gclose(state);
        }
    }
    if (missing) {
        snprintf(why, size, "checkpoint %s is incomplete (no %s%s): " DAMAGED_ADVICE, path,
                 missing[0] == '/' ? "" : "/state attribute ", missing);
        return false;
    }
    return true;
}

// Opens the file with the serial driver and checks it. true when it is a complete decon
// checkpoint of this format version; otherwise `why` says what is wrong and what to do.
static bool diagnose(const char *path, char *why, size_t size) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            snprintf(why, size, "checkpoint %s does not exist: check the path (checkpoints are <run>/ckpt/step_NNNNNNNN.h5)",
                     path);
        else
            snprintf(why, size, "cannot read checkpoint %s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, size, "checkpoint %s is not a regular file: pass a checkpoint file (<run>/ckpt/step_NNNNNNNN.h5)", path);
        return false;
    }
    if (access(path, R_OK) != 0) {
        snprintf(why, size, "cannot read checkpoint %s: %s", path, strerror(errno));
        return false;
    }
    if (st.st_size == 0) {
        snprintf(why, size, "checkpoint %s is empty (truncated?): " DAMAGED_ADVICE, path);
        return false;
    }
    int superblock = hdf5_superblock_version(path);
    if (superblock < 0) {
        snprintf(why, size, "%s is not an HDF5 file: pass a decon checkpoint (<run>/ckpt/step_NNNNNNNN.h5)", path);
        return false;
    }
    if (superblock < HDF5_CHECKSUMMED_SUPERBLOCK) {  // io/hdf5_format.h: not given to HDF5
        snprintf(why, size, "%s is an HDF5 file without metadata checksums, not a checkpoint written by decon-train: "
                 "pass one written by decon-train (h5repack -L converts a file to the checksummed format)", path);
        return false;
    }
    hid_t fapl = hdf5_access_plist(MPI_COMM_NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        snprintf(why, size, "checkpoint %s is damaged (truncated?): " DAMAGED_ADVICE, path);
        return false;
    }
    bool ok = check_structure(file, path, why, size);
    H5Fclose(file);
    return ok;
}

bool checkpoint_is_valid(const char *path, MPI_Comm comm) {
    hdf5_quiet();
    int valid = 0;
    if (comm_rank(comm) == 0) {
        char why[MESSAGE_MAX];
        valid = diagnose(path, why, sizeof why);
    }
    MPI_Bcast(&valid, 1, MPI_INT, 0, comm);
    return valid != 0;
}

// ---------------------------------------------------------------------------------------
// Who holds what: every rank's tensor-parallel shard and Adam moment range, gathered once
// so that every rank reaches the same verdict.

enum { FIELD_SHARD, FIELD_SHARDS, FIELD_TENSORS, FIELD_TOTAL, FIELD_BEGIN, FIELD_END, FIELD_HAS_M, FIELD_HAS_V,
       FIELD_COUNT };

typedef struct {
    int rank, size;
    uint64_t *all;          // FIELD_COUNT values per rank of comm
    bool lowest_of_shard;   // no lower rank holds this rank's tensor-parallel shard
    bool in_root_shard;     // holds rank 0's shard: writes the SHARD_NONE tensors
    bool any_m, any_v;      // some rank passes m (v): every rank takes part in their I/O
} decomposition;

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

// Gathers every rank's coordinates and checks that the ranks register the same model,
// pass ranges inside their buffers and, when writing, hold every shard between them.
// `what` names the call and file for messages. Collective.
static decomposition gather_decomposition(const param_registry *registry, const moment_range *range, bool has_m,
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

// Whether the ranks holding this rank's shard split the moments (ZeRO-1) rather than all
// holding [0, total). Checks every shard's ranks, so every rank fails alike: identical
// ranges must be [0, total); otherwise they must be disjoint and cover [0, total).
static bool moments_partitioned(const decomposition *d, const char *what, MPI_Comm comm) {
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

// ---------------------------------------------------------------------------------------
// Selections. A rank transfers a run [first, last) of a tensor's row-major local slice:
// the whole slice, or the part its moment range covers.

// The run of tensor `info`'s slice that buffer elements [begin, end) cover (first == last:
// none).
static void covered_run(const param_info *info, size_t begin, size_t end, size_t *first, size_t *last) {
    size_t lo = begin > info->offset ? begin : info->offset;
    size_t hi = end < info->offset + info->local_count ? end : info->offset + info->local_count;
    *first = lo < hi ? lo - info->offset : 0;
    *last = lo < hi ? hi - info->offset : 0;
}

static void add_block(hid_t file_space, H5S_seloper_t *op, hsize_t row, hsize_t col, hsize_t rows, hsize_t cols) {
    hsize_t start[2] = {row, col}, count[2] = {rows, cols};
    H5Sselect_hyperslab(file_space, *op, start, NULL, count, NULL);
    *op = H5S_SELECT_OR;
}

// Selects slice run [first, last) in the logical tensor's file space: in a 2-D tensor a
// partial first row, whole middle rows and a partial last row (up to 3 hyperslabs, which
// HDF5 visits in row-major order, the order of the run in memory).
static void select_run(hid_t file_space, const param_info *info, size_t first, size_t last) {
    if (first == last) {
        H5Sselect_none(file_space);
        return;
    }
    H5S_seloper_t op = H5S_SELECT_SET;
    hsize_t row0 = (hsize_t)info->local_start[0], col0 = (hsize_t)info->local_start[1];
    if (info->ndim == 1) {
        hsize_t start = row0 + first, count = last - first;
        H5Sselect_hyperslab(file_space, op, &start, NULL, &count, NULL);
        return;
    }
    hsize_t width = (hsize_t)info->local_shape[1];
    hsize_t first_row = first / width, first_col = first % width;
    hsize_t last_row = (last - 1) / width, last_end = (last - 1) % width + 1;  // last row: columns [0, last_end)
    if (first_row == last_row) {
        add_block(file_space, &op, row0 + first_row, col0 + first_col, 1, last_end - first_col);
        return;
    }
    hsize_t whole_from = first_row, whole_to = last_row + 1;  // whole rows [whole_from, whole_to)
    if (first_col > 0) {
        add_block(file_space, &op, row0 + first_row, col0 + first_col, 1, width - first_col);
        whole_from++;
    }
    if (last_end < width) whole_to--;
    if (whole_to > whole_from) add_block(file_space, &op, row0 + whole_from, col0, whole_to - whole_from, width);
    if (last_end < width) add_block(file_space, &op, row0 + last_row, col0, 1, last_end);
}

// A 1-D memory space for a run of `elements` floats (all selected, or none when empty).
static hid_t run_memory_space(size_t elements) {
    hsize_t n = elements ? (hsize_t)elements : 1;
    hid_t space = H5Screate_simple(1, &n, NULL);
    if (!elements) H5Sselect_none(space);
    return space;
}

// Ranks with nothing to transfer still join the collective call, with this as buffer.
static float no_data;

// ---------------------------------------------------------------------------------------
// Writing

// Where a checkpoint is being written: the temporary file and the ranks writing it.
typedef struct {
    const char *tmp;
    MPI_Comm comm;
} write_target;

// The partial file is deleted (write_failure_fatal), so the directory holds exactly the
// earlier, complete checkpoints. errno is not reported: after HDF5 calls it is stale.
static _Noreturn void write_failed(const write_target *out, const char *what) {
    write_failure_fatal(out->comm, out->tmp, "cannot write checkpoint %s (%s): the file system refused the write; check "
                        "free disk space, quotas (ulimit -f) and that the directory is writable; the earlier "
                        "checkpoints are intact", out->tmp, what);
}

static void write_attribute(hid_t object, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                            const write_target *out) {
    if (!hdf5_write_attribute(object, name, file_type, mem_type, value, 0)) write_failed(out, name);
}

static void write_string_attribute(hid_t object, const char *name, const char *value, const write_target *out) {
    if (!hdf5_write_string(object, name, value)) write_failed(out, name);
}

static hid_t create_group(hid_t parent, const char *name, const write_target *out) {
    hid_t group = H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) write_failed(out, name);
    return group;
}

// Creates group/<name> in the logical shape and writes run [first, last) of this rank's
// slice, whose first element is at `data` (nothing when first == last: another rank
// writes it, or this rank holds none of it). Collective.
static void write_tensor(hid_t group, const param_info *info, const float *data, size_t first, size_t last,
                         hid_t dxpl, bool tag_shard, const write_target *out) {
    hsize_t dims[2] = {(hsize_t)info->shape[0], (hsize_t)info->shape[1]};
    hid_t file_space = H5Screate_simple(info->ndim, dims, NULL);
    hid_t mem_space = run_memory_space(last - first);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);  // every element is written below
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t dataset = H5Dcreate2(group, info->name, H5T_IEEE_F32LE, file_space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dataset < 0) write_failed(out, info->name);
    if (tag_shard) write_string_attribute(dataset, "shard", shard_name(info->shard), out);
    select_run(file_space, info, first, last);
    if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, dxpl, first < last ? data : &no_data) < 0)
        write_failed(out, info->name);
    H5Dclose(dataset);
    H5Pclose(dcpl);
    H5Sclose(mem_space);
    H5Sclose(file_space);
}

// Params: each slice comes whole from the lowest rank holding it (SHARD_NONE: rank 0).
static void write_params(hid_t group, const param_registry *registry, const float *params, const decomposition *d,
                         hid_t dxpl, const write_target *out) {
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        bool writes = info->shard == SHARD_NONE ? d->rank == 0 : d->lowest_of_shard;
        write_tensor(group, info, params + info->offset, 0, writes ? info->local_count : 0, dxpl, true, out);
    }
}

// Moments held as `range` (array element j is buffer element range.begin + j). Split
// (ZeRO-1): every rank of a shard writes what its range covers; else the lowest rank of
// the shard writes. SHARD_NONE tensors come from the ranks holding rank 0's shard.
static void write_moments(hid_t group, const param_registry *registry, const float *moments, moment_range range,
                          bool partitioned, const decomposition *d, hid_t dxpl, const write_target *out) {
    bool writes_shard = partitioned || d->lowest_of_shard;
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        bool writes = writes_shard && (info->shard != SHARD_NONE || d->in_root_shard);
        size_t first = 0, last = 0;
        if (writes) covered_run(info, range.begin, range.end, &first, &last);
        const float *data = first < last ? moments + (info->offset + first - range.begin) : NULL;
        write_tensor(group, info, data, first, last, dxpl, false, out);
    }
}

void checkpoint_write(const char *path, const param_registry *registry, const float *params, const float *adam_m,
                      const float *adam_v, const train_state *state, const char *config_text, MPI_Comm comm) {
    checkpoint_write_partitioned(path, registry, params, adam_m, adam_v, NULL, state, config_text, comm);
}

void checkpoint_write_partitioned(const char *path, const param_registry *registry, const float *params,
                                  const float *adam_m, const float *adam_v, const moment_range *range,
                                  const train_state *state, const char *config_text, MPI_Comm comm) {
    hdf5_quiet();
    moment_range held = range ? *range : (moment_range){0, registry->total};
    char what[MESSAGE_MAX / 2];
    snprintf(what, sizeof what, "checkpoint_write %s", path);
    // Both moments or neither: a rank passing only one saves none.
    bool has_moments = adam_m && adam_v;
    decomposition d = gather_decomposition(registry, &held, has_moments, has_moments, true, what, comm);
    bool with_optimizer = d.any_m;
    bool partitioned = with_optimizer && moments_partitioned(&d, what, comm);
    int rank = d.rank, size = d.size;
    bool is_root = rank == 0;

    // Attributes and /config must be identical on every rank: take rank 0's.
    train_state st = state ? *state : (train_state){0};
    MPI_Bcast(&st, (int)sizeof st, MPI_BYTE, 0, comm);
    unsigned long long config_length = is_root && config_text ? strlen(config_text) : 0;
    MPI_Bcast(&config_length, 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
    char *config = xmalloc(config_length + 1);
    if (is_root && config_text) memcpy(config, config_text, config_length);
    config[config_length] = '\0';
    MPI_Bcast(config, (int)config_length, MPI_CHAR, 0, comm);

    size_t tmp_length = strlen(path) + 5;
    char *tmp = xmalloc(tmp_length);
    snprintf(tmp, tmp_length, "%s.tmp", path);

    hid_t fapl = hdf5_access_plist(comm);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0)
        write_failure_fatal(comm, tmp, "cannot create checkpoint %s: check that the directory exists and is writable",
                            tmp);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    const write_target target = {tmp, comm};

    int version = CHECKPOINT_FORMAT_VERSION;
    write_attribute(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version, &target);
    write_string_attribute(file, "writer", "decon", &target);
    write_attribute(file, "tensor_parallel_size", H5T_STD_I32LE, H5T_NATIVE_INT, &registry->shard_count, &target);
    write_attribute(file, "ranks", H5T_STD_I32LE, H5T_NATIVE_INT, &size, &target);

    hid_t group = create_group(file, "params", &target);
    int64_t parameter_count = params_total_logical(registry);
    write_attribute(group, "parameter_count", H5T_STD_I64LE, H5T_NATIVE_INT64, &parameter_count, &target);
    write_attribute(group, "tensor_count", H5T_STD_I32LE, H5T_NATIVE_INT, &registry->count, &target);
    write_params(group, registry, params, &d, dxpl, &target);
    H5Gclose(group);

    if (with_optimizer) {
        hid_t optim = create_group(file, "optim", &target);
        hid_t m = create_group(optim, "m", &target);
        write_moments(m, registry, adam_m, held, partitioned, &d, dxpl, &target);
        H5Gclose(m);
        hid_t v = create_group(optim, "v", &target);
        write_moments(v, registry, adam_v, held, partitioned, &d, dxpl, &target);
        H5Gclose(v);
        H5Gclose(optim);
    }

    hid_t state_group = create_group(file, "state", &target);
    write_attribute(state_group, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.step, &target);
    write_attribute(state_group, "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.tokens_seen, &target);
    write_attribute(state_group, "data_epoch", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.data_epoch, &target);
    write_attribute(state_group, "data_index", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.data_index, &target);
    write_attribute(state_group, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.seed, &target);
    write_attribute(state_group, "learning_rate", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st.learning_rate, &target);
    write_attribute(state_group, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st.loss, &target);
    write_attribute(state_group, "skipped_steps", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.skipped_steps, &target);
    H5Gclose(state_group);

    hid_t type = hdf5_string_type((size_t)config_length);
    hid_t file_space = H5Screate(H5S_SCALAR), mem_space = H5Screate(H5S_SCALAR);
    hid_t dataset = H5Dcreate2(file, "config", type, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (dataset < 0) write_failed(&target, "config");
    if (!is_root) {
        H5Sselect_none(file_space);
        H5Sselect_none(mem_space);
    }
    if (H5Dwrite(dataset, type, mem_space, file_space, dxpl, config) < 0) write_failed(&target, "config");
    H5Dclose(dataset);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Tclose(type);

    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) write_failed(&target, "flush");
    H5Pclose(dxpl);
    if (H5Fclose(file) < 0) write_failed(&target, "close");
    free(config);

    MPI_Barrier(comm);  // every rank's data is in the file before it takes the final name
    char message[MESSAGE_MAX] = "";
    if (is_root)
        durable_publish(tmp, path, "checkpoint", "check the file system (the earlier checkpoints are intact)", message,
                        sizeof message);
    fatal_if_root_failed(message, MESSAGE_MAX, comm);  // the broadcast is also the closing barrier
    free(tmp);
    free(d.all);
}

// ---------------------------------------------------------------------------------------
// Reading

// Opens a checkpoint for collective reading after rank 0 has vouched for it.
static hid_t open_checked(const char *path, MPI_Comm comm) {
    hdf5_quiet();
    char message[MESSAGE_MAX] = "";
    if (comm_rank(comm) == 0) diagnose(path, message, sizeof message);
    fatal_if_root_failed(message, MESSAGE_MAX, comm);
    hid_t fapl = hdf5_access_plist(comm);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) fatal("checkpoint %s is damaged (truncated?): delete it to resume from an older one", path);
    return file;
}

static void format_shape(char *text, size_t size, int ndim, const hsize_t *dims) {
    if (ndim == 1) snprintf(text, size, "[%llu]", (unsigned long long)dims[0]);
    else if (ndim == 2) snprintf(text, size, "[%llu, %llu]", (unsigned long long)dims[0], (unsigned long long)dims[1]);
    else snprintf(text, size, "(%d dimensions)", ndim);
}

// Reads run [first, last) of this rank's slice of group/<name> into `data` (nothing when
// first == last). Collective.
static void read_tensor(hid_t group, const char *group_name, const param_info *info, float *data, size_t first,
                        size_t last, hid_t dxpl, const char *path) {
    if (H5Lexists(group, info->name, H5P_DEFAULT) <= 0)
        fatal("checkpoint %s has no tensor /%s/%s: it was written for a different model; "
              "run with the config stored in it (h5dump -d /config %s)", path, group_name, info->name, path);
    hid_t dataset = H5Dopen2(group, info->name, H5P_DEFAULT);
    if (dataset < 0)
        fatal("checkpoint %s is damaged (cannot open /%s/%s): delete it to resume from an older one", path,
              group_name, info->name);
    hid_t file_space = H5Dget_space(dataset);
    hsize_t dims[H5S_MAX_RANK] = {0};
    int ndim = file_space < 0 ? -1 : H5Sget_simple_extent_dims(file_space, dims, NULL);
    hsize_t expected[2] = {(hsize_t)info->shape[0], (hsize_t)info->shape[1]};
    if (ndim != info->ndim || dims[0] != expected[0] || (ndim == 2 && dims[1] != expected[1])) {
        char found_text[64], expected_text[64];
        format_shape(found_text, sizeof found_text, ndim, dims);
        format_shape(expected_text, sizeof expected_text, info->ndim, expected);
        fatal("tensor /%s/%s in checkpoint %s has shape %s but the model expects %s: "
              "run with the config stored in the checkpoint (h5dump -d /config %s)",
              group_name, info->name, path, found_text, expected_text, path);
    }
    hid_t type = H5Dget_type(dataset);
    if (H5Tget_class(type) != H5T_FLOAT)
        fatal("tensor /%s/%s in checkpoint %s is not floating point: pass a checkpoint written by decon-train",
              group_name, info->name, path);
    H5Tclose(type);
    hid_t mem_space = run_memory_space(last - first);
    select_run(file_space, info, first, last);
    if (H5Dread(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, dxpl, first < last ? data : &no_data) < 0)
        fatal("checkpoint %s is damaged (cannot read /%s/%s): delete it to resume from an older one", path,
              group_name, info->name);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Dclose(dataset);
}

// Whether every component of a relative path ("optim/m") exists.
static bool link_exists(hid_t file, const char *path) {
    char prefix[256];
    for (const char *slash = path;; slash++) {
        slash = strchr(slash, '/');
        size_t length = slash ? (size_t)(slash - path) : strlen(path);
        snprintf(prefix, sizeof prefix, "%.*s", (int)length, path);
        if (H5Lexists(file, prefix, H5P_DEFAULT) <= 0) return false;
        if (!slash) return true;
    }
}

// Reads the elements [range.begin, range.end) of this rank's buffer layout into `buffer`
// (element j is layout element range.begin + j). Collective.
static void read_tensors(hid_t file, const char *group_name, const param_registry *registry, float *buffer,
                         moment_range range, hid_t dxpl, const char *path) {
    if (!link_exists(file, group_name))
        fatal("checkpoint %s has no /%s: it holds no optimizer state and cannot resume training; "
              "pick a checkpoint written during training", path, group_name);
    hid_t group = H5Gopen2(file, group_name, H5P_DEFAULT);
    if (group < 0)
        fatal("checkpoint %s is damaged (cannot open /%s): delete it to resume from an older one", path, group_name);
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        size_t first, last;
        covered_run(info, range.begin, range.end, &first, &last);
        float *data = first < last ? buffer + (info->offset + first - range.begin) : NULL;
        read_tensor(group, group_name, info, data, first, last, dxpl, path);
    }
    H5Gclose(group);
}

static void read_state(hid_t file, train_state *state, const char *path) {
    hid_t group = H5Gopen2(file, "state", H5P_DEFAULT);
    bool ok = group >= 0 && hdf5_read_scalar(group, "step", H5T_NATIVE_INT64, &state->step) &&
              hdf5_read_scalar(group, "tokens_seen", H5T_NATIVE_INT64, &state->tokens_seen) &&
              hdf5_read_scalar(group, "data_epoch", H5T_NATIVE_UINT64, &state->data_epoch) &&
              hdf5_read_scalar(group, "data_index", H5T_NATIVE_UINT64, &state->data_index) &&
              hdf5_read_scalar(group, "seed", H5T_NATIVE_UINT64, &state->seed) &&
              hdf5_read_scalar(group, "learning_rate", H5T_NATIVE_DOUBLE, &state->learning_rate) &&
              hdf5_read_scalar(group, "loss", H5T_NATIVE_DOUBLE, &state->loss);
    state->skipped_steps = 0;  // optional: written since [train] on_nonfinite
    if (ok && H5Aexists(group, "skipped_steps") > 0)
        ok = hdf5_read_scalar(group, "skipped_steps", H5T_NATIVE_INT64, &state->skipped_steps);
    if (group >= 0) H5Gclose(group);
    if (!ok) fatal("checkpoint %s is damaged (unreadable /state): delete it to resume from an older one", path);
}

void checkpoint_read(const char *path, const param_registry *registry, float *params, float *adam_m, float *adam_v,
                     train_state *state, MPI_Comm comm) {
    checkpoint_read_partitioned(path, registry, params, adam_m, adam_v, NULL, state, comm);
}

void checkpoint_read_partitioned(const char *path, const param_registry *registry, float *params, float *adam_m,
                                 float *adam_v, const moment_range *range, train_state *state, MPI_Comm comm) {
    hdf5_quiet();
    moment_range held = range ? *range : (moment_range){0, registry->total};
    char what[MESSAGE_MAX / 2];
    snprintf(what, sizeof what, "checkpoint_read %s", path);
    // The ranges need no agreement: each rank reads its own, whatever wrote the file.
    decomposition d = gather_decomposition(registry, &held, adam_m != NULL, adam_v != NULL, false, what, comm);
    hid_t file = open_checked(path, comm);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    if (state) read_state(file, state, path);
    read_tensors(file, "params", registry, params, (moment_range){0, registry->total}, dxpl, path);
    if (d.any_m) read_tensors(file, "optim/m", registry, adam_m, held, dxpl, path);
    if (d.any_v) read_tensors(file, "optim/v", registry, adam_v, held, dxpl, path);
    H5Pclose(dxpl);
    H5Fclose(file);
    free(d.all);
}

char *checkpoint_read_config(const char *path, MPI_Comm comm) {
    hid_t file = open_checked(path, comm);
    hid_t dataset = H5Dopen2(file, "config", H5P_DEFAULT);
    hid_t type = dataset < 0 ? -1 : H5Dget_type(dataset);
    hid_t space = dataset < 0 ? -1 : H5Dget_space(dataset);
    // One string: H5S_ALL below transfers every element into room for one.
    bool one = space >= 0 && H5Sget_simple_extent_npoints(space) == 1;
    if (space >= 0) H5Sclose(space);
    if (type < 0 || H5Tget_class(type) != H5T_STRING || !one)
        fatal("checkpoint %s is damaged (/config is not a single string): delete it to resume from an older one", path);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    char *text = NULL;
    herr_t status;
    if (H5Tis_variable_str(type) > 0) {  // accepted from other writers (h5py's default)
        hid_t mem_type = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem_type, H5T_VARIABLE);
        char *vl = NULL;
        status = H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, dxpl, (void *)&vl);
        if (status >= 0) text = xstrdup(vl ? vl : "");
        if (status >= 0 && vl) H5free_memory(vl);
        H5Tclose(mem_type);
    } else {
        size_t size = H5Tget_size(type);
        text = xcalloc(size + 1, 1);
        hid_t mem_type = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem_type, size);
        H5Tset_strpad(mem_type, H5T_STR_NULLPAD);
        status = H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, dxpl, text);
        H5Tclose(mem_type);
    }
    if (status < 0) fatal("checkpoint %s is damaged (cannot read /config): delete it to resume from an older one", path);
    H5Pclose(dxpl);
    H5Tclose(type);
    H5Dclose(dataset);
    H5Fclose(file);
    return text;
}

// ---------------------------------------------------------------------------------------
// Directory of checkpoints: <dir>/step_<08d>.h5

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
        while (valid < count && !diagnose(entries[valid].path, why[valid], sizeof why[valid])) valid++;
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
                kept += diagnose(entries[i].path, why, sizeof why);  // damaged newer files are left alone
            } else if (unlink(entries[i].path) != 0) {
                warn("cannot delete old checkpoint %s: %s", entries[i].path, strerror(errno));
            }
        }
        free_checkpoints(entries, count);
    }
    MPI_Barrier(comm);
}
