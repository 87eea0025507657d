/* test_matmul_smallm.c — the small-M products (M = 1..17 activation rows:
 * speculative verification, batched decode) against float64 references on
 * random odd sizes:
 *  - float weights F32/F16/BF16 (ops/cpu/matmul_smallm.c through the CPU
 *    backend's matmul and matmul_multi, with and without bias, 1 and 2
 *    threads, tiny claim units so threads split and steal rows), with the
 *    small-M kernel on and off (ctx->mm_small_max);
 *  - quantized weights Q8_0, Q4_0, Q4_K and 4-bit groups (g32, g128, act-order,
 *    K not a multiple of 32) (quant/qmatmul_smallm.c, qmatmul_q4.c through
 *    lmc_qmatmul), reference from the dequantized weight and the int8
 *    activations; Q4_0's AVX2 and AVX-512 VNNI kernels give the same bits.
 * Each small-M kernel also gives a row the same bits whatever M is (float:
 * the M it takes, lmc_cpu_smallm_ok, M = 1..6 for bf16/f16 rows with
 * AVX-512 and with AVX2; quantized: every M), so a
 * verification's rows equal each other's batch sizes bit for bit; the
 * quantized ones are held to 2e-6 (zero points subtracted in integers).
 * Q4_K's reference quantizes the activations per 256 as its kernel does
 * (lmc_q8act_quantize_k). The backend's qmatmul_multi gives each weight
 * qmatmul's bits; qembed gives a quantized table's rows dequantized. */
#include "core/core.h"
#include "core/dtype.h"
#include "core/threadpool.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#include "test.h"

#include <stdlib.h>

#define MMAX 17

static uint64_t rng = 4242;

static float *rand_f(int64_t n) {
    float *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = test_rand(&rng);
    return p;
}

/* Random W (N, K) in dt at a byte offset of `off` elements; ref: the same values as double. */
static void *make_w(enum lmc_dtype dt, int64_t n, size_t off, double *ref, void **base) {
    size_t es = (size_t)lmc_dtype_size(dt);
    char *b = malloc((size_t)n * es + 64);
    for (int64_t i = 0; i < n; i++) {
        float f = test_rand(&rng);
        uint16_t h = dt == LMC_DTYPE_F16 ? lmc_f32_to_f16(f) : lmc_f32_to_bf16(f);
        if (dt == LMC_DTYPE_F32) memcpy(b + off * es + (size_t)i * es, &f, 4), ref[i] = f;
        else memcpy(b + off * es + (size_t)i * es, &h, 2),
             ref[i] = dt == LMC_DTYPE_F16 ? lmc_f16_to_f32(h) : lmc_bf16_to_f32(h);
    }
    *base = b;
    return b + off * es;
}

/* y (M, N) against x @ wr^T (+ bias) in double: relative error. */
static double err_vs(const float *y, const float *x, const double *wr, const float *bias, int64_t M, int64_t N,
                     int64_t K) {
    double num = 0, den = 1e-30;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * wr[n * K + k];
            num = fmax(num, fabs(y[m * N + n] - s));
            den = fmax(den, fabs(s));
        }
    return num / den;
}

static void test_float(int threads) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    struct lmc_cpu_ctx *c = be.ctx;
    int64_t small_default = c->mm_small_max, unit_default = c->mm_unit_bytes;
    /* the reference M: the largest the small-M kernel takes (F32 on AVX2: below gemm_min_m, bits compared there only) */
    int64_t mref = LMC_MAX(1, LMC_MIN(MMAX - 1, small_default));
#ifdef LMC_CPU_SMALLM
    /* AVX-512 and AVX2 builds: a bf16 decode step (M = 1) and a verification
     * of up to 5 drafts take the same kernel, so their rows have the same bits
     * (greedy speculative output = plain greedy); the loop below checks the bits */
    for (int64_t M = 1; M <= 6; M++)
        CHECK_MSG(lmc_cpu_smallm_ok(c, M, 576, LMC_DTYPE_BF16) && lmc_cpu_smallm_ok(c, M, 1536, LMC_DTYPE_F16),
                  "M=%lld: not routed to the small-M kernel", (long long)M);
    /* neither GEMM takes an M the small-M kernel claims: F16/BF16 up to mm_small_max, F32 below gemm_min_m */
    CHECK(c->mm_small_max < lmc_cpu_gemm_from(c, LMC_DTYPE_F16) || lmc_cpu_gemm_from(c, LMC_DTYPE_F16) > MMAX);
    CHECK(c->gemm_min_m > MMAX || !lmc_cpu_smallm_ok(c, c->gemm_min_m, 64, LMC_DTYPE_F32));
