/* bench_qtile_m1.c — the decode (M = 1) quantized kernels' compute cost on
 * one core, without the memory system: one weight of N x K (random,
 * quantized as TYPE: q4_0, q4_k, q8_0 — GGUF rows, Q4_K and Q4_0 repacked as the
 * CPU model loader repacks them (quant/q4k_repack.c); q4_k_file / q4_0_file:
 * in the file's layout — or gptq: lmc's 4-bit groups of 128, asymmetric rtn) small enough to stay in L2 (512x768 Q4_0
 * is 216 KB), run through lmc_qmatmul with M = 1 and no pool, 10 calls per
 * repetition; prints the minimum over REPS of the time a call takes and
 * that time per weight row and 256 weights. The minimum filters out the
 * time slices other processes take on a shared machine (the median does
 * not), so two builds compare by their minima even under load.
 * With M > 1 (a fifth argument) the same for M activation rows (the
 * prefill tiles), per row, 256 weights and activation row.
 * Usage: bench_qtile_m1 TYPE [N 512] [K 768] [REPS 300] [M 1] */
#include "core/core.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static float rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_qtile_m1 q4_0|q4_0_file|q4_k|q4_k_file|q8_0|gptq [N] [K] [REPS] [M]\n");
        return 2;
    }
    const char *type = argv[1];
    int64_t n = argc > 2 ? atoll(argv[2]) : 512, k = argc > 3 ? atoll(argv[3]) : 768;
    int reps = argc > 4 ? atoi(argv[4]) : 300;
    int64_t m = argc > 5 ? atoll(argv[5]) : 1;
    bool repack = !strcmp(type, "q4_k") || !strcmp(type, "q4_0");
    int gt = !strcmp(type, "q4_0") || !strcmp(type, "q4_0_file")   ? LMC_GGML_Q4_0
             : !strcmp(type, "q4_k") || !strcmp(type, "q4_k_file") ? LMC_GGML_Q4_K
             : !strcmp(type, "q8_0") ? LMC_GGML_Q8_0 : -1;
    if ((gt < 0 && strcmp(type, "gptq")) || n <= 0 || k <= 0 || k % 256 || reps <= 0 || m <= 0) {
        fprintf(stderr, "bench_qtile_m1: bad arguments (TYPE q4_0|q4_k|q8_0|gptq, K a multiple of 256)\n");
        return 2;
    }
    uint64_t seed = 12345;
    float *wf = malloc((size_t)(n * k) * 4), *x = malloc((size_t)(m * k) * 4), *y = malloc((size_t)(m * n) * 4);
    LMC_ASSERT(wf && x && y);
    for (int64_t i = 0; i < n * k; i++) wf[i] = rnd(&seed);
    for (int64_t i = 0; i < m * k; i++) x[i] = rnd(&seed);
    lmc_err err = {0};
    struct lmc_qweight w;
    uint8_t *wq = NULL;
    if (gt < 0) {
        struct lmc_qgroups g;
        if (lmc_quant_rtn(wf, n, k, 4, 128, false, &g, &err) || lmc_qweight_init_groups(&w, &g, &err)) {
            fprintf(stderr, "bench_qtile_m1: %s\n", err.msg);
            return 1;
        }
        lmc_qgroups_free(&g);
    } else {
        int64_t rb;
        LMC_ASSERT(lmc_ggml_row_bytes(gt, k, &rb));
        wq = malloc((size_t)(n * rb));
        LMC_ASSERT(wq);
        for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(gt, wf + o * k, wq + o * rb, k);
        if (repack) { /* the repacked rows replace the file's */
            uint8_t *r = malloc((size_t)(n * (k / 256) * LMC_Q4KR_BYTES));
            LMC_ASSERT(r);
            (gt == LMC_GGML_Q4_K ? lmc_q4kr_pack_rows : lmc_q40r_pack_rows)(wq, r, n, k);
            free(wq);
            wq = r;
        }
        if (repack ? (gt == LMC_GGML_Q4_K ? lmc_qweight_init_q4kr : lmc_qweight_init_q40r)(&w, wq, n, k, &err)
                   : lmc_qweight_init_ggml(&w, gt, wq, n, k, &err)) {
            fprintf(stderr, "bench_qtile_m1: %s\n", err.msg);
            return 1;
        }
    }
    struct lmc_qctx c;
    enum lmc_qisa isa = lmc_qctx_init(&c, LMC_QISA_AVX512VNNI);
    void *scratch = aligned_alloc(64, (lmc_qmatmul_scratch_bytes(&w, m) + 63) / 64 * 64);
    LMC_ASSERT(scratch);
    double best = 1e30;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    for (int r = 0; r < reps; r++) {
        double t0 = bench_wall();
        for (int i = 0; i < 10; i++) lmc_qmatmul(&c, &w, y, x, m, scratch, NULL);
        double t = (bench_wall() - t0) / 10;
        if (t < best) best = t;
    }
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + 1e-6 * (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec);
    double per = (double)n * (double)k / 256.0 * (double)m;
    printf("%s %lldx%lld M=%lld [%s]: min %.2f us a call, %.3f ns per row and 256 weights%s; user CPU %.3f ns (y[0] %g)\n",
           type, (long long)n, (long long)k, (long long)m, lmc_qisa_name(isa), best * 1e6, best * 1e9 / per,
           m > 1 ? " and activation row" : "", cpu / (10.0 * reps) * 1e9 / per, y[0]);
    lmc_qweight_free(&w);
    free(scratch), free(wf), free(x), free(y), free(wq);
    return 0;
}
