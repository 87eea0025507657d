/* ssd_chunk.c — Mamba-2's state-space duality (SSD) on the CPU (ops/ssm.h
 * gives the recurrence): the chunked forward over a prompt, the decode
 * step and the recomputation-based backward.
 *
 * Forward, per (sequence, head), chunk by chunk (state S (P, N) carried):
 * with cs_i the running sum of dt*A inside the chunk,
 *   y_i = exp(cs_i) S C_i                                   (from earlier chunks)
 *       + sum_{j <= i} exp(cs_i - cs_j) dt_j (C_i . B_j) x_j  (inside the chunk)
 *       + D x_i
 *   S  <- exp(cs_last) S + sum_j exp(cs_last - cs_j) dt_j x_j B_j^T
 * Every exponent is <= 0, so nothing overflows; C.B is one (len, len)
 * product per chunk. Decode runs the recurrence for one token.
 *
 * Backward: per (sequence, head), the reverse recurrence of G = dL/dS
 * through states recomputed segment by segment from checkpoints every
 * sqrt(T) tokens (as ssm_scan.c): memory O(sqrt(T) P N) per thread plus the
 * dBm/dCm partial sums of each task (heads of one group add up), summed in
 * task order. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/ssm_cpu.h"

struct ssd_job {
    struct lmc_cpu_ctx *cc;
    float *y, *state;
    const struct lmc_ssd_io *in;
    const struct lmc_ssd_grads *g;
    const struct lmc_ssd_shape *s;
    const float *dy;
    const int32_t *slots;
    int64_t n_tasks, seg;
    float *part;
};

static inline float ssd_dt(const struct lmc_ssd_io *in, int64_t r, int64_t h, float *raw) {
    float x = in->dt[r * in->lddt + h] + (in->dt_bias ? in->dt_bias[h] : 0.0f);
    if (raw) *raw = x;
    float v = lmc_ssm_softplus(x);
    return v < in->dt_min ? in->dt_min : v > in->dt_max ? in->dt_max : v;
}

static void ssd_fwd_task(void *arg, int64_t task, int thread) {
    const struct ssd_job *j = arg;
    const struct lmc_ssd_io *in = j->in;
    const struct lmc_ssd_shape *s = j->s;
    const int64_t H = s->H, P = s->P, N = s->N, T = s->T, Lc = s->chunk;
    const int64_t b = task / H, h = task % H, g = h / (H / s->G);
    const float A = -expf(in->A_log[h]), Dh = in->Dskip ? in->Dskip[h] : 0.0f;
    float *S = j->cc->scratch[thread], *CB = S + P * N, *cs = CB + Lc * Lc, *dtv = cs + Lc;
    float *st = j->state ? j->state + (lmc_ssm_slot(j->slots, b) * H + h) * P * N : NULL;
    if (st) memcpy(S, st, (size_t)(P * N) * sizeof *S);
    else memset(S, 0, (size_t)(P * N) * sizeof *S);
    for (int64_t c0 = 0; c0 < T; c0 += Lc) {
        const int64_t len = LMC_MIN(Lc, T - c0), r0 = b * T + c0;
        for (int64_t i = 0; i < len; i++) {
            dtv[i] = ssd_dt(in, r0 + i, h, NULL);
            cs[i] = (i ? cs[i - 1] : 0.0f) + dtv[i] * A;
        }
        for (int64_t i = 0; i < len; i++) {
            const float *Ci = in->Cm + (r0 + i) * in->ldx + g * N;
            for (int64_t jj = 0; jj <= i; jj++) {
                const float *Bj = in->Bm + (r0 + jj) * in->ldx + g * N;
                CB[i * Lc + jj] = lmc_cpu_dot(Ci, Bj, N);
            }
        }
        for (int64_t i = 0; i < len; i++) {
            const float *Ci = in->Cm + (r0 + i) * in->ldx + g * N;
            const float *xi = in->x + (r0 + i) * in->ldx + h * P;
            float *yi = j->y + (r0 + i) * H * P + h * P;
            const float e = expf(cs[i]);
            for (int64_t p = 0; p < P; p++) yi[p] = e * lmc_cpu_dot(S + p * N, Ci, N) + Dh * xi[p];
            for (int64_t jj = 0; jj <= i; jj++) {
                const float wgt = expf(cs[i] - cs[jj]) * dtv[jj] * CB[i * Lc + jj];
                lmc_cpu_axpy(yi, wgt, in->x + (r0 + jj) * in->ldx + h * P, P);
            }
        }
        const float eL = expf(cs[len - 1]);
        for (int64_t k = 0; k < P * N; k++) S[k] *= eL;
        for (int64_t jj = 0; jj < len; jj++) {
            const float wgt = expf(cs[len - 1] - cs[jj]) * dtv[jj];
            const float *xj = in->x + (r0 + jj) * in->ldx + h * P;
            const float *Bj = in->Bm + (r0 + jj) * in->ldx + g * N;
            for (int64_t p = 0; p < P; p++) lmc_cpu_axpy(S + p * N, wgt * xj[p], Bj, N);
        }
    }
    if (st) memcpy(st, S, (size_t)(P * N) * sizeof *S);
}

/* out[i] = a * in[i] + c * b[i], i < n (out may be in) */
static inline void ssd_decay_add(float *out, const float *in, float a, float c, const float *b, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 va = _mm256_set1_ps(a), vc = _mm256_set1_ps(c);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(in + i),
                                                  _mm256_mul_ps(vc, _mm256_loadu_ps(b + i))));
