/* trainer_pp.c — the trainer's pipeline-parallel step, evaluation and
 * state sync (see trainer_pp.h): a stage's part of the model built from
 * the whole model's source; the step's accum micro-batches read into host
 * arrays (this DP rank's rows), one lmc_pp_run (or interleaved run) of
 * the stage, the stage's gradient all-reduced over the data-parallel
 * ranks, a tied embedding's halves summed between the first and last
 * stage, the norm summed over the stages, AdamW on the tensors the stage
 * owns; evaluation forward through the pipeline, the checkpoint gather to
 * rank 0 and the resume of a stage's moments. */
#include "train/trainer_step.h"
#include "train/trainer_pp.h"
#include "train/trainer_cp.h"
#include "train/trainer_tp.h"
#include "train/trainer_internal.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/pp_model.h"
#include "dist/ring_attn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lmc_trainer_pp {
    struct lmc_comm *c, *dp;      /* the pipeline group; data-parallel (NULL: none) */
    struct lmc_pp_tstage st;
    int dw, dr, V;
    int64_t *bounds;              /* (P V + 1) the layers' split (dist/pp_split.h) */
    int32_t *in, *tg;             /* (M B T) the step's micro-batches */
    bool *own;                    /* (n_params) the stage updates tensor i */
    struct lmc_pp_stats stats;    /* the last step's */
    /* tm is this stage's part of the model (lmc_trainer_pp_build): every
     * rank holds only its tensors; a checkpoint gathers them to rank 0 */
    bool parts;
    int *holder;                  /* (L + 2) parts mode: the rank whose arenas hold part p (the tied
                                   * embedding: rank 0's copy) */
    int tied;                     /* parts mode, P > 1: the tied embedding's index (stages 0 and P-1), or -1 */
    int64_t *woff, wnumel;        /* parts mode: each tensor's place in the whole layout, its floats */
    /* context parallel under the pipeline (lmc_trainer_pp_attach_cp): the stage's blocks run ring
     * attention over cpc with the zigzag slices; the activations between stages are the slices */
    struct lmc_comm *cpc;         /* the ring (NULL: off) */
    struct lmc_comm subs[3];      /* the pipeline group, the same-stage group (C x D) and the data-parallel
                                   * group of this stage and ring place (D) made from the world */
    struct lmc_comm *dd;          /* subs[2] when D > 1 (the evaluation's data-parallel side with --tp) */
    int n_subs;
    struct lmc_cp_group g;
    int64_t n, *pos;              /* tokens of a sequence this rank holds, their global positions */
    int32_t *sin, *stg;           /* (M B n) the step's micro-batches cut to the slice */
};

void lmc_trainer_pp_free(struct lmc_trainer *tr) {
    struct lmc_trainer_pp *p = tr->pp;
    if (!p) return;
    lmc_pp_tstage_free(&p->st);
    free(p->in), free(p->tg), free(p->own), free(p->holder), free(p->woff), free(p->bounds);
    free(p->pos), free(p->sin), free(p->stg);
    for (int i = p->n_subs - 1; i >= 0; i--) p->subs[i].free(&p->subs[i]); /* the subs before their parent */
    free(p);
    tr->pp = NULL;
}

