// A whole (small) file in memory: the prompt file of decon-generate, the tokenizer model
// decon-export copies.
#pragma once
#include <stddef.h>

// The bytes of path, followed by a '\0' not counted in *size (malloc'd: free it). NULL on
// failure, with message holding "cannot read it (reason)" or "read error (reason)" for the
// caller to prefix with what the file is.
char *file_contents_read(const char *path, size_t *size, char *message, size_t message_size);
