/* linear.c — lmc_linear_fwd/bwd (see linear.h): format dispatch and the
 * fused backend entries, with plain-op fallbacks; low-rank adapters
 * (LoRA) added after the base matmul and differentiated in the backward. */
#include "model/linear.h"
#include "core/core.h"
#include "dist/comm.h"

#define LIN_MAX 8

static void check_any(const struct lmc_linear *L) {
    LMC_ASSERT(L->n_adapters >= 0);
    /* adapters over a split base are split with it (dist/tp.h): A (r, in) and B (out, r) of the shard */
    LMC_ASSERT(L->split == LMC_SPLIT_NONE || L->tp);
    for (int j = 0; j < L->n_adapters; j++) {
        const struct lmc_adapter *A = &L->adapters[j];
        int64_t r = A->a.rows;
        LMC_ASSERT(r > 0 && A->a.cols == L->w.cols && A->b.rows == L->w.rows && A->b.cols == r &&
                   A->s.rows == r && A->s.cols == r && A->scratch && A->scratch_rows > 0 &&
                   A->dropout >= 0.0f && A->dropout < 1.0f);
    }
    LMC_ASSERT(!L->n_slots || (L->slots && L->groups && L->n_slots == L->groups->n_ids &&
                               L->split == LMC_SPLIT_NONE));
}

static void check(const struct lmc_linear *L) {
    LMC_ASSERT(L->format == LMC_WFMT_DENSE);
    check_any(L);
}

/* The adapter's input for rows [m0, m0 + mc): x itself, or with dropout
 * its dropped copy in the scratch past u, v and t (element offsets are
 * global, so every chunking of the rows gives the same mask). */
static const float *branch_input(const struct lmc_backend *be, const struct lmc_adapter *A, const float *xc,
                                 int64_t m0, int64_t mc, int64_t in, int64_t out) {
    if (A->dropout <= 0.0f) return xc;
    LMC_ASSERT(be->dropout != NULL);
    int64_t r = A->a.rows, R = A->scratch_rows;
    float *xd = A->scratch + R * (2 * r + out);
    be->dropout(be->ctx, xd, xc, mc * in, A->dropout, A->drop_seed, m0 * in);
    return xd;
}

/* y (M, out) += scale * (x A^T) B^T for one adapter, in row chunks of its
 * scratch: u = x A^T, v = u diag(scale), y += v B^T (x: dropout(x) with
 * the adapter's dropout). */
static void adapter_rows(const struct lmc_backend *be, const struct lmc_adapter *A, int64_t in,
                         int64_t out, float *y, const float *x, int64_t M) {
    int64_t r = A->a.rows, R = A->scratch_rows;
    float *u = A->scratch, *v = u + R * r, *t = v + R * r;
    for (int64_t m0 = 0; m0 < M; m0 += R) {
        int64_t mc = LMC_MIN(R, M - m0);
        float *yc = y + m0 * out;
        be->matmul(be->ctx, u, branch_input(be, A, x + m0 * in, m0, mc, in, out), mc, &A->a, NULL);
        be->matmul(be->ctx, v, u, mc, &A->s, NULL);
        if (be->matmul_add) {
            be->matmul_add(be->ctx, yc, v, mc, &A->b, NULL);
        } else {
            be->matmul(be->ctx, t, v, mc, &A->b, NULL);
            be->add(be->ctx, yc, yc, t, mc * out);
        }
    }
}

/* The per-row adapters of L (linear.h: slots, groups): each group's rows
 * of y get their adapter's product, one GEMM pair per group. */
static void slots_fwd(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                      const float *x, int64_t M) {
    const struct lmc_row_groups *g = L->groups;
    if (!L->n_slots || !g->n) return;
    LMC_ASSERT(g->total == M); /* a linear over the step's rows (not a gathered subset) */
    int64_t in = L->w.cols, out = L->w.rows;
    for (int k = 0; k < g->n; k++) {
        LMC_ASSERT(g->id[k] >= 1 && g->id[k] <= L->n_slots && g->row0[k] >= 0 &&
                   g->rows[k] >= 0 && g->row0[k] + g->rows[k] <= M);
        const struct lmc_adapter *A = &L->slots[g->id[k] - 1];
        if (!A->a.data || !g->rows[k]) continue;
        LMC_ASSERT(A->a.cols == in && A->b.rows == out && A->scratch && A->scratch_rows > 0);
        adapter_rows(be, A, in, out, y + g->row0[k] * out, x + g->row0[k] * in, g->rows[k]);
    }
}

