/* matmul_bf16.c — the CPU backend's matmul ops in the bf16 training mode
 * (lmc_backend_cpu_set_train_bf16): y = x @ w^T (+ bias), the n-way
 * matmul_multi, and the backward matmul_bwd / matmul_bwd_multi, with the
 * GEMMs in bf16 operands and f32 sums (gemm_bf16.c); bias, db and every
 * output stay f32. The contracts are backend.h's. Work is split into fixed
 * slices (rows of M for y and dx, rows of w for dw and db), and each
 * element's sum does not depend on the slice, so results are the same for
 * any thread count. Non-F32 weights and M < GB_MIN_M (decode) take the
 * fp32 ops of matmul.c. In the backward, the dx tasks also write dy^T as
 * dw's packed A (bf16 pairs along M, gemm_bf16.h's apack_t) while their
 * rows of dy are in cache, so dw reads half the bytes, in order, instead
 * of packing dy's columns from memory (same bits). */
#include "ops/cpu/gemm_bf16.h"

#define GB_MIN_M 16
#define GB_MIN_TASK_WORK ((int64_t)1 << 18) /* multiply-adds per task at least */
#define MMB_SPLIT 4                         /* backward tasks per thread */
#define MMB_DX_ROWS 96                      /* rows of dy per dx GEMM call (gemm_bf16.c's GB_MC) */

/* ---- forward: tasks own row ranges of M ---- */
struct mmb_job {
    struct lmc_cpu_ctx *c;
    float *y;
    const float *x, *w, *bias;
    int64_t M, N, K, n_tasks;
};

static void mmb_fwd_task(void *arg, int64_t t, int thread) {
    const struct mmb_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->M, j->n_tasks, t, 8, &lo, &hi);
    if (hi <= lo) return;
    lmc_cpu_gemm_bf16(hi - lo, j->N, j->K, j->x + lo * j->K, j->K, 1, j->w, 1, j->K, j->y + lo * j->N,
                      j->N, false, j->c->scratch[thread]);
    if (j->bias)
        for (int64_t m = lo; m < hi; m++)
            for (int64_t n = 0; n < j->N; n++) j->y[m * j->N + n] += j->bias[n];
}

void lmc_cpu_matmul_bf16(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                         const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    if (w->dtype != LMC_DTYPE_F32 || M < GB_MIN_M || w->rows == 0 || w->cols == 0) {
        lmc_cpu_matmul(ctx, y, x, M, w, bias);
        return;
    }
    struct mmb_job j = {c, y, x, w->data, bias, M, w->rows, w->cols, 1};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * j.N * j.K, GB_MIN_TASK_WORK, 2), (M + 7) / 8);
    lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_bf16_ws((M + j.n_tasks - 1) / j.n_tasks + 8, j.N, j.K));
    lmc_pool_run(c->pool, j.n_tasks, mmb_fwd_task, &j);
}

/* ---- weights packed once per op, shared by the tasks (several products:
 * gemm_bf16.h's terms) ---- */
#define MMB_MAX 8
struct mmb_wpack {
    int n;
    uint32_t *dst[MMB_MAX];
    const float *w[MMB_MAX];
    int64_t N[MMB_MAX], K[MMB_MAX], b_sk[MMB_MAX], b_sn[MMB_MAX], first[MMB_MAX + 1];
    int64_t n_tasks;
    size_t base; /* words of c->xbuf before the packs (kept by the caller) */
};

/* panels [lo, hi) of all the weights' packs, in weight order */
static void mmb_wpack_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mmb_wpack *p = arg;
    int64_t lo, hi;
    lmc_cpu_range(p->first[p->n], p->n_tasks, t, 1, &lo, &hi);
    for (int i = 0; i < p->n; i++) {
        int64_t a = LMC_MAX(lo, p->first[i]), b = LMC_MIN(hi, p->first[i + 1]);
        if (b > a)
            lmc_cpu_gemm_bf16_bpack(p->dst[i], p->N[i], p->K[i], p->w[i], p->b_sk[i], p->b_sn[i], a - p->first[i],
                                    b - p->first[i]);
    }
}