#endif
#ifdef LMC_CPU_SMALLM_AVX2
    /* AVX2: verifications of up to 10 drafts over K = 1536 BF16 rows (the kjv-target's down projection) */
    for (int64_t M = 7; M <= c->mm_small_max; M++)
        CHECK_MSG(lmc_cpu_smallm_ok(c, M, 1536, LMC_DTYPE_BF16), "M=%lld: not routed to the small-M kernel",
                  (long long)M);
#endif
    /* the last two: a 2-row tile (BF16, F16) just inside, and one too large for, blocks of more than
     * LMC_CPU_SMALLM_MR rows on AVX2 */
    /* {45, 1229}, {19, 1031}: odd K where 5-6 rows of x (24.0-24.6 KB) no longer fit L1 beside W */
    static const int64_t NK[][2] = {{37, 29},    {3, 5},      {131, 77},  {9, 301}, {65, 16},
                                    {11, 1535},  {21, 1601},  {45, 1229}, {19, 1031}};
    static const enum lmc_dtype dts[3] = {LMC_DTYPE_F32, LMC_DTYPE_F16, LMC_DTYPE_BF16};
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof NK / sizeof *NK; s++) {
            int64_t N = NK[s][0], K = NK[s][1];
            double *wr = malloc((size_t)(N * K) * sizeof *wr);
            void *base;
            struct lmc_mat w = {dts[d], N, K, make_w(dts[d], N * K, s % 3, wr, &base)};
            float *x = rand_f(MMAX * K), *bias = rand_f(N), *y = rand_f(MMAX * N), *yall = rand_f(MMAX * N);
            for (int on = 0; on < 2; on++) {
                c->mm_small_max = on ? small_default : 0;
                c->mm_unit_bytes = s % 2 ? 64 : unit_default; /* many units: splitting and stealing */
                be.matmul(be.ctx, yall, x, mref, &w, NULL); /* M = 16: every row's reference bits */
                for (int64_t M = 1; M <= MMAX; M++) {
                    const float *bp = M % 2 ? bias : NULL;
                    be.matmul(be.ctx, y, x, M, &w, bp);
                    double e = err_vs(y, x, wr, bp, M, N, K);
                    CHECK_MSG(e < 2e-6, "matmul %s M=%lld N=%lld K=%lld small=%d threads=%d: %g",
                              lmc_dtype_name(dts[d]), (long long)M, (long long)N, (long long)K, on, threads, e);
                    if (M % 3 == 0) { /* matmul_multi: the same W twice, biases on one */
                        float *y2 = malloc((size_t)(2 * M * N) * sizeof *y2);
                        float *ys[2] = {y2, y2 + M * N};
                        const struct lmc_mat *ws[2] = {&w, &w};
                        const float *bs[2] = {NULL, bias};
                        be.matmul_multi(be.ctx, 2, ys, x, M, ws, bs);
                        double e0 = err_vs(ys[0], x, wr, NULL, M, N, K), e1 = err_vs(ys[1], x, wr, bias, M, N, K);
                        CHECK_MSG(e0 < 2e-6 && e1 < 2e-6, "matmul_multi %s M=%lld N=%lld K=%lld: %g %g",
                                  lmc_dtype_name(dts[d]), (long long)M, (long long)N, (long long)K, e0, e1);
                        free(y2);
                    }
                    if (lmc_cpu_smallm_ok(c, M, K, dts[d]) && lmc_cpu_smallm_ok(c, mref, K, dts[d])) {
                        bool same = true; /* the bias is one float add after the sum */
                        for (int64_t i = 0; i < LMC_MIN(M, mref) * N; i++)
                            same = same && y[i] == yall[i] + (bp ? bp[i % N] : 0.0f);
                        CHECK_MSG(same, "matmul %s M=%lld N=%lld K=%lld: rows differ from the M=%lld product",
                                  lmc_dtype_name(dts[d]), (long long)M, (long long)N, (long long)K, (long long)mref);
                    }
                }
            }
            c->mm_small_max = small_default;
            c->mm_unit_bytes = unit_default;
            free(wr), free(base), free(x), free(bias), free(y), free(yall);
        }
    lmc_backend_cpu_free(&be);
}

