// Counter-based random numbers: every value is a pure function of (seed, stream, index),
// so a parameter element gets the same initial value however the tensor is sharded,
// and any stream can be resumed from a saved counter without replaying it.
#pragma once
#include <stdint.h>

uint64_t rng_hash_string(const char *s);                 // FNV-1a 64
uint64_t rng_mix(uint64_t seed, uint64_t stream, uint64_t index);  // 64 random bits
double rng_uniform(uint64_t seed, uint64_t stream, uint64_t index); // in (0, 1)
double rng_normal(uint64_t seed, uint64_t stream, uint64_t index);  // N(0, 1)
