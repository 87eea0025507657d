/* qmatmul_f.c — the CPU backend's float products over a quantized weight
 * (QLoRA training, backend.h qmatmul_f / qmatmul_f_bwd): W is expanded a
 * tile of QF_TILE rows at a time into the thread's scratch
 * (lmc_qweight_dequant_rows) and multiplied by OpenBLAS sgemm in float,
 * so no whole matrix is ever resident in float and the numbers are a
 * dense F32 linear's. Forward: one task per tile of output columns.
 * Backward: one task per chunk of rows of dx, each running every tile in
 * order (deterministic; the tile is expanded once per task). */
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"

#include <cblas.h>

#define QF_TILE 64

struct qf_job {
    struct lmc_cpu_ctx *c;
    const struct lmc_qweight *w;
    float *y;
    const float *x, *bias;
    int64_t M, mc;
    int accum;
};

static void qf_fwd_task(void *arg, int64_t task, int thread) {
    struct qf_job *j = arg;
    const struct lmc_qweight *w = j->w;
    int64_t n0 = task * QF_TILE, nt = LMC_MIN(QF_TILE, w->n - n0);
    float *tile = j->c->scratch[thread];
    lmc_qweight_dequant_rows(w, n0, nt, tile);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->M, (int)nt, (int)w->k, 1.0f, j->x, (int)w->k,
                tile, (int)w->k, 0.0f, j->y + n0, (int)w->n);
    if (j->bias)
        for (int64_t m = 0; m < j->M; m++)
            for (int64_t n = 0; n < nt; n++) j->y[m * w->n + n0 + n] += j->bias[n0 + n];
}

void lmc_cpu_qmatmul_f(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                       const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(M >= 0 && w->n > 0 && w->k > 0 && w->n < INT32_MAX && w->k < INT32_MAX && M < INT32_MAX);
    if (M == 0) return;
    lmc_cpu_scratch_reserve(c, (size_t)(QF_TILE * w->k));
    struct qf_job j = {.c = c, .w = w, .y = y, .x = x, .bias = bias, .M = M};
    lmc_pool_run(c->pool, (w->n + QF_TILE - 1) / QF_TILE, qf_fwd_task, &j);
}

/* dx rows [m0, m0 + mc) = sum over tiles of dy[:, tile] @ tile. */
static void qf_bwd_task(void *arg, int64_t task, int thread) {
    struct qf_job *j = arg;
    const struct lmc_qweight *w = j->w;
    int64_t m0 = task * j->mc, mc = LMC_MIN(j->mc, j->M - m0);
    if (mc <= 0) return;
    float *tile = j->c->scratch[thread];
    for (int64_t n0 = 0; n0 < w->n; n0 += QF_TILE) {
        int64_t nt = LMC_MIN(QF_TILE, w->n - n0);
        lmc_qweight_dequant_rows(w, n0, nt, tile);
        float beta = j->accum || n0 > 0 ? 1.0f : 0.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mc, (int)w->k, (int)nt, 1.0f,
                    j->x + m0 * w->n + n0, (int)w->n, tile, (int)w->k, beta, j->y + m0 * w->k, (int)w->k);
    }
}

void lmc_cpu_qmatmul_f_bwd(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                           int accum_dx) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(M >= 0 && w->n > 0 && w->k > 0 && w->n < INT32_MAX && w->k < INT32_MAX && M < INT32_MAX);
    if (M == 0) return;
    lmc_cpu_scratch_reserve(c, (size_t)(QF_TILE * w->k));
    int64_t tasks = LMC_MIN((int64_t)c->n_threads, M);
    struct qf_job j = {.c = c, .w = w, .y = dx, .x = dy, .M = M, .mc = (M + tasks - 1) / tasks,
                       .accum = accum_dx};
    lmc_pool_run(c->pool, (M + j.mc - 1) / j.mc, qf_bwd_task, &j);
}
