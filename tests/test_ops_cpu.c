/* test_ops_cpu.c — the CPU backend's ops against float64 references written
 * here, on random non-zero inputs of odd sizes, every weight dtype, with 1,
 * 2 and 3 threads; plus the thread pool (every task exactly once, many runs
 * in a row, zero tasks). Prints the largest relative error seen per op. */
#include "core/core.h"
#include "core/membw.h"
#include "core/threadpool.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_f32.h"
#include "test.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define TOL 1e-5

static uint64_t rng = 12345;

enum { E_MATMUL, E_EMBED, E_RMS, E_LN, E_ROPE, E_ATTN, E_SWIGLU, E_GELU, E_GELU_T, E_ADD, E_N };
static const char *err_names[E_N] = {"matmul", "embed", "rmsnorm", "layernorm", "rope",
                                     "attention", "swiglu", "gelu(erf)", "gelu(tanh)", "add"};
static double max_err[E_N];

static void record(int op, double e) {
    if (e > max_err[op] || e != e) max_err[op] = e;
}

static float *rand_f(int64_t n, float scale) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = test_rand(&rng) * scale;
    return p;
}
static double *dalloc(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

/* ---- thread pool ---- */

struct count_job {
    _Atomic int *hits;
    int n_threads;
    _Atomic int bad_thread;
};

static void count_task(void *arg, int64_t t, int thread) {
    struct count_job *j = arg;
    atomic_fetch_add(&j->hits[t], 1);
    if (thread < 0 || thread >= j->n_threads) atomic_store(&j->bad_thread, 1);
}

static void test_pool(void) {
    for (int nt = 1; nt <= 4; nt++) {
        struct lmc_pool *pool;
        lmc_err err;
        CHECK(lmc_pool_init(&pool, nt, &err) == LMC_OK);
        CHECK(lmc_pool_threads(pool) == nt);
        static const int64_t sizes[] = {0, 1, 2, 3, 7, 1000};
        enum { MAXT = 1000 };
        _Atomic int *hits = malloc(MAXT * sizeof *hits);
        struct count_job j = {hits, nt, 0};
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            for (int i = 0; i < MAXT; i++) atomic_init(&hits[i], 0);
            lmc_pool_run(pool, sizes[s], count_task, &j);
            int ok = 1;
            for (int64_t i = 0; i < MAXT; i++) ok &= atomic_load(&hits[i]) == (i < sizes[s]);
            CHECK_MSG(ok, "threads %d tasks %lld", nt, (long long)sizes[s]);
        }
        /* many runs in a row: each task exactly once per run */
        for (int i = 0; i < MAXT; i++) atomic_init(&hits[i], 0);
        const int runs = 20000;
        for (int r = 0; r < runs; r++) lmc_pool_run(pool, 1 + r % 5, count_task, &j);
        int64_t expect[5] = {0}, ok = 1;
        for (int r = 0; r < runs; r++)
            for (int t = 0; t < 1 + r % 5; t++) expect[t]++;
        for (int t = 0; t < 5; t++) ok &= atomic_load(&hits[t]) == expect[t];
        CHECK_MSG(ok, "threads %d: repeated runs", nt);
        CHECK(atomic_load(&j.bad_thread) == 0);
        free(hits);
        lmc_pool_free(pool);
    }
    /* a pool with sleeping workers still wakes up */
    struct lmc_pool *pool;
    CHECK(lmc_pool_init(&pool, 3, NULL) == LMC_OK);
    _Atomic int hits[8];
    for (int i = 0; i < 8; i++) atomic_init(&hits[i], 0);
    struct count_job j = {hits, 3, 0};
    for (int r = 0; r < 3; r++) {
        struct timespec ts = {0, 3000000};
        nanosleep(&ts, NULL);
        lmc_pool_run(pool, 8, count_task, &j);
    }
    int ok = 1;
    for (int i = 0; i < 8; i++) ok &= atomic_load(&hits[i]) == 3;
    CHECK(ok);
    lmc_pool_free(pool);
    lmc_pool_free(NULL);
}

/* ---- matmul ---- */

static const enum lmc_dtype dtypes[3] = {LMC_DTYPE_F32, LMC_DTYPE_F16, LMC_DTYPE_BF16};

/* Random weights in dtype dt, and the same (rounded) values as double. */
static void *make_weights(enum lmc_dtype dt, int64_t n, double *ref) {
    void *w = malloc((size_t)n * (dt == LMC_DTYPE_F32 ? 4 : 2));
    for (int64_t i = 0; i < n; i++) {
        float f = test_rand(&rng);
        if (dt == LMC_DTYPE_F32) {
            ((float *)w)[i] = f;
            ref[i] = f;
        } else if (dt == LMC_DTYPE_F16) {
            uint16_t h = lmc_f32_to_f16(f);
            ((uint16_t *)w)[i] = h;
            ref[i] = lmc_f16_to_f32(h);
        } else {
            uint16_t h = lmc_f32_to_bf16(f);
            ((uint16_t *)w)[i] = h;
            ref[i] = lmc_bf16_to_f32(h);
        }
    }
    return w;
}

