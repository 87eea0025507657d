/* test_train_ops_cuda.c — the CUDA backend's training ops against their
 * CPU twins on random non-zero inputs of odd sizes (both tables called on
 * the same inputs): matmul_bwd, embed_bwd, rmsnorm_bwd, layernorm_bwd,
 * rope_bwd, swiglu_bwd, gelu_bwd, classifier_xent, zero, sumsq, adamw, and
 * the forward matmul entries with F32 weights in the bf16 training mode.
 * "=" outputs are poisoned (NaN) first, so unwritten elements fail; "+="
 * outputs start from random values, so accumulation is checked. fp32 mode:
 * relative error <= 1e-5 (max|a-b| / max|b|); bf16 training mode
 * (lmc_backend_cuda_set_train_bf16): <= 2e-2 for the GEMM ops. embed_bwd
 * is bit-equal to the CPU (same additions in the same order); sumsq within
 * 1e-12 and the same bits on two calls; adamw bit-equal to the formula
 * evaluated on the host without FMA contraction (the CPU op, compiled with
 * GCC's default -ffp-contract=fast, may fuse: its difference is printed and
 * bounded relative to the values' scale). Prints "skipped: no CUDA device"
 * and passes when the build has no CUDA or the machine no GPU.
 * Usage: test_train_ops_cuda */
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#include "test.h"

#include <stdlib.h>

#ifdef LMC_HAVE_CUDA

#define TEST_CUDA_SEED 4242
#include "test_cuda.h"

enum { E_MM_BWD, E_MM_BWD_BF16, E_MM_FWD_BF16, E_EMBED, E_RMS, E_LN, E_ROPE, E_SWIGLU, E_GELU,
       E_XENT_LOSS, E_XENT_GRAD, E_XENT_LOSS_BF16, E_XENT_GRAD_BF16, E_SUMSQ, E_ADAMW_CPU, E_N };
static const char *err_names[E_N] = {
    "matmul_bwd f32",        "matmul_bwd bf16",        "matmul fwd bf16 (F32 w)",
    "embed_bwd",             "rmsnorm_bwd",            "layernorm_bwd",
    "rope_bwd",              "swiglu_bwd",             "gelu_bwd",
    "classifier_xent loss",  "classifier_xent grads",  "classifier_xent loss bf16",
    "classifier_xent grads bf16", "sumsq",             "adamw vs cpu op (scaled)"};
static double max_err[E_N];
static void record(int op, double e) {
    if (e > max_err[op] || e != e) max_err[op] = e;
}

static float *copy_f(const float *a, int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(p, a, (size_t)n * sizeof(float));
    return p;
}

/* max|a-b| / max|b| (NaN anywhere gives NaN) */
static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d || a[i] != a[i]) return NAN;
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

/* downloads d (n floats), compares with the CPU's ref, records, frees the host copy */
static double cmp(int op, const float *d, const float *ref, int64_t n, double tol, const char *what) {
    float *h = down(d, n);
    double e = rel_err(h, ref, n);
    record(op, e);
    CHECK_MSG(e <= tol, "%s: rel err %g (tol %g)", what, e, tol);
    free(h);
    return e;
}

