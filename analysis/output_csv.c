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

bool output_layers_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                       size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.layers.csv", out, r->name);
    FILE *f = output_open_tmp(path, tmp, sizeof tmp, why, size);
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
    return output_close_staged(f, tmp, path, why, size);
}

bool output_heads_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                      size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.heads.csv", out, r->name);
    FILE *f = output_open_tmp(path, tmp, sizeof tmp, why, size);
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
    return output_close_staged(f, tmp, path, why, size);
}

// Long format: source (attn | qk | ov), step (empty for weights), layer, head, index, value.
bool output_spectra_csv(const char *out, const run_results *r, const analysis_options *o, char *why,
                        size_t size) {
    char path[4600], tmp[4700];
    snprintf(path, sizeof path, "%s/%s.spectra.csv", out, r->name);
    FILE *f = output_open_tmp(path, tmp, sizeof tmp, why, size);
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
    return output_close_staged(f, tmp, path, why, size);
}