static void matmul_cases(struct lmc_backend *be, int path) {
    static const int64_t Ms[] = {1, 2, 3, 5, 9, 11, 17, 130};
    static const int64_t NK[][2] = {{131, 77}, {7, 5}, {64, 48}, {33, 200}, {4, 16}};
    for (size_t d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof NK / sizeof *NK; s++) {
            int64_t N = NK[s][0], K = NK[s][1];
            double *wr = dalloc(N * K);
            void *w0 = make_weights(dtypes[d], N * K, wr);
            /* weights at an element offset: W's alignment varies (mmapped files) */
            size_t es = (size_t)lmc_dtype_size(dtypes[d]), off = es * (s % 3);
            char *wd = malloc((size_t)(N * K) * es + 64);
            memcpy(wd + off, w0, (size_t)(N * K) * es);
            free(w0);
            struct lmc_mat w = {dtypes[d], N, K, wd + off};
            float *bias = rand_f(N, 1.0f);
            for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
                int64_t M = Ms[mi];
                float *x = rand_f(M * K, 1.0f), *y = rand_f(M * N, 1.0f);
                double *ref = dalloc(M * N);
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    for (int64_t m = 0; m < M; m++)
                        for (int64_t n = 0; n < N; n++) {
                            double acc = with_bias ? bias[n] : 0;
                            for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * wr[n * K + k];
                            ref[m * N + n] = acc;
                        }
                    be->matmul(be->ctx, y, x, M, &w, with_bias ? bias : NULL);
                    double e = test_rel_err_f32_f64(y, ref, M * N);
                    record(E_MATMUL, e);
                    CHECK_MSG(e <= TOL, "matmul %s M=%lld N=%lld K=%lld bias=%d gemm=%d: %g",
                              lmc_dtype_name(dtypes[d]), (long long)M, (long long)N,
                              (long long)K, with_bias, path, e);
                }
                free(x), free(y), free(ref);
            }
            free(wr), free(wd), free(bias);
        }
}

static void test_matmul(struct lmc_backend *be) {
    struct lmc_cpu_ctx *ctx = be->ctx;
    int64_t gemm_default = ctx->gemm_min_m, gemm16_default = ctx->gemm_min_m16, unit_default = ctx->mm_unit_bytes;
    int64_t pf_default = ctx->pf_min_m;
    /* the fp32 kernels, held to fp32 error: the bf16 prefill GEMM (from
     * pf_min_m rows, F16/BF16 weights) has its own test, test_matmul_pf */
    ctx->pf_min_m = 0;
    /* both paths at every M: our kernels only, and the GEMMs (OpenBLAS sgemm, ours for F16/BF16) from M = 12;
     * M < 4 also with tiny claim units (many units per thread, much stealing) */
    for (int path = 0; path < 3; path++) {
        ctx->gemm_min_m = ctx->gemm_min_m16 = path == 1 ? 12 : INT64_MAX;
        ctx->mm_unit_bytes = path == 2 ? 64 : unit_default;
        matmul_cases(be, path);
    }
    ctx->gemm_min_m = gemm_default;
    ctx->gemm_min_m16 = gemm16_default;
    ctx->mm_unit_bytes = unit_default;
    ctx->pf_min_m = pf_default;
}

/* F32 weights from 1024 rows (training's B*T): blocks of x's rows, every
 * matrix of a matmul_multi in one job (matmul.c's mm_rows): M = 1100 (three
 * blocks, the last partial), against float64, with and without biases;
 * matmul_multi's products equal matmul's bit for bit. */
static void test_matmul_rows(struct lmc_backend *be) {
    enum { NW = 3 };
    static const int64_t Ns[NW] = {288, 7, 131};
    int64_t M = 1100, K = 77;
    struct lmc_mat w[NW];
    const struct lmc_mat *wp[NW];
    double *wr[NW];
    float *bias[NW], *y[NW], *y1 = malloc((size_t)(M * 288) * sizeof(float));
    float *x = rand_f(M * K, 1.0f);
    for (int i = 0; i < NW; i++) {
        wr[i] = dalloc(Ns[i] * K);
        w[i] = (struct lmc_mat){LMC_DTYPE_F32, Ns[i], K, make_weights(LMC_DTYPE_F32, Ns[i] * K, wr[i])};
        wp[i] = &w[i];
        bias[i] = rand_f(Ns[i], 1.0f);
        y[i] = rand_f(M * Ns[i], 1.0f);
    }
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        be->matmul_multi(be->ctx, NW, y, x, M, wp, with_bias ? (const float *const *)bias : NULL);
        for (int i = 0; i < NW; i++) {
            double *ref = dalloc(M * Ns[i]);
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < Ns[i]; n++) {
                    double acc = with_bias ? bias[i][n] : 0;
                    for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * wr[i][n * K + k];
                    ref[m * Ns[i] + n] = acc;
                }
            double e = test_rel_err_f32_f64(y[i], ref, M * Ns[i]);
            record(E_MATMUL, e);
            CHECK_MSG(e <= TOL, "matmul_multi rows [%d] M=%lld N=%lld bias=%d: %g", i, (long long)M,
                      (long long)Ns[i], with_bias, e);
            be->matmul(be->ctx, y1, x, M, &w[i], with_bias ? bias[i] : NULL);
            CHECK_MSG(!memcmp(y1, y[i], (size_t)(M * Ns[i]) * sizeof(float)), "matmul rows [%d] = matmul_multi's", i);
            free(ref);
        }
    }
    for (int i = 0; i < NW; i++) free(wr[i]), free((void *)w[i].data), free(bias[i]), free(y[i]);
    free(x), free(y1);
}

/* matmul_multi: several weights (mixed dtypes, odd N, misaligned) sharing x,
 * biases present, absent or partly absent, groups larger than one job holds,
 * a matrix with no rows; against float64 references. */
