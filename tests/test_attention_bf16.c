/* test_attention_bf16.c — the training attention of the CPU's bf16 mode
 * (ops/cpu/attention_bf16.c, swapped in by lmc_backend_cpu_set_train_bf16):
 *  - forward out and lse, backward dq, dk, dv against float64 (the exact
 *    softmax attention and its analytic gradient, of the unrounded inputs)
 *    within the bf16 GEMM tolerance 2e-2 (relative to the largest
 *    reference element), for GQA, T over several query blocks and not a
 *    multiple of them, odd head_dim, with and without a window;
 *  - the gradients also against central finite differences of the float64
 *    loss (a few elements);
 *  - bit-identical results with 1 and 2 threads;
 *  - the bf16 mode off: the fp32 kernels again (bit-identical to the
 *    inference attention, which the fp32 tests require).
 * Skipped where the CPU lacks AVX512-BF16 (the mode is refused there). */
#include "test.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 4242;

struct at {
    int64_t B, T, H, KV, hd, win;
    double sc;
    double *q, *k, *v, *r;
};

static double *rand_d(int64_t n, double s) {
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = s * test_rand(&rng);
    return v;
}
static float *to_f(const double *a, int64_t n) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)a[i];
    return v;
}

/* out, lse and (when dq) the gradients of L = sum r . out, in float64 */
static double reference(const struct at *t, double *out, double *lse, double *dq, double *dk, double *dv) {
    int64_t qr = t->H * t->hd, kr = t->KV * t->hd, hd = t->hd;
    double L = 0, *s = malloc((size_t)t->T * sizeof *s), *dp = malloc((size_t)t->T * sizeof *dp);
    if (dq) {
        memset(dq, 0, (size_t)(t->B * t->T * qr) * sizeof *dq);
        memset(dk, 0, (size_t)(t->B * t->T * kr) * sizeof *dk);
        memset(dv, 0, (size_t)(t->B * t->T * kr) * sizeof *dv);
    }
    for (int64_t b = 0; b < t->B; b++)
        for (int64_t i = 0; i < t->T; i++)
            for (int64_t h = 0; h < t->H; h++) {
                int64_t g = h / (t->H / t->KV), lo = t->win > 0 && i - t->win + 1 > 0 ? i - t->win + 1 : 0;
                const double *q = t->q + (b * t->T + i) * qr + h * hd, *r = t->r + (b * t->T + i) * qr + h * hd;
                double mx = -1e300, sum = 0;
                for (int64_t j = lo; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < hd; e++) d += q[e] * t->k[(b * t->T + j) * kr + g * hd + e];
                    s[j] = d * t->sc;
                    mx = fmax(mx, s[j]);
                }
                for (int64_t j = lo; j <= i; j++) sum += exp(s[j] - mx);
                if (lse) lse[(b * t->T + i) * t->H + h] = mx + log(sum);
                for (int64_t j = lo; j <= i; j++) s[j] = exp(s[j] - mx) / sum; /* p */
                double D = 0;
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t j = lo; j <= i; j++) o += s[j] * t->v[(b * t->T + j) * kr + g * hd + e];
                    if (out) out[(b * t->T + i) * qr + h * hd + e] = o;
                    L += r[e] * o;
                }
                if (!dq) continue;
                for (int64_t j = lo; j <= i; j++) {
                    double a = 0;
                    for (int64_t e = 0; e < hd; e++) a += r[e] * t->v[(b * t->T + j) * kr + g * hd + e];
                    dp[j] = a;
                    D += s[j] * a;
                }
                for (int64_t j = lo; j <= i; j++) {
                    double ds = s[j] * (dp[j] - D) * t->sc;
                    for (int64_t e = 0; e < hd; e++) {
                        dq[(b * t->T + i) * qr + h * hd + e] += ds * t->k[(b * t->T + j) * kr + g * hd + e];
                        dk[(b * t->T + j) * kr + g * hd + e] += ds * q[e];
                        dv[(b * t->T + j) * kr + g * hd + e] += s[j] * r[e];
                    }
                }
            }
    free(s), free(dp);
    return L;
}

/* central difference of the float64 loss at element i of x (q, k or v) */
static double fd(struct at *t, double *x, int64_t i) {
    double x0 = x[i], h = 1e-5;
    x[i] = x0 + h;
    double lp = reference(t, NULL, NULL, NULL, NULL, NULL);
    x[i] = x0 - h;
    double lm = reference(t, NULL, NULL, NULL, NULL, NULL);
    x[i] = x0;
    return (lp - lm) / (2 * h);
}

static void run(struct lmc_backend *be, const struct at *t, const float *q, const float *k, const float *v,
                const float *r, float *out, float *lse, float *dq, float *dk, float *dv) {
    be->attention_train(be->ctx, out, lse, q, k, v, t->B, t->T, t->H, t->KV, t->hd, (float)t->sc, t->win);
    be->attention_bwd(be->ctx, dq, dk, dv, r, out, lse, q, k, v, t->B, t->T, t->H, t->KV, t->hd, (float)t->sc,
                      t->win);
}

