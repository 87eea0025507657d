/* embed.c — embedding lookup: y(n,C) = table[ids[i]] as f32; also the
 * row conversion F16/BF16/F32 -> f32 shared with matmul. */
#include "ops/cpu/ops_cpu.h"

#include <string.h>

void lmc_cpu_row_to_f32(float *dst, const void *src, enum lmc_dtype dt, int64_t n) {
    if (dt == LMC_DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    LMC_ASSERT(dt == LMC_DTYPE_F16 || dt == LMC_DTYPE_BF16);
    const uint16_t *s = src;
    int64_t i = 0;
#ifdef __AVX2__
    if (dt == LMC_DTYPE_F16) {
        for (; i + 16 <= n; i += 16) {
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
            _mm256_storeu_ps(dst + i + 8,
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i + 8))));
        }
    } else {
        for (; i + 16 <= n; i += 16) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + i));
            __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
            __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16)));
            _mm256_storeu_ps(dst + i + 8, _mm256_castsi256_ps(_mm256_slli_epi32(hi, 16)));
        }
    }
#endif
    if (dt == LMC_DTYPE_F16)
        for (; i < n; i++) dst[i] = lmc_f16_to_f32(s[i]);
    else
        for (; i < n; i++) dst[i] = lmc_bf16_to_f32(s[i]);
}

struct embed_job {
    float *y;
    const struct lmc_mat *table;
    const int32_t *ids;
    int64_t n, n_tasks;
};

static void embed_task(void *arg, int64_t t, int thread) {
    const struct embed_job *j = arg;
    int64_t lo, hi, C = j->table->cols;
    size_t esz = (size_t)lmc_dtype_size(j->table->dtype);
    lmc_cpu_range(j->n, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        int64_t id = j->ids[i];
        LMC_ASSERT(id >= 0 && id < j->table->rows);
        const char *row = (const char *)j->table->data + (size_t)id * (size_t)C * esz;
        lmc_cpu_row_to_f32(j->y + i * C, row, j->table->dtype, C);
    }
}

void lmc_cpu_embed(void *ctx, float *y, const struct lmc_mat *table, const int32_t *ids,
                   int64_t n) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0 || table->cols == 0) return;
    struct embed_job j = {y, table, ids, n, 1};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, n * table->cols, 65536, 1), n);
    lmc_pool_note(c->pool, n); /* a forward's rows, for LMC_TRACE_POOL */
    lmc_pool_run(c->pool, j.n_tasks, embed_task, &j);
}

/* ---- backward: dtable[ids[i]] += dy[i] ----
 * Split by column ranges; each task walks all rows in order, so repeated
 * ids never race and the sum order is fixed. */
struct embed_bwd_job {
    float *dt;
    const float *dy;
    const int32_t *ids;
    int64_t n, C, n_tasks;
};

static void embed_bwd_task(void *arg, int64_t t, int thread) {
    const struct embed_bwd_job *j = arg;
    int64_t lo, hi, C = j->C;
    lmc_cpu_range(C, j->n_tasks, t, 16, &lo, &hi);
    for (int64_t i = 0; i < j->n; i++) {
        float *d = j->dt + (int64_t)j->ids[i] * C;
        const float *s = j->dy + i * C;
        for (int64_t k = lo; k < hi; k++) d[k] += s[k];
    }
}

void lmc_cpu_embed_bwd(void *ctx, float *dtable, const float *dy, const int32_t *ids, int64_t n,
                       int64_t C) {
    struct lmc_cpu_ctx *c = ctx;
    if (n <= 0 || C <= 0) return;
    struct embed_bwd_job j = {dtable, dy, ids, n, C, 1};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, n * C, 32768, 1), (C + 15) / 16);
    lmc_pool_run(c->pool, j.n_tasks, embed_bwd_task, &j);
}
