/* lora_train.h — training LoRA adapters over a frozen base: the adapter's
 * A and B become parameters of a trainable model (lmc_tmodel), appended to
 * its parameter table under PEFT's key names past tm->trainable_off, the
 * base's tensors marked frozen (no weight gradients: the gradient views of
 * the base linears and the head are NULL; no optimizer state), and bound
 * as lmc_linear adapters in both the weight views (A, B) and the gradient
 * views (dA, dB). lmc_trainer_step then trains only the adapter. */
#ifndef LMC_TRAIN_LORA_TRAIN_H
#define LMC_TRAIN_LORA_TRAIN_H

#include "lmc.h"
#include "model/backward.h"
#include "train/lora.h"
#include "train/trainer.h"

struct lmc_lora_train {
    const struct lmc_backend *be;
    struct lmc_adapter *wad, *gad;   /* per adapted linear: views into tm->w / tm->g */
    void **bufs;                     /* diag(scale) per module, the shared scratch */
    int n_bufs;
    int first_param, n_mods;
    int n_ad;                        /* entries of wad / gad */
    int *ad_a;                       /* (n_ad) each entry's lora_A parameter (lora_B the next) */
    int64_t *ad_boff;                /* (n_ad) its part's offset in lora_B */
    float dropout;                   /* the adapter's lora_dropout */
    size_t buf_bytes;                /* backend memory bufs hold (train_mem.h) */
    int scratch_buf;                 /* bufs[] index of the adapters' shared row scratch */
    int64_t scratch_per_row;         /* its floats per row; rows: wad[].scratch_rows */
};

/* Appends lo's modules (lo->cfg.r, its scale) to tm (moving its arenas) and
 * binds them; lo's A and B are the initial values. lo must fit tm's config
 * (lmc_lora_load / lmc_lora_create with it). LMC_ERR_OOM, LMC_ERR_ARG. */
lmc_status lmc_lora_train_attach(struct lmc_lora_train *lt, struct lmc_tmodel *tm, const struct lmc_lora *lo,
                                 lmc_err *err);
/* Sets how many rows the adapters' low-rank products take at a time (the
 * shared scratch reallocated: rows x (2 r + out (+ in with dropout))
 * floats). attach gives 256, which keeps the CPU's products in cache; a
 * GPU wants a whole micro-batch (B x T rows) per product, so that each
 * adapted linear runs one launch per GEMM instead of one per 256 rows.
 * The same results up to the order of dA/dB's sums over row blocks.
 * LMC_ERR_OOM (the old scratch kept), LMC_ERR_ARG for rows < 1. */
lmc_status lmc_lora_train_set_scratch_rows(struct lmc_lora_train *lt, int64_t rows, lmc_err *err);
/* Copies the adapter's current A and B from tm into lo (same modules). */
lmc_status lmc_lora_train_read(const struct lmc_lora_train *lt, const struct lmc_tmodel *tm, struct lmc_lora *lo,
                               lmc_err *err);
/* An adapter checkpoint: dir is a PEFT folder (lo gets the current A, B;
 * tokenizer files from tok_dir) plus optimizer.safetensors (the adapter's
 * AdamW moments) and trainer_state.json (step, batch shape, data epoch and
 * example), written last: a folder without it is not a checkpoint. */
lmc_status lmc_lora_ckpt_save(const struct lmc_trainer *tr, const struct lmc_lora_train *lt, struct lmc_lora *lo,
                              const char *dir, const char *tok_dir, int64_t epoch, int64_t next, lmc_err *err);
/* Restores moments and step into tr (attached with dir's adapter) and
 * returns the data position. Batch shape mismatch: LMC_ERR_ARG. */
lmc_status lmc_lora_ckpt_load_state(struct lmc_trainer *tr, const char *dir, int64_t *epoch, int64_t *next,
                                    lmc_err *err);
/* The PEFT folder's companions of an adapter checkpoint written from host
 * moments m, v (n floats each, a trainable arena's layout): optimizer.
 * safetensors (adamw.m, adamw.v) and trainer_state.json (tr's step, batch,
 * data-parallel world). Tensor parallel: the gathered moments. */
lmc_status lmc_lora_ckpt_write_adamw(const struct lmc_trainer *tr, const float *m, const float *v, int64_t n,
                                     const char *dir, int64_t epoch, int64_t next, lmc_err *err);
/* lmc_lora_ckpt_load_state with the checkpoint holding `want` trainable
 * floats and, when cut is given, the AdamW moments of that layout cut into
 * tr's (cut(user, local, whole); tensor parallel: this rank's slices). */
lmc_status lmc_lora_ckpt_load_state_cut(struct lmc_trainer *tr, const char *dir, int64_t want,
                                        void (*cut)(void *user, float *local, const float *whole), void *user,
                                        int64_t *epoch, int64_t *next, lmc_err *err);
/* LoRA dropout of every adapter: on (train, the adapter's lora_dropout,
 * masks drawn from seed: give each micro-batch its own) or off (evaluation).
 * attach leaves it on with seed 0. */
void lmc_lora_train_dropout(struct lmc_lora_train *lt, bool train, uint64_t seed);
/* Data parallel with ZeRO (lmc_train_opts.bind_part): points the
 * adapters of model part `part` (layer part - 1) at w / g (the floats of
 * tm's arena layout from base; NULL: that side left as it is), where the
 * zero module keeps them. */
void lmc_lora_train_bind_part(void *lt, const struct lmc_tmodel *tm, int part, const float *w, float *g,
                              int64_t base);
/* Frees what attach allocated (tm keeps its arenas; free tm first or after). */
void lmc_lora_train_free(struct lmc_lora_train *lt);

#endif
