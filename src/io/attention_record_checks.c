// An existing attention recording: whether it is one this build can append to, of the same
// setup, and the working copy a record writes into (attention_record_internal.h).
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/attention_record_internal.h"
#include "io/hdf5_format.h"
#include "io/hdf5_helpers.h"
#include "io/write_failure.h"

bool attention_record_diagnose_existing(const char *path, char *why, size_t size) {
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
    if (strcmp(kind, ATTENTION_RECORD_KIND) != 0)
        snprintf(why, size, "%s exists and is not a decon attention recording: move it away or set [io] "
                 "record_path (decon-eval: --record) to a new file", path);
    else if (!hdf5_read_scalar(file, "format_version", H5T_NATIVE_INT, &version) || version != ATTENTION_RECORD_FORMAT_VERSION)
        snprintf(why, size, "attention recording %s has format version %d but this build writes version %d: "
                 "record into a new file", path, version, ATTENTION_RECORD_FORMAT_VERSION);
    H5Fclose(file);
    return true;
}

bool attention_record_copy_file(const char *from, const char *to, char *why, size_t size) {
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

bool attention_record_same_setup(const setup_check *k) {
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
    if (rank == 0 && attention_record_diagnose_existing(path, message, sizeof message)) {
        if (!message[0]) {  // a recording of this format: is it of this setup?
            hid_t fapl = hdf5_access_plist(MPI_COMM_NULL);
            hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
            H5Pclose(fapl);
            setup_check k = {file, H5P_DEFAULT, path, info, message, sizeof message};
            attention_record_same_setup(&k);
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
