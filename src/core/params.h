// The parameter registry: every trainable tensor registered once by name, with its
// logical (unsharded) shape, how tensor parallelism shards it, its initialisation and
// whether weight decay applies, and its offset into one contiguous buffer per rank.
// Gradients and both Adam moments are buffers of the same size and layout, so the
// optimizer, gradient reduction, checkpoint I/O and parameter counts are flat loops.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { PARAM_NAME_MAX = 96 };

// Elements [begin, end) of a rank's buffer layout (registry->total floats), stored in
// arrays of end - begin floats: the Adam moments a rank holds under ZeRO-1 (par/zero.h
// partitions them, io/checkpoint.h writes and reads them).
typedef struct {
    size_t begin, end;
} moment_range;

typedef enum { SHARD_NONE, SHARD_ROWS, SHARD_COLS } shard_kind;  // rows = dim 0
typedef enum { INIT_NORMAL, INIT_ZEROS, INIT_ONES } init_kind;

typedef struct {
    char name[PARAM_NAME_MAX];   // e.g. "layers.3.mixer.wq"
    char group[32];              // component for the parameter summary: "embedding", "mixer", ...
    int layer;                   // -1 when not per-layer
    int ndim;                    // 1 or 2
    int64_t shape[2];            // logical shape ([out, in] for linear weights)
    shard_kind shard;
    int64_t local_shape[2];      // this rank's slice
    int64_t local_start[2];      // where the slice starts in the logical tensor (balanced split:
                                 // rank r of p holds [r*n/p, (r+1)*n/p) of the sharded dimension)
    size_t offset;               // element offset into the rank's buffer (64-byte aligned)
    size_t local_count;          // elements of the slice
    init_kind init;
    float init_std;
    bool weight_decay;
    // SHARD_NONE tensors used by every tensor-parallel rank for only its own heads (the
    // mhe-* shared projections): each rank's gradient is its heads' share, summed over tp.
    bool grad_partial_over_tp;
} param_info;

typedef struct {
    param_info *items;
    int count, capacity;
    size_t total;                // elements in the rank's buffer (with alignment padding)
    int shard_rank, shard_count; // tensor-parallel coordinates (0, 1 on one rank)
} param_registry;

void params_init(param_registry *registry, int shard_rank, int shard_count);
void params_free(param_registry *registry);
// Registers a tensor and returns its index. d1 = 0 for 1-D tensors.
int params_add(param_registry *registry, const char *name, const char *group, int layer,
               int64_t d0, int64_t d1, shard_kind shard, init_kind init, float init_std,
               bool weight_decay);
int params_find(const param_registry *registry, const char *name);   // -1 when absent
int64_t params_logical_count(const param_info *info);
int64_t params_total_logical(const param_registry *registry);

// Fills buffer (registry->total floats) with each tensor's initial values. Element e of
// the logical tensor always gets rng_normal(seed, hash(name), e) * std, whatever slice
// this rank holds.
void params_initialize(const param_registry *registry, float *buffer, uint64_t seed);

// Copies between a rank-local slice and a dense logical-shape array (for I/O and tests).
void params_slice_to_logical(const param_info *info, const float *slice, float *logical);
void params_logical_to_slice(const param_info *info, const float *logical, float *slice);
