/* test_soft_xent.c — the distillation loss op (backend.h soft_xent) on the
 * CPU backend against a float64 reference on random odd sizes (temperature
 * 1 and not, alpha 0 / between / 1, ignored targets): the hard-label CE,
 * KL(softmax(t/T) || softmax(s/T)), top-1 agreement and the gradient; the
 * gradient against central finite differences of the float64 loss
 * dscale * sum_r ((1 - alpha) CE + alpha T^2 KL); forward-only leaves the
 * logits as they were with the same outputs; results identical for 1 and
 * 2 threads. (CUDA twin: tests/cuda_emu/harness.cc, section xent.) */
#include "test.h"
#include "ops/backend.h"

#include <stdlib.h>

static uint64_t rng = 4242;

struct ref {
    int64_t R, V;
    double alpha, temp, dscale;
    const int32_t *tg;
    double *s, *t; /* (R, V) */
};

/* Row r's CE and KL in float64. */
static void ref_row(const struct ref *f, int64_t r, double *ce, double *kl, int64_t *as, int64_t *at) {
    const double *s = f->s + r * f->V, *t = f->t + r * f->V;
    double ms = -INFINITY, mt = -INFINITY;
    *as = *at = 0;
    for (int64_t v = 0; v < f->V; v++) {
        if (s[v] > ms) ms = s[v], *as = v;
        if (t[v] > mt) mt = t[v], *at = v;
    }
    double z = 0, zs = 0, zt = 0;
    for (int64_t v = 0; v < f->V; v++) {
        z += exp(s[v] - ms);
        zs += exp((s[v] - ms) / f->temp);
        zt += exp((t[v] - mt) / f->temp);
    }
    *ce = log(z) + ms - s[f->tg[r]];
    double k = 0;
    for (int64_t v = 0; v < f->V; v++) {
        double lq = (t[v] - mt) / f->temp - log(zt), lp = (s[v] - ms) / f->temp - log(zs);
        k += exp(lq) * (lq - lp);
    }
    *kl = k;
}

static double ref_loss(const struct ref *f) {
    double L = 0;
    for (int64_t r = 0; r < f->R; r++) {
        if (f->tg[r] < 0) continue;
        double ce, kl;
        int64_t a, b;
        ref_row(f, r, &ce, &kl, &a, &b);
        L += f->dscale * ((1 - f->alpha) * ce + f->alpha * f->temp * f->temp * kl);
    }
    return L;
}

/* The analytic gradient in float64. */
static void ref_grad(const struct ref *f, double *g) {
    for (int64_t r = 0; r < f->R; r++) {
        const double *s = f->s + r * f->V, *t = f->t + r * f->V;
        double *gr = g + r * f->V;
        if (f->tg[r] < 0) {
            for (int64_t v = 0; v < f->V; v++) gr[v] = 0;
            continue;
        }
        double ms = -INFINITY, mt = -INFINITY, z = 0, zs = 0, zt = 0;
        for (int64_t v = 0; v < f->V; v++) ms = fmax(ms, s[v]), mt = fmax(mt, t[v]);
        for (int64_t v = 0; v < f->V; v++) {
            z += exp(s[v] - ms);
            zs += exp((s[v] - ms) / f->temp);
            zt += exp((t[v] - mt) / f->temp);
        }
        for (int64_t v = 0; v < f->V; v++)
            gr[v] = f->dscale * ((1 - f->alpha) * (exp(s[v] - ms) / z - (v == f->tg[r])) +
                                 f->alpha * f->temp * (exp((s[v] - ms) / f->temp) / zs - exp((t[v] - mt) / f->temp) / zt));
    }
}

