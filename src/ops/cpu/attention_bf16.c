/* attention_bf16.c — causal multi-head attention for training in the
 * CPU's bf16 mode (lmc_backend_cpu_set_train_bf16 swaps these in for
 * attention_train / attention_bwd; contracts as backend.h's): blocks of
 * ATB queries of one head against the keys they see, every product
 * through the bf16 GEMM (gemm_bf16.c: bf16-rounded operands, f32 sums),
 * softmax, lse and its sums in f32/double.
 * Forward, per block: S = Q K^T (scaled), P = softmax rows (causal and
 * window masks), lse = max + log(sum) (double), O = P V / sum.
 * Backward (one task per sequence and kv head, so each dk, dv row has one
 * writer and a fixed order): S again (the same GEMM shape as the forward's,
 * so the same bits), P = exp(S - lse), dP = dO V^T, D = rowsum(P dP),
 * dS = P (dP - D) scale; dq = dS K, dk += dS^T Q, dv += P^T dO.
 * Results depend on the shapes only, never on the thread count. */
#include "ops/cpu/gemm_bf16.h"

#include <math.h>
#include <string.h>

#define ATB 64 /* queries per block */

struct atb_job {
    struct lmc_cpu_ctx *c;
    float *out, *lse, *dq, *dk, *dv;
    const float *q, *k, *v, *dout;
    int64_t B, T, n_heads, n_kv, hd, window, nqb;
    size_t ws_words;
    float scale;
};

/* first key of query i (window) */
static inline int64_t first_key(const struct atb_job *j, int64_t i) {
    return j->window > 0 ? LMC_MAX(0, i - j->window + 1) : 0;
}

/* S (R, nk) = scale * Q K^T for queries i0.. of head h (sequence b) against keys lo.. */
static void scores(const struct atb_job *j, float *S, void *ws, int64_t b, int64_t h, int64_t i0, int64_t R,
                   int64_t lo, int64_t nk) {
    int64_t hd = j->hd, qrow = j->n_heads * hd, kvrow = j->n_kv * hd, kvh = h / (j->n_heads / j->n_kv);
    lmc_cpu_gemm_bf16(R, nk, hd, j->q + (b * j->T + i0) * qrow + h * hd, qrow, 1,
                      j->k + (b * j->T + lo) * kvrow + kvh * hd, 1, kvrow, S, nk, false, ws);
    for (int64_t x = 0; x < R * nk; x++) S[x] *= j->scale;
}

/* task: one block of ATB queries of one head of one sequence */
static void fwd_task(void *arg, int64_t t, int thread) {
    const struct atb_job *j = arg;
    int64_t qb = t % j->nqb, h = (t / j->nqb) % j->n_heads, b = t / (j->nqb * j->n_heads);
    int64_t hd = j->hd, T = j->T, qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    int64_t kvh = h / (j->n_heads / j->n_kv);
    int64_t i0 = qb * ATB, R = LMC_MIN(T, i0 + ATB) - i0, lo = first_key(j, i0), nk = i0 + R - lo;
    void *ws = j->c->scratch[thread];
    float *S = j->c->scratch[thread] + j->ws_words;
    scores(j, S, ws, b, h, i0, R, lo, nk);
    double inv[ATB];
    for (int64_t r = 0; r < R; r++) {
        float *p = S + r * nk;
        int64_t a = first_key(j, i0 + r) - lo, e = i0 + r + 1 - lo;
        float mx = -INFINITY;
        for (int64_t x = a; x < e; x++) mx = p[x] > mx ? p[x] : mx;
        double sum = lmc_cpu_exp_sum(p + a, e - a, mx);
        for (int64_t x = 0; x < a; x++) p[x] = 0;
        for (int64_t x = e; x < nk; x++) p[x] = 0;
        j->lse[(b * T + i0 + r) * j->n_heads + h] = (float)((double)mx + log(sum));
        inv[r] = 1.0 / sum;
    }
    float *O = j->out + (b * T + i0) * qrow + h * hd;
    lmc_cpu_gemm_bf16(R, hd, nk, S, nk, 1, j->v + (b * T + lo) * kvrow + kvh * hd, kvrow, 1, O, qrow, false, ws);
    for (int64_t r = 0; r < R; r++) {
        float f = (float)inv[r];
        for (int64_t d = 0; d < hd; d++) O[r * qrow + d] *= f;
    }
}

static size_t ws_words(int64_t T, int64_t hd) {
    size_t a = lmc_cpu_gemm_bf16_ws(ATB, T, hd), b = lmc_cpu_gemm_bf16_ws(ATB, hd, T),
           c = lmc_cpu_gemm_bf16_ws(T, hd, ATB);
    size_t m = LMC_MAX(a, LMC_MAX(b, c));
    return (m + 15) / 16 * 16;
}

