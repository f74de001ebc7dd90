// decon-analyze's math: the indicators on hand-built matrices with known answers (1e-12),
// HEADDIV against a two-pass reference, min-max normalisation across two files, ScaLAPACK's
// pdgesvd against LAPACK's dgesvd (random, rectangular and rank-deficient matrices), the
// QR-core spectrum of a product against the explicit d x d SVD, and the rank measures on
// known spectra.
//
//   build/tests/test_analysis                 every check, one process (1 x 1 grid)
//   mpirun -np 4 build/tests/test_analysis --svd-only
//                                             only the distributed SVD checks, on the grid
//                                             over every rank (tests/scripts/test_analyze.sh)
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <string.h>

#include "analysis/indicators.h"
#include "analysis/svd.h"
#include "core/errors.h"
#include "core/rng.h"
#include "testing.h"

static const double TOL = 1e-12;
static int rank = 0, world = 1;

// PASS/FAIL from rank 0 only (every rank computes the same).
DECON_PRINTF(3, 4) static void check(int ok, const char *name, const char *format, ...) {
    char why[512] = "";
    va_list args;
    va_start(args, format);
    vsnprintf(why, sizeof why, format, args);
    va_end(args);
    int all = ok;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0) testing_report(all, name, "%s", why);
    else if (!all) testing_failures++;
}

static double harmonic(int n) {
    double h = 0.0;
    for (int i = 1; i <= n; i++) h += 1.0 / i;
    return h;
}

typedef enum { UNIFORM, IDENTITY, FIRST, BANDED } pattern;

static double *make_pattern(pattern p, int L) {
    double *a = xcalloc((size_t)L * (size_t)L, sizeof(double));
    for (int i = 0; i < L; i++) {
        double *row = a + (size_t)i * L;
        if (p == UNIFORM) for (int t = 0; t <= i; t++) row[t] = 1.0 / (i + 1);
        else if (p == IDENTITY) row[i] = 1.0;
        else if (p == FIRST || i == 0) row[0] = 1.0;   // first token; banded row 0
        else row[i] = row[i - 1] = 0.5;                // banded
    }
    return a;
}

static int close_all(const double *got, const double *want, int n, double tol, int *worst) {
    for (int i = 0; i < n; i++) {
        if (isnan(want[i]) ? !isnan(got[i]) : !(fabs(got[i] - want[i]) <= tol)) {
            *worst = i;
            return 0;
        }
    }
    return 1;
}

static void check_indicators(const char *name, pattern p, int L, const double want[7]) {
    double *a = make_pattern(p, L);
    head_indicators x;
    indicators_head(&x, a, L);
    double got[7] = {x.entropy, x.conc, x.sink, x.locfoc[0], x.locfoc[1], x.locfoc[2], x.locfoc[3]};
    const char *fields[7] = {"entropy", "conc", "sink", "locfoc_0", "locfoc_1", "locfoc_2", "locfoc_3"};
    int worst = -1;
    int ok = close_all(got, want, 7, TOL, &worst) && fabs(x.row_sum_max_error) < TOL && x.negative_fraction == 0.0 &&
             x.upper_mass == 0.0;
    char label[128];
    snprintf(label, sizeof label, "indicators: %s (L = %d)", name, L);
    check(ok, label, "%s = %.17g, expected %.17g (row error %g)", worst >= 0 ? fields[worst] : "-",
          worst >= 0 ? got[worst] : 0.0, worst >= 0 ? want[worst] : 0.0, x.row_sum_max_error);
    free(a);
}

