/* dropout.c — inverted dropout on the CPU (backend.h dropout): the mask
 * of each element is the counter-based lmc_dropout_keep of (seed, offset
 * + i), so the op is its own backward (same seed, applied to the
 * gradient). Rows of 4096 elements per task on the thread pool. */
#include "ops/cpu/ops_cpu.h"
#include "core/rng.h"

#define DROP_CHUNK 4096

struct drop_job {
    float *y;
    const float *x;
    int64_t n, offset;
    uint32_t thr;
    float scale;
    uint64_t seed;
};

static void drop_task(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct drop_job *j = arg;
    int64_t a = task * DROP_CHUNK, e = LMC_MIN(j->n, a + DROP_CHUNK);
    for (int64_t i = a; i < e; i++)
        j->y[i] = lmc_dropout_keep(j->seed, (uint64_t)(j->offset + i), j->thr) ? j->x[i] * j->scale : 0.0f;
}

void lmc_cpu_dropout(void *ctx, float *y, const float *x, int64_t n, float p, uint64_t seed, int64_t offset) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n >= 0 && offset >= 0 && p >= 0.0f && p < 1.0f);
    if (n == 0) return;
    struct drop_job j = {y, x, n, offset, lmc_dropout_threshold(p), (float)(1.0 / (1.0 - (double)p)), seed};
    int64_t tasks = (n + DROP_CHUNK - 1) / DROP_CHUNK;
    if (tasks == 1) drop_task(&j, 0, 0);
    else lmc_pool_run(c->pool, tasks, drop_task, &j);
}