static void test_matmul_multi(struct lmc_backend *be) {
    struct lmc_cpu_ctx *ctx = be->ctx;
    int64_t unit_default = ctx->mm_unit_bytes;
    enum { NW = 11 };
    static const int64_t Ns[NW] = {131, 7, 64, 0, 33, 257, 4, 3, 96, 13, 50};
    static const int64_t Ks[] = {77, 5, 200, 48, 1000};
    static const int64_t Ms[] = {1, 2, 3, 5, 17};
    static const int64_t units[] = {64, 700, 1 << 20};
    static const int counts[] = {1, 2, 3, 5, 8, 9, NW};
    for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
        int64_t K = Ks[ki];
        struct lmc_mat w[NW];
        const struct lmc_mat *wp[NW];
        double *wr[NW];
        void *wd[NW];
        float *bias[NW];
        for (int i = 0; i < NW; i++) {
            enum lmc_dtype dt = dtypes[(i + ki) % 3];
            size_t es = (size_t)lmc_dtype_size(dt), off = es * (size_t)((i + ki) % 5);
            wr[i] = dalloc(Ns[i] * K);
            void *w0 = make_weights(dt, Ns[i] * K, wr[i]);
            wd[i] = malloc((size_t)(Ns[i] * K) * es + 64);
            memcpy((char *)wd[i] + off, w0, (size_t)(Ns[i] * K) * es);
            free(w0);
            w[i] = (struct lmc_mat){dt, Ns[i], K, (char *)wd[i] + off};
            wp[i] = &w[i];
            bias[i] = rand_f(Ns[i], 1.0f);
        }
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
            int64_t M = Ms[mi];
            float *x = rand_f(M * K, 1.0f);
            float *y[NW];
            double *ref0[NW], *ref[NW]; /* without and with this case's bias */
            for (int i = 0; i < NW; i++) {
                y[i] = rand_f(M * Ns[i], 1.0f);
                ref0[i] = dalloc(M * Ns[i]);
                ref[i] = dalloc(M * Ns[i]);
                for (int64_t m = 0; m < M; m++)
                    for (int64_t r = 0; r < Ns[i]; r++) {
                        double acc = 0;
                        for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * wr[i][r * K + k];
                        ref0[i][m * Ns[i] + r] = acc;
                    }
            }
            for (size_t ui = 0; ui < sizeof units / sizeof *units; ui++)
                for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
                    for (int bmode = 0; bmode < 3; bmode++) { /* no biases, all, every other */
                        int n = counts[ci];
                        const float *bp[NW];
                        for (int i = 0; i < n; i++) {
                            bp[i] = bmode == 1 || (bmode == 2 && i % 2) ? bias[i] : NULL;
                            for (int64_t m = 0; m < M; m++)
                                for (int64_t r = 0; r < Ns[i]; r++)
                                    ref[i][m * Ns[i] + r] = ref0[i][m * Ns[i] + r] + (bp[i] ? bp[i][r] : 0);
                        }
                        ctx->mm_unit_bytes = units[ui];
                        be->matmul_multi(be->ctx, n, y, x, M, wp, bmode ? bp : NULL);
                        for (int i = 0; i < n; i++) {
                            double e = test_rel_err_f32_f64(y[i], ref[i], M * Ns[i]);
                            record(E_MATMUL, e);
                            CHECK_MSG(e <= TOL, "matmul_multi n=%d [%d] %s M=%lld N=%lld K=%lld unit=%lld bias=%d: %g",
                                      n, i, lmc_dtype_name(w[i].dtype), (long long)M, (long long)Ns[i],
                                      (long long)K, (long long)units[ui], bmode, e);
                        }
                        /* large M (one job over all W blocks with our GEMM): matmul's bits, matrix by matrix */
                        if (M >= ctx->gemm_min_m && ui == 0 && bmode == 2)
                            for (int i = 0; i < n; i++) {
                                float *y1 = rand_f(M * Ns[i], 1.0f);
                                be->matmul(be->ctx, y1, x, M, wp[i], bp[i]);
                                CHECK_MSG(!memcmp(y1, y[i], (size_t)(M * Ns[i]) * sizeof(float)),
                                          "matmul n=%d [%d] M=%lld K=%lld = matmul_multi's", n, i, (long long)M,
                                          (long long)K);
                                free(y1);
                            }
                    }
            free(x);
            for (int i = 0; i < NW; i++) free(y[i]), free(ref0[i]), free(ref[i]);
        }
        for (int i = 0; i < NW; i++) free(wr[i]), free(wd[i]), free(bias[i]);
    }
    ctx->mm_unit_bytes = unit_default;
}

static void test_embed(struct lmc_backend *be) {
    const int64_t V = 37, C = 45, n = 11;
    for (size_t d = 0; d < 3; d++) {
        double *tr = dalloc(V * C);
        void *td = make_weights(dtypes[d], V * C, tr);
        struct lmc_mat t = {dtypes[d], V, C, td};
        int32_t ids[11];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&rng) % V);
        ids[0] = 0, ids[1] = (int32_t)V - 1;
        float *y = rand_f(n * C, 1.0f);
        double *ref = dalloc(n * C);
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < C; c++) ref[i * C + c] = tr[ids[i] * C + c];
        be->embed(be->ctx, y, &t, ids, n);
        double e = test_rel_err_f32_f64(y, ref, n * C);
        record(E_EMBED, e);
        CHECK_MSG(e == 0, "embed %s: rel err %g", lmc_dtype_name(dtypes[d]), e);
        free(tr), free(td), free(y), free(ref);
    }
}

/* ---- norms ---- */

