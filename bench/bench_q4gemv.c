/* bench_q4gemv.c — the matmuls of one decode token of bench_cpu's 125M
 * Llama (12 layers of q 768x768, k and v 256x768, o 768x768, gate and up
 * 2048x768, down 768x2048, then the head 32000x768), each layer its own
 * weights (56 MB of Q4_0, 200 MB of F16: they stream from DRAM as a real
 * model's do), through the CPU backend (its thread pool, its small-M
 * kernels): Q4_0 (lmc_qmatmul) and F16 (backend matmul), interleaved
 * token by token so both see the same machine. Prints, per format and M,
 * the median and minimum wall time of a token and the weight GB/s at the
 * minimum, and the Q4_0 / F16 ratio. M = 1 is decode; larger M the
 * small-M kernels (verification) and a prefill chunk.
 * Usage: bench_q4gemv [threads (2)] [reps (31)] [M ...] (default M: 1 4 64) */
#include "core/core.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NL 12
#define NMAT (7 * NL + 1)

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 31;
    int64_t ms[16] = {1, 4, 64};
    int nm = 3;
    if (argc > 3) {
        nm = 0;
        for (int i = 3; i < argc && nm < 16; i++) ms[nm++] = atoll(argv[i]);
    }
    if (reps < 1) reps = 1;
    lmc_err err = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct lmc_cpu_ctx *cc = be.ctx;
    static const int64_t shp[7][2] = {{768, 768}, {256, 768}, {256, 768}, {768, 768},
                                      {2048, 768}, {2048, 768}, {768, 2048}};
    struct lmc_qweight qw[NMAT];
    struct lmc_mat fw[NMAT];
    void *qbuf[NMAT];
    size_t qbytes = 0, fbytes = 0;
    uint64_t seed = 11;
    int64_t kmax = 0, nmax = 0;
    for (int i = 0; i < NMAT; i++) {
        int64_t n = i == NMAT - 1 ? 32000 : shp[i % 7][0], k = i == NMAT - 1 ? 768 : shp[i % 7][1], rb;
        kmax = LMC_MAX(kmax, k), nmax = LMC_MAX(nmax, n);
        lmc_ggml_row_bytes(LMC_GGML_Q4_0, k, &rb);
        float *wf = malloc((size_t)(n * k) * 4);
        uint16_t *wh = malloc((size_t)(n * k) * 2);
        qbuf[i] = malloc((size_t)(n * rb));
        for (int64_t j = 0; j < n * k; j++) {
            wf[j] = (float)((lmc_rng_uniform(&seed) * 2 - 1) * 0.05);
            wh[j] = lmc_f32_to_f16(wf[j]);
        }
        for (int64_t r = 0; r < n; r++) lmc_ggml_quantize_row(LMC_GGML_Q4_0, wf + r * k, (uint8_t *)qbuf[i] + r * rb, k);
        if (lmc_qweight_init_ggml(&qw[i], LMC_GGML_Q4_0, qbuf[i], n, k, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        fw[i] = (struct lmc_mat){LMC_DTYPE_F16, n, k, wh};
        qbytes += (size_t)(n * rb);
        fbytes += (size_t)(n * k) * 2;
        free(wf);
    }
    printf("# bench_q4gemv: %d threads, kernels %s, %d reps; weights Q4_0 %.1f MB, F16 %.1f MB\n", threads,
           lmc_qisa_name(cc->qctx->isa), reps, (double)qbytes / 1e6, (double)fbytes / 1e6);
    printf("| M | Q4_0 ms/token (median) | (min) | Q4_0 GB/s (min) | F16 ms (median) | (min) | F16 GB/s (min) "
           "| F16 / Q4_0 time (median) | (min) |\n|---|---|---|---|---|---|---|---|---|\n");
    for (int mi = 0; mi < nm; mi++) {
        int64_t m = ms[mi];
        float *x = malloc((size_t)(m * kmax) * 4), *y = malloc((size_t)(m * nmax) * 4);
        for (int64_t j = 0; j < m * kmax; j++) x[j] = (float)(lmc_rng_uniform(&seed) * 2 - 1);
        double *t = malloc(sizeof(double) * (size_t)(2 * reps));
        for (int r = -2; r < reps; r++)
            for (int f = 0; f < 2; f++) {
                double t0 = lmc_time_now();
                for (int i = 0; i < NMAT; i++) {
                    if (f == 0) be.qmatmul(be.ctx, y, x, m, &qw[i], NULL);
                    else be.matmul(be.ctx, y, x, m, &fw[i], NULL);
                }
                if (r >= 0) t[f * reps + r] = lmc_time_now() - t0;
            }
        qsort(t, (size_t)reps, sizeof *t, bench_cmpd);
        qsort(t + reps, (size_t)reps, sizeof *t, bench_cmpd);
        double qm = t[reps / 2], qn = t[0], fm = t[reps + reps / 2], fn = t[reps];
        printf("| %lld | %.3f | %.3f | %.1f | %.3f | %.3f | %.1f | %.2fx | %.2fx |\n", (long long)m, qm * 1e3, qn * 1e3,
               (double)qbytes / qn / 1e9, fm * 1e3, fn * 1e3, (double)fbytes / fn / 1e9, fm / qm, fn / qn);
        fflush(stdout);
        free(t), free(x), free(y);
    }
    for (int i = 0; i < NMAT; i++) {
        lmc_qweight_free(&qw[i]);
        free(qbuf[i]);
        free((void *)fw[i].data);
    }
    lmc_backend_cpu_free(&be);
    return 0;
}
