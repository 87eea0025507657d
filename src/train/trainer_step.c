/* trainer_step.c — what the one-process, context-, expert-, tensor- and
 * pipeline-parallel trainers share (see trainer_step.h): a data rank's next
 * micro-batch, the end of a step (scale, clipping, schedule, the optimizer
 * update) and the validation loop. The arithmetic is each caller's own, in
 * its order: runs compare bit for bit across the trainers. */
#include "train/trainer_step.h"
#include "train/trainer_internal.h"
#include "core/core.h"

#include <math.h>
#include <string.h>
#include <time.h>

double lmc_trainer_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

lmc_status lmc_trainer_draw_skip(struct lmc_trainer *tr, int j0, int j1, const char *no_pack, lmc_err *err) {
    const struct lmc_train_opts *o = &tr->o;
    for (int j = j0; j < j1; j++) {
        const int64_t *segs = NULL;
        int64_t n_segs = 0;
        lmc_status s = o->next_batch(o->batch_user, tr->batch, tr->batch, &segs, &n_segs, err);
        if (s) return s;
        if (no_pack && segs && n_segs > 1)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: packed sequences (--pack) are not supported yet", no_pack);
    }
    return LMC_OK;
}

lmc_status lmc_trainer_next_micro(struct lmc_trainer *tr, int dw, int dr, int32_t *in, int32_t *tg,
                                  const char *no_pack, bool rest, lmc_err *err) {
    const struct lmc_train_opts *o = &tr->o;
    if (o->next_batch) {
        lmc_status s = lmc_trainer_draw_skip(tr, 0, dr, no_pack, err);
        if (s) return s;
        if (!no_pack) {
            s = o->next_batch(o->batch_user, in, tg, &tr->acts.segs, &tr->acts.n_segs, err);
        } else {
            const int64_t *segs = NULL;
            int64_t n_segs = 0;
            s = o->next_batch(o->batch_user, in, tg, &segs, &n_segs, err);
            if (!s && segs && n_segs > 1)
                s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: packed sequences (--pack) are not supported yet",
                                no_pack);
        }
        return s || !rest ? s : lmc_trainer_draw_skip(tr, dr + 1, dw, no_pack, err);
    }
    tr->acts.segs = NULL; /* loader windows are whole rows */
    tr->acts.n_segs = 0;
    int64_t row = o->B * (o->T + 1);
    if (dw > 1) {
        lmc_loader_next(&tr->train, tr->gbatch);
        memcpy(tr->batch, tr->gbatch + (int64_t)dr * row, (size_t)row * sizeof(int32_t));
    } else {
        lmc_loader_next(&tr->train, tr->batch);
    }
    lmc_trainer_split_batch(tr);
    if (in != tr->in) memcpy(in, tr->in, sizeof(int32_t) * (size_t)(o->B * o->T));
    if (tg != tr->tg) memcpy(tg, tr->tg, sizeof(int32_t) * (size_t)(o->B * o->T));
    return LMC_OK;
}

void lmc_trainer_apply_update(struct lmc_trainer *tr, struct lmc_train_stats *st, double count) {
    (void)lmc_trainer_apply_update_with(tr, st, count, NULL, NULL); /* no u->optim: nothing fails */
}

lmc_status lmc_trainer_apply_update_with(struct lmc_trainer *tr, struct lmc_train_stats *st, double count,
                                         const struct lmc_trainer_update *u, lmc_err *err) {
    struct lmc_tmodel *tm = &tr->tm;
    const struct lmc_backend *be = tr->be;
    const struct lmc_train_opts *o = &tr->o;
    double inv = 1.0;
    if (o->next_batch) { /* the norm and the update of the mean over the counted targets */
        inv = 1.0 / (count > 0 ? count : 1);
        st->grad_norm *= inv;
    }
    float grad_scale = (float)(lmc_grad_clip_scale(st->grad_norm, o->clip) * inv);
    st->lr = lmc_schedule_lr(&o->sched, tr->step);
    if (!isfinite(st->grad_norm)) { /* the same on every rank */
        st->skipped = true;
        tr->step++;
        return LMC_OK;
    }
    lmc_status s = LMC_OK;
    const double t_opt = lmc_time_now(), c_opt = lmc_trainer_cpu_s();
    const int64_t gx0 = tr->have_opt ? tr->opt.galore_exact_refreshes : 0,
                  gs0 = tr->have_opt ? tr->opt.galore_subspace_refreshes : 0;
    if (tr->have_opt && u && u->optim) {
        s = u->optim(tr, st->lr, tr->step + 1, grad_scale, err);
    } else if (tr->have_opt) {
        lmc_optim_step(&tr->opt, st->lr, tr->step + 1, grad_scale);
    } else {
        int64_t t0 = tm->trainable_off;
        for (int i = 0; i < tm->n_params; i++) {
            const struct lmc_tparam *p = &tm->params[i];
            if (p->frozen || p->external) continue; /* external tensors are frozen too: not in the arenas */
            if (u && u->own && !u->own[i]) continue;
            int64_t lo = p->off, hi = p->off + p->numel, mo = p->off - t0;
            const float *g = lmc_tmodel_grad(tm, p);
            if (u && u->g) { /* the tensor's part in the chunk */
                lo = LMC_MAX(u->c0, lo), hi = LMC_MIN(u->c1, hi);
                if (lo >= hi) continue;
                g = u->g + (lo - u->c0), mo = lo - u->c0;
            }
            struct lmc_adamw_step as;
            lmc_adamw_step_make(&o->adamw, tr->step + 1, st->lr, lmc_tparam_decays(p, o->decay == LMC_DECAY_ALL),
                                grad_scale, &as);
            be->adamw(be->ctx, tm->w + lo, g, tr->m + mo, tr->v + mo, hi - lo, &as);
        }
    }
    be->sync(be->ctx); /* the step is done when it returns (timing, errors) */
    st->optim_s = lmc_time_now() - t_opt;
    st->optim_cpu_s = lmc_trainer_cpu_s() - c_opt;
    if (tr->have_opt && tr->opt.cfg.kind == LMC_OPTIM_GALORE) {
        st->galore = true;
        st->galore_exact = tr->opt.galore_exact_refreshes - gx0;
        st->galore_subspace = tr->opt.galore_subspace_refreshes - gs0;
    }
    tr->step++;
    return s;
}

lmc_status lmc_trainer_eval_sums(struct lmc_trainer *tr, int64_t groups, int64_t share, int64_t me,
                                 lmc_trainer_eval_fn fn, double sc[2], lmc_err *err) {
    sc[0] = sc[1] = 0;
    lmc_status s = lmc_loader_seek(&tr->val, 0, 0, err);
    if (s) return s;
    tr->acts.segs = NULL; /* validation windows are whole rows */
    tr->acts.n_segs = 0;
    int64_t nb = LMC_MIN(tr->o.eval_batches, LMC_MAX(1, tr->val.n_windows / (tr->o.B * groups))) * groups;
    for (int64_t k = 0; k < nb; k++) {
        lmc_loader_next(&tr->val, tr->batch);
        if (k % share != me) continue;
        lmc_trainer_split_batch(tr);
        double ls;
        int64_t n;
        if ((s = fn(tr, &ls, &n, err))) return s;
        sc[0] += ls;
        sc[1] += (double)n;
    }
    return LMC_OK;
}
