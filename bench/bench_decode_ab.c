/* bench_decode_ab.c — decode of one GGUF/HF model in one process, three
 * ways interleaved (the order reversed every other round): the weights
 * mapped from the file where they lie (a load without a backend: no
 * huge-page arena) with an MoE layer's gate and up as two moe_gemm calls;
 * the weights in the huge-page arena (model/weights_huge.c) with the same
 * two calls; the arena with the fused call (moe_gemm_multi). Each round
 * runs an 8-token prompt, then N single-token forwards; per variant the
 * median over rounds of process CPU ms/token (at 1 thread: the work,
 * memory stalls included, whatever share of the cores other processes
 * take; at 2 threads it includes the pool's spinning) and wall ms/token.
 * Loading is outside the timing (it differs between the variants).
 *
 *   bench_decode_ab FILE.gguf|DIR [threads 1] [rounds 5] [N 32]
 */
#include "model/model.h"
#include "ops/backend.h"
#include "core/core.h"
#include "bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_decode_ab FILE.gguf|DIR [threads 1] [rounds 5] [N 32]\n");
        return 2;
    }
    const char *f = argv[1];
    int T = argc > 2 ? atoi(argv[2]) : 1, R = argc > 3 ? atoi(argv[3]) : 5, N = argc > 4 ? atoi(argv[4]) : 32;
    if (R < 1 || R > 64 || N < 1 || N > 4096) return 2;
    struct lmc_backend cpu, nofuse; lmc_err e = {0};
    if (lmc_backend_cpu_init(&cpu, T, &e)) return 1;
    nofuse = cpu; nofuse.moe_gemm_multi = NULL;
    struct lmc_model mm, mh;
    struct lmc_model_opts om = {0}, oh = {.be = &cpu};
    if (lmc_model_load(&mm, f, &om, &e) || lmc_model_load(&mh, f, &oh, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    const struct lmc_model *M[3] = {&mm, &mh, &mh};
    const struct lmc_backend *B[3] = {&nofuse, &nofuse, &cpu};
    const char *name[3] = {"mapped, 2 calls", "arena, 2 calls", "arena, fused"};
    double tc[3][64], tw[3][64];
    int64_t V = mm.cfg.vocab_size;
    float *lg = malloc((size_t)V * 16 * sizeof *lg);
    for (int r = 0; r < R; r++)
        for (int k0 = 0; k0 < 3; k0++) {
            int k = r % 2 ? 2 - k0 : k0;
            struct lmc_kv kv; struct lmc_acts a;
            lmc_kv_init(&kv, M[k], B[k], N + 16, &e); lmc_acts_init(&a, M[k], B[k], 16, 16, &e);
            int32_t ids[16]; for (int i = 0; i < 16; i++) ids[i] = (i * 7919 + 13) % (int)V;
            lmc_model_forward(M[k], B[k], &a, &kv, ids, 8, 0, lg, false, &e);
            double c0 = bench_cpu(), w0 = bench_wall();
            for (int i = 0; i < N; i++) { int32_t id = (int32_t)((i * 104729 + 7) % V); lmc_model_forward(M[k], B[k], &a, &kv, &id, 1, 8 + i, lg, false, &e); }
            tc[k][r] = (bench_cpu() - c0) / N * 1e3; tw[k][r] = (bench_wall() - w0) / N * 1e3;
            lmc_kv_free(&kv); lmc_acts_free(&a);
        }
    for (int k = 0; k < 3; k++) {
        qsort(tc[k], R, sizeof(double), bench_cmpd); qsort(tw[k], R, sizeof(double), bench_cmpd);
        printf("%-18s cpu %.2f ms/token (min %.2f)  wall %.2f ms/token (min %.2f)\n", name[k], tc[k][R / 2], tc[k][0], tw[k][R / 2], tw[k][0]);
    }
    printf("(%s, %d threads, %d rounds x %d tokens)\n", f, T, R, N);
    free(lg);
    lmc_model_free(&mm);
    lmc_model_free(&mh);
    lmc_backend_cpu_free(&cpu);
    return 0;
}
