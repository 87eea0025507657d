/* test_lora_dropout.c — LoRA dropout (PEFT: scale * (dropout(x) A^T) B^T,
 * training only):
 *  - the backend's dropout op: the dropped fraction is p, kept values are
 *    x / (1 - p), the mask depends only on (seed, element index) (a slice
 *    with its offset gives the slice of the whole; another seed, another
 *    mask), in place works;
 *  - p = 0 gives the no-dropout linear bit for bit;
 *  - p > 0: the branch's mean over 3000 masks matches the branch without
 *    dropout within 5 standard errors per element (its expected value);
 *  - with a fixed mask, dx, dA and dB match finite differences and the
 *    dense computation on the explicitly dropped input, the rows going
 *    through the adapter's scratch in chunks (the mask is the same). */
#include "test.h"
#include "core/core.h"
#include "model/linear.h"

#include <stdlib.h>
#include <string.h>

static void test_op(const struct lmc_backend *be) {
    int64_t n = 100003;
    float p = 0.3f;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    float *z = malloc(sizeof(float) * (size_t)n);
    uint64_t rng = 3;
    for (int64_t i = 0; i < n; i++) x[i] = test_rand(&rng);
    be->dropout(be->ctx, y, x, n, p, 77, 0);
    int64_t dropped = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (y[i] == 0.0f) dropped++;
        else if (fabsf(y[i] - x[i] / (1 - p)) > 1e-6f * fabsf(x[i])) bad++;
    }
    double frac = (double)dropped / (double)n;
    CHECK_MSG(fabs(frac - p) < 0.01, "dropped fraction %.4f for p %.2f", frac, p);
    CHECK(bad == 0);
    be->dropout(be->ctx, z + 1000, x + 1000, 5000, p, 77, 1000); /* a slice with its offset */
    CHECK(!memcmp(z + 1000, y + 1000, 5000 * sizeof(float)));
    be->dropout(be->ctx, z, x, n, p, 78, 0);
    CHECK(memcmp(z, y, (size_t)n * sizeof(float)) != 0);
    memcpy(z, x, (size_t)n * sizeof(float));
    be->dropout(be->ctx, z, z, n, p, 77, 0); /* in place */
    CHECK(!memcmp(z, y, (size_t)n * sizeof(float)));
    be->dropout(be->ctx, z, x, n, 0.0f, 77, 0);
    CHECK(!memcmp(z, x, (size_t)n * sizeof(float)));
    free(x), free(y), free(z);
}

struct fix {
    int64_t M, n, k, r;
    float *w, *A, *B, *S, *scratch, *x, *g;
    struct lmc_adapter ad;
    struct lmc_linear L;
};

static void fix_init(struct fix *f, int64_t rows) {
    uint64_t rng = 21;
    f->M = 13, f->n = 29, f->k = 37, f->r = 3;
    int64_t M = f->M, n = f->n, k = f->k, r = f->r;
    f->w = malloc(sizeof(float) * (size_t)(n * k));
    f->A = malloc(sizeof(float) * (size_t)(r * k));
    f->B = malloc(sizeof(float) * (size_t)(n * r));
    f->S = calloc((size_t)(r * r), sizeof(float));
    f->scratch = malloc(sizeof(float) * (size_t)(rows * (2 * r + n + k)));
    f->x = malloc(sizeof(float) * (size_t)(M * k));
    f->g = malloc(sizeof(float) * (size_t)(M * n));
    for (int64_t i = 0; i < n * k; i++) f->w[i] = test_rand(&rng);
    for (int64_t i = 0; i < r * k; i++) f->A[i] = test_rand(&rng);
    for (int64_t i = 0; i < n * r; i++) f->B[i] = test_rand(&rng);
    for (int64_t i = 0; i < M * k; i++) f->x[i] = test_rand(&rng);
    for (int64_t i = 0; i < M * n; i++) f->g[i] = test_rand(&rng);
    for (int64_t i = 0; i < r; i++) f->S[i * r + i] = 2.0f;
    f->ad = (struct lmc_adapter){.a = {LMC_DTYPE_F32, r, k, f->A}, .b = {LMC_DTYPE_F32, n, r, f->B},
                                 .s = {LMC_DTYPE_F32, r, r, f->S}, .scale = 2.0f, .scratch = f->scratch,
                                 .scratch_rows = rows};
    f->L = (struct lmc_linear){.format = LMC_WFMT_DENSE, .w = {LMC_DTYPE_F32, n, k, f->w}, .adapters = &f->ad,
                               .n_adapters = 1};
}

