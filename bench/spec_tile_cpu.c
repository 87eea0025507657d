/* spec_tile_cpu.c — the compute side of a speculative verification on the
 * CPU: lmc_cpu_matmul_smallm_rows (ops/cpu/matmul_smallm.c) on a BF16 W
 * small enough to stay in L1/L2 (no DRAM stream), on the calling thread,
 * in G FMA/s (8-lane FMAs: N*K*M/8 per call) and in W GB/s, per M and K.
 * Against the memory side (bench_gemv16, the W stream) it says how much
 * arithmetic a verification of M rows must hide under the weight read; K
 * swept at one M separates the per-tile cost (prologue, accumulator sums,
 * loop exit) from the per-column cost: rate = K / (a + b K). Best of
 * rounds (thread CPU time: a shared machine's preemptions do not count).
 * A peak for comparison: 10 independent FMA chains on registers.
 *
 * usage: spec_tile_cpu [-N 64 rows] [-K 288,576,1152] [-M 1,3,4,5,6] [-r rounds 7] [-f FMAs per call 1e7] */
#include "core/core.h"
#include "ops/cpu/ops_cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int parse_list(char *s, int64_t *out, int max) {
    int n = 0;
    for (char *t = strtok(s, ","); t && n < max; t = strtok(NULL, ",")) out[n++] = atoll(t);
    return n;
}

#ifdef LMC_CPU_SMALLM
static double thread_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *alloc64(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "spec_tile_cpu: out of memory\n");
        exit(1);
    }
    return p;
}

/* 10 chains of dependent FMAs in registers (latency 4-5 cycles, 2 pipes: enough to fill them) */
static double fma_peak(void) {
    __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(0.9999999f);
    __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
           a9 = a0;
    int64_t n = 20000000;
    double t0 = thread_cpu();
    for (int64_t i = 0; i < n; i++) {
#define PK(a) do { a = _mm256_fmadd_ps(a, b, c); __asm__("" : "+x"(a)); } while (0)
        PK(a0); PK(a1); PK(a2); PK(a3); PK(a4); PK(a5); PK(a6); PK(a7); PK(a8); PK(a9);
#undef PK
    }
    double t = thread_cpu() - t0;
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
    if (lmc_hsum256(s) == 42.0f) printf("#\n"); /* keep the chains */
    return 10.0 * (double)n / t / 1e9;
}
#endif

int main(int argc, char **argv) {
    int64_t N = 64, Ks[16] = {288, 576, 1152}, Ms[16] = {1, 3, 4, 5, 6};
    int nK = 3, nM = 5, rounds = 7;
    double fmas = 1e7;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-N")) N = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-K")) nK = parse_list(argv[i + 1], Ks, 16);
        else if (!strcmp(argv[i], "-M")) nM = parse_list(argv[i + 1], Ms, 16);
        else if (!strcmp(argv[i], "-r")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) fmas = atof(argv[i + 1]);
        else {
            fprintf(stderr, "usage: spec_tile_cpu [-N rows] [-K list] [-M list] [-r rounds] [-f FMAs per call]\n");
            return 2;
        }
    }
#ifndef LMC_CPU_SMALLM
    (void)rounds, (void)fmas, (void)nK, (void)nM, (void)N;
    printf("spec_tile_cpu: this build has no small-M kernel (AVX2 + FMA + F16C or AVX-512 needed)\n");
    return 0;
#else
    if (N < 4 || nK < 1 || nM < 1 || rounds < 1) return 2;
    double la[3] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &la[0], &la[1], &la[2]) != 3) la[0] = -1;
        fclose(f);
    }
    printf("# spec_tile_cpu: BF16 W %lld rows, 1 thread, thread CPU time, best of %d; load %.2f %.2f %.2f\n",
           (long long)N, rounds, la[0], la[1], la[2]);
    printf("# peak: %.2f G FMA/s (10 register chains)\n\n", fma_peak());
    printf("| M | K | G FMA/s | W GB/s |\n|---|---|---|---|\n");
    for (int ik = 0; ik < nK; ik++) {
        int64_t K = Ks[ik];
        if (K < 1) continue;
        uint16_t *w = alloc64((size_t)(N * K) * 2);
        for (int64_t i = 0; i < N * K; i++) w[i] = (uint16_t)(0x3f80 + i % 7); /* 1.0 .. 1.05 */
        for (int im = 0; im < nM; im++) {
            int64_t M = Ms[im];
            if (M < 1 || M > LMC_CPU_SMALLM_MR) continue;
            float *x = alloc64((size_t)(M * K) * 4), *y = alloc64((size_t)(M * N) * 4);
            for (int64_t i = 0; i < M * K; i++) x[i] = 0.001f * (float)(i % 13);
            double per = (double)(N * K * M) / 8;
            int64_t calls = LMC_MAX(1, (int64_t)(fmas / per));
            double best = 1e30;
            for (int r = 0; r < rounds; r++) {
                double t0 = thread_cpu();
                for (int64_t c = 0; c < calls; c++) lmc_cpu_matmul_smallm_rows(y, x, M, w, LMC_DTYPE_BF16, K, N, 0, N);
                best = LMC_MIN(best, thread_cpu() - t0);
            }
            printf("| %lld | %lld | %.2f | %.1f |\n", (long long)M, (long long)K, per * (double)calls / best / 1e9,
                   (double)(N * K * 2) * (double)calls / best / 1e9);
            free(x);
            free(y);
        }
        free(w);
    }
    return 0;
#endif
}