/* packs B_i (K_i, N_i), element (k, n) at w_i[k*b_sk + n*b_sn], into c->xbuf */
static void mmb_wpack_run(struct lmc_cpu_ctx *c, struct mmb_wpack *p) {
    size_t words = p->base, off[MMB_MAX];
    for (int i = 0; i < p->n; i++) {
        off[i] = words;
        words += (lmc_cpu_gemm_bf16_bpack_words(p->N[i], p->K[i]) + 15) / 16 * 16;
        p->first[i + 1] = p->first[i] + lmc_cpu_gemm_bf16_bpack_panels(p->N[i], p->K[i]);
    }
    lmc_cpu_xbuf_reserve(c, words);
    for (int i = 0; i < p->n; i++) p->dst[i] = (uint32_t *)c->xbuf + off[i];
    p->n_tasks = LMC_MIN(lmc_cpu_ntasks(c, p->first[p->n] * 4096, 8192, 1), p->first[p->n]);
    lmc_pool_run(c->pool, p->n_tasks, mmb_wpack_task, p);
}

/* y_i = x @ w_i^T (+ bias_i): x packed once per block of rows for all the w_i */
struct mmb_multi_job {
    struct lmc_cpu_ctx *c;
    int n;
    float *const *y;
    const float *x;
    const float *const *bias;
    const struct mmb_wpack *wp;
    int64_t M, K, n_tasks;
};

static void mmb_multi_task(void *arg, int64_t t, int thread) {
    const struct mmb_multi_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->M, j->n_tasks, t, 8, &lo, &hi);
    if (hi <= lo) return;
    struct lmc_gb_term tm[MMB_MAX];
    for (int i = 0; i < j->n; i++) {
        int64_t N = j->wp->N[i];
        tm[i] = (struct lmc_gb_term){j->x + lo * j->K, j->K, 1, j->K, j->wp->dst[i], N, j->y[i] + lo * N, N, false};
    }
    lmc_cpu_gemm_bf16_terms(hi - lo, j->n, tm, j->c->scratch[thread]);
    for (int i = 0; j->bias && i < j->n; i++) {
        int64_t N = j->wp->N[i];
        if (j->bias[i])
            for (int64_t m = lo; m < hi; m++)
                for (int64_t x = 0; x < N; x++) j->y[i][m * N + x] += j->bias[i][x];
    }
}

void lmc_cpu_matmul_multi_bf16(void *ctx, int n, float *const *y, const float *x, int64_t M,
                               const struct lmc_mat *const *w, const float *const *bias) {
    struct lmc_cpu_ctx *c = ctx;
    bool fused = n > 1 && n <= MMB_MAX && M >= GB_MIN_M;
    for (int i = 0; fused && i < n; i++)
        fused = w[i]->dtype == LMC_DTYPE_F32 && w[i]->rows > 0 && w[i]->cols > 0 && w[i]->cols == w[0]->cols;
    if (!fused) {
        for (int i = 0; i < n; i++) lmc_cpu_matmul_bf16(ctx, y[i], x, M, w[i], bias ? bias[i] : NULL);
        return;
    }
    struct mmb_wpack wp = {.n = n};
    int64_t K = w[0]->cols, Nt = 0;
    for (int i = 0; i < n; i++) { /* B (K, N) = w^T: element (k, n) at w[n*K + k] */
        wp.w[i] = w[i]->data;
        wp.N[i] = w[i]->rows;
        wp.K[i] = K;
        wp.b_sk[i] = 1;
        wp.b_sn[i] = K;
        Nt += w[i]->rows;
    }
    mmb_wpack_run(c, &wp);
    struct mmb_multi_job j = {c, n, y, x, bias, &wp, M, K, 1};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * Nt * K, GB_MIN_TASK_WORK, 2), (M + 7) / 8);
    lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_bf16_terms_ws((M + j.n_tasks - 1) / j.n_tasks + 8, K));
    lmc_pool_run(c->pool, j.n_tasks, mmb_multi_task, &j);
}

/* ---- backward: the n products sharing x (n = 1: matmul_bwd) ---- */
struct mmb_bwd_job {
    struct lmc_cpu_ctx *c;
    int n;
    float *dx;
    float *dw[MMB_MAX], *db[MMB_MAX];
    const float *dy[MMB_MAX], *w[MMB_MAX];
    const float *x;
    uint32_t *xp; /* x packed once as the dw products' B (lmc_cpu_gemm_bf16_bpack) */
    /* dy[i]^T as dw[i]'s A, packed whole (gemm_bf16.h's apack_t) by the dx
     * tasks while their rows of dy are in cache (NULL: dw packs dy itself) */
    uint32_t *dyp[MMB_MAX];
    struct mmb_wpack *wp; /* the w[i] packed once as dx's B */
    int64_t N[MMB_MAX], start[MMB_MAX + 1];
    int64_t M, K, n_tasks;
    int accum_dx;
};

