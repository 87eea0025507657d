/* argmax.h — the first maximum of a float row, the one greedy choice every
 * layer makes (the sampler, the CPU backend's argmax_rows, batched forward's
 * fallback): a left-to-right scan keeping the first strict maximum, so ties
 * go to the first index, a NaN is never taken over a number and a NaN at
 * index 0 stays. lmc_argmax_f32_scan is that scan; lmc_argmax_f32 its AVX2
 * twin where built (the same index on every input: test_argmax). */
#ifndef LMC_CORE_ARGMAX_H
#define LMC_CORE_ARGMAX_H

#include <stdint.h>

int64_t lmc_argmax_f32(const float *x, int64_t n);
int64_t lmc_argmax_f32_scan(const float *x, int64_t n);

#endif
