/* test_gemm_bf16.c — the CPU's bf16 training GEMM (ops/cpu/gemm_bf16.c)
 * and the backend's bf16 training mode (lmc_backend_cpu_set_train_bf16).
 *  - the kernel, in all four transpositions of A and B, odd M/N/K (several
 *    K blocks, N blocks and M blocks, edge tiles), = and +=, against a
 *    float64 sum of the bf16-rounded operands' products: the only error
 *    left is f32 summation, bounded by K * 2^-24 * sum |products| (with the
 *    AVX512-BF16 kernel where the CPU has it, and the portable one); with
 *    B packed once beforehand (lmc_cpu_gemm_bf16_pb), the same bits;
 *  - the backend ops in the bf16 mode (matmul, matmul_multi, matmul_bwd,
 *    matmul_bwd_multi, classifier_xent) against the same float64 reference
 *    of the rounded operands (the classifier, whose logits' gradient is
 *    itself a computed value, against the exact float64 one within the
 *    CUDA bf16 GEMM tolerance 2e-2), and bit-identical for 1 and 2 threads;
 *  - lmc_linear_fwd_f32 / lmc_linear_bwd_f32 (MoE routers) keep f32
 *    products in the bf16 mode (float64 reference of the unrounded
 *    operands);
 *  - the backward with every N_i a multiple of 8, where the dx tasks pack
 *    dy^T for dw: dw the bits of one GEMM call, dx within bound, 1 and 2
 *    threads the same bits (test_bwd_prepacked);
 *  - off again: the fp32 ops are back;
 *  - where AMX-BF16 runs (lmc_cpu_has_amx: AMX present and LMC_CPU_AMX=1;
 *    skipped, saying so, elsewhere): the AMX kernel and the AVX512-BF16 one
 *    (lmc_cpu_gemm_bf16_noamx) each within the bound of the float64 sum,
 *    odd M/N/K, all transpositions, = and +=; on any kernel: a row's bits
 *    do not depend on the rows around it (a sub-block of rows gives the
 *    same bits), and an inf in A or a NaN in B reaches only its own row or
 *    column (no padding or neighbour leaks into other outputs). */
#include "test_bf16.h"
#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_amx.h"
#include "model/linear.h"

#include <stdlib.h>

static uint64_t rng = 777;

static void test_kernel(int portable) {
    static const int64_t shapes[][3] = {{1, 1, 1},    {7, 33, 5},    {9, 31, 2},     {13, 45, 771},
                                        {101, 803, 37}, {97, 65, 389}, {200, 40, 1001}, {3, 1, 4097},
                                        {64, 48, 48},   {24, 48, 77}}; /* a head's 48 = 32 + 16 columns */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    struct test_gemm_case g = test_gemm_case_new(&rng, M, N, K, ta, tb, N + 3);
                    void *ws = test_alloc64_words(lmc_cpu_gemm_bf16_ws(M, N, K));
                    (portable ? lmc_cpu_gemm_bf16_portable : lmc_cpu_gemm_bf16)(M, N, K, g.A, g.a_sm, g.a_sk, g.B,
                                                                                g.b_sk, g.b_sn, g.C, g.ldc, acc, ws);
                    double e = test_gemm_case_err(&g, g.C, acc);
                    CHECK_MSG(e <= 1.0, "%s M %lld N %lld K %lld ta %d tb %d accum %d: err/bound %.3g",
                              portable ? "portable" : "native", (long long)M, (long long)N, (long long)K,
                              ta, tb, acc, e);
                    CHECK(test_gemm_case_pad_same(&g, g.C)); /* the padding columns of C untouched */
                    if (!portable) { /* B packed once (in two panel ranges): the same bits */
                        size_t bw = lmc_cpu_gemm_bf16_bpack_words(N, K);
                        int64_t np = lmc_cpu_gemm_bf16_bpack_panels(N, K);
                        uint32_t *bp = test_alloc64_words(bw);
                        float *C2 = malloc((size_t)(M * g.ldc) * sizeof *C2);
                        memcpy(C2, g.C0, (size_t)(M * g.ldc) * sizeof *C2);
                        lmc_cpu_gemm_bf16_bpack(bp, N, K, g.B, g.b_sk, g.b_sn, 0, np / 2);
                        lmc_cpu_gemm_bf16_bpack(bp, N, K, g.B, g.b_sk, g.b_sn, np / 2, np);
                        lmc_cpu_gemm_bf16_pb(M, N, K, g.A, g.a_sm, g.a_sk, bp, C2, g.ldc, acc, ws);
                        CHECK_MSG(!memcmp(g.C, C2, (size_t)(M * g.ldc) * sizeof *C2),
                                  "pre-packed B: M %lld N %lld K %lld ta %d tb %d", (long long)M, (long long)N,
                                  (long long)K, ta, tb);
                        free(bp), free(C2);
                    }
                    test_gemm_case_free(&g), free(ws);
                }
    }
}