lmc_status lmc_trainer_pp_build(struct lmc_tmodel *tm, const struct lmc_config *cfg, const struct lmc_backend *be,
                                const char *dir, uint64_t seed, double std, int P, int V, int rank,
                                const char *layers, int64_t *whole_numel, lmc_err *err) {
    struct lmc_tmodel lay; /* the whole table (no arenas): is the head tied, how large is the model */
    lmc_status s = lmc_tmodel_init_layout(&lay, cfg, be, err);
    if (s) return s;
    bool tied = lay.tied_head;
    *whole_numel = lay.numel;
    lmc_tmodel_free(&lay);
    int64_t L = cfg->num_layers;
    if (P < 1 || V < 1 || L < (int64_t)P * V)
        return lmc_err_set(err, LMC_ERR_ARG, "--pp %d%s: the model has only %lld layers", P,
                           V > 1 ? " with --pp-chunks" : "", (long long)L);
    bool *keep = malloc((size_t)(L + 2) * sizeof *keep);
    int64_t *bounds = malloc(sizeof *bounds * (size_t)(P * V + 1));
    if (!keep || !bounds) {
        free(keep), free(bounds);
        return lmc_err_set(err, LMC_ERR_OOM, "pipeline stage: out of memory");
    }
    s = lmc_pp_split_plan(cfg, P, V, layers, bounds, err);
    if (!s) {
        lmc_pp_stage_keep(bounds, L, tied, P, V, rank, keep);
        s = lmc_tmodel_init_parts(tm, cfg, be, keep, true, err);
    }
    free(keep), free(bounds);
    if (s) return s;
    struct lmc_tmodel_src src;
    s = dir ? lmc_tmodel_src_dir(&src, tm, dir, err) : lmc_tmodel_src_random(&src, tm, seed, std, err);
    if (!s) {
        s = lmc_tmodel_fill(tm, &src, err);
        lmc_tmodel_src_free(&src);
    }
    if (s) lmc_tmodel_free(tm);
    return s;
}

/* The stage owning part `part` (0 embeddings, 1 + l layer l, L + 1 after). */
static int owner(const struct lmc_trainer *tr, int part) {
    int P = tr->pp->c->world;
    int64_t L = tr->tm.cfg.num_layers;
    if (part <= 0) return 0;
    if (part > L) return P - 1;
    for (int k = 0; k < P * tr->pp->V; k++) /* the stage of the chunk holding layer part - 1 */
        if (part - 1 < tr->pp->bounds[k + 1]) return k % P;
    return P - 1;
}

static lmc_status refuse(const struct lmc_trainer *tr, const struct lmc_comm *pp, lmc_err *err) {
    const struct lmc_config *c = &tr->tm.cfg;
    const char *why = NULL;
    bool parts = false;
    for (int i = 0; i < tr->tm.n_params; i++) parts |= tr->tm.params[i].elsewhere;
    if (tr->have_opt) why = "another optimizer than AdamW";
    else if (tr->tm.tied_head && !parts && pp->world > 1)
        why = "tied embeddings with --tp (the stages hold the whole model there)";
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
    return lmc_trainer_pp_attach_v(tr, pp, dp, 1, NULL, desc, err);
}

static lmc_status attach(struct lmc_trainer *tr, struct lmc_comm *pp, struct lmc_comm *dp, struct lmc_comm *cp,
                         int V, const char *layers, const char *desc, lmc_err *err);

lmc_status lmc_trainer_pp_attach_v(struct lmc_trainer *tr, struct lmc_comm *pp, struct lmc_comm *dp, int V,
                                   const char *layers, const char *desc, lmc_err *err) {
    return attach(tr, pp, dp, NULL, V, layers, desc, err);
}

lmc_status lmc_trainer_pp_attach_cp(struct lmc_trainer *tr, struct lmc_comm *world, struct lmc_comm *cp, int P, int V,
                                    const char *layers, const char *desc, lmc_err *err) {
    int C = cp->world, W = world->world;
    if (P < 2 || C < 2 || W % (C * P))
        return lmc_err_set(err, LMC_ERR_ARG, "--pp %d --cp %d needs %d x %d x D ranks (D >= 1); this run has %d", P, C,
                           P, C, W);
    if (cp->rank != world->rank % C)
        return lmc_err_set(err, LMC_ERR_ARG, "--pp with --cp: the ring must be %d consecutive ranks", C);
    lmc_status s = lmc_trainer_cp_refuse(tr, err);
    if (s) return s;
    /* rank = (d P + stage) C + c: the pipeline is the P ranks of one (d, c), the same-stage group the C x D
     * ranks of one stage (their gradient sum is the one-process gradient of the stage's tensors) */
    struct lmc_comm sub[3];
    int stage = (world->rank / C) % P, d = world->rank / (C * P), made = 0;
    int colors[3] = {d * C + cp->rank, stage, stage * C + cp->rank};
    for (; made < 3 && !s; made++)
        if ((s = lmc_comm_split(world, colors[made], world->rank, &sub[made], err))) break;
    if (!s) s = attach(tr, &sub[0], &sub[1], cp, V, layers, desc, err);
    if (!tr->pp) { /* nothing took them */
        while (made-- > 0) sub[made].free(&sub[made]);
        return s;
    }
    struct lmc_trainer_pp *p = tr->pp; /* the trainer's from here on, at a place that stays */
    for (int i = 0; i < made; i++) p->subs[i] = sub[i];
    p->n_subs = made;
    p->c = &p->subs[0];
    if (p->dp) p->dp = &p->subs[1];
    p->dd = made == 3 && p->subs[2].world > 1 ? &p->subs[2] : NULL;
    return s;
}

