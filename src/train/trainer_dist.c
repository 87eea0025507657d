/* trainer_dist.c — the trainer's data-parallel step (trainer.h,
 * lmc_trainer_dist_init): ZeRO stages 0-3 of src/dist/zero.h with one
 * zero unit per model part (embeddings, each layer, final norm + head).
 * The zero module owns parameters, gradients and AdamW moments; the
 * model's views point into its buffers, handed over part by part through
 * the model's hooks (model/backward.h lmc_tmodel_hooks): stages 0-2 bind
 * the parameters once (the module's full buffer), stages 0-1 the
 * gradients too; stage 2 binds a part's gradient buffer when its backward
 * starts and reduce-scatters it when it ends (on the accumulation's last
 * micro-step), stage 3 also gathers a part's parameters before each use
 * (prefetching the next part's) and frees them after. Each rank runs
 * forward and backward on its rows of the global micro-batch; the zero
 * module computes the global norm, runs AdamW on this rank's shard and
 * gathers the parameters. Another optimizer kind (--optim) runs with
 * stage 0 only and no moments in the zero module: its state replicated
 * (made again over the module's full buffers), each unit's gradient
 * all-reduced as its backward ends, then the same lmc_optim step on every
 * rank. --bucket-mb (o.bucket_bytes) groups consecutive parts into one
 * unit. Without arenas (o.init_src) each rank fills only its shard.
 * A batch source (o.next_batch, lmc finetune) runs replicated with stage 0
 * (lmc_trainer_step) and here with stages 1-3 (every rank draws the world's
 * batches; over a frozen base, LoRA, the zero module holds only the floats
 * past trainable_off and o.bind_part points the adapters at its buffers).
 * Under tensor parallelism (stages 2-3 over the DP groups) the norm is
 * weighted for the TP group's sum and no DP collective overlaps the TP
 * group's. Host backends with host communicators (tcp, mpi);
 * the CUDA backend with an nccl communicator (AdamW, ZeRO 0-3: the zero
 * module syncs the backend around its collectives; a batch source's
 * --zero 0 there runs as the zero module's stage 0, not replicated). */
#include "train/trainer_internal.h"
#include "train/trainer_tp.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/zero.h"
#include "io/safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct lmc_tdist {
    struct lmc_trainer *tr;
    struct lmc_tmodel_hooks hooks;
    int n_parts;              /* L + 2 */
    int *unit_of;             /* (n_parts) part -> zero unit; -1: an empty part */
    int64_t *unit_base;       /* (n_units) the unit's first float in the model's arena layout */
    int *first_part;          /* (n_units) its lowest part: the last of its backward */
    /* stage 3 with units of several parts (--bucket-mb): a unit's parameters
     * stay gathered while the next part read is its own */
    int *users;               /* (n_units) parts holding its parameters now */
    int *next_of;             /* (n_parts) get's `next` at the part's last get */
    uint64_t *seq, clock;     /* (n_parts) when each part was last got */
    bool last_micro;          /* this micro-step is the accumulation's last: reduce after it */
    float *ckpt_w;            /* rank 0, after lmc_trainer_dist_save: the parameters (host, arena layout) */
    float *ckpt_m, *ckpt_v;   /* rank 0, after lmc_trainer_dist_gather with moments: AdamW's (host, arena layout) */
    /* a frozen base (LoRA): the zero module holds the trainable floats
     * [zoff, numel) of the arena, the model keeps its arena for the base */
    int64_t zoff;
    /* tensor parallel (ZeRO 2-3 over the DP groups): each zero tensor's
     * weight in the squared norm the TP group sums (pads 0); NULL: none */
    double *zw;
    /* replicated (a batch source): each part's trainable gradient floats
     * [ar_lo, ar_hi) of the arena layout, all-reduced as its backward ends */
    int64_t *ar_lo, *ar_hi;   /* (n_parts) */
    struct lmc_comm_work **ar_work; /* (n_parts) */
    /* --zero 1 with another optimizer kind: tensor i is stepped by rank
     * owner[i] (whole tensors: Muon and GaLore need the matrix), which holds
     * its state and broadcasts the update; NULL: replicated */
    int *owner;               /* (n_params) */
    float **pw;               /* (n_params) each tensor's parameters in the zero module's buffers */
    int64_t saved[2];         /* steps of this rank's last two optimizer shard files (-1: none) */
};

void lmc_trainer_dist_free(struct lmc_trainer *tr) {
    if (tr->zero) lmc_zero_free(tr->zero);
    if (tr->dist) {
        free(tr->dist->unit_of);
        free(tr->dist->unit_base);
        free(tr->dist->first_part);
        free(tr->dist->users);
        free(tr->dist->next_of);
        free(tr->dist->seq);
        for (int p = 0; tr->dist->ar_work && p < tr->dist->n_parts; p++)
            if (tr->dist->ar_work[p]) tr->comm->wait(tr->comm, tr->dist->ar_work[p], NULL);
        free(tr->dist->ar_lo);
        free(tr->dist->ar_hi);
        free(tr->dist->ar_work);
        free(tr->dist->owner);
        free(tr->dist->pw);
        free(tr->dist->ckpt_w);
        free(tr->dist->ckpt_m);
        free(tr->dist->ckpt_v);
        free(tr->dist->zw);
        free(tr->dist);
    }
    if (tr->acts.hooks) tr->acts.hooks = NULL;
    free(tr->gbatch);
    tr->zero = NULL;
    tr->dist = NULL;
    tr->gbatch = NULL;
    tr->comm = NULL;
}

