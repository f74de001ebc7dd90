// The work of decon-analyze over the MPI ranks (phases.h): the indicators split by
// (file, step, layer, sequence) round-robin, the weight spectra by (file, layer), every
// attention SVD on one 2-D BLACS grid over all ranks (pdgesvd, block-cyclic); rank 0
// reads what the grid needs, reduces the results and normalises across the files.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/phases.h"
#include "analysis/svd.h"
#include "core/errors.h"
#include "core/histogram.h"

static const double ROW_SUM_TOLERANCE = 2e-3;   // rows "sum to 1" within this (float16 included)

// This process's rank in MPI_COMM_WORLD and the number of ranks (phases_init).
static int rank = 0, world = 1;

void phases_init(void) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
}

void agree_or_exit(const char *why) {
    int mine = why ? rank : world, first = world;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == world) return;
    char message[RECORDING_WHY] = "";
    if (rank == first) snprintf(message, sizeof message, "%s", why);
    MPI_Bcast(message, (int)sizeof message, MPI_CHAR, first, MPI_COMM_WORLD);
    if (rank == 0) {
        fprintf(stderr, "decon: error: %s\n", message);
        fflush(stderr);
    }
    fflush(stdout);
    MPI_Finalize();
    exit(1);
}

double *nan_array(size_t count) {
    double *a = xmalloc((count ? count : 1) * sizeof(double));
    for (size_t i = 0; i < count; i++) a[i] = NAN;
    return a;
}

static double *zero_array(size_t count) { return xcalloc(count ? count : 1, sizeof(double)); }

static void reduce_to_root(double *values, size_t count, MPI_Op op) {
    const size_t chunk = (size_t)1 << 28;
    for (size_t start = 0; start < count; start += chunk) {
        int n = (int)(count - start < chunk ? count - start : chunk);
        MPI_Reduce(rank == 0 ? MPI_IN_PLACE : values + start, values + start, n, MPI_DOUBLE, op, 0, MPI_COMM_WORLD);
    }
}

static void spectrum_fields(double *fields, const double *s, int n, double tol) {
    fields[S_EFFECTIVE] = rank_effective(s, n);
    fields[S_STABLE] = rank_stable(s, n);
    fields[S_NUMERICAL] = rank_numerical(s, n, tol);
    double largest = 0.0;
    for (int i = 0; i < n; i++) largest = fmax(largest, s[i]);
    fields[S_MAX] = largest;
}

// ---- phases ---------------------------------------------------------------------------------

