/* trainer_dist.c — the trainer's data-parallel step (trainer.h,
 * lmc_trainer_dist_init): ZeRO stages 0-3 of src/dist/zero.h over the
 * model's parameter arena as one unit. Each rank runs forward and backward
 * on its rows of the global micro-batch into the model's own gradient
 * arena; on the last micro-step the gradient is handed to the zero module
 * (reduce / reduce-scatter in the communicator's fixed order), which
 * computes the global norm, runs AdamW on this rank's shard and gathers
 * the parameters, copied back into the model's arena for the next
 * forward. Another optimizer kind (--optim) runs replicated (--zero 0):
 * the gradient arena all-reduced in the communicator's fixed order, then
 * the same lmc_optim step on every rank. A batch source (o.next_batch, lmc
 * finetune) also runs replicated, in lmc_trainer_step. Host backends only
 * (the copies are the backend's download, a memcpy there). */
#include "train/trainer_internal.h"
#include "core/core.h"
#include "dist/comm.h"
#include "dist/zero.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lmc_trainer_dist_free(struct lmc_trainer *tr) {
    if (tr->zero) lmc_zero_free(tr->zero);
    free(tr->gbatch);
    tr->zero = NULL;
    tr->gbatch = NULL;
    tr->comm = NULL;
}

/* the zero module's parameters -> the model's arena */
static lmc_status pull_params(struct lmc_trainer *tr, lmc_err *err) {
    float *p = NULL;
    lmc_status s = lmc_zero_unit_prefetch(tr->zero, 0, err);
    if (!s) s = lmc_zero_unit_params(tr->zero, 0, &p, err);
    if (s) return s;
    tr->be->download(tr->be->ctx, tr->tm.w, p, (size_t)tr->tm.numel * sizeof(float));
    lmc_zero_unit_release(tr->zero, 0);
    return LMC_OK;
}

static lmc_status global_loader(struct lmc_trainer *tr, lmc_err *err);

lmc_status lmc_trainer_dist_init(struct lmc_trainer *tr, struct lmc_comm *comm, int stage, const char *desc,
                                 lmc_err *err) {
    const struct lmc_tmodel *tm = &tr->tm;
    if (stage < 0 || stage > 3) return lmc_err_set(err, LMC_ERR_ARG, "--zero %d: expected 0, 1, 2 or 3", stage);
    if (tr->have_opt && stage > 0)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--zero %d shards AdamW only (the zero module's optimizer); "
                           "--optim %s runs with --zero 0 (replicated)", stage, lmc_optim_kind_name(tr->opt.cfg.kind));
    if (strcmp(tr->be->name, "cpu") || comm->device_buffers)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "data-parallel training runs on the CPU backend only for now "
                           "(backend %s)", tr->be->name);
    lmc_status s = lmc_dist_check_same(comm, "training configuration", desc, err);
    if (s) return s;
    if (tr->o.next_batch) { /* a batch source (lmc finetune): replicated, lmc_trainer_step */
        if (stage > 0)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "--zero %d: data-parallel fine-tuning runs replicated "
                               "(--zero 0: gradients all-reduced, the same step on every rank)", stage);
        tr->comm = comm;
        tr->zero_stage = 0;
        return LMC_OK;
    }
    if (tr->have_opt) { /* replicated: gradients all-reduced, the optimizer run alike on every rank */
        tr->comm = comm;
        tr->zero_stage = 0;
        return global_loader(tr, err);
    }
    /* the tensor list: the parameters in arena order, the padding between
     * them as tensors of their own (zero, and zero gradients) */
    struct lmc_zero_tensor *t = calloc((size_t)tm->n_params * 2 + 1, sizeof *t);
    char (*pad)[32] = calloc((size_t)tm->n_params + 1, sizeof *pad);
    if (!t || !pad) {
        free(t);
        free(pad);
        return lmc_err_set(err, LMC_ERR_OOM, "zero tensor list: out of memory");
    }
    int n = 0;
    int64_t at = 0;
    for (int i = 0; i <= tm->n_params && !s; i++) {
        int64_t off = i < tm->n_params ? tm->params[i].off : tm->numel;
        if (off < at) {
            s = lmc_err_set(err, LMC_ERR_ARG, "parameter %s is out of arena order", tm->params[i].name);
            break;
        }
        if (off > at) {
            snprintf(pad[i], sizeof pad[i], "pad.%d", i);
            t[n++] = (struct lmc_zero_tensor){pad[i], at, off - at, 0, false, 0, {0}};
        }
        if (i == tm->n_params) break;
        const struct lmc_tparam *p = &tm->params[i];
        t[n] = (struct lmc_zero_tensor){p->name, p->off, p->numel, 0, lmc_tparam_decays(p, tr->o.decay == LMC_DECAY_ALL),
                                        p->ndim, {p->shape[0], p->ndim == 2 ? p->shape[1] : 0}};
        n++;
        at = p->off + p->numel;
    }
    struct lmc_zero_cfg zc = {stage, t, n, false};
    if (!s) s = lmc_zero_init(&tr->zero, &zc, comm, (struct lmc_backend *)tr->be, tm->w, err);
    free(t);
    free(pad);
    if (s) {
        tr->zero = NULL;
        return s;
    }
    tr->comm = comm;
    tr->zero_stage = stage;
    s = global_loader(tr, err);
    /* the moments live in the zero module */
    if (!s && tr->m) tr->be->free(tr->be->ctx, tr->m);
    if (!s && tr->v) tr->be->free(tr->be->ctx, tr->v);
    if (!s) tr->m = tr->v = NULL;
    return s;
}