const float *lmc_trainer_dist_params(const struct lmc_trainer *tr) { return tr->dist ? tr->dist->ckpt_w : NULL; }

bool lmc_trainer_dist_moments(const struct lmc_trainer *tr, const float **m, const float **v) {
    *m = tr->dist ? tr->dist->ckpt_m : NULL;
    *v = tr->dist ? tr->dist->ckpt_v : NULL;
    return *m && *v;
}

/* Points part's views at w / g (floats of the arena layout from base): the
 * model's table, and the caller's views past a frozen base (LoRA's
 * adapters; the base's views stay on the model's arena). */
static void bind_views(struct lmc_trainer *tr, int part, const float *w, float *g, int64_t base) {
    if (!tr->tm.trainable_off) lmc_tmodel_bind_part(&tr->tm, part, w, g, base);
    if (tr->o.bind_part) tr->o.bind_part(tr->o.bind_user, &tr->tm, part, w, g, base);
}

/* The model's hooks: part -> its zero unit's buffers. */
static lmc_status hook_get(void *user, int part, unsigned what, int next, lmc_err *err) {
    struct lmc_tdist *d = user;
    struct lmc_trainer *tr = d->tr;
    int u = part < d->n_parts ? d->unit_of[part] : -1;
    if (u < 0) return LMC_OK;
    lmc_status s = LMC_OK;
    if ((what & LMC_TPART_PARAMS) && tr->zero_stage == 3) {
        float *p;
        /* (tensor parallel: no prefetch; the group's collectives and these share links under one lock) */
        if (!d->zw && next >= 0 && next < d->n_parts && d->unit_of[next] >= 0 && d->unit_of[next] != u)
            s = lmc_zero_unit_prefetch(tr->zero, d->unit_of[next], err);
        if (!s) s = lmc_zero_unit_params(tr->zero, u, &p, err);
        if (s) return s;
        d->users[u]++;
        d->next_of[part] = next;
        d->seq[part] = ++d->clock;
        bind_views(tr, part, p, NULL, d->unit_base[u]);
    }
    if ((what & LMC_TPART_GRADS) && tr->zero_stage >= 2) {
        float *g;
        if ((s = lmc_zero_unit_grads(tr->zero, u, &g, err))) return s;
        bind_views(tr, part, NULL, g, d->unit_base[u]);
    }
    return LMC_OK;
}

static lmc_status hook_put(void *user, int part, unsigned what, bool last, lmc_err *err) {
    struct lmc_tdist *d = user;
    int u = part < d->n_parts ? d->unit_of[part] : -1;
    if (u < 0) return LMC_OK;
    if ((what & LMC_TPART_PARAMS) && d->tr->zero_stage == 3) {
        /* kept when no other part holds them and the part read next is of this unit and not read since */
        int nx = d->next_of[part];
        bool again = nx >= 0 && nx < d->n_parts && d->unit_of[nx] == u && d->seq[nx] < d->seq[part];
        LMC_ASSERT(d->users[u] > 0);
        if (--d->users[u] == 0 && !again) lmc_zero_unit_release(d->tr->zero, u);
    }
    /* a unit's gradient is complete after its lowest part's backward */
    if ((what & LMC_TPART_GRADS) && last && d->last_micro && part == d->first_part[u]) {
        lmc_status s = lmc_zero_unit_grads_done(d->tr->zero, u, err);
        /* tensor parallel: reduced before the group's next collective (a sub-communicator's collectives
         * hold the shared links' lock: two of them at once on different ranks would wait on each other) */
        if (!s && d->zw) s = lmc_zero_wait(d->tr->zero, err);
        return s;
    }
    return LMC_OK;
}

static lmc_status global_loader(struct lmc_trainer *tr, lmc_err *err);

/* Replicated: nothing to bind; a part's gradient all-reduced once complete. */
static lmc_status ar_get(void *user, int part, unsigned what, int next, lmc_err *err) {
    (void)user, (void)part, (void)what, (void)next, (void)err;
    return LMC_OK;
}

static lmc_status ar_put(void *user, int part, unsigned what, bool last, lmc_err *err) {
    struct lmc_tdist *d = user;
    struct lmc_trainer *tr = d->tr;
    if (!(what & LMC_TPART_GRADS) || !last || !d->last_micro || part >= d->n_parts || d->ar_hi[part] <= d->ar_lo[part])
        return LMC_OK;
    LMC_ASSERT(!d->ar_work[part]);
    struct lmc_tmodel *tm = &tr->tm;
    return tr->comm->iall_reduce(tr->comm, tm->g + (d->ar_lo[part] - tm->g_off), d->ar_hi[part] - d->ar_lo[part],
                                 LMC_DTYPE_F32, LMC_REDUCE_SUM, &d->ar_work[part], err);
}

/* The parts' trainable ranges, when they are disjoint (else none: one
 * all-reduce after the micro-steps). */
