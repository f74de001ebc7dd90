// Attention recordings through parallel HDF5 (attention_record.h).
//
// Like checkpoints (checkpoint.c): the MPI-IO driver with collective transfers and
// collective metadata even on one rank, HDF5's error stacks silenced, every user-facing
// failure one fatal line. One record works on a copy: rank 0 copies path to <path>.tmp
// (or the first record creates <path>.tmp), every rank writes into it, and rank 0
// fsyncs and renames it over path after a barrier, so path always holds the complete
// recordings of earlier steps whatever happens during this one.
#include "io/attention_record.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/histogram.h"
#include "io/durable_file.h"
#include "io/hdf5_format.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

enum { MESSAGE_MAX = 10240, DEFLATE_LEVEL = 1 };  // messages hold two paths

static const char KIND[] = "decon attention recording";
static const char *const STAT_FIELDS =
    "min, max, mean, p1, p50, p99, count_abs_gt_10, count_abs_gt_1000";

// ---------------------------------------------------------------------------------------
// float16

uint16_t attention_record_half_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  // NaN stays NaN
    int exponent = (int)(magnitude >> 23) - 127;
    if (exponent > 15) return (uint16_t)(sign | 0x7c00u);            // too large (or inf): inf
    if (exponent < -25) return sign;                                   // below half the smallest subnormal
    uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;       // value = significand 2^(exponent-23)
    // The half's last significand bit weighs 2^(exponent-10) (normal) or 2^-24 (subnormal).
    int unit = exponent < -14 ? -24 : exponent - 10;
    int shift = unit - (exponent - 23);                                // 13 .. 24
    uint32_t kept = significand >> shift, rest = significand & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u))) kept++;          // to nearest, ties to even
    if (exponent < -14) return (uint16_t)(sign | kept);                // subnormal (kept 0x400 = smallest normal)
    // kept in [0x400, 0x800]: 0x800 carries into the exponent (and 65520.. into inf).
    return (uint16_t)(sign | (((uint32_t)(exponent + 15) << 10) + kept - 0x400u));
}

float attention_record_half_value(uint16_t bits) {
    int exponent = (bits >> 10) & 0x1f;
    int mantissa = bits & 0x3ff;
    float value;
    if (exponent == 0) value = ldexpf((float)mantissa, -24);
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = ldexpf((float)(mantissa | 0x400), exponent - 25);
    return bits & 0x8000u ? -value : value;
}

// ---------------------------------------------------------------------------------------
// Score histograms

void score_histogram_clear(score_histogram *h) {
    memset(h, 0, sizeof *h);
    h->min = INFINITY;
    h->max = -INFINITY;
}

void score_histogram_edges(double *edges) {
    int m = SCORE_MAGNITUDE_BINS, central = m + 1;  // edges[central] = -1e-3, edges[central+1] = 1e-3
    edges[0] = -INFINITY;
    edges[SCORE_BINS] = INFINITY;
    for (int j = 0; j <= m; j++) {
        double magnitude = pow(10.0, -3.0 + (double)j / SCORE_BINS_PER_DECADE);
        edges[central - j] = -magnitude;
        edges[central + 1 + j] = magnitude;
    }
}

// Binning: a candidate bin from a table indexed by the top 16 bits of |x| (sign cleared:
// exponent and 7 mantissa bits, a slot spans < 1% of |x| while a bin spans 12%), then at
// most a step or two against the edges themselves, so the result is exactly the bin
// [e_j, e_j+1) that holds x. Negative x use the mirrored candidate.
typedef struct {
    double edges[SCORE_BINS + 1];
    int16_t candidate[1 << 15];   // bin of the smallest positive value of each slot
} bin_table;

// The bin j with edges[j] <= x < edges[j+1] (the last bin closed): binary search.
static int bin_search(double x, const double *edges) {
    int lo = 0, hi = SCORE_BINS;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (edges[mid] <= x) lo = mid;
        else hi = mid;
    }
    return lo;
}

// Built on the first call (callers are serial: histograms are filled outside parallel regions).
static const bin_table *bins(void) {
    static bin_table table;
    static bool ready;
    if (!ready) {
        score_histogram_edges(table.edges);
        for (uint32_t slot = 0; slot < (1u << 15); slot++) {
            uint32_t bits = slot << 16;
            float value;
            memcpy(&value, &bits, sizeof value);
            table.candidate[slot] = (int16_t)(isfinite(value) ? bin_search(value, table.edges) : SCORE_BINS - 1);
        }
        ready = true;
    }
    return &table;
}