/* ---- matmul_bwd and the forward entries in the bf16 training mode ---- */
static void test_matmul_bwd(void) {
    static const int64_t shapes[][3] = {{37, 83, 61}, {1, 17, 9}, {300, 257, 129}, {9, 64, 48}};
    for (int bf = 0; bf < 2; bf++) {
        lmc_backend_cuda_set_train_bf16(&gpu, bf);
        double tol = bf ? 2e-2 : 1e-5;
        int op = bf ? E_MM_BWD_BF16 : E_MM_BWD;
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int64_t M = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
            float *w = rand_f(N * K, 1.0f), *x = rand_f(M * K, 1.0f), *dy = rand_f(M * N, 1.0f);
            float *w_d = upf(w, N * K), *x_d = upf(x, M * K), *dy_d = upf(dy, M * N);
            struct lmc_mat wc = {LMC_DTYPE_F32, N, K, w}, wg = {LMC_DTYPE_F32, N, K, w_d};
            for (int variant = 0; variant < 4; variant++) {
                /* 0: all, accum_dx 0; 1: all, accum_dx 1; 2: dx only; 3: dw, db only */
                int accum = variant == 1;
                bool want_dx = variant != 3, want_dwb = variant != 2;
                float *dx0 = rand_f(M * K, 1.0f), *dw0 = rand_f(N * K, 1.0f), *db0 = rand_f(N, 1.0f);
                float *dx_c = copy_f(dx0, M * K), *dw_c = copy_f(dw0, N * K), *db_c = copy_f(db0, N);
                float *dx_d = accum ? upf(dx0, M * K) : dev_poison(M * K);
                float *dw_d = upf(dw0, N * K), *db_d = upf(db0, N);
                cpu.matmul_bwd(cpu.ctx, want_dx ? dx_c : NULL, want_dwb ? dw_c : NULL,
                               want_dwb ? db_c : NULL, dy, x, M, &wc, accum);
                gpu.matmul_bwd(gpu.ctx, want_dx ? dx_d : NULL, want_dwb ? dw_d : NULL,
                               want_dwb ? db_d : NULL, dy_d, x_d, M, &wg, accum);
                char what[160];
                snprintf(what, sizeof what, "matmul_bwd %s M=%lld K=%lld N=%lld variant %d",
                         bf ? "bf16" : "f32", (long long)M, (long long)K, (long long)N, variant);
                if (want_dx) cmp(op, dx_d, dx_c, M * K, tol, what);
                cmp(op, dw_d, dw_c, N * K, tol, what); /* unchanged when skipped */
                /* db is a plain f32 column sum in both modes */
                cmp(E_MM_BWD, db_d, db_c, N, 1e-5, what);
                free(dx0), free(dw0), free(db0), free(dx_c), free(dw_c), free(db_c);
                dfree(dx_d), dfree(dw_d), dfree(db_d);
            }
            /* the forward entries with F32 weights (M > 8 runs the GEMM path) */
            float *bias = rand_f(N, 1.0f), *bias_d = upf(bias, N);
            float *yc = rand_f(M * N, 1.0f), *y_d = dev_poison(M * N);
            cpu.matmul(cpu.ctx, yc, x, M, &wc, bias);
            gpu.matmul(gpu.ctx, y_d, x_d, M, &wg, bias_d);
            int fop = bf && M > 8 ? E_MM_FWD_BF16 : E_MM_BWD;
            double ftol = bf && M > 8 ? 2e-2 : 1e-5;
            cmp(fop, y_d, yc, M * N, ftol, "matmul fwd (F32 weights)");
            float *acc0 = rand_f(M * N, 1.0f), *acc_c = copy_f(acc0, M * N);
            float *acc_d = upf(acc0, M * N);
            /* the CPU backend has no fused entries: the reference composes plain ops */
            float *tmp = malloc((size_t)(M * N) * sizeof(float));
            cpu.matmul(cpu.ctx, tmp, x, M, &wc, bias);
            for (int64_t i = 0; i < M * N; i++) acc_c[i] += tmp[i];
            gpu.matmul_add(gpu.ctx, acc_d, x_d, M, &wg, bias_d);
            cmp(fop, acc_d, acc_c, M * N, ftol, "matmul_add fwd (F32 weights)");
            /* matmul_multi over two weights of different N, and matmul_swiglu */
            float *w2 = rand_f(N * K, 1.0f), *w2_d = upf(w2, N * K);
            struct lmc_mat w2c = {LMC_DTYPE_F32, N - 1, K, w2}, w2g = {LMC_DTYPE_F32, N - 1, K, w2_d};
            const struct lmc_mat *wcs[2] = {&wc, &w2c}, *wgs[2] = {&wg, &w2g};
            float *y2c = rand_f(M * N, 1.0f), *y2_d = dev_poison(M * (N - 1));
            float *ycs[2] = {yc, y2c}, *yds[2] = {y_d, y2_d};
            cpu.matmul_multi(cpu.ctx, 2, ycs, x, M, wcs, NULL);
            gpu.matmul_multi(gpu.ctx, 2, yds, x_d, M, wgs, NULL);
            cmp(fop, y_d, yc, M * N, ftol, "matmul_multi [0] (F32 weights)");
            cmp(fop, y2_d, y2c, M * (N - 1), ftol, "matmul_multi [1] (F32 weights)");
            struct lmc_mat w3c = {LMC_DTYPE_F32, N, K, w2}, w3g = {LMC_DTYPE_F32, N, K, w2_d};
            cpu.matmul(cpu.ctx, yc, x, M, &wc, NULL);
            cpu.matmul(cpu.ctx, tmp, x, M, &w3c, NULL);
            cpu.swiglu(cpu.ctx, yc, yc, tmp, M * N);
            gpu.matmul_swiglu(gpu.ctx, y_d, x_d, M, &wg, &w3g);
            cmp(fop, y_d, yc, M * N, ftol, "matmul_swiglu (F32 weights)");
            free(bias), free(yc), free(acc0), free(acc_c), free(w2), free(y2c), free(tmp);
            dfree(bias_d), dfree(y_d), dfree(acc_d), dfree(w2_d), dfree(y2_d);
            free(w), free(x), free(dy);
            dfree(w_d), dfree(x_d), dfree(dy_d);
        }
    }
    lmc_backend_cuda_set_train_bf16(&gpu, false);
}

