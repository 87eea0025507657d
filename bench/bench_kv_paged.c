/* bench_kv_paged.c — paged attention over compressed and f16 KV pools (issue 17)
 * against the backend's plain pool (bf16 on CUDA, f32 on the CPU), through
 * the backend table only (infer/kvq.h's lmc_kvq_paged_backend): for each
 * format, NSEQ sequences of LEN cached tokens (rows of KV heads x HD,
 * blocks of 32; keys with per-channel scales and offsets, as real keys
 * have) are stored by the op itself in prefill chunks, then one decode
 * step (a token per sequence at position LEN, H query heads) is timed:
 * median of REPS calls after warm-up, host clock around a sync. The error
 * is the output's largest deviation from a float64 attention over the
 * true rows (values have variance 1), and that over the reference's
 * largest value, over the heads of 8 sampled sequences. KIVI-2 keeps the last 32 positions in f16 (rings).
 * Prints a markdown table: format, bytes per token and layer (K and V),
 * x of the plain pool's, decode attention ms, speed vs plain, error.
 * Usage: bench_kv_paged [--device cpu|cuda] [--threads N] [--reps N]
 *        [NSEQ,LEN,KV,HD,H]   (default 64,2048,8,128,32 on cuda,
 *                               4,512,2,64,8 on the cpu) */
#include "core/core.h"
#include "core/dtype.h"
#include "infer/kvq.h"
#include "model/forward_batch.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#include "ops/cpu/kvquant.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BSZ 32

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
/* a deterministic value of mean 0 and variance 1 for (stream, index): the
 * sum of two uniforms from one hash (triangular), scaled */
static float gauss(uint64_t s, uint64_t i) {
    uint64_t h = mix(s * 0x100000001b3ull + i);
    double u = (double)(h >> 32) / 4294967296.0 + (double)(h & 0xffffffffu) / 4294967296.0;
    return (float)((u - 1.0) * 2.4494897);
}
struct shape { int64_t nseq, len, kv, hd, h; };
/* true key / value channel c of (sequence s, position t) */
static float key_of(const struct shape *z, int64_t s, int64_t t, int64_t c) {
    float sc = 1.0f + 4.0f * (float)(mix((uint64_t)c) % 1000) / 1000.0f * ((c % 16) == 3);
    float off = 0.5f * gauss(7, (uint64_t)c);
    return sc * gauss(1, (uint64_t)((s * (z->len + 1) + t) * z->kv * z->hd + c)) + off;
}
static float val_of(const struct shape *z, int64_t s, int64_t t, int64_t c) {
    return gauss(2, (uint64_t)((s * (z->len + 1) + t) * z->kv * z->hd + c));
}

struct run { double ms, err, abs; size_t bytes; };

