/* ep_model.h — expert parallelism for whole models (the layer itself:
 * model/moe_ep.h): inference models that load only this rank's experts and
 * run with the layer's alltoallv exchange, and trainable models whose
 * arenas hold only this rank's experts, with the data-parallel gradient
 * sum over everything else. The group (struct lmc_ep_group) is the
 * caller's and must outlive the model; every rank of its communicator
 * takes part. */
#ifndef LMC_EP_MODEL_H
#define LMC_EP_MODEL_H

#include "dist/comm.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/moe_ep.h"

/* Loads dir (float safetensors; opts as lmc_model_load) with only rank
 * c->rank's experts read (lmc_model_load_experts), and makes g the model's
 * group (replicated: every rank runs the same tokens, as `lmc generate
 * --ep N`). A dense model, or more ranks than experts, is refused naming
 * the field. On success free with lmc_model_free then lmc_ep_group_free. */
lmc_status lmc_ep_model_load(struct lmc_model *m, struct lmc_ep_group *g, const char *dir,
                             const struct lmc_model_opts *opts, struct lmc_comm *c, bool replicated,
                             lmc_err *err);
/* Points every layer of w at g (again after a rebind) and unbinds the
 * experts other ranks own. */
void lmc_ep_weights_attach(struct lmc_weights *w, int64_t L, struct lmc_ep_group *g);

/* tm (new, on be) <- this rank's part of `full` (same config): every
 * tensor but other ranks' experts (external in tm's table), values copied
 * from full; its layers point at g (made here for full's config over c,
 * data parallel semantics: each rank trains on its own tokens). */
lmc_status lmc_ep_tmodel_shard(struct lmc_tmodel *tm, struct lmc_ep_group *g, const struct lmc_tmodel *full,
                               struct lmc_comm *c, const struct lmc_backend *be, lmc_err *err);
/* The same from scratch: tm's table for cfg with this rank's experts, and
 * g; values are the caller's (lmc_tmodel_init_random draws every tensor,
 * so each rank gets the values one process would have). */
lmc_status lmc_ep_tmodel_init(struct lmc_tmodel *tm, struct lmc_ep_group *g, const struct lmc_config *cfg,
                              struct lmc_comm *c, const struct lmc_backend *be, lmc_err *err);
/* Whether parameter p is an expert's tensor (owned by one rank). */
bool lmc_ep_tparam_is_expert(const struct lmc_tparam *p);
/* Data parallelism over the replicated weights: sums tm's gradients of
 * every tensor but the experts over g's ranks (in place; the experts'
 * gradients already hold every rank's tokens). */
lmc_status lmc_ep_tmodel_reduce_dense(struct lmc_tmodel *tm, struct lmc_ep_group *g, lmc_err *err);

/* The global gradient norm (clipping) after lmc_ep_tmodel_reduce_dense:
 * the replicated tensors counted once, every rank's experts summed; the
 * same value on every rank. */
lmc_status lmc_ep_tmodel_grad_norm(struct lmc_tmodel *tm, struct lmc_ep_group *g, double *norm, lmc_err *err);

#endif
