// Attention indicators (DESIGN.md section 10) and rank measures of a spectrum. Pure math
// on double matrices: no MPI, no HDF5. A is L x L, row-major, causal: only the triangle
// t <= i is read (0-based i = query row, t = key column).
//
//   ENTROPY   mean row entropy (1/L) sum_i -sum_{t<=i} a_it log a_it   (nats; 0 log 0 = 0,
//             and entries a <= 0 contribute 0: they are counted in `negative` instead)
//   CONC      ||A||_F over the causal triangle
//   SINK      sum_i A_i1 / L                      (column 0, every row has it)
//   LOCFOC_N  sum_{i >= N} A_{i,i-N} / (L - N),  N = 0..3  (NaN when L <= N: no terms)
//   HEADDIV   2/(L(L+1)) sum_{t<=i} std_j(A^j_it), population std (divide by the number
//             of heads) across the heads of one sequence; built one head at a time
//
// Rank measures of singular values s (descending or not; all >= 0):
//   effective rank  exp(-sum p_i log p_i), p_i = s_i / sum s   (Roy & Vetterli 2007)
//   stable rank     sum s_i^2 / max s_i^2  (= ||A||_F^2 / ||A||_2^2)
//   numerical rank  #{ s_i > tol * max s }
// A zero spectrum has all three ranks 0.
#pragma once
#include <stddef.h>

enum { LOCFOC_COUNT = 4 };

typedef struct {
    double entropy, conc, sink;
    double locfoc[LOCFOC_COUNT];
    double row_sum_mean;        // mean over rows of sum_{t<=i} a_it
    double row_sum_max_error;   // max over rows of |sum_{t<=i} a_it - 1|
    double negative_fraction;   // share of causal entries < 0
    double upper_mass;          // sum |a_it| over t > i (0 for a causal recording)
} head_indicators;

void indicators_head(head_indicators *out, const double *a, int length);

// HEADDIV by Welford's update per causal entry, one head at a time: two L x L buffers.
typedef struct {
    double *mean, *m2;
    int length, heads;
} head_spread;

void head_spread_init(head_spread *spread, int length);
void head_spread_reset(head_spread *spread);
void head_spread_add(head_spread *spread, const double *a);
double head_spread_headdiv(const head_spread *spread);
void head_spread_free(head_spread *spread);

double rank_effective(const double *s, int n);
double rank_stable(const double *s, int n);
int rank_numerical(const double *s, int n, double tol);

// Min-max normalisation of values[i] for the i with include[i] != 0 (include may be NULL:
// all; NaN values are excluded too): out[i] = (values[i] - min) / (max - min), 0 when
// max - min <= 1e-12 max(|min|, |max|) (equal up to rounding); excluded entries get NaN. Returns the number of included values; *min and *max (NaN when none) may be NULL.
int minmax_normalise(double *out, const double *values, const int *include, size_t n, double *min, double *max);