static void run_case(struct lmc_backend *be1, struct lmc_backend *be2, int64_t R, int64_t V, double alpha,
                     double temp, double scale) {
    struct ref f = {R, V, alpha, temp, 0.37, NULL, NULL, NULL};
    int32_t *tg = malloc(sizeof(int32_t) * (size_t)R);
    for (int64_t r = 0; r < R; r++) tg[r] = r % 5 == 2 ? -1 : (int32_t)(lmc_rng_next(&rng) % (uint64_t)V);
    f.tg = tg;
    size_t n = (size_t)(R * V);
    f.s = malloc(sizeof(double) * n);
    f.t = malloc(sizeof(double) * n);
    float *s = malloc(4 * n), *t = malloc(4 * n), *s2 = malloc(4 * n), *s0 = malloc(4 * n);
    for (size_t i = 0; i < n; i++) {
        s[i] = test_rand(&rng) * (float)scale;
        /* a sharper copy of the student on every third row (the same argmax) */
        t[i] = (i / (size_t)V) % 3 == 0 ? 1.5f * s[i] : test_rand(&rng) * (float)scale;
        f.s[i] = s[i], f.t[i] = t[i];
    }
    memcpy(s2, s, 4 * n);
    memcpy(s0, s, 4 * n);
    float *ce = malloc(4 * (size_t)R), *kl = malloc(4 * (size_t)R), *ag = malloc(4 * (size_t)R);
    float *ce2 = malloc(4 * (size_t)R), *kl2 = malloc(4 * (size_t)R), *ag2 = malloc(4 * (size_t)R);
    /* forward only: logits untouched, the same outputs as with the gradient */
    be1->soft_xent(be1->ctx, ce2, kl2, ag2, s2, t, tg, R, V, (float)alpha, (float)temp, (float)f.dscale, 0);
    CHECK(!memcmp(s2, s0, 4 * n));
    be1->soft_xent(be1->ctx, ce, kl, ag, s, t, tg, R, V, (float)alpha, (float)temp, (float)f.dscale, 1);
    CHECK(!memcmp(ce, ce2, 4 * (size_t)R) && !memcmp(kl, kl2, 4 * (size_t)R) && !memcmp(ag, ag2, 4 * (size_t)R));
    /* 2 threads: the same bits */
    be2->soft_xent(be2->ctx, ce2, kl2, ag2, s2, t, tg, R, V, (float)alpha, (float)temp, (float)f.dscale, 1);
    CHECK(!memcmp(s2, s, 4 * n) && !memcmp(ce, ce2, 4 * (size_t)R) && !memcmp(kl, kl2, 4 * (size_t)R));
    double ece = 0, ekl = 0;
    int agree_bad = 0, n_agree = 0;
    for (int64_t r = 0; r < R; r++) {
        if (tg[r] < 0) {
            CHECK(ce[r] == 0.0f && kl[r] == 0.0f && ag[r] == 0.0f);
            continue;
        }
        double c, k;
        int64_t a, b;
        ref_row(&f, r, &c, &k, &a, &b);
        ece = fmax(ece, fabs(ce[r] - c) / fmax(1, fabs(c)));
        ekl = fmax(ekl, fabs(kl[r] - k) / fmax(1, fabs(k)));
        agree_bad += (ag[r] == 1.0f) != (a == b);
        n_agree += a == b;
    }
    double *g = malloc(sizeof(double) * n);
    ref_grad(&f, g);
    double eg = test_rel_err_f32_f64(s, g, (int64_t)n);
    CHECK_MSG(ece < 2e-6 && ekl < 2e-6 && eg < 2e-5 && !agree_bad,
              "R=%lld V=%lld alpha %g T %g: ce err %.2e kl err %.2e grad err %.2e, %d agreement flags wrong",
              (long long)R, (long long)V, alpha, temp, ece, ekl, eg, agree_bad);
    CHECK(R < 3 || n_agree > 0); /* the near-teacher rows agree */
    /* finite differences of the float64 loss over a sample of logits */
    double num = 0, den = 0, h = 1e-5;
    size_t step = n > 400 ? n / (n > 20000 ? 40 : 200) : 1;
    for (size_t i = 0; i < n; i += step) {
        double o = f.s[i];
        f.s[i] = o + h;
        double a = ref_loss(&f);
        f.s[i] = o - h;
        double b = ref_loss(&f);
        f.s[i] = o;
        double fd = (a - b) / (2 * h);
        num = fmax(num, fabs((double)s[i] - fd));
        den = fmax(den, fabs(fd));
    }
    CHECK_MSG(den > 0 && num / den < 1e-4, "R=%lld V=%lld alpha %g T %g: gradient vs finite differences %.2e",
              (long long)R, (long long)V, alpha, temp, num / den);
    free(tg); free(f.s); free(f.t); free(s); free(t); free(s2); free(s0); free(g);
    free(ce); free(kl); free(ag); free(ce2); free(kl2); free(ag2);
}

int main(void) {
    struct lmc_backend be1, be2;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be1, 1, &err) || lmc_backend_cpu_init(&be2, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    CHECK(be1.soft_xent != NULL);
    const int64_t sizes[][2] = {{1, 7}, {7, 29}, {13, 131}, {9, 1001}, {33, 4099}};
    const double alphas[] = {0, 0.3, 1}, temps[] = {1, 0.5, 2.7};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (size_t a = 0; a < 3; a++)
            for (size_t k = 0; k < 3; k++)
                run_case(&be1, &be2, sizes[i][0], sizes[i][1], alphas[a], temps[k], i % 2 ? 6.0 : 2.0);
    lmc_backend_cpu_free(&be1);
    lmc_backend_cpu_free(&be2);
    return test_finish("test_soft_xent");
}
