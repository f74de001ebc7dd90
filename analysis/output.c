// The outputs of decon-analyze (rank 0 only): the field names and descriptions, the
// staging of the files and output_write_all; one writer per format in output_csv.c,
// output_json.c and output_h5.c. Layout: docs/design.md, "Analysis"; analysis.h5 carries
// a `description` attribute on every dataset.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/output_internal.h"
#include "core/errors.h"

const char *const head_field_names[HEAD_FIELDS] = {
    "entropy", "conc", "sink", "locfoc_0", "locfoc_1", "locfoc_2", "locfoc_3", "row_sum_mean", "negative_fraction"};
const char *const layer_field_names[LAYER_FIELDS] = {
    "entropy", "conc", "headdiv", "sink", "locfoc_0", "locfoc_1", "locfoc_2", "locfoc_3",
    "entropy_norm", "conc_norm", "headdiv_norm",
    "row_sum_mean", "row_sum_max_error", "negative_fraction", "upper_mass", "rows_sum_to_one"};
const char *const svd_field_names[SVD_FIELDS] = {"effective_rank", "stable_rank", "numerical_rank", "sigma_max"};
const char *const logit_field_names[LOGIT_FIELDS] = {
    "min", "max", "mean", "p1", "p50", "p99", "count_abs_gt_10", "count_abs_gt_1000",
    "hist_p5", "hist_p25", "hist_p75", "hist_p95", "hist_total"};

const char *const head_field_descriptions[HEAD_FIELDS] = {
    "ENTROPY: mean row entropy (1/L) sum_i -sum_{t<=i} a_it log a_it, nats (entries <= 0 contribute 0)",
    "CONC: Frobenius norm of A over the causal triangle",
    "SINK: sum_i A_i1 / L (mean attention on the first token)",
    "LOCFOC_0: sum_{i>=0} A_{i,i} / L", "LOCFOC_1: sum_{i>=1} A_{i,i-1} / (L-1)",
    "LOCFOC_2: sum_{i>=2} A_{i,i-2} / (L-2)", "LOCFOC_3: sum_{i>=3} A_{i,i-3} / (L-3)",
    "mean over rows of sum_{t<=i} a_it", "share of causal entries < 0"};
const char *const layer_field_descriptions[LAYER_FIELDS] = {
    "ENTROPY, mean over heads", "CONC, mean over heads",
    "HEADDIV: 2/(L(L+1)) sum_{t<=i} population std over heads of A^j_it, mean over sequences",
    "SINK, mean over heads", "LOCFOC_0, mean over heads", "LOCFOC_1, mean over heads", "LOCFOC_2, mean over heads",
    "LOCFOC_3, mean over heads",
    "ENTROPY min-max normalised (see /normalisation)", "CONC min-max normalised (see /normalisation)",
    "HEADDIV min-max normalised (see /normalisation)",
    "mean row sum over heads and sequences", "max over heads and sequences of max_i |row sum - 1|",
    "share of causal entries < 0, mean over heads", "max over heads and sequences of the mass above the diagonal",
    "1 when the row_sums attribute is 1 and every row sums to 1 within the dtype's tolerance, else 0"};
const char *const svd_field_descriptions[SVD_FIELDS] = {
    "effective rank exp(-sum p log p), p = s / sum s (Roy & Vetterli)", "stable rank sum s^2 / s_max^2",
    "numerical rank #{s > tol s_max}", "largest singular value"};

FILE *output_open_tmp(const char *path, char *tmp, size_t tmp_size, char *why, size_t size) {
    snprintf(tmp, tmp_size, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        why_fail(why, size, "cannot write %s (%s): check that --out is a writable directory", tmp, strerror(errno));
    return f;
}

// Every output is written to <name>.tmp and staged; output_write_all renames the whole set
// only once every file is complete, so a failure leaves the earlier outputs as they were.
typedef struct {
    char *tmp, *path;
} staged_file;
static staged_file *staged;
static int staged_count, staged_capacity;

void output_stage(const char *tmp, const char *path) {
    if (staged_count == staged_capacity) {
        staged_capacity = staged_capacity ? 2 * staged_capacity : 16;
        staged_file *grown = xmalloc((size_t)staged_capacity * sizeof *grown);
        if (staged_count) memcpy(grown, staged, (size_t)staged_count * sizeof *grown);
        free(staged);
        staged = grown;
    }
    staged[staged_count++] = (staged_file){xstrdup(tmp), xstrdup(path)};
}

// Renames the staged files onto their names (publish) or removes them; empties the list.
static bool finish_staged(bool publish, char *why, size_t size) {
    bool ok = true;
    for (int i = 0; i < staged_count; i++) {
        if (publish && ok && rename(staged[i].tmp, staged[i].path) != 0)
            ok = why_fail(why, size, "cannot rename %s to %s (%s)", staged[i].tmp, staged[i].path, strerror(errno));
        if (!publish || !ok) remove(staged[i].tmp);
        free(staged[i].tmp);
        free(staged[i].path);
    }
    staged_count = 0;
    return ok;
}

bool output_close_staged(FILE *f, const char *tmp, const char *path, char *why, size_t size) {
    bool ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp);
        return why_fail(why, size, "writing %s failed (disk full?): free space and run again", tmp);
    }
    output_stage(tmp, path);
    return true;
}

bool output_write_all(const char *out_dir, const run_results *runs, int run_count, const normalisation_table *norm,
                      const analysis_options *options, char *why, size_t size) {
    bool ok = true;
    for (int i = 0; i < run_count && ok; i++) {
        const run_results *r = &runs[i];
        ok = output_layers_csv(out_dir, r, options, why, size) &&
             (!(options->metrics || options->svd || r->has_weights) || output_heads_csv(out_dir, r, options, why, size)) &&
             (!(options->svd || r->has_weights) || output_spectra_csv(out_dir, r, options, why, size)) &&
             output_json(out_dir, r, norm, options, why, size);
    }
    ok = ok && output_h5(out_dir, runs, run_count, norm, options, why, size);
    return finish_staged(ok, why, size) && ok;
}
