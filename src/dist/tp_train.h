/* tp_train.h — tensor-parallel training of the model layer's trainable
 * model (model/backward.h): a rank's lmc_tmodel holds its shard of every
 * split tensor (q/k/v and gate/up rows, o/down columns, by heads and MLP
 * features as tp_model.h) with a local config, so lmc_tmodel_step runs it
 * unchanged with the collectives in lmc_linear. Replicated tensors (norms,
 * embedding, head) get the full gradient on every rank; replicated KV heads
 * (KV heads < T) need lmc_tp_tmodel_sum_replicated after the backward.
 * Llama family (on-disk (out, in) layouts); GPT-2 is refused. */
#ifndef LMC_TP_TRAIN_H
#define LMC_TP_TRAIN_H

#include "dist/tp.h"
#include "model/backward.h"

/* tm (new, on be) <- rank c->rank's shard of full. g receives the group
 * (must outlive tm; tm's linears point to it). */
lmc_status lmc_tp_tmodel_shard(struct lmc_tmodel *tm, struct lmc_tp_group *g,
                               struct lmc_tp_heads *heads, const struct lmc_tmodel *full,
                               struct lmc_comm *c, const struct lmc_backend *be, lmc_err *err);

/* As lmc_tp_tmodel_shard, with vocab non-NULL also the embedding and head
 * vocabulary-parallel: the rank holds rows heads->v0.. (heads->nv) of them
 * (a local vocab_size), *vocab (must outlive tm) is set up and tm->vocab
 * points to it, so lmc_tmodel_step runs the parallel embedding and
 * cross-entropy (the full logits never gathered). */
lmc_status lmc_tp_tmodel_shard_vocab(struct lmc_tmodel *tm, struct lmc_tp_group *g, struct lmc_tp_heads *heads,
                                     struct lmc_tvocab *vocab, const struct lmc_tmodel *full, struct lmc_comm *c,
                                     const struct lmc_backend *be, lmc_err *err);

/* Flags tm's block linears with their split over g (shard does it; again
 * after anything that rebinds the views, e.g. attaching LoRA adapters). */
void lmc_tp_tmodel_mark(struct lmc_tmodel *tm, struct lmc_tp_group *g);

/* Sums the gradients of replicated KV-head tensors over their replicas;
 * with g->sp (sequence parallelism, model/block.h) first the blocks'
 * norm weight (and bias) gradients over the group. */
lmc_status lmc_tp_tmodel_sum_replicated(struct lmc_tmodel *tm, const struct lmc_tp_group *g,
                                        const struct lmc_tp_heads *heads, int64_t full_n_kv,
                                        lmc_err *err);

/* Sums the gradients of the LoRA factors that are replicated over the group
 * (Megatron's rule: over a column-parallel base, q/k/v and gate/up, A is
 * whole and B holds the base's output rows; over a row-parallel one, o and
 * down, A holds the base's input columns and B is whole): each rank's dA
 * (column) or dB (row) is a partial sum, all-reduced here (one collective
 * per tensor, the same bits on every rank). Frozen tensors are skipped. */
lmc_status lmc_tp_lora_reduce(struct lmc_tmodel *tm, const struct lmc_tp_group *g, const struct lmc_tp_heads *heads,
                              lmc_err *err);

/* Where tensor `name` of a rank's shard lies in the full tensor: *dim (0:
 * rows, 1: columns of the on-disk (out, in) layout; -1: replicated), the
 * first index *a0 and the count *n. LoRA factors (PEFT names,
 * "...q_proj.lora_B.weight") follow the rule of lmc_tp_lora_reduce. */
void lmc_tp_tensor_cut(const char *name, const struct lmc_tp_heads *h, int64_t head_dim,
                       int64_t i0, int64_t ni, int *dim, int64_t *a0, int64_t *n);

#endif
