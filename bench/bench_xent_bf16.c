/* bench_xent_bf16.c — the bf16 mode's classifier + cross-entropy op
 * (loss, dh, dw) on the default model's head shape: M = 16 x 256 rows,
 * V = 8192, C = 288, THREADS threads (argv[2], default 2), ROUNDS
 * (argv[1], default 5) timed calls after one warm-up; prints ms per call
 * (median) and the process CPU ms per call. Link it against two builds'
 * liblmc.a to compare their ops in one run. */
#include "ops/backend.h"
#include "ops/cpu/gemm_bf16.h"
#include "core/rng.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 5, threads = argc > 2 ? atoi(argv[2]) : 2;
    const int64_t M = 16 * 256, V = 8192, C = 288;
    if (rounds < 1 || rounds > 100 || threads < 1 || threads > 64 || !lmc_cpu_has_bf16()) {
        fprintf(stderr, "usage: bench_xent_bf16 [rounds 1-100] [threads]; needs AVX512-BF16\n");
        return 2;
    }
    uint64_t rng = 1;
    float *h = malloc((size_t)(M * C) * 4), *w = malloc((size_t)(V * C) * 4);
    float *dh = malloc((size_t)(M * C) * 4), *dw = calloc((size_t)(V * C), 4), *loss = malloc((size_t)M * 4);
    int32_t *tg = malloc((size_t)M * 4);
    for (int64_t i = 0; i < M * C; i++) h[i] = (float)((lmc_rng_next(&rng) >> 40) * (1.0 / 16777216.0)) - 0.5f;
    for (int64_t i = 0; i < V * C; i++)
        w[i] = 0.1f * ((float)((lmc_rng_next(&rng) >> 40) * (1.0 / 16777216.0)) - 0.5f);
    for (int64_t i = 0; i < M; i++) tg[i] = (int32_t)(lmc_rng_next(&rng) % (uint64_t)V);
    lmc_err err = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &err) != LMC_OK ||
        lmc_backend_cpu_set_train_bf16(&be, true, &err) != LMC_OK) {
        fprintf(stderr, "backend: %s\n", err.msg);
        return 1;
    }
    struct lmc_mat W = {LMC_DTYPE_F32, V, C, w};
    double wall[100], cpu[100];
    be.classifier_xent(be.ctx, loss, dh, dw, h, &W, tg, M, 1.0f / (float)M);
    for (int r = 0; r < rounds; r++) {
        double t0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
        be.classifier_xent(be.ctx, loss, dh, dw, h, &W, tg, M, 1.0f / (float)M);
        wall[r] = 1e3 * (bench_clock(CLOCK_MONOTONIC) - t0);
        cpu[r] = 1e3 * (bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0);
    }
    qsort(wall, (size_t)rounds, sizeof *wall, bench_cmpd);
    qsort(cpu, (size_t)rounds, sizeof *cpu, bench_cmpd);
    printf("classifier_xent bf16 M %lld V %lld C %lld threads %d: %.1f ms (median of %d), %.1f CPU ms; loss[0] %.6f\n",
           (long long)M, (long long)V, (long long)C, threads, wall[rounds / 2], rounds, cpu[rounds / 2], loss[0]);
    lmc_backend_cpu_free(&be);
    free(h), free(w), free(dh), free(dw), free(loss), free(tg);
    return 0;
}