/* The split over pp's ranks, checked the same on every rank of pp and dp. */
static lmc_status split(struct lmc_trainer_pp *p, const struct lmc_config *c, int P, int V, const char *layers,
                        struct lmc_comm *pp, struct lmc_comm *dp, lmc_err *err) {
    p->bounds = malloc(sizeof *p->bounds * (size_t)(P * V + 1));
    if (!p->bounds) return lmc_err_set(err, LMC_ERR_OOM, "pipeline parallel: out of memory");
    lmc_status s = lmc_pp_split_plan(c, P, V, layers, p->bounds, err);
    if (s) return s;
    uint64_t h = 14695981039346656037u; /* FNV-1a of every bound, beside the first counts in words */
    for (int k = 0; k <= P * V; k++) h = (h ^ (uint64_t)p->bounds[k]) * 1099511628211u;
    char text[512];
    int n = snprintf(text, sizeof text, "split %016llx, layers per chunk", (unsigned long long)h);
    for (int k = 0; k < P * V && n < (int)sizeof text - 24; k++)
        n += snprintf(text + n, sizeof text - (size_t)n, " %lld", (long long)(p->bounds[k + 1] - p->bounds[k]));
    if ((s = lmc_dist_check_same(pp, "pipeline split", text, err))) return s;
    if (dp && dp->world > 1) s = lmc_dist_check_same(dp, "pipeline split", text, err);
    return s;
}

const int64_t *lmc_trainer_pp_bounds(const struct lmc_trainer *tr) {
    return tr->pp ? tr->pp->bounds : NULL;
}