static void test_case(struct lmc_backend *be1, struct lmc_backend *be2, int64_t T, int64_t hd, int64_t win) {
    struct at t = {2, T, 6, 2, hd, win, 1.0 / sqrt((double)hd), 0, 0, 0, 0};
    int64_t nq = t.B * T * t.H * hd, nk = t.B * T * t.KV * hd, nl = t.B * T * t.H;
    t.q = rand_d(nq, 1.5), t.k = rand_d(nk, 1.5), t.v = rand_d(nk, 1.0), t.r = rand_d(nq, 1.0);
    float *q = to_f(t.q, nq), *k = to_f(t.k, nk), *v = to_f(t.v, nk), *r = to_f(t.r, nq);
    double *ro = malloc((size_t)nq * 8), *rl = malloc((size_t)nl * 8), *rdq = malloc((size_t)nq * 8);
    double *rdk = malloc((size_t)nk * 8), *rdv = malloc((size_t)nk * 8);
    reference(&t, ro, rl, rdq, rdk, rdv);
    float *o[2], *l[2], *dq[2], *dk[2], *dv[2];
    for (int i = 0; i < 2; i++) {
        o[i] = malloc((size_t)nq * 4), l[i] = malloc((size_t)nl * 4), dq[i] = malloc((size_t)nq * 4);
        dk[i] = malloc((size_t)nk * 4), dv[i] = malloc((size_t)nk * 4);
        run(i ? be2 : be1, &t, q, k, v, r, o[i], l[i], dq[i], dk[i], dv[i]);
    }
    double eo = test_rel_err_f32_f64(o[0], ro, nq), el = 0;
    for (int64_t i = 0; i < nl; i++) el = fmax(el, fabs(l[0][i] - rl[i]));
    double eq = test_rel_err_f32_f64(dq[0], rdq, nq), ek = test_rel_err_f32_f64(dk[0], rdk, nk),
           ev = test_rel_err_f32_f64(dv[0], rdv, nk);
    CHECK_MSG(eo < 2e-2 && el < 2e-2 && eq < 2e-2 && ek < 2e-2 && ev < 2e-2,
              "T %lld hd %lld window %lld: out %.3g lse %.3g dq %.3g dk %.3g dv %.3g", (long long)T, (long long)hd,
              (long long)win, eo, el, eq, ek, ev);
    /* the float64 gradient itself against finite differences, and the op's at those elements */
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < nq; i++) scale = fmax(scale, fabs(rdq[i]));
    for (int n = 0; n < 6; n++) {
        int64_t iq = (int64_t)(test_rng_next(&rng) % (uint64_t)nq), ik = (int64_t)(test_rng_next(&rng) % (uint64_t)nk);
        double gq = fd(&t, t.q, iq), gk = fd(&t, t.k, ik), gv = fd(&t, t.v, ik);
        worst = fmax(worst, fmax(fabs(gq - rdq[iq]), fmax(fabs(gk - rdk[ik]), fabs(gv - rdv[ik]))));
        CHECK_MSG(fabs(dq[0][iq] - gq) < 2e-2 * scale && fabs(dk[0][ik] - gk) < 2e-2 * scale &&
                      fabs(dv[0][ik] - gv) < 2e-2 * scale,
                  "finite differences: dq %g vs %g, dk %g vs %g, dv %g vs %g", dq[0][iq], gq, dk[0][ik], gk,
                  dv[0][ik], gv);
    }
    CHECK_MSG(worst < 1e-6 * fmax(1.0, scale), "float64 reference gradient vs finite differences: %.3g", worst);
    CHECK(!memcmp(o[0], o[1], (size_t)nq * 4) && !memcmp(l[0], l[1], (size_t)nl * 4));
    CHECK(!memcmp(dq[0], dq[1], (size_t)nq * 4) && !memcmp(dk[0], dk[1], (size_t)nk * 4) &&
          !memcmp(dv[0], dv[1], (size_t)nk * 4));
    for (int i = 0; i < 2; i++) free(o[i]), free(l[i]), free(dq[i]), free(dk[i]), free(dv[i]);
    free(ro), free(rl), free(rdq), free(rdk), free(rdv);
    free(q), free(k), free(v), free(r), free(t.q), free(t.k), free(t.v), free(t.r);
}

int main(void) {
    lmc_err err = {0};
    struct lmc_backend be1, be2;
    CHECK(lmc_backend_cpu_init(&be1, 1, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_init(&be2, 2, &err) == LMC_OK);
    if (!lmc_cpu_has_bf16()) {
        printf("this CPU has no AVX512-BF16: skipped\n");
    } else {
        void *f32_train = (void *)be1.attention_train, *f32_bwd = (void *)be1.attention_bwd;
        CHECK(lmc_backend_cpu_set_train_bf16(&be1, true, &err) == LMC_OK);
        CHECK(lmc_backend_cpu_set_train_bf16(&be2, true, &err) == LMC_OK);
        CHECK((void *)be1.attention_train != f32_train && (void *)be1.attention_bwd != f32_bwd);
        test_case(&be1, &be2, 150, 20, 0); /* 3 query blocks, the last short; edge panels of hd */
        test_case(&be1, &be2, 67, 33, 9);  /* a window, odd head_dim */
        test_case(&be1, &be2, 5, 8, 0);    /* fewer queries than a block */
        test_case(&be1, &be2, 100, 48, 0); /* a 48-wide head (32 + 16 columns), keys packed once per head */
        CHECK(lmc_backend_cpu_set_train_bf16(&be1, false, &err) == LMC_OK);
        CHECK((void *)be1.attention_train == f32_train && (void *)be1.attention_bwd == f32_bwd);
    }
    lmc_backend_cpu_free(&be1), lmc_backend_cpu_free(&be2);
    return test_finish("test_attention_bf16");
}
