// CSV, JSON and HDF5 outputs of decon-analyze (rank 0 only). Layout: docs/design.md,
// "Analysis"; analysis.h5 carries a `description` attribute on every dataset.
#include <cJSON.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/results.h"
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

static const char *const HEAD_DESCRIPTIONS[HEAD_FIELDS] = {
    "ENTROPY: mean row entropy (1/L) sum_i -sum_{t<=i} a_it log a_it, nats (entries <= 0 contribute 0)",
    "CONC: Frobenius norm of A over the causal triangle",
    "SINK: sum_i A_i1 / L (mean attention on the first token)",
    "LOCFOC_0: sum_{i>=0} A_{i,i} / L", "LOCFOC_1: sum_{i>=1} A_{i,i-1} / (L-1)",
    "LOCFOC_2: sum_{i>=2} A_{i,i-2} / (L-2)", "LOCFOC_3: sum_{i>=3} A_{i,i-3} / (L-3)",
    "mean over rows of sum_{t<=i} a_it", "share of causal entries < 0"};
static const char *const LAYER_DESCRIPTIONS[LAYER_FIELDS] = {
    "ENTROPY, mean over heads", "CONC, mean over heads",
    "HEADDIV: 2/(L(L+1)) sum_{t<=i} population std over heads of A^j_it, mean over sequences",
    "SINK, mean over heads", "LOCFOC_0, mean over heads", "LOCFOC_1, mean over heads", "LOCFOC_2, mean over heads",
    "LOCFOC_3, mean over heads",
    "ENTROPY min-max normalised (see /normalisation)", "CONC min-max normalised (see /normalisation)",
    "HEADDIV min-max normalised (see /normalisation)",
    "mean row sum over heads and sequences", "max over heads and sequences of max_i |row sum - 1|",
    "share of causal entries < 0, mean over heads", "max over heads and sequences of the mass above the diagonal",
    "1 when the row_sums attribute is 1 and every row sums to 1 within the dtype's tolerance, else 0"};
static const char *const SVD_DESCRIPTIONS[SVD_FIELDS] = {
    "effective rank exp(-sum p log p), p = s / sum s (Roy & Vetterli)", "stable rank sum s^2 / s_max^2",
    "numerical rank #{s > tol s_max}", "largest singular value"};

DECON_PRINTF(3, 4) static bool fail(char *why, size_t size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(why, size, format, args);
    va_end(args);
    return false;
}

static void csv_number(FILE *f, double value) {
    if (!isnan(value)) fprintf(f, "%.12g", value);
}

// CSV fields are plain identifiers or numbers except variant names and paths, quoted.
static void csv_text(FILE *f, const char *text) {
    fputc('"', f);
    for (const char *c = text; *c; c++) {
        if (*c == '"') fputc('"', f);
        fputc(*c, f);
    }
    fputc('"', f);
}

static FILE *open_tmp(const char *path, char *tmp, size_t tmp_size, char *why, size_t size) {
    snprintf(tmp, tmp_size, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) fail(why, size, "cannot write %s (%s): check that --out is a writable directory", tmp, strerror(errno));
    return f;
}

// Every output is written to <name>.tmp and staged; output_write_all renames the whole set
// only once every file is complete, so a failure leaves the earlier outputs as they were.
typedef struct {
    char *tmp, *path;
} staged_file;
static staged_file *staged;
static int staged_count, staged_capacity;

static void stage(const char *tmp, const char *path) {
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
            ok = fail(why, size, "cannot rename %s to %s (%s)", staged[i].tmp, staged[i].path, strerror(errno));
        if (!publish || !ok) remove(staged[i].tmp);
        free(staged[i].tmp);
        free(staged[i].path);
    }
    staged_count = 0;
    return ok;
}

static bool close_staged(FILE *f, const char *tmp, const char *path, char *why, size_t size) {
    bool ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp);
        return fail(why, size, "writing %s failed (disk full?): free space and run again", tmp);
    }
    stage(tmp, path);
    return true;
}

static const char *weights_status_name(weights_layer_status status) {
    return status == WEIGHTS_OK ? "ok" : status == WEIGHTS_ABSENT ? "absent" : "not_per_head";
}

// ---- CSV ------------------------------------------------------------------------------------------

