/* test_ops_cuda.c — the CUDA backend's ops against their CPU twins on
 * random non-zero inputs of odd sizes (both tables called on the same
 * inputs), and the attention kernels against a float64 reference at
 * S = 1, 7, 128, 1000, 4097, 16384, GQA ratios 1, 4, 8, head dims 64, 80,
 * 96, 128, in prefill, chunked-prefill and decode shapes, and the paged op
 * against the CPU's (scrambled block tables, mixed prefill/decode, both KV
 * dtypes). Every output is
 * poisoned (NaN) before the op runs, so unwritten elements fail; no output
 * may hold a NaN. Prints "skipped: no CUDA device" and passes when the
 * build has no CUDA or the machine no GPU.
 * Usage: test_ops_cuda [--quick]  (--quick: S <= 1000, for the sanitizers) */
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#ifdef LMC_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"
#endif
#include "test.h"

#include <stdlib.h>

#ifdef LMC_HAVE_CUDA

#define TEST_CUDA_SEED 777
#include "test_cuda.h"

enum { E_MM_F32, E_MM_LO_SMALL, E_MM_BF16, E_MM_F16, E_EMBED, E_RMS, E_LN, E_ROPE, E_SWIGLU,
       E_GELU, E_ADD, E_ATTN_F32_CPU, E_ATTN_F32, E_ATTN_TC, E_MM_FUSED, E_ROPE_KV, E_ATTN_PAGED, E_N };
static const char *err_names[E_N] = {"matmul f32", "matmul bf16/f16 M<=8", "matmul bf16",
                                     "matmul f16", "embed", "rmsnorm", "layernorm", "rope",
                                     "swiglu", "gelu", "add", "attn f32 vs cpu",
                                     "attn f32 vs f64", "attn tc vs f64",
                                     "matmul add/multi/swiglu", "rope_kv_store (bf16)",
                                     "attention_paged vs cpu"};
static double max_err[E_N];
static void record(int op, double e) {
    if (e > max_err[op] || e != e) max_err[op] = e;
}

/* rounds x to bf16 in place (so references see the stored values) and
 * uploads it as kvt (F32 or BF16) */
static void *up_kv(float *x, int64_t n, enum lmc_dtype kvt) {
    if (kvt == LMC_DTYPE_F32) return up(x, (size_t)n * 4);
    uint16_t *h = malloc((size_t)(n > 0 ? n : 1) * 2);
    for (int64_t i = 0; i < n; i++) {
        h[i] = lmc_f32_to_bf16(x[i]);
        x[i] = lmc_bf16_to_f32(h[i]);
    }
    void *d = up(h, (size_t)n * 2);
    free(h);
    return d;
}

/* max|a-b| / max|b| (NaN anywhere gives NaN) */
static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d || a[i] != a[i]) num = d != d ? NAN : (a[i] != a[i] ? NAN : d);
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

static void *make_weights(enum lmc_dtype dt, int64_t n) {
    void *w = malloc((size_t)n * (dt == LMC_DTYPE_F32 ? 4 : 2));
    for (int64_t i = 0; i < n; i++) {
        float f = test_rand(&rng);
        if (dt == LMC_DTYPE_F32) ((float *)w)[i] = f;
        else if (dt == LMC_DTYPE_F16) ((uint16_t *)w)[i] = lmc_f32_to_f16(f);
        else ((uint16_t *)w)[i] = lmc_f32_to_bf16(f);
    }
    return w;
}

static const enum lmc_dtype dtypes[3] = {LMC_DTYPE_F32, LMC_DTYPE_F16, LMC_DTYPE_BF16};

static void test_matmul(int quick) {
    static const int64_t Ms[] = {1, 2, 3, 5, 8, 9, 17, 130};
    static const int64_t NK[][2] = {{131, 77}, {7, 5}, {64, 48}, {33, 200}, {4, 16}, {1000, 512}, {257, 2056}};
    size_t nnk = quick ? 5 : 7;
    for (size_t d = 0; d < 3; d++)
        for (size_t s = 0; s < nnk; s++) {
            int64_t N = NK[s][0], K = NK[s][1];
            size_t wb = (size_t)(N * K) * (size_t)lmc_dtype_size(dtypes[d]);
            void *wh = make_weights(dtypes[d], N * K);
            struct lmc_mat wc = {dtypes[d], N, K, wh}, wg = {dtypes[d], N, K, up(wh, wb)};
            float *bias = rand_f(N, 1.0f);
            float *bias_d = up(bias, (size_t)N * 4);
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                int64_t M = Ms[mi];
                float *x = rand_f(M * K, 1.0f), *yc = rand_f(M * N, 1.0f);
                float *x_d = up(x, (size_t)(M * K) * 4);
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    float *y_d = dev_poison(M * N);
                    cpu.matmul(cpu.ctx, yc, x, M, &wc, with_bias ? bias : NULL);
                    gpu.matmul(gpu.ctx, y_d, x_d, M, &wg, with_bias ? bias_d : NULL);
                    float *yg = down(y_d, M * N);
                    double e = rel_err(yg, yc, M * N), tol = 1e-5;
                    int op = E_MM_F32;
                    if (dtypes[d] != LMC_DTYPE_F32 && M <= 8) op = E_MM_LO_SMALL;
                    else if (dtypes[d] == LMC_DTYPE_BF16) op = E_MM_BF16, tol = 1e-2;
                    else if (dtypes[d] == LMC_DTYPE_F16) op = E_MM_F16, tol = 2e-3;
                    record(op, e);
                    CHECK_MSG(e <= tol, "matmul %s M=%lld N=%lld K=%lld bias=%d: rel err %g",
                              lmc_dtype_name(dtypes[d]), (long long)M, (long long)N, (long long)K,
                              with_bias, e);
                    free(yg);
                    dfree(y_d);
                }
                dfree(x_d);
                free(x), free(yc);
            }
            dfree((void *)wg.data), dfree(bias_d);
            free(wh), free(bias);
        }
}

/* matmul_add, matmul_multi (q/k/v-like shapes, some biases NULL) and
 * matmul_swiglu against compositions of CPU ops */