/* the loader reads global micro-batches: world x B rows */
static lmc_status global_loader(struct lmc_trainer *tr, lmc_err *err) {
    lmc_status s = LMC_OK;
    int64_t gB = (int64_t)tr->comm->world * tr->o.B;
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
    lmc_tmodel_zero_grad(tm);
    int64_t per = o->B * o->T, row = o->T + 1;
    float dscale = (float)(1.0 / ((double)per * (double)world * (double)o->accum));
    double sums[2] = {0, 0}; /* loss sum, token count */
    lmc_status s = LMC_OK;
    for (int64_t k = 0; k < o->accum; k++) {
        lmc_loader_next(&tr->train, tr->gbatch);
        memcpy(tr->batch, tr->gbatch + (int64_t)rank * o->B * row, (size_t)(o->B * row) * sizeof(int32_t));
        lmc_trainer_split_batch(tr);
        double ls;
        int64_t cnt;
        if ((s = lmc_tmodel_step(tm, be, &tr->acts, tr->in, tr->tg, true, dscale, &ls, &cnt, err))) return s;
        lmc_trainer_moe_add(tr, st, k, o->accum);
        sums[0] += ls;
        sums[1] += (double)cnt;
    }
    st->tokens = per * world * o->accum;
    st->lr = lmc_schedule_lr(&o->sched, tr->step);
    if (!tr->zero) { /* replicated (another optimizer kind): all-reduce, then the same step everywhere */
        if ((s = tr->comm->all_reduce(tr->comm, tm->g, tm->numel, LMC_DTYPE_F32, LMC_REDUCE_SUM, err)) ||
            (s = tr->comm->all_reduce(tr->comm, sums, 2, LMC_DTYPE_F64, LMC_REDUCE_SUM, err)))
            return s;
        st->loss = sums[0] / (sums[1] > 0 ? sums[1] : 1);
        st->grad_norm = sqrt(be->sumsq(be->ctx, tm->g, tm->numel));
        if (!isfinite(st->grad_norm)) st->skipped = true;
        else lmc_optim_step(&tr->opt, st->lr, tr->step + 1, lmc_grad_clip_scale(st->grad_norm, o->clip));
        tr->step++;
        return LMC_OK;
    }
    float *g = NULL;
    if ((s = lmc_zero_unit_grads(tr->zero, 0, &g, err))) return s;
    be->download(be->ctx, g, tm->g, (size_t)tm->numel * sizeof(float));
    if ((s = lmc_zero_unit_grads_done(tr->zero, 0, err))) return s;
    if ((s = lmc_zero_grad_norm(tr->zero, &st->grad_norm, err))) return s;
    if ((s = lmc_zero_sum_f64(tr->zero, sums, 2, err))) return s;
    st->loss = sums[0] / (sums[1] > 0 ? sums[1] : 1);
    if (!isfinite(st->grad_norm)) { /* the same on every rank */
        st->skipped = true;
        tr->step++;
        return LMC_OK;
    }
    float grad_scale = lmc_grad_clip_scale(st->grad_norm, o->clip);
    struct lmc_adamw_step sd, sn;
    lmc_adamw_step_make(&o->adamw, tr->step + 1, st->lr, true, grad_scale, &sd);
    lmc_adamw_step_make(&o->adamw, tr->step + 1, st->lr, false, grad_scale, &sn);
    if ((s = lmc_zero_apply(tr->zero, &sd, &sn, err)) || (s = pull_params(tr, err))) return s;
    tr->step++;
    return LMC_OK;
}

lmc_status lmc_trainer_dist_save(struct lmc_trainer *tr, const char *zero_dir, lmc_err *err) {
    if (!tr->zero) return LMC_OK; /* replicated: rank 0's checkpoint holds the whole state */
    return lmc_zero_save(tr->zero, zero_dir, tr->step, err);
}

lmc_status lmc_trainer_dist_load(struct lmc_trainer *tr, const char *zero_dir, int64_t step, lmc_err *err) {
    int64_t got = -1;
    lmc_status s = lmc_zero_load(tr->zero, zero_dir, &got, err);
    if (s) return s;
    if (got != step)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: the sharded optimizer state is of step %lld, the checkpoint of "
                           "step %lld (only the newest sharded state is kept: resume from the newest checkpoint)",
                           zero_dir, (long long)got, (long long)step);
    return pull_params(tr, err);
}
