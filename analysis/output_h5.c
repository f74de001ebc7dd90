// The HDF5 output of decon-analyze: analysis.h5, every run's values and a `description`
// attribute on every dataset (output_internal.h).
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/output_internal.h"
#include "core/errors.h"

typedef struct {
    bool ok;
    char *why;
    size_t size;
    const char *path;
} h5_writer;

static void h5_check(h5_writer *w, bool ok, const char *what) {
    if (!ok && w->ok) {
        w->ok = false;
        snprintf(w->why, w->size, "writing %s of %s failed (disk full?): free space and run again", what, w->path);
    }
}

static void h5_attr_text(h5_writer *w, hid_t object, const char *name, const char *text) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(text) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attribute = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    h5_check(w, attribute >= 0 && H5Awrite(attribute, type, text) >= 0, name);
    if (attribute >= 0) H5Aclose(attribute);
    H5Sclose(space);
    H5Tclose(type);
}

static void h5_attr_number(h5_writer *w, hid_t object, const char *name, hid_t file_type, hid_t mem_type,
                           const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attribute = H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    h5_check(w, attribute >= 0 && H5Awrite(attribute, mem_type, value) >= 0, name);
    if (attribute >= 0) H5Aclose(attribute);
    H5Sclose(space);
}

static void h5_attr_int(h5_writer *w, hid_t object, const char *name, long long value) {
    h5_attr_number(w, object, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, &value);
}