static void test_norms(struct lmc_backend *be) {
    static const int64_t shapes[][2] = {{1, 77}, {3, 64}, {17, 768}, {130, 13}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t M = shapes[s][0], C = shapes[s][1];
        for (int alias = 0; alias < 2; alias++)
            for (int offset = 0; offset < 2; offset++) {
                float *x = rand_f(M * C, 2.0f), *w = rand_f(C, 1.0f), *b = rand_f(C, 1.0f);
                for (int64_t i = 0; offset && i < M * C; i++) x[i] += 30.0f; /* mean >> spread */
                float *y = alias ? x : rand_f(M * C, 1.0f);
                double *r1 = dalloc(M * C), *r2 = dalloc(M * C);
                const double eps = 1e-5;
                for (int64_t m = 0; m < M; m++) {
                    const float *xr = x + m * C;
                    double ss = 0, mean = 0, var = 0;
                    for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c], mean += xr[c];
                    mean /= (double)C;
                    for (int64_t c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
                    var /= (double)C;
                    for (int64_t c = 0; c < C; c++) {
                        r1[m * C + c] = xr[c] / sqrt(ss / (double)C + eps) * w[c];
                        r2[m * C + c] = (xr[c] - mean) / sqrt(var + eps) * w[c] + b[c];
                    }
                }
                float *x2 = malloc((size_t)(M * C) * sizeof(float));
                memcpy(x2, x, (size_t)(M * C) * sizeof(float));
                be->rmsnorm(be->ctx, y, x, w, M, C, (float)eps);
                double e = test_rel_err_f32_f64(y, r1, M * C);
                record(E_RMS, e);
                CHECK_MSG(e <= TOL, "rmsnorm M=%lld C=%lld alias=%d: %g", (long long)M,
                          (long long)C, alias, e);
                float *y2 = alias ? x2 : y;
                be->layernorm(be->ctx, y2, x2, w, b, M, C, (float)eps);
                e = test_rel_err_f32_f64(y2, r2, M * C);
                record(E_LN, e);
                CHECK_MSG(e <= TOL, "layernorm M=%lld C=%lld alias=%d offset=%d: %g",
                          (long long)M, (long long)C, alias, offset, e);
                if (!alias) free(y);
                free(x), free(x2), free(w), free(b), free(r1), free(r2);
            }
    }
}

/* ---- rope ---- */

static void test_rope(struct lmc_backend *be) {
    static const int64_t cfg[][4] = {/* M, n_heads, head_dim, rot_dim */
                                     {5, 3, 14, 14}, {5, 3, 14, 8}, {1, 2, 64, 64},
                                     {9, 4, 64, 16}, {3, 2, 160, 150}, {33, 1, 6, 2}};
    for (size_t s = 0; s < sizeof cfg / sizeof *cfg; s++)
        for (int sc = 0; sc < 2; sc++) {
            int64_t M = cfg[s][0], H = cfg[s][1], D = cfg[s][2], R = cfg[s][3], n = M * H * D;
            float scale = sc ? 0.87f : 1.0f;
            float *x = rand_f(n, 1.0f);
            double *ref = dalloc(n), *inv = dalloc(R / 2);
            int32_t *pos = malloc((size_t)M * sizeof *pos);
            for (int64_t i = 0; i < R / 2; i++) inv[i] = pow(10000.0, -2.0 * (double)i / (double)R);
            for (int64_t m = 0; m < M; m++) pos[m] = (int32_t)(test_rng_next(&rng) % 4000);
            for (int64_t m = 0; m < M; m++)
                for (int64_t h = 0; h < H; h++) {
                    const float *xh = x + (m * H + h) * D;
                    double *rh = ref + (m * H + h) * D;
                    for (int64_t d = 0; d < D; d++) rh[d] = xh[d];
                    for (int64_t i = 0; i < R / 2; i++) {
                        double a = pos[m] * inv[i], c = cos(a) * scale, sn = sin(a) * scale;
                        rh[i] = xh[i] * c - xh[i + R / 2] * sn;
                        rh[i + R / 2] = xh[i + R / 2] * c + xh[i] * sn;
                    }
                }
            be->rope(be->ctx, x, M, H, D, R, pos, inv, scale);
            double e = test_rel_err_f32_f64(x, ref, n);
            record(E_ROPE, e);
            CHECK_MSG(e <= TOL, "rope M=%lld H=%lld D=%lld R=%lld: %g", (long long)M,
                      (long long)H, (long long)D, (long long)R, e);
            free(x), free(ref), free(inv), free(pos);
        }
    /* a prompt's rows (positions 0..M-1, no repeats) build the cos/sin table:
     * the same bits as the per-row formula of a context that never built one */
    struct lmc_backend b1;
    lmc_err err;
    CHECK(lmc_backend_cpu_init(&b1, 1, &err) == LMC_OK);
    int64_t M = 100, H = 3, D = 16, n = M * H * D;
    float *x = rand_f(n, 1.0f), *y = malloc((size_t)n * sizeof(float));
    double inv[8];
    int32_t pos[100];
    for (int i = 0; i < 8; i++) inv[i] = pow(10000.0, -2.0 * i / 16.0);
    for (int i = 0; i < M; i++) pos[i] = i;
    memcpy(y, x, (size_t)n * sizeof(float));
    be->rope(be->ctx, x, M, H, D, D, pos, inv, 0.9f);
    for (int64_t m = 0; m < M; m++) b1.rope(b1.ctx, y + m * H * D, 1, H, D, D, pos + m, inv, 0.9f);
    CHECK(memcmp(x, y, (size_t)n * sizeof(float)) == 0);
    free(x), free(y);
    lmc_backend_cpu_free(&b1);
}

/* rope at 2..16 rows within 16 positions (a speculative verification:
 * the backend keeps their cos/sin rows in the row slot) bit for bit the
 * per-row formula (2-row calls 1000 positions apart), between M = 1
 * calls that reuse the slot, odd sizes, positions in any order, past the
 * table's 65536 and back. */
