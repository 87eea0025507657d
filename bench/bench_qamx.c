/* bench_qamx.c — the quantized prefill product on AMX-INT8 tiles
 * (src/quant/qmatmul_amx.c) against the AVX-512 VNNI kernels it replaces,
 * in one process: lmc_qmatmul with the VNNI context (AMX where
 * lmc_qamx_available(): LMC_CPU_AMX=1 on an AMX-INT8 CPU) and with a copy
 * of that context tagged AVX2 (the same VNNI kernels; lmc_qamx_takes
 * refuses it), rounds interleaved. Q8_0, Q4_0 (the file's layout), Q4_0R
 * and Q4_KR (GGUF Q4_0 / Q4_K as the CPU loader repacks them: what runs for
 * GGUF files) and GPTQ-4 g128 (rtn) on
 * the linear shapes of
 * the 125M and 1.1B Llamas of bench/run_issue10_quant.sh, M = 512 (and 64)
 * rows. Prints per shape the median wall ms and CPU ms (every thread) of
 * each, int8 GOPS per CPU-second and the ratio. Without AMX both columns
 * run the same kernels (the ratio ~1: a check of the bench itself).
 * Usage: bench_qamx [threads (default 2)] [rounds (default 5)] */
#include "core/core.h"
#include "core/rng.h"
#include "core/threadpool.h"
#include "quant/qmatmul.h"
#include "quant/qmatmul_amx.h"
#include "quant/quant.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (threads < 1 || rounds < 1) return 1;
    lmc_err err = {0};
    struct lmc_pool *pool = NULL;
    if (threads > 1 && lmc_pool_init(&pool, threads, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct lmc_qctx c, cv;
    lmc_qctx_init(&c, LMC_QISA_AVX512VNNI);
    cv = c;
    cv.isa = LMC_QISA_AVX2; /* the same kernels, never AMX */
    printf("# bench_qamx: %d threads, %d rounds, kernels %s, AMX-INT8 %s\n", threads, rounds, lmc_qisa_name(c.isa),
           lmc_qamx_available() ? "on" : "off (both columns the same kernels)");
    printf("| type | M x N x K | AMX ms wall | AMX ms CPU | VNNI ms wall | VNNI ms CPU | AMX GOPS/CPU-s | VNNI GOPS/CPU-s | "
           "AMX / VNNI (CPU) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    static const int64_t shapes[][3] = {{512, 768, 768},   {512, 256, 768},   {512, 2048, 768}, {512, 768, 2048},
                                        {512, 2048, 2048}, {512, 5632, 2048}, {512, 2048, 5632}, {64, 2048, 2048}};
    const int types[5] = {LMC_GGML_Q8_0, LMC_GGML_Q4_0, LMC_GGML_Q4_0, LMC_GGML_Q4_K, -1 /* GPTQ-4 g128 (rtn) */};
    const char *names[5] = {"Q8_0", "Q4_0", "Q4_0R", "Q4_KR", "GPTQ-4 g128"};
    for (int t = 0; t < 5; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], rb = k;
            if (types[t] >= 0) lmc_ggml_row_bytes(types[t], k, &rb);
            float *wf = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(m * k) * 4), *y = malloc((size_t)(m * n) * 4);
            uint8_t *wq = malloc((size_t)(n * rb));
            uint64_t seed = 11;
            for (int64_t i = 0; i < n * k; i++) wf[i] = (float)((lmc_rng_uniform(&seed) * 2 - 1) * 0.05);
            for (int64_t o = 0; types[t] >= 0 && o < n; o++) lmc_ggml_quantize_row(types[t], wf + o * k, wq + o * rb, k);
            for (int64_t i = 0; i < m * k; i++) x[i] = (float)(lmc_rng_uniform(&seed) * 2 - 1);
            struct lmc_qweight w;
            struct lmc_qgroups g;
            uint8_t *wr = NULL; /* Q4_0R / Q4_KR: the rows as the CPU loader repacks them */
            lmc_status st;
            if (t == 2 || t == 3) {
                wr = malloc((size_t)(n * (t == 2 ? rb : k / 256 * LMC_Q4KR_BYTES)));
                if (t == 2) lmc_q40r_pack_rows(wq, wr, n, k);
                else lmc_q4kr_pack_rows(wq, wr, n, k);
                st = t == 2 ? lmc_qweight_init_q40r(&w, wr, n, k, &err) : lmc_qweight_init_q4kr(&w, wr, n, k, &err);
            } else st = types[t] >= 0 ? lmc_qweight_init_ggml(&w, types[t], wq, n, k, &err)
                                      : lmc_quant_rtn(wf, n, k, 4, 128, true, &g, &err);
            if (!st && types[t] < 0) {
                st = lmc_qweight_init_groups(&w, &g, &err);
                lmc_qgroups_free(&g);
            }
            if (st) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, m) + 63) / 64 * 64);
            double wa[64], ca[64], wv[64], cvv[64];
            int R = LMC_MIN(rounds, 64);
            lmc_qmatmul(&c, &w, y, x, m, scratch, pool); /* warm */
            lmc_qmatmul(&cv, &w, y, x, m, scratch, pool);
            for (int r = 0; r < R; r++)
                for (int which = 0; which < 2; which++) {
                    const struct lmc_qctx *cc = (r + which) % 2 ? &cv : &c; /* order alternates */
                    double w0 = bench_wall(), c0 = bench_cpu();
                    lmc_qmatmul(cc, &w, y, x, m, scratch, pool);
                    double w1 = bench_wall() - w0, c1 = bench_cpu() - c0;
                    if (cc == &c) wa[r] = w1, ca[r] = c1;
                    else wv[r] = w1, cvv[r] = c1;
                }
            double mwa = bench_median(wa, R), mca = bench_median(ca, R), mwv = bench_median(wv, R),
                   mcv = bench_median(cvv, R), ops = 2.0 * (double)m * (double)n * (double)k;
            printf("| %s | %lldx%lldx%lld | %.3f | %.3f | %.3f | %.3f | %.0f | %.0f | %.2fx |\n",
                   names[t], (long long)m, (long long)n, (long long)k, mwa * 1e3, mca * 1e3,
                   mwv * 1e3, mcv * 1e3, ops / mca * 1e-9, ops / mcv * 1e-9, mcv / mca);
            fflush(stdout);
            lmc_qweight_free(&w);
            free(scratch), free(wf), free(x), free(y), free(wq), free(wr);
        }
    if (pool) lmc_pool_free(pool);
    return 0;
}