static lmc_status attach(struct lmc_trainer *tr, struct lmc_comm *pp, struct lmc_comm *dp, struct lmc_comm *cp,
                         int V, const char *layers, const char *desc, lmc_err *err) {
    if (V > 1 && tr->tp)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--pp-chunks (interleaved 1F1B) with --tp is not supported yet");
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
    int64_t T = o->T; /* the stage's tokens of a sequence */
    if (cp) { /* dp: the C x D ranks of this stage, ordered (d, c): the data-parallel rows are by d */
        int C = cp->world;
        if (T < 2 * (int64_t)C)
            return lmc_err_set(err, LMC_ERR_ARG, "--cp %d cuts each sequence into %d chunks: --seq %lld is too short",
                               C, 2 * C, (long long)T);
        p->cpc = cp;
        p->dw = p->dp ? p->dp->world / C : 1;
        p->dr = p->dp ? p->dp->rank / C : 0;
        p->g = (struct lmc_cp_group){cp, T, LMC_OK, {0}};
        T = p->n = lmc_ring_attn_zigzag(o->T, cp->rank, C, NULL);
        int64_t sn = o->accum * o->B * p->n;
        p->pos = malloc(sizeof(int64_t) * (size_t)p->n);
        p->sin = malloc(sizeof(int32_t) * (size_t)sn);
        p->stg = malloc(sizeof(int32_t) * (size_t)sn);
        if (!p->pos || !p->sin || !p->stg) return lmc_err_set(err, LMC_ERR_OOM, "pipeline x context parallel: out of memory");
        lmc_ring_attn_zigzag(o->T, cp->rank, C, p->pos);
    }
    int64_t n = o->accum * o->B * o->T;
    if (o->accum > (1 << 16)) return lmc_err_set(err, LMC_ERR_ARG, "--pp: %lld micro-batches (--accum) is too many",
                                                 (long long)o->accum);
    p->in = malloc(sizeof(int32_t) * (size_t)n);
    p->tg = malloc(sizeof(int32_t) * (size_t)n);
    p->own = calloc((size_t)tr->tm.n_params, sizeof *p->own);
    if (!p->in || !p->tg || !p->own) return lmc_err_set(err, LMC_ERR_OOM, "pipeline parallel: out of memory");
    p->V = V;
    p->tied = -1;
    /* with --tp the stage holds a shard: the split is the whole model's, the same on every TP rank */
    if ((s = split(p, tr->tp ? &tr->tp->full : &tr->tm.cfg, pp->world, V, layers, pp, dp, err))) return s;
    for (int i = 0; i < tr->tm.n_params; i++) p->parts |= tr->tm.params[i].elsewhere;
    int64_t L = tr->tm.cfg.num_layers;
    if (p->parts) { /* which rank holds each part (rank 0 for a tied embedding) */
        bool *keep = malloc((size_t)(L + 2) * sizeof *keep);
        p->holder = malloc((size_t)(L + 2) * sizeof *p->holder);
        if (!keep || !p->holder) {
            free(keep);
            return lmc_err_set(err, LMC_ERR_OOM, "pipeline parallel: out of memory");
        }
        for (int64_t q = 0; q < L + 2; q++) p->holder[q] = -1;
        for (int r = pp->world - 1; r >= 0; r--) {
            lmc_pp_stage_keep(p->bounds, L, tr->tm.tied_head, pp->world, V, r, keep);
            for (int64_t q = 0; q < L + 2; q++)
                if (keep[q]) p->holder[q] = r;
        }
        free(keep);
        struct lmc_tmodel lay; /* the whole layout's places (checkpoints and resumes) */
        if ((s = lmc_tmodel_init_layout(&lay, &tr->tm.cfg, tr->be, err))) return s;
        p->woff = malloc(sizeof *p->woff * (size_t)lay.n_params);
        p->wnumel = lay.numel;
        if (p->woff && lay.n_params == tr->tm.n_params)
            for (int i = 0; i < lay.n_params; i++) p->woff[i] = lay.params[i].off;
        bool fits = lay.n_params == tr->tm.n_params;
        lmc_tmodel_free(&lay);
        if (!p->woff || !fits) return lmc_err_set(err, fits ? LMC_ERR_OOM : LMC_ERR_ARG, "pipeline: the stage's table "
                                                  "is not the model's (or out of memory)");
        lmc_tacts_free(&tr->acts); /* the stage's arenas are its own (o.no_acts: none were made) */
        for (int i = 0; i < tr->tm.n_params; i++) {
            const struct lmc_tparam *q = &tr->tm.params[i];
            /* a tied embedding held by the first and the last stage: the tensor the head reads */
            if (pp->world > 1 && tr->tm.tied_head && !q->elsewhere && q->part == 0 &&
                lmc_tmodel_grad(&tr->tm, q) == (const float *)tr->tm.G.head.w.data)
                p->tied = i;
        }
        for (int i = 0; i < tr->tm.n_params; i++) { /* the last stage updates of part 0 only the tied head */
            const struct lmc_tparam *q = &tr->tm.params[i];
            p->own[i] = !q->elsewhere && (pp->world == 1 || pp->rank == 0 || q->part != 0 || i == p->tied);
        }
    } else {
        for (int i = 0; i < tr->tm.n_params; i++) p->own[i] = owner(tr, tr->tm.params[i].part) == pp->rank;
    }
    if ((s = lmc_pp_tstage_init_split(&p->st, &tr->tm, tr->be, p->bounds, pp->rank, pp->world, V, (int)o->accum, o->B,
                                      T, err)))
        return s;
    p->st.inputs = p->in, p->st.targets = p->tg;
    if (cp) { /* every arena of the stage: the slice's global positions, attention around the ring */
        p->st.inputs = p->sin, p->st.targets = p->stg;
        int32_t *p32 = malloc(sizeof(int32_t) * (size_t)(o->B * p->n));
        if (!p32) return lmc_err_set(err, LMC_ERR_OOM, "pipeline x context parallel: out of memory");
        for (int64_t b = 0; b < o->B; b++)
            for (int64_t i = 0; i < p->n; i++) p32[b * p->n + i] = (int32_t)p->pos[i];
        for (int i = 0; i < p->st.n_acts; i++) {
            tr->be->upload(tr->be->ctx, p->st.acts[i].pos, p32, sizeof(int32_t) * (size_t)(o->B * p->n));
            p->st.acts[i].cp = &p->g;
        }
        tr->be->sync(tr->be->ctx);
        free(p32);
    }
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

/* Context parallel: rows sequences of T tokens in in/tg -> this rank's zigzag slices in p->sin/stg. */
static void slice(struct lmc_trainer_pp *p, const int32_t *in, const int32_t *tg, int64_t rows) {
    int64_t T = p->g.T_global, n = p->n;
    for (int64_t b = 0; b < rows; b++)
        for (int64_t i = 0; i < n; i++) {
            p->sin[b * n + i] = in[b * T + p->pos[i]];
            p->stg[b * n + i] = tg[b * T + p->pos[i]];
        }
}

/* The ring's sticky status after a run over it (reset). */
static lmc_status ring_status(struct lmc_trainer_pp *p, lmc_err *err) {
    lmc_status s = p->cpc ? p->g.st : LMC_OK;
    if (s) {
        if (err) *err = p->g.err;
        p->g.st = LMC_OK;
    }
    return s;
}

/* The loss sum and count of one B x T micro-batch forward through the pipeline (a CP
 * rank its slice, summed over the ring), on every rank of the group. */
static lmc_status eval_one(struct lmc_trainer *tr, const int32_t *in, const int32_t *tg, double sc[2], lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    int64_t n = 0;
    if (p->cpc) slice(p, in, tg, tr->o.B);
    lmc_status s = lmc_pp_tstage_eval(&p->st, p->c, p->cpc ? p->sin : in, p->cpc ? p->stg : tg, &sc[0], &n, err);
    if (!s) s = ring_status(p, err);
    sc[1] = (double)n;
    if (!s) s = p->c->broadcast(p->c, sc, 2 * sizeof(double), p->c->world - 1, err);
    if (!s && p->cpc) s = p->cpc->all_reduce(p->cpc, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
    return s;
}

lmc_status lmc_trainer_pp_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    memset(st, 0, sizeof *st);
    lmc_tmodel_zero_grad(tm);
    int64_t per = o->B * o->T;
    lmc_status s = LMC_OK;
    for (int64_t k = 0; k < o->accum; k++) { /* this DP rank's rows of each global micro-batch */
        /* a batch source: every DP rank draws the D batches, keeps its own */
        if ((s = lmc_trainer_next_micro(tr, p->dw, p->dr, p->in + k * per, p->tg + k * per, "--pp", true, err)))
            return s;
    }
    if (p->cpc) slice(p, p->in, p->tg, o->accum * o->B);
    /* token data: the mean over the global batch's tokens; a batch source:
     * the summed loss, 1/count in the update (as lmc_trainer_step) */
    p->st.dscale = o->next_batch ? 1.0f : (float)(1.0 / ((double)per * (double)p->dw * (double)o->accum));
    p->st.loss_sum = 0;
    p->st.count = 0;
    if (p->V == 1) {
        struct lmc_pp_stage ops = lmc_pp_tstage_ops(&p->st);
        s = lmc_pp_run(p->c, &ops, (int)o->accum, &p->stats, err);
    } else {
        struct lmc_pp_vstage ops = lmc_pp_tstage_vops(&p->st);
        s = lmc_pp_run_interleaved(p->c, &ops, (int)o->accum, &p->stats, err);
    }
    if (!s) s = ring_status(p, err);
    if (s) return s;
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
    int P = p->c->world, r = p->c->rank;
    if (p->tied >= 0 && (r == 0 || r == P - 1)) { /* the tied embedding: the lookup's and the head's halves summed */
        const struct lmc_tparam *q = &tm->params[p->tied];
        float *g = lmc_tmodel_grad(tm, q), *o = malloc(sizeof(float) * (size_t)q->numel);
        size_t nb = sizeof(float) * (size_t)q->numel;
        if (!o) return lmc_err_set(err, LMC_ERR_OOM, "tied embedding gradient: out of memory");
        if (r == 0) { /* rank 0 adds and sends the sum back, so both update with the same bits */
            if (!(s = p->c->recv(p->c, o, nb, P - 1, err))) {
                for (int64_t k = 0; k < q->numel; k++) g[k] += o[k];
                s = p->c->send(p->c, g, nb, P - 1, err);
            }
        } else if (!(s = p->c->send(p->c, g, nb, 0, err))) {
            s = p->c->recv(p->c, g, nb, 0, err);
        }
        free(o);
        if (s) return s;
    }
    if (tr->tp) s = lmc_trainer_tp_grad_sumsq(tr, &ss, err);
    else if (p->tied >= 0 && r == P - 1) { /* part 0 counted once, on rank 0: the other parts' tensors here */
        for (int i = 0; i < tm->n_params; i++)
            if (p->own[i] && tm->params[i].part != 0)
                ss += be->sumsq(be->ctx, lmc_tmodel_grad(tm, &tm->params[i]), tm->params[i].numel);
    } else ss = be->sumsq(be->ctx, tm->g, tm->numel);
    if (s || (s = p->c->all_reduce(p->c, &ss, 1, LMC_DTYPE_F64, LMC_REDUCE_SUM, err))) return s;
    st->grad_norm = sqrt(ss);
    /* AdamW on the tensors this stage owns (no frozen base here: trainable_off is 0) */
    struct lmc_trainer_update u = {.own = p->own};
    return lmc_trainer_apply_update_with(tr, st, sc[1], &u, err);
}

/* Parts mode, the ranks other than 0 of DP rank 0's pipeline: the tensors
 * they hold sent to rank 0 while its lmc_ckpt_save writes the folder
 * (lmc_trainer_pp_write): every parameter in table order, then the first
 * moments, then the second (the order rank 0 asks for them). */
static lmc_status serve(struct lmc_trainer *tr, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    const struct lmc_tmodel *tm = &tr->tm;
    struct lmc_comm *c = p->c;
    if (p->dr != 0 || c->rank == 0 || (p->cpc && p->cpc->rank != 0))
        return LMC_OK; /* the other pipelines hold the same state */
    const float *arenas[3] = {tm->w, tr->m, tr->v};
    tr->be->sync(tr->be->ctx);
    lmc_status s = LMC_OK;
    for (int a = 0; !s && a < 3; a++)
        for (int i = 0; !s && i < tm->n_params; i++) {
            const struct lmc_tparam *q = &tm->params[i];
            if (p->holder[q->part] == c->rank)
                s = c->send(c, arenas[a] + q->off, sizeof(float) * (size_t)q->numel, 0, err);
        }
    return s;
}

/* Rank 0's side: a tensor at a time from its holder into `piece`. */
struct pp_fill {
    struct lmc_trainer *tr;
    bool optim;          /* optimizer.safetensors (adamw.m, adamw.v) or model.safetensors */
    int64_t tensor;      /* the file's tensor being written (-1: none yet) */
    int k;               /* optim: the next parameter of the whole arena */
    float *piece, *tmp;  /* (the largest tensor + padding) */
    int64_t n, at;       /* floats in piece, floats handed out */
};

static lmc_status fetch(struct pp_fill *f, int i, const float *local, float *dst, lmc_err *err) {
    struct lmc_trainer_pp *p = f->tr->pp;
    const struct lmc_tparam *q = &f->tr->tm.params[i];
    size_t nb = sizeof(float) * (size_t)q->numel;
    int from = p->holder[q->part];
    if (from == 0) {
        memcpy(dst, local + q->off, nb);
        return LMC_OK;
    }
    return p->c->recv(p->c, dst, nb, from, err);
}

static lmc_status pp_fill(void *user, int64_t t, void *buf, size_t want, size_t *got, lmc_err *err) {
    struct pp_fill *f = user;
    struct lmc_trainer *tr = f->tr;
    const struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_trainer_pp *p = tr->pp;
    lmc_status s;
    if (t != f->tensor) f->tensor = t, f->k = 0, f->n = f->at = 0;
    if (f->at == f->n) { /* the next piece: model: tensor t (on-disk layout); optim: the next parameter, padded */
        int i = f->optim ? f->k++ : (int)t;
        if (i >= tm->n_params) return lmc_err_set(err, LMC_ERR_ARG, "checkpoint: tensor %lld past the table", (long long)t);
        const struct lmc_tparam *q = &tm->params[i];
        if (!f->optim) {
            if ((s = fetch(f, i, tm->w, q->transposed ? f->tmp : f->piece, err))) return s;
            if (q->transposed) lmc_tmodel_transpose(q, f->piece, f->tmp, true);
            f->n = q->numel;
        } else {
            if ((s = fetch(f, i, t == 0 ? tr->m : tr->v, f->piece, err))) return s;
            int64_t end = i + 1 < tm->n_params ? p->woff[i + 1] : p->wnumel;
            f->n = end - p->woff[i]; /* the padding to the next tensor: zeros */
            memset(f->piece + q->numel, 0, sizeof(float) * (size_t)(f->n - q->numel));
        }
        f->at = 0;
    }
    size_t nb = LMC_MIN(want, sizeof(float) * (size_t)(f->n - f->at));
    memcpy(buf, f->piece + f->at, nb);
    f->at += (int64_t)(nb / sizeof(float));
    *got = nb;
    return LMC_OK;
}

lmc_status lmc_trainer_pp_write(struct lmc_trainer *tr, const char *model_path, const char *optim_path,
                                lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    const struct lmc_tmodel *tm = &tr->tm;
    LMC_ASSERT(p && p->parts && p->c->rank == 0 && p->dr == 0 && (!p->cpc || !p->cpc->rank));
    int64_t most = 16;
    for (int i = 0; i < tm->n_params; i++) most = LMC_MAX(most, tm->params[i].numel + 16);
    struct pp_fill f = {tr, false, -1, 0, malloc(sizeof(float) * (size_t)most), malloc(sizeof(float) * (size_t)most), 0, 0};
    struct lmc_st_write_tensor *t = calloc((size_t)tm->n_params, sizeof *t);
    lmc_status s = LMC_OK;
    if (!f.piece || !f.tmp || !t) s = lmc_err_set(err, LMC_ERR_OOM, "checkpoint: out of memory");
    for (int i = 0; !s && i < tm->n_params; i++) { /* the table's names and on-disk shapes; data from the stages */
        const struct lmc_tparam *q = &tm->params[i];
        t[i] = (struct lmc_st_write_tensor){q->name, LMC_DTYPE_F32, q->ndim, {q->shape[0], q->shape[1]}, NULL};
        if (q->conv) t[i].ndim = 3, t[i].shape[1] = 1, t[i].shape[2] = q->shape[1];
    }
    tr->be->sync(tr->be->ctx);
    const char *meta[] = {"format", "pt"};
    if (!s) s = lmc_st_write_fill(model_path, t, tm->n_params, meta, 1, pp_fill, &f, err);
    struct lmc_st_write_tensor ot[2] = {
        {"adamw.m", LMC_DTYPE_F32, 1, {p->wnumel}, NULL},
        {"adamw.v", LMC_DTYPE_F32, 1, {p->wnumel}, NULL},
    };
    f.optim = true, f.tensor = -1;
    if (!s) s = lmc_st_write_fill(optim_path, ot, 2, NULL, 0, pp_fill, &f, err);
    free(f.piece), free(f.tmp), free(t);
    return s;
}

bool lmc_trainer_pp_writes(const struct lmc_trainer *tr) {
    return tr->pp && tr->pp->parts && tr->pp->c->rank == 0 && tr->pp->dr == 0 && (!tr->pp->cpc || !tr->pp->cpc->rank);
}

lmc_status lmc_trainer_pp_load_moments(struct lmc_trainer *tr, const float *m, const float *v, int64_t numel,
                                       lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_trainer_pp *p = tr->pp;
    if (p->wnumel != numel)
        return lmc_err_set(err, LMC_ERR_FORMAT, "optimizer state of %lld floats, the model's layout has %lld",
                           (long long)numel, (long long)p->wnumel);
    for (int i = 0; i < tm->n_params; i++) { /* the stage's tensors from the whole layout's places */
        const struct lmc_tparam *q = &tm->params[i];
        if (q->elsewhere) continue;
        size_t nb = sizeof(float) * (size_t)q->numel;
        tr->be->upload(tr->be->ctx, tr->m + q->off, m + p->woff[i], nb);
        tr->be->upload(tr->be->ctx, tr->v + q->off, v + p->woff[i], nb);
    }
    tr->be->sync(tr->be->ctx);
    return LMC_OK;
}

lmc_status lmc_trainer_pp_loss(struct lmc_trainer *tr, const int32_t *in, const int32_t *tg, double *loss_sum,
                               int64_t *count, lmc_err *err) {
    double sc[2] = {0, 0};
    lmc_status s = eval_one(tr, in, tg, sc, err);
    *loss_sum = sc[0];
    *count = (int64_t)sc[1];
    return s;
}

bool lmc_trainer_pp_parts(const struct lmc_trainer *tr) {
    return tr->pp && tr->pp->parts;
}

lmc_status lmc_trainer_pp_sync(struct lmc_trainer *tr, bool moments, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    if (p->parts) return moments ? serve(tr, err) : LMC_OK; /* parts: evaluation runs through the pipeline */
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

/* Parts mode: the windows one process with batch D x B evaluates, forward
 * through the pipeline of DP rank 0 (NaN on the other pipelines). */
static lmc_status eval_parts(struct lmc_trainer *tr, double *loss, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    if (!tr->val_data || tr->o.eval_batches <= 0 || p->dr != 0) return LMC_OK;
    lmc_status s = lmc_loader_seek(&tr->val, 0, 0, err);
    if (s) return s;
    int64_t world = p->dw;
    int64_t nb = LMC_MIN(tr->o.eval_batches, LMC_MAX(1, tr->val.n_windows / (tr->o.B * world))) * world;
    double sc[2] = {0, 0};
    for (int64_t k = 0; k < nb; k++) {
        lmc_loader_next(&tr->val, tr->batch);
        lmc_trainer_split_batch(tr);
        double one[2];
        if ((s = eval_one(tr, tr->in, tr->tg, one, err))) return s;
        sc[0] += one[0], sc[1] += one[1];
    }
    *loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    return LMC_OK;
}

lmc_status lmc_trainer_pp_eval(struct lmc_trainer *tr, double *loss, lmc_err *err) {
    struct lmc_trainer_pp *p = tr->pp;
    *loss = NAN;
    if (p->parts) return eval_parts(tr, loss, err);
    lmc_status s = lmc_trainer_pp_sync(tr, false, err);
    if (s || p->c->rank != 0 || p->dr != 0) return s;
    /* stage 0 of DP rank 0 now holds the whole model: the one-process
     * evaluation of the windows one process with batch D x B reads */
    struct lmc_comm *keep = tr->comm; /* a tensor-parallel trainer's data-parallel side */
    tr->pp = NULL;
    tr->comm = p->cpc ? p->dd : p->dp; /* replicated data parallel: only its world (D) is read */
    s = lmc_trainer_eval(tr, loss, err);
    tr->comm = keep;
    tr->pp = p;
    return s;
}

void lmc_trainer_pp_log_peak(const struct lmc_trainer *tr, const char *cmd, const char *when) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    long hwm = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) hwm = strtol(line + 6, NULL, 10);
    fclose(f);
    const struct lmc_trainer_pp *p = tr->pp; /* NULL: one process, stage 0 of 1 */
    if (hwm >= 0)
        fprintf(stderr, "lmc %s: pipeline stage %d of %d (data-parallel rank %d): %lld parameter floats, peak RSS "
                        "%.1f MiB %s\n", cmd, p ? p->c->rank : 0, p ? p->c->world : 1, p ? p->dr : 0,
                (long long)tr->tm.numel, (double)hwm / 1024.0, when);
}
