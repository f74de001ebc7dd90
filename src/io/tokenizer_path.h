// Where a checkpoint's tokenizer is. A checkpoint stores its resolved config, and the
// tokenizer belongs to the token shards it was trained on, so the rule is:
//   1. --tokenizer FILE, when the user gives one;
//   2. [data] tokenizer of the checkpoint's config, when set (a path as the trainer saw it);
//   3. tokenizer.model in the directory of its [data] train shard (the corpus recipe puts
//      it there: data/corpus/tokenizer.model beside data/corpus/train.bin).
// Relative paths are read from the current directory, as [data] train is by decon-eval.
#pragma once
#include <stddef.h>

#include "core/config.h"

// Writes the tokenizer's path into out[size]. Fatal, one line naming the checkpoint and
// the place looked at, when that file cannot be read (a checkpoint without a tokenizer
// reachable): the user then gives --tokenizer FILE.
void tokenizer_path_find(char *out, size_t size, const decon_config *config, const char *override,
                         const char *checkpoint);
