#include "par/process_grid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "ops/ops.h"

static void check_divides(int value, const char *what, int tp, const char *key, const char *origin) {
    if (value % tp != 0)
        fatal("%s: %s (%d, [%s]) is not divisible by the tensor-parallel size %d; choose --tp dividing it",
              origin, what, value, key, tp);
}

void process_grid_validate(const decon_config *c, int world_size, const char *origin) {
    int tp = c->tensor_parallel;
    if (world_size % tp != 0)
        fatal("%s: %d ranks cannot form data-parallel replicas of tensor-parallel size %d; run mpirun -np with a "
              "multiple of %d", origin, world_size, tp, tp);
    check_divides(c->num_attention_heads, "num_attention_heads", tp, "model", origin);
    check_divides(config_kv_heads(c), "num_key_value_heads", tp, "model", origin);
    check_divides(c->vocab_size, "vocab_size", tp, "model", origin);
    // Per-layer MLP widths (a compressed model) split evenly, each layer its own m(l).
    for (int l = 0; c->layer_intermediate_sizes[0] && l < c->num_hidden_layers; l++) {
        decon_config layer;
        config_layer(c, l, &layer);
        if (layer.intermediate_size % tp != 0)
            fatal("%s: [model] layer_intermediate_sizes: layer %d's MLP width %d is not divisible by the "
                  "tensor-parallel size %d; choose --tp dividing every width", origin, l + 1,
                  layer.intermediate_size, tp);
    }
    if (c->sequence_parallel && tp == 1)
        fatal("%s: sequence parallelism shards along the sequence across the tensor-parallel group; it needs --tp > 1",
              origin);
    if (c->sequence_parallel) check_divides(c->sequence_length, "sequence_length", tp, "train", origin);
    int data_size = world_size / tp;
    if (c->global_batch_size % data_size != 0)
        fatal("%s: global_batch_size (%d, [train]) is not divisible by the %d data-parallel replicas", origin,
              c->global_batch_size, data_size);
    if (c->global_batch_size / data_size % c->micro_batch_size != 0)
        fatal("%s: each of the %d data-parallel replicas gets %d sequences per step, not a multiple of "
              "micro_batch_size (%d, [train])", origin, data_size, c->global_batch_size / data_size,
              c->micro_batch_size);
}

void process_grid_create(process_grid *grid, MPI_Comm world, const decon_config *c, const char *origin) {
    memset(grid, 0, sizeof *grid);
    grid->world = world;
    MPI_Comm_rank(world, &grid->world_rank);
    MPI_Comm_size(world, &grid->world_size);
    process_grid_validate(c, grid->world_size, origin);
    int tp = c->tensor_parallel;
    grid->tensor_size = tp;
    grid->data_size = grid->world_size / tp;
    grid->tensor_rank = grid->world_rank % tp;
    grid->data_rank = grid->world_rank / tp;
    grid->sequence_parallel = c->sequence_parallel;
    MPI_Comm_split(world, grid->data_rank, grid->tensor_rank, &grid->tensor);
    MPI_Comm_split(world, grid->tensor_rank, grid->data_rank, &grid->data);
}

void process_grid_single(process_grid *grid) {
    memset(grid, 0, sizeof *grid);
    grid->world = grid->tensor = grid->data = MPI_COMM_SELF;
    grid->world_size = grid->tensor_size = grid->data_size = 1;
}

void process_grid_free(process_grid *grid) {
    if (grid->tensor != MPI_COMM_SELF && grid->tensor != MPI_COMM_NULL) MPI_Comm_free(&grid->tensor);
    if (grid->data != MPI_COMM_SELF && grid->data != MPI_COMM_NULL) MPI_Comm_free(&grid->data);
    ops_free(grid->staging);
    memset(grid, 0, sizeof *grid);
}

void process_grid_reserve_staging(process_grid *grid, size_t floats) {
    if (floats <= grid->staging_floats) return;
    ops_free(grid->staging);
    grid->staging = ops_alloc(floats * sizeof(float));
    grid->staging_floats = floats;
}

void process_grid_describe(const process_grid *grid, char *out, size_t size) {
    snprintf(out, size, "dp %d x tp %d%s", grid->data_size, grid->tensor_size,
             grid->sequence_parallel ? " (sequence parallel)" : "");
}
