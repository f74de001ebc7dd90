// decon-analyze: attention indicators, spectra and score statistics of attention
// recordings (DESIGN.md section 10; definitions as built in docs/design.md, "Analysis").
//
//   decon-analyze <attn.h5> [more.h5 ...] [--metrics] [--svd] [--logits] [--tol 1e-6]
//                 [--checkpoint ckpt.h5]... [--svd-sequences N] [--block NB] [--out DIR]
//   mpirun -np 4 decon-analyze runs/a/attn.h5 runs/b/attn.h5 --svd --out reports/ab
//
// Work over the MPI ranks: the indicators are split by (file, step, layer, sequence)
// round-robin, the weight spectra by (file, layer); every attention SVD runs on one 2-D
// BLACS grid over all ranks (pdgesvd, block-cyclic). Rank 0 reads what the grid needs,
// reduces the results, normalises across the files and writes every output.
//
// Errors: every check ends with all ranks agreeing (agree_or_exit): the lowest failing
// rank's one-line message is printed once by rank 0 and every rank exits 1; nothing hangs.
// Unexpected failures (out of memory) go through fatal(), which aborts every rank.
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis/results.h"
#include "analysis/svd.h"
#include "core/errors.h"
#include "core/histogram.h"

enum { MAX_INPUTS = 256 };
static const double ROW_SUM_TOLERANCE = 2e-3;   // rows "sum to 1" within this (float16 included)

static int rank = 0, world = 1;

static void abort_all_ranks(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

// Collective. Each rank passes its first error (NULL when none). When any rank has one,
// rank 0 prints the lowest failing rank's line and every rank exits 1.
static void agree_or_exit(const char *why) {
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

static void usage(void) {
    if (rank != 0) return;
    fprintf(stderr,
            "usage: decon-analyze <attn.h5> [more.h5 ...] [--metrics] [--svd] [--logits] [--tol 1e-6]\n"
            "                     [--checkpoint ckpt.h5]... [--svd-sequences N] [--block NB] [--out DIR]\n"
            "  --metrics        attention indicators (ENTROPY, CONC, HEADDIV, SINK, LOCFOC_0..3), raw and\n"
            "                   min-max normalised across every file given\n"
            "  --svd            singular values of every head's A (ScaLAPACK pdgesvd over the ranks) and\n"
            "                   effective / stable / numerical rank\n"
            "  --logits         pre-softmax score statistics per layer\n"
            "                   (none of the three: --metrics --logits)\n"
            "  --tol X          numerical rank threshold relative to the largest singular value (1e-6)\n"
            "  --checkpoint F   spectra of Wq_j Wk_j^T and Wv_j Wo_j per head; once per recording, same order\n"
            "  --svd-sequences N  recorded sequences per head that enter the SVD (default: all)\n"
            "  --block NB       ScaLAPACK block size (default: 64, smaller for small matrices)\n"
            "  --out DIR        output directory (created; default: <first recording's dir>/analysis)\n"
            "outputs: <run>.layers.csv, <run>.heads.csv, <run>.spectra.csv, <run>.json per recording, analysis.h5\n");
}

static double parse_number(const char *option, const char *text, double low, double high, char *why, size_t size) {
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !(value >= low && value <= high))
        snprintf(why, size, "%s %s: expected a number in [%g, %g]", option, text, low, high);
    return value;
}

// mkdir -p; false with errno set on failure.
static bool make_directories(const char *path) {
    char buffer[4096];
    if (snprintf(buffer, sizeof buffer, "%s", path) >= (int)sizeof buffer) {
        errno = ENAMETOOLONG;
        return false;
    }
    for (char *p = buffer + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buffer, 0777) != 0 && errno != EEXIST) return false;
        *p = '/';
    }
    if (mkdir(buffer, 0777) != 0 && errno != EEXIST) return false;
    struct stat st;
    if (stat(buffer, &st) != 0) return false;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return false;
    }
    return true;
}

// Threads per rank for OpenBLAS (ScaLAPACK's local work): OMP_NUM_THREADS, else 1. The SVD
// is BLAS-2 bound: measured at L = 2048 on 2 cores, one rank with 2 threads took 2.6 s,
// 1 thread 2.35 s, 2 ranks of 1 thread 1.3 s (docs/design.md, Analysis): use one rank
// per core.
static void set_threads(void) {
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
}