/* The dequantized weight's product with the activations as the kernel
 * quantizes them (the integer part is exact: float summation only). */
static void check_q(const struct lmc_qctx *c, const struct lmc_qweight *w, const float *wd, const char *what,
                    struct lmc_pool *pool) {
    int64_t n = w->n, k = w->k;
    float *x = rand_f(MMAX * k), *y = malloc((size_t)(MMAX * n) * 4), *yall = malloc((size_t)(MMAX * n) * 4);
    for (int64_t i = 0; i < MMAX * k; i++) x[i] *= 1.0f + (float)(i % 7);
    float *xg = malloc((size_t)w->kp * 4);
    double *xd = malloc((size_t)(MMAX * k) * sizeof *xd), *wr = malloc((size_t)(n * k) * sizeof *wr);
    struct lmc_q8act *xq = malloc((size_t)(w->kp / 32) * sizeof *xq);
    for (int64_t i = 0; i < n * k; i++) wr[i] = wd[i];
    for (int64_t m = 0; m < MMAX; m++) {
        for (int64_t j = 0; j < w->kp; j++) {
            int64_t col = w->perm ? w->perm[j] : j;
            xg[j] = col >= 0 ? x[m * k + col] : 0.0f;
        }
        (w->kernel == LMC_QK_Q4_K ? lmc_q8act_quantize_k : lmc_q8act_quantize)(xg, w->kp, xq);
        for (int64_t j = 0; j < w->kp; j++) {
            int64_t col = w->perm ? w->perm[j] : j;
            if (col >= 0) xd[m * k + col] = (double)xq[j / 32].d * xq[j / 32].q[j % 32];
        }
    }
    void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(w, MMAX) + 63) / 64 * 64);
    lmc_qmatmul(c, w, yall, x, MMAX - 1, scratch, pool);
    for (int64_t M = 1; M <= MMAX; M++) {
        lmc_qmatmul(c, w, y, x, M, scratch, M % 2 ? pool : NULL);
        double num = 0, den = 1e-30;
        for (int64_t m = 0; m < M; m++)
            for (int64_t o = 0; o < n; o++) {
                double s = 0;
                for (int64_t j = 0; j < k; j++) s += wr[o * k + j] * xd[m * k + j];
                num = fmax(num, fabs(y[m * n + o] - s));
                den = fmax(den, fabs(s));
            }
        /* the small-M kernels subtract zero points in integers: float summation error only; so do
         * AVX2's per-row and four-row kernels for Q4_0 and the groups, with the same operations per row */
        bool small = c->dotm[w->kernel] && M <= c->small_max;
        bool avx2_same = c->isa == LMC_QISA_AVX2 && (w->kernel == LMC_QK_Q4_0 || w->kernel == LMC_QK_U4G);
        CHECK_MSG(num / den < (small || avx2_same ? 2e-6 : 2e-5), "%s [%s, small_max %lld] M=%lld: error %g", what,
                  lmc_qisa_name(c->isa), (long long)c->small_max, (long long)M, num / den);
        if (small || avx2_same)
            CHECK_MSG(memcmp(y, yall, (size_t)(LMC_MIN(M, MMAX - 1) * n) * 4) == 0,
                      "%s M=%lld: rows differ from the M=16 product", what, (long long)M);
    }
    free(scratch), free(x), free(y), free(yall), free(xg), free(xd), free(wr), free(xq);
}

