#include "analysis/indicators.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "core/errors.h"

void indicators_head(head_indicators *out, const double *a, int length) {
    const size_t n = (size_t)length;
    double entropy = 0.0, squares = 0.0, sink = 0.0, row_sums = 0.0, max_error = 0.0, upper = 0.0;
    double diagonals[LOCFOC_COUNT] = {0};
    size_t negative = 0;
    for (size_t i = 0; i < n; i++) {
        const double *row = a + i * n;
        double row_entropy = 0.0, row_sum = 0.0;
        for (size_t t = 0; t <= i; t++) {
            double x = row[t];
            if (x > 0.0) row_entropy -= x * log(x);
            else if (x < 0.0) negative++;
            squares += x * x;
            row_sum += x;
        }
        for (size_t t = i + 1; t < n; t++) upper += fabs(row[t]);
        entropy += row_entropy;
        sink += row[0];
        row_sums += row_sum;
        max_error = fmax(max_error, fabs(row_sum - 1.0));
        for (size_t d = 0; d < LOCFOC_COUNT && d <= i; d++) diagonals[d] += row[i - d];
    }
    out->entropy = n ? entropy / (double)n : NAN;
    out->conc = sqrt(squares);
    out->sink = n ? sink / (double)n : NAN;
    for (size_t d = 0; d < LOCFOC_COUNT; d++) out->locfoc[d] = n > d ? diagonals[d] / (double)(n - d) : NAN;
    out->row_sum_mean = n ? row_sums / (double)n : NAN;
    out->row_sum_max_error = max_error;
    out->negative_fraction = n ? (double)negative / ((double)n * (double)(n + 1) / 2.0) : 0.0;
    out->upper_mass = upper;
}

// Causal entries are packed row by row: entry (i, t) at i(i+1)/2 + t.
void head_spread_init(head_spread *spread, int length) {
    size_t entries = (size_t)length * ((size_t)length + 1) / 2;
    spread->mean = xmalloc(entries * sizeof(double));
    spread->m2 = xmalloc(entries * sizeof(double));
    spread->length = length;
    head_spread_reset(spread);
}

void head_spread_reset(head_spread *spread) {
    size_t entries = (size_t)spread->length * ((size_t)spread->length + 1) / 2;
    memset(spread->mean, 0, entries * sizeof(double));
    memset(spread->m2, 0, entries * sizeof(double));
    spread->heads = 0;
}

void head_spread_add(head_spread *spread, const double *a) {
    const size_t n = (size_t)spread->length;
    const double count = (double)(++spread->heads);
    double *mean = spread->mean, *m2 = spread->m2;
    for (size_t i = 0; i < n; i++) {
        size_t base = i * (i + 1) / 2;
        const double *row = a + i * n;
        for (size_t t = 0; t <= i; t++) {
            double x = row[t], delta = x - mean[base + t];
            mean[base + t] += delta / count;
            m2[base + t] += delta * (x - mean[base + t]);
        }
    }
}

double head_spread_headdiv(const head_spread *spread) {
    size_t entries = (size_t)spread->length * ((size_t)spread->length + 1) / 2;
    if (spread->heads == 0 || entries == 0) return NAN;
    double sum = 0.0;
    for (size_t e = 0; e < entries; e++) sum += sqrt(fmax(spread->m2[e], 0.0) / spread->heads);
    return sum / (double)entries;
}

void head_spread_free(head_spread *spread) {
    free(spread->mean);
    free(spread->m2);
    spread->mean = spread->m2 = NULL;
}

double rank_effective(const double *s, int n) {
    double total = 0.0;
    for (int i = 0; i < n; i++) total += s[i];
    if (!(total > 0.0)) return 0.0;
    double entropy = 0.0;
    for (int i = 0; i < n; i++) {
        double p = s[i] / total;
        if (p > 0.0) entropy -= p * log(p);
    }
    return exp(entropy);
}

double rank_stable(const double *s, int n) {
    double largest = 0.0, squares = 0.0;
    for (int i = 0; i < n; i++) {
        largest = fmax(largest, s[i]);
        squares += s[i] * s[i];
    }
    return largest > 0.0 ? squares / (largest * largest) : 0.0;
}

int rank_numerical(const double *s, int n, double tol) {
    double largest = 0.0;
    for (int i = 0; i < n; i++) largest = fmax(largest, s[i]);
    if (!(largest > 0.0)) return 0;
    int count = 0;
    for (int i = 0; i < n; i++) count += s[i] > tol * largest;
    return count;
}

int minmax_normalise(double *out, const double *values, const int *include, size_t n, double *min, double *max) {
    double low = INFINITY, high = -INFINITY;
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        if ((include && !include[i]) || isnan(values[i])) continue;
        low = fmin(low, values[i]);
        high = fmax(high, values[i]);
        count++;
    }
    // A range at rounding level (identical values summed in another order) counts as none.
    bool spread = count && high - low > 1e-12 * fmax(fabs(high), fabs(low));
    for (size_t i = 0; i < n; i++) {
        if ((include && !include[i]) || isnan(values[i])) out[i] = NAN;
        else out[i] = spread ? (values[i] - low) / (high - low) : 0.0;
    }
    if (min) *min = count ? low : NAN;
    if (max) *max = count ? high : NAN;
    return count;
}
