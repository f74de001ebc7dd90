#include "par/zero.h"

#include <limits.h>
#include <stdlib.h>

#include "core/errors.h"
#include "ops/ops.h"

moment_range zero_partition(const param_registry *registry, int dp_rank, int dp_size) {
    if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size)
        fatal("zero_partition: dp rank %d outside a dp group of %d", dp_rank, dp_size);
    // registry->total is a multiple of 16 (params_add pads every tensor); split whole units.
    size_t units = (registry->total + 15) / 16;
    size_t begin = units * (size_t)dp_rank / (size_t)dp_size * 16;
    size_t end = units * (size_t)(dp_rank + 1) / (size_t)dp_size * 16;
    if (end > registry->total) end = registry->total;
    if (begin > end) begin = end;
    return (moment_range){begin, end};
}

void zero_partition_all(const param_registry *registry, int dp_size, moment_range *ranges) {
    for (int r = 0; r < dp_size; r++) ranges[r] = zero_partition(registry, r, dp_size);
}

// MPI_Allgatherv takes int counts and displacements: checked, since a large model's
// buffer can pass 2^31 floats.
void zero_gather_init(zero_gather *gather, const moment_range *ranges, int dp_size) {
    gather->dp_size = dp_size;
    gather->counts = xmalloc((size_t)dp_size * sizeof *gather->counts);
    gather->displacements = xmalloc((size_t)dp_size * sizeof *gather->displacements);
    gather->bytes = 0.0;
    for (int r = 0; r < dp_size; r++) {
        if (ranges[r].end > (size_t)INT_MAX || ranges[r].end < ranges[r].begin)
            fatal("ZeRO-1: parameter range [%zu, %zu) does not fit MPI's int counts", ranges[r].begin, ranges[r].end);
        gather->counts[r] = (int)(ranges[r].end - ranges[r].begin);
        gather->displacements[r] = (int)ranges[r].begin;
        gather->bytes += (double)gather->counts[r] * sizeof(float);
    }
}

void zero_gather_free(zero_gather *gather) {
    free(gather->counts);
    free(gather->displacements);
    gather->counts = gather->displacements = NULL;
}

void zero_all_gather_params(float *params, const zero_gather *gather, MPI_Comm data_comm, traffic_counter *traffic) {
    if (gather->dp_size == 1) return;
    // MPI reads and writes params from the host: wait for the kernels (a GPU backend's
    // staging point; nothing on the CPU backend).
    ops_to_host(params, params, (size_t)gather->bytes);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, gather->counts, gather->displacements, MPI_FLOAT,
                   data_comm);
    traffic_add(traffic, TRAFFIC_DP_ALL_GATHER, traffic_all_gather_bytes(gather->bytes, gather->dp_size));
}