void lmc_cpu_attention_train_bf16(void *ctx, float *out, float *lse, const float *q, const float *k,
                                  const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                                  int64_t hd, float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    if (B <= 0 || T <= 0 || n_heads <= 0 || hd <= 0) return;
    struct atb_job j = {.c = c, .out = out, .lse = lse, .q = q, .k = k, .v = v, .B = B, .T = T,
                        .n_heads = n_heads, .n_kv = n_kv, .hd = hd, .window = window,
                        .nqb = (T + ATB - 1) / ATB, .ws_words = ws_words(T, hd), .scale = scale};
    lmc_cpu_scratch_reserve(c, j.ws_words + (size_t)(ATB * T));
    lmc_pool_run(c->pool, B * n_heads * j.nqb, fwd_task, &j);
}

/* task: sequence b, kv head g: its dk, dv rows, the dq rows of its query heads */
static void bwd_task(void *arg, int64_t t, int thread) {
    const struct atb_job *j = arg;
    int64_t b = t / j->n_kv, g = t % j->n_kv, hd = j->hd, T = j->T;
    int64_t group = j->n_heads / j->n_kv, qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    float *dkb = j->dk + b * T * kvrow + g * hd, *dvb = j->dv + b * T * kvrow + g * hd;
    const float *vb = j->v + b * T * kvrow + g * hd, *kb = j->k + b * T * kvrow + g * hd;
    void *ws = j->c->scratch[thread];
    float *P = j->c->scratch[thread] + j->ws_words, *dP = P + ATB * T;
    for (int64_t i = 0; i < T; i++) {
        memset(dkb + i * kvrow, 0, (size_t)hd * sizeof(float));
        memset(dvb + i * kvrow, 0, (size_t)hd * sizeof(float));
    }
    for (int64_t h = g * group; h < (g + 1) * group; h++) {
        for (int64_t qb = 0; qb < j->nqb; qb++) {
            int64_t i0 = qb * ATB, R = LMC_MIN(T, i0 + ATB) - i0, lo = first_key(j, i0), nk = i0 + R - lo;
            const float *Q = j->q + (b * T + i0) * qrow + h * hd;
            const float *dO = j->dout + (b * T + i0) * qrow + h * hd;
            scores(j, P, ws, b, h, i0, R, lo, nk);
            lmc_cpu_gemm_bf16(R, nk, hd, dO, qrow, 1, vb + lo * kvrow, 1, kvrow, dP, nk, false, ws);
            for (int64_t r = 0; r < R; r++) {
                float *p = P + r * nk, *dp = dP + r * nk;
                int64_t a = first_key(j, i0 + r) - lo, e = i0 + r + 1 - lo;
                lmc_cpu_exp_sum(p + a, e - a, j->lse[(b * T + i0 + r) * j->n_heads + h]);
                for (int64_t x = 0; x < a; x++) p[x] = 0;
                for (int64_t x = e; x < nk; x++) p[x] = 0;
                double D = 0;
                for (int64_t x = a; x < e; x++) D += (double)p[x] * dp[x];
                float Df = (float)D;
                for (int64_t x = 0; x < nk; x++) dp[x] = p[x] * (dp[x] - Df) * j->scale;
            }
            lmc_cpu_gemm_bf16(R, hd, nk, dP, nk, 1, kb + lo * kvrow, kvrow, 1, j->dq + (b * T + i0) * qrow + h * hd,
                              qrow, false, ws);
            lmc_cpu_gemm_bf16(nk, hd, R, dP, 1, nk, Q, qrow, 1, dkb + lo * kvrow, kvrow, true, ws);
            lmc_cpu_gemm_bf16(nk, hd, R, P, 1, nk, dO, qrow, 1, dvb + lo * kvrow, kvrow, true, ws);
        }
    }
}

void lmc_cpu_attention_bwd_bf16(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                const float *out, const float *lse, const float *q, const float *k,
                                const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                                int64_t hd, float scale, int64_t window) {
    (void)out; /* the probabilities come from q, k and the forward's lse */
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    if (B <= 0 || T <= 0 || hd <= 0) return;
    struct atb_job j = {.c = c, .dq = dq, .dk = dk, .dv = dv, .lse = (float *)lse, .q = q, .k = k, .v = v,
                        .dout = dout, .B = B, .T = T, .n_heads = n_heads, .n_kv = n_kv, .hd = hd,
                        .window = window, .nqb = (T + ATB - 1) / ATB, .ws_words = ws_words(T, hd),
                        .scale = scale};
    lmc_cpu_scratch_reserve(c, j.ws_words + (size_t)(2 * ATB * T));
    lmc_pool_run(c->pool, B * n_kv, bwd_task, &j);
}
