/* schedule.c — learning-rate schedules (see schedule.h for the shapes). */
#include "train/schedule.h"

#include <math.h>
#include <string.h>

lmc_status lmc_schedule_check(const struct lmc_schedule *s, lmc_err *err) {
    if (!(s->lr_max >= 0) || !isfinite(s->lr_max))
        return lmc_err_set(err, LMC_ERR_ARG, "schedule: lr %g: expected a finite rate >= 0", s->lr_max);
    if (!(s->lr_min >= 0) || s->lr_min > s->lr_max)
        return lmc_err_set(err, LMC_ERR_ARG, "schedule: min lr %g: expected 0 <= min lr <= lr (%g)", s->lr_min,
                           s->lr_max);
    if (s->total <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "schedule: total steps %lld: expected > 0", (long long)s->total);
    if (s->warmup < 0 || s->warmup > s->total)
        return lmc_err_set(err, LMC_ERR_ARG, "schedule: warmup %lld: expected 0..total steps (%lld)",
                           (long long)s->warmup, (long long)s->total);
    if (s->decay_steps < 0 || s->decay_steps > s->total - s->warmup)
        return lmc_err_set(err, LMC_ERR_ARG, "schedule: decay steps %lld: expected 0..total-warmup (%lld)",
                           (long long)s->decay_steps, (long long)(s->total - s->warmup));
    return LMC_OK;
}

int lmc_schedule_kind_parse(const char *name, enum lmc_sched_kind *out) {
    static const struct { const char *n; enum lmc_sched_kind k; } t[] = {
        {"constant", LMC_SCHED_CONSTANT}, {"cosine", LMC_SCHED_COSINE},
        {"linear", LMC_SCHED_LINEAR},     {"wsd", LMC_SCHED_WSD},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(name, t[i].n)) {
            *out = t[i].k;
            return 1;
        }
    return 0;
}

double lmc_schedule_lr(const struct lmc_schedule *s, int64_t step) {
    if (step < 0) step = 0;
    if (step < s->warmup) return s->lr_max * (double)(step + 1) / (double)s->warmup;
    if (step >= s->total) step = s->total - 1;
    /* progress runs from 0 at the first post-warmup step to 1 at the last step */
    int64_t span = s->total - 1 - s->warmup;
    double prog = span > 0 ? (double)(step - s->warmup) / (double)span : 1.0;
    switch (s->kind) {
    case LMC_SCHED_CONSTANT:
        return s->lr_max;
    case LMC_SCHED_COSINE:
        return s->lr_min + 0.5 * (s->lr_max - s->lr_min) * (1.0 + cos(M_PI * prog));
    case LMC_SCHED_LINEAR:
        return s->lr_max + (s->lr_min - s->lr_max) * prog;
    case LMC_SCHED_WSD: {
        int64_t d = s->decay_steps > 0 ? s->decay_steps : (s->total - s->warmup) / 5;
        if (d < 1) d = 1;
        int64_t start = s->total - d; /* first decaying step */
        if (step < start) return s->lr_max;
        double q = d > 1 ? (double)(step - start + 1) / (double)d : 1.0;
        return s->lr_max + (s->lr_min - s->lr_max) * q;
    }
    }
    return s->lr_max;
}
