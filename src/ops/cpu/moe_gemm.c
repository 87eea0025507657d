/* moe_gemm.c — the grouped GEMM of mixture-of-experts layers on the CPU
 * (backend.h: moe_gemm, moe_gemm_bwd): the rows of each expert, contiguous
 * after the model groups tokens by expert, go through that expert's weight
 * as one matmul over all its rows (the CPU matmul's tuned kernels). Experts
 * without rows cost nothing. Where every expert with rows has few of them
 * (decode: a token's top-k experts, or a batched decode step's; each
 * expert's rows < 4 or the small-M kernel's), all of them run as one
 * parallel job over their concatenated weights
 * (lmc_cpu_matmul_small_group): one fork-join per call instead of one per
 * expert, with the threads' byte ranges spanning experts; the bits are
 * those of the per-expert matmuls. Otherwise one threaded matmul per
 * expert (M=1 rows the streaming dot path, many rows the blocked GEMM).
 * moe_gemm_multi: several products sharing x and the offsets (an MoE
 * layer's gate and up) in the same job: one fork-join for both. */
#include "ops/cpu/ops_cpu.h"

#include <stdlib.h>

#define MOE_GROUP_STACK 64 /* experts with rows gathered on the stack; more: heap */

/* n products sharing x and off (w[i]: E matrices each) as grouped
 * small-M jobs: each expert with rows contributes its n products, expert
 * by expert (the arena of model/weights_huge.c lays an expert's gate, up
 * and down side by side, so a thread's byte range runs on in memory). */
static bool moe_gemm_grouped(struct lmc_cpu_ctx *c, int np, float *const *y, const float *x, const int64_t *off,
                             int64_t E, const struct lmc_mat *const *const *w) {
    int64_t ne = 0;
    for (int64_t e = 0; e < E; e++) ne += off[e + 1] > off[e];
    if (ne == 0) return true;
    if (ne > INT32_MAX / np) return false;
    int64_t n = ne * np;
    float *ys_s[MOE_GROUP_STACK];
    const float *xs_s[MOE_GROUP_STACK];
    int64_t ms_s[MOE_GROUP_STACK];
    const struct lmc_mat *ws_s[MOE_GROUP_STACK];
    float **ys = ys_s;
    const float **xs = xs_s;
    int64_t *ms = ms_s;
    const struct lmc_mat **ws = ws_s;
    void *heap = NULL;
    if (n > MOE_GROUP_STACK) {
        heap = malloc((size_t)n * (2 * sizeof(float *) + sizeof(int64_t) + sizeof(struct lmc_mat *)));
        if (!heap) return false; /* the per-expert loop needs no memory */
        ys = heap;
        xs = (const float **)(ys + n);
        ms = (int64_t *)(xs + n);
        ws = (const struct lmc_mat **)(ms + n);
    }
    int64_t i = 0;
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0;
        if (!m) continue;
        for (int p = 0; p < np; p++) {
            ys[i] = y[p] + r0 * w[p][e]->rows;
            xs[i] = x + r0 * w[p][e]->cols;
            ms[i] = m;
            ws[i] = w[p][e];
            i++;
        }
    }
    bool ok = lmc_cpu_matmul_small_group(c, (int)n, ys, xs, ms, ws);
    free(heap);
    return ok;
}

void lmc_cpu_moe_gemm_multi(void *ctx, int n, float *const *y, const float *x, const int64_t *off, int64_t E,
                            const struct lmc_mat *const *const *w) {
    /* an expert's rows are not the step's: no route by row kind here (a row
     * would take it only when every token chose the expert) */
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n > 0);
    for (int64_t e = 0; e < E; e++) LMC_ASSERT(off[e] >= 0 && off[e + 1] >= off[e]);
    int64_t route_m = c->route_m;
    c->route_m = 0;
    if (!moe_gemm_grouped(c, n, y, x, off, E, w))
        for (int p = 0; p < n; p++)
            for (int64_t e = 0; e < E; e++) {
                int64_t r0 = off[e], m = off[e + 1] - r0;
                if (!m) continue;
                lmc_cpu_matmul(ctx, y[p] + r0 * w[p][e]->rows, x + r0 * w[p][e]->cols, m, w[p][e], NULL);
            }
    c->route_m = route_m;
}

void lmc_cpu_moe_gemm(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                      const struct lmc_mat *const *w) {
    lmc_cpu_moe_gemm_multi(ctx, 1, &y, x, off, E, &w);
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
