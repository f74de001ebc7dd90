// Pre-softmax score histograms of a recorded layer (attention_record.h): fixed log-spaced
// bins, summed over the ranks, summarised by interpolated quantiles.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/histogram.h"
#include "io/attention_record.h"

void score_histogram_clear(score_histogram *h) {
    memset(h, 0, sizeof *h);
    h->min = INFINITY;
    h->max = -INFINITY;
}

void score_histogram_edges(double *edges) {
    int m = SCORE_MAGNITUDE_BINS, central = m + 1;  // edges[central] = -1e-3, edges[central+1] = 1e-3
    edges[0] = -INFINITY;
    edges[SCORE_BINS] = INFINITY;
    for (int j = 0; j <= m; j++) {
        double magnitude = pow(10.0, -3.0 + (double)j / SCORE_BINS_PER_DECADE);
        edges[central - j] = -magnitude;
        edges[central + 1 + j] = magnitude;
    }
}

// Binning: a candidate bin from a table indexed by the top 16 bits of |x| (sign cleared:
// exponent and 7 mantissa bits, a slot spans < 1% of |x| while a bin spans 12%), then at
// most a step or two against the edges themselves, so the result is exactly the bin
// [e_j, e_j+1) that holds x. Negative x use the mirrored candidate.
typedef struct {
    double edges[SCORE_BINS + 1];
    int16_t candidate[1 << 15];   // bin of the smallest positive value of each slot
} bin_table;

// The bin j with edges[j] <= x < edges[j+1] (the last bin closed): binary search.
static int bin_search(double x, const double *edges) {
    int lo = 0, hi = SCORE_BINS;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (edges[mid] <= x) lo = mid;
        else hi = mid;
    }
    return lo;
}

// Built on the first call (callers are serial: histograms are filled outside parallel regions).
static const bin_table *bins(void) {
    static bin_table table;
    static bool ready;
    if (!ready) {
        score_histogram_edges(table.edges);
        for (uint32_t slot = 0; slot < (1u << 15); slot++) {
            uint32_t bits = slot << 16;
            float value;
            memcpy(&value, &bits, sizeof value);
            table.candidate[slot] = (int16_t)(isfinite(value) ? bin_search(value, table.edges) : SCORE_BINS - 1);
        }
        ready = true;
    }
    return &table;
}

static inline int bin_of(float x, const bin_table *t) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int b = t->candidate[(bits & 0x7fffffffu) >> 16];
    if (bits >> 31) b = SCORE_BINS - 1 - b;
    double v = x;
    while (b > 0 && t->edges[b] > v) b--;
    while (b < SCORE_BINS - 1 && t->edges[b + 1] <= v) b++;
    return b;
}

void score_histogram_add(score_histogram *h, const float *scores, int heads, int seq_len, bool per_token) {
    const bin_table *table = bins();
    size_t rows = (size_t)heads * (size_t)seq_len;
    // Per-row partial sums, added in row order afterwards: the result does not depend on
    // the number of threads or their timing.
    double *row_sum = xmalloc(2 * rows * sizeof(double)), *row_squares = row_sum + rows;
    int64_t count = 0, nonfinite = 0, above_10 = 0, above_1000 = 0;
    double lowest = INFINITY, highest = -INFINITY;
    #pragma omp parallel
    {
        int64_t local[SCORE_BINS] = {0};
        #pragma omp for schedule(static) reduction(+ : count, nonfinite, above_10, above_1000) \
            reduction(min : lowest) reduction(max : highest)
        for (size_t r = 0; r < rows; r++) {
            size_t i = r % (size_t)seq_len;
            const float *row = scores + r * (size_t)seq_len;
            size_t first = per_token ? i : 0;
            double sum = 0.0, squares = 0.0;
            for (size_t t = first; t <= i; t++) {
                double x = row[t];
                if (!isfinite(x)) {
                    nonfinite++;
                    continue;
                }
                local[bin_of(row[t], table)]++;
                count++;
                sum += x;
                squares += x * x;
                if (x < lowest) lowest = x;
                if (x > highest) highest = x;
                above_10 += fabs(x) > 10.0;
                above_1000 += fabs(x) > 1000.0;
            }
            row_sum[r] = sum;
            row_squares[r] = squares;
        }
        #pragma omp critical
        for (int b = 0; b < SCORE_BINS; b++) h->counts[b] += local[b];
    }
    for (size_t r = 0; r < rows; r++) {
        h->sum += row_sum[r];
        h->sum_squares += row_squares[r];
    }
    free(row_sum);
    h->count += count;
    h->nonfinite += nonfinite;
    h->above_10 += above_10;
    h->above_1000 += above_1000;
    if (lowest < h->min) h->min = lowest;
    if (highest > h->max) h->max = highest;
}

void score_histogram_allreduce(score_histogram *h, MPI_Comm comm) {
    int64_t counts[SCORE_BINS + 4];
    memcpy(counts, h->counts, sizeof h->counts);
    counts[SCORE_BINS] = h->count;
    counts[SCORE_BINS + 1] = h->nonfinite;
    counts[SCORE_BINS + 2] = h->above_10;
    counts[SCORE_BINS + 3] = h->above_1000;
    MPI_Allreduce(MPI_IN_PLACE, counts, SCORE_BINS + 4, MPI_INT64_T, MPI_SUM, comm);
    memcpy(h->counts, counts, sizeof h->counts);
    h->count = counts[SCORE_BINS];
    h->nonfinite = counts[SCORE_BINS + 1];
    h->above_10 = counts[SCORE_BINS + 2];
    h->above_1000 = counts[SCORE_BINS + 3];
    double sums[2] = {h->sum, h->sum_squares};
    MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, comm);
    h->sum = sums[0];
    h->sum_squares = sums[1];
    MPI_Allreduce(MPI_IN_PLACE, &h->min, 1, MPI_DOUBLE, MPI_MIN, comm);
    MPI_Allreduce(MPI_IN_PLACE, &h->max, 1, MPI_DOUBLE, MPI_MAX, comm);
}

void score_histogram_stats(const score_histogram *h, double *stats) {
    if (h->count == 0) {
        for (int i = 0; i < SCORE_STATS; i++) stats[i] = i >= 6 ? 0.0 : NAN;
        return;
    }
    stats[0] = h->min;
    stats[1] = h->max;
    stats[2] = h->sum / (double)h->count;
    double counts[SCORE_BINS];
    for (int b = 0; b < SCORE_BINS; b++) counts[b] = (double)h->counts[b];
    const double q[3] = {0.01, 0.50, 0.99};
    for (int i = 0; i < 3; i++) stats[3 + i] = histogram_quantile(counts, bins()->edges, SCORE_BINS, q[i], h->min, h->max);
    stats[6] = (double)h->above_10;
    stats[7] = (double)h->above_1000;
}
