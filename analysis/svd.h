// Singular values: distributed through ScaLAPACK (pdgesvd on a 2-D BLACS grid over every
// MPI rank, block-cyclic) and single-process through LAPACK (dgesvd), plus the spectrum of
// a low-rank product X Y^T through its small core (QR of both factors).
//
// Matrices are column-major. A row-major L x L attention matrix read as column-major is
// A^T, which has the same singular values, so callers pass recordings as they are.
#pragma once
#include <stdbool.h>

typedef struct {
    int context;          // BLACS context of the nprow x npcol grid over all ranks
    int root_context;     // 1 x 1 grid holding rank 0 (-1 on every other rank)
    int nprow, npcol, myrow, mycol;
    int rank, world;
} svd_grid;

// Collective over MPI_COMM_WORLD (BLACS' default system context): the most square grid
// nprow x npcol = world with nprow <= npcol.
void svd_grid_init(svd_grid *grid);
void svd_grid_free(svd_grid *grid);   // collective; leaves MPI running

// Singular values (descending) of the m x n matrix `a` (column-major, leading dimension m)
// held on rank 0 (ignored elsewhere, may be NULL there): rank 0's matrix is redistributed
// block-cyclically (block nb x nb; nb <= 0 picks 64, capped at what spreads the matrix
// over the grid) with pdgemr2d, then pdgesvd (JOBU = JOBVT = 'N', workspace by query).
// s[min(m, n)] is filled on every rank. Collective. Returns pdgesvd's info (0 = success).
int svd_distributed(const svd_grid *grid, int m, int n, const double *a, int nb, double *s);

// The same through LAPACK's dgesvd on this process (a is not modified). Returns info.
int svd_lapack(int m, int n, const double *a, double *s);

// Singular values of M = X Y^T (d x d) where X and Y are d x r (column-major): with r <= d,
// X = Q1 R1 and Y = Q2 R2 (thin QR), M = Q1 (R1 R2^T) Q2^T, so the r possibly nonzero
// singular values of M are those of the r x r core R1 R2^T (the other d - r are 0); with
// r > d (a head size above the width, [model] head_dim) M's own d values, then r - d zeros.
// s has r entries. Returns 0 or the first nonzero LAPACK info.
int svd_product_core(int d, int r, const double *x, const double *y, double *s);