static struct run bench_fmt(const struct lmc_backend *be, enum lmc_kvq_fmt f, const struct shape *z, int reps) {
    struct run r = {0, 0, 0, 0};
    const int64_t row = z->kv * z->hd, per = (z->len + 1 + BSZ - 1) / BSZ, nb = z->nseq * per;
    const size_t rb = lmc_kv_pool_row_bytes(be, row), pool = (size_t)(nb * BSZ) * rb;
    r.bytes = 2 * rb;
    void *kc = be->alloc(be->ctx, pool), *vc = be->alloc(be->ctx, pool);
    const int64_t residual = 32, rrows = lmc_kv_pool_ring_rows(residual);
    const size_t rsb = lmc_kv_ring_slot_bytes(row, rrows);
    void *ring = f == LMC_KVQ_KIVI2 ? be->alloc(be->ctx, (size_t)z->nseq * rsb) : NULL;
    LMC_ASSERT(kc && vc && (ring || f != LMC_KVQ_KIVI2));
    if (ring) { /* empty rings: tags -1 */
        char *h = malloc(rsb);
        memset(h, 0, rsb);
        memset(h + 2 * lmc_kv_ring_part_bytes(row, rrows), 0xff, (size_t)rrows * 4);
        for (int64_t s = 0; s < z->nseq; s++) be->upload(be->ctx, (char *)ring + (size_t)s * rsb, h, rsb);
        free(h);
    }
    int32_t *bt = malloc((size_t)(z->nseq * per) * sizeof *bt);
    for (int64_t i = 0; i < z->nseq * per; i++) bt[i] = (int32_t)i;
    void *dbt = be->alloc(be->ctx, (size_t)(z->nseq * per) * sizeof *bt);
    be->upload(be->ctx, dbt, bt, (size_t)(z->nseq * per) * sizeof *bt);
    /* prefill, chunks of up to 512 positions of one sequence */
    const int64_t CH = 512, qn = LMC_MAX(CH, z->nseq) * z->h * z->hd, kn = LMC_MAX(CH, z->nseq) * row;
    float *hq = malloc((size_t)qn * sizeof(float)), *hk = malloc((size_t)kn * sizeof(float));
    float *hv = malloc((size_t)kn * sizeof(float));
    int32_t *hs = malloc((size_t)LMC_MAX(CH, z->nseq) * sizeof(int32_t)), *hp = malloc((size_t)LMC_MAX(CH, z->nseq) * sizeof(int32_t));
    void *dq = be->alloc(be->ctx, (size_t)qn * 4), *dk = be->alloc(be->ctx, (size_t)kn * 4), *dv = be->alloc(be->ctx, (size_t)kn * 4);
    void *ds = be->alloc(be->ctx, (size_t)LMC_MAX(CH, z->nseq) * 4), *dp = be->alloc(be->ctx, (size_t)LMC_MAX(CH, z->nseq) * 4);
    void *dtr = be->alloc(be->ctx, (size_t)LMC_MAX(CH, z->nseq) * 4), *dout = be->alloc(be->ctx, (size_t)qn * 4);
    float scale = 1.0f / sqrtf((float)z->hd);
    for (int64_t i = 0; i < qn; i++) hq[i] = gauss(3, (uint64_t)i);
    be->upload(be->ctx, dq, hq, (size_t)qn * 4);
#define CALL(T)                                                                                                  \
    do {                                                                                                         \
        if (ring)                                                                                                \
            be->attention_paged_ring(be->ctx, dout, dq, dk, dv, kc, vc, ring, dtr, rrows, residual, (T), ds, dp, dbt, \
                                     per, BSZ, z->h, z->kv, z->hd, scale, 0);                                    \
        else                                                                                                     \
            be->attention_paged(be->ctx, dout, dq, dk, dv, kc, vc, (T), ds, dp, dbt, per, BSZ, z->h, z->kv,      \
                                z->hd, scale, 0);                                                                \
    } while (0)
    for (int64_t s = 0; s < z->nseq; s++)
        for (int64_t p0 = 0; p0 < z->len; p0 += CH) {
            int64_t T = LMC_MIN(CH, z->len - p0);
            for (int64_t i = 0; i < T; i++) {
                hs[i] = (int32_t)s, hp[i] = (int32_t)(p0 + i);
                for (int64_t c = 0; c < row; c++) hk[i * row + c] = key_of(z, s, p0 + i, c), hv[i * row + c] = val_of(z, s, p0 + i, c);
            }
            be->upload(be->ctx, dk, hk, (size_t)(T * row) * 4);
            be->upload(be->ctx, dv, hv, (size_t)(T * row) * 4);
            be->upload(be->ctx, ds, hs, (size_t)T * 4);
            be->upload(be->ctx, dp, hp, (size_t)T * 4);
            be->upload(be->ctx, dtr, hs, (size_t)T * 4); /* ring slot = sequence */
            CALL(T);
        }
    /* the decode step: one token per sequence at position len */
    for (int64_t s = 0; s < z->nseq; s++) {
        hs[s] = (int32_t)s, hp[s] = (int32_t)z->len;
        for (int64_t c = 0; c < row; c++) hk[s * row + c] = key_of(z, s, z->len, c), hv[s * row + c] = val_of(z, s, z->len, c);
    }
    be->upload(be->ctx, dk, hk, (size_t)(z->nseq * row) * 4);
    be->upload(be->ctx, dv, hv, (size_t)(z->nseq * row) * 4);
    be->upload(be->ctx, ds, hs, (size_t)z->nseq * 4);
    be->upload(be->ctx, dp, hp, (size_t)z->nseq * 4);
    be->upload(be->ctx, dtr, hs, (size_t)z->nseq * 4);
    for (int w = 0; w < 3; w++) CALL(z->nseq);
    be->sync(be->ctx);
    double *t = malloc((size_t)reps * sizeof *t);
    for (int i = 0; i < reps; i++) {
        double t0 = lmc_time_now();
        CALL(z->nseq);
        be->sync(be->ctx);
        t[i] = lmc_time_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, bench_cmpd);
    r.ms = t[reps / 2] * 1e3;
    /* error vs float64 over the true rows, 8 sampled sequences */
    float *out = malloc((size_t)(z->nseq * z->h * z->hd) * sizeof *out);
    be->download(be->ctx, out, dout, (size_t)(z->nseq * z->h * z->hd) * 4);
    be->sync(be->ctx);
    double num = 0, den = 0, *sc = malloc((size_t)(z->len + 1) * sizeof *sc), *o = malloc((size_t)z->hd * sizeof *o);
    for (int64_t k = 0; k < LMC_MIN(8, z->nseq); k++) {
        int64_t s = k * z->nseq / LMC_MIN(8, z->nseq);
        for (int64_t h = 0; h < z->h; h++) {
            int64_t kvh = h / (z->h / z->kv);
            const float *q = hq + (s * z->h + h) * z->hd;
            double mx = -INFINITY, sum = 0;
            for (int64_t p = 0; p <= z->len; p++) {
                double d = 0;
                for (int64_t e = 0; e < z->hd; e++) d += (double)q[e] * key_of(z, s, p, kvh * z->hd + e);
                sc[p] = d * scale;
                mx = fmax(mx, sc[p]);
            }
            for (int64_t e = 0; e < z->hd; e++) o[e] = 0;
            for (int64_t p = 0; p <= z->len; p++) sum += sc[p] = exp(sc[p] - mx);
            for (int64_t p = 0; p <= z->len; p++)
                for (int64_t e = 0; e < z->hd; e++) o[e] += sc[p] / sum * val_of(z, s, p, kvh * z->hd + e);
            for (int64_t e = 0; e < z->hd; e++) {
                num = fmax(num, fabs(o[e] - out[(s * z->h + h) * z->hd + e]));
                den = fmax(den, fabs(o[e]));
            }
        }
    }
    r.err = num / den;
    r.abs = num;
    void *bufs[] = {kc, vc, ring, dbt, dq, dk, dv, ds, dp, dtr, dout};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) be->free(be->ctx, bufs[i]);
    free(bt), free(hq), free(hk), free(hv), free(hs), free(hp), free(t), free(out), free(sc), free(o);
