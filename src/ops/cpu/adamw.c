/* adamw.c — the optimizer's backend ops on the CPU (see backend.h): zero,
 * a deterministic sum of squares (fixed chunks summed in order, so the
 * result depends on n alone, not on the thread count) and the element-wise
 * AdamW update (lmc_adamw_apply, the one implementation of the formula:
 * train/adamw.c's lmc_adamw_update runs it too). */
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SUMSQ_CHUNK ((int64_t)1 << 16)

void lmc_cpu_zero(void *ctx, void *p, size_t bytes) {
    (void)ctx;
    if (bytes) memset(p, 0, bytes);
}

struct sumsq_job {
    const float *x;
    int64_t n;
    double *part;
};

static void sumsq_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct sumsq_job *j = arg;
    int64_t lo = t * SUMSQ_CHUNK, hi = LMC_MIN(j->n, lo + SUMSQ_CHUNK);
    double s[4] = {0, 0, 0, 0};
    int64_t i = lo;
    for (; i + 4 <= hi; i += 4)
        for (int u = 0; u < 4; u++) s[u] += (double)j->x[i + u] * (double)j->x[i + u];
    for (; i < hi; i++) s[0] += (double)j->x[i] * (double)j->x[i];
    j->part[t] = (s[0] + s[1]) + (s[2] + s[3]);
}

double lmc_cpu_sumsq(void *ctx, const float *x, int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return 0;
    int64_t chunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double one, *part = chunks == 1 ? &one : malloc((size_t)chunks * sizeof *part);
    LMC_ASSERT(part);
    struct sumsq_job j = {x, n, part};
    if (chunks == 1) sumsq_task(&j, 0, 0);
    else lmc_pool_run(c->pool, chunks, sumsq_task, &j);
    double s = 0;
    for (int64_t t = 0; t < chunks; t++) s += part[t];
    if (part != &one) free(part);
    return s;
}

#if defined(__AVX2__) && !defined(__AVX512F__)
/* 8 lanes and a scalar tail, every operation rounded on its own as the
 * AVX-512 body: fp-contract off for this function (GCC would otherwise
 * fuse the intrinsics' multiplies and adds into FMAs), so the bits are the
 * uncontracted formula's for any split of the elements. */
#ifdef __clang__
#define LMC_ADAMW_NOCONTRACT _Pragma("clang fp contract(off)")
#else
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#define LMC_ADAMW_NOCONTRACT
#endif
static void lmc_adamw_apply_avx2(float *p, const float *g, float *m, float *v, int64_t n,
                                 const struct lmc_adamw_step *s) {
    LMC_ADAMW_NOCONTRACT
    const __m256 gs = _mm256_set1_ps(s->grad_scale), dm = _mm256_set1_ps(s->decay_mul),
                 b2 = _mm256_set1_ps(s->beta2), o1 = _mm256_set1_ps(s->one_minus_b1),
                 o2 = _mm256_set1_ps(s->one_minus_b2), bc = _mm256_set1_ps(s->bc2_sqrt),
                 ep = _mm256_set1_ps(s->eps), ss = _mm256_set1_ps(s->step_size);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i), pv = _mm256_loadu_ps(p + i), mv = _mm256_loadu_ps(m + i),
               vv = _mm256_loadu_ps(v + i);
        __m256 gi = _mm256_mul_ps(gv, gs), pi = _mm256_mul_ps(pv, dm);
        __m256 mi = _mm256_add_ps(mv, _mm256_mul_ps(o1, _mm256_sub_ps(gi, mv)));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vv, b2), _mm256_mul_ps(_mm256_mul_ps(o2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc), ep);
        __m256 q = _mm256_div_ps(mi, den);
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(ss, q)));
    }
    for (; i < n; i++) {
        float gi = g[i] * s->grad_scale;
        float pi = p[i] * s->decay_mul;
        float mi = m[i] + s->one_minus_b1 * (gi - m[i]);
        float vi = v[i] * s->beta2 + s->one_minus_b2 * gi * gi;
        float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - s->step_size * (mi / denom);
    }
}
#ifndef __clang__
#pragma GCC pop_options
#endif
#undef LMC_ADAMW_NOCONTRACT
#endif

void lmc_adamw_apply(float *p, const float *g, float *m, float *v, int64_t n,
                     const struct lmc_adamw_step *s) {
#ifdef __AVX512F__
    /* 16 lanes, the tail masked: every operation rounded on its own (no
     * FMA), as the formula and the CUDA kernel; the same bits for any split
     * of the elements. The explicitly rounded forms (round to nearest even,
     * as the default mode) keep the compiler from contracting them. */
#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
    const __m512 gs = _mm512_set1_ps(s->grad_scale), dm = _mm512_set1_ps(s->decay_mul),
                 b2 = _mm512_set1_ps(s->beta2), o1 = _mm512_set1_ps(s->one_minus_b1),
                 o2 = _mm512_set1_ps(s->one_minus_b2), bc = _mm512_set1_ps(s->bc2_sqrt),
                 ep = _mm512_set1_ps(s->eps), ss = _mm512_set1_ps(s->step_size);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i), pv = _mm512_maskz_loadu_ps(k, p + i),
               mv = _mm512_maskz_loadu_ps(k, m + i), vv = _mm512_maskz_loadu_ps(k, v + i);
        __m512 gi = _mm512_mul_round_ps(gv, gs, RN), pi = _mm512_mul_round_ps(pv, dm, RN);
        __m512 mi = _mm512_add_round_ps(mv, _mm512_mul_round_ps(o1, _mm512_sub_round_ps(gi, mv, RN), RN), RN);
        __m512 vi = _mm512_add_round_ps(_mm512_mul_round_ps(vv, b2, RN),
                                        _mm512_mul_round_ps(_mm512_mul_round_ps(o2, gi, RN), gi, RN), RN);
        __m512 den = _mm512_add_round_ps(_mm512_div_round_ps(_mm512_sqrt_round_ps(vi, RN), bc, RN), ep, RN);
        __m512 q = _mm512_div_round_ps(mi, den, RN);
        _mm512_mask_storeu_ps(m + i, k, mi);
        _mm512_mask_storeu_ps(v + i, k, vi);
        _mm512_mask_storeu_ps(p + i, k, _mm512_sub_round_ps(pi, _mm512_mul_round_ps(ss, q, RN), RN));
    }
#undef RN
    return;
#elif defined(__AVX2__)
    lmc_adamw_apply_avx2(p, g, m, v, n, s);
    return;
#endif
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * s->grad_scale;
        float pi = p[i] * s->decay_mul;
        float mi = m[i] + s->one_minus_b1 * (gi - m[i]); /* torch's exp_avg.lerp_(g, 1 - beta1) */
        float vi = v[i] * s->beta2 + s->one_minus_b2 * gi * gi;
        float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - s->step_size * (mi / denom);
    }
}

struct adamw_job {
    float *p, *m, *v;
    const float *g;
    int64_t n, n_tasks;
    const struct lmc_adamw_step *s;
};

static void adamw_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct adamw_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    if (hi > lo) lmc_adamw_apply(j->p + lo, j->g + lo, j->m + lo, j->v + lo, hi - lo, j->s);
}

/* element-wise, so any split of the elements among threads gives the same bits */
void lmc_cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                   const struct lmc_adamw_step *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct adamw_job j = {p, m, v, g, n, 1, s};
    j.n_tasks = lmc_cpu_ntasks(c, n, 1 << 15, 1);
    if (j.n_tasks == 1) lmc_adamw_apply(p, g, m, v, n, s);
    else lmc_pool_run(c->pool, j.n_tasks, adamw_task, &j);
}
