// One attention record through parallel HDF5, from open to close (attention_record.h;
// the checks of an existing file in attention_record_checks.c).
//
// Like checkpoints (checkpoint_write.c): the MPI-IO driver with collective transfers and
// collective metadata even on one rank, HDF5's error stacks silenced, every user-facing
// failure one fatal line. One record works on a copy: rank 0 copies path to <path>.tmp
// (or the first record creates <path>.tmp), every rank writes into it, and rank 0
// fsyncs and renames it over path after a barrier, so path always holds the complete
// recordings of earlier steps whatever happens during this one.
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/attention_record_internal.h"
#include "io/durable_file.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

enum { DEFLATE_LEVEL = 1 };

static const char *const STAT_FIELDS =
    "min, max, mean, p1, p50, p99, count_abs_gt_10, count_abs_gt_1000";

// ---------------------------------------------------------------------------------------
// The record and its HDF5 writes (a failed write ends the run)

struct attention_record {
    char path[4096], tmp[4200];
    MPI_Comm comm;
    int rank;
    attention_record_info info;
    int64_t step;
    hid_t file, dxpl, step_group, half_type;
    hid_t *groups, *attn;          // per layer (-1 when not open)
    uint16_t *half;                // float16 conversion buffer
    size_t half_capacity;
};

// The working copy is deleted (write_failure_fatal); the file under the final name still
// holds every earlier record. errno is not reported: after HDF5 calls it is stale.
static _Noreturn void write_failed(const attention_record *r, const char *what) {
    write_failure_fatal(r->comm, r->tmp, "cannot write attention recording %s (%s): the file system refused the write; "
                        "check free disk space, quotas (ulimit -f) and that the directory is writable; %s keeps the "
                        "earlier records", r->tmp, what, r->path);
}

// IEEE binary16, little-endian (h5py reads it as numpy float16).
static hid_t half_type(void) {
    hid_t type = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(type, 15, 10, 5, 0, 10);
    H5Tset_size(type, 2);
    H5Tset_ebias(type, 15);
    return type;
}

static void write_attribute_n(const attention_record *r, hid_t object, const char *name, hid_t file_type,
                              hid_t mem_type, const void *value, hsize_t count) {
    if (!hdf5_write_attribute(object, name, file_type, mem_type, value, count)) write_failed(r, name);
}

static void write_int(const attention_record *r, hid_t object, const char *name, int value) {
    write_attribute_n(r, object, name, H5T_STD_I32LE, H5T_NATIVE_INT, &value, 0);
}

static void write_int64(const attention_record *r, hid_t object, const char *name, int64_t value) {
    write_attribute_n(r, object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, 0);
}

static void write_double(const attention_record *r, hid_t object, const char *name, double value) {
    write_attribute_n(r, object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, 0);
}

static void write_string(const attention_record *r, hid_t object, const char *name, const char *value) {
    if (!hdf5_write_string(object, name, value)) write_failed(r, name);
}

static hid_t create_group(const attention_record *r, hid_t parent, const char *name, const char *description) {
    hid_t group = H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) write_failed(r, name);
    write_string(r, group, "description", description);
    return group;
}

