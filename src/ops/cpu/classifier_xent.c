/* classifier_xent.c — the fused classifier + cross-entropy (see backend.h):
 * logits for a block of R rows at a time (R*V floats in xbuf), a softmax
 * per row in double, the loss, then in place the logits' gradient
 * (p - onehot) * dscale, from which dh (block rows) and dw (+=) follow by
 * sgemm. Only one block of logits exists at a time. Every phase splits
 * into fixed slices (V columns or block rows), so results are
 * deterministic for a given thread count.
 *
 * The bf16 training mode's twin (lmc_cpu_classifier_xent_bf16) never
 * writes f32 logits to memory: each task takes XENT_RC rows of a block,
 * computes their logits into its own scratch (XENT_RC * V floats), the
 * softmax, loss and gradient there, and writes the gradient once as bf16
 * pairs in the two packed A layouts the dh and dW GEMMs read (gemm_bf16.h's
 * apack and apack_t; half the bytes of f32, and no packing pass over f32
 * logits). dh and dW then run with both operands packed (lmc_cpu_gemm_bf16_pp).
 * w is packed once per call in both of its layouts, each block's h once.
 * The GEMMs, their K blocks and the roundings are those of the unfused
 * bf16 path (logits, dh and dw GEMMs over f32 blocks of logits): the same
 * bits, and the same for any thread count. */
#include "ops/cpu/gemm_bf16.h"

#include <cblas.h>

#define XENT_BLOCK_FLOATS ((int64_t)1 << 21) /* 8 MB of logits per block */
#define XENT_SPLIT 4                            /* bf16: dh and dW GEMM tasks per thread */
#ifndef XENT_RC
#define XENT_RC 64 /* bf16: rows per fused task (a multiple of 8) */
#endif

struct xent_job {
    float *loss, *dh, *dw, *lg;
    const float *h, *w;
    const int32_t *tg;
    int64_t r0, R, V, C, n_tasks;
    float dscale;
};

/* lg[:, v-slice] = h_block @ w[v-slice]^T */
static void xent_logits_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->V, j->n_tasks, t, 16, &lo, &hi);
    if (hi <= lo) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->R, (int)(hi - lo), (int)j->C, 1.0f,
                j->h + j->r0 * j->C, (int)j->C, j->w + lo * j->C, (int)j->C, 0.0f, j->lg + lo,
                (int)j->V);
}

/* One row of logits l (V of them, target tg < 0: ignored): its loss, and
 * (grad) in place the row's gradient (p - onehot) * dscale. The exps are
 * the attention ops' vectorised float exp (lmc_cpu_exp_sum16), summed in
 * double; the row holds them in place, then their scaled values. */
static float xent_row(float *l, int64_t V, int32_t tg, float dscale, bool grad) {
    float mx = -INFINITY;
    int64_t v = 0;
#ifdef __AVX512F__
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (; v + 16 <= V; v += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(l + v));
    mx = _mm512_reduce_max_ps(mv);
#elif defined(__AVX2__)
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (; v + 8 <= V; v += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(l + v));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    mx = _mm_cvtss_f32(m4);
#endif
    for (; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    float lt = tg < 0 ? 0.0f : l[tg];
    double sum = lmc_cpu_exp_sum16(l, V, mx);
    float loss = tg < 0 ? 0.0f : (float)(log(sum) + mx - lt);
    if (!grad) return loss;
    float k = tg < 0 ? 0.0f : (float)((double)dscale / sum);
    v = 0;
#ifdef __AVX512F__
    const __m512 kv = _mm512_set1_ps(k);
    for (; v + 16 <= V; v += 16) _mm512_storeu_ps(l + v, _mm512_mul_ps(_mm512_loadu_ps(l + v), kv));
#elif defined(__AVX2__)
    const __m256 kv = _mm256_set1_ps(k);
    for (; v + 8 <= V; v += 8) _mm256_storeu_ps(l + v, _mm256_mul_ps(_mm256_loadu_ps(l + v), kv));
#endif
    for (; v < V; v++) l[v] *= k;
    if (tg >= 0) l[tg] -= dscale;
    return loss;
}

/* per row of the block: loss, then the row of logits becomes its gradient */
static void xent_softmax_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->R, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        j->loss[j->r0 + r] = xent_row(j->lg + r * j->V, j->V, j->tg[j->r0 + r], j->dscale, j->dh != NULL);
}

/* dh[block rows] = g @ w */
static void xent_dh_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->R, j->n_tasks, t, 1, &lo, &hi);
    if (hi <= lo) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)j->C, (int)j->V,
                1.0f, j->lg + lo * j->V, (int)j->V, j->w, (int)j->C, 0.0f,
                j->dh + (j->r0 + lo) * j->C, (int)j->C);
}

