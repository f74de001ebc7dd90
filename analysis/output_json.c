// The JSON output of decon-analyze: <run>.json (output_internal.h). Missing values are
// null.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/output_internal.h"
#include "core/errors.h"

static const char *weights_status_name(weights_layer_status status) {
    return status == WEIGHTS_OK ? "ok" : status == WEIGHTS_ABSENT ? "absent" : "not_per_head";
}

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
    for (int i = 0; i < H_ROW_SUM_MEAN; i++) json_text(d, head_field_names[i], head_field_descriptions[i]);
    json_text(d, "headdiv", layer_field_descriptions[L_HEADDIV]);
    for (int i = 0; i < SVD_FIELDS; i++) json_text(d, svd_field_names[i], svd_field_descriptions[i]);
    json_text(d, "averaging", "every indicator is computed per recorded sequence and averaged over the sequences; "
              "layer values are means over heads (HEADDIV is per layer)");
    json_text(d, "normalisation", "x_norm = (x - min) / (max - min) over the per-layer values of every layer of every "
              "input file at the same step number (0 when max = min)");
    return d;
}

bool output_json(const char *out, const run_results *r, const normalisation_table *norm,
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
    FILE *f = output_open_tmp(path, tmp, sizeof tmp, why, size);
    if (!f) {
        free(text);
        return false;
    }
    fputs(text, f);
    fputc('\n', f);
    free(text);
    return output_close_staged(f, tmp, path, why, size);
}
