/* bench_gemm_bf16.c — one thread: the bf16 training GEMM (gemm_bf16.c)
 * against OpenBLAS sgemm on the default model's training shapes (M = 4096
 * tokens), each transposition the trainer uses. Interleaved repeats,
 * medians of thread CPU time (robust to a loaded machine) and wall time.
 * Usage: bench_gemm_bf16 [reps=5] */
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_amx.h"
#include "bench_util.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1 || reps > 100) reps = 5;
    openblas_set_num_threads(1);
    /* name, M, N, K, A trans (stored K x M), B trans (stored N x K) */
    static const struct { const char *name; int M, N, K, ta, tb; } sh[] = {
        {"fwd qkv   x@W^T", 4096, 864, 288, 0, 1},   {"fwd down  x@W^T", 4096, 288, 768, 0, 1},
        {"dx qkv    dy@W", 4096, 288, 864, 0, 0},    {"dW qkv    dy^T@x", 864, 288, 4096, 1, 0},
        {"logits    h@w^T", 1024, 8192, 288, 0, 1}, {"dh        g@w", 1024, 288, 8192, 0, 0},
        {"dw cls    g^T@h", 8192, 288, 1024, 1, 0},
    };
    uint64_t s = 1;
    printf("AVX512-BF16: %s; AMX-BF16 tiles: %s (LMC_CPU_AMX); %d reps, medians, 1 thread\n",
           lmc_cpu_has_bf16() ? "yes" : "no", lmc_cpu_has_amx() ? "on" : "off", reps);
    printf("| GEMM | M | N | K | sgemm GFLOP/s (CPU) | bf16 GFLOP/s (CPU) | bf16/sgemm CPU | wall |\n|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        int M = sh[i].M, N = sh[i].N, K = sh[i].K;
        float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc((size_t)M * N * 4);
        for (size_t j = 0; j < (size_t)M * K; j++) A[j] = (float)((s = s * 6364136223846793005ULL + 1) >> 40) / 16777216.0f - 0.5f;
        for (size_t j = 0; j < (size_t)K * N; j++) B[j] = (float)((s = s * 6364136223846793005ULL + 1) >> 40) / 16777216.0f - 0.5f;
        void *ws = aligned_alloc(64, (lmc_cpu_gemm_bf16_ws(M, N, K) * 4 + 63) / 64 * 64);
        int64_t a_sm = sh[i].ta ? 1 : K, a_sk = sh[i].ta ? M : 1, b_sk = sh[i].tb ? 1 : N, b_sn = sh[i].tb ? K : 1;
        double tc[2][100], tw[2][100];
        for (int r = 0; r < reps + 1; r++)
            for (int k = 0; k < 2; k++) {
                double c0 = bench_clock(CLOCK_THREAD_CPUTIME_ID), w0 = bench_clock(CLOCK_MONOTONIC);
                if (k == 0)
                    cblas_sgemm(CblasRowMajor, sh[i].ta ? CblasTrans : CblasNoTrans, sh[i].tb ? CblasTrans : CblasNoTrans,
                                M, N, K, 1.0f, A, sh[i].ta ? M : K, B, sh[i].tb ? K : N, 0.0f, C, N);
                else
                    lmc_cpu_gemm_bf16(M, N, K, A, a_sm, a_sk, B, b_sk, b_sn, C, N, false, ws);
                if (r > 0) { /* the first round warms up */
                    tc[k][r - 1] = bench_clock(CLOCK_THREAD_CPUTIME_ID) - c0;
                    tw[k][r - 1] = bench_clock(CLOCK_MONOTONIC) - w0;
                }
            }
        for (int k = 0; k < 2; k++) {
            qsort(tc[k], (size_t)reps, sizeof(double), bench_cmpd);
            qsort(tw[k], (size_t)reps, sizeof(double), bench_cmpd);
        }
        double fl = 2.0 * M * N * K * 1e-9;
        printf("| %s | %d | %d | %d | %.1f | %.1f | %.2fx | %.2fx |\n", sh[i].name, M, N, K, fl / tc[0][reps / 2],
               fl / tc[1][reps / 2], tc[0][reps / 2] / tc[1][reps / 2], tw[0][reps / 2] / tw[1][reps / 2]);
        free(A), free(B), free(C), free(ws);
    }
    return 0;
}