/* dx rows [lo, hi) = sum_i dy[i] @ w[i], i in order (the w[i] packed in j->wp) */
static void mmb_dx_task(void *arg, int64_t t, int thread) {
    const struct mmb_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->M, j->n_tasks, t, 8, &lo, &hi);
    if (hi <= lo) return;
    /* blocks of MMB_DX_ROWS rows: their dy, just packed as dx's A, is
     * still in cache when it is written as dw's A (the same sums per
     * element for any blocking of the rows) */
    for (int64_t r = lo; r < hi; r += MMB_DX_ROWS) {
        int64_t e = LMC_MIN(hi, r + MMB_DX_ROWS);
        struct lmc_gb_term tm[MMB_MAX];
        for (int i = 0; i < j->n; i++)
            tm[i] = (struct lmc_gb_term){j->dy[i] + r * j->N[i], j->N[i], 1, j->N[i], j->wp->dst[i], j->K,
                                         j->dx + r * j->K, j->K, i > 0 || j->accum_dx};
        lmc_cpu_gemm_bf16_terms(e - r, j->n, tm, j->c->scratch[thread]);
        for (int i = 0; i < j->n; i++)
            if (j->dyp[i])
                lmc_cpu_gemm_bf16_apack_t(j->dyp[i], j->N[i], j->M, r / 2, j->dy[i] + r * j->N[i], j->N[i], e - r);
    }
}

/* rows [lo, hi) of the concatenated w[i]: dw += dy^T @ x, db += column sums */
static void mmb_dw_task(void *arg, int64_t t, int thread) {
    const struct mmb_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->start[j->n], j->n_tasks, t, 8, &lo, &hi);
    for (int i = 0; i < j->n && lo < hi; i++) {
        int64_t a = LMC_MAX(lo, j->start[i]) - j->start[i], b = LMC_MIN(hi, j->start[i + 1]) - j->start[i];
        if (b <= a) continue;
        int64_t N = j->N[i];
        if (j->dw[i] && j->dyp[i])
            lmc_cpu_gemm_bf16_pp(b - a, j->K, j->M, j->dyp[i] + a * ((j->M + 1) / 2), j->xp, j->dw[i] + a * j->K,
                                 j->K, true);
        else if (j->dw[i])
            lmc_cpu_gemm_bf16_pb(b - a, j->K, j->M, j->dy[i] + a, 1, N, j->xp, j->dw[i] + a * j->K, j->K, true,
                                 j->c->scratch[thread]);
        if (j->db[i])
            for (int64_t col = a; col < b; col++) {
                double s = 0;
                for (int64_t m = 0; m < j->M; m++) s += j->dy[i][m * N + col];
                j->db[i][col] += (float)s;
            }
    }
}

/* panels [lo, hi) of the packed x */
static void mmb_xpack_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mmb_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(lmc_cpu_gemm_bf16_bpack_panels(j->K, j->M), j->n_tasks, t, 1, &lo, &hi);
    lmc_cpu_gemm_bf16_bpack(j->xp, j->K, j->M, j->x, j->K, 1, lo, hi);
}

