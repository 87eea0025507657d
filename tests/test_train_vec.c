/* test_train_vec.c — the 16-lane element-wise code of the CPU training
 * step (ops_cpu.h's lmc_exp512 and lmc_cpu_exp_sum16; the backend's swiglu,
 * swiglu_bwd and rmsnorm_bwd), on odd sizes against float64 references:
 *  - lmc_exp512 equals lmc_exp256 lane by lane (the same operations), over
 *    a sweep of arguments, the saturation ends, infinities and NaN, and is
 *    within 2 ulp-ish (4e-7 relative) of exp in double;
 *  - lmc_cpu_exp_sum16 stores exp(s - mx) and returns their sum (float64
 *    reference, relative 1e-6) on lengths around the 16-lane blocks;
 *  - swiglu and swiglu_bwd against float64 formulas (relative 1e-5), and
 *    1 and 2 threads giving the same bits;
 *  - rmsnorm_bwd's dx and dw against float64 (relative 1e-5), dx and dw
 *    accumulated onto non-zero values, 1 and 2 threads the same bits. */
#include "test.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 4242;

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) + 1e-30); }

static void test_exp(void) {
#if defined(__AVX512F__) && defined(__AVX2__)
    float x[4096 + 16];
    int64_t n = 0;
    for (int i = 0; i < 4000; i++) x[n++] = -100.0f + 200.0f * (float)i / 3999.0f; /* both saturation ends */
    float sp[] = {0.0f, -0.0f, 88.7228f, 88.72284f, -87.3365f, -87.33656f, 1e-8f, -1e-8f, INFINITY, -INFINITY,
                  NAN, 0.5f, -0.5f, 0.34657359f, -0.34657359f, 1e30f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) x[n++] = sp[i];
    while (n % 16) x[n++] = 1.0f;
    int same = 1;
    double worst = 0;
    for (int64_t i = 0; i < n; i += 16) {
        float a[16], b[16];
        _mm512_storeu_ps(a, lmc_exp512(_mm512_loadu_ps(x + i)));
        _mm256_storeu_ps(b, lmc_exp256(_mm256_loadu_ps(x + i)));
        _mm256_storeu_ps(b + 8, lmc_exp256(_mm256_loadu_ps(x + i + 8)));
        for (int k = 0; k < 16; k++) {
            same &= !memcmp(&a[k], &b[k], 4) || (isnan(a[k]) && isnan(b[k]));
            double r = exp((double)x[i + k]);
            if (x[i + k] >= -87.0f && x[i + k] <= 88.0f) worst = fmax(worst, rel(a[k], r));
        }
    }
    CHECK_MSG(same, "lmc_exp512 differs from lmc_exp256");
    CHECK_MSG(worst < 4e-7, "lmc_exp512 relative error %.3g", worst);
    float e[16];
    _mm512_storeu_ps(e, lmc_exp512(_mm512_setr_ps(-1000, 1000, INFINITY, -INFINITY, NAN, 0, 0, 0, 0, 0, 0, 0, 0,
                                                  0, 0, 0)));
    CHECK(e[0] == 0.0f && isinf(e[1]) && e[1] > 0 && isinf(e[2]) && e[3] == 0.0f && isnan(e[4]) && e[5] == 1.0f);
#endif
    static const int64_t lens[] = {1, 15, 16, 17, 33, 1003, 8191};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int64_t len = lens[li];
        float *s = test_rand_vec(&rng, len, 6.0f), *s0 = malloc((size_t)len * sizeof *s0);
        memcpy(s0, s, (size_t)len * sizeof *s0);
        float mx = -INFINITY;
        for (int64_t i = 0; i < len; i++) mx = fmaxf(mx, s[i]);
        double sum = lmc_cpu_exp_sum16(s, len, mx), ref = 0, we = 0;
        for (int64_t i = 0; i < len; i++) {
            double r = exp((double)s0[i] - mx);
            ref += r;
            we = fmax(we, rel(s[i], r));
        }
        CHECK_MSG(we < 1e-6 && rel(sum, ref) < 1e-6, "exp_sum16 n %lld: elements %.3g sum %.3g", (long long)len, we,
                  rel(sum, ref));
        free(s), free(s0);
    }
}

