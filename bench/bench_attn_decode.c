/* bench_attn_decode.c — the CPU backend's decode attention alone (M = 1
 * query over a contiguous KV cache, the 125M bench model's shape: 12 query
 * heads, 4 kv heads, head_dim 64) at contexts 64..512: the minimum and the
 * median wall time of one call over REPS calls, and CPU us per call (both
 * threads). One layer's K and V rows per context (12 layers of them: each
 * call reads a different layer's cache, as a token's 12 calls do). Two
 * builds compare by their minima, interleaved (a loaded machine).
 * Usage: bench_attn_decode [THREADS 2] [REPS 2000] [M 1] [SHAPE 125m|kjv]
 * M > 1: a verification's M query rows at positions ctx - M .. ctx - 1
 * (head-major tasks); kjv: kjv-target's 9 heads / 9 kv heads, head_dim 64
 * (spec23). */
#include "core/core.h"
#include "ops/backend.h"

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 2000;
    int64_t M = argc > 3 ? atoi(argv[3]) : 1;
    bool kjv = argc > 4 && !strcmp(argv[4], "kjv");
    const int64_t H = kjv ? 9 : 12, KV = kjv ? 9 : 4, D = 64, L = 12, ctxs[] = {64, 128, 256, 512};
    struct lmc_backend be;
    lmc_err err = {0};
    if (threads < 1 || reps < 1 || M < 1 || M > 32 || lmc_backend_cpu_init(&be, threads, &err)) {
        fprintf(stderr, "usage: bench_attn_decode [THREADS 2] [REPS 2000] [M 1..32] [125m|kjv] (%s)\n", err.msg);
        return 2;
    }
    int64_t maxT = 513, per = maxT * KV * D;
    float *k = malloc((size_t)(L * per) * sizeof *k), *v = malloc((size_t)(L * per) * sizeof *v);
    float *q = malloc((size_t)(M * H * D) * sizeof *q), *o = malloc((size_t)(M * H * D) * sizeof *o);
    double *t = malloc((size_t)reps * sizeof *t);
    LMC_ASSERT(k && v && q && o && t);
    uint64_t s = 7;
    for (int64_t i = 0; i < L * per; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        k[i] = (float)((s >> 40) & 0xffff) / 65536.0f - 0.5f;
        v[i] = (float)((s >> 24) & 0xffff) / 65536.0f - 0.5f;
    }
    for (int64_t i = 0; i < M * H * D; i++) q[i] = (float)(i % 13) / 13.0f - 0.5f;
    for (size_t c = 0; c < sizeof ctxs / sizeof *ctxs; c++) {
        int64_t pos0 = ctxs[c] - M;
        double c0 = bench_cpu();
        for (int r = 0; r < reps; r++) {
            int64_t l = r % L;
            double t0 = bench_wall();
            be.attention(be.ctx, o, q, k + l * per, v + l * per, M, pos0, H, KV, D, 0.125f, 0);
            t[r] = bench_wall() - t0;
        }
        double cpu = bench_cpu() - c0;
        qsort(t, (size_t)reps, sizeof *t, bench_cmpd);
        printf("attn_decode M %lld ctx %4lld threads %d: min %.2f us median %.2f us, CPU %.2f us/call (o[5] %.6f)\n",
               (long long)M, (long long)ctxs[c], threads, 1e6 * t[0], 1e6 * t[reps / 2], 1e6 * cpu / reps, (double)o[5]);
    }
    lmc_backend_cpu_free(&be);
    free(k), free(v), free(q), free(o), free(t);
    return 0;
}