void phase_metrics(run_results *runs, int count) {
    const char *error = NULL;
    char why[RECORDING_WHY];
    long long unit = 0;
    for (int f = 0; f < count; f++) {
        run_results *r = &runs[f];
        const int L = r->length, H = r->heads;
        size_t cells = (size_t)r->steps * (size_t)r->layers;
        double *head_sums = zero_array(cells * (size_t)H * HEAD_FIELDS);
        double *headdiv = zero_array(cells), *maxima = zero_array(cells * 2);
        double *a = NULL;
        head_spread spread = {0};
        hid_t file = -1;
        for (int s = 0; s < r->steps && !error; s++)
            for (int l = 0; l < r->layers && !error; l++) {
                if (!r->rec.steps[s].layers[l].has_attn) continue;
                for (int k = 0; k < r->rec.sequences && !error; k++) {
                    if (unit++ % world != rank) continue;
                    if (file < 0) {
                        file = recording_open(r->rec.path, why, sizeof why);
                        if (file < 0) {
                            error = why;
                            break;
                        }
                        a = xmalloc((size_t)L * (size_t)L * sizeof(double));
                        head_spread_init(&spread, L);
                    }
                    head_spread_reset(&spread);
                    size_t cell = results_layer_index(r, s, l);
                    for (int h = 0; h < H; h++) {
                        if (!recording_read_attn(file, &r->rec, s, l, k, h, a, why, sizeof why)) {
                            error = why;
                            break;
                        }
                        head_indicators x;
                        indicators_head(&x, a, L);
                        double *sum = head_sums + (cell * (size_t)H + (size_t)h) * HEAD_FIELDS;
                        sum[H_ENTROPY] += x.entropy;
                        sum[H_CONC] += x.conc;
                        sum[H_SINK] += x.sink;
                        for (int n = 0; n < LOCFOC_COUNT; n++) sum[H_LOCFOC0 + n] += x.locfoc[n];
                        sum[H_ROW_SUM_MEAN] += x.row_sum_mean;
                        sum[H_NEGATIVE_FRACTION] += x.negative_fraction;
                        maxima[cell * 2] = fmax(maxima[cell * 2], x.row_sum_max_error);
                        maxima[cell * 2 + 1] = fmax(maxima[cell * 2 + 1], x.upper_mass);
                        head_spread_add(&spread, a);
                    }
                    if (!error) headdiv[cell] += head_spread_headdiv(&spread);
                }
            }
        if (file >= 0) {
            H5Fclose(file);
            free(a);
            head_spread_free(&spread);
        }
        // The loops above hold no collective, so every rank gets here: agree, then reduce.
        agree_or_exit(error);
        reduce_to_root(head_sums, cells * (size_t)H * HEAD_FIELDS, MPI_SUM);
        reduce_to_root(headdiv, cells, MPI_SUM);
        reduce_to_root(maxima, cells * 2, MPI_MAX);
        if (rank == 0) {
            const double K = r->rec.sequences;
            for (int s = 0; s < r->steps; s++)
                for (int l = 0; l < r->layers; l++) {
                    size_t cell = results_layer_index(r, s, l);
                    double *lv = r->layer_values + cell * LAYER_FIELDS;
                    if (!r->rec.steps[s].layers[l].has_attn) continue;
                    for (int i = 0; i < LAYER_FIELDS; i++) lv[i] = 0.0;
                    for (int h = 0; h < H; h++) {
                        double *hv = r->head_values + (cell * (size_t)H + (size_t)h) * HEAD_FIELDS;
                        const double *sum = head_sums + (cell * (size_t)H + (size_t)h) * HEAD_FIELDS;
                        for (int i = 0; i < HEAD_FIELDS; i++) hv[i] = sum[i] / K;
                        lv[L_ENTROPY] += hv[H_ENTROPY] / H;
                        lv[L_CONC] += hv[H_CONC] / H;
                        lv[L_SINK] += hv[H_SINK] / H;
                        for (int n = 0; n < LOCFOC_COUNT; n++) lv[L_LOCFOC0 + n] += hv[H_LOCFOC0 + n] / H;
                        lv[L_ROW_SUM_MEAN] += hv[H_ROW_SUM_MEAN] / H;
                        lv[L_NEGATIVE_FRACTION] += hv[H_NEGATIVE_FRACTION] / H;
                    }
                    lv[L_HEADDIV] = headdiv[cell] / K;
                    lv[L_ROW_SUM_MAX_ERROR] = maxima[cell * 2];
                    lv[L_UPPER_MASS] = maxima[cell * 2 + 1];
                    lv[L_ENTROPY_NORM] = lv[L_CONC_NORM] = lv[L_HEADDIV_NORM] = NAN;
                    lv[L_ROWS_SUM_TO_ONE] =
                        r->rec.steps[s].layers[l].rows_sum_to_one && lv[L_ROW_SUM_MAX_ERROR] <= ROW_SUM_TOLERANCE;
                }
        }
        free(head_sums);
        free(headdiv);
        free(maxima);
    }
}

void phase_logits(run_results *runs, int count) {
    const char *error = NULL;
    char why[RECORDING_WHY];
    for (int f = 0; f < count && rank == 0 && !error; f++) {
        run_results *r = &runs[f];
        hid_t file = -1;
        for (int s = 0; s < r->steps && !error; s++)
            for (int l = 0; l < r->layers && !error; l++) {
                const recording_layer *rl = &r->rec.steps[s].layers[l];
                if (!rl->has_scores) continue;
                if (file < 0) file = recording_open(r->rec.path, why, sizeof why);
                if (file < 0) {
                    error = why;
                    break;
                }
                size_t cell = results_layer_index(r, s, l);
                double *g = r->logits + cell * LOGIT_FIELDS;
                double *counts = xmalloc(((size_t)rl->bins + 1) * sizeof(double));
                double *edges = xmalloc(((size_t)rl->bins + 1) * sizeof(double));
                if (!recording_read_logits(file, &r->rec, s, l, g, counts, edges, why, sizeof why)) {
                    error = why;
                    free(counts);
                    free(edges);
                    break;
                }
                // Bounded by the exact min and max of logits_stats (g[0], g[1]), as the recording's own p1..p99.
                const double q[4] = {0.05, 0.25, 0.75, 0.95};
                for (int i = 0; i < 4; i++) g[G_HIST_P5 + i] = histogram_quantile(counts, edges, rl->bins, q[i], g[0], g[1]);
                double total = 0.0;
                for (int b = 0; b < rl->bins; b++) total += counts[b];
                g[G_HIST_TOTAL] = total;
                r->hist_counts[cell] = counts;
                r->hist_edges[cell] = edges;
            }
        if (file >= 0) H5Fclose(file);
    }
    agree_or_exit(error);
}

