/* ssm_scan.c — Mamba-1's selective scan on the CPU (ops/ssm.h gives the
 * recurrence): the forward over a prompt, the single-token decode step and
 * the recomputation-based backward.
 *
 * Forward: one task per (sequence, block of 8 channels). The block's N
 * states (8 x N floats) and its A stay in L1 for the whole prompt; each
 * token does discretisation (exp(dt A), dt B u), the state update, the C
 * readout, the D skip and the SiLU gate in one pass, 8 channels per AVX2
 * vector. Decode is the same code with T = 1 (state required).
 *
 * Backward: per channel, a forward pass keeps the state every L = sqrt(T)
 * tokens; then, segment by segment from the end, the segment's states are
 * recomputed and the reverse recurrence runs through them. Memory is
 * O(sqrt(T) N) per thread plus the dBm/dCm partial sums (one (B*T, N) pair
 * per task, summed in task order: deterministic for a thread count). */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/ssm_cpu.h"

struct scan_job {
    struct lmc_cpu_ctx *cc;
    float *y, *state;
    const struct lmc_ssm_io *in;
    const struct lmc_ssm_grads *g;
    const float *dy;
    const int32_t *slots;
    int64_t B, T, D, N, n_blk, n_tasks, seg;
    float *part; /* backward: per task dBm then dCm partials (B*T*N each) */
};

static void scan_fwd_task(void *arg, int64_t task, int thread) {
    const struct scan_job *j = arg;
    const struct lmc_ssm_io *in = j->in;
    const int64_t N = j->N, D = j->D, T = j->T;
    const int64_t b = task / j->n_blk, d0 = (task % j->n_blk) * 8, nd = LMC_MIN(8, D - d0);
    float *A = j->cc->scratch[thread], *h = A + N * 8; /* (N, 8) each, lane = channel */
    float *st = j->state ? j->state + lmc_ssm_slot(j->slots, b) * D * N : NULL;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < 8; i++) {
            A[n * 8 + i] = i < nd ? -expf(in->A_log[(d0 + i) * N + n]) : 0.0f;
            h[n * 8 + i] = i < nd && st ? st[(d0 + i) * N + n] : 0.0f;
        }
    float dt[8], du[8], yv[8];
    for (int64_t t = 0; t < T; t++) {
        const int64_t r = b * T + t;
        const float *u = in->u + r * D + d0, *dl = in->delta + r * D + d0;
        const float *Bm = in->Bm + r * in->ldbc, *Cm = in->Cm + r * in->ldbc;
        for (int64_t i = 0; i < 8; i++) {
            dt[i] = i < nd ? lmc_ssm_softplus(dl[i] + (in->delta_bias ? in->delta_bias[d0 + i] : 0.0f))
                           : 0.0f;
            du[i] = i < nd ? dt[i] * u[i] : 0.0f;
            yv[i] = 0.0f;
        }
#ifdef __AVX2__
        if (nd == 8) {
            __m256 vdt = _mm256_loadu_ps(dt), vdu = _mm256_loadu_ps(du), vy = _mm256_setzero_ps();
            for (int64_t n = 0; n < N; n++) {
                __m256 a = lmc_exp256(_mm256_mul_ps(vdt, _mm256_load_ps(A + n * 8)));
                __m256 hn = _mm256_fmadd_ps(a, _mm256_load_ps(h + n * 8),
                                            _mm256_mul_ps(vdu, _mm256_set1_ps(Bm[n])));
                _mm256_store_ps(h + n * 8, hn);
                vy = _mm256_fmadd_ps(hn, _mm256_set1_ps(Cm[n]), vy);
            }
            _mm256_storeu_ps(yv, vy);
        } else
#endif
        {
            for (int64_t n = 0; n < N; n++)
                for (int64_t i = 0; i < nd; i++) {
                    float hn = expf(dt[i] * A[n * 8 + i]) * h[n * 8 + i] + du[i] * Bm[n];
                    h[n * 8 + i] = hn;
                    yv[i] += hn * Cm[n];
                }
        }
        float *yr = j->y + r * D + d0;
        for (int64_t i = 0; i < nd; i++) {
            float v = yv[i] + (in->Dskip ? in->Dskip[d0 + i] * u[i] : 0.0f);
            yr[i] = in->z ? v * lmc_ssm_silu(in->z[r * in->ldz + d0 + i]) : v;
        }
    }
    if (st)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < nd; i++) st[(d0 + i) * N + n] = h[n * 8 + i];
}

