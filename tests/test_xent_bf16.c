/* test_xent_bf16.c — the bf16 mode's fused classifier + cross-entropy
 * (classifier_xent.c: per task 64 rows of logits kept in scratch, the
 * gradient written once as bf16 pairs in the dh and dW GEMMs' packed A
 * layouts)
 * and the GEMM entry points it is built on (gemm_bf16.h):
 *  - lmc_cpu_gemm_bf16_apack_t / _apack + lmc_cpu_gemm_bf16_pp give the
 *    bits of lmc_cpu_gemm_bf16 on the f32 A, given transposed or as rows
 *    (odd M, N, K; several K blocks; = and +=; the A written in several
 *    pieces, an odd last line, a partial last panel; B of contiguous
 *    lines packed by bpack's row walk in two panel ranges, two N blocks);
 *  - the op against the unfused bf16 path composed here from the GEMM
 *    (f32 logits, a float64 softmax, dh and dw GEMMs per block of rows):
 *    loss, dh and dw close to it; against the exact float64 loss and
 *    gradients within the bf16 GEMM tolerance (2e-2); finite differences
 *    of the float64 loss against dh and dw; ignored targets; dw
 *    accumulated into; the loss-only call the same loss bits, dh without
 *    dw the same dh bits; 1 and 2 threads the same bits. Sizes: one
 *    block of 37 rows (one task, a partial panel of 5 rows), and 1101
 *    rows over V = 8191 (two blocks of rows, 1024 in 16 tasks and 77 in
 *    two: an odd K for dW, a last task of 13 rows). */
#include "test.h"
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"

#include <stdlib.h>

static uint64_t rng = 4242;

static void *ws_alloc(size_t words) { return aligned_alloc(64, (words * 4 + 64) / 64 * 64); }

/* pp on an A written by apack_t against lmc_cpu_gemm_bf16 on the f32 A(M, K) = x^T (x: K lines of ldx) */
static void test_pp(int64_t M, int64_t N, int64_t K, int64_t piece, bool accum) {
    int64_t ldx = M + 3;
    float *x = test_rand_vec(&rng, K * ldx, 1.0f), *B = test_rand_vec(&rng, K * N, 1.0f),
          *c0 = test_rand_vec(&rng, M * N, 1.0f);
    float *c1 = malloc((size_t)(M * N) * 4), *c2 = malloc((size_t)(M * N) * 4);
    memcpy(c1, c0, (size_t)(M * N) * 4), memcpy(c2, c0, (size_t)(M * N) * 4);
    uint32_t *ap = ws_alloc(lmc_cpu_gemm_bf16_apack_words(M, K));
    uint32_t *bp = ws_alloc(lmc_cpu_gemm_bf16_bpack_words(N, K));
    memset(ap, 0xff, lmc_cpu_gemm_bf16_apack_words(M, K) * 4); /* every word must be written */
    for (int64_t k = 0; k < K; k += piece) /* pieces of even length but the last */
        lmc_cpu_gemm_bf16_apack_t(ap, M, K, k / 2, x + k * ldx, ldx, LMC_MIN(piece, K - k));
    int64_t np = lmc_cpu_gemm_bf16_bpack_panels(N, K); /* in two ranges, as two tasks would */
    lmc_cpu_gemm_bf16_bpack(bp, N, K, B, N, 1, 0, np / 2 + 1);
    lmc_cpu_gemm_bf16_bpack(bp, N, K, B, N, 1, np / 2 + 1, np);
    lmc_cpu_gemm_bf16_pp(M, N, K, ap, bp, c1, N, accum);
    void *ws = ws_alloc(lmc_cpu_gemm_bf16_ws(M, N, K));
    lmc_cpu_gemm_bf16(M, N, K, x, 1, ldx, B, N, 1, c2, N, accum, ws);
    CHECK_MSG(!memcmp(c1, c2, (size_t)(M * N) * 4), "pp: the bits of gemm_bf16 (M %lld N %lld K %lld accum %d)",
              (long long)M, (long long)N, (long long)K, (int)accum);
    /* the padded rows of the last panel are zeros */
    int64_t Mp = (M + 7) / 8 * 8, KP = (K + 1) / 2;
    int zeros = 1;
    for (int64_t m = M; m < Mp; m++)
        for (int64_t p = 0; p < KP; p++) zeros &= ap[(m / 8) * 8 * KP + p * 8 + m % 8] == 0;
    CHECK(zeros);
    free(x), free(B), free(c0), free(c1), free(c2), free(ap), free(bp), free(ws);
}

