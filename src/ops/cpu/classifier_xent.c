/* classifier_xent.c — the fused classifier + cross-entropy (see backend.h):
 * logits for a block of R rows at a time (R*V floats in xbuf), a softmax
 * per row in double, the loss, then in place the logits' gradient
 * (p - onehot) * dscale, from which dh (block rows) and dw (+=) follow by
 * sgemm. Only one block of logits exists at a time. Every phase splits
 * into fixed slices (V columns or block rows), so results are
 * deterministic for a given thread count. The bf16 training mode's twin
 * (lmc_cpu_classifier_xent_bf16) runs the three GEMMs through the bf16
 * GEMM (gemm_bf16.c) on 4x larger blocks, w packed once per call in both
 * of its layouts and each block's h once, shared by the tasks. */
#include "ops/cpu/gemm_bf16.h"

#include <cblas.h>

#define XENT_BLOCK_FLOATS ((int64_t)1 << 21) /* 8 MB of logits per block */
#define XENT_SPLIT 4                            /* bf16: GEMM tasks per thread */

struct xent_job {
    float *loss, *dh, *dw, *lg;
    const float *h, *w;
    const int32_t *tg;
    int64_t r0, R, V, C, n_tasks;
    float dscale;
    struct lmc_cpu_ctx *c; /* bf16 mode: per-thread scratch of the bf16 GEMM */
    bool bf16;
    /* bf16 mode: packed once per call, shared by the tasks (gemm_bf16.h's
     * bpack): w as the logits' B (C, V) and as dh's B (V, C); the block's
     * rows of h as dw's B (R, C) */
    uint32_t *wl, *wd, *hp;
};

/* lg[:, v-slice] = h_block @ w[v-slice]^T */
static void xent_logits_task(void *arg, int64_t t, int thread) {
    const struct xent_job *j = arg;
    int64_t lo, hi;
    if (j->bf16) { /* bf16: tasks own rows of the block (the packed w is whole) */
        lmc_cpu_range(j->R, j->n_tasks, t, 8, &lo, &hi);
        if (hi > lo)
            lmc_cpu_gemm_bf16_pb(hi - lo, j->V, j->C, j->h + (j->r0 + lo) * j->C, j->C, 1, j->wl, j->lg + lo * j->V,
                                 j->V, false, j->c->scratch[thread]);
        return;
    }
    lmc_cpu_range(j->V, j->n_tasks, t, 16, &lo, &hi);
    if (hi <= lo) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->R, (int)(hi - lo), (int)j->C, 1.0f,
                j->h + j->r0 * j->C, (int)j->C, j->w + lo * j->C, (int)j->C, 0.0f, j->lg + lo,
                (int)j->V);
}

/* per row: loss, then the row of logits becomes its gradient. The exps
 * are the attention ops' vectorised float exp (lmc_cpu_exp_sum), summed
 * in double; the row holds them in place, then their scaled values. */
static void xent_softmax_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent_job *j = arg;
    int64_t lo, hi, V = j->V;
    lmc_cpu_range(j->R, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        float *l = j->lg + r * V;
        int32_t tg = j->tg[j->r0 + r];
        float mx = -INFINITY;
        int64_t v = 0;
#ifdef __AVX512F__
        __m512 mv = _mm512_set1_ps(-INFINITY);
        for (; v + 16 <= V; v += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(l + v));
        mx = _mm512_reduce_max_ps(mv);
#endif
        for (; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        float lt = tg < 0 ? 0.0f : l[tg];
        double sum = lmc_cpu_exp_sum16(l, V, mx);
        j->loss[j->r0 + r] = tg < 0 ? 0.0f : (float)(log(sum) + mx - lt);
        if (!j->dh) continue;
        float k = tg < 0 ? 0.0f : (float)((double)j->dscale / sum);
        v = 0;
#ifdef __AVX512F__
        const __m512 kv = _mm512_set1_ps(k);
        for (; v + 16 <= V; v += 16) _mm512_storeu_ps(l + v, _mm512_mul_ps(_mm512_loadu_ps(l + v), kv));
#endif
        for (; v < V; v++) l[v] *= k;
        if (tg >= 0) l[tg] -= j->dscale;
    }
}

/* dh[block rows] = g @ w */
static void xent_dh_task(void *arg, int64_t t, int thread) {
    const struct xent_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->R, j->n_tasks, t, 1, &lo, &hi);
    if (hi <= lo) return;
    if (j->bf16) {
        lmc_cpu_gemm_bf16_pb(hi - lo, j->C, j->V, j->lg + lo * j->V, j->V, 1, j->wd, j->dh + (j->r0 + lo) * j->C,
                             j->C, false, j->c->scratch[thread]);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)j->C, (int)j->V,
                1.0f, j->lg + lo * j->V, (int)j->V, j->w, (int)j->C, 0.0f,
                j->dh + (j->r0 + lo) * j->C, (int)j->C);
}

/* dw[v-slice] += g[:, v-slice]^T @ h_block */
static void xent_dw_task(void *arg, int64_t t, int thread) {
    const struct xent_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->V, j->n_tasks, t, 16, &lo, &hi);
    if (hi <= lo) return;
    if (j->bf16) {
        lmc_cpu_gemm_bf16_pb(hi - lo, j->C, j->R, j->lg + lo, 1, j->V, j->hp, j->dw + lo * j->C, j->C, true,
                             j->c->scratch[thread]);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)j->C, (int)j->R, 1.0f,
                j->lg + lo, (int)j->V, j->h + j->r0 * j->C, (int)j->C, 1.0f, j->dw + lo * j->C,
                (int)j->C);
}

