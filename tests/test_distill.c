/* test_distill.c — the distillation head (model/distill.h) inside
 * lmc_tmodel_step on the CPU backend: tests/fixtures/llama-tiny as the
 * teacher (its inference forward), a randomly initialised student of its
 * shape. Checks: the teacher in chunks of 5 tokens (its KV cache carrying
 * the earlier chunks) gives the loss and gradients of whole sequences, for
 * B sequences and for packed segments; the loss's gradient against central
 * finite differences of the step's forward (weights of the head, a layer
 * and the embedding); alpha 0 is the plain step bit for bit (loss and
 * every gradient); the fixture as its own teacher: KL 0, agreement 1;
 * equal sequences get equal KL rows with Llama, Mamba and Mamba-2
 * teachers, whole and chunked (each sequence starts from an empty cache /
 * a zero recurrent state); lmc_distill_init refuses another vocabulary, alpha outside [0, 1] and a
 * non-positive temperature. */
#include "test.h"
#include "model/backward.h"
#include "model/distill.h"
#include "model/model.h"
#include "ops/backend.h"

#include <stdlib.h>

#define FIX "tests/fixtures/llama-tiny"
#define B 2
#define T 13

static struct lmc_backend be;
static struct lmc_model teacher;
static int32_t in[B * T], tg[B * T];

static double step(struct lmc_tmodel *tm, struct lmc_tacts *a, struct lmc_distill *d, bool backward, float *g) {
    lmc_err err = {0};
    double sum = 0;
    int64_t n = 0;
    a->distill = d;
    if (backward) lmc_tmodel_zero_grad(tm);
    lmc_status st = lmc_tmodel_step(tm, &be, a, in, tg, backward, 1.0f, &sum, &n, &err);
    CHECK_MSG(st == LMC_OK, "step: %s", err.msg);
    if (g) memcpy(g, tm->g, sizeof(float) * (size_t)tm->numel);
    return sum;
}

static double rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