static void test_rope_small_m(struct lmc_backend *be) {
    const int64_t H = 3, D = 26, R = 22, n = H * D;
    static const int32_t starts[] = {0, 5, 5, 6, 70000, 3, 40};
    double *inv = dalloc(R / 2);
    for (int64_t i = 0; i < R / 2; i++) inv[i] = pow(10000.0, -2.0 * (double)i / (double)R);
    for (size_t w = 0; w < sizeof starts / sizeof *starts; w++) {
        int64_t M = 2 + (int64_t)(w * 5) % 15;
        int32_t pos[16], one = starts[w] + 1;
        for (int64_t m = 0; m < M; m++) pos[m] = starts[w] + (int32_t)((m * 7) % M); /* a permutation */
        float *x = rand_f(M * n, 1.0f), *y = malloc((size_t)(2 * n) * sizeof *y), *z = rand_f(n, 1.0f);
        float *zr = malloc((size_t)(2 * n) * sizeof *zr);
        memcpy(zr, z, (size_t)n * sizeof *zr);
        memcpy(zr + n, z, (size_t)n * sizeof *zr);
        float *ref = malloc((size_t)(M * n) * sizeof *ref);
        for (int64_t m = 0; m < M; m++) {
            memcpy(y, x + m * n, (size_t)n * sizeof *y);
            memcpy(y + n, x + m * n, (size_t)n * sizeof *y);
            int32_t p2[2] = {pos[m], pos[m] + 1000};
            be->rope(be->ctx, y, 2, H, D, R, p2, inv, 0.75f);
            memcpy(ref + m * n, y, (size_t)n * sizeof *y);
        }
        be->rope(be->ctx, x, M, H, D, R, pos, inv, 0.75f);
        CHECK_MSG(!memcmp(x, ref, (size_t)(M * n) * sizeof *x), "rope small M=%lld from %d", (long long)M, starts[w]);
        be->rope(be->ctx, z, 1, H, D, R, &one, inv, 0.75f); /* the slot's row for one position */
        int32_t p2[2] = {one, one + 1000};
        be->rope(be->ctx, zr, 2, H, D, R, p2, inv, 0.75f);
        CHECK_MSG(!memcmp(z, zr, (size_t)n * sizeof *z), "rope M=1 after small M, pos %d", one);
        free(x), free(y), free(z), free(zr), free(ref);
    }
    free(inv);
}

/* rope at M = 1 (decode: the backend keeps the last position's cos/sin
 * row) bit for bit what the per-row formula gives (a 2-row call at
 * distinct positions), over a walk of positions that repeats, goes back,
 * and changes the frequencies in place (same pointer) and the scale. */
static void test_rope_row_cache(struct lmc_backend *be) {
    const int64_t H = 3, D = 24, R = 20, n = H * D;
    static const int32_t walk[] = {0, 0, 1, 1, 7, 7, 7, 3, 3, 70000, 70000, 8, 9, 9};
    double *inv = dalloc(R / 2);
    for (size_t w = 0; w < sizeof walk / sizeof *walk; w++) {
        double base = (w / 5) % 2 ? 500000.0 : 10000.0; /* the contents change, the pointer stays */
        for (int64_t i = 0; i < R / 2; i++) inv[i] = pow(base, -2.0 * (double)i / (double)R);
        float scale = w % 7 == 6 ? 0.5f : 1.0f;
        float *x = rand_f(n, 1.0f), *y = malloc((size_t)(2 * n) * sizeof *y);
        memcpy(y, x, (size_t)n * sizeof *y);
        memcpy(y + n, x, (size_t)n * sizeof *y);
        int32_t p1 = walk[w], p2[2] = {walk[w], walk[w] + 1000};
        be->rope(be->ctx, x, 1, H, D, R, &p1, inv, scale);
        be->rope(be->ctx, y, 2, H, D, R, p2, inv, scale);
        CHECK_MSG(!memcmp(x, y, (size_t)n * sizeof *x), "rope M=1 row cache, step %zu pos %d", w, p1);
        free(x), free(y);
    }
    free(inv);
}

/* The fused matmul_add (y += x W^T + b) and matmul_swiglu (silu(x Wg^T) *
 * (x Wu^T)) against float64 on odd sizes, for every weight type and on both
 * of their routes (M below the GEMM's rows, LMC_CPU_GEMM_MIN_M16: the ops
 * composed; from there with F16/BF16: our GEMM accumulating into y, silu per
 * 64-column task). Bits: 1 and 2 threads agree, and on our GEMM's route a
 * block of rows computed alone equals the same rows of a larger call (37
 * rows where the F16/BF16 GEMM starts at 33, AVX2; 13 elsewhere, as before). */