static void test_matmul_fused(void) {
    static const int64_t Ms[] = {1, 3, 8, 9, 130};
    static const int64_t NK[][2] = {{131, 77}, {64, 48}, {257, 2056}, {40, 512}};
    for (size_t d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof NK / sizeof *NK; s++)
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                int64_t M = Ms[mi], K = NK[s][1], Ns[3] = {NK[s][0], 33, NK[s][0] / 2 + 1};
                double tol = dtypes[d] == LMC_DTYPE_F32 || M <= 8 ? 1e-5
                             : dtypes[d] == LMC_DTYPE_BF16 ? 1e-2 : 2e-3;
                struct lmc_mat wc[3], wg[3];
                float *bias[3], *bias_d[3], *yc[3], *y_d[3];
                for (int i = 0; i < 3; i++) {
                    void *wh = make_weights(dtypes[d], Ns[i] * K);
                    size_t wb = (size_t)(Ns[i] * K) * (size_t)lmc_dtype_size(dtypes[d]);
                    wc[i] = (struct lmc_mat){dtypes[d], Ns[i], K, wh};
                    wg[i] = (struct lmc_mat){dtypes[d], Ns[i], K, up(wh, wb)};
                    bias[i] = i == 1 ? NULL : rand_f(Ns[i], 1.0f);
                    bias_d[i] = i == 1 ? NULL : up(bias[i], (size_t)Ns[i] * 4);
                    yc[i] = rand_f(M * Ns[i], 1.0f);
                    y_d[i] = dev_poison(M * Ns[i]);
                }
                float *x = rand_f(M * K, 1.0f), *x_d = up(x, (size_t)(M * K) * 4);
                /* multi */
                const struct lmc_mat *wp[3] = {&wg[0], &wg[1], &wg[2]};
                gpu.matmul_multi(gpu.ctx, 3, y_d, x_d, M, wp, (const float *const *)bias_d);
                for (int i = 0; i < 3; i++) {
                    cpu.matmul(cpu.ctx, yc[i], x, M, &wc[i], bias[i]);
                    float *yg = down(y_d[i], M * Ns[i]);
                    double e = rel_err(yg, yc[i], M * Ns[i]);
                    record(E_MM_FUSED, e);
                    CHECK_MSG(e <= tol, "matmul_multi %s M=%lld N=%lld K=%lld: %g",
                              lmc_dtype_name(dtypes[d]), (long long)M, (long long)Ns[i],
                              (long long)K, e);
                    free(yg);
                }
                /* add: y0 + x W^T + b */
                float *y0 = rand_f(M * Ns[0], 3.0f), *t = malloc((size_t)(M * Ns[0]) * 4);
                float *ya_d = up(y0, (size_t)(M * Ns[0]) * 4);
                gpu.matmul_add(gpu.ctx, ya_d, x_d, M, &wg[0], bias_d[0]);
                cpu.matmul(cpu.ctx, t, x, M, &wc[0], bias[0]);
                cpu.add(cpu.ctx, t, t, y0, M * Ns[0]);
                float *yg = down(ya_d, M * Ns[0]);
                double e = rel_err(yg, t, M * Ns[0]);
                record(E_MM_FUSED, e);
                CHECK_MSG(e <= tol, "matmul_add %s M=%lld N=%lld K=%lld: %g",
                          lmc_dtype_name(dtypes[d]), (long long)M, (long long)Ns[0], (long long)K, e);
                free(yg);
                /* swiglu: silu(x Wg^T) * (x Wu^T), Wg = w0, Wu = w0 rows shifted (same N) */
                struct lmc_mat wu_c = wc[0], wu_g = wg[0];
                void *wuh = make_weights(dtypes[d], Ns[0] * K);
                wu_c.data = wuh;
                wu_g.data = up(wuh, (size_t)(Ns[0] * K) * (size_t)lmc_dtype_size(dtypes[d]));
                float *u = malloc((size_t)(M * Ns[0]) * 4), *ys_d = dev_poison(M * Ns[0]);
                cpu.matmul(cpu.ctx, t, x, M, &wc[0], NULL);
                cpu.matmul(cpu.ctx, u, x, M, &wu_c, NULL);
                cpu.swiglu(cpu.ctx, t, t, u, M * Ns[0]);
                gpu.matmul_swiglu(gpu.ctx, ys_d, x_d, M, &wg[0], &wu_g);
                yg = down(ys_d, M * Ns[0]);
                e = rel_err(yg, t, M * Ns[0]);
                record(E_MM_FUSED, e);
                CHECK_MSG(e <= tol, "matmul_swiglu %s M=%lld N=%lld K=%lld: %g",
                          lmc_dtype_name(dtypes[d]), (long long)M, (long long)Ns[0], (long long)K, e);
                free(yg), free(u), free(wuh), free(y0), free(t);
                dfree(ys_d), dfree((void *)wu_g.data), dfree(ya_d);
                for (int i = 0; i < 3; i++) {
                    free((void *)wc[i].data), free(bias[i]), free(yc[i]);
                    dfree((void *)wg[i].data), dfree(y_d[i]);
                    if (bias_d[i]) dfree(bias_d[i]);
                }
                free(x), dfree(x_d);
            }
}

/* rope_kv_store: q roped in place, k roped and k/v stored as bf16 into
 * rows pos[m] of the caches; other rows untouched */
