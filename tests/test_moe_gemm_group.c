/* test_moe_gemm_group.c — the CPU's grouped small-M products (one parallel
 * job over several experts' weights: lmc_cpu_matmul_small_group, and the
 * MoE grouped GEMM moe_gemm that uses it at decode) on random odd sizes:
 *  - against float64 references, F16, BF16 and F32 weights, 1 and 2
 *    threads, default and tiny claim units (threads split, steal and cross
 *    from one expert's weights into the next);
 *  - bit for bit against one lmc_cpu_matmul per expert (the path taken
 *    before, and the one taken when an expert has too many rows), with
 *    experts of 0, 1, 2, 3, 5 and 7 rows, and more than 8 experts with rows
 *    (several jobs), and more than moe_gemm gathers on its stack (70);
 *  - moe_gemm_multi (two products sharing x and the offsets, N and N + 3
 *    rows) bit for bit two moe_gemm calls, in the same cases;
 *  - lmc_cpu_matmul_small_group refuses (does nothing, returns false) where
 *    a product would not take the small-M path: many rows, or K = 0. */
#include "core/core.h"
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "test.h"

#include <stdlib.h>

static uint64_t rng = 777;

static void *make_w(enum lmc_dtype dt, int64_t n, double *ref) {
    size_t es = (size_t)lmc_dtype_size(dt);
    char *b = malloc((size_t)n * es);
    for (int64_t i = 0; i < n; i++) {
        float f = test_rand(&rng);
        if (dt == LMC_DTYPE_F32) {
            memcpy(b + (size_t)i * 4, &f, 4);
            ref[i] = f;
        } else {
            uint16_t h = dt == LMC_DTYPE_F16 ? lmc_f32_to_f16(f) : lmc_f32_to_bf16(f);
            memcpy(b + (size_t)i * 2, &h, 2);
            ref[i] = dt == LMC_DTYPE_F16 ? lmc_f16_to_f32(h) : lmc_bf16_to_f32(h);
        }
    }
    return b;
}

