// Writing a checkpoint (checkpoint.h; the layout in checkpoint_internal.h).
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "io/checkpoint_internal.h"
#include "io/durable_file.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

static const char *shard_name(shard_kind shard) {
    return shard == SHARD_ROWS ? "rows" : shard == SHARD_COLS ? "cols" : "none";
}

// Where a checkpoint is being written: the temporary file and the ranks writing it.
typedef struct {
    const char *tmp;
    MPI_Comm comm;
} write_target;

// The partial file is deleted (write_failure_fatal), so the directory holds exactly the
// earlier, complete checkpoints. errno is not reported: after HDF5 calls it is stale.
static _Noreturn void write_failed(const write_target *out, const char *what) {
    write_failure_fatal(out->comm, out->tmp, "cannot write checkpoint %s (%s): the file system refused the write; check "
                        "free disk space, quotas (ulimit -f) and that the directory is writable; the earlier "
                        "checkpoints are intact", out->tmp, what);
}

static void write_attribute(hid_t object, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                            const write_target *out) {
    if (!hdf5_write_attribute(object, name, file_type, mem_type, value, 0)) write_failed(out, name);
}

static void write_string_attribute(hid_t object, const char *name, const char *value, const write_target *out) {
    if (!hdf5_write_string(object, name, value)) write_failed(out, name);
}

static hid_t create_group(hid_t parent, const char *name, const write_target *out) {
    hid_t group = H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) write_failed(out, name);
    return group;
}

// Creates group/<name> in the logical shape and writes run [first, last) of this rank's
// slice, whose first element is at `data` (nothing when first == last: another rank
// writes it, or this rank holds none of it). Collective.
static void write_tensor(hid_t group, const param_info *info, const float *data, size_t first, size_t last,
                         hid_t dxpl, bool tag_shard, const write_target *out) {
    hsize_t dims[2] = {(hsize_t)info->shape[0], (hsize_t)info->shape[1]};
    hid_t file_space = H5Screate_simple(info->ndim, dims, NULL);
    hid_t mem_space = checkpoint_run_memory_space(last - first);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);  // every element is written below
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t dataset = H5Dcreate2(group, info->name, H5T_IEEE_F32LE, file_space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dataset < 0) write_failed(out, info->name);
    if (tag_shard) write_string_attribute(dataset, "shard", shard_name(info->shard), out);
    checkpoint_select_run(file_space, info, first, last);
    if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, dxpl, first < last ? data : &checkpoint_no_data) < 0)
        write_failed(out, info->name);
    H5Dclose(dataset);
    H5Pclose(dcpl);
    H5Sclose(mem_space);
    H5Sclose(file_space);
}

// Params: each slice comes whole from the lowest rank holding it (SHARD_NONE: rank 0).
static void write_params(hid_t group, const param_registry *registry, const float *params, const decomposition *d,
                         hid_t dxpl, const write_target *out) {
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        bool writes = info->shard == SHARD_NONE ? d->rank == 0 : d->lowest_of_shard;
        write_tensor(group, info, params + info->offset, 0, writes ? info->local_count : 0, dxpl, true, out);
    }
}

// Moments held as `range` (array element j is buffer element range.begin + j). Split
// (ZeRO-1): every rank of a shard writes what its range covers; else the lowest rank of
// the shard writes. SHARD_NONE tensors come from the ranks holding rank 0's shard.
static void write_moments(hid_t group, const param_registry *registry, const float *moments, moment_range range,
                          bool partitioned, const decomposition *d, hid_t dxpl, const write_target *out) {
    bool writes_shard = partitioned || d->lowest_of_shard;
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        bool writes = writes_shard && (info->shard != SHARD_NONE || d->in_root_shard);
        size_t first = 0, last = 0;
        if (writes) checkpoint_covered_run(info, range.begin, range.end, &first, &last);
        const float *data = first < last ? moments + (info->offset + first - range.begin) : NULL;
        write_tensor(group, info, data, first, last, dxpl, false, out);
    }
}

void checkpoint_write(const char *path, const param_registry *registry, const float *params, const float *adam_m,
                      const float *adam_v, const train_state *state, const char *config_text, MPI_Comm comm) {
    checkpoint_write_partitioned(path, registry, params, adam_m, adam_v, NULL, state, config_text, comm);
}