/* y (M, out) += scale * (x A^T) B^T for every adapter of L, then the
 * per-row adapters of this step's groups. */
static void adapters_fwd(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                         const float *x, int64_t M) {
    for (int j = 0; j < L->n_adapters; j++)
        adapter_rows(be, &L->adapters[j], L->w.cols, L->w.rows, y, x, M);
    slots_fwd(be, L, y, x, M);
}

/* The adapters' part of the backward of y = x W^T + adapters: dx (M, in)
 * += scale * (dy B) A (dx NULL: skipped), dB += scale * dy^T (x A^T), dA
 * += scale * (dy B)^T x into D's adapters when D has them. */
static void adapters_bwd(const struct lmc_backend *be, const struct lmc_linear *L,
                         const struct lmc_linear *D, float *dx, const float *dy, const float *x,
                         int64_t M) {
    int64_t in = L->w.cols, out = L->w.rows;
    bool grads = D && D->adapters && D->n_adapters == L->n_adapters;
    for (int j = 0; j < L->n_adapters; j++) {
        const struct lmc_adapter *A = &L->adapters[j];
        float *dA = grads ? (float *)D->adapters[j].a.data : NULL;
        float *dB = grads ? (float *)D->adapters[j].b.data : NULL;
        if (!dx && !dA && !dB) continue;
        int64_t r = A->a.rows, R = A->scratch_rows;
        float *u = A->scratch, *v = u + R * r;
        for (int64_t m0 = 0; m0 < M; m0 += R) {
            int64_t mc = LMC_MIN(R, M - m0);
            const float *dyc = dy + m0 * out;
            const float *xc = branch_input(be, A, x + m0 * in, m0, mc, in, out);
            if (dB) {
                be->matmul(be->ctx, u, xc, mc, &A->a, NULL);
                be->matmul(be->ctx, v, u, mc, &A->s, NULL);
                be->matmul_bwd(be->ctx, NULL, dB, NULL, dyc, v, mc, &A->b, 0);
            }
            /* u = dy B (mc, r); v = u diag(scale); dx += v A, dA += v^T x */
            be->matmul_bwd(be->ctx, u, NULL, NULL, dyc, v, mc, &A->b, 0);
            be->matmul(be->ctx, v, u, mc, &A->s, NULL);
            if (A->dropout <= 0.0f) {
                be->matmul_bwd(be->ctx, dx ? dx + m0 * in : NULL, dA, NULL, v, xc, mc, &A->a, 1);
                continue;
            }
            /* with dropout: dA += v^T dropout(x); dx += dropout(v A) (the same mask) */
            float *xd = (float *)xc;
            be->matmul_bwd(be->ctx, NULL, dA, NULL, v, xd, mc, &A->a, 1);
            if (dx) {
                be->matmul_bwd(be->ctx, xd, NULL, NULL, v, x + m0 * in, mc, &A->a, 0);
                be->dropout(be->ctx, xd, xd, mc * in, A->dropout, A->drop_seed, m0 * in);
                be->add(be->ctx, dx + m0 * in, dx + m0 * in, xd, mc * in);
            }
        }
    }
}

/* ---- held GEMM operands (backend.h operand_hold): a linear with
 * adapters reads its x in the base GEMM and in each adapter's, and in the
 * backward x, each dy and each adapter's A and scale in several; held for
 * the call, a backend that rounds GEMM operands rounds each once. Nothing
 * held is written inside the call (dx overlaps neither x nor dy). */
#define HOLD_MAX 16
struct holds {
    int n;
    const float *p[HOLD_MAX];
    int64_t numel[HOLD_MAX];
};

