/* qmatmul_f.c — the CPU backend's float products over a quantized weight
 * (QLoRA training, backend.h qmatmul_f / qmatmul_f_bwd): W is expanded a
 * tile of rows at a time (lmc_qweight_dequant_rows) and multiplied in
 * float, so no whole matrix is ever resident in float and the numbers are
 * a dense F32 linear's: each tile of QF_TILE rows is expanded once (rows
 * in parallel) and goes through the backend's own dense matmul (forward)
 * or dense backward (dx), deterministic for a thread count. */
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"

#include <stdlib.h>
#include <string.h>

#define QF_TILE 256 /* rows per dequantized tile */

struct qf_job {
    struct lmc_cpu_ctx *c;
    const struct lmc_qweight *w;
    float *y;
    int64_t n0, nt;
};

/* Rows [n0 + 8 task, ...) of the tile dequantized in parallel. */
static void qf_deq_task(void *arg, int64_t task, int thread) {
    (void)thread;
    struct qf_job *j = arg;
    int64_t r0 = task * 8, nr = LMC_MIN(8, j->nt - r0);
    if (nr > 0) lmc_qweight_dequant_rows(j->w, j->n0 + r0, nr, j->y + r0 * j->w->k);
}

/* Rows per tile; ctx->qf_buf holds a tile and a (M, tile) block. */
static int64_t qf_reserve(struct lmc_cpu_ctx *c, const struct lmc_qweight *w, int64_t M) {
    int64_t T = LMC_MIN(QF_TILE, w->n);
    size_t need = (size_t)(T * w->k + M * T);
    if (need > c->qf_cap) {
        free(c->qf_buf);
        c->qf_buf = aligned_alloc(64, (need * sizeof(float) + 63) / 64 * 64);
        LMC_ASSERT(c->qf_buf != NULL); /* op signatures carry no status */
        c->qf_cap = need;
    }
    return T;
}

/* y = x deq(W)^T: tiles of QF_TILE rows, each dequantized (parallel)
 * into ctx->qf_buf and multiplied by the backend's own dense matmul (its
 * AVX-512 kernels) into a (M, tile) product copied into y's columns. */
void lmc_cpu_qmatmul_f(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                       const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(M >= 0 && w->n > 0 && w->k > 0 && w->n < INT32_MAX && w->k < INT32_MAX && M < INT32_MAX);
    if (M == 0) return;
    int64_t T = qf_reserve(c, w, M);
    float *tile = c->qf_buf, *prod = c->qf_buf + T * w->k;
    for (int64_t n0 = 0; n0 < w->n; n0 += T) {
        int64_t nt = LMC_MIN(T, w->n - n0);
        struct qf_job j = {.c = c, .w = w, .y = tile, .n0 = n0, .nt = nt};
        lmc_pool_run(c->pool, (nt + 7) / 8, qf_deq_task, &j);
        struct lmc_mat tm = {LMC_DTYPE_F32, nt, w->k, tile};
        lmc_cpu_matmul(c, prod, x, M, &tm, bias ? bias + n0 : NULL);
        for (int64_t m = 0; m < M; m++) memcpy(y + m * w->n + n0, prod + m * nt, (size_t)nt * sizeof(float));
    }
}

/* dx (+)= dy deq(W): tiles of QF_TILE rows, each dequantized once
 * (parallel), dy's columns of the tile gathered into a (M, tile) block and
 * the backend's dense backward run on it (dx accumulated after the first). */
void lmc_cpu_qmatmul_f_bwd(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                           int accum_dx) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(M >= 0 && w->n > 0 && w->k > 0 && w->n < INT32_MAX && w->k < INT32_MAX && M < INT32_MAX);
    if (M == 0) return;
    int64_t T = qf_reserve(c, w, M);
    float *tile = c->qf_buf, *dyt = c->qf_buf + T * w->k;
    for (int64_t n0 = 0; n0 < w->n; n0 += T) {
        int64_t nt = LMC_MIN(T, w->n - n0);
        struct qf_job j = {.c = c, .w = w, .y = tile, .n0 = n0, .nt = nt};
        lmc_pool_run(c->pool, (nt + 7) / 8, qf_deq_task, &j);
        for (int64_t m = 0; m < M; m++) memcpy(dyt + m * nt, dy + m * w->n + n0, (size_t)nt * sizeof(float));
        struct lmc_mat tm = {LMC_DTYPE_F32, nt, w->k, tile};
        lmc_cpu_matmul_bwd(c, dx, NULL, NULL, dyt, dyt, M, &tm, accum_dx || n0 > 0);
    }
}
