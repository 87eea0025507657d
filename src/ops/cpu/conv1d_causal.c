/* conv1d_causal.c — causal depthwise conv1d (Mamba's short convolution) on
 * the CPU: forward over a prompt (bias and SiLU fused, optional carried
 * conv state), its backward, and the single-token decode update. Tasks are
 * (sequence, block of 64 channels); the inner loops run over contiguous
 * channels so they vectorise. backend.h's conv1d_causal entries document
 * the contract. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/ssm_cpu.h"

#define CONV_CB 64 /* channels per task */

struct conv_job {
    float *y, *state;
    const float *x, *w, *bias, *dy;
    float *dx, *dw, *dbias;
    struct lmc_cpu_ctx *cc; /* backward: per-thread scratch */
    const int32_t *slots;
    int64_t ldx, B, T, C, K, n_cb;
    int silu;
};

/* input of sequence b at position s (s < 0: from the state, or 0) */
static inline float conv_in(const struct conv_job *j, const float *st, int64_t b, int64_t s,
                            int64_t c) {
    if (s >= 0) return j->x[(b * j->T + s) * j->ldx + c];
    return st ? st[(j->K - 1 + s) * j->C + c] : 0.0f;
}

static void conv_fwd_task(void *arg, int64_t task, int thread) {
    const struct conv_job *j = arg;
    (void)thread;
    const int64_t b = task / j->n_cb, c0 = (task % j->n_cb) * CONV_CB;
    const int64_t c1 = LMC_MIN(c0 + CONV_CB, j->C), K = j->K, T = j->T;
    float *st = j->state ? j->state + lmc_ssm_slot(j->slots, b) * (K - 1) * j->C : NULL;
    float acc[CONV_CB];
    for (int64_t t = 0; t < T; t++) {
        for (int64_t c = c0; c < c1; c++) acc[c - c0] = j->bias ? j->bias[c] : 0.0f;
        for (int64_t k = 0; k < K; k++) {
            int64_t s = t - K + 1 + k;
            if (s >= 0) {
                const float *xr = j->x + (b * T + s) * j->ldx;
                for (int64_t c = c0; c < c1; c++) acc[c - c0] += j->w[c * K + k] * xr[c];
            } else if (st) {
                const float *sr = st + (K - 1 + s) * j->C;
                for (int64_t c = c0; c < c1; c++) acc[c - c0] += j->w[c * K + k] * sr[c];
            }
        }
        float *yr = j->y + (b * T + t) * j->C;
        if (j->silu)
            for (int64_t c = c0; c < c1; c++) yr[c] = lmc_ssm_silu(acc[c - c0]);
        else
            for (int64_t c = c0; c < c1; c++) yr[c] = acc[c - c0];
    }
    if (!st) return;
    /* new state row i = input at T-K+1+i; ascending i reads old rows >= i */
    for (int64_t i = 0; i < K - 1; i++)
        for (int64_t c = c0; c < c1; c++) st[i * j->C + c] = conv_in(j, st, b, T - K + 1 + i, c);
}

void lmc_cpu_conv1d_causal(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                           const float *bias, float *state, const int32_t *slots, int64_t B,
                           int64_t T, int64_t C, int64_t K, int silu) {
    struct lmc_cpu_ctx *c = ctx;
    if (B <= 0 || T <= 0 || C <= 0) return;
    LMC_ASSERT(K >= 1 && ldx >= C);
    struct conv_job j = {.y = y, .state = state, .x = x, .w = w, .bias = bias, .slots = slots,
                         .ldx = ldx, .B = B, .T = T, .C = C, .K = K,
                         .n_cb = (C + CONV_CB - 1) / CONV_CB, .silu = silu};
    lmc_pool_run(c->pool, B * j.n_cb, conv_fwd_task, &j);
}

/* ---- backward (zero state before t = 0) ----
 * a[t,c] = bias[c] + sum_k w[c,k] x[t-K+1+k,c], y = silu(a) (or a):
 *   da = dy * silu'(a);  dx[s,c] = sum_k w[c,k] da[s+K-1-k,c]
 *   dw[c,k] += sum_t da[t,c] x[t-K+1+k,c];  dbias[c] += sum_t da[t,c]
 * Tasks own channel blocks (all sequences), so dw/dbias sum in a fixed
 * order; da of one sequence and block is staged in the thread's scratch. */
