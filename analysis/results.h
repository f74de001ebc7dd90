// What decon-analyze computes for one input recording (a "run"), as flat arrays indexed
// [step][layer][head][...] in the recording's step order (sorted by step). Missing values
// (a layer without an attention matrix, an indicator not requested) are NaN; the writers
// turn them into empty CSV cells, JSON null and HDF5 NaN.
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "analysis/indicators.h"
#include "analysis/recording.h"
#include "analysis/weights.h"

// Per head, mean over the recorded sequences.
enum {
    H_ENTROPY, H_CONC, H_SINK, H_LOCFOC0, H_LOCFOC1, H_LOCFOC2, H_LOCFOC3, H_ROW_SUM_MEAN, H_NEGATIVE_FRACTION,
    HEAD_FIELDS
};
// Per layer: head fields averaged over heads, HEADDIV, the normalised indicators, flags.
enum {
    L_ENTROPY, L_CONC, L_HEADDIV, L_SINK, L_LOCFOC0, L_LOCFOC1, L_LOCFOC2, L_LOCFOC3,
    L_ENTROPY_NORM, L_CONC_NORM, L_HEADDIV_NORM,
    L_ROW_SUM_MEAN, L_ROW_SUM_MAX_ERROR, L_NEGATIVE_FRACTION, L_UPPER_MASS, L_ROWS_SUM_TO_ONE,
    LAYER_FIELDS
};
// Rank measures of one spectrum (attention: mean over the sequences used).
enum { S_EFFECTIVE, S_STABLE, S_NUMERICAL, S_MAX, SVD_FIELDS };
// Pre-softmax score statistics per layer: the recording's logits_stats, then percentiles
// interpolated in the histogram and its total count.
enum { G_HIST_P5 = RECORDING_LOGIT_STATS, G_HIST_P25, G_HIST_P75, G_HIST_P95, G_HIST_TOTAL, LOGIT_FIELDS };
enum { NORMALISED_COUNT = 3 };   // ENTROPY, CONC, HEADDIV

extern const char *const head_field_names[HEAD_FIELDS];
extern const char *const layer_field_names[LAYER_FIELDS];
extern const char *const svd_field_names[SVD_FIELDS];
extern const char *const logit_field_names[LOGIT_FIELDS];

typedef struct {
    bool metrics, svd, logits, weights;
    double tol;                 // numerical rank threshold, relative to s_max
    int svd_sequences;          // sequences per head that enter the SVD (<= recorded)
    int block;                  // ScaLAPACK block size (0 = automatic)
    char command[4096];         // the command line, for the record
} analysis_options;

typedef struct {
    recording_info rec;
    char name[128];             // unique among the inputs; names the output files
    int steps, layers, heads, length;
    double *head_values;        // [steps][layers][heads][HEAD_FIELDS]
    double *layer_values;       // [steps][layers][LAYER_FIELDS]
    double *spectra;            // [steps][layers][heads][length]  (mean over sequences used)
    double *svd;                // [steps][layers][heads][SVD_FIELDS]
    double *layer_svd;          // [steps][layers][SVD_FIELDS]  (mean over heads)
    double *logits;             // [steps][layers][LOGIT_FIELDS]
    double **hist_counts, **hist_edges;   // [steps * layers], NULL where no scores
    // --checkpoint
    bool has_weights;
    weights_info weights;
    double *qk, *ov;            // [layers][heads][head_dim]
    double *qk_ranks, *ov_ranks;  // [layers][heads][SVD_FIELDS]
} run_results;

// Min-max ranges of the normalised indicators, one per distinct step number.
typedef struct {
    int count;
    long long *steps;
    double *min, *max;          // [count][NORMALISED_COUNT]
    int *members;               // [count]: (file, layer) values that entered
} normalisation_table;

static inline size_t results_layer_index(const run_results *r, int step, int layer) {
    return (size_t)step * (size_t)r->layers + (size_t)layer;
}
static inline size_t results_head_index(const run_results *r, int step, int layer, int head) {
    return results_layer_index(r, step, layer) * (size_t)r->heads + (size_t)head;
}

// Writes <out>/<name>.layers.csv, .heads.csv, .json (and .spectra.csv with --svd or
// --checkpoint) for every run, then <out>/analysis.h5; each file to "<file>.tmp", and the
// set renamed onto the names only once every file is complete. false with `why` on the
// first failure (the temporaries removed, every earlier output left as it was).
bool output_write_all(const char *out_dir, const run_results *runs, int run_count, const normalisation_table *norm,
                      const analysis_options *options, char *why, size_t size);