static void replicated_parts(struct lmc_trainer *tr) {
    const struct lmc_tmodel *tm = &tr->tm;
    int np = (int)tm->cfg.num_layers + 2;
    struct lmc_tdist *d = calloc(1, sizeof *d);
    if (!d) return; /* no overlap, the same result */
    d->tr = tr;
    d->n_parts = np;
    d->ar_lo = malloc((size_t)np * sizeof *d->ar_lo);
    d->ar_hi = calloc((size_t)np, sizeof *d->ar_hi);
    d->ar_work = calloc((size_t)np, sizeof *d->ar_work);
    bool ok = d->ar_lo && d->ar_hi && d->ar_work;
    for (int p = 0; ok && p < np; p++) d->ar_lo[p] = INT64_MAX;
    for (int i = 0; ok && i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->frozen || p->external || p->off < tm->trainable_off) continue;
        if (p->part < 0 || p->part >= np) ok = false;
        else {
            d->ar_lo[p->part] = LMC_MIN(d->ar_lo[p->part], p->off);
            d->ar_hi[p->part] = LMC_MAX(d->ar_hi[p->part], p->off + p->numel);
        }
    }
    for (int a = 0; ok && a < np; a++) /* no two parts' ranges overlap */
        for (int b = a + 1; ok && b < np; b++)
            if (d->ar_hi[a] > d->ar_lo[a] && d->ar_hi[b] > d->ar_lo[b] && d->ar_lo[a] < d->ar_hi[b] &&
                d->ar_lo[b] < d->ar_hi[a])
                ok = false;
    if (!ok) {
        free(d->ar_lo), free(d->ar_hi), free(d->ar_work), free(d);
        return;
    }
    tr->dist = d;
    d->hooks = (struct lmc_tmodel_hooks){d, ar_get, ar_put};
    tr->acts.hooks = &d->hooks;
    int n = 0;
    for (int p = 0; p < np; p++) n += d->ar_hi[p] > d->ar_lo[p];
    lmc_dist_log(tr->comm, 1, "data parallel: %d parts' gradients each all-reduced as their backward ends", n);
}

void lmc_trainer_dist_micro(struct lmc_trainer *tr, int64_t k, int64_t accum) {
    if (tr->dist) tr->dist->last_micro = k == accum - 1;
}

lmc_status lmc_trainer_dist_reduce(struct lmc_trainer *tr, lmc_err *err) {
    struct lmc_tmodel *tm = &tr->tm;
    struct lmc_tdist *d = tr->dist;
    if (!d || !d->ar_work) {
        int64_t t0 = tm->trainable_off;
        return tr->comm->all_reduce(tr->comm, tm->g + (t0 - tm->g_off), tm->numel - t0, LMC_DTYPE_F32,
                                    LMC_REDUCE_SUM, err);
    }
    lmc_status s = LMC_OK;
    for (int p = 0; p < d->n_parts; p++) { /* every one waited for, even after a failure */
        struct lmc_comm_work *w = d->ar_work[p];
        d->ar_work[p] = NULL;
        lmc_err e;
        lmc_status sp = w ? tr->comm->wait(tr->comm, w, &e) : LMC_OK;
        if (sp && !s) s = sp, *err = e;
        if (!w && !sp && !s && d->ar_hi[p] > d->ar_lo[p])
            s = lmc_err_set(err, LMC_ERR_ARG, "data parallel: part %d's gradient was never reduced", p);
    }
    return s;
}

/* The zero module has copied the model's initial parameters [off, off+n):
 * their pages are dropped (the CPU backend's memory is host memory; the
 * arena is freed in hand_over), so set-up holds them and the sharded state
 * together one unit at a time only. */
static void drop_initial(void *user, int64_t off, int64_t n) {
    const float *w = user;
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = ((uintptr_t)(w + off) + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
    uintptr_t e = (uintptr_t)(w + off + n) / (uintptr_t)pg * (uintptr_t)pg;
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

static lmc_status src_fill(void *user, int64_t off, int64_t n, float *host, lmc_err *err) {
    return lmc_tmodel_src_fill(user, off, n, host, err);
}

/* The zero tensor list: the parameters in arena order, unit = their
 * part's (numbered over the non-empty parts), the padding before each
 * parameter a tensor of its own in that parameter's unit (zero, with zero
 * gradients). Fills d's maps. */
static lmc_status tensor_list(struct lmc_trainer *tr, struct lmc_tdist *d, struct lmc_zero_tensor *t, char (*pad)[32],
                              int *n_out, lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    int n = 0, unit = -1, part = -1;
    int64_t zoff = d->zoff, at = zoff; /* a frozen base before zoff stays the model's */
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (zoff && (p->frozen || p->external) && (p->external || p->off + p->numel <= zoff)) continue;
        if (p->external || p->frozen || p->off < at || p->part < part || p->part >= d->n_parts)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "parameter %s: frozen, kept outside the arena or out of "
                               "arena order (ZeRO trains every parameter of the arena)", p->name);
        if (p->part != part) { /* a new unit, unless the current one is under the bucket size */
            part = p->part;
            if (unit < 0 || (at - d->unit_base[unit]) * (int64_t)sizeof(float) >= tr->o.bucket_bytes) {
                d->unit_base[++unit] = at;
                d->first_part[unit] = part;
            }
            d->unit_of[part] = unit;
        }
        if (p->off > at) {
            snprintf(pad[i], sizeof pad[i], "pad.%d", i);
            if (d->zw) d->zw[n] = 0;
            t[n++] = (struct lmc_zero_tensor){pad[i], at - zoff, p->off - at, unit, false, 0, {0}};
        }
        if (d->zw) d->zw[n] = lmc_trainer_tp_norm_weight(tr, i);
        t[n++] = (struct lmc_zero_tensor){p->name, p->off - zoff, p->numel, unit, lmc_tparam_decays(p, tr->o.decay == LMC_DECAY_ALL),
                                          p->ndim, {p->shape[0], p->ndim == 2 ? p->shape[1] : 0}};
        at = p->off + p->numel;
    }
    if (tm->numel > at) { /* the arena's tail */
        snprintf(pad[tm->n_params], sizeof pad[tm->n_params], "pad.%d", tm->n_params);
        if (d->zw) d->zw[n] = 0;
        t[n++] = (struct lmc_zero_tensor){pad[tm->n_params], at - zoff, tm->numel - at, unit, false, 0, {0}};
    }
    *n_out = n;
    return LMC_OK;
}

