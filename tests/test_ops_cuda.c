/* test_ops_cuda.c — the CUDA backend's ops against their CPU twins on
 * random non-zero inputs of odd sizes (both tables called on the same
 * inputs), and the attention kernels against a float64 reference at
 * S = 1, 7, 128, 1000, 4097, 16384, GQA ratios 1, 4, 8, head dims 64, 80,
 * 96, 128, in prefill, chunked-prefill and decode shapes. Every output is
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

static uint64_t rng = 777;
static struct lmc_backend cpu, gpu;

enum { E_MM_F32, E_MM_LO_SMALL, E_MM_BF16, E_MM_F16, E_EMBED, E_RMS, E_LN, E_ROPE, E_SWIGLU,
       E_GELU, E_ADD, E_ATTN_F32_CPU, E_ATTN_F32, E_ATTN_TC, E_N };
static const char *err_names[E_N] = {"matmul f32", "matmul bf16/f16 M<=8", "matmul bf16",
                                     "matmul f16", "embed", "rmsnorm", "layernorm", "rope",
                                     "swiglu", "gelu", "add", "attn f32 vs cpu",
                                     "attn f32 vs f64", "attn tc vs f64"};
static double max_err[E_N];
static void record(int op, double e) {
    if (e > max_err[op] || e != e) max_err[op] = e;
}

static float *rand_f(int64_t n, float scale) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = test_rand(&rng) * scale;
    return p;
}

/* device copy of host data */
static void *up(const void *h, size_t bytes) {
    void *d = gpu.alloc(gpu.ctx, bytes);
    LMC_ASSERT(d != NULL);
    gpu.upload(gpu.ctx, d, h, bytes);
    return d;
}
/* device buffer of n floats filled with NaN */
static float *dev_poison(int64_t n) {
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    float *d = up(h, (size_t)n * sizeof(float));
    free(h);
    return d;
}
static float *down(const float *d, int64_t n) {
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    gpu.download(gpu.ctx, h, d, (size_t)n * sizeof(float));
    return h;
}
static void dfree(void *d) { gpu.free(gpu.ctx, d); }

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
                        enum lmc_cuda_attn_kind kind, float qscale, int64_t max_rows) {
    int64_t T = pos0 + M;
    float scale = 1.0f / sqrtf((float)D);
    float *q = rand_f(M * H * D, qscale), *k = rand_f(T * KV * D, 2.0f), *v = rand_f(T * KV * D, 1.0f);
    if (qscale > 10) { /* peaked: bf16-exact inputs, so only the kernel's own rounding counts */
        float *bufs[3] = {q, k, v};
        int64_t lens[3] = {M * H * D, T * KV * D, T * KV * D};
        for (int b = 0; b < 3; b++)
            for (int64_t i = 0; i < lens[b]; i++) bufs[b][i] = lmc_bf16_to_f32(lmc_f32_to_bf16(bufs[b][i]));
    }
    float *q_d = up(q, (size_t)(M * H * D) * 4), *k_d = up(k, (size_t)(T * KV * D) * 4);
    float *v_d = up(v, (size_t)(T * KV * D) * 4), *o_d = dev_poison(M * H * D);
    enum lmc_cuda_attn_kind ran = lmc_cuda_attention_ex(gpu.ctx, o_d, q_d, k_d, v_d, M, pos0, H, KV,
                                                        D, scale, win, 1, 0, 0, kind);
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
            lmc_cuda_attention_ex(gpu.ctx, o_d, q_d, k_d, v_d, M, pos0, H, KV, D, scale, win, 1, 0,
                                  0, LMC_CUDA_ATTN_F32);
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
                for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32; kind++) {
                    double e = attn_case(shapes[sh].M, shapes[sh].pos0, H, KV, D, shapes[sh].win,
                                         (enum lmc_cuda_attn_kind)kind, 2.0f, rows);
                    double tol = kind == LMC_CUDA_ATTN_TC ? 2e-2 : 1e-4;
                    record(kind == LMC_CUDA_ATTN_TC ? E_ATTN_TC : E_ATTN_F32, e);
                    CHECK_MSG(e <= tol, "attention %s %s S=%lld H=%lld KV=%lld D=%lld: %g",
                              kind == LMC_CUDA_ATTN_TC ? "tc" : "f32", shapes[sh].what,
                              (long long)S, (long long)H, (long long)KV, (long long)D, e);
                    if (si == nS - 1 && ri == 0 && sh == 0)
                        printf("  attention S=%lld %s: rel err %.3g\n", (long long)S,
                               kind == LMC_CUDA_ATTN_TC ? "tc" : "f32", e);
                }
        }
    /* peaked softmax (logits in the hundreds): no NaN, and exact but for
     * the kernel's rounding of P to bf16 */
    for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32; kind++) {
        double e = attn_case(300, 5, 4, 2, 128, 0, (enum lmc_cuda_attn_kind)kind, 60.0f, 300);
        CHECK_MSG(e <= (kind == LMC_CUDA_ATTN_TC ? 2e-2 : 1e-4), "attention peaked kind %d: %g", kind, e);
    }
}

/* batch > 1 through the extended launcher equals per-sequence calls */
static void test_attention_batch(void) {
    const int64_t B = 3, M = 77, H = 4, KV = 2, D = 64;
    int64_t qs = M * H * D, ks = M * KV * D;
    float *q = rand_f(B * qs, 2.0f), *k = rand_f(B * ks, 2.0f), *v = rand_f(B * ks, 1.0f);
    float *q_d = up(q, (size_t)(B * qs) * 4), *k_d = up(k, (size_t)(B * ks) * 4);
    float *v_d = up(v, (size_t)(B * ks) * 4), *o1 = dev_poison(B * qs), *o2 = dev_poison(B * qs);
    for (int kind = LMC_CUDA_ATTN_TC; kind <= LMC_CUDA_ATTN_F32; kind++) {
        lmc_cuda_attention_ex(gpu.ctx, o1, q_d, k_d, v_d, M, 0, H, KV, D, 0.125f, 0, B, qs, ks,
                              (enum lmc_cuda_attn_kind)kind);
        for (int64_t b = 0; b < B; b++)
            lmc_cuda_attention_ex(gpu.ctx, o2 + b * qs, q_d + b * qs, k_d + b * ks, v_d + b * ks, M,
                                  0, H, KV, D, 0.125f, 0, 1, 0, 0, (enum lmc_cuda_attn_kind)kind);
        float *a = down(o1, B * qs), *b = down(o2, B * qs);
        CHECK_MSG(rel_err(a, b, B * qs) == 0, "attention batch kind %d", kind);
        free(a), free(b);
    }
    free(q), free(k), free(v);
    dfree(q_d), dfree(k_d), dfree(v_d), dfree(o1), dfree(o2);
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
    test_embed();
    test_norms();
    test_rope();
    test_elementwise();
    test_attention_vs_cpu();
    test_attention_batch();
    test_attention_sizes(quick);
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
