/* linear.c — lmc_linear_fwd/bwd (see linear.h): format dispatch and the
 * fused backend entries, with plain-op fallbacks. */
#include "model/linear.h"
#include "core/core.h"
#include "dist/comm.h"

#define LIN_MAX 8

static void check(const struct lmc_linear *L) {
    LMC_ASSERT(L->format == LMC_WFMT_DENSE && L->n_adapters == 0);
    LMC_ASSERT(L->split == LMC_SPLIT_NONE || L->tp);
}

/* ---- tensor-parallel splits (linear.h): the bias of a row-parallel
 * linear joins rank 0's partial sum; its output and a column-parallel
 * linear's dx are summed over the group. */
static const float *tp_bias(const struct lmc_linear *L) {
    return L->split == LMC_SPLIT_ROW && L->tp->c->rank != 0 ? NULL : L->bias;
}

static void tp_sum(const struct lmc_linear *L, float *buf, int64_t n) {
    struct lmc_tp_group *g = L->tp;
    if (g->st || g->c->world == 1) return;
    g->st = g->c->all_reduce(g->c, buf, n, LMC_DTYPE_F32, LMC_REDUCE_SUM, &g->err);
}

void lmc_linear_fwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    float *const *y, const float *x, int64_t M) {
    LMC_ASSERT(k > 0 && k <= LIN_MAX);
    const struct lmc_mat *w[LIN_MAX];
    const float *b[LIN_MAX];
    for (int i = 0; i < k; i++) {
        check(L[i]);
        w[i] = &L[i]->w;
        b[i] = tp_bias(L[i]);
    }
    if (k > 1 && be->matmul_multi) be->matmul_multi(be->ctx, k, y, x, M, w, b);
    else
        for (int i = 0; i < k; i++) be->matmul(be->ctx, y[i], x, M, w[i], b[i]);
    for (int i = 0; i < k; i++)
        if (L[i]->split == LMC_SPLIT_ROW) tp_sum(L[i], y[i], M * L[i]->w.rows);
}

void lmc_linear_fwd_res(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                        const float *res, const float *x, int64_t M, float *tmp) {
    check(L);
    int64_t n = M * L->w.rows;
    if (L->split == LMC_SPLIT_ROW) {
        float *part = y == res ? tmp : y;
        be->matmul(be->ctx, part, x, M, &L->w, tp_bias(L));
        tp_sum(L, part, n);
        be->add(be->ctx, y, res, part, n);
        return;
    }
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
    check(G);
    check(U);
    LMC_ASSERT(G->split != LMC_SPLIT_ROW && U->split != LMC_SPLIT_ROW);
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
    if (k > 1 && be->matmul_bwd_multi) be->matmul_bwd_multi(be->ctx, k, dx, dw, db, dy, x, M, w, accum_dx);
    else
        for (int i = 0; i < k; i++)
            be->matmul_bwd(be->ctx, dx, dw[i], db[i], dy[i], x, M, w[i], accum_dx || i > 0);
    if (L[0]->split == LMC_SPLIT_COLUMN && dx) { /* dx's partial sums over the group */
        LMC_ASSERT(!accum_dx);
        for (int i = 1; i < k; i++) LMC_ASSERT(L[i]->split == LMC_SPLIT_COLUMN && L[i]->tp == L[0]->tp);
        tp_sum(L[0], dx, M * L[0]->w.cols);
    }
}
