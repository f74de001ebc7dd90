#include "analysis/recording.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis/why.h"
#include "core/errors.h"
#include "io/hdf5_format.h"
#include "io/hdf5_helpers.h"

const char *const recording_logit_stat_names[RECORDING_LOGIT_STATS] = {
    "min", "max", "mean", "p1", "p50", "p99", "count_abs_gt_10", "count_abs_gt_1000"};

static const char REDO[] = "re-record it (or pass an intact copy)";

hid_t recording_open_file(const char *path, const char *what, const char *redo, char *why, size_t size) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) why_fail(why, size, "%s does not exist: check the path (expected %s)", path, what);
        else why_fail(why, size, "cannot read %s (%s): check its permissions", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        why_fail(why, size, "%s is not a regular file: pass %s", path, what);
        return -1;
    }
    int superblock = hdf5_superblock_version(path);
    if (superblock >= 0 && superblock < HDF5_CHECKSUMMED_SUPERBLOCK) {  // io/hdf5_format.h: not given to HDF5
        why_fail(why, size, "%s is an HDF5 file without metadata checksums, not written by decon: pass a file written "
             "by decon (h5repack -L converts a file to the checksummed format)", path);
        return -1;
    }
    hdf5_quiet();
    hid_t file = superblock >= 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (file < 0) why_fail(why, size, "%s cannot be opened as HDF5 (not HDF5, truncated or corrupt): %s", path, redo);
    return file;
}

hid_t recording_open(const char *path, char *why, size_t size) {
    return recording_open_file(path, "an attention recording, <run_dir>/attn.h5", REDO, why, size);
}

// ---- attributes -------------------------------------------------------------------------

static bool attribute_exists(hid_t object, const char *name) { return H5Aexists(object, name) > 0; }

// A string attribute, fixed or variable length; a numeric one is formatted with %g.
static bool read_text(hid_t object, const char *name, char *text, size_t size) {
    if (!attribute_exists(object, name)) return false;
    hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
    if (attribute < 0) return false;
    hid_t type = H5Aget_type(attribute), space = H5Aget_space(attribute);
    bool ok = false;
    text[0] = '\0';
    if (type >= 0 && space >= 0 && H5Sget_simple_extent_npoints(space) == 1) {
        if (H5Tget_class(type) == H5T_STRING) {
            hid_t mem_type = H5Tcopy(H5T_C_S1);
            if (H5Tis_variable_str(type) > 0) {
                H5Tset_size(mem_type, H5T_VARIABLE);
                H5Tset_cset(mem_type, H5Tget_cset(type));
                char *value = NULL;
                ok = H5Aread(attribute, mem_type, (void *)&value) >= 0;
                if (ok) snprintf(text, size, "%s", value ? value : "");
                if (ok && value) H5free_memory(value);
            } else {
                size_t length = H5Tget_size(type);
                char *value = xcalloc(length + 1, 1);
                H5Tset_size(mem_type, length + 1);
                H5Tset_strpad(mem_type, H5T_STR_NULLTERM);
                H5Tset_cset(mem_type, H5Tget_cset(type));
                ok = H5Aread(attribute, mem_type, value) >= 0;
                if (ok) snprintf(text, size, "%s", value);
                free(value);
            }
            H5Tclose(mem_type);
        } else {
            double value = 0.0;
            ok = H5Aread(attribute, H5T_NATIVE_DOUBLE, &value) >= 0;
            if (ok) snprintf(text, size, "%.17g", value);
        }
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attribute);
    return ok;
}

static bool require_int(hid_t object, const char *where, const char *name, int *value, const char *path, char *why,
                        size_t size) {
    if (!attribute_exists(object, name))
        return why_fail(why, size, "%s is incomplete: %s has no attribute '%s': %s", path, where, name, REDO);
    if (!hdf5_read_scalar(object, name, H5T_NATIVE_INT, value))
        return why_fail(why, size, "%s: attribute '%s' of %s is not a single number: %s", path, name, where, REDO);
    return true;
}