static void hold_add(struct holds *h, const float *p, int64_t n) {
    if (p && n > 0 && h->n < HOLD_MAX) h->p[h->n] = p, h->numel[h->n++] = n;
}

static bool has_adapters(int k, const struct lmc_linear *const *L) {
    for (int i = 0; i < k; i++)
        if (L[i]->n_adapters > 0 || (L[i]->n_slots && L[i]->groups->n)) return true;
    return false;
}

/* x (M rows of L[0]'s input) held while any of the k linears has adapters */
static void hold_x(const struct lmc_backend *be, struct holds *h, int k, const struct lmc_linear *const *L,
                   const float *x, int64_t M) {
    h->n = 0;
    if (!be->operand_hold || !has_adapters(k, L)) return;
    LMC_ASSERT(be->operand_release != NULL);
    hold_add(h, x, M * L[0]->w.cols);
}

static void hold_begin(const struct lmc_backend *be, const struct holds *h) {
    if (h->n) be->operand_hold(be->ctx, h->n, h->p, h->numel, NULL);
}

static void hold_end(const struct lmc_backend *be, const struct holds *h) {
    if (h->n) be->operand_release(be->ctx);
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

/* Quantized formats (issue 10): one backend qmatmul per linear, or one
 * qmatmul_multi for k quantized linears of one input; the fused dense
 * entries are not used for them, nor for observed linears. */
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
        be->matmul(be->ctx, y, x, M, &L->w, tp_bias(L));
    } else {
        LMC_ASSERT(L->q != NULL);
        check_any(L);
        if (L->qfloat) {
            LMC_ASSERT(be->qmatmul_f != NULL);
            be->qmatmul_f(be->ctx, y, x, M, L->q, tp_bias(L));
        } else {
            LMC_ASSERT(be->qmatmul != NULL);
            be->qmatmul(be->ctx, y, x, M, L->q, tp_bias(L));
        }
    }
    adapters_fwd(be, L, y, x, M); /* LoRA over a quantized or observed base too */
    if (L->split == LMC_SPLIT_ROW) tp_sum(L, y, M * L->w.rows);
}

static void linear_fwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                       float *const *y, const float *x, int64_t M) {
    if (any_quant(k, L)) {
        bool multi = k > 1 && be->qmatmul_multi;
        for (int i = 0; multi && i < k; i++)
            multi = L[i]->format == LMC_WFMT_QUANT && !L[i]->observe && !L[i]->qfloat && L[i]->q &&
                    L[i]->split == LMC_SPLIT_NONE;
        if (multi) { /* the input quantized once for all k (q/k/v, gate/up) */
            const struct lmc_qweight *q[LIN_MAX];
            const float *b[LIN_MAX];
            for (int i = 0; i < k; i++) {
                check_any(L[i]);
                q[i] = L[i]->q;
                b[i] = L[i]->bias;
            }
            be->qmatmul_multi(be->ctx, k, y, x, M, q, b);
            for (int i = 0; i < k; i++) adapters_fwd(be, L[i], y[i], x, M);
            return;
        }
        for (int i = 0; i < k; i++) quant_fwd(be, L[i], y[i], x, M);
        return;
    }
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
    for (int i = 0; i < k; i++) adapters_fwd(be, L[i], y[i], x, M);
    for (int i = 0; i < k; i++)
        if (L[i]->split == LMC_SPLIT_ROW) tp_sum(L[i], y[i], M * L[i]->w.rows);
}

void lmc_linear_fwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    float *const *y, const float *x, int64_t M) {
    LMC_ASSERT(k > 0 && k <= LIN_MAX);
    struct holds h;
    hold_x(be, &h, k, L, x, M);
    hold_begin(be, &h);
    linear_fwd(be, k, L, y, x, M);
    hold_end(be, &h);
}

