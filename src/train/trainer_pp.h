/* trainer_pp.h — pipeline-parallel training in the trainer (lmc train /
 * finetune --pp P [--pp-chunks V] [--pp-layers a,b,...]): the P ranks of a pipeline
 * group are the stages of dist/pp_model.h (rank s runs the layers of its
 * chunks of the split of dist/pp_split.h: balanced by parameters, or the
 * given counts; checked the same on every rank), the first
 * also the embedding, the last the final norm, head and loss), and one
 * optimizer step is one 1F1B schedule (dist/pp.h) over its accum
 * micro-batches (M = --accum; bubble (P-1)/(M+P-1)). Each stage updates
 * only the tensors it owns (AdamW); the gradient norm is summed over the
 * stages, so clipping is the one-process one. Composes with data
 * parallelism (world = P x D, groups of P consecutive ranks; the stage's
 * gradient all-reduced over the D ranks holding the same stage, DP rank d
 * training on rows [dB, (d+1)B) of each global micro-batch). Without
 * --tp a stage holds only its part of the model (lmc_trainer_pp_build);
 * with --tp every stage holds the whole shard (its share is all it
 * updates) and lmc_trainer_pp_sync broadcasts each tensor from its owner
 * before an evaluation or a checkpoint. Either way rank 0 writes the
 * one-process checkpoint, which every layout resumes. Refused: another
 * optimizer than AdamW, fewer layers than stages x chunks, a frozen base (adapters), mixture-of-experts,
 * recurrent layers, --recompute, packed sequences (a batch source's
 * segments), ZeRO 1-3, a device backend (context parallelism:
 * lmc_trainer_pp_attach_cp); tied embeddings only in parts mode (lmc_trainer_pp_build; not
 * with --tp, whose stages hold the whole model). */
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

/* Interleaved 1F1B: V chunks of layers per rank (lmc_pp_run_interleaved;
 * M = accum a multiple of P when V > 1; not with --tp). V = 1 is
 * lmc_trainer_pp_attach. layers: --pp-layers (P x V counts in model order;
 * NULL or empty: the planner's split, lmc_pp_split_plan); a trainer built
 * with lmc_trainer_pp_build must get the same. */
lmc_status lmc_trainer_pp_attach_v(struct lmc_trainer *tr, struct lmc_comm *pp, struct lmc_comm *dp, int V,
                                   const char *layers, const char *desc, lmc_err *err);
/* The split a pipeline trainer runs (P V + 1 bounds; NULL when tr has no
 * pipeline). */
const int64_t *lmc_trainer_pp_bounds(const struct lmc_trainer *tr);

/* Pipeline x context parallel (PP x CP x DP, CP innermost: world rank =
 * (d P + stage) C + c; cp the ring of C consecutive ranks, made by the
 * caller, which keeps it alive): the pipeline and the same-stage groups are
 * split from world here (the trainer keeps them). Each stage's blocks run
 * ring attention over cp on the zigzag slices of the micro-batch (chunks
 * c and 2C-1-c of 2C); the activations sent between stages are the
 * rank's B x n slice; the gradient and the loss sums are all-reduced over
 * the C x D ranks of a stage. Without --tp tm is the stage's part
 * (lmc_trainer_pp_build with the stage's rank (world rank / C) mod P); with
 * --tp (after lmc_trainer_tp_attach) world is the TP trainer's
 * data-parallel side (the C x P x D ranks holding one TP shard), each
 * stage holds the whole shard as in TP x PP, and the evaluation runs on
 * stage 0 over a data-parallel group of D. The refusals of --pp and of
 * --cp (lmc_trainer_cp_refuse) both apply. */
lmc_status lmc_trainer_pp_attach_cp(struct lmc_trainer *tr, struct lmc_comm *world, struct lmc_comm *cp, int P, int V,
                                    const char *layers, const char *desc, lmc_err *err);

/* Rank `rank` of P's part of the model (V chunks per rank, the split of
 * layers as lmc_trainer_pp_attach_v's): the whole
 * model's values (a folder dir, or random from seed / std as
 * lmc_tmodel_init_random) of only the tensors the stage holds
 * (lmc_pp_stage_keep: its chunks' layers, the embedding on rank 0 and with
 * a tied head on rank P - 1, the final norm and head on rank P - 1).
 * *whole_numel: the whole model's arena floats. A trainer made on it
 * (o.no_acts) and attached holds its stage's parameters, gradients and
 * moments only; evaluation runs forward through the pipeline, and a
 * checkpoint streams every tensor to rank 0 as it writes the one-process
 * folder (lmc_trainer_pp_sync(tr, true) on every rank, then rank 0's
 * lmc_ckpt_save). */
lmc_status lmc_trainer_pp_build(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                                const char *dir, uint64_t seed, double std, int P, int V, int rank,
                                const char *layers, int64_t *whole_numel, lmc_err *err);
/* tr attached to a stage's part (lmc_trainer_pp_build). */
bool lmc_trainer_pp_parts(const struct lmc_trainer *tr);
/* Parts mode: whether this rank writes the consolidated checkpoint (rank 0
 * of DP rank 0's pipeline), and its writing of model.safetensors and
 * optimizer.safetensors (lmc_ckpt_save calls it): each tensor streamed
 * from the stage holding it (the others send them from
 * lmc_trainer_pp_sync(tr, true), called before), never the whole model in
 * one place; the files are those of the one-process run. */
bool lmc_trainer_pp_writes(const struct lmc_trainer *tr);
lmc_status lmc_trainer_pp_write(struct lmc_trainer *tr, const char *model_path, const char *optim_path,
                                lmc_err *err);
/* Parts mode resume (lmc_ckpt_load_state): the stage's tensors' AdamW
 * moments from the whole layout's arenas (numel floats each;
 * LMC_ERR_FORMAT when they do not fit the model). */
lmc_status lmc_trainer_pp_load_moments(struct lmc_trainer *tr, const float *m, const float *v, int64_t numel,
                                       lmc_err *err);
/* Parts mode: loss sum and counted targets of one micro-batch (host ids)
 * forward through the pipeline, on every rank of the group (collective). */
lmc_status lmc_trainer_pp_loss(struct lmc_trainer *tr, const int32_t *in, const int32_t *tg, double *loss_sum,
                               int64_t *count, lmc_err *err);

/* Every rank: its stage, parameter floats held and peak resident set
 * (VmHWM, Linux) so far on stderr, followed by `when` ("over the steps"
 * before a checkpoint gather adds rank 0's consolidation buffers, "with
 * the checkpoint" after); tr->pp may be NULL (one process: stage 0 of 1). */
void lmc_trainer_pp_log_peak(const struct lmc_trainer *tr, const char *cmd, const char *when);

/* Frees tr->pp (lmc_trainer_free calls it). */
void lmc_trainer_pp_free(struct lmc_trainer *tr);

#endif