static bool require_text(hid_t object, const char *where, const char *name, char *text, size_t text_size,
                         const char *path, char *why, size_t size) {
    if (!attribute_exists(object, name))
        return why_fail(why, size, "%s is incomplete: %s has no attribute '%s': %s", path, where, name, REDO);
    if (!read_text(object, name, text, text_size))
        return why_fail(why, size, "%s: attribute '%s' of %s is unreadable: %s", path, name, where, REDO);
    return true;
}

// ---- datasets -----------------------------------------------------------------------------

// Opens group/name and checks its rank and (for expected[i] >= 0) extents; the actual
// extents go to dims. Returns the dataset or -1 with `why` set.
static hid_t open_dataset(hid_t group, const char *where, const char *name, int rank, const hsize_t *expected,
                          hsize_t *dims, const char *path, char *why, size_t size) {
    if (H5Lexists(group, name, H5P_DEFAULT) <= 0) {
        why_fail(why, size, "%s is incomplete: no %s/%s: %s", path, where, name, REDO);
        return -1;
    }
    hid_t dataset = H5Dopen2(group, name, H5P_DEFAULT);
    if (dataset < 0) {
        why_fail(why, size, "%s: %s/%s cannot be opened (corrupt file): %s", path, where, name, REDO);
        return -1;
    }
    hid_t space = H5Dget_space(dataset), type = H5Dget_type(dataset);
    int actual = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t local[8] = {0};
    if (!dims) dims = local;
    bool ok = actual == rank && rank <= 8 && H5Sget_simple_extent_dims(space, dims, NULL) == rank;
    bool numeric = type >= 0 && (H5Tget_class(type) == H5T_FLOAT || H5Tget_class(type) == H5T_INTEGER);
    for (int i = 0; ok && i < rank; i++)
        if (expected && expected[i] != (hsize_t)-1 && dims[i] != expected[i]) ok = false;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (!ok || !numeric) {
        char shape[256] = "", want[256] = "";
        size_t used = 0, used_want = 0;
        for (int i = 0; i < actual && i < 8 && used < sizeof shape; i++)
            used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
        for (int i = 0; i < rank && used_want < sizeof want; i++) {
            if (expected && expected[i] != (hsize_t)-1)
                used_want += (size_t)snprintf(want + used_want, sizeof want - used_want, "%s%llu", i ? ", " : "",
                                              (unsigned long long)expected[i]);
            else used_want += (size_t)snprintf(want + used_want, sizeof want - used_want, "%s*", i ? ", " : "");
        }
        why_fail(why, size, "%s: %s/%s is %s[%s], expected a numeric [%s] (format_version %d): %s", path, where, name,
             numeric ? "" : "non-numeric ", shape, want, RECORDING_FORMAT_VERSION, REDO);
        H5Dclose(dataset);
        return -1;
    }
    return dataset;
}

// ---- scanning -------------------------------------------------------------------------------

typedef struct {
    char (*names)[64];
    int count, capacity;
} name_list;

static herr_t collect_step(hid_t group, const char *name, const H5L_info_t *link, void *data) {
    (void)group;
    (void)link;
    name_list *list = data;
    if (strncmp(name, "step_", 5) != 0 || strlen(name) >= 64) return 0;
    if (list->count == list->capacity) {
        list->capacity = list->capacity ? 2 * list->capacity : 16;
        char (*grown)[64] = realloc(list->names, (size_t)list->capacity * sizeof *list->names);
        if (!grown) fatal("out of memory listing recording steps");
        list->names = grown;
    }
    snprintf(list->names[list->count++], 64, "%s", name);
    return 0;
}

static int compare_steps(const void *a, const void *b) {
    int64_t x = ((const recording_step *)a)->step, y = ((const recording_step *)b)->step;
    return (x > y) - (x < y);
}

