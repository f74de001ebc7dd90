// JSON-lines task files (cloze, multiple choice): one JSON object per line, token ids as
// integer arrays (so the evaluator needs no tokenizer). Blank lines are skipped; keys a
// task does not use are ignored (the shipped files carry readable "text"/"source" keys).
// Every problem is one fatal line "file:line: what is wrong".
#pragma once
#include <cJSON.h>
#include <stdio.h>

#include "core/errors.h"

typedef struct {
    FILE *file;
    char path[4096];
    int line;               // 1-based number of the line last read
    char *text;
    size_t capacity;
    int vocab_size;         // ids must be < this
    int max_length;         // context + continuation - 1 must be <= this
} task_file;

// Opens path (fatal when it cannot be read).
void task_file_open(task_file *f, const char *path, int vocab_size, int max_length);
void task_file_close(task_file *f);
// The next object (caller frees with cJSON_Delete), NULL at the end of the file.
cJSON *task_file_next(task_file *f);
// The non-empty integer array `key` of object as a malloc'd int array of *length ids,
// each in [0, vocab_size).
int *task_file_tokens(const task_file *f, const cJSON *object, const char *key, int *length);
// The same for an array item (messages call it `name`, e.g. "choices[2]").
int *task_file_token_array(const task_file *f, const cJSON *array, const char *name, int *length);
// The integer `key` of object.
int task_file_integer(const task_file *f, const cJSON *object, const char *key);
// Fatal "path:line: <message>" about the line last read.
_Noreturn void task_file_error(const task_file *f, const char *format, ...) DECON_PRINTF(2, 3);
// Fatal unless a model input of `length` tokens (context + continuation - 1) fits max_length.
void task_file_check_length(const task_file *f, int length);
