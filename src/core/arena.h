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
void arena_free(arena *a);                    // of arena_reserve's allocation
// An arena over `bytes` of 64-byte aligned memory the caller owns and frees (the model's:
// backend memory from ops_alloc, which core/ cannot call).
void arena_over(arena *a, void *base, size_t bytes);
float *arena_floats(arena *a, size_t count); // fatal() when the arena is too small
size_t arena_mark(const arena *a);
void arena_release(arena *a, size_t mark);   // give back everything after mark