void checkpoint_write_partitioned(const char *path, const param_registry *registry, const float *params,
                                  const float *adam_m, const float *adam_v, const moment_range *range,
                                  const train_state *state, const char *config_text, MPI_Comm comm) {
    hdf5_quiet();
    moment_range held = range ? *range : (moment_range){0, registry->total};
    char what[MESSAGE_MAX / 2];
    snprintf(what, sizeof what, "checkpoint_write %s", path);
    // Both moments or neither: a rank passing only one saves none.
    bool has_moments = adam_m && adam_v;
    decomposition d = checkpoint_gather_decomposition(registry, &held, has_moments, has_moments, true, what, comm);
    bool with_optimizer = d.any_m;
    bool partitioned = with_optimizer && checkpoint_moments_partitioned(&d, what, comm);
    int rank = d.rank, size = d.size;
    bool is_root = rank == 0;

    // Attributes and /config must be identical on every rank: take rank 0's.
    train_state st = state ? *state : (train_state){0};
    MPI_Bcast(&st, (int)sizeof st, MPI_BYTE, 0, comm);
    unsigned long long config_length = is_root && config_text ? strlen(config_text) : 0;
    MPI_Bcast(&config_length, 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
    char *config = xmalloc(config_length + 1);
    if (is_root && config_text) memcpy(config, config_text, config_length);
    config[config_length] = '\0';
    MPI_Bcast(config, (int)config_length, MPI_CHAR, 0, comm);

    size_t tmp_length = strlen(path) + 5;
    char *tmp = xmalloc(tmp_length);
    snprintf(tmp, tmp_length, "%s.tmp", path);

    hid_t fapl = hdf5_access_plist(comm);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0)
        write_failure_fatal(comm, tmp, "cannot create checkpoint %s: check that the directory exists and is writable",
                            tmp);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    const write_target target = {tmp, comm};

    int version = CHECKPOINT_FORMAT_VERSION;
    write_attribute(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version, &target);
    write_string_attribute(file, "writer", "decon", &target);
    write_attribute(file, "tensor_parallel_size", H5T_STD_I32LE, H5T_NATIVE_INT, &registry->shard_count, &target);
    write_attribute(file, "ranks", H5T_STD_I32LE, H5T_NATIVE_INT, &size, &target);

    hid_t group = create_group(file, "params", &target);
    int64_t parameter_count = params_total_logical(registry);
    write_attribute(group, "parameter_count", H5T_STD_I64LE, H5T_NATIVE_INT64, &parameter_count, &target);
    write_attribute(group, "tensor_count", H5T_STD_I32LE, H5T_NATIVE_INT, &registry->count, &target);
    write_params(group, registry, params, &d, dxpl, &target);
    H5Gclose(group);

    if (with_optimizer) {
        hid_t optim = create_group(file, "optim", &target);
        hid_t m = create_group(optim, "m", &target);
        write_moments(m, registry, adam_m, held, partitioned, &d, dxpl, &target);
        H5Gclose(m);
        hid_t v = create_group(optim, "v", &target);
        write_moments(v, registry, adam_v, held, partitioned, &d, dxpl, &target);
        H5Gclose(v);
        H5Gclose(optim);
    }

    hid_t state_group = create_group(file, "state", &target);
    write_attribute(state_group, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.step, &target);
    write_attribute(state_group, "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.tokens_seen, &target);
    write_attribute(state_group, "data_epoch", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.data_epoch, &target);
    write_attribute(state_group, "data_index", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.data_index, &target);
    write_attribute(state_group, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.seed, &target);
    write_attribute(state_group, "learning_rate", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st.learning_rate, &target);
    write_attribute(state_group, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st.loss, &target);
    write_attribute(state_group, "skipped_steps", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.skipped_steps, &target);
    H5Gclose(state_group);

    hid_t type = hdf5_string_type((size_t)config_length);
    hid_t file_space = H5Screate(H5S_SCALAR), mem_space = H5Screate(H5S_SCALAR);
    hid_t dataset = H5Dcreate2(file, "config", type, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (dataset < 0) write_failed(&target, "config");
    if (!is_root) {
        H5Sselect_none(file_space);
        H5Sselect_none(mem_space);
    }
    if (H5Dwrite(dataset, type, mem_space, file_space, dxpl, config) < 0) write_failed(&target, "config");
    H5Dclose(dataset);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Tclose(type);

    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) write_failed(&target, "flush");
    H5Pclose(dxpl);
    if (H5Fclose(file) < 0) write_failed(&target, "close");
    free(config);

    MPI_Barrier(comm);  // every rank's data is in the file before it takes the final name
    char message[MESSAGE_MAX] = "";
    if (is_root)
        durable_publish(tmp, path, "checkpoint", "check the file system (the earlier checkpoints are intact)", message,
                        sizeof message);
    fatal_if_root_failed(message, MESSAGE_MAX, comm);  // the broadcast is also the closing barrier
    free(tmp);
    free(d.all);
}