static bool read_double_attribute(hid_t object, const char *where, const char *name, double *value, const char *path,
                                  char *why, size_t size) {
    if (!attribute_exists(object, name))
        return why_fail(why, size, "%s is incomplete: %s has no attribute '%s': %s", path, where, name, REDO);
    if (!hdf5_read_scalar(object, name, H5T_NATIVE_DOUBLE, value))
        return why_fail(why, size, "%s: attribute '%s' of %s is not a single number: %s", path, name, where, REDO);
    return true;
}

static bool scan_layer(hid_t step_group, recording_layer *layer, const recording_info *info, const char *step_name,
                       char *why, size_t size) {
    const char *path = info->path;
    char where[160];
    snprintf(where, sizeof where, "/%s/%s", step_name, layer->group);
    if (H5Lexists(step_group, layer->group, H5P_DEFAULT) <= 0)
        return why_fail(why, size, "%s is incomplete: no %s (layer %d is in recorded_layers): %s", path, where,
                    layer->layer, REDO);
    hid_t group = H5Gopen2(step_group, layer->group, H5P_DEFAULT);
    if (group < 0) return why_fail(why, size, "%s: %s cannot be opened (corrupt file): %s", path, where, REDO);
    int is_standard = 0, has_attn = 0, has_scores = 0;
    bool ok = require_text(group, where, "variant", layer->variant, sizeof layer->variant, path, why, size) &&
              require_int(group, where, "is_standard", &is_standard, path, why, size) &&
              require_int(group, where, "has_attn", &has_attn, path, why, size) &&
              require_int(group, where, "has_scores", &has_scores, path, why, size);
    layer->is_standard = is_standard != 0;
    layer->has_attn = has_attn != 0;
    layer->has_scores = has_scores != 0;
    if (ok && layer->has_attn) {
        ok = require_text(group, where, "row_sums", layer->row_sums, sizeof layer->row_sums, path, why, size) &&
             read_double_attribute(group, where, "row_sum_min", &layer->row_sum_min, path, why, size) &&
             read_double_attribute(group, where, "row_sum_max", &layer->row_sum_max, path, why, size) &&
             read_double_attribute(group, where, "entry_min", &layer->entry_min, path, why, size);
        layer->rows_sum_to_one = strcmp(layer->row_sums, "1") == 0;
        if (ok) {
            hsize_t expected[4] = {(hsize_t)info->sequences, (hsize_t)info->num_heads, (hsize_t)info->length,
                                   (hsize_t)info->length};
            hid_t dataset = open_dataset(group, where, "attn", 4, expected, NULL, path, why, size);
            if (dataset < 0) ok = false;
            else {
                hid_t type = H5Dget_type(dataset);
                if (H5Tget_class(type) != H5T_FLOAT)
                    ok = why_fail(why, size, "%s: %s/attn is not floating point (the format stores float32 or float16): %s",
                              path, where, REDO);
                H5Tclose(type);
                H5Dclose(dataset);
            }
        }
    }
    if (ok && layer->has_scores) {
        ok = require_text(group, where, "scores_kind", layer->scores_kind, sizeof layer->scores_kind, path, why, size);
        hsize_t dims[1] = {0}, any[1] = {(hsize_t)-1}, stats[1] = {RECORDING_LOGIT_STATS};
        hid_t hist = ok ? open_dataset(group, where, "logits_hist", 1, any, dims, path, why, size) : -1;
        if (hist < 0) ok = false;
        else {
            H5Dclose(hist);
            layer->bins = (int)dims[0];
            hsize_t edges_expected[1] = {dims[0] + 1};
            hid_t edges = open_dataset(group, where, "logits_edges", 1, edges_expected, NULL, path, why, size);
            if (edges < 0) ok = false;
            else H5Dclose(edges);
        }
        if (ok) {
            hid_t dataset = open_dataset(group, where, "logits_stats", 1, stats, NULL, path, why, size);
            if (dataset < 0) ok = false;
            else H5Dclose(dataset);
        }
    } else if (ok) {
        snprintf(layer->scores_kind, sizeof layer->scores_kind, "none");
    }
    H5Gclose(group);
    return ok;
}