/* Frees the model's parameter arena (the zero module holds the
 * parameters now) and binds the views that stay put: stages 0-2 the
 * parameters, stages 0-1 the gradients. */
static void hand_over(struct lmc_trainer *tr) {
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    struct lmc_tdist *d = tr->dist;
    if (tm->w && !d->zoff) { /* a frozen base stays (its floats past zoff are not read again) */
        be->free(be->ctx, tm->w);
        tm->w = NULL;
    }
    for (int part = 0; part < d->n_parts; part++) {
        int u = d->unit_of[part];
        if (u < 0) continue;
        float *p = NULL, *g = NULL;
        lmc_err e;
        if (tr->zero_stage <= 2) LMC_ASSERT(!lmc_zero_unit_params(tr->zero, u, &p, &e));
        if (tr->zero_stage <= 1) LMC_ASSERT(!lmc_zero_unit_grads(tr->zero, u, &g, &e));
        bind_views(tr, part, p, g, d->unit_base[u]);
    }
    d->hooks = (struct lmc_tmodel_hooks){d, hook_get, hook_put};
    tr->acts.hooks = &d->hooks;
}

/* The optimizer over the zero module's stage-0 buffers (the parameter
 * table's order; nothing frozen under ZeRO). Sharded (--zero 1): each
 * tensor whole to the least loaded rank so far (by elements, in table
 * order; ties to the lowest rank), and this rank's optimizer over its own
 * tensors only, so its state is about 1/N of the whole. */
static lmc_status optim_over_zero(struct lmc_trainer *tr, const struct lmc_optim_cfg *cfg, bool sharded,
                                  lmc_err *err) {
    struct lmc_tdist *d = tr->dist;
    const struct lmc_tmodel *tm = &tr->tm;
    int W = tr->comm->world, me = tr->comm->rank;
    struct lmc_optim_param *pp = calloc((size_t)tm->n_params, sizeof *pp);
    int64_t *load = calloc((size_t)W, sizeof *load);
    d->pw = calloc((size_t)tm->n_params, sizeof *d->pw);
    if (sharded) d->owner = calloc((size_t)tm->n_params, sizeof *d->owner);
    d->saved[0] = d->saved[1] = -1;
    lmc_status s = LMC_OK;
    if (!pp || !load || !d->pw || (sharded && !d->owner)) s = lmc_err_set(err, LMC_ERR_OOM, "optimizer parameter list: out of memory");
    int np = s ? 0 : lmc_trainer_optim_params(tm, tr->o.decay == LMC_DECAY_ALL, pp), mine = 0;
    LMC_ASSERT(s || np == tm->n_params);
    for (int i = 0; i < np && !s; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        int u = d->unit_of[p->part];
        float *w, *g;
        if (!(s = lmc_zero_unit_params(tr->zero, u, &w, err)) && !(s = lmc_zero_unit_grads(tr->zero, u, &g, err))) {
            pp[i].p = d->pw[i] = w + (p->off - d->unit_base[u]);
            pp[i].g = g + (p->off - d->unit_base[u]);
        }
        int o = 0;
        for (int r = 1; sharded && r < W; r++)
            if (load[r] < load[o]) o = r;
        if (sharded) {
            d->owner[i] = o;
            load[o] += p->numel;
        }
        if (!sharded || o == me) pp[mine++] = pp[i]; /* the list of this rank's tensors, in table order */
    }
    if (!s && mine == 0)
        s = lmc_err_set(err, LMC_ERR_ARG, "--zero 1 --optim %s: %d ranks for %d tensors (every rank must own one)",
                        lmc_optim_kind_name(cfg->kind), W, np);
    if (!s) s = lmc_optim_init(&tr->opt, cfg, tr->be, pp, mine, err);
    free(pp);
    free(load);
    return s;
}

int lmc_trainer_dist_optim_shards(const struct lmc_trainer *tr) {
    return tr->dist && tr->dist->owner && tr->have_opt ? tr->comm->world : 0;
}

/* This rank's optimizer shard file of `step` in zero_dir. */
static void optim_shard_path(char *buf, size_t cap, const char *zero_dir, int64_t step, int rank) {
    snprintf(buf, cap, "%s/optim-step%08lld-rank%05d.safetensors", zero_dir, (long long)step, rank);
}

/* tr->opt's state tensors found by name in any of the n images (each of
 * the optimizer's kind), all checked (dtype, size) before any is changed;
 * label names them in errors. */
static lmc_status load_optim_by_name(struct lmc_trainer *tr, const struct lmc_st *st, int n_st, const char *label,
                                     lmc_err *err) {
    struct lmc_optim *o = &tr->opt;
    const char *kind = lmc_optim_kind_name(o->cfg.kind);
    for (int r = 0; r < n_st; r++) {
        const char *k = lmc_st_meta_get(&st[r], "lmc.optimizer");
        if (!k || strcmp(k, kind))
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s: optimizer state of '%s', expected '%s'", label,
                               k ? k : "(none)", kind);
    }
    lmc_status s = LMC_OK;
    int n = lmc_optim_state_count(o);
    for (int pass = 0; pass < 2 && !s; pass++) /* check all, then upload */
        for (int k = 0; k < n && !s; k++) {
            struct lmc_optim_state_tensor t;
            lmc_optim_state_get(o, k, &t);
            const struct lmc_st_tensor *f = NULL;
            for (int r = 0; r < n_st && !f; r++) f = lmc_st_find(&st[r], t.name);
            if (!f || f->dtype != t.dtype || f->numel != t.numel)
                s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor %s: expected %s of %lld elements%s", label, t.name,
                                lmc_dtype_name(t.dtype), (long long)t.numel, f ? "" : " (missing)");
            else if (pass == 1)
                o->be->upload(o->be->ctx, t.data, f->data, f->nbytes);
        }
    if (!s) o->be->sync(o->be->ctx);
    return s;
}

