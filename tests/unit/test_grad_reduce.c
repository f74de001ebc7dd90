// Data-parallel gradient reduction (par/grad_reduce) and ZeRO-1 (par/zero with the
// ranged optimizer) on a synthetic registry: tensors of every sharding kind, some
// SHARD_NONE ones with grad_partial_over_tp, layers -1, 0, 1, 2.
//
// Run plainly (1 rank) it checks the single-rank pieces (partitions, the ranged optimizer
// against the original per-tensor loop, the reducer on MPI_COMM_SELF), then runs itself
// as `timeout mpirun --oversubscribe -np 2|4 <self> --child` and forwards the children's
// PASS/FAIL lines. A child splits its world into dp x tp grids (np 2: dp2 x tp1, dp1 x
// tp2; np 4: dp4 x tp1, dp2 x tp2) and checks, for tiny / medium / single buckets and
// tensors marked ready in backward order, layer by layer, and in a per-rank scrambled
// order: gradients after finish equal the directly computed sums bit for bit (the values
// are multiples of 1/16, so every summation order is exact), the global norm, the traffic
// formula, and that 3 ZeRO-1 steps equal the unpartitioned optimizer bit for bit
// (tolerance 0: each element gets the same arithmetic in both).
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_process.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/params.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "par/grad_reduce.h"
#include "par/traffic.h"
#include "par/zero.h"
#include "testing.h"
#include "train/optimizer.h"

static char self_path[4096];
static int world_rank, world_size;
static int passes;                 // testing.h counts only failures

static void report(int ok, const char *name, const char *why) {
    testing_report(ok, name, "%s", why);
    if (ok) passes++;
}

// ---------------------------------------------------------------------------------------
// The synthetic model and its gradients.

static void build_registry(param_registry *registry, int tp_rank, int tp_size) {
    params_init(registry, tp_rank, tp_size);
    params_add(registry, "embed.weight", "embedding", -1, 37, 8, SHARD_ROWS, INIT_NORMAL, 0.02f, false);
    for (int l = 0; l < 3; l++) {
        char name[PARAM_NAME_MAX];
        snprintf(name, sizeof name, "layers.%d.norm.weight", l);
        params_add(registry, name, "norm", l, 8, 0, SHARD_NONE, INIT_ONES, 0, false);
        snprintf(name, sizeof name, "layers.%d.mixer.wq", l);
        params_add(registry, name, "mixer", l, 12 + l, 8, SHARD_ROWS, INIT_NORMAL, 0.02f, true);
        snprintf(name, sizeof name, "layers.%d.mixer.wo", l);
        params_add(registry, name, "mixer", l, 8, 13, SHARD_COLS, INIT_NORMAL, 0.02f, true);
        snprintf(name, sizeof name, "layers.%d.mixer.seed", l);
        int seed = params_add(registry, name, "mixer", l, 5, 8, SHARD_NONE, INIT_NORMAL, 0.02f, true);
        registry->items[seed].grad_partial_over_tp = true;
        snprintf(name, sizeof name, "layers.%d.mixer.bias", l);
        int bias = params_add(registry, name, "mixer", l, 3 + l, 0, SHARD_NONE, INIT_ZEROS, 0, false);
        registry->items[bias].grad_partial_over_tp = l == 1;
    }
    params_add(registry, "final_norm.weight", "norm", -1, 8, 0, SHARD_NONE, INIT_ONES, 0, false);
    params_add(registry, "lm_head.weight", "head", -1, 37, 8, SHARD_ROWS, INIT_NORMAL, 0.02f, true);
}

// Element e of the gradient dp replica dp_rank computes for a tensor at a step; for
// grad_partial_over_tp tensors each tp rank computes its own share. Multiples of 1/16
// with |x| < 8: every sum of up to 8 of them is exact in float.
static float contribution(const param_info *info, int step, int dp_rank, int tp_rank, int64_t e) {
    int share = info->grad_partial_over_tp ? tp_rank : 0;
    double x = rng_normal(1000u * (uint64_t)step + 16u * (uint64_t)dp_rank + (uint64_t)share,
                          rng_hash_string(info->name), (uint64_t)e);
    return (float)(round(fmax(fmin(x, 7.0), -7.0) * 16.0) / 16.0);
}

