/* qmatmul.c — the CPU backend's quantized matmul entry: y = x @ W^T (+ b)
 * for a weight prepared by quant/qmatmul.h, run by lmc_qmatmul on the
 * backend's thread pool with the context's instruction-set table and a
 * scratch buffer that grows to the largest step once (no allocation per
 * call after that); and the lookup of a quantized embedding table's rows. */
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"

#include <stdlib.h>

void lmc_cpu_qembed(void *ctx, float *y, const struct lmc_qweight *w, const int32_t *ids, int64_t n) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++) {
        LMC_ASSERT(ids[i] >= 0 && ids[i] < w->n);
        lmc_qweight_dequant_rows(w, ids[i], 1, y + i * w->k);
    }
}

static void grow(struct lmc_cpu_ctx *c, size_t need) {
    if (need > c->qscratch_cap) {
        free(c->qscratch);
        size_t cap = (need + 63) / 64 * 64;
        c->qscratch = aligned_alloc(64, cap);
        LMC_ASSERT(c->qscratch != NULL);
        c->qscratch_cap = cap;
    }
}

static void add_bias(float *y, const float *bias, int64_t M, int64_t n) {
    if (bias)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < n; j++) y[i * n + j] += bias[j];
}

void lmc_cpu_qmatmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                     const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(c->qctx != NULL && M >= 0);
    if (M == 0) return;
    grow(c, lmc_qmatmul_scratch_bytes(w, M));
    lmc_qmatmul(c->qctx, w, y, x, M, c->qscratch, c->pool);
    add_bias(y, bias, M, w->n);
}

void lmc_cpu_qmatmul_multi(void *ctx, int n, float *const *y, const float *x, int64_t M,
                           const struct lmc_qweight *const *w, const float *const *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(c->qctx != NULL && M >= 0 && n >= 1);
    if (M == 0) return;
    for (int i = 0; i < n; i++) grow(c, lmc_qmatmul_scratch_bytes(w[i], M));
    lmc_qmatmul_multi(c->qctx, n, w, y, x, M, c->qscratch, c->pool);
    for (int i = 0; i < n; i++) add_bias(y[i], bias ? bias[i] : NULL, M, w[i]->n);
}
