/* trainer_cp.h — context-parallel training in the trainer (lmc train /
 * finetune --cp C): the C ranks of a context-parallel group each hold a
 * zigzag slice of every sequence of the micro-batch (dist/ring_attn.h:
 * chunks r and 2C-1-r of 2C, their global positions), the attention runs as
 * ring attention over the group (lmc_tacts.cp), and the gradient arena and
 * the loss sums are all-reduced over every rank (the context-parallel
 * slices and the data-parallel groups together), so each rank holds the
 * whole model, its whole gradient and the optimizer's whole state and
 * takes the one-process step (any optimizer kind). Composes with data
 * parallelism (world = C x D, groups of C consecutive ranks; DP rank d
 * trains on rows [dB, (d+1)B) of the global micro-batch of D x B rows).
 * Checkpoints are the one-process ones (rank 0 writes them; every rank
 * resumes from one). Refused: packed sequences (a batch source's
 * segments), mixture-of-experts (the load-balancing loss needs the whole
 * sequence's routing), recurrent (Mamba) layers, sliding-window attention
 * and dynamic rope scaling, ZeRO stages 1-3, a device backend. With
 * pipeline parallelism the pipeline trainer holds the ring instead
 * (lmc_trainer_pp_attach_cp; tr->cp stays NULL). With tensor parallelism (attached after
 * lmc_trainer_tp_attach; TP x CP x DP, TP innermost): `world` is the TP
 * trainer's data-parallel communicator (the C x D ranks holding the same
 * TP shard), the TP step cuts its micro-batches through
 * lmc_trainer_cp_micro, and evaluation is this module's. */
#ifndef LMC_TRAIN_TRAINER_CP_H
#define LMC_TRAIN_TRAINER_CP_H

#include "train/trainer.h"

struct lmc_trainer_cp;

/* After lmc_trainer_init: tr trains context-parallel over cp (the ring
 * group, world C), all-reducing over world (C x D ranks; world == cp for
 * D = 1). The trainer's activations are re-made for this rank's B x n
 * slice (n = lmc_ring_attn_zigzag(T, cp->rank, C)). desc as
 * lmc_trainer_dist_init's (checked equal over world). */
lmc_status lmc_trainer_cp_attach(struct lmc_trainer *tr, struct lmc_comm *world, struct lmc_comm *cp,
                                 const char *desc, lmc_err *err);

/* lmc_trainer_step / lmc_trainer_eval of a context-parallel trainer (they
 * call these). Eval is a collective over world: DP rank d evaluates every
 * D-th validation micro-batch, every rank of its group its slice. */
lmc_status lmc_trainer_cp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err);
lmc_status lmc_trainer_cp_eval(struct lmc_trainer *tr, double *loss, lmc_err *err);

/* The summed loss and counted targets of one (B, T) micro-batch in, tg
 * (host) without a backward, no packing: lmc_tmodel_step on tr->acts, or
 * with tr->cp the ring forward over this rank's slices, the sums taken over
 * the context-parallel group (a collective of the group). */
lmc_status lmc_trainer_loss(struct lmc_trainer *tr, const int32_t *in, const int32_t *tg, double *loss_sum,
                            int64_t *count, lmc_err *err);

/* Tensor x context parallel (the TP trainer's step, trainer_tp.c): the
 * next micro-batch of this rank's data-parallel group, cut to its slice
 * (*in, *tg: B x n, the trainer's until the next call); the ring's status
 * after a step (reset); the data-parallel groups' count D. */
lmc_status lmc_trainer_cp_micro(struct lmc_trainer *tr, const int32_t **in, const int32_t **tg, lmc_err *err);
lmc_status lmc_trainer_cp_check(struct lmc_trainer *tr, lmc_err *err);
int lmc_trainer_cp_data_world(const struct lmc_trainer *tr);

/* LMC_ERR_UNSUPPORTED naming what context parallelism does not run (the
 * model's layers, ZeRO, a device backend), else LMC_OK; also used by
 * --pp with --cp (trainer_pp.h). */
lmc_status lmc_trainer_cp_refuse(const struct lmc_trainer *tr, lmc_err *err);

/* Tokens of a sequence this rank holds. */
int64_t lmc_trainer_cp_local_tokens(const struct lmc_trainer *tr);

/* Frees tr->cp (lmc_trainer_free calls it). */
void lmc_trainer_cp_free(struct lmc_trainer *tr);

#endif