// recorded_layers: int [n], 0-based, each < num_layers, no repeats.
static bool read_recorded_layers(hid_t file, recording_info *info, bool *recorded, char *why, size_t size) {
    const char *path = info->path;
    if (!attribute_exists(file, "recorded_layers"))
        return why_fail(why, size, "%s is incomplete: / has no attribute 'recorded_layers': %s", path, REDO);
    hid_t attribute = H5Aopen(file, "recorded_layers", H5P_DEFAULT);
    hid_t space = attribute >= 0 ? H5Aget_space(attribute) : -1;
    hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    bool ok = n >= 1 && n <= info->num_layers;
    int *layers = xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    if (ok) ok = H5Aread(attribute, H5T_NATIVE_INT, layers) >= 0;
    if (space >= 0) H5Sclose(space);
    if (attribute >= 0) H5Aclose(attribute);
    for (hssize_t i = 0; ok && i < n; i++) {
        if (layers[i] < 0 || layers[i] >= info->num_layers || recorded[layers[i]]) ok = false;
        else recorded[layers[i]] = true;
    }
    free(layers);
    if (!ok)
        return why_fail(why, size, "%s: attribute recorded_layers must list 1..%d distinct 0-based layers below num_layers "
                    "%d: %s", path, info->num_layers, info->num_layers, REDO);
    info->recorded_count = (int)n;
    return true;
}