void phase_svd(run_results *runs, int count, const analysis_options *o) {
    svd_grid grid;
    svd_grid_init(&grid);
    long long total = 0, done = 0;
    for (int f = 0; f < count; f++)
        for (int s = 0; s < runs[f].steps; s++)
            for (int l = 0; l < runs[f].layers; l++)
                if (runs[f].rec.steps[s].layers[l].has_attn) {
                    int k = o->svd_sequences < runs[f].rec.sequences ? o->svd_sequences : runs[f].rec.sequences;
                    total += (long long)runs[f].heads * k;
                }
    if (total > 0)
        info("svd: %lld matrices on a %d x %d BLACS grid (pdgesvd, block-cyclic)", total, grid.nprow, grid.npcol);
    double start = MPI_Wtime(), last = start;
    char why[RECORDING_WHY];
    for (int f = 0; f < count; f++) {
        run_results *r = &runs[f];
        const int L = r->length, K = o->svd_sequences < r->rec.sequences ? o->svd_sequences : r->rec.sequences;
        double *a = rank == 0 ? xmalloc((size_t)L * (size_t)L * sizeof(double)) : NULL;
        double *s_values = xmalloc((size_t)L * sizeof(double)), fields[SVD_FIELDS];
        hid_t file = -1;
        for (int s = 0; s < r->steps; s++)
            for (int l = 0; l < r->layers; l++) {
                if (!r->rec.steps[s].layers[l].has_attn) continue;
                for (int h = 0; h < r->heads; h++) {
                    size_t at = results_head_index(r, s, l, h);
                    double *spectrum = r->spectra + at * (size_t)L, *svd = r->svd + at * SVD_FIELDS;
                    if (rank == 0) {
                        for (int i = 0; i < L; i++) spectrum[i] = 0.0;
                        for (int i = 0; i < SVD_FIELDS; i++) svd[i] = 0.0;
                    }
                    for (int k = 0; k < K; k++) {
                        const char *error = NULL;
                        if (rank == 0) {
                            if (file < 0) file = recording_open(r->rec.path, why, sizeof why);
                            if (file < 0 || !recording_read_attn(file, &r->rec, s, l, k, h, a, why, sizeof why))
                                error = why;
                        }
                        agree_or_exit(error);
                        int status = svd_distributed(&grid, L, L, a, o->block, s_values), worst = 0;
                        status = abs(status);
                        MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
                        if (worst != 0) {
                            snprintf(why, sizeof why, "%s: pdgesvd did not converge (info %d) for step %lld layer %d "
                                     "head %d sequence %d: the matrix may hold extreme values; run without --svd",
                                     r->rec.path, worst, (long long)r->rec.steps[s].step, l, h, k);
                            agree_or_exit(why);
                        }
                        if (rank == 0) {
                            spectrum_fields(fields, s_values, L, o->tol);
                            for (int i = 0; i < L; i++) spectrum[i] += s_values[i] / K;
                            for (int i = 0; i < SVD_FIELDS; i++) svd[i] += fields[i] / K;
                        }
                        done++;
                        double now = MPI_Wtime();
                        if (now - last > 10.0 && done < total) {
                            info("svd: %lld/%lld (%.0f s)", done, total, now - start);
                            last = now;
                        }
                    }
                }
            }
        if (file >= 0) H5Fclose(file);
        free(a);
        free(s_values);
    }
    if (total > 0) info("svd: %lld matrices in %.1f s", total, MPI_Wtime() - start);
    svd_grid_free(&grid);
    // Per-layer means over heads (rank 0).
    if (rank == 0)
        for (int f = 0; f < count; f++) {
            run_results *r = &runs[f];
            for (int s = 0; s < r->steps; s++)
                for (int l = 0; l < r->layers; l++) {
                    if (!r->rec.steps[s].layers[l].has_attn) continue;
                    double *out = r->layer_svd + results_layer_index(r, s, l) * SVD_FIELDS;
                    for (int i = 0; i < SVD_FIELDS; i++) {
                        out[i] = 0.0;
                        for (int h = 0; h < r->heads; h++) out[i] += r->svd[results_head_index(r, s, l, h) * SVD_FIELDS + i];
                        out[i] /= r->heads;
                    }
                }
        }
}