static bool write_layers_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                             size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.layers.csv", out, r->name);
    FILE *f = open_tmp(path, tmp, sizeof tmp, why, size);
    if (!f) return false;
    fprintf(f, "run,step,layer,layer_id,variant,is_standard,recorded,has_attn,row_sums,scores_kind");
    if (o->metrics)
        for (int i = 0; i < LAYER_FIELDS; i++) fprintf(f, ",%s", layer_field_names[i]);
    if (o->svd)
        for (int i = 0; i < SVD_FIELDS; i++) fprintf(f, ",%s", svd_field_names[i]);
    if (o->logits)
        for (int i = 0; i < LOGIT_FIELDS; i++) fprintf(f, ",logits_%s", logit_field_names[i]);
    fputc('\n', f);
    for (int s = 0; s < r->steps; s++)
        for (int l = 0; l < r->layers; l++) {
            const recording_layer *layer = &r->rec.steps[s].layers[l];
            size_t at = results_layer_index(r, s, l);
            csv_text(f, r->name);
            fprintf(f, ",%lld,%d,%d,", (long long)r->rec.steps[s].step, l, l + 1);
            csv_text(f, layer->variant);
            fprintf(f, ",%d,%d,%d,", layer->is_standard, layer->recorded, layer->has_attn);
            csv_text(f, layer->has_attn ? layer->row_sums : "");
            fprintf(f, ",%s", layer->scores_kind);
            if (o->metrics)
                for (int i = 0; i < LAYER_FIELDS; i++) fputc(',', f), csv_number(f, r->layer_values[at * LAYER_FIELDS + i]);
            if (o->svd)
                for (int i = 0; i < SVD_FIELDS; i++) fputc(',', f), csv_number(f, r->layer_svd[at * SVD_FIELDS + i]);
            if (o->logits)
                for (int i = 0; i < LOGIT_FIELDS; i++) fputc(',', f), csv_number(f, r->logits[at * LOGIT_FIELDS + i]);
            fputc('\n', f);
        }
    return close_staged(f, tmp, path, why, size);
}

static bool write_heads_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                            size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.heads.csv", out, r->name);
    FILE *f = open_tmp(path, tmp, sizeof tmp, why, size);
    if (!f) return false;
    fprintf(f, "run,step,layer,layer_id,head,variant,has_attn");
    if (o->metrics)
        for (int i = 0; i < HEAD_FIELDS; i++) fprintf(f, ",%s", head_field_names[i]);
    if (o->svd)
        for (int i = 0; i < SVD_FIELDS; i++) fprintf(f, ",%s", svd_field_names[i]);
    if (r->has_weights)
        for (int p = 0; p < 2; p++)
            for (int i = 0; i < SVD_FIELDS; i++) fprintf(f, ",%s_%s", p ? "ov" : "qk", svd_field_names[i]);
    fputc('\n', f);
    for (int s = 0; s < r->steps; s++)
        for (int l = 0; l < r->layers; l++)
            for (int h = 0; h < r->heads; h++) {
                const recording_layer *layer = &r->rec.steps[s].layers[l];
                size_t at = results_head_index(r, s, l, h);
                csv_text(f, r->name);
                fprintf(f, ",%lld,%d,%d,%d,", (long long)r->rec.steps[s].step, l, l + 1, h);
                csv_text(f, layer->variant);
                fprintf(f, ",%d", layer->has_attn);
                if (o->metrics)
                    for (int i = 0; i < HEAD_FIELDS; i++) fputc(',', f), csv_number(f, r->head_values[at * HEAD_FIELDS + i]);
                if (o->svd)
                    for (int i = 0; i < SVD_FIELDS; i++) fputc(',', f), csv_number(f, r->svd[at * SVD_FIELDS + i]);
                if (r->has_weights) {
                    size_t w = ((size_t)l * (size_t)r->heads + (size_t)h) * SVD_FIELDS;
                    for (int i = 0; i < SVD_FIELDS; i++) fputc(',', f), csv_number(f, r->qk_ranks[w + i]);
                    for (int i = 0; i < SVD_FIELDS; i++) fputc(',', f), csv_number(f, r->ov_ranks[w + i]);
                }
                fputc('\n', f);
            }
    return close_staged(f, tmp, path, why, size);
}

