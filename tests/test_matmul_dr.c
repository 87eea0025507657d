/* test_matmul_dr.c — the serving route's decode-row GEMM for F16/BF16
 * weights (ops/cpu/matmul_dr.c, vdpbf16ps; on CPUs without AVX512-BF16 its
 * f32 family, matmul_drf.c, AVX2), on random odd sizes (M across the 6-row
 * (4-row) tiles and the in-register/panel switch, N across the 4-column
 * (3-column) tiles, 16-column (12-column) panels and 64-column (48-column)
 * tasks, K odd, K = 1, K % 32 and K % 8 tails, K over the f32 family's
 * 768-element chunks):
 *  - element by element against the float64 sum of the bf16-rounded
 *    operands (f32 family: of the operands as stored) within the f32
 *    summation's bound (K + 3) 2^-24 sum |products|, and within bf16's own
 *    error of the unrounded product; the f32 family's kernels also have
 *    the bits of its portable scalar twin (lmc_cpu_matmul_drf_ref);
 *  - batch invariance: every row of a 70-row product has the bits of the
 *    same row computed alone (M = 1), among 2..13 rows at other places,
 *    and in the reversed batch; for 1 and 2 threads; F16 and BF16;
 *  - the backend's route (lmc_backend_cpu_route_rows): a step of m rows
 *    through matmul and matmul_multi gives its leading prompt rows the
 *    prefill GEMM's bits and the rest the decode-row GEMM's (row by row,
 *    alone); without AVX512-BF16 the prompt rows take our AVX2 GEMM
 *    (gemm_f32.c): each has the bits of the same row run alone as a
 *    one-row prompt step and of a 3-row prompt step at another place, and
 *    the float64 sum within the f32 bound (no AVX2: the decode-row GEMM's
 *    bits, as every other row); the
 *    head's weight takes the decode-row GEMM at any M; other sizes, and the
 *    route cleared, keep the fp32 kernels.
 * Skips the route (passes, saying so) on CPUs with neither AVX512-BF16 nor
 * AVX2 + FMA + F16C; the GEMM itself runs everywhere. */
#include "core/core.h"
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_f32.h"
#include "ops/cpu/ops_cpu.h"
#include "test.h"

#include <stdlib.h>

static uint64_t rng = 4242;

static float *rand_f(int64_t n) {
    float *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = test_rand(&rng);
    return p;
}

static bool bf16fam; /* the bf16 kernels run (AVX512-BF16), else the f32 family */

/* an operand as the kernels multiply it */
static double bf(float f) { return bf16fam ? (double)lmc_bf16_to_f32(lmc_f32_to_bf16(f)) : (double)f; }

/* A random (N, K) weight in dt (F16 or BF16); wq: its values as bf16, wf:
 * as stored. */
static struct lmc_mat make_w(enum lmc_dtype dt, int64_t N, int64_t K, double *wq, double *wf) {
    uint16_t *b = malloc((size_t)(N * K) * 2 + 2);
    for (int64_t i = 0; i < N * K; i++) {
        float f = test_rand(&rng), v;
        if (dt == LMC_DTYPE_F16) {
            b[i] = lmc_f32_to_f16(f);
            v = lmc_f16_to_f32(b[i]);
        } else {
            b[i] = lmc_f32_to_bf16(f);
            v = lmc_bf16_to_f32(b[i]);
        }
        if (wf) wf[i] = v;
        if (wq) wq[i] = bf(v);
    }
    return (struct lmc_mat){dt, N, K, b};
}

static void check_y(const float *y, const float *x, const double *wq, const double *wf, const float *bias,
                    int64_t M, int64_t N, int64_t K, const char *what) {
    int64_t bad = 0;
    double num = 0, den = 1e-30;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0, a = bias ? fabs(bias[n]) : 0, sf = s;
            for (int64_t k = 0; k < K; k++) {
                double p = bf(x[m * K + k]) * wq[n * K + k];
                s += p;
                a += fabs(p);
                sf += (double)x[m * K + k] * wf[n * K + k];
            }
            double bound = (double)(K + 3) * ldexp(1.0, -24) * a + 1e-30;
            if (!(fabs(y[m * N + n] - s) <= bound)) {
                if (!bad)
                    fprintf(stderr, "%s: M %lld N %lld K %lld: y[%lld,%lld] = %.9g, bf16 ref %.9g (bound %.3g)\n",
                            what, (long long)M, (long long)N, (long long)K, (long long)m, (long long)n,
                            y[m * N + n], s, bound);
                bad++;
            }
            num = fmax(num, fabs(y[m * N + n] - sf));
            den = fmax(den, fabs(sf));
        }
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements outside the f32 bound", what, (long long)bad, (long long)(M * N));
    CHECK_MSG(num / den < 2e-2, "%s: %.3g relative to the unrounded product", what, num / den);
}