/* dw[v-slice] += g[:, v-slice]^T @ h_block */
static void xent_dw_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->V, j->n_tasks, t, 16, &lo, &hi);
    if (hi <= lo) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)j->C, (int)j->R, 1.0f,
                j->lg + lo, (int)j->V, j->h + j->r0 * j->C, (int)j->C, 1.0f, j->dw + lo * j->C,
                (int)j->C);
}

static void xent_run(struct lmc_cpu_ctx *c, float *loss, float *dh, float *dw, const float *h,
                     const struct lmc_mat *w, const int32_t *targets, int64_t M, float dscale) {
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32);
    int64_t V = w->rows, C = w->cols;
    if (M <= 0) return;
    int64_t Rmax = LMC_MAX(1, LMC_MIN(M, XENT_BLOCK_FLOATS / V));
    lmc_cpu_xbuf_reserve(c, (size_t)(Rmax * V));
    struct xent_job j = {loss, dh, dw, c->xbuf, h, w->data, targets, 0, 0, V, C, 1, dscale};
    for (int64_t r0 = 0; r0 < M; r0 += Rmax) {
        j.r0 = r0;
        j.R = LMC_MIN(Rmax, M - r0);
        int64_t work = j.R * V * C;
        /* sgemm packs its operands per call: one task per thread */
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, 1), (V + 15) / 16);
        lmc_pool_run(c->pool, j.n_tasks, xent_logits_task, &j);
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, j.R * V, 4096, 1), j.R);
        lmc_pool_run(c->pool, j.n_tasks, xent_softmax_task, &j);
        if (!dh) continue;
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, 1), j.R);
        lmc_pool_run(c->pool, j.n_tasks, xent_dh_task, &j);
        if (!dw) continue;
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, 1), (V + 15) / 16);
        lmc_pool_run(c->pool, j.n_tasks, xent_dw_task, &j);
    }
}

/* ---- the bf16 mode: fused tasks of XENT_RC rows ---- */

struct xent16_job {
    float *loss, *dh, *dw;
    const float *h, *w;
    const int32_t *tg;
    int64_t r0, R, V, C, n_dh, n_dw;
    float dscale;
    struct lmc_cpu_ctx *c;
    size_t ws_words; /* each thread's scratch: the GEMM's workspace, then XENT_RC rows of logits */
    /* packed once per call (gemm_bf16.h's bpack), shared by the tasks: w
     * as the logits' B (C, V) and as dh's B (V, C); the block's rows of h
     * as dw's B (R, C); the block's gradient as dh's A (R, V) and as dw's
     * A (V, R), both apack */
    uint32_t *wl, *wd, *hp, *gd, *gw;
};

/* rows [lo, hi) of the block: logits, softmax, loss, the gradient's bf16 pairs */
static void xent16_rows_task(void *arg, int64_t t, int thread) {
    const struct xent16_job *j = arg;
    int64_t lo = t * XENT_RC, hi = LMC_MIN(j->R, lo + XENT_RC), V = j->V, C = j->C;
    if (hi <= lo) return;
    float *ws = j->c->scratch[thread], *lg = ws + j->ws_words;
    lmc_cpu_gemm_bf16_pb(hi - lo, V, C, j->h + (j->r0 + lo) * C, C, 1, j->wl, lg, V, false, ws);
    for (int64_t r = lo; r < hi; r++)
        j->loss[j->r0 + r] = xent_row(lg + (r - lo) * V, V, j->tg[j->r0 + r], j->dscale, j->dh != NULL);
    if (!j->dh) return;
    lmc_cpu_gemm_bf16_apack(j->gd, j->R, V, lo, lg, V, hi - lo);
    if (j->dw) lmc_cpu_gemm_bf16_apack_t(j->gw, V, j->R, lo / 2, lg, V, hi - lo);
}

/* tasks [0, n_dh): dh[block rows slice] = g @ w; then [n_dh, n_dh + n_dw):
 * dw[v-slice] += g[:, v-slice]^T @ h_block; every operand packed */
static void xent16_grad_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent16_job *j = arg;
    int64_t lo, hi;
    if (t < j->n_dh) {
        lmc_cpu_range(j->R, j->n_dh, t, 8, &lo, &hi);
        if (hi > lo)
            lmc_cpu_gemm_bf16_pp(hi - lo, j->C, j->V, j->gd + lo * ((j->V + 1) / 2), j->wd,
                                 j->dh + (j->r0 + lo) * j->C, j->C, false);
        return;
    }
    lmc_cpu_range(j->V, j->n_dw, t - j->n_dh, 8, &lo, &hi);
    if (hi > lo)
        lmc_cpu_gemm_bf16_pp(hi - lo, j->C, j->R, j->gw + lo * ((j->R + 1) / 2), j->hp, j->dw + lo * j->C, j->C, true);
}

/* panels of one B to pack (which = 0 wl, 1 wd, 2 hp) */
struct xent16_pack {
    const struct xent16_job *j;
    int which;
    int64_t n_tasks;
};

