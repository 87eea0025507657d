/* zero.h — data-parallel training state sharded ZeRO-style over a
 * communicator: parameters, gradients and AdamW moments of a model whose
 * float32 parameters form one flat arena described by a tensor list.
 *
 *   stage 0  every rank holds everything; gradients are all-reduced;
 *   stage 1  AdamW moments sharded: gradients reduce-scattered, AdamW on
 *            this rank's shard, parameters all-gathered;
 *   stage 2  gradients sharded too: each unit's (layer's) gradient is
 *            reduce-scattered as soon as its backward ends and its full
 *            buffer freed (at most two units' full gradients exist);
 *   stage 3  parameters sharded too: a unit's parameters are all-gathered
 *            before use and freed after (prefetch starts the next one's).
 *
 * Tensors are grouped into units (a layer, the embeddings...); a unit is a
 * contiguous range of the arena. Each unit is split into `world` equal
 * parts (padded with zeros; each part a multiple of 16 floats); rank r owns
 * part r of every unit, and its shard is those parts one after another.
 * Every stage reduces in the communicator's fixed order, partitions the
 * gradient norm by the same shards and runs AdamW element by element, so
 * stages 0-3 at one world size give the same bits, and the sharded
 * checkpoint (zero_ckpt.c) is the same whatever the stage.
 *
 * A step, as the trainer runs it (global batch = world * micro-batch;
 * each rank's loss gradient scaled by 1 / global count):
 *     for u in forward order: p = lmc_zero_unit_params(u) (stage 3: after
 *         lmc_zero_unit_prefetch(u+1)), forward, lmc_zero_unit_release(u)
 *     for u in backward order: p = lmc_zero_unit_params(u); g =
 *         lmc_zero_unit_grads(u); backward accumulates into g;
 *         lmc_zero_unit_release(u); lmc_zero_unit_grads_done(u)
 *     lmc_zero_grad_norm(&norm); clip = lmc_grad_clip_scale(norm, max);
 *     lmc_zero_apply(decay step, no-decay step, both with grad_scale clip)
 * Buffers are backend memory. With a device communicator (nccl) this
 * module waits for the backend's queued work (be->sync) before a
 * collective reads a buffer and before a released buffer is reused. All
 * ranks call in the same order. */
#ifndef LMC_DIST_ZERO_H
#define LMC_DIST_ZERO_H

#include "dist/comm.h"
#include "ops/backend.h"

struct lmc_zero_tensor {
    const char *name;
    int64_t offset, numel; /* elements in the flat arena */
    int unit;              /* units are numbered 0.. in arena order */
    bool decay;            /* AdamW weight decay applies */
    int ndim;              /* shape for exported checkpoints (0: 1-D, numel) */
    int64_t shape[4];
};

struct lmc_zero_cfg {
    int stage;             /* 0..3 */
    const struct lmc_zero_tensor *tensors;
    int n_tensors;         /* in arena order, covering [0, numel) without gaps */
    bool init_on_host;     /* init_params is host memory (e.g. memory-mapped
                            * weights): a GPU never holds the full model */
    /* Optional: called once init_params' floats [off, off + n) (a unit)
     * are copied, in arena order; the caller may release that memory (it
     * is not read again), so set-up need not hold the initial parameters
     * beside the whole state. */
    void (*released)(void *user, int64_t off, int64_t n);
    void *user;
    /* Optional, instead of init_params (then NULL): writes the arena's
     * floats [off, off + n) into host memory. Called in increasing offset
     * order, for only what this rank keeps: a unit at a time in stages
     * 0-2, this rank's part of each unit in stage 3, so a rank never holds
     * the whole model (a model source, model/backward.h lmc_tmodel_src). */
    lmc_status (*fill)(void *user, int64_t off, int64_t n, float *host, lmc_err *err);
    void *fill_user;
    /* Stage 0 only: the caller runs its own optimizer (lmc_optim: Muon,
     * GaLore, ... need whole matrices) on the full buffers of
     * lmc_zero_unit_params / lmc_zero_unit_grads after lmc_zero_grad_norm,
     * then lmc_zero_grads_clear: no AdamW moments here (lmc_zero_apply,
     * save and load refused). */
    bool no_moments;
};

