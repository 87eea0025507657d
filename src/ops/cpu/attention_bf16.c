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

/* ---- the rows' element-wise passes, 16 lanes where AVX-512 is built in
 * (each element's value as the scalar loop's, sums in double) ---- */

static void vscale(float *x, int64_t n, float f) {
    int64_t i = 0;
#ifdef __AVX512F__
    const __m512 fv = _mm512_set1_ps(f);
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), fv));
#endif
    for (; i < n; i++) x[i] *= f;
}

static float vmax(const float *x, int64_t n) {
    int64_t i = 0;
    float mx = -INFINITY;
#ifdef __AVX512F__
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    mx = _mm512_reduce_max_ps(m);
#endif
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

struct atb_job {
    struct lmc_cpu_ctx *c;
    float *out, *lse, *dq, *dk, *dv;
    const float *q, *k, *v, *dout;
    int64_t B, T, n_heads, n_kv, hd, window, nqb;
    size_t ws_words, kt_words; /* the GEMM's workspace; one head's K^T (or V^T) of T keys packed */
    float scale;
};

/* first key of query i (window) */
static inline int64_t first_key(const struct atb_job *j, int64_t i) {
    return j->window > 0 ? LMC_MAX(0, i - j->window + 1) : 0;
}

/* X^T of one head's T keys (X = k or v at x, row stride kvrow) packed as a
 * GEMM's B (hd, T) into dst: panels of 32 keys, so the first nk keys of the
 * pack are a pack of nk keys (the same bits through lmc_cpu_gemm_bf16_pb) */
#define KT_MAX_HD 384 /* one K block of the GEMM (gemm_bf16.c's GB_KC): a prefix of keys is a pack of its own */
static void pack_keys(const struct atb_job *j, uint32_t *dst, const float *x) {
    if (j->hd > KT_MAX_HD) return;
    lmc_cpu_gemm_bf16_bpack(dst, j->T, j->hd, x, 1, j->n_kv * j->hd, 0, lmc_cpu_gemm_bf16_bpack_panels(j->T, j->hd));
}

/* S (R, nk) = scale * Q K^T for queries i0.. of head h (sequence b) against
 * keys lo..; kt: the head's K^T packed (pack_keys), used when lo is 0 */
static void scores(const struct atb_job *j, float *S, void *ws, const uint32_t *kt, int64_t b, int64_t h,
                   int64_t i0, int64_t R, int64_t lo, int64_t nk) {
    int64_t hd = j->hd, qrow = j->n_heads * hd, kvrow = j->n_kv * hd, kvh = h / (j->n_heads / j->n_kv);
    const float *Q = j->q + (b * j->T + i0) * qrow + h * hd;
    if (lo == 0 && hd <= KT_MAX_HD) lmc_cpu_gemm_bf16_pb(R, nk, hd, Q, qrow, 1, kt, S, nk, false, ws);
    else
        lmc_cpu_gemm_bf16(R, nk, hd, Q, qrow, 1, j->k + (b * j->T + lo) * kvrow + kvh * hd, 1, kvrow, S, nk, false,
                          ws);
    vscale(S, R * nk, j->scale);
}

/* one block of ATB queries of one head of one sequence (kt: the head's K^T packed) */
static void fwd_block(const struct atb_job *j, int thread, const uint32_t *kt, int64_t b, int64_t h, int64_t qb) {
    int64_t hd = j->hd, T = j->T, qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    int64_t kvh = h / (j->n_heads / j->n_kv);
    int64_t i0 = qb * ATB, R = LMC_MIN(T, i0 + ATB) - i0, lo = first_key(j, i0), nk = i0 + R - lo;
    void *ws = j->c->scratch[thread];
    float *S = j->c->scratch[thread] + j->ws_words;
    scores(j, S, ws, kt, b, h, i0, R, lo, nk);
    double inv[ATB];
    for (int64_t r = 0; r < R; r++) {
        float *p = S + r * nk;
        int64_t a = first_key(j, i0 + r) - lo, e = i0 + r + 1 - lo;
        float mx = vmax(p + a, e - a);
        double sum = lmc_cpu_exp_sum16(p + a, e - a, mx);
        memset(p, 0, (size_t)a * sizeof *p);
        memset(p + e, 0, (size_t)(nk - e) * sizeof *p);
        j->lse[(b * T + i0 + r) * j->n_heads + h] = (float)((double)mx + log(sum));
        inv[r] = 1.0 / sum;
    }
    float *O = j->out + (b * T + i0) * qrow + h * hd;
    lmc_cpu_gemm_bf16(R, hd, nk, S, nk, 1, j->v + (b * T + lo) * kvrow + kvh * hd, kvrow, 1, O, qrow, false, ws);
    for (int64_t r = 0; r < R; r++) vscale(O + r * qrow, hd, (float)inv[r]);
}

/* task: every query block of one head of one sequence, the head's K^T packed once */
static void fwd_task(void *arg, int64_t t, int thread) {
    const struct atb_job *j = arg;
    int64_t h = t % j->n_heads, b = t / j->n_heads, kvh = h / (j->n_heads / j->n_kv);
    uint32_t *kt = (uint32_t *)(j->c->scratch[thread] + j->ws_words + (size_t)(ATB * j->T));
    pack_keys(j, kt, j->k + b * j->T * j->n_kv * j->hd + kvh * j->hd);
    for (int64_t qb = 0; qb < j->nqb; qb++) fwd_block(j, thread, kt, b, h, qb);
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
                        .nqb = (T + ATB - 1) / ATB, .ws_words = ws_words(T, hd), .scale = scale,
                        .kt_words = (lmc_cpu_gemm_bf16_bpack_words(T, hd) + 15) / 16 * 16};
    lmc_cpu_scratch_reserve(c, j.ws_words + (size_t)(ATB * T) + j.kt_words);
    lmc_pool_run(c->pool, B * n_heads, fwd_task, &j);
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
    uint32_t *kt = (uint32_t *)(dP + ATB * T), *vt = kt + j->kt_words; /* K^T, V^T packed once */
    pack_keys(j, kt, kb);
    pack_keys(j, vt, vb);
    for (int64_t i = 0; i < T; i++) {
        memset(dkb + i * kvrow, 0, (size_t)hd * sizeof(float));
        memset(dvb + i * kvrow, 0, (size_t)hd * sizeof(float));
    }
    for (int64_t h = g * group; h < (g + 1) * group; h++) {
        for (int64_t qb = 0; qb < j->nqb; qb++) {
            int64_t i0 = qb * ATB, R = LMC_MIN(T, i0 + ATB) - i0, lo = first_key(j, i0), nk = i0 + R - lo;
            const float *Q = j->q + (b * T + i0) * qrow + h * hd;
            const float *dO = j->dout + (b * T + i0) * qrow + h * hd;
            scores(j, P, ws, kt, b, h, i0, R, lo, nk);
            if (lo == 0 && hd <= KT_MAX_HD) lmc_cpu_gemm_bf16_pb(R, nk, hd, dO, qrow, 1, vt, dP, nk, false, ws);
            else lmc_cpu_gemm_bf16(R, nk, hd, dO, qrow, 1, vb + lo * kvrow, 1, kvrow, dP, nk, false, ws);
            for (int64_t r = 0; r < R; r++) {
                float *p = P + r * nk, *dp = dP + r * nk;
                int64_t a = first_key(j, i0 + r) - lo, e = i0 + r + 1 - lo;
                lmc_cpu_exp_sum16(p + a, e - a, j->lse[(b * T + i0 + r) * j->n_heads + h]);
                memset(p, 0, (size_t)a * sizeof *p);
                memset(p + e, 0, (size_t)(nk - e) * sizeof *p);
                lmc_cpu_dsoft(dp, p, nk, a, e, j->scale);
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
                        .scale = scale, .kt_words = (lmc_cpu_gemm_bf16_bpack_words(T, hd) + 15) / 16 * 16};
    lmc_cpu_scratch_reserve(c, j.ws_words + (size_t)(2 * ATB * T) + 2 * j.kt_words);
    lmc_pool_run(c->pool, B * n_kv, bwd_task, &j);
}
