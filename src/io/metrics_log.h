// JSON-lines metrics file in the run directory: one object per line, appended and
// flushed as it is written, so a crash loses nothing already logged. Under MPI one rank
// writes (the trainer's world rank 0); the others hold a discarding log and make the
// same calls, so every event is one line whatever the number of ranks.
#pragma once
#include <stdbool.h>
#include <stdio.h>

typedef struct {
    FILE *file;
    bool discard;      // a log that writes nothing (the ranks that are not the writer)
    char path[4096];   // for error messages
} metrics_log;

void metrics_log_open(metrics_log *log, const char *path);  // append mode; fatal if unwritable
void metrics_log_discard(metrics_log *log);                 // writes and close do nothing
void metrics_log_close(metrics_log *log);
// Writes one line: {"kind": kind, <key>: <value>, ...}; keys/values given as pairs
// terminated by NULL, values as doubles — pass 1.0 or (double)n, never a bare integer
// (varargs do not convert). Integral values print without a fraction ("step":120),
// others with the shortest exact digits; NaN/inf print as null. Fatal if the write fails.
#if defined(__GNUC__)
__attribute__((sentinel))
#endif
void metrics_log_write(metrics_log *log, const char *kind, ...);