// A small dataset written whole by rank 0 (the others select nothing). Collective.
static void write_small_dataset(const attention_record *r, hid_t parent, const char *name, hid_t file_type,
                                hid_t mem_type, int ndim, const hsize_t *dims, const void *data,
                                const char *description) {
    hid_t file_space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t mem_space = H5Scopy(file_space);
    hid_t dataset = H5Dcreate2(parent, name, file_type, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (dataset < 0) write_failed(r, name);
    if (r->rank != 0) {
        H5Sselect_none(file_space);
        H5Sselect_none(mem_space);
    }
    if (H5Dwrite(dataset, mem_type, mem_space, file_space, r->dxpl, data) < 0) write_failed(r, name);
    write_string(r, dataset, "description", description);
    H5Dclose(dataset);
    H5Sclose(mem_space);
    H5Sclose(file_space);
}

// ---------------------------------------------------------------------------------------
// Creating and checking the file-level contents

static void write_root(attention_record *r) {
    const attention_record_info *in = &r->info;
    hid_t f = r->file;
    int version = ATTENTION_RECORD_FORMAT_VERSION;
    write_int(r, f, "format_version", version);
    write_string(r, f, "kind", ATTENTION_RECORD_KIND);
    write_string(r, f, "writer", "decon");
    write_string(r, f, "description",
                 "Attention matrices A[sequence, head, i, t] and pre-softmax score histograms of fixed held-out "
                 "sequences at training steps: /step_<N>/layer_<l>/ (l 0-based), /tokens the sequences, /config "
                 "the run's config. See src/io/attention_record.h.");
    write_string(r, f, "variant", in->variant);
    write_string(r, f, "layout", in->layout);
    write_string(r, f, "layer_plan", in->layer_plan);
    write_int(r, f, "num_layers", in->num_layers);
    write_int(r, f, "num_heads", in->num_heads);
    write_int(r, f, "num_key_value_heads", in->num_kv_heads);
    write_int(r, f, "head_dim", in->head_dim);
    write_int(r, f, "sequence_length", in->sequence_length);
    write_int(r, f, "sequences", in->sequences);
    write_string(r, f, "dtype", in->float16 ? "float16" : "float32");
    write_string(r, f, "source", in->source);
    write_int(r, f, "histogram_bins", SCORE_BINS);
    int *recorded = xmalloc((size_t)in->num_layers * sizeof(int));
    hsize_t count = 0;
    for (int l = 0; l < in->num_layers; l++)
        if (in->layers[l]) recorded[count++] = l;
    write_attribute_n(r, f, "recorded_layers", H5T_STD_I32LE, H5T_NATIVE_INT, recorded, count);
    free(recorded);

    const char *text = in->config_text ? in->config_text : "";
    hid_t type = hdf5_string_type(strlen(text));
    write_small_dataset(r, f, "config", type, type, 0, NULL, text, "the resolved config text of the run");
    H5Tclose(type);
    hsize_t dims[2] = {(hsize_t)in->sequences, (hsize_t)in->sequence_length};
    write_small_dataset(r, f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT, 2, dims, in->tokens,
                        "input token ids [sequence, position] of the recorded sequences: sequence k is window k "
                        "(tokens [k L, (k+1) L)) of the shard named by the root attribute `source`");
}

// ---------------------------------------------------------------------------------------
// One record

attention_record *attention_record_open(const char *path, const attention_record_info *info, int64_t step,
                                        MPI_Comm comm) {
    hdf5_quiet();
    attention_record *r = xcalloc(1, sizeof *r);
    if (strlen(path) >= sizeof r->path) fatal("attention recording path is too long: %.80s...", path);
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->tmp, sizeof r->tmp, "%s.tmp", path);
    r->comm = comm;
    MPI_Comm_rank(comm, &r->rank);
    r->info = *info;
    r->step = step;
    int n = info->num_layers;
    r->groups = xmalloc((size_t)n * sizeof(hid_t));
    r->attn = xmalloc((size_t)n * sizeof(hid_t));
    for (int l = 0; l < n; l++) r->groups[l] = r->attn[l] = -1;

    // Rank 0 decides between creating and appending, and makes the working copy.
    char message[MESSAGE_MAX] = "";
    int exists = 0;
    if (r->rank == 0) {
        exists = attention_record_diagnose_existing(path, message, sizeof message);
        if (exists && !message[0] && !attention_record_copy_file(path, r->tmp, message, sizeof message)) unlink(r->tmp);
    }
    fatal_if_root_failed(message, MESSAGE_MAX, comm);
    MPI_Bcast(&exists, 1, MPI_INT, 0, comm);

    hid_t fapl = hdf5_access_plist(comm);
    r->file = exists ? H5Fopen(r->tmp, H5F_ACC_RDWR, fapl) : H5Fcreate(r->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (r->file < 0)
        write_failure_fatal(comm, r->tmp, "cannot %s attention recording %s: check that the directory exists and is "
                            "writable; %s keeps the earlier records", exists ? "open" : "create", r->tmp, path);
    r->dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(r->dxpl, H5FD_MPIO_COLLECTIVE);
    r->half_type = half_type();
    if (exists) {  // checked by the probe at start-up; again here, the file may have changed since
        char why[MESSAGE_MAX];
        setup_check k = {r->file, r->dxpl, path, info, why, sizeof why};
        if (!attention_record_same_setup(&k)) {
            H5Fclose(r->file);
            if (r->rank == 0) unlink(r->tmp);
            fatal("%s", why);
        }
    } else {
        write_root(r);
    }

    char name[64];
    snprintf(name, sizeof name, "step_%lld", (long long)step);
    if (H5Lexists(r->file, name, H5P_DEFAULT) > 0 && H5Ldelete(r->file, name, H5P_DEFAULT) < 0)
        write_failed(r, name);  // a resumed run records this step again: the new one replaces it
    r->step_group = create_group(r, r->file, name, "one recording: a group per recorded layer");
    write_int64(r, r->step_group, "step", step);
    write_string(r, r->step_group, "writer", info->writer ? info->writer : "decon");
    return r;
}

void attention_record_begin_layer(attention_record *r, int layer, const attention_record_layer *desc) {
    const attention_record_info *in = &r->info;
    char name[32];
    snprintf(name, sizeof name, "layer_%d", layer);
    hid_t g = create_group(r, r->step_group, name,
                           "one layer: attn = A[sequence, head, i, t] (has_attn), logits_* = its pre-softmax "
                           "scores (has_scores)");
    r->groups[layer] = g;
    write_int(r, g, "layer", layer);
    write_int(r, g, "layer_id", layer + 1);
    write_string(r, g, "variant", desc->variant);
    write_int(r, g, "is_standard", desc->is_standard);
    write_int64(r, g, "step", r->step);
    write_int(r, g, "has_attn", desc->has_attn);
    write_int(r, g, "has_scores", desc->has_scores);
    write_string(r, g, "scores_kind",
                 !desc->has_scores ? "none" : desc->scores_per_token ? "per_token" : "pairwise");
    if (!desc->has_attn) return;

    hsize_t L = (hsize_t)in->sequence_length;
    hsize_t dims[4] = {(hsize_t)in->sequences, (hsize_t)in->num_heads, L, L}, chunk[4] = {1, 1, L, L};
    hid_t space = H5Screate_simple(4, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 4, chunk);
    if (DEFLATE_LEVEL > 0) H5Pset_shuffle(dcpl);
    if (DEFLATE_LEVEL > 0) H5Pset_deflate(dcpl, DEFLATE_LEVEL);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);  // every chunk is written
    hid_t type = in->float16 ? r->half_type : H5T_IEEE_F32LE;
    r->attn[layer] = H5Dcreate2(g, "attn", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (r->attn[layer] < 0) write_failed(r, "attn");
    write_string(r, r->attn[layer], "description",
                 "attention weights A[sequence, head, i, t]: the weight of key position t in query position i's "
                 "output (quadratic reference form of the mixer); causal, zeros above the diagonal (t > i)");
    write_string(r, r->attn[layer], "dims", "sequence, head, query position i, key position t");
    H5Pclose(dcpl);
    H5Sclose(space);
}

void attention_record_write_attn(attention_record *r, int layer, int sequence, int head_start, int head_count,
                                 const float *probs, bool writes) {
    hid_t dataset = r->attn[layer];
    if (dataset < 0) fatal("internal: attention_record_write_attn on layer %d without attn", layer);
    hsize_t L = (hsize_t)r->info.sequence_length;
    hsize_t start[4] = {(hsize_t)sequence, (hsize_t)head_start, 0, 0}, count[4] = {1, (hsize_t)head_count, L, L};
    hsize_t elements = (hsize_t)head_count * L * L;
    hid_t file_space = H5Dget_space(dataset);
    // The memory space has the selection's own shape: HDF5 then maps chunks by shape
    // (a 1-D memory space costs a per-element walk).
    hid_t mem_space = H5Screate_simple(4, count, NULL);
    const void *data = probs;
    hid_t mem_type = H5T_NATIVE_FLOAT;
    if (writes) {
        H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL);
        if (r->info.float16) {
            if (r->half_capacity < elements) {
                free(r->half);
                r->half = xmalloc(elements * sizeof(uint16_t));
                r->half_capacity = elements;
            }
            uint16_t *half = r->half;
            #pragma omp parallel for schedule(static)
            for (size_t i = 0; i < (size_t)elements; i++) half[i] = attention_record_half_bits(probs[i]);
            data = half;
            mem_type = r->half_type;
        }
    } else {
        H5Sselect_none(file_space);
        H5Sselect_none(mem_space);
    }
    if (H5Dwrite(dataset, mem_type, mem_space, file_space, r->dxpl, data) < 0) write_failed(r, "attn");
    H5Sclose(mem_space);
    H5Sclose(file_space);
}

