/* trainer_pp.h — pipeline-parallel training in the trainer (lmc train /
 * finetune --pp P): the P ranks of a pipeline group are the stages of
 * dist/pp_model.h (rank s runs layers [l0, l1) of lmc_dist_slice, the first
 * also the embedding, the last the final norm, head and loss), and one
 * optimizer step is one 1F1B schedule (dist/pp.h) over its accum
 * micro-batches (M = --accum; bubble (P-1)/(M+P-1)). Each stage updates
 * only the tensors it owns (AdamW); the gradient norm is summed over the
 * stages, so clipping is the one-process one. Composes with data
 * parallelism (world = P x D, groups of P consecutive ranks; the stage's
 * gradient all-reduced over the D ranks holding the same stage, DP rank d
 * training on rows [dB, (d+1)B) of each global micro-batch). Every stage
 * still loads the whole model (its share is all it updates): before an
 * evaluation or a checkpoint, lmc_trainer_pp_sync broadcasts each tensor
 * (and for a checkpoint its moments) from the stage owning it, after which
 * rank 0 evaluates and writes the one-process checkpoint, which every
 * layout resumes. Refused: another optimizer than AdamW, tied embeddings,
 * fewer layers than stages, a frozen base (adapters), mixture-of-experts,
 * recurrent layers, --recompute, packed sequences (a batch source's
 * segments), ZeRO 1-3, tensor or context parallelism at the same time, a
 * device backend. */
#ifndef LMC_TRAIN_TRAINER_PP_H
#define LMC_TRAIN_TRAINER_PP_H

#include "train/trainer.h"

struct lmc_trainer_pp;

/* After lmc_trainer_init: tr trains as stage pp->rank of pp->world; dp:
 * the data-parallel communicator across the pipelines (NULL: none). desc
 * as lmc_trainer_dist_init's (checked equal over pp and dp). */
lmc_status lmc_trainer_pp_attach(struct lmc_trainer *tr, struct lmc_comm *pp, struct lmc_comm *dp,
                                 const char *desc, lmc_err *err);

/* lmc_trainer_step / lmc_trainer_eval of a pipeline trainer (they call
 * these). Eval is a collective over the pipeline group (the weights
 * synced), evaluated by stage 0 of DP rank 0 (NaN elsewhere). */
lmc_status lmc_trainer_pp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err);
lmc_status lmc_trainer_pp_eval(struct lmc_trainer *tr, double *loss, lmc_err *err);

/* Every stage's tensors (moments too) broadcast from their owners over the
 * pipeline group: afterwards every rank holds the whole current state, and
 * rank 0's lmc_ckpt_save writes the one-process checkpoint. Every rank of
 * the group calls it. */
lmc_status lmc_trainer_pp_sync(struct lmc_trainer *tr, bool moments, lmc_err *err);

/* Frees tr->pp (lmc_trainer_free calls it). */
void lmc_trainer_pp_free(struct lmc_trainer *tr);

#endif
