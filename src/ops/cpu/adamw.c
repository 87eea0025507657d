/* adamw.c — the optimizer's backend ops on the CPU (see backend.h): zero,
 * a deterministic sum of squares (fixed chunks summed in order, so the
 * result depends on n alone, not on the thread count) and the element-wise
 * AdamW update (lmc_adamw_apply, the one implementation of the formula:
 * train/adamw.c's lmc_adamw_update runs it too). */
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SUMSQ_CHUNK ((int64_t)1 << 16)

void lmc_cpu_zero(void *ctx, void *p, size_t bytes) {
    (void)ctx;
    if (bytes) memset(p, 0, bytes);
}

struct sumsq_job {
    const float *x;
    int64_t n;
    double *part;
};

static void sumsq_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct sumsq_job *j = arg;
    int64_t lo = t * SUMSQ_CHUNK, hi = LMC_MIN(j->n, lo + SUMSQ_CHUNK);
    double s[4] = {0, 0, 0, 0};
    int64_t i = lo;
    for (; i + 4 <= hi; i += 4)
        for (int u = 0; u < 4; u++) s[u] += (double)j->x[i + u] * (double)j->x[i + u];
    for (; i < hi; i++) s[0] += (double)j->x[i] * (double)j->x[i];
    j->part[t] = (s[0] + s[1]) + (s[2] + s[3]);
}

double lmc_cpu_sumsq(void *ctx, const float *x, int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return 0;
    int64_t chunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double one, *part = chunks == 1 ? &one : malloc((size_t)chunks * sizeof *part);
    LMC_ASSERT(part);
    struct sumsq_job j = {x, n, part};
    if (chunks == 1) sumsq_task(&j, 0, 0);
    else lmc_pool_run(c->pool, chunks, sumsq_task, &j);
    double s = 0;
    for (int64_t t = 0; t < chunks; t++) s += part[t];
    if (part != &one) free(part);
    return s;
}

void lmc_adamw_apply(float *p, const float *g, float *m, float *v, int64_t n,
                     const struct lmc_adamw_step *s) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * s->grad_scale;
        float pi = p[i] * s->decay_mul;
        float mi = m[i] + s->one_minus_b1 * (gi - m[i]); /* torch's exp_avg.lerp_(g, 1 - beta1) */
        float vi = v[i] * s->beta2 + s->one_minus_b2 * gi * gi;
        float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - s->step_size * (mi / denom);
    }
}

struct adamw_job {
    float *p, *m, *v;
    const float *g;
    int64_t n, n_tasks;
    const struct lmc_adamw_step *s;
};

static void adamw_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct adamw_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    if (hi > lo) lmc_adamw_apply(j->p + lo, j->g + lo, j->m + lo, j->v + lo, hi - lo, j->s);
}

/* element-wise, so any split of the elements among threads gives the same bits */
void lmc_cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                   const struct lmc_adamw_step *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct adamw_job j = {p, m, v, g, n, 1, s};
    j.n_tasks = lmc_cpu_ntasks(c, n, 1 << 15, 1);
    if (j.n_tasks == 1) lmc_adamw_apply(p, g, m, v, n, s);
    else lmc_pool_run(c->pool, j.n_tasks, adamw_task, &j);
}