// Long format: source (attn | qk | ov), step (empty for weights), layer, head, index, value.
static bool write_spectra_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                              size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.spectra.csv", out, r->name);
    FILE *f = open_tmp(path, tmp, sizeof tmp, why, size);
    if (!f) return false;
    fprintf(f, "run,source,step,layer,layer_id,head,index,singular_value\n");
    if (o->svd)
        for (int s = 0; s < r->steps; s++)
            for (int l = 0; l < r->layers; l++) {
                if (!r->rec.steps[s].layers[l].has_attn) continue;
                for (int h = 0; h < r->heads; h++) {
                    const double *values = r->spectra + results_head_index(r, s, l, h) * (size_t)r->length;
                    for (int i = 0; i < r->length; i++) {
                        csv_text(f, r->name);
                        fprintf(f, ",attn,%lld,%d,%d,%d,%d,", (long long)r->rec.steps[s].step, l, l + 1, h, i);
                        csv_number(f, values[i]);
                        fputc('\n', f);
                    }
                }
            }
    if (r->has_weights) {
        int dh = r->weights.head_dim;
        for (int p = 0; p < 2; p++)
            for (int l = 0; l < r->layers; l++) {
                if (r->weights.status[l] != WEIGHTS_OK) continue;
                for (int h = 0; h < r->heads; h++) {
                    const double *values = (p ? r->ov : r->qk) + ((size_t)l * (size_t)r->heads + (size_t)h) * (size_t)dh;
                    for (int i = 0; i < dh; i++) {
                        csv_text(f, r->name);
                        fprintf(f, ",%s,,%d,%d,%d,%d,", p ? "ov" : "qk", l, l + 1, h, i);
                        csv_number(f, values[i]);
                        fputc('\n', f);
                    }
                }
            }
    }
    return close_staged(f, tmp, path, why, size);
}

// ---- JSON -------------------------------------------------------------------------------------------

static cJSON *checked(cJSON *item) {
    if (!item) fatal("out of memory building the JSON output");
    return item;
}

static void json_number(cJSON *object, const char *key, double value) {
    if (isnan(value) || isinf(value)) checked(cJSON_AddNullToObject(object, key));
    else checked(cJSON_AddNumberToObject(object, key, value));
}

static void json_text(cJSON *object, const char *key, const char *value) {
    checked(cJSON_AddStringToObject(object, key, value ? value : ""));
}

static cJSON *json_fields(const double *values, const char *const *names, int first, int count) {
    cJSON *o = checked(cJSON_CreateObject());
    for (int i = first; i < first + count; i++) json_number(o, names[i], values[i]);
    return o;
}

static cJSON *json_array(const double *values, int count) {
    cJSON *a = checked(cJSON_CreateArray());
    for (int i = 0; i < count; i++)
        cJSON_AddItemToArray(a, checked(isnan(values[i]) ? cJSON_CreateNull() : cJSON_CreateNumber(values[i])));
    return a;
}

static cJSON *json_definitions(void) {
    cJSON *d = checked(cJSON_CreateObject());
    for (int i = 0; i < H_ROW_SUM_MEAN; i++) json_text(d, head_field_names[i], HEAD_DESCRIPTIONS[i]);
    json_text(d, "headdiv", LAYER_DESCRIPTIONS[L_HEADDIV]);
    for (int i = 0; i < SVD_FIELDS; i++) json_text(d, svd_field_names[i], SVD_DESCRIPTIONS[i]);
    json_text(d, "averaging", "every indicator is computed per recorded sequence and averaged over the sequences; "
              "layer values are means over heads (HEADDIV is per layer)");
    json_text(d, "normalisation", "x_norm = (x - min) / (max - min) over the per-layer values of every layer of every "
              "input file at the same step number (0 when max = min)");
    return d;
}