int main(void) {
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct lmc_model_opts mo = {.be = &be};
    if (lmc_model_load(&teacher, FIX, &mo, &err)) {
        fprintf(stderr, "teacher: %s\n", err.msg);
        return 1;
    }
    struct lmc_config cfg;
    struct lmc_tmodel tm, self;
    CHECK_MSG(!lmc_config_load(&cfg, FIX, &err), "%s", err.msg);
    CHECK_MSG(!lmc_tmodel_init(&tm, &cfg, &be, &err) && !lmc_tmodel_init_random(&tm, 99, 0.05, &err), "%s", err.msg);
    struct lmc_tacts a;
    CHECK_MSG(!lmc_tacts_init(&a, &tm, &be, B, T, false, &err), "%s", err.msg);
    uint64_t rng = 7;
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(lmc_rng_next(&rng) % (uint64_t)cfg.vocab_size);
        tg[i] = i % 6 == 4 ? -1 : (int32_t)(lmc_rng_next(&rng) % (uint64_t)cfg.vocab_size);
    }
    const int64_t N = tm.numel;
    float *g1 = malloc(sizeof(float) * (size_t)N), *g2 = malloc(sizeof(float) * (size_t)N);

    /* chunks of 5 tokens vs whole sequences; B sequences, then packed segments */
    const float alphas[] = {1.0f, 0.4f}, temps[] = {1.0f, 2.0f};
    const int64_t segs[] = {0, 4, 4, 9, 13, 13};
    for (int k = 0; k < 2; k++)
        for (int packed = 0; packed < 2; packed++) {
            struct lmc_distill d1, d2;
            CHECK_MSG(!lmc_distill_init(&d1, &teacher, &cfg, &be, B, T, alphas[k], temps[k], &err), "%s", err.msg);
            CHECK_MSG(!lmc_distill_init(&d2, &teacher, &cfg, &be, B, T, alphas[k], temps[k], &err), "%s", err.msg);
            CHECK(d1.chunk == T);
            d2.chunk = 5;
            a.segs = packed ? segs : NULL;
            a.n_segs = packed ? 3 : 0;
            double l1 = step(&tm, &a, &d1, true, g1), l2 = step(&tm, &a, &d2, true, g2);
            printf("alpha %g T %g packed %d: loss %.9g (chunks of 5: %.9g), grads rel %.2e\n", (double)alphas[k],
                   (double)temps[k], packed, l1, l2, rel(g2, g1, N));
            CHECK_MSG(fabs(l1 - l2) < 1e-5 * fabs(l1) && rel(g2, g1, N) < 1e-5 && l1 > 0,
                      "alpha %g T %g packed %d: chunked loss %.9g vs %.9g, grads rel %.2e", (double)alphas[k],
                      (double)temps[k], packed, l2, l1, rel(g2, g1, N));
            CHECK(d1.count == B * T - 4 && d1.kl_sum > 0 && fabs(d1.kl_sum - d2.kl_sum) < 1e-5 * d1.kl_sum);
            a.segs = NULL;
            a.n_segs = 0;
            lmc_distill_free(&d1);
            lmc_distill_free(&d2);
        }

    /* the gradient vs finite differences of the step's forward (alpha 0.6, T 1.5) */
    struct lmc_distill d;
    CHECK_MSG(!lmc_distill_init(&d, &teacher, &cfg, &be, B, T, 0.6f, 1.5f, &err), "%s", err.msg);
    d.chunk = 5;
    step(&tm, &a, &d, true, g1);
    {
        /* the largest gradients of 3 regions: the first tensors (embedding), the middle, the end (head/norm) */
        double worst = 0;
        int checked = 0;
        for (int region = 0; region < 3; region++) {
            int64_t lo = N * region / 3, hi = N * (region + 1) / 3, best = lo;
            for (int64_t i = lo; i < hi; i++)
                if (fabsf(g1[i]) > fabsf(g1[best])) best = i;
            for (int64_t i = best; i < best + 2 && i < hi; i++) {
                const float o = tm.w[i], h = 1e-2f;
                tm.w[i] = o + h;
                double lp = step(&tm, &a, &d, false, NULL);
                tm.w[i] = o - h;
                double lm = step(&tm, &a, &d, false, NULL);
                tm.w[i] = o;
                double fd = (lp - lm) / (2.0 * (double)h);
                if (g1[i] == 0.0f) continue;
                worst = fmax(worst, fabs(fd - g1[i]) / fabs((double)g1[best]));
                checked++;
            }
        }
        printf("finite differences: %d weights, worst error %.2e of the largest gradient\n", checked, worst);
        CHECK_MSG(checked >= 3 && worst < 2e-2, "finite differences: %d checked, worst rel err %.3e", checked, worst);
    }
    lmc_distill_free(&d);

    /* alpha 0: the plain step bit for bit, the KL measured */
    CHECK(!lmc_distill_init(&d, &teacher, &cfg, &be, B, T, 0.0f, 1.0f, &err));
    double lp = step(&tm, &a, NULL, true, g1), ld = step(&tm, &a, &d, true, g2);
    CHECK_MSG(lp == ld && !memcmp(g1, g2, sizeof(float) * (size_t)N), "alpha 0: loss %.17g vs %.17g", ld, lp);
    CHECK(d.kl_sum > 0 && d.count == B * T - 4);
    lmc_distill_free(&d);

    /* its own teacher: KL 0, every argmax agrees */
    CHECK_MSG(!lmc_tmodel_load(&self, FIX, &be, &err), "%s", err.msg);
    struct lmc_tacts a2;
    CHECK(!lmc_tacts_init(&a2, &self, &be, B, T, false, &err));
    CHECK(!lmc_distill_init(&d, &teacher, &cfg, &be, B, T, 1.0f, 1.0f, &err));
    d.chunk = 4;
    step(&self, &a2, &d, true, NULL);
    CHECK_MSG(fabs(d.kl_sum) < 1e-4 && d.agree_sum == (double)d.count, "self: KL sum %.3e, agree %g of %lld",
              d.kl_sum, d.agree_sum, (long long)d.count);
    lmc_distill_free(&d);
    lmc_tacts_free(&a2);
    lmc_tmodel_free(&self);

    /* every sequence starts afresh (the teacher's cache, a recurrent teacher's state): two equal
     * sequences get equal KL rows; Llama and Mamba teachers, whole and in chunks of 5 (the same KL) */
    memcpy(in + T, in, sizeof(int32_t) * T);
    memcpy(tg + T, tg, sizeof(int32_t) * T);
    const char *teachers[] = {FIX, "tests/fixtures/mamba-tiny", "tests/fixtures/mamba2-tiny"};
    for (int k = 0; k < 3; k++) {
        double whole = 0;
        for (int chunked = 0; chunked < 2; chunked++) {
            struct lmc_model t2;
            CHECK_MSG(!lmc_model_load(&t2, teachers[k], &mo, &err), "%s", err.msg);
            CHECK_MSG(!lmc_distill_init(&d, &t2, &cfg, &be, B, T, 1.0f, 1.0f, &err), "%s", err.msg);
            if (chunked) d.chunk = 5;
            step(&tm, &a, &d, true, NULL);
            const float *kl = d.host + B * T;
            double diff = 0, tot = 0;
            for (int i = 0; i < T; i++) diff = fmax(diff, fabs(kl[i] - kl[T + i])), tot += kl[i];
            CHECK_MSG(diff <= 1e-6 * tot && tot > 0, "%s chunked %d: equal sequences' KL rows differ by %.3e (sum %.3e)",
                      teachers[k], chunked, diff, tot);
            if (!chunked) whole = d.kl_sum;
            else CHECK_MSG(fabs(d.kl_sum - whole) < 1e-5 * whole, "%s: KL in chunks %.9g, whole %.9g", teachers[k],
                           d.kl_sum, whole);
            lmc_distill_free(&d);
            lmc_model_free(&t2);
        }
    }

    /* bad set-ups */
    struct lmc_config other = cfg;
    other.vocab_size = cfg.vocab_size - 1;
    CHECK(lmc_distill_init(&d, &teacher, &other, &be, B, T, 1.0f, 1.0f, &err) == LMC_ERR_ARG &&
          strstr(err.msg, "vocabulary"));
    CHECK(lmc_distill_init(&d, &teacher, &cfg, &be, B, T, 1.5f, 1.0f, &err) == LMC_ERR_ARG && strstr(err.msg, "alpha"));
    CHECK(lmc_distill_init(&d, &teacher, &cfg, &be, B, T, 0.5f, 0.0f, &err) == LMC_ERR_ARG &&
          strstr(err.msg, "temperature"));

    free(g1);
    free(g2);
    lmc_tacts_free(&a);
    lmc_tmodel_free(&tm);
    lmc_model_free(&teacher);
    lmc_backend_cpu_free(&be);
    return test_finish("test_distill");
}
