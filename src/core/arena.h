// Activation arena: one allocation sized before training starts, bump-pointer
// sub-allocations, nothing allocated inside the step loop. A first pass with
// `measuring` set only adds up sizes; the second pass hands out the same layout.
#pragma once
#include <stddef.h>

typedef struct {
    char *base;
    size_t capacity, used, peak;
} arena;

void arena_reserve(arena *a, size_t bytes);   // one allocation, 64-byte aligned
void arena_free(arena *a);
float *arena_floats(arena *a, size_t count); // fatal() when the arena is too small
size_t arena_mark(const arena *a);
void arena_release(arena *a, size_t mark);   // give back everything after mark
