#include "par/layers.h"

region_activation column_parallel_input_of(const process_grid *grid, float *full, float *shard_buffer) {
    region_activation x = {grid->sequence_parallel ? shard_buffer : full, full};
    return x;
}

region_activation row_parallel_output_of(const process_grid *grid, float *shard, float *full_buffer) {
    region_activation y = {shard, grid->sequence_parallel ? full_buffer : shard};
    return y;
}

static size_t floats_of(int batch, int seq_len, int width) {
    return (size_t)batch * (size_t)seq_len * (size_t)width;
}

void column_parallel_input_forward(process_grid *grid, region_activation x, int batch, int seq_len, int width) {
    // Without sp: copy_to_tensor_parallel_region, whose forward is the identity.
    if (grid->sequence_parallel)
        gather_from_sequence_parallel_region_forward(grid, x.full, x.shard, batch, seq_len, width);
}

void column_parallel_input_backward(process_grid *grid, region_activation d_x, int batch, int seq_len, int width) {
    if (grid->sequence_parallel)
        gather_from_sequence_parallel_region_backward(grid, d_x.shard, d_x.full, batch, seq_len, width);
    else
        copy_to_tensor_parallel_region_backward(grid, d_x.full, floats_of(batch, seq_len, width));
}

void row_parallel_output_forward(process_grid *grid, region_activation y, int batch, int seq_len, int width) {
    if (grid->sequence_parallel)
        reduce_scatter_to_sequence_parallel_region_forward(grid, y.shard, y.full, batch, seq_len, width);
    else
        reduce_from_tensor_parallel_region_forward(grid, y.full, floats_of(batch, seq_len, width));
}

void row_parallel_output_backward(process_grid *grid, region_activation d_y, int batch, int seq_len, int width) {
    // Without sp: reduce_from_tensor_parallel_region, whose backward is the identity.
    if (grid->sequence_parallel)
        reduce_scatter_to_sequence_parallel_region_backward(grid, d_y.full, d_y.shard, batch, seq_len, width);
}