// Writes this rank's gradient of tensor `index` into its slice of grads.
static void fill_tensor(const param_registry *registry, int index, float *grads, int step, int dp_rank, int tp_rank) {
    const param_info *info = &registry->items[index];
    int64_t n = params_logical_count(info);
    float *logical = xmalloc((size_t)n * sizeof(float));
    for (int64_t e = 0; e < n; e++) logical[e] = contribution(info, step, dp_rank, tp_rank, e);
    params_logical_to_slice(info, logical, grads + info->offset);
    free(logical);
}

// The reduced gradient this rank must end with (zeros in the padding), and the norm of
// the whole logical gradient.
static double expected_gradients(const param_registry *registry, float *expected, int step, int dp_size,
                                 int tp_size) {
    memset(expected, 0, registry->total * sizeof(float));
    double squares = 0.0;
    for (int i = 0; i < registry->count; i++) {
        const param_info *info = &registry->items[i];
        int64_t n = params_logical_count(info);
        float *logical = xmalloc((size_t)n * sizeof(float));
        int shares = info->grad_partial_over_tp ? tp_size : 1;
        for (int64_t e = 0; e < n; e++) {
            double sum = -0.0;  // the identity of IEEE addition: a lone -0 stays -0
            for (int d = 0; d < dp_size; d++)
                for (int t = 0; t < shares; t++) sum += contribution(info, step, d, t, e);
            logical[e] = (float)sum;
            squares += sum * sum;
        }
        params_logical_to_slice(info, logical, expected + info->offset);
        free(logical);
    }
    return sqrt(squares);
}

// "" when the buffers agree bit for bit, else the first differing tensor and element.
static void describe_difference(const param_registry *registry, const float *got, const float *want, char *why,
                                size_t size) {
    why[0] = '\0';
    if (memcmp(got, want, registry->total * sizeof(float)) == 0) return;
    for (size_t k = 0; k < registry->total; k++) {
        uint32_t got_bits, want_bits;
        memcpy(&got_bits, &got[k], sizeof got_bits);
        memcpy(&want_bits, &want[k], sizeof want_bits);
        if (got_bits == want_bits) continue;
        const char *tensor = "(padding)";
        for (int i = 0; i < registry->count; i++)
            if (k >= registry->items[i].offset && k < registry->items[i].offset + registry->items[i].local_count)
                tensor = registry->items[i].name;
        snprintf(why, size, "%s element %zu: got %.9g, want %.9g", tensor, k, got[k], want[k]);
        return;
    }
}

// "" when the buckets tile [0, total) in descending order on tensor boundaries.
static void describe_bad_tiling(const grad_reducer *r, char *why, size_t size) {
    const param_registry *registry = r->registry;
    why[0] = '\0';
    if (registry->count == 0) return;
    size_t expected_end = registry->total;
    int expected_last = registry->count - 1;
    for (int b = 0; b < r->bucket_count; b++) {
        const grad_bucket *bucket = &r->buckets[b];
        if (bucket->end != expected_end || bucket->last_tensor != expected_last ||
            bucket->first_tensor > bucket->last_tensor ||
            bucket->begin != (bucket->first_tensor == 0 ? 0 : registry->items[bucket->first_tensor].offset)) {
            snprintf(why, size, "bucket %d [%zu, %zu) tensors %d..%d does not continue the tiling", b, bucket->begin,
                     bucket->end, bucket->first_tensor, bucket->last_tensor);
            return;
        }
        for (int i = bucket->first_tensor; i <= bucket->last_tensor; i++)
            if (r->bucket_of[i] != b) {
                snprintf(why, size, "tensor %d is in bucket %d but bucket_of says %d", i, b, r->bucket_of[i]);
                return;
            }
        expected_end = bucket->begin;
        expected_last = bucket->first_tensor - 1;
    }
    if (expected_end != 0 || expected_last != -1) snprintf(why, size, "buckets do not reach the buffer's start");
}

