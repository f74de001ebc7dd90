#include "analysis/svd.h"

#include <math.h>
#include <mpi.h>
#include <stddef.h>
#include <string.h>

#include "core/errors.h"

// BLACS (C interface) and ScaLAPACK / LAPACK (Fortran interface; Debian ships no C
// header). CHARACTER arguments carry gfortran's hidden length arguments (size_t, at the
// end): leaving them out is undefined behaviour that breaks under optimisation.
void Cblacs_pinfo(int *rank, int *processes);
void Cblacs_get(int context, int what, int *value);
void Cblacs_gridinit(int *context, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int context, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int context);
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb, const int *irsrc,
               const int *icsrc, const int *context, const int *lld, int *info);
void pdgemr2d_(const int *m, const int *n, const double *a, const int *ia, const int *ja, const int *desca, double *b,
               const int *ib, const int *jb, const int *descb, const int *context);
void pdgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *ia,
              const int *ja, const int *desca, double *s, double *u, const int *iu, const int *ju, const int *descu,
              double *vt, const int *ivt, const int *jvt, const int *descvt, double *work, const int *lwork, int *info,
              size_t jobu_length, size_t jobvt_length);
void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda, double *s,
             double *u, const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *info,
             size_t jobu_length, size_t jobvt_length);
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
             int *info);

enum { DESCRIPTOR_LENGTH = 9, DEFAULT_BLOCK = 64 };

void svd_grid_init(svd_grid *grid) {
    memset(grid, 0, sizeof *grid);
    MPI_Comm_rank(MPI_COMM_WORLD, &grid->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &grid->world);
    int nprow = (int)sqrt((double)grid->world);
    while (nprow > 1 && grid->world % nprow != 0) nprow--;
    if (nprow < 1) nprow = 1;
    Cblacs_get(-1, 0, &grid->context);
    Cblacs_gridinit(&grid->context, "Row", nprow, grid->world / nprow);
    Cblacs_gridinfo(grid->context, &grid->nprow, &grid->npcol, &grid->myrow, &grid->mycol);
    // Every process takes part in creating the 1 x 1 grid; only rank 0 is in it.
    Cblacs_get(-1, 0, &grid->root_context);
    Cblacs_gridinit(&grid->root_context, "Row", 1, 1);
    if (grid->rank != 0) grid->root_context = -1;
}

void svd_grid_free(svd_grid *grid) {
    if (grid->root_context >= 0) Cblacs_gridexit(grid->root_context);
    Cblacs_gridexit(grid->context);
    grid->context = grid->root_context = -1;
}

static int pick_block(const svd_grid *grid, int m, int n, int nb) {
    if (nb > 0) return nb;
    int largest = m > n ? m : n;
    int spread = grid->nprow > grid->npcol ? grid->nprow : grid->npcol;
    int block = (largest + spread - 1) / spread;
    if (block > DEFAULT_BLOCK) block = DEFAULT_BLOCK;
    return block < 1 ? 1 : block;
}

int svd_distributed(const svd_grid *grid, int m, int n, const double *a, int nb, double *s) {
    const int zero = 0, one = 1;
    int info = 0;
    nb = pick_block(grid, m, n, nb);
    // The whole matrix on rank 0 as one block of the 1 x 1 grid.
    int root_descriptor[DESCRIPTOR_LENGTH] = {0};
    root_descriptor[1] = -1;
    if (grid->root_context >= 0) {
        int lld = m > 1 ? m : 1;
        descinit_(root_descriptor, &m, &n, &m, &n, &zero, &zero, &grid->root_context, &lld, &info);
        if (info != 0) fatal("internal: descinit of the root matrix failed (info %d)", info);
    }
    // This rank's block-cyclic piece.
    int local_rows = numroc_(&m, &nb, &grid->myrow, &zero, &grid->nprow);
    int local_cols = numroc_(&n, &nb, &grid->mycol, &zero, &grid->npcol);
    int lld = local_rows > 1 ? local_rows : 1;
    int descriptor[DESCRIPTOR_LENGTH];
    descinit_(descriptor, &m, &n, &nb, &nb, &zero, &zero, &grid->context, &lld, &info);
    if (info != 0) fatal("internal: descinit of the distributed matrix failed (info %d)", info);
    double *local = xcalloc((size_t)lld * (size_t)(local_cols > 1 ? local_cols : 1), sizeof(double));
    pdgemr2d_(&m, &n, a, &one, &one, root_descriptor, local, &one, &one, descriptor, &grid->context);

    // Workspace query, then the decomposition. U and VT are not referenced for 'N'.
    double query = 0.0, unused = 0.0;
    int lwork = -1;
    pdgesvd_("N", "N", &m, &n, local, &one, &one, descriptor, s, &unused, &one, &one, descriptor, &unused, &one, &one,
             descriptor, &query, &lwork, &info, 1, 1);
    if (info == 0) {
        lwork = (int)query + 1;
        double *work = xmalloc((size_t)lwork * sizeof(double));
        pdgesvd_("N", "N", &m, &n, local, &one, &one, descriptor, s, &unused, &one, &one, descriptor, &unused, &one,
                 &one, descriptor, work, &lwork, &info, 1, 1);
        free(work);
    }
    free(local);
    return info;
}

