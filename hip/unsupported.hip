// The ops only the Taylor mixers use (approx, approx-diag: training and their decode
// states) have no GPU kernels in part 1. Those mixers are refused when the
// configuration is checked (ops_backend_refuses, runtime.hip: layer_plan_build stops with
// one line naming the variant); these entry points exist so that the binary links, and
// stop with the same kind of line should anything reach them. The size functions
// (feature count, chunk, decode state floats) are plain arithmetic and answer as the CPU
// backend does (test_gpu_ops compares them).
#include "hip/backend.h"

static __attribute__((noreturn)) void refused(const char *op) {
    fatal("the %s build has no kernel for %s (an approx or approx-diag op): run that variant with "
          "the CPU build", GPU_PLATFORM_NAME, op);
}

extern "C" {

int taylor_feature_count(int head_dim) { return 1 + head_dim + head_dim * (head_dim + 1) / 2; }
int taylor_attention_chunk_size(void) { return 64; }

void taylor_attention_forward(float *, float *, const float *, const float *, const float *, int, int, int, int, int,
                              float) {
    refused("taylor_attention_forward");
}
void taylor_attention_backward(float *, float *, float *, const float *, const float *, const float *, const float *,
                               const float *, const float *, int, int, int, int, int, float) {
    refused("taylor_attention_backward");
}
void taylor_attention_quadratic_probabilities(float *, const float *, const float *, int, int, int, int, float) {
    refused("taylor_attention_quadratic_probabilities");
}
void taylor_attention_quadratic_forward(float *, const float *, const float *, const float *, int, int, int, int, int,
                                        float) {
    refused("taylor_attention_quadratic_forward");
}
void taylor_attention_quadratic_backward(float *, float *, float *, const float *, const float *, const float *,
                                         const float *, int, int, int, int, int, float) {
    refused("taylor_attention_quadratic_backward");
}

void diag_attention_forward(float *, const float *, const float *, const float *, int, int, int, int, int, float, float,
                            float) {
    refused("diag_attention_forward");
}
void diag_attention_backward(float *, float *, float *, const float *, const float *, const float *, const float *, int,
                             int, int, int, int, float, float, float) {
    refused("diag_attention_backward");
}
void diag_attention_quadratic_probabilities(float *, const float *, const float *, int, int, int, int, float, float,
                                            float) {
    refused("diag_attention_quadratic_probabilities");
}
void diag_attention_quadratic_forward(float *, const float *, const float *, const float *, int, int, int, int, int,
                                      float, float, float) {
    refused("diag_attention_quadratic_forward");
}
void diag_attention_quadratic_backward(float *, float *, float *, const float *, const float *, const float *,
                                       const float *, int, int, int, int, int, float, float, float) {
    refused("diag_attention_quadratic_backward");
}

size_t taylor_decode_state_floats(int head_dim) { return (size_t)taylor_feature_count(head_dim) * (head_dim + 1); }
void taylor_state_update(float *, size_t, const float *, const float *, int, int, int, int, float) {
    refused("taylor_state_update");
}
void taylor_state_read(float *, const float *, size_t, const float *, int, int, int, int, float) {
    refused("taylor_state_read");
}

size_t diag_decode_state_floats(int head_dim) { return 2 * (size_t)head_dim * head_dim + 3 * (size_t)head_dim; }
void diag_state_update(float *, size_t, const float *, const float *, int, int, int, int) {
    refused("diag_state_update");
}
void diag_state_read(float *, const float *, size_t, const float *, const int *, int, int, int, int, float, float,
                     float) {
    refused("diag_state_read");
}

}  // extern "C"