/* ---- embed_bwd: bit-equal (same additions in the same order) ---- */
static void test_embed_bwd(void) {
    static const int64_t cases[][3] = {{37, 75, 50}, {5000, 300, 7}, {1, 1031, 3}, {777, 33, 2000}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        int64_t n = cases[ci][0], C = cases[ci][1], rows = cases[ci][2];
        int32_t *ids = malloc((size_t)n * sizeof *ids);
        for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)rows);
        float *dy = rand_f(n * C, 1.0f), *t0 = rand_f(rows * C, 1.0f), *tc = copy_f(t0, rows * C);
        float *dy_d = upf(dy, n * C), *t_d = upf(t0, rows * C);
        int32_t *ids_d = up(ids, (size_t)n * sizeof *ids);
        cpu.embed_bwd(cpu.ctx, tc, dy, ids, n, C);
        gpu.embed_bwd(gpu.ctx, t_d, dy_d, ids_d, n, C);
        float *tg = down(t_d, rows * C);
        double e = rel_err(tg, tc, rows * C);
        record(E_EMBED, e);
        CHECK_MSG(memcmp(tg, tc, (size_t)(rows * C) * sizeof(float)) == 0,
                  "embed_bwd n=%lld C=%lld rows=%lld: not bit-equal (rel err %g)", (long long)n,
                  (long long)C, (long long)rows, e);
        free(ids), free(dy), free(t0), free(tc), free(tg);
        dfree(dy_d), dfree(t_d), dfree(ids_d);
    }
}

/* ---- rmsnorm_bwd, layernorm_bwd ---- */
static void test_norms_bwd(void) {
    static const int64_t cases[][2] = {{37, 75}, {300, 1031}, {1, 4096}, {513, 7}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        int64_t M = cases[ci][0], C = cases[ci][1];
        float *x = rand_f(M * C, 2.0f), *dy = rand_f(M * C, 1.0f), *w = rand_f(C, 1.0f);
        for (int64_t i = 0; i < M * C; i++) x[i] += 0.3f; /* a mean for layernorm */
        float *x_d = upf(x, M * C), *dy_d = upf(dy, M * C), *w_d = upf(w, C);
        float *dx0 = rand_f(M * C, 1.0f), *dw0 = rand_f(C, 1.0f), *db0 = rand_f(C, 1.0f);
        char what[96];
        for (int with_dw = 0; with_dw < 2; with_dw++) {
            float *dx_c = copy_f(dx0, M * C), *dw_c = copy_f(dw0, C);
            float *dx_d = upf(dx0, M * C), *dw_d = upf(dw0, C);
            cpu.rmsnorm_bwd(cpu.ctx, dx_c, with_dw ? dw_c : NULL, dy, x, w, M, C, 1e-5f);
            gpu.rmsnorm_bwd(gpu.ctx, dx_d, with_dw ? dw_d : NULL, dy_d, x_d, w_d, M, C, 1e-5f);
            snprintf(what, sizeof what, "rmsnorm_bwd M=%lld C=%lld dw=%d", (long long)M,
                     (long long)C, with_dw);
            cmp(E_RMS, dx_d, dx_c, M * C, 1e-5, what);
            cmp(E_RMS, dw_d, dw_c, C, 1e-5, what);
            free(dx_c), free(dw_c);
            dfree(dx_d), dfree(dw_d);
        }
        for (int v = 0; v < 3; v++) { /* 0: dw and db, 1: dw only, 2: db only */
            float *dx_c = copy_f(dx0, M * C), *dw_c = copy_f(dw0, C), *db_c = copy_f(db0, C);
            float *dx_d = upf(dx0, M * C), *dw_d = upf(dw0, C), *db_d = upf(db0, C);
            float *dwc = v == 2 ? NULL : dw_c, *dbc = v == 1 ? NULL : db_c;
            float *dwg = v == 2 ? NULL : dw_d, *dbg = v == 1 ? NULL : db_d;
            cpu.layernorm_bwd(cpu.ctx, dx_c, dwc, dbc, dy, x, w, M, C, 1e-5f);
            gpu.layernorm_bwd(gpu.ctx, dx_d, dwg, dbg, dy_d, x_d, w_d, M, C, 1e-5f);
            snprintf(what, sizeof what, "layernorm_bwd M=%lld C=%lld variant %d", (long long)M,
                     (long long)C, v);
            cmp(E_LN, dx_d, dx_c, M * C, 1e-5, what);
            cmp(E_LN, dw_d, dw_c, C, 1e-5, what);
            cmp(E_LN, db_d, db_c, C, 1e-5, what);
            free(dx_c), free(dw_c), free(db_c);
            dfree(dx_d), dfree(dw_d), dfree(db_d);
        }
        free(x), free(dy), free(w), free(dx0), free(dw0), free(db0);
        dfree(x_d), dfree(dy_d), dfree(w_d);
    }
}