static void test_indicators(void) {
    for (int L = 1; L <= 33; L += 16) {
        // Uniform causal rows a_it = 1/(i+1): row entropy log(i+1); CONC^2 = sum 1/(i+1) = H_L.
        double log_factorial = 0.0;
        for (int i = 2; i <= L; i++) log_factorial += log((double)i);
        double HL = harmonic(L);
        double want[7] = {log_factorial / L, sqrt(HL), HL / L, NAN, NAN, NAN, NAN};
        for (int n = 0; n < 4; n++) want[3 + n] = L > n ? (HL - harmonic(n)) / (L - n) : NAN;
        check_indicators("uniform causal rows", UNIFORM, L, want);
        double identity[7] = {0.0, sqrt((double)L), 1.0 / L, 1.0, L > 1 ? 0.0 : NAN, L > 2 ? 0.0 : NAN, L > 3 ? 0.0 : NAN};
        check_indicators("identity", IDENTITY, L, identity);
        // All mass on token 1: A_{N,0} = 1 is the one term of LOCFOC_N (N >= 1).
        double first[7] = {0.0, sqrt((double)L), 1.0, 1.0 / L, NAN, NAN, NAN};
        for (int n = 1; n < 4; n++) first[3 + n] = L > n ? 1.0 / (L - n) : NAN;
        check_indicators("all mass on the first token", FIRST, L, first);
        // Banded: 1/2 on i and i-1 (row 0: 1 on itself).
        double banded[7] = {(L - 1) * log(2.0) / L, sqrt(1.0 + 0.5 * (L - 1)), (L > 1 ? 1.5 : 1.0) / L,
                            (1.0 + 0.5 * (L - 1)) / L, L > 1 ? 0.5 : NAN, L > 2 ? 0.0 : NAN, L > 3 ? 0.0 : NAN};
        check_indicators("banded (1/2 on i, i-1)", BANDED, L, banded);
    }

    // Rows that do not sum to 1, negative entries, mass above the diagonal: measured, not fixed.
    enum { L = 5 };
    double a[L * L] = {0};
    for (int i = 0; i < L; i++)
        for (int t = 0; t <= i; t++) a[i * L + t] = 3.0 / (i + 1);
    a[4 * L + 1] -= 1.0;   // 0.6 - 1 = -0.4 < 0: contributes 0 to the entropy
    a[4 * L + 2] += 1.0;   // row 4 still sums to 3
    a[0 * L + 3] = 0.25;   // above the diagonal: ignored except in upper_mass
    head_indicators x;
    indicators_head(&x, a, L);
    double entropy = 0.0;
    for (int i = 0; i < L; i++)
        for (int t = 0; t <= i; t++)
            if (a[i * L + t] > 0) entropy -= a[i * L + t] * log(a[i * L + t]);
    check(fabs(x.row_sum_mean - 3.0) < TOL && fabs(x.row_sum_max_error - 2.0) < TOL &&
              fabs(x.negative_fraction - 1.0 / 15.0) < TOL && fabs(x.upper_mass - 0.25) < TOL &&
              fabs(x.entropy - entropy / L) < TOL,
          "indicators: rows summing to 3 with a negative entry are flagged, entropy skips a <= 0",
          "row mean %g, max error %g, negative %g, upper %g, entropy %.17g vs %.17g", x.row_sum_mean,
          x.row_sum_max_error, x.negative_fraction, x.upper_mass, x.entropy, entropy / L);
}

static void test_headdiv(void) {
    enum { L = 9 };
    head_spread spread;
    head_spread_init(&spread, L);
    double *identity = make_pattern(IDENTITY, L), *first = make_pattern(FIRST, L), *uniform = make_pattern(UNIFORM, L);
    for (int h = 0; h < 3; h++) head_spread_add(&spread, uniform);
    check(fabs(head_spread_headdiv(&spread)) < TOL, "headdiv: identical heads give 0", "%g", head_spread_headdiv(&spread));
    // identity vs first token: std |a - b| / 2 = 1/2 on (i, i) and (i, 0) for i >= 1, 0 at (0, 0).
    head_spread_reset(&spread);
    head_spread_add(&spread, identity);
    head_spread_add(&spread, first);
    double want = 2.0 / (L * (L + 1.0)) * (L - 1);
    check(fabs(head_spread_headdiv(&spread) - want) < TOL, "headdiv: identity vs first token",
          "%.17g, expected %.17g", head_spread_headdiv(&spread), want);
    // Four random causal heads against a two-pass population std.
    enum { H = 4 };
    double *heads[H];
    head_spread_reset(&spread);
    for (int h = 0; h < H; h++) {
        heads[h] = xcalloc((size_t)L * L, sizeof(double));
        for (int i = 0; i < L; i++) {
            double sum = 0.0;
            for (int t = 0; t <= i; t++) {
                heads[h][i * L + t] = rng_uniform(7, (uint64_t)h, (uint64_t)i * L + (uint64_t)t);
                sum += heads[h][i * L + t];
            }
            for (int t = 0; t <= i; t++) heads[h][i * L + t] /= sum;
        }
        head_spread_add(&spread, heads[h]);
    }
    double total = 0.0;
    for (int i = 0; i < L; i++)
        for (int t = 0; t <= i; t++) {
            double mean = 0.0, var = 0.0;
            for (int h = 0; h < H; h++) mean += heads[h][i * L + t] / H;
            for (int h = 0; h < H; h++) var += (heads[h][i * L + t] - mean) * (heads[h][i * L + t] - mean) / H;
            total += sqrt(var);
        }
    want = 2.0 / (L * (L + 1.0)) * total;
    check(fabs(head_spread_headdiv(&spread) - want) < TOL, "headdiv: Welford equals the two-pass population std",
          "%.17g vs %.17g", head_spread_headdiv(&spread), want);
    for (int h = 0; h < H; h++) free(heads[h]);
    free(identity);
    free(first);
    free(uniform);
    head_spread_free(&spread);
}