bool recording_scan(recording_info *info, const char *path, char *why, size_t size) {
    memset(info, 0, sizeof *info);
    snprintf(info->path, sizeof info->path, "%s", path);
    hid_t file = recording_open(path, why, size);
    if (file < 0) return false;
    bool ok = true;
    // A checkpoint has a format_version too, but no kind.
    const char *missing = !attribute_exists(file, "format_version") ? "format_version"
                          : !attribute_exists(file, "kind")         ? "kind"
                                                                    : NULL;
    if (missing && H5Lexists(file, "params", H5P_DEFAULT) > 0)
        ok = why_fail(why, size, "%s is HDF5 but not a decon attention recording (a checkpoint? give checkpoints with "
                  "--checkpoint): pass the <run_dir>/attn.h5 that decon-train writes", path);
    else if (missing)
        ok = why_fail(why, size, "%s is HDF5 but not a decon attention recording (no %s attribute): pass the "
                  "<run_dir>/attn.h5 that decon-train writes", path, missing);
    else if (!hdf5_read_scalar(file, "format_version", H5T_NATIVE_INT, &info->format_version))
        ok = why_fail(why, size, "%s: format_version is not a single number: %s", path, REDO);
    else if (info->format_version != RECORDING_FORMAT_VERSION)
        ok = why_fail(why, size, "%s has format_version %d but this decon-analyze reads version %d: analyse it with the "
                  "decon version that recorded it", path, info->format_version, RECORDING_FORMAT_VERSION);
    if (ok) ok = require_text(file, "/", "kind", info->kind, sizeof info->kind, path, why, size);
    if (ok && strcmp(info->kind, "decon attention recording") != 0)
        ok = why_fail(why, size, "%s is a '%s', not a decon attention recording: pass the <run_dir>/attn.h5 that "
                  "decon-train writes", path, info->kind);
    ok = ok && require_text(file, "/", "variant", info->variant, sizeof info->variant, path, why, size) &&
         require_text(file, "/", "layout", info->layout, sizeof info->layout, path, why, size) &&
         require_text(file, "/", "layer_plan", info->layer_plan, sizeof info->layer_plan, path, why, size) &&
         require_text(file, "/", "dtype", info->dtype, sizeof info->dtype, path, why, size) &&
         require_int(file, "/", "num_layers", &info->num_layers, path, why, size) &&
         require_int(file, "/", "num_heads", &info->num_heads, path, why, size) &&
         require_int(file, "/", "sequence_length", &info->sequence_length, path, why, size);
    int sequences_attribute = 0;
    ok = ok && require_int(file, "/", "sequences", &sequences_attribute, path, why, size);
    if (ok && (info->num_layers < 1 || info->num_layers > 100000 || info->num_heads < 1 || info->sequence_length < 1))
        ok = why_fail(why, size, "%s: num_layers %d, num_heads %d, sequence_length %d must all be positive: %s", path,
                  info->num_layers, info->num_heads, info->sequence_length, REDO);
    bool *recorded = ok ? xcalloc((size_t)info->num_layers, sizeof(bool)) : NULL;
    if (ok) ok = read_recorded_layers(file, info, recorded, why, size);
    if (ok) {
        hsize_t dims[2] = {0}, any[2] = {(hsize_t)-1, (hsize_t)-1};
        hid_t tokens = open_dataset(file, "", "tokens", 2, any, dims, path, why, size);
        if (tokens < 0) ok = false;
        else {
            H5Dclose(tokens);
            info->sequences = (int)dims[0];
            info->length = (int)dims[1];
            if (info->sequences < 1 || info->length < 1)
                ok = why_fail(why, size, "%s: /tokens is empty [%d, %d]: no sequences were recorded: %s", path,
                          info->sequences, info->length, REDO);
            else if (info->sequences != sequences_attribute || info->length != info->sequence_length)
                ok = why_fail(why, size, "%s: /tokens is [%d, %d] but the attributes say sequences = %d, sequence_length "
                          "= %d: %s", path, info->sequences, info->length, sequences_attribute, info->sequence_length,
                          REDO);
        }
    }
    name_list names = {0};
    if (ok) {
        hsize_t index = 0;
        if (H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, &index, collect_step, &names) < 0)
            ok = why_fail(why, size, "%s: cannot list its groups (corrupt file): %s", path, REDO);
        else if (names.count == 0)
            ok = why_fail(why, size, "%s has no /step_<N> groups: nothing was recorded (check the run's recording steps)",
                      path);
    }
    if (ok) {
        info->steps = xcalloc((size_t)names.count, sizeof *info->steps);
        for (int s = 0; s < names.count && ok; s++) {
            recording_step *step = &info->steps[info->step_count++];
            snprintf(step->group, sizeof step->group, "%s", names.names[s]);
            step->layers = xcalloc((size_t)info->num_layers, sizeof *step->layers);
            char where[80];
            snprintf(where, sizeof where, "/%s", step->group);
            hid_t group = H5Gopen2(file, step->group, H5P_DEFAULT);
            if (group < 0) {
                ok = why_fail(why, size, "%s: %s cannot be opened (corrupt file): %s", path, where, REDO);
                break;
            }
            long long value = 0;
            if (!attribute_exists(group, "step"))
                ok = why_fail(why, size, "%s is incomplete: %s has no attribute 'step': %s", path, where, REDO);
            else if (!hdf5_read_scalar(group, "step", H5T_NATIVE_LLONG, &value))
                ok = why_fail(why, size, "%s: attribute 'step' of %s is not a single number: %s", path, where, REDO);
            step->step = value;
            step->loss = NAN;
            if (ok && attribute_exists(group, "loss")) hdf5_read_scalar(group, "loss", H5T_NATIVE_DOUBLE, &step->loss);
            for (int l = 0; l < info->num_layers && ok; l++) {
                recording_layer *layer = &step->layers[l];
                snprintf(layer->group, sizeof layer->group, "layer_%d", l);
                layer->layer = l;
                layer->layer_id = l + 1;
                layer->recorded = recorded[l];
                layer->row_sum_min = layer->row_sum_max = layer->entry_min = NAN;
                snprintf(layer->scores_kind, sizeof layer->scores_kind, "none");
                if (layer->recorded) ok = scan_layer(group, layer, info, step->group, why, size);
            }
            H5Gclose(group);
        }
        if (ok) qsort(info->steps, (size_t)info->step_count, sizeof *info->steps, compare_steps);
        for (int s = 1; ok && s < info->step_count; s++)
            if (info->steps[s].step == info->steps[s - 1].step)
                ok = why_fail(why, size, "%s: /%s and /%s both record step %lld: %s", path, info->steps[s - 1].group,
                          info->steps[s].group, (long long)info->steps[s].step, REDO);
    }
    free(names.names);
    free(recorded);
    H5Fclose(file);
    if (!ok) recording_free(info);
    return ok;
}

