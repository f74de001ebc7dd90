// Small dense double-precision linear algebra for the low-rank closed forms
// (analysis/lowrank_a3.c): row-major matrices, LAPACK's dsyevd for symmetric eigen-
// decompositions, BLAS dgemm for products. The matrices are d_h x d_h, (d+1) x (d+1) or
// m' x m' per layer, small enough for one process (docs/design.md "Low-rank compression").
#pragma once
#include <stdbool.h>

// c[m x n] = alpha op(a) op(b) + beta c, op = transpose when ta / tb; row-major, dense.
void lr_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double *a, const double *b, double beta,
             double *c);

// Eigen-decomposition of the symmetric n x n matrix a: values[n] DESCENDING and
// vectors[n x n] row-major with eigenvector i in COLUMN i. Returns LAPACK's info (0 = ok).
int lr_symmetric_eigen(int n, const double *a, double *values, double *vectors);

// For a symmetric positive semi-definite a: root = a^(1/2) and inverse_root = the
// pseudo-inverse of a^(1/2) (eigenvalues <= 1e-12 max treated as 0). Either may be NULL.
int lr_psd_roots(int n, const double *a, double *root, double *inverse_root);

// x[n x k] = a^+ b for symmetric positive semi-definite a[n x n] (pseudo-inverse, as above).
int lr_psd_solve(int n, int k, const double *a, const double *b, double *x);

// trace(a b) for a [n x k], b [k x n].
double lr_trace_product(int n, int k, const double *a, const double *b);