void lmc_cpu_ssm_scan(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                      const int32_t *slots, int64_t B, int64_t T, int64_t D, int64_t N) {
    struct lmc_cpu_ctx *c = ctx;
    if (B <= 0 || T <= 0 || D <= 0 || N <= 0) return;
    LMC_ASSERT(in->ldbc >= N && (!in->z || in->ldz >= D));
    lmc_cpu_scratch_reserve(c, (size_t)N * 16);
    struct scan_job j = {.cc = c, .y = y, .state = state, .in = in, .slots = slots,
                         .B = B, .T = T, .D = D, .N = N, .n_blk = (D + 7) / 8};
    lmc_pool_run(c->pool, B * j.n_blk, scan_fwd_task, &j);
}

void lmc_cpu_ssm_scan_step(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                           const int32_t *slots, int64_t B, int64_t D, int64_t N) {
    LMC_ASSERT(state != NULL);
    lmc_cpu_ssm_scan(ctx, y, in, state, slots, B, 1, D, N);
}

/* ---- backward ----
 * With a_t = exp(dt_t A_n), g_t = dL/dh_t (carried backwards as
 * g_{t-1} += a_t g_t) and yv_t = sum_n C h_t + D u (before the gate):
 *   dz = dout yv silu'(z);  dyv = dout silu(z)
 *   g_t += dyv C_t;  dC_t += dyv h_t;  dB_t += g_t dt u;  du += g_t dt B_t + dyv D
 *   ddt = sum_n g_t (B_t u + h_{t-1} a_t A);  dA += g_t h_{t-1} a_t dt
 *   ddelta = ddt softplus'(delta + bias);  dA_log = dA * A. */
static void scan_bwd_channel(const struct scan_job *j, int64_t b, int64_t d, float *ck,
                             float *seg, double *dA, float *pB, float *pC) {
    const struct lmc_ssm_io *in = j->in;
    const struct lmc_ssm_grads *g = j->g;
    const int64_t N = j->N, D = j->D, T = j->T, L = j->seg;
    const float bias = in->delta_bias ? in->delta_bias[d] : 0.0f;
    const float Dd = in->Dskip ? in->Dskip[d] : 0.0f;
    float *A = seg + (L + 1) * N, *gc = A + N;
    for (int64_t n = 0; n < N; n++) A[n] = -expf(in->A_log[d * N + n]), dA[n] = 0, gc[n] = 0;
    /* forward: checkpoint k = the state before token k*L */
    float *h = seg;
    for (int64_t n = 0; n < N; n++) h[n] = 0;
    for (int64_t t = 0; t < T; t++) {
        if (t % L == 0) memcpy(ck + (t / L) * N, h, (size_t)N * sizeof *h);
        const int64_t r = b * T + t;
        float dt = lmc_ssm_softplus(in->delta[r * D + d] + bias), du = dt * in->u[r * D + d];
        const float *Bm = in->Bm + r * in->ldbc;
        for (int64_t n = 0; n < N; n++) h[n] = expf(dt * A[n]) * h[n] + du * Bm[n];
    }
    double dD = 0, dbias = 0;
    for (int64_t t1 = T; t1 > 0;) {
        const int64_t t0 = ((t1 - 1) / L) * L, len = t1 - t0;
        /* seg row i = state after token t0+i-1 (row 0: the checkpoint) */
        memcpy(seg, ck + (t0 / L) * N, (size_t)N * sizeof *seg);
        for (int64_t i = 0; i < len; i++) {
            const int64_t r = b * T + t0 + i;
            float dt = lmc_ssm_softplus(in->delta[r * D + d] + bias), du = dt * in->u[r * D + d];
            const float *Bm = in->Bm + r * in->ldbc;
            for (int64_t n = 0; n < N; n++)
                seg[(i + 1) * N + n] = expf(dt * A[n]) * seg[i * N + n] + du * Bm[n];
        }
        for (int64_t i = len - 1; i >= 0; i--) {
            const int64_t r = b * T + t0 + i;
            const float *hp = seg + i * N, *hc = seg + (i + 1) * N;
            const float *Bm = in->Bm + r * in->ldbc, *Cm = in->Cm + r * in->ldbc;
            const float x = in->delta[r * D + d] + bias, dt = lmc_ssm_softplus(x);
            const float u = in->u[r * D + d];
            float dout = j->dy[r * D + d], dyv = dout;
            if (in->z) {
                float yv = Dd * u, z = in->z[r * in->ldz + d];
                for (int64_t n = 0; n < N; n++) yv += Cm[n] * hc[n];
                g->dz[r * in->ldz + d] = dout * yv * lmc_ssm_silu_grad(z);
                dyv = dout * lmc_ssm_silu(z);
            }
            dD += (double)dyv * u;
            float du = dyv * Dd, ddt = 0;
            float *pBr = pB + r * N, *pCr = pC + r * N;
            for (int64_t n = 0; n < N; n++) {
                float a = expf(dt * A[n]);
                float gn = gc[n] + dyv * Cm[n];
                pCr[n] += dyv * hc[n];
                pBr[n] += gn * dt * u;
                du += gn * dt * Bm[n];
                ddt += gn * (Bm[n] * u + hp[n] * a * A[n]);
                dA[n] += (double)gn * hp[n] * a * dt;
                gc[n] = gn * a;
            }
            g->du[r * D + d] = du;
            float dx = ddt * lmc_ssm_softplus_grad(x);
            g->ddelta[r * D + d] = dx;
            dbias += dx;
        }
        t1 = t0;
    }
    if (g->dDskip) g->dDskip[d] += (float)dD;
    if (g->ddelta_bias) g->ddelta_bias[d] += (float)dbias;
    if (g->dA_log)
        for (int64_t n = 0; n < N; n++) g->dA_log[d * N + n] += (float)(dA[n] * A[n]);
}