static void test_rope_kv_store(void) {
    static const int64_t cfg[][5] = {{1, 8, 2, 64, 64}, {7, 4, 4, 80, 80}, {33, 6, 2, 128, 32},
                                     {5, 3, 1, 16, 0}};
    CHECK(gpu.kv_dtype == LMC_DTYPE_BF16);
    const int64_t ctx = 100;
    for (size_t s = 0; s < sizeof cfg / sizeof *cfg; s++) {
        int64_t M = cfg[s][0], H = cfg[s][1], KV = cfg[s][2], D = cfg[s][3], R = cfg[s][4];
        int64_t kvd = KV * D;
        float *q = rand_f(M * H * D, 1.0f), *k = rand_f(M * kvd, 1.0f), *v = rand_f(M * kvd, 1.0f);
        double *inv = malloc((size_t)(R / 2 + 1) * sizeof(double));
        int32_t *pos = malloc((size_t)M * sizeof *pos);
        for (int64_t i = 0; i < R / 2; i++) inv[i] = pow(10000.0, -2.0 * (double)i / (double)R);
        for (int64_t m = 0; m < M; m++) pos[m] = (int32_t)((m * 37 + 11) % ctx);
        uint16_t *cache = malloc((size_t)(ctx * kvd) * 2);
        for (int64_t i = 0; i < ctx * kvd; i++) cache[i] = lmc_f32_to_bf16(7.0f);
        float *q_d = up(q, (size_t)(M * H * D) * 4), *k_d = up(k, (size_t)(M * kvd) * 4);
        float *v_d = up(v, (size_t)(M * kvd) * 4);
        void *kc_d = up(cache, (size_t)(ctx * kvd) * 2), *vc_d = up(cache, (size_t)(ctx * kvd) * 2);
        double *inv_d = up(inv, (size_t)(R / 2 + 1) * sizeof(double));
        int32_t *pos_d = up(pos, (size_t)M * sizeof *pos);
        gpu.rope_kv_store(gpu.ctx, q_d, k_d, v_d, kc_d, vc_d, M, H, KV, D, R, pos_d, inv_d, 0.9f);
        if (R) {
            cpu.rope(cpu.ctx, q, M, H, D, R, pos, inv, 0.9f);
            cpu.rope(cpu.ctx, k, M, KV, D, R, pos, inv, 0.9f);
        }
        float *qg = down(q_d, M * H * D);
        double e = rel_err(qg, q, M * H * D);
        CHECK_MSG(e <= 1e-5, "rope_kv_store q M=%lld: %g", (long long)M, e);
        uint16_t *kh = malloc((size_t)(ctx * kvd) * 2), *vh = malloc((size_t)(ctx * kvd) * 2);
        gpu.download(gpu.ctx, kh, kc_d, (size_t)(ctx * kvd) * 2);
        gpu.download(gpu.ctx, vh, vc_d, (size_t)(ctx * kvd) * 2);
        double num = 0;
        int untouched = 1;
        char *hit = calloc((size_t)ctx, 1);
        for (int64_t m = 0; m < M; m++) {
            hit[pos[m]] = 1;
            for (int64_t i = 0; i < kvd; i++) {
                num = fmax(num, fabs(lmc_bf16_to_f32(kh[pos[m] * kvd + i]) - k[m * kvd + i]));
                num = fmax(num, fabs(lmc_bf16_to_f32(vh[pos[m] * kvd + i]) - v[m * kvd + i]));
            }
        }
        for (int64_t p = 0; p < ctx; p++)
            if (!hit[p])
                for (int64_t i = 0; i < kvd; i++)
                    untouched &= kh[p * kvd + i] == cache[0] && vh[p * kvd + i] == cache[0];
        record(E_ROPE_KV, num);
        CHECK_MSG(num <= 8e-3, "rope_kv_store k/v M=%lld D=%lld R=%lld: abs err %g", (long long)M,
                  (long long)D, (long long)R, num);
        CHECK_MSG(untouched, "rope_kv_store wrote rows it does not own");
        free(q), free(k), free(v), free(inv), free(pos), free(cache), free(qg), free(kh), free(vh);
        free(hit);
        dfree(q_d), dfree(k_d), dfree(v_d), dfree(kc_d), dfree(vc_d), dfree(inv_d), dfree(pos_d);
    }
}

static void test_embed(void) {
    const int64_t V = 37, C = 45, n = 11;
    for (size_t d = 0; d < 3; d++) {
        size_t tb = (size_t)(V * C) * (size_t)lmc_dtype_size(dtypes[d]);
        void *th = make_weights(dtypes[d], V * C);
        struct lmc_mat tc = {dtypes[d], V, C, th}, tg = {dtypes[d], V, C, up(th, tb)};
        int32_t ids[11];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&rng) % V);
        ids[0] = 0, ids[1] = (int32_t)V - 1;
        int32_t *ids_d = up(ids, sizeof ids);
        float *yc = rand_f(n * C, 1.0f), *y_d = dev_poison(n * C);
        cpu.embed(cpu.ctx, yc, &tc, ids, n);
        gpu.embed(gpu.ctx, y_d, &tg, ids_d, n);
        float *yg = down(y_d, n * C);
        double e = rel_err(yg, yc, n * C);
        record(E_EMBED, e);
        CHECK_MSG(e == 0, "embed %s: rel err %g", lmc_dtype_name(dtypes[d]), e);
        free(yg), free(yc), free(th);
        dfree(y_d), dfree(ids_d), dfree((void *)tg.data);
    }
}

static void test_norms(void) {
    static const int64_t shapes[][2] = {{1, 77}, {3, 64}, {17, 768}, {130, 13}, {5, 4099}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t M = shapes[s][0], C = shapes[s][1], n = M * C;
        for (int alias = 0; alias < 2; alias++)
            for (int offset = 0; offset < 2; offset++) {
                float *x = rand_f(n, 2.0f), *w = rand_f(C, 1.0f), *b = rand_f(C, 1.0f);
                for (int64_t i = 0; offset && i < n; i++) x[i] += 30.0f;
                float *w_d = up(w, (size_t)C * 4), *b_d = up(b, (size_t)C * 4);
                for (int ln = 0; ln < 2; ln++) {
                    float *yc = malloc((size_t)n * 4);
                    float *x_d = up(x, (size_t)n * 4), *y_d = alias ? x_d : dev_poison(n);
                    if (ln) {
                        cpu.layernorm(cpu.ctx, yc, x, w, b, M, C, 1e-5f);
                        gpu.layernorm(gpu.ctx, y_d, x_d, w_d, b_d, M, C, 1e-5f);
                    } else {
                        cpu.rmsnorm(cpu.ctx, yc, x, w, M, C, 1e-5f);
                        gpu.rmsnorm(gpu.ctx, y_d, x_d, w_d, M, C, 1e-5f);
                    }
                    float *yg = down(y_d, n);
                    double e = rel_err(yg, yc, n);
                    record(ln ? E_LN : E_RMS, e);
                    CHECK_MSG(e <= 1e-5, "%s M=%lld C=%lld alias=%d offset=%d: %g",
                              ln ? "layernorm" : "rmsnorm", (long long)M, (long long)C, alias,
                              offset, e);
                    free(yg), free(yc);
                    dfree(x_d);
                    if (!alias) dfree(y_d);
                }
                dfree(w_d), dfree(b_d);
                free(x), free(w), free(b);
            }
    }
}