/* B (K, N) stored with strides (b_sk, b_sn), packed whole */
static uint32_t *packed(const float *B, int64_t N, int64_t K, int64_t b_sk, int64_t b_sn) {
    uint32_t *bp = test_alloc64_words(lmc_cpu_gemm_bf16_bpack_words(N, K));
    lmc_cpu_gemm_bf16_bpack(bp, N, K, B, b_sk, b_sn, 0, lmc_cpu_gemm_bf16_bpack_panels(N, K));
    return bp;
}

/* lmc_cpu_gemm_bf16_terms: terms sharing A (q/k/v, gate/up: A packed once,
 * N over several N blocks) and terms summing into one C (dx: several K
 * blocks, a transposed A), odd sizes: the same bits as separate
 * lmc_cpu_gemm_bf16 calls, each product within the f32 summation bound of
 * a float64 sum of the bf16-rounded operands. */
static void test_terms(int portable) {
    static const int64_t Ms[] = {1, 13, 101, 200};
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
        for (int acc = 0; acc < 2; acc++) {
            int64_t M = Ms[mi], K = 37, N0 = 803, N1 = 45, Ka = 389, Kb = 771, Nc = 65;
            float *A = test_rand_vec(&rng, M * K, 1.0f), *B0 = test_rand_vec(&rng, K * N0, 1.0f),
                  *B1 = test_rand_vec(&rng, K * N1, 1.0f), *A2 = test_rand_vec(&rng, M * K, 1.0f);
            float *C2 = test_rand_vec(&rng, M * N1, 1.0f), *R2 = malloc((size_t)(M * N1) * 4);
            memcpy(R2, C2, (size_t)(M * N1) * 4);
            float *A0 = test_rand_vec(&rng, M * Ka, 1.0f), *A1 = test_rand_vec(&rng, Kb * M, 1.0f),
                  *D0 = test_rand_vec(&rng, Ka * Nc, 1.0f), *D1 = test_rand_vec(&rng, Kb * Nc, 1.0f);
            float *C0 = test_rand_vec(&rng, M * N0, 1.0f), *C1 = test_rand_vec(&rng, M * N1, 1.0f),
                  *Cc = test_rand_vec(&rng, M * Nc, 1.0f);
            float *R0 = malloc((size_t)(M * N0) * 4), *R1 = malloc((size_t)(M * N1) * 4), *Rc = malloc((size_t)(M * Nc) * 4);
            float *Cc0 = malloc((size_t)(M * Nc) * 4), *C00 = malloc((size_t)(M * N0) * 4), *Mid = malloc((size_t)(M * Nc) * 4);
            memcpy(R0, C0, (size_t)(M * N0) * 4), memcpy(R1, C1, (size_t)(M * N1) * 4);
            memcpy(Rc, Cc, (size_t)(M * Nc) * 4), memcpy(Cc0, Cc, (size_t)(M * Nc) * 4);
            memcpy(C00, C0, (size_t)(M * N0) * 4);
            /* B0 stored (N0, K) as a weight; D0 (Ka, Nc) and D1 (Kb, Nc) as dx's weights; A1 stored (Kb, M) */
            uint32_t *p0 = packed(B0, N0, K, 1, K), *p1 = packed(B1, N1, K, N1, 1);
            uint32_t *pd0 = packed(D0, Nc, Ka, Nc, 1), *pd1 = packed(D1, Nc, Kb, Nc, 1);
            size_t wsw = LMC_MAX(lmc_cpu_gemm_bf16_terms_ws(M, Kb), lmc_cpu_gemm_bf16_ws(M, N0, Kb));
            void *ws = test_alloc64_words(wsw);
            void (*g)(int64_t, int64_t, int64_t, const float *, int64_t, int64_t, const float *, int64_t, int64_t,
                      float *, int64_t, bool, void *) = portable ? lmc_cpu_gemm_bf16_portable : lmc_cpu_gemm_bf16;
            g(M, N0, K, A, K, 1, B0, 1, K, R0, N0, acc, ws);
            g(M, N1, K, A, K, 1, B1, N1, 1, R1, N1, acc, ws);
            g(M, N1, K, A2, K, 1, B1, N1, 1, R2, N1, acc, ws); /* the same shape, another A */
            g(M, Nc, Ka, A0, Ka, 1, D0, Nc, 1, Rc, Nc, acc, ws);
            memcpy(Mid, Rc, (size_t)(M * Nc) * 4);
            g(M, Nc, Kb, A1, 1, M, D1, Nc, 1, Rc, Nc, true, ws);
            struct lmc_gb_term t[5] = {
                {A, K, 1, K, p0, N0, C0, N0, acc},     {A, K, 1, K, p1, N1, C1, N1, acc},
                {A2, K, 1, K, p1, N1, C2, N1, acc},    {A0, Ka, 1, Ka, pd0, Nc, Cc, Nc, acc},
                {A1, 1, M, Kb, pd1, Nc, Cc, Nc, true}};
            (portable ? lmc_cpu_gemm_bf16_terms_portable : lmc_cpu_gemm_bf16_terms)(M, 5, t, ws);
            CHECK_MSG(!memcmp(C0, R0, (size_t)(M * N0) * 4) && !memcmp(C1, R1, (size_t)(M * N1) * 4) &&
                          !memcmp(C2, R2, (size_t)(M * N1) * 4) &&
                          !memcmp(Cc, Rc, (size_t)(M * Nc) * 4),
                      "%s terms M %lld accum %d: not the separate calls' bits", portable ? "portable" : "native",
                      (long long)M, acc);
            double e0 = test_bf16_gemm_err(M, N0, K, A, K, 1, B0, 1, K, C0, N0, acc ? C00 : NULL);
            double e1 = test_bf16_gemm_err(M, Nc, Ka, A0, Ka, 1, D0, Nc, 1, Mid, Nc, acc ? Cc0 : NULL);
            double e2 = test_bf16_gemm_err(M, Nc, Kb, A1, 1, M, D1, Nc, 1, Cc, Nc, Mid);
            CHECK_MSG(e0 <= 1.0 && e1 <= 1.0 && e2 <= 1.0, "terms M %lld accum %d: err/bound %.3g %.3g %.3g",
                      (long long)M, acc, e0, e1, e2);
            free(A), free(B0), free(B1), free(A0), free(A1), free(D0), free(D1), free(C0), free(C1), free(Cc);
            free(R0), free(R1), free(Rc), free(Cc0), free(C00), free(Mid), free(p0), free(p1), free(pd0), free(pd1);
            free(ws), free(A2), free(C2), free(R2);
        }
}

