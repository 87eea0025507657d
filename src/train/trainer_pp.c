/* trainer_pp.c — the trainer's pipeline-parallel step, evaluation and
 * state sync (see trainer_pp.h): the step's accum micro-batches read into
 * host arrays (this DP rank's rows), one lmc_pp_run of the stage, the
 * stage's gradient all-reduced over the data-parallel ranks, the norm
 * summed over the stages, AdamW on the tensors the stage owns. */
#include "train/trainer_pp.h"
#include "train/trainer_tp.h"
#include "train/trainer_internal.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/pp_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lmc_trainer_pp {
    struct lmc_comm *c, *dp;      /* the pipeline group; data-parallel (NULL: none) */
    struct lmc_pp_tstage st;
    int dw, dr;
    int32_t *in, *tg;             /* (M B T) the step's micro-batches */
    bool *own;                    /* (n_params) the stage updates tensor i */
    struct lmc_pp_stats stats;    /* the last step's */
};

void lmc_trainer_pp_free(struct lmc_trainer *tr) {
    struct lmc_trainer_pp *p = tr->pp;
    if (!p) return;
    lmc_pp_tstage_free(&p->st);
    free(p->in), free(p->tg), free(p->own);
    free(p);
    tr->pp = NULL;
}

/* The stage owning part `part` (0 embeddings, 1 + l layer l, L + 1 after). */
static int owner(const struct lmc_trainer *tr, int part) {
    int P = tr->pp->c->world;
    int64_t L = tr->tm.cfg.num_layers;
    if (part <= 0) return 0;
    if (part > L) return P - 1;
    for (int s = 0; s < P; s++) {
        int64_t l0, n;
        lmc_dist_slice(L, s, P, &l0, &n);
        if (part - 1 < l0 + n) return s;
    }
    return P - 1;
}

static lmc_status refuse(const struct lmc_trainer *tr, const struct lmc_comm *pp, lmc_err *err) {
    const struct lmc_config *c = &tr->tm.cfg;
    const char *why = NULL;
    if (tr->have_opt) why = "another optimizer than AdamW";
    else if (c->tie_word_embeddings) why = "tied embeddings (the embedding's two gradients would live on two stages)";
    else if (tr->tm.trainable_off) why = "a frozen base (adapters; use --full)";
    else if (c->num_experts > 0) why = "mixture-of-experts layers";
    else if (!strncmp(c->model_type, "mamba", 5)) why = "recurrent (Mamba) layers";
    else if (tr->o.recompute) why = "--recompute";
    else if (tr->cp) why = "context parallelism at the same time";
    else if (tr->tp && (tr->tp->heads.vocab || tr->tp->zero)) why = "--tp-vocab or --zero 1 with --tp at the same time";
    else if (tr->zero || (tr->comm && !tr->tp)) why = "ZeRO / the data-parallel trainer (--pp runs its own data parallelism)";
    else if (strcmp(tr->be->name, "cpu")) why = "a device backend (the stages exchange host buffers)";
    else if (c->num_layers < pp->world)
        return lmc_err_set(err, LMC_ERR_ARG, "--pp %d: the model has only %lld layers", pp->world,
                           (long long)c->num_layers);
    if (!why) return LMC_OK;
    return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--pp (pipeline parallel) does not support %s yet (model %s)", why,
                       c->model_type);
}

