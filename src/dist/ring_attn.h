/* ring_attn.h — context parallelism: causal ring attention over a
 * communicator. Each of the `world` ranks holds a zigzag slice of one
 * sequence of T tokens (the sequence is cut into 2*world chunks; rank r
 * holds chunks r and 2*world-1-r, so causal work is balanced). K/V blocks
 * travel around the ring (rank r sends to r+1, receives from r-1), the next
 * block's transfer overlapping the current block's compute; partial outputs
 * are merged with their log-sum-exp. The backward passes dK/dV around the
 * ring with their K/V block, so each block's gradient returns to its owner.
 * Buffers are host float32 (tcp/mpi/single communicators) and the local
 * block math runs on the CPU in this module; lmc_ring_attn_fwd_be / _bwd_be
 * run it on a backend (the GPU) through its attn_block ops. */
#ifndef LMC_RING_ATTN_H
#define LMC_RING_ATTN_H

#include "dist/comm.h"
#include "ops/backend.h"

struct lmc_ring_attn_shape {
    int64_t T;        /* tokens of the whole sequence */
    int64_t n_heads, n_kv, hd;
    float scale;      /* usually 1/sqrt(hd) */
};

/* Tokens rank `rank` of `world` holds; pos (may be NULL) gets their global
 * positions in increasing order (chunk r, then chunk 2*world-1-r). */
int64_t lmc_ring_attn_zigzag(int64_t T, int rank, int world, int64_t *pos);

/* Forward over this rank's n = lmc_ring_attn_zigzag(T, rank, world, NULL)
 * tokens: q, out (n, n_heads*hd), k, v (n, n_kv*hd), lse (n, n_heads) as
 * the backend's attention_train (natural log of the softmax normaliser).
 * Every rank calls it with the same shape. */
lmc_status lmc_ring_attn_fwd(struct lmc_comm *c, const struct lmc_ring_attn_shape *s, float *out,
                             float *lse, const float *q, const float *k, const float *v,
                             lmc_err *err);

/* Backward: dq, dk, dv (overwritten) from dout and the forward's out, lse. */
lmc_status lmc_ring_attn_bwd(struct lmc_comm *c, const struct lmc_ring_attn_shape *s, float *dq,
                             float *dk, float *dv, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v,
                             lmc_err *err);

/* The same forward and backward on a backend's memory (q, k, v, out, lse,
 * dq, dk, dv, dout: buffers from be->alloc; a device backend's): the block
 * math through be->attn_block_fwd / _merge / _bwd (ops/cuda/attn_block.cu
 * on the GPU), the K/V blocks and their dK/dV staged through host buffers
 * for the (host) communicator, the next block's transfer overlapping the
 * current block's kernels. LMC_ERR_UNSUPPORTED when the backend lacks the
 * block ops. */
lmc_status lmc_ring_attn_fwd_be(const struct lmc_backend *be, struct lmc_comm *c, const struct lmc_ring_attn_shape *s,
                                float *out, float *lse, const float *q, const float *k, const float *v, lmc_err *err);
lmc_status lmc_ring_attn_bwd_be(const struct lmc_backend *be, struct lmc_comm *c, const struct lmc_ring_attn_shape *s,
                                float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                                const float *q, const float *k, const float *v, lmc_err *err);

#endif
