#include "core/rng.h"

#include <math.h>

uint64_t rng_hash_string(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

// splitmix64 finaliser: a bijective mixer with full avalanche.
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t rng_mix(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t key = mix64(seed + 0x9e3779b97f4a7c15ull);
    key = mix64(key ^ (stream * 0xd1b54a32d192ed03ull));
    return mix64(key ^ mix64(index + 0x632be59bd9b4e019ull));
}

double rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    // 53 random bits, shifted off zero so log() is always finite.
    return ((double)(rng_mix(seed, stream, index) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Box-Muller on two independent counters derived from index.
double rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    double u1 = rng_uniform(seed, stream, 2 * index);
    double u2 = rng_uniform(seed, stream, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
