// Private to ops/cpu: the backend's one workspace (ops.h, "backend memory"), from which
// an op takes its per-call scratch (per-thread tiles, running states) instead of
// allocating: per_thread floats for each of omp_get_max_threads() threads, thread t's
// slice at base + t * per_thread. The ops run one at a time, so they share it.
#pragma once
#include <stddef.h>

float *ops_workspace_take(size_t per_thread);

// Floats per thread each kernel takes for these shapes (the most of its forward and
// backward); ops_attention_workspace_floats (ops.h) is their maximum times the threads.
size_t attention_workspace_per_thread(int seq_len, int heads, int kv_heads, int head_dim);
size_t taylor_attention_workspace_per_thread(int seq_len, int heads, int kv_heads, int head_dim);
size_t diag_attention_workspace_per_thread(int seq_len, int heads, int kv_heads, int head_dim);
size_t nonapx_attention_workspace_per_thread(int head_dim);
