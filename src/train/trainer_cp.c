/* trainer_cp.c — the trainer's context-parallel step and evaluation (see
 * trainer_cp.h): each micro-batch's B sequences cut to this rank's zigzag
 * slice (ids, targets, global positions), one lmc_tmodel_step with the
 * attention around the ring, the gradient and the loss sums all-reduced
 * over every rank, then the one-process norm, clipping and update. */
#include "train/trainer_cp.h"
#include "train/trainer_pp.h"
#include "train/trainer_tp.h"
#include "train/trainer_internal.h"
#include "train/trainer_step.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/ring_attn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lmc_trainer_cp {
    struct lmc_comm *world;     /* every rank (C x D) */
    struct lmc_cp_group g;      /* the ring: g.c, the C ranks of this rank's group */
    int dw, dr;                 /* data-parallel groups, this rank's */
    int64_t n;                  /* tokens of a sequence this rank holds */
    int64_t *pos;               /* (n) their global positions */
    int32_t *in, *tg;           /* (B n) this rank's slice of the micro-batch */
};

int64_t lmc_trainer_cp_local_tokens(const struct lmc_trainer *tr) { return tr->cp ? tr->cp->n : tr->o.T; }

void lmc_trainer_cp_free(struct lmc_trainer *tr) {
    struct lmc_trainer_cp *c = tr->cp;
    if (!c) return;
    free(c->pos), free(c->in), free(c->tg);
    free(c);
    tr->cp = NULL;
}

lmc_status lmc_trainer_cp_refuse(const struct lmc_trainer *tr, lmc_err *err) {
    const struct lmc_config *c = &tr->tm.cfg;
    const char *why = NULL;
    if (c->num_experts > 0) why = "mixture-of-experts layers (the load-balancing loss needs whole sequences)";
    else if (!strncmp(c->model_type, "mamba", 5)) why = "recurrent (Mamba) layers";
    else if (c->sliding_window > 0) why = "sliding-window attention";
    else if (c->rope.type == LMC_ROPE_DYNAMIC) why = "dynamic rope scaling (it depends on the sequence length)";
    else if (tr->tp && tr->tp->zero) why = "--zero 1 with --tp at the same time";
    else if (tr->zero || (tr->comm && !tr->tp)) why = "ZeRO / the data-parallel trainer (--cp runs its own data parallelism)";
    else if (!tr->be->host_memory && !tr->be->attn_block_fwd)
        why = "this device backend (it has no ring-attention block ops)";
    if (!why) return LMC_OK;
    return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--cp (context parallel) does not support %s yet (model %s)", why,
                       c->model_type);
}

