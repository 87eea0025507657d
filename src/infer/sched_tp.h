/* sched_tp.h — tensor-parallel serving (lmc serve --tp T): the scheduler on
 * rank 0 broadcasts each forward step (the batch: ids, sequences, positions,
 * block tables, logit rows, and the KV blocks copied on write since the
 * last step) over the tensor-parallel group, and the other ranks run the
 * same step on their shard of the model and of the KV pool, so the
 * collectives inside the linears meet. Rank 0 alone samples. */
#ifndef LMC_INFER_SCHED_TP_H
#define LMC_INFER_SCHED_TP_H

#include "lmc.h"
#include "model/forward_batch.h"
#include "model/linear.h"

struct lmc_comm;

/* The pool and step sizes rank 0's scheduler chose (sent once at start). */
struct lmc_sched_tp_shape {
    int64_t kv_blocks, block_size, max_step_tokens, max_batch, max_blocks;
};

/* Rank 0: the shape, each step, the end. */
lmc_status lmc_sched_tp_hello(struct lmc_comm *c, const struct lmc_sched_tp_shape *sh, lmc_err *err);
lmc_status lmc_sched_tp_step(struct lmc_comm *c, const struct lmc_batch *b, const int32_t *copies,
                             int64_t n_copies, lmc_err *err);
lmc_status lmc_sched_tp_stop(struct lmc_comm *c, lmc_err *err);
/* Rank 0 idle: a message the followers skip, within their timeout. */
lmc_status lmc_sched_tp_keepalive(struct lmc_comm *c, lmc_err *err);

/* The other ranks: receives the shape, then runs every step rank 0 sends
 * on m (this rank's shard; g its group, checked after each step; NULL:
 * none; a model whose layers point at an expert-parallel group has that
 * group checked after each step too) until the
 * end. A lost rank 0 fails it (LMC_ERR_IO naming the rank). */
struct lmc_sched_follow_stats {
    int64_t steps, tokens, copies;  /* steps run, their tokens, KV blocks copied on write */
};
lmc_status lmc_sched_follow(const struct lmc_model *m, const struct lmc_backend *be, struct lmc_comm *c,
                            struct lmc_tp_group *g, struct lmc_sched_follow_stats *st, lmc_err *err);

#endif
