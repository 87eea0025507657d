/* lora_tp.c — LoRA adapters over a tensor-parallel base (see lora_tp.h):
 * an adapter cut into a rank's slices by its modules' PEFT names
 * (lmc_tp_tensor_cut), the ranks' slices gathered back into the
 * one-process adapter and its AdamW moments, and the consolidated
 * checkpoint written and resumed. */
#include "train/lora_tp.h"
#include "core/core.h"
#include "dist/tp_train.h"
#include "train/lora_train.h"
#include "train/trainer_tp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rank `rank`'s cut of module m's A (which 0) or B (1): *dim 0 rows, 1
 * columns, -1 whole. */
static lmc_status mod_cut(const struct lmc_lora_module *m, int which, const struct lmc_config *fc, int world,
                          int rank, int *dim, int64_t *a0, int64_t *n, lmc_err *err) {
    struct lmc_tp_heads h;
    lmc_status s = lmc_tp_plan_heads(fc->num_heads, fc->num_kv_heads, world, rank, &h, err);
    if (s) return s;
    int64_t i0, ni;
    lmc_dist_slice(fc->intermediate_size, rank, world, &i0, &ni);
    char name[256];
    snprintf(name, sizeof name, "base_model.model.%s.%s.weight", m->module, which ? "lora_B" : "lora_A");
    lmc_tp_tensor_cut(name, &h, fc->head_dim, i0, ni, dim, a0, n);
    return LMC_OK;
}

/* (rows, cols) of module m's full A or B */
static void mod_shape(const struct lmc_lora *lo, const struct lmc_lora_module *m, int which, int64_t *rows,
                      int64_t *cols) {
    *rows = which ? m->out : lo->cfg.r;
    *cols = which ? lo->cfg.r : m->in;
}

static void take(float *dst, const float *src, int dim, int64_t a0, int64_t n, int64_t rows, int64_t cols) {
    if (dim == 0) lmc_tp_take_rows(dst, src, cols, a0, n);
    else if (dim == 1) lmc_tp_take_cols(dst, src, rows, cols, a0, n);
    else memcpy(dst, src, sizeof(float) * (size_t)(rows * cols));
}

static void put(float *dst, const float *src, int dim, int64_t a0, int64_t n, int64_t rows, int64_t cols) {
    if (dim == 0) memcpy(dst + a0 * cols, src, sizeof(float) * (size_t)(n * cols));
    else if (dim == 1)
        for (int64_t r = 0; r < rows; r++) memcpy(dst + r * cols + a0, src + r * n, sizeof(float) * (size_t)n);
    else memcpy(dst, src, sizeof(float) * (size_t)(rows * cols));
}

lmc_status lmc_lora_tp_cut(struct lmc_lora *local, const struct lmc_lora *full, const struct lmc_config *fc, int world,
                           int rank, lmc_err *err) {
    memset(local, 0, sizeof *local);
    local->cfg = full->cfg;
    local->mods = calloc((size_t)full->n_mods + 1, sizeof *local->mods);
    if (!local->mods) return lmc_err_set(err, LMC_ERR_OOM, "LoRA shard: out of memory");
    lmc_status s = LMC_OK;
    for (int k = 0; !s && k < full->n_mods; k++) {
        const struct lmc_lora_module *m = &full->mods[k];
        struct lmc_lora_module *d = &local->mods[k];
        if (m->parts != 1 || m->expert >= 0 || m->transposed) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor parallel LoRA: %s (a fused, expert or Conv1D module) "
                            "does not split", m->module);
            break;
        }
        *d = *m;
        d->a = d->b = NULL;
        local->n_mods = k + 1;
        int64_t R[2], C[2];
        for (int w = 0; !s && w < 2; w++) {
            int dim;
            int64_t a0, n;
            mod_shape(full, m, w, &R[w], &C[w]);
            if ((s = mod_cut(m, w, fc, world, rank, &dim, &a0, &n, err))) break;
            int64_t r = dim == 0 ? n : R[w], c = dim == 1 ? n : C[w];
            float *buf = malloc(sizeof(float) * (size_t)(r * c + 1));
            if (!buf) {
                s = lmc_err_set(err, LMC_ERR_OOM, "LoRA shard: out of memory");
                break;
            }
            take(buf, w ? m->b : m->a, dim, a0, n, R[w], C[w]);
            if (w) d->b = buf, d->out = r;
            else d->a = buf, d->in = c;
        }
    }
    if (s) lmc_lora_free(local);
    return s;
}

