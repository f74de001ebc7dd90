// Reading a checkpoint (checkpoint.h; the layout in checkpoint_internal.h).
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "io/checkpoint_internal.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

// Opens a checkpoint for collective reading after rank 0 has vouched for it.
static hid_t open_checked(const char *path, MPI_Comm comm) {
    hdf5_quiet();
    char message[MESSAGE_MAX] = "";
    if (comm_rank(comm) == 0) checkpoint_diagnose(path, message, sizeof message);
    fatal_if_root_failed(message, MESSAGE_MAX, comm);
    hid_t fapl = hdf5_access_plist(comm);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) fatal("checkpoint %s is damaged (truncated?): delete it to resume from an older one", path);
    return file;
}

static void format_shape(char *text, size_t size, int ndim, const hsize_t *dims) {
    if (ndim == 1) snprintf(text, size, "[%llu]", (unsigned long long)dims[0]);
    else if (ndim == 2) snprintf(text, size, "[%llu, %llu]", (unsigned long long)dims[0], (unsigned long long)dims[1]);
    else snprintf(text, size, "(%d dimensions)", ndim);
}

// Reads run [first, last) of this rank's slice of group/<name> into `data` (nothing when
// first == last). Collective.
static void read_tensor(hid_t group, const char *group_name, const param_info *info, float *data, size_t first,
                        size_t last, hid_t dxpl, const char *path) {
    if (H5Lexists(group, info->name, H5P_DEFAULT) <= 0)
        fatal("checkpoint %s has no tensor /%s/%s: it was written for a different model; "
              "run with the config stored in it (h5dump -d /config %s)", path, group_name, info->name, path);
    hid_t dataset = H5Dopen2(group, info->name, H5P_DEFAULT);
    if (dataset < 0)
        fatal("checkpoint %s is damaged (cannot open /%s/%s): delete it to resume from an older one", path,
              group_name, info->name);
    hid_t file_space = H5Dget_space(dataset);
    hsize_t dims[H5S_MAX_RANK] = {0};
    int ndim = file_space < 0 ? -1 : H5Sget_simple_extent_dims(file_space, dims, NULL);
    hsize_t expected[2] = {(hsize_t)info->shape[0], (hsize_t)info->shape[1]};
    if (ndim != info->ndim || dims[0] != expected[0] || (ndim == 2 && dims[1] != expected[1])) {
        char found_text[64], expected_text[64];
        format_shape(found_text, sizeof found_text, ndim, dims);
        format_shape(expected_text, sizeof expected_text, info->ndim, expected);
        fatal("tensor /%s/%s in checkpoint %s has shape %s but the model expects %s: "
              "run with the config stored in the checkpoint (h5dump -d /config %s)",
              group_name, info->name, path, found_text, expected_text, path);
    }
    hid_t type = H5Dget_type(dataset);
    if (H5Tget_class(type) != H5T_FLOAT)
        fatal("tensor /%s/%s in checkpoint %s is not floating point: pass a checkpoint written by decon-train",
              group_name, info->name, path);
    H5Tclose(type);
    hid_t mem_space = checkpoint_run_memory_space(last - first);
    checkpoint_select_run(file_space, info, first, last);
    if (H5Dread(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, dxpl, first < last ? data : &checkpoint_no_data) < 0)
        fatal("checkpoint %s is damaged (cannot read /%s/%s): delete it to resume from an older one", path,
              group_name, info->name);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Dclose(dataset);
}

// Whether every component of a relative path ("optim/m") exists.
static bool link_exists(hid_t file, const char *path) {
    char prefix[256];
    for (const char *slash = path;; slash++) {
        slash = strchr(slash, '/');
        size_t length = slash ? (size_t)(slash - path) : strlen(path);
        snprintf(prefix, sizeof prefix, "%.*s", (int)length, path);
        if (H5Lexists(file, prefix, H5P_DEFAULT) <= 0) return false;
        if (!slash) return true;
    }
}

// Reads the elements [range.begin, range.end) of this rank's buffer layout into `buffer`
// (element j is layout element range.begin + j). Collective.
static void read_tensors(hid_t file, const char *group_name, const param_registry *registry, float *buffer,
                         moment_range range, hid_t dxpl, const char *path) {
    if (!link_exists(file, group_name))
        fatal("checkpoint %s has no /%s: it holds no optimizer state and cannot resume training; "
              "pick a checkpoint written during training", path, group_name);
    hid_t group = H5Gopen2(file, group_name, H5P_DEFAULT);
    if (group < 0)
        fatal("checkpoint %s is damaged (cannot open /%s): delete it to resume from an older one", path, group_name);
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        size_t first, last;
        checkpoint_covered_run(info, range.begin, range.end, &first, &last);
        float *data = first < last ? buffer + (info->offset + first - range.begin) : NULL;
        read_tensor(group, group_name, info, data, first, last, dxpl, path);
    }
    H5Gclose(group);
}

