/* trainer_step.h — what the one-process, context-, expert-, tensor- and
 * pipeline-parallel trainers share (trainer.c, trainer_cp.c, trainer_ep.c,
 * trainer_tp.c, trainer_pp.c):
 * the next micro-batch, the end of a step (the mean's scale, clipping, the
 * learning rate, the optimizer update) and the validation loop. Not part of the trainer's API. */
#ifndef LMC_TRAIN_TRAINER_STEP_H
#define LMC_TRAIN_TRAINER_STEP_H

#include "train/trainer.h"

/* After the step's gradient is summed and st->grad_norm holds its global
 * norm: with a batch source the norm and the update are scaled to the mean
 * over `count` counted targets (0 counts as 1); then the clip scale, st->lr
 * from the schedule at tr->step, and, when the norm is finite, the update
 * (tr->opt when tr->have_opt, else AdamW on every trainable tensor the
 * arenas hold, with the trainer's moments tr->m / tr->v) and a backend
 * sync; st->skipped when it is not. Advances tr->step either way. */
void lmc_trainer_apply_update(struct lmc_trainer *tr, struct lmc_train_stats *st, double count);

/* What the tensor- and pipeline-parallel trainers' updates differ in. */
struct lmc_trainer_update {
    /* with tr->have_opt: the optimizer's step in place of lmc_optim_step
     * (tensor parallel: whole-matrix slots gathered over the TP group) */
    lmc_status (*optim)(struct lmc_trainer *tr, double lr, int64_t step, float grad_scale, lmc_err *err);
    const bool *own; /* set: AdamW on tensor i only where own[i] (a pipeline stage's) */
    const float *g;  /* set: AdamW on the arena's [c0, c1) only (ZeRO 1), its gradient g[0, c1 - c0),
                      * the moments tr->m / tr->v from c0 */
    int64_t c0, c1;
};

/* lmc_trainer_apply_update with u's differences (u NULL: none): the same
 * arithmetic in the same order. The status is u->optim's (LMC_OK when
 * the step was skipped); tr->step advances either way. */
lmc_status lmc_trainer_apply_update_with(struct lmc_trainer *tr, struct lmc_train_stats *st, double count,
                                         const struct lmc_trainer_update *u, lmc_err *err);

/* A batch source's draws j0 .. j1-1 of a micro-step, other ranks' batches:
 * into scratch (tr->batch), their packing dropped; when no_pack names a
 * flag ("--cp"), a packed batch is refused naming it. */
lmc_status lmc_trainer_draw_skip(struct lmc_trainer *tr, int j0, int j1, const char *no_pack, lmc_err *err);

/* The next micro-batch of data rank dr of dw into in / tg (B x T each:
 * tr->in / tr->tg or the caller's). A batch source: the micro-step's draws
 * 0 .. dr-1 skipped (lmc_trainer_draw_skip), then this rank's, its packing
 * in tr->acts (no_pack NULL) or refused (no_pack names the flag); with
 * rest, draws dr+1 .. dw-1 skipped too, else the caller skips them after
 * its step (what a source sets per draw, LoRA dropout masks, is then its
 * batch's). The loader: the global micro-batch of dw x B rows, rows
 * [dr B, (dr + 1) B) into tr->batch, split into tr->in / tr->tg (copied to
 * in / tg when they are the caller's), tr->acts unpacked. */
lmc_status lmc_trainer_next_micro(struct lmc_trainer *tr, int dw, int dr, int32_t *in, int32_t *tg,
                                  const char *no_pack, bool rest, lmc_err *err);

/* One validation micro-batch, already in tr->in / tr->tg (B, T), through
 * the model without gradients: its loss sum and counted targets. */
typedef lmc_status (*lmc_trainer_eval_fn)(struct lmc_trainer *tr, double *loss_sum, int64_t *count, lmc_err *err);

/* The validation windows one process with batch groups x B reads (at most
 * eval_batches x groups micro-batches, at least groups), from the first:
 * micro-batch k goes through fn when k % share == me, its sums added into
 * sc[0] (losses) and sc[1] (targets), which start at 0. The caller checks
 * tr->val_data and eval_batches first, and adds the sums over its ranks. */
lmc_status lmc_trainer_eval_sums(struct lmc_trainer *tr, int64_t groups, int64_t share, int64_t me,
                                 lmc_trainer_eval_fn fn, double sc[2], lmc_err *err);

#endif
