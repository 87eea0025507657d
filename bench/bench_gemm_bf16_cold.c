/* bench_gemm_bf16_cold.c — one thread: the bf16 training GEMM (gemm_bf16.c)
 * on the default model's training shapes with operands out of cache, as in
 * a training step (activations of 4096 tokens come from DRAM): each call of
 * a round takes another of NB sets of A, B and C (NB x 96 MiB in all), so
 * no operand is reused from the caches. Prints, per shape, the best round's
 * time per call (thread CPU time) and the sum over the shapes.
 * bench_gemm_bf16 runs the same shapes with operands reused (in cache).
 * Usage: bench_gemm_bf16_cold [reps=3] */
#include "ops/cpu/gemm_bf16.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NB 10

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    if (reps < 1 || reps > 100) reps = 3;
    /* name, M, N, K, A stored K x M (dy^T), B stored N x K (W^T) */
    static const struct { const char *name; int M, N, K, ta, tb; } sh[] = {
        {"fwd qkv   x@W^T", 4096, 864, 288, 0, 1}, {"fwd down  x@W^T", 4096, 288, 768, 0, 1},
        {"dx qkv    dy@W", 4096, 288, 864, 0, 0},  {"dW qkv    dy^T@x", 864, 288, 4096, 1, 0},
        {"dW down   dy^T@x", 288, 768, 4096, 1, 0}, {"logits    h@w^T", 1024, 8192, 288, 0, 1},
        {"dh        g@w", 1024, 288, 8192, 0, 0},   {"dw cls    g^T@h", 8192, 288, 1024, 1, 0},
    };
    const size_t most = (size_t)8192 * 1024;
    float *A[NB], *B[NB], *C[NB];
    for (int b = 0; b < NB; b++) {
        A[b] = aligned_alloc(64, most * 4);
        B[b] = aligned_alloc(64, most * 4);
        C[b] = aligned_alloc(64, most * 4);
        if (!A[b] || !B[b] || !C[b]) {
            fprintf(stderr, "bench_gemm_bf16_cold: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < most; i++) {
            A[b][i] = (float)((i * 7 + (size_t)b) % 1001) * 1e-3f - 0.5f;
            B[b][i] = (float)((i * 13 + (size_t)b) % 997) * 1e-3f - 0.5f;
            C[b][i] = 0.0f;
        }
    }
    void *ws = aligned_alloc(64, (lmc_cpu_gemm_bf16_ws(8192, 8192, 8192) * 4 + 63) / 64 * 64);
    if (!ws) return 1;
    printf("AVX512-BF16: %s; %d reps, best round, 1 thread, operands out of cache\n",
           lmc_cpu_has_bf16() ? "yes" : "no", reps);
    printf("| GEMM | M | N | K | GFLOP/s (CPU) | ms per call |\n|---|---|---|---|---|---|\n");
    double total = 0;
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        int M = sh[i].M, N = sh[i].N, K = sh[i].K;
        int64_t a_sm = sh[i].ta ? 1 : K, a_sk = sh[i].ta ? M : 1, b_sk = sh[i].tb ? 1 : N, b_sn = sh[i].tb ? K : 1;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = bench_thread_cpu();
            for (int b = 0; b < NB; b++)
                lmc_cpu_gemm_bf16(M, N, K, A[b], a_sm, a_sk, B[b], b_sk, b_sn, C[b], N, sh[i].ta != 0, ws);
            double t = (bench_thread_cpu() - t0) / NB;
            best = t < best ? t : best;
        }
        total += best;
        printf("| %s | %d | %d | %d | %.1f | %.2f |\n", sh[i].name, M, N, K, 2.0 * M * N * K / best / 1e9, best * 1e3);
    }
    printf("| all | | | | | %.2f |\n", total * 1e3);
    for (int b = 0; b < NB; b++) {
        free(A[b]);
        free(B[b]);
        free(C[b]);
    }
    free(ws);
    return 0;
}
