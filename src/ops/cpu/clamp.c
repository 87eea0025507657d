/* clamp.c — y = min(max(x, -c), c) elementwise on the CPU (backend.h
 * clamp; OLMoE's clip_qkv) and its backward dx = dy where -c <= x <= c,
 * 0 elsewhere (torch.clamp's gradient, the bounds included), x the
 * values before clamping. Chunks of 4096 elements per task. */
#include "ops/cpu/ops_cpu.h"

#define CLAMP_CHUNK 4096

struct clamp_job {
    float *y;
    const float *x, *dy;
    int64_t n;
    float c;
};

static void clamp_task(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct clamp_job *j = arg;
    int64_t a = task * CLAMP_CHUNK, e = LMC_MIN(j->n, a + CLAMP_CHUNK);
    float c = j->c;
    if (j->dy) {
        for (int64_t i = a; i < e; i++) j->y[i] = (j->x[i] >= -c && j->x[i] <= c) ? j->dy[i] : 0.0f;
        return;
    }
    for (int64_t i = a; i < e; i++) {
        float v = j->x[i];
        j->y[i] = v > c ? c : v < -c ? -c : v;
    }
}

static void run(struct lmc_cpu_ctx *ctx, struct clamp_job *j) {
    LMC_ASSERT(j->n >= 0 && j->c > 0.0f);
    if (j->n == 0) return;
    int64_t tasks = (j->n + CLAMP_CHUNK - 1) / CLAMP_CHUNK;
    if (tasks == 1) clamp_task(j, 0, 0);
    else lmc_pool_run(ctx->pool, tasks, clamp_task, j);
}

void lmc_cpu_clamp(void *ctx, float *y, const float *x, int64_t n, float c) {
    struct clamp_job j = {y, x, NULL, n, c};
    run(ctx, &j);
}

void lmc_cpu_clamp_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n, float c) {
    struct clamp_job j = {dx, x, dy, n, c};
    run(ctx, &j);
}