static void xent16_pack_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct xent16_pack *p = arg;
    const struct xent16_job *j = p->j;
    int64_t N = p->which == 0 ? j->V : j->C, K = p->which == 0 ? j->C : p->which == 1 ? j->V : j->R, lo, hi;
    lmc_cpu_range(lmc_cpu_gemm_bf16_bpack_panels(N, K), p->n_tasks, t, 1, &lo, &hi);
    if (p->which == 0) lmc_cpu_gemm_bf16_bpack(j->wl, N, K, j->w, 1, j->C, lo, hi);
    else if (p->which == 1) lmc_cpu_gemm_bf16_bpack(j->wd, N, K, j->w, j->C, 1, lo, hi);
    else lmc_cpu_gemm_bf16_bpack(j->hp, N, K, j->h + j->r0 * j->C, j->C, 1, lo, hi);
}

static void xent16_pack(struct lmc_cpu_ctx *c, const struct xent16_job *j, int which) {
    int64_t N = which == 0 ? j->V : j->C, K = which == 0 ? j->C : which == 1 ? j->V : j->R;
    int64_t np = lmc_cpu_gemm_bf16_bpack_panels(N, K);
    struct xent16_pack p = {j, which, LMC_MIN(lmc_cpu_ntasks(c, N * K, 1 << 15, 1), np)};
    lmc_pool_run(c->pool, p.n_tasks, xent16_pack_task, &p);
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static void xent16_run(struct lmc_cpu_ctx *c, float *loss, float *dh, float *dw, const float *h,
                       const struct lmc_mat *w, const int32_t *targets, int64_t M, float dscale) {
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32);
    int64_t V = w->rows, C = w->cols;
    if (M <= 0) return;
    /* blocks of the unfused path's size (its dw K blocks, so its bits) */
    int64_t Rmax = LMC_MAX(1, LMC_MIN(M, 4 * XENT_BLOCK_FLOATS / V));
    size_t wpf = round16(LMC_MAX(lmc_cpu_gemm_bf16_bpack_words(V, C), lmc_cpu_gemm_bf16_bpack_words(C, V)));
    size_t gdf = dh ? round16(lmc_cpu_gemm_bf16_apack_words(Rmax, V)) : 0;
    size_t hpf = dh && dw ? round16(lmc_cpu_gemm_bf16_bpack_words(C, Rmax)) : 0;
    size_t gwf = dh && dw ? round16(lmc_cpu_gemm_bf16_apack_words(V, Rmax)) : 0;
    lmc_cpu_xbuf_reserve(c, 2 * wpf + gdf + hpf + gwf);
    size_t ws = round16(lmc_cpu_gemm_bf16_ws(XENT_RC, V, C));
    lmc_cpu_scratch_reserve(c, ws + (size_t)(XENT_RC * V));
    struct xent16_job j = {.loss = loss, .dh = dh, .dw = dw, .h = h, .w = w->data, .tg = targets,
                           .V = V, .C = C, .dscale = dscale, .c = c, .ws_words = ws};
    j.wl = (uint32_t *)c->xbuf;
    j.wd = j.wl + wpf;
    j.gd = j.wd + wpf;
    j.hp = j.gd + gdf;
    j.gw = j.hp + hpf;
    xent16_pack(c, &j, 0);
    if (dh) xent16_pack(c, &j, 1);
    for (int64_t r0 = 0; r0 < M; r0 += Rmax) {
        j.r0 = r0;
        j.R = LMC_MIN(Rmax, M - r0);
        lmc_pool_run(c->pool, (j.R + XENT_RC - 1) / XENT_RC, xent16_rows_task, &j);
        if (!dh) continue;
        if (dw) xent16_pack(c, &j, 2);
        /* every operand packed: tasks cost no packing, and XENT_SPLIT per
         * thread even out threads running at different speeds */
        int64_t work = j.R * V * C;
        j.n_dh = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, XENT_SPLIT), (j.R + 7) / 8);
        j.n_dw = dw ? LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, XENT_SPLIT), (V + 7) / 8) : 0;
        lmc_pool_run(c->pool, j.n_dh + j.n_dw, xent16_grad_task, &j);
    }
}

void lmc_cpu_classifier_xent(void *ctx, float *loss, float *dh, float *dw, const float *h,
                             const struct lmc_mat *w, const int32_t *targets, int64_t M,
                             float dscale) {
    xent_run(ctx, loss, dh, dw, h, w, targets, M, dscale);
}

void lmc_cpu_classifier_xent_bf16(void *ctx, float *loss, float *dh, float *dw, const float *h,
                                  const struct lmc_mat *w, const int32_t *targets, int64_t M,
                                  float dscale) {
    /* empty products keep the fp32 op's rules */
    if (w->cols > 0 && w->rows > 0) xent16_run(ctx, loss, dh, dw, h, w, targets, M, dscale);
    else xent_run(ctx, loss, dh, dw, h, w, targets, M, dscale);
}