#endif
    for (; i < n; i++) out[i] = a * in[i] + c * b[i];
}

static void ssd_check(const struct lmc_ssd_io *in, const struct lmc_ssd_shape *s) {
    LMC_ASSERT(s->H > 0 && s->P > 0 && s->G > 0 && s->N > 0 && s->H % s->G == 0);
    LMC_ASSERT(s->chunk > 0 && in->ldx >= s->H * s->P && in->lddt >= s->H);
}

void lmc_cpu_ssd_chunk(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                       const int32_t *slots, const struct lmc_ssd_shape *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (s->B <= 0 || s->T <= 0) return;
    ssd_check(in, s);
    lmc_cpu_scratch_reserve(c, (size_t)(s->P * s->N + s->chunk * s->chunk + 2 * s->chunk));
    struct ssd_job j = {.cc = c, .y = y, .state = state, .in = in, .s = s, .slots = slots};
    lmc_pool_run(c->pool, s->B * s->H, ssd_fwd_task, &j);
}

static void ssd_step_task(void *arg, int64_t task, int thread) {
    const struct ssd_job *j = arg;
    const struct lmc_ssd_io *in = j->in;
    const struct lmc_ssd_shape *s = j->s;
    const int64_t H = s->H, P = s->P, N = s->N;
    const int64_t b = task / H, h = task % H, g = h / (H / s->G);
    (void)thread;
    const float dt = ssd_dt(in, b, h, NULL), a = expf(dt * -expf(in->A_log[h]));
    const float Dh = in->Dskip ? in->Dskip[h] : 0.0f;
    float *S = j->state + (lmc_ssm_slot(j->slots, b) * H + h) * P * N;
    const float *x = in->x + b * in->ldx + h * P;
    const float *Bm = in->Bm + b * in->ldx + g * N, *Cm = in->Cm + b * in->ldx + g * N;
    float *y = j->y + b * H * P + h * P;
    for (int64_t p = 0; p < P; p++) {
        float *Sp = S + p * N, xdt = dt * x[p], acc = 0;
        int64_t n = 0;
#ifdef __AVX2__
        const __m256 va = _mm256_set1_ps(a), vx = _mm256_set1_ps(xdt);
        __m256 vacc = _mm256_setzero_ps();
        for (; n + 8 <= N; n += 8) {
            __m256 v = _mm256_fmadd_ps(va, _mm256_loadu_ps(Sp + n), _mm256_mul_ps(vx, _mm256_loadu_ps(Bm + n)));
            _mm256_storeu_ps(Sp + n, v);
            vacc = _mm256_fmadd_ps(v, _mm256_loadu_ps(Cm + n), vacc);
        }
        acc = lmc_hsum256(vacc);
#endif
        for (; n < N; n++) {
            Sp[n] = a * Sp[n] + xdt * Bm[n];
            acc += Sp[n] * Cm[n];
        }
        y[p] = acc + Dh * x[p];
    }
}

void lmc_cpu_ssd_step(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                      const int32_t *slots, const struct lmc_ssd_shape *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (s->B <= 0) return;
    ssd_check(in, s);
    LMC_ASSERT(s->T == 1 && state != NULL);
    struct ssd_job j = {.cc = c, .y = y, .state = state, .in = in, .s = s, .slots = slots};
    lmc_pool_run(c->pool, s->B * s->H, ssd_step_task, &j);
}

