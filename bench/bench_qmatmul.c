/* bench_qmatmul.c — quantized GEMV/GEMM (src/quant/qmatmul*.c) against the
 * CPU backend's F32 and F16 matmul on the 125M model's MLP shapes (up:
 * 3072x768, down: 768x3072), in one run: formats interleaved round-robin,
 * median (and minimum: on a shared, loaded machine the minimum is the
 * figure least touched by preemption) of repeats, weights cycled over
 * copies totalling >= 256 MB each so they stream from DRAM as a real
 * model's do. Prints us per call, weight GB/s and the speed-up over F16 for
 * M = 1 (decode) and M = 16.
 * Usage: bench_qmatmul [threads (default 2)] [--quick] */
#include "core/core.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "core/threadpool.h"
#include "ops/backend.h"
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { F_F32, F_F16, F_Q8_0, F_Q4_0, F_Q4_K, F_GPTQ4, F_NF4, F_COUNT };
static const char *fname[F_COUNT] = {"F32", "F16", "Q8_0", "Q4_0", "Q4_K", "GPTQ-4 g128", "NF4"};

struct fmt {
    int n_copies;
    size_t bytes;              /* one copy's weight bytes */
    struct lmc_mat mat[64];    /* F32/F16 */
    struct lmc_qweight qw[64]; /* quantized */
    void *buf[64];
};

int main(int argc, char **argv) {
    int threads = 2;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else threads = atoi(argv[i]);
    }
    lmc_err err = {0};
    struct lmc_backend be;
    if (lmc_backend_cpu_init(&be, threads, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct lmc_pool *pool = ((struct lmc_cpu_ctx *)be.ctx)->pool;
    struct lmc_qctx qc;
    lmc_qctx_init(&qc, LMC_QISA_AVX512VNNI);
    printf("# bench_qmatmul: %d threads, kernels %s\n", threads, lmc_qisa_name(qc.isa));
    const int64_t shapes[2][2] = {{3072, 768}, {768, 3072}};
    const int64_t ms[2] = {1, 16};
    static struct fmt F[F_COUNT];
    for (int s = 0; s < 2; s++) {
        int64_t n = shapes[s][0], k = shapes[s][1];
        float *wf = malloc((size_t)(n * k) * 4);
        uint64_t seed = 7;
        for (int64_t i = 0; i < n * k; i++) wf[i] = (float)((lmc_rng_uniform(&seed) * 2 - 1) * 0.05);
        for (int f = 0; f < F_COUNT; f++) {
            struct fmt *x = &F[f];
            memset(x, 0, sizeof *x);
            for (int c = 0; c < 64; c++) {
                if (f == F_F32 || f == F_F16) {
                    size_t eb = f == F_F32 ? 4 : 2;
                    x->buf[c] = malloc((size_t)(n * k) * eb);
                    for (int64_t i = 0; i < n * k; i++) {
                        if (f == F_F32) ((float *)x->buf[c])[i] = wf[i];
                        else ((uint16_t *)x->buf[c])[i] = lmc_f32_to_f16(wf[i]);
                    }
                    x->mat[c] = (struct lmc_mat){f == F_F32 ? LMC_DTYPE_F32 : LMC_DTYPE_F16, n, k, x->buf[c]};
                    x->bytes = (size_t)(n * k) * eb;
                } else if (f == F_GPTQ4) {
                    struct lmc_qgroups g;
                    if (lmc_quant_rtn(wf, n, k, 4, 128, true, &g, &err) ||
                        lmc_qweight_init_groups(&x->qw[c], &g, &err)) {
                        fprintf(stderr, "%s\n", err.msg);
                        return 1;
                    }
                    lmc_qgroups_free(&g);
                    x->bytes = lmc_qweight_bytes(&x->qw[c]);
                } else if (f == F_NF4) {
                    struct lmc_nf4 q;
                    if (lmc_nf4_quantize(wf, n * k, &q, &err) || lmc_qweight_init_nf4(&x->qw[c], &q, n, k, &err)) {
                        fprintf(stderr, "%s\n", err.msg);
                        return 1;
                    }
                    lmc_nf4_free(&q);
                    x->bytes = lmc_qweight_bytes(&x->qw[c]);
                } else {
                    int t = f == F_Q8_0 ? LMC_GGML_Q8_0 : f == F_Q4_0 ? LMC_GGML_Q4_0 : LMC_GGML_Q4_K;
                    int64_t rb;
                    lmc_ggml_row_bytes(t, k, &rb);
                    x->buf[c] = malloc((size_t)(n * rb));
                    for (int64_t r = 0; r < n; r++)
                        lmc_ggml_quantize_row(t, wf + r * k, (uint8_t *)x->buf[c] + r * rb, k);
                    lmc_qweight_init_ggml(&x->qw[c], t, x->buf[c], n, k, &err);
                    x->bytes = (size_t)(n * rb);
                }
                x->n_copies = c + 1;
                if ((size_t)x->n_copies * x->bytes >= ((size_t)256 << 20) || (quick && c >= 1)) break;
            }
        }
        for (int mi = 0; mi < 2; mi++) {
            int64_t m = ms[mi];
            float *xin = malloc((size_t)(m * k) * 4), *y = malloc((size_t)(m * n) * 4);
            for (int64_t i = 0; i < m * k; i++) xin[i] = (float)(lmc_rng_uniform(&seed) * 2 - 1);
            size_t sb = 0;
            for (int f = F_Q8_0; f < F_COUNT; f++) sb = LMC_MAX(sb, lmc_qmatmul_scratch_bytes(&F[f].qw[0], m));
            void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
            int reps = quick ? 5 : 41;
            double *t = malloc(sizeof(double) * (size_t)(reps * F_COUNT));
            for (int r = -2; r < reps; r++) /* round-robin: every format sees the same machine state */
                for (int f = 0; f < F_COUNT; f++) {
                    int c = (r + 2) % F[f].n_copies;
                    double t0 = lmc_time_now();
                    if (f <= F_F16) be.matmul(be.ctx, y, xin, m, &F[f].mat[c], NULL);
                    else lmc_qmatmul(&qc, &F[f].qw[c], y, xin, m, scratch, pool);
                    double dt = lmc_time_now() - t0;
                    if (r >= 0) t[f * reps + r] = dt;
                }
            double med[F_COUNT], mn[F_COUNT];
            for (int f = 0; f < F_COUNT; f++) {
                qsort(t + f * reps, (size_t)reps, sizeof *t, bench_cmpd);
                med[f] = t[f * reps + reps / 2];
                mn[f] = t[f * reps];
            }
            printf("\n## W (%lld x %lld), M = %lld\n\n| format | bytes | us/call (median) | us (min) | weight GB/s "
                   "| vs F16 (median) | vs F16 (min) |\n|---|---|---|---|---|---|---|\n",
                   (long long)n, (long long)k, (long long)m);
            for (int f = 0; f < F_COUNT; f++)
                printf("| %s | %.2f MB | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n", fname[f], (double)F[f].bytes / 1e6,
                       med[f] * 1e6, mn[f] * 1e6, (double)F[f].bytes / med[f] / 1e9, med[F_F16] / med[f],
                       mn[F_F16] / mn[f]);
            free(t);
            free(scratch);
            free(xin);
            free(y);
        }
        for (int f = 0; f < F_COUNT; f++)
            for (int c = 0; c < F[f].n_copies; c++) {
                if (f > F_F16) lmc_qweight_free(&F[f].qw[c]);
                free(F[f].buf[c]);
            }
        free(wf);
    }
    lmc_backend_cpu_free(&be);
    return 0;
}