int64_t lmc_lora_tp_flat_off(const struct lmc_lora *lo, int k, int which) {
    int64_t off = 0, r = lo->cfg.r;
    for (int i = 0; i <= k; i++) {
        int64_t na = r * lo->mods[i].in, nb = lo->mods[i].out * r;
        if (i == k) return which ? off + (na + 15) / 16 * 16 : off;
        off += (na + 15) / 16 * 16 + (nb + 15) / 16 * 16;
    }
    return off;
}

int64_t lmc_lora_tp_flat_numel(const struct lmc_lora *lo) {
    return lo->n_mods ? lmc_lora_tp_flat_off(lo, lo->n_mods - 1, 1) +
                            (lo->mods[lo->n_mods - 1].out * lo->cfg.r + 15) / 16 * 16
                      : 0;
}

lmc_status lmc_lora_tp_gather_flat(float *full_flat, const struct lmc_lora *full, const float *local_flat,
                                   const struct lmc_lora *local, const struct lmc_config *fc, struct lmc_comm *c,
                                   lmc_err *err) {
    memset(full_flat, 0, sizeof(float) * (size_t)lmc_lora_tp_flat_numel(full));
    lmc_status s = LMC_OK;
    for (int k = 0; !s && k < full->n_mods; k++)
        for (int w = 0; !s && w < 2; w++) {
            const struct lmc_lora_module *m = &full->mods[k];
            int64_t R, C, maxc = 0;
            mod_shape(full, m, w, &R, &C);
            int dim;
            int64_t a0, n;
            for (int r = 0; !s && r < c->world; r++) {
                s = mod_cut(m, w, fc, c->world, r, &dim, &a0, &n, err);
                maxc = LMC_MAX(maxc, dim == 0 ? n * C : dim == 1 ? R * n : R * C);
            }
            if (s) break;
            float *dst = full_flat + lmc_lora_tp_flat_off(full, k, w);
            if ((s = mod_cut(m, w, fc, c->world, c->rank, &dim, &a0, &n, err))) break;
            if (dim < 0) { /* whole on every rank (the same bits: reduced in a fixed order) */
                memcpy(dst, local_flat + lmc_lora_tp_flat_off(local, k, w), sizeof(float) * (size_t)(R * C));
                continue;
            }
            float *send = calloc((size_t)maxc, sizeof(float));
            float *recv = malloc(sizeof(float) * (size_t)maxc * (size_t)c->world);
            if (!send || !recv) s = lmc_err_set(err, LMC_ERR_OOM, "LoRA gather: out of memory");
            if (!s) {
                memcpy(send, local_flat + lmc_lora_tp_flat_off(local, k, w),
                       sizeof(float) * (size_t)(dim == 0 ? n * C : R * n));
                s = c->all_gather(c, send, recv, maxc, LMC_DTYPE_F32, err);
            }
            for (int r = 0; !s && r < c->world; r++) {
                if ((s = mod_cut(m, w, fc, c->world, r, &dim, &a0, &n, err))) break;
                put(dst, recv + (int64_t)r * maxc, dim, a0, n, R, C);
            }
            free(send), free(recv);
        }
    return s;
}

void lmc_lora_tp_cut_flat(float *local_flat, const struct lmc_lora *local, const float *full_flat,
                          const struct lmc_lora *full, const struct lmc_config *fc, int world, int rank) {
    memset(local_flat, 0, sizeof(float) * (size_t)lmc_lora_tp_flat_numel(local));
    for (int k = 0; k < full->n_mods; k++)
        for (int w = 0; w < 2; w++) {
            int64_t R, C, a0, n;
            int dim;
            mod_shape(full, &full->mods[k], w, &R, &C);
            lmc_status s = mod_cut(&full->mods[k], w, fc, world, rank, &dim, &a0, &n, NULL);
            LMC_ASSERT(s == LMC_OK); /* the same cut lmc_lora_tp_cut made */
            take(local_flat + lmc_lora_tp_flat_off(local, k, w), full_flat + lmc_lora_tp_flat_off(full, k, w), dim,
                 a0, n, R, C);
        }
}