lmc_status lmc_trainer_pp_attach(struct lmc_trainer *tr, struct lmc_comm *pp, struct lmc_comm *dp,
                                 const char *desc, lmc_err *err) {
    lmc_status s = refuse(tr, pp, err);
    if (s || (s = lmc_dist_check_same(pp, "pipeline-parallel training configuration", desc, err)) ||
        (dp && dp->world > 1 && (s = lmc_dist_check_same(dp, "data-parallel training configuration", desc, err))))
        return s;
    struct lmc_trainer_pp *p = calloc(1, sizeof *p);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "pipeline parallel: out of memory");
    tr->pp = p;
    p->c = pp;
    p->dp = dp && dp->world > 1 ? dp : NULL;
    p->dw = p->dp ? p->dp->world : 1;
    p->dr = p->dp ? p->dp->rank : 0;
    const struct lmc_train_opts *o = &tr->o;
    int64_t n = o->accum * o->B * o->T;
    if (o->accum > (1 << 16)) return lmc_err_set(err, LMC_ERR_ARG, "--pp: %lld micro-batches (--accum) is too many",
                                                 (long long)o->accum);
    p->in = malloc(sizeof(int32_t) * (size_t)n);
    p->tg = malloc(sizeof(int32_t) * (size_t)n);
    p->own = calloc((size_t)tr->tm.n_params, sizeof *p->own);
    if (!p->in || !p->tg || !p->own) return lmc_err_set(err, LMC_ERR_OOM, "pipeline parallel: out of memory");
    for (int i = 0; i < tr->tm.n_params; i++) p->own[i] = owner(tr, tr->tm.params[i].part) == pp->rank;
    if ((s = lmc_pp_tstage_init(&p->st, &tr->tm, tr->be, pp->rank, pp->world, (int)o->accum, o->B, o->T, err)))
        return s;
    p->st.inputs = p->in, p->st.targets = p->tg;
    /* the loader reads global micro-batches of D x B rows (as one process with batch D x B); a
     * tensor-parallel trainer's loader was made for all P x D ranks of its data-parallel side */
    if (o->next_batch || (p->dw <= 1 && !tr->tp)) return LMC_OK;
    int64_t gB = (int64_t)p->dw * o->B;
    free(tr->gbatch);
    tr->gbatch = NULL;
    if (p->dw > 1 && !(tr->gbatch = malloc((size_t)(gB * (o->T + 1)) * sizeof(int32_t))))
        return lmc_err_set(err, LMC_ERR_OOM, "global batch: out of memory");
    int64_t ep = tr->train.epoch, ix = tr->train.index;
    lmc_loader_free(&tr->train);
    memset(&tr->train, 0, sizeof tr->train);
    if ((s = lmc_loader_init(&tr->train, tr->train_data, gB, o->T, o->seed, true, err))) return s;
    return lmc_loader_seek(&tr->train, ep, ix, err);
}

