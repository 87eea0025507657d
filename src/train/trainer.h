/* trainer.h — the training loop's state and one optimizer step: micro-
 * batches with gradient accumulation from a seeded, resumable loader,
 * global-norm clipping, the learning-rate schedule, AdamW with the
 * no-decay rule (or decay on everything), periodic validation loss; and
 * checkpoints (checkpoint.c): a Hugging Face folder (config.json,
 * model.safetensors, tokenizer files) plus optimizer.safetensors (AdamW
 * moments, raw arenas) and trainer_state.json (step, loader position, seed),
 * from which a resumed run reproduces the uninterrupted one bit for bit on
 * the same backend and thread count. The model, gradients and moments live
 * in the backend's memory (the GPU's on the CUDA backend); checkpoints
 * download and upload them. */
#ifndef LMC_TRAIN_TRAINER_H
#define LMC_TRAIN_TRAINER_H

#include "lmc.h"
#include "model/backward.h"
#include "train/adamw.h"
#include "train/data.h"
#include "train/optim.h"
#include "train/schedule.h"

#include <stdbool.h>
#include <stdint.h>

struct lmc_train_opts {
    int64_t B, T;              /* micro-batch: B sequences of T tokens */
    int64_t accum;             /* micro-batches per optimizer step (>= 1) */
    struct lmc_adamw_cfg adamw;
    struct lmc_optim_cfg optim; /* kind LMC_OPTIM_ADAMW (zero): the trainer's own AdamW arenas m, v;
                                 * any other kind: an lmc_optim over the parameter table, its AdamW
                                 * group configured from `adamw` (optim.adamw is ignored) */
    enum lmc_decay_rule decay;
    struct lmc_schedule sched; /* sched.total = total optimizer steps */
    double clip;               /* global-norm clip; 0: none */
    bool recompute;            /* activation recomputation per layer */
    bool recompute_selective;  /* or selective: keep the GEMM outputs, recompute norms and the
                                * feed-forward's product (lmc_tacts_init_sel; single-process and
                                * data-parallel trainers only) */
    bool recompute_mixer;      /* or mixer: keep the feed-forward's GEMM outputs, recompute each
                                * layer's norms, mixer (attention) and product (lmc_tacts_opts.mixer;
                                * single-process and data-parallel trainers only) */
    bool save_bf16;            /* activations the backward reads as operands kept in bf16
                                * (lmc_tacts_opts; the backend needs convert); with recompute: the
                                * residual stream's checkpoints in bf16 */
    bool offload;              /* with recompute or recompute_mixer: the layer inputs in host memory (lmc_tacts_opts;
                                * the backend needs host_alloc / offload) */
    uint64_t seed;             /* data order */
    bool zero_moments;         /* AdamW data parallel (lmc_trainer_dist_init follows, which
                                * gives the zero module the moments): none allocated here */
    /* Optional: the model came without its arenas (lmc_tmodel_init_layout)
     * and its parameters come from this source (kept by the caller until
     * the set-up is done: lmc_trainer_init, then lmc_trainer_dist_init when
     * zero_moments is set), so that the zero module fills each rank's
     * shard without the whole model ever being built (lmc_trainer_init
     * points the source at its copy of the model). */
    struct lmc_tmodel_src *init_src;
    /* ZeRO (lmc_trainer_dist_init): consecutive model parts (embeddings,
     * layers, head) grouped into one zero unit until it holds at least
     * this many bytes, so each collective moves about a bucket (0: one
     * unit per part) */
    int64_t bucket_bytes;
    int64_t eval_batches;      /* validation micro-batches per evaluation */
    bool no_acts;              /* no activation arena (a pipeline stage's part makes its own: trainer_pp.h) */
    /* Optional batch source instead of the token loader (supervised
     * fine-tuning): fills B*T inputs and targets (< 0: not counted) and
     * sets *segs / *n_segs to packed segments (lmc_tacts.segs) or NULL / 0.
     * The step's loss is then the mean over the counted targets of all its
     * micro-batches (gradients summed, scaled by 1/count in the update). */
    lmc_status (*next_batch)(void *user, int32_t *inputs, int32_t *targets, const int64_t **segs,
                             int64_t *n_segs, lmc_err *err);
    void *batch_user;
    /* Optional, ZeRO over a frozen base (lmc finetune's LoRA, where the
     * zero module holds only the trainable floats past tm.trainable_off):
     * points the trainable views the model's table does not reach (the
     * adapters, lmc_lora_train_bind_part) of model part `part` at w / g,
     * the floats of the arena layout from base (NULL: that side kept) */
    void (*bind_part)(void *user, const struct lmc_tmodel *tm, int part, const float *w, float *g, int64_t base);
    void *bind_user;
};