static void linear_fwd_res(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                           const float *res, const float *x, int64_t M, float *tmp) {
    if (L->format == LMC_WFMT_QUANT || L->observe) {
        quant_fwd(be, L, y == res ? tmp : y, x, M);
        be->add(be->ctx, y, res, y == res ? tmp : y, M * L->w.rows);
        return;
    }
    check(L);
    int64_t n = M * L->w.rows;
    if (L->split == LMC_SPLIT_ROW && L->tp->sp) { /* the partial product only (linear.h, lmc_tp_group.sp) */
        be->matmul(be->ctx, y, x, M, &L->w, tp_bias(L));
        adapters_fwd(be, L, y, x, M);
        return;
    }
    if (L->split == LMC_SPLIT_ROW) {
        float *part = y == res ? tmp : y;
        be->matmul(be->ctx, part, x, M, &L->w, tp_bias(L));
        adapters_fwd(be, L, part, x, M); /* a row-split adapter's partial product joins the base's */
        tp_sum(L, part, n);
        be->add(be->ctx, y, res, part, n);
        return;
    }
    if (y == res) {
        if (be->matmul_add) {
            be->matmul_add(be->ctx, y, x, M, &L->w, L->bias);
        } else {
            be->matmul(be->ctx, tmp, x, M, &L->w, L->bias);
            be->add(be->ctx, y, y, tmp, n);
        }
        adapters_fwd(be, L, y, x, M);
        return;
    }
    be->matmul(be->ctx, y, x, M, &L->w, L->bias);
    adapters_fwd(be, L, y, x, M);
    be->add(be->ctx, y, y, res, n);
}

void lmc_linear_fwd_res(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                        const float *res, const float *x, int64_t M, float *tmp) {
    struct holds h;
    hold_x(be, &h, 1, &L, x, M);
    hold_begin(be, &h);
    linear_fwd_res(be, L, y, res, x, M, tmp);
    hold_end(be, &h);
}

void lmc_linear_fwd_swiglu(const struct lmc_backend *be, const struct lmc_linear *G,
                           const struct lmc_linear *U, float *y, const float *x, int64_t M,
                           float *tmp) {
    if (G->format == LMC_WFMT_QUANT || U->format == LMC_WFMT_QUANT || G->observe || U->observe) {
        /* gate and up as one quantized job where they can (qmatmul_multi:
         * the input quantized once, one pool run; the same bits) */
        const struct lmc_linear *L[2] = {G, U};
        float *ys[2] = {y, tmp};
        lmc_linear_fwd(be, 2, L, ys, x, M);
        be->swiglu(be->ctx, y, y, tmp, M * G->w.rows);
        return;
    }
    check(G);
    check(U);
    LMC_ASSERT(G->split != LMC_SPLIT_ROW && U->split != LMC_SPLIT_ROW);
    if (be->matmul_swiglu && !G->bias && !U->bias && !G->n_adapters && !U->n_adapters &&
        !(G->n_slots && G->groups->n) && !(U->n_slots && U->groups->n)) {
        be->matmul_swiglu(be->ctx, y, x, M, &G->w, &U->w);
        return;
    }
    const struct lmc_linear *L[2] = {G, U};
    float *ys[2] = {y, tmp};
    lmc_linear_fwd(be, 2, L, ys, x, M);
    be->swiglu(be->ctx, y, y, tmp, M * G->w.rows);
}

