/* trainer_ep.h — expert-parallel training in the trainer (lmc train /
 * finetune --ep N): the experts of every sparse layer split over the N
 * ranks of a communicator (dist/ep_model.h: each rank's arenas, gradients
 * and AdamW moments hold only its experts; tokens go to their experts'
 * ranks by alltoallv inside the layer), and data parallelism over the
 * same ranks for everything else: each rank trains on its rows [rank B,
 * (rank+1) B) of the global micro-batch of N x B rows (the loader's order,
 * as one process with batch N x B reads it), the replicated tensors'
 * gradients are summed over the ranks, the global norm counts every
 * expert once, and every rank takes the one-process AdamW step on what it
 * holds. The load-balancing loss and the expert-load metrics are the
 * global batch's (lmc_tacts.moe_dp). Validation is a collective: each rank
 * evaluates its rows of each global validation micro-batch. Checkpoints
 * are one-process folders: rank 0 gathers every rank's experts (weights
 * and moments) and writes the HF folder + optimizer + trainer state, which
 * one process, or the same N ranks (bit for bit), resumes. LoRA adapters
 * over the shard (lmc finetune --ep): the adapters of the layer linears are
 * replicated (their gradients summed), an expert's live on its rank; rank
 * 0 gathers the whole adapter for the output. AdamW, float32, a host
 * backend. */
#ifndef LMC_TRAIN_TRAINER_EP_H
#define LMC_TRAIN_TRAINER_EP_H

#include "train/trainer.h"

struct lmc_trainer_ep;
struct lmc_comm;

/* *shard (new, on be) <- this rank's part of full (every tensor but the
 * other ranks' experts): copied from full's arenas, or when full is a
 * layout without arenas (lmc_tmodel_load_layout / init_layout) read from
 * src (a source over full's table: a folder's mapped weights, of which
 * only this rank's experts are read, or the random draws), so no rank
 * holds the whole model. *out (new) holds the expert group the shard's
 * layers point to (give it to lmc_trainer_ep_attach, or free it with
 * lmc_trainer_ep_free_state). Refused: a dense model, N not dividing the
 * experts (LMC_ERR_ARG naming both). */
struct lmc_tmodel_src;
lmc_status lmc_trainer_ep_shard(struct lmc_tmodel *shard, struct lmc_trainer_ep **out, const struct lmc_tmodel *full,
                                struct lmc_tmodel_src *src, struct lmc_comm *c, const struct lmc_backend *be,
                                lmc_err *err);
void lmc_trainer_ep_free_state(struct lmc_trainer_ep *e);

/* After lmc_trainer_init on the shard: tr takes e (also on failure).
 * Refused: another optimizer than AdamW, a device backend. desc as
 * lmc_trainer_dist_init's (checked equal over the ranks). */
lmc_status lmc_trainer_ep_attach(struct lmc_trainer *tr, struct lmc_trainer_ep *e, const char *desc, lmc_err *err);

/* lmc_trainer_step / lmc_trainer_eval of an expert-parallel trainer (they
 * call these; both are collectives over every rank). */
lmc_status lmc_trainer_ep_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err);
lmc_status lmc_trainer_ep_eval(struct lmc_trainer *tr, double *loss, lmc_err *err);

/* Consolidated checkpoint (every rank calls it): the experts and their
 * moments sent to rank 0, which writes dir as lmc_ckpt_save does for one
 * process (holding the whole model and moments while it writes). */
lmc_status lmc_trainer_ep_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                               const char *tok_dir, lmc_err *err);

/* Resume from a consolidated (or one-process) checkpoint: full is the
 * model (or only its layout) of dir, the one the shard was cut from; this rank's
 * moments are cut from the checkpoint's as its weights were, the step and
 * the data position restored. */
lmc_status lmc_trainer_ep_load_state(struct lmc_trainer *tr, const struct lmc_tmodel *full, const char *dir,
                                     lmc_err *err);

/* LoRA over an expert-parallel shard (before lmc_trainer_init; tm is the
 * shard lmc_trainer_ep_shard made with e): *local (new) holds lo's modules
 * this rank adapts (the layer linears and its own experts' projections;
 * their A and B buffers are lo's), attached to tm (lmc_lora_train_attach),
 * and the layers point at e's group again. lmc_lora_train_read(lt, tm,
 * local) then fills lo's buffers of those modules; free local with
 * lmc_trainer_ep_lora_local_free (lo keeps the buffers). */
struct lmc_lora;
struct lmc_lora_train;
lmc_status lmc_trainer_ep_lora_attach(struct lmc_trainer_ep *e, struct lmc_lora_train *lt, struct lmc_tmodel *tm,
                                      const struct lmc_lora *lo, struct lmc_lora *local, lmc_err *err);
void lmc_trainer_ep_lora_local_free(struct lmc_lora *local);
/* Collective, after every rank's lmc_lora_train_read into its local: the
 * other ranks' experts' adapters (A and B) sent to rank 0's lo, which then
 * holds the whole adapter. */
lmc_status lmc_trainer_ep_lora_gather(const struct lmc_trainer *tr, struct lmc_lora *lo, lmc_err *err);

/* Adapter checkpoints in the one-process format (collective): every rank's
 * adapters read and gathered into rank 0's lo, the AdamW moments of each
 * module from the rank that adapts it (a layer module: rank 0's copy),
 * and rank 0 writes dir as lmc_lora_ckpt_save does for one process (its
 * accumulation recorded as N x accum: one process with --accum N x accum
 * resumes it). The restore (every rank, lo loaded from dir): the step, the
 * data position and the moments of the modules this rank adapts. */
lmc_status lmc_trainer_ep_lora_ckpt_save(const struct lmc_trainer *tr, const struct lmc_lora_train *lt,
                                         struct lmc_lora *lo, struct lmc_lora *local, const char *dir,
                                         const char *tok_dir, int64_t epoch, int64_t next, lmc_err *err);
lmc_status lmc_trainer_ep_lora_load_state(struct lmc_trainer *tr, const struct lmc_lora *lo, const char *dir,
                                          int64_t *epoch, int64_t *next, lmc_err *err);

/* The expert group of an expert-parallel trainer (its layers point to it). */
struct lmc_ep_group *lmc_trainer_ep_group(struct lmc_trainer *tr);

/* Frees tr->ep (lmc_trainer_free calls it). */
void lmc_trainer_ep_free(struct lmc_trainer *tr);

#endif
