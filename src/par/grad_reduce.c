#include "par/grad_reduce.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/errors.h"
#include "ops/ops.h"

// Floats a tensor takes on one tp rank, from its logical shape only: bucket boundaries
// must be the same on every tp rank (their tp sums have to match), and balanced splits
// give ranks local counts that differ by one row or column.
static double nominal_floats(const param_registry *registry, const param_info *p) {
    double logical = (double)params_logical_count(p);
    return p->shard == SHARD_NONE ? logical : logical / registry->shard_count;
}

void grad_reducer_init(grad_reducer *r, const param_registry *registry, float *grads, MPI_Comm data_comm,
                       MPI_Comm tensor_comm, double bucket_megabytes, traffic_counter *traffic) {
    memset(r, 0, sizeof *r);
    r->registry = registry;
    r->grads = grads;
    r->data_comm = data_comm;
    r->tensor_comm = tensor_comm;
    r->traffic = traffic;
    MPI_Comm_size(data_comm, &r->data_size);
    MPI_Comm_size(tensor_comm, &r->tensor_size);
    MPI_Comm_rank(tensor_comm, &r->tensor_rank);
    int n = registry->count;
    r->bucket_of = xcalloc((size_t)(n > 0 ? n : 1), sizeof *r->bucket_of);
    r->ready = xcalloc((size_t)(n > 0 ? n : 1), sizeof *r->ready);
    r->buckets = xcalloc((size_t)(n > 0 ? n : 1), sizeof *r->buckets);

    // Walk the tensors from the last registered (final first in backward) and close a
    // bucket once it holds bucket_megabytes.
    double limit_floats = bucket_megabytes > 0 ? bucket_megabytes * 1e6 / sizeof(float) : INFINITY;
    double filled = 0.0;
    bool open = false;
    for (int i = n - 1; i >= 0; i--) {
        if (!open) {
            r->buckets[r->bucket_count].last_tensor = i;
            r->buckets[r->bucket_count].request = MPI_REQUEST_NULL;
            r->bucket_count++;
            filled = 0.0;
            open = true;
        }
        r->buckets[r->bucket_count - 1].first_tensor = i;
        r->bucket_of[i] = r->bucket_count - 1;
        filled += nominal_floats(registry, &registry->items[i]);
        if (filled >= limit_floats) open = false;  // the next tensor opens a new bucket
    }
    // Ranges tile [0, total): a bucket runs from its first tensor to the next bucket's
    // start, so alignment padding travels with the tensor before it.
    for (int b = 0; b < r->bucket_count; b++) {
        grad_bucket *bucket = &r->buckets[b];
        bucket->begin = bucket->first_tensor == 0 ? 0 : registry->items[bucket->first_tensor].offset;
        bucket->end = bucket->last_tensor == n - 1 ? registry->total : registry->items[bucket->last_tensor + 1].offset;
        if (bucket->end - bucket->begin > (size_t)INT_MAX)
            fatal("a gradient bucket of %zu floats exceeds MPI's int count; lower [parallel] bucket_megabytes",
                  bucket->end - bucket->begin);
    }
}

void grad_reducer_free(grad_reducer *r) {
    free(r->buckets);
    free(r->bucket_of);
    free(r->ready);
    memset(r, 0, sizeof *r);
}

