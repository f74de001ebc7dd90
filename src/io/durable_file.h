// Publishing a finished file under its final name so that the name never holds a partial
// file, even after a crash or a power cut: checkpoints (io/checkpoint_*.c) and attention
// recordings (io/attention_record*.c) are written to a temporary name, then published.
#pragma once
#include <stddef.h>

// Makes tmp's contents durable (fsync), renames it over path, and makes the rename
// durable (fsync of path's directory, best effort: some file systems refuse it). On
// failure tmp is deleted and message holds one line naming the `what` ("checkpoint",
// "attention recording") and the paths, followed on a flush failure by "; " and advice
// (may be NULL); message is empty on success. Serial: one rank calls it.
void durable_publish(const char *tmp, const char *path, const char *what, const char *advice, char *message,
                     size_t size);
// The directory part of path: "." when it has none, "/" for a file in the root.
void path_directory(const char *path, char *dir, size_t size);
