// HDF5 checkpoints (DESIGN.md section 9): /params/<name> and /optim/m/<name>,
// /optim/v/<name> in logical shapes; /state attributes; /config the resolved config
// text; a format version. Written through the MPI-IO driver (collective), every rank
// writing its hyperslab, to "<path>.tmp", flushed, closed, then renamed by rank 0 after a
// barrier: a crash never leaves a partial file under the final name.
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
} train_state;

// Writes params (and the Adam moments when m and v are non-NULL). Collective over comm.
void checkpoint_write(const char *path, const param_registry *registry, const float *params,
                      const float *adam_m, const float *adam_v, const train_state *state,
                      const char *config_text, MPI_Comm comm);

// Reads a checkpoint into this rank's slices. Every registry tensor must be present with
// its logical shape (fatal otherwise, naming file and tensor). m/v may be NULL to skip
// the optimizer state. Collective over comm.
void checkpoint_read(const char *path, const param_registry *registry, float *params,
                     float *adam_m, float *adam_v, train_state *state, MPI_Comm comm);

// The resolved config text stored in a checkpoint (malloc'd; caller frees). Collective.
char *checkpoint_read_config(const char *path, MPI_Comm comm);

// true when the file opens as HDF5, has the format version and a complete /state
// (quietly: used to skip damaged files when looking for the newest valid checkpoint).
bool checkpoint_is_valid(const char *path, MPI_Comm comm);

// Files are <dir>/step_<08d>.h5. Returns the newest valid one (malloc'd) or NULL.
char *checkpoint_find_latest(const char *dir, MPI_Comm comm);
// Deletes all but the newest `keep` checkpoints in dir (rank 0 only acts).
void checkpoint_prune(const char *dir, int keep, MPI_Comm comm);