static void test_rope(void) {
    static const int64_t cfg[][4] = {{5, 3, 14, 14}, {5, 3, 14, 8},   {1, 2, 64, 64},
                                     {9, 4, 64, 16}, {3, 2, 160, 150}, {33, 1, 6, 2},
                                     {257, 7, 128, 128}};
    for (size_t s = 0; s < sizeof cfg / sizeof *cfg; s++)
        for (int sc = 0; sc < 2; sc++) {
            int64_t M = cfg[s][0], H = cfg[s][1], D = cfg[s][2], R = cfg[s][3], n = M * H * D;
            float scale = sc ? 0.87f : 1.0f;
            float *x = rand_f(n, 1.0f);
            double *inv = malloc((size_t)(R / 2) * sizeof(double));
            int32_t *pos = malloc((size_t)M * sizeof *pos);
            for (int64_t i = 0; i < R / 2; i++) inv[i] = pow(10000.0, -2.0 * (double)i / (double)R);
            for (int64_t m = 0; m < M; m++) pos[m] = (int32_t)(test_rng_next(&rng) % 40000);
            float *x_d = up(x, (size_t)n * 4);
            double *inv_d = up(inv, (size_t)(R / 2) * sizeof(double));
            int32_t *pos_d = up(pos, (size_t)M * sizeof *pos);
            cpu.rope(cpu.ctx, x, M, H, D, R, pos, inv, scale);
            gpu.rope(gpu.ctx, x_d, M, H, D, R, pos_d, inv_d, scale);
            float *xg = down(x_d, n);
            double e = rel_err(xg, x, n);
            record(E_ROPE, e);
            CHECK_MSG(e <= 1e-5, "rope M=%lld H=%lld D=%lld R=%lld: %g", (long long)M,
                      (long long)H, (long long)D, (long long)R, e);
            free(xg), free(x), free(inv), free(pos);
            dfree(x_d), dfree(inv_d), dfree(pos_d);
        }
}

static void test_elementwise(void) {
    static const int64_t sizes[] = {1, 13, 100003};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int alias = 0; alias < 2; alias++)
            for (int op = 0; op < 4; op++) { /* swiglu, gelu erf, gelu tanh, add */
                int64_t n = sizes[s];
                float *a = rand_f(n, 12.0f), *b = rand_f(n, 3.0f), *yc = malloc((size_t)n * 4);
                if (n == 13) a[0] = 100.0f, a[1] = -100.0f, a[2] = 89.0f, a[3] = -89.0f;
                float *a_d = up(a, (size_t)n * 4), *b_d = up(b, (size_t)n * 4);
                float *y_d = alias ? a_d : dev_poison(n);
                if (op == 0) {
                    cpu.swiglu(cpu.ctx, yc, a, b, n);
                    gpu.swiglu(gpu.ctx, y_d, a_d, b_d, n);
                } else if (op < 3) {
                    cpu.gelu(cpu.ctx, yc, a, n, op == 2);
                    gpu.gelu(gpu.ctx, y_d, a_d, n, op == 2);
                } else {
                    cpu.add(cpu.ctx, yc, a, b, n);
                    gpu.add(gpu.ctx, y_d, a_d, b_d, n);
                }
                float *yg = down(y_d, n);
                double e = rel_err(yg, yc, n);
                record(op == 0 ? E_SWIGLU : op < 3 ? E_GELU : E_ADD, e);
                CHECK_MSG(e <= 1e-5, "elementwise op %d n=%lld alias=%d: %g", op, (long long)n,
                          alias, e);
                free(yg), free(a), free(b), free(yc);
                dfree(a_d), dfree(b_d);
                if (!alias) dfree(y_d);
            }
}

/* ---- attention ---- */

/* float64 attention for query rows rows[0..nr) of every head into
 * ref (nr, H*D). */
static void attn_ref_rows(double *ref, const int64_t *rows, int64_t nr, const float *q,
                          const float *k, const float *v, int64_t pos0, int64_t H, int64_t KV,
                          int64_t D, double scale, int64_t window) {
    int64_t nmax = 0;
    for (int64_t r = 0; r < nr; r++) nmax = LMC_MAX(nmax, pos0 + rows[r] + 1);
    double *s = malloc((size_t)nmax * sizeof(double));
    for (int64_t r = 0; r < nr; r++)
        for (int64_t h = 0; h < H; h++) {
            int64_t m = rows[r], p = pos0 + m, g = h / (H / KV);
            int64_t lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
            const float *qh = q + (m * H + h) * D;
            double mx = -INFINITY, sum = 0;
            for (int64_t t = lo; t <= p; t++) {
                double acc = 0;
                const float *kr = k + (t * KV + g) * D;
                for (int64_t d = 0; d < D; d++) acc += (double)qh[d] * kr[d];
                s[t] = acc * scale;
                if (s[t] > mx) mx = s[t];
            }
            for (int64_t t = lo; t <= p; t++) sum += (s[t] = exp(s[t] - mx));
            double *o = ref + (r * H + h) * D;
            for (int64_t d = 0; d < D; d++) o[d] = 0;
            for (int64_t t = lo; t <= p; t++) {
                const float *vr = v + (t * KV + g) * D;
                for (int64_t d = 0; d < D; d++) o[d] += s[t] * vr[d];
            }
            for (int64_t d = 0; d < D; d++) o[d] /= sum;
        }
    free(s);
}

/* Runs one attention shape through `kind` and compares the chosen rows
 * against float64; returns the error. */
