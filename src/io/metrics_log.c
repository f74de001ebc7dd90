// JSON-lines metrics log (metrics_log.h). Each call builds one object with cJSON and
// writes it as one line, flushed at once. Numbers are formatted here (cJSON raw values)
// so integral values print without a fractional part or exponent ("step": 1200,
// "tokens_seen": 1000000000000) and others round-trip exactly; NaN and infinities,
// which JSON cannot express, print as null.
#include "io/metrics_log.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

void metrics_log_open(metrics_log *log, const char *path) {
    log->discard = false;
    snprintf(log->path, sizeof log->path, "%s", path);
    log->file = fopen(path, "a");
    if (!log->file)
        fatal("cannot open metrics log %s for appending: %s; check that the run directory exists and is writable",
              path, strerror(errno));
}

void metrics_log_discard(metrics_log *log) {
    log->file = NULL;
    log->discard = true;
    log->path[0] = '\0';
}

void metrics_log_close(metrics_log *log) {
    if (log->file && fclose(log->file) != 0)
        fatal("cannot write metrics log %s: %s; check free disk space", log->path, strerror(errno));
    log->file = NULL;
}

// Shortest text that reads back as the same double.
static void format_number(double value, char *text, size_t size) {
    if (!isfinite(value)) {
        snprintf(text, size, "null");
    } else if (value == nearbyint(value) && fabs(value) < 9007199254740992.0) {  // 2^53
        snprintf(text, size, "%.0f", value == 0.0 ? 0.0 : value);                // no "-0"
    } else {
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(text, size, "%.*g", digits, value);
            if (strtod(text, NULL) == value) break;
        }
    }
}

void metrics_log_write(metrics_log *log, const char *kind, ...) {
    if (log->discard) return;
    if (!log->file) fatal("metrics_log_write: the log is not open");
    cJSON *object = cJSON_CreateObject();
    if (!object || !cJSON_AddStringToObject(object, "kind", kind)) fatal("out of memory building a metrics line");
    va_list args;
    va_start(args, kind);
    for (const char *key = va_arg(args, const char *); key; key = va_arg(args, const char *)) {
        double value = va_arg(args, double);
        char text[64];
        format_number(value, text, sizeof text);
        if (!cJSON_AddRawToObject(object, key, text)) fatal("out of memory building a metrics line");
    }
    va_end(args);
    char *line = cJSON_PrintUnformatted(object);
    if (!line) fatal("out of memory building a metrics line");
    if (fputs(line, log->file) == EOF || fputc('\n', log->file) == EOF || fflush(log->file) != 0)
        fatal("cannot write metrics log %s: %s; check free disk space", log->path, strerror(errno));
    free(line);
    cJSON_Delete(object);
}
