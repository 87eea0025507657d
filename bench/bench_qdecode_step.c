/* bench_qdecode_step.c — the quantized products of one 125M-shape decode
 * step (M = 1) on a thread pool, the way the model runs them: per layer
 * q/k/v (768, 256, 256 x 768) in one qmatmul_multi, o (768 x 768),
 * gate/up (2 x 2048 x 768) in one qmatmul_multi, down (768 x 2048); then
 * the lm_head (32000 x 768); 12 layers: 85 products in 49 pool runs (a
 * token adds 12 attention runs). Random weights
 * quantized as TYPE (q4_0, q4_k: GGUF rows, Q4_K and Q4_0 repacked as
 * the model loader repacks them on the CPU (quant/q4k_repack.c);
 * q4_k_file / q4_0_file: in the file's layout; gptq: lmc's 4-bit groups
 * of 128, asymmetric rtn), ~56 MB, so they stream from memory as in decode.
 * Prints the minimum and the median wall time of a step over REPS steps
 * and CPU ms per step; the minimum filters out the time slices other
 * processes take on a shared machine, so two builds (or two pool / split
 * versions linked in) compare by their minima, interleaved. Attention,
 * norms and sampling are not included: this is the products' and the
 * pool's share of a step.
 * Usage: bench_qdecode_step TYPE [THREADS 2] [REPS 200] [LAYERS 12] */
#include "core/core.h"
#include "core/threadpool.h"
#include "quant/qmatmul.h"
#include "quant/quant.h"

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static float rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

struct qw {
    struct lmc_qweight w;
    uint8_t *wq;
};