static double attn_case(int64_t M, int64_t pos0, int64_t H, int64_t KV, int64_t D, int64_t win,
                        enum lmc_cuda_attn_kind kind, enum lmc_dtype kvt, float qscale,
                        int64_t max_rows) {
    int64_t T = pos0 + M;
    float scale = 1.0f / sqrtf((float)D);
    float *q = rand_f(M * H * D, qscale), *k = rand_f(T * KV * D, 2.0f), *v = rand_f(T * KV * D, 1.0f);
    if (qscale > 10) { /* peaked: bf16-exact inputs, so only the kernel's own rounding counts */
        float *bufs[3] = {q, k, v};
        int64_t lens[3] = {M * H * D, T * KV * D, T * KV * D};
        for (int b = 0; b < 3; b++)
            for (int64_t i = 0; i < lens[b]; i++) bufs[b][i] = lmc_bf16_to_f32(lmc_f32_to_bf16(bufs[b][i]));
    }
    float *q_d = up(q, (size_t)(M * H * D) * 4), *o_d = dev_poison(M * H * D);
    void *k_d = up_kv(k, T * KV * D, kvt), *v_d = up_kv(v, T * KV * D, kvt);
    enum lmc_cuda_attn_kind ran = lmc_cuda_attention_ex(gpu.ctx, o_d, q_d, k_d, v_d, kvt, M, pos0,
                                                        H, KV, D, scale, win, 1, 0, 0, kind);
    CHECK(kind == LMC_CUDA_ATTN_AUTO || ran == kind);
    float *o = down(o_d, M * H * D);
    int64_t nr = LMC_MIN(M, max_rows), *rows = malloc((size_t)nr * sizeof *rows);
    for (int64_t r = 0; r < nr; r++) {
        if (nr == M) rows[r] = r;
        else if (r < 8) rows[r] = r;
        else if (r >= nr - 8) rows[r] = M - (nr - r);
        else rows[r] = (int64_t)(test_rng_next(&rng) % (uint64_t)M);
    }
    double *ref = malloc((size_t)(nr * H * D) * sizeof(double));
    attn_ref_rows(ref, rows, nr, q, k, v, pos0, H, KV, D, scale, win);
    double num = 0, den = 0;
    for (int64_t r = 0; r < nr; r++)
        for (int64_t i = 0; i < H * D; i++) {
            double a = o[rows[r] * H * D + i], b = ref[r * H * D + i], d = fabs(a - b);
            if (d > num || a != a) num = a != a ? NAN : d;
            if (fabs(b) > den) den = fabs(b);
        }
    /* every element written and finite, not only the checked rows */
    int finite = 1;
    for (int64_t i = 0; i < M * H * D; i++) finite &= isfinite(o[i]) != 0;
    CHECK_MSG(finite, "attention M=%lld pos0=%lld: NaN/inf or unwritten output", (long long)M,
              (long long)pos0);
    free(q), free(k), free(v), free(o), free(rows), free(ref);
    dfree(q_d), dfree(k_d), dfree(v_d), dfree(o_d);
    return num / (den > 0 ? den : 1);
}

static void test_attention_vs_cpu(void) {
    static const int64_t cfg[][3] = {{1, 0, 0},   {1, 37, 0},  {1, 37, 5},  {5, 0, 0},
                                     {17, 9, 0},  {17, 9, 6},  {130, 0, 0}, {3, 60, 64},
                                     {1, 3000, 0}, {2, 5000, 100}};
    static const int64_t heads[][3] = {{4, 4, 16}, {4, 2, 13}, {8, 2, 24}, {2, 1, 64}, {6, 3, 80}};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (size_t hh = 0; hh < sizeof heads / sizeof *heads; hh++) {
            int64_t M = cfg[c][0], pos0 = cfg[c][1], win = cfg[c][2];
            int64_t H = heads[hh][0], KV = heads[hh][1], D = heads[hh][2], T = pos0 + M;
            float scale = 1.0f / sqrtf((float)D);
            float *q = rand_f(M * H * D, 2.0f), *k = rand_f(T * KV * D, 2.0f);
            float *v = rand_f(T * KV * D, 1.0f), *oc = malloc((size_t)(M * H * D) * 4);
            float *q_d = up(q, (size_t)(M * H * D) * 4), *k_d = up(k, (size_t)(T * KV * D) * 4);
            float *v_d = up(v, (size_t)(T * KV * D) * 4), *o_d = dev_poison(M * H * D);
            cpu.attention(cpu.ctx, oc, q, k, v, M, pos0, H, KV, D, scale, win);
            lmc_cuda_attention_ex(gpu.ctx, o_d, q_d, k_d, v_d, LMC_DTYPE_F32, M, pos0, H, KV, D,
                                  scale, win, 1, 0, 0, LMC_CUDA_ATTN_F32);
            float *og = down(o_d, M * H * D);
            double e = rel_err(og, oc, M * H * D);
            record(E_ATTN_F32_CPU, e);
            CHECK_MSG(e <= 1e-5, "attention f32 vs cpu M=%lld pos0=%lld win=%lld H=%lld KV=%lld D=%lld: %g",
                      (long long)M, (long long)pos0, (long long)win, (long long)H, (long long)KV,
                      (long long)D, e);
            free(q), free(k), free(v), free(oc), free(og);
            dfree(q_d), dfree(k_d), dfree(v_d), dfree(o_d);
        }
}