static void test_normalisation(void) {
    // Two "files": layer values of file A {1, 3, NaN (mlp)} and file B {2, 5}; one range over all.
    const double values[5] = {1.0, 3.0, NAN, 2.0, 5.0};
    const double want[5] = {0.0, 0.5, NAN, 0.25, 1.0};
    double out[5], low, high;
    int n = minmax_normalise(out, values, NULL, 5, &low, &high);
    int worst = -1;
    check(n == 4 && low == 1.0 && high == 5.0 && close_all(out, want, 5, TOL, &worst),
          "normalise: min-max over the layers of two files (NaN excluded)", "n %d min %g max %g out[%d] = %g", n, low,
          high, worst, worst >= 0 ? out[worst] : 0.0);
    const int include[5] = {1, 1, 0, 1, 0};
    const double want_subset[5] = {0.0, 1.0, NAN, 0.5, NAN};
    n = minmax_normalise(out, values, include, 5, &low, &high);
    check(n == 3 && close_all(out, want_subset, 5, TOL, &worst), "normalise: only the included values define the range",
          "n %d out[%d] = %g", n, worst, worst >= 0 ? out[worst] : 0.0);
    const double same[3] = {0.7, 0.7 + 1e-17, 0.7};
    n = minmax_normalise(out, same, NULL, 3, &low, &high);
    check(n == 3 && out[0] == 0.0 && out[1] == 0.0 && out[2] == 0.0, "normalise: equal values (to rounding) give 0",
          "%g %g %g", out[0], out[1], out[2]);
}

static double relative_spectrum_error(const double *s, const double *reference, int n) {
    double worst = 0.0, scale = 0.0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(reference[i]));
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(s[i] - reference[i]));
    return worst / fmax(scale, 1e-300);
}

// A (m x n, column-major) = U diag(sigma) V^T from Householder reflections of random
// vectors, so its singular values are exactly sigma (up to rounding).
static double *matrix_with_spectrum(int m, int n, const double *sigma, uint64_t seed) {
    int k = m < n ? m : n;
    double *a = xcalloc((size_t)m * (size_t)n, sizeof(double));
    for (int i = 0; i < k; i++) a[(size_t)i * m + i] = sigma[i];
    for (int side = 0; side < 2; side++) {
        int size = side ? n : m;
        for (int r = 0; r < 3; r++) {
            double *v = xmalloc((size_t)size * sizeof(double)), norm = 0.0;
            for (int i = 0; i < size; i++) {
                v[i] = rng_normal(seed, (uint64_t)side * 10 + (uint64_t)r, (uint64_t)i);
                norm += v[i] * v[i];
            }
            for (int i = 0; i < size; i++) v[i] /= sqrt(norm);
            if (!side)   // A <- (I - 2 v v^T) A
                for (int c = 0; c < n; c++) {
                    double dot = 0.0;
                    for (int i = 0; i < m; i++) dot += v[i] * a[(size_t)c * m + i];
                    for (int i = 0; i < m; i++) a[(size_t)c * m + i] -= 2.0 * v[i] * dot;
                }
            else         // A <- A (I - 2 v v^T)
                for (int row = 0; row < m; row++) {
                    double dot = 0.0;
                    for (int c = 0; c < n; c++) dot += a[(size_t)c * m + row] * v[c];
                    for (int c = 0; c < n; c++) a[(size_t)c * m + row] -= 2.0 * dot * v[c];
                }
            free(v);
        }
    }
    return a;
}

