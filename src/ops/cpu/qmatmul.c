/* qmatmul.c — the CPU backend's quantized matmul entry: y = x @ W^T (+ b)
 * for a weight prepared by quant/qmatmul.h, run by lmc_qmatmul on the
 * backend's thread pool with the context's instruction-set table and a
 * scratch buffer that grows to the largest step once (no allocation per
 * call after that). */
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"

#include <stdlib.h>

void lmc_cpu_qmatmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                     const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(c->qctx != NULL && M >= 0);
    if (M == 0) return;
    size_t need = lmc_qmatmul_scratch_bytes(w, M);
    if (need > c->qscratch_cap) {
        free(c->qscratch);
        size_t cap = (need + 63) / 64 * 64;
        c->qscratch = aligned_alloc(64, cap);
        LMC_ASSERT(c->qscratch != NULL);
        c->qscratch_cap = cap;
    }
    lmc_qmatmul(c->qctx, w, y, x, M, c->qscratch, c->pool);
    if (bias)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < w->n; j++) y[i * w->n + j] += bias[j];
}
