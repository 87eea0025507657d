/* spec_sample.c — the speculative sampling rule (see spec_sample.h). */
#include "infer/spec_sample.h"
#include "core/core.h"
#include "core/rng.h"

int32_t lmc_spec_draw(const float *p, int64_t V, double u) {
    double tot = 0;
    for (int64_t i = 0; i < V; i++) tot += p[i];
    double r = u * tot;
    int64_t last = 0;
    for (int64_t i = 0; i < V; i++) {
        if (p[i] > 0) last = i;
        r -= p[i];
        if (r < 0 && p[i] > 0) return (int32_t)i;
    }
    return (int32_t)last;
}

static double residual(const float *p, const float *q, int32_t d, int64_t i) {
    double qi = q ? q[i] : (i == d ? 1.0 : 0.0);
    double r = (double)p[i] - qi;
    return r > 0 ? r : 0;
}

int32_t lmc_spec_draw_residual(const float *p, const float *q, int32_t d, int64_t V, double u) {
    double tot = 0;
    for (int64_t i = 0; i < V; i++) tot += residual(p, q, d, i);
    if (!(tot > 0)) return lmc_spec_draw(p, V, u);
    double r = u * tot;
    int64_t last = 0;
    for (int64_t i = 0; i < V; i++) {
        double w = residual(p, q, d, i);
        if (w > 0) last = i;
        r -= w;
        if (r < 0 && w > 0) return (int32_t)i;
    }
    return (int32_t)last;
}

int64_t lmc_spec_accept(const float *p, const float *q, int64_t V, const int32_t *draft, int64_t K,
                        uint64_t *rng, int32_t *out) {
    for (int64_t i = 0; i < K; i++) {
        const float *pi = p + i * V, *qi = q ? q + i * V : NULL;
        int32_t d = draft[i];
        LMC_ASSERT(d >= 0 && d < V);
        double qd = qi ? qi[d] : 1.0;
        double u = lmc_rng_uniform(rng);
        /* accept with probability min(1, p/q): u < p/q, written without
         * the division (q = 0 cannot be drawn; then p > 0 accepts) */
        if (u * qd < (double)pi[d]) {
            out[i] = d;
            continue;
        }
        out[i] = lmc_spec_draw_residual(pi, qi, d, V, lmc_rng_uniform(rng));
        return i;
    }
    out[K] = lmc_spec_draw(p + K * V, V, lmc_rng_uniform(rng));
    return K;
}
