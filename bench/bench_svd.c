// Singular values of an n x n matrix through ScaLAPACK, as decon-analyze computes them for
// each attention head: rank 0 holds the matrix, pdgemr2d spreads it block-cyclically over
// the BLACS grid of every rank, pdgesvd (JOBU = JOBVT = 'N') reduces it. Prints the time of
// the whole call (best of --reps) and, at one rank, LAPACK's dgesvd for reference.
//
//   build/bench/bench_svd [--n 2048] [--reps 2] [--block 64]
//   mpirun -np 4 build/bench/bench_svd --n 2048       (bench/run_all.sh runs np = 1, 2, 4)
//
// Threads: each rank's OpenBLAS uses OMP_NUM_THREADS (run_all.sh sets 1, so np counts cores).
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/svd.h"
#include "core/errors.h"
#include "core/rng.h"
#include "par/program.h"

int main(int argc, char **argv) {
    int rank, world;
    program_start(&argc, &argv, &rank, &world);
    int n = 2048, reps = 2, block = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--n") == 0) n = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--block") == 0) block = atoi(argv[i + 1]);
        else fatal("unknown option %s; usage: bench_svd [--n 2048] [--reps 2] [--block 64]", argv[i]);
    }
    if (n < 1 || reps < 1 || block < 1) fatal("--n, --reps and --block must be positive");

    // A causal attention-like matrix: softmax rows of Gaussian scores (rank 0 only).
    double *a = NULL;
    if (rank == 0) {
        a = xmalloc((size_t)n * (size_t)n * sizeof(double));
        for (int i = 0; i < n; i++) {
            double *row = a + (size_t)i * n, max = -INFINITY, sum = 0.0;
            for (int t = 0; t <= i; t++) max = fmax(max, row[t] = 2.0 * rng_normal(3, (uint64_t)i, (uint64_t)t));
            for (int t = 0; t <= i; t++) sum += row[t] = exp(row[t] - max);
            for (int t = 0; t <= i; t++) row[t] /= sum;
            for (int t = i + 1; t < n; t++) row[t] = 0.0;
        }
    }
    double *s = xmalloc((size_t)n * sizeof(double));
    svd_grid grid;
    svd_grid_init(&grid);
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        int status = svd_distributed(&grid, n, n, a, block, s);
        double seconds = MPI_Wtime() - start, slowest = 0.0;
        MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (status != 0) fatal("pdgesvd failed (info %d)", status);
        best = fmin(best, slowest);
    }
    if (rank == 0)
        printf("svd %d x %d  np %d (grid %d x %d, block %d)  pdgesvd %8.3f s   s_max %.6f  s_min %.3g\n", n, n, world,
               grid.nprow, grid.npcol, block, best, s[0], s[n - 1]);
    svd_grid_free(&grid);
    if (rank == 0 && world == 1) {
        double *reference = xmalloc((size_t)n * sizeof(double));
        double start = MPI_Wtime();
        int status = svd_lapack(n, n, a, reference);
        double seconds = MPI_Wtime() - start, error = 0.0;
        for (int i = 0; i < n; i++) error = fmax(error, fabs(reference[i] - s[i]) / s[0]);
        printf("svd %d x %d  LAPACK dgesvd (one process)          %8.3f s   max |ds| / s_max vs pdgesvd %.2g%s\n", n,
               n, seconds, error, status ? " (dgesvd failed)" : "");
        free(reference);
    }
    free(a);
    free(s);
    MPI_Finalize();
    return 0;
}
