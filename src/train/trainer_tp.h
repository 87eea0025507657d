/* trainer_tp.h — tensor-parallel training in the trainer (lmc train/finetune
 * --tp T): each rank's trainer holds its shard of the column/row-parallel
 * weights (dist/tp_train.h: q/k/v and gate/up rows, o/down columns, by heads
 * and MLP features) with its gradients and AdamW moments; embedding, norms
 * and head stay replicated and get the same bits on every rank (the
 * collectives reduce in a fixed order). The global gradient norm counts
 * every shard once (replicated KV heads once over their replicas), so the
 * clipping and the update equal the one-process step. Composes with data
 * parallelism over a second communicator (DP x TP: the gradient arena
 * all-reduced over the DP ranks, each DP rank training on its rows of the
 * global batch). Checkpoints are consolidated: rank 0 gathers the shards of
 * the weights and moments and writes the one-process folder (HF model +
 * optimizer + trainer state), which any layout resumes. AdamW, or Muon
 * (each split matrix's parameter, gradient and momentum shards all-gathered
 * for the one-process Newton-Schulz step, each rank keeping its slices:
 * the momentum stays sharded); float32, host backend; the Llama family (GPT-2's fused c_attn and MoE are
 * refused). A frozen base with LoRA adapters (train/lora_tp.h) steps AdamW without ZeRO or --tp-vocab: the
 * adapters' replicated factors' gradients are all-reduced over the group (lmc_tp_lora_reduce). */
#ifndef LMC_TRAIN_TRAINER_TP_H
#define LMC_TRAIN_TRAINER_TP_H

#include "train/trainer.h"
#include "dist/tp_train.h"

struct lmc_trainer_tp {
    struct lmc_comm *c;          /* the tensor-parallel group (not owned) */
    struct lmc_tp_group g;       /* the shard's linears point here */
    struct lmc_tp_heads heads;
    struct lmc_config full;      /* the unsharded model's config */
    int64_t i0, ni;              /* this rank's MLP features */
    struct lmc_tvocab vocab;     /* vocabulary-parallel embedding/head (heads.vocab) */
    /* ZeRO-1 over the data-parallel group (set zero = 1 before attach): this
     * DP rank keeps AdamW's moments of arena floats [z0, z0 + zn) only
     * (tr->m, tr->v hold zn floats), the gradient is reduce-scattered and
     * the updated chunks all-gathered; 0: replicated moments */
    int zero;
    int64_t z0, zn, zchunk;      /* zchunk: the padded chunk (numel rounded up to D chunks) */
    float *zbuf;                 /* (D zchunk) host scratch for the collectives */
    /* sequence parallelism (lmc_trainer_tp_attach_sp; model/block.h):
     * sp.buf are this state's, on be */
    struct lmc_sp sp;
    const struct lmc_backend *sp_be;
};

/* *shard (new, on be) <- rank tp->rank's shard of full; *out (new) holds
 * the group state the shard's linears point to (give it to
 * lmc_trainer_tp_attach, or lmc_trainer_tp_free_state it). vocab: the
 * embedding and head split by vocabulary rows too (the cross-entropy taken
 * across the group, the full logits never gathered); else replicated. */
lmc_status lmc_trainer_tp_shard(struct lmc_tmodel *shard, struct lmc_trainer_tp **out,
                                const struct lmc_tmodel *full, struct lmc_comm *tp, bool vocab,
                                const struct lmc_backend *be, lmc_err *err);
void lmc_trainer_tp_free_state(struct lmc_trainer_tp *t);

/* After lmc_trainer_init on the shard: tr takes t (also on failure).
 * dp: the data-parallel communicator (NULL or world 1: TP only). An
 * optimizer kind other than AdamW and Muon is made again with the whole
 * shape of each split matrix (its state whole on every rank of the group;
 * the whole matrix gathered for its step). Refused: --zero 1 with another
 * kind than AdamW, a frozen base, a device backend. desc as
 * lmc_trainer_dist_init's (checked equal over the TP group and dp). */
lmc_status lmc_trainer_tp_attach(struct lmc_trainer *tr, struct lmc_trainer_tp *t, struct lmc_comm *dp,
                                 const char *desc, lmc_err *err);

/* After lmc_trainer_tp_attach (lmc train/finetune --tp T --sp): sequence
 * parallelism (Megatron-SP, model/block.h): the residual stream and the
 * blocks' norms of rank r hold rows [r m, (r + 1) m) of each micro-batch's
 * n = B x T (m = n / T; refused unless T divides n); the activations are
 * made again that way (--recompute too: each block's forward again in the
 * backward, into the activations' tmp). Refused: a frozen base (adapters),
 * --cp, --zero 2-3 (ZeRO-1 runs: the norms' sum comes first), architectures without a feed-forward part, a device
 * backend. The arithmetic per token is TP's (up to the summation order of
 * the reduce-scatter and of the norms' weight gradients). */
lmc_status lmc_trainer_tp_attach_sp(struct lmc_trainer *tr, lmc_err *err);

/* lmc_trainer_step of a tensor-parallel trainer (called by it). */
lmc_status lmc_trainer_tp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err);

/* Pipeline x tensor parallel (trainer_pp.c): after a stage's backward,
 * the replicated KV heads' gradients summed and the sum of squares of the
 * stage's gradient with every shard counted once (a TP collective); the
 * group's sticky status checked. */
lmc_status lmc_trainer_tp_grad_sumsq(struct lmc_trainer *tr, double *ss, lmc_err *err);

/* Consolidated checkpoint: every rank of the TP group (of every DP rank)
 * calls it; the shards are gathered to TP rank 0 of DP rank 0, which writes
 * dir as lmc_ckpt_save does for one process (holding the full model and
 * moments while it writes). */
lmc_status lmc_trainer_tp_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                               const char *tok_dir, lmc_err *err);

/* Resume from a consolidated (or one-process) checkpoint: full is the model
 * loaded from dir (the one the shard was cut from); the moments are cut as
 * the weights were, the step and data position restored. */
lmc_status lmc_trainer_tp_load_state(struct lmc_trainer *tr, const struct lmc_tmodel *full, const char *dir,
                                     lmc_err *err);

/* Frees tr->tp (lmc_trainer_free calls it). */
void lmc_trainer_tp_free(struct lmc_trainer *tr);

/* ZeRO 2-3 over the data-parallel groups (lmc_trainer_dist_init after
 * attach with zero 0; trainer_dist.c runs the step): refused with
 * replicated KV heads (their gradients are summed over the group after the
 * backward); parameter i's weight in the squared global norm, whose sum the
 * TP group adds (split 1, replicated 1/T); the group's sum (after its
 * status check); the status of the group's collectives after a micro-step. */
lmc_status lmc_trainer_tp_zero_check(const struct lmc_trainer *tr, int stage, lmc_err *err);
double lmc_trainer_tp_norm_weight(const struct lmc_trainer *tr, int i);
lmc_status lmc_trainer_tp_group_sum(struct lmc_trainer *tr, double *v, lmc_err *err);
lmc_status lmc_trainer_tp_micro_check(struct lmc_trainer *tr, lmc_err *err);

#endif