void recording_free(recording_info *info) {
    for (int s = 0; s < info->step_count; s++) free(info->steps[s].layers);
    free(info->steps);
    info->steps = NULL;
    info->step_count = 0;
}

// ---- reading ------------------------------------------------------------------------------------

static bool read_slab(hid_t file, const char *name, int rank, const hsize_t *start, const hsize_t *count, double *out,
                      bool finite, const char *path, char *why, size_t size) {
    hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT);
    if (dataset < 0) return why_fail(why, size, "%s: cannot open %s (corrupt file): %s", path, name, REDO);
    hid_t space = H5Dget_space(dataset);
    hssize_t elements = 1;
    for (int i = 0; i < rank; i++) elements *= (hssize_t)count[i];
    hid_t memory = H5Screate_simple(1, (const hsize_t[]){(hsize_t)elements}, NULL);
    bool ok = space >= 0 && memory >= 0;
    if (ok && start) ok = H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) >= 0;
    ok = ok && H5Dread(dataset, H5T_NATIVE_DOUBLE, memory, space, H5P_DEFAULT, out) >= 0;
    if (memory >= 0) H5Sclose(memory);
    if (space >= 0) H5Sclose(space);
    H5Dclose(dataset);
    if (!ok) return why_fail(why, size, "%s: reading %s failed (corrupt or truncated data): %s", path, name, REDO);
    for (hssize_t i = 0; finite && i < elements; i++)
        if (!isfinite(out[i]))
            return why_fail(why, size, "%s: %s holds a non-finite value (at element %lld of the slice read): %s", path,
                        name, (long long)i, REDO);
    return true;
}

bool recording_read_attn(hid_t file, const recording_info *info, int step, int layer, int sequence, int head,
                         double *a, char *why, size_t size) {
    char name[192];
    snprintf(name, sizeof name, "/%s/%s/attn", info->steps[step].group, info->steps[step].layers[layer].group);
    hsize_t start[4] = {(hsize_t)sequence, (hsize_t)head, 0, 0};
    hsize_t count[4] = {1, 1, (hsize_t)info->length, (hsize_t)info->length};
    return read_slab(file, name, 4, start, count, a, true, info->path, why, size);
}

bool recording_read_logits(hid_t file, const recording_info *info, int step, int layer, double *stats,
                           double *counts, double *edges, char *why, size_t size) {
    const recording_layer *l = &info->steps[step].layers[layer];
    char base[160], name[192];
    snprintf(base, sizeof base, "/%s/%s", info->steps[step].group, l->group);
    snprintf(name, sizeof name, "%s/logits_stats", base);
    if (!read_slab(file, name, 1, NULL, (const hsize_t[]){RECORDING_LOGIT_STATS}, stats, false, info->path, why, size))
        return false;
    snprintf(name, sizeof name, "%s/logits_hist", base);
    if (!read_slab(file, name, 1, NULL, (const hsize_t[]){(hsize_t)l->bins}, counts, true, info->path, why, size))
        return false;
    snprintf(name, sizeof name, "%s/logits_edges", base);
    return read_slab(file, name, 1, NULL, (const hsize_t[]){(hsize_t)l->bins + 1}, edges, false, info->path, why, size);
}

void recording_run_name(const char *path, char *name, size_t size) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (strcmp(base, "attn.h5") == 0 && slash && slash != path) {
        const char *start = slash - 1;
        while (start > path && start[-1] != '/') start--;
        int length = (int)(slash - start);
        if (length > 0 && !(length == 1 && start[0] == '.')) {
            snprintf(name, size, "%.*s", length, start);
            return;
        }
    }
    size_t length = strlen(base);
    if (length > 3 && strcmp(base + length - 3, ".h5") == 0) length -= 3;
    snprintf(name, size, "%.*s", (int)length, base);
}
