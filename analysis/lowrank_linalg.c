#include "analysis/lowrank_linalg.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

// LAPACK (Fortran interface; Debian ships no C header). CHARACTER arguments carry
// gfortran's hidden lengths at the end (analysis/svd.c).
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_length, size_t uplo_length);

void lr_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double *a, const double *b, double beta,
             double *c) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
                ta ? m : k, b, tb ? k : n, beta, c, n);
}

int lr_symmetric_eigen(int n, const double *a, double *values, double *vectors) {
    // A symmetric row-major matrix is its own column-major transpose; dsyevd returns the
    // eigenvectors as columns of a column-major matrix, i.e. rows of the row-major one.
    double *work_a = xmalloc((size_t)n * (size_t)n * sizeof *work_a), *ascending = xmalloc((size_t)n * sizeof *ascending);
    memcpy(work_a, a, (size_t)n * (size_t)n * sizeof *work_a);
    int lwork = -1, liwork = -1, info = 0, iquery = 0;
    double query = 0.0;
    dsyevd_("V", "U", &n, work_a, &n, ascending, &query, &lwork, &iquery, &liwork, &info, 1, 1);
    lwork = (int)query + 1;
    liwork = iquery + 1;
    double *work = xmalloc((size_t)lwork * sizeof *work);
    int *iwork = xmalloc((size_t)liwork * sizeof *iwork);
    if (info == 0) dsyevd_("V", "U", &n, work_a, &n, ascending, work, &lwork, iwork, &liwork, &info, 1, 1);
    if (info == 0) {
        for (int i = 0; i < n; i++) {
            int from = n - 1 - i;  // descending
            values[i] = ascending[from];
            for (int row = 0; row < n; row++) vectors[(size_t)row * n + i] = work_a[(size_t)from * n + row];
        }
    }
    free(work);
    free(iwork);
    free(work_a);
    free(ascending);
    return info;
}

// a = V diag(f(lambda)) V^T for the two functions below.
static void lr_spectral(int n, const double *values, const double *vectors, double power, double floor, double *out) {
    double *scaled = xmalloc((size_t)n * (size_t)n * sizeof *scaled);
    for (int row = 0; row < n; row++)
        for (int i = 0; i < n; i++) {
            double v = values[i] > floor ? pow(values[i], power) : 0.0;
            scaled[(size_t)row * n + i] = vectors[(size_t)row * n + i] * v;
        }
    lr_gemm(false, true, n, n, n, 1.0, scaled, vectors, 0.0, out);
    free(scaled);
}

int lr_psd_roots(int n, const double *a, double *root, double *inverse_root) {
    double *values = xmalloc((size_t)n * sizeof *values), *vectors = xmalloc((size_t)n * (size_t)n * sizeof *vectors);
    int info = lr_symmetric_eigen(n, a, values, vectors);
    if (info == 0) {
        double floor = 1e-12 * fmax(values[0], 0.0);
        if (root) lr_spectral(n, values, vectors, 0.5, floor, root);
        if (inverse_root) lr_spectral(n, values, vectors, -0.5, floor, inverse_root);
    }
    free(values);
    free(vectors);
    return info;
}

int lr_psd_solve(int n, int k, const double *a, const double *b, double *x) {
    double *values = xmalloc((size_t)n * sizeof *values), *vectors = xmalloc((size_t)n * (size_t)n * sizeof *vectors);
    int info = lr_symmetric_eigen(n, a, values, vectors);
    if (info == 0) {
        double floor = 1e-12 * fmax(values[0], 0.0);
        double *inverse = xmalloc((size_t)n * (size_t)n * sizeof *inverse);
        lr_spectral(n, values, vectors, -1.0, floor, inverse);
        lr_gemm(false, false, n, k, n, 1.0, inverse, b, 0.0, x);
        free(inverse);
    }
    free(values);
    free(vectors);
    return info;
}

double lr_trace_product(int n, int k, const double *a, const double *b) {
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) sum += a[(size_t)i * k + j] * b[(size_t)j * n + i];
    return sum;
}
