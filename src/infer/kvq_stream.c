/* kvq_stream.c — StreamingLLM sinks + window eviction (see kvq_stream.h). */
#include "infer/kvq_stream.h"
#include "core/core.h"

#include <math.h>
#include <string.h>

lmc_status lmc_stream_check(const struct lmc_stream_policy *p, lmc_err *err) {
    if (p->sinks < 0 || p->sinks > (1 << 20))
        return lmc_err_set(err, LMC_ERR_ARG, "attention sinks %lld out of range (0..1048576)", (long long)p->sinks);
    if (p->window < 1 || p->window > (1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG, "KV window %lld out of range (1..16777216)", (long long)p->window);
    if (p->chunk < 1 || p->chunk > p->window)
        return lmc_err_set(err, LMC_ERR_ARG, "eviction chunk %lld out of range (1..window %lld)",
                           (long long)p->chunk, (long long)p->window);
    return LMC_OK;
}

int64_t lmc_stream_evict_count(const struct lmc_stream_policy *p, int64_t n, int64_t m) {
    int64_t cap = p->sinks + p->window;
    LMC_ASSERT(n >= 0 && n <= cap && m >= 0 && m <= p->window);
    if (n + m <= cap) return 0;
    int64_t need = n + m - cap, in_window = n - LMC_MIN(n, p->sinks);
    int64_t e = LMC_MAX(need, p->chunk);
    return LMC_MIN(e, in_window);
}

int64_t lmc_stream_slot(const struct lmc_stream_policy *p, int64_t t, int64_t total) {
    LMC_ASSERT(t >= 0 && t < total);
    if (t < p->sinks) return t;
    int64_t cap = p->sinks + p->window;
    if (total <= cap) return t;
    int64_t first_kept = total - p->window; /* chunk 1: exactly the last W stay */
    return t < first_kept ? -1 : p->sinks + (t - first_kept);
}

void lmc_stream_evict_rows(float *k, float *v, int64_t n, int64_t n_kv, int64_t hd, int64_t rot_dim,
                           const double *inv_freq, int64_t sinks, int64_t e) {
    LMC_ASSERT(e >= 0 && sinks + e <= n && rot_dim <= hd && rot_dim % 2 == 0);
    if (e == 0) return;
    int64_t row = n_kv * hd, moved = n - sinks - e, half = rot_dim / 2;
    memmove(k + sinks * row, k + (sinks + e) * row, (size_t)(moved * row) * sizeof *k);
    memmove(v + sinks * row, v + (sinks + e) * row, (size_t)(moved * row) * sizeof *v);
    for (int64_t i = 0; i < half; i++) {
        double a = -(double)e * inv_freq[i]; /* angles in double, as rope */
        float c = (float)cos(a), s = (float)sin(a);
        for (int64_t t = sinks; t < sinks + moved; t++)
            for (int64_t h = 0; h < n_kv; h++) {
                float *x = k + t * row + h * hd;
                float x0 = x[i], x1 = x[i + half];
                x[i] = x0 * c - x1 * s;
                x[i + half] = x1 * c + x0 * s;
            }
    }
}
