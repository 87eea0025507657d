/* checkpoint.h — checkpoint folders in a training run's output folder OUT,
 * written atomically, and what a resumed run takes from one.
 *
 * Guarantees (checkpoint_dir.c): a checkpoint is written into a temporary
 * folder OUT/.partial.step_NNNNNN (a name that neither `--resume latest` nor
 * a step_* glob takes), every file and the folder are fsync'ed, the folder
 * is renamed to OUT/step_NNNNNN and OUT is fsync'ed. So a folder named
 * step_NNNNNN is complete, and a process killed at any moment leaves every
 * earlier checkpoint intact; a checkpoint replacing one of the same name is
 * swapped in with one atomic exchange. Temporaries left by a killed process
 * are removed when the next run prepares OUT. One trainer per OUT at a time.
 *
 * trainer_state.json (checkpoint.c) records the step, the data position and
 * the run's settings (batch, sequence length, accumulation, seed, schedule,
 * AdamW, decay rule, clipping), which a resumed run takes unless the caller
 * overrides them. */
#ifndef LMC_TRAIN_CHECKPOINT_H
#define LMC_TRAIN_CHECKPOINT_H

#include "train/trainer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LMC_CKPT_TMP_PREFIX ".partial."

/* OUT/step_NNNNNN (six digits at least) into buf; false if it does not fit. */
bool lmc_ckpt_step_path(char *buf, size_t cap, const char *out, int64_t step);
/* True when name is exactly "step_" followed by 1..18 digits; *step gets them. */
bool lmc_ckpt_parse_name(const char *name, int64_t *step);
/* True when dir holds every file a resumed run reads (config.json,
 * model.safetensors, optimizer.safetensors, trainer_state.json). On false
 * and missing != NULL, *missing names the first absent file. */
bool lmc_ckpt_complete(const char *dir, const char **missing);

/* Creates OUT (not its parents) if absent and removes the temporaries of
 * interrupted saves (OUT/.partial.*). *n_removed (may be NULL) gets how
 * many were removed. LMC_ERR_IO naming the path on failure. */
lmc_status lmc_ckpt_out_prepare(const char *out, int *n_removed, lmc_err *err);
/* The newest complete checkpoint in OUT: the folder step_N with the
 * largest N that lmc_ckpt_complete accepts (incomplete folders, e.g. left
 * by older versions, are skipped). LMC_ERR_IO if there is none. */
lmc_status lmc_ckpt_latest(const char *out, char *path, size_t cap, int64_t *step, lmc_err *err);
/* What `--resume ARG` names: "latest" -> lmc_ckpt_latest(out), otherwise
 * ARG itself, which must be a complete checkpoint (LMC_ERR_IO naming the
 * missing file). */
lmc_status lmc_ckpt_resolve(const char *out, const char *arg, char *path, size_t cap, lmc_err *err);

/* --keep-last N (rank 0, after a checkpoint folder is renamed into place
 * and every rank's ZeRO shards of its step are written): removes the
 * step_N folders of OUT but the `keep` newest (keep >= 1) and `spare` (the
 * folder a resumed run started from, or NULL; kept whatever its step), and
 * from zero_dir (NULL: none) the per-step files of the steps before the
 * oldest folder kept (ZeRO shards and step manifests, zero-step*-rank*.bin
 * and zero-manifest-step*.json, and sharded optimizer states,
 * optim-step*-rank*.safetensors), except the spare folder's step. So every
 * folder left stays resumable; files of a newer step without a folder yet
 * are left alone. *n_removed (may be NULL) gets the folders removed.
 * LMC_ERR_IO naming the path on a failure to list or remove. */
lmc_status lmc_ckpt_keep_last(const char *out, int64_t keep, const char *spare, const char *zero_dir, int *n_removed,
                              lmc_err *err);

/* Atomic folder writing, used by lmc_ckpt_save. begin: the temporary
 * sibling of dir (parent/.partial.<name>), emptied if stale, created; its
 * path into tmp. commit: fsyncs every file in tmp and tmp itself, renames
 * it to dir (exchanging with an existing dir, whose old content is then
 * removed) and fsyncs the parent. abort: removes tmp (best effort). */