lmc_status lmc_trainer_cp_attach(struct lmc_trainer *tr, struct lmc_comm *world, struct lmc_comm *cp,
                                 const char *desc, lmc_err *err) {
    lmc_status s = lmc_trainer_cp_refuse(tr, err);
    if (s) return s;
    if (cp->world < 1 || world->world % cp->world)
        return lmc_err_set(err, LMC_ERR_ARG, "--cp %d: the %d ranks are not a multiple of it", cp->world, world->world);
    int64_t B = tr->o.B, T = tr->o.T;
    if (T < 2 * (int64_t)cp->world)
        return lmc_err_set(err, LMC_ERR_ARG, "--cp %d cuts each sequence into %d chunks: --seq %lld is too short",
                           cp->world, 2 * cp->world, (long long)T);
    if ((s = lmc_dist_check_same(world, "context-parallel training configuration", desc, err))) return s;
    struct lmc_trainer_cp *c = calloc(1, sizeof *c);
    if (!c) return lmc_err_set(err, LMC_ERR_OOM, "context parallel: out of memory");
    tr->cp = c;
    c->world = world;
    c->g = (struct lmc_cp_group){cp, T, LMC_OK, {0}};
    c->dw = world->world / cp->world;
    c->dr = world->rank / cp->world;
    c->n = lmc_ring_attn_zigzag(T, cp->rank, cp->world, NULL);
    c->pos = malloc(sizeof(int64_t) * (size_t)c->n);
    c->in = malloc(sizeof(int32_t) * (size_t)(B * c->n));
    c->tg = malloc(sizeof(int32_t) * (size_t)(B * c->n));
    int32_t *p32 = malloc(sizeof(int32_t) * (size_t)(B * c->n));
    if (!c->pos || !c->in || !c->tg || !p32) {
        free(p32);
        return lmc_err_set(err, LMC_ERR_OOM, "context parallel: out of memory");
    }
    lmc_ring_attn_zigzag(T, cp->rank, cp->world, c->pos);
    /* the activations of this rank's slice, its global positions in them */
    lmc_tacts_free(&tr->acts);
    memset(&tr->acts, 0, sizeof tr->acts);
    if ((s = lmc_tacts_init(&tr->acts, &tr->tm, tr->be, B, c->n, tr->o.recompute, err))) {
        free(p32);
        return s;
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < c->n; i++) p32[b * c->n + i] = (int32_t)c->pos[i];
    tr->be->upload(tr->be->ctx, tr->acts.pos, p32, sizeof(int32_t) * (size_t)(B * c->n));
    free(p32);
    tr->acts.cp = &c->g;
    /* the loader reads global micro-batches of D x B rows (as one process with batch D x B); a
     * tensor-parallel trainer's loader was made for all C x D ranks of its data-parallel side */
    if (tr->o.next_batch || (c->dw <= 1 && !tr->tp)) return LMC_OK;
    int64_t gB = (int64_t)c->dw * B;
    free(tr->gbatch);
    tr->gbatch = NULL;
    if (c->dw > 1 && !(tr->gbatch = malloc((size_t)(gB * (T + 1)) * sizeof(int32_t))))
        return lmc_err_set(err, LMC_ERR_OOM, "global batch: out of memory");
    int64_t ep = tr->train.epoch, ix = tr->train.index;
    lmc_loader_free(&tr->train);
    memset(&tr->train, 0, sizeof tr->train);
    if ((s = lmc_loader_init(&tr->train, tr->train_data, gB, T, tr->o.seed, true, err))) return s;
    return lmc_loader_seek(&tr->train, ep, ix, err);
}

/* in/tg (B, T) -> this rank's zigzag slice */
static void slice(struct lmc_trainer *tr, const int32_t *in, const int32_t *tg) {
    struct lmc_trainer_cp *c = tr->cp;
    int64_t T = tr->o.T;
    for (int64_t b = 0; b < tr->o.B; b++)
        for (int64_t i = 0; i < c->n; i++) {
            c->in[b * c->n + i] = in[b * T + c->pos[i]];
            c->tg[b * c->n + i] = tg[b * T + c->pos[i]];
        }
}

/* The next micro-batch of DP rank c->dr into tr->in/tg (B, T): from the
 * batch source (every group draws all D batches, keeps its own) or the
 * loader (rows [dr B, (dr+1) B) of the global micro-batch). */
static lmc_status next(struct lmc_trainer *tr, lmc_err *err) {
    return lmc_trainer_next_micro(tr, tr->cp->dw, tr->cp->dr, tr->in, tr->tg, "--cp", true, err);
}

static lmc_status ring_status(struct lmc_trainer_cp *c, lmc_err *err) {
    lmc_status s = c->g.st;
    if (s) {
        if (err) *err = c->g.err;
        c->g.st = LMC_OK;
    }
    return s;
}

/* The gradient (n floats of backend memory) summed over every rank: in
 * place on host memory, through a host copy on a device backend (the
 * communicator moves host buffers). */
static lmc_status grad_sum(struct lmc_trainer *tr, float *g, int64_t n, lmc_err *err) {
    struct lmc_comm *w = tr->cp->world;
    const struct lmc_backend *be = tr->be;
    if (be->host_memory) return w->all_reduce(w, g, n, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!h) return lmc_err_set(err, LMC_ERR_OOM, "context parallel: gradient host copy: out of memory");
    be->download(be->ctx, h, g, sizeof(float) * (size_t)n);
    lmc_status s = w->all_reduce(w, h, n, LMC_DTYPE_F32, LMC_REDUCE_SUM, err);
    if (!s) be->upload(be->ctx, g, h, sizeof(float) * (size_t)n);
    be->sync(be->ctx);
    free(h);
    return s;
}