static void test_attention_sizes(int quick) {
    static const int64_t Ss[] = {1, 7, 128, 1000, 4097, 16384};
    static const int64_t ratios[] = {1, 4, 8};
    static const int64_t hds[] = {64, 80, 96, 128};
    const int64_t H = 8;
    size_t nS = quick ? 4 : 6;
    for (size_t si = 0; si < nS; si++)
        for (size_t ri = 0; ri < 3; ri++) {
            int64_t S = Ss[si], KV = H / ratios[ri], D = hds[(si + ri) % 4];
            int64_t rows = S <= 1000 ? S : 48;
            struct { int64_t M, pos0, win; const char *what; } shapes[] = {
                {S, 0, 0, "prefill"},
                {LMC_MIN(S, 100), S - LMC_MIN(S, 100), 0, "chunk"},
                {1, S - 1, 0, "decode"},
                {S, 0, S > 7 ? S / 3 : 0, "window"},
            };
            for (size_t sh = 0; sh < 4; sh++)
                for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32 + 1; kind++) {
                    /* tc: bf16 cache; f32 kernel over an f32 cache, then a bf16 one */
                    enum lmc_cuda_attn_kind kd = kind > LMC_CUDA_ATTN_F32 ? LMC_CUDA_ATTN_F32
                                                                          : (enum lmc_cuda_attn_kind)kind;
                    enum lmc_dtype kvt = kind == LMC_CUDA_ATTN_F32 ? LMC_DTYPE_F32 : LMC_DTYPE_BF16;
                    double e = attn_case(shapes[sh].M, shapes[sh].pos0, H, KV, D, shapes[sh].win,
                                         kd, kvt, 2.0f, rows);
                    double tol = kd == LMC_CUDA_ATTN_TC ? 2e-2 : 1e-4;
                    record(kd == LMC_CUDA_ATTN_TC ? E_ATTN_TC : E_ATTN_F32, e);
                    CHECK_MSG(e <= tol, "attention %s %s kv %s S=%lld H=%lld KV=%lld D=%lld: %g",
                              kd == LMC_CUDA_ATTN_TC ? "tc" : "f32", shapes[sh].what,
                              lmc_dtype_name(kvt), (long long)S, (long long)H, (long long)KV,
                              (long long)D, e);
                    if (si == nS - 1 && ri == 0 && sh == 0)
                        printf("  attention S=%lld %s: rel err %.3g\n", (long long)S,
                               kind == LMC_CUDA_ATTN_TC ? "tc" : "f32", e);
                }
        }
    /* peaked softmax (logits in the hundreds): no NaN, and exact but for
     * the kernel's rounding of P to bf16 */
    for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32; kind++) {
        double e = attn_case(300, 5, 4, 2, 128, 0, (enum lmc_cuda_attn_kind)kind, LMC_DTYPE_BF16,
                             60.0f, 300);
        CHECK_MSG(e <= (kind == LMC_CUDA_ATTN_TC ? 2e-2 : 1e-4), "attention peaked kind %d: %g", kind, e);
    }
}

/* batch > 1 through the extended launcher equals per-sequence calls */
static void test_attention_batch(void) {
    const int64_t B = 3, M = 77, H = 4, KV = 2, D = 64;
    int64_t qs = M * H * D, ks = M * KV * D;
    float *q = rand_f(B * qs, 2.0f), *k = rand_f(B * ks, 2.0f), *v = rand_f(B * ks, 1.0f);
    float *q_d = up(q, (size_t)(B * qs) * 4);
    uint16_t *k_d = up_kv(k, B * ks, LMC_DTYPE_BF16), *v_d = up_kv(v, B * ks, LMC_DTYPE_BF16);
    float *o1 = dev_poison(B * qs), *o2 = dev_poison(B * qs);
    for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32; kind++) {
        lmc_cuda_attention_ex(gpu.ctx, o1, q_d, k_d, v_d, LMC_DTYPE_BF16, M, 0, H, KV, D, 0.125f, 0,
                              B, qs, ks, (enum lmc_cuda_attn_kind)kind);
        for (int64_t b = 0; b < B; b++)
            lmc_cuda_attention_ex(gpu.ctx, o2 + b * qs, q_d + b * qs, k_d + b * ks, v_d + b * ks,
                                  LMC_DTYPE_BF16, M, 0, H, KV, D, 0.125f, 0, 1, 0, 0,
                                  (enum lmc_cuda_attn_kind)kind);
        float *a = down(o1, B * qs), *b = down(o2, B * qs);
        CHECK_MSG(rel_err(a, b, B * qs) == 0, "attention batch kind %d", kind);
        free(a), free(b);
    }
    free(q), free(k), free(v);
    dfree(q_d), dfree(k_d), dfree(v_d), dfree(o1), dfree(o2);
}

/* The paged op (attention_paged) against the CPU's on the same pool
 * contents: NS sequences of random lengths (up to maxlen), each with a
 * prefill chunk or one decode token in the batch, tokens shuffled, blocks
 * scrambled, both pool dtypes (bf16: K/V rounded first so the CPU sees the
 * stored values). Also checks the new rows landed in their slots. */