/* pp on an A written by apack (row-major lines, pieces of `piece` rows) against lmc_cpu_gemm_bf16 */
static void test_pp_rows(int64_t M, int64_t N, int64_t K, int64_t piece) {
    int64_t ldx = K + 5;
    float *x = test_rand_vec(&rng, M * ldx, 1.0f), *B = test_rand_vec(&rng, K * N, 1.0f);
    float *c1 = malloc((size_t)(M * N) * 4), *c2 = malloc((size_t)(M * N) * 4);
    size_t aw = lmc_cpu_gemm_bf16_apack_words(M, K);
    uint32_t *ap = ws_alloc(aw), *bp = ws_alloc(lmc_cpu_gemm_bf16_bpack_words(N, K));
    memset(ap, 0xff, aw * 4);
    for (int64_t m = 0; m < M; m += piece)
        lmc_cpu_gemm_bf16_apack(ap, M, K, m, x + m * ldx, ldx, LMC_MIN(piece, M - m));
    lmc_cpu_gemm_bf16_bpack(bp, N, K, B, 1, K, 0, lmc_cpu_gemm_bf16_bpack_panels(N, K)); /* B given as (N, K) rows */
    lmc_cpu_gemm_bf16_pp(M, N, K, ap, bp, c1, N, false);
    void *ws = ws_alloc(lmc_cpu_gemm_bf16_ws(M, N, K));
    lmc_cpu_gemm_bf16(M, N, K, x, ldx, 1, B, 1, K, c2, N, false, ws);
    CHECK_MSG(!memcmp(c1, c2, (size_t)(M * N) * 4), "pp (rows): the bits of gemm_bf16 (M %lld N %lld K %lld)",
              (long long)M, (long long)N, (long long)K);
    int64_t Mp = (M + 7) / 8 * 8, KP = (K + 1) / 2;
    int zeros = 1;
    for (int64_t m = M; m < Mp; m++)
        for (int64_t p = 0; p < KP; p++) zeros &= ap[(m / 8) * 8 * KP + p * 8 + m % 8] == 0;
    CHECK(zeros);
    free(x), free(B), free(c1), free(c2), free(ap), free(bp), free(ws);
}

struct xout {
    float *loss, *dh, *dw, *loss_only;
};

static void run_op(struct lmc_backend *be, int64_t M, int64_t V, int64_t C, const float *h, const float *w,
                   const int32_t *tg, float dscale, struct xout *o) {
    struct lmc_mat W = {LMC_DTYPE_F32, V, C, (void *)w};
    o->loss = malloc((size_t)M * 4), o->loss_only = malloc((size_t)M * 4);
    o->dh = malloc((size_t)(M * C) * 4), o->dw = malloc((size_t)(V * C) * 4);
    for (int64_t i = 0; i < V * C; i++) o->dw[i] = 0.5f; /* accumulated into */
    be->classifier_xent(be->ctx, o->loss, o->dh, o->dw, h, &W, tg, M, dscale);
    be->classifier_xent(be->ctx, o->loss_only, NULL, NULL, h, &W, tg, M, dscale);
    for (int64_t i = 0; i < V * C; i++) o->dw[i] -= 0.5f;
}

static void free_out(struct xout *o) { free(o->loss), free(o->dh), free(o->dw), free(o->loss_only); }

/* float64 loss of row m (exact logits); lg: V doubles of scratch */
static double row_loss(const float *h, const float *w, int64_t m, int64_t V, int64_t C, int32_t tg, double *lg,
                       int64_t dm, int64_t dk, double dhv, int64_t dv, double dwv) {
    double mx = -1e300, s = 0;
    for (int64_t v = 0; v < V; v++) {
        double a = 0;
        for (int64_t k = 0; k < C; k++)
            a += ((double)h[m * C + k] + (m == dm && k == dk ? dhv : 0)) *
                 ((double)w[v * C + k] + (v == dv && k == dk ? dwv : 0));
        lg[v] = a;
        mx = fmax(mx, a);
    }
    for (int64_t v = 0; v < V; v++) s += exp(lg[v] - mx);
    return tg < 0 ? 0 : log(s) + mx - lg[tg];
}

