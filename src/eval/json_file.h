// JSON documents of the evaluation programs (decon-eval --json, decon-generate --json):
// probed before any work, so a bad path fails at once, and written to "<path>.tmp", then
// renamed over path (durable_publish), so the name never holds a partial document.
#pragma once
#include <cJSON.h>

// Fatal, one line, when path is a directory or "<path>.tmp" cannot be created there (the
// file created to try is removed). example: a file name for the advice, e.g. "eval.json".
void json_file_probe(const char *path, const char *example);
// Prints root (not freed) into path through "<path>.tmp" + rename; fatal, one line, on
// failure, with nothing left at "<path>.tmp" and an earlier file at path intact.
void json_file_write(const cJSON *root, const char *path);
