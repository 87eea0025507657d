/* rng.h — a small seeded generator (splitmix64) for sampling; state lives
 * with its user (one per sampler / request), never global. */
#ifndef LMC_RNG_H
#define LMC_RNG_H

#include <stdint.h>

static inline uint64_t lmc_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* Uniform double in [0, 1). */
static inline double lmc_rng_uniform(uint64_t *s) {
    return (double)(lmc_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
