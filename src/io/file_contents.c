#include "io/file_contents.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

char *file_contents_read(const char *path, size_t *size, char *message, size_t message_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(message, message_size, "cannot read it (%s)", strerror(errno));
        return NULL;
    }
    size_t capacity = 1 << 16, used = 0, got;
    char *bytes = xmalloc(capacity + 1);
    while ((got = fread(bytes + used, 1, capacity - used, f)) > 0) {
        used += got;
        if (used == capacity) {
            char *grown = xmalloc(capacity * 2 + 1);
            memcpy(grown, bytes, used);
            free(bytes);
            bytes = grown;
            capacity *= 2;
        }
    }
    int failed = ferror(f), reason = errno;
    fclose(f);
    if (failed) {
        snprintf(message, message_size, "read error (%s)", strerror(reason));
        free(bytes);
        return NULL;
    }
    bytes[used] = '\0';
    *size = used;
    return bytes;
}