/* The rounding is real: on a product of values that bf16 cannot hold, the
 * result equals the rounded reference, not the f32 one. */
static void test_rounds(void) {
    float a[2] = {1.0f + 0x1p-12f, 3.0f}, b[2] = {1.0f, 0.0f}, c = 0;
    void *ws = test_alloc64_words(lmc_cpu_gemm_bf16_ws(1, 1, 2));
    lmc_cpu_gemm_bf16(1, 1, 2, a, 2, 1, b, 1, 1, &c, 1, false, ws);
    CHECK_MSG(c == 1.0f, "bf16(1 + 2^-12) * 1 = %.9g, expected 1", (double)c);
    free(ws);
}

/* ---- the backend ops in the bf16 mode ---- */
struct ops_out {
    float *y, *y2, *dx, *dw, *db, *dxm, *dwq, *dwk, *loss, *dh, *dwc;
};

static void run_ops(struct lmc_backend *be, int64_t M, int64_t N, int64_t K, int64_t N2, int64_t V,
                    const float *x, const float *w, const float *w2, const float *bias, const float *dy,
                    const float *dy2, const float *wc, const int32_t *tg, struct ops_out *o) {
    struct lmc_mat W = {LMC_DTYPE_F32, N, K, (void *)w}, W2 = {LMC_DTYPE_F32, N2, K, (void *)w2};
    struct lmc_mat WC = {LMC_DTYPE_F32, V, K, (void *)wc};
    be->matmul(be->ctx, o->y, x, M, &W, bias);
    const struct lmc_mat *ws[2] = {&W, &W2};
    float *ys[2] = {o->y2, o->y2 + M * N};
    const float *bs[2] = {bias, NULL};
    be->matmul_multi(be->ctx, 2, ys, x, M, ws, bs);
    memset(o->dw, 0, (size_t)(N * K) * 4);
    memset(o->db, 0, (size_t)N * 4);
    be->matmul_bwd(be->ctx, o->dx, o->dw, o->db, dy, x, M, &W, 0);
    memset(o->dwq, 0, (size_t)(N * K) * 4);
    memset(o->dwk, 0, (size_t)(N2 * K) * 4);
    float *dws[2] = {o->dwq, o->dwk}, *dbs[2] = {NULL, NULL};
    const float *dys[2] = {dy, dy2};
    for (int64_t i = 0; i < M * K; i++) o->dxm[i] = 0.25f; /* accumulated into */
    be->matmul_bwd_multi(be->ctx, 2, o->dxm, dws, dbs, dys, x, M, ws, 1);
    memset(o->dwc, 0, (size_t)(V * K) * 4);
    be->classifier_xent(be->ctx, o->loss, o->dh, o->dwc, x, &WC, tg, M, 1.0f / (float)M);
}