static void dr(struct lmc_cpu_ctx *c, float *y, const float *x, int64_t M, const struct lmc_mat *w,
               const float *bias) {
    const struct lmc_mat *wp = w;
    const float *bp = bias;
    lmc_cpu_matmul_dr(c, 1, &y, x, M, &wp, bias ? &bp : NULL);
}

static void test_direct(struct lmc_cpu_ctx *c) {
    static const int64_t shapes[][3] = {{1, 3, 1},     {7, 37, 29},   {6, 33, 2},    {13, 131, 77},
                                        {64, 129, 768}, {70, 300, 401}, {5, 65, 1601}, {41, 17, 2048},
                                        {2, 64, 32},   {9, 1, 33},    {11, 50, 3001}, {4, 97, 1536}};
    static const enum lmc_dtype dts[2] = {LMC_DTYPE_F16, LMC_DTYPE_BF16};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int d = 0; d < 2; d++) {
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            double *wq = malloc((size_t)(N * K) * sizeof *wq), *wf = malloc((size_t)(N * K) * sizeof *wf);
            struct lmc_mat w = make_w(dts[d], N, K, wq, wf);
            float *x = rand_f(M * K), *bias = s % 2 ? rand_f(N) : NULL, *y = malloc((size_t)(M * N) * sizeof *y);
            for (int64_t i = 0; i < M * N; i++) y[i] = NAN; /* every element must be written */
            dr(c, y, x, M, &w, bias);
            check_y(y, x, wq, wf, bias, M, N, K, dts[d] == LMC_DTYPE_F16 ? "direct f16" : "direct bf16");
            if (!bf16fam) { /* the kernels (AVX2 where the CPU has it) against the portable twin: bits */
                float *yr = malloc((size_t)(M * N) * sizeof *yr);
                lmc_cpu_matmul_drf_ref(yr, x, M, &w, bias);
                CHECK_MSG(!memcmp(yr, y, (size_t)(M * N) * sizeof *y),
                          "f32 family %s, M %lld N %lld K %lld: kernels != twin",
                          dts[d] == LMC_DTYPE_F16 ? "f16" : "bf16", (long long)M, (long long)N, (long long)K);
                free(yr);
            }
            free(wq), free(wf), free((void *)w.data), free(x), free(bias), free(y);
        }
}

/* Every row's bits alone, in sub-batches at other places, reversed; out:
 * the 70-row product (compared across thread counts). */
static void test_invariance(int threads, enum lmc_dtype dt, int64_t K, float *out) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    struct lmc_cpu_ctx *c = be.ctx;
    const int64_t M = 70, N = 77;
    uint64_t keep = rng;
    rng = 7 + (uint64_t)K; /* the same operands for every thread count */
    struct lmc_mat w = make_w(dt, N, K, NULL, NULL);
    float *x = rand_f(M * K), *bias = rand_f(N);
    rng = keep;
    float *y = out, *y1 = malloc((size_t)(M * N) * sizeof *y1), *xr = malloc((size_t)(M * K) * sizeof *xr);
    dr(c, y, x, M, &w, bias);
    int64_t bad = 0;
    for (int64_t m = 0; m < M; m++) { /* alone */
        dr(c, y1, x + m * K, 1, &w, bias);
        bad += memcmp(y1, y + m * N, (size_t)N * sizeof *y1) != 0;
    }
    CHECK_MSG(bad == 0, "%s K %lld, %d threads: %lld of %lld rows differ alone", dt == LMC_DTYPE_F16 ? "f16" : "bf16",
              (long long)K, threads, (long long)bad, (long long)M);
    bad = 0;
    for (int64_t sub = 2, m0 = 3; sub <= 13; m0 = (m0 + 11 * sub) % (M - 13), sub++) { /* sub-batches */
        dr(c, y1, x + m0 * K, sub, &w, bias);
        bad += memcmp(y1, y + m0 * N, (size_t)(sub * N) * sizeof *y1) != 0;
    }
    CHECK_MSG(bad == 0, "%s K %lld: %lld sub-batches differ", dt == LMC_DTYPE_F16 ? "f16" : "bf16", (long long)K,
              (long long)bad);
    for (int64_t m = 0; m < M; m++) memcpy(xr + (M - 1 - m) * K, x + m * K, (size_t)K * sizeof *x);
    dr(c, y1, xr, M, &w, bias);
    bad = 0;
    for (int64_t m = 0; m < M; m++) bad += memcmp(y1 + (M - 1 - m) * N, y + m * N, (size_t)N * sizeof *y1) != 0;
    CHECK_MSG(bad == 0, "%s K %lld: %lld rows differ reversed", dt == LMC_DTYPE_F16 ? "f16" : "bf16", (long long)K,
              (long long)bad);
    free((void *)w.data), free(x), free(bias), free(y1), free(xr);
    lmc_backend_cpu_free(&be);
}