/* ---- backward ----
 * With a_t = exp(dt_t A), G_t = dL/dS_t (G_{t-1} gets a_t G_t):
 *   G_t += dy_t C_t^T;  dC_t += S_t^T dy_t;  dx_t = dt_t G_t B_t + D dy_t
 *   dB_t += dt_t G_t^T x_t;  ddt = x_t . (G_t B_t) + a_t A <G_t, S_{t-1}>
 *   dA += dt_t a_t <G_t, S_{t-1}>;  dD += dy_t . x_t
 *   ddt_raw = ddt softplus'(raw) (0 where the clamp cut);  dA_log = dA * A. */
static void ssd_bwd_head(const struct ssd_job *j, int64_t b, int64_t h, float *ck, float *seg,
                         float *pB, float *pC) {
    const struct lmc_ssd_io *in = j->in;
    const struct lmc_ssd_grads *gr = j->g;
    const struct lmc_ssd_shape *s = j->s;
    const int64_t H = s->H, P = s->P, N = s->N, T = s->T, L = j->seg, PN = P * N;
    const int64_t g = h / (H / s->G), GN = s->G * N;
    const float A = -expf(in->A_log[h]), Dh = in->Dskip ? in->Dskip[h] : 0.0f;
    float *G = seg + (L + 1) * PN, *GB = G + PN;
    float *S = seg;
    memset(S, 0, (size_t)PN * sizeof *S);
    memset(G, 0, (size_t)PN * sizeof *G);
    for (int64_t t = 0; t < T; t++) { /* checkpoints */
        if (t % L == 0) memcpy(ck + (t / L) * PN, S, (size_t)PN * sizeof *S);
        const int64_t r = b * T + t;
        const float dt = ssd_dt(in, r, h, NULL), a = expf(dt * A);
        const float *x = in->x + r * in->ldx + h * P, *Bm = in->Bm + r * in->ldx + g * N;
        for (int64_t p = 0; p < P; p++) ssd_decay_add(S + p * N, S + p * N, a, dt * x[p], Bm, N);
    }
    double dA = 0, dD = 0, dbias = 0;
    for (int64_t t1 = T; t1 > 0;) {
        const int64_t t0 = ((t1 - 1) / L) * L, len = t1 - t0;
        memcpy(seg, ck + (t0 / L) * PN, (size_t)PN * sizeof *seg);
        for (int64_t i = 0; i < len; i++) {
            const int64_t r = b * T + t0 + i;
            const float dt = ssd_dt(in, r, h, NULL), a = expf(dt * A);
            const float *x = in->x + r * in->ldx + h * P, *Bm = in->Bm + r * in->ldx + g * N;
            const float *Sp = seg + i * PN;
            float *Sn = seg + (i + 1) * PN;
            for (int64_t p = 0; p < P; p++) ssd_decay_add(Sn + p * N, Sp + p * N, a, dt * x[p], Bm, N);
        }
        for (int64_t i = len - 1; i >= 0; i--) {
            const int64_t r = b * T + t0 + i;
            float raw;
            const float dt = ssd_dt(in, r, h, &raw), a = expf(dt * A);
            const float *x = in->x + r * in->ldx + h * P;
            const float *Bm = in->Bm + r * in->ldx + g * N, *Cm = in->Cm + r * in->ldx + g * N;
            const float *dy = j->dy + r * H * P + h * P;
            const float *Sp = seg + i * PN, *Sc = seg + (i + 1) * PN;
            float *pBr = pB + r * GN + g * N, *pCr = pC + r * GN + g * N;
            float *dx = gr->dx + r * in->ldx + h * P;
            double ddt = 0, gs = 0;
            for (int64_t n = 0; n < N; n++) GB[n] = 0;
            /* G (= dL/dS_t after the += below) is stored already scaled by a:
             * the carry into token t-1 */
            for (int64_t p = 0; p < P; p++) {
                float *Gp = G + p * N;
                const float *Scp = Sc + p * N, *Spp = Sp + p * N, dyp = dy[p], xp = x[p];
                float gb = 0, gsp = 0;
                int64_t n = 0;
#ifdef __AVX2__
                const __m256 vdy = _mm256_set1_ps(dyp), vx = _mm256_set1_ps(xp), va = _mm256_set1_ps(a);
                __m256 vgb = _mm256_setzero_ps(), vgs = _mm256_setzero_ps();
                for (; n + 8 <= N; n += 8) {
                    const __m256 gv = _mm256_fmadd_ps(vdy, _mm256_loadu_ps(Cm + n), _mm256_loadu_ps(Gp + n));
                    _mm256_storeu_ps(Gp + n, _mm256_mul_ps(gv, va));
                    _mm256_storeu_ps(pCr + n, _mm256_fmadd_ps(_mm256_loadu_ps(Scp + n), vdy, _mm256_loadu_ps(pCr + n)));
                    vgb = _mm256_fmadd_ps(gv, _mm256_loadu_ps(Bm + n), vgb);
                    _mm256_storeu_ps(GB + n, _mm256_fmadd_ps(gv, vx, _mm256_loadu_ps(GB + n)));
                    vgs = _mm256_fmadd_ps(gv, _mm256_loadu_ps(Spp + n), vgs);
                }
                gb = lmc_hsum256(vgb), gsp = lmc_hsum256(vgs);
#endif
                for (; n < N; n++) {
                    const float gv = Gp[n] + dyp * Cm[n];
                    Gp[n] = gv * a;
                    pCr[n] += Scp[n] * dyp;
                    gb += gv * Bm[n];
                    GB[n] += gv * xp;
                    gsp += gv * Spp[n];
                }
                gs += gsp;
                dx[p] = dt * gb + Dh * dyp;
                ddt += (double)xp * gb;
                dD += (double)dyp * xp;
            }
            for (int64_t n = 0; n < N; n++) pBr[n] += dt * GB[n];
            ddt += (double)a * A * gs;
            dA += (double)dt * a * gs;
            const float v = lmc_ssm_softplus(raw);
            const float dr = (v < in->dt_min || v > in->dt_max) ? 0.0f
                                                                : (float)ddt * lmc_ssm_softplus_grad(raw);
            gr->ddt[r * in->lddt + h] = dr;
            dbias += dr;
        }
        t1 = t0;
    }
    if (gr->dA_log) gr->dA_log[h] += (float)(dA * A);
    if (gr->dDskip) gr->dDskip[h] += (float)dD;
    if (gr->ddt_bias) gr->ddt_bias[h] += (float)dbias;
}