// ---------------------------------------------------------------------------------------
// Single-rank checks.

static void test_partitions(void) {
    char why[256] = "";
    param_registry registries[3];
    build_registry(&registries[0], 0, 1);
    build_registry(&registries[1], 1, 2);
    params_init(&registries[2], 0, 1);  // empty
    for (int k = 0; k < 3 && !why[0]; k++) {
        const param_registry *registry = &registries[k];
        for (int dp = 1; dp <= 7 && !why[0]; dp++) {
            size_t next = 0, smallest = registry->total, largest = 0;
            for (int rank = 0; rank < dp; rank++) {
                moment_range range = zero_partition(registry, rank, dp);
                if (range.begin != next || range.end < range.begin || range.begin % 16 != 0)
                    snprintf(why, sizeof why, "registry %d, dp %d, rank %d: [%zu, %zu) after %zu", k, dp, rank,
                             range.begin, range.end, next);
                size_t size = range.end - range.begin;
                smallest = size < smallest ? size : smallest;
                largest = size > largest ? size : largest;
                next = range.end;
            }
            if (!why[0] && next != registry->total)
                snprintf(why, sizeof why, "registry %d, dp %d: ranges end at %zu of %zu", k, dp, next, registry->total);
            if (!why[0] && largest > smallest + 16)
                snprintf(why, sizeof why, "registry %d, dp %d: unbalanced (%zu vs %zu)", k, dp, smallest, largest);
        }
    }
    for (int k = 0; k < 3; k++) params_free(&registries[k]);
    report(!why[0], "zero_partition: aligned, disjoint, balanced, covering [0, total)", why);
}

static void optimizer_config(decon_config *c) {
    config_defaults(c);
    c->grad_clip = 1.0;  // the synthetic gradients' norm is far above: clipping is exercised
    c->weight_decay = 0.1;
    c->adam_beta1 = 0.9;
    c->adam_beta2 = 0.95;
    c->adam_epsilon = 1e-8;
}

// The full-range optimizer must stay bit-identical to the original per-tensor loop (the
// resume tests compare exactly), and ranges that split tensors must add up to it.
static void test_ranged_optimizer(void) {
    param_registry registry;
    build_registry(&registry, 0, 1);
    decon_config c;
    optimizer_config(&c);
    size_t bytes = registry.total * sizeof(float);
    float *grads = xaligned_alloc(bytes), *full = xaligned_alloc(bytes), *legacy = xaligned_alloc(bytes),
          *split = xaligned_alloc(bytes);
    float *legacy_m = xaligned_alloc(bytes), *legacy_v = xaligned_alloc(bytes);
    params_initialize(&registry, full, 11);
    memcpy(legacy, full, bytes);
    memcpy(split, full, bytes);
    adamw_state state, parts[3];
    optimizer_allocate(&state, &registry);
    for (int p = 0; p < 3; p++) optimizer_allocate_range(&parts[p], &registry, zero_partition(&registry, p, 3));
    char legacy_why[256] = "", split_why[256] = "";
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < registry.count; i++) fill_tensor(&registry, i, grads, step, 0, 0);
        double norm = gradient_global_norm(grads, registry.total), lr = 1e-2 * step;
        optimizer_step(&state, &registry, full, grads, &c, lr, norm, step);
        float scale = (float)(c.grad_clip / (norm + 1e-6));
        for (int i = 0; i < registry.count; i++) {
            const param_info *p = &registry.items[i];
            adamw_update(legacy + p->offset, grads + p->offset, legacy_m + p->offset, legacy_v + p->offset,
                         p->local_count, (float)lr, (float)c.adam_beta1, (float)c.adam_beta2, (float)c.adam_epsilon,
                         p->weight_decay ? (float)c.weight_decay : 0.0f, step, scale);
        }
        for (int p = 0; p < 3; p++) optimizer_step(&parts[p], &registry, split, grads, &c, lr, norm, step);
        if (!legacy_why[0]) describe_difference(&registry, full, legacy, legacy_why, sizeof legacy_why);
        if (!split_why[0]) describe_difference(&registry, split, full, split_why, sizeof split_why);
    }
    if (!legacy_why[0] && (memcmp(state.m, legacy_m, bytes) != 0 || memcmp(state.v, legacy_v, bytes) != 0))
        snprintf(legacy_why, sizeof legacy_why, "moments differ");
    for (int p = 0; p < 3 && !split_why[0]; p++)
        if (memcmp(parts[p].m, state.m + parts[p].range.begin, parts[p].count * sizeof(float)) != 0 ||
            memcmp(parts[p].v, state.v + parts[p].range.begin, parts[p].count * sizeof(float)) != 0)
            snprintf(split_why, sizeof split_why, "moments of part %d differ", p);
    report(!legacy_why[0] && state.range.begin == 0 && state.range.end == registry.total,
           "optimizer: full range is bit-identical to the per-tensor loop over 3 steps", legacy_why);
    report(!split_why[0], "optimizer: 3 ranges cutting tensors equal the full range bit for bit over 3 steps",
           split_why);
    optimizer_free(&state);
    for (int p = 0; p < 3; p++) optimizer_free(&parts[p]);
    free(grads);
    free(full);
    free(legacy);
    free(split);
    free(legacy_m);
    free(legacy_v);
    params_free(&registry);
}