static void linear_bwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                       const struct lmc_linear *const *D, float *dx, const float *const *dy,
                       const float *x, int64_t M, bool accum_dx) {
    if (any_quant(k, L)) { /* a frozen quantized base (QLoRA): dx through the float tiles */
        for (int i = 0; i < k; i++) {
            check_any(L[i]);
            LMC_ASSERT(L[i]->split == L[0]->split && !L[i]->observe);
            bool acc = accum_dx || i > 0;
            if (L[i]->format == LMC_WFMT_QUANT) {
                LMC_ASSERT(L[i]->qfloat && be->qmatmul_f_bwd && (!D[i] || (!D[i]->w.data && !D[i]->bias)));
                if (dx) be->qmatmul_f_bwd(be->ctx, dx, dy[i], M, L[i]->q, acc);
            } else {
                be->matmul_bwd(be->ctx, dx, D[i] ? (float *)D[i]->w.data : NULL, D[i] ? (float *)D[i]->bias : NULL,
                               dy[i], x, M, &L[i]->w, acc);
            }
            adapters_bwd(be, L[i], D[i], dx, dy[i], x, M);
        }
        if (L[0]->split == LMC_SPLIT_COLUMN && dx) { /* a split QLoRA base: dx's partial sums over the group */
            LMC_ASSERT(!accum_dx);
            tp_sum(L[0], dx, M * L[0]->w.cols);
        }
        return;
    }
    const struct lmc_mat *w[LIN_MAX];
    float *dw[LIN_MAX], *db[LIN_MAX];
    for (int i = 0; i < k; i++) {
        check(L[i]);
        w[i] = &L[i]->w;
        dw[i] = D[i] ? (float *)D[i]->w.data : NULL;
        db[i] = D[i] ? (float *)D[i]->bias : NULL;
    }
    if (k > 1 && be->matmul_bwd_multi)
        be->matmul_bwd_multi(be->ctx, k, dx, dw, db, dy, x, M, w, accum_dx);
    else
        for (int i = 0; i < k; i++)
            be->matmul_bwd(be->ctx, dx, dw[i], db[i], dy[i], x, M, w[i], accum_dx || i > 0);
    for (int i = 0; i < k; i++) adapters_bwd(be, L[i], D[i], dx, dy[i], x, M);
    if (L[0]->split == LMC_SPLIT_COLUMN && dx && !L[0]->tp->sp) { /* dx's partial sums over the group */
        LMC_ASSERT(!accum_dx);
        for (int i = 1; i < k; i++) LMC_ASSERT(L[i]->split == LMC_SPLIT_COLUMN && L[i]->tp == L[0]->tp);
        tp_sum(L[0], dx, M * L[0]->w.cols);
    }
}

void lmc_linear_bwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    const struct lmc_linear *const *D, float *dx, const float *const *dy,
                    const float *x, int64_t M, bool accum_dx) {
    LMC_ASSERT(k > 0 && k <= LIN_MAX);
    struct holds h; /* x, every dy, every adapter's A and scale */
    hold_x(be, &h, k, L, x, M);
    for (int i = 0; h.n && i < k; i++) {
        hold_add(&h, dy[i], M * L[i]->w.rows);
        for (int j = 0; j < L[i]->n_adapters; j++) {
            const struct lmc_adapter *A = &L[i]->adapters[j];
            if (A->a.dtype == LMC_DTYPE_F32) hold_add(&h, (const float *)A->a.data, A->a.rows * A->a.cols);
            if (A->s.dtype == LMC_DTYPE_F32) hold_add(&h, (const float *)A->s.data, A->s.rows * A->s.cols);
        }
    }
    hold_begin(be, &h);
    linear_bwd(be, k, L, D, dx, dy, x, M, accum_dx);
    hold_end(be, &h);
}

/* The backend with its matmul entries swapped for their f32 twins (the
 * fused multi entries dropped: they belong to the rounded mode). */
static const struct lmc_backend *f32_twin(const struct lmc_backend *be, struct lmc_backend *tmp) {
    if (!be->matmul_f32 && !be->matmul_bwd_f32) return be;
    *tmp = *be;
    if (be->matmul_f32) {
        tmp->matmul = be->matmul_f32;
        tmp->matmul_multi = NULL;
        tmp->matmul_add = NULL;
    }
    if (be->matmul_bwd_f32) {
        tmp->matmul_bwd = be->matmul_bwd_f32;
        tmp->matmul_bwd_multi = NULL;
    }
    return tmp;
}

void lmc_linear_fwd_f32(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                        float *const *y, const float *x, int64_t M) {
    struct lmc_backend tmp;
    lmc_linear_fwd(f32_twin(be, &tmp), k, L, y, x, M);
}

void lmc_linear_bwd_f32(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                        const struct lmc_linear *const *D, float *dx, const float *const *dy,
                        const float *x, int64_t M, bool accum_dx) {
    struct lmc_backend tmp;
    lmc_linear_bwd(f32_twin(be, &tmp), k, L, D, dx, dy, x, M, accum_dx);
}