lmc_status lmc_ckpt_begin(const char *dir, char *tmp, size_t cap, lmc_err *err);
lmc_status lmc_ckpt_commit(const char *tmp, const char *dir, lmc_err *err);
void lmc_ckpt_abort(const char *tmp);
/* Removes a folder and what it holds (regular files and folders, 8 deep). */
lmc_status lmc_ckpt_remove_tree(const char *path, lmc_err *err);

/* Settings a resumed run takes from the checkpoint unless given: one bit
 * each, set by the caller for the settings it overrides. */
enum {
    LMC_TOPT_BATCH = 1u << 0,   /* o.B */
    LMC_TOPT_SEQ = 1u << 1,     /* o.T */
    LMC_TOPT_ACCUM = 1u << 2,   /* o.accum */
    LMC_TOPT_SEED = 1u << 3,    /* o.seed */
    LMC_TOPT_STEPS = 1u << 4,   /* o.sched.total */
    LMC_TOPT_LR = 1u << 5,      /* o.sched.lr_max and o.adamw.lr */
    LMC_TOPT_MIN_LR = 1u << 6,  /* o.sched.lr_min */
    LMC_TOPT_WARMUP = 1u << 7,  /* o.sched.warmup */
    LMC_TOPT_SCHED = 1u << 8,   /* o.sched.kind */
    LMC_TOPT_WD = 1u << 9,      /* o.adamw.weight_decay */
    LMC_TOPT_BETA1 = 1u << 10,  /* o.adamw.beta1 */
    LMC_TOPT_BETA2 = 1u << 11,  /* o.adamw.beta2 */
    LMC_TOPT_EPS = 1u << 12,    /* o.adamw.eps */
    LMC_TOPT_DECAY = 1u << 13,  /* o.decay */
    LMC_TOPT_CLIP = 1u << 14,   /* o.clip */
    LMC_TOPT_OPTIM = 1u << 15,  /* o.optim (kind and settings; "--optim") */
};
/* trainer_state.json parsed: the fields present, each with its bit in
 * `have` (the LMC_TOPT_* bits for settings, LMC_TSTATE_* for the rest;
 * LMC_TOPT_LR for schedule.lr_max, LMC_TSTATE_ADAMW_LR for adamw.lr). */
enum {
    LMC_TSTATE_STEP = 1u << 16,
    LMC_TSTATE_EPOCH = 1u << 17,
    LMC_TSTATE_INDEX = 1u << 18,
    LMC_TSTATE_DECAY_STEPS = 1u << 19,
    LMC_TSTATE_ADAMW_LR = 1u << 20,
};
struct lmc_train_state {
    int64_t step, epoch, index; /* -1 when absent */
    struct lmc_train_opts o;    /* the settings present; zero where absent */
    unsigned have;
};
/* Parses trainer_state.json text (len bytes, need not be NUL-terminated;
 * src names it in messages). LMC_ERR_FORMAT naming the field for a value
 * of the wrong kind or range; unknown fields are ignored. */
lmc_status lmc_train_state_parse(const char *text, size_t len, const char *src, struct lmc_train_state *st,
                                 lmc_err *err);

/* The bit of an `lmc train` option ("--batch", "--lr", ...); 0 for options
 * that are not resumed settings. */
unsigned lmc_train_opt_bit(const char *flag);
/* Fills the settings of o whose bit is not in `given` from dir's
 * trainer_state.json (fields a file lacks, from older versions, stay as
 * they are; the schedule's decay_steps always comes from the file). A
 * given LMC_TOPT_LR keeps the caller's min lr too (lmc train's default min
 * lr is lr / 10).
 * LMC_ERR_FORMAT naming the file and field for a malformed value. */
lmc_status lmc_ckpt_read_opts(const char *dir, unsigned given, struct lmc_train_opts *o, lmc_err *err);

#endif