static double *nan_array(size_t count) {
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

// Indicators: units (file, step, layer, sequence) round-robin over the ranks; sums reduced
// to rank 0, then divided by the number of sequences.
static void phase_metrics(run_results *runs, int count) {
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

// Score statistics: small, read by rank 0.
static void phase_logits(run_results *runs, int count) {
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

// Attention spectra: every SVD on the grid over all ranks; rank 0 reads A.
static void phase_svd(run_results *runs, int count, const analysis_options *o) {
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

// Weight spectra: units (file, layer) round-robin, sums reduced to rank 0.
static void phase_weights(run_results *runs, int count, const analysis_options *o) {
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

// ENTROPY, CONC and HEADDIV min-max normalised per step number over every (file, layer).
static void normalise(run_results *runs, int count, normalisation_table *table) {
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

static void print_notes(const run_results *runs, int count, const analysis_options *o) {
    for (int f = 0; f < count && o->metrics; f++) {
        const run_results *r = &runs[f];
        for (int l = 0; l < r->layers; l++) {
            double worst = 0.0, upper = 0.0;
            const char *row_sums = NULL;
            for (int s = 0; s < r->steps; s++) {
                const double *lv = r->layer_values + results_layer_index(r, s, l) * LAYER_FIELDS;
                if (!r->rec.steps[s].layers[l].has_attn) continue;
                if (lv[L_ROWS_SUM_TO_ONE] != 1.0) row_sums = r->rec.steps[s].layers[l].row_sums;
                worst = fmax(worst, lv[L_ROW_SUM_MAX_ERROR]);
                upper = fmax(upper, lv[L_UPPER_MASS]);
            }
            if (row_sums)
                info("note: %s layer %d (%s): rows do not sum to 1 (row_sums attribute '%s', max |row sum - 1| %.3g); "
                     "indicators computed on the raw values and flagged rows_sum_to_one = 0", r->name, l + 1,
                     r->rec.steps[0].layers[l].variant, row_sums, worst);
            if (upper > 0.0)
                info("note: %s layer %d: %.3g attention mass above the diagonal (recording not causal?); the "
                     "indicators read the causal triangle only", r->name, l + 1, upper);
        }
    }
}

static void print_summary(const run_results *runs, int count, const analysis_options *o) {
    for (int f = 0; f < count; f++) {
        const run_results *r = &runs[f];
        int s = r->steps - 1;
        info("%s", "");
        info("%s  (%s, %s, plan %s; %d sequences of %d tokens; step %lld of %d recorded)", r->name, r->rec.variant,
             r->rec.layout, r->rec.layer_plan, r->rec.sequences, r->length, (long long)r->rec.steps[s].step, r->steps);
        char header[512];
        int used = snprintf(header, sizeof header, "  %-5s %-12s", "layer", "variant");
        if (o->metrics)
            used += snprintf(header + used, sizeof header - (size_t)used, " %8s %8s %8s %8s %8s %8s  %5s %5s %5s",
                             "ENTROPY", "CONC", "HEADDIV", "SINK", "LOCFOC0", "LOCFOC1", "ent~", "conc~", "hdiv~");
        if (o->svd) used += snprintf(header + used, sizeof header - (size_t)used, " %8s %8s", "eff.rank", "st.rank");
        if (o->logits) snprintf(header + used, sizeof header - (size_t)used, " %9s %9s", "score min", "score max");
        info("%s", header);
        for (int l = 0; l < r->layers; l++) {
            size_t at = results_layer_index(r, s, l);
            const double *lv = r->layer_values + at * LAYER_FIELDS, *sv = r->layer_svd + at * SVD_FIELDS;
            const double *g = r->logits + at * LOGIT_FIELDS;
            char line[512];
            used = snprintf(line, sizeof line, "  %-5d %-12s", l + 1, r->rec.steps[s].layers[l].variant);
            if (!r->rec.steps[s].layers[l].has_attn) {
                info("%s  (%s)", line, r->rec.steps[s].layers[l].recorded ? "no attention matrix" : "not recorded");
                continue;
            }
            if (o->metrics)
                used += snprintf(line + used, sizeof line - (size_t)used,
                                 " %8.4f %8.4f %8.5f %8.4f %8.4f %8.4f  %5.2f %5.2f %5.2f%s", lv[L_ENTROPY], lv[L_CONC],
                                 lv[L_HEADDIV], lv[L_SINK], lv[L_LOCFOC0], lv[L_LOCFOC1], lv[L_ENTROPY_NORM],
                                 lv[L_CONC_NORM], lv[L_HEADDIV_NORM], lv[L_ROWS_SUM_TO_ONE] == 1.0 ? "" : " *");
            if (o->svd) used += snprintf(line + used, sizeof line - (size_t)used, " %8.2f %8.2f", sv[S_EFFECTIVE], sv[S_STABLE]);
            if (o->logits) snprintf(line + used, sizeof line - (size_t)used, " %9.3g %9.3g", g[0], g[1]);
            info("%s", line);
        }
    }
    if (o->metrics) info("  (~ = min-max normalised across every file given, per step; * = rows do not sum to 1)");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    log_set_rank(rank, world);
    fatal_set_exit_hook(abort_all_ranks);
    recording_quiet_hdf5();

    // ---- arguments (every rank parses the same argv, so every rank agrees) ----
    analysis_options options = {.tol = 1e-6, .svd_sequences = 1 << 30, .block = 0};
    const char *inputs[MAX_INPUTS], *checkpoints[MAX_INPUTS], *out = NULL;
    int input_count = 0, checkpoint_count = 0;
    char why[RECORDING_WHY] = "";
    size_t used = 0;
    for (int i = 0; i < argc && used < sizeof options.command; i++)
        used += (size_t)snprintf(options.command + used, sizeof options.command - used, "%s%s", i ? " " : "", argv[i]);
    for (int i = 1; i < argc && !why[0]; i++) {
        const char *arg = argv[i];
        bool takes_value = strcmp(arg, "--tol") == 0 || strcmp(arg, "--checkpoint") == 0 || strcmp(arg, "--out") == 0 ||
                           strcmp(arg, "--svd-sequences") == 0 || strcmp(arg, "--block") == 0;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage();
            MPI_Finalize();
            return 0;
        }
        if (takes_value && i + 1 >= argc) {
            snprintf(why, sizeof why, "%s needs a value; see decon-analyze --help", arg);
            break;
        }
        if (strcmp(arg, "--metrics") == 0) options.metrics = true;
        else if (strcmp(arg, "--svd") == 0) options.svd = true;
        else if (strcmp(arg, "--logits") == 0) options.logits = true;
        else if (strcmp(arg, "--tol") == 0) options.tol = parse_number(arg, argv[++i], 0.0, 1.0, why, sizeof why);
        else if (strcmp(arg, "--svd-sequences") == 0)
            options.svd_sequences = (int)parse_number(arg, argv[++i], 1, 1e9, why, sizeof why);
        else if (strcmp(arg, "--block") == 0) options.block = (int)parse_number(arg, argv[++i], 1, 4096, why, sizeof why);
        else if (strcmp(arg, "--out") == 0) out = argv[++i];
        else if (strcmp(arg, "--checkpoint") == 0) {
            if (checkpoint_count == MAX_INPUTS) snprintf(why, sizeof why, "more than %d --checkpoint options", MAX_INPUTS);
            else checkpoints[checkpoint_count++] = argv[++i];
        } else if (arg[0] == '-' && arg[1]) snprintf(why, sizeof why, "unknown option %s; see decon-analyze --help", arg);
        else if (input_count == MAX_INPUTS) snprintf(why, sizeof why, "more than %d recordings given", MAX_INPUTS);
        else inputs[input_count++] = arg;
    }
    if (!why[0] && input_count == 0) {
        usage();
        snprintf(why, sizeof why, "no recording given; e.g. decon-analyze runs/<run>/attn.h5 --metrics --svd");
    }
    if (!why[0] && checkpoint_count && checkpoint_count != input_count)
        snprintf(why, sizeof why, "--checkpoint given %d time(s) for %d recording(s): give one --checkpoint per "
                 "recording, in the same order", checkpoint_count, input_count);
    agree_or_exit(why[0] ? why : NULL);
    if (!options.metrics && !options.svd && !options.logits) options.metrics = options.logits = true;
    options.weights = checkpoint_count > 0;
    char default_out[4096];
    if (!out) {
        const char *slash = strrchr(inputs[0], '/');
        if (slash) snprintf(default_out, sizeof default_out, "%.*s/analysis", (int)(slash - inputs[0]), inputs[0]);
        else snprintf(default_out, sizeof default_out, "analysis");
        out = default_out;
    }
    set_threads();

    // ---- check every input before any work ----
    run_results *runs = xcalloc((size_t)input_count, sizeof *runs);
    const char *error = NULL;
    for (int f = 0; f < input_count && !error; f++)
        if (!recording_scan(&runs[f].rec, inputs[f], why, sizeof why)) error = why;
    agree_or_exit(error);
    for (int f = 0; f < input_count && !error; f++)
        if (checkpoint_count && !weights_scan(&runs[f].weights, checkpoints[f], &runs[f].rec, why, sizeof why)) error = why;
    agree_or_exit(error);
    for (int f = 0; f < input_count; f++) {
        run_results *r = &runs[f];
        char base[128];
        recording_run_name(r->rec.path, base, sizeof base);
        snprintf(r->name, sizeof r->name, "%s", base);
        for (int suffix = 2, clash = 1; clash; suffix++) {
            clash = 0;
            for (int g = 0; g < f; g++) clash |= strcmp(runs[g].name, r->name) == 0;
            if (clash) snprintf(r->name, sizeof r->name, "%.100s_%d", base, suffix);
        }
        r->steps = r->rec.step_count;
        r->layers = r->rec.num_layers;
        r->heads = r->rec.num_heads;
        r->length = r->rec.length;
        size_t cells = (size_t)r->steps * (size_t)r->layers, head_cells = cells * (size_t)r->heads;
        r->head_values = nan_array(head_cells * HEAD_FIELDS);
        r->layer_values = nan_array(cells * LAYER_FIELDS);
        r->svd = nan_array(options.svd ? head_cells * SVD_FIELDS : 0);
        r->layer_svd = nan_array(cells * SVD_FIELDS);
        r->spectra = nan_array(options.svd ? head_cells * (size_t)r->length : 0);
        r->logits = nan_array(cells * LOGIT_FIELDS);
        r->hist_counts = (double **)xcalloc(cells, sizeof(double *));
        r->hist_edges = (double **)xcalloc(cells, sizeof(double *));
        r->has_weights = checkpoint_count > 0;
        if (r->has_weights) {
            size_t n = (size_t)r->layers * (size_t)r->heads;
            r->qk = nan_array(n * (size_t)r->weights.head_dim);
            r->ov = nan_array(n * (size_t)r->weights.head_dim);
            r->qk_ranks = nan_array(n * SVD_FIELDS);
            r->ov_ranks = nan_array(n * SVD_FIELDS);
        }
        info("%s: %s (%s, %s), %d steps x %d layers x %d heads, %d sequences of %d tokens (%s)%s%s", r->name,
             r->rec.path, r->rec.variant, r->rec.layout, r->steps, r->layers, r->heads, r->rec.sequences, r->length,
             r->rec.dtype, r->has_weights ? "; weights from " : "", r->has_weights ? r->weights.path : "");
    }

    // ---- the work ----
    double start = MPI_Wtime();
    if (options.metrics) phase_metrics(runs, input_count);
    if (options.logits) phase_logits(runs, input_count);
    if (options.svd) phase_svd(runs, input_count, &options);
    if (options.weights) phase_weights(runs, input_count, &options);

    // ---- normalise, report and write (rank 0), then agree on the outcome ----
    normalisation_table table = {0};
    error = NULL;
    if (rank == 0) {
        normalise(runs, input_count, &table);
        print_notes(runs, input_count, &options);
        print_summary(runs, input_count, &options);
        if (!make_directories(out))
            snprintf(why, sizeof why, "cannot create the output directory %.900s (%s): pass a writable --out", out,
                     strerror(errno));
        else if (!output_write_all(out, runs, input_count, &table, &options, why, sizeof why)) error = why;
        if (why[0]) error = why;
    }
    agree_or_exit(error);
    info("%s", "");
    info("wrote %s/analysis.h5 and per-run .layers.csv, .heads.csv%s, .json (%d run%s) in %.1f s", out,
         options.svd || options.weights ? ", .spectra.csv" : "", input_count, input_count == 1 ? "" : "s",
         MPI_Wtime() - start);

    for (int f = 0; f < input_count; f++) {
        run_results *r = &runs[f];
        size_t cells = (size_t)r->steps * (size_t)r->layers;
        for (size_t c = 0; c < cells; c++) {
            free(r->hist_counts[c]);
            free(r->hist_edges[c]);
        }
        free((void *)r->hist_counts);
        free((void *)r->hist_edges);
        free(r->head_values);
        free(r->layer_values);
        free(r->svd);
        free(r->layer_svd);
        free(r->spectra);
        free(r->logits);
        free(r->qk);
        free(r->ov);
        free(r->qk_ranks);
        free(r->ov_ranks);
        if (r->has_weights) weights_free(&r->weights);
        recording_free(&r->rec);
    }
    free(runs);
    free(table.steps);
    free(table.min);
    free(table.max);
    free(table.members);
    MPI_Finalize();
    return 0;
}