struct lmc_train_stats {
    double loss;               /* mean over the step's tokens */
    double grad_norm;          /* before clipping */
    double lr;
    int64_t tokens;
    bool skipped;              /* non-finite gradient: update skipped */
    double optim_s;            /* wall seconds of the optimizer update (synced; 0 if skipped) */
    double optim_cpu_s;        /* the process's CPU seconds over the same span (lmc_trainer_cpu_s) */
    /* GaLore (galore true): matrices whose projection this step refreshed
     * by the exact host eigensolver (the first refresh; later ones only as
     * the subspace refresh's fallback for a gradient of rank < r) and by
     * the subspace refresh (lmc_optim's counters) */
    bool galore;
    int64_t galore_exact, galore_subspace;
    /* mixture of experts (n_experts 0: a dense model): the load-balancing
     * loss (unweighted, mean over the micro-batches) and the tokens routed
     * to each expert (top-k choices summed over the sparse layers and the
     * micro-batches; data parallel: this rank's rows) */
    double moe_aux;
    int64_t n_experts;
    const double *expert_tokens; /* (n_experts), the trainer's until its next step */
    /* knowledge distillation (acts.distill set; one process): means over
     * the step's counted targets of the hard-label CE, KL(teacher || student)
     * at the distillation temperature, and top-1 agreement with the teacher */
    bool distill;
    double distill_ce, distill_kl, distill_agree;
};

struct lmc_trainer_tp;
struct lmc_trainer_cp;
struct lmc_trainer_pp;
struct lmc_trainer_ep;

struct lmc_trainer {
    struct lmc_tmodel tm;      /* owned */
    const struct lmc_backend *be;
    struct lmc_tacts acts;
    struct lmc_train_opts o;
    float *m, *v;              /* AdamW moments, laid out like tm.w (backend memory; AdamW only) */
    struct lmc_optim opt;      /* every other optimizer kind (o.optim.kind != LMC_OPTIM_ADAMW) */
    bool have_opt;
    int64_t step;              /* optimizer steps done */
    const struct lmc_token_data *train_data, *val_data; /* val may be NULL */
    struct lmc_loader train, val;
    /* o.next_batch runs (no loader): the caller's data position, written to
     * and read back from checkpoints (trainer_state.json's epoch, index) */
    int64_t feed_epoch, feed_index;
    /* data parallel (trainer_dist.c; NULL: one process) */
    struct lmc_comm *comm;
    struct lmc_zero *zero;
    int zero_stage;
    struct lmc_tdist *dist;    /* with zero: the per-part hand-over (trainer_dist.c) */
    int32_t *gbatch;           /* (world B, T+1): every rank's rows of the global micro-batch */
    int32_t *batch;            /* (B, T+1) */
    int32_t *in, *tg;          /* (B*T) */
    double *expert_tokens;     /* (num_experts) the step's expert load (MoE; else NULL) */
    /* tensor parallel (trainer_tp.h; NULL: none): tm is this rank's shard */
    struct lmc_trainer_tp *tp;
    /* context / pipeline parallel (trainer_cp.h, trainer_pp.h; NULL: none) */
    struct lmc_trainer_cp *cp;
    struct lmc_trainer_pp *pp;
    /* expert parallel (trainer_ep.h; NULL: none): tm holds this rank's experts */
    struct lmc_trainer_ep *ep;
};
/* Adds the micro-batch tr->acts just ran to st's expert load (MoE; no-op
 * for dense models); after the last of accum, st->moe_aux is their mean. */
void lmc_trainer_moe_add(struct lmc_trainer *tr, struct lmc_train_stats *st, int64_t k, int64_t accum);

/* Takes ownership of *tm (also on failure). val may be NULL; train may
 * be NULL with o->next_batch. be must be
 * the backend tm was made on (tm->be); a backend lacking a training op is
 * LMC_ERR_UNSUPPORTED naming the op. */
lmc_status lmc_trainer_init(struct lmc_trainer *tr, struct lmc_tmodel *tm,
                            const struct lmc_backend *be, const struct lmc_token_data *train,
                            const struct lmc_token_data *val, const struct lmc_train_opts *o,
                            lmc_err *err);
void lmc_trainer_free(struct lmc_trainer *tr);
/* One optimizer step (accum micro-batches): gradients zeroed, summed over
 * the micro-batches, global norm = sqrt(be->sumsq) over the gradient
 * arena, clipping folded into be->adamw's grad_scale, one adamw call per
 * tensor (non-finite norm: the update is skipped, the step still counts). */
lmc_status lmc_trainer_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err);
/* Mean loss over eval_batches validation micro-batches, always the same
 * ones (the val loader restarts at position 0, no shuffling). Data
 * parallel: the windows of eval_batches global micro-batches (world x B),
 * evaluated by the calling rank alone when replicated; with the zero
 * module (tr->zero) a collective: every rank evaluates its share. */
