// Activation arena: one allocation (arena_reserve) sized before training starts from the
// analytic counts (the mixers' saved_floats / scratch_floats and the model's own buffers),
// then bump-pointer sub-allocations; the arena never grows, and a request past its
// capacity is fatal (a wrong count shows at once). `peak` records the most ever used.
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
