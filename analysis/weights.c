#include "analysis/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/svd.h"
#include "analysis/why.h"
#include "core/errors.h"
#include "io/checkpoint.h"
#include "io/hdf5_helpers.h"

// Shape of a 2-D dataset /params/<name>; false when absent or not 2-D.
static bool tensor_shape(hid_t params, const char *name, hsize_t dims[2]) {
    if (H5Lexists(params, name, H5P_DEFAULT) <= 0) return false;
    hid_t dataset = H5Dopen2(params, name, H5P_DEFAULT);
    if (dataset < 0) return false;
    hid_t space = H5Dget_space(dataset);
    bool ok = space >= 0 && H5Sget_simple_extent_ndims(space) == 2 && H5Sget_simple_extent_dims(space, dims, NULL) == 2;
    if (space >= 0) H5Sclose(space);
    H5Dclose(dataset);
    return ok;
}

static bool layer_exists(hid_t params, int layer) {
    char name[96];
    snprintf(name, sizeof name, "layers.%d.input_layernorm", layer);
    return H5Lexists(params, name, H5P_DEFAULT) > 0;
}

hid_t weights_open(const char *path, char *why, size_t size) {
    hid_t file = recording_open_file(path, "a checkpoint of the recorded run, <run_dir>/ckpt/latest.h5",
                                     "pass an intact checkpoint of the recorded run", why, size);
    if (file < 0) {  // the line names the file; say that it is the checkpoint
        char inner[RECORDING_WHY];
        snprintf(inner, sizeof inner, "%s", why);
        why_fail(why, size, "checkpoint %s", inner);
    }
    return file;
}

bool weights_scan(weights_info *info, const char *path, const recording_info *recording, char *why, size_t size) {
    memset(info, 0, sizeof *info);
    snprintf(info->path, sizeof info->path, "%s", path);
    hid_t file = weights_open(path, why, size);
    if (file < 0) return false;
    int version = 0;
    bool ok = true;
    if (!hdf5_read_scalar(file, "format_version", H5T_NATIVE_INT, &version))
        ok = why_fail(why, size, "%s is not a decon checkpoint (no format_version): pass <run_dir>/ckpt/latest.h5 of the "
                  "recorded run", path);
    else if (version != CHECKPOINT_FORMAT_VERSION)
        ok = why_fail(why, size, "checkpoint %s has format version %d but this build reads %d: use the decon version that "
                  "wrote it", path, version, CHECKPOINT_FORMAT_VERSION);
    hid_t params = ok && H5Lexists(file, "params", H5P_DEFAULT) > 0 ? H5Gopen2(file, "params", H5P_DEFAULT) : -1;
    if (ok && params < 0)
        ok = why_fail(why, size, "checkpoint %s is incomplete (no /params): pass an intact checkpoint of the recorded run",
                  path);
    if (ok && H5Lexists(file, "state", H5P_DEFAULT) > 0) {
        hid_t state = H5Gopen2(file, "state", H5P_DEFAULT);
        long long step = -1;
        if (state >= 0 && !hdf5_read_scalar(state, "step", H5T_NATIVE_LLONG, &step)) step = -1;
        if (state >= 0) H5Gclose(state);
        info->step = step;
    }
    info->layers = recording->num_layers;
    info->heads = recording->num_heads;
    if (ok && (!layer_exists(params, info->layers - 1) || layer_exists(params, info->layers))) {
        int count = 0;
        while (count < 100000 && layer_exists(params, count)) count++;
        ok = why_fail(why, size, "checkpoint %s has %d layers but recording %s has %d: pass the checkpoint of the recorded "
                  "run", path, count, recording->path, recording->num_layers);
    }
    if (ok) {
        info->status = xcalloc((size_t)info->layers, sizeof *info->status);
        info->note = xcalloc((size_t)info->layers, sizeof *info->note);
        int usable = 0;
        for (int l = 0; l < info->layers; l++) {
            char name[96];
            hsize_t q[2], k[2], v[2], o[2];
            snprintf(name, sizeof name, "layers.%d.mixer.wq", l);
            bool has_q = tensor_shape(params, name, q);
            snprintf(name, sizeof name, "layers.%d.mixer.wk", l);
            bool has_k = tensor_shape(params, name, k);
            snprintf(name, sizeof name, "layers.%d.mixer.wv", l);
            bool has_v = tensor_shape(params, name, v);
            snprintf(name, sizeof name, "layers.%d.mixer.wo", l);
            bool has_o = tensor_shape(params, name, o);
            if (!(has_q && has_k && has_v && has_o)) {
                info->status[l] = WEIGHTS_ABSENT;
                snprintf(info->note[l], sizeof info->note[l], "no layers.%d.mixer.{wq,wk,wv,wo} (mixer without them)", l);
                continue;
            }
            int heads = info->heads;
            long long head_dim = (long long)q[0] / heads, d = (long long)q[1];
            long long kv = head_dim > 0 ? (long long)k[0] / head_dim : 0;
            bool per_head = (long long)q[0] == heads * head_dim && head_dim > 0 && kv > 0 &&
                            (long long)k[0] == kv * head_dim && heads % kv == 0 && k[1] == q[1] && v[0] == k[0] &&
                            v[1] == q[1] && (long long)o[0] == d && o[1] == q[0];
            if (!per_head) {
                info->status[l] = WEIGHTS_NOT_PER_HEAD;
                snprintf(info->note[l], sizeof info->note[l],
                         "wq [%llu, %llu], wk [%llu, %llu], wo [%llu, %llu] are not %d per-head slices", 
                         (unsigned long long)q[0], (unsigned long long)q[1], (unsigned long long)k[0],
                         (unsigned long long)k[1], (unsigned long long)o[0], (unsigned long long)o[1], heads);
                continue;
            }
            if (usable && (info->head_dim != head_dim || info->hidden != d || info->kv_heads != kv)) {
                info->status[l] = WEIGHTS_NOT_PER_HEAD;
                snprintf(info->note[l], sizeof info->note[l], "head size differs from the other layers");
                continue;
            }
            info->head_dim = (int)head_dim;
            info->hidden = (int)d;
            info->kv_heads = (int)kv;
            info->status[l] = WEIGHTS_OK;
            usable++;
        }
    }
    if (params >= 0) H5Gclose(params);
    H5Fclose(file);
    if (!ok) weights_free(info);
    return ok;
}

