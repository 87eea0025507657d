/* bench_attn_cuda.c — times the CUDA attention kernels (causal prefill,
 * pos0 = 0) on (B, H, S, D) shapes given as B,H,S,D arguments, as the
 * backend table holds them: q f32 (rounded to bf16 as it is read), K/V
 * bf16 (the cache), output f32. --f32 adds the fp32 kernel over f32 K/V. Prints ms (median of timed runs, after warm-up; the
 * host clock around a stream sync, runs of several ms each) and TFLOP/s
 * counting 4*B*H*S*S*D/2 causal FLOPs. With --f32 also the fp32 kernel.
 * Usage: bench_attn_cuda [--f32] B,H,S,D ... */
#include "core/core.h"
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

static void *dev_rand(struct lmc_backend *be, int64_t n, uint64_t seed, int bf16) {
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = (float)((seed >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
    size_t es = bf16 ? 2 : sizeof(float);
    if (bf16) {
        uint16_t *b = (uint16_t *)h;
        for (int64_t i = 0; i < n; i++) b[i] = lmc_f32_to_bf16(h[i]); /* b[i] precedes h[i] */
    }
    void *d = be->alloc(be->ctx, (size_t)n * es);
    LMC_ASSERT(d != NULL);
    be->upload(be->ctx, d, h, (size_t)n * es);
    free(h);
    return d;
}

static double time_kind(struct lmc_backend *be, enum lmc_cuda_attn_kind kind, float *o,
                        const float *q, const void *k, const void *v, enum lmc_dtype kvt,
                        int64_t B, int64_t H, int64_t S, int64_t D) {
    int64_t st = S * H * D;
    double t[15];
    int reps = 15;
    for (int w = 0; w < 3; w++)
        lmc_cuda_attention_ex(be->ctx, o, q, k, v, kvt, S, 0, H, H, D, 1.0f / sqrtf((float)D), 0, B, st,
                              st, kind);
    be->sync(be->ctx);
    for (int r = 0; r < reps; r++) {
        double t0 = lmc_time_now();
        lmc_cuda_attention_ex(be->ctx, o, q, k, v, kvt, S, 0, H, H, D, 1.0f / sqrtf((float)D), 0, B, st,
                              st, kind);
        be->sync(be->ctx);
        t[r] = lmc_time_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, bench_cmpd);
    return t[reps / 2];
}

int main(int argc, char **argv) {
    if (lmc_cuda_device_count() == 0) {
        printf("bench_attn_cuda: skipped: no CUDA device\n");
        return 0;
    }
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cuda_init(&be, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int f32 = 0;
    printf("%-22s %10s %10s %12s %12s\n", "B,H,S,D", "tc ms", "tc TFLOP/s", "f32 ms", "f32 TFLOP/s");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--f32")) {
            f32 = 1;
            continue;
        }
        long long B, H, S, D;
        if (sscanf(argv[i], "%lld,%lld,%lld,%lld", &B, &H, &S, &D) != 4) {
            fprintf(stderr, "bad shape '%s' (want B,H,S,D)\n", argv[i]);
            return 2;
        }
        int64_t n = B * S * H * D;
        float *q = dev_rand(&be, n, 1, 0), *o = be.alloc(be.ctx, (size_t)n * sizeof(float));
        void *k = dev_rand(&be, n, 2, 1), *v = dev_rand(&be, n, 3, 1);
        double flops = 4.0 * (double)B * H * (double)S * S * D / 2;
        double ttc = time_kind(&be, LMC_CUDA_ATTN_TC, o, q, k, v, LMC_DTYPE_BF16, B, H, S, D);
        double tf = 0;
        if (f32) {
            void *k32 = dev_rand(&be, n, 2, 0), *v32 = dev_rand(&be, n, 3, 0);
            tf = time_kind(&be, LMC_CUDA_ATTN_F32, o, q, k32, v32, LMC_DTYPE_F32, B, H, S, D);
            be.free(be.ctx, k32), be.free(be.ctx, v32);
        }
        printf("%-22s %10.3f %10.1f %12.3f %12.1f\n", argv[i], ttc * 1e3, flops / ttc / 1e12,
               tf * 1e3, f32 ? flops / tf / 1e12 : 0.0);
        be.free(be.ctx, q), be.free(be.ctx, k), be.free(be.ctx, v), be.free(be.ctx, o);
    }
    lmc_backend_cuda_free(&be);
    return 0;
}
#else
int main(void) {
    printf("bench_attn_cuda: skipped: built without CUDA\n");
    return 0;
}
#endif
