/* swiglu.c — y[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
 * y may alias gate (or up). */
#include "ops/cpu/ops_cpu.h"

struct swiglu_job {
    float *y;
    const float *g, *u;
    int64_t n, n_tasks;
};

/* y[i] = silu(g[i]) * u[i], i < n: 8 lanes at a time from i = 0 (16 with
 * AVX-512: the same values), the scalar tail after. swiglu_task runs it over
 * its range, the fused gate/up GEMM (matmul.c) over each row's columns. */
void lmc_cpu_swiglu_span(float *y, const float *g_, const float *u_, int64_t n) {
    int64_t i = 0;
#ifdef __AVX512F__
    { /* the 8-lane loop's operations on 16 lanes: the same values */
        const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
        for (; i + 16 <= n; i += 16) {
            __m512 g = _mm512_loadu_ps(g_ + i), u = _mm512_loadu_ps(u_ + i);
            __m512 d = _mm512_add_ps(one, lmc_exp512(_mm512_sub_ps(zero, g)));
            _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_div_ps(g, d), u));
        }
    }
#endif
#ifdef __AVX2__
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(g_ + i), u = _mm256_loadu_ps(u_ + i);
        __m256 d = _mm256_add_ps(one, lmc_exp256(_mm256_sub_ps(zero, g)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(g, d), u));
    }
#endif
    for (; i < n; i++) {
        float g = g_[i];
        y[i] = g / (1.0f + expf(-g)) * u_[i];
    }
}

static void swiglu_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct swiglu_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    lmc_cpu_swiglu_span(j->y + lo, j->g + lo, j->u + lo, hi - lo);
}

void lmc_cpu_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct swiglu_job j = {y, gate, up, n, 1};
    /* 2048: 3+ rows of a 1536-wide MLP split (a 5-row verification's swiglu
     * ran as one task, ~7 us, the other thread idle: spec23); one decode
     * row stays one task. Boundaries on multiples of 16: the same bits. */
    j.n_tasks = lmc_cpu_ntasks(c, n, 2048, 1);
    lmc_pool_run(c->pool, j.n_tasks, swiglu_task, &j);
}

/* ---- backward ----
 * s = sigmoid(g): dgate = dy * up * s * (1 + g * (1 - s)), dup = dy * g * s.
 * Each element is read before it is written (outputs may alias dy). */
struct swiglu_bwd_job {
    float *dg, *du;
    const float *dy, *g, *u;
    int64_t n, n_tasks;
};

static void swiglu_bwd_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct swiglu_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    int64_t i = lo;
#ifdef __AVX512F__
    { /* the 8-lane loop's operations on 16 lanes: the same values */
        const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
        for (; i + 16 <= hi; i += 16) {
            __m512 g = _mm512_loadu_ps(j->g + i), u = _mm512_loadu_ps(j->u + i), dy = _mm512_loadu_ps(j->dy + i);
            __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, lmc_exp512(_mm512_sub_ps(zero, g))));
            __m512 dys = _mm512_mul_ps(dy, s);
            __m512 f = _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one);
            _mm512_storeu_ps(j->dg + i, _mm512_mul_ps(_mm512_mul_ps(dys, u), f));
            _mm512_storeu_ps(j->du + i, _mm512_mul_ps(dys, g));
        }
    }
#endif
#ifdef __AVX2__
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= hi; i += 8) { /* the forward's vectorised exp */
        __m256 g = _mm256_loadu_ps(j->g + i), u = _mm256_loadu_ps(j->u + i), dy = _mm256_loadu_ps(j->dy + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, lmc_exp256(_mm256_sub_ps(zero, g))));
        __m256 dys = _mm256_mul_ps(dy, s);
        __m256 f = _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one);
        _mm256_storeu_ps(j->dg + i, _mm256_mul_ps(_mm256_mul_ps(dys, u), f));
        _mm256_storeu_ps(j->du + i, _mm256_mul_ps(dys, g));
    }
#endif
    for (; i < hi; i++) {
        float g = j->g[i], u = j->u[i], dy = j->dy[i];
        float s = 1.0f / (1.0f + expf(-g));
        j->dg[i] = dy * u * s * (1.0f + g * (1.0f - s));
        j->du[i] = dy * g * s;
    }
}

void lmc_cpu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dy, const float *gate,
                        const float *up, int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct swiglu_bwd_job j = {dgate, dup, dy, gate, up, n, 1};
    j.n_tasks = lmc_cpu_ntasks(c, n, 16384, 1);
    lmc_pool_run(c->pool, j.n_tasks, swiglu_bwd_task, &j);
}
