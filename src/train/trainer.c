/* trainer.c — one optimizer step over accumulated micro-batches and the
 * validation loss (see trainer.h). Everything runs in a fixed order with
 * fixed thread splits, so equal state gives equal results. Parameters,
 * gradients and moments are backend memory: the step reaches them only
 * through backend ops (zero, sumsq, adamw); the host sees token ids, the
 * per-row losses and the gradient norm. */
#include "train/trainer.h"
#include "train/trainer_internal.h"
#include "train/trainer_step.h"
#include "core/core.h"
#include "dist/comm.h"
#include "train/trainer_tp.h"
#include "train/trainer_cp.h"
#include "train/trainer_pp.h"
#include "train/trainer_ep.h"
#include "dist/zero.h"
#include "model/distill.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lmc_status lmc_trainer_init(struct lmc_trainer *tr, struct lmc_tmodel *tm,
                            const struct lmc_backend *be, const struct lmc_token_data *train,
                            const struct lmc_token_data *val, const struct lmc_train_opts *o,
                            lmc_err *err) {
    memset(tr, 0, sizeof *tr);
    tr->tm = *tm;
    memset(tm, 0, sizeof *tm);
    tr->be = be;
    tr->o = *o;
    tr->train_data = train;
    if (o->init_src) o->init_src->tm = &tr->tm; /* the source reads the table where the model now is */
    tr->val_data = val;
    lmc_status s;
    if (o->B <= 0 || o->T <= 0 || o->accum <= 0) {
        s = lmc_err_set(err, LMC_ERR_ARG, "batch %lld, sequence %lld and accumulation %lld must be positive",
                        (long long)o->B, (long long)o->T, (long long)o->accum);
        goto fail;
    }
    if (!train && !o->next_batch) {
        s = lmc_err_set(err, LMC_ERR_ARG, "no training data");
        goto fail;
    }
    int64_t vocab = tr->tm.vocab ? tr->tm.vocab->V : tr->tm.cfg.vocab_size; /* vocabulary-parallel: the full one */
    if (train && train->vocab_size > (uint32_t)vocab) {
        s = lmc_err_set(err, LMC_ERR_ARG, "the data's vocabulary (%u) is larger than the model's (%lld)",
                        train->vocab_size, (long long)vocab);
        goto fail;
    }
    if (tr->tm.be != be) {
        s = lmc_err_set(err, LMC_ERR_ARG, "the model's arenas belong to another backend than the trainer's");
        goto fail;
    }
    if ((s = lmc_tmodel_check_backend(be, &tr->tm.cfg, true, true, err))) goto fail;
    /* arenas deferred (o->init_src): built here unless the zero module takes the parameters */
    if (!tr->tm.w && (!o->init_src || !o->zero_moments) &&
        (s = o->init_src ? lmc_tmodel_fill(&tr->tm, o->init_src, err)
                         : lmc_err_set(err, LMC_ERR_ARG, "the model has no parameter arena and no source")))
        goto fail;
    if (tr->tm.w) tr->o.init_src = NULL; /* used (or never needed) */
    if ((s = lmc_schedule_check(&o->sched, err))) goto fail;
    struct lmc_tacts_opts ao = {.recompute = o->recompute, .selective = o->recompute_selective,
                                .save_bf16 = o->save_bf16, .offload = o->offload, .mixer = o->recompute_mixer};
    if (!o->no_acts && (s = lmc_tacts_init_opts(&tr->acts, &tr->tm, be, o->B, o->T, &ao, err))) goto fail;
    if (train && (s = lmc_loader_init(&tr->train, train, o->B, o->T, o->seed, true, err))) goto fail;
    if (val && (s = lmc_loader_init(&tr->val, val, o->B, o->T, o->seed, false, err))) {
        tr->val_data = NULL; /* too short for one window: no validation */
        memset(&tr->val, 0, sizeof tr->val);
        s = LMC_OK;
    }
    if (o->optim.kind != LMC_OPTIM_ADAMW) {
        struct lmc_optim_cfg oc = o->optim;
        oc.adamw = o->adamw;
        struct lmc_optim_param *pp = calloc((size_t)tr->tm.n_params, sizeof *pp);
        if (!pp) {
            s = lmc_err_set(err, LMC_ERR_OOM, "optimizer parameter list: out of memory");
            goto fail;
        }
        int np = lmc_trainer_optim_params(&tr->tm, o->decay == LMC_DECAY_ALL, pp);
        s = lmc_optim_init(&tr->opt, &oc, be, pp, np, err);
        free(pp);
        if (s) goto fail;
        tr->have_opt = true;
    } else if (!o->zero_moments) {
        /* moments of the trainable part only (a frozen base has none) */
        size_t bytes = (size_t)(tr->tm.numel - tr->tm.trainable_off) * sizeof(float);
        tr->m = be->alloc(be->ctx, bytes);
        tr->v = be->alloc(be->ctx, bytes);
        if (tr->m) be->zero(be->ctx, tr->m, bytes);
        if (tr->v) be->zero(be->ctx, tr->v, bytes);
        if (!tr->m || !tr->v) {
            s = lmc_err_set(err, LMC_ERR_OOM, "optimizer state for %lld parameters: out of memory",
                            (long long)tr->tm.numel);
            goto fail;
        }
    }
    if (tr->tm.cfg.num_experts > 0 &&
        !(tr->expert_tokens = calloc((size_t)tr->tm.cfg.num_experts, sizeof *tr->expert_tokens))) {
        s = lmc_err_set(err, LMC_ERR_OOM, "expert load: out of memory");
        goto fail;
    }
    tr->batch = malloc((size_t)(o->B * (o->T + 1)) * sizeof(int32_t));
    tr->in = malloc((size_t)(o->B * o->T) * sizeof(int32_t));
    tr->tg = malloc((size_t)(o->B * o->T) * sizeof(int32_t));
    if (!tr->batch || !tr->in || !tr->tg) {
        s = lmc_err_set(err, LMC_ERR_OOM, "optimizer state for %lld parameters: out of memory",
                        (long long)tr->tm.numel);
        goto fail;
    }
    return LMC_OK;
fail:
    lmc_trainer_free(tr);
    return s;
}

