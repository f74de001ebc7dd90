// What the attention recording files share (attention_record.h is the public interface
// and the format's specification): attention_record.c writes one record,
// attention_record_checks.c checks an existing file and makes the working copy.
#pragma once
#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>

#include "io/attention_record.h"

enum { MESSAGE_MAX = 10240 };  // messages hold two paths

// The root attribute `kind` of every recording.
#define ATTENTION_RECORD_KIND "decon attention recording"

// Whether path exists; fills why when it exists but is not a recording this build can
// append to. Rank 0, serial driver.
bool attention_record_diagnose_existing(const char *path, char *why, size_t size);

// Copies from to to (the working copy of a record); false with why filled on failure.
bool attention_record_copy_file(const char *from, const char *to, char *why, size_t size);

// Whether the file records the same setup (shapes, dtype, layers, tokens): steps must be
// comparable. Fills why and returns false when not. Collective when file is open with
// the MPI-IO driver (every rank reads the same), plain otherwise.
typedef struct {
    hid_t file, dxpl;
    const char *path;
    const attention_record_info *info;
    char *why;
    size_t size;
} setup_check;

bool attention_record_same_setup(const setup_check *k);