/* ---- rope_bwd ---- */
static void test_rope_bwd(void) {
    static const int64_t cases[][4] = {{37, 3, 26, 20}, {5, 4, 64, 64}, {129, 2, 80, 32}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        int64_t M = cases[ci][0], nh = cases[ci][1], hd = cases[ci][2], rot = cases[ci][3];
        int64_t n = M * nh * hd;
        int32_t *pos = malloc((size_t)M * sizeof *pos);
        for (int64_t m = 0; m < M; m++) pos[m] = (int32_t)(test_rng_next(&rng) % 5000);
        double *inv = malloc((size_t)(rot / 2) * sizeof *inv);
        for (int64_t i = 0; i < rot / 2; i++) inv[i] = pow(10000.0, -2.0 * (double)i / (double)rot);
        float *dx = rand_f(n, 1.0f), *dx_d = upf(dx, n);
        int32_t *pos_d = up(pos, (size_t)M * sizeof *pos);
        double *inv_d = up(inv, (size_t)(rot / 2) * sizeof *inv);
        cpu.rope_bwd(cpu.ctx, dx, M, nh, hd, rot, pos, inv, 1.1f);
        gpu.rope_bwd(gpu.ctx, dx_d, M, nh, hd, rot, pos_d, inv_d, 1.1f);
        cmp(E_ROPE, dx_d, dx, n, 1e-5, "rope_bwd");
        free(pos), free(inv), free(dx);
        dfree(dx_d), dfree(pos_d), dfree(inv_d);
    }
}

