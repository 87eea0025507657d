/* bench_matmul.c — the CPU backend's matmul against its rooflines:
 *  - M=1 (decode): GB/s of weights streamed, against the measured
 *    multi-threaded streaming-read bandwidth of a >= 1 GB buffer. Weights
 *    are cycled through enough copies (>= 256 MB) that they come from DRAM,
 *    as a real model's do; a cache-resident figure is printed beside it.
 *  - M=512 (prefill): GFLOP/s of our default path and of our sgemm path
 *    (OpenBLAS per W block on our threads, F16/BF16 blocks converted first)
 *    against plain cblas_sgemm on f32 weights of the same shape, OpenBLAS
 *    using the same number of threads itself.
 * Usage: bench_matmul [threads (default 2)] [--quick] [--decode (M=1 only)] */
#include "core/core.h"
#include "core/membw.h"
#include "core/threadpool.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "bench_util.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void noop_task(void *arg, int64_t t, int thread) { (void)arg, (void)t, (void)thread; }

static void fill_weights(void *w, enum lmc_dtype dt, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        float f = (float)((seed >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        if (dt == LMC_DTYPE_F32) ((float *)w)[i] = f;
        else if (dt == LMC_DTYPE_F16) ((uint16_t *)w)[i] = lmc_f32_to_f16(f);
        else ((uint16_t *)w)[i] = lmc_f32_to_bf16(f);
    }
}

#define MAXREP 400

/* Median seconds per call of our matmul, cycling over n_copies weight copies. */
static double time_ours(struct lmc_backend *be, float *y, const float *x, int64_t M,
                        struct lmc_mat *w, int n_copies, size_t wbytes, double budget_s) {
    double t[MAXREP];
    const char *base = w->data;
    int n = 0;
    double start = lmc_time_now();
    for (int warm = 0; warm < 2; warm++) be->matmul(be->ctx, y, x, M, w, NULL);
    for (; n < MAXREP && (n < 3 || lmc_time_now() - start < budget_s); n++) {
        struct lmc_mat wc = *w;
        wc.data = base + (size_t)(n % n_copies) * wbytes;
        double t0 = lmc_time_now();
        be->matmul(be->ctx, y, x, M, &wc, NULL);
        t[n] = lmc_time_now() - t0;
    }
    return bench_median(t, n);
}

static double time_sgemm(float *y, const float *x, int64_t M, int64_t N, int64_t K,
                         const float *w, double budget_s) {
    double t[MAXREP];
    int n = 0;
    double start = lmc_time_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x,
                (int)K, w, (int)K, 0.0f, y, (int)N);
    for (; n < MAXREP && (n < 3 || lmc_time_now() - start < budget_s); n++) {
        double t0 = lmc_time_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x,
                    (int)K, w, (int)K, 0.0f, y, (int)N);
        t[n] = lmc_time_now() - t0;
    }
    return bench_median(t, n);
}

