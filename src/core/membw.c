/* membw.c — multi-threaded streaming-read bandwidth measurement. */
#include "core/membw.h"
#include "core/core.h"
#include "core/threadpool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

struct bw_job {
    const float *buf;
    size_t n;        /* floats */
    int64_t n_tasks;
    double sink[64]; /* per-task results, defeats dead-code elimination */
};

static void slice(const struct bw_job *j, int64_t t, size_t *lo, size_t *hi) {
    size_t per = (j->n / (size_t)j->n_tasks) & ~(size_t)63;
    *lo = per * (size_t)t;
    *hi = t == j->n_tasks - 1 ? j->n : *lo + per;
}

struct fill_job {
    struct bw_job bw;
    float *buf;
};

static void fill_task(void *arg, int64_t t, int thread) {
    struct fill_job *f = arg;
    size_t lo, hi;
    slice(&f->bw, t, &lo, &hi);
    for (size_t i = lo; i < hi; i++) f->buf[i] = (float)(i & 7);
}

static void read_task(void *arg, int64_t t, int thread) {
    struct bw_job *j = arg;
    size_t lo, hi;
    slice(j, t, &lo, &hi);
    const float *p = j->buf;
    double s = 0;
    size_t i = lo;
#ifdef __AVX2__
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= hi; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (int k = 0; k < 8; k++) s += tmp[k];
#endif
    for (; i < hi; i++) s += p[i];
    j->sink[t] = s;
}

double lmc_membw_read_pass(struct lmc_pool *pool, const float *buf, size_t n) {
    struct bw_job j;
    memset(&j, 0, sizeof j);
    j.buf = buf;
    j.n = n;
    j.n_tasks = LMC_MIN(lmc_pool_threads(pool), 64);
    double t0 = lmc_time_now();
    lmc_pool_run(pool, j.n_tasks, read_task, &j);
    return lmc_time_now() - t0;
}

double lmc_membw_read_gbs(struct lmc_pool *pool, size_t bytes) {
    size_t n = bytes / sizeof(float);
    if (n < 4096) return 0;
    float *buf = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
    if (!buf) return 0;
    struct fill_job f = {{buf, n, LMC_MIN(lmc_pool_threads(pool), 64), {0}}, buf};
    lmc_pool_run(pool, f.bw.n_tasks, fill_task, &f); /* first touch by the readers */
    lmc_membw_read_pass(pool, buf, n);              /* warm-up */
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double gbs = (double)(n * sizeof(float)) / lmc_membw_read_pass(pool, buf, n) * 1e-9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}
