// The one quantile rule of decon's histograms (attention recordings' logits_stats,
// decon-analyze's p5..p95 columns, and analysis/plot/figures.py, which mirrors it).
#pragma once

// The q-quantile (0 < q < 1) of counts[bins] over edges[bins + 1] (bin b holds
// [edges[b], edges[b+1]); the outer edges may be -inf and +inf: open bins). The
// quantile's bin is the first whose cumulative count reaches q * total; inside it the
// value is interpolated linearly between the bin's ends, each first clipped to the exact
// [min, max] of the data (pass -INFINITY, INFINITY or NaN
// when they are not known); an end
// that is still infinite (an open bin with no known bound) yields the other end.
// NaN when the histogram is empty.
double histogram_quantile(const double *counts, const double *edges, int bins, double q, double min, double max);
