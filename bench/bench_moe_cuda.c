/* bench_moe_cuda.c — mixture of experts on the GPU (issue 14), two modes:
 *
 *   bench_moe_cuda gemm [--E 8] [--C 2048] [--I 5632] [--k 2] [--rows 64,512,4096]
 *       The expert GEMM of one layer's gate projection (bf16 weights (I, C)
 *       per expert; rows spread over the experts as a router would: rows
 *       * k choices, expert e getting a share that falls with e), timed
 *       both ways of moe_gemm.cu: GROUPED (one launch) and LOOP (one
 *       cuBLASLt matmul per expert, the table's); the two outputs are
 *       compared first (max relative difference), and the grouped kernel
 *       with the offsets in device memory (moe_gemm_dev). Medians of 20
 *       interleaved runs after 3 warm-ups, wall time around a device sync.
 *
 *   bench_moe_cuda model DIR [--prompt 512] [--batch 64] [--ctx 128] [--steps 32] [--rounds 3]
 *       A model folder (bf16 weights on the device): prefill of one PROMPT-
 *       token sequence (lmc_model_forward into a KV cache, logits of the
 *       last token; median of ROUNDS), then BATCH sequences of CTX tokens
 *       prefilled into a paged pool and STEPS greedy decode steps of the
 *       whole batch (lmc_model_forward_batch_argmax, the server's step):
 *       tokens/s = BATCH * STEPS / time, median of ROUNDS. Three expert
 *       GEMM paths interleaved in each round: [table] as the table is
 *       (moe_gemm_dev, the tensor-core grouped kernel reading the offsets
 *       on the device, for <= 64 rows per expert on average; else one
 *       cuBLASLt matmul per expert), [loop] (always the per-expert
 *       matmuls) and [grouped] (the grouped launch with host offsets).
 *
 * Prints one line per measurement (key value) for bench/gpu_moe.sh. */
#include "core/core.h"
#include "core/rng.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#ifdef LMC_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"
#include "bench_util.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LMC_HAVE_CUDA

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_moe_cuda: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
    exit(1);
}

static float urand(uint64_t *s) { return (float)((double)(lmc_rng_next(s) >> 11) / 9007199254740992.0 - 0.5); }

static uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static int bench_gemm(int argc, char **argv) {
    int64_t E = 8, C = 2048, I = 5632, k = 2;
    const char *rows_s = "64,512,4096";
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--E")) E = atoll(v);
        else if (!strcmp(o, "--C")) C = atoll(v);
        else if (!strcmp(o, "--I")) I = atoll(v);
        else if (!strcmp(o, "--k")) k = atoll(v);
        else if (!strcmp(o, "--rows")) rows_s = v;
        else die("unknown option", NULL);
    }
    if (E < 1 || E > 128 || C < 1 || I < 1 || k < 1 || k > E) die("option out of range", NULL);
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cuda_init(&be, 0, &err)) die("backend", &err);
    uint64_t seed = 7;
    /* expert weights, bf16 */
    size_t wn = (size_t)(I * C);
    uint16_t *wh = malloc(wn * 2);
    struct lmc_mat *wm = calloc((size_t)E, sizeof *wm);
    const struct lmc_mat **wp = calloc((size_t)E, sizeof *wp);
    if (!wh || !wm || !wp) die("out of memory", NULL);
    for (int64_t e = 0; e < E; e++) {
        for (size_t i = 0; i < wn; i++) wh[i] = f2bf(urand(&seed) * 0.05f);
        void *d = be.alloc(be.ctx, wn * 2);
        if (!d) die("device memory", NULL);
        be.upload(be.ctx, d, wh, wn * 2);
        wm[e] = (struct lmc_mat){LMC_DTYPE_BF16, I, C, d};
        wp[e] = &wm[e];
    }
    printf("gemm shape: E %lld experts, top-%lld, C %lld -> I %lld, bf16 weights\n", (long long)E, (long long)k,
           (long long)C, (long long)I);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", rows_s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int64_t n = atoll(tok), R = n * k;
        if (n < 1) continue;
        /* expert e gets a share falling with e (weights E - e), rounded; the rest to expert 0 */
        int64_t *off = calloc((size_t)E + 1, sizeof *off), wsum = E * (E + 1) / 2, given = 0;
        for (int64_t e = 0; e < E; e++) {
            int64_t m = R * (E - e) / wsum;
            off[e + 1] = m;
            given += m;
        }
        off[1] += R - given;
        for (int64_t e = 0; e < E; e++) off[e + 1] += off[e];
        float *xh = malloc((size_t)(R * C) * 4), *y1 = malloc((size_t)(R * I) * 4), *y2 = malloc((size_t)(R * I) * 4);
        if (!xh || !y1 || !y2) die("out of memory", NULL);
        for (int64_t i = 0; i < R * C; i++) xh[i] = urand(&seed);
        float *x = be.alloc(be.ctx, (size_t)(R * C) * 4), *y = be.alloc(be.ctx, (size_t)(R * I) * 4);
        if (!x || !y) die("device memory", NULL);
        be.upload(be.ctx, x, xh, (size_t)(R * C) * 4);
        lmc_cuda_moe_gemm_ex(be.ctx, y, x, off, E, wp, LMC_CUDA_MOE_GROUPED);
        be.download(be.ctx, y1, y, (size_t)(R * I) * 4);
        lmc_cuda_moe_gemm_ex(be.ctx, y, x, off, E, wp, LMC_CUDA_MOE_LOOP);
        be.download(be.ctx, y2, y, (size_t)(R * I) * 4);
        double md = 0, mx = 0;
        for (int64_t i = 0; i < R * I; i++) {
            md = fmax(md, fabs((double)y1[i] - y2[i]));
            mx = fmax(mx, fabs((double)y1[i]));
        }
        int64_t most = 0;
        for (int64_t e = 0; e < E; e++) most = off[e + 1] - off[e] > most ? off[e + 1] - off[e] : most;
        int64_t *offd = be.alloc(be.ctx, (size_t)(E + 1) * sizeof *offd);
        if (!offd) die("device memory", NULL);
        be.upload(be.ctx, offd, off, (size_t)(E + 1) * sizeof *offd);
        double t[3][20];
        for (int w = 0; w < 3; w++) /* warm-up, each path */
            for (int p = 0; p < 3; p++)
                if (p == 2) lmc_cuda_moe_gemm_dev(be.ctx, y, x, offd, most, E, wp);
                else lmc_cuda_moe_gemm_ex(be.ctx, y, x, off, E, wp, p ? LMC_CUDA_MOE_LOOP : LMC_CUDA_MOE_GROUPED);
        be.sync(be.ctx);
        for (int r = 0; r < 20; r++) /* the paths interleaved */
            for (int p = 0; p < 3; p++) {
                double t0 = lmc_time_now();
                if (p == 2) lmc_cuda_moe_gemm_dev(be.ctx, y, x, offd, most, E, wp);
                else lmc_cuda_moe_gemm_ex(be.ctx, y, x, off, E, wp, p ? LMC_CUDA_MOE_LOOP : LMC_CUDA_MOE_GROUPED);
                be.sync(be.ctx);
                t[p][r] = lmc_time_now() - t0;
            }
        double tg = bench_median(t[0], 20), tl = bench_median(t[1], 20), tdv = bench_median(t[2], 20);
        double fl = 2.0 * (double)R * (double)C * (double)I;
        printf("gemm tokens %lld (rows %lld): grouped %.3f ms (%.1f TFLOP/s), grouped device offsets %.3f ms, "
               "cublas loop %.3f ms (%.1f TFLOP/s), grouped/loop time %.2f, max rel diff %.2e\n",
               (long long)n, (long long)R, tg * 1e3, fl / tg / 1e12, tdv * 1e3, tl * 1e3, fl / tl / 1e12, tg / tl,
               mx > 0 ? md / mx : md);
        be.free(be.ctx, offd);
        be.free(be.ctx, x), be.free(be.ctx, y);
        free(xh), free(y1), free(y2), free(off);
    }
    for (int64_t e = 0; e < E; e++) be.free(be.ctx, (void *)wm[e].data);
    free(wh), free(wm), free(wp);
    lmc_backend_cuda_free(&be);
    return 0;
}