static void test_swiglu(struct lmc_backend *b1, struct lmc_backend *b2) {
    static const int64_t ns[] = {1, 17, 1003, 40001};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        int64_t n = ns[ni];
        float *g = test_rand_vec(&rng, n, 8.0f), *u = test_rand_vec(&rng, n, 2.0f), *dy = test_rand_vec(&rng, n, 1.0f);
        float *y1 = malloc((size_t)n * 4), *y2 = malloc((size_t)n * 4), *dg1 = malloc((size_t)n * 4),
              *du1 = malloc((size_t)n * 4), *dg2 = malloc((size_t)n * 4), *du2 = malloc((size_t)n * 4);
        b1->swiglu(b1->ctx, y1, g, u, n);
        b2->swiglu(b2->ctx, y2, g, u, n);
        b1->swiglu_bwd(b1->ctx, dg1, du1, dy, g, u, n);
        b2->swiglu_bwd(b2->ctx, dg2, du2, dy, g, u, n);
        double ey = 0, eg = 0, eu = 0, my = 0, mg = 0, mu = 0;
        for (int64_t i = 0; i < n; i++) {
            double gd = g[i], s = 1.0 / (1.0 + exp(-gd));
            double yr = gd * s * u[i], dgr = dy[i] * u[i] * s * (1.0 + gd * (1.0 - s)), dur = dy[i] * gd * s;
            ey = fmax(ey, fabs(y1[i] - yr)), my = fmax(my, fabs(yr));
            eg = fmax(eg, fabs(dg1[i] - dgr)), mg = fmax(mg, fabs(dgr));
            eu = fmax(eu, fabs(du1[i] - dur)), mu = fmax(mu, fabs(dur));
        }
        CHECK_MSG(ey <= 1e-5 * my && eg <= 1e-5 * mg && eu <= 1e-5 * mu, "swiglu n %lld: %.3g %.3g %.3g",
                  (long long)n, ey / my, eg / mg, eu / mu);
        CHECK(!memcmp(y1, y2, (size_t)n * 4) && !memcmp(dg1, dg2, (size_t)n * 4) && !memcmp(du1, du2, (size_t)n * 4));
        /* in place (dy aliased by dgate), as the trainer calls it */
        memcpy(dg2, dy, (size_t)n * 4);
        b2->swiglu_bwd(b2->ctx, dg2, du2, dg2, g, u, n);
        CHECK(!memcmp(dg1, dg2, (size_t)n * 4) && !memcmp(du1, du2, (size_t)n * 4));
        free(g), free(u), free(dy), free(y1), free(y2), free(dg1), free(du1), free(dg2), free(du2);
    }
}

static void test_rmsnorm_bwd(struct lmc_backend *b1, struct lmc_backend *b2) {
    static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {37, 288}, {129, 45}, {64, 1003}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t M = shapes[si][0], C = shapes[si][1];
        float eps = 1e-5f;
        float *x = test_rand_vec(&rng, M * C, 2.0f), *w = test_rand_vec(&rng, C, 1.0f),
              *dy = test_rand_vec(&rng, M * C, 1.0f);
        float *dx0 = test_rand_vec(&rng, M * C, 0.5f), *dw0 = test_rand_vec(&rng, C, 0.5f);
        float *dx1 = malloc((size_t)(M * C) * 4), *dx2 = malloc((size_t)(M * C) * 4), *dw1 = malloc((size_t)C * 4),
              *dw2 = malloc((size_t)C * 4);
        memcpy(dx1, dx0, (size_t)(M * C) * 4), memcpy(dx2, dx0, (size_t)(M * C) * 4);
        memcpy(dw1, dw0, (size_t)C * 4), memcpy(dw2, dw0, (size_t)C * 4);
        b1->rmsnorm_bwd(b1->ctx, dx1, dw1, dy, x, w, M, C, eps);
        b2->rmsnorm_bwd(b2->ctx, dx2, dw2, dy, x, w, M, C, eps);
        double *dwr = calloc((size_t)C, sizeof *dwr), edx = 0, mdx = 0, edw = 0, mdw = 0;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * C, *dym = dy + m * C;
            double ss = 0, dot = 0;
            for (int64_t i = 0; i < C; i++) ss += (double)xm[i] * xm[i], dot += (double)w[i] * dym[i] * xm[i];
            double r = 1.0 / sqrt(ss / (double)C + (double)eps);
            for (int64_t i = 0; i < C; i++) {
                double d = r * w[i] * dym[i] - r * r * r * dot / (double)C * xm[i];
                edx = fmax(edx, fabs(dx1[m * C + i] - (dx0[m * C + i] + d)));
                mdx = fmax(mdx, fabs(d) + fabs(dx0[m * C + i]));
                dwr[i] += (double)dym[i] * xm[i] * r;
            }
        }
        for (int64_t i = 0; i < C; i++) {
            edw = fmax(edw, fabs(dw1[i] - (dw0[i] + dwr[i])));
            mdw = fmax(mdw, fabs(dwr[i]) + fabs(dw0[i]));
        }
        CHECK_MSG(edx <= 1e-5 * mdx && edw <= 1e-5 * mdw * (1 + (double)M / 64), "rmsnorm_bwd %lldx%lld: dx %.3g dw %.3g",
                  (long long)M, (long long)C, edx / mdx, edw / mdw);
        CHECK(!memcmp(dx1, dx2, (size_t)(M * C) * 4) && !memcmp(dw1, dw2, (size_t)C * 4));
        free(x), free(w), free(dy), free(dx0), free(dw0), free(dx1), free(dx2), free(dw1), free(dw2), free(dwr);
    }
}

int main(void) {
    lmc_err err;
    struct lmc_backend b1, b2;
    CHECK(lmc_backend_cpu_init(&b1, 1, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_init(&b2, 2, &err) == LMC_OK);
    test_exp();
    test_swiglu(&b1, &b2);
    test_rmsnorm_bwd(&b1, &b2);
    lmc_backend_cpu_free(&b1), lmc_backend_cpu_free(&b2);
    return test_finish("test_train_vec");
}