void weights_free(weights_info *info) {
    free(info->status);
    free(info->note);
    info->status = NULL;
    info->note = NULL;
}

static bool read_tensor(hid_t file, int layer, const char *which, double *out, const char *path, char *why,
                        size_t size) {
    char name[128];
    snprintf(name, sizeof name, "/params/layers.%d.mixer.%s", layer, which);
    hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT);
    bool ok = dataset >= 0 && H5Dread(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0;
    if (dataset >= 0) H5Dclose(dataset);
    if (!ok) return why_fail(why, size, "checkpoint %s: reading %s failed (corrupt or truncated file): pass an intact "
                         "checkpoint", path, name);
    return true;
}

bool weights_layer_spectra(hid_t file, const weights_info *info, int layer, double *qk, double *ov, char *why,
                           size_t size) {
    const int h = info->heads, kv = info->kv_heads, dh = info->head_dim, d = info->hidden;
    const size_t q_rows = (size_t)h * (size_t)dh, kv_rows = (size_t)kv * (size_t)dh;
    double *wq = xmalloc(q_rows * (size_t)d * sizeof(double)), *wk = xmalloc(kv_rows * (size_t)d * sizeof(double));
    double *wv = xmalloc(kv_rows * (size_t)d * sizeof(double)), *wo = xmalloc((size_t)d * q_rows * sizeof(double));
    double *columns = xmalloc((size_t)d * (size_t)dh * sizeof(double));
    bool ok = read_tensor(file, layer, "wq", wq, info->path, why, size) &&
              read_tensor(file, layer, "wk", wk, info->path, why, size) &&
              read_tensor(file, layer, "wv", wv, info->path, why, size) &&
              read_tensor(file, layer, "wo", wo, info->path, why, size);
    for (int j = 0; ok && j < h; j++) {
        int g = j / (h / kv);
        // A row-major d_h x d slice is the column-major d x d_h matrix S^T.
        const double *sq = wq + (size_t)j * dh * d, *sk = wk + (size_t)g * dh * d, *sv = wv + (size_t)g * dh * d;
        // S_o: columns j d_h.. of wo [d, h d_h], as a column-major d x d_h matrix.
        for (int c = 0; c < dh; c++)
            for (int i = 0; i < d; i++) columns[(size_t)c * d + i] = wo[(size_t)i * q_rows + (size_t)j * dh + c];
        int info_qk = svd_product_core(d, dh, sq, sk, qk + (size_t)j * dh);
        int info_ov = svd_product_core(d, dh, sv, columns, ov + (size_t)j * dh);
        if (info_qk != 0 || info_ov != 0)
            ok = why_fail(why, size, "checkpoint %s: the SVD of layer %d head %d did not converge (LAPACK info %d/%d): the "
                      "weights may hold NaN or Inf", info->path, layer, j, info_qk, info_ov);
    }
    free(wq);
    free(wk);
    free(wv);
    free(wo);
    free(columns);
    return ok;
}