static bool write_json(const char *out, const run_results *r, const normalisation_table *norm,
                       const analysis_options *o, char *why, size_t size) {
    cJSON *root = checked(cJSON_CreateObject());
    json_text(root, "run", r->name);
    json_text(root, "source", r->rec.path);
    json_number(root, "format_version", r->rec.format_version);
    json_text(root, "variant", r->rec.variant);
    json_text(root, "layout", r->rec.layout);
    json_text(root, "layer_plan", r->rec.layer_plan);
    json_text(root, "dtype", r->rec.dtype);
    json_number(root, "num_layers", r->layers);
    json_number(root, "num_heads", r->heads);
    json_number(root, "sequences", r->rec.sequences);
    json_number(root, "length", r->length);
    cJSON *options = checked(cJSON_AddObjectToObject(root, "options"));
    checked(cJSON_AddBoolToObject(options, "metrics", o->metrics));
    checked(cJSON_AddBoolToObject(options, "svd", o->svd));
    checked(cJSON_AddBoolToObject(options, "logits", o->logits));
    json_number(options, "tol", o->tol);
    json_number(options, "svd_sequences", o->svd ? (double)o->svd_sequences : NAN);
    cJSON_AddItemToObject(root, "definitions", json_definitions());
    cJSON *steps = checked(cJSON_AddArrayToObject(root, "steps"));
    for (int s = 0; s < r->steps; s++) {
        cJSON *step = checked(cJSON_CreateObject());
        long long step_number = (long long)r->rec.steps[s].step;
        json_number(step, "step", (double)step_number);
        json_number(step, "loss", r->rec.steps[s].loss);
        if (o->metrics)
            for (int n = 0; n < norm->count; n++)
                if (norm->steps[n] == step_number) {
                    cJSON *range = checked(cJSON_AddObjectToObject(step, "normalisation"));
                    for (int k = 0; k < NORMALISED_COUNT; k++) {
                        cJSON *x = checked(cJSON_AddObjectToObject(range, layer_field_names[k == 0 ? L_ENTROPY : k == 1 ? L_CONC : L_HEADDIV]));
                        json_number(x, "min", norm->min[n * NORMALISED_COUNT + k]);
                        json_number(x, "max", norm->max[n * NORMALISED_COUNT + k]);
                    }
                    json_number(range, "values", norm->members[n]);
                }
        cJSON *layers = checked(cJSON_AddArrayToObject(step, "layers"));
        for (int l = 0; l < r->layers; l++) {
            const recording_layer *rl = &r->rec.steps[s].layers[l];
            size_t at = results_layer_index(r, s, l);
            cJSON *layer = checked(cJSON_CreateObject());
            json_number(layer, "layer", l);
            json_number(layer, "layer_id", l + 1);
            json_text(layer, "variant", rl->variant);
            checked(cJSON_AddBoolToObject(layer, "is_standard", rl->is_standard));
            checked(cJSON_AddBoolToObject(layer, "recorded", rl->recorded));
            checked(cJSON_AddBoolToObject(layer, "has_attn", rl->has_attn));
            if (rl->has_attn) json_text(layer, "row_sums", rl->row_sums);
            if (rl->has_scores) json_text(layer, "scores_kind", rl->scores_kind);
            const double *lv = r->layer_values + at * LAYER_FIELDS;
            if (o->metrics && rl->has_attn) {
                cJSON_AddItemToObject(layer, "indicators", json_fields(lv, layer_field_names, L_ENTROPY, L_LOCFOC3 + 1));
                cJSON_AddItemToObject(layer, "normalised", json_fields(lv, layer_field_names, L_ENTROPY_NORM, 3));
                cJSON *flags = json_fields(lv, layer_field_names, L_ROW_SUM_MEAN, L_ROWS_SUM_TO_ONE - L_ROW_SUM_MEAN);
                checked(cJSON_AddBoolToObject(flags, "rows_sum_to_one", lv[L_ROWS_SUM_TO_ONE] == 1.0));
                json_number(flags, "recorded_row_sum_min", rl->row_sum_min);
                json_number(flags, "recorded_row_sum_max", rl->row_sum_max);
                json_number(flags, "recorded_entry_min", rl->entry_min);
                cJSON_AddItemToObject(layer, "flags", flags);
            }
            if (o->svd && rl->has_attn)
                cJSON_AddItemToObject(layer, "svd", json_fields(r->layer_svd + at * SVD_FIELDS, svd_field_names, 0, SVD_FIELDS));
            if (o->logits && rl->has_scores)
                cJSON_AddItemToObject(layer, "logits", json_fields(r->logits + at * LOGIT_FIELDS, logit_field_names, 0, LOGIT_FIELDS));
            if ((o->metrics || o->svd) && rl->has_attn) {
                cJSON *heads = checked(cJSON_AddArrayToObject(layer, "heads"));
                for (int h = 0; h < r->heads; h++) {
                    size_t hat = results_head_index(r, s, l, h);
                    cJSON *head = o->metrics ? json_fields(r->head_values + hat * HEAD_FIELDS, head_field_names, 0, HEAD_FIELDS)
                                             : checked(cJSON_CreateObject());
                    json_number(head, "head", h);
                    if (o->svd) cJSON_AddItemToObject(head, "svd", json_fields(r->svd + hat * SVD_FIELDS, svd_field_names, 0, SVD_FIELDS));
                    cJSON_AddItemToArray(heads, head);
                }
            }
            cJSON_AddItemToArray(layers, layer);
        }
        cJSON_AddItemToArray(steps, step);
    }
    if (r->has_weights) {
        const weights_info *w = &r->weights;
        cJSON *weights = checked(cJSON_AddObjectToObject(root, "weights"));
        json_text(weights, "checkpoint", w->path);
        json_number(weights, "step", (double)w->step);
        json_number(weights, "head_dim", w->head_dim);
        json_number(weights, "kv_heads", w->kv_heads);
        json_text(weights, "definition", "singular values of W_QK,j = Wq_j Wk_g(j)^T and W_OV,j = Wv_g(j) Wo_j (d x d, "
                  "math convention Q = H Wq), from their d_h x d_h QR core; the other d - d_h are 0");
        cJSON *layers = checked(cJSON_AddArrayToObject(weights, "layers"));
        for (int l = 0; l < r->layers; l++) {
            cJSON *layer = checked(cJSON_CreateObject());
            json_number(layer, "layer", l);
            json_text(layer, "status", weights_status_name(w->status[l]));
            if (w->status[l] != WEIGHTS_OK) json_text(layer, "note", w->note[l]);
            else {
                cJSON *heads = checked(cJSON_AddArrayToObject(layer, "heads"));
                for (int h = 0; h < r->heads; h++) {
                    size_t at = (size_t)l * (size_t)r->heads + (size_t)h;
                    cJSON *head = checked(cJSON_CreateObject());
                    json_number(head, "head", h);
                    for (int p = 0; p < 2; p++) {
                        cJSON *x = json_fields((p ? r->ov_ranks : r->qk_ranks) + at * SVD_FIELDS, svd_field_names, 0, SVD_FIELDS);
                        cJSON_AddItemToObject(x, "singular_values", json_array((p ? r->ov : r->qk) + at * (size_t)w->head_dim, w->head_dim));
                        cJSON_AddItemToObject(head, p ? "ov" : "qk", x);
                    }
                    cJSON_AddItemToArray(heads, head);
                }
            }
            cJSON_AddItemToArray(layers, layer);
        }
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) fatal("out of memory printing the JSON output");
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.json", out, r->name);
    FILE *f = open_tmp(path, tmp, sizeof tmp, why, size);
    if (!f) {
        free(text);
        return false;
    }
    fputs(text, f);
    fputc('\n', f);
    free(text);
    return close_staged(f, tmp, path, why, size);
}