static void alloc_out(struct ops_out *o, int64_t M, int64_t N, int64_t K, int64_t N2, int64_t V) {
    o->y = malloc((size_t)(M * N) * 4);
    o->y2 = malloc((size_t)(M * (N + N2)) * 4);
    o->dx = malloc((size_t)(M * K) * 4);
    o->dw = malloc((size_t)(N * K) * 4);
    o->db = malloc((size_t)N * 4);
    o->dxm = malloc((size_t)(M * K) * 4);
    o->dwq = malloc((size_t)(N * K) * 4);
    o->dwk = malloc((size_t)(N2 * K) * 4);
    o->loss = malloc((size_t)M * 4);
    o->dh = malloc((size_t)(M * K) * 4);
    o->dwc = malloc((size_t)(V * K) * 4);
}
static void free_out(struct ops_out *o) {
    free(o->y), free(o->y2), free(o->dx), free(o->dw), free(o->db), free(o->dxm), free(o->dwq);
    free(o->dwk), free(o->loss), free(o->dh), free(o->dwc);
}
static int same_bits(const float *a, const float *b, int64_t n) { return !memcmp(a, b, (size_t)n * 4); }

static void test_backend(void) {
    const int64_t M = 37, N = 45, K = 29, N2 = 19, V = 67;
    float *x = test_rand_vec(&rng, M * K, 1.0f), *w = test_rand_vec(&rng, N * K, 1.0f),
          *w2 = test_rand_vec(&rng, N2 * K, 1.0f), *bias = test_rand_vec(&rng, N, 1.0f);
    float *dy = test_rand_vec(&rng, M * N, 1.0f), *dy2 = test_rand_vec(&rng, M * N2, 1.0f),
          *wc = test_rand_vec(&rng, V * K, 1.0f);
    int32_t tg[37];
    for (int64_t i = 0; i < M; i++) tg[i] = i == 5 ? -1 : (int32_t)(test_rng_next(&rng) % (uint64_t)V);
    lmc_err err = {0};
    struct lmc_backend be1, be2;
    CHECK(lmc_backend_cpu_init(&be1, 1, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_init(&be2, 2, &err) == LMC_OK);
    if (!lmc_cpu_has_bf16()) {
        CHECK(lmc_backend_cpu_set_train_bf16(&be1, true, &err) == LMC_ERR_UNSUPPORTED);
        printf("this CPU has no AVX512-BF16: the bf16 mode is refused (checked); ops skipped\n");
        lmc_backend_cpu_free(&be1), lmc_backend_cpu_free(&be2);
        free(x), free(w), free(w2), free(bias), free(dy), free(dy2), free(wc);
        return;
    }
    CHECK(lmc_backend_cpu_set_train_bf16(&be1, true, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_set_train_bf16(&be2, true, &err) == LMC_OK);
    struct ops_out o1, o2;
    alloc_out(&o1, M, N, K, N2, V);
    alloc_out(&o2, M, N, K, N2, V);
    run_ops(&be1, M, N, K, N2, V, x, w, w2, bias, dy, dy2, wc, tg, &o1);
    run_ops(&be2, M, N, K, N2, V, x, w, w2, bias, dy, dy2, wc, tg, &o2);

    /* y = x @ w^T + bias: the kernel's check on (x, w^T), then the bias */
    float *yb = malloc((size_t)(M * N) * 4);
    for (int64_t i = 0; i < M * N; i++) yb[i] = o1.y[i] - bias[i % N];
    CHECK_MSG(test_bf16_gemm_err(M, N, K, x, K, 1, w, 1, K, yb, N, NULL) <= 1.0 + 1e-3, "matmul bf16");
    for (int64_t i = 0; i < M * N; i++) yb[i] = o1.y2[i] - bias[i % N];
    CHECK_MSG(test_bf16_gemm_err(M, N, K, x, K, 1, w, 1, K, yb, N, NULL) <= 1.0 + 1e-3, "matmul_multi[0] bf16");
    CHECK_MSG(test_bf16_gemm_err(M, N2, K, x, K, 1, w2, 1, K, o1.y2 + M * N, N2, NULL) <= 1.0, "matmul_multi[1] bf16");
    /* dx = dy @ w, dw = dy^T @ x, db = column sums of dy (f32) */
    CHECK_MSG(test_bf16_gemm_err(M, K, N, dy, N, 1, w, K, 1, o1.dx, K, NULL) <= 1.0, "matmul_bwd dx bf16");
    CHECK_MSG(test_bf16_gemm_err(N, K, M, dy, 1, N, x, K, 1, o1.dw, K, NULL) <= 1.0, "matmul_bwd dw bf16");
    double dbe = 0;
    for (int64_t n = 0; n < N; n++) {
        double s = 0;
        for (int64_t m = 0; m < M; m++) s += dy[m * N + n];
        dbe = fmax(dbe, fabs(s - o1.db[n]));
    }
    CHECK_MSG(dbe < 1e-5, "matmul_bwd db stays f32: err %.3g", dbe);
    /* multi: dx = 0.25 + dy @ w + dy2 @ w2 (two sums: bound of each term) */
    {
        float *d1 = malloc((size_t)(M * K) * 4), *d2 = malloc((size_t)(M * K) * 4);
        void *ws = test_alloc64_words(lmc_cpu_gemm_bf16_ws(M, K, N));
        lmc_cpu_gemm_bf16(M, K, N, dy, N, 1, w, K, 1, d1, K, false, ws);
        lmc_cpu_gemm_bf16(M, K, N2, dy2, N2, 1, w2, K, 1, d2, K, false, ws);
        double e = 0, mag = 0;
        for (int64_t i = 0; i < M * K; i++) {
            e = fmax(e, fabs((double)o1.dxm[i] - (0.25 + (double)d1[i] + (double)d2[i])));
            mag = fmax(mag, fabs((double)o1.dxm[i]));
        }
        CHECK_MSG(e <= 4 * ldexp(1.0, -24) * (mag + 1), "matmul_bwd_multi dx: %.3g", e);
        free(d1), free(d2), free(ws);
    }
    CHECK_MSG(test_bf16_gemm_err(N, K, M, dy, 1, N, x, K, 1, o1.dwq, K, NULL) <= 1.0, "bwd_multi dw[0] bf16");
    CHECK_MSG(test_bf16_gemm_err(N2, K, M, dy2, 1, N2, x, K, 1, o1.dwk, K, NULL) <= 1.0, "bwd_multi dw[1] bf16");
    /* classifier: exact float64 reference, bf16 tolerance */
    {
        double *lg = malloc((size_t)V * sizeof *lg), *g = malloc((size_t)(M * V) * sizeof *g);
        double *dh = calloc((size_t)(M * K), sizeof *dh), *dwc = calloc((size_t)(V * K), sizeof *dwc);
        double lerr = 0;
        for (int64_t m = 0; m < M; m++) {
            double mx = -1e300, s = 0;
            for (int64_t v = 0; v < V; v++) {
                double a = 0;
                for (int64_t k = 0; k < K; k++) a += (double)x[m * K + k] * wc[v * K + k];
                lg[v] = a;
                mx = fmax(mx, a);
            }
            for (int64_t v = 0; v < V; v++) s += exp(lg[v] - mx);
            double l = tg[m] < 0 ? 0 : log(s) + mx - lg[tg[m]];
            lerr = fmax(lerr, fabs(l - o1.loss[m]) / fmax(1.0, fabs(l)));
            for (int64_t v = 0; v < V; v++)
                g[m * V + v] = tg[m] < 0 ? 0 : (exp(lg[v] - mx) / s - (v == tg[m])) / (double)M;
        }
        for (int64_t m = 0; m < M; m++)
            for (int64_t v = 0; v < V; v++)
                for (int64_t k = 0; k < K; k++) {
                    dh[m * K + k] += g[m * V + v] * wc[v * K + k];
                    dwc[v * K + k] += g[m * V + v] * x[m * K + k];
                }
        double e1 = test_rel_err_f32_f64(o1.dh, dh, M * K), e2 = test_rel_err_f32_f64(o1.dwc, dwc, V * K);
        CHECK_MSG(lerr < 2e-2 && e1 < 2e-2 && e2 < 2e-2, "classifier bf16: loss %.3g dh %.3g dw %.3g", lerr,
                  e1, e2);
        CHECK_MSG(o1.loss[5] == 0.0f, "ignored target");
        free(lg), free(g), free(dh), free(dwc);
    }
    /* 1 and 2 threads: the same bits */
    CHECK(same_bits(o1.y, o2.y, M * N) && same_bits(o1.y2, o2.y2, M * (N + N2)));
    CHECK(same_bits(o1.dx, o2.dx, M * K) && same_bits(o1.dw, o2.dw, N * K) && same_bits(o1.db, o2.db, N));
    CHECK(same_bits(o1.dxm, o2.dxm, M * K) && same_bits(o1.dwq, o2.dwq, N * K) &&
          same_bits(o1.dwk, o2.dwk, N2 * K));
    CHECK(same_bits(o1.loss, o2.loss, M) && same_bits(o1.dh, o2.dh, M * K) &&
          same_bits(o1.dwc, o2.dwc, V * K));
    /* lmc_linear_*_f32 (MoE routers) in the bf16 mode: the f32 products
     * (errors of f32 sums, far below the bf16 mode's) */
    {
        CHECK(be1.matmul_f32 != NULL && be1.matmul_bwd_f32 != NULL);
        struct lmc_linear L = {.format = LMC_WFMT_DENSE, .w = {LMC_DTYPE_F32, N, K, w}, .bias = bias};
        float *dwf = calloc((size_t)(N * K), 4), *dbf = calloc((size_t)N, 4), *dxf = malloc((size_t)(M * K) * 4);
        struct lmc_linear D = {.format = LMC_WFMT_DENSE, .w = {LMC_DTYPE_F32, N, K, dwf}, .bias = dbf};
        const struct lmc_linear *Lp = &L, *Dp = &D;
        float *yf = malloc((size_t)(M * N) * 4);
        const float *dyp = dy;
        lmc_linear_fwd_f32(&be1, 1, &Lp, &yf, x, M);
        lmc_linear_bwd_f32(&be1, 1, &Lp, &Dp, dxf, &dyp, x, M, false);
        double ey = 0, eb = 0, edx = 0, edw = 0;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double t = bias[n];
                for (int64_t k = 0; k < K; k++) t += (double)x[m * K + k] * w[n * K + k];
                ey = fmax(ey, fabs(t - yf[m * N + n]));
                eb = fmax(eb, fabs(t - o1.y[m * N + n]));
            }
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) {
                double t = 0;
                for (int64_t n = 0; n < N; n++) t += (double)dy[m * N + n] * w[n * K + k];
                edx = fmax(edx, fabs(t - dxf[m * K + k]));
            }
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) {
                double t = 0;
                for (int64_t m = 0; m < M; m++) t += (double)dy[m * N + n] * x[m * K + k];
                edw = fmax(edw, fabs(t - dwf[n * K + k]));
            }
        CHECK_MSG(ey < 1e-5 && edx < 1e-5 && edw < 1e-4 && eb > 1e-4,
                  "linear f32 in the bf16 mode: y %.3g (bf16 matmul %.3g) dx %.3g dw %.3g", ey, eb, edx, edw);
        free(dwf), free(dbf), free(dxf), free(yf);
    }
    /* off: the fp32 ops again (their matmul error is far below bf16's) */
    CHECK(lmc_backend_cpu_set_train_bf16(&be1, false, &err) == LMC_OK);
    CHECK(be1.matmul_f32 == NULL && be1.matmul_bwd_f32 == NULL);
    run_ops(&be1, M, N, K, N2, V, x, w, w2, bias, dy, dy2, wc, tg, &o2);
    double e = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias[n];
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
            e = fmax(e, fabs(s - o2.y[m * N + n]));
        }
    CHECK_MSG(e < 1e-5, "fp32 again after the bf16 mode: err %.3g", e);
    free(yb);
    free_out(&o1), free_out(&o2);
    lmc_backend_cpu_free(&be1), lmc_backend_cpu_free(&be2);
    free(x), free(w), free(w2), free(bias), free(dy), free(dy2), free(wc);
}

