/* lora_tp.h — LoRA adapters over a tensor-parallel (sharded) base, in
 * training (lmc finetune --tp) and inference (lmc generate/serve --lora
 * --tp). Megatron's rule (dist/tp_train.h lmc_tp_tensor_cut): over a
 * column-parallel base linear (q/k/v by heads, gate/up by MLP features) A
 * is whole and B holds the base's output rows; over a row-parallel one (o,
 * down) A holds the base's input columns and B is whole, so the partial
 * (x_r A_r^T) B^T joins the base's partial sum before its all-reduce and the
 * forward is the one-process one. A rank's adapter is an lmc_lora of its
 * slices (module in/out the shard's); the one-process adapter is gathered
 * back from the ranks' slices. The Llama family (no fused or expert
 * modules). */
#ifndef LMC_TRAIN_LORA_TP_H
#define LMC_TRAIN_LORA_TP_H

#include "dist/comm.h"
#include "train/lora.h"
#include "train/lora_train.h"
#include "train/trainer.h"

/* local (new) <- rank `rank` of `world`'s slices of full (an adapter of the
 * model of config fc). LMC_ERR_UNSUPPORTED for fused / expert modules,
 * LMC_ERR_ARG when the heads do not split. */
lmc_status lmc_lora_tp_cut(struct lmc_lora *local, const struct lmc_lora *full, const struct lmc_config *fc, int world,
                           int rank, lmc_err *err);

/* Floats of an adapter in a trainable arena's layout (lora_train.h: per
 * module A then B, each padded to 16 floats), and module k's A (which 0)
 * or B (1) offset in it. */
int64_t lmc_lora_tp_flat_numel(const struct lmc_lora *lo);
int64_t lmc_lora_tp_flat_off(const struct lmc_lora *lo, int k, int which);

/* full_flat (every rank; the layout of full) <- the group's local_flat
 * (the layout of this rank's local = lmc_lora_tp_cut(full, ..., c->rank)):
 * one all-gather per tensor over c. */
lmc_status lmc_lora_tp_gather_flat(float *full_flat, const struct lmc_lora *full, const float *local_flat,
                                   const struct lmc_lora *local, const struct lmc_config *fc, struct lmc_comm *c,
                                   lmc_err *err);
/* local_flat <- this rank's slices of full_flat (the reverse, no collective). */
void lmc_lora_tp_cut_flat(float *local_flat, const struct lmc_lora *local, const float *full_flat,
                          const struct lmc_lora *full, const struct lmc_config *fc, int world, int rank);

/* Training under --tp (tr->tp set, its trainer's adapter `local` attached
 * through lt): full's A and B <- the gathered adapter (every rank of the
 * TP group; a collective). */
lmc_status lmc_lora_tp_read(const struct lmc_trainer *tr, const struct lmc_lora_train *lt, struct lmc_lora *local,
                            struct lmc_lora *full, lmc_err *err);
/* A checkpoint as one process writes it (lmc_lora_ckpt_save: the PEFT
 * folder, AdamW's moments of the whole adapter, trainer_state.json with the
 * data-parallel world): every rank of every TP group calls it, the global
 * rank 0 writes. */
lmc_status lmc_lora_tp_ckpt_save(const struct lmc_trainer *tr, const struct lmc_lora_train *lt,
                                 struct lmc_lora *local, struct lmc_lora *full, const char *dir, const char *tok_dir,
                                 int64_t epoch, int64_t next, bool writer, lmc_err *err);
/* Resume (any layout's, or a one-process checkpoint): the whole adapter's
 * moments cut to this rank's slices; step and data position as
 * lmc_lora_ckpt_load_state. */
lmc_status lmc_lora_tp_ckpt_load_state(struct lmc_trainer *tr, const struct lmc_lora *local,
                                       const struct lmc_lora *full, const char *dir, int64_t *epoch, int64_t *next,
                                       lmc_err *err);

#endif