#define E 11
static void test_moe(int threads, enum lmc_dtype dt, int64_t N, int64_t K, const int64_t *rows, bool tiny) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    struct lmc_cpu_ctx *c = be.ctx;
    if (tiny) c->mm_unit_bytes = 64;
    int64_t off[E + 1] = {0};
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + rows[e];
    int64_t R = off[E];
    double *wr[E];
    struct lmc_mat wm[E];
    const struct lmc_mat *wp[E];
    for (int e = 0; e < E; e++) {
        wr[e] = malloc((size_t)(N * K) * sizeof(double));
        wm[e] = (struct lmc_mat){dt, N, K, make_w(dt, N * K, wr[e])};
        wp[e] = &wm[e];
    }
    float *x = malloc((size_t)(R * K + 1) * sizeof(float));
    float *y = malloc((size_t)(R * N + 1) * sizeof(float)), *y1 = malloc((size_t)(R * N + 1) * sizeof(float));
    for (int64_t i = 0; i < R * K; i++) x[i] = test_rand(&rng);
    for (int64_t i = 0; i < R * N; i++) y[i] = y1[i] = NAN;
    be.moe_gemm(be.ctx, y, x, off, E, wp);
    for (int e = 0; e < E; e++) /* the per-expert matmuls */
        if (rows[e]) lmc_cpu_matmul(c, y1 + off[e] * N, x + off[e] * K, rows[e], &wm[e], NULL);
    bool same = true;
    double num = 0, den = 1e-30;
    for (int e = 0; e < E; e++)
        for (int64_t m = off[e]; m < off[e + 1]; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * wr[e][n * K + k];
                float v = y[m * N + n];
                same = same && memcmp(&v, &y1[m * N + n], 4) == 0;
                num = fmax(num, fabs(v - s)); /* NaN (a row left unwritten) fails below */
                if (v != v) num = INFINITY;
                den = fmax(den, fabs(s));
            }
    /* an expert of many F16/BF16 rows takes the bf16 prefill GEMM (x and W rounded to bf16) */
    bool pf = false;
    for (int e = 0; e < E; e++) pf = pf || lmc_cpu_pf_ok(c, rows[e], K, dt);
    CHECK_MSG(num / den < (pf ? 1e-2 : 2e-6), "moe_gemm %s N=%lld K=%lld threads=%d tiny=%d: rel err %g", lmc_dtype_name(dt),
              (long long)N, (long long)K, threads, tiny, num / den);
    CHECK_MSG(same, "moe_gemm %s N=%lld K=%lld threads=%d tiny=%d: bits differ from per-expert matmul",
              lmc_dtype_name(dt), (long long)N, (long long)K, threads, tiny);
    /* moe_gemm_multi: these products and a second set (N + 3 rows, as an
     * MoE layer's gate and up) in one call, bit for bit two moe_gemm calls */
    int64_t N2 = N + 3;
    double *wr2 = malloc((size_t)(N2 * K) * sizeof(double));
    struct lmc_mat wm2[E];
    const struct lmc_mat *wp2[E];
    for (int e = 0; e < E; e++) {
        wm2[e] = (struct lmc_mat){dt, N2, K, make_w(dt, N2 * K, wr2)};
        wp2[e] = &wm2[e];
    }
    float *ya = malloc((size_t)(R * N + 1) * sizeof(float)), *yb = malloc((size_t)(R * N2 + 1) * sizeof(float));
    float *yb1 = malloc((size_t)(R * N2 + 1) * sizeof(float));
    for (int64_t i = 0; i < R * N; i++) ya[i] = NAN;
    for (int64_t i = 0; i < R * N2; i++) yb[i] = yb1[i] = NAN;
    be.moe_gemm(be.ctx, yb1, x, off, E, wp2);
    float *ys[2] = {ya, yb};
    const struct lmc_mat *const *ws[2] = {wp, wp2};
    be.moe_gemm_multi(be.ctx, 2, ys, x, off, E, ws);
    CHECK_MSG(!memcmp(ya, y, (size_t)(R * N) * sizeof(float)) && !memcmp(yb, yb1, (size_t)(R * N2) * sizeof(float)),
              "moe_gemm_multi %s N=%lld K=%lld threads=%d tiny=%d: bits differ from two moe_gemm calls",
              lmc_dtype_name(dt), (long long)N, (long long)K, threads, tiny);
    for (int e = 0; e < E; e++) free((void *)wm2[e].data);
    free(wr2), free(ya), free(yb), free(yb1);
    for (int e = 0; e < E; e++) free(wr[e]), free((void *)wm[e].data);
    free(x), free(y), free(y1);
    lmc_backend_cpu_free(&be);
}

/* products of different K and M in one call, and the refusals */
static void test_group(int threads) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    struct lmc_cpu_ctx *c = be.ctx;
    c->mm_unit_bytes = 128;
    enum { P = 3 };
    static const int64_t NK[P][2] = {{41, 1029}, {7, 13}, {130, 2051}};
    static const int64_t Ms[P] = {1, 3, 2};
    static const enum lmc_dtype dts[P] = {LMC_DTYPE_F16, LMC_DTYPE_BF16, LMC_DTYPE_F16};
    double *wr[P];
    struct lmc_mat wm[P];
    const struct lmc_mat *wp[P];
    float *x[P], *y[P], *y1[P];
    for (int i = 0; i < P; i++) {
        int64_t N = NK[i][0], K = NK[i][1];
        wr[i] = malloc((size_t)(N * K) * sizeof(double));
        wm[i] = (struct lmc_mat){dts[i], N, K, make_w(dts[i], N * K, wr[i])};
        wp[i] = &wm[i];
        x[i] = malloc((size_t)(Ms[i] * K) * sizeof(float));
        y[i] = malloc((size_t)(Ms[i] * N) * sizeof(float));
        y1[i] = malloc((size_t)(Ms[i] * N) * sizeof(float));
        for (int64_t j = 0; j < Ms[i] * K; j++) x[i][j] = test_rand(&rng);
    }
    CHECK(lmc_cpu_matmul_small_group(c, P, y, (const float *const *)x, Ms, wp));
    for (int i = 0; i < P; i++) {
        int64_t N = NK[i][0], K = NK[i][1];
        lmc_cpu_matmul(c, y1[i], x[i], Ms[i], &wm[i], NULL);
        CHECK_MSG(memcmp(y[i], y1[i], (size_t)(Ms[i] * N) * sizeof(float)) == 0,
                  "small_group product %d: bits differ from matmul", i);
        double num = 0, den = 1e-30;
        for (int64_t m = 0; m < Ms[i]; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += (double)x[i][m * K + k] * wr[i][n * K + k];
                num = fmax(num, fabs(y[i][m * N + n] - s));
                den = fmax(den, fabs(s));
            }
        CHECK_MSG(num / den < 2e-6, "small_group product %d: rel err %g", i, num / den);
    }
    /* refusals: a product with many rows, or K = 0; nothing written */
    int64_t many[P] = {1, 100, 2};
    for (int64_t j = 0; j < NK[0][0]; j++) y[0][j] = 42.0f;
    CHECK(!lmc_cpu_matmul_small_group(c, P, y, (const float *const *)x, many, wp));
    CHECK(y[0][0] == 42.0f && y[0][NK[0][0] - 1] == 42.0f);
    struct lmc_mat k0 = {LMC_DTYPE_F16, 5, 0, wm[0].data};
    const struct lmc_mat *wk0[1] = {&k0};
    CHECK(!lmc_cpu_matmul_small_group(c, 1, y, (const float *const *)x, Ms, wk0));
    for (int i = 0; i < P; i++) free(wr[i]), free((void *)wm[i].data), free(x[i]), free(y[i]), free(y1[i]);
    lmc_backend_cpu_free(&be);
}