int svd_lapack(int m, int n, const double *a, double *s) {
    int lda = m > 1 ? m : 1, one = 1, info = 0, lwork = -1;
    double *copy = xmalloc((size_t)lda * (size_t)n * sizeof(double) + sizeof(double));
    memcpy(copy, a, (size_t)m * (size_t)n * sizeof(double));
    double query = 0.0, unused = 0.0;
    dgesvd_("N", "N", &m, &n, copy, &lda, s, &unused, &one, &unused, &one, &query, &lwork, &info, 1, 1);
    if (info == 0) {
        lwork = (int)query + 1;
        double *work = xmalloc((size_t)lwork * sizeof(double));
        dgesvd_("N", "N", &m, &n, copy, &lda, s, &unused, &one, &unused, &one, work, &lwork, &info, 1, 1);
        free(work);
    }
    free(copy);
    return info;
}

// Thin QR of a d x r matrix in place; the r x r upper triangle R goes to r_out (column-major).
static int qr_factor(int d, int r, const double *x, double *r_out) {
    int info = 0, lwork = -1;
    double *copy = xmalloc((size_t)d * (size_t)r * sizeof(double));
    memcpy(copy, x, (size_t)d * (size_t)r * sizeof(double));
    double *tau = xmalloc((size_t)r * sizeof(double));
    double query = 0.0;
    dgeqrf_(&d, &r, copy, &d, tau, &query, &lwork, &info);
    if (info == 0) {
        lwork = (int)query + 1;
        double *work = xmalloc((size_t)lwork * sizeof(double));
        dgeqrf_(&d, &r, copy, &d, tau, work, &lwork, &info);
        free(work);
    }
    for (int c = 0; c < r; c++)
        for (int row = 0; row < r; row++) r_out[(size_t)c * r + row] = row <= c ? copy[(size_t)c * d + row] : 0.0;
    free(tau);
    free(copy);
    return info;
}

int svd_product_core(int d, int r, const double *x, const double *y, double *s) {
    if (r > d) {  // a head wider than the model (d_h > d): M itself is the smaller matrix
        double *m = xmalloc((size_t)d * (size_t)d * sizeof(double));
        for (int j = 0; j < d; j++)
            for (int i = 0; i < d; i++) {
                double sum = 0.0;
                for (int k = 0; k < r; k++) sum += x[(size_t)k * d + i] * y[(size_t)k * d + j];
                m[(size_t)j * d + i] = sum;
            }
        int info = svd_lapack(d, d, m, s);
        for (int i = d; i < r; i++) s[i] = 0.0;
        free(m);
        return info;
    }
    size_t rr = (size_t)r * (size_t)r;
    double *r1 = xmalloc(rr * sizeof(double)), *r2 = xmalloc(rr * sizeof(double)), *core = xmalloc(rr * sizeof(double));
    int info = qr_factor(d, r, x, r1);
    if (info == 0) info = qr_factor(d, r, y, r2);
    if (info == 0) {
        // core = R1 R2^T: core(i, j) = sum_k R1(i, k) R2(j, k), k >= max(i, j).
        for (int j = 0; j < r; j++)
            for (int i = 0; i < r; i++) {
                double sum = 0.0;
                for (int k = i > j ? i : j; k < r; k++) sum += r1[(size_t)k * r + i] * r2[(size_t)k * r + j];
                core[(size_t)j * r + i] = sum;
            }
        info = svd_lapack(r, r, core, s);
    }
    free(r1);
    free(r2);
    free(core);
    return info;
}
