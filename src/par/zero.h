// ZeRO stage 1 (Rajbhandari et al. 2020): the Adam moments are partitioned over the dp
// group. Every dp rank still holds the whole parameter and gradient buffers (gradients
// all-reduced by par/grad_reduce), updates only its contiguous range of the flat buffer
// (optimizer_allocate_range + optimizer_step), then the updated ranges are all-gathered
// so every rank holds the whole new parameters again.
#pragma once
#include <mpi.h>

#include "core/params.h"
#include "par/traffic.h"

// dp rank dp_rank's range of the flat buffer: balanced in 16-float units, so begins are
// 16-float (64-byte) aligned and the ranges of ranks 0..dp_size-1 are disjoint, ascending
// and cover [0, registry->total). Ranges may cut tensors. The same on every tp rank only
// when their registries have the same total (it is per dp group that it must agree).
moment_range zero_partition(const param_registry *registry, int dp_rank, int dp_size);
// ranges[dp_size]: every dp rank's zero_partition, for zero_gather_init.
void zero_partition_all(const param_registry *registry, int dp_size, moment_range *ranges);
// The all-gather's MPI counts and displacements, built once before the step loop from
// every dp rank's range in dp rank order (so the step allocates nothing); fatal when a
// range does not fit MPI's int counts.
typedef struct {
    int dp_size;
    int *counts, *displacements;
    double bytes;                       // floats gathered, in bytes
} zero_gather;
void zero_gather_init(zero_gather *gather, const moment_range *ranges_of_all_dp_ranks, int dp_size);
void zero_gather_free(zero_gather *gather);
// After the step: each dp rank contributes params[its range] and receives the others'
// (MPI_Allgatherv in place over data_comm, counted as TRAFFIC_DP_ALL_GATHER). Nothing
// happens on one dp rank. Collective.
void zero_all_gather_params(float *params, const zero_gather *gather, MPI_Comm data_comm, traffic_counter *traffic);