lmc_status lmc_trainer_cp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    struct lmc_trainer_cp *c = tr->cp;
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    memset(st, 0, sizeof *st);
    lmc_tmodel_zero_grad(tm);
    int64_t per = o->B * o->T;
    /* token data: the mean over the global batch's tokens; a batch source:
     * the summed loss, 1/count in the update (as lmc_trainer_step) */
    float dscale = o->next_batch ? 1.0f : (float)(1.0 / ((double)per * (double)c->dw * (double)o->accum));
    double sc[2] = {0, 0};
    lmc_status s;
    for (int64_t k = 0; k < o->accum; k++) {
        if ((s = next(tr, err))) return s;
        slice(tr, tr->in, tr->tg);
        double ls;
        int64_t n;
        tr->acts.segs = NULL;
        tr->acts.n_segs = 0;
        s = lmc_tmodel_step(tm, be, &tr->acts, c->in, c->tg, true, dscale, &ls, &n, err);
        if (!s) s = ring_status(c, err);
        if (s) return s;
        sc[0] += ls;
        sc[1] += (double)n;
    }
    /* the slices' and the groups' gradients and losses summed: every rank the same bits */
    int64_t t0 = tm->trainable_off;
    if ((s = grad_sum(tr, tm->g + (t0 - tm->g_off), tm->numel - t0, err)) ||
        (s = c->world->all_reduce(c->world, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)))
        return s;
    st->loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    st->tokens = per * o->accum * c->dw;
    st->grad_norm = sqrt(be->sumsq(be->ctx, tm->g + (t0 - tm->g_off), tm->numel - t0));
    lmc_trainer_apply_update(tr, st, sc[1]);
    return LMC_OK;
}

/* a validation micro-batch: this rank's slice around the ring */
static lmc_status eval_micro(struct lmc_trainer *tr, double *loss_sum, int64_t *count, lmc_err *err) {
    struct lmc_trainer_cp *c = tr->cp;
    slice(tr, tr->in, tr->tg);
    lmc_status s = lmc_tmodel_step(&tr->tm, tr->be, &tr->acts, c->in, c->tg, false, 1.0f, loss_sum, count, err);
    return s ? s : ring_status(c, err);
}

lmc_status lmc_trainer_cp_eval(struct lmc_trainer *tr, double *loss, lmc_err *err) {
    struct lmc_trainer_cp *c = tr->cp;
    *loss = NAN;
    if (!tr->val_data || tr->o.eval_batches <= 0) return LMC_OK;
    /* the windows one process with batch D x B reads, each DP group every D-th */
    double sc[2];
    lmc_status s = lmc_trainer_eval_sums(tr, c->dw, c->dw, c->dr, eval_micro, sc, err);
    if (!s) s = c->world->all_reduce(c->world, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    if (s) return s;
    *loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    return LMC_OK;
}

lmc_status lmc_trainer_loss(struct lmc_trainer *tr, const int32_t *in, const int32_t *tg, double *loss_sum,
                            int64_t *count, lmc_err *err) {
    struct lmc_trainer_cp *c = tr->cp;
    if (lmc_trainer_pp_parts(tr)) return lmc_trainer_pp_loss(tr, in, tg, loss_sum, count, err); /* through the stages */
    tr->acts.segs = NULL;
    tr->acts.n_segs = 0;
    if (!c) return lmc_tmodel_step(&tr->tm, tr->be, &tr->acts, in, tg, false, 1.0f, loss_sum, count, err);
    slice(tr, in, tg);
    lmc_status s = lmc_tmodel_step(&tr->tm, tr->be, &tr->acts, c->in, c->tg, false, 1.0f, loss_sum, count, err);
    if (!s) s = ring_status(c, err);
    double sc[2] = {*loss_sum, (double)*count};
    if (!s) s = c->g.c->all_reduce(c->g.c, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    *loss_sum = sc[0];
    *count = (int64_t)sc[1];
    return s;
}

lmc_status lmc_trainer_cp_micro(struct lmc_trainer *tr, const int32_t **in, const int32_t **tg, lmc_err *err) {
    lmc_status s = next(tr, err);
    if (s) return s;
    slice(tr, tr->in, tr->tg);
    tr->acts.segs = NULL;
    tr->acts.n_segs = 0;
    *in = tr->cp->in, *tg = tr->cp->tg;
    return LMC_OK;
}

lmc_status lmc_trainer_cp_check(struct lmc_trainer *tr, lmc_err *err) { return ring_status(tr->cp, err); }

int lmc_trainer_cp_data_world(const struct lmc_trainer *tr) { return tr->cp->dw; }