#define NM 3 /* expert GEMM paths of bench_model */

static int bench_model(int argc, char **argv) {
    if (argc < 3) die("usage: bench_moe_cuda model DIR [--prompt P] [--batch B] [--ctx CTX] [--steps S] [--rounds N]",
                      NULL);
    const char *dir = argv[2];
    int P = 512, B = 64, ctx = 128, steps = 32, rounds = 3;
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--prompt")) P = atoi(v);
        else if (!strcmp(o, "--batch")) B = atoi(v);
        else if (!strcmp(o, "--ctx")) ctx = atoi(v);
        else if (!strcmp(o, "--steps")) steps = atoi(v);
        else if (!strcmp(o, "--rounds")) rounds = atoi(v);
        else die("unknown option", NULL);
    }
    if (P < 1 || P > 16384 || B < 1 || B > 1024 || ctx < 1 || ctx > 4096 || steps < 1 || rounds < 1 || rounds > 20)
        die("option out of range", NULL);
    lmc_err err = {0};
    struct lmc_backend be, bes[NM];
    if (lmc_backend_cuda_init(&be, 0, &err)) die("backend", &err);
    bes[0] = be; /* the table: moe_gemm_dev (device offsets, no wait) for few rows per expert, else the loop */
    bes[1] = be;
    bes[1].moe_gemm_dev = NULL;                  /* always one cuBLASLt matmul per expert (host offsets) */
    bes[2] = be;
    bes[2].moe_gemm = lmc_cuda_moe_gemm_grouped; /* one grouped launch per projection (host offsets) */
    bes[2].moe_gemm_dev = NULL;
    static const char *names[NM] = {"table", "loop", "grouped"};
    struct lmc_model m;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_BF16, .be = &be};
    if (lmc_model_load(&m, dir, &mo, &err)) die("model", &err);
    uint64_t seed = 3;
    const int64_t V = m.cfg.vocab_size;
    /* prefill of one sequence */
    struct lmc_kv kv;
    struct lmc_acts a;
    if (lmc_kv_init(&kv, &m, &be, P + 1, &err) || lmc_acts_init(&a, &m, &be, P, P, &err)) die("kv / acts", &err);
    int32_t *pid = malloc((size_t)P * sizeof *pid);
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!pid || !logits) die("out of memory", NULL);
    for (int i = 0; i < P; i++) pid[i] = (int32_t)(1 + lmc_rng_next(&seed) % (uint64_t)(V - 1));
    double tp[NM][20];
    for (int r = -1; r < rounds; r++) /* round -1: warm-up; the paths interleaved */
        for (int q = 0; q < NM; q++) {
            be.sync(be.ctx);
            double t0 = lmc_time_now();
            if (lmc_model_forward(&m, &bes[q], &a, &kv, pid, P, 0, logits, false, &err)) die("prefill", &err);
            be.sync(be.ctx);
            if (r >= 0) tp[q][r] = lmc_time_now() - t0;
        }
    lmc_acts_free(&a);
    lmc_kv_free(&kv);
    for (int q = 0; q < NM; q++) {
        double t = bench_median(tp[q], rounds);
        printf("prefill %d tokens [%s]: %.2f ms, %.0f tok/s\n", P, names[q], t * 1e3, P / t);
    }
    /* batch decode */
    int64_t bs = 16, per = (ctx + steps + 1 + bs - 1) / bs, nb = (int64_t)B * per;
    struct lmc_kv_pool pool;
    struct lmc_batch_acts ba;
    if (lmc_kv_pool_init(&pool, &m, &be, nb, bs, &err)) die("kv pool", &err);
    if (lmc_batch_acts_init(&ba, &m, &be, (int64_t)B * ctx, B, per, B, &err)) die("batch scratch", &err);
    int32_t *bt = malloc((size_t)nb * sizeof *bt), *ids = malloc((size_t)B * ctx * sizeof *ids);
    int32_t *seq = malloc((size_t)B * ctx * sizeof *seq), *pos = malloc((size_t)B * ctx * sizeof *pos);
    int32_t *rows = malloc((size_t)B * sizeof *rows), *out = malloc((size_t)B * sizeof *out);
    if (!bt || !ids || !seq || !pos || !rows || !out) die("out of memory", NULL);
    for (int64_t i = 0; i < nb; i++) bt[i] = (int32_t)i;
    int64_t T = 0;
    for (int s = 0; s < B; s++)
        for (int p = 0; p < ctx; p++, T++) {
            ids[T] = (int32_t)(1 + lmc_rng_next(&seed) % (uint64_t)(V - 1));
            seq[T] = s;
            pos[T] = p;
        }
    for (int s = 0; s < B; s++) rows[s] = (int32_t)((s + 1) * ctx - 1);
    struct lmc_batch pre = {T, ids, seq, pos, B, bt, per, rows, B, NULL};
    if (lmc_model_forward_batch_argmax(&m, &be, &ba, &pool, &pre, out, &err)) die("batch prefill", &err);
    double td[NM][20];
    for (int r = -1; r < rounds; r++) /* round -1: warm-up */
        for (int q = 0; q < NM; q++) {
            for (int s = 0; s < B; s++) seq[s] = s, rows[s] = s;
            struct lmc_batch b = {B, out, seq, pos, B, bt, per, rows, B, NULL};
            be.sync(be.ctx);
            double t0 = lmc_time_now();
            for (int st = 0; st < steps; st++) {
                for (int s = 0; s < B; s++) pos[s] = ctx + st; /* the same positions each round: overwritten */
                if (lmc_model_forward_batch_argmax(&m, &bes[q], &ba, &pool, &b, out, &err)) die("decode step", &err);
            }
            be.sync(be.ctx);
            if (r >= 0) td[q][r] = lmc_time_now() - t0;
        }
    for (int q = 0; q < NM; q++) {
        double t = bench_median(td[q], rounds);
        printf("decode batch %d at context %d [%s]: %.3f ms/step, %.0f tok/s\n", B, ctx, names[q], t / steps * 1e3,
               (double)B * steps / t);
    }
    lmc_batch_acts_free(&ba);
    lmc_kv_pool_free(&pool);
    free(bt), free(ids), free(seq), free(pos), free(rows), free(out), free(pid), free(logits);
    lmc_model_free(&m);
    lmc_backend_cuda_free(&be);
    return 0;
}

#endif /* LMC_HAVE_CUDA */

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "gemm") && strcmp(argv[1], "model"))) {
        fprintf(stderr, "usage: bench_moe_cuda gemm [--E 8] [--C 2048] [--I 5632] [--k 2] [--rows 64,512,4096]\n"
                        "       bench_moe_cuda model DIR [--prompt 512] [--batch 64] [--ctx 128] [--steps 32] "
                        "[--rounds 3]\n");
        return 2;
    }
    if (lmc_cuda_device_count() == 0) {
        printf("bench_moe_cuda: skipped: no CUDA device\n");
        return 0;
    }
#ifdef LMC_HAVE_CUDA
    return !strcmp(argv[1], "gemm") ? bench_gemm(argc, argv) : bench_model(argc, argv);
#else
    fprintf(stderr, "bench_moe_cuda: built without CUDA\n");
    return 1;
#endif
}
