// What the checkpoint files share (checkpoint.h is the public interface): the file
// layout, the diagnosis of a file, who holds what (decomposition) and the hyperslab
// selections. One concern per file: checkpoint_diagnosis.c, checkpoint_decomposition.c,
// checkpoint_selection.c, checkpoint_write.c, checkpoint_read.c, checkpoint_directory.c.
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
#pragma once
#include <hdf5.h>
#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/checkpoint.h"

enum { MESSAGE_MAX = 1536 };

// What checkpoint_diagnose() tells the user to do with a damaged checkpoint when resuming.
#define DAMAGED_ADVICE "delete it to resume from an older one"

static inline int comm_rank(MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    return rank;
}

// ---- Diagnosis (checkpoint_diagnosis.c) ----
// Opens the file with the serial driver and checks it. true when it is a complete decon
// checkpoint of this format version; otherwise `why` says what is wrong and what to do.
bool checkpoint_diagnose(const char *path, char *why, size_t size);

// ---- Who holds what (checkpoint_decomposition.c) ----
enum { FIELD_SHARD, FIELD_SHARDS, FIELD_TENSORS, FIELD_TOTAL, FIELD_BEGIN, FIELD_END, FIELD_HAS_M, FIELD_HAS_V,
       FIELD_COUNT };

typedef struct {
    int rank, size;
    uint64_t *all;          // FIELD_COUNT values per rank of comm
    bool lowest_of_shard;   // no lower rank holds this rank's tensor-parallel shard
    bool in_root_shard;     // holds rank 0's shard: writes the SHARD_NONE tensors
    bool any_m, any_v;      // some rank passes m (v): every rank takes part in their I/O
} decomposition;

// Gathers every rank's coordinates and checks that the ranks register the same model,
// pass ranges inside their buffers and, when writing, hold every shard between them.
// `what` names the call and file for messages. The caller frees d.all. Collective.
decomposition checkpoint_gather_decomposition(const param_registry *registry, const moment_range *range, bool has_m,
                                              bool has_v, bool writing, const char *what, MPI_Comm comm);
// Whether the ranks holding this rank's shard split the moments (ZeRO-1) rather than all
// holding [0, total). Checks every shard's ranks, so every rank fails alike: identical
// ranges must be [0, total); otherwise they must be disjoint and cover [0, total).
bool checkpoint_moments_partitioned(const decomposition *d, const char *what, MPI_Comm comm);

// ---- Selections (checkpoint_selection.c) ----
// The run of tensor `info`'s slice that buffer elements [begin, end) cover (first == last:
// none).
void checkpoint_covered_run(const param_info *info, size_t begin, size_t end, size_t *first, size_t *last);
// Selects slice run [first, last) in the logical tensor's file space: in a 2-D tensor a
// partial first row, whole middle rows and a partial last row (up to 3 hyperslabs, which
// HDF5 visits in row-major order, the order of the run in memory).
void checkpoint_select_run(hid_t file_space, const param_info *info, size_t first, size_t last);
// A 1-D memory space for a run of `elements` floats (all selected, or none when empty).
hid_t checkpoint_run_memory_space(size_t elements);
// Ranks with nothing to transfer still join the collective call, with this as buffer.
extern float checkpoint_no_data;