/* more experts with rows than moe_gemm gathers on its stack (64): its heap path, several jobs */
static void test_many(int threads) {
    enum { EM = 70, N = 9, K = 1030 };
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    struct lmc_mat wm[EM];
    const struct lmc_mat *wp[EM];
    int64_t off[EM + 1] = {0};
    double *wr = malloc((size_t)(N * K) * sizeof(double));
    for (int e = 0; e < EM; e++) {
        wm[e] = (struct lmc_mat){LMC_DTYPE_F16, N, K, make_w(LMC_DTYPE_F16, N * K, wr)};
        wp[e] = &wm[e];
        off[e + 1] = off[e] + 1 + (e % 3 == 0); /* 1 or 2 rows each */
    }
    int64_t R = off[EM];
    float *x = malloc((size_t)(R * K) * sizeof(float)), *y = malloc((size_t)(R * N) * sizeof(float));
    float *y1 = malloc((size_t)(R * N) * sizeof(float));
    for (int64_t i = 0; i < R * K; i++) x[i] = test_rand(&rng);
    be.moe_gemm(be.ctx, y, x, off, EM, wp);
    for (int e = 0; e < EM; e++)
        lmc_cpu_matmul(be.ctx, y1 + off[e] * N, x + off[e] * K, off[e + 1] - off[e], &wm[e], NULL);
    CHECK_MSG(memcmp(y, y1, (size_t)(R * N) * sizeof(float)) == 0, "moe_gemm, %d experts, threads=%d: bits differ",
              EM, threads);
    for (int e = 0; e < EM; e++) free((void *)wm[e].data);
    free(wr), free(x), free(y), free(y1);
    lmc_backend_cpu_free(&be);
}

int main(void) {
    /* top-2 of one token, a batched step's mix (more than 8 experts with rows: two jobs), one expert with many rows */
    static const int64_t top2[E] = {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0};
    static const int64_t mix[E] = {1, 2, 0, 3, 5, 1, 7, 1, 2, 1, 4};
    static const int64_t big[E] = {2, 0, 40, 1, 0, 0, 0, 3, 0, 0, 0};
    static const enum lmc_dtype dts[3] = {LMC_DTYPE_F16, LMC_DTYPE_BF16, LMC_DTYPE_F32};
    for (int threads = 1; threads <= 2; threads++)
        for (int d = 0; d < 3; d++)
            for (int tiny = 0; tiny < 2; tiny++) {
                test_moe(threads, dts[d], 67, 1031, top2, tiny);
                test_moe(threads, dts[d], 23, 301, mix, tiny);
                test_moe(threads, dts[d], 37, 77, big, tiny);
            }
    test_group(1);
    test_group(2);
    test_many(1);
    test_many(2);
    return test_finish("test_moe_gemm_group");
}
