/* membw.h — measured memory read bandwidth: the roofline that decode speed
 * (weights streamed once per token) is compared against. */
#ifndef LMC_MEMBW_H
#define LMC_MEMBW_H

#include <stddef.h>

struct lmc_pool;

/* Streaming-read bandwidth in GB/s (1e9 bytes/s) of a `bytes`-sized buffer
 * read by all threads of `pool` (NULL: the calling thread alone), each thread
 * reading one contiguous slice. Best of several passes after a warm-up.
 * Returns 0 if the buffer cannot be allocated. Use >= 1 GB to defeat caches. */
double lmc_membw_read_gbs(struct lmc_pool *pool, size_t bytes);

/* One read pass over the caller's floats buf[0..n) by every thread of pool,
 * each a contiguous slice, with the same loop as lmc_membw_read_gbs;
 * returns the seconds it took. */
double lmc_membw_read_pass(struct lmc_pool *pool, const float *buf, size_t n);

#endif