/* ---- swiglu_bwd, gelu_bwd ---- */
static void test_elementwise_bwd(void) {
    int64_t n = 1031 * 3;
    float *dy = rand_f(n, 1.0f), *g = rand_f(n, 6.0f), *u = rand_f(n, 2.0f);
    float *dy_d = upf(dy, n), *g_d = upf(g, n), *u_d = upf(u, n);
    float *dgc = malloc((size_t)n * 4), *duc = malloc((size_t)n * 4);
    cpu.swiglu_bwd(cpu.ctx, dgc, duc, dy, g, u, n);
    float *dg_d = dev_poison(n), *du_d = dev_poison(n);
    gpu.swiglu_bwd(gpu.ctx, dg_d, du_d, dy_d, g_d, u_d, n);
    cmp(E_SWIGLU, dg_d, dgc, n, 1e-5, "swiglu_bwd dgate");
    cmp(E_SWIGLU, du_d, duc, n, 1e-5, "swiglu_bwd dup");
    /* dgate aliasing dy */
    float *dy2_d = upf(dy, n);
    gpu.swiglu_bwd(gpu.ctx, dy2_d, du_d, dy2_d, g_d, u_d, n);
    cmp(E_SWIGLU, dy2_d, dgc, n, 1e-5, "swiglu_bwd dgate aliasing dy");
    cmp(E_SWIGLU, du_d, duc, n, 1e-5, "swiglu_bwd dup (dgate aliasing dy)");
    for (int t = 0; t < 2; t++) {
        float *dxc = malloc((size_t)n * 4), *dx_d = dev_poison(n);
        cpu.gelu_bwd(cpu.ctx, dxc, dy, g, n, t);
        gpu.gelu_bwd(gpu.ctx, dx_d, dy_d, g_d, n, t);
        cmp(E_GELU, dx_d, dxc, n, 1e-5, t ? "gelu_bwd tanh" : "gelu_bwd erf");
        dfree(dy2_d);
        dy2_d = upf(dy, n);
        gpu.gelu_bwd(gpu.ctx, dy2_d, dy2_d, g_d, n, t); /* dx aliasing dy */
        cmp(E_GELU, dy2_d, dxc, n, 1e-5, "gelu_bwd in place");
        free(dxc);
        dfree(dx_d);
    }
    free(dy), free(g), free(u), free(dgc), free(duc);
    dfree(dy_d), dfree(g_d), dfree(u_d), dfree(dg_d), dfree(du_d), dfree(dy2_d);
}

/* ---- classifier_xent ---- */
static void test_classifier_xent(void) {
    /* the last case has more logits than one GPU block (2^25): several blocks */
    static const int64_t cases[][3] = {{37, 75, 1031}, {3, 16, 5}, {577, 45, 65537}};
    for (int bf = 0; bf < 2; bf++) {
        lmc_backend_cuda_set_train_bf16(&gpu, bf);
        double tol = bf ? 2e-2 : 1e-5;
        int el = bf ? E_XENT_LOSS_BF16 : E_XENT_LOSS, eg = bf ? E_XENT_GRAD_BF16 : E_XENT_GRAD;
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
            int64_t M = cases[ci][0], C = cases[ci][1], V = cases[ci][2];
            float *h = rand_f(M * C, 1.0f), *w = rand_f(V * C, 0.5f);
            int32_t *tg = malloc((size_t)M * sizeof *tg);
            for (int64_t m = 0; m < M; m++)
                tg[m] = m % 7 == 3 ? -1 : (int32_t)(test_rng_next(&rng) % (uint64_t)V);
            tg[M - 1] = (int32_t)(V - 1);
            float *h_d = upf(h, M * C), *w_d = upf(w, V * C);
            int32_t *tg_d = up(tg, (size_t)M * sizeof *tg);
            struct lmc_mat wc = {LMC_DTYPE_F32, V, C, w}, wg = {LMC_DTYPE_F32, V, C, w_d};
            float dscale = 1.0f / 29.0f;
            for (int v = 0; v < 3; v++) { /* 0: loss, dh, dw; 1: loss, dh; 2: loss only */
                float *dw0 = rand_f(V * C, 0.01f), *dw_c = copy_f(dw0, V * C), *dw_d = upf(dw0, V * C);
                float *loss_c = malloc((size_t)M * 4), *dh_c = malloc((size_t)(M * C) * 4);
                float *loss_d = dev_poison(M), *dh_d = dev_poison(M * C);
                cpu.classifier_xent(cpu.ctx, loss_c, v < 2 ? dh_c : NULL, v == 0 ? dw_c : NULL, h,
                                    &wc, tg, M, dscale);
                gpu.classifier_xent(gpu.ctx, loss_d, v < 2 ? dh_d : NULL, v == 0 ? dw_d : NULL,
                                    h_d, &wg, tg_d, M, dscale);
                char what[128];
                snprintf(what, sizeof what, "classifier_xent %s M=%lld C=%lld V=%lld variant %d",
                         bf ? "bf16" : "f32", (long long)M, (long long)C, (long long)V, v);
                float *lg = down(loss_d, M);
                int bad_masked = 0;
                for (int64_t m = 0; m < M; m++) bad_masked += tg[m] < 0 && lg[m] != 0.0f;
                CHECK_MSG(bad_masked == 0, "%s: %d masked rows with non-zero loss", what, bad_masked);
                free(lg);
                cmp(el, loss_d, loss_c, M, tol, what);
                if (v < 2) {
                    cmp(eg, dh_d, dh_c, M * C, tol, what);
                    float *dhg = down(dh_d, M * C);
                    int bad = 0; /* masked rows: zero gradient */
                    for (int64_t m = 0; m < M; m++)
                        for (int64_t k = 0; k < C && tg[m] < 0; k++) bad += dhg[m * C + k] != 0.0f;
                    CHECK_MSG(bad == 0, "%s: masked rows with non-zero dh", what);
                    free(dhg);
                }
                cmp(eg, dw_d, dw_c, V * C, tol, what); /* unchanged unless v == 0 */
                free(dw0), free(dw_c), free(loss_c), free(dh_c);
                dfree(dw_d), dfree(loss_d), dfree(dh_d);
            }
            free(h), free(w), free(tg);
            dfree(h_d), dfree(w_d), dfree(tg_d);
        }
    }
    lmc_backend_cuda_set_train_bf16(&gpu, false);
}

