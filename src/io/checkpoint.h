// HDF5 checkpoints (DESIGN.md section 9): /params/<name> and /optim/m/<name>,
// /optim/v/<name> in logical shapes; /state attributes; /config the resolved config
// text; a format version. Written through the MPI-IO driver (collective), every rank
// writing its hyperslab, to "<path>.tmp", flushed, closed, then renamed by rank 0 after a
// barrier: a crash never leaves a partial file under the final name.
//
// The Adam moments may be sharded over the data-parallel ranks (ZeRO-1): each rank then
// holds a contiguous range of its flat buffer (moment_range) and writes/reads exactly
// that part of each tensor, so a file written at any decomposition, with or without
// ZeRO, reads at any other.
#pragma once
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/params.h"

enum { CHECKPOINT_FORMAT_VERSION = 1 };

typedef struct {
    int64_t step;              // optimizer steps completed
    int64_t tokens_seen;
    uint64_t data_epoch;       // data loader position
    uint64_t data_index;
    uint64_t seed;
    double learning_rate;      // the LR used by the last step (informational)
    double loss;               // last training loss (informational)
    int64_t skipped_steps;     // steps dropped for a non-finite gradient ([train] on_nonfinite = skip);
                               // optional in the file (absent: 0)
} train_state;

// moment_range (core/params.h): the Adam moments a rank holds.

// Writes params (and the Adam moments when m and v are non-NULL) to "<path>.tmp", then
// renames it to path. Collective over comm: every rank passes a registry of the same
// tensors; ranks may hold any tensor-parallel shard (shard_rank of shard_count), several
// ranks the same one (data parallel). A slice held by several ranks is written by the
// lowest rank holding it (SHARD_NONE tensors by rank 0). state and config_text are taken
// from rank 0 (state may be NULL: zeros). An existing file at path is replaced only once
// the new one is complete and fsync'd; a stale "<path>.tmp" from a killed writer is
// overwritten. Fatal (one line) when the directory is missing or unwritable.
void checkpoint_write(const char *path, const param_registry *registry, const float *params,
                      const float *adam_m, const float *adam_v, const train_state *state,
                      const char *config_text, MPI_Comm comm);

// checkpoint_write with the moments held as `range` (NULL: [0, total), as checkpoint_write).
// Among the ranks holding the same tensor-parallel shard the ranges must be either all
// identical (then [0, total): the lowest rank writes) or pairwise disjoint and together
// covering [0, total) (ZeRO-1: every rank writes the part of each tensor its range
// covers; SHARD_NONE tensors come from the ranks holding rank 0's shard). Anything else
// (ranges overlapping without being equal, gaps, end > total) is one fatal line, printed
// by rank 0, before any file is created. Params are written as by checkpoint_write. A
// rank with an empty range may pass NULL moments while others pass theirs.
void checkpoint_write_partitioned(const char *path, const param_registry *registry, const float *params,
                                  const float *adam_m, const float *adam_v, const moment_range *range,
                                  const train_state *state, const char *config_text, MPI_Comm comm);

// Reads a checkpoint into this rank's slices: each rank reads the hyperslab of its slice,
// so any decomposition can read what any other wrote. Every registry tensor must be
// present with its logical shape (fatal otherwise, naming file and tensor); tensors in
// the file that the registry lacks are ignored. m/v may be NULL to skip the optimizer
// state, state NULL to skip /state. A missing, damaged (truncated), foreign (not HDF5,
// not decon) or other-version file is one fatal line saying what to do. Collective.
void checkpoint_read(const char *path, const param_registry *registry, float *params,
                     float *adam_m, float *adam_v, train_state *state, MPI_Comm comm);

// checkpoint_read with the moments held as `range` (NULL: [0, total)): every rank reads
// exactly elements [begin, end) of its buffer layout into m and v (end - begin floats),
// whatever ranges the other ranks use and whatever decomposition wrote the file. Fatal
// (one line) when begin > end or end > total. m/v may be NULL to skip them (on every
// rank, or only on ranks whose range is empty).
void checkpoint_read_partitioned(const char *path, const param_registry *registry, float *params,
                                 float *adam_m, float *adam_v, const moment_range *range,
                                 train_state *state, MPI_Comm comm);

// The resolved config text stored in a checkpoint (malloc'd; caller frees). Collective.
char *checkpoint_read_config(const char *path, MPI_Comm comm);

// true when the file opens as HDF5, has this format version, /params, /config and a
// complete /state (quietly: used to skip damaged files when looking for the newest valid
// checkpoint). Rank 0 checks, every rank gets the answer. Collective.
bool checkpoint_is_valid(const char *path, MPI_Comm comm);

// Files are <dir>/step_<08d>.h5 (other names, *.tmp included, are ignored). Returns the
// valid one with the highest step (malloc'd, same on every rank) or NULL when there is
// none or dir does not exist; damaged newer files are skipped with a warning. When every
// checkpoint file there is damaged it is a fatal error (naming the newest one's damage):
// starting from scratch would overwrite them. Collective.
char *checkpoint_find_latest(const char *dir, MPI_Comm comm);
// Keeps the newest `keep` valid checkpoints in dir and deletes the step_*.h5 files older
// than them; damaged files newer than those are left for the user to inspect. keep <= 0
// keeps everything. Rank 0 acts; collective (ends with a barrier).
void checkpoint_prune(const char *dir, int keep, MPI_Comm comm);
