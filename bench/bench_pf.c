/* bench_pf.c — the prefill GEMM for F16/BF16 weights (ops/cpu/matmul_pf.c,
 * vdpbf16ps) against the fp32 kernels it replaces (matmul.c's AVX-512 4x4
 * blocks, ctx->pf_min_m = 0) on the 125M bench model's prefill shapes,
 * through the CPU backend's matmul, interleaved in one process: per shape
 * and path the median over rounds of wall time and of process CPU time
 * (both threads; the machine may be shared, CPU time is the steadier
 * figure), as GFLOP/s and GFLOP per CPU-second.
 *
 * --kernel dr times the serving route's decode-row GEMM (matmul_dr.c) in
 * the bf16 column instead of the prefill GEMM (on CPUs without AVX512-BF16
 * its f32 family, matmul_drf.c). --kernel route times the decode-row GEMM
 * in the fp32 column and, in the bf16 column, the route's prompt rows (all
 * M rows routed as prompt rows: the prefill GEMM with AVX512-BF16, else
 * our AVX2 GEMM, gemm_f32.c).
 *
 *   bench_pf [--threads N] [--rounds R] [--m M] [--dtype f16|bf16] [--kernel pf|dr|route]
 */
#include "core/core.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_amx.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    int threads = 2, rounds = 7;
    bool dr = false; /* --kernel dr: the decode-row GEMM (matmul_dr.c) in the bf16 column */
    bool route = false; /* --kernel route: the decode-row GEMM, then the route's prompt rows */
    int64_t M = 512;
    enum lmc_dtype dt = LMC_DTYPE_F16;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--m")) M = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--kernel")) dr = !strcmp(argv[i + 1], "dr"), route = !strcmp(argv[i + 1], "route");
        else if (!strcmp(argv[i], "--dtype")) dt = !strcmp(argv[i + 1], "bf16") ? LMC_DTYPE_BF16 : LMC_DTYPE_F16;
    }
    if (rounds < 1 || rounds > 1000 || M < 1 || M > 65536) return 2;
    lmc_err err = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    struct lmc_cpu_ctx *c = be.ctx;
    int64_t pf_default = c->pf_min_m;
    if (!pf_default && !dr) printf("bench_pf: this CPU has no AVX512-BF16: only the fp32 kernels run\n");
    if (pf_default && !dr) /* the bf16 column's kernel: AMX-BF16 tiles or vdpbf16ps (gemm_amx.h, LMC_CPU_AMX) */
        printf("bench_pf: bf16 GEMM on %s\n\n", lmc_cpu_has_amx() ? "AMX-BF16 tiles" : "AVX512-BF16 (vdpbf16ps)");
    if (route) printf("bench_pf: --kernel route: fp32 column = the decode-row GEMM, bf16 column = routed prompt rows\n\n");
    const bool second = pf_default || dr || route; /* the decode-row GEMM runs everywhere (its f32 family without AVX512-BF16) */
    static const int64_t NK[][2] = {{768, 768}, {256, 768}, {2048, 768}, {768, 2048}};
    static const char *names[] = {"q_proj, o_proj", "k_proj, v_proj", "gate_proj, up_proj", "down_proj"};
    uint64_t rng = 7;
    printf("| M x N x K (%s weights, %d threads) | used for | fp32 kernels GFLOP/s (wall) | bf16 GEMM GFLOP/s (wall) | "
           "fp32 GFLOP/CPU-s | bf16 GFLOP/CPU-s | bf16 / fp32 (CPU time) |\n|---|---|---:|---:|---:|---:|---:|\n",
           dt == LMC_DTYPE_F16 ? "F16" : "BF16", threads);
    for (size_t s = 0; s < sizeof NK / sizeof *NK; s++) {
        int64_t N = NK[s][0], K = NK[s][1];
        uint16_t *w = malloc((size_t)(N * K) * 2);
        float *x = malloc((size_t)(M * K) * 4), *y = malloc((size_t)(M * N) * 4);
        for (int64_t i = 0; i < N * K; i++) {
            float f = (float)(lmc_rng_uniform(&rng) * 2 - 1) * 0.05f;
            w[i] = dt == LMC_DTYPE_F16 ? lmc_f32_to_f16(f) : lmc_f32_to_bf16(f);
        }
        for (int64_t i = 0; i < M * K; i++) x[i] = (float)(lmc_rng_uniform(&rng) * 2 - 1);
        struct lmc_mat wm = {dt, N, K, w};
        double wall[2][1000], cpu[2][1000], flop = 2.0 * (double)M * (double)N * (double)K;
        for (int r = 0; r < rounds + 1; r++)
            for (int p = 0; p < 2; p++) {
                c->pf_min_m = p ? LMC_MIN(pf_default, M) : 0;
                if (p && !second) continue;
                double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                int reps = 3;
                const struct lmc_mat *wp = &wm;
                if (route && p) lmc_backend_cpu_route_rows(&be, M, M, NULL);
                for (int k = 0; k < reps; k++)
                    if ((p && dr) || (route && !p)) lmc_cpu_matmul_dr(c, 1, &y, x, M, &wp, NULL);
                    else be.matmul(be.ctx, y, x, M, &wm, NULL);
                if (route && p) lmc_backend_cpu_route_rows(&be, 0, 0, NULL);
                double w1 = bench_clock(CLOCK_MONOTONIC), c1 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                if (r == 0) continue; /* warm-up */
                wall[p][r - 1] = (w1 - w0) / reps;
                cpu[p][r - 1] = (c1 - c0) / reps;
            }
        double med[2][2] = {{0}};
        for (int p = 0; p < 2; p++) {
            if (p && !second) continue;
            qsort(wall[p], (size_t)rounds, sizeof(double), bench_cmpd);
            qsort(cpu[p], (size_t)rounds, sizeof(double), bench_cmpd);
            med[p][0] = wall[p][rounds / 2];
            med[p][1] = cpu[p][rounds / 2];
        }
        printf("| %lldx%lldx%lld | %s | %.1f | %.1f | %.1f | %.1f | %.2fx |\n", (long long)M, (long long)N,
               (long long)K, names[s], flop / med[0][0] * 1e-9, med[1][0] > 0 ? flop / med[1][0] * 1e-9 : 0,
               flop / med[0][1] * 1e-9, med[1][1] > 0 ? flop / med[1][1] * 1e-9 : 0,
               med[1][1] > 0 ? med[0][1] / med[1][1] : 0);
        free(w), free(x), free(y);
    }
    /* attention over M queries from position 0 (12 heads, 4 kv heads, hd 64):
     * the query-block kernel (attention_prefill.c) against the per-query
     * one (attention.c, reached by calls of LMC_CPU_ATTN_BLOCK_MIN_M - 1
     * queries: the same work) */
    {
        const int64_t H = 12, KV = 4, hd = 64, ch = LMC_CPU_ATTN_BLOCK_MIN_M - 1;
        float *q = malloc((size_t)(M * H * hd) * 4), *k = malloc((size_t)(M * KV * hd) * 4);
        float *v = malloc((size_t)(M * KV * hd) * 4), *o = malloc((size_t)(M * H * hd) * 4);
        for (int64_t i = 0; i < M * H * hd; i++) q[i] = (float)(lmc_rng_uniform(&rng) * 2 - 1);
        for (int64_t i = 0; i < M * KV * hd; i++) k[i] = (float)(lmc_rng_uniform(&rng) * 2 - 1);
        for (int64_t i = 0; i < M * KV * hd; i++) v[i] = (float)(lmc_rng_uniform(&rng) * 2 - 1);
        double wall[2][1000], cpu[2][1000], flop = 2.0 * 2.0 * (double)hd * (double)H * (double)M * (double)(M + 1) / 2;
        for (int r = 0; r < rounds + 1; r++)
            for (int p = 0; p < 2; p++) {
                double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                if (p) be.attention(be.ctx, o, q, k, v, M, 0, H, KV, hd, 0.125f, 0);
                else
                    for (int64_t i = 0; i < M; i += ch)
                        be.attention(be.ctx, o + i * H * hd, q + i * H * hd, k, v, LMC_MIN(ch, M - i), i, H, KV, hd,
                                     0.125f, 0);
                double w1 = bench_clock(CLOCK_MONOTONIC), c1 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
                if (r == 0) continue;
                wall[p][r - 1] = w1 - w0;
                cpu[p][r - 1] = c1 - c0;
            }
        double med[2][2];
        for (int p = 0; p < 2; p++) {
            qsort(wall[p], (size_t)rounds, sizeof(double), bench_cmpd);
            qsort(cpu[p], (size_t)rounds, sizeof(double), bench_cmpd);
            med[p][0] = wall[p][rounds / 2];
            med[p][1] = cpu[p][rounds / 2];
        }
        printf("\n| causal attention, %lld queries from position 0, 12 heads / 4 kv, hd 64 | per-query kernel | "
               "query blocks (sgemm) | blocks / per-query (CPU time) |\n|---|---:|---:|---:|\n"
               "| ms wall (median) | %.2f | %.2f | |\n| ms CPU (median, all threads) | %.2f | %.2f | %.2fx |\n"
               "| GFLOP per CPU-s | %.1f | %.1f | |\n",
               (long long)M, 1e3 * med[0][0], 1e3 * med[1][0], 1e3 * med[0][1], 1e3 * med[1][1], med[0][1] / med[1][1],
               flop / med[0][1] * 1e-9, flop / med[1][1] * 1e-9);
        free(q), free(k), free(v), free(o);
    }
    lmc_backend_cpu_free(&be);
    return 0;
}