/* The route: a step of T rows, P of them prompt rows; q/k/v through
 * matmul_multi, each through matmul, the head at other sizes. */
static void test_route(void) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    struct lmc_cpu_ctx *c = be.ctx;
    const int64_t T = 20, P = 7, K = 203, Ns[3] = {161, 45, 45}, NH = 99;
    const enum lmc_dtype dts[3] = {LMC_DTYPE_F16, LMC_DTYPE_BF16, LMC_DTYPE_F16};
    struct lmc_mat w[3], head = make_w(LMC_DTYPE_F16, NH, K, NULL, NULL);
    const struct lmc_mat *wp[3];
    float *y[3], *bias[3], *x = rand_f(T * K), *yr = malloc((size_t)(T * 161) * sizeof *yr);
    double *wq = malloc((size_t)(Ns[0] * K) * sizeof *wq), *wf = malloc((size_t)(Ns[0] * K) * sizeof *wf);
    for (int i = 0; i < 3; i++) {
        w[i] = make_w(dts[i], Ns[i], K, i == 0 ? wq : NULL, i == 0 ? wf : NULL);
        wp[i] = &w[i];
        bias[i] = i == 1 ? NULL : rand_f(Ns[i]);
        y[i] = malloc((size_t)(T * Ns[i]) * sizeof(float));
    }
    lmc_backend_cpu_route_rows(&be, T, P, head.data);
    be.matmul_multi(be.ctx, 3, y, x, T, wp, (const float *const *)bias);
    int64_t bad = 0;
    for (int i = 0; i < 3; i++) {
        const struct lmc_mat *wi = &w[i];
        const float *bi = bias[i];
        /* without AVX512-BF16 prompt rows take our AVX2 GEMM (else the decode-row GEMM too) */
        const bool ours = !bf16fam && lmc_cpu_gemm_f32_native();
        const int64_t P0 = bf16fam || ours ? P : 0;
        if (bf16fam) lmc_cpu_matmul_pf(c, 1, &yr, x, P0, &wi, bi ? &bi : NULL); /* prompt rows: the prefill GEMM's bits */
        bad += bf16fam && memcmp(yr, y[i], (size_t)(P0 * Ns[i]) * sizeof *yr) != 0;
        if (ours) {
            for (int64_t m = 0; m < P; m++) { /* each prompt row alone: a one-row prompt step */
                lmc_backend_cpu_route_rows(&be, 1, 1, head.data);
                be.matmul(be.ctx, yr, x + m * K, 1, &w[i], bias[i]);
                bad += memcmp(yr, y[i] + m * Ns[i], (size_t)Ns[i] * sizeof *yr) != 0;
            }
            lmc_backend_cpu_route_rows(&be, 4, 3, head.data); /* rows 2..4 as a 3-row prompt chunk */
            float *y4 = malloc((size_t)(4 * Ns[i]) * sizeof *y4);
            be.matmul(be.ctx, y4, x + 2 * K, 4, &w[i], bias[i]);
            bad += memcmp(y4, y[i] + 2 * Ns[i], (size_t)(3 * Ns[i]) * sizeof *y4) != 0;
            free(y4);
            lmc_backend_cpu_route_rows(&be, T, P, head.data);
            if (i == 0) check_y(y[0], x, wq, wf, bias[0], P, Ns[0], K, "route: prompt rows, our GEMM");
        }
        for (int64_t m = P0; m < T; m++) { /* generated rows: each alone through the decode-row GEMM */
            dr(c, yr, x + m * K, 1, &w[i], bias[i]);
            bad += memcmp(yr, y[i] + m * Ns[i], (size_t)Ns[i] * sizeof *yr) != 0;
        }
        float *y2 = malloc((size_t)(T * Ns[i]) * sizeof *y2);
        be.matmul(be.ctx, y2, x, T, &w[i], bias[i]);
        bad += memcmp(y2, y[i], (size_t)(T * Ns[i]) * sizeof *y2) != 0;
        free(y2);
    }
    CHECK_MSG(bad == 0, "route: %lld rows differ from their kind's kernel", (long long)bad);
    /* the head at 3 and at T rows: every row the decode-row GEMM's */
    float *yh = malloc((size_t)(T * NH) * sizeof *yh), *yh1 = malloc((size_t)NH * sizeof *yh1);
    bad = 0;
    for (int64_t Mh = 3; Mh <= T; Mh += T - 3) {
        be.matmul(be.ctx, yh, x, Mh, &head, NULL);
        for (int64_t m = 0; m < Mh; m++) {
            dr(c, yh1, x + m * K, 1, &head, NULL);
            bad += memcmp(yh1, yh + m * NH, (size_t)NH * sizeof *yh1) != 0;
        }
    }
    CHECK_MSG(bad == 0, "route: %lld head rows differ from the decode-row GEMM", (long long)bad);
    /* another size, or the route cleared: the fp32 kernels (a backend with
     * no route gives the same bits) */
    struct lmc_backend b0;
    CHECK(lmc_backend_cpu_init(&b0, 2, &err) == LMC_OK);
    lmc_backend_cpu_set_bf16_prefill(&b0, false);
    lmc_backend_cpu_set_bf16_prefill(&be, false);
    float *y0 = malloc((size_t)(T * 161) * sizeof *y0);
    be.matmul(be.ctx, yr, x, 3, &w[0], bias[0]);
    b0.matmul(b0.ctx, y0, x, 3, &w[0], bias[0]);
    CHECK_MSG(!memcmp(yr, y0, (size_t)(3 * 161) * sizeof *yr), "route: a call of another size left the fp32 kernels");
    lmc_backend_cpu_route_rows(&be, 0, 0, NULL);
    be.matmul(be.ctx, yr, x, T, &w[0], bias[0]);
    b0.matmul(b0.ctx, y0, x, T, &w[0], bias[0]);
    CHECK_MSG(!memcmp(yr, y0, (size_t)(T * 161) * sizeof *yr), "route cleared: not the fp32 kernels");
    be.matmul(be.ctx, yh, x, 3, &head, NULL);
    b0.matmul(b0.ctx, y0, x, 3, &head, NULL);
    CHECK_MSG(!memcmp(yh, y0, (size_t)(3 * NH) * sizeof *yh), "route cleared: the head not on the fp32 kernels");
    lmc_backend_cpu_free(&b0);
    for (int i = 0; i < 3; i++) free((void *)w[i].data), free(bias[i]), free(y[i]);
    free((void *)head.data), free(x), free(yr), free(yh), free(yh1), free(y0), free(wq), free(wf);
    lmc_backend_cpu_free(&be);
}

