// Runtime settings of the GPU backend, and what it refuses to run.
#include <string.h>

#include "hip/backend.h"
#include "hip/blas.h"

static bool bf16;

// The host threads do not compute on a GPU build: nothing to set.
void ops_set_threads(int threads) { (void)threads; }

const char *ops_blas_core_name(void) { return blas_name(); }

const char *ops_backend_name(void) { return GPU_PLATFORM_NAME; }

bool ops_set_precision(bool use_bf16) {
    bf16 = use_bf16;
    return true;
}

bool gpu_bf16(void) { return bf16; }

// Part 1 runs the standard model and the mixers built from the same ops (softmax
// attention, the shared map, nonapx's scan, per-head embeddings, linear layers). The
// Taylor mixers' ops (approx, approx-diag) have no GPU kernels yet: they are refused here, at configuration time,
// with this reason, and their op entry points (unsupported.hip) stop with the same.
const char *ops_backend_refuses(const char *mixer) {
    static const char *const refused[] = {"approx", "approx-diag"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strcmp(mixer, refused[i]) == 0)
            return "has no GPU kernels yet (GPU backend part 1 runs standard, staticembqk, "
                   "rndembqk, fixedseqqk, nonapx, mhe-add, mhe-mul and mlp); train it with the CPU build";
    return NULL;
}
