// Data-parallel gradient reduction overlapped with backward (DESIGN.md 7), as PyTorch
// DDP does it: the flat gradient buffer is cut into buckets of about bucket_megabytes
// on tensor boundaries, in reverse registry order (the order backward finalises them:
// LM head and final norm, layer n-1 ... 0, embedding). When every tensor of a bucket is
// final, its grad_partial_over_tp tensors are summed over the tp group (blocking, small)
// and an MPI_Iallreduce of the whole bucket over the dp group starts; later calls
// MPI_Test the outstanding ones so Open MPI progresses them while backward goes on.
//
// Collective discipline: buckets start strictly in bucket order, and bucket boundaries
// depend only on logical shapes, so every rank of a dp group issues the same Iallreduce
// sequence and every rank of a tp group the same tp sums at the same points, provided
// the model calls tensor_ready/layer_ready at the same points of its backward on every
// rank (it does: the backward is the same code everywhere).
#pragma once
#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/params.h"
#include "par/traffic.h"

typedef struct {
    size_t begin, end;              // floats of the gradient buffer; buckets tile [0, total)
    int first_tensor, last_tensor;  // registry indices it holds, first <= last
    int pending;                    // its tensors not yet ready this step
    MPI_Request request;            // the dp Iallreduce (MPI_REQUEST_NULL when none is outstanding)
} grad_bucket;

typedef struct {
    const param_registry *registry;
    float *grads;                   // registry->total floats
    MPI_Comm data_comm, tensor_comm;
    int data_size, tensor_size, tensor_rank;
    traffic_counter *traffic;       // may be NULL
    grad_bucket *buckets;           // in starting order: bucket 0 holds the registry's last tensors
    int bucket_count;
    int *bucket_of;                 // registry index -> its bucket
    bool *ready;                    // registry index -> final this step
    int next_start;                 // the next bucket to start
    int next_test;                  // the first started bucket that may still be in flight
    bool active;                    // between grad_reducer_begin and grad_reducer_finish
} grad_reducer;

// Forms the buckets (bucket_megabytes in units of 10^6 bytes; <= 0: one bucket for the
// whole buffer). grads must stay allocated until grad_reducer_free. Not collective.
void grad_reducer_init(grad_reducer *r, const param_registry *registry, float *grads, MPI_Comm data_comm,
                       MPI_Comm tensor_comm, double bucket_megabytes, traffic_counter *traffic);
// Starts a step: before the backward of the step's last micro-batch (earlier micro-batches
// only accumulate locally). tensor_ready/layer_ready outside begin..finish do nothing, so
// the model may call them on every backward.
void grad_reducer_begin(grad_reducer *r);
// Tensor `index`'s gradient is final on this rank (repeated calls are ignored).
void grad_reducer_tensor_ready(grad_reducer *r, int index);
// Every tensor with items[i].layer == layer is final (-1: the embedding, the final norm
// and the LM head together).
void grad_reducer_layer_ready(grad_reducer *r, int layer);
// Marks the remaining tensors ready and waits for every bucket. Afterwards each rank's
// gradients are summed over dp (grad_partial_over_tp ones over tp first). Called without
// grad_reducer_begin it reduces the whole buffer (no overlap).
void grad_reducer_finish(grad_reducer *r);
void grad_reducer_free(grad_reducer *r);

// L2 norm of the whole logical gradient after grad_reducer_finish: sharded tensors' local
// squares plus SHARD_NONE tensors counted once (on tp rank 0), summed over tensor_comm.
// Equals the single-rank norm up to summation order; on tp = 1 it is exactly
// gradient_global_norm(grads, total). Collective over tensor_comm (not counted in traffic).
double grad_reducer_global_norm(const grad_reducer *r);