// dp = tp = 1: nothing moves, nothing is counted, the norm is the plain one.
static void test_single_rank_reducer(void) {
    param_registry registry;
    build_registry(&registry, 0, 1);
    size_t bytes = registry.total * sizeof(float);
    float *grads = xaligned_alloc(bytes), *copy = xaligned_alloc(bytes);
    for (int i = 0; i < registry.count; i++) fill_tensor(&registry, i, grads, 1, 0, 0);
    memcpy(copy, grads, bytes);
    traffic_counter traffic;
    traffic_reset(&traffic);
    char why[256] = "";
    const double sizes[] = {1e-9, 3e-4, 0};
    for (int k = 0; k < 3 && !why[0]; k++) {
        grad_reducer r;
        grad_reducer_init(&r, &registry, grads, MPI_COMM_SELF, MPI_COMM_SELF, sizes[k], &traffic);
        describe_bad_tiling(&r, why, sizeof why);
        int want_buckets = k == 0 ? registry.count : k == 2 ? 1 : -1;
        if (!why[0] && want_buckets > 0 && r.bucket_count != want_buckets)
            snprintf(why, sizeof why, "%d buckets, want %d", r.bucket_count, want_buckets);
        if (!why[0] && k == 1 && (r.bucket_count <= 1 || r.bucket_count >= registry.count))
            snprintf(why, sizeof why, "medium size gave %d buckets of %d tensors", r.bucket_count, registry.count);
        grad_reducer_begin(&r);
        grad_reducer_layer_ready(&r, 2);
        grad_reducer_finish(&r);
        grad_reducer_finish(&r);  // without begin: a whole-buffer reduction
        if (!why[0]) describe_difference(&registry, grads, copy, why, sizeof why);
        if (!why[0] && grad_reducer_global_norm(&r) != gradient_global_norm(copy, registry.total))
            snprintf(why, sizeof why, "norm %.17g differs from gradient_global_norm", grad_reducer_global_norm(&r));
        grad_reducer_free(&r);
    }
    for (int kind = 0; kind < TRAFFIC_KINDS && !why[0]; kind++)
        if (traffic.calls[kind] != 0) snprintf(why, sizeof why, "%s counted on one rank", traffic_kind_name(kind));
    report(!why[0], "grad_reducer on one rank: buckets tile the buffer, gradients untouched, plain norm", why);
    free(grads);
    free(copy);
    params_free(&registry);
}