static void read_state(hid_t file, train_state *state, const char *path) {
    hid_t group = H5Gopen2(file, "state", H5P_DEFAULT);
    bool ok = group >= 0 && hdf5_read_scalar(group, "step", H5T_NATIVE_INT64, &state->step) &&
              hdf5_read_scalar(group, "tokens_seen", H5T_NATIVE_INT64, &state->tokens_seen) &&
              hdf5_read_scalar(group, "data_epoch", H5T_NATIVE_UINT64, &state->data_epoch) &&
              hdf5_read_scalar(group, "data_index", H5T_NATIVE_UINT64, &state->data_index) &&
              hdf5_read_scalar(group, "seed", H5T_NATIVE_UINT64, &state->seed) &&
              hdf5_read_scalar(group, "learning_rate", H5T_NATIVE_DOUBLE, &state->learning_rate) &&
              hdf5_read_scalar(group, "loss", H5T_NATIVE_DOUBLE, &state->loss);
    state->skipped_steps = 0;  // optional: written since [train] on_nonfinite
    if (ok && H5Aexists(group, "skipped_steps") > 0)
        ok = hdf5_read_scalar(group, "skipped_steps", H5T_NATIVE_INT64, &state->skipped_steps);
    if (group >= 0) H5Gclose(group);
    if (!ok) fatal("checkpoint %s is damaged (unreadable /state): delete it to resume from an older one", path);
}

void checkpoint_read(const char *path, const param_registry *registry, float *params, float *adam_m, float *adam_v,
                     train_state *state, MPI_Comm comm) {
    checkpoint_read_partitioned(path, registry, params, adam_m, adam_v, NULL, state, comm);
}

void checkpoint_read_partitioned(const char *path, const param_registry *registry, float *params, float *adam_m,
                                 float *adam_v, const moment_range *range, train_state *state, MPI_Comm comm) {
    hdf5_quiet();
    moment_range held = range ? *range : (moment_range){0, registry->total};
    char what[MESSAGE_MAX / 2];
    snprintf(what, sizeof what, "checkpoint_read %s", path);
    // The ranges need no agreement: each rank reads its own, whatever wrote the file.
    decomposition d = checkpoint_gather_decomposition(registry, &held, adam_m != NULL, adam_v != NULL, false, what, comm);
    hid_t file = open_checked(path, comm);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    if (state) read_state(file, state, path);
    read_tensors(file, "params", registry, params, (moment_range){0, registry->total}, dxpl, path);
    if (d.any_m) read_tensors(file, "optim/m", registry, adam_m, held, dxpl, path);
    if (d.any_v) read_tensors(file, "optim/v", registry, adam_v, held, dxpl, path);
    H5Pclose(dxpl);
    H5Fclose(file);
    free(d.all);
}

char *checkpoint_read_config(const char *path, MPI_Comm comm) {
    hid_t file = open_checked(path, comm);
    hid_t dataset = H5Dopen2(file, "config", H5P_DEFAULT);
    hid_t type = dataset < 0 ? -1 : H5Dget_type(dataset);
    hid_t space = dataset < 0 ? -1 : H5Dget_space(dataset);
    // One string: H5S_ALL below transfers every element into room for one.
    bool one = space >= 0 && H5Sget_simple_extent_npoints(space) == 1;
    if (space >= 0) H5Sclose(space);
    if (type < 0 || H5Tget_class(type) != H5T_STRING || !one)
        fatal("checkpoint %s is damaged (/config is not a single string): delete it to resume from an older one", path);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    char *text = NULL;
    herr_t status;
    if (H5Tis_variable_str(type) > 0) {  // accepted from other writers (h5py's default)
        hid_t mem_type = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem_type, H5T_VARIABLE);
        char *vl = NULL;
        status = H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, dxpl, (void *)&vl);
        if (status >= 0) text = xstrdup(vl ? vl : "");
        if (status >= 0 && vl) H5free_memory(vl);
        H5Tclose(mem_type);
    } else {
        size_t size = H5Tget_size(type);
        text = xcalloc(size + 1, 1);
        hid_t mem_type = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem_type, size);
        H5Tset_strpad(mem_type, H5T_STR_NULLPAD);
        status = H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, dxpl, text);
        H5Tclose(mem_type);
    }
    if (status < 0) fatal("checkpoint %s is damaged (cannot read /config): delete it to resume from an older one", path);
    H5Pclose(dxpl);
    H5Tclose(type);
    H5Dclose(dataset);
    H5Fclose(file);
    return text;
}