static void fix_free(struct fix *f) {
    free(f->w), free(f->A), free(f->B), free(f->S), free(f->scratch), free(f->x), free(f->g);
}

static void fwd(const struct lmc_backend *be, const struct lmc_linear *L, float *y, const float *x, int64_t M) {
    lmc_linear_fwd(be, 1, &L, &y, x, M);
}

/* dx, dA, dB of sum(y * g) */
static void bwd(const struct lmc_backend *be, struct fix *f, const struct lmc_linear *L, const float *x, float *dx,
                float *dA, float *dB) {
    struct lmc_adapter gad = f->ad;
    gad.a.data = dA;
    gad.b.data = dB;
    memset(dA, 0, sizeof(float) * (size_t)(f->r * f->k));
    memset(dB, 0, sizeof(float) * (size_t)(f->n * f->r));
    struct lmc_linear D = {.w = {LMC_DTYPE_F32, f->n, f->k, NULL}, .adapters = &gad, .n_adapters = 1};
    const struct lmc_linear *Dp = &D;
    const float *gp = f->g;
    lmc_linear_bwd(be, 1, &L, &Dp, dx, &gp, x, f->M, false);
}

static void test_p0(const struct lmc_backend *be) {
    struct fix f;
    fix_init(&f, 4);
    int64_t M = f.M, n = f.n;
    float *y0 = malloc(sizeof(float) * (size_t)(M * n)), *y1 = malloc(sizeof(float) * (size_t)(M * n));
    fwd(be, &f.L, y0, f.x, M);
    f.ad.dropout = 0.0f;
    f.ad.drop_seed = 12345;
    fwd(be, &f.L, y1, f.x, M);
    CHECK_MSG(!memcmp(y0, y1, sizeof(float) * (size_t)(M * n)), "p = 0 equals no dropout");
    free(y0), free(y1);
    fix_free(&f);
}

static void test_expectation(const struct lmc_backend *be) {
    struct fix f;
    fix_init(&f, 16);
    int64_t M = f.M, n = f.n, N = 3000;
    f.w = memset(f.w, 0, sizeof(float) * (size_t)(n * f.k)); /* the branch alone */
    float *y = malloc(sizeof(float) * (size_t)(M * n)), *y0 = malloc(sizeof(float) * (size_t)(M * n));
    double *sum = calloc((size_t)(M * n), sizeof(double)), *sq = calloc((size_t)(M * n), sizeof(double));
    fwd(be, &f.L, y0, f.x, M);
    f.ad.dropout = 0.25f;
    for (int64_t s = 0; s < N; s++) {
        f.ad.drop_seed = 1000 + (uint64_t)s * 7919;
        fwd(be, &f.L, y, f.x, M);
        for (int64_t i = 0; i < M * n; i++) {
            sum[i] += y[i];
            sq[i] += (double)y[i] * y[i];
        }
    }
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < M * n; i++) {
        double mean = sum[i] / (double)N, var = sq[i] / (double)N - mean * mean;
        double se = sqrt(fmax(var, 0) / (double)N);
        double z = fabs(mean - y0[i]) / (se > 0 ? se : 1e-30);
        worst = fmax(worst, z);
        if (z > 5) bad++;
    }
    CHECK_MSG(bad == 0, "E[branch] with dropout: %lld elements beyond 5 SE (worst %.2f SE)", (long long)bad, worst);
    CHECK_MSG(memcmp(y, y0, sizeof(float) * (size_t)(M * n)) != 0, "dropout changes one draw");
    free(y), free(y0), free(sum), free(sq);
    fix_free(&f);
}