/* host copy of the trainable floats [trainable_off, numel) of arena a */
static float *host_trainable(const struct lmc_trainer *tr, const float *a, bool moments) {
    const struct lmc_tmodel *tm = &tr->tm;
    int64_t n = tm->numel - tm->trainable_off;
    float *h = malloc(sizeof(float) * (size_t)(n + 1));
    if (h) tr->be->download(tr->be->ctx, h, moments ? a : a + tm->trainable_off, sizeof(float) * (size_t)n);
    return h;
}

lmc_status lmc_lora_tp_read(const struct lmc_trainer *tr, const struct lmc_lora_train *lt, struct lmc_lora *local,
                            struct lmc_lora *full, lmc_err *err) {
    (void)lt;
    const struct lmc_trainer_tp *t = tr->tp;
    LMC_ASSERT(t != NULL && lmc_lora_tp_flat_numel(local) == tr->tm.numel - tr->tm.trainable_off);
    int64_t fn = lmc_lora_tp_flat_numel(full);
    float *lw = host_trainable(tr, tr->tm.w, false), *fw = malloc(sizeof(float) * (size_t)(fn + 1));
    lmc_status s = lw && fw ? lmc_lora_tp_gather_flat(fw, full, lw, local, &t->full, t->c, err)
                            : lmc_err_set(err, LMC_ERR_OOM, "LoRA gather: out of memory");
    for (int k = 0; !s && k < full->n_mods; k++) {
        const struct lmc_lora_module *m = &full->mods[k];
        memcpy(m->a, fw + lmc_lora_tp_flat_off(full, k, 0), sizeof(float) * (size_t)(full->cfg.r * m->in));
        memcpy(m->b, fw + lmc_lora_tp_flat_off(full, k, 1), sizeof(float) * (size_t)(m->out * full->cfg.r));
    }
    free(lw), free(fw);
    return s;
}

lmc_status lmc_lora_tp_ckpt_save(const struct lmc_trainer *tr, const struct lmc_lora_train *lt,
                                 struct lmc_lora *local, struct lmc_lora *full, const char *dir, const char *tok_dir,
                                 int64_t epoch, int64_t next, bool writer, lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    if (tr->zero || tr->have_opt)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor-parallel LoRA checkpoints hold AdamW without ZeRO");
    lmc_status s = lmc_lora_tp_read(tr, lt, local, full, err);
    int64_t fn = lmc_lora_tp_flat_numel(full);
    float *lm = s ? NULL : host_trainable(tr, tr->m, true), *lv = s ? NULL : host_trainable(tr, tr->v, true);
    float *fm = malloc(sizeof(float) * (size_t)(fn + 1)), *fv = malloc(sizeof(float) * (size_t)(fn + 1));
    if (!s && (!lm || !lv || !fm || !fv)) s = lmc_err_set(err, LMC_ERR_OOM, "LoRA checkpoint: out of memory");
    if (!s) s = lmc_lora_tp_gather_flat(fm, full, lm, local, &t->full, t->c, err);
    if (!s) s = lmc_lora_tp_gather_flat(fv, full, lv, local, &t->full, t->c, err);
    if (!s && writer) s = lmc_lora_save(full, dir, &t->full, tok_dir, err);
    if (!s && writer) s = lmc_lora_ckpt_write_adamw(tr, fm, fv, fn, dir, epoch, next, err);
    free(lm), free(lv), free(fm), free(fv);
    return s;
}

struct cut_user {
    const struct lmc_lora *local, *full;
    const struct lmc_config *fc;
    int world, rank;
};

static void cut_moments(void *user, float *local, const float *whole) {
    const struct cut_user *u = user;
    lmc_lora_tp_cut_flat(local, u->local, whole, u->full, u->fc, u->world, u->rank);
}

lmc_status lmc_lora_tp_ckpt_load_state(struct lmc_trainer *tr, const struct lmc_lora *local,
                                       const struct lmc_lora *full, const char *dir, int64_t *epoch, int64_t *next,
                                       lmc_err *err) {
    const struct lmc_trainer_tp *t = tr->tp;
    struct cut_user u = {local, full, &t->full, t->c->world, t->c->rank};
    return lmc_lora_ckpt_load_state_cut(tr, dir, lmc_lora_tp_flat_numel(full), cut_moments, &u, epoch, next, err);
}