static void ssd_bwd_task(void *arg, int64_t task, int thread) {
    const struct ssd_job *j = arg;
    const struct lmc_ssd_shape *s = j->s;
    const int64_t PN = s->P * s->N, BTGN = s->B * s->T * s->G * s->N, L = j->seg;
    int64_t h0, h1;
    lmc_cpu_range(s->H, j->n_tasks, task, 1, &h0, &h1);
    float *pB = j->part + task * 2 * BTGN, *pC = pB + BTGN;
    memset(pB, 0, (size_t)(2 * BTGN) * sizeof *pB);
    float *ck = j->cc->scratch[thread], *seg = ck + ((s->T + L - 1) / L) * PN;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t b = 0; b < s->B; b++) ssd_bwd_head(j, b, h, ck, seg, pB, pC);
}

void lmc_cpu_ssd_chunk_bwd(void *ctx, const struct lmc_ssd_grads *g, const float *dy,
                           const struct lmc_ssd_io *in, const struct lmc_ssd_shape *s) {
    struct lmc_cpu_ctx *c = ctx;
    if (s->B <= 0 || s->T <= 0) return;
    ssd_check(in, s);
    int64_t L = (int64_t)sqrt((double)s->T);
    if (L < 1) L = 1;
    const int64_t PN = s->P * s->N, GN = s->G * s->N, BT = s->B * s->T;
    lmc_cpu_scratch_reserve(c, (size_t)(((s->T + L - 1) / L + L + 2) * PN + s->N));
    struct ssd_job j = {.cc = c, .in = in, .g = g, .s = s, .dy = dy, .seg = L};
    j.n_tasks = LMC_MIN((int64_t)c->n_threads, s->H);
    lmc_cpu_xbuf_reserve(c, (size_t)(j.n_tasks * 2 * BT * GN));
    j.part = c->xbuf;
    lmc_pool_run(c->pool, j.n_tasks, ssd_bwd_task, &j);
    for (int64_t r = 0; r < BT; r++)
        for (int64_t k = 0; k < GN; k++) {
            float sb = 0, sc = 0;
            for (int64_t t = 0; t < j.n_tasks; t++) {
                sb += j.part[t * 2 * BT * GN + r * GN + k];
                sc += j.part[t * 2 * BT * GN + BT * GN + r * GN + k];
            }
            g->dBm[r * in->ldx + k] = sb;
            g->dCm[r * in->ldx + k] = sc;
        }
}
