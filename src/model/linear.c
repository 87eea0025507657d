/* linear.c — lmc_linear_fwd/bwd (see linear.h): format dispatch and the
 * fused backend entries, with plain-op fallbacks. */
#include "model/linear.h"
#include "core/core.h"

#define LIN_MAX 8

static void check(const struct lmc_linear *L) {
    LMC_ASSERT(L->format == LMC_WFMT_DENSE && L->split == LMC_SPLIT_NONE && L->n_adapters == 0);
}

/* Quantized formats (issue 10): one backend qmatmul per linear; the fused
 * dense entries are not used for them, nor for observed linears. */
static bool any_quant(int k, const struct lmc_linear *const *L) {
    for (int i = 0; i < k; i++)
        if (L[i]->format == LMC_WFMT_QUANT || L[i]->observe) return true;
    return false;
}

static void quant_fwd(const struct lmc_backend *be, const struct lmc_linear *L, float *y, const float *x,
                      int64_t M) {
    if (L->observe) L->observe(L->observe_user, L, x, M);
    if (L->format != LMC_WFMT_QUANT) {
        check(L);
        be->matmul(be->ctx, y, x, M, &L->w, L->bias);
        return;
    }
    LMC_ASSERT(be->qmatmul != NULL && L->q != NULL && L->split == LMC_SPLIT_NONE && L->n_adapters == 0);
    be->qmatmul(be->ctx, y, x, M, L->q, L->bias);
}

void lmc_linear_fwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    float *const *y, const float *x, int64_t M) {
    LMC_ASSERT(k > 0 && k <= LIN_MAX);
    if (any_quant(k, L)) {
        for (int i = 0; i < k; i++) quant_fwd(be, L[i], y[i], x, M);
        return;
    }
    const struct lmc_mat *w[LIN_MAX];
    const float *b[LIN_MAX];
    for (int i = 0; i < k; i++) {
        check(L[i]);
        w[i] = &L[i]->w;
        b[i] = L[i]->bias;
    }
    if (k > 1 && be->matmul_multi) {
        be->matmul_multi(be->ctx, k, y, x, M, w, b);
        return;
    }
    for (int i = 0; i < k; i++) be->matmul(be->ctx, y[i], x, M, w[i], b[i]);
}

void lmc_linear_fwd_res(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                        const float *res, const float *x, int64_t M, float *tmp) {
    if (L->format == LMC_WFMT_QUANT || L->observe) {
        quant_fwd(be, L, y == res ? tmp : y, x, M);
        be->add(be->ctx, y, res, y == res ? tmp : y, M * L->w.rows);
        return;
    }
    check(L);
    int64_t n = M * L->w.rows;
    if (y == res) {
        if (be->matmul_add) {
            be->matmul_add(be->ctx, y, x, M, &L->w, L->bias);
            return;
        }
        be->matmul(be->ctx, tmp, x, M, &L->w, L->bias);
        be->add(be->ctx, y, y, tmp, n);
        return;
    }
    be->matmul(be->ctx, y, x, M, &L->w, L->bias);
    be->add(be->ctx, y, y, res, n);
}

void lmc_linear_fwd_swiglu(const struct lmc_backend *be, const struct lmc_linear *G,
                           const struct lmc_linear *U, float *y, const float *x, int64_t M,
                           float *tmp) {
    if (G->format == LMC_WFMT_QUANT || U->format == LMC_WFMT_QUANT || G->observe || U->observe) {
        quant_fwd(be, G, y, x, M);
        quant_fwd(be, U, tmp, x, M);
        be->swiglu(be->ctx, y, y, tmp, M * G->w.rows);
        return;
    }
    check(G);
    check(U);
    if (be->matmul_swiglu && !G->bias && !U->bias) {
        be->matmul_swiglu(be->ctx, y, x, M, &G->w, &U->w);
        return;
    }
    const struct lmc_linear *L[2] = {G, U};
    float *ys[2] = {y, tmp};
    lmc_linear_fwd(be, 2, L, ys, x, M);
    be->swiglu(be->ctx, y, y, tmp, M * G->w.rows);
}

void lmc_linear_bwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    const struct lmc_linear *const *D, float *dx, const float *const *dy,
                    const float *x, int64_t M, bool accum_dx) {
    LMC_ASSERT(k > 0 && k <= LIN_MAX);
    const struct lmc_mat *w[LIN_MAX];
    float *dw[LIN_MAX], *db[LIN_MAX];
    for (int i = 0; i < k; i++) {
        check(L[i]);
        w[i] = &L[i]->w;
        dw[i] = D[i] ? (float *)D[i]->w.data : NULL;
        db[i] = D[i] ? (float *)D[i]->bias : NULL;
    }
    if (k > 1 && be->matmul_bwd_multi) {
        be->matmul_bwd_multi(be->ctx, k, dx, dw, db, dy, x, M, w, accum_dx);
        return;
    }
    for (int i = 0; i < k; i++)
        be->matmul_bwd(be->ctx, dx, dw[i], db[i], dy[i], x, M, w[i], accum_dx || i > 0);
}