static void make(struct qw *q, int gt, bool repack, int64_t n, int64_t k, uint64_t *seed) {
    float *wf = malloc((size_t)(n * k) * 4);
    LMC_ASSERT(wf);
    for (int64_t i = 0; i < n * k; i++) wf[i] = rnd(seed);
    lmc_err err = {0};
    q->wq = NULL;
    if (gt < 0) {
        struct lmc_qgroups g;
        LMC_ASSERT(lmc_quant_rtn(wf, n, k, 4, 128, false, &g, &err) == LMC_OK);
        LMC_ASSERT(lmc_qweight_init_groups(&q->w, &g, &err) == LMC_OK);
        lmc_qgroups_free(&g);
    } else {
        int64_t rb;
        LMC_ASSERT(lmc_ggml_row_bytes(gt, k, &rb));
        q->wq = malloc((size_t)(n * rb));
        LMC_ASSERT(q->wq);
        for (int64_t o = 0; o < n; o++) lmc_ggml_quantize_row(gt, wf + o * k, q->wq + o * rb, k);
        if (repack) { /* the repacked rows replace the file's */
            uint8_t *r = malloc((size_t)(n * (k / 256) * LMC_Q4KR_BYTES));
            LMC_ASSERT(r);
            (gt == LMC_GGML_Q4_K ? lmc_q4kr_pack_rows : lmc_q40r_pack_rows)(q->wq, r, n, k);
            free(q->wq);
            q->wq = r;
            LMC_ASSERT((gt == LMC_GGML_Q4_K ? lmc_qweight_init_q4kr : lmc_qweight_init_q40r)(&q->w, q->wq, n, k, &err) ==
                       LMC_OK);
        } else {
            LMC_ASSERT(lmc_qweight_init_ggml(&q->w, gt, q->wq, n, k, &err) == LMC_OK);
        }
    }
    free(wf);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_qdecode_step q4_0|q4_0_file|q4_k|q4_k_file|gptq [THREADS 2] [REPS 200] [LAYERS 12]\n");
        return 2;
    }
    const char *type = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 2, reps = argc > 3 ? atoi(argv[3]) : 200;
    int layers = argc > 4 ? atoi(argv[4]) : 12;
    bool repack = !strcmp(type, "q4_k") || !strcmp(type, "q4_0");
    int gt = !strcmp(type, "q4_0") || !strcmp(type, "q4_0_file")   ? LMC_GGML_Q4_0
             : !strcmp(type, "q4_k") || !strcmp(type, "q4_k_file") ? LMC_GGML_Q4_K
                                                                    : -1;
    if ((gt < 0 && strcmp(type, "gptq")) || threads < 1 || reps < 1 || layers < 1 || layers > 64) {
        fprintf(stderr, "bench_qdecode_step: bad arguments\n");
        return 2;
    }
    const int64_t H = 768, KV = 256, F = 2048, V = 32000;
    uint64_t seed = 4242;
    struct qw(*L)[7] = calloc((size_t)layers, sizeof *L), head;
    const int64_t shp[7][2] = {{H, H}, {KV, H}, {KV, H}, {H, H}, {F, H}, {F, H}, {H, F}};
    for (int l = 0; l < layers; l++)
        for (int i = 0; i < 7; i++) make(&L[l][i], gt, repack, shp[i][0], shp[i][1], &seed);
    make(&head, gt, repack, V, H, &seed);
    struct lmc_qctx c;
    enum lmc_qisa isa = lmc_qctx_init(&c, LMC_QISA_AVX512VNNI);
    size_t sb = lmc_qmatmul_scratch_bytes(&head.w, 1);
    for (int i = 0; i < 7; i++) sb = LMC_MAX(sb, lmc_qmatmul_scratch_bytes(&L[0][i].w, 1));
    void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
    float *x = malloc((size_t)F * 4), *y[3], *logits = malloc((size_t)V * 4);
    for (int i = 0; i < 3; i++) y[i] = malloc((size_t)F * 4);
    for (int64_t i = 0; i < F; i++) x[i] = rnd(&seed);
    struct lmc_pool *pool = NULL;
    lmc_err err = {0};
    LMC_ASSERT(lmc_pool_init(&pool, threads, &err) == LMC_OK);
    double *t = malloc((size_t)reps * sizeof *t);
    double c0 = 0;
    for (int r = -reps / 10 - 1; r < reps; r++) {
        if (r == 0) c0 = bench_cpu();
        double t0 = bench_wall();
        for (int l = 0; l < layers; l++) {
            const struct lmc_qweight *qkv[3] = {&L[l][0].w, &L[l][1].w, &L[l][2].w};
            lmc_qmatmul_multi(&c, 3, qkv, y, x, 1, scratch, pool);
            lmc_qmatmul(&c, &L[l][3].w, y[0], x, 1, scratch, pool);
            const struct lmc_qweight *gu[2] = {&L[l][4].w, &L[l][5].w};
            lmc_qmatmul_multi(&c, 2, gu, y, x, 1, scratch, pool);
            lmc_qmatmul(&c, &L[l][6].w, y[0], x, 1, scratch, pool);
        }
        lmc_qmatmul(&c, &head.w, logits, x, 1, scratch, pool);
        if (r >= 0) t[r] = bench_wall() - t0;
    }
    double cpu = bench_cpu() - c0;
    qsort(t, (size_t)reps, sizeof *t, bench_cmpd);
    printf("bench_qdecode_step %s [%s] threads %d layers %d: step min %.3f ms, median %.3f ms; CPU %.3f ms a step (logit %g)\n",
           type, lmc_qisa_name(isa), threads, layers, t[0] * 1e3, t[reps / 2] * 1e3, cpu / reps * 1e3, logits[0]);
    lmc_pool_free(pool);
    for (int l = 0; l < layers; l++)
        for (int i = 0; i < 7; i++) lmc_qweight_free(&L[l][i].w), free(L[l][i].wq);
    lmc_qweight_free(&head.w), free(head.wq);
    free(L), free(t), free(scratch), free(x), free(logits);
    for (int i = 0; i < 3; i++) free(y[i]);
    return 0;
}
