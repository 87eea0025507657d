/* bench_drf.c — the serving route's decode-row GEMMs (matmul_dr.c; on CPUs
 * without AVX512-BF16 its f32 family, matmul_drf.c) over one whole step of
 * the 125M bench model's shapes with every layer's weights distinct (F16,
 * about 250 MB: streamed from memory each step, as in the server): q/k/v
 * together, o, gate/up together, down, for 12 layers, then the head.
 * Prints, per M, the median over rounds of wall and process CPU time per
 * step and the GFLOP/s.
 *
 *   bench_drf [--threads N] [--rounds R] [--m "8 64"]
 */
#include "core/core.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#define L 12
enum { WQ, WK, WV, WO, WG, WU, WD, NW };

int main(int argc, char **argv) {
    int threads = 2, rounds = 7;
    const char *ms = "8 64";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--m")) ms = argv[i + 1];
    }
    if (rounds < 1 || rounds > 1000 || threads < 1) return 2;
    lmc_err err = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    struct lmc_cpu_ctx *c = be.ctx;
    static const int64_t NK[NW][2] = {{768, 768}, {256, 768}, {256, 768}, {768, 768},
                                      {2048, 768}, {2048, 768}, {768, 2048}};
    struct lmc_mat w[L][NW], head;
    uint64_t rng = 7;
    double flop_tok = 0;
    for (int l = 0; l <= L; l++)
        for (int i = 0; i < (l < L ? NW : 1); i++) {
            int64_t N = l < L ? NK[i][0] : 32000, K = 768;
            /* huge pages, as the server's weight arenas (weights_huge.c) */
            size_t bytes = ((size_t)(N * K) * 2 + (2u << 20) - 1) / (2u << 20) * (2u << 20);
            uint16_t *d = aligned_alloc(2u << 20, bytes);
            if (!d) return 1;
#ifdef MADV_HUGEPAGE
            madvise(d, bytes, MADV_HUGEPAGE);
#endif
            for (int64_t e = 0; e < N * K; e++)
                d[e] = lmc_f32_to_f16((float)(lmc_rng_uniform(&rng) * 2 - 1) * 0.05f);
            struct lmc_mat m = {LMC_DTYPE_F16, N, K, d};
            if (l < L) w[l][i] = m;
            else head = m;
            flop_tok += 2.0 * (double)N * (double)K;
        }
    printf("| M (%d threads) | ms wall / step | ms CPU / step (all threads) | GFLOP/s (wall) | GFLOP per CPU-s |\n"
           "|---:|---:|---:|---:|---:|\n", threads);
    for (const char *p = ms; *p;) {
        char *e;
        int64_t M = strtoll(p, &e, 10);
        if (e == p) break;
        p = e;
        if (M < 1) continue;
        float *x = malloc((size_t)(M * 2048) * 4), *y[3];
        for (int i = 0; i < 3; i++) y[i] = malloc((size_t)(M * 32000) * 4);
        for (int64_t i = 0; i < M * 2048; i++) x[i] = (float)(lmc_rng_uniform(&rng) * 2 - 1);
        double wall[1000], cpu[1000];
        for (int r = 0; r < rounds + 1; r++)
            {
                double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                for (int l = 0; l < L; l++) {
                    const struct lmc_mat *qkv[3] = {&w[l][WQ], &w[l][WK], &w[l][WV]}, *gu[2] = {&w[l][WG], &w[l][WU]};
                    const struct lmc_mat *o = &w[l][WO], *dn = &w[l][WD];
                    lmc_cpu_matmul_dr(c, 3, y, x, M, qkv, NULL);
                    lmc_cpu_matmul_dr(c, 1, y, x, M, &o, NULL);
                    lmc_cpu_matmul_dr(c, 2, y, x, M, gu, NULL);
                    lmc_cpu_matmul_dr(c, 1, y, x, M, &dn, NULL);
                }
                const struct lmc_mat *h = &head;
                lmc_cpu_matmul_dr(c, 1, y, x, M, &h, NULL);
                double w1 = bench_clock(CLOCK_MONOTONIC), c1 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                if (r == 0) continue; /* warm-up */
                wall[r - 1] = w1 - w0;
                cpu[r - 1] = c1 - c0;
            }
        {
            qsort(wall, (size_t)rounds, sizeof(double), bench_cmpd);
            qsort(cpu, (size_t)rounds, sizeof(double), bench_cmpd);
            double wm = wall[rounds / 2], cm = cpu[rounds / 2], f = flop_tok * (double)M;
            printf("| %lld | %.2f | %.2f | %.1f | %.1f |\n", (long long)M, 1e3 * wm, 1e3 * cm, f / wm * 1e-9, f / cm * 1e-9);
        }
        free(x);
        for (int i = 0; i < 3; i++) free(y[i]);
    }
    lmc_backend_cpu_free(&be);
    return 0;
}