// ---- HDF5 ---------------------------------------------------------------------------------------

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
            h5_field(w, heads, head_field_names[i], 3, d_slh, r->head_values, HEAD_FIELDS, i, HEAD_DESCRIPTIONS[i]);
        for (int i = 0; i < LAYER_FIELDS && layers >= 0; i++)
            h5_field(w, layers, layer_field_names[i], 2, d_sl, r->layer_values, LAYER_FIELDS, i, LAYER_DESCRIPTIONS[i]);
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
                h5_field(w, svd, svd_field_names[i], 3, d_slh, r->svd, SVD_FIELDS, i, SVD_DESCRIPTIONS[i]);
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
                h5_field(w, weights, name, 2, d_lh, r->qk_ranks, SVD_FIELDS, i, SVD_DESCRIPTIONS[i]);
                snprintf(name, sizeof name, "ov_%s", svd_field_names[i]);
                h5_field(w, weights, name, 2, d_lh, r->ov_ranks, SVD_FIELDS, i, SVD_DESCRIPTIONS[i]);
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

static bool write_h5(const char *out, const run_results *runs, int run_count, const normalisation_table *norm,
                     const analysis_options *o, char *why, size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/analysis.h5", out);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return fail(why, size, "cannot create %s: check that --out is a writable directory", tmp);
    h5_writer w = {true, why, size, tmp};
    h5_attr_text(&w, file, "kind", "decon analysis");
    h5_attr_int(&w, file, "format_version", 1);
    h5_attr_text(&w, file, "command", o->command);
    h5_attr_text(&w, file, "entropy_definition", HEAD_DESCRIPTIONS[H_ENTROPY]);
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
    stage(tmp, path);
    return true;
}

bool output_write_all(const char *out_dir, const run_results *runs, int run_count, const normalisation_table *norm,
                      const analysis_options *options, char *why, size_t size) {
    bool ok = true;
    for (int i = 0; i < run_count && ok; i++) {
        const run_results *r = &runs[i];
        ok = write_layers_csv(out_dir, r, options, why, size) &&
             (!(options->metrics || options->svd || r->has_weights) || write_heads_csv(out_dir, r, options, why, size)) &&
             (!(options->svd || r->has_weights) || write_spectra_csv(out_dir, r, options, why, size)) &&
             write_json(out_dir, r, norm, options, why, size);
    }
    ok = ok && write_h5(out_dir, runs, run_count, norm, options, why, size);
    return finish_staged(ok, why, size) && ok;
}
