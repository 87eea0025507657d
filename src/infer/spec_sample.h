/* spec_sample.h — the speculative sampling rule (Leviathan et al. 2023,
 * Chen et al. 2023) over dense distributions: given the target's
 * distributions p after each drafted prefix and the draft's q that drew
 * the drafted tokens, accept each draft with probability min(1, p/q), and
 * at the first rejection draw from norm(max(0, p - q)); when every draft
 * is accepted draw a bonus token from the last p. The tokens produced are
 * distributed exactly as sampling the target one token at a time. p and q
 * come from lmc_sampler_probs (the same penalties and filters for both);
 * greedy rows are one-hot, so greedy speculation gives the target's argmax
 * tokens exactly. Pure: no model, no allocation. */
#ifndef LMC_SPEC_SAMPLE_H
#define LMC_SPEC_SAMPLE_H

#include <stdint.h>

/* Draws from the dense distribution p (V, sums to ~1) with the uniform u in
 * [0, 1): the first id whose cumulative mass exceeds u * sum; rounding past
 * the end gives the last id with p > 0. */
int32_t lmc_spec_draw(const float *p, int64_t V, double u);

/* Draws from norm(max(0, p - q)) with u; q NULL means q one-hot at d (a
 * deterministic draft). When the residual has no mass (p <= q everywhere,
 * possible only through rounding), draws from p. */
int32_t lmc_spec_draw_residual(const float *p, const float *q, int32_t d, int64_t V, double u);

/* Verifies K drafted tokens draft[0..K). p: (K+1, V), row i the target's
 * distribution after the prefix and draft[0..i); q: (K, V), row i the
 * distribution draft[i] was drawn from, or NULL for deterministic drafts
 * (q one-hot at draft[i], as prompt lookup or greedy drafts). Uniforms come
 * from *rng (lmc_rng_uniform). Writes out[0..a] = draft[0..a) then the
 * corrected or bonus token, and returns a, the number of drafts accepted
 * (0..K); K may be 0 (one plain draw from p). */
int64_t lmc_spec_accept(const float *p, const float *q, int64_t V, const int32_t *draft, int64_t K,
                        uint64_t *rng, int32_t *out);

#endif