// ---------------------------------------------------------------------------------------
// Child: collective checks inside mpirun.

typedef struct {
    MPI_Comm data, tensor;
    int dp_rank, dp_size, tp_rank, tp_size;
    char label[32];
} grid;

static void grid_create(grid *g, int tp_size) {
    g->tp_size = tp_size;
    g->dp_size = world_size / tp_size;
    g->tp_rank = world_rank % tp_size;  // tp innermost, as par/process_grid places it
    g->dp_rank = world_rank / tp_size;
    MPI_Comm_split(MPI_COMM_WORLD, g->dp_rank, world_rank, &g->tensor);
    MPI_Comm_split(MPI_COMM_WORLD, g->tp_rank, world_rank, &g->data);
    snprintf(g->label, sizeof g->label, "np%d dp%d x tp%d", world_size, g->dp_size, tp_size);
}

static void grid_free(grid *g) {
    MPI_Comm_free(&g->data);
    MPI_Comm_free(&g->tensor);
}

// One PASS/FAIL line for the whole world: fails when any rank's why is non-empty, and
// then shows the lowest failing rank's.
static void collective_report(const char *name, const char *why) {
    enum { WHY = 256 };
    char mine[WHY];
    snprintf(mine, sizeof mine, "%s", why);
    char *all = xmalloc((size_t)world_size * WHY);
    MPI_Gather(mine, WHY, MPI_CHAR, all, WHY, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (world_rank == 0) {
        char text[WHY + 32] = "";
        for (int r = 0; r < world_size && !text[0]; r++)
            if (all[(size_t)r * WHY]) snprintf(text, sizeof text, "rank %d: %s", r, all + (size_t)r * WHY);
        report(!text[0], name, text);
    }
    free(all);
}

typedef enum { ORDER_BACKWARD, ORDER_LAYERS, ORDER_SCRAMBLED } ready_order;
static const char *const ORDER_NAMES[] = {"backward order", "layer by layer", "scrambled order"};

// Marks tensor i ready after writing its gradient: until then its slice holds garbage,
// so a bucket reduced before all its tensors are final gives wrong sums.
static void make_ready(grad_reducer *r, const grid *g, int index, int step) {
    fill_tensor(r->registry, index, r->grads, step, g->dp_rank, g->tp_rank);
    grad_reducer_tensor_ready(r, index);
}

static void run_backward(grad_reducer *r, const grid *g, ready_order order, int step) {
    const param_registry *registry = r->registry;
    int n = registry->count;
    for (int i = 0; i < n; i++) {  // garbage in every tensor, zeros in the padding
        const param_info *p = &registry->items[i];
        for (size_t k = 0; k < p->local_count; k++) r->grads[p->offset + k] = 1e30f;
    }
    grad_reducer_tensor_ready(r, n - 1);  // before begin: ignored
    grad_reducer_begin(r);
    if (order == ORDER_BACKWARD) {
        for (int i = n - 1; i >= 0; i--) make_ready(r, g, i, step);
    } else if (order == ORDER_LAYERS) {
        // Head side of layer -1 tensor by tensor, then whole layers, the embedding left to finish.
        for (int i = n - 1; registry->items[i].layer == -1; i--) make_ready(r, g, i, step);
        for (int layer = 2; layer >= 0; layer--) {
            for (int i = 0; i < n; i++)
                if (registry->items[i].layer == layer)
                    fill_tensor(registry, i, r->grads, step, g->dp_rank, g->tp_rank);
            grad_reducer_layer_ready(r, layer);
        }
        fill_tensor(registry, 0, r->grads, step, g->dp_rank, g->tp_rank);
    } else {
        int *permutation = xmalloc((size_t)n * sizeof(int));
        for (int i = 0; i < n; i++) permutation[i] = i;
        for (int i = n - 1; i > 0; i--) {  // differs on every rank and step
            int j = (int)(rng_mix(77, (uint64_t)world_rank, (uint64_t)step * (uint64_t)n + (uint64_t)i) % (uint64_t)(i + 1));
            int t = permutation[i];
            permutation[i] = permutation[j];
            permutation[j] = t;
        }
        for (int i = 0; i < n - 1; i++) make_ready(r, g, permutation[i], step);
        fill_tensor(registry, permutation[n - 1], r->grads, step, g->dp_rank, g->tp_rank);  // left to finish
        free(permutation);
    }
    grad_reducer_finish(r);
}

// Buckets must be the same on every tp rank (their tp sums have to match).
static void describe_tp_disagreement(const grad_reducer *r, const grid *g, char *why, size_t size) {
    // Unsigned: the hash of the boundaries wraps (a signed int would overflow, undefined).
    unsigned mine[2] = {(unsigned)r->bucket_count, 0}, low[2], high[2];
    for (int b = 0; b < r->bucket_count; b++) mine[1] = mine[1] * 31u + (unsigned)r->buckets[b].first_tensor;
    MPI_Allreduce(mine, low, 2, MPI_UNSIGNED, MPI_MIN, g->tensor);
    MPI_Allreduce(mine, high, 2, MPI_UNSIGNED, MPI_MAX, g->tensor);
    if (!why[0] && (low[0] != high[0] || low[1] != high[1]))
        snprintf(why, size, "bucket boundaries differ across tp ranks");
}

static void test_reduce_case(const grid *g, const param_registry *registry, double megabytes, const char *size_name,
                             ready_order order) {
    enum { STEPS = 2 };
    size_t bytes = registry->total * sizeof(float);
    float *grads = xaligned_alloc(bytes), *expected = xaligned_alloc(bytes);
    traffic_counter traffic;
    traffic_reset(&traffic);
    grad_reducer r;
    grad_reducer_init(&r, registry, grads, g->data, g->tensor, megabytes, &traffic);
    char why[256] = "";
    describe_bad_tiling(&r, why, sizeof why);
    describe_tp_disagreement(&r, g, why, sizeof why);
    for (int step = 1; step <= STEPS; step++) {
        run_backward(&r, g, order, step);
        double norm = expected_gradients(registry, expected, step, g->dp_size, g->tp_size);
        if (!why[0]) describe_difference(registry, grads, expected, why, sizeof why);
        double got = grad_reducer_global_norm(&r);
        if (!why[0] && fabs(got - norm) > 1e-12 * norm)
            snprintf(why, sizeof why, "step %d: global norm %.17g, want %.17g", step, got, norm);
    }
    // Traffic: every bucket once per step over dp, every partial tensor once per step over tp.
    double dp_bytes = 0.0, tp_bytes = 0.0;
    long tp_calls = 0;
    for (int b = 0; b < r.bucket_count; b++)
        dp_bytes += STEPS * traffic_all_reduce_bytes((double)(r.buckets[b].end - r.buckets[b].begin) * 4, g->dp_size);
    for (int i = 0; i < registry->count; i++)
        if (registry->items[i].grad_partial_over_tp && g->tp_size > 1) {
            tp_bytes += STEPS * traffic_all_reduce_bytes((double)registry->items[i].local_count * 4, g->tp_size);
            tp_calls += STEPS;
        }
    double whole = STEPS * traffic_all_reduce_bytes((double)registry->total * 4, g->dp_size);
    long dp_calls = g->dp_size > 1 ? STEPS * r.bucket_count : 0;
    if (!why[0] && (traffic.calls[TRAFFIC_DP_ALL_REDUCE] != dp_calls ||
                    fabs(traffic.bytes[TRAFFIC_DP_ALL_REDUCE] - dp_bytes) > 1e-9 * whole ||
                    fabs(traffic.bytes[TRAFFIC_DP_ALL_REDUCE] - whole) > 1e-9 * whole))
        snprintf(why, sizeof why, "dp all-reduce: %ld calls, %.0f bytes; want %ld, %.0f", traffic.calls[TRAFFIC_DP_ALL_REDUCE],
                 traffic.bytes[TRAFFIC_DP_ALL_REDUCE], dp_calls, whole);
    if (!why[0] && (traffic.calls[TRAFFIC_TP_GRADIENTS] != tp_calls || traffic.bytes[TRAFFIC_TP_GRADIENTS] != tp_bytes))
        snprintf(why, sizeof why, "tp gradients: %ld calls, %.0f bytes; want %ld, %.0f",
                 traffic.calls[TRAFFIC_TP_GRADIENTS], traffic.bytes[TRAFFIC_TP_GRADIENTS], tp_calls, tp_bytes);
    if (!why[0] && strcmp(size_name, "tiny") == 0 && r.bucket_count != registry->count)
        snprintf(why, sizeof why, "tiny buckets: %d buckets for %d tensors", r.bucket_count, registry->count);
    if (!why[0] && strcmp(size_name, "whole buffer") == 0 && r.bucket_count != 1)
        snprintf(why, sizeof why, "one bucket expected, got %d", r.bucket_count);
    char name[160];
    snprintf(name, sizeof name, "%s, bucket size %s (%d buckets), %s: sums exact, norm, traffic", g->label, size_name,
             r.bucket_count, ORDER_NAMES[order]);
    collective_report(name, why);
    grad_reducer_free(&r);
    free(grads);
    free(expected);
}

// 3 steps of ZeRO-1 (moments partitioned over dp, step, all-gather) against the whole
// optimizer on the same reduced gradients: bit-exact parameters and moments.
static void test_zero(const grid *g, const param_registry *registry) {
    enum { STEPS = 3 };
    size_t bytes = registry->total * sizeof(float);
    float *grads = xaligned_alloc(bytes), *params = xaligned_alloc(bytes), *reference = xaligned_alloc(bytes);
    params_initialize(registry, params, 5);
    memcpy(reference, params, bytes);
    moment_range *ranges = xmalloc((size_t)g->dp_size * sizeof *ranges);
    zero_partition_all(registry, g->dp_size, ranges);
    zero_gather gather;
    zero_gather_init(&gather, ranges, g->dp_size);
    adamw_state sharded, whole;
    optimizer_allocate_range(&sharded, registry, ranges[g->dp_rank]);
    optimizer_allocate(&whole, registry);
    decon_config c;
    optimizer_config(&c);
    traffic_counter traffic;
    traffic_reset(&traffic);
    grad_reducer r;
    grad_reducer_init(&r, registry, grads, g->data, g->tensor, 3e-4, &traffic);
    char why[256] = "";
    for (int step = 1; step <= STEPS; step++) {
        for (int i = 0; i < registry->count; i++) fill_tensor(registry, i, grads, step, g->dp_rank, g->tp_rank);
        grad_reducer_finish(&r);
        double norm = grad_reducer_global_norm(&r), lr = 1e-2 * step;
        optimizer_step(&sharded, registry, params, grads, &c, lr, norm, step);
        zero_all_gather_params(params, &gather, g->data, &traffic);
        optimizer_step(&whole, registry, reference, grads, &c, lr, norm, step);
        if (!why[0]) describe_difference(registry, params, reference, why, sizeof why);
    }
    size_t begin = sharded.range.begin;
    if (!why[0] && (memcmp(sharded.m, whole.m + begin, sharded.count * sizeof(float)) != 0 ||
                    memcmp(sharded.v, whole.v + begin, sharded.count * sizeof(float)) != 0))
        snprintf(why, sizeof why, "moments of [%zu, %zu) differ", begin, sharded.range.end);
    double want = STEPS * traffic_all_gather_bytes((double)registry->total * 4, g->dp_size);
    if (!why[0] && (traffic.calls[TRAFFIC_DP_ALL_GATHER] != STEPS ||
                    fabs(traffic.bytes[TRAFFIC_DP_ALL_GATHER] - want) > 1e-9 * want))
        snprintf(why, sizeof why, "dp all-gather: %ld calls, %.0f bytes; want %d, %.0f",
                 traffic.calls[TRAFFIC_DP_ALL_GATHER], traffic.bytes[TRAFFIC_DP_ALL_GATHER], STEPS, want);
    char name[160];
    snprintf(name, sizeof name, "%s: 3 ZeRO-1 steps equal the unpartitioned optimizer bit for bit", g->label);
    collective_report(name, why);
    grad_reducer_free(&r);
    optimizer_free(&sharded);
    optimizer_free(&whole);
    free(ranges);
    zero_gather_free(&gather);
    free(grads);
    free(params);
    free(reference);
}

static int child_main(void) {
    const int tp_sizes[] = {1, 2};
    const double megabytes[] = {1e-9, 3e-4, 0};
    const char *const size_names[] = {"tiny", "medium", "whole buffer"};
    for (int t = 0; t < 2; t++) {
        if (world_size % tp_sizes[t] != 0) continue;
        grid g;
        grid_create(&g, tp_sizes[t]);
        param_registry registry;
        build_registry(&registry, g.tp_rank, g.tp_size);
        for (int s = 0; s < 3; s++)
            for (int order = ORDER_BACKWARD; order <= ORDER_SCRAMBLED; order++)
                test_reduce_case(&g, &registry, megabytes[s], size_names[s], (ready_order)order);
        if (g.dp_size > 1) test_zero(&g, &registry);
        params_free(&registry);
        grid_free(&g);
    }
    return testing_exit_code();
}

// ---------------------------------------------------------------------------------------
// Parent: launching the children.

// Runs `timeout 120 mpirun --oversubscribe -np ranks <self> --child`, capturing its
// stdout and stderr.
static child_result run_mpirun(int ranks) {
    char count[16];
    snprintf(count, sizeof count, "%d", ranks);
    return child_run((const char *[]){"timeout", "-k", "5", "120", "mpirun", "--oversubscribe", "-np", count, self_path,
                                      "--child", NULL},
                     CHILD_STDOUT | CHILD_STDERR);
}

static void test_children(int ranks, int expected_lines) {
    child_result result = run_mpirun(ranks);
    char *output = result.output;
    int status = result.status;
    int child_passes = 0, child_failures = 0;
    for (char *line = strtok(output, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "PASS ", 5) == 0) {
            child_passes++;
            passes++;
            printf("%s\n", line);
        } else if (strncmp(line, "FAIL ", 5) == 0) {
            child_failures++;
            testing_failures++;
            printf("%s\n", line);
        } else {
            printf("    np%d: %s\n", ranks, line);
        }
    }
    fflush(stdout);
    char why[256] = "", name[96];
    if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && child_failures == 0))
        snprintf(why, sizeof why, "mpirun ended with status %d%s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                 WIFEXITED(status) && WEXITSTATUS(status) == 124 ? " (timed out: a hang)" : "");
    else if (child_passes + child_failures != expected_lines)
        snprintf(why, sizeof why, "%d result lines, want %d", child_passes + child_failures, expected_lines);
    snprintf(name, sizeof name, "mpirun -np %d ran to completion with every check reported", ranks);
    report(!why[0], name, why);
}

int main(int argc, char **argv) {
    child_keep_environment();  // before MPI_Init adds to it

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (world_size > 1) log_set_rank(world_rank, world_size);
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) {
        int code = child_main();
        MPI_Finalize();
        return code;
    }
    ssize_t length = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    self_path[length > 0 ? length : 0] = '\0';

    test_partitions();
    test_ranged_optimizer();
    test_single_rank_reducer();
    // Lines per child: 9 reduction cases per grid, plus ZeRO where dp > 1.
    test_children(2, 9 + 1 + 9);      // dp2 x tp1 (+ZeRO), dp1 x tp2
    test_children(4, 9 + 1 + 9 + 1);  // dp4 x tp1 (+ZeRO), dp2 x tp2 (+ZeRO)

    printf("%d passed, %d failed\n", passes, testing_failures);
    MPI_Finalize();
    return testing_exit_code();
}
