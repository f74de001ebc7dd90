// Traffic accounting (issue 4): bytes each rank sends per collective kind, counted at
// the call site with the ring-algorithm volume (what NCCL/Open MPI's large-message
// algorithms send), so the totals can be checked against the analytic formula
// (Megatron: 8(t-1)/t * s*b*h elements per layer per micro-batch for tp, the same with sp).
#pragma once
#include <stddef.h>

typedef enum {
    TRAFFIC_TP_ALL_REDUCE,       // tensor-parallel activations / input gradients (no sp)
    TRAFFIC_TP_ALL_GATHER,       // sequence-parallel gathers along the sequence
    TRAFFIC_TP_REDUCE_SCATTER,   // sequence-parallel scatters along the sequence
    TRAFFIC_TP_LOSS,             // vocab-parallel cross entropy: per-row max, sum, target logit
    TRAFFIC_TP_GRADIENTS,        // replicated tensors' partial gradients summed over tp
    TRAFFIC_DP_ALL_REDUCE,       // data-parallel gradient buckets
    TRAFFIC_DP_ALL_GATHER,       // ZeRO-1 parameter all-gather after the step
    TRAFFIC_KINDS
} traffic_kind;

typedef struct {
    double bytes[TRAFFIC_KINDS];  // sent by this rank
    long calls[TRAFFIC_KINDS];
} traffic_counter;

const char *traffic_kind_name(traffic_kind kind);
void traffic_reset(traffic_counter *counter);
// Adds one call that sent `bytes` (may be NULL: not counted).
void traffic_add(traffic_counter *counter, traffic_kind kind, double bytes);
// Ring-algorithm bytes one rank sends over `ranks` ranks:
//   all-reduce of n bytes 2(p-1)/p n; all-gather producing n bytes (p-1)/p n;
//   reduce-scatter of n input bytes (p-1)/p n. Zero on one rank.
double traffic_all_reduce_bytes(double n, int ranks);
double traffic_all_gather_bytes(double n, int ranks);
double traffic_reduce_scatter_bytes(double n, int ranks);