static void test_svd(const svd_grid *grid) {
    const struct {
        int m, n, nb;
        const char *what;
    } shapes[] = {{1, 1, 0, "1 x 1"}, {7, 7, 2, "7 x 7, block 2"}, {50, 50, 8, "50 x 50, block 8"},
                  {64, 64, 0, "64 x 64, automatic block"}, {45, 30, 4, "45 x 30, block 4"},
                  {30, 45, 4, "30 x 45, block 4"}, {200, 200, 16, "200 x 200, block 16"}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int m = shapes[c].m, n = shapes[c].n, k = m < n ? m : n;
        double *a = xmalloc((size_t)m * (size_t)n * sizeof(double));
        for (size_t i = 0; i < (size_t)m * (size_t)n; i++) a[i] = rng_normal(11, c, i);
        double *s = xmalloc((size_t)k * sizeof(double)), *reference = xmalloc((size_t)k * sizeof(double));
        int info = svd_distributed(grid, m, n, a, shapes[c].nb, s);
        int info_reference = svd_lapack(m, n, a, reference);
        double error = relative_spectrum_error(s, reference, k);
        char name[160];
        snprintf(name, sizeof name, "svd: pdgesvd on a %d x %d grid equals dgesvd, random %s (np=%d)", grid->nprow,
                 grid->npcol, shapes[c].what, world);
        check(info == 0 && info_reference == 0 && error < TOL, name, "info %d/%d, max |ds| / s_max %.3g", info,
              info_reference, error);
        free(a);
        free(s);
        free(reference);
    }
    // Rank-deficient: known spectrum with zeros; attention-like (causal rows of one token).
    enum { N = 40 };
    double sigma[N];
    for (int i = 0; i < N; i++) sigma[i] = i < 6 ? 10.0 / (i + 1) : 0.0;
    double *a = matrix_with_spectrum(N, N, sigma, 5);
    double s[N], reference[N];
    int info = svd_distributed(grid, N, N, a, 8, s);
    int info_reference = svd_lapack(N, N, a, reference);
    double error = relative_spectrum_error(s, reference, N), exact = relative_spectrum_error(s, sigma, N);
    char name[160];
    snprintf(name, sizeof name, "svd: rank-deficient (rank 6 of 40) equals dgesvd and the known spectrum (np=%d)", world);
    check(info == 0 && info_reference == 0 && error < TOL && exact < TOL, name,
          "vs dgesvd %.3g, vs exact %.3g", error, exact);
    free(a);
    double *first = make_pattern(FIRST, N);   // rank 1, sigma = sqrt(N)
    info = svd_distributed(grid, N, N, first, 0, s);
    svd_lapack(N, N, first, reference);
    snprintf(name, sizeof name, "svd: all mass on the first token has one singular value sqrt(L) (np=%d)", world);
    check(info == 0 && fabs(s[0] - sqrt((double)N)) < TOL && s[1] < TOL && relative_spectrum_error(s, reference, N) < TOL,
          name, "s0 %.17g s1 %g", s[0], s[1]);
    free(first);
}

