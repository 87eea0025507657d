/* test_linear.c — lmc_linear_fwd / _fwd_res / _fwd_swiglu / _bwd on the CPU
 * backend, with its fused entries (matmul_multi, matmul_add, matmul_swiglu,
 * matmul_bwd_multi) and with them removed from the table (the plain-op
 * fallbacks), against float64 references, on odd sizes with biases on some
 * linears: forward outputs, the residual in place and out of place, SwiGLU,
 * and the backward's dx (= and +=), dW and db. */
#include "test.h"
#include "model/linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 12345;
static double urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
}
static float *rvec(int64_t n) {
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)urand();
    return v;
}
static float *zvec(int64_t n) { return calloc((size_t)n, sizeof(float)); }

/* y = x W^T + b in double */
static double *ref_fwd(const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K) {
    double *y = malloc((size_t)(M * N) * sizeof *y);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = b ? b[n] : 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
            y[m * N + n] = s;
        }
    return y;
}

static double max_rel(const float *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / (den > 0 ? den : 1);
}

static void run(const struct lmc_backend *be, const char *label) {
    const int64_t M = 37, K = 29, N[3] = {23, 17, 17};
    float *x = rvec(M * K), *w[3], *b[3];
    struct lmc_linear L[3], D[3];
    for (int i = 0; i < 3; i++) {
        w[i] = rvec(N[i] * K);
        b[i] = i == 1 ? NULL : rvec(N[i]); /* the middle one without bias */
        memset(&L[i], 0, sizeof L[i]);
        L[i].w = (struct lmc_mat){LMC_DTYPE_F32, N[i], K, w[i]};
        L[i].bias = b[i];
    }
    const struct lmc_linear *Lp[3] = {&L[0], &L[1], &L[2]};
    /* forward, three sharing x */
    float *y[3];
    double *yr[3];
    for (int i = 0; i < 3; i++) {
        y[i] = zvec(M * N[i]);
        yr[i] = ref_fwd(x, w[i], b[i], M, N[i], K);
    }
    lmc_linear_fwd(be, 3, Lp, y, x, M);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(max_rel(y[i], yr[i], M * N[i]) < 1e-5, "%s fwd %d: %.3e", label, i, max_rel(y[i], yr[i], M * N[i]));
    /* residual: in place (y == res) and out of place */
    float *res = rvec(M * N[0]), *acc = malloc((size_t)(M * N[0]) * sizeof(float)), *tmp = zvec(M * N[0]);
    float *out = zvec(M * N[0]);
    memcpy(acc, res, (size_t)(M * N[0]) * sizeof(float));
    double *rr = malloc((size_t)(M * N[0]) * sizeof *rr);
    for (int64_t i = 0; i < M * N[0]; i++) rr[i] = res[i] + yr[0][i];
    lmc_linear_fwd_res(be, &L[0], acc, acc, x, M, tmp);
    lmc_linear_fwd_res(be, &L[0], out, res, x, M, tmp);
    CHECK_MSG(max_rel(acc, rr, M * N[0]) < 1e-5, "%s residual in place", label);
    CHECK_MSG(max_rel(out, rr, M * N[0]) < 1e-5, "%s residual out of place", label);
    /* SwiGLU of linears 1 (no bias) and 2 (bias), and of two unbiased ones */
    for (int biased = 0; biased < 2; biased++) {
        struct lmc_linear G = L[1], U = L[2];
        if (!biased) U.bias = NULL;
        double *ur = ref_fwd(x, w[2], biased ? b[2] : NULL, M, N[2], K);
        float *sy = zvec(M * N[1]), *st = zvec(M * N[1]);
        lmc_linear_fwd_swiglu(be, &G, &U, sy, x, M, st);
        double *sr = malloc((size_t)(M * N[1]) * sizeof *sr);
        for (int64_t i = 0; i < M * N[1]; i++) sr[i] = yr[1][i] / (1 + exp(-yr[1][i])) * ur[i];
        CHECK_MSG(max_rel(sy, sr, M * N[1]) < 1e-5, "%s swiglu (%s)", label, biased ? "bias" : "no bias");
        free(ur), free(sy), free(st), free(sr);
    }
    /* backward of the three: dx (= then +=), dW +=, db += */
    float *dy[3], *dw[3], *db[3];
    for (int i = 0; i < 3; i++) {
        dy[i] = rvec(M * N[i]);
        dw[i] = rvec(N[i] * K); /* += onto non-zero */
        db[i] = i == 1 ? NULL : rvec(N[i]);
        memset(&D[i], 0, sizeof D[i]);
        D[i].w = (struct lmc_mat){LMC_DTYPE_F32, N[i], K, dw[i]};
        D[i].bias = db[i];
    }
    double *dwr[3], *dbr[3], *dxr = calloc((size_t)(M * K), sizeof(double));
    float *dx0 = rvec(M * K);
    for (int64_t i = 0; i < M * K; i++) dxr[i] = dx0[i]; /* += onto dx0 */
    for (int i = 0; i < 3; i++) {
        dwr[i] = malloc((size_t)(N[i] * K) * sizeof(double));
        dbr[i] = malloc((size_t)N[i] * sizeof(double));
        for (int64_t n = 0; n < N[i]; n++) {
            dbr[i][n] = db[i] ? db[i][n] : 0;
            for (int64_t k = 0; k < K; k++) {
                double s = dw[i][n * K + k];
                for (int64_t m = 0; m < M; m++) s += (double)dy[i][m * N[i] + n] * x[m * K + k];
                dwr[i][n * K + k] = s;
            }
            for (int64_t m = 0; m < M; m++) dbr[i][n] += dy[i][m * N[i] + n];
        }
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0;
                for (int64_t n = 0; n < N[i]; n++) s += (double)dy[i][m * N[i] + n] * w[i][n * K + k];
                dxr[m * K + k] += s;
            }
    }
    const struct lmc_linear *Dp[3] = {&D[0], &D[1], &D[2]};
    const float *dyc[3] = {dy[0], dy[1], dy[2]};
    lmc_linear_bwd(be, 3, Lp, Dp, dx0, dyc, x, M, true);
    CHECK_MSG(max_rel(dx0, dxr, M * K) < 1e-5, "%s bwd dx +=: %.3e", label, max_rel(dx0, dxr, M * K));
    for (int i = 0; i < 3; i++) {
        CHECK_MSG(max_rel(dw[i], dwr[i], N[i] * K) < 1e-5, "%s bwd dW %d", label, i);
        if (db[i]) CHECK_MSG(max_rel(db[i], dbr[i], N[i]) < 1e-5, "%s bwd db %d", label, i);
    }
    /* dx = (overwrite), without the dW/db of the middle one */
    float *dx1 = rvec(M * K);
    const struct lmc_linear *Dq[3] = {&D[0], NULL, &D[2]};
    lmc_linear_bwd(be, 3, Lp, Dq, dx1, dyc, x, M, false);
    double *pure = calloc((size_t)(M * K), sizeof(double));
    for (int i = 0; i < 3; i++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0;
                for (int64_t n = 0; n < N[i]; n++) s += (double)dy[i][m * N[i] + n] * w[i][n * K + k];
                pure[m * K + k] += s;
            }
    CHECK_MSG(max_rel(dx1, pure, M * K) < 1e-5, "%s bwd dx =: %.3e", label, max_rel(dx1, pure, M * K));
    for (int i = 0; i < 3; i++) {
        free(w[i]), free(b[i]), free(y[i]), free(yr[i]), free(dy[i]), free(dw[i]), free(db[i]);
        free(dwr[i]), free(dbr[i]);
    }
    free(x), free(res), free(acc), free(tmp), free(out), free(rr), free(dxr), free(dx0), free(dx1);
    free(pure);
}

