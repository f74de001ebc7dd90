#include "eval/task_file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"

void task_file_open(task_file *f, const char *path, int vocab_size, int max_length) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) fatal("task file path is too long: %.80s...", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->file = fopen(path, "r");
    if (!f->file) fatal("cannot open task file %s (%s); check the path", path, strerror(errno));
    struct stat st;  // a directory opens, then fails to read
    if (fstat(fileno(f->file), &st) != 0 || !S_ISREG(st.st_mode))
        fatal("task file %s is not a regular file; pass a JSON-lines file such as data/tasks/cloze.jsonl", path);
    f->vocab_size = vocab_size;
    f->max_length = max_length;
}

void task_file_close(task_file *f) {
    if (f->file) fclose(f->file);
    free(f->text);
    f->file = NULL;
    f->text = NULL;
}

_Noreturn void task_file_error(const task_file *f, const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    fatal("%s:%d: %s", f->path, f->line, message);
}

static bool blank(const char *text) {
    for (; *text; text++)
        if (*text != ' ' && *text != '\t' && *text != '\r' && *text != '\n') return false;
    return true;
}

cJSON *task_file_next(task_file *f) {
    for (;;) {
        errno = 0;
        ssize_t got = getline(&f->text, &f->capacity, f->file);
        if (got < 0) {
            if (ferror(f->file)) fatal("cannot read task file %s after line %d (%s)", f->path, f->line, strerror(errno));
            return NULL;
        }
        f->line++;
        if ((size_t)got != strlen(f->text)) task_file_error(f, "the line contains a NUL byte; expected one JSON object");
        if (blank(f->text)) continue;
        const char *end = NULL;
        cJSON *object = cJSON_ParseWithOpts(f->text, &end, false);
        if (!object) {
            const char *where = cJSON_GetErrorPtr();
            long column = where && where >= f->text && where <= f->text + got ? (long)(where - f->text) + 1 : 0;
            task_file_error(f, "not valid JSON (near column %ld); expected one object per line", column);
        }
        if (!blank(end)) {
            cJSON_Delete(object);
            task_file_error(f, "text after the JSON object; expected one object per line");
        }
        if (!cJSON_IsObject(object)) {
            cJSON_Delete(object);
            task_file_error(f, "expected a JSON object, e.g. {\"context\": [12, 7], ...}");
        }
        return object;
    }
}

static bool integral(const cJSON *item, double low, double high) {
    return cJSON_IsNumber(item) && item->valuedouble == floor(item->valuedouble) && item->valuedouble >= low &&
           item->valuedouble <= high;
}

int *task_file_tokens(const task_file *f, const cJSON *object, const char *key, int *length) {
    const cJSON *array = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!array) task_file_error(f, "missing \"%s\" (an array of token ids)", key);
    return task_file_token_array(f, array, key, length);
}

int *task_file_token_array(const task_file *f, const cJSON *array, const char *name, int *length) {
    if (!cJSON_IsArray(array)) task_file_error(f, "\"%s\" must be an array of token ids", name);
    int n = cJSON_GetArraySize(array);
    if (n == 0) task_file_error(f, "\"%s\" is empty; it needs at least one token id", name);
    int *ids = xmalloc((size_t)n * sizeof(int));
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, array) {
        if (!integral(item, -2147483648.0, 2147483647.0))
            task_file_error(f, "\"%s\"[%d] is not an integer token id", name, i);
        if (item->valuedouble < 0 || item->valuedouble >= f->vocab_size)
            task_file_error(f, "token id %.0f in \"%s\"[%d] is outside the model's vocabulary [0, %d); was the file "
                            "built with another tokenizer?", item->valuedouble, name, i, f->vocab_size);
        ids[i++] = (int)item->valuedouble;
    }
    *length = n;
    return ids;
}

int task_file_integer(const task_file *f, const cJSON *object, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!item) task_file_error(f, "missing \"%s\" (an integer)", key);
    if (!integral(item, -2147483648.0, 2147483647.0)) task_file_error(f, "\"%s\" must be an integer", key);
    return (int)item->valuedouble;
}

void task_file_check_length(const task_file *f, int length) {
    if (length > f->max_length)
        task_file_error(f, "context + continuation need %d model inputs, more than the %d allowed for this model",
                        length, f->max_length);
}
