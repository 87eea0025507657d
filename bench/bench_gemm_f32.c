/* bench_gemm_f32.c — our AVX2 fp32 GEMM (ops/cpu/gemm_f32.c) against
 * OpenBLAS sgemm (single-threaded calls) on the shapes lmc runs through
 * them: prefill x @ W^T (M = 512 tokens; W as F32 and as F16, which
 * OpenBLAS needs converted first: that conversion is timed with it, as
 * matmul.c did it) and the default model's training products (M = 4096 /
 * 2048 tokens, each transposition the trainer uses). Threads t = 1 or 2
 * split N into halves, each thread one call (the way matmul.c splits W).
 * Interleaved repeats, medians; GFLOP/s of wall time and GFLOP per
 * CPU-second (process CPU time: robust to other load on the machine),
 * the latter as % of the FMA peak given (GFLOP/s per core, default 102).
 * Usage: bench_gemm_f32 [reps=5] [peak=102] [only shapes whose name contains this] */
#include "core/dtype.h"
#include "ops/cpu/gemm_f32.h"

#include "bench_util.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct call {
    int ours, ta, tb;
    int64_t M, N, K, lda, ldb;
    const float *A;
    const void *B; /* F32 or F16 */
    enum lmc_dtype dt;
    float *C, *ws, *conv;
    int64_t n0, n1;
};