static void test_matmul_fused(struct lmc_backend *be) {
    static const int64_t Ms[] = {1, 5, 13, 37, 150};
    const int64_t alone = LMC_CPU_GEMM_MIN_M16 <= 37 ? 37 : 13;
    int64_t N = 131, K = 97;
    struct lmc_backend b1, b2;
    lmc_err err;
    CHECK(lmc_backend_cpu_init(&b1, 1, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_init(&b2, 2, &err) == LMC_OK);
    CHECK(be->matmul_add != NULL && be->matmul_swiglu != NULL);
    for (size_t d = 0; d < 3; d++)
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
            int64_t M = Ms[mi];
            double *wg = dalloc(N * K), *wu = dalloc(N * K);
            struct lmc_mat g = {dtypes[d], N, K, make_weights(dtypes[d], N * K, wg)};
            struct lmc_mat u = {dtypes[d], N, K, make_weights(dtypes[d], N * K, wu)};
            float *x = rand_f(M * K, 1.0f), *bias = rand_f(N, 1.0f), *y0 = rand_f(M * N, 1.0f);
            float *y = malloc((size_t)(M * N) * sizeof(float)), *y2 = malloc((size_t)(M * N) * sizeof(float));
            double *ref = dalloc(M * N);
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        double acc = (double)y0[m * N + n] + (with_bias ? bias[n] : 0);
                        for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * wg[n * K + k];
                        ref[m * N + n] = acc;
                    }
                memcpy(y, y0, (size_t)(M * N) * sizeof(float));
                be->matmul_add(be->ctx, y, x, M, &g, with_bias ? bias : NULL);
                double e = test_rel_err_f32_f64(y, ref, M * N);
                record(E_MATMUL, e);
                CHECK_MSG(e <= TOL, "matmul_add dt=%zu M=%lld bias=%d: %g", d, (long long)M, with_bias, e);
            }
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double a = 0, b = 0;
                    for (int64_t k = 0; k < K; k++) {
                        a += (double)x[m * K + k] * wg[n * K + k];
                        b += (double)x[m * K + k] * wu[n * K + k];
                    }
                    ref[m * N + n] = a / (1 + exp(-a)) * b;
                }
            be->matmul_swiglu(be->ctx, y, x, M, &g, &u);
            double e = test_rel_err_f32_f64(y, ref, M * N);
            record(E_MATMUL, e);
            CHECK_MSG(e <= TOL, "matmul_swiglu dt=%zu M=%lld: %g", d, (long long)M, e);
            /* the same bits with 1 and 2 threads, and (our GEMM: F16/BF16) for the first `alone` rows alone */
            b1.matmul_swiglu(b1.ctx, y, x, M, &g, &u);
            b2.matmul_swiglu(b2.ctx, y2, x, M, &g, &u);
            CHECK_MSG(!memcmp(y, y2, (size_t)(M * N) * sizeof(float)), "matmul_swiglu dt=%zu M=%lld: 1 vs 2 threads", d,
                      (long long)M);
            if (M > alone && dtypes[d] != LMC_DTYPE_F32) {
                b2.matmul_swiglu(b2.ctx, y2, x, alone, &g, &u);
                CHECK_MSG(!memcmp(y, y2, (size_t)(alone * N) * sizeof(float)), "matmul_swiglu dt=%zu: %lld rows alone", d,
                          (long long)alone);
            }
            memcpy(y, y0, (size_t)(M * N) * sizeof(float));
            memcpy(y2, y0, (size_t)(M * N) * sizeof(float));
            b1.matmul_add(b1.ctx, y, x, M, &g, bias);
            b2.matmul_add(b2.ctx, y2, x, M, &g, bias);
            CHECK_MSG(!memcmp(y, y2, (size_t)(M * N) * sizeof(float)), "matmul_add dt=%zu M=%lld: 1 vs 2 threads", d,
                      (long long)M);
            free(wg), free(wu), free((void *)g.data), free((void *)u.data), free(x), free(bias), free(y0), free(y);
            free(y2), free(ref);
        }
    lmc_backend_cpu_free(&b1);
    lmc_backend_cpu_free(&b2);
}

/* ---- attention ---- */

static void attn_ref(double *out, const float *q, const float *k, const float *v, int64_t M,
                     int64_t pos0, int64_t H, int64_t KV, int64_t D, double scale,
                     int64_t window) {
    double *s = dalloc(pos0 + M);
    for (int64_t m = 0; m < M; m++)
        for (int64_t h = 0; h < H; h++) {
            int64_t p = pos0 + m, g = h / (H / KV);
            int64_t lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
            const float *qh = q + (m * H + h) * D;
            double mx = -INFINITY, sum = 0;
            for (int64_t t = lo; t <= p; t++) {
                double acc = 0;
                for (int64_t d = 0; d < D; d++) acc += (double)qh[d] * k[(t * KV + g) * D + d];
                s[t] = acc * scale;
                if (s[t] > mx) mx = s[t];
            }
            for (int64_t t = lo; t <= p; t++) sum += (s[t] = exp(s[t] - mx));
            double *o = out + (m * H + h) * D;
            for (int64_t d = 0; d < D; d++) {
                double acc = 0;
                for (int64_t t = lo; t <= p; t++) acc += s[t] * v[(t * KV + g) * D + d];
                o[d] = acc / sum;
            }
        }
    free(s);
}

static void test_attention(struct lmc_backend *be) {
    static const int64_t cfg[][3] = {/* M, pos0, window */
                                     {1, 0, 0}, {1, 37, 0}, {1, 37, 5}, {5, 0, 0},
                                     {17, 9, 0}, {17, 9, 6}, {130, 0, 0}, {3, 60, 64},
                                     {2, 11, 0}, {4, 5, 3}, {7, 23, 0}, {31, 3, 0}, {11, 40, 4},
                                     /* blocks of queries (prefill): partial blocks, windows
                                      * across blocks, a cached prefix */
                                     {32, 0, 0}, {77, 0, 9}, {150, 41, 70}, {65, 200, 0}};
    static const int64_t heads[][3] = {{4, 4, 16}, {4, 2, 13}, {8, 2, 24}, {2, 1, 64}};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (size_t hh = 0; hh < sizeof heads / sizeof *heads; hh++) {
            int64_t M = cfg[c][0], pos0 = cfg[c][1], win = cfg[c][2];
            int64_t H = heads[hh][0], KV = heads[hh][1], D = heads[hh][2], T = pos0 + M;
            float scale = 1.0f / sqrtf((float)D);
            float *q = rand_f(M * H * D, 2.0f), *k = rand_f(T * KV * D, 2.0f);
            float *v = rand_f(T * KV * D, 1.0f), *out = rand_f(M * H * D, 1.0f);
            double *ref = dalloc(M * H * D);
            attn_ref(ref, q, k, v, M, pos0, H, KV, D, scale, win);
            be->attention(be->ctx, out, q, k, v, M, pos0, H, KV, D, scale, win);
            double e = test_rel_err_f32_f64(out, ref, M * H * D);
            record(E_ATTN, e);
            CHECK_MSG(e <= TOL, "attention M=%lld pos0=%lld win=%lld H=%lld KV=%lld D=%lld: %g",
                      (long long)M, (long long)pos0, (long long)win, (long long)H,
                      (long long)KV, (long long)D, e);
            if (M > 1 && M < 32) { /* decode rows (grouped per head): bit for bit one-row calls */
                float *o1 = malloc((size_t)(H * D) * sizeof *o1);
                for (int64_t m = 0; m < M; m++) {
                    be->attention(be->ctx, o1, q + m * H * D, k, v, 1, pos0 + m, H, KV, D, scale, win);
                    CHECK_MSG(!memcmp(o1, out + m * H * D, (size_t)(H * D) * sizeof *o1),
                              "attention M=%lld row %lld != its one-row call (pos0=%lld win=%lld H=%lld KV=%lld)",
                              (long long)M, (long long)m, (long long)pos0, (long long)win, (long long)H, (long long)KV);
                }
                free(o1);
            }
            free(q), free(k), free(v), free(out), free(ref);
        }
}

