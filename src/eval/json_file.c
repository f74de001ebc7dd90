#include "eval/json_file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/durable_file.h"

enum { JSON_PATH_MAX = 4096 };

static void temporary_of(const char *path, char *temporary, size_t size) {
    if (strlen(path) >= JSON_PATH_MAX) fatal("--json path is too long: %.80s...", path);
    snprintf(temporary, size, "%s.tmp", path);
}

void json_file_probe(const char *path, const char *example) {
    char temporary[JSON_PATH_MAX + 8];
    temporary_of(path, temporary, sizeof temporary);
    struct stat st;  // the document is renamed onto path at the end, which a directory refuses
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        fatal("cannot write the JSON report %s: it is a directory; give a file name such as %s/%s", path, path,
              example);
    FILE *f = fopen(temporary, "w");
    if (!f) fatal("cannot write the JSON report %s (%s); check that its directory exists", path, strerror(errno));
    fclose(f);
    unlink(temporary);
}

void json_file_write(const cJSON *root, const char *path) {
    char temporary[JSON_PATH_MAX + 8];
    temporary_of(path, temporary, sizeof temporary);
    char *text = cJSON_Print(root);
    if (!text) fatal("out of memory building the JSON report");
    FILE *f = fopen(temporary, "w");
    if (!f) fatal("cannot write the JSON report %s (%s); check that its directory exists", temporary, strerror(errno));
    bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    int error = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        error = errno;
    }
    free(text);
    if (!ok) {
        remove(temporary);  // no half-written document left behind
        fatal("cannot write the JSON report %s (%s); check free disk space", temporary, strerror(error));
    }
    char message[1024];
    durable_publish(temporary, path, "JSON report", "check free disk space", message, sizeof message);
    if (message[0]) fatal("%s", message);
}
