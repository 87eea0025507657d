/* moe_ep.h — expert parallelism of the mixture-of-experts feed-forward part
 * (ffn_moe.c): the experts of every sparse layer are split over the ranks
 * of a communicator, rank r owning the contiguous range [first[r],
 * first[r+1]) (lmc_dist_slice of the experts), and only those experts'
 * linears are bound in lmc_block_w.experts. Each rank routes its own tokens
 * (the router is replicated), sends the rows chosen for another rank's
 * experts there with one alltoallv, runs its experts' grouped GEMM over
 * the rows it received (ordered by expert, then by source rank: the order
 * one process would give the same global batch), and sends the outputs
 * back by the reverse alltoallv; the owner combines them with the router
 * weights as one process does. The backward sends the outputs' gradients
 * to the owners, which add their experts' weight gradients and return the
 * inputs' gradients. Data parallel semantics: each rank holds different
 * tokens (training); in `replicated` mode (inference with one prompt on
 * every rank) each rank dispatches its slice of the step's tokens and the
 * layer's outputs are all-gathered, so every rank continues with all rows.
 *
 * The group lives as long as the weights that point to it. Collectives run
 * inside void forwards: a failure is kept in st (sticky; the layer's output
 * is then its residual) for the driver to check after the step
 * (lmc_ep_group_check). Host-memory backends (MoE routing runs on the
 * host). */
#ifndef LMC_MODEL_MOE_EP_H
#define LMC_MODEL_MOE_EP_H

#include "model/block.h"

struct lmc_ep_layer;

struct lmc_ep_group {
    struct lmc_comm *c;
    int64_t E, L;                     /* experts per sparse layer, layers */
    int64_t *first;                   /* (world + 1) first expert of each rank */
    int64_t e0, ne;                   /* this rank's experts */
    bool replicated;                  /* every rank holds the same tokens (inference) */
    struct lmc_ep_layer *layers;      /* (L) what the backward needs, per layer */
    /* step scratch (host, grown as needed) */
    float *sa, *sb, *si1, *si2;
    int64_t cap_rows;
    float *gather;                    /* replicated mode: all-gathered outputs */
    int64_t cap_gather;
    int64_t *plan;                    /* 6 * world int64 of the exchange's sizes and offsets */
    lmc_status st;
    lmc_err err;
};

/* E experts split over c's ranks for a model of L layers. LMC_ERR_ARG when
 * some rank would own no expert (more ranks than experts). */
lmc_status lmc_ep_group_init(struct lmc_ep_group *g, struct lmc_comm *c, int64_t E, int64_t L,
                             bool replicated, lmc_err *err);
void lmc_ep_group_free(struct lmc_ep_group *g);
/* The first failure of the steps since the last check (then reset). */
lmc_status lmc_ep_group_check(struct lmc_ep_group *g, lmc_err *err);

/* ---- Used by ffn_moe.c. */

/* The experts part over rows grouped by expert (ffn_moe.c): rows off[e] ..
 * off[e+1]-1 of xs (rows, C) through expert e of X ((ne, LMC_X_N) linears):
 * g, u (rows, I) its gate and up, a = silu(g) u, o (rows, C) its output. */
void lmc_moe_experts_fwd(const struct lmc_backend *be, const struct lmc_config *c,
                         const struct lmc_linear *X, int64_t ne, const int64_t *off, const float *xs,
                         float *g, float *u, float *a, float *o);
/* Its backward: do_ (rows, C) d(o) on entry, d(xs) on return; da, du
 * (rows, I) scratch; gradients += into GX. */
void lmc_moe_experts_bwd(const struct lmc_backend *be, const struct lmc_config *c,
                         const struct lmc_linear *X, const struct lmc_linear *GX, int64_t ne,
                         const int64_t *off, float *do_, float *da, float *du, const float *xs,
                         const float *g, const float *u, const float *a);

/* Layer l, this rank's nk routed rows xs (nk, C) grouped by expert (off,
 * E + 1 entries over all experts): o (nk, C) = each row through its
 * expert, wherever it lives. X: the layer's expert table (this rank's
 * experts bound). Every rank of the group must call it for the layer. */
void lmc_ep_experts_fwd(struct lmc_ep_group *g, int64_t l, const struct lmc_backend *be,
                        const struct lmc_config *c, const struct lmc_linear *X, const int64_t *off,
                        const float *xs, int64_t nk, float *o);
/* Its backward (after lmc_ep_experts_fwd of the same layer and rows):
 * do_ (nk, C) d(o) on entry, d(xs) on return; this rank's experts'
 * gradients += into GX. */
void lmc_ep_experts_bwd(struct lmc_ep_group *g, int64_t l, const struct lmc_backend *be,
                        const struct lmc_config *c, const struct lmc_linear *X, const struct lmc_linear *GX,
                        const int64_t *off, float *do_, int64_t nk);

/* Replicated mode: y (n, C) holds on each rank its slice (lmc_dist_slice)
 * of the n rows; afterwards every rank holds all of them. per: the most
 * rows of a slice (ceil(n / world)). */
void lmc_ep_gather_rows(struct lmc_ep_group *g, float *y, int64_t n, int64_t C, int64_t per);

#endif