void attention_record_end_layer(attention_record *r, int layer, const attention_record_layer_end *end) {
    hid_t g = r->groups[layer];
    if (r->attn[layer] >= 0) {
        char sums[96];
        if (fabs(end->row_sum_min - 1.0) <= 1e-3 && fabs(end->row_sum_max - 1.0) <= 1e-3 && end->entry_min >= 0.0)
            snprintf(sums, sizeof sums, "1");
        else
            snprintf(sums, sizeof sums, "%.6g..%.6g", end->row_sum_min, end->row_sum_max);
        write_string(r, g, "row_sums", sums);
        H5Dclose(r->attn[layer]);
        r->attn[layer] = -1;
    } else {
        write_string(r, g, "row_sums", "none");
    }
    write_double(r, g, "row_sum_min", end->row_sum_min);
    write_double(r, g, "row_sum_max", end->row_sum_max);
    write_double(r, g, "entry_min", end->entry_min);
    if (end->scores) {
        const score_histogram *h = end->scores;
        hsize_t bins = SCORE_BINS, edge_count = SCORE_BINS + 1, stat_count = SCORE_STATS;
        write_small_dataset(r, g, "logits_hist", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &bins, h->counts,
                            "number of pre-softmax scores per bin of logits_edges, over every recorded sequence "
                            "and head: every causal pair (i, t <= i) when scores_kind = pairwise, every token once "
                            "when per_token (nonapx's g_t); non-finite scores are counted in attr nonfinite only");
        hid_t dataset = H5Dopen2(g, "logits_hist", H5P_DEFAULT);
        write_int64(r, dataset, "count", h->count);
        write_int64(r, dataset, "nonfinite", h->nonfinite);
        H5Dclose(dataset);
        double edges[SCORE_BINS + 1], stats[SCORE_STATS];
        score_histogram_edges(edges);
        write_small_dataset(r, g, "logits_edges", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &edge_count, edges,
                            "bin edges of logits_hist, ascending; bin j = [e_j, e_j+1), the last closed; -inf, "
                            "symmetric log-spaced magnitudes 1e-3..1e4 at 20 bins per decade around a central bin "
                            "[-1e-3, 1e-3), +inf (the first and last bins are under- and overflow)");
        score_histogram_stats(h, stats);
        write_small_dataset(r, g, "logits_stats", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &stat_count, stats,
                            "statistics of the histogrammed scores: min, max, mean, p1, p50, p99 (percentiles "
                            "interpolated inside their histogram bin), count |x| > 10, count |x| > 1000");
        dataset = H5Dopen2(g, "logits_stats", H5P_DEFAULT);
        write_string(r, dataset, "fields", STAT_FIELDS);
        double mean = h->count ? h->sum / (double)h->count : NAN;
        double variance = h->count ? h->sum_squares / (double)h->count - mean * mean : NAN;
        write_double(r, dataset, "std", h->count ? sqrt(fmax(variance, 0.0)) : NAN);
        H5Dclose(dataset);
    }
    H5Gclose(g);
    r->groups[layer] = -1;
}

int64_t attention_record_close(attention_record *r, double loss) {
    for (int l = 0; l < r->info.num_layers; l++)
        if (r->groups[l] >= 0) fatal("internal: attention recording layer %d begun but not ended", l);
    write_double(r, r->step_group, "loss", loss);
    H5Gclose(r->step_group);
    if (H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0) write_failed(r, "flush");
    H5Pclose(r->dxpl);
    H5Tclose(r->half_type);
    if (H5Fclose(r->file) < 0) write_failed(r, "close");
    MPI_Barrier(r->comm);  // every rank's data is in the file before it takes the final name
    char message[MESSAGE_MAX] = "";
    int64_t bytes = 0;
    if (r->rank == 0) {
        durable_publish(r->tmp, r->path, "attention recording", NULL, message, sizeof message);
        struct stat st;
        if (!message[0] && stat(r->path, &st) == 0) bytes = (int64_t)st.st_size;
    }
    fatal_if_root_failed(message, MESSAGE_MAX, r->comm);
    MPI_Bcast(&bytes, 1, MPI_INT64_T, 0, r->comm);
    free(r->groups);
    free(r->attn);
    free(r->half);
    free(r);
    return bytes;
}
