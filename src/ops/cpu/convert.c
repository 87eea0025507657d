/* convert.c — copy with conversion between F32 and BF16 on the CPU
 * (backend.h convert: training's bf16-saved activations): to BF16 rounds
 * to nearest even (lmc_f32_to_bf16), from BF16 is exact, F32 to F32
 * copies. Chunks of 16384 elements per task. */
#include "ops/cpu/ops_cpu.h"
#include "core/dtype.h"

#include <string.h>

#define CVT_CHUNK 16384

struct cvt_job {
    void *dst;
    const void *src;
    enum lmc_dtype dd, sd;
    int64_t n;
};

static void cvt_task(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct cvt_job *j = arg;
    int64_t a = task * CVT_CHUNK, e = LMC_MIN(j->n, a + CVT_CHUNK);
    if (j->dd == LMC_DTYPE_F32 && j->sd == LMC_DTYPE_F32) {
        memcpy((float *)j->dst + a, (const float *)j->src + a, (size_t)(e - a) * sizeof(float));
    } else if (j->dd == LMC_DTYPE_BF16) {
        uint16_t *d = j->dst;
        const float *s = j->src;
        for (int64_t i = a; i < e; i++) d[i] = lmc_f32_to_bf16(s[i]);
    } else {
        float *d = j->dst;
        const uint16_t *s = j->src;
        for (int64_t i = a; i < e; i++) d[i] = lmc_bf16_to_f32(s[i]);
    }
}

void lmc_cpu_convert(void *ctx, void *dst, enum lmc_dtype dst_dt, const void *src, enum lmc_dtype src_dt, int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n >= 0 && (dst_dt == LMC_DTYPE_F32 || dst_dt == LMC_DTYPE_BF16) &&
               (src_dt == LMC_DTYPE_F32 || src_dt == LMC_DTYPE_BF16) &&
               (dst_dt == LMC_DTYPE_F32 || src_dt == LMC_DTYPE_F32));
    if (n == 0) return;
    struct cvt_job j = {dst, src, dst_dt, src_dt, n};
    int64_t tasks = (n + CVT_CHUNK - 1) / CVT_CHUNK;
    if (tasks == 1) cvt_task(&j, 0, 0);
    else lmc_pool_run(c->pool, tasks, cvt_task, &j);
}
