/* rmsnorm_gated.c — Mamba-2's gated RMSNorm on the CPU (norm_before_gate =
 * False, as transformers' MambaRMSNormGated and mamba_ssm's RMSNormGated):
 * v = x * silu(z), y = v / sqrt(mean(v^2) + eps) * w, the mean over groups
 * of `group` columns; forward and backward, rows split over the pool,
 * sums in double. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/ssm_cpu.h"

struct rg_job {
    float *y, *dx, *dz, *dw;
    const float *x, *z, *w, *dy;
    int64_t ldz, M, C, group, n_tasks;
    float eps;
    float *rbuf; /* backward: (M, C/group) inverse rms */
};

static void rg_fwd_task(void *arg, int64_t t, int thread) {
    const struct rg_job *j = arg;
    (void)thread;
    int64_t lo, hi;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *x = j->x + m * j->C, *z = j->z ? j->z + m * j->ldz : NULL;
        float *y = j->y + m * j->C;
        for (int64_t g0 = 0; g0 < j->C; g0 += j->group) {
            double ss = 0;
            for (int64_t i = g0; i < g0 + j->group; i++) {
                float v = z ? x[i] * lmc_ssm_silu(z[i]) : x[i];
                y[i] = v; /* y may alias x: each element is read before written */
                ss += (double)v * v;
            }
            float r = (float)(1.0 / sqrt(ss / (double)j->group + (double)j->eps));
            for (int64_t i = g0; i < g0 + j->group; i++) y[i] = y[i] * r * j->w[i];
        }
    }
}

void lmc_cpu_rmsnorm_gated(void *ctx, float *y, const float *x, const float *z, int64_t ldz,
                           const float *w, int64_t M, int64_t C, int64_t group, float eps) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0 || C <= 0) return;
    LMC_ASSERT(group > 0 && C % group == 0 && (!z || ldz >= C));
    struct rg_job j = {.y = y, .x = x, .z = z, .w = w, .ldz = ldz, .M = M, .C = C,
                       .group = group, .eps = eps};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, rg_fwd_task, &j);
}

/* ---- backward ----
 * y = v r w, r = 1/sqrt(mean_group(v^2) + eps):
 *   dv = r w dy - v r^3 / group * sum_group(w dy v)
 *   dx = dv silu(z);  dz = dv x silu'(z);  dw += dy v r
 * dx, dz by rows; dw by column ranges over all rows (fixed order). */
static void rg_bwd_rows(void *arg, int64_t t, int thread) {
    const struct rg_job *j = arg;
    (void)thread;
    int64_t lo, hi;
    const int64_t ng = j->C / j->group;
    lmc_cpu_range(j->M, j->n_tasks, t, 1, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *x = j->x + m * j->C, *z = j->z ? j->z + m * j->ldz : NULL;
        const float *dy = j->dy + m * j->C;
        for (int64_t gi = 0; gi < ng; gi++) {
            const int64_t g0 = gi * j->group, g1 = g0 + j->group;
            double ss = 0, dot = 0;
            for (int64_t i = g0; i < g1; i++) {
                double v = z ? x[i] * lmc_ssm_silu(z[i]) : x[i];
                ss += v * v;
                dot += (double)j->w[i] * dy[i] * v;
            }
            double r = 1.0 / sqrt(ss / (double)j->group + (double)j->eps);
            double k = r * r * r * dot / (double)j->group;
            j->rbuf[m * ng + gi] = (float)r;
            for (int64_t i = g0; i < g1; i++) {
                float sz = z ? lmc_ssm_silu(z[i]) : 1.0f;
                double v = z ? x[i] * sz : x[i];
                float dv = (float)(r * j->w[i] * dy[i] - k * v);
                j->dx[m * j->C + i] = dv * sz;
                if (z) j->dz[m * j->ldz + i] = dv * x[i] * lmc_ssm_silu_grad(z[i]);
            }
        }
    }
}

static void rg_bwd_cols(void *arg, int64_t t, int thread) {
    const struct rg_job *j = arg;
    (void)thread;
    int64_t lo, hi;
    const int64_t ng = j->C / j->group;
    lmc_cpu_range(j->C, j->n_tasks, t, 8, &lo, &hi);
    for (int64_t m = 0; m < j->M; m++) {
        const float *x = j->x + m * j->C, *z = j->z ? j->z + m * j->ldz : NULL;
        const float *dy = j->dy + m * j->C;
        for (int64_t i = lo; i < hi; i++) {
            float v = z ? x[i] * lmc_ssm_silu(z[i]) : x[i];
            j->dw[i] += dy[i] * v * j->rbuf[m * ng + i / j->group];
        }
    }
}

void lmc_cpu_rmsnorm_gated_bwd(void *ctx, float *dx, float *dz, float *dw, const float *dy,
                               const float *x, const float *z, int64_t ldz, const float *w,
                               int64_t M, int64_t C, int64_t group, float eps) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0 || C <= 0) return;
    LMC_ASSERT(group > 0 && C % group == 0 && (!z || (ldz >= C && dz)));
    lmc_cpu_xbuf_reserve(c, (size_t)(M * (C / group)));
    struct rg_job j = {.dx = dx, .dz = dz, .dw = dw, .x = x, .z = z, .w = w, .dy = dy,
                       .ldz = ldz, .M = M, .C = C, .group = group, .eps = eps, .rbuf = c->xbuf};
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), M);
    lmc_pool_run(c->pool, j.n_tasks, rg_bwd_rows, &j);
    if (!dw) return;
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, M * C, 8192, 1), (C + 7) / 8);
    lmc_pool_run(c->pool, j.n_tasks, rg_bwd_cols, &j);
}
