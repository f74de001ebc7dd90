#include "core/arena.h"

#include "core/errors.h"

void arena_over(arena *a, void *base, size_t bytes) {
    a->base = base;
    a->capacity = bytes;
    a->used = a->peak = 0;
}

void arena_reserve(arena *a, size_t bytes) { arena_over(a, xaligned_alloc(bytes), bytes); }

void arena_free(arena *a) {
    free(a->base);
    a->base = NULL;
    a->capacity = a->used = 0;
}

float *arena_floats(arena *a, size_t count) {
    size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
    if (a->used + bytes > a->capacity)
        fatal("internal: activation arena too small (%zu + %zu > %zu bytes)", a->used, bytes, a->capacity);
    float *p = (float *)(a->base + a->used);
    a->used += bytes;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

size_t arena_mark(const arena *a) { return a->used; }
void arena_release(arena *a, size_t mark) { a->used = mark; }
