// The process grid (DESIGN.md 7): world = dp x tp ranks. Tensor-parallel groups are
// consecutive world ranks (tp innermost, as Megatron places them on one node's fast
// links); rank w is tp rank w % tp of data-parallel replica w / tp. Every collective of
// the model and the trainer goes through the communicators here and is counted in
// `traffic` (bytes each rank sends per kind, par/traffic.h).
#pragma once
#include <mpi.h>
#include <stdbool.h>

#include "core/config.h"
#include "par/traffic.h"

typedef struct {
    MPI_Comm world, tensor, data;       // tensor: this rank's tp group; data: its dp group
    int world_rank, world_size;
    int tensor_rank, tensor_size;       // tp
    int data_rank, data_size;           // dp
    bool sequence_parallel;             // activations between blocks sharded along the sequence
    traffic_counter traffic;
    float *staging;                     // sequence-parallel permutation buffer (backend memory)
    size_t staging_floats;
} process_grid;

// Fatal (one line naming origin and key) when `world_size` ranks cannot run `config`: the
// world size, the heads, the KV heads, the vocabulary or (with sp) the sequence length do
// not divide by tp, or the batch does not split over the data-parallel replicas. No MPI.
void process_grid_validate(const decon_config *config, int world_size, const char *origin);
// Splits `world` by config->tensor_parallel (dp = world size / tp) with
// config->sequence_parallel, after process_grid_validate.
void process_grid_create(process_grid *grid, MPI_Comm world, const decon_config *config, const char *origin);
// The grid of one rank on its own (tp = dp = 1), for single-rank tools and references.
void process_grid_single(process_grid *grid);
void process_grid_free(process_grid *grid);
// Grows the sequence-parallel permutation buffer (backend memory, ops_alloc) to at least
// `floats`: batch * seq_len * width of the largest activation gathered or reduce-scattered
// along the sequence. model_allocate reserves it, so no step allocates it.
void process_grid_reserve_staging(process_grid *grid, size_t floats);
// "dp 2 x tp 2 (sp)" for logs.
void process_grid_describe(const process_grid *grid, char *out, size_t size);