static void conv_bwd_task(void *arg, int64_t task, int thread) {
    const struct conv_job *j = arg;
    const int64_t c0 = task * CONV_CB, c1 = LMC_MIN(c0 + CONV_CB, j->C), K = j->K, T = j->T;
    const int64_t nc = c1 - c0;
    float *da = j->cc->scratch[thread];
    for (int64_t b = 0; b < j->B; b++) {
        for (int64_t t = 0; t < T; t++) {
            float *dr = da + t * nc;
            for (int64_t c = c0; c < c1; c++) dr[c - c0] = j->bias ? j->bias[c] : 0.0f;
            for (int64_t k = 0; k < K; k++) {
                int64_t s = t - K + 1 + k;
                if (s < 0) continue;
                const float *xr = j->x + (b * T + s) * j->ldx;
                for (int64_t c = c0; c < c1; c++) dr[c - c0] += j->w[c * K + k] * xr[c];
            }
            const float *dyr = j->dy + (b * T + t) * j->C;
            for (int64_t c = c0; c < c1; c++)
                dr[c - c0] = j->silu ? dyr[c] * lmc_ssm_silu_grad(dr[c - c0]) : dyr[c];
        }
        for (int64_t s = 0; s < T; s++) {
            float *dxr = j->dx + (b * T + s) * j->ldx;
            const float *xr = j->x + (b * T + s) * j->ldx;
            for (int64_t c = c0; c < c1; c++) dxr[c] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                int64_t t = s + K - 1 - k;
                if (t >= T) continue;
                const float *dr = da + t * nc;
                for (int64_t c = c0; c < c1; c++) dxr[c] += j->w[c * K + k] * dr[c - c0];
                if (j->dw)
                    for (int64_t c = c0; c < c1; c++) j->dw[c * K + k] += dr[c - c0] * xr[c];
            }
        }
        if (j->dbias)
            for (int64_t t = 0; t < T; t++)
                for (int64_t c = c0; c < c1; c++) j->dbias[c] += da[t * nc + c - c0];
    }
}

void lmc_cpu_conv1d_causal_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                               const float *x, int64_t ldx, const float *w, const float *bias,
                               int64_t B, int64_t T, int64_t C, int64_t K, int silu) {
    struct lmc_cpu_ctx *c = ctx;
    if (B <= 0 || T <= 0 || C <= 0) return;
    LMC_ASSERT(K >= 1 && ldx >= C);
    lmc_cpu_scratch_reserve(c, (size_t)T * CONV_CB);
    struct conv_job j = {.cc = c, .x = x, .w = w, .bias = bias, .dy = dy,
                         .dx = dx, .dw = dw, .dbias = dbias, .ldx = ldx, .B = B, .T = T, .C = C,
                         .K = K, .n_cb = (C + CONV_CB - 1) / CONV_CB, .silu = silu};
    lmc_pool_run(c->pool, j.n_cb, conv_bwd_task, &j);
}

/* ---- decode: one token per sequence ---- */
static void conv_step_task(void *arg, int64_t b, int thread) {
    const struct conv_job *j = arg;
    (void)thread;
    const int64_t K = j->K, C = j->C;
    float *st = j->state + lmc_ssm_slot(j->slots, b) * (K - 1) * C;
    const float *xr = j->x + b * j->ldx;
    float *yr = j->y + b * C;
    for (int64_t c = 0; c < C; c++) {
        float a = j->bias ? j->bias[c] : 0.0f;
        for (int64_t k = 0; k < K - 1; k++) a += j->w[c * K + k] * st[k * C + c];
        a += j->w[c * K + K - 1] * xr[c];
        for (int64_t k = 0; k + 1 < K - 1; k++) st[k * C + c] = st[(k + 1) * C + c];
        if (K > 1) st[(K - 2) * C + c] = xr[c];
        yr[c] = j->silu ? lmc_ssm_silu(a) : a;
    }
}

void lmc_cpu_conv1d_causal_step(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                                const float *bias, float *state, const int32_t *slots, int64_t B,
                                int64_t C, int64_t K, int silu) {
    struct lmc_cpu_ctx *c = ctx;
    if (B <= 0 || C <= 0) return;
    LMC_ASSERT(K >= 1 && ldx >= C && state);
    struct conv_job j = {.y = y, .state = state, .x = x, .w = w, .bias = bias, .slots = slots,
                         .ldx = ldx, .B = B, .C = C, .K = K, .silu = silu};
    lmc_pool_run(c->pool, B, conv_step_task, &j);
}