lmc_status lmc_trainer_pp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    memset(st, 0, sizeof *st);
    lmc_tmodel_zero_grad(tm);
    int64_t per = o->B * o->T, row = o->T + 1;
    lmc_status s = LMC_OK;
    for (int64_t k = 0; k < o->accum; k++) { /* this DP rank's rows of each global micro-batch */
        if (o->next_batch) { /* a batch source: every DP rank draws the D batches, keeps its own */
            for (int j = 0; j < p->dw && !s; j++) {
                const int64_t *segs = NULL;
                int64_t n_segs = 0;
                bool mine = j == p->dr;
                s = o->next_batch(o->batch_user, mine ? p->in + k * per : tr->in, mine ? p->tg + k * per : tr->tg,
                                  &segs, &n_segs, err);
                if (!s && segs && n_segs > 1)
                    s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--pp: packed sequences (--pack) are not supported yet");
            }
            if (s) return s;
            continue;
        }
        if (p->dw > 1) {
            lmc_loader_next(&tr->train, tr->gbatch);
            memcpy(tr->batch, tr->gbatch + (int64_t)p->dr * o->B * row, (size_t)(o->B * row) * sizeof(int32_t));
        } else {
            lmc_loader_next(&tr->train, tr->batch);
        }
        lmc_trainer_split_batch(tr);
        memcpy(p->in + k * per, tr->in, sizeof(int32_t) * (size_t)per);
        memcpy(p->tg + k * per, tr->tg, sizeof(int32_t) * (size_t)per);
    }
    /* token data: the mean over the global batch's tokens; a batch source:
     * the summed loss, 1/count in the update (as lmc_trainer_step) */
    p->st.dscale = o->next_batch ? 1.0f : (float)(1.0 / ((double)per * (double)p->dw * (double)o->accum));
    p->st.loss_sum = 0;
    p->st.count = 0;
    struct lmc_pp_stage ops = lmc_pp_tstage_ops(&p->st);
    if ((s = lmc_pp_run(p->c, &ops, (int)o->accum, &p->stats, err))) return s;
    /* the loss: the last stages' sums over every rank; the gradient over the DP ranks of this stage */
    double sc[2] = {p->st.loss_sum, (double)p->st.count};
    if ((s = p->c->all_reduce(p->c, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err))) return s;
    if (p->dp && ((s = p->dp->all_reduce(p->dp, tm->g, tm->numel, LMC_DTYPE_F32, LMC_REDUCE_SUM, err)) ||
                  (s = p->dp->all_reduce(p->dp, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err))))
        return s;
    st->loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    st->tokens = per * o->accum * p->dw;
    /* the tensors a stage does not own have zero gradients: the arena's sum is the stage's
     * (tensor parallel: its shards counted once over the TP group) */
    double ss = 0;
    if (tr->tp) s = lmc_trainer_tp_grad_sumsq(tr, &ss, err);
    else ss = be->sumsq(be->ctx, tm->g, tm->numel);
    if (s || (s = p->c->all_reduce(p->c, &ss, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err))) return s;
    st->grad_norm = sqrt(ss);
    double inv = o->next_batch ? 1.0 / (sc[1] > 0 ? sc[1] : 1) : 1.0;
    st->grad_norm *= inv;
    float grad_scale = (float)(lmc_grad_clip_scale(st->grad_norm, o->clip) * inv);
    st->lr = lmc_schedule_lr(&o->sched, tr->step);
    tr->step++;
    if (!isfinite(st->grad_norm)) { /* the same on every rank */
        st->skipped = true;
        return LMC_OK;
    }
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *q = &tm->params[i];
        if (!p->own[i]) continue;
        struct lmc_adamw_step as;
        lmc_adamw_step_make(&o->adamw, tr->step, st->lr, lmc_tparam_decays(q, o->decay == LMC_DECAY_ALL), grad_scale,
                            &as);
        be->adamw(be->ctx, tm->w + q->off, lmc_tmodel_grad(tm, q), tr->m + q->off, tr->v + q->off, q->numel, &as);
    }
    be->sync(be->ctx);
    return LMC_OK;
}

lmc_status lmc_trainer_pp_sync(struct lmc_trainer *tr, bool moments, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    const struct lmc_tmodel *tm = &tr->tm;
    float *arenas[3] = {tm->w, tr->m, tr->v};
    lmc_status s = LMC_OK;
    for (int i = 0; !s && i < tm->n_params; i++) {
        const struct lmc_tparam *q = &tm->params[i];
        int from = owner(tr, q->part);
        for (int a = 0; !s && a < (moments ? 3 : 1); a++) /* host arenas (the CPU backend) */
            s = p->c->broadcast(p->c, arenas[a] + q->off, sizeof(float) * (size_t)q->numel, from, err);
    }
    return s;
}

lmc_status lmc_trainer_pp_eval(struct lmc_trainer *tr, double *loss, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    *loss = NAN;
    lmc_status s = lmc_trainer_pp_sync(tr, false, err);
    if (s || p->c->rank != 0 || p->dr != 0) return s;
    /* stage 0 of DP rank 0 now holds the whole model: the one-process
     * evaluation of the windows one process with batch D x B reads */
    struct lmc_comm *keep = tr->comm; /* a tensor-parallel trainer's data-parallel side */
    tr->pp = NULL;
    tr->comm = p->dp; /* replicated data parallel: only its world is read */
    s = lmc_trainer_eval(tr, loss, err);
    tr->comm = keep;
    tr->pp = p;
    return s;
}