static void test_product_core(void) {
    const struct {
        int d, r;
    } shapes[] = {{16, 4}, {24, 8}, {9, 9}, {6, 10}};  // r > d: a head size above the width
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int d = shapes[c].d, r = shapes[c].r;
        double *x = xmalloc((size_t)d * r * sizeof(double)), *y = xmalloc((size_t)d * r * sizeof(double));
        for (int i = 0; i < d * r; i++) {
            x[i] = rng_normal(21, c, (uint64_t)i);
            y[i] = rng_normal(22, c, (uint64_t)i);
        }
        double *full = xcalloc((size_t)d * d, sizeof(double)), *s_full = xmalloc((size_t)d * sizeof(double));
        for (int j = 0; j < d; j++)
            for (int i = 0; i < d; i++)
                for (int k = 0; k < r; k++) full[(size_t)j * d + i] += x[(size_t)k * d + i] * y[(size_t)k * d + j];
        double *s_core = xmalloc((size_t)r * sizeof(double));
        int info = svd_product_core(d, r, x, y, s_core) | svd_lapack(d, d, full, s_full);
        int common = r < d ? r : d;
        double error = relative_spectrum_error(s_core, s_full, common), rest = 0.0;
        for (int i = r; i < d; i++) rest = fmax(rest, s_full[i] / s_full[0]);
        for (int i = d; i < r; i++) rest = fmax(rest, fabs(s_core[i]) / s_full[0]);  // r > d: zeros
        char name[128];
        snprintf(name, sizeof name, "svd: QR core of X Y^T (d %d, r %d) equals the d x d spectrum", d, r);
        check(info == 0 && error < 1e-12 && rest < 1e-12, name, "info %d, error %.3g, other %.3g", info, error, rest);
        free(x);
        free(y);
        free(full);
        free(s_full);
        free(s_core);
    }
}

static void test_ranks(void) {
    const double flat[4] = {1, 1, 1, 1}, one[3] = {2, 0, 0}, ramp[4] = {4, 3, 2, 1}, tiny[3] = {3, 1e-7, 0},
                 zero[2] = {0, 0};
    double p[4] = {0.4, 0.3, 0.2, 0.1}, entropy = 0.0;
    for (int i = 0; i < 4; i++) entropy -= p[i] * log(p[i]);
    int ok = fabs(rank_effective(flat, 4) - 4.0) < TOL && fabs(rank_stable(flat, 4) - 4.0) < TOL &&
             rank_numerical(flat, 4, 1e-6) == 4;
    check(ok, "ranks: flat spectrum of 4 has effective, stable and numerical rank 4", "%g %g %d",
          rank_effective(flat, 4), rank_stable(flat, 4), rank_numerical(flat, 4, 1e-6));
    ok = fabs(rank_effective(one, 3) - 1.0) < TOL && fabs(rank_stable(one, 3) - 1.0) < TOL && rank_numerical(one, 3, 1e-6) == 1;
    check(ok, "ranks: one nonzero singular value gives rank 1", "%g %g %d", rank_effective(one, 3), rank_stable(one, 3),
          rank_numerical(one, 3, 1e-6));
    ok = fabs(rank_effective(ramp, 4) - exp(entropy)) < TOL && fabs(rank_stable(ramp, 4) - 30.0 / 16.0) < TOL &&
         rank_numerical(ramp, 4, 0.3) == 3 && rank_numerical(ramp, 4, 0.2) == 4;
    check(ok, "ranks: 4,3,2,1 has effective rank exp(H(.4,.3,.2,.1)), stable rank 30/16", "%.17g vs %.17g, %g",
          rank_effective(ramp, 4), exp(entropy), rank_stable(ramp, 4));
    ok = rank_numerical(tiny, 3, 1e-6) == 1 && rank_numerical(tiny, 3, 1e-8) == 2;
    check(ok, "ranks: numerical rank counts s > tol s_max", "%d %d", rank_numerical(tiny, 3, 1e-6),
          rank_numerical(tiny, 3, 1e-8));
    ok = rank_effective(zero, 2) == 0.0 && rank_stable(zero, 2) == 0.0 && rank_numerical(zero, 2, 1e-6) == 0;
    check(ok, "ranks: a zero spectrum has rank 0", "%g %g %d", rank_effective(zero, 2), rank_stable(zero, 2),
          rank_numerical(zero, 2, 1e-6));
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    bool svd_only = argc > 1 && strcmp(argv[1], "--svd-only") == 0;
    if (!svd_only) {
        test_indicators();
        test_headdiv();
        test_normalisation();
        test_ranks();
        test_product_core();
    }
    svd_grid grid;
    svd_grid_init(&grid);
    test_svd(&grid);
    svd_grid_free(&grid);
    MPI_Finalize();
    return testing_exit_code();
}