static void *run_call(void *arg) {
    struct call *c = arg;
    int64_t nn = c->n1 - c->n0;
    float *C = c->C + c->n0;
    if (c->ours) {
        int64_t es = c->dt == LMC_DTYPE_F32 ? 4 : 2;
        const char *B = (const char *)c->B + (c->tb ? c->n0 * c->ldb : c->n0) * es;
        lmc_cpu_gemm_f32(c->ta, c->tb, c->M, nn, c->K, 1.0f, c->A, c->lda, B, c->dt, c->ldb, 0.0f, C, c->N, c->ws);
        return NULL;
    }
    const float *B = (const float *)c->B + (c->tb ? c->n0 * c->ldb : c->n0);
    if (c->dt == LMC_DTYPE_F16) { /* matmul.c's old path: W rows (tb) converted into scratch first */
        const uint16_t *w = (const uint16_t *)c->B + c->n0 * c->ldb;
        for (int64_t i = 0; i < nn * c->K; i++) c->conv[i] = lmc_f16_to_f32(w[i]);
        B = c->conv;
    }
    cblas_sgemm(CblasRowMajor, c->ta ? CblasTrans : CblasNoTrans, c->tb ? CblasTrans : CblasNoTrans, (int)c->M,
                (int)nn, (int)c->K, 1.0f, c->A, (int)c->lda, B, (int)c->ldb, 0.0f, C, (int)c->N);
    return NULL;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    double peak = argc > 2 ? atof(argv[2]) : 102.0;
    if (reps < 1 || reps > 100) reps = 5;
    openblas_set_num_threads(1);
    static const struct { const char *name; int M, N, K, ta, tb, f16; } sh[] = {
        {"prefill x@W^T f32", 512, 128, 768, 0, 1, 0},   {"prefill x@W^T f32", 512, 768, 768, 0, 1, 0},
        {"prefill x@W^T f32", 512, 2048, 768, 0, 1, 0},  {"prefill x@W^T f32", 512, 768, 2048, 0, 1, 0},
        {"prefill x@W^T f16", 512, 128, 768, 0, 1, 1},   {"prefill x@W^T f16", 512, 768, 768, 0, 1, 1},
        {"prefill x@W^T f16", 512, 2048, 768, 0, 1, 1},  {"prefill x@W^T f16", 512, 768, 2048, 0, 1, 1},
        {"train fwd x@W^T", 4096, 864, 288, 0, 1, 0},    {"train fwd x@W^T", 4096, 768, 288, 0, 1, 0},
        {"train fwd x@W^T", 4096, 288, 768, 0, 1, 0},    {"train dx dy@W", 4096, 288, 864, 0, 0, 0},
        {"train dx dy@W", 4096, 768, 288, 0, 0, 0},      {"train dW dy^T@x", 864, 288, 4096, 1, 0, 0},
        {"train dW dy^T@x", 288, 768, 4096, 1, 0, 0},    {"logits h@w^T", 2048, 8192, 288, 0, 1, 0},
        {"dh g@w", 2048, 288, 8192, 0, 0, 0},            {"dw cls g^T@h", 8192, 288, 2048, 1, 0, 0},
    };
    uint64_t s = 1;
    printf("%d reps, medians; t threads split N; CPU = GFLOP per process CPU-second, %% of %.0f GFLOP/s/core\n",
           reps, peak);
    printf("| GEMM | M | N | K | t | OpenBLAS GFLOP/s wall | CPU | %%peak | ours GFLOP/s wall | CPU | %%peak | "
           "ours/OpenBLAS CPU |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        if (argc > 3 && !strstr(sh[i].name, argv[3])) continue;
        int64_t M = sh[i].M, N = sh[i].N, K = sh[i].K;
        float *A = malloc((size_t)(M * K) * 4), *Bf = malloc((size_t)(K * N) * 4), *C = malloc((size_t)(M * N) * 4);
        uint16_t *Bh = malloc((size_t)(K * N) * 2);
        for (int64_t j = 0; j < M * K; j++) A[j] = (float)((s = s * 6364136223846793005ULL + 1) >> 40) / 16777216.0f - 0.5f;
        for (int64_t j = 0; j < K * N; j++) {
            Bf[j] = (float)((s = s * 6364136223846793005ULL + 1) >> 40) / 16777216.0f - 0.5f;
            Bh[j] = lmc_f32_to_f16(Bf[j]);
        }
        size_t wsn = lmc_cpu_gemm_f32_ws(M, N, K);
        float *ws[2], *conv[2];
        for (int t = 0; t < 2; t++) {
            ws[t] = aligned_alloc(64, (wsn * 4 + 63) / 64 * 64);
            conv[t] = malloc((size_t)(K * N) * 4);
        }
        double flop = 2.0 * (double)M * (double)N * (double)K;
        for (int nt = 1; nt <= 2; nt++) {
            double wall[2][100], cpu[2][100];
            for (int r = 0; r < reps + 1; r++)
                for (int o = 0; o < 2; o++) {
                    struct call c[2];
                    for (int t = 0; t < nt; t++) {
                        c[t] = (struct call){o, sh[i].ta, sh[i].tb, M, N, K, sh[i].ta ? M : K, sh[i].tb ? K : N,
                                             A, sh[i].f16 ? (const void *)Bh : Bf,
                                             sh[i].f16 ? LMC_DTYPE_F16 : LMC_DTYPE_F32, C, ws[t], conv[t],
                                             N * t / nt, N * (t + 1) / nt};
                    }
                    double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                    pthread_t th;
                    if (nt == 2) pthread_create(&th, NULL, run_call, &c[1]);
                    run_call(&c[0]);
                    if (nt == 2) pthread_join(th, NULL);
                    double w1 = bench_clock(CLOCK_MONOTONIC), c1 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                    if (r > 0) wall[o][r - 1] = w1 - w0, cpu[o][r - 1] = c1 - c0; /* first round: warm-up */
                }
            double gw[2], gc[2];
            for (int o = 0; o < 2; o++) {
                qsort(wall[o], (size_t)reps, sizeof(double), bench_cmpd);
                qsort(cpu[o], (size_t)reps, sizeof(double), bench_cmpd);
                gw[o] = flop / wall[o][reps / 2] * 1e-9;
                gc[o] = flop / cpu[o][reps / 2] * 1e-9;
            }
            printf("| %s | %lld | %lld | %lld | %d | %.1f | %.1f | %.0f%% | %.1f | %.1f | %.0f%% | %.2fx |\n",
                   sh[i].name, (long long)M, (long long)N, (long long)K, nt, gw[0], gc[0], 100 * gc[0] / peak, gw[1],
                   gc[1], 100 * gc[1] / peak, gc[1] / gc[0]);
            fflush(stdout);
        }
        free(A), free(Bf), free(Bh), free(C);
        for (int t = 0; t < 2; t++) free(ws[t]), free(conv[t]);
    }
    return 0;
}
