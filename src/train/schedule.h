/* schedule.h — learning-rate schedules as a pure function of the step:
 * constant, linear warmup then cosine decay to a minimum, linear decay, and
 * warmup-stable-decay (constant after warmup, linear decay over the last
 * decay_steps). Steps are 0-based; step s gets lmc_schedule_lr(s). */
#ifndef LMC_TRAIN_SCHEDULE_H
#define LMC_TRAIN_SCHEDULE_H

#include "lmc.h"

#include <stdint.h>

enum lmc_sched_kind { LMC_SCHED_CONSTANT, LMC_SCHED_COSINE, LMC_SCHED_LINEAR, LMC_SCHED_WSD };

struct lmc_schedule {
    enum lmc_sched_kind kind;
    double lr_max;        /* peak rate, reached at the end of warmup */
    double lr_min;        /* final rate of cosine / linear / wsd */
    int64_t warmup;       /* steps of linear warmup from lr_max/warmup to lr_max */
    int64_t total;        /* total steps; the decay ends at step total-1 */
    int64_t decay_steps;  /* WSD: length of the final decay (0 = 20% of total) */
};

/* Checks the fields (rates finite and >= 0, lr_min <= lr_max, warmup <=
 * total, total > 0); LMC_ERR_ARG naming the field otherwise. */
lmc_status lmc_schedule_check(const struct lmc_schedule *s, lmc_err *err);
/* Parses "cosine" | "linear" | "wsd" | "constant"; false if unknown. */
int lmc_schedule_kind_parse(const char *name, enum lmc_sched_kind *out);
/* Learning rate at step (0-based). Steps past total keep the last value. */
double lmc_schedule_lr(const struct lmc_schedule *s, int64_t step);

#endif