static void scan_bwd_task(void *arg, int64_t task, int thread) {
    const struct scan_job *j = arg;
    const int64_t N = j->N, BT = j->B * j->T, L = j->seg;
    int64_t d0, d1;
    lmc_cpu_range(j->D, j->n_tasks, task, 1, &d0, &d1);
    float *pB = j->part + task * 2 * BT * N, *pC = pB + BT * N;
    memset(pB, 0, (size_t)(2 * BT * N) * sizeof *pB);
    float *ck = j->cc->scratch[thread];
    float *seg = ck + ((j->T + L - 1) / L) * N;
    double *dA = (double *)(void *)(seg + (L + 3) * N + 2);
    dA = (double *)(((uintptr_t)dA + 7) & ~(uintptr_t)7);
    for (int64_t d = d0; d < d1; d++)
        for (int64_t b = 0; b < j->B; b++) scan_bwd_channel(j, b, d, ck, seg, dA, pB, pC);
}

void lmc_cpu_ssm_scan_bwd(void *ctx, const struct lmc_ssm_grads *g, const float *dy,
                          const struct lmc_ssm_io *in, int64_t B, int64_t T, int64_t D,
                          int64_t N) {
    struct lmc_cpu_ctx *c = ctx;
    if (B <= 0 || T <= 0 || D <= 0 || N <= 0) return;
    LMC_ASSERT(in->ldbc >= N && (!in->z || (in->ldz >= D && g->dz)));
    int64_t L = (int64_t)sqrt((double)T);
    if (L < 1) L = 1;
    const int64_t BT = B * T, n_ck = (T + L - 1) / L;
    /* checkpoints, segment (L+1 rows), A, carry, then N doubles */
    lmc_cpu_scratch_reserve(c, (size_t)((n_ck + L + 3) * N + 2 * N + 4));
    struct scan_job j = {.cc = c, .in = in, .g = g, .dy = dy, .B = B, .T = T, .D = D, .N = N,
                         .seg = L};
    j.n_tasks = LMC_MIN((int64_t)c->n_threads, D);
    lmc_cpu_xbuf_reserve(c, (size_t)(j.n_tasks * 2 * BT * N));
    j.part = c->xbuf;
    lmc_pool_run(c->pool, j.n_tasks, scan_bwd_task, &j);
    for (int64_t r = 0; r < BT; r++)
        for (int64_t n = 0; n < N; n++) {
            float sb = 0, sc = 0;
            for (int64_t t = 0; t < j.n_tasks; t++) {
                sb += j.part[t * 2 * BT * N + r * N + n];
                sc += j.part[t * 2 * BT * N + BT * N + r * N + n];
            }
            g->dBm[r * in->ldbc + n] = sb;
            g->dCm[r * in->ldbc + n] = sc;
        }
}
