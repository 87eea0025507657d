/* layernorm.c — layer normalisation: y(M,C) = (x - mean) / sqrt(var + eps)
 * * w + b, biased variance, two passes accumulated in double; y may alias x. */
#include "ops/cpu/ops_cpu.h"

struct ln_job {
    float *y;
    const float *x, *w, *b;
    int64_t M, C, n_tasks;
    float eps;
};

static double row_sum(const float *x, int64_t C) {
    int64_t i = 0;
    double s = 0;
#ifdef __AVX2__
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    for (; i + 8 <= C; i += 8) {
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
    }
    s = lmc_hsum256d(_mm256_add_pd(a0, a1));
#endif
    for (; i < C; i++) s += x[i];
    return s;
}

static double row_var_sum(const float *x, int64_t C, double mean) {
    int64_t i = 0;
    double s = 0;
#ifdef __AVX2__
    __m256d mv = _mm256_set1_pd(mean), a0 = _mm256_setzero_pd(), a1 = a0;
    for (; i + 8 <= C; i += 8) {
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), mv);
        a0 = _mm256_fmadd_pd(d0, d0, a0);
        a1 = _mm256_fmadd_pd(d1, d1, a1);
    }
    s = lmc_hsum256d(_mm256_add_pd(a0, a1));
#endif
    for (; i < C; i++) s += ((double)x[i] - mean) * ((double)x[i] - mean);
    return s;
}

static void ln_task(void *arg, int64_t t, int thread) {
    const struct ln_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *x = j->x + m * C;
        float *y = j->y + m * C;
        double mean = row_sum(x, C) / (double)C;
        double var = row_var_sum(x, C, mean) / (double)C;
        double rstd = 1.0 / sqrt(var + (double)j->eps);
        int64_t i = 0;
#ifdef __AVX2__
        /* (x - mean) * rstd in double: the mean may dwarf the spread */
        __m256d rv = _mm256_set1_pd(rstd), mv = _mm256_set1_pd(mean);
        for (; i + 8 <= C; i += 8) {
            __m128 d0 = _mm256_cvtpd_ps(
                _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv), rv));
            __m128 d1 = _mm256_cvtpd_ps(
                _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), mv), rv));
            __m256 d = _mm256_insertf128_ps(_mm256_castps128_ps256(d0), d1, 1);
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(j->w + i),
                                                    _mm256_loadu_ps(j->b + i)));
        }
#endif
        for (; i < C; i++) y[i] = (float)(((double)x[i] - mean) * rstd) * j->w[i] + j->b[i];
    }
}

void lmc_cpu_layernorm(void *ctx, float *y, const float *x, const float *w, const float *b,
                       int64_t M, int64_t C, float eps) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0 || C <= 0) return;
    struct ln_job j = {y, x, w, b, M, C, 1, eps};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 16384, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, ln_task, &j);
}

/* ---- backward ----
 * xhat = (x - mean) * rstd, y = xhat * w + b:
 *   db += dy, dw += dy * xhat (column ranges, rows in order: deterministic)
 *   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w (rows)
 * mean and rstd per row staged in xbuf. */
struct ln_bwd_job {
    float *dx, *dw, *db, *stats;
    const float *dy, *x, *w;
    int64_t M, C, n_tasks;
    float eps;
};

static void ln_bwd_rows(void *arg, int64_t t, int thread) {
    const struct ln_bwd_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *x = j->x + m * C, *dy = j->dy + m * C;
        float *dx = j->dx + m * C;
        double mean = row_sum(x, C) / (double)C;
        double rstd = 1.0 / sqrt(row_var_sum(x, C, mean) / (double)C + (double)j->eps);
        double sg = 0, sgx = 0;
        for (int64_t i = 0; i < C; i++) {
            double g = (double)dy[i] * j->w[i], xh = ((double)x[i] - mean) * rstd;
            sg += g;
            sgx += g * xh;
        }
        sg /= (double)C;
        sgx /= (double)C;
        for (int64_t i = 0; i < C; i++) {
            double g = (double)dy[i] * j->w[i], xh = ((double)x[i] - mean) * rstd;
            dx[i] += (float)(rstd * (g - sg - xh * sgx));
        }
        j->stats[2 * m] = (float)mean;
        j->stats[2 * m + 1] = (float)rstd;
    }
}

static void ln_bwd_cols(void *arg, int64_t t, int thread) {
    const struct ln_bwd_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(C, j->n_tasks, t, 8, &lo, &hi);
    for (int64_t m = 0; m < j->M; m++) {
        const float *x = j->x + m * C, *dy = j->dy + m * C;
        float mean = j->stats[2 * m], rstd = j->stats[2 * m + 1];
        for (int64_t i = lo; i < hi; i++) {
            if (j->dw) j->dw[i] += dy[i] * ((x[i] - mean) * rstd);
            if (j->db) j->db[i] += dy[i];
        }
    }
}

void lmc_cpu_layernorm_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int64_t M, int64_t C, float eps) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0 || C <= 0) return;
    lmc_cpu_xbuf_reserve(c, (size_t)(2 * M));
    struct ln_bwd_job j = {dx, dw, db, c->xbuf, dy, x, w, M, C, 1, eps};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, ln_bwd_rows, &j);
    if (!dw && !db) return;
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), (C + 7) / 8);
    lmc_pool_run(c->pool, j.n_tasks, ln_bwd_cols, &j);
}