#undef CALL
    return r;
}

int main(int argc, char **argv) {
    const char *dev = "cpu";
    int threads = 2, reps = 21;
    struct shape z = {0, 0, 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) dev = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (sscanf(argv[i], "%ld,%ld,%ld,%ld,%ld", (long *)&z.nseq, (long *)&z.len, (long *)&z.kv,
                        (long *)&z.hd, (long *)&z.h) != 5) {
            fprintf(stderr, "usage: bench_kv_paged [--device cpu|cuda] [--threads N] [--reps N] [NSEQ,LEN,KV,HD,H]\n");
            return 2;
        }
    }
    bool cuda = !strcmp(dev, "cuda");
    if (!z.nseq) z = cuda ? (struct shape){64, 2048, 8, 128, 32} : (struct shape){4, 512, 2, 64, 8};
    if (z.nseq <= 0 || z.len <= 0 || z.kv <= 0 || z.hd <= 0 || z.h <= 0 || z.h % z.kv || reps < 1) {
        fprintf(stderr, "bench_kv_paged: bad shape or reps\n");
        return 2;
    }
    struct lmc_backend base;
    lmc_err err = {0};
    if (cuda ? lmc_backend_cuda_init(&base, 0, &err) : lmc_backend_cpu_init(&base, threads, &err)) {
        fprintf(stderr, "bench_kv_paged: %s\n", err.msg);
        return 1;
    }
    printf("# bench_kv_paged on %s: %ld sequences x %ld cached tokens, %ld KV heads x %ld, %ld query heads; "
           "decode step (one token per sequence), median of %d\n",
           base.name, (long)z.nseq, (long)z.len, (long)z.kv, (long)z.hd, (long)z.h, reps);
    printf("| pool | bytes / token / layer | vs plain | decode attention ms | speed vs plain | max error vs float64 "
           "(abs; / max output) |\n");
    printf("|---|---|---|---|---|---|\n");
    struct run plain = {0, 0, 0, 0};
    for (int f = LMC_KVQ_NONE; f <= LMC_KVQ_F16; f++) { /* f16 last: CPU only (refused on CUDA) */
        struct lmc_backend be = base;
        if (f && lmc_kvq_paged_backend(&be, &base, (enum lmc_kvq_fmt)f, &err)) {
            printf("| %s | refused: %s |\n", lmc_kvq_name((enum lmc_kvq_fmt)f), err.msg);
            continue;
        }
        struct run r = bench_fmt(&be, (enum lmc_kvq_fmt)f, &z, reps);
        if (!f) plain = r;
        printf("| %s%s | %zu | %.3fx | %.3f | %.2fx | %.2e; %.2e |\n",
               f ? lmc_kvq_name((enum lmc_kvq_fmt)f) : (cuda ? "bf16" : "f32"), f == LMC_KVQ_KIVI2 ? " (R 32)" : "",
               r.bytes, (double)r.bytes / (double)plain.bytes, r.ms, plain.ms / r.ms, r.abs, r.err);
        fflush(stdout);
    }
    if (cuda) lmc_backend_cuda_free(&base);
    else lmc_backend_cpu_free(&base);
    return 0;
}