lmc_status lmc_trainer_dist_load_optim_whole(struct lmc_trainer *tr, const struct lmc_st *st, const char *path,
                                             lmc_err *err) {
    return load_optim_by_name(tr, st, 1, path, err);
}

/* Another world's shards: each state tensor from whichever file holds it. */
static lmc_status load_optim_regroup(struct lmc_trainer *tr, const char *zero_dir, int64_t step, int world,
                                     lmc_err *err) {
    struct lmc_st *st = calloc((size_t)world, sizeof *st);
    char path[4200], label[4300];
    lmc_status s = st ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "optimizer shards: out of memory");
    int opened = 0;
    for (int r = 0; r < world && !s; r++) {
        optim_shard_path(path, sizeof path, zero_dir, step, r);
        if (!(s = lmc_st_open_file(&st[r], path, err))) opened++;
    }
    snprintf(label, sizeof label, "%s/optim-step%08lld-rank*.safetensors", zero_dir, (long long)step);
    if (!s) s = load_optim_by_name(tr, st, world, label, err);
    for (int r = 0; r < opened; r++) lmc_st_free(&st[r]);
    free(st);
    return s;
}

lmc_status lmc_trainer_load_optim_shards(struct lmc_trainer *tr, const char *zero_dir, int64_t step, int world,
                                         lmc_err *err) {
    if (world < 1 || world > (1 << 16))
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: %d optimizer shards", zero_dir, world);
    lmc_status s;
    if (lmc_trainer_dist_optim_shards(tr) == world) { /* the same ranks: this rank's own file */
        char path[4200];
        optim_shard_path(path, sizeof path, zero_dir, step, tr->comm->rank);
        s = lmc_optim_load(&tr->opt, path, err);
    } else {
        s = load_optim_regroup(tr, zero_dir, step, world, err);
    }
    if (!s && tr->dist && tr->dist->owner) tr->dist->saved[1] = step; /* the newest: kept through the next save */
    return s;
}