// Sums the bucket's partial tensors over tp (blocking), then starts its dp all-reduce.
static void start_bucket(grad_reducer *r, grad_bucket *b) {
    if (r->tensor_size > 1) {
        for (int i = b->last_tensor; i >= b->first_tensor; i--) {
            const param_info *p = &r->registry->items[i];
            if (!p->grad_partial_over_tp || p->local_count == 0) continue;
            // MPI reads the tensor from the host: wait for the kernels that wrote it (a GPU backend's
            // staging point; nothing on the CPU backend).
            ops_to_host(r->grads + p->offset, r->grads + p->offset, p->local_count * sizeof(float));
            MPI_Allreduce(MPI_IN_PLACE, r->grads + p->offset, (int)p->local_count, MPI_FLOAT, MPI_SUM, r->tensor_comm);
            traffic_add(r->traffic, TRAFFIC_TP_GRADIENTS,
                        traffic_all_reduce_bytes((double)p->local_count * sizeof(float), r->tensor_size));
        }
    }
    size_t count = b->end - b->begin;
    if (r->data_size > 1 && count > 0) {
        ops_to_host(r->grads + b->begin, r->grads + b->begin, count * sizeof(float));
        MPI_Iallreduce(MPI_IN_PLACE, r->grads + b->begin, (int)count, MPI_FLOAT, MPI_SUM, r->data_comm, &b->request);
        traffic_add(r->traffic, TRAFFIC_DP_ALL_REDUCE,
                    traffic_all_reduce_bytes((double)count * sizeof(float), r->data_size));
    }
}

// Tests the oldest outstanding requests so Open MPI's progress engine moves them along
// (it progresses non-blocking collectives only inside MPI calls).
static void progress(grad_reducer *r) {
    while (r->next_test < r->next_start) {
        int done = 0;
        MPI_Test(&r->buckets[r->next_test].request, &done, MPI_STATUS_IGNORE);
        if (!done) break;
        r->next_test++;
    }
}

// Starts every bucket that is complete and whose predecessors have started (collectives
// must be issued in the same order on every rank).
static void start_ready_buckets(grad_reducer *r) {
    while (r->next_start < r->bucket_count && r->buckets[r->next_start].pending == 0)
        start_bucket(r, &r->buckets[r->next_start++]);
    progress(r);
}

void grad_reducer_begin(grad_reducer *r) {
    if (r->active) fatal("grad_reducer_begin: the previous step's reduction was not finished");
    int n = r->registry->count;
    if (n > 0) memset(r->ready, 0, (size_t)n * sizeof *r->ready);
    for (int b = 0; b < r->bucket_count; b++)
        r->buckets[b].pending = r->buckets[b].last_tensor - r->buckets[b].first_tensor + 1;
    r->next_start = r->next_test = 0;
    r->active = true;
}

void grad_reducer_tensor_ready(grad_reducer *r, int index) {
    if (index < 0 || index >= r->registry->count)
        fatal("grad_reducer_tensor_ready: tensor index %d outside the registry's %d", index, r->registry->count);
    if (!r->active || r->ready[index]) return;
    r->ready[index] = true;
    r->buckets[r->bucket_of[index]].pending--;
    start_ready_buckets(r);
}

void grad_reducer_layer_ready(grad_reducer *r, int layer) {
    if (!r->active) return;
    for (int i = r->registry->count - 1; i >= 0; i--)
        if (r->registry->items[i].layer == layer) grad_reducer_tensor_ready(r, i);
}

void grad_reducer_finish(grad_reducer *r) {
    if (!r->active) grad_reducer_begin(r);
    for (int i = r->registry->count - 1; i >= 0; i--) grad_reducer_tensor_ready(r, i);
    for (int b = r->next_test; b < r->bucket_count; b++) MPI_Wait(&r->buckets[b].request, MPI_STATUS_IGNORE);
    r->next_test = r->bucket_count;
    r->active = false;
}

double grad_reducer_global_norm(const grad_reducer *r) {
    const param_registry *registry = r->registry;
    if (r->tensor_size == 1) return sqrt(sum_of_squares(r->grads, registry->total));
    double local = 0.0;
    for (int i = 0; i < registry->count; i++) {
        const param_info *p = &registry->items[i];
        if (p->shard == SHARD_NONE && r->tensor_rank != 0) continue;  // replicated: counted once
        local += sum_of_squares(r->grads + p->offset, p->local_count);
    }
    double total = 0.0;
    MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, r->tensor_comm);
    return sqrt(total);
}
