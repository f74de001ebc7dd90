// How analysis reports a problem: one user-facing line written into the caller's `why`
// buffer (file, what is wrong, what to do), never an exit, so an MPI program can agree
// on the outcome across ranks before it stops (decon-analyze.c).
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "core/errors.h"

// Formats the line into why[size]; returns false, so `return why_fail(...)` reads well.
DECON_PRINTF(3, 4) bool why_fail(char *why, size_t size, const char *format, ...);