struct lmc_zero_stats {
    size_t bytes_now, bytes_peak; /* backend memory held by this module */
    int64_t shard_numel;          /* this rank's shard (elements, padding included) */
};

struct lmc_zero;

/* Sets up the sharded state; init_params (the full arena, the same on
 * every rank; backend memory, or host memory with cfg->init_on_host) is
 * copied: the caller may free it after (or cfg->fill gives the values and
 * init_params is NULL). Checks
 * that all ranks have the same tensor list and stage (refused otherwise). */
lmc_status lmc_zero_init(struct lmc_zero **out, const struct lmc_zero_cfg *cfg, struct lmc_comm *comm,
                         struct lmc_backend *be, const float *init_params, lmc_err *err);
void lmc_zero_free(struct lmc_zero *z);

int lmc_zero_n_units(const struct lmc_zero *z);
/* Unit u's range in the arena's layout. */
void lmc_zero_unit_range(const struct lmc_zero *z, int u, int64_t *offset, int64_t *numel);

/* Stage 3: starts gathering unit u's parameters (no-op otherwise or when
 * already started). */
lmc_status lmc_zero_unit_prefetch(struct lmc_zero *z, int u, lmc_err *err);
/* Unit u's parameters (its numel elements, in the arena's order), valid
 * until lmc_zero_unit_release(u) in stage 3 (asked again before that: the
 * same buffer) and until the next apply in the other stages. */
lmc_status lmc_zero_unit_params(struct lmc_zero *z, int u, float **p, lmc_err *err);
void lmc_zero_unit_release(struct lmc_zero *z, int u);

/* Where backward accumulates unit u's gradient (zeroed at the start of a
 * step; numel elements). Stage 2/3: a buffer of its own, until
 * lmc_zero_unit_grads_done(u). */
lmc_status lmc_zero_unit_grads(struct lmc_zero *z, int u, float **g, lmc_err *err);
/* Unit u's gradient for this step is complete: starts its reduction
 * (stage 2/3 then free its full buffer once reduced). Once per unit per
 * step, on the last micro-step of gradient accumulation. */
lmc_status lmc_zero_unit_grads_done(struct lmc_zero *z, int u, lmc_err *err);

/* Waits for the reductions in flight (stage 2/3: and frees their full
 * buffers), so that no collective of this module runs while the caller
 * uses another communicator sharing its links (tensor parallelism). */
lmc_status lmc_zero_wait(struct lmc_zero *z, lmc_err *err);
/* Waits for every reduction and returns the global gradient norm (the same
 * on every rank; sqrt of the sum of squares over all ranks' shards). */
lmc_status lmc_zero_grad_norm(struct lmc_zero *z, double *norm, lmc_err *err);
/* lmc_zero_grad_norm's sum of squares with tensor t's elements weighted by
 * w[t] (n_tensors weights; tensor parallelism: a replicated tensor 1/T, so
 * the caller's sum over the TP group counts it once), not square-rooted. */
lmc_status lmc_zero_grad_sumsq_weighted(struct lmc_zero *z, const double *w, double *sum, lmc_err *err);
/* AdamW on this rank's shard (decay for tensors with decay set, nodecay for
 * the others; grad_scale carries clipping), then the parameters are
 * gathered (stages 0-2) and the gradients zeroed for the next step. */
lmc_status lmc_zero_apply(struct lmc_zero *z, const struct lmc_adamw_step *decay,
                          const struct lmc_adamw_step *nodecay, lmc_err *err);

/* Zeroes the gradients without a step (after lmc_zero_grad_norm, when the
 * step is skipped: a non-finite norm). */
void lmc_zero_grads_clear(struct lmc_zero *z);

/* All ranks' values summed in the fixed rank order (losses, token counts);
 * host doubles, whatever the communicator's memory. */
lmc_status lmc_zero_sum_f64(struct lmc_zero *z, double *vals, int n, lmc_err *err);

/* The full parameters (numel floats, host memory) as a plain array: every
 * rank gets them (stage 3 gathers). */
lmc_status lmc_zero_params_to_host(struct lmc_zero *z, float *out, lmc_err *err);

/* The AdamW moments (numel floats each, host memory, the arena's layout):
 * every rank gets them (stages 1-3 gather the shards). */