int main(void) {
    bf16fam = lmc_cpu_has_bf16();
    printf("test_matmul_dr: %s kernels\n", bf16fam             ? "bf16 (AVX512-BF16)"
                                            : lmc_cpu_drf_avx2() ? "f32 family, AVX2"
                                                                 : "f32 family, portable twin");
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    test_direct(be.ctx);
    lmc_backend_cpu_free(&be);
    static const int64_t Ks[] = {31, 768, 1601, 2048};
    const int64_t n = 70 * 77;
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    for (int d = 0; d < 2; d++)
        for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++) {
            enum lmc_dtype dt = d ? LMC_DTYPE_BF16 : LMC_DTYPE_F16;
            test_invariance(1, dt, Ks[k], a);
            test_invariance(2, dt, Ks[k], b);
            CHECK_MSG(!memcmp(a, b, (size_t)n * sizeof *a), "K %lld: 1 and 2 threads differ", (long long)Ks[k]);
        }
    free(a), free(b);
    CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
    bool can = lmc_backend_cpu_can_route_rows(&be);
    CHECK(can == (bf16fam || lmc_cpu_drf_avx2()));
    lmc_backend_cpu_free(&be);
    if (can) test_route();
    else printf("test_matmul_dr: neither AVX512-BF16 nor AVX2: the serving route is off here (not tested)\n");
    return test_finish("test_matmul_dr");
}
