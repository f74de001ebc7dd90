// The CPU backend's memory (ops.h, "backend memory"): tensors live in host memory, so
// the host copies are plain copies (nothing at all when both sides are one buffer), and
// the workspace is one host buffer, reserved before the step loop and grown only when
// an op needs more than was reserved (a model that reserved too little: the allocation
// test of tests/unit/test_parallel_model.c sees the growth).
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "ops/cpu/workspace.h"
#include "ops/ops.h"

void *ops_alloc(size_t bytes) { return xaligned_alloc(bytes); }

void ops_free(void *tensor) { free(tensor); }

void ops_to_host(void *host, const void *tensor, size_t bytes) {
    if (host != tensor) memcpy(host, tensor, bytes);
}

void ops_from_host(void *tensor, const void *host, size_t bytes) {
    if (tensor != host) memcpy(tensor, host, bytes);
}

static float *workspace;
static size_t workspace_floats;

void ops_workspace_reserve(size_t floats) {
    if (floats <= workspace_floats) return;
    free(workspace);
    workspace = ops_alloc(floats * sizeof(float));
    workspace_floats = floats;
}

size_t ops_workspace_reserved(void) { return workspace_floats; }

float *ops_workspace_take(size_t per_thread) {
    ops_workspace_reserve(per_thread * (size_t)omp_get_max_threads());
    return workspace;
}

size_t ops_attention_workspace_floats(int seq_len, int heads, int kv_heads, int head_dim) {
    size_t most = attention_workspace_per_thread(seq_len, heads, kv_heads, head_dim);
    size_t taylor = taylor_attention_workspace_per_thread(seq_len, heads, kv_heads, head_dim);
    size_t diag = diag_attention_workspace_per_thread(seq_len, heads, kv_heads, head_dim);
    size_t nonapx = nonapx_attention_workspace_per_thread(head_dim);
    if (taylor > most) most = taylor;
    if (diag > most) most = diag;
    if (nonapx > most) most = nonapx;
    return most * (size_t)omp_get_max_threads();
}
