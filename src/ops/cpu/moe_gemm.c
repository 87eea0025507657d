/* moe_gemm.c — the grouped GEMM of mixture-of-experts layers on the CPU
 * (backend.h: moe_gemm, moe_gemm_bwd): the rows of each expert, contiguous
 * after the model groups tokens by expert, go through that expert's weight
 * as one matmul over all its rows (the CPU matmul's tuned kernels, threaded
 * inside each call: M=1 decode rows use the streaming dot path, many rows
 * the blocked GEMM). Experts without rows cost nothing. */
#include "ops/cpu/ops_cpu.h"

void lmc_cpu_moe_gemm(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                      const struct lmc_mat *const *w) {
    /* an expert's rows are not the step's: no route by row kind here (a row
     * would take it only when every token chose the expert) */
    struct lmc_cpu_ctx *c = ctx;
    int64_t route_m = c->route_m;
    c->route_m = 0;
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0;
        LMC_ASSERT(r0 >= 0 && m >= 0);
        if (!m) continue;
        lmc_cpu_matmul(ctx, y + r0 * w[e]->rows, x + r0 * w[e]->cols, m, w[e], NULL);
    }
    c->route_m = route_m;
}

void lmc_cpu_moe_gemm_bwd(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                          const int64_t *off, int64_t E, const struct lmc_mat *const *w, int accum_dx) {
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0, N = w[e]->rows, K = w[e]->cols;
        LMC_ASSERT(r0 >= 0 && m >= 0);
        if (!m) continue;
        lmc_cpu_matmul_bwd(ctx, dx ? dx + r0 * K : NULL, dw ? dw[e] : NULL, NULL, dy + r0 * N, x + r0 * K, m,
                           w[e], accum_dx);
    }
}
