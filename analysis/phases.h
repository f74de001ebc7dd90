// The phases of decon-analyze (phases.c): what runs over the MPI ranks once the options
// are parsed and every input is checked (decon-analyze.c). Each phase fills its arrays of
// run_results (results.h) on rank 0; the other ranks take part in the work and the
// reductions. Collective unless said otherwise.
#pragma once
#include <stddef.h>

#include "analysis/results.h"

// Learns this process's rank and the number of ranks (MPI_COMM_WORLD); before any other
// call here.
void phases_init(void);

// Each rank passes its first error (NULL when none). When any rank has one, rank 0 prints
// the lowest failing rank's line and every rank exits 1.
void agree_or_exit(const char *why);

// count NaNs (missing values; room for one when count is 0). Not collective.
double *nan_array(size_t count);

// Indicators: units (file, step, layer, sequence) round-robin over the ranks; sums reduced
// to rank 0, then divided by the number of sequences.
void phase_metrics(run_results *runs, int count);
// Score statistics: small, read by rank 0.
void phase_logits(run_results *runs, int count);
// Attention spectra: every SVD on the grid over all ranks; rank 0 reads A.
void phase_svd(run_results *runs, int count, const analysis_options *o);
// Weight spectra: units (file, layer) round-robin, sums reduced to rank 0.
void phase_weights(run_results *runs, int count, const analysis_options *o);
// ENTROPY, CONC and HEADDIV min-max normalised per step number over every (file, layer).
// Rank 0 only.
void normalise(run_results *runs, int count, normalisation_table *table);
