/* kvq_stream.h — StreamingLLM (Xiao et al. 2024) eviction for unbounded
 * generation in a bounded cache: keep the first S tokens (attention sinks)
 * and the most recent W; positions are assigned within the cache (a token's
 * rotary position is its slot, so the cache stays within 0..S+W-1), as the
 * method prescribes. lmc caches keys after rotary embedding, so evicting e
 * tokens moves the window rows down by e slots and rotates their keys back
 * by e positions (rotations compose: R(p - e) k = R(-e) R(p) k).
 * The policy is pure; lmc_stream_evict_rows applies it to one layer's f32
 * K/V rows; infer/spec.c's generation loop runs it (lmc generate
 * --attention-sinks S --kv-window W). */
#ifndef LMC_KVQ_STREAM_H
#define LMC_KVQ_STREAM_H

#include "lmc.h"

#include <stdint.h>

struct lmc_stream_policy {
    int64_t sinks;   /* S >= 0 */
    int64_t window;  /* W >= 1 */
    int64_t chunk;   /* evict at least this many at once (>= 1): fewer re-rotations */
};

lmc_status lmc_stream_check(const struct lmc_stream_policy *p, lmc_err *err);
/* Tokens to evict from a cache holding n (<= S+W) before adding m more
 * (m <= W): 0 when they fit, else at least what makes room, rounded up to
 * the chunk but never past the window's content. */
int64_t lmc_stream_evict_count(const struct lmc_stream_policy *p, int64_t n, int64_t m);
/* After `total` tokens have streamed through a cache under the policy with
 * chunk 1, the slot of token t (0-based), or -1 if it was evicted. */
int64_t lmc_stream_slot(const struct lmc_stream_policy *p, int64_t t, int64_t total);
/* Evicts e tokens from one layer's rows: k, v (n, n_kv*hd) slot-ordered;
 * rows S+e..n-1 move to S..n-e-1, their keys rotated back by e positions
 * (rot_dim dims per head in HF rotate_half layout, inv_freq (rot_dim/2));
 * rot_dim 0: moved only (learned positions, which StreamingLLM does not
 * cover). */
void lmc_stream_evict_rows(float *k, float *v, int64_t n, int64_t n_kv, int64_t hd, int64_t rot_dim,
                           const double *inv_freq, int64_t sinks, int64_t e);

#endif
