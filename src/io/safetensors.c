#include "io/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/durable_file.h"

static cJSON *checked(cJSON *item) {
    if (!item) fatal("out of memory building a safetensors header");
    return item;
}

static char *header_json(const safetensors_tensor *tensors, int count, const char *const *metadata, int pairs) {
    cJSON *root = checked(cJSON_CreateObject());
    cJSON *meta = checked(cJSON_AddObjectToObject(root, "__metadata__"));
    for (size_t i = 0; i < (size_t)pairs; i++)
        checked(cJSON_AddStringToObject(meta, metadata[2 * i], metadata[2 * i + 1]));
    uint64_t offset = 0;
    for (int t = 0; t < count; t++) {
        const safetensors_tensor *x = &tensors[t];
        cJSON *entry = checked(cJSON_AddObjectToObject(root, x->name));
        checked(cJSON_AddStringToObject(entry, "dtype", "F32"));
        cJSON *shape = checked(cJSON_AddArrayToObject(entry, "shape"));
        uint64_t elements = 1;
        for (int d = 0; d < x->ndim; d++) {
            cJSON_AddItemToArray(shape, checked(cJSON_CreateNumber((double)x->shape[d])));
            elements *= (uint64_t)x->shape[d];
        }
        cJSON *offsets = checked(cJSON_AddArrayToObject(entry, "data_offsets"));
        cJSON_AddItemToArray(offsets, checked(cJSON_CreateNumber((double)offset)));
        offset += elements * sizeof(float);
        cJSON_AddItemToArray(offsets, checked(cJSON_CreateNumber((double)offset)));
    }
    char *text = cJSON_PrintUnformatted(root);
    if (!text) fatal("out of memory building a safetensors header");
    cJSON_Delete(root);
    return text;
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

// fwrite of n floats as little-endian bytes, in blocks (byte-swapped on a big-endian host).
static int write_floats(FILE *f, const float *data, size_t n) {
    if (host_is_little_endian()) return fwrite(data, sizeof(float), n, f) == n;
    unsigned char block[4096];
    for (size_t i = 0; i < n;) {
        size_t m = 0;
        for (; m < sizeof block / 4 && i < n; m++, i++) {
            uint32_t bits;
            memcpy(&bits, &data[i], 4);
            for (int b = 0; b < 4; b++) block[4 * m + (size_t)b] = (unsigned char)(bits >> (8 * b));
        }
        if (fwrite(block, 4, m, f) != m) return 0;
    }
    return 1;
}

void safetensors_write(const char *path, const safetensors_tensor *tensors, int count, const char *const *metadata,
                       int metadata_pairs) {
    char *header = header_json(tensors, count, metadata, metadata_pairs);
    size_t length = strlen(header), padded = (length + 7) / 8 * 8;
    size_t tmp_size = strlen(path) + 5;
    char *tmp = xmalloc(tmp_size);
    snprintf(tmp, tmp_size, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) fatal("cannot write %s (%s); check that its directory exists and is writable", tmp, strerror(errno));
    unsigned char size_bytes[8];
    for (int b = 0; b < 8; b++) size_bytes[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    int ok = fwrite(size_bytes, 1, 8, f) == 8 && fwrite(header, 1, length, f) == length;
    for (size_t i = length; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int t = 0; ok && t < count; t++) {
        size_t n = (size_t)tensors[t].shape[0] * (size_t)(tensors[t].ndim == 2 ? tensors[t].shape[1] : 1);
        ok = write_floats(f, tensors[t].data, n);
    }
    int error = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        error = errno;
    }
    cJSON_free(header);
    if (!ok) {
        unlink(tmp);
        fatal("cannot write %s (%s); the earlier %s, if any, is intact; free some space and export again", tmp,
              strerror(error), path);
    }
    char message[8192];
    durable_publish(tmp, path, "safetensors file", "free some space and export again", message, sizeof message);
    free(tmp);
    if (message[0]) fatal("%s", message);
}
