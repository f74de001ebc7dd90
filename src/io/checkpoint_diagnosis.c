// Checkpoint diagnosis (serial, no MPI): the one place that tells damaged from foreign
// from fine (checkpoint_internal.h).
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint_internal.h"
#include "io/hdf5_format.h"
#include "io/hdf5_helpers.h"

static const char *const STATE_ATTRIBUTES[] = {"step", "tokens_seen", "data_epoch", "data_index",
                                               "seed", "learning_rate", "loss"};

// Checks the format version and that /state, /params and /config are complete.
// Returns true when fine, else writes the user-facing line into `why`.
static bool check_structure(hid_t file, const char *path, char *why, size_t size) {
    int version = 0;
    if (H5Aexists(file, "format_version") <= 0) {
        snprintf(why, size, "%s is an HDF5 file but not a decon checkpoint (no format_version attribute): "
                 "pass a checkpoint written by decon-train", path);
        return false;
    }
    if (!hdf5_read_scalar(file, "format_version", H5T_NATIVE_INT, &version)) {
        snprintf(why, size, "checkpoint %s is damaged (unreadable format_version): " DAMAGED_ADVICE,
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
                if (!hdf5_read_scalar(state, STATE_ATTRIBUTES[i], H5T_NATIVE_DOUBLE, &value)) missing = STATE_ATTRIBUTES[i];
            }
            H5Gclose(state);
        }
    }
    if (missing) {
        snprintf(why, size, "checkpoint %s is incomplete (no %s%s): " DAMAGED_ADVICE, path,
                 missing[0] == '/' ? "" : "/state attribute ", missing);
        return false;
    }
    return true;
}

bool checkpoint_diagnose(const char *path, char *why, size_t size) {
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
        snprintf(why, size, "checkpoint %s is empty (truncated?): " DAMAGED_ADVICE, path);
        return false;
    }
    int superblock = hdf5_superblock_version(path);
    if (superblock < 0) {
        snprintf(why, size, "%s is not an HDF5 file: pass a decon checkpoint (<run>/ckpt/step_NNNNNNNN.h5)", path);
        return false;
    }
    if (superblock < HDF5_CHECKSUMMED_SUPERBLOCK) {  // io/hdf5_format.h: not given to HDF5
        snprintf(why, size, "%s is an HDF5 file without metadata checksums, not a checkpoint written by decon-train: "
                 "pass one written by decon-train (h5repack -L converts a file to the checksummed format)", path);
        return false;
    }
    hid_t fapl = hdf5_access_plist(MPI_COMM_NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        snprintf(why, size, "checkpoint %s is damaged (truncated?): " DAMAGED_ADVICE, path);
        return false;
    }
    bool ok = check_structure(file, path, why, size);
    H5Fclose(file);
    return ok;
}

bool checkpoint_is_valid(const char *path, MPI_Comm comm) {
    hdf5_quiet();
    int valid = 0;
    if (comm_rank(comm) == 0) {
        char why[MESSAGE_MAX];
        valid = checkpoint_diagnose(path, why, sizeof why);
    }
    MPI_Bcast(&valid, 1, MPI_INT, 0, comm);
    return valid != 0;
}