void phase_weights(run_results *runs, int count, const analysis_options *o) {
    const char *error = NULL;
    char why[RECORDING_WHY];
    long long unit = 0;
    for (int f = 0; f < count; f++) {
        run_results *r = &runs[f];
        if (!r->has_weights) continue;
        const weights_info *w = &r->weights;
        const size_t per_layer = (size_t)r->heads * (size_t)w->head_dim;
        size_t n = (size_t)r->layers * per_layer, nr = (size_t)r->layers * (size_t)r->heads * SVD_FIELDS;
        for (size_t i = 0; i < n; i++) r->qk[i] = r->ov[i] = 0.0;
        for (size_t i = 0; i < nr; i++) r->qk_ranks[i] = r->ov_ranks[i] = 0.0;
        hid_t file = -1;
        for (int l = 0; l < r->layers && !error; l++) {
            if (w->status[l] != WEIGHTS_OK || unit++ % world != rank) continue;
            if (file < 0) file = weights_open(w->path, why, sizeof why);
            if (file < 0) {
                error = why;
                break;
            }
            double *qk = r->qk + (size_t)l * per_layer, *ov = r->ov + (size_t)l * per_layer;
            if (!weights_layer_spectra(file, w, l, qk, ov, why, sizeof why)) {
                error = why;
                break;
            }
            for (int h = 0; h < r->heads; h++) {
                size_t at = ((size_t)l * (size_t)r->heads + (size_t)h);
                spectrum_fields(r->qk_ranks + at * SVD_FIELDS, qk + (size_t)h * w->head_dim, w->head_dim, o->tol);
                spectrum_fields(r->ov_ranks + at * SVD_FIELDS, ov + (size_t)h * w->head_dim, w->head_dim, o->tol);
            }
        }
        if (file >= 0) H5Fclose(file);
        agree_or_exit(error);   // no collective above: every rank gets here
        reduce_to_root(r->qk, n, MPI_SUM);
        reduce_to_root(r->ov, n, MPI_SUM);
        reduce_to_root(r->qk_ranks, nr, MPI_SUM);
        reduce_to_root(r->ov_ranks, nr, MPI_SUM);
        if (rank == 0)
            for (int l = 0; l < r->layers; l++) {
                if (w->status[l] == WEIGHTS_OK) continue;
                for (size_t i = 0; i < per_layer; i++) r->qk[l * per_layer + i] = r->ov[l * per_layer + i] = NAN;
                for (size_t i = 0; i < (size_t)r->heads * SVD_FIELDS; i++)
                    r->qk_ranks[l * (size_t)r->heads * SVD_FIELDS + i] = r->ov_ranks[l * (size_t)r->heads * SVD_FIELDS + i] = NAN;
            }
    }
}

void normalise(run_results *runs, int count, normalisation_table *table) {
    memset(table, 0, sizeof *table);
    int capacity = 0;
    for (int f = 0; f < count; f++) capacity += runs[f].steps;
    table->steps = xmalloc((size_t)(capacity ? capacity : 1) * sizeof(long long));
    table->min = nan_array((size_t)(capacity ? capacity : 1) * NORMALISED_COUNT);
    table->max = nan_array((size_t)(capacity ? capacity : 1) * NORMALISED_COUNT);
    table->members = xcalloc((size_t)(capacity ? capacity : 1), sizeof(int));
    for (int f = 0; f < count; f++)
        for (int s = 0; s < runs[f].steps; s++) {
            long long step = (long long)runs[f].rec.steps[s].step;
            bool seen = false;
            for (int i = 0; i < table->count && !seen; i++) seen = table->steps[i] == step;
            if (!seen) table->steps[table->count++] = step;
        }
    const int fields[NORMALISED_COUNT] = {L_ENTROPY, L_CONC, L_HEADDIV};
    const int targets[NORMALISED_COUNT] = {L_ENTROPY_NORM, L_CONC_NORM, L_HEADDIV_NORM};
    size_t most = 0;
    for (int f = 0; f < count; f++) most += (size_t)runs[f].layers;
    double *values = xmalloc((most ? most : 1) * sizeof(double)), *normalised = xmalloc((most ? most : 1) * sizeof(double));
    for (int n = 0; n < table->count; n++)
        for (int k = 0; k < NORMALISED_COUNT; k++) {
            size_t used = 0;
            for (int f = 0; f < count; f++)
                for (int s = 0; s < runs[f].steps; s++) {
                    if ((long long)runs[f].rec.steps[s].step != table->steps[n]) continue;
                    for (int l = 0; l < runs[f].layers; l++)
                        if (runs[f].rec.steps[s].layers[l].has_attn)
                            values[used++] = runs[f].layer_values[results_layer_index(&runs[f], s, l) * LAYER_FIELDS + fields[k]];
                }
            int members = minmax_normalise(normalised, values, NULL, used, &table->min[n * NORMALISED_COUNT + k],
                                           &table->max[n * NORMALISED_COUNT + k]);
            if (k == 0) table->members[n] = members;
            used = 0;
            for (int f = 0; f < count; f++)
                for (int s = 0; s < runs[f].steps; s++) {
                    if ((long long)runs[f].rec.steps[s].step != table->steps[n]) continue;
                    for (int l = 0; l < runs[f].layers; l++)
                        if (runs[f].rec.steps[s].layers[l].has_attn)
                            runs[f].layer_values[results_layer_index(&runs[f], s, l) * LAYER_FIELDS + targets[k]] =
                                normalised[used++];
                }
        }
    free(values);
    free(normalised);
}