void lmc_trainer_free(struct lmc_trainer *tr) {
    lmc_trainer_dist_free(tr);
    lmc_trainer_tp_free(tr);
    lmc_trainer_cp_free(tr);
    lmc_trainer_pp_free(tr);
    lmc_tacts_free(&tr->acts);
    lmc_trainer_ep_free(tr);
    if (tr->be) {
        if (tr->m) tr->be->free(tr->be->ctx, tr->m);
        if (tr->v) tr->be->free(tr->be->ctx, tr->v);
    }
    if (tr->have_opt) lmc_optim_free(&tr->opt);
    lmc_tmodel_free(&tr->tm);
    if (tr->train.d) lmc_loader_free(&tr->train);
    if (tr->val.d) lmc_loader_free(&tr->val);
    free(tr->batch);
    free(tr->in);
    free(tr->tg);
    free(tr->expert_tokens);
    memset(tr, 0, sizeof *tr);
}

void lmc_trainer_moe_add(struct lmc_trainer *tr, struct lmc_train_stats *st, int64_t k, int64_t accum) {
    const struct lmc_moe_stats *m = tr->acts.moe;
    if (!m || !tr->expert_tokens) return;
    if (k == 0) memset(tr->expert_tokens, 0, (size_t)m->E * sizeof *tr->expert_tokens);
    for (int64_t l = 0; l < m->L; l++)
        for (int64_t e = 0; e < m->E; e++) tr->expert_tokens[e] += m->count[l * m->E + e];
    st->n_experts = m->E;
    st->expert_tokens = tr->expert_tokens;
    st->moe_aux += tr->acts.moe_aux / (double)(accum > 0 ? accum : 1);
}

/* (B, T+1) windows -> inputs and next-token targets */
static void split_batch(struct lmc_trainer *tr) { lmc_trainer_split_batch(tr); }
void lmc_trainer_split_batch(struct lmc_trainer *tr) {
    int64_t B = tr->o.B, T = tr->o.T;
    for (int64_t b = 0; b < B; b++) {
        memcpy(tr->in + b * T, tr->batch + b * (T + 1), (size_t)T * sizeof(int32_t));
        memcpy(tr->tg + b * T, tr->batch + b * (T + 1) + 1, (size_t)T * sizeof(int32_t));
    }
}