/* bf16: panels [lo, hi) of one B to pack (t over the three: which = 0 wl, 1 wd, 2 hp) */
struct xent_pack {
    const struct xent_job *j;
    int which;
    int64_t n_tasks;
};

static void xent_pack_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent_pack *p = arg;
    const struct xent_job *j = p->j;
    int64_t N = p->which == 0 ? j->V : j->C, K = p->which == 0 ? j->C : p->which == 1 ? j->V : j->R, lo, hi;
    lmc_cpu_range(lmc_cpu_gemm_bf16_bpack_panels(N, K), p->n_tasks, t, 1, &lo, &hi);
    if (p->which == 0) lmc_cpu_gemm_bf16_bpack(j->wl, N, K, j->w, 1, j->C, lo, hi);
    else if (p->which == 1) lmc_cpu_gemm_bf16_bpack(j->wd, N, K, j->w, j->C, 1, lo, hi);
    else lmc_cpu_gemm_bf16_bpack(j->hp, N, K, j->h + j->r0 * j->C, j->C, 1, lo, hi);
}

static void xent_pack(struct lmc_cpu_ctx *c, const struct xent_job *j, int which) {
    int64_t N = which == 0 ? j->V : j->C, K = which == 0 ? j->C : which == 1 ? j->V : j->R;
    int64_t np = lmc_cpu_gemm_bf16_bpack_panels(N, K);
    struct xent_pack p = {j, which, LMC_MIN(lmc_cpu_ntasks(c, N * K, 1 << 15, 1), np)};
    lmc_pool_run(c->pool, p.n_tasks, xent_pack_task, &p);
}

static void xent_run(struct lmc_cpu_ctx *c, float *loss, float *dh, float *dw, const float *h,
                     const struct lmc_mat *w, const int32_t *targets, int64_t M, float dscale,
                     bool bf16) {
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32);
    int64_t V = w->rows, C = w->cols;
    if (M <= 0) return;
    int64_t Rmax = LMC_MAX(1, LMC_MIN(M, (bf16 ? 4 : 1) * XENT_BLOCK_FLOATS / V));
    size_t lgf = (size_t)(Rmax * V + 15) / 16 * 16, wpf = 0, hpf = 0; /* xbuf: logits, then the packs */
    if (bf16) {
        wpf = (LMC_MAX(lmc_cpu_gemm_bf16_bpack_words(V, C), lmc_cpu_gemm_bf16_bpack_words(C, V)) + 15) / 16 * 16;
        hpf = (lmc_cpu_gemm_bf16_bpack_words(C, Rmax) + 15) / 16 * 16;
    }
    lmc_cpu_xbuf_reserve(c, lgf + 2 * wpf + hpf);
    struct xent_job j = {loss, dh, dw, c->xbuf, h, w->data, targets, 0, 0, V, C, 1, dscale, c, bf16, NULL, NULL, NULL};
    if (bf16) { /* the largest of the three GEMMs' workspaces (logits, dh, dw); w packed twice */
        lmc_cpu_scratch_reserve(c, LMC_MAX(lmc_cpu_gemm_bf16_ws(Rmax, V, C),
                                           LMC_MAX(lmc_cpu_gemm_bf16_ws(Rmax, C, V),
                                                   lmc_cpu_gemm_bf16_ws(V, C, Rmax))));
        j.wl = (uint32_t *)(c->xbuf + lgf);
        j.wd = j.wl + wpf;
        j.hp = j.wd + wpf;
        xent_pack(c, &j, 0);
        if (dh) xent_pack(c, &j, 1);
    }
    for (int64_t r0 = 0; r0 < M; r0 += Rmax) {
        j.r0 = r0;
        j.R = LMC_MIN(Rmax, M - r0);
        int64_t work = j.R * V * C;
        /* bf16: the shared B is packed ahead, so tasks cost no packing and
         * XENT_SPLIT per thread even out threads running at different
         * speeds; sgemm packs its operands per call, one task per thread */
        int split = bf16 ? XENT_SPLIT : 1;
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, split), bf16 ? (j.R + 7) / 8 : (V + 15) / 16);
        lmc_pool_run(c->pool, j.n_tasks, xent_logits_task, &j);
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, j.R * V, 4096, 1), j.R);
        lmc_pool_run(c->pool, j.n_tasks, xent_softmax_task, &j);
        if (!dh) continue;
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, split), j.R);
        lmc_pool_run(c->pool, j.n_tasks, xent_dh_task, &j);
        if (!dw) continue;
        if (bf16) xent_pack(c, &j, 2);
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, split), (V + 15) / 16);
        lmc_pool_run(c->pool, j.n_tasks, xent_dw_task, &j);
    }
}

void lmc_cpu_classifier_xent(void *ctx, float *loss, float *dh, float *dw, const float *h,
                             const struct lmc_mat *w, const int32_t *targets, int64_t M,
                             float dscale) {
    xent_run(ctx, loss, dh, dw, h, w, targets, M, dscale, false);
}

void lmc_cpu_classifier_xent_bf16(void *ctx, float *loss, float *dh, float *dw, const float *h,
                                  const struct lmc_mat *w, const int32_t *targets, int64_t M,
                                  float dscale) {
    /* empty products keep the fp32 op's rules */
    xent_run(ctx, loss, dh, dw, h, w, targets, M, dscale, w->cols > 0 && w->rows > 0);
}
