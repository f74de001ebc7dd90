// Runtime settings of the CPU backend: how many threads OpenMP loops and OpenBLAS use.
// Ops never call OpenBLAS from inside an OpenMP parallel region, so the two pools take
// turns and each may use every core.
#include <cblas.h>
#include <omp.h>

#include "ops/ops.h"

void ops_set_threads(int threads) {
    if (threads < 1) threads = 1;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

const char *ops_blas_core_name(void) { return openblas_get_corename(); }

const char *ops_backend_name(void) { return "cpu"; }

bool ops_set_precision(bool bf16) { return !bf16; }

const char *ops_backend_refuses(const char *mixer) {
    (void)mixer;
    return NULL;
}
