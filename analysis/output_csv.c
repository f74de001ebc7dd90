// The CSV outputs of decon-analyze: <run>.layers.csv, .heads.csv and .spectra.csv
// (output_internal.h). Missing values are empty cells.
#include <math.h>
#include <stdio.h>

#include "analysis/output_internal.h"

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

// "," and each value: one cell a value.
static void csv_numbers(FILE *f, const double *values, int count) {
    for (int i = 0; i < count; i++) fputc(',', f), csv_number(f, values[i]);
}

// The header cells ",<prefix><name>" of a group of fields.
static void csv_names(FILE *f, const char *prefix, const char *const *names, int count) {
    for (int i = 0; i < count; i++) fprintf(f, ",%s%s", prefix, names[i]);
}

// Opens the temporary file of <out>/<run>.<kind>.csv (output_open_tmp); its names in path and tmp.
static FILE *csv_open(const char *out, const run_results *r, const char *kind, char *path, size_t path_size,
                      char *tmp, size_t tmp_size, char *why, size_t size) {
    snprintf(path, path_size, "%s/%s.%s.csv", out, r->name, kind);
    return output_open_tmp(path, tmp, tmp_size, why, size);
}

// One row a singular value of one head: run, source, step (empty for the weights), layer,
// layer_id, head, index, value.
static void csv_spectrum(FILE *f, const run_results *r, const char *source, const char *step, int l, int h,
                         const double *values, int count) {
    for (int i = 0; i < count; i++) {
        csv_text(f, r->name);
        fprintf(f, ",%s,%s,%d,%d,%d,%d,", source, step, l, l + 1, h, i);
        csv_number(f, values[i]);
        fputc('\n', f);
    }
}

bool output_layers_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                       size_t size) {
    char path[4600], tmp[4700];
    FILE *f = csv_open(out, r, "layers", path, sizeof path, tmp, sizeof tmp, why, size);
    if (!f) return false;
    fprintf(f, "run,step,layer,layer_id,variant,is_standard,recorded,has_attn,row_sums,scores_kind");
    if (o->metrics) csv_names(f, "", layer_field_names, LAYER_FIELDS);
    if (o->svd) csv_names(f, "", svd_field_names, SVD_FIELDS);
    if (o->logits) csv_names(f, "logits_", logit_field_names, LOGIT_FIELDS);
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
            if (o->metrics) csv_numbers(f, r->layer_values + at * LAYER_FIELDS, LAYER_FIELDS);
            if (o->svd) csv_numbers(f, r->layer_svd + at * SVD_FIELDS, SVD_FIELDS);
            if (o->logits) csv_numbers(f, r->logits + at * LOGIT_FIELDS, LOGIT_FIELDS);
            fputc('\n', f);
        }
    return output_close_staged(f, tmp, path, why, size);
}

bool output_heads_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                      size_t size) {
    char path[4600], tmp[4700];
    FILE *f = csv_open(out, r, "heads", path, sizeof path, tmp, sizeof tmp, why, size);
    if (!f) return false;
    fprintf(f, "run,step,layer,layer_id,head,variant,has_attn");
    if (o->metrics) csv_names(f, "", head_field_names, HEAD_FIELDS);
    if (o->svd) csv_names(f, "", svd_field_names, SVD_FIELDS);
    if (r->has_weights) {
        csv_names(f, "qk_", svd_field_names, SVD_FIELDS);
        csv_names(f, "ov_", svd_field_names, SVD_FIELDS);
    }
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
                if (o->metrics) csv_numbers(f, r->head_values + at * HEAD_FIELDS, HEAD_FIELDS);
                if (o->svd) csv_numbers(f, r->svd + at * SVD_FIELDS, SVD_FIELDS);
                if (r->has_weights) {
                    size_t w = ((size_t)l * (size_t)r->heads + (size_t)h) * SVD_FIELDS;
                    csv_numbers(f, r->qk_ranks + w, SVD_FIELDS);
                    csv_numbers(f, r->ov_ranks + w, SVD_FIELDS);
                }
                fputc('\n', f);
            }
    return output_close_staged(f, tmp, path, why, size);
}

// Long format: source (attn | qk | ov), step (empty for weights), layer, head, index, value.
bool output_spectra_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                        size_t size) {
    char path[4600], tmp[4700];
    FILE *f = csv_open(out, r, "spectra", path, sizeof path, tmp, sizeof tmp, why, size);
    if (!f) return false;
    fprintf(f, "run,source,step,layer,layer_id,head,index,singular_value\n");
    if (o->svd)
        for (int s = 0; s < r->steps; s++)
            for (int l = 0; l < r->layers; l++) {
                if (!r->rec.steps[s].layers[l].has_attn) continue;
                char step[24];
                snprintf(step, sizeof step, "%lld", (long long)r->rec.steps[s].step);
                for (int h = 0; h < r->heads; h++)
                    csv_spectrum(f, r, "attn", step, l, h, r->spectra + results_head_index(r, s, l, h) * (size_t)r->length,
                                 r->length);
            }
    if (r->has_weights) {
        int dh = r->weights.head_dim;
        for (int p = 0; p < 2; p++)
            for (int l = 0; l < r->layers; l++) {
                if (r->weights.status[l] != WEIGHTS_OK) continue;
                for (int h = 0; h < r->heads; h++)
                    csv_spectrum(f, r, p ? "ov" : "qk", "", l, h,
                                 (p ? r->ov : r->qk) + ((size_t)l * (size_t)r->heads + (size_t)h) * (size_t)dh, dh);
            }
    }
    return output_close_staged(f, tmp, path, why, size);
}