lmc_status lmc_trainer_eval(struct lmc_trainer *tr, double *loss, lmc_err *err);
/* Data-parallel training over comm (trainer_dist.c), after
 * lmc_trainer_init: ZeRO stage 0..3 (src/dist/zero.h), one zero unit per
 * model part (embeddings, each layer, final norm + head: lmc_tmodel_hooks).
 * The zero module then owns parameters, gradients and moments: the
 * model's arenas (and the trainer's moments) are freed and its views
 * bound into the module's buffers (stage 2: each layer's gradient only
 * while its backward runs, then reduce-scattered; stage 3: each layer's
 * parameters only while it runs, gathered before, freed after). Each
 * optimizer step reads a global
 * micro-batch of world x B sequences (the loader's order, as one process
 * with batch world x B reads it) and this rank trains on rows [rank B,
 * (rank+1) B); gradients are reduced by the zero module, which runs AdamW
 * on this rank's shard and gathers the parameters; the
 * loss, norm, clipping and learning rate are the global ones. Another
 * optimizer kind runs replicated (stage 0 only: the gradient all-reduced,
 * the same step on every rank, its state saved whole by rank 0; stages
 * 1-3 with it are LMC_ERR_UNSUPPORTED). A host backend (CPU) only. All
 * ranks must call with the same model and options (checked: refused
 * naming the first differing rank). With the zero module,
 * lmc_trainer_eval is collective (every rank calls it; each evaluates its
 * share of the windows) and lmc_trainer_dist_save gathers the parameters
 * for rank 0's lmc_ckpt_save. */
struct lmc_comm;
lmc_status lmc_trainer_dist_init(struct lmc_trainer *tr, struct lmc_comm *comm, int stage, const char *desc,
                                 lmc_err *err);
/* Sharded optimizer state of the step just done into zero_dir (every rank;
 * lmc_zero_save; nothing when replicated; rank 0 also keeps a host copy
 * of the parameters for lmc_ckpt_save until the next step), and its restore (lmc_zero_load; the state must be of the
 * step *step expected, else LMC_ERR_FORMAT naming both steps). */
lmc_status lmc_trainer_dist_save(struct lmc_trainer *tr, const char *zero_dir, lmc_err *err);
lmc_status lmc_trainer_dist_load(struct lmc_trainer *tr, const char *zero_dir, int64_t step, lmc_err *err);
/* The ZeRO state gathered unit by unit for rank 0's writing (collective:
 * every rank calls; lmc_trainer_dist_save does it without moments): the
 * parameters into a host copy for lmc_ckpt_save's model.safetensors, and
 * with with_moments the AdamW moments too, which lmc_ckpt_save then writes
 * whole (the folder one process writes); over a frozen base (LoRA) the
 * trainable floats go back into rank 0's arena instead (where
 * lmc_lora_train_read finds them). No-op without the zero module. */
lmc_status lmc_trainer_dist_gather(struct lmc_trainer *tr, bool with_moments, lmc_err *err);

/* The optimizer's parameter list for tm (room for params[tm->n_params];
 * frozen parameters skipped; returns how many were filled): arena
 * pointers, (out, in) shapes as the arenas hold them, roles from the
 * spec table (a MATRIX named lm_head is the HEAD), decay from the rule. */
int lmc_trainer_optim_params(const struct lmc_tmodel *tm, bool decay_all, struct lmc_optim_param *params);
/* The optimizer role of a spec-table role and tensor name. */
enum lmc_param_role lmc_trainer_param_role(enum lmc_role role, const char *name);
/* The start-up line: the optimizer's groups and state bytes. */
void lmc_trainer_describe_optim(const struct lmc_trainer *tr, char *buf, size_t cap);

/* Model FLOPs per trained token (6 N + attention), for throughput / MFU. */
double lmc_trainer_flops_per_token(const struct lmc_trainer *tr);
/* The process's CPU time in seconds, all threads (the step timers' CPU twin). */
double lmc_trainer_cpu_s(void);

/* Saves a checkpoint folder dir (created): model, config (copied from
 * config_src/config.json when given, else written), tokenizer files copied
 * from tok_dir (when given and present), optimizer state, trainer state. */
lmc_status lmc_ckpt_save(const struct lmc_trainer *tr, const char *dir, const char *config_src,
                         const char *tok_dir, lmc_err *err);
/* Restores optimizer moments, step and loader position from a checkpoint
 * folder into a trainer initialised from that folder's model. */
lmc_status lmc_ckpt_load_state(struct lmc_trainer *tr, const char *dir, lmc_err *err);

#endif