int main(int argc, char **argv) {
    int threads = 2, quick = 0, decode_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--decode")) decode_only = 1;
        else threads = atoi(argv[i]);
    }
    if (threads < 1) threads = 2;
    double budget = quick ? 0.1 : 0.4;
    static const int64_t shapes[][2] = {{256, 768}, {768, 768}, {2048, 768}, {768, 2048},
                                        {32000, 768}};
    static const enum lmc_dtype dts[] = {LMC_DTYPE_F32, LMC_DTYPE_F16, LMC_DTYPE_BF16};
    const int64_t MP = 512;
    lmc_err err;

    struct lmc_pool *pool;
    if (lmc_pool_init(&pool, threads, &err) != LMC_OK) {
        fprintf(stderr, "bench_matmul: %s\n", err.msg);
        return 1;
    }
    /* best of two measurements: the machine may be shared */
    double bw = LMC_MAX(lmc_membw_read_gbs(pool, (size_t)1 << 30),
                        lmc_membw_read_gbs(pool, (size_t)1 << 30));
    double bw1 = lmc_membw_read_gbs(NULL, (size_t)1 << 30);
    double t0 = lmc_time_now();
    const int runs = 20000;
    for (int r = 0; r < runs; r++) lmc_pool_run(pool, threads, noop_task, NULL);
    double us_run = (lmc_time_now() - t0) / runs * 1e6;
    lmc_pool_free(pool);
    printf("pool dispatch: %.2f us per run of %d empty tasks\n", us_run, threads);
    printf("threads %d; streaming read of 1 GiB: %.2f GB/s (%d threads), %.2f GB/s (1 thread)\n\n",
           threads, bw, threads, bw1);

    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &err) != LMC_OK) {
        fprintf(stderr, "bench_matmul: %s\n", err.msg);
        return 1;
    }
    float *x = malloc((size_t)MP * 32000 * sizeof(float));
    float *y = malloc((size_t)MP * 32000 * sizeof(float));
    fill_weights(x, LMC_DTYPE_F32, MP * 32000, 7);

    printf("%-12s %-5s | %9s %8s %8s %7s | %8s %8s %8s %8s %7s %7s\n", "N x K", "dtype",
           "M=1 us", "GB/s", "(cache)", "%bw", "M=512 ms", "GFLOP/s", "via-sgemm", "sgemm",
           "ratio", "ratio2");
    printf("-------------------+----------------------------------------+-----------------"
           "----------------------------------------\n");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1];
        double flops = 2.0 * (double)MP * (double)N * (double)K, t_blas;
        /* plain OpenBLAS, its own threads, f32 weights */
        {
            float *wf = malloc((size_t)(N * K) * sizeof(float));
            fill_weights(wf, LMC_DTYPE_F32, N * K, 11);
            openblas_set_num_threads(threads);
            t_blas = decode_only ? 1 : time_sgemm(y, x, MP, N, K, wf, budget * 2);
            openblas_set_num_threads(1);
            free(wf);
            struct timespec ts = {0, 20000000}; /* let OpenBLAS's threads go idle */
            nanosleep(&ts, NULL);
        }
        for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
            size_t wbytes = (size_t)(N * K) * (size_t)lmc_dtype_size(dts[d]);
            int copies = (int)(((size_t)256 << 20) / wbytes) + 1;
            char *w = malloc(wbytes * (size_t)copies);
            fill_weights(w, dts[d], N * K, 3 + d);
            for (int c = 1; c < copies; c++) memcpy(w + (size_t)c * wbytes, w, wbytes);
            struct lmc_mat m = {dts[d], N, K, w};
            double t1 = time_ours(&be, y, x, 1, &m, copies, wbytes, budget);
            double t1c = time_ours(&be, y, x, 1, &m, 1, wbytes, budget * 0.5);
            double tp = decode_only ? 1 : time_ours(&be, y, x, MP, &m, 1, wbytes, budget * 2);
            struct lmc_cpu_ctx *cc = be.ctx;
            int64_t gm = cc->gemm_min_m, gm16 = cc->gemm_min_m16;
            cc->gemm_min_m = cc->gemm_min_m16 = 1;
            double tg = decode_only ? 1 : time_ours(&be, y, x, MP, &m, 1, wbytes, budget * 2);
            cc->gemm_min_m = gm, cc->gemm_min_m16 = gm16;
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)N, (long long)K);
            printf("%-12s %-5s | %9.1f %8.2f %8.2f %6.1f%% |", shape, lmc_dtype_name(dts[d]),
                   t1 * 1e6, (double)wbytes / t1 * 1e-9, (double)wbytes / t1c * 1e-9,
                   100.0 * (double)wbytes / t1 * 1e-9 / bw);
            if (decode_only) printf("        -\n");
            else
                printf(" %8.2f %8.1f %8.1f %8.1f %6.1f%% %6.1f%%\n", tp * 1e3, flops / tp * 1e-9,
                       flops / tg * 1e-9, flops / t_blas * 1e-9, 100.0 * t_blas / tp,
                       100.0 * t_blas / tg);
            free(w);
        }
    }
    printf("\nGB/s: weight bytes / median time, weights cycled over >= 256 MB of copies "
           "(cache: one copy, cache-resident when small);\n%%bw: of the streaming-read "
           "bandwidth above. M=512: our default path; via-sgemm: our OpenBLAS path "
           "(single-threaded sgemm per W block on our threads).\nsgemm: plain cblas_sgemm, "
           "f32 weights, %d OpenBLAS threads; ratio = sgemm time / ours, ratio2 = sgemm time "
           "/ via-sgemm.\n", threads);
    free(x);
    free(y);
    lmc_backend_cpu_free(&be);
    return 0;
}