static void h5_attr_double(h5_writer *w, hid_t object, const char *name, double value) {
    h5_attr_number(w, object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

static void h5_dataset(h5_writer *w, hid_t group, const char *name, int rank, const hsize_t *dims, hid_t file_type,
                       hid_t mem_type, const void *data, const char *description) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t dataset = H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    h5_check(w, dataset >= 0 && H5Dwrite(dataset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, name);
    if (dataset >= 0) {
        if (description) h5_attr_text(w, dataset, "description", description);
        H5Dclose(dataset);
    }
    H5Sclose(space);
}

static void h5_doubles(h5_writer *w, hid_t group, const char *name, int rank, const hsize_t *dims, const double *data,
                       const char *description) {
    h5_dataset(w, group, name, rank, dims, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data, description);
}

// One field of an array of records [count][stride] as its own dataset.
static void h5_field(h5_writer *w, hid_t group, const char *name, int rank, const hsize_t *dims, const double *records,
                     int stride, int field, const char *description) {
    size_t count = 1;
    for (int i = 0; i < rank; i++) count *= dims[i];
    double *values = xmalloc((count ? count : 1) * sizeof(double));
    for (size_t i = 0; i < count; i++) values[i] = records[i * (size_t)stride + (size_t)field];
    h5_doubles(w, group, name, rank, dims, values, description);
    free(values);
}

static void h5_strings(h5_writer *w, hid_t group, const char *name, const char *const *texts, size_t count,
                       const char *description) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    hsize_t dims[1] = {count};
    h5_dataset(w, group, name, 1, dims, type, type, (const void *)texts, description);
    H5Tclose(type);
}

static hid_t h5_group(h5_writer *w, hid_t parent, const char *name) {
    hid_t group = H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    h5_check(w, group >= 0, name);
    return group;
}

static void h5_run(h5_writer *w, hid_t runs, const run_results *r, const analysis_options *o) {
    hid_t g = h5_group(w, runs, r->name);
    if (g < 0) return;
    h5_attr_text(w, g, "source", r->rec.path);
    h5_attr_text(w, g, "variant", r->rec.variant);
    h5_attr_text(w, g, "layout", r->rec.layout);
    h5_attr_text(w, g, "layer_plan", r->rec.layer_plan);
    h5_attr_text(w, g, "dtype", r->rec.dtype);
    h5_attr_int(w, g, "num_layers", r->layers);
    h5_attr_int(w, g, "num_heads", r->heads);
    h5_attr_int(w, g, "sequences", r->rec.sequences);
    h5_attr_int(w, g, "length", r->length);
    const hsize_t S = (hsize_t)r->steps, NL = (hsize_t)r->layers, H = (hsize_t)r->heads;
    long long *steps = xmalloc(S * sizeof(long long));
    int *has_attn = xmalloc(S * NL * sizeof(int)), *has_scores = xmalloc(S * NL * sizeof(int));
    int *is_standard = xmalloc(NL * sizeof(int));
    const char **variants = (const char **)xmalloc(NL * sizeof(char *)), **row_sums = (const char **)xmalloc(S * NL * sizeof(char *));
    for (hsize_t s = 0; s < S; s++) {
        steps[s] = (long long)r->rec.steps[s].step;
        for (hsize_t l = 0; l < NL; l++) {
            const recording_layer *rl = &r->rec.steps[s].layers[l];
            has_attn[s * NL + l] = rl->has_attn;
            has_scores[s * NL + l] = rl->has_scores;
            row_sums[s * NL + l] = rl->row_sums;
        }
    }
    for (hsize_t l = 0; l < NL; l++) {
        variants[l] = r->rec.steps[0].layers[l].variant;
        is_standard[l] = r->rec.steps[0].layers[l].is_standard;
    }
    const hsize_t d_s[1] = {S}, d_l[1] = {NL}, d_sl[2] = {S, NL}, d_slh[3] = {S, NL, H};
    h5_dataset(w, g, "steps", 1, d_s, H5T_STD_I64LE, H5T_NATIVE_LLONG, steps, "recorded training steps (axis 0)");
    double *losses = xmalloc(S * sizeof(double)), *measured = xmalloc(S * NL * 3 * sizeof(double));
    for (hsize_t s = 0; s < S; s++) {
        losses[s] = r->rec.steps[s].loss;
        for (hsize_t l = 0; l < NL; l++) {
            const recording_layer *rl = &r->rec.steps[s].layers[l];
            measured[(s * NL + l) * 3] = rl->row_sum_min;
            measured[(s * NL + l) * 3 + 1] = rl->row_sum_max;
            measured[(s * NL + l) * 3 + 2] = rl->entry_min;
        }
    }
    h5_doubles(w, g, "step_loss", 1, d_s, losses, "the recording's loss attribute per step (mean cross entropy of "
               "the recorded sequences, nats; NaN when absent)");
    const hsize_t d_m[3] = {S, NL, 3};
    h5_doubles(w, g, "recorded_row_sums", 3, d_m, measured, "[step, layer, (row_sum_min, row_sum_max, entry_min)] as "
               "measured by the writer before any float16 rounding (NaN without attn)");
    free(losses);
    free(measured);
    h5_strings(w, g, "layer_variant", variants, NL, "mixer of each layer (0-based index = axis 1)");
    h5_dataset(w, g, "is_standard", 1, d_l, H5T_STD_I32LE, H5T_NATIVE_INT, is_standard, "1 = standard attention layer");
    int *recorded = xmalloc(S * NL * sizeof(int));
    for (hsize_t i = 0; i < S * NL; i++) recorded[i] = r->rec.steps[i / NL].layers[i % NL].recorded;
    h5_dataset(w, g, "recorded", 2, d_sl, H5T_STD_I32LE, H5T_NATIVE_INT, recorded,
               "[step, layer] 1 when the layer is in the recording's recorded_layers");
    free(recorded);
    h5_dataset(w, g, "has_attn", 2, d_sl, H5T_STD_I32LE, H5T_NATIVE_INT, has_attn,
               "[step, layer] 1 when the layer has an attention matrix (0: e.g. mlp; its values are NaN)");
    h5_dataset(w, g, "has_scores", 2, d_sl, H5T_STD_I32LE, H5T_NATIVE_INT, has_scores,
               "[step, layer] 1 when pre-softmax score statistics were recorded");
    h5_strings(w, g, "row_sums", row_sums, S * NL, "[step * num_layers + layer] the recording's row_sums attribute");
    if (o->metrics) {
        hid_t heads = h5_group(w, g, "heads"), layers = h5_group(w, g, "layers");
        for (int i = 0; i < HEAD_FIELDS && heads >= 0; i++)
            h5_field(w, heads, head_field_names[i], 3, d_slh, r->head_values, HEAD_FIELDS, i, head_field_descriptions[i]);
        for (int i = 0; i < LAYER_FIELDS && layers >= 0; i++)
            h5_field(w, layers, layer_field_names[i], 2, d_sl, r->layer_values, LAYER_FIELDS, i, layer_field_descriptions[i]);
        if (heads >= 0) H5Gclose(heads);
        if (layers >= 0) H5Gclose(layers);
    }
    if (o->svd) {
        hid_t svd = h5_group(w, g, "svd");
        if (svd >= 0) {
            h5_attr_double(w, svd, "tol", o->tol);
            h5_attr_int(w, svd, "sequences_used", o->svd_sequences);
            const hsize_t d_spec[4] = {S, NL, H, (hsize_t)r->length};
            h5_doubles(w, svd, "singular_values", 4, d_spec, r->spectra,
                       "[step, layer, head, i] singular values of A (descending), mean over the sequences used");
            for (int i = 0; i < SVD_FIELDS; i++) {
                char name[64], description[256];
                h5_field(w, svd, svd_field_names[i], 3, d_slh, r->svd, SVD_FIELDS, i, svd_field_descriptions[i]);
                snprintf(name, sizeof name, "layer_%s", svd_field_names[i]);
                snprintf(description, sizeof description, "[step, layer] %s, mean over heads", svd_field_names[i]);
                h5_field(w, svd, name, 2, d_sl, r->layer_svd, SVD_FIELDS, i, description);
            }
            H5Gclose(svd);
        }
    }
    if (o->logits) {
        hid_t logits = h5_group(w, g, "logits");
        if (logits >= 0) {
            const hsize_t d_stats[3] = {S, NL, LOGIT_FIELDS};
            h5_doubles(w, logits, "stats", 3, d_stats, r->logits,
                       "[step, layer, field] pre-softmax score statistics; fields in the attribute 'fields' (the "
                       "recording's logits_stats, then percentiles interpolated in the histogram and its total)");
            char fields[512] = "";
            size_t used = 0;
            for (int i = 0; i < LOGIT_FIELDS && used < sizeof fields; i++)
                used += (size_t)snprintf(fields + used, sizeof fields - used, "%s%s", i ? "," : "", logit_field_names[i]);
            h5_attr_text(w, logits, "fields", fields);
            for (hsize_t s = 0; s < S; s++)
                for (hsize_t l = 0; l < NL; l++) {
                    const recording_layer *rl = &r->rec.steps[s].layers[l];
                    size_t at = results_layer_index(r, (int)s, (int)l);
                    if (!rl->has_scores || !r->hist_counts[at]) continue;
                    char name[160];
                    snprintf(name, sizeof name, "%s_%s", r->rec.steps[s].group, rl->group);
                    hid_t h = h5_group(w, logits, name);
                    if (h < 0) continue;
                    h5_attr_int(w, h, "step", steps[s]);
                    h5_attr_int(w, h, "layer", (long long)l);
                    const hsize_t d_c[1] = {(hsize_t)rl->bins}, d_e[1] = {(hsize_t)rl->bins + 1};
                    h5_doubles(w, h, "counts", 1, d_c, r->hist_counts[at], "histogram counts of the pre-softmax scores");
                    h5_doubles(w, h, "edges", 1, d_e, r->hist_edges[at], "bin edges (bins + 1)");
                    H5Gclose(h);
                }
            H5Gclose(logits);
        }
    }
    if (r->has_weights) {
        const weights_info *wi = &r->weights;
        hid_t weights = h5_group(w, g, "weights");
        if (weights >= 0) {
            h5_attr_text(w, weights, "checkpoint", wi->path);
            h5_attr_int(w, weights, "step", wi->step);
            h5_attr_int(w, weights, "head_dim", wi->head_dim);
            h5_attr_int(w, weights, "kv_heads", wi->kv_heads);
            h5_attr_int(w, weights, "hidden_size", wi->hidden);
            h5_attr_text(w, weights, "definition",
                         "W_QK,j = Wq_j Wk_g(j)^T and W_OV,j = Wv_g(j) Wo_j (math convention Q = H Wq); the d_h "
                         "possibly nonzero singular values, from the d_h x d_h core R1 R2^T of the QR factors; the "
                         "other d - d_h are 0; biases and RoPE are not part of the product");
            int *status = xmalloc(NL * sizeof(int));
            const char **notes = (const char **)xmalloc(NL * sizeof(char *));
            for (hsize_t l = 0; l < NL; l++) {
                status[l] = (int)wi->status[l];
                notes[l] = wi->note[l];
            }
            h5_dataset(w, weights, "status", 1, d_l, H5T_STD_I32LE, H5T_NATIVE_INT, status,
                       "per layer: 0 ok, 1 no wq/wk/wv/wo (NaN), 2 not per-head slices (NaN)");
            h5_strings(w, weights, "note", notes, NL, "why a layer has no spectra");
            const hsize_t d_sv[3] = {NL, H, (hsize_t)wi->head_dim}, d_lh[2] = {NL, H};
            h5_doubles(w, weights, "qk_singular_values", 3, d_sv, r->qk, "[layer, head, i] singular values of W_QK,j");
            h5_doubles(w, weights, "ov_singular_values", 3, d_sv, r->ov, "[layer, head, i] singular values of W_OV,j");
            for (int i = 0; i < SVD_FIELDS; i++) {
                char name[64];
                snprintf(name, sizeof name, "qk_%s", svd_field_names[i]);
                h5_field(w, weights, name, 2, d_lh, r->qk_ranks, SVD_FIELDS, i, svd_field_descriptions[i]);
                snprintf(name, sizeof name, "ov_%s", svd_field_names[i]);
                h5_field(w, weights, name, 2, d_lh, r->ov_ranks, SVD_FIELDS, i, svd_field_descriptions[i]);
            }
            free(status);
            free((void *)notes);
            H5Gclose(weights);
        }
    }
    free(steps);
    free(has_attn);
    free(has_scores);
    free(is_standard);
    free((void *)variants);
    free((void *)row_sums);
    H5Gclose(g);
}

bool output_h5(const char *out, const run_results *runs, int run_count, const normalisation_table *norm,
               const analysis_options *o, char *why, size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/analysis.h5", out);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return why_fail(why, size, "cannot create %s: check that --out is a writable directory", tmp);
    h5_writer w = {true, why, size, tmp};
    h5_attr_text(&w, file, "kind", "decon analysis");
    h5_attr_int(&w, file, "format_version", 1);
    h5_attr_text(&w, file, "command", o->command);
    h5_attr_text(&w, file, "entropy_definition", head_field_descriptions[H_ENTROPY]);
    h5_attr_text(&w, file, "averaging", "every indicator is computed per recorded sequence and averaged over the "
                 "sequences; layer values are means over heads (HEADDIV is per layer)");
    h5_attr_int(&w, file, "metrics", o->metrics);
    h5_attr_int(&w, file, "svd", o->svd);
    h5_attr_int(&w, file, "logits", o->logits);
    h5_attr_double(&w, file, "tol", o->tol);
    const char **names = (const char **)xmalloc((size_t)run_count * sizeof(char *));
    for (int i = 0; i < run_count; i++) names[i] = runs[i].name;
    h5_strings(&w, file, "run_names", names, (size_t)run_count, "the runs (groups under /runs), in command-line order");
    free((void *)names);
    if (o->metrics) {
        hid_t n = h5_group(&w, file, "normalisation");
        if (n >= 0) {
            h5_attr_text(&w, n, "definition",
                         "x_norm = (x - min) / (max - min) per indicator (ENTROPY, CONC, HEADDIV; columns), where min "
                         "and max run over the per-layer values (mean over heads; HEADDIV per layer) of every layer "
                         "with an attention matrix of every input file recorded at the same step number (rows); 0 "
                         "when max = min");
            h5_attr_text(&w, n, "columns", "entropy,conc,headdiv");
            const hsize_t d1[1] = {(hsize_t)norm->count}, d2[2] = {(hsize_t)norm->count, NORMALISED_COUNT};
            h5_dataset(&w, n, "steps", 1, d1, H5T_STD_I64LE, H5T_NATIVE_LLONG, norm->steps, "step numbers (rows)");
            h5_doubles(&w, n, "min", 2, d2, norm->min, "[step, indicator] minimum");
            h5_doubles(&w, n, "max", 2, d2, norm->max, "[step, indicator] maximum");
            h5_dataset(&w, n, "values", 1, d1, H5T_STD_I32LE, H5T_NATIVE_INT, norm->members,
                       "number of (file, layer) values in each range");
            H5Gclose(n);
        }
    }
    hid_t runs_group = h5_group(&w, file, "runs");
    for (int i = 0; i < run_count && runs_group >= 0 && w.ok; i++) h5_run(&w, runs_group, &runs[i], o);
    if (runs_group >= 0) H5Gclose(runs_group);
    h5_check(&w, H5Fclose(file) >= 0, "the file");
    if (!w.ok) {
        remove(tmp);
        return false;
    }
    output_stage(tmp, path);
    return true;
}