static void test_quant(const struct lmc_qctx *c, struct lmc_pool *pool) {
    lmc_err err = {0};
    static const int types[] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0};
    static const int64_t ks[] = {32 * 9, 32 * 7, 32, 32 * 8};
    for (size_t t = 0; t < 2; t++)
        for (size_t ki = 0; ki < 4; ki++) {
            int64_t n = 37 + 2 * (int64_t)ki, k = ks[ki], rb; /* N = 43: 4-row tiles and a tail */
            CHECK(lmc_ggml_row_bytes(types[t], k, &rb));
            float *wf = rand_f(n * k);
            uint8_t *wq = malloc((size_t)(n * rb));
            for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(types[t], wf + o * k, wq + o * rb, k);
            for (int64_t o = 0; o < n; o++) lmc_ggml_dequantize_row(types[t], wq + o * rb, wf + o * k, k);
            struct lmc_qweight w;
            CHECK(lmc_qweight_init_ggml(&w, types[t], wq, n, k, &err) == LMC_OK);
            char what[64];
            snprintf(what, sizeof what, "%s N=%lld K=%lld", lmc_ggml_type_name(types[t]), (long long)n, (long long)k);
            check_q(c, &w, wf, what, pool);
            lmc_qweight_free(&w);
            free(wf), free(wq);
        }
    /* Q4_K: whole super-blocks of 256 only (the format); 1, 3 and 5 of them, N with a tail of rows */
    static const int64_t kk[][2] = {{37, 256}, {43, 768}, {9, 1280}};
    for (size_t ki = 0; ki < 3; ki++) {
        int64_t n = kk[ki][0], k = kk[ki][1], rb;
        CHECK(lmc_ggml_row_bytes(LMC_GGML_Q4_K, k, &rb));
        float *wf = rand_f(n * k);
        for (int64_t i = 0; i < n * k; i++) wf[i] += 0.3f * (float)((i / 32) % 5) - 0.4f; /* sub-block mins */
        uint8_t *wq = malloc((size_t)(n * rb));
        for (int64_t o = 0; o < n; o++) CHECK(lmc_ggml_quantize_row(LMC_GGML_Q4_K, wf + o * k, wq + o * rb, k));
        for (int64_t o = 0; o < n; o++) lmc_ggml_dequantize_row(LMC_GGML_Q4_K, wq + o * rb, wf + o * k, k);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_ggml(&w, LMC_GGML_Q4_K, wq, n, k, &err) == LMC_OK);
        if (c->isa == LMC_QISA_AVX512VNNI && c->small_max > 0) CHECK(c->dotm[LMC_QK_Q4_K] != NULL);
        char what[64];
        snprintf(what, sizeof what, "Q4_K N=%lld K=%lld", (long long)n, (long long)k);
        check_q(c, &w, wf, what, pool);
        lmc_qweight_free(&w);
        free(wf), free(wq);
    }
    static const struct { int64_t n, k, gs; bool act; } g[] = {
        {33, 288, 32, false}, {41, 288, 128, false}, {19, 163, 32, false}, {23, 256, 64, true}, {7, 75, 75, false},
    };
    for (size_t t = 0; t < sizeof g / sizeof *g; t++) {
        struct lmc_qgroups q;
        CHECK(lmc_qgroups_alloc(&q, g[t].n, g[t].k, 4, g[t].gs, &err) == LMC_OK);
        for (int64_t i = 0; i < q.n * q.k; i++) q.q[i] = (uint8_t)(test_rng_next(&rng) % 16);
        for (int64_t i = 0; i < q.n * q.n_groups; i++) {
            q.scale[i] = 0.01f + 0.05f * (float)(test_rng_next(&rng) % 100) / 100.0f;
            q.zero[i] = (int32_t)(test_rng_next(&rng) % 16);
        }
        if (g[t].act)
            for (int64_t i = 0; i < q.k; i++) q.g_idx[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)q.n_groups);
        float *wf = malloc((size_t)(q.n * q.k) * 4);
        lmc_qgroups_dequantize(&q, wf);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_groups(&w, &q, &err) == LMC_OK);
        char what[80];
        snprintf(what, sizeof what, "4-bit g%lld%s N=%lld K=%lld", (long long)g[t].gs, g[t].act ? " act-order" : "",
                 (long long)g[t].n, (long long)g[t].k);
        check_q(c, &w, wf, what, pool);
        lmc_qweight_free(&w);
        lmc_qgroups_free(&q);
        free(wf);
    }
}

/* Q4_0's and the 4-bit groups' small-M kernels (qmatmul_q4.c) give the
 * same bits with AVX2 as with AVX-512 VNNI (maddubs + madd and vpdpbusd make the same integers,
 * the float operations are the same), for every M, N with and without a
 * tail of rows, an odd and an even number of blocks. */