static inline int bin_of(float x, const bin_table *t) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int b = t->candidate[(bits & 0x7fffffffu) >> 16];
    if (bits >> 31) b = SCORE_BINS - 1 - b;
    double v = x;
    while (b > 0 && t->edges[b] > v) b--;
    while (b < SCORE_BINS - 1 && t->edges[b + 1] <= v) b++;
    return b;
}

void score_histogram_add(score_histogram *h, const float *scores, int heads, int seq_len, bool per_token) {
    const bin_table *table = bins();
    size_t rows = (size_t)heads * (size_t)seq_len;
    // Per-row partial sums, added in row order afterwards: the result does not depend on
    // the number of threads or their timing.
    double *row_sum = xmalloc(2 * rows * sizeof(double)), *row_squares = row_sum + rows;
    int64_t count = 0, nonfinite = 0, above_10 = 0, above_1000 = 0;
    double lowest = INFINITY, highest = -INFINITY;
    #pragma omp parallel
    {
        int64_t local[SCORE_BINS] = {0};
        #pragma omp for schedule(static) reduction(+ : count, nonfinite, above_10, above_1000) \
            reduction(min : lowest) reduction(max : highest)
        for (size_t r = 0; r < rows; r++) {
            size_t i = r % (size_t)seq_len;
            const float *row = scores + r * (size_t)seq_len;
            size_t first = per_token ? i : 0;
            double sum = 0.0, squares = 0.0;
            for (size_t t = first; t <= i; t++) {
                double x = row[t];
                if (!isfinite(x)) {
                    nonfinite++;
                    continue;
                }
                local[bin_of(row[t], table)]++;
                count++;
                sum += x;
                squares += x * x;
                if (x < lowest) lowest = x;
                if (x > highest) highest = x;
                above_10 += fabs(x) > 10.0;
                above_1000 += fabs(x) > 1000.0;
            }
            row_sum[r] = sum;
            row_squares[r] = squares;
        }
        #pragma omp critical
        for (int b = 0; b < SCORE_BINS; b++) h->counts[b] += local[b];
    }
    for (size_t r = 0; r < rows; r++) {
        h->sum += row_sum[r];
        h->sum_squares += row_squares[r];
    }
    free(row_sum);
    h->count += count;
    h->nonfinite += nonfinite;
    h->above_10 += above_10;
    h->above_1000 += above_1000;
    if (lowest < h->min) h->min = lowest;
    if (highest > h->max) h->max = highest;
}

void score_histogram_allreduce(score_histogram *h, MPI_Comm comm) {
    int64_t counts[SCORE_BINS + 4];
    memcpy(counts, h->counts, sizeof h->counts);
    counts[SCORE_BINS] = h->count;
    counts[SCORE_BINS + 1] = h->nonfinite;
    counts[SCORE_BINS + 2] = h->above_10;
    counts[SCORE_BINS + 3] = h->above_1000;
    MPI_Allreduce(MPI_IN_PLACE, counts, SCORE_BINS + 4, MPI_INT64_T, MPI_SUM, comm);
    memcpy(h->counts, counts, sizeof h->counts);
    h->count = counts[SCORE_BINS];
    h->nonfinite = counts[SCORE_BINS + 1];
    h->above_10 = counts[SCORE_BINS + 2];
    h->above_1000 = counts[SCORE_BINS + 3];
    double sums[2] = {h->sum, h->sum_squares};
    MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, comm);
    h->sum = sums[0];
    h->sum_squares = sums[1];
    MPI_Allreduce(MPI_IN_PLACE, &h->min, 1, MPI_DOUBLE, MPI_MIN, comm);
    MPI_Allreduce(MPI_IN_PLACE, &h->max, 1, MPI_DOUBLE, MPI_MAX, comm);
}

void score_histogram_stats(const score_histogram *h, double *stats) {
    if (h->count == 0) {
        for (int i = 0; i < SCORE_STATS; i++) stats[i] = i >= 6 ? 0.0 : NAN;
        return;
    }
    stats[0] = h->min;
    stats[1] = h->max;
    stats[2] = h->sum / (double)h->count;
    double counts[SCORE_BINS];
    for (int b = 0; b < SCORE_BINS; b++) counts[b] = (double)h->counts[b];
    const double q[3] = {0.01, 0.50, 0.99};
    for (int i = 0; i < 3; i++) stats[3 + i] = histogram_quantile(counts, bins()->edges, SCORE_BINS, q[i], h->min, h->max);
    stats[6] = (double)h->above_10;
    stats[7] = (double)h->above_1000;
}

// ---------------------------------------------------------------------------------------
// HDF5 helpers

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
// Existing files: diagnosis (rank 0, serial driver) and the copy