static double paged_case(int NS, int64_t maxlen, int64_t H, int64_t KV, int64_t hd, int64_t bs,
                         int64_t win, enum lmc_dtype kvt) {
    int64_t len[64], nnew[64], row = KV * hd, T = 0, maxb = 0;
    LMC_ASSERT(NS <= 64);
    for (int s = 0; s < NS; s++) {
        len[s] = 1 + (int64_t)(test_rng_next(&rng) % (uint64_t)maxlen);
        nnew[s] = s % 3 ? 1 : 1 + (int64_t)(test_rng_next(&rng) % (uint64_t)len[s]);
        T += nnew[s];
        maxb = LMC_MAX(maxb, (len[s] + bs - 1) / bs);
    }
    maxb += (int64_t)(test_rng_next(&rng) % 3); /* spare table columns */
    int64_t nblocks = NS * maxb + 5, prow = nblocks * bs;
    int32_t *perm = malloc((size_t)nblocks * 4), *bt = malloc((size_t)(NS * maxb) * 4);
    for (int64_t i = 0; i < nblocks; i++) perm[i] = (int32_t)i;
    for (int64_t i = nblocks - 1; i > 0; i--) {
        int64_t j = (int64_t)(test_rng_next(&rng) % (uint64_t)(i + 1));
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (int64_t i = 0; i < NS * maxb; i++) bt[i] = perm[i];
    /* pool contents: random everywhere (unused slots too), rounded when bf16 */
    float *kc = rand_f(prow * row, 1.0f), *vc = rand_f(prow * row, 1.0f);
    int32_t *seq = malloc((size_t)T * 4), *pos = malloc((size_t)T * 4);
    for (int s = 0, t = 0; s < NS; s++)
        for (int64_t i = 0; i < nnew[s]; i++, t++) seq[t] = s, pos[t] = (int32_t)(len[s] - nnew[s] + i);
    for (int64_t i = T - 1; i > 0; i--) {
        int64_t j = (int64_t)(test_rng_next(&rng) % (uint64_t)(i + 1));
        int32_t a = seq[i]; seq[i] = seq[j]; seq[j] = a;
        a = pos[i]; pos[i] = pos[j]; pos[j] = a;
    }
    float *q = rand_f(T * H * hd, 2.0f), *kn = rand_f(T * row, 1.0f), *vn = rand_f(T * row, 1.0f);
    if (kvt == LMC_DTYPE_BF16)
        for (int64_t i = 0; i < T * row; i++) {
            kn[i] = lmc_bf16_to_f32(lmc_f32_to_bf16(kn[i]));
            vn[i] = lmc_bf16_to_f32(lmc_f32_to_bf16(vn[i]));
        }
    void *kc_d = up_kv(kc, prow * row, kvt), *vc_d = up_kv(vc, prow * row, kvt);
    float *q_d = up(q, (size_t)(T * H * hd) * 4), *kn_d = up(kn, (size_t)(T * row) * 4);
    float *vn_d = up(vn, (size_t)(T * row) * 4), *o_d = dev_poison(T * H * hd);
    int32_t *seq_d = up(seq, (size_t)T * 4), *pos_d = up(pos, (size_t)T * 4);
    int32_t *bt_d = up(bt, (size_t)(NS * maxb) * 4);
    float *oc = malloc((size_t)(T * H * hd) * 4), scale = 1.0f / sqrtf((float)hd);
    cpu.attention_paged(cpu.ctx, oc, q, kn, vn, kc, vc, T, seq, pos, bt, maxb, bs, H, KV, hd,
                        scale, win);
    lmc_backend_cuda_set_fp32_attention(&gpu, kvt == LMC_DTYPE_F32);
    gpu.attention_paged(gpu.ctx, o_d, q_d, kn_d, vn_d, kc_d, vc_d, T, seq_d, pos_d, bt_d, maxb,
                        bs, H, KV, hd, scale, win);
    lmc_backend_cuda_set_fp32_attention(&gpu, false);
    float *og = down(o_d, T * H * hd);
    double e = rel_err(og, oc, T * H * hd);
    /* the pool after the op equals the CPU's (every slot) */
    size_t es = kvt == LMC_DTYPE_F32 ? 4 : 2, pb = (size_t)(prow * row) * es;
    unsigned char *kg = malloc(pb), *vg = malloc(pb);
    gpu.download(gpu.ctx, kg, kc_d, pb);
    gpu.download(gpu.ctx, vg, vc_d, pb);
    bool same = true;
    for (int64_t i = 0; i < prow * row && same; i++) {
        float a, b;
        if (es == 4) memcpy(&a, kg + 4 * i, 4), memcpy(&b, vg + 4 * i, 4);
        else {
            uint16_t x, y;
            memcpy(&x, kg + 2 * i, 2), memcpy(&y, vg + 2 * i, 2);
            a = lmc_bf16_to_f32(x), b = lmc_bf16_to_f32(y);
        }
        same = a == kc[i] && b == vc[i];
    }
    CHECK_MSG(same, "attention_paged: pool slots differ from the CPU's (H=%lld KV=%lld hd=%lld bs=%lld)",
              (long long)H, (long long)KV, (long long)hd, (long long)bs);
    free(perm), free(bt), free(kc), free(vc), free(seq), free(pos), free(q), free(kn), free(vn);
    free(oc), free(og), free(kg), free(vg);
    dfree(kc_d), dfree(vc_d), dfree(q_d), dfree(kn_d), dfree(vn_d), dfree(o_d), dfree(seq_d);
    dfree(pos_d), dfree(bt_d);
    return e;
}

static void test_attention_paged(int quick) {
    /* NS, maxlen, H, KV, hd, bs, window */
    static const int64_t cfg[][7] = {
        {5, 41, 4, 4, 16, 16, 0},   {7, 60, 4, 2, 13, 5, 0},    {3, 33, 8, 2, 24, 1, 7},
        {9, 90, 32, 4, 64, 16, 0},  {1, 700, 32, 4, 64, 16, 0}, {2, 1500, 8, 1, 128, 32, 0},
        {1, 300, 6, 3, 80, 7, 50},  {17, 200, 16, 1, 96, 16, 0}, {40, 130, 32, 4, 64, 16, 0},
        {4, 257, 2, 1, 256, 3, 100}, {64, 140, 32, 4, 64, 16, 0}, {1, 3000, 12, 12, 64, 64, 0},
    };
    size_t n = sizeof cfg / sizeof *cfg;
    for (size_t c = 0; c < (quick ? 6 : n); c++)
        for (int d = 0; d < 2; d++) {
            enum lmc_dtype kvt = d ? LMC_DTYPE_BF16 : LMC_DTYPE_F32;
            for (int rep = 0; rep < 2; rep++) {
                double e = paged_case((int)cfg[c][0], cfg[c][1], cfg[c][2], cfg[c][3], cfg[c][4],
                                      cfg[c][5], cfg[c][6], kvt);
                record(E_ATTN_PAGED, e);
                CHECK_MSG(e <= 1e-5, "attention_paged vs cpu NS=%lld len<=%lld H=%lld KV=%lld "
                          "hd=%lld bs=%lld win=%lld kv %s: %g", (long long)cfg[c][0],
                          (long long)cfg[c][1], (long long)cfg[c][2], (long long)cfg[c][3],
                          (long long)cfg[c][4], (long long)cfg[c][5], (long long)cfg[c][6],
                          lmc_dtype_name(kvt), e);
            }
        }
}

/* argmax_rows: the GPU's ids equal the CPU's (a left-to-right first strict
 * maximum) on odd sizes, with ties, NaNs (also at index 0) and -inf rows. */
static void test_argmax_rows(void) {
    const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 511}, {2, 513}, {7, 1000}, {64, 32000},
                                 {3, 50257}, {1, 151937}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int64_t R = shapes[c][0], V = shapes[c][1];
        float *x = rand_f(R * V, 4.0f);
        for (int64_t r = 0; r < R; r++) {
            float *row = x + r * V;
            switch (r % 5) {
            case 1: /* a tie: the first one wins */
                if (V > 2) row[V / 3] = row[V - 1] = 9.0f;
                break;
            case 2: /* NaNs are never taken */
                for (int64_t i = 1; i < V; i += 3) row[i] = NAN;
                break;
            case 3: /* NaN at index 0: 0 */
                row[0] = NAN;
                break;
            case 4: /* all -inf but one */
                for (int64_t i = 0; i < V; i++) row[i] = -INFINITY;
                row[V / 2] = -1e30f;
                break;
            }
        }
        int32_t *want = malloc((size_t)R * sizeof *want), *got = malloc((size_t)R * sizeof *got);
        cpu.argmax_rows(cpu.ctx, want, x, R, V);
        float *d = up(x, (size_t)(R * V) * sizeof(float));
        gpu.argmax_rows(gpu.ctx, got, d, R, V);
        int bad = 0;
        for (int64_t r = 0; r < R; r++) bad += got[r] != want[r];
        CHECK_MSG(bad == 0, "argmax_rows %lld x %lld: %d rows differ", (long long)R, (long long)V,
                  bad);
        dfree(d);
        free(x);
        free(want);
        free(got);
    }
}