static void test_q4_isa_same(struct lmc_pool *pool) {
    struct lmc_qctx cv, ca;
    if (lmc_qctx_init(&cv, LMC_QISA_AVX512VNNI) != LMC_QISA_AVX512VNNI) return; /* nothing to compare */
    CHECK(lmc_qctx_init(&ca, LMC_QISA_AVX2) == LMC_QISA_AVX2);
    CHECK(cv.dotm[LMC_QK_Q4_0] != NULL && ca.dotm[LMC_QK_Q4_0] != NULL);
    lmc_err err = {0};
    static const int64_t nk[][2] = {{40, 32 * 24}, {45, 32 * 5}};
    for (size_t s = 0; s < 2; s++) {
        int64_t n = nk[s][0], k = nk[s][1], rb;
        CHECK(lmc_ggml_row_bytes(LMC_GGML_Q4_0, k, &rb));
        float *wf = rand_f(n * k), *x = rand_f(MMAX * k);
        float *yv = malloc((size_t)(MMAX * n) * 4), *ya = malloc((size_t)(MMAX * n) * 4);
        uint8_t *wq = malloc((size_t)(n * rb));
        for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(LMC_GGML_Q4_0, wf + o * k, wq + o * rb, k);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_ggml(&w, LMC_GGML_Q4_0, wq, n, k, &err) == LMC_OK);
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, MMAX) + 63) / 64 * 64);
        for (int64_t M = 1; M <= MMAX; M += 3) {
            lmc_qmatmul(&cv, &w, yv, x, M, scratch, pool);
            lmc_qmatmul(&ca, &w, ya, x, M, scratch, M % 2 ? NULL : pool);
            CHECK_MSG(memcmp(yv, ya, (size_t)(M * n) * 4) == 0, "Q4_0 N=%lld K=%lld M=%lld: AVX2 and VNNI differ",
                      (long long)n, (long long)k, (long long)M);
        }
        lmc_qweight_free(&w);
        free(scratch), free(wf), free(x), free(yv), free(ya), free(wq);
    }
    /* 4-bit groups: g128 with an odd last group, act-order with uneven groups */
    static const struct { int64_t n, k, gs; bool act; } g[] = {{44, 416, 128, false}, {21, 200, 64, true}};
    for (size_t t = 0; t < 2; t++) {
        struct lmc_qgroups q;
        CHECK(lmc_qgroups_alloc(&q, g[t].n, g[t].k, 4, g[t].gs, &err) == LMC_OK);
        for (int64_t i = 0; i < q.n * q.k; i++) q.q[i] = (uint8_t)(test_rng_next(&rng) % 16);
        for (int64_t i = 0; i < q.n * q.n_groups; i++) {
            q.scale[i] = 0.01f + 0.05f * (float)(test_rng_next(&rng) % 100) / 100.0f;
            q.zero[i] = (int32_t)(test_rng_next(&rng) % 17); /* GPTQ v1's stored zero + 1 reaches 16 */
        }
        if (g[t].act)
            for (int64_t i = 0; i < q.k; i++) q.g_idx[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)q.n_groups);
        struct lmc_qweight w;
        CHECK(lmc_qweight_init_groups(&w, &q, &err) == LMC_OK);
        CHECK(cv.dotm[w.kernel] != NULL && ca.dotm[w.kernel] != NULL);
        float *x = rand_f(MMAX * q.k), *yv = malloc((size_t)(MMAX * q.n) * 4), *ya = malloc((size_t)(MMAX * q.n) * 4);
        void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, MMAX) + 63) / 64 * 64);
        for (int64_t M = 1; M <= MMAX; M += 4) {
            lmc_qmatmul(&cv, &w, yv, x, M, scratch, pool);
            lmc_qmatmul(&ca, &w, ya, x, M, scratch, M % 2 ? NULL : pool);
            CHECK_MSG(memcmp(yv, ya, (size_t)(M * q.n) * 4) == 0, "4-bit g%lld N=%lld M=%lld: AVX2 and VNNI differ",
                      (long long)g[t].gs, (long long)q.n, (long long)M);
        }
        lmc_qweight_free(&w);
        lmc_qgroups_free(&q);
        free(scratch), free(x), free(yv), free(ya);
    }
}

/* The CPU backend's qmatmul_multi (q/k/v, gate/up: the input quantized
 * once, one pool run) gives each weight the bits its own qmatmul gives, with
 * biases, for every M; weights that do not share a layout (different K, a
 * permuted group order) fall back and still agree; and qembed returns a
 * quantized table's rows as the format's dequantizer does. */