/* matmul_bwd_multi in the bf16 mode with every N_i a multiple of 8: the dx
 * tasks write dy^T packed for dw (lmc_cpu_gemm_bf16_apack_t), dw runs on
 * it (lmc_cpu_gemm_bf16_pp): dw the bits of one lmc_cpu_gemm_bf16 call on
 * the f32 dy^T (accumulated into), dx within the f32 sums' bound of two
 * such products, 1 and 2 threads the same bits; odd M (an odd last pair). */
static void test_bwd_prepacked(void) {
    if (!lmc_cpu_has_bf16()) return;
    const int64_t M = 301, K = 29, N1 = 48, N2 = 24;
    float *x = test_rand_vec(&rng, M * K, 1.0f), *w1 = test_rand_vec(&rng, N1 * K, 1.0f),
          *w2 = test_rand_vec(&rng, N2 * K, 1.0f);
    float *dy1 = test_rand_vec(&rng, M * N1, 1.0f), *dy2 = test_rand_vec(&rng, M * N2, 1.0f);
    lmc_err err = {0};
    float *dx[2], *dw1[2], *dw2[2];
    for (int t = 0; t < 2; t++) {
        struct lmc_backend be;
        CHECK(lmc_backend_cpu_init(&be, t + 1, &err) == LMC_OK);
        CHECK(lmc_backend_cpu_set_train_bf16(&be, true, &err) == LMC_OK);
        struct lmc_mat W1 = {LMC_DTYPE_F32, N1, K, w1}, W2 = {LMC_DTYPE_F32, N2, K, w2};
        const struct lmc_mat *ws[2] = {&W1, &W2};
        dx[t] = malloc((size_t)(M * K) * 4), dw1[t] = malloc((size_t)(N1 * K) * 4);
        dw2[t] = malloc((size_t)(N2 * K) * 4);
        for (int64_t i = 0; i < N1 * K; i++) dw1[t][i] = 0.25f;
        for (int64_t i = 0; i < N2 * K; i++) dw2[t][i] = -0.5f;
        float *dws[2] = {dw1[t], dw2[t]}, *dbs[2] = {NULL, NULL};
        const float *dys[2] = {dy1, dy2};
        be.matmul_bwd_multi(be.ctx, 2, dx[t], dws, dbs, dys, x, M, ws, 0);
        lmc_backend_cpu_free(&be);
    }
    float *r1 = malloc((size_t)(N1 * K) * 4), *r2 = malloc((size_t)(N2 * K) * 4);
    for (int64_t i = 0; i < N1 * K; i++) r1[i] = 0.25f;
    for (int64_t i = 0; i < N2 * K; i++) r2[i] = -0.5f;
    size_t wsw = lmc_cpu_gemm_bf16_ws(M, K, N1) + lmc_cpu_gemm_bf16_ws(N1, K, M); /* the larger of the two */
    void *ws = test_alloc64_words(wsw);
    lmc_cpu_gemm_bf16(N1, K, M, dy1, 1, N1, x, K, 1, r1, K, true, ws);
    lmc_cpu_gemm_bf16(N2, K, M, dy2, 1, N2, x, K, 1, r2, K, true, ws);
    CHECK_MSG(same_bits(dw1[0], r1, N1 * K) && same_bits(dw2[0], r2, N2 * K), "prepacked dw: gemm_bf16's bits");
    float *d1 = malloc((size_t)(M * K) * 4), *d2 = malloc((size_t)(M * K) * 4);
    lmc_cpu_gemm_bf16(M, K, N1, dy1, N1, 1, w1, K, 1, d1, K, false, ws);
    lmc_cpu_gemm_bf16(M, K, N2, dy2, N2, 1, w2, K, 1, d2, K, false, ws);
    double e = 0, mag = 0;
    for (int64_t i = 0; i < M * K; i++) {
        e = fmax(e, fabs((double)dx[0][i] - ((double)d1[i] + (double)d2[i])));
        mag = fmax(mag, fabs((double)dx[0][i]));
    }
    CHECK_MSG(e <= 4 * ldexp(1.0, -24) * (mag + 1), "prepacked path's dx: %.3g", e);
    CHECK(same_bits(dx[0], dx[1], M * K) && same_bits(dw1[0], dw1[1], N1 * K) && same_bits(dw2[0], dw2[1], N2 * K));
    for (int t = 0; t < 2; t++) free(dx[t]), free(dw1[t]), free(dw2[t]);
    free(x), free(w1), free(w2), free(dy1), free(dy2), free(r1), free(r2), free(d1), free(d2), free(ws);
}

