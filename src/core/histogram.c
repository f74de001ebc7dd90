#include "core/histogram.h"

#include <math.h>

double histogram_quantile(const double *counts, const double *edges, int bins, double q, double min, double max) {
    double total = 0.0;
    for (int b = 0; b < bins; b++) total += counts[b];
    if (!(total > 0.0)) return NAN;
    double target = fmin(q * total, total), before = 0.0;
    for (int b = 0; b < bins; b++) {
        double n = counts[b];
        if (n > 0.0 && before + n >= target) {
            double lo = fmax(edges[b], min), hi = fmin(edges[b + 1], max);
            if (!isfinite(lo)) return hi;
            if (!isfinite(hi)) return lo;
            double value = lo + (target - before) / n * (hi - lo);
            return fmin(fmax(value, min), max);
        }
        before += n;
    }
    return NAN;  // not reached: the last non-empty bin reaches total
}