static void test_multi(int threads) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    CHECK(be.qmatmul_multi != NULL && be.qembed != NULL);
    static const int types[] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0, LMC_GGML_Q4_K, LMC_GGML_Q6_K};
    for (size_t t = 0; t < 4; t++) {
        const int64_t k = 512, ns[3] = {37, 8, 45};
        struct lmc_qweight w[3];
        uint8_t *wq[3];
        float *bias[3];
        int64_t rb;
        CHECK(lmc_ggml_row_bytes(types[t], k, &rb));
        for (int i = 0; i < 3; i++) {
            float *wf = rand_f(ns[i] * k);
            wq[i] = malloc((size_t)(ns[i] * rb));
            for (int64_t o = 0; o < ns[i]; o++) lmc_ggml_quantize_row(types[t], wf + o * k, wq[i] + o * rb, k);
            CHECK(lmc_qweight_init_ggml(&w[i], types[t], wq[i], ns[i], k, &err) == LMC_OK);
            bias[i] = rand_f(ns[i]);
            free(wf);
        }
        float *x = rand_f(MMAX * k);
        for (int64_t M = 1; M <= MMAX; M += 4) {
            float *ym[3], *ys[3];
            const struct lmc_qweight *wp[3] = {&w[0], &w[1], &w[2]};
            const float *bp[3] = {bias[0], NULL, bias[2]};
            for (int i = 0; i < 3; i++) ym[i] = malloc((size_t)(M * ns[i]) * 4), ys[i] = malloc((size_t)(M * ns[i]) * 4);
            be.qmatmul_multi(be.ctx, 3, ym, x, M, wp, bp);
            for (int i = 0; i < 3; i++) be.qmatmul(be.ctx, ys[i], x, M, &w[i], bp[i]);
            for (int i = 0; i < 3; i++) {
                CHECK_MSG(memcmp(ym[i], ys[i], (size_t)(M * ns[i]) * 4) == 0, "qmatmul_multi %s M=%lld weight %d",
                          lmc_ggml_type_name(types[t]), (long long)M, i);
                free(ym[i]), free(ys[i]);
            }
        }
        /* qembed: rows (repeats, first and last) as the dequantizer gives them */
        const int32_t ids[5] = {36, 0, 5, 5, 17};
        float *e = malloc((size_t)(5 * k) * 4), *r = malloc((size_t)k * 4);
        be.qembed(be.ctx, e, &w[0], ids, 5);
        for (int i = 0; i < 5; i++) {
            lmc_ggml_dequantize_row(types[t], wq[0] + ids[i] * rb, r, k);
            CHECK_MSG(memcmp(e + i * k, r, (size_t)k * 4) == 0, "qembed %s row %d", lmc_ggml_type_name(types[t]), ids[i]);
        }
        free(e), free(r), free(x);
        for (int i = 0; i < 3; i++) lmc_qweight_free(&w[i]), free(wq[i]), free(bias[i]);
    }
    /* no shared layout: 4-bit groups of different orders and a Q4_0 of another K */
    {
        struct lmc_qgroups q[2];
        struct lmc_qweight w[3];
        for (int i = 0; i < 2; i++) {
            CHECK(lmc_qgroups_alloc(&q[i], 19 + 4 * i, 256, 4, 64, &err) == LMC_OK);
            for (int64_t j = 0; j < q[i].n * q[i].k; j++) q[i].q[j] = (uint8_t)(test_rng_next(&rng) % 16);
            for (int64_t j = 0; j < q[i].n * q[i].n_groups; j++) {
                q[i].scale[j] = 0.01f + 0.05f * (float)(test_rng_next(&rng) % 100) / 100.0f;
                q[i].zero[j] = (int32_t)(test_rng_next(&rng) % 16);
            }
            if (i) /* act-order */
                for (int64_t j = 0; j < q[i].k; j++) q[i].g_idx[j] = (int32_t)(test_rng_next(&rng) % 4);
            CHECK(lmc_qweight_init_groups(&w[i], &q[i], &err) == LMC_OK);
        }
        float *x = rand_f(MMAX * 256);
        float *ym[2], *ys[2];
        const struct lmc_qweight *wp[2] = {&w[0], &w[1]};
        for (int i = 0; i < 2; i++) ym[i] = malloc((size_t)(MMAX * q[i].n) * 4), ys[i] = malloc((size_t)(MMAX * q[i].n) * 4);
        be.qmatmul_multi(be.ctx, 2, ym, x, 3, wp, NULL);
        for (int i = 0; i < 2; i++) {
            be.qmatmul(be.ctx, ys[i], x, 3, &w[i], NULL);
            CHECK_MSG(memcmp(ym[i], ys[i], (size_t)(3 * q[i].n) * 4) == 0, "qmatmul_multi groups weight %d", i);
            free(ym[i]), free(ys[i]);
            lmc_qweight_free(&w[i]);
            lmc_qgroups_free(&q[i]);
        }
        free(x);
    }
    lmc_backend_cpu_free(&be);
}

