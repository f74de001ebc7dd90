// HDF5 checkpoints through parallel HDF5 (checkpoint.h).
//
// File layout (format version 1):
//   /                 attributes format_version (int32), writer ("decon"),
//                     tensor_parallel_size and ranks at write time (int32, informational)
//   /params/<name>    float32 dataset in the tensor's logical shape, attribute shard
//                     ("none" | "rows" | "cols"); group attributes parameter_count (int64)
//                     and tensor_count (int32)
//   /optim/m/<name>, /optim/v/<name>   Adam moments, same shapes (absent when not saved)
//   /state            attributes step, tokens_seen (int64), data_epoch, data_index,
//                     seed (uint64), learning_rate, loss (double)
//   /config           the resolved config text, a fixed-length string
//
// Every rank writes the hyperslab of its slice (local_start, local_shape). A slice held
// by several ranks (replicated tensors, or the same tensor-parallel shard on several
// data-parallel ranks) is written by one of them only: the lowest rank of comm that
// holds it. Reading selects the hyperslab of the reader's slice, so the decomposition
// may differ between writing and reading.
//
// Failures the user can meet (missing, damaged, foreign or mismatched files) end in one
// fatal line; HDF5's own error stacks are silenced. Damage is first diagnosed by rank 0
// with the serial driver and the verdict broadcast, so every rank fails the same way
// before any collective open.
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"

enum { MESSAGE_MAX = 1536 };

static const char *const STATE_ATTRIBUTES[] = {"step", "tokens_seen", "data_epoch", "data_index",
                                               "seed", "learning_rate", "loss"};

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static int comm_rank(MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    return rank;
}

// Rank 0 filled `message` (empty when all is well); every rank ends with the same line.
static void fatal_if_root_failed(char *message, MPI_Comm comm) {
    MPI_Bcast(message, MESSAGE_MAX, MPI_CHAR, 0, comm);
    if (message[0]) fatal("%s", message);
}

static hid_t access_plist(MPI_Comm comm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (comm != MPI_COMM_NULL) {
        H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
        // Metadata is read by one rank and broadcast, and written collectively: every
        // rank below makes the same metadata calls in the same order.
        H5Pset_all_coll_metadata_ops(fapl, 1);
        H5Pset_coll_metadata_write(fapl, 1);
    }
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, 1, 1);  // lock where the file system can, go on where it cannot
#endif
    return fapl;
}

static const char *shard_name(shard_kind shard) {
    return shard == SHARD_ROWS ? "rows" : shard == SHARD_COLS ? "cols" : "none";
}

// ---------------------------------------------------------------------------------------
// Diagnosis (serial, no MPI): the one place that tells damaged from foreign from fine.

static bool has_hdf5_signature(const char *path, off_t size) {
    static const unsigned char signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return false;
    bool found = false;
    // The superblock sits at 0 or, after a user block, at 512, 1024, 2048, ...
    for (off_t at = 0; !found && at + 8 <= size; at = at ? 2 * at : 512) {
        unsigned char head[8];
        found = pread(fd, head, sizeof head, at) == (ssize_t)sizeof head && memcmp(head, signature, 8) == 0;
    }
    close(fd);
    return found;
}

static bool read_attribute(hid_t object, const char *name, hid_t mem_type, void *value) {
    if (H5Aexists(object, name) <= 0) return false;
    hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
    if (attribute < 0) return false;
    hid_t space = H5Aget_space(attribute);
    bool ok = space >= 0 && H5Sget_simple_extent_npoints(space) == 1 && H5Aread(attribute, mem_type, value) >= 0;
    if (space >= 0) H5Sclose(space);
    H5Aclose(attribute);
    return ok;
}

