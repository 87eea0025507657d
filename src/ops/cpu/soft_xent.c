/* soft_xent.c — the soft-target cross-entropy of knowledge distillation
 * on the CPU (backend.h soft_xent): per row of student logits s and
 * teacher logits t, the hard-label cross-entropy, KL(softmax(t/T) ||
 * softmax(s/T)), top-1 agreement, and in place the gradient of
 * (1 - alpha) CE + alpha T^2 KL. Three passes over a row (maxima, the four
 * sums in double, the gradient); rows split over the threads in fixed
 * slices, so results do not depend on the thread count. The CUDA twin is
 * ops/cuda/soft_xent.cu. */
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <string.h>

struct soft_job {
    float *ce, *kl, *agree, *s;
    const float *t;
    const int32_t *tg;
    int64_t R, V, n_tasks;
    float alpha, temp, dscale;
    int grad;
};

static void soft_row(const struct soft_job *j, int64_t r) {
    const int64_t V = j->V;
    float *s = j->s + r * V;
    const float *t = j->t + r * V;
    const int32_t tg = j->tg[r];
    if (tg < 0) { /* not counted: no loss, no gradient */
        j->ce[r] = j->kl[r] = j->agree[r] = 0.0f;
        if (j->grad) memset(s, 0, sizeof(float) * (size_t)V);
        return;
    }
    float ms = -INFINITY, mt = -INFINITY;
    int64_t as = 0, at = 0;
    for (int64_t v = 0; v < V; v++) {
        if (s[v] > ms) ms = s[v], as = v;
        if (t[v] > mt) mt = t[v], at = v;
    }
    const float it = 1.0f / j->temp;
    double s1 = 0, sS = 0, sT = 0, x = 0;
    for (int64_t v = 0; v < V; v++) {
        const float ds = s[v] - ms, dt = t[v] - mt;
        const double eT = (double)expf(dt * it);
        s1 += (double)expf(ds);
        sS += (double)expf(ds * it);
        sT += eT;
        x += eT * ((double)(dt * it) - (double)(ds * it));
    }
    j->ce[r] = (float)(log(s1) - (double)(s[tg] - ms));
    j->kl[r] = (float)(x / sT - log(sT) + log(sS));
    j->agree[r] = as == at ? 1.0f : 0.0f;
    if (!j->grad) return;
    const double a1 = (1.0 - (double)j->alpha) * (double)j->dscale;
    const double a2 = (double)j->alpha * (double)j->temp * (double)j->dscale;
    for (int64_t v = 0; v < V; v++) {
        const float ds = s[v] - ms, dt = t[v] - mt;
        double g = a1 * ((double)expf(ds) / s1) +
                   a2 * ((double)expf(ds * it) / sS - (double)expf(dt * it) / sT);
        if (v == tg) g -= a1;
        s[v] = (float)g;
    }
}

static void soft_task(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct soft_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->R, j->n_tasks, task, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) soft_row(j, r);
}

void lmc_cpu_soft_xent(void *ctx, float *ce, float *kl, float *agree, float *s, const float *t,
                       const int32_t *targets, int64_t R, int64_t V, float alpha, float temp, float dscale,
                       int grad) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(V > 0 && temp > 0.0f);
    if (R <= 0) return;
    struct soft_job j = {ce, kl, agree, s, t, targets, R, V, 1, alpha, temp, dscale, grad};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, R * V, 1 << 14, 1), R);
    lmc_pool_run(c->pool, j.n_tasks, soft_task, &j);
}
