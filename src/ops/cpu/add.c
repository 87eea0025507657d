/* add.c — y[i] = a[i] + b[i]; y may alias a or b. */
#include "ops/cpu/ops_cpu.h"

struct add_job {
    float *y;
    const float *a, *b;
    int64_t n, n_tasks;
};

static void add_task(void *arg, int64_t t, int thread) {
    const struct add_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    int64_t i = lo;
#ifdef __AVX2__
    for (; i + 8 <= hi; i += 8)
        _mm256_storeu_ps(j->y + i, _mm256_add_ps(_mm256_loadu_ps(j->a + i),
                                                 _mm256_loadu_ps(j->b + i)));
#endif
    for (; i < hi; i++) j->y[i] = j->a[i] + j->b[i];
}

void lmc_cpu_add(void *ctx, float *y, const float *a, const float *b, int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct add_job j = {y, a, b, n, 1};
    j.n_tasks = lmc_cpu_ntasks(c, n, 32768, 1);
    lmc_pool_run(c->pool, j.n_tasks, add_task, &j);
}
