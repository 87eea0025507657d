/* test_matmul_pf.c — the bf16 prefill GEMM for F16/BF16 weights
 * (ops/cpu/matmul_pf.c, vdpbf16ps) against float64 references on random
 * odd sizes (M, N, K across the x-panel, L2-block, task, weight-panel and
 * K-block edges; K odd, K = 1):
 *  - element by element against the float64 sum of the bf16-rounded
 *    operands (x to nearest even; F16 weights via f32 to nearest even),
 *    within the f32 summation's bound (K + 2) 2^-24 sum |products|;
 *  - against the unrounded fp32 product within bf16's own error, so the
 *    rounding is the only approximation;
 *  - through the CPU backend's matmul and matmul_multi (q/k/v-style: three
 *    matrices, biases, mixed F16/BF16), which route M >= pf_min_m here:
 *    the same bits as the direct call, and for 1 and 2 threads;
 *  - pf_min_m = 0 brings the fp32 kernels back (within fp32 error of the
 *    unrounded product).
 * Skips (passes, saying so) on CPUs without AVX512-BF16. */
#include "core/core.h"
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/ops_cpu.h"
#include "test_bf16.h"

#include <stdlib.h>

static uint64_t rng = 1717;

/* A random (N, K) weight in dt; wq: its values as bf16 (what the kernel
 * multiplies), wf: its values as stored (f32). */
static struct lmc_mat make_w(enum lmc_dtype dt, int64_t N, int64_t K, double *wq, double *wf) {
    size_t es = (size_t)lmc_dtype_size(dt);
    char *b = malloc((size_t)(N * K) * es + 1);
    for (int64_t i = 0; i < N * K; i++) {
        float f = test_rand(&rng), v = f;
        if (dt == LMC_DTYPE_F16) {
            uint16_t h = lmc_f32_to_f16(f);
            memcpy(b + i * 2, &h, 2);
            v = lmc_f16_to_f32(h);
        } else if (dt == LMC_DTYPE_BF16) {
            uint16_t h = lmc_f32_to_bf16(f);
            memcpy(b + i * 2, &h, 2);
            v = lmc_bf16_to_f32(h);
        } else {
            memcpy(b + i * 4, &f, 4);
        }
        wf[i] = v;
        wq[i] = test_bf16r(v);
    }
    return (struct lmc_mat){dt, N, K, b};
}

/* y (M, N) against the bf16-operand reference (bound per element) and the
 * unrounded one (relative to the largest |y|): fails counted by CHECK. */
static void check_y(const float *y, const float *x, const double *wq, const double *wf, const float *bias,
                    int64_t M, int64_t N, int64_t K, const char *what) {
    int64_t bad = 0;
    double num = 0, den = 1e-30;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0, a = bias ? fabs(bias[n]) : 0, sf = s;
            for (int64_t k = 0; k < K; k++) {
                double p = test_bf16r(x[m * K + k]) * wq[n * K + k];
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
    /* bf16 keeps 8 significant bits: about 2^-9 relative per operand, and
     * random signs average it down over K */
    CHECK_MSG(num / den < 2e-2, "%s: %.3g relative to the unrounded product", what, num / den);
}

static void test_direct(struct lmc_cpu_ctx *c) {
    /* M: 1, panel tails, more than one PF_MC block; N: tails of panels and
     * tasks (PF_NC 128); K: odd, 1, one and several K blocks */
    static const int64_t shapes[][3] = {{1, 3, 1},    {7, 37, 29},    {9, 33, 2},     {33, 131, 77},
                                        {97, 300, 401}, {200, 65, 16}, {41, 257, 1601}, {203, 129, 769},
                                        {8, 32, 17}};
    static const enum lmc_dtype dts[3] = {LMC_DTYPE_F16, LMC_DTYPE_BF16, LMC_DTYPE_F32};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int d = 0; d < 3; d++) {
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            double *wq = malloc((size_t)(N * K) * sizeof *wq), *wf = malloc((size_t)(N * K) * sizeof *wf);
            struct lmc_mat w = make_w(dts[d], N, K, wq, wf);
            float *x = test_rand_vec(&rng, M * K, 1.0f), *bias = s % 2 ? test_rand_vec(&rng, N, 1.0f) : NULL,
                  *y = malloc((size_t)(M * N) * sizeof *y);
            for (int64_t i = 0; i < M * N; i++) y[i] = NAN; /* every element must be written */
            const struct lmc_mat *wp = &w;
            const float *bp = bias;
            lmc_cpu_matmul_pf(c, 1, &y, x, M, &wp, bias ? &bp : NULL);
            char what[64];
            snprintf(what, sizeof what, "direct %s", dts[d] == LMC_DTYPE_F16 ? "f16" : dts[d] == LMC_DTYPE_BF16 ? "bf16" : "f32");
            check_y(y, x, wq, wf, bias, M, N, K, what);
            free(wq), free(wf), free((void *)w.data), free(x), free(bias), free(y);
        }
}