lmc_status lmc_trainer_dist_init(struct lmc_trainer *tr, struct lmc_comm *comm, int stage, const char *desc,
                                 lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    if (stage < 0 || stage > 3) return lmc_err_set(err, LMC_ERR_ARG, "--zero %d: expected 0, 1, 2 or 3", stage);
    if (tr->have_opt && stage > 1)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--zero %d shards AdamW only (the zero module's optimizer); "
                           "--optim %s runs with --zero 0 (replicated state) or 1 (its state sharded by whole "
                           "tensors)", stage, lmc_optim_kind_name(tr->opt.cfg.kind));
    if (tr->have_opt && stage == 1 &&
        (tr->opt.cfg.kind == LMC_OPTIM_APOLLO || tr->opt.cfg.kind == LMC_OPTIM_APOLLO_MINI))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--zero 1 --optim %s: APOLLO's projections are seeded by each "
                           "tensor's index in the whole list; it runs with --zero 0",
                           lmc_optim_kind_name(tr->opt.cfg.kind));
    if (comm->world > 1 && comm->device_buffers == tr->be->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "data-parallel training: the %s communicator works on %s "
                           "memory, the %s backend's is %s (GPUs: an nccl communicator)", comm->name,
                           comm->device_buffers ? "device" : "host", tr->be->name,
                           tr->be->host_memory ? "host" : "device");
    if (!tr->be->host_memory && tr->have_opt)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "data-parallel --optim %s on the %s backend: AdamW only (the "
                           "zero module's optimizer)", lmc_optim_kind_name(tr->opt.cfg.kind), tr->be->name);
    /* a device communicator cannot compare texts: the caller checked on its host communicator */
    lmc_status s = comm->device_buffers ? LMC_OK : lmc_dist_check_same(comm, "training configuration", desc, err);
    if (s) return s;
    if (!tm->w && (tr->o.next_batch || tr->have_opt)) { /* replicated with deferred arenas: the whole model */
        if (!tr->o.init_src) return lmc_err_set(err, LMC_ERR_ARG, "the model has no parameter arena and no source");
        if ((s = lmc_tmodel_fill(&tr->tm, tr->o.init_src, err))) return s;
    }
    /* a batch source (lmc finetune), --zero 0 on a host backend: replicated, lmc_trainer_step (a device
     * backend: the zero module's stage 0, which syncs the backend around its collectives) */
    if (tr->o.next_batch && stage == 0 && tr->be->host_memory) {
        tr->comm = comm;
        tr->zero_stage = 0;
        tr->comm = comm; /* (replicated_parts logs through it) */
        if (comm->world > 1) replicated_parts(tr);
        return LMC_OK;
    }
    int64_t zoff = tm->trainable_off; /* a frozen base (LoRA): the zero module takes what follows it */
    if (zoff && tr->have_opt)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--zero %d over a frozen base (LoRA) shards AdamW's state; "
                           "--optim %s runs with --zero 0 (the adapter's state replicated)", stage,
                           lmc_optim_kind_name(tr->opt.cfg.kind));
    if (tr->tp && (s = lmc_trainer_tp_zero_check(tr, stage, err))) return s;
    if (tr->tp && tr->have_opt)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--tp --zero %d shards AdamW only (--optim %s runs with --zero 0)",
                           stage, lmc_optim_kind_name(tr->opt.cfg.kind));
    if (zoff && (!tr->o.bind_part || !tm->w))
        return lmc_err_set(err, LMC_ERR_ARG, "ZeRO over a frozen base needs its parameter arena and the "
                           "adapters' binding (lmc_train_opts.bind_part)");
    if (tm->g) { /* the gradients and moments will be the zero module's: freed before it allocates */
        tr->be->free(tr->be->ctx, tr->tm.g);
        tr->tm.g = NULL;
    }
    if (tr->m) tr->be->free(tr->be->ctx, tr->m);
    if (tr->v) tr->be->free(tr->be->ctx, tr->v);
    tr->m = tr->v = NULL;
    /* another optimizer kind: its state replicated, made again over the zero module's full buffers
     * (stage 0: the gradients all-reduced per unit as the backward ends, then the same step everywhere) */
    struct lmc_optim_cfg ocfg;
    if (tr->have_opt) {
        ocfg = tr->opt.cfg;
        lmc_optim_free(&tr->opt);
        tr->have_opt = false;
    }
    bool ext_opt = tr->o.optim.kind != LMC_OPTIM_ADAMW;
    struct lmc_tdist *d = calloc(1, sizeof *d);
    int np = (int)tm->cfg.num_layers + 2;
    struct lmc_zero_tensor *t = calloc((size_t)tm->n_params * 2 + 1, sizeof *t);
    char (*pad)[32] = calloc((size_t)tm->n_params + 1, sizeof *pad);
    if (d) {
        d->tr = tr;
        d->n_parts = np;
        d->zoff = zoff;
        d->unit_of = malloc((size_t)np * sizeof *d->unit_of);
        d->unit_base = calloc((size_t)np, sizeof *d->unit_base);
        d->first_part = calloc((size_t)np, sizeof *d->first_part);
        d->users = calloc((size_t)np, sizeof *d->users);
        d->next_of = calloc((size_t)np, sizeof *d->next_of);
        d->seq = calloc((size_t)np, sizeof *d->seq);
        if (tr->tp) d->zw = calloc((size_t)tm->n_params * 2 + 1, sizeof *d->zw);
    }
    tr->dist = d;
    if (!d || !t || !pad || !d->unit_of || !d->unit_base || !d->first_part || !d->users || !d->next_of || !d->seq ||
        (tr->tp && !d->zw)) {
        s = lmc_err_set(err, LMC_ERR_OOM, "zero tensor list: out of memory");
        goto done;
    }
    for (int i = 0; i < np; i++) d->unit_of[i] = -1;
    int n = 0;
    if ((s = tensor_list(tr, d, t, pad, &n, err))) goto done;
    struct lmc_zero_cfg zc = {.stage = ext_opt ? 0 : stage, .tensors = t, .n_tensors = n, .released = drop_initial,
                              .user = tr->tm.w}; /* a failure loses the model's weights */
    if (!tr->be->host_memory || zoff) zc.released = NULL; /* device memory: freed whole in hand_over; a frozen base kept */
    if (!tm->w) { /* no arenas: each rank fills only what it keeps from the source */
        zc.released = NULL;
        zc.fill = src_fill;
        zc.fill_user = tr->o.init_src;
    }
    zc.no_moments = ext_opt;
    if ((s = lmc_zero_init(&tr->zero, &zc, comm, (struct lmc_backend *)tr->be, tm->w ? tm->w + zoff : NULL, err))) {
        tr->zero = NULL;
        goto done;
    }
    lmc_zero_keep_all_steps(tr->zero, true); /* every checkpoint folder's step stays resumable */
    tr->comm = comm;
    tr->zero_stage = stage;
    tr->o.init_src = NULL; /* the caller's; not read again */
    if (tr->o.bucket_bytes > 0)
        lmc_dist_log(comm, 1, "ZeRO buckets: %d model parts in %d units of >= %.3g MiB (or the rest)", np,
                     lmc_zero_n_units(tr->zero), (double)tr->o.bucket_bytes / 1048576.0);
    hand_over(tr);
    if (ext_opt && !(s = optim_over_zero(tr, &ocfg, stage == 1 && comm->world > 1, err))) tr->have_opt = true;
    if (!s && !tr->o.next_batch) s = global_loader(tr, err); /* a batch source: every rank draws the world's */
done:
    free(t);
    free(pad);
    if (s) lmc_trainer_dist_free(tr);
    return s;
}

/* the loader reads global micro-batches: world x B rows */
static lmc_status global_loader(struct lmc_trainer *tr, lmc_err *err) {
    lmc_status s = LMC_OK;
    int64_t gB = (int64_t)tr->comm->world * tr->o.B;
    free(tr->gbatch); /* (tensor parallel's, when ZeRO follows its attach) */
    tr->gbatch = malloc((size_t)(gB * (tr->o.T + 1)) * sizeof(int32_t));
    if (!tr->gbatch) s = lmc_err_set(err, LMC_ERR_OOM, "global batch: out of memory");
    int64_t ep = tr->train.epoch, ix = tr->train.index;
    if (!s) {
        lmc_loader_free(&tr->train);
        memset(&tr->train, 0, sizeof tr->train);
        s = lmc_loader_init(&tr->train, tr->train_data, gB, tr->o.T, tr->o.seed, true, err);
    }
    if (!s) s = lmc_loader_seek(&tr->train, ep, ix, err);
    if (s) lmc_trainer_dist_free(tr);
    return s;
}