// Whether path exists; fills why when it exists but is not a recording this build can
// append to.
static bool diagnose_existing(const char *path, char *why, size_t size) {
    why[0] = '\0';
    struct stat st;
    if (stat(path, &st) != 0) {
        int error = errno;
        if (error != ENOENT) snprintf(why, size, "cannot read attention recording %s: %s", path, strerror(error));
        return error != ENOENT;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, size, "attention recording %s is not a regular file: set [io] record_path (decon-eval: "
                 "--record) to a file name", path);
        return true;
    }
    int superblock = hdf5_superblock_version(path);
    if (superblock >= 0 && superblock < HDF5_CHECKSUMMED_SUPERBLOCK) {  // io/hdf5_format.h: not given to HDF5
        snprintf(why, size, "%s exists but is an HDF5 file without metadata checksums (not written by this decon): "
                 "move it away or set [io] record_path (decon-eval: --record) to a new file", path);
        return true;
    }
    hid_t fapl = hdf5_access_plist(MPI_COMM_NULL);
    hid_t file = superblock >= 0 ? H5Fopen(path, H5F_ACC_RDONLY, fapl) : -1;
    H5Pclose(fapl);
    if (file < 0) {
        snprintf(why, size, "%s exists but is not a readable HDF5 file: move it away or set [io] record_path "
                 "(decon-eval: --record) to a new file", path);
        return true;
    }
    char kind[128];
    int version = 0;
    hdf5_read_string(file, "kind", kind, sizeof kind);
    if (strcmp(kind, KIND) != 0)
        snprintf(why, size, "%s exists and is not a decon attention recording: move it away or set [io] "
                 "record_path (decon-eval: --record) to a new file", path);
    else if (!hdf5_read_scalar(file, "format_version", H5T_NATIVE_INT, &version) || version != ATTENTION_RECORD_FORMAT_VERSION)
        snprintf(why, size, "attention recording %s has format version %d but this build writes version %d: "
                 "record into a new file", path, version, ATTENTION_RECORD_FORMAT_VERSION);
    H5Fclose(file);
    return true;
}

static bool copy_file(const char *from, const char *to, char *why, size_t size) {
    int in = open(from, O_RDONLY), out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    bool ok = in >= 0 && out >= 0;
    if (ok) {
        struct stat st;
        ok = fstat(in, &st) == 0;
        off_t left = ok ? st.st_size : 0;
        bool kernel_copy = true;
        char *buffer = NULL;
        while (ok && left > 0) {
            ssize_t n = -1;
            if (kernel_copy) {
                n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
                if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
                    kernel_copy = false;
                    continue;
                }
            } else {
                if (!buffer) buffer = xmalloc(1 << 20);
                ssize_t got = read(in, buffer, 1 << 20);
                n = got;
                for (ssize_t done = 0; got > 0 && done < got;) {
                    ssize_t w = write(out, buffer + done, (size_t)(got - done));
                    if (w <= 0) {
                        n = -1;
                        break;
                    }
                    done += w;
                }
            }
            if (n <= 0) ok = false;
            else left -= n;
        }
        free(buffer);
    }
    if (!ok) snprintf(why, size, "cannot copy attention recording %s to %s: %s; check free disk space", from, to,
                      strerror(errno));
    if (in >= 0) close(in);
    if (out >= 0 && close(out) != 0 && ok) {
        snprintf(why, size, "cannot write %s: %s; check free disk space", to, strerror(errno));
        ok = false;
    }
    return ok;
}

// ---------------------------------------------------------------------------------------
// Creating and checking the file-level contents