// Checks the format version and that /state, /params and /config are complete.
// Returns true when fine, else writes the user-facing line into `why`.
static bool check_structure(hid_t file, const char *path, char *why, size_t size) {
    int version = 0;
    if (H5Aexists(file, "format_version") <= 0) {
        snprintf(why, size, "%s is an HDF5 file but not a decon checkpoint (no format_version attribute): "
                 "pass a checkpoint written by decon-train", path);
        return false;
    }
    if (!read_attribute(file, "format_version", H5T_NATIVE_INT, &version)) {
        snprintf(why, size, "checkpoint %s is damaged (unreadable format_version): delete it to resume from an older one",
                 path);
        return false;
    }
    if (version != CHECKPOINT_FORMAT_VERSION) {
        snprintf(why, size, "checkpoint %s has format version %d but this build reads version %d: "
                 "load it with the decon version that wrote it", path, version, CHECKPOINT_FORMAT_VERSION);
        return false;
    }
    const char *missing = NULL;
    if (H5Lexists(file, "params", H5P_DEFAULT) <= 0) missing = "/params";
    else if (H5Lexists(file, "config", H5P_DEFAULT) <= 0) missing = "/config";
    else if (H5Lexists(file, "state", H5P_DEFAULT) <= 0) missing = "/state";
    if (!missing) {
        hid_t state = H5Gopen2(file, "state", H5P_DEFAULT);
        if (state < 0) {
            missing = "/state";
        } else {
            for (size_t i = 0; i < sizeof STATE_ATTRIBUTES / sizeof *STATE_ATTRIBUTES && !missing; i++) {
                double value;
                if (!read_attribute(state, STATE_ATTRIBUTES[i], H5T_NATIVE_DOUBLE, &value)) missing = STATE_ATTRIBUTES[i];
            }
            H5Gclose(state);
        }
    }
    if (missing) {
        snprintf(why, size, "checkpoint %s is incomplete (no %s%s): delete it to resume from an older one", path,
                 missing[0] == '/' ? "" : "/state attribute ", missing);
        return false;
    }
    return true;
}

// Opens the file with the serial driver and checks it. true when it is a complete decon
// checkpoint of this format version; otherwise `why` says what is wrong and what to do.
static bool diagnose(const char *path, char *why, size_t size) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            snprintf(why, size, "checkpoint %s does not exist: check the path (checkpoints are <run>/ckpt/step_NNNNNNNN.h5)",
                     path);
        else
            snprintf(why, size, "cannot read checkpoint %s: %s", path, strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, size, "checkpoint %s is not a regular file: pass a checkpoint file (<run>/ckpt/step_NNNNNNNN.h5)", path);
        return false;
    }
    if (access(path, R_OK) != 0) {
        snprintf(why, size, "cannot read checkpoint %s: %s", path, strerror(errno));
        return false;
    }
    if (st.st_size == 0) {
        snprintf(why, size, "checkpoint %s is empty (truncated?): delete it to resume from an older one", path);
        return false;
    }
    if (!has_hdf5_signature(path, st.st_size)) {
        snprintf(why, size, "%s is not an HDF5 file: pass a decon checkpoint (<run>/ckpt/step_NNNNNNNN.h5)", path);
        return false;
    }
    hid_t fapl = access_plist(MPI_COMM_NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        snprintf(why, size, "checkpoint %s is damaged (truncated?): delete it to resume from an older one", path);
        return false;
    }
    bool ok = check_structure(file, path, why, size);
    H5Fclose(file);
    return ok;
}

bool checkpoint_is_valid(const char *path, MPI_Comm comm) {
    quiet_hdf5();
    int valid = 0;
    if (comm_rank(comm) == 0) {
        char why[MESSAGE_MAX];
        valid = diagnose(path, why, sizeof why);
    }
    MPI_Bcast(&valid, 1, MPI_INT, 0, comm);
    return valid != 0;
}

// ---------------------------------------------------------------------------------------
// Writing

static _Noreturn void write_failed(const char *tmp, const char *what) {
    fatal("cannot write checkpoint %s (%s): check free disk space and that the directory is writable", tmp, what);
}

static void write_attribute(hid_t object, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                            const char *tmp) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attribute = H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attribute < 0 || H5Awrite(attribute, mem_type, value) < 0) write_failed(tmp, name);
    H5Aclose(attribute);
    H5Sclose(space);
}