/* Stand-ins for matmul_add / matmul_swiglu built from the CPU matmul (the
 * CPU table's own fused entries are tested in test_ops_cpu) check that
 * lmc_linear routes to them (counted) and what it passes. */
static const struct lmc_backend *cpu;
static int n_add, n_swiglu;
static void add_standin(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                        const float *bias) {
    float *t = malloc((size_t)(M * w->rows) * sizeof *t);
    cpu->matmul(ctx, t, x, M, w, bias);
    for (int64_t i = 0; i < M * w->rows; i++) y[i] += t[i];
    free(t);
    n_add++;
}
static void swiglu_standin(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *g,
                           const struct lmc_mat *u) {
    float *t = malloc((size_t)(M * u->rows) * sizeof *t);
    cpu->matmul(ctx, y, x, M, g, NULL);
    cpu->matmul(ctx, t, x, M, u, NULL);
    for (int64_t i = 0; i < M * u->rows; i++) y[i] = y[i] / (1.0f + expf(-y[i])) * t[i];
    free(t);
    n_swiglu++;
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) return 1;
    CHECK(be.matmul_multi && be.matmul_bwd_multi);
    cpu = &be;
    struct lmc_backend fused = be;
    fused.matmul_add = add_standin;
    fused.matmul_swiglu = swiglu_standin;
    run(&fused, "fused");
    CHECK_MSG(n_add == 1 && n_swiglu == 1, "fused entries used: add %d (1: in place only), swiglu %d "
              "(1: without biases only)", n_add, n_swiglu);
    struct lmc_backend plain = be;
    plain.matmul_multi = NULL;
    plain.matmul_add = NULL;
    plain.matmul_swiglu = NULL;
    plain.matmul_bwd_multi = NULL;
    run(&plain, "plain");
    lmc_backend_cpu_free(&be);
    return test_finish("test_linear");
}