static double loss(const struct lmc_backend *be, struct fix *f, float *y) {
    fwd(be, &f->L, y, f->x, f->M);
    double s = 0;
    for (int64_t i = 0; i < f->M * f->n; i++) s += (double)y[i] * f->g[i];
    return s;
}

static void test_grads(const struct lmc_backend *be) {
    struct fix f;
    fix_init(&f, 4); /* 13 rows in chunks of 4 */
    int64_t M = f.M, n = f.n, k = f.k, r = f.r;
    f.ad.dropout = 0.4f;
    f.ad.drop_seed = 99;
    float *dx = malloc(sizeof(float) * (size_t)(M * k)), *dA = malloc(sizeof(float) * (size_t)(r * k));
    float *dB = malloc(sizeof(float) * (size_t)(n * r)), *y = malloc(sizeof(float) * (size_t)(M * n));
    bwd(be, &f, &f.L, f.x, dx, dA, dB);
    /* reference: the same linear without dropout on the explicitly dropped
     * input gives dA and dB (dx: finite differences below) */
    float *xd = malloc(sizeof(float) * (size_t)(M * k)), *dx2 = malloc(sizeof(float) * (size_t)(M * k));
    float *dA2 = malloc(sizeof(float) * (size_t)(r * k)), *dB2 = malloc(sizeof(float) * (size_t)(n * r));
    be->dropout(be->ctx, xd, f.x, M * k, 0.4f, 99, 0);
    struct fix f2 = f;
    f2.ad.dropout = 0;
    f2.L.adapters = &f2.ad;
    bwd(be, &f2, &f2.L, xd, dx2, dA2, dB2);
    double eA = 0, eB = 0, mA = 0, mB = 0;
    for (int64_t i = 0; i < r * k; i++) eA = fmax(eA, fabs(dA[i] - dA2[i])), mA = fmax(mA, fabs(dA2[i]));
    for (int64_t i = 0; i < n * r; i++) eB = fmax(eB, fabs(dB[i] - dB2[i])), mB = fmax(mB, fabs(dB2[i]));
    CHECK_MSG(eA <= 1e-5 * mA && eB <= 1e-5 * mB, "dA %.3e, dB %.3e against the dropped input", eA, eB);
    /* finite differences (linear in each variable: exact but for rounding) */
    uint64_t rng = 5;
    float *vars[3] = {f.x, f.A, f.B}, *grads[3] = {dx, dA, dB};
    int64_t sizes[3] = {M * k, r * k, n * r};
    const char *names[3] = {"dx", "dA", "dB"};
    for (int v = 0; v < 3; v++) {
        double worst = 0, gmax = 0;
        for (int64_t i = 0; i < sizes[v]; i++) gmax = fmax(gmax, fabs(grads[v][i]));
        for (int t = 0; t < 16; t++) {
            int64_t i = (int64_t)(test_rng_next(&rng) % (uint64_t)sizes[v]);
            float keep = vars[v][i], h = 0.05f;
            vars[v][i] = keep + h;
            double lp = loss(be, &f, y);
            vars[v][i] = keep - h;
            double lm = loss(be, &f, y);
            vars[v][i] = keep;
            worst = fmax(worst, fabs((lp - lm) / (double)((keep + h) - (keep - h)) - grads[v][i]));
        }
        CHECK_MSG(worst <= 1e-3 * gmax, "finite differences %s with dropout: %.3e of %.3e", names[v], worst, gmax);
    }
    free(dx), free(dA), free(dB), free(y), free(xd), free(dx2), free(dA2), free(dB2);
    fix_free(&f);
}

int main(void) {
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(!lmc_backend_cpu_init(&be, 2, &err));
    test_op(&be);
    test_p0(&be);
    test_expectation(&be);
    test_grads(&be);
    lmc_backend_cpu_free(&be);
    return test_finish("test_lora_dropout");
}