/* AMX against AVX512-BF16 (both against the float64 sum), and row /
 * column isolation on whatever kernel runs */
static void test_amx(void) {
    static const int64_t shapes[][3] = {{1, 1, 1},     {5, 17, 3},     {17, 33, 31},  {33, 47, 33},
                                        {101, 803, 37}, {97, 65, 389}, {70, 40, 1001}, {49, 96, 771}};
    int amx = lmc_cpu_has_amx();
    if (!amx) printf("AMX-BF16 not active here (no AMX, or LMC_CPU_AMX not 1): AMX vs AVX512-BF16 skipped\n");
    for (size_t si = 0; amx && si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    struct test_gemm_case g = test_gemm_case_new(&rng, M, N, K, ta, tb, N + 5);
                    float *C1 = malloc((size_t)(M * g.ldc) * 4);
                    memcpy(C1, g.C, (size_t)(M * g.ldc) * 4);
                    void *ws = test_alloc64_words(lmc_cpu_gemm_bf16_ws(M, N, K));
                    lmc_cpu_gemm_bf16(M, N, K, g.A, g.a_sm, g.a_sk, g.B, g.b_sk, g.b_sn, g.C, g.ldc, acc, ws);
                    lmc_cpu_gemm_bf16_noamx(M, N, K, g.A, g.a_sm, g.a_sk, g.B, g.b_sk, g.b_sn, C1, g.ldc, acc, ws);
                    double e = test_gemm_case_err(&g, g.C, acc), e1 = test_gemm_case_err(&g, C1, acc);
                    CHECK_MSG(e <= 1.0 && e1 <= 1.0, "amx M %lld N %lld K %lld ta %d tb %d accum %d: err/bound amx %.3g avx512 %.3g",
                              (long long)M, (long long)N, (long long)K, ta, tb, acc, e, e1);
                    CHECK_MSG(test_gemm_case_pad_same(&g, g.C), "amx: padding columns of C written");
                    test_gemm_case_free(&g), free(C1), free(ws);
                }
    }
    /* isolation and row-split invariance, on the kernel this CPU runs */
    int64_t M = 101, N = 70, K = 389, m0 = 37, mi = 40, ki = 200, nn = 33, kn = 17;
    float *A = test_rand_vec(&rng, M * K, 1.0f), *B = test_rand_vec(&rng, K * N, 1.0f),
          *C = malloc((size_t)(M * N) * 4), *Cs = malloc((size_t)(M * N) * 4);
    void *ws = test_alloc64_words(lmc_cpu_gemm_bf16_ws(M, N, K));
    lmc_cpu_gemm_bf16(M, N, K, A, K, 1, B, N, 1, C, N, false, ws);
    lmc_cpu_gemm_bf16(M - m0, N, K, A + m0 * K, K, 1, B, N, 1, Cs, N, false, ws);
    CHECK_MSG(!memcmp(C + m0 * N, Cs, (size_t)((M - m0) * N) * 4), "rows %lld.. alone: other bits", (long long)m0);
    A[mi * K + ki] = INFINITY;
    B[kn * N + nn] = NAN;
    lmc_cpu_gemm_bf16(M, N, K, A, K, 1, B, N, 1, C, N, false, ws);
    int iso = 1;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++)
            if (m != mi && n != nn) iso &= isfinite(C[m * N + n]) != 0;
    iso &= !isfinite(C[mi * N + 0]) && isnan(C[0 * N + nn]);
    CHECK_MSG(iso, "%s: an inf in A's row %lld / a NaN in B's column %lld reached other outputs (or vanished)",
              amx ? "amx" : "native", (long long)mi, (long long)nn);
    free(A), free(B), free(C), free(Cs), free(ws);
}

int main(void) {
    printf("AVX512-BF16: %s\n", lmc_cpu_has_bf16() ? "yes" : "no");
    printf("AMX-BF16: %s\n", lmc_cpu_has_amx() ? "yes" : "no");
    test_amx();
    test_kernel(0);
    test_kernel(1);
    test_terms(0);
    test_terms(1);
    test_rounds();
    test_backend();
    test_bwd_prepacked();
    return test_finish("test_gemm_bf16");
}