lmc_status lmc_trainer_step(struct lmc_trainer *tr, struct lmc_train_stats *st, lmc_err *err) {
    const struct lmc_train_opts *o = &tr->o;
    if (tr->pp) return lmc_trainer_pp_step(tr, st, err); /* also with tp (pipeline x tensor parallel) */
    if (tr->tp && tr->zero) return lmc_trainer_dist_step(tr, st, err); /* TP x ZeRO 2-3 */
    if (tr->tp) return lmc_trainer_tp_step(tr, st, err);
    if (tr->cp) return lmc_trainer_cp_step(tr, st, err);
    if (tr->ep) return lmc_trainer_ep_step(tr, st, err);
    if (tr->zero || (tr->comm && !o->next_batch)) return lmc_trainer_dist_step(tr, st, err); /* ZeRO: finetune's too */
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    memset(st, 0, sizeof *st);
    lmc_tmodel_zero_grad(tm);
    int64_t per = o->B * o->T;
    /* a batch source: gradients of the summed loss, 1/count in the update.
     * Data parallel (replicated, lmc_trainer_dist_init): every rank draws
     * the world batches of each micro-step and trains on its own, so N
     * ranks see what one process with accumulation N x accum sees */
    float dscale = o->next_batch ? 1.0f : (float)(1.0 / (double)(per * o->accum));
    int world = tr->comm ? tr->comm->world : 1, rank = tr->comm ? tr->comm->rank : 0;
    double sum = 0;
    int64_t count = 0;
    if (tr->acts.distill) lmc_distill_reset(tr->acts.distill);
    for (int64_t k = 0; k < o->accum; k++) {
        if (o->next_batch) {
            for (int j = 0; j < world; j++) {
                lmc_status s = o->next_batch(o->batch_user, tr->in, tr->tg, &tr->acts.segs, &tr->acts.n_segs, err);
                if (s) return s;
                if (j == rank) break; /* later ranks' batches: drawn after this rank's step */
            }
        } else {
            lmc_loader_next(&tr->train, tr->batch);
            split_batch(tr);
        }
        double ls;
        int64_t n;
        lmc_trainer_dist_micro(tr, k, o->accum);
        lmc_status s = lmc_tmodel_step(tm, be, &tr->acts, tr->in, tr->tg, true, dscale, &ls, &n, err);
        if (s) return s;
        lmc_trainer_moe_add(tr, st, k, o->accum);
        sum += ls;
        count += n;
        if (o->next_batch) /* the rest of the global micro-batch */
            for (int j = rank + 1; j < world; j++)
                if ((s = o->next_batch(o->batch_user, tr->in, tr->tg, &tr->acts.segs, &tr->acts.n_segs, err)))
                    return s;
    }
    int64_t t0 = tm->trainable_off;
    if (tr->comm) { /* fixed-order sums: every rank gets the same bits and takes the same step */
        double sc[2] = {sum, (double)count};
        lmc_status s = lmc_trainer_dist_reduce(tr, err);
        if (!s) s = tr->comm->all_reduce(tr->comm, sc, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err);
        if (s) return s;
        sum = sc[0];
        count = (int64_t)sc[1];
    }
    st->loss = sum / (double)(count ? count : 1);
    st->tokens = per * o->accum * world;
    if (tr->acts.distill) {
        const struct lmc_distill *d = tr->acts.distill;
        double nd = (double)(d->count ? d->count : 1);
        st->distill = true;
        st->distill_ce = d->ce_sum / nd;
        st->distill_kl = d->kl_sum / nd;
        st->distill_agree = d->agree_sum / nd;
    }
    /* global norm: one sum over the whole gradient arena (the padding
     * between tensors is zero); clipping as torch.nn.utils.clip_grad_norm_,
     * folded into the update as grad_scale */
    st->grad_norm = sqrt(be->sumsq(be->ctx, tm->g + (t0 - tm->g_off), tm->numel - t0));
    lmc_trainer_apply_update(tr, st, (double)count);
    return LMC_OK;
}

static lmc_status eval_micro(struct lmc_trainer *tr, double *loss_sum, int64_t *count, lmc_err *err) {
    /* validation is the plain cross-entropy, with or without distillation */
    struct lmc_distill *d = tr->acts.distill;
    tr->acts.distill = NULL;
    lmc_status s = lmc_tmodel_step(&tr->tm, tr->be, &tr->acts, tr->in, tr->tg, false, 1.0f, loss_sum, count, err);
    tr->acts.distill = d;
    return s;
}