/* ---- zero, sumsq ---- */
static void test_zero_sumsq(void) {
    int64_t n = 1031;
    float *a = rand_f(n, 1.0f), *a_d = upf(a, n);
    gpu.zero(gpu.ctx, a_d + 100, 500 * sizeof(float));
    float *b = down(a_d, n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += (i >= 100 && i < 600) ? b[i] != 0.0f : b[i] != a[i];
    CHECK_MSG(bad == 0, "zero: %d elements wrong", bad);
    free(a), free(b);
    dfree(a_d);
    static const int64_t ns[] = {37, 65536, 65537, 1000003, 3 * 65536 + 5};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
        float *x = rand_f(ns[i], 3.0f), *x_d = upf(x, ns[i]);
        double sc = cpu.sumsq(cpu.ctx, x, ns[i]);
        double s1 = gpu.sumsq(gpu.ctx, x_d, ns[i]), s2 = gpu.sumsq(gpu.ctx, x_d, ns[i]);
        double e = fabs(s1 - sc) / sc;
        record(E_SUMSQ, e);
        CHECK_MSG(e <= 1e-12, "sumsq n=%lld: %.17g vs cpu %.17g (rel %g)", (long long)ns[i], s1, sc, e);
        CHECK_MSG(memcmp(&s1, &s2, sizeof s1) == 0, "sumsq n=%lld: two calls differ: %.17g %.17g",
                  (long long)ns[i], s1, s2);
        free(x);
        dfree(x_d);
    }
    CHECK(gpu.sumsq(gpu.ctx, NULL, 0) == 0.0);
}

/* ---- adamw ---- */
/* The formula with every product rounded before it is added (volatile
 * stores keep GCC from contracting into FMAs). */
static void adamw_ref(float *p, const float *g, float *m, float *v, int64_t n,
                      const struct lmc_adamw_step *s) {
    for (int64_t i = 0; i < n; i++) {
        volatile float gi = g[i] * s->grad_scale, pi = p[i] * s->decay_mul;
        volatile float t1 = s->one_minus_b1 * (gi - m[i]);
        volatile float mi = m[i] + t1;
        volatile float t2 = v[i] * s->beta2, t3 = s->one_minus_b2 * gi;
        volatile float t4 = t3 * gi;
        volatile float vi = t2 + t4;
        volatile float sq = sqrtf(vi);
        volatile float denom = sq / s->bc2_sqrt + s->eps;
        volatile float q = mi / denom;
        volatile float t5 = s->step_size * q;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - t5;
    }
}

static int64_t ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4), memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    int64_t d = (int64_t)ia - ib;
    return d < 0 ? -d : d;
}