/* sample_rows: the GPU picks the CPU twin's id (the sampler's core) for the
 * same uniforms, over temperatures, top-k, top-p, min-p, odd vocab sizes,
 * rows with ties, -inf entries and a tied maximum. */
static void test_sample_rows(int quick) {
    const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 511}, {4, 1001}, {8, 32003}, {2, 151937}};
    const double temps[] = {0, 0.4, 1.0, 1.8};
    const int64_t topks[] = {0, 1, 7, 50, 2000};
    const double topps[] = {1.0, 0.95, 0.6, 0.1};
    const double minps[] = {0, 0.02, 0.5};
    uint64_t rng = 9191;
    long rows_checked = 0;
    size_t nshapes = sizeof shapes / sizeof *shapes;
    for (size_t s = 0; s < nshapes; s++) {
        int64_t R = shapes[s][0], V = shapes[s][1];
        float *x = rand_f(R * V, 5.0f);
        for (int64_t r = 0; r < R; r++) {
            float *row = x + r * V;
            if (r % 4 == 1) for (int64_t i = 0; i < V; i++) row[i] = (float)(int)(row[i] * 2) * 0.5f;
            if (r % 4 == 2) for (int64_t i = 1; i < V; i += 3) row[i] = -INFINITY;
            if (r % 4 == 3 && V > 3) row[V - 1] = row[1] = 9.0f;
        }
        float *d = up(x, (size_t)(R * V) * sizeof(float));
        struct lmc_sample_row *prm = malloc((size_t)R * sizeof *prm);
        int32_t *want = malloc((size_t)R * sizeof *want), *got = malloc((size_t)R * sizeof *got);
        int bad = 0, combos = 0;
        for (size_t a = 0; a < 4; a++) for (size_t b = 0; b < 5; b++) for (size_t c = 0; c < 4; c++)
        for (size_t e = 0; e < 3; e++) {
            if (quick && V > 100000 && (b + c + e) % 3) continue;
            for (int64_t r = 0; r < R; r++) {
                /* rows of one call differ in their parameters too */
                size_t bb = (b + (size_t)r) % 5;
                prm[r] = (struct lmc_sample_row){.temperature = temps[a], .top_p = topps[c],
                                                 .min_p = minps[e], .top_k = topks[bb],
                                                 .u = (double)(lmc_rng_next(&rng) >> 11) *
                                                      (1.0 / 9007199254740992.0)};
            }
            cpu.sample_rows(cpu.ctx, want, x, R, V, prm);
            gpu.sample_rows(gpu.ctx, got, d, R, V, prm);
            for (int64_t r = 0; r < R; r++) {
                if (got[r] != want[r] && bad < 5)
                    fprintf(stderr, "  sample_rows V %lld row %lld T %g k %lld p %g minp %g u %.17g: "
                            "gpu %d cpu %d\n", (long long)V, (long long)r, prm[r].temperature,
                            (long long)prm[r].top_k, prm[r].top_p, prm[r].min_p, prm[r].u,
                            got[r], want[r]);
                bad += got[r] != want[r];
            }
            rows_checked += R;
            combos++;
        }
        CHECK_MSG(bad == 0, "sample_rows %lld x %lld: %d of %d rows differ", (long long)R,
                  (long long)V, bad, (int)(combos * R));
        dfree(d);
        free(x);
        free(prm);
        free(want);
        free(got);
    }
    printf("  sample_rows: %ld rows checked against the CPU twin\n", rows_checked);
}

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick");
    if (lmc_cuda_device_count() == 0) {
        printf("test_ops_cuda: skipped: no CUDA device\n");
        return 0;
    }
    lmc_err err;
    if (lmc_backend_cpu_init(&cpu, 0, &err) || lmc_backend_cuda_init(&gpu, 0, &err)) {
        fprintf(stderr, "backend init: %s\n", err.msg);
        return 1;
    }
    test_matmul(quick);
    test_matmul_fused();
    test_rope_kv_store();
    test_embed();
    test_norms();
    test_rope();
    test_elementwise();
    test_argmax_rows();
    test_sample_rows(quick);
    test_attention_vs_cpu();
    test_attention_batch();
    test_attention_sizes(quick);
    test_attention_paged(quick);
    for (int i = 0; i < E_N; i++) printf("  max rel err %-22s %.3g\n", err_names[i], max_err[i]);
    lmc_backend_cuda_free(&gpu);
    lmc_backend_cpu_free(&cpu);
    return test_finish("test_ops_cuda");
}

#else

int main(void) {
    printf("test_ops_cuda: skipped: no CUDA device (built without CUDA)\n");
    return lmc_cuda_device_count() == 0 ? 0 : 1;
}

#endif