static void write_root(attention_record *r) {
    const attention_record_info *in = &r->info;
    hid_t f = r->file;
    int version = ATTENTION_RECORD_FORMAT_VERSION;
    write_int(r, f, "format_version", version);
    write_string(r, f, "kind", KIND);
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

// Whether the file records the same setup (shapes, dtype, layers, tokens): steps must be
// comparable. Fills why and returns false when not. Collective when file is open with
// the MPI-IO driver (every rank reads the same), plain otherwise.
typedef struct {
    hid_t file, dxpl;
    const char *path;
    const attention_record_info *info;
    char *why;
    size_t size;
} setup_check;

static bool mismatch(const setup_check *k, const char *what, const char *found, const char *expected) {
    snprintf(k->why, k->size, "%s records a different setup (its %s is %s, this one's %s): set [io] record_path "
             "(decon-eval: --record) to a new file or move it away", k->path, what, found, expected);
    return false;
}

static bool same_int(const setup_check *k, const char *name, int expected) {
    int found = -1;
    if (hdf5_read_scalar(k->file, name, H5T_NATIVE_INT, &found) && found == expected) return true;
    char a[32], b[32];
    snprintf(a, sizeof a, "%d", found);
    snprintf(b, sizeof b, "%d", expected);
    return mismatch(k, name, a, b);
}

static bool same_string(const setup_check *k, const char *name, const char *expected) {
    char found[1024];
    hdf5_read_string(k->file, name, found, sizeof found);
    return strcmp(found, expected) == 0 || mismatch(k, name, found[0] ? found : "(none)", expected);
}

static bool same_setup(const setup_check *k) {
    const attention_record_info *in = k->info;
    if (!same_int(k, "num_layers", in->num_layers) || !same_int(k, "num_heads", in->num_heads) ||
        !same_int(k, "num_key_value_heads", in->num_kv_heads) || !same_int(k, "head_dim", in->head_dim) ||
        !same_int(k, "sequence_length", in->sequence_length) || !same_int(k, "sequences", in->sequences) ||
        !same_string(k, "layer_plan", in->layer_plan) ||
        !same_string(k, "dtype", in->float16 ? "float16" : "float32"))
        return false;

    int n = in->num_layers, *found = xmalloc((size_t)n * sizeof(int));
    hid_t attribute = H5Aexists(k->file, "recorded_layers") > 0 ? H5Aopen(k->file, "recorded_layers", H5P_DEFAULT) : -1;
    hid_t space = attribute < 0 ? -1 : H5Aget_space(attribute);
    hssize_t count = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    bool readable = count >= 0 && count <= n && (count == 0 || H5Aread(attribute, H5T_NATIVE_INT, found) >= 0);
    if (space >= 0) H5Sclose(space);
    if (attribute >= 0) H5Aclose(attribute);
    char stored_ids[1024] = "", wanted_ids[1024] = "";
    for (hssize_t j = 0; readable && j < count; j++) {
        size_t used = strlen(stored_ids);
        snprintf(stored_ids + used, sizeof stored_ids - used, "%s%d", j ? "," : "", found[j] + 1);
    }
    for (int l = 0; l < n; l++) {
        if (!in->layers[l]) continue;
        size_t used = strlen(wanted_ids);
        snprintf(wanted_ids + used, sizeof wanted_ids - used, "%s%d", used ? "," : "", l + 1);
    }
    free(found);
    if (!readable || strcmp(stored_ids, wanted_ids) != 0)
        return mismatch(k, "list of recorded layers (1-based)", readable ? stored_ids : "unreadable", wanted_ids);

    size_t tokens = (size_t)in->sequences * (size_t)in->sequence_length;
    int *stored = xmalloc(tokens * sizeof(int));
    hid_t dataset = H5Dopen2(k->file, "tokens", H5P_DEFAULT);
    hid_t file_space = dataset < 0 ? -1 : H5Dget_space(dataset);
    bool same = file_space >= 0 && H5Sget_simple_extent_npoints(file_space) == (hssize_t)tokens &&
                H5Dread(dataset, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, k->dxpl, stored) >= 0 &&
                memcmp(stored, in->tokens, tokens * sizeof(int)) == 0;
    if (file_space >= 0) H5Sclose(file_space);
    if (dataset >= 0) H5Dclose(dataset);
    free(stored);
    return same || mismatch(k, "/tokens", "other sequences", "the first windows of its source shard");
}

void attention_record_probe(const char *path, const attention_record_info *info, MPI_Comm comm) {
    hdf5_quiet();
    int rank;
    MPI_Comm_rank(comm, &rank);
    char message[MESSAGE_MAX] = "";
    if (rank == 0 && diagnose_existing(path, message, sizeof message)) {
        if (!message[0]) {  // a recording of this format: is it of this setup?
            hid_t fapl = hdf5_access_plist(MPI_COMM_NULL);
            hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
            H5Pclose(fapl);
            setup_check k = {file, H5P_DEFAULT, path, info, message, sizeof message};
            same_setup(&k);
            H5Fclose(file);
        }
    }
    if (rank == 0 && !message[0]) {  // every record writes <path>.tmp: can it be created?
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 && errno != EEXIST)
            snprintf(message, sizeof message, "cannot create attention recording %s (%s): check that the directory "
                     "exists and is writable, or set [io] record_path", tmp, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
    }
    fatal_if_root_failed(message, MESSAGE_MAX, comm);
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
        exists = diagnose_existing(path, message, sizeof message);
        if (exists && !message[0] && !copy_file(path, r->tmp, message, sizeof message)) unlink(r->tmp);
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
        if (!same_setup(&k)) {
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