lmc_status lmc_trainer_dist_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    int world = tr->comm->world, rank = tr->comm->rank;
    memset(st, 0, sizeof *st);
    if (tr->dist) { /* the last checkpoint's host copies */
        free(tr->dist->ckpt_w);
        free(tr->dist->ckpt_m);
        free(tr->dist->ckpt_v);
        tr->dist->ckpt_w = tr->dist->ckpt_m = tr->dist->ckpt_v = NULL;
    } else {
        lmc_tmodel_zero_grad(tm);
    }
    int64_t per = o->B * o->T, row = o->T + 1;
    /* a batch source (lmc finetune): gradients of the summed loss, 1 / the
     * global count in the update; every rank draws the world's batches of
     * each micro-step and trains on its own (as the replicated step does) */
    bool feed = o->next_batch != NULL;
    float dscale = feed ? 1.0f : (float)(1.0 / ((double)per * (double)world * (double)o->accum));
    double sums[2] = {0, 0}; /* loss sum, token count */
    lmc_status s = LMC_OK;
    for (int64_t k = 0; k < o->accum; k++) {
        if (feed) {
            for (int j = 0; j <= rank; j++) /* later ranks' batches: drawn after this rank's step */
                if ((s = o->next_batch(o->batch_user, tr->in, tr->tg, &tr->acts.segs, &tr->acts.n_segs, err)))
                    return s;
        } else {
            lmc_loader_next(&tr->train, tr->gbatch);
            memcpy(tr->batch, tr->gbatch + (int64_t)rank * o->B * row, (size_t)(o->B * row) * sizeof(int32_t));
            lmc_trainer_split_batch(tr);
        }
        if (tr->dist) tr->dist->last_micro = k == o->accum - 1; /* the hooks reduce after the last */
        double ls;
        int64_t cnt;
        if ((s = lmc_tmodel_step(tm, be, &tr->acts, tr->in, tr->tg, true, dscale, &ls, &cnt, err))) return s;
        if (tr->tp && (s = lmc_trainer_tp_micro_check(tr, err))) return s; /* the TP group's collectives */
        lmc_trainer_moe_add(tr, st, k, o->accum);
        sums[0] += ls;
        sums[1] += (double)cnt;
        for (int j = rank + 1; feed && j < world; j++) /* the rest of the global micro-batch */
            if ((s = o->next_batch(o->batch_user, tr->in, tr->tg, &tr->acts.segs, &tr->acts.n_segs, err))) return s;
    }
    st->tokens = per * world * o->accum;
    st->lr = lmc_schedule_lr(&o->sched, tr->step);
    /* every part's reduction was started by the hooks during the backward */
    if (tr->dist->zw) { /* tensor parallel: the DP-reduced shard's weighted squares, summed over the TP group */
        double ss = 0;
        if ((s = lmc_zero_grad_sumsq_weighted(tr->zero, tr->dist->zw, &ss, err)) ||
            (s = lmc_trainer_tp_group_sum(tr, &ss, err)))
            return s;
        st->grad_norm = sqrt(ss);
    } else if ((s = lmc_zero_grad_norm(tr->zero, &st->grad_norm, err))) {
        return s;
    }
    if ((s = lmc_zero_sum_f64(tr->zero, sums, 2, err))) return s;
    st->loss = sums[0] / (sums[1] > 0 ? sums[1] : 1);
    double inv = 1.0; /* a batch source: the norm and the update of the mean over the counted targets */
    if (feed) {
        inv = 1.0 / (double)((int64_t)sums[1] ? (int64_t)sums[1] : 1);
        st->grad_norm *= inv;
    }
    if (!isfinite(st->grad_norm)) { /* the same on every rank */
        lmc_zero_grads_clear(tr->zero);
        st->skipped = true;
        tr->step++;
        return LMC_OK;
    }
    float grad_scale = (float)(lmc_grad_clip_scale(st->grad_norm, o->clip) * inv);
    if (tr->have_opt) { /* another kind: the same step on every rank's full buffers, or each rank its own tensors */
        lmc_optim_step(&tr->opt, st->lr, tr->step + 1, grad_scale);
        struct lmc_tdist *d = tr->dist;
        if (d->owner) { /* every tensor's update from its owner to the others */
            if (tr->comm->device_buffers) be->sync(be->ctx);
            for (int i = 0; i < tm->n_params && !s; i++)
                s = tr->comm->broadcast(tr->comm, d->pw[i], (size_t)tm->params[i].numel * sizeof(float), d->owner[i],
                                        err);
            if (s) return s;
        }
        lmc_zero_grads_clear(tr->zero);
        tr->step++;
        return LMC_OK;
    }
    struct lmc_adamw_step sd, sn;
    lmc_adamw_step_make(&o->adamw, tr->step + 1, st->lr, true, grad_scale, &sd);
    lmc_adamw_step_make(&o->adamw, tr->step + 1, st->lr, false, grad_scale, &sn);
    if ((s = lmc_zero_apply(tr->zero, &sd, &sn, err))) return s;
    tr->step++;
    return LMC_OK;
}

