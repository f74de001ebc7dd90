#include "io/tokenizer_path.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "io/durable_file.h"

// Fatal unless path is a readable regular file; `source` says where the path came from.
static void require_readable(const char *path, const char *source, const char *checkpoint) {
    struct stat st;
    const char *why = NULL;
    if (stat(path, &st) != 0 || (!S_ISDIR(st.st_mode) && access(path, R_OK) != 0)) why = strerror(errno);
    else if (S_ISDIR(st.st_mode)) why = "it is a directory";
    if (why)
        fatal("%s: no tokenizer reachable: %s %s cannot be read (%s); give --tokenizer FILE (the sentencepiece "
              "model of the shards it was trained on, e.g. data/corpus/tokenizer.model)", checkpoint, source, path, why);
}

void tokenizer_path_find(char *out, size_t size, const decon_config *config, const char *override,
                         const char *checkpoint) {
    char source[CONFIG_STRING_MAX + 128];
    if (override) {
        snprintf(source, sizeof source, "--tokenizer");
        if ((size_t)snprintf(out, size, "%s", override) >= size) fatal("--tokenizer path is too long: %.80s...", override);
    } else if (config->tokenizer[0]) {
        snprintf(source, sizeof source, "its [data] tokenizer =");
        snprintf(out, size, "%s", config->tokenizer);
    } else {
        char dir[CONFIG_STRING_MAX];
        path_directory(config->train, dir, sizeof dir);
        snprintf(source, sizeof source, "[data] tokenizer is not set, and the file beside [data] train = %s,",
                 config->train);
        if ((size_t)snprintf(out, size, "%s/tokenizer.model", dir) >= size)
            fatal("%s: [data] train path is too long: %.80s...", checkpoint, config->train);
    }
    require_readable(out, source, checkpoint);
}