lmc_status lmc_trainer_eval(struct lmc_trainer *tr, double *loss, lmc_err *err) {
    if (tr->cp) return lmc_trainer_cp_eval(tr, loss, err);
    if (tr->pp) return lmc_trainer_pp_eval(tr, loss, err);
    if (tr->ep) return lmc_trainer_ep_eval(tr, loss, err);
    *loss = NAN;
    if (!tr->val_data || tr->o.eval_batches <= 0) return LMC_OK;
    /* data parallel: the windows one process with batch world x B reads; with the zero module (stage 3
     * gathers parameters: a collective) each rank evaluates every world-th micro-batch and the sums are
     * added */
    int64_t world = tr->comm ? tr->comm->world : 1;
    int64_t share = tr->zero ? world : 1, me = tr->zero ? tr->comm->rank : 0;
    double sc[2];
    lmc_status s = lmc_trainer_eval_sums(tr, world, share, me, eval_micro, sc, err);
    if (!s && tr->zero) s = lmc_zero_sum_f64(tr->zero, sc, 2, err);
    if (s) return s;
    *loss = sc[0] / (sc[1] > 0 ? sc[1] : 1);
    return LMC_OK;
}

enum lmc_param_role lmc_trainer_param_role(enum lmc_role role, const char *name) {
    switch (role) {
    case LMC_ROLE_EMBED: return LMC_PROLE_EMBEDDING;
    case LMC_ROLE_NORM: return LMC_PROLE_NORM;
    case LMC_ROLE_BIAS: return LMC_PROLE_BIAS;
    case LMC_ROLE_MATRIX:
        return lmc_optim_role_guess(name, 2) == LMC_PROLE_HEAD ? LMC_PROLE_HEAD : LMC_PROLE_MATRIX;
    }
    return LMC_PROLE_OTHER;
}

int lmc_trainer_optim_params(const struct lmc_tmodel *tm, bool decay_all, struct lmc_optim_param *params) {
    int n = 0;
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        if (p->frozen) continue; /* a frozen base (LoRA) has no gradient and no optimizer state */
        struct lmc_optim_param *q = &params[n++];
        q->name = p->name;
        q->p = tm->w ? tm->w + p->off : NULL; /* data parallel: the arenas are the zero module's */
        q->g = tm->g ? lmc_tmodel_grad(tm, p) : NULL;
        if (p->ndim == 2) { /* the arena's (out, in) */
            q->rows = p->transposed ? p->shape[1] : p->shape[0];
            q->cols = p->transposed ? p->shape[0] : p->shape[1];
        } else {
            q->rows = 1;
            q->cols = p->numel;
        }
        q->role = lmc_trainer_param_role(p->role, p->name);
        q->decay = lmc_tparam_decays(p, decay_all);
    }
    return n;
}

void lmc_trainer_describe_optim(const struct lmc_trainer *tr, char *buf, size_t cap) {
    if (tr->have_opt) {
        int w = snprintf(buf, cap, "optimizer %s: ", lmc_optim_kind_name(tr->opt.cfg.kind));
        size_t off = w > 0 && (size_t)w < cap ? (size_t)w : 0;
        lmc_optim_describe(&tr->opt, buf + off, cap - off);
        return;
    }
    /* AdamW: the trainer's own arenas, described as lmc_optim_info does */
    struct lmc_optim_param *pp = calloc((size_t)tr->tm.n_params, sizeof *pp);
    struct lmc_optim_cfg c;
    lmc_err err = {0};
    lmc_optim_cfg_default(&c, LMC_OPTIM_ADAMW);
    c.adamw = tr->o.adamw;
    int np = pp ? lmc_trainer_optim_params(&tr->tm, tr->o.decay == LMC_DECAY_ALL, pp) : 0;
    if (!pp || lmc_optim_info(&c, pp, np, buf, cap, NULL, &err))
        snprintf(buf, cap, "optimizer adamw");
    free(pp);
}

double lmc_trainer_flops_per_token(const struct lmc_trainer *tr) {
    const struct lmc_config *c = &tr->tm.cfg;
    double n = (double)tr->tm.numel;
    /* forward+backward: 6 flops per parameter, attention scores and mix
     * 12 L T C (causal halves it; counted in full as is customary) */
    return 6.0 * n + 12.0 * (double)c->num_layers * (double)tr->o.T *
                         (double)(c->num_heads * c->head_dim);
}
