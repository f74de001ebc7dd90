// decon-analyze: attention indicators, spectra and score statistics of attention
// recordings (DESIGN.md section 10; definitions as built in docs/design.md, "Analysis").
//
//   decon-analyze <attn.h5> [more.h5 ...] [--metrics] [--svd] [--logits] [--tol 1e-6]
//                 [--checkpoint ckpt.h5]... [--svd-sequences N] [--block NB] [--out DIR]
//   mpirun -np 4 decon-analyze runs/a/attn.h5 runs/b/attn.h5 --svd --out reports/ab
//
// This file parses the options, checks every input and writes the outputs (rank 0); the
// work over the MPI ranks is in phases.c: the indicators are split by (file, step, layer,
// sequence) round-robin, the weight spectra by (file, layer); every attention SVD runs on
// one 2-D BLACS grid over all ranks (pdgesvd, block-cyclic). Rank 0 reads what the grid
// needs, reduces the results, normalises across the files and writes every output.
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

#include "analysis/phases.h"
#include "core/errors.h"
#include "io/hdf5_helpers.h"
#include "par/program.h"

enum { MAX_INPUTS = 256 };

static int rank = 0, world = 1;

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
    program_start(&argc, &argv, &rank, &world);
    phases_init();
    hdf5_quiet();

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