/* The float small-M kernel called directly on rows [r0, N) for M = 1..6
 * over long odd K, past where 5-6 rows of x fit L1 (N - r0 = 36 + 1 rows:
 * 18 2-row tiles and a 1-row tail): every row the bits of its own M = 1
 * product, and near the float64 reference. (spec23 tried K in chunks for
 * such blocks, same bits; this checked it.) */
static void test_rows_long_k(void) {
#ifdef LMC_CPU_SMALLM
    static const int64_t Ks[] = {1229, 1536, 1601, 2003, 3001, 4099};
    static const enum lmc_dtype dts[3] = {LMC_DTYPE_F32, LMC_DTYPE_F16, LMC_DTYPE_BF16};
    const int64_t N = 39, r0 = 2;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof Ks / sizeof *Ks; s++) {
            int64_t K = Ks[s];
            double *wr = malloc((size_t)(N * K) * sizeof *wr);
            void *base;
            const void *w = make_w(dts[d], N * K, s % 3, wr, &base);
            float *x = rand_f(6 * K), *y = rand_f(6 * N), *y1 = rand_f(6 * N);
            for (int64_t m = 0; m < 6; m++) lmc_cpu_matmul_smallm_rows(y1 + m * N, x + m * K, 1, w, dts[d], K, N, r0, N);
            for (int64_t M = 1; M <= 6; M++) {
                for (int64_t i = 0; i < 6 * N; i++) y[i] = y1[i] + 1.0f; /* every output written */
                lmc_cpu_matmul_smallm_rows(y, x, M, w, dts[d], K, N, r0, N);
                bool same = true;
                double num = 0, den = 1e-30;
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = r0; n < N; n++) {
                        double ref = 0;
                        for (int64_t k = 0; k < K; k++) ref += (double)x[m * K + k] * wr[n * K + k];
                        num = fmax(num, fabs(y[m * N + n] - ref));
                        den = fmax(den, fabs(ref));
                        same = same && y[m * N + n] == y1[m * N + n];
                    }
                CHECK_MSG(num / den < 2e-6, "smallm rows %s M=%lld K=%lld: error %g", lmc_dtype_name(dts[d]),
                          (long long)M, (long long)K, num / den);
                CHECK_MSG(same, "smallm rows %s M=%lld K=%lld: rows differ from the M=1 product",
                          lmc_dtype_name(dts[d]), (long long)M, (long long)K);
            }
            free(wr), free(base), free(x), free(y), free(y1);
        }
#endif
}

int main(void) {
    test_rows_long_k();
    test_multi(1);
    test_multi(2);
    test_float(1);
    test_float(2);
    lmc_err err = {0};
    struct lmc_pool *pool = NULL;
    CHECK(lmc_pool_init(&pool, 2, &err) == LMC_OK);
    enum lmc_qisa seen = (enum lmc_qisa)-1;
    for (int isa = LMC_QISA_C; isa <= LMC_QISA_AVX512VNNI; isa++) {
        struct lmc_qctx c;
        enum lmc_qisa got = lmc_qctx_init(&c, (enum lmc_qisa)isa);
        if (got == seen) continue; /* this CPU lacks the level: already covered */
        seen = got;
        test_quant(&c, pool);
        c.small_max = 0; /* the per-row kernels the small-M ones replace */
        test_quant(&c, pool);
    }
    test_q4_isa_same(pool);
    lmc_pool_free(pool);
    return test_finish("test_matmul_smallm");
}
