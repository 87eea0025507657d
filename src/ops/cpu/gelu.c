/* gelu.c — y[i] = gelu(x[i]). Tanh approximation written as
 * x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), which has no
 * cancellation; the exact form as 0.5 x erfc(-x / sqrt 2). y may alias x. */
#include "ops/cpu/ops_cpu.h"

struct gelu_job {
    float *y;
    const float *x;
    int64_t n, n_tasks;
    int tanh_approx;
};

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

static void gelu_task(void *arg, int64_t t, int thread) {
    const struct gelu_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    int64_t i = lo;
    if (!j->tanh_approx) {
        for (; i < hi; i++) j->y[i] = 0.5f * j->x[i] * erfcf(-j->x[i] * 0.70710678118654752f);
        return;
    }
#ifdef __AVX2__
    const __m256 one = _mm256_set1_ps(1.0f), m2k0 = _mm256_set1_ps(-2.0f * GELU_K0);
    const __m256 k1 = _mm256_set1_ps(GELU_K1);
    for (; i + 8 <= hi; i += 8) {
        __m256 x = _mm256_loadu_ps(j->x + i);
        __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(k1, x), _mm256_mul_ps(x, x), x);
        __m256 d = _mm256_add_ps(one, lmc_exp256(_mm256_mul_ps(m2k0, inner)));
        _mm256_storeu_ps(j->y + i, _mm256_div_ps(x, d));
    }
#endif
    for (; i < hi; i++) {
        float x = j->x[i];
        float inner = x + GELU_K1 * x * x * x;
        j->y[i] = x / (1.0f + expf(-2.0f * GELU_K0 * inner));
    }
}

void lmc_cpu_gelu(void *ctx, float *y, const float *x, int64_t n, int tanh_approx) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct gelu_job j = {y, x, n, 1, tanh_approx};
    j.n_tasks = lmc_cpu_ntasks(c, n, tanh_approx ? 16384 : 4096, 1);
    lmc_pool_run(c->pool, j.n_tasks, gelu_task, &j);
}

/* ---- backward ----
 * tanh form: gelu = 0.5 x (1 + tanh u), u = k0 (x + k1 x^3):
 *   gelu' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k0 (1 + 3 k1 x^2)
 * exact: gelu' = Phi(x) + x phi(x). dx may alias dy. */
struct gelu_bwd_job {
    float *dx;
    const float *dy, *x;
    int64_t n, n_tasks;
    int tanh_approx;
};

static void gelu_bwd_task(void *arg, int64_t t, int thread) {
    const struct gelu_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->n, j->n_tasks, t, 16, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float x = j->x[i], d;
        if (j->tanh_approx) {
            float th = tanhf(GELU_K0 * (x + GELU_K1 * x * x * x));
            d = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_K0 * (1.0f + 3.0f * GELU_K1 * x * x);
        } else {
            d = 0.5f * erfcf(-x * 0.70710678118654752f) + x * 0.39894228040143268f * expf(-0.5f * x * x);
        }
        j->dx[i] = j->dy[i] * d;
    }
}

void lmc_cpu_gelu_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n,
                      int tanh_approx) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0) return;
    struct gelu_bwd_job j = {dx, dy, x, n, 1, tanh_approx};
    j.n_tasks = lmc_cpu_ntasks(c, n, 8192, 1);
    lmc_pool_run(c->pool, j.n_tasks, gelu_bwd_task, &j);
}