static void test_adamw(void) {
    int64_t n = 100003;
    for (int cfg = 0; cfg < 2; cfg++) {
        double lr = cfg ? 3e-4 : 1e-3, b1 = 0.9, b2 = cfg ? 0.95 : 0.999, eps = 1e-8, wd = 0.1;
        int64_t step = cfg ? 1 : 17;
        struct lmc_adamw_step s;
        s.step_size = (float)(lr / (1.0 - pow(b1, (double)step)));
        s.decay_mul = cfg ? 1.0f : (float)(1.0 - lr * wd);
        s.beta2 = (float)b2;
        s.one_minus_b1 = (float)(1.0 - b1);
        s.one_minus_b2 = (float)(1.0 - b2);
        s.bc2_sqrt = (float)sqrt(1.0 - pow(b2, (double)step));
        s.eps = (float)eps;
        s.grad_scale = cfg ? 1.0f : 0.37f;
        float *p = rand_f(n, 1.0f), *g = rand_f(n, 0.1f), *m = rand_f(n, 0.01f), *v = rand_f(n, 1e-4f);
        for (int64_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        if (cfg) /* the first step: zero moments, some tiny gradients */
            for (int64_t i = 0; i < n; i++) m[i] = 0, v[i] = 0, g[i] *= i % 5 == 0 ? 1e-20f : 1.0f;
        float *p_d = upf(p, n), *g_d = upf(g, n), *m_d = upf(m, n), *v_d = upf(v, n);
        float *pr = copy_f(p, n), *mr = copy_f(m, n), *vr = copy_f(v, n);
        float *pc = copy_f(p, n), *mc = copy_f(m, n), *vc = copy_f(v, n);
        adamw_ref(pr, g, mr, vr, n, &s);
        cpu.adamw(cpu.ctx, pc, g, mc, vc, n, &s);
        gpu.adamw(gpu.ctx, p_d, g_d, m_d, v_d, n, &s);
        float *pg = down(p_d, n), *mg = down(m_d, n), *vg = down(v_d, n), *gg = down(g_d, n);
        CHECK_MSG(memcmp(pg, pr, (size_t)n * 4) == 0 && memcmp(mg, mr, (size_t)n * 4) == 0 &&
                      memcmp(vg, vr, (size_t)n * 4) == 0,
                  "adamw cfg %d: not bit-equal to the uncontracted formula", cfg);
        CHECK_MSG(memcmp(gg, g, (size_t)n * 4) == 0, "adamw modified g");
        int64_t ulp[3] = {0, 0, 0};
        double se = 0;
        const float *gv[3] = {pg, mg, vg}, *cv[3] = {pc, mc, vc};
        for (int k = 0; k < 3; k++) {
            for (int64_t i = 0; i < n; i++) ulp[k] = LMC_MAX(ulp[k], ulp_diff(gv[k][i], cv[k][i]));
            double e = rel_err(gv[k], cv[k], n);
            se = e > se || e != e ? e : se;
        }
        record(E_ADAMW_CPU, se);
        printf("  adamw cfg %d vs the CPU op: max ulp p %lld, m %lld, v %lld (0 unless the C "
               "compiler contracted FMAs)\n", cfg, (long long)ulp[0], (long long)ulp[1],
               (long long)ulp[2]);
        CHECK_MSG(se <= 1e-6, "adamw cfg %d vs cpu op: rel err %g", cfg, se);
        free(p), free(g), free(m), free(v), free(pr), free(mr), free(vr), free(pc), free(mc), free(vc);
        free(pg), free(mg), free(vg), free(gg);
        dfree(p_d), dfree(g_d), dfree(m_d), dfree(v_d);
    }
}

int main(void) {
    if (lmc_cuda_device_count() == 0) {
        printf("test_train_ops_cuda: skipped: no CUDA device\n");
        return 0;
    }
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 0, &err) || lmc_backend_cuda_init(&gpu, 0, &err)) {
        fprintf(stderr, "backend init: %s\n", err.msg);
        return 1;
    }
    CHECK(gpu.matmul_bwd && gpu.embed_bwd && gpu.rmsnorm_bwd && gpu.layernorm_bwd && gpu.rope_bwd &&
          gpu.swiglu_bwd && gpu.gelu_bwd && gpu.classifier_xent && gpu.zero && gpu.sumsq &&
          gpu.adamw);
    test_matmul_bwd();
    test_embed_bwd();
    test_norms_bwd();
    test_rope_bwd();
    test_elementwise_bwd();
    test_classifier_xent();
    test_zero_sumsq();
    test_adamw();
    for (int i = 0; i < E_N; i++) printf("  max rel err %-28s %.3g\n", err_names[i], max_err[i]);
    lmc_backend_cuda_free(&gpu);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_train_ops_cuda");
}

#else

int main(void) {
    printf("test_train_ops_cuda: skipped: no CUDA device (built without CUDA)\n");
    return lmc_cuda_device_count() == 0 ? 0 : 1;
}

#endif