/* Decode attention (fewer rows than a prefill block) bit for bit the
 * per-key formula the paged and KV-quantized kernels share: s = scale *
 * lmc_cpu_dot per key, lmc_cpu_exp_sum, o = sum of lmc_cpu_axpy per key
 * times (float)(1 / sum) (attention.c's weighted_sum holds 64, then 32 columns in
 * registers over all keys): key counts not a multiple of 4, head sizes not
 * a multiple of 8, 16, 32 or 64, windows. A guard for kernel changes that
 * must keep the bits (spec23 tried 4-key scores and 64-column sums). */
static void test_attention_formula_bits(struct lmc_backend *be) {
    static const int64_t cfg[][3] = {/* M, pos0, window */
                                     {1, 0, 0}, {1, 6, 0}, {5, 38, 0}, {6, 200, 0}, {3, 17, 5}, {2, 9, 4}};
    static const int64_t Ds[] = {64, 8, 24, 40, 72, 13, 128, 100};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (size_t di = 0; di < sizeof Ds / sizeof *Ds; di++) {
            int64_t M = cfg[c][0], pos0 = cfg[c][1], win = cfg[c][2], H = 3, KV = 3, D = Ds[di], T = pos0 + M;
            float scale = 1.0f / sqrtf((float)D);
            float *q = rand_f(M * H * D, 2.0f), *k = rand_f(T * KV * D, 2.0f), *v = rand_f(T * KV * D, 1.0f);
            float *out = rand_f(M * H * D, 1.0f), *o = malloc((size_t)D * sizeof *o);
            float *s = malloc((size_t)T * sizeof *s);
            be->attention(be->ctx, out, q, k, v, M, pos0, H, KV, D, scale, win);
            bool same = true;
            for (int64_t m = 0; m < M; m++)
                for (int64_t h = 0; h < H; h++) {
                    int64_t p = pos0 + m, lo = win > 0 && p - win + 1 > 0 ? p - win + 1 : 0, n = p - lo + 1;
                    const float *qh = q + (m * H + h) * D;
                    float mx = -INFINITY;
                    for (int64_t i = 0; i < n; i++) {
                        s[i] = scale * lmc_cpu_dot(qh, k + ((lo + i) * KV + h) * D, D);
                        if (s[i] > mx) mx = s[i];
                    }
                    double sum = lmc_cpu_exp_sum(s, n, mx);
                    memset(o, 0, (size_t)D * sizeof *o);
                    for (int64_t i = 0; i < n; i++) lmc_cpu_axpy(o, s[i], v + ((lo + i) * KV + h) * D, D);
                    float inv = (float)(1.0 / sum);
                    for (int64_t d = 0; d < D; d++) o[d] *= inv;
                    same = same && !memcmp(o, out + (m * H + h) * D, (size_t)D * sizeof *o);
                }
            CHECK_MSG(same, "attention M=%lld pos0=%lld win=%lld D=%lld: not the per-key formula's bits", (long long)M,
                      (long long)pos0, (long long)win, (long long)D);
            free(q), free(k), free(v), free(out), free(o), free(s);
        }
}

/* Prefill blocks stack the query heads of one kv head into one product
 * (attention_prefill.c): the bits must be those of one head per product,
 * i.e. of the same K/V repeated for every query head (KV = H). Largest
 * blocks run first; neither may change a bit. (Our GEMM's sums do not
 * depend on M; OpenBLAS, used without AVX2, makes no such promise.) */
static void test_attention_gqa_bits(struct lmc_backend *be) {
    if (!lmc_cpu_gemm_f32_native()) return;
    static const int64_t cfg[][6] = {/* M, pos0, window, H, KV, D */
                                     {150, 41, 0, 6, 2, 24}, {97, 0, 0, 8, 2, 19}, {77, 30, 33, 12, 4, 64},
                                     {49, 0, 0, 3, 1, 8}};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        int64_t M = cfg[c][0], pos0 = cfg[c][1], win = cfg[c][2], H = cfg[c][3], KV = cfg[c][4], D = cfg[c][5];
        int64_t T = pos0 + M, g = H / KV;
        float scale = 1.0f / sqrtf((float)D);
        float *q = rand_f(M * H * D, 2.0f), *k = rand_f(T * KV * D, 2.0f), *v = rand_f(T * KV * D, 1.0f);
        float *kx = rand_f(T * H * D, 1.0f), *vx = rand_f(T * H * D, 1.0f);
        float *o1 = rand_f(M * H * D, 1.0f), *o2 = rand_f(M * H * D, 1.0f);
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                memcpy(kx + (t * H + h) * D, k + (t * KV + h / g) * D, (size_t)D * sizeof(float));
                memcpy(vx + (t * H + h) * D, v + (t * KV + h / g) * D, (size_t)D * sizeof(float));
            }
        be->attention(be->ctx, o1, q, k, v, M, pos0, H, KV, D, scale, win);
        be->attention(be->ctx, o2, q, kx, vx, M, pos0, H, H, D, scale, win);
        CHECK_MSG(memcmp(o1, o2, (size_t)(M * H * D) * sizeof(float)) == 0,
                  "attention M=%lld H=%lld KV=%lld: stacked heads change bits", (long long)M, (long long)H,
                  (long long)KV);
        free(q), free(k), free(v), free(kx), free(vx), free(o1), free(o2);
    }
}