static hid_t string_type(size_t length) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, length + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    return type;
}

static void write_string_attribute(hid_t object, const char *name, const char *value, const char *tmp) {
    hid_t type = string_type(strlen(value));
    write_attribute(object, name, type, type, value, tmp);
    H5Tclose(type);
}

static hid_t create_group(hid_t parent, const char *name, const char *tmp) {
    hid_t group = H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) write_failed(tmp, name);
    return group;
}

// Creates group/<name> in the logical shape and writes this rank's slice (or nothing
// when another rank writes it). Collective.
static void write_tensor(hid_t group, const param_info *info, const float *slice, bool writes, hid_t dxpl,
                         bool tag_shard, const char *tmp) {
    hsize_t dims[2] = {(hsize_t)info->shape[0], (hsize_t)info->shape[1]};
    hsize_t start[2] = {(hsize_t)info->local_start[0], (hsize_t)info->local_start[1]};
    hsize_t count[2] = {(hsize_t)info->local_shape[0], (hsize_t)info->local_shape[1]};
    hsize_t elements = (hsize_t)info->local_count;
    hid_t file_space = H5Screate_simple(info->ndim, dims, NULL);
    hid_t mem_space = H5Screate_simple(1, &elements, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);  // every element is written below
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t dataset = H5Dcreate2(group, info->name, H5T_IEEE_F32LE, file_space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dataset < 0) write_failed(tmp, info->name);
    if (tag_shard) write_string_attribute(dataset, "shard", shard_name(info->shard), tmp);
    if (writes) {
        H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL);
    } else {
        H5Sselect_none(file_space);
        H5Sselect_none(mem_space);
    }
    if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, dxpl, slice) < 0) write_failed(tmp, info->name);
    H5Dclose(dataset);
    H5Pclose(dcpl);
    H5Sclose(mem_space);
    H5Sclose(file_space);
}

static void write_tensors(hid_t group, const param_registry *registry, const float *buffer, bool writes_own_shard,
                          bool is_root, hid_t dxpl, bool tag_shard, const char *tmp) {
    for (int p = 0; p < registry->count; p++) {
        const param_info *info = &registry->items[p];
        bool writes = info->shard == SHARD_NONE ? is_root : writes_own_shard;
        write_tensor(group, info, buffer + info->offset, writes, dxpl, tag_shard, tmp);
    }
}

// Whether this rank is the lowest rank of comm holding its tensor-parallel shard, after
// checking that the ranks agree on the registry and together hold every shard.
static bool lowest_holder_of_shard(const param_registry *registry, MPI_Comm comm, int rank, int size) {
    int mine[3] = {registry->shard_rank, registry->shard_count, registry->count};
    int *all = xmalloc((size_t)size * sizeof mine);
    MPI_Allgather(mine, 3, MPI_INT, all, 3, MPI_INT, comm);
    bool lowest = true;
    for (int r = 0; r < size; r++) {
        if (all[3 * r + 1] != registry->shard_count || all[3 * r + 2] != registry->count)
            fatal("checkpoint: rank %d has %d tensors in %d shards, rank %d has %d in %d: every rank of the "
                  "communicator must register the same model", r, all[3 * r + 2], all[3 * r + 1], rank,
                  registry->count, registry->shard_count);
        if (r < rank && all[(size_t)3 * r] == registry->shard_rank) lowest = false;
    }
    for (int s = 0; s < registry->shard_count; s++) {
        bool held = false;
        for (int r = 0; r < size; r++) held = held || all[(size_t)3 * r] == s;
        if (!held) fatal("checkpoint: no rank of the communicator holds tensor-parallel shard %d of %d", s,
                         registry->shard_count);
    }
    free(all);
    return lowest;
}

static void directory_of(const char *path, char *dir, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, size, ".");
    else if (slash == path) snprintf(dir, size, "/");
    else snprintf(dir, size, "%.*s", (int)(slash - path), path);
}