lmc_status lmc_trainer_dist_save(struct lmc_trainer *tr, const char *zero_dir, lmc_err *err) {
    if (!tr->zero) return LMC_OK; /* replicated: rank 0's checkpoint holds the whole state */
    /* another optimizer kind: its (replicated) state goes in rank 0's checkpoint folder; sharded,
     * each rank's in zero_dir (this step's and the one before kept: the newest checkpoint folder's
     * are there whatever happens to this save) */
    lmc_status s = LMC_OK;
    struct lmc_tdist *dd = tr->dist;
    if (!tr->have_opt) s = lmc_zero_save(tr->zero, zero_dir, tr->step, err);
    else if (dd->owner && dd->saved[1] != tr->step) {
        char path[4200];
        if (mkdir(zero_dir, 0755) && errno != EEXIST)
            return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create the checkpoint folder: %s", zero_dir, strerror(errno));
        optim_shard_path(path, sizeof path, zero_dir, tr->step, tr->comm->rank);
        if ((s = lmc_optim_save(&tr->opt, path, err))) return s;
        if (dd->saved[0] >= 0) {
            optim_shard_path(path, sizeof path, zero_dir, dd->saved[0], tr->comm->rank);
            unlink(path);
        } else if (dd->saved[1] >= 0) { /* the first save after a resume: this rank's files before its step */
            DIR *dir = opendir(zero_dir);
            struct dirent *e;
            while (dir && (e = readdir(dir))) {
                long long st;
                int rk, n = 0;
                if (sscanf(e->d_name, "optim-step%lld-rank%d.safetensors%n", &st, &rk, &n) == 2 && n > 0 &&
                    !e->d_name[n] && rk == tr->comm->rank && st < dd->saved[1]) {
                    optim_shard_path(path, sizeof path, zero_dir, st, rk);
                    unlink(path);
                }
            }
            if (dir) closedir(dir);
        }
        dd->saved[0] = dd->saved[1];
        dd->saved[1] = tr->step;
    }
    if (s) return s;
    return lmc_trainer_dist_gather(tr, false, err);
}

lmc_status lmc_trainer_dist_gather(struct lmc_trainer *tr, bool with_moments, lmc_err *err) {
    if (!tr->zero) return LMC_OK;
    lmc_status s = LMC_OK;
    /* the parameters for rank 0's checkpoint folder, unit by unit (stage 3 gathers: every rank takes part) */
    struct lmc_tdist *d = tr->dist;
    bool root = tr->comm->rank == 0;
    const struct lmc_backend *be = tr->be;
    int64_t zoff = d->zoff, zn = tr->tm.numel - zoff;
    free(d->ckpt_w);
    free(d->ckpt_m);
    free(d->ckpt_v);
    d->ckpt_w = d->ckpt_m = d->ckpt_v = NULL;
    /* a frozen base: the trainable floats back into rank 0's arena (a unit at a time through the host) */
    float *host = NULL;
    if (root) {
        int64_t cap = zoff ? 1 : zn;
        for (int u = 0; zoff && u < lmc_zero_n_units(tr->zero); u++) {
            int64_t off, n;
            lmc_zero_unit_range(tr->zero, u, &off, &n);
            cap = LMC_MAX(cap, n);
        }
        if (!(host = calloc((size_t)cap, sizeof(float))))
            return lmc_err_set(err, LMC_ERR_OOM, "checkpoint parameters: out of memory");
    }
    if (!zoff) d->ckpt_w = host;
    for (int u = 0; u < lmc_zero_n_units(tr->zero) && !s; u++) {
        int64_t off, n;
        float *p;
        lmc_zero_unit_range(tr->zero, u, &off, &n);
        if ((s = lmc_zero_unit_params(tr->zero, u, &p, err))) break;
        if (root && !zoff) be->download(be->ctx, d->ckpt_w + off, p, (size_t)n * sizeof(float));
        if (root && zoff) {
            be->download(be->ctx, host, p, (size_t)n * sizeof(float));
            be->upload(be->ctx, tr->tm.w + zoff + off, host, (size_t)n * sizeof(float));
            be->sync(be->ctx);
        }
        lmc_zero_unit_release(tr->zero, u);
    }
    if (zoff) free(host);
    if (!s && with_moments) { /* every rank takes part; rank 0 keeps them */
        float *m = malloc((size_t)zn * sizeof(float)), *v = malloc((size_t)zn * sizeof(float));
        s = m && v ? lmc_zero_moments_to_host(tr->zero, m, v, err)
                   : lmc_err_set(err, LMC_ERR_OOM, "checkpoint moments: out of memory");
        if (!s && root) {
            d->ckpt_m = m;
            d->ckpt_v = v;
        } else {
            free(m);
            free(v);
        }
    }
    if (zoff) return s;
    /* on-disk layouts (lmc_ckpt_save writes them as they are) */
    for (int i = 0; root && !s && i < tr->tm.n_params; i++) {
        const struct lmc_tparam *p = &tr->tm.params[i];
        if (!p->transposed) continue;
        float *tmp = malloc((size_t)p->numel * sizeof(float));
        if (!tmp) return lmc_err_set(err, LMC_ERR_OOM, "checkpoint parameters: out of memory");
        lmc_tmodel_transpose(p, tmp, d->ckpt_w + p->off, true); /* host to host, whatever the backend */
        memcpy(d->ckpt_w + p->off, tmp, (size_t)p->numel * sizeof(float));
        free(tmp);
    }
    return s;
}

lmc_status lmc_trainer_dist_load(struct lmc_trainer *tr, const char *zero_dir, int64_t step, lmc_err *err) {
    int64_t got = -1;
    lmc_status s = lmc_zero_load_step(tr->zero, zero_dir, step, &got, err);
    if (s) return s;
    if (got != step)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: the sharded optimizer state is of step %lld, the checkpoint of "
                           "step %lld (its shards are gone: saved before every step's were kept, only the newest is there)",
                           zero_dir, (long long)got, (long long)step);
    return LMC_OK; /* the model's views point into the zero module's buffers */
}
