/* rng.h — a small seeded generator (splitmix64) for sampling; state lives
 * with its user (one per sampler / request), never global. */
#ifndef LMC_RNG_H
#define LMC_RNG_H

#include <stdint.h>

/* Callable from CUDA device code too (the dropout kernel's mask). */
#if defined(__CUDACC__)
#define LMC_RNG_HD __host__ __device__
#else
#define LMC_RNG_HD
#endif

static inline LMC_RNG_HD uint64_t lmc_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* Uniform double in [0, 1). */
static inline double lmc_rng_uniform(uint64_t *s) {
    return (double)(lmc_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Counter-based keep decision of element i under dropout: the splitmix64
 * output of (seed, i) compared with p at 32-bit resolution (keep with
 * probability 1 - p). Pure: forward and backward recompute the same mask. */
static inline LMC_RNG_HD int lmc_dropout_keep(uint64_t seed, uint64_t i, uint32_t p_u32) {
    uint64_t s = seed ^ (i * 0xd1b54a32d192ed03ull);
    return (uint32_t)(lmc_rng_next(&s) >> 32) >= p_u32;
}
/* p in [0, 1) as the threshold lmc_dropout_keep takes. */
static inline uint32_t lmc_dropout_threshold(double p) {
    double t = p * 4294967296.0;
    return t <= 0 ? 0u : t >= 4294967295.0 ? 4294967295u : (uint32_t)t;
}

#endif