// Makes the file's contents durable, then renames it into place and makes the rename
// durable. Returns an empty message or what went wrong.
static void publish(const char *tmp, const char *path, char *message, size_t size) {
    message[0] = '\0';
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(message, size, "cannot flush checkpoint %s to disk: %s; check the file system", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        return;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(message, size, "cannot rename checkpoint %s to %s: %s", tmp, path, strerror(errno));
        return;
    }
    char dir[4096];
    directory_of(path, dir, sizeof dir);
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);  // best effort: some file systems refuse fsync on directories
        close(fd);
    }
}

void checkpoint_write(const char *path, const param_registry *registry, const float *params, const float *adam_m,
                      const float *adam_v, const train_state *state, const char *config_text, MPI_Comm comm) {
    quiet_hdf5();
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    bool is_root = rank == 0;
    bool writes_own_shard = lowest_holder_of_shard(registry, comm, rank, size);
    int with_optimizer = adam_m && adam_v, optimizer_everywhere;
    MPI_Allreduce(&with_optimizer, &optimizer_everywhere, 1, MPI_INT, MPI_MIN, comm);
    if (optimizer_everywhere != with_optimizer)
        fatal("checkpoint_write %s: some ranks pass the Adam moments and others do not", path);

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

    hid_t fapl = access_plist(comm);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0)
        fatal("cannot create checkpoint %s: check that the directory exists and is writable", tmp);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);

    int version = CHECKPOINT_FORMAT_VERSION;
    write_attribute(file, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version, tmp);
    write_string_attribute(file, "writer", "decon", tmp);
    write_attribute(file, "tensor_parallel_size", H5T_STD_I32LE, H5T_NATIVE_INT, &registry->shard_count, tmp);
    write_attribute(file, "ranks", H5T_STD_I32LE, H5T_NATIVE_INT, &size, tmp);

    hid_t group = create_group(file, "params", tmp);
    int64_t parameter_count = params_total_logical(registry);
    write_attribute(group, "parameter_count", H5T_STD_I64LE, H5T_NATIVE_INT64, &parameter_count, tmp);
    write_attribute(group, "tensor_count", H5T_STD_I32LE, H5T_NATIVE_INT, &registry->count, tmp);
    write_tensors(group, registry, params, writes_own_shard, is_root, dxpl, true, tmp);
    H5Gclose(group);

    if (with_optimizer) {
        hid_t optim = create_group(file, "optim", tmp);
        hid_t m = create_group(optim, "m", tmp);
        write_tensors(m, registry, adam_m, writes_own_shard, is_root, dxpl, false, tmp);
        H5Gclose(m);
        hid_t v = create_group(optim, "v", tmp);
        write_tensors(v, registry, adam_v, writes_own_shard, is_root, dxpl, false, tmp);
        H5Gclose(v);
        H5Gclose(optim);
    }

    hid_t state_group = create_group(file, "state", tmp);
    write_attribute(state_group, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.step, tmp);
    write_attribute(state_group, "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64, &st.tokens_seen, tmp);
    write_attribute(state_group, "data_epoch", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.data_epoch, tmp);
    write_attribute(state_group, "data_index", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.data_index, tmp);
    write_attribute(state_group, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &st.seed, tmp);
    write_attribute(state_group, "learning_rate", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st.learning_rate, tmp);
    write_attribute(state_group, "loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &st.loss, tmp);
    H5Gclose(state_group);

    hid_t type = string_type((size_t)config_length);
    hid_t file_space = H5Screate(H5S_SCALAR), mem_space = H5Screate(H5S_SCALAR);
    hid_t dataset = H5Dcreate2(file, "config", type, file_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (dataset < 0) write_failed(tmp, "config");
    if (!is_root) {
        H5Sselect_none(file_space);
        H5Sselect_none(mem_space);
    }
    if (H5Dwrite(dataset, type, mem_space, file_space, dxpl, config) < 0) write_failed(tmp, "config");
    H5Dclose(dataset);
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Tclose(type);

    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) write_failed(tmp, "flush");
    H5Pclose(dxpl);
    if (H5Fclose(file) < 0) write_failed(tmp, "close");
    free(config);

    MPI_Barrier(comm);  // every rank's data is in the file before it takes the final name
    char message[MESSAGE_MAX] = "";
    if (is_root) publish(tmp, path, message, sizeof message);
    fatal_if_root_failed(message, comm);  // the broadcast is also the closing barrier
    free(tmp);
}

// ---------------------------------------------------------------------------------------
// Reading

// Opens a checkpoint for collective reading after rank 0 has vouched for it.
static hid_t open_checked(const char *path, MPI_Comm comm) {
    quiet_hdf5();
    char message[MESSAGE_MAX] = "";
    if (comm_rank(comm) == 0) diagnose(path, message, sizeof message);
    fatal_if_root_failed(message, comm);
    hid_t fapl = access_plist(comm);
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

// Reads this rank's slice of group/<name>. Collective.
static void read_tensor(hid_t group, const char *group_name, const param_info *info, float *slice, hid_t dxpl,
                        const char *path) {
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
    hsize_t start[2] = {(hsize_t)info->local_start[0], (hsize_t)info->local_start[1]};
    hsize_t count[2] = {(hsize_t)info->local_shape[0], (hsize_t)info->local_shape[1]};
    hsize_t elements = (hsize_t)info->local_count;
    hid_t mem_space = H5Screate_simple(1, &elements, NULL);
    H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, NULL, count, NULL);
    if (H5Dread(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, dxpl, slice) < 0)
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

static void read_tensors(hid_t file, const char *group_name, const param_registry *registry, float *buffer,
                         hid_t dxpl, const char *path) {
    if (!link_exists(file, group_name))
        fatal("checkpoint %s has no /%s: it holds no optimizer state and cannot resume training; "
              "pick a checkpoint written during training", path, group_name);
    hid_t group = H5Gopen2(file, group_name, H5P_DEFAULT);
    if (group < 0)
        fatal("checkpoint %s is damaged (cannot open /%s): delete it to resume from an older one", path, group_name);
    for (int p = 0; p < registry->count; p++)
        read_tensor(group, group_name, &registry->items[p], buffer + registry->items[p].offset, dxpl, path);
    H5Gclose(group);
}

static void read_state(hid_t file, train_state *state, const char *path) {
    hid_t group = H5Gopen2(file, "state", H5P_DEFAULT);
    bool ok = group >= 0 && read_attribute(group, "step", H5T_NATIVE_INT64, &state->step) &&
              read_attribute(group, "tokens_seen", H5T_NATIVE_INT64, &state->tokens_seen) &&
              read_attribute(group, "data_epoch", H5T_NATIVE_UINT64, &state->data_epoch) &&
              read_attribute(group, "data_index", H5T_NATIVE_UINT64, &state->data_index) &&
              read_attribute(group, "seed", H5T_NATIVE_UINT64, &state->seed) &&
              read_attribute(group, "learning_rate", H5T_NATIVE_DOUBLE, &state->learning_rate) &&
              read_attribute(group, "loss", H5T_NATIVE_DOUBLE, &state->loss);
    if (group >= 0) H5Gclose(group);
    if (!ok) fatal("checkpoint %s is damaged (unreadable /state): delete it to resume from an older one", path);
}

void checkpoint_read(const char *path, const param_registry *registry, float *params, float *adam_m, float *adam_v,
                     train_state *state, MPI_Comm comm) {
    hid_t file = open_checked(path, comm);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    if (state) read_state(file, state, path);
    read_tensors(file, "params", registry, params, dxpl, path);
    if (adam_m) read_tensors(file, "optim/m", registry, adam_m, dxpl, path);
    if (adam_v) read_tensors(file, "optim/v", registry, adam_v, dxpl, path);
    H5Pclose(dxpl);
    H5Fclose(file);
}

char *checkpoint_read_config(const char *path, MPI_Comm comm) {
    hid_t file = open_checked(path, comm);
    hid_t dataset = H5Dopen2(file, "config", H5P_DEFAULT);
    hid_t type = dataset < 0 ? -1 : H5Dget_type(dataset);
    if (type < 0 || H5Tget_class(type) != H5T_STRING)
        fatal("checkpoint %s is damaged (/config is not a string): delete it to resume from an older one", path);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    char *text = NULL;
    herr_t status;
    if (H5Tis_variable_str(type) > 0) {  // accepted from other writers (h5py's default)
        hid_t mem_type = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem_type, H5T_VARIABLE);
        char *vl = NULL;
        status = H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, dxpl, &vl);
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

// ---------------------------------------------------------------------------------------
// Directory of checkpoints: <dir>/step_<08d>.h5

typedef struct {
    unsigned long long step;
    char *path;
} checkpoint_entry;

// Parses "step_<digits>.h5" (nothing else: not .tmp, not latest.h5).
static bool parse_checkpoint_name(const char *name, unsigned long long *step) {
    if (strncmp(name, "step_", 5) != 0) return false;
    const char *digits = name + 5, *end = digits;
    while (*end >= '0' && *end <= '9') end++;
    if (end == digits || strcmp(end, ".h5") != 0) return false;
    *step = strtoull(digits, NULL, 10);
    return true;
}

static int newest_first(const void *a, const void *b) {
    unsigned long long x = ((const checkpoint_entry *)a)->step, y = ((const checkpoint_entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

// Checkpoints in dir, newest first; *count = 0 when the directory does not exist.
static checkpoint_entry *list_checkpoints(const char *dir, int *count) {
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int capacity = 16;
    checkpoint_entry *entries = xmalloc((size_t)capacity * sizeof *entries);
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        unsigned long long step;
        if (!parse_checkpoint_name(e->d_name, &step)) continue;
        if (*count == capacity) {
            capacity *= 2;
            checkpoint_entry *grown = realloc(entries, (size_t)capacity * sizeof *entries);
            if (!grown) fatal("out of memory listing checkpoints in %s", dir);
            entries = grown;
        }
        size_t length = strlen(dir) + strlen(e->d_name) + 2;
        entries[*count].step = step;
        entries[*count].path = xmalloc(length);
        snprintf(entries[*count].path, length, "%s/%s", dir, e->d_name);
        (*count)++;
    }
    closedir(d);
    qsort(entries, (size_t)*count, sizeof *entries, newest_first);
    return entries;
}

static void free_checkpoints(checkpoint_entry *entries, int count) {
    for (int i = 0; i < count; i++) free(entries[i].path);
    free(entries);
}

char *checkpoint_find_latest(const char *dir, MPI_Comm comm) {
    quiet_hdf5();
    char *found = NULL;
    unsigned long long length = 0;
    if (comm_rank(comm) == 0) {
        int count;
        checkpoint_entry *entries = list_checkpoints(dir, &count);
        for (int i = 0; i < count && !found; i++) {
            char why[MESSAGE_MAX];
            if (diagnose(entries[i].path, why, sizeof why)) found = xstrdup(entries[i].path);
            else warn("skipping checkpoint: %s", why);
        }
        free_checkpoints(entries, count);
        length = found ? strlen(found) + 1 : 0;
    }
    MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
    if (!length) return NULL;
    if (!found) found = xmalloc(length);
    MPI_Bcast(found, (int)length, MPI_CHAR, 0, comm);
    return found;
}

void checkpoint_prune(const char *dir, int keep, MPI_Comm comm) {
    quiet_hdf5();
    if (keep > 0 && comm_rank(comm) == 0) {
        int count, kept = 0;
        checkpoint_entry *entries = list_checkpoints(dir, &count);
        for (int i = 0; i < count; i++) {
            char why[MESSAGE_MAX];
            if (kept < keep) {
                kept += diagnose(entries[i].path, why, sizeof why);  // damaged newer files are left alone
            } else if (unlink(entries[i].path) != 0) {
                warn("cannot delete old checkpoint %s: %s", entries[i].path, strerror(errno));
            }
        }
        free_checkpoints(entries, count);
    }
    MPI_Barrier(comm);
}