static void test_op(int64_t M, int64_t V, int64_t C) {
    printf("classifier_xent bf16: M %lld V %lld C %lld\n", (long long)M, (long long)V, (long long)C);
    float *h = test_rand_vec(&rng, M * C, 1.0f), *w = test_rand_vec(&rng, V * C, 0.5f);
    int32_t *tg = malloc((size_t)M * sizeof *tg);
    for (int64_t i = 0; i < M; i++) tg[i] = i % 7 == 3 ? -1 : (int32_t)(test_rng_next(&rng) % (uint64_t)V);
    float dscale = 1.0f / (float)M;
    lmc_err err = {0};
    struct lmc_backend be1, be2;
    CHECK(lmc_backend_cpu_init(&be1, 1, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_init(&be2, 2, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_set_train_bf16(&be1, true, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_set_train_bf16(&be2, true, &err) == LMC_OK);
    struct xout o1, o2;
    run_op(&be1, M, V, C, h, w, tg, dscale, &o1);
    run_op(&be2, M, V, C, h, w, tg, dscale, &o2);
    CHECK(!memcmp(o1.loss, o2.loss, (size_t)M * 4) && !memcmp(o1.dh, o2.dh, (size_t)(M * C) * 4) &&
          !memcmp(o1.dw, o2.dw, (size_t)(V * C) * 4));
    CHECK_MSG(!memcmp(o1.loss, o1.loss_only, (size_t)M * 4), "loss-only call: the same loss bits");
    { /* dh without dw: the same dh bits */
        struct lmc_mat W = {LMC_DTYPE_F32, V, C, w};
        float *l2 = malloc((size_t)M * 4), *d2 = malloc((size_t)(M * C) * 4);
        be2.classifier_xent(be2.ctx, l2, d2, NULL, h, &W, tg, M, dscale);
        CHECK_MSG(!memcmp(l2, o1.loss, (size_t)M * 4) && !memcmp(d2, o1.dh, (size_t)(M * C) * 4), "dh without dw");
        free(l2), free(d2);
    }

    /* the unfused bf16 path: f32 logits by the GEMM, the softmax in
     * float64, dh and dw by the GEMM per block of the op's rows (1024
     * rows for V = 8191: the op's block, so dw's K blocks match) */
    int64_t Rb = LMC_MAX(1, LMC_MIN(M, ((int64_t)1 << 23) / V));
    float *lg = malloc((size_t)(M * V) * 4), *uh = malloc((size_t)(M * C) * 4), *uw = calloc((size_t)(V * C), 4);
    double *ul = malloc((size_t)M * sizeof *ul);
    void *ws = ws_alloc(LMC_MAX(lmc_cpu_gemm_bf16_ws(M, V, C), LMC_MAX(lmc_cpu_gemm_bf16_ws(M, C, V),
                                                                     lmc_cpu_gemm_bf16_ws(V, C, Rb))));
    lmc_cpu_gemm_bf16(M, V, C, h, C, 1, w, 1, C, lg, V, false, ws);
    for (int64_t m = 0; m < M; m++) {
        float *l = lg + m * V;
        double mx = -1e300, s = 0;
        for (int64_t v = 0; v < V; v++) mx = fmax(mx, l[v]);
        for (int64_t v = 0; v < V; v++) s += exp((double)l[v] - mx);
        ul[m] = tg[m] < 0 ? 0 : log(s) + mx - l[tg[m]];
        for (int64_t v = 0; v < V; v++)
            l[v] = tg[m] < 0 ? 0.0f : (float)((exp((double)l[v] - mx) / s - (v == tg[m])) * dscale);
    }
    lmc_cpu_gemm_bf16(M, C, V, lg, V, 1, w, C, 1, uh, C, false, ws);
    for (int64_t r0 = 0; r0 < M; r0 += Rb)
        lmc_cpu_gemm_bf16(V, C, LMC_MIN(Rb, M - r0), lg + r0 * V, 1, V, h + r0 * C, C, 1, uw, C, true, ws);
    double el = 0;
    for (int64_t m = 0; m < M; m++) el = fmax(el, fabs(o1.loss[m] - ul[m]) / fmax(1.0, fabs(ul[m])));
    double *ud = malloc((size_t)(LMC_MAX(M, V) * C) * sizeof *ud);
    for (int64_t i = 0; i < M * C; i++) ud[i] = uh[i];
    double eh = test_rel_err_f32_f64(o1.dh, ud, M * C);
    for (int64_t i = 0; i < V * C; i++) ud[i] = uw[i];
    double ew = test_rel_err_f32_f64(o1.dw, ud, V * C);
    CHECK_MSG(el < 1e-5 && eh < 2e-3 && ew < 2e-3, "against the unfused bf16 path: loss %.3g dh %.3g dw %.3g", el,
              eh, ew);
    printf("  vs unfused bf16 path: loss %.3g dh %.3g dw %.3g\n", el, eh, ew);

    /* the exact float64 loss and gradients */
    double *dl = malloc((size_t)V * sizeof *dl), *g = malloc((size_t)V * sizeof *g);
    double *rdh = calloc((size_t)(M * C), sizeof *rdh), *rdw = calloc((size_t)(V * C), sizeof *rdw);
    double lerr = 0;
    for (int64_t m = 0; m < M; m++) {
        double l = row_loss(h, w, m, V, C, tg[m], dl, -1, -1, 0, -1, 0), mx = -1e300, s = 0;
        lerr = fmax(lerr, fabs(l - o1.loss[m]) / fmax(1.0, fabs(l)));
        if (tg[m] < 0) {
            CHECK(o1.loss[m] == 0.0f);
            continue;
        }
        for (int64_t v = 0; v < V; v++) mx = fmax(mx, dl[v]);
        for (int64_t v = 0; v < V; v++) s += exp(dl[v] - mx);
        for (int64_t v = 0; v < V; v++) g[v] = (exp(dl[v] - mx) / s - (v == tg[m])) * dscale;
        for (int64_t v = 0; v < V; v++)
            for (int64_t k = 0; k < C; k++) {
                rdh[m * C + k] += g[v] * w[v * C + k];
                rdw[v * C + k] += g[v] * h[m * C + k];
            }
    }
    double e1 = test_rel_err_f32_f64(o1.dh, rdh, M * C), e2 = test_rel_err_f32_f64(o1.dw, rdw, V * C);
    CHECK_MSG(lerr < 2e-2 && e1 < 2e-2 && e2 < 2e-2, "against float64: loss %.3g dh %.3g dw %.3g", lerr, e1, e2);
    printf("  vs float64: loss %.3g dh %.3g dw %.3g\n", lerr, e1, e2);

    /* finite differences of the float64 total loss sum_m dscale * loss_m:
     * a few coordinates of dh (one row's loss moves) and of dw (every row's) */
    double dmax_h = 0, dmax_w = 0;
    for (int64_t i = 0; i < M * C; i++) dmax_h = fmax(dmax_h, fabs(rdh[i]));
    for (int64_t i = 0; i < V * C; i++) dmax_w = fmax(dmax_w, fabs(rdw[i]));
    const double eps = 1e-4;
    for (int t = 0; t < 4; t++) {
        int64_t m = (int64_t)(test_rng_next(&rng) % (uint64_t)M), k = (int64_t)(test_rng_next(&rng) % (uint64_t)C);
        if (tg[m] < 0) m = (m + 1) % M;
        double fd = (row_loss(h, w, m, V, C, tg[m], dl, m, k, eps, -1, 0) -
                     row_loss(h, w, m, V, C, tg[m], dl, m, k, -eps, -1, 0)) / (2 * eps) * dscale;
        CHECK_MSG(fabs(fd - o1.dh[m * C + k]) <= 2e-2 * dmax_h, "dh[%lld,%lld] fd %.6g op %.6g", (long long)m,
                  (long long)k, fd, o1.dh[m * C + k]);
    }
    if (M <= 64) /* dw's: every row's loss (the small case only) */
        for (int t = 0; t < 3; t++) {
            int64_t v = t == 0 ? tg[0] : (int64_t)(test_rng_next(&rng) % (uint64_t)V);
            int64_t k = (int64_t)(test_rng_next(&rng) % (uint64_t)C);
            double fp = 0, fm = 0;
            for (int64_t m = 0; m < M; m++) {
                fp += row_loss(h, w, m, V, C, tg[m], dl, -1, k, 0, v, eps);
                fm += row_loss(h, w, m, V, C, tg[m], dl, -1, k, 0, v, -eps);
            }
            double fd = (fp - fm) / (2 * eps) * dscale;
            CHECK_MSG(fabs(fd - o1.dw[v * C + k]) <= 2e-2 * dmax_w, "dw[%lld,%lld] fd %.6g op %.6g", (long long)v,
                      (long long)k, fd, o1.dw[v * C + k]);
        }
    free(dl), free(g), free(rdh), free(rdw), free(ud), free(ul), free(lg), free(uh), free(uw), free(ws);
    free_out(&o1), free_out(&o2);
    lmc_backend_cpu_free(&be1), lmc_backend_cpu_free(&be2);
    free(h), free(w), free(tg);
}

int main(void) {
    if (!lmc_cpu_has_bf16()) {
        printf("this CPU has no AVX512-BF16: the bf16 mode is refused; only the portable GEMM checked\n");
        test_pp(37, 45, 29, 10, false);
        return test_finish("test_xent_bf16");
    }
    test_pp(37, 45, 29, 10, false);
    test_pp(37, 45, 29, 29, true);
    test_pp(19, 70, 801, 64, true); /* three K blocks, rows < 2 panels of 16 */
    test_pp(8, 33, 2, 2, false);
    test_pp(21, 800, 801, 30, true); /* two N blocks, three K blocks, B packed in two ranges */
    test_pp_rows(37, 45, 29, 16);
    test_pp_rows(45, 33, 801, 8); /* three K blocks, an odd K */
    test_pp_rows(5, 70, 64, 5);
    test_op(37, 67, 29);
    test_op(1101, 8191, 29);
    return test_finish("test_xent_bf16");
}