static void mmb_bwd_run(struct lmc_cpu_ctx *c, struct mmb_bwd_job *j) {
    int64_t Nt = j->start[j->n], work = j->M * Nt * j->K, Nmax = 0;
    for (int i = 0; i < j->n; i++) Nmax = LMC_MAX(Nmax, j->N[i]);
    /* the operand every task shares is packed once ahead (w for dx, x for
     * dw), so tasks cost no packing of their own: MMB_SPLIT per thread,
     * taken as threads free up, even out threads that run at different
     * speeds (a neighbour's load, memory) */
    /* dy^T packed by the dx tasks for dw (c->xbuf's first words, kept
     * through the w and x packs after them): when every product's rows
     * start on a panel (N_i multiples of 8) */
    size_t dyw = 0;
    bool pre = j->dx != NULL;
    for (int i = 0; i < j->n; i++) {
        pre = pre && j->N[i] % 8 == 0;
        if (j->dw[i]) dyw += (lmc_cpu_gemm_bf16_apack_words(j->N[i], j->M) + 15) / 16 * 16;
    }
    if (!pre) dyw = 0;
    if (dyw) {
        size_t wpw = 0;
        for (int i = 0; i < j->n; i++) wpw += (lmc_cpu_gemm_bf16_bpack_words(j->K, j->N[i]) + 15) / 16 * 16;
        lmc_cpu_xbuf_reserve(c, dyw + LMC_MAX(wpw, lmc_cpu_gemm_bf16_bpack_words(j->K, j->M)));
        size_t off = 0;
        for (int i = 0; i < j->n; i++)
            if (j->dw[i]) {
                j->dyp[i] = (uint32_t *)c->xbuf + off;
                off += (lmc_cpu_gemm_bf16_apack_words(j->N[i], j->M) + 15) / 16 * 16;
            }
    }
    if (j->dx) {
        struct mmb_wpack wp = {.n = j->n, .base = dyw};
        for (int i = 0; i < j->n; i++) { /* B (N_i, K) = w_i: element (k, n) at w_i[k*K + n] */
            wp.w[i] = j->w[i];
            wp.N[i] = j->K;
            wp.K[i] = j->N[i];
            wp.b_sk[i] = j->K;
            wp.b_sn[i] = 1;
        }
        mmb_wpack_run(c, &wp);
        j->wp = &wp;
        j->n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, GB_MIN_TASK_WORK, MMB_SPLIT), (j->M + 7) / 8);
        lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_bf16_terms_ws((j->M + j->n_tasks - 1) / j->n_tasks + 8, Nmax));
        lmc_pool_run(c->pool, j->n_tasks, mmb_dx_task, j);
        j->wp = NULL;
    }
    bool any = false;
    for (int i = 0; i < j->n; i++) any = any || j->dw[i] || j->db[i];
    if (!any) return;
    /* x (M, K) packed once, every task's and every product's B */
    lmc_cpu_xbuf_reserve(c, dyw + lmc_cpu_gemm_bf16_bpack_words(j->K, j->M));
    j->xp = (uint32_t *)c->xbuf + dyw;
    int64_t np = lmc_cpu_gemm_bf16_bpack_panels(j->K, j->M);
    j->n_tasks = LMC_MIN(lmc_cpu_ntasks(c, np * 4096, 8192, 1), np);
    lmc_pool_run(c->pool, j->n_tasks, mmb_xpack_task, j);
    j->n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, GB_MIN_TASK_WORK, MMB_SPLIT), (Nt + 7) / 8);
    lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_bf16_ws(LMC_MIN(Nmax, (Nt + j->n_tasks - 1) / j->n_tasks + 8),
                                                    j->K, j->M));
    lmc_pool_run(c->pool, j->n_tasks, mmb_dw_task, j);
}

void lmc_cpu_matmul_bwd_bf16(void *ctx, float *dx, float *dw, float *db, const float *dy,
                             const float *x, int64_t M, const struct lmc_mat *w, int accum_dx) {
    lmc_cpu_matmul_bwd_multi_bf16(ctx, 1, dx, &dw, &db, &dy, x, M, &w, accum_dx);
}

void lmc_cpu_matmul_bwd_multi_bf16(void *ctx, int n, float *dx, float *const *dw, float *const *db,
                                   const float *const *dy, const float *x, int64_t M,
                                   const struct lmc_mat *const *w, int accum_dx) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n > 0 && n <= MMB_MAX);
    if (M <= 0) return;
    struct mmb_bwd_job j = {.c = c, .n = n, .dx = dx, .x = x, .M = M, .K = w[0]->cols,
                            .accum_dx = accum_dx};
    for (int i = 0; i < n; i++) {
        LMC_ASSERT(w[i]->dtype == LMC_DTYPE_F32 && w[i]->cols == j.K);
        j.w[i] = w[i]->data;
        j.dw[i] = dw[i];
        j.db[i] = db ? db[i] : NULL;
        j.dy[i] = dy[i];
        j.N[i] = w[i]->rows;
        j.start[i + 1] = j.start[i] + w[i]->rows;
    }
    if (j.K == 0 || j.start[n] == 0) { /* empty products: the fp32 op's edge rules */
        if (n == 1) lmc_cpu_matmul_bwd(ctx, dx, dw[0], db ? db[0] : NULL, dy[0], x, M, w[0], accum_dx);
        else lmc_cpu_matmul_bwd_multi(ctx, n, dx, dw, db, dy, x, M, w, accum_dx);
        return;
    }
    mmb_bwd_run(c, &j);
}