/* q/k/v-style: three matrices sharing x through matmul_multi and each
 * through matmul, on a backend of `threads` threads; out: the multi's y
 * (concatenated) for comparison across thread counts. */
static void test_backend(int threads, float *out, int64_t M) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, threads, &err) == LMC_OK);
    struct lmc_cpu_ctx *c = be.ctx;
    CHECK(c->pf_min_m > 0 && M >= c->pf_min_m);
    const int64_t K = 203, Ns[3] = {161, 45, 45};
    const enum lmc_dtype dts[3] = {LMC_DTYPE_F16, LMC_DTYPE_BF16, LMC_DTYPE_F16};
    uint64_t keep = rng;
    rng = 99; /* the same operands for every thread count */
    float *x = test_rand_vec(&rng, M * K, 1.0f);
    struct lmc_mat w[3];
    const struct lmc_mat *wp[3];
    double *wq[3], *wf[3];
    float *bias[3], *y[3], *y1 = malloc((size_t)(M * Ns[0]) * sizeof *y1);
    int64_t off = 0;
    for (int i = 0; i < 3; i++) {
        wq[i] = malloc((size_t)(Ns[i] * K) * sizeof(double));
        wf[i] = malloc((size_t)(Ns[i] * K) * sizeof(double));
        w[i] = make_w(dts[i], Ns[i], K, wq[i], wf[i]);
        wp[i] = &w[i];
        bias[i] = i == 1 ? NULL : test_rand_vec(&rng, Ns[i], 1.0f);
        y[i] = out + off;
        off += M * Ns[i];
    }
    rng = keep;
    be.matmul_multi(be.ctx, 3, y, x, M, wp, (const float *const *)bias);
    for (int i = 0; i < 3; i++) {
        check_y(y[i], x, wq[i], wf[i], bias[i], M, Ns[i], K, "backend matmul_multi");
        float *yi = malloc((size_t)(M * Ns[i]) * sizeof *yi);
        be.matmul(be.ctx, yi, x, M, &w[i], bias[i]);
        CHECK_MSG(!memcmp(yi, y[i], (size_t)(M * Ns[i]) * sizeof *yi), "matmul %d differs from matmul_multi", i);
        free(yi);
    }
    /* off: the fp32 kernels, within fp32 error of the unrounded product */
    c->pf_min_m = 0;
    be.matmul(be.ctx, y1, x, M, &w[0], bias[0]);
    double num = 0, den = 1e-30;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < Ns[0]; n++) {
            double s = bias[0][n];
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * wf[0][n * K + k];
            num = fmax(num, fabs(y1[m * Ns[0] + n] - s));
            den = fmax(den, fabs(s));
        }
    CHECK_MSG(num / den < 1e-5, "pf_min_m 0: %.3g from the fp32 reference", num / den);
    for (int i = 0; i < 3; i++) free(wq[i]), free(wf[i]), free((void *)w[i].data), free(bias[i]);
    free(x), free(y1);
    lmc_backend_cpu_free(&be);
}

int main(void) {
    if (!lmc_cpu_has_bf16()) {
        printf("test_matmul_pf: this CPU has no AVX512-BF16: skipped (the prefill GEMM is off here)\n");
        lmc_err err = {0};
        struct lmc_backend be;
        CHECK(lmc_backend_cpu_init(&be, 1, &err) == LMC_OK);
        CHECK(((struct lmc_cpu_ctx *)be.ctx)->pf_min_m == 0);
        lmc_backend_cpu_free(&be);
        return test_finish("test_matmul_pf");
    }
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(lmc_backend_cpu_init(&be, 2, &err) == LMC_OK);
    test_direct(be.ctx);
    lmc_backend_cpu_free(&be);
    const int64_t M = 75, total = M * (161 + 45 + 45);
    float *a = malloc((size_t)total * sizeof *a), *b = malloc((size_t)total * sizeof *b);
    test_backend(1, a, M);
    test_backend(2, b, M);
    CHECK_MSG(!memcmp(a, b, (size_t)total * sizeof *a), "1 and 2 threads differ");
    free(a), free(b);
    return test_finish("test_matmul_pf");
}
