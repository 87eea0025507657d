/* rmsnorm.c — RMS normalisation: y(M,C) = x / sqrt(mean(x^2) + eps) * w.
 * The sum of squares is accumulated in double; y may alias x. */
#include "ops/cpu/ops_cpu.h"

struct rms_job {
    float *y;
    const float *x, *w;
    int64_t M, C, n_tasks;
    float eps;
};

static double sum_sq(const float *x, int64_t C) {
    int64_t i = 0;
    double s = 0;
#ifdef __AVX2__
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 16 <= C; i += 16) {
        __m256d v0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d v1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        __m256d v2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8));
        __m256d v3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
        a0 = _mm256_fmadd_pd(v0, v0, a0);
        a1 = _mm256_fmadd_pd(v1, v1, a1);
        a2 = _mm256_fmadd_pd(v2, v2, a2);
        a3 = _mm256_fmadd_pd(v3, v3, a3);
    }
    s = lmc_hsum256d(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
#endif
    for (; i < C; i++) s += (double)x[i] * x[i];
    return s;
}

static void rms_task(void *arg, int64_t t, int thread) {
    const struct rms_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *x = j->x + m * C;
        float *y = j->y + m * C;
        float s = (float)(1.0 / sqrt(sum_sq(x, C) / (double)C + (double)j->eps));
        int64_t i = 0;
#ifdef __AVX2__
        __m256 sv = _mm256_set1_ps(s);
        for (; i + 8 <= C; i += 8)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv),
                                                  _mm256_loadu_ps(j->w + i)));
#endif
        for (; i < C; i++) y[i] = x[i] * s * j->w[i];
    }
}

void lmc_cpu_rmsnorm(void *ctx, float *y, const float *x, const float *w, int64_t M, int64_t C,
                     float eps) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0 || C <= 0) return;
    struct rms_job j = {y, x, w, M, C, 1, eps};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 16384, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, rms_task, &j);
}

/* ---- backward ----
 * y = x * r * w with r = 1/sqrt(mean(x^2) + eps):
 *   dw[i] += sum_m dy[m,i] x[m,i] r[m]
 *   dx[m,i] += r w[i] dy[m,i] - x[m,i] r^3 / C * sum_j w[j] dy[m,j] x[m,j]
 * dx by rows, dw by column ranges (every column sums its rows in order:
 * deterministic), r staged in xbuf. */
struct rms_bwd_job {
    float *dx, *dw, *r;
    const float *dy, *x, *w;
    int64_t M, C, n_tasks;
    float eps;
};

/* sum_i w[i] dy[i] x[i] in double (4 lanes of 4 accumulators, then in order) */
static double wdot(const float *w, const float *dy, const float *x, int64_t C) {
    int64_t i = 0;
    double s = 0;
#ifdef __AVX2__
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    for (; i + 8 <= C; i += 8) {
        __m256d w0 = _mm256_cvtps_pd(_mm_loadu_ps(w + i)), w1 = _mm256_cvtps_pd(_mm_loadu_ps(w + i + 4));
        __m256d d0 = _mm256_cvtps_pd(_mm_loadu_ps(dy + i)), d1 = _mm256_cvtps_pd(_mm_loadu_ps(dy + i + 4));
        __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), x1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        a0 = _mm256_fmadd_pd(_mm256_mul_pd(w0, d0), x0, a0);
        a1 = _mm256_fmadd_pd(_mm256_mul_pd(w1, d1), x1, a1);
    }
    s = lmc_hsum256d(_mm256_add_pd(a0, a1));
#endif
    for (; i < C; i++) s += (double)w[i] * dy[i] * x[i];
    return s;
}

static void rms_bwd_rows(void *arg, int64_t t, int thread) {
    const struct rms_bwd_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *x = j->x + m * C, *dy = j->dy + m * C;
        float *dx = j->dx + m * C;
        double r = 1.0 / sqrt(sum_sq(x, C) / (double)C + (double)j->eps), dot = wdot(j->w, dy, x, C);
        double k = r * r * r * dot / (double)C;
        int64_t i = 0;
#ifdef __AVX2__
        const __m256d rv = _mm256_set1_pd(r), kv = _mm256_set1_pd(k);
        for (; i + 4 <= C; i += 4) { /* dx += (float)(r w dy - k x), the products in double */
            __m256d w4 = _mm256_cvtps_pd(_mm_loadu_ps(j->w + i)), d4 = _mm256_cvtps_pd(_mm_loadu_ps(dy + i));
            __m256d x4 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
            __m256d v = _mm256_sub_pd(_mm256_mul_pd(_mm256_mul_pd(rv, w4), d4), _mm256_mul_pd(kv, x4));
            _mm_storeu_ps(dx + i, _mm_add_ps(_mm_loadu_ps(dx + i), _mm256_cvtpd_ps(v)));
        }
#endif
        for (; i < C; i++) dx[i] += (float)(r * j->w[i] * dy[i] - k * x[i]);
        j->r[m] = (float)r;
    }
}

static void rms_bwd_cols(void *arg, int64_t t, int thread) {
    const struct rms_bwd_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(C, j->n_tasks, t, 8, &lo, &hi);
    for (int64_t m = 0; m < j->M; m++) {
        const float *x = j->x + m * C, *dy = j->dy + m * C;
        float r = j->r[m], *dw = j->dw;
        int64_t i = lo;
#ifdef __AVX2__
        const __m256 rv = _mm256_set1_ps(r);
        for (; i + 8 <= hi; i += 8) /* dw += (dy x) r, one rounding for the product, one for the sum */
            _mm256_storeu_ps(dw + i, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(x + i)),
                                                     rv, _mm256_loadu_ps(dw + i)));
#endif
        for (; i < hi; i++) dw[i] += dy[i] * x[i] * r;
    }
}

void lmc_cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                         const float *w, int64_t M, int64_t C, float eps) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0 || C <= 0) return;
    lmc_cpu_xbuf_reserve(c, (size_t)M);
    struct rms_bwd_job j = {dx, dw, c->xbuf, dy, x, w, M, C, 1, eps};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, rms_bwd_rows, &j);
    if (!dw) return;
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), (C + 7) / 8);
    lmc_pool_run(c->pool, j.n_tasks, rms_bwd_cols, &j);
}