/* ---- elementwise ---- */

/* swiglu split into tasks (from 2048 elements, boundaries on multiples of
 * 16: spec23's 3-6 verification rows of a 1536-wide MLP) bit for bit one
 * span over all n (lmc_cpu_swiglu_span: the 8/16-lane groups from 0, the
 * scalar tail at the end). */
static void test_swiglu_split_bits(struct lmc_backend *be) {
    static const int64_t sizes[] = {1536, 2047, 2061, 4613, 7680, 7693, 9216 + 5};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int64_t n = sizes[s];
        float *g = rand_f(n, 12.0f), *u = rand_f(n, 3.0f), *y = rand_f(n, 1.0f), *y1 = rand_f(n, 1.0f);
        be->swiglu(be->ctx, y, g, u, n);
        lmc_cpu_swiglu_span(y1, g, u, n);
        CHECK_MSG(!memcmp(y, y1, (size_t)n * sizeof *y), "swiglu n=%lld: tasks change bits", (long long)n);
        free(g), free(u), free(y), free(y1);
    }
}

static void test_elementwise(struct lmc_backend *be) {
    static const int64_t sizes[] = {1, 13, 100003};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int alias = 0; alias < 2; alias++) {
            int64_t n = sizes[s];
            float *a = rand_f(n, 12.0f), *b = rand_f(n, 3.0f);
            float *y = alias ? a : rand_f(n, 1.0f);
            float *a0 = malloc((size_t)n * sizeof(float));
            double *ref = dalloc(n);
            double e;
            memcpy(a0, a, (size_t)n * sizeof(float));

            for (int64_t i = 0; i < n; i++) ref[i] = a0[i] / (1.0 + exp(-(double)a0[i])) * b[i];
            be->swiglu(be->ctx, y, a, b, n);
            record(E_SWIGLU, e = test_rel_err_f32_f64(y, ref, n));
            CHECK_MSG(e <= TOL, "swiglu n=%lld alias=%d: %g", (long long)n, alias, e);

            for (int tanh_approx = 0; tanh_approx < 2; tanh_approx++) {
                memcpy(a, a0, (size_t)n * sizeof(float));
                for (int64_t i = 0; i < n; i++) {
                    double x = a0[i];
                    /* 0.5 x (1 + tanh u) = x sigmoid(2u), without the cancellation */
                    ref[i] = tanh_approx
                                 ? x / (1 + exp(-2 * sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)))
                                 : 0.5 * x * erfc(-x / sqrt(2.0));
                }
                be->gelu(be->ctx, y, a, n, tanh_approx);
                record(tanh_approx ? E_GELU_T : E_GELU, e = test_rel_err_f32_f64(y, ref, n));
                CHECK_MSG(e <= TOL, "gelu n=%lld tanh=%d alias=%d: %g", (long long)n,
                          tanh_approx, alias, e);
            }

            memcpy(a, a0, (size_t)n * sizeof(float));
            for (int64_t i = 0; i < n; i++) ref[i] = (double)a0[i] + b[i];
            be->add(be->ctx, y, a, b, n);
            record(E_ADD, e = test_rel_err_f32_f64(y, ref, n));
            CHECK_MSG(e <= TOL, "add n=%lld alias=%d: %g", (long long)n, alias, e);

            if (!alias) free(y);
            free(a), free(b), free(a0), free(ref);
        }
}

/* exp at the edges of its range, through swiglu: silu(g) * 1 */
static void test_extremes(struct lmc_backend *be) {
    float g[16] = {-100, -88.5f, -87, -50, -1e-30f, 0, 1e-30f, 1, 20, 50, 87, 88.5f, 89, 100,
                   -3.5f, 3.5f};
    float one[16], y[16];
    for (int i = 0; i < 16; i++) one[i] = 1.0f;
    be->swiglu(be->ctx, y, g, one, 16);
    int ok = 1;
    for (int i = 0; i < 16; i++) {
        double r = g[i] / (1.0 + exp(-(double)g[i]));
        ok &= fabs(y[i] - r) <= 1e-6 * fmax(1.0, fabs(r));
    }
    CHECK(ok);
}

int main(void) {
    test_pool();
    for (int nt = 1; nt <= 3; nt++) {
        struct lmc_backend be;
        lmc_err err;
        lmc_status st = lmc_backend_cpu_init(&be, nt, &err);
        CHECK(st == LMC_OK);
        if (st != LMC_OK) continue;
        test_matmul(&be);
        test_matmul_multi(&be);
        test_matmul_rows(&be);
        test_embed(&be);
        test_norms(&be);
        test_rope(&be);
        test_rope_small_m(&be);
        test_rope_row_cache(&be);
        test_matmul_fused(&be);
        test_attention(&be);
        test_attention_gqa_bits(&be);
        test_attention_formula_bits(&be);
        test_elementwise(&be);
        test_swiglu_split_bits(&be);
        test_extremes(&be);
        lmc_backend_cpu_free(&be);
    }
    {
        struct lmc_pool *pool;
        CHECK(lmc_pool_init(&pool, 2, NULL) == LMC_OK);
        CHECK(lmc_membw_read_gbs(pool, 1 << 20) > 0);
        lmc_pool_free(pool);
    }
    for (int i = 0; i < E_N; i++) printf("  max rel err %-10s %.3g\n", err_names[i], max_err[i]);
    return test_finish("test_ops_cpu");
}