lmc_status lmc_zero_moments_to_host(struct lmc_zero *z, float *m, float *v, lmc_err *err);

void lmc_zero_get_stats(const struct lmc_zero *z, struct lmc_zero_stats *st);
/* Logs on rank 0: this rank's ZeRO state (now, peak) against the fp32
 * formula, and its peak resident set (VmHWM) where /proc tells it: since
 * lmc_zero_mark_setup when that could restart it. */
void lmc_zero_log_memory(const struct lmc_zero *z);
/* The end of set-up (the model built whole, then sharded): records this
 * process's peak resident set and restarts it (/proc/self/clear_refs), so
 * lmc_zero_log_memory tells the set-up and the training peaks apart. */
void lmc_zero_mark_setup(struct lmc_zero *z);

/* ---- Sharded checkpoints (zero_ckpt.c). Each rank writes its shard of
 * parameters and AdamW moments (the same layout whatever the stage) to
 * dir/zero-step<S>-rank<R>.bin; then rank 0 writes dir/zero-manifest.json
 * (world, layout, step, shard files) by an atomic rename, and each rank
 * removes its shards of older steps: a save interrupted anywhere leaves the
 * previous checkpoint loadable. */
lmc_status lmc_zero_save(struct lmc_zero *z, const char *dir, int64_t step, lmc_err *err);
/* Loads the checkpoint in dir into z (the same tensor list; any world size:
 * another world's shards are consolidated and re-split); *step gets its step. */
lmc_status lmc_zero_load(struct lmc_zero *z, const char *dir, int64_t *step, lmc_err *err);
/* Saves keep every step's shards and write each step's manifest as
 * dir/zero-manifest-step<S>.json beside the newest (zero-manifest.json), so
 * any saved step can be loaded (lmc_zero_load_step); off by default (the
 * newest step only). */
void lmc_zero_keep_all_steps(struct lmc_zero *z, bool keep);
/* lmc_zero_load of step `want` (its own manifest; the newest when want < 0
 * or when there is none of that step: *step tells which was loaded). */
lmc_status lmc_zero_load_step(struct lmc_zero *z, const char *dir, int64_t want, int64_t *step, lmc_err *err);
/* The whole state from full host arrays (numel floats each, the arena's
 * layout; every rank gives the same): parameters P, moments M and V; each
 * rank keeps what its stage holds. Not collective. */
void lmc_zero_set_full(struct lmc_zero *z, const float *P, const float *M, const float *V);
/* Offline, without a communicator: the checkpoint's full parameters and
 * moments as plain arrays of *numel floats in the arena's layout (malloc'd,
 * caller frees; m and v may be NULL). */
lmc_status lmc_zero_consolidate(const char *dir, float **params, float **m, float **v, int64_t *numel,
                                int64_t *step, lmc_err *err);

/* lmc_zero_consolidate of step `want` (as lmc_zero_load_step picks it). */
lmc_status lmc_zero_consolidate_step(const char *dir, int64_t want, float **params, float **m, float **v,
                                     int64_t *numel, int64_t *step, lmc_err *err);

/* Offline: the checkpoint's parameters as one safetensors file (float32,
 * the tensors' names and shapes as given to lmc_zero_init). */
lmc_status lmc_zero_export_safetensors(const char *dir, const char *out_path, lmc_err *err);
/* The same of step `want` (< 0: the newest); another step than saved:
 * LMC_ERR_ARG naming both. */
lmc_status lmc_zero_export_safetensors_step(const char *dir, int64_t want, const char *out_path, lmc_err *err);

/* ---- Memory per rank (bytes) for psi parameters at stage s and world n:
 * the ZeRO paper's mixed-precision figures (2-byte weights and gradients,
 * 12 bytes of fp32 master weights and Adam moments: 16psi, 4psi + 12psi/n,
 * 2psi + 14psi/n, 16psi/n) and this module's float32 layout (4-byte
 * weights and gradients, 8 bytes of moments). */
struct lmc_zero_mem {
    double weights, grads, optimizer, total;
};
void lmc_zero_mem_mixed(int stage, int world, int64_t psi, struct lmc_zero_mem *m);
void lmc_zero_mem_fp32(int stage, int world, int64_t psi, struct lmc_zero_mem *m);

#endif
