// Private to ops/cpu: the two small helpers every blocked kernel (attention.c,
// taylor_attention.c, diag_attention.c, nonapx_attention.c) needs: the size of the last,
// shorter block of a sequence, and per-thread workspaces rounded to whole cache lines
// (16 floats = 64 bytes), so no two threads write one line.
#pragma once
#include <stddef.h>

static inline int min_int(int a, int b) { return a < b ? a : b; }

static inline size_t round_to_line(size_t floats) { return (floats + 15) / 16 * 16; }
