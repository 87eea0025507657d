/* trainer_internal.h — what trainer.c and trainer_dist.c share: the batch
 * split and the data-parallel step (not part of the trainer's API). */
#ifndef LMC_TRAIN_TRAINER_INTERNAL_H
#define LMC_TRAIN_TRAINER_INTERNAL_H

#include "train/trainer.h"

/* tr->batch (B, T+1) windows -> tr->in, tr->tg */
void lmc_trainer_split_batch(struct lmc_trainer *tr);
/* lmc_trainer_step with tr->zero set */
lmc_status lmc_trainer_dist_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err);
/* rank 0 after lmc_trainer_dist_save: the parameters (host memory, the
 * arena's offsets, each tensor in its on-disk layout) until the next
 * step; NULL otherwise */
const float *lmc_trainer_dist_params(const struct lmc_trainer *tr);
/* rank 0 after lmc_trainer_dist_gather with moments: AdamW's m and v
 * (host, the arena's layout) until the next step; false otherwise */
bool lmc_trainer_dist_moments(const struct lmc_trainer *tr, const float **m, const float **v);
/* Replicated data parallel (a batch source, lmc_trainer_step): whether
 * micro-step k of accum is the last (the hooks then all-reduce each part's
 * gradient as its backward ends), and after the micro-steps every rank's
 * gradient summed (those reductions waited for, or one all-reduce of the
 * trainable arena when the parts' ranges could not be cut apart). */
void lmc_trainer_dist_micro(struct lmc_trainer *tr, int64_t k, int64_t accum);
lmc_status lmc_trainer_dist_reduce(struct lmc_trainer *tr, lmc_err *err);
/* --zero 1 with another optimizer kind: the number of ranks whose
 * optimizer shards lmc_trainer_dist_save wrote (0: the state is whole on
 * every rank), and loading this rank's shard of a checkpoint's step */
int lmc_trainer_dist_optim_shards(const struct lmc_trainer *tr);
/* A --zero 1 checkpoint's optimizer state (`world` shard files of `step`
 * in zero_dir) into tr->opt: with the same ranks each its own file, else
 * (another world, --zero 0, one process) each state tensor by name from
 * whichever file holds it. */
lmc_status lmc_trainer_load_optim_shards(struct lmc_trainer *tr, const char *zero_dir, int64_t step, int world,
                                         lmc_err *err);
/* A whole optimizer state (a --zero 0 or one-process checkpoint's st,
 * from path) into --zero 1's shard: this rank's tensors' state by name. */
struct lmc_st;
lmc_status lmc_trainer_dist_load_optim_whole(struct lmc_trainer *tr, const struct lmc_st *st, const char *path,
                                             lmc_err *err);
/* frees the zero state and global batch (no-op without) */
void lmc_trainer_dist_free(struct lmc_trainer *tr);

#endif
