/* attention.c — causal multi-head attention (see backend.h for shapes).
 * Inference over a KV cache: from LMC_CPU_ATTN_BLOCK_MIN_M queries blocks
 * of queries through sgemm (attention_prefill.c); fewer: one task per (query, head), head-major: scores into the
 * thread's scratch, max-subtracted exp (stable softmax), sum in double,
 * then the weighted sum of V rows; the training forward is the same kernel
 * (keeping lse), or from LMC_CPU_ATTN_TRAIN_BLOCK_MIN_T tokens the prefill's
 * blocks (keeping lse): bit for bit the inference op's out at M = T. The training backward: blocks of queries against their
 * keys through sgemm (below). Head h reads
 * kv head h / (n_heads / n_kv) (GQA); window > 0 keeps the last `window`
 * positions, the query's own included. attention_mask: the decode kernel
 * over the prefix and the new rows of each query's mask. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_f32.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

struct attn_job {
    struct lmc_cpu_ctx *c;
    float *out, *lse;       /* lse: (M, n_heads) or NULL */
    const float *q, *k, *v;
    int64_t M, pos0, n_heads, n_kv, hd, window;
    float scale;
    const uint64_t *mask;   /* attention_mask: (M) the new rows each query sees; NULL: causal */
};

/* o = inv * sum_i s[i] v_i (v_i = vb + i * kv_row): per output element the
 * products added in key order from 0 by fma, then times inv: what zeroing o,
 * lmc_cpu_axpy per key and scaling give, bit for bit, but with 64 (then 32)
 * columns at a time held in registers over all keys instead of o reloaded
 * and stored once per key (64: 8 FMA chains, one pass over V for hd = 64;
 * spec23). The loops over registers carry unroll pragmas: at -O2 GCC left
 * such arrays in memory (slower than the old code). */
static void weighted_sum(float *o, const float *s, const float *vb, int64_t kv_row, int64_t n,
                         int64_t hd, float inv) {
    int64_t d = 0;
#ifdef __AVX2__
    const __m256 iv = _mm256_set1_ps(inv);
    for (; d + 64 <= hd; d += 64) { /* 8 independent chains: the FMA latency hidden (hd = 64 in one pass) */
        __m256 a[8];
        _Pragma("GCC unroll 8") for (int e = 0; e < 8; e++) a[e] = _mm256_setzero_ps();
        const float *v = vb + d;
        for (int64_t i = 0; i < n; i++, v += kv_row) {
            __m256 w = _mm256_set1_ps(s[i]);
            _Pragma("GCC unroll 8") for (int e = 0; e < 8; e++)
                a[e] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * e), a[e]);
        }
        _Pragma("GCC unroll 8") for (int e = 0; e < 8; e++)
            _mm256_storeu_ps(o + d + 8 * e, _mm256_mul_ps(a[e], iv));
    }
    for (; d + 32 <= hd; d += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v = vb + d;
        for (int64_t i = 0; i < n; i++, v += kv_row) {
            __m256 w = _mm256_set1_ps(s[i]);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 24), a3);
        }
        _mm256_storeu_ps(o + d, _mm256_mul_ps(a0, iv));
        _mm256_storeu_ps(o + d + 8, _mm256_mul_ps(a1, iv));
        _mm256_storeu_ps(o + d + 16, _mm256_mul_ps(a2, iv));
        _mm256_storeu_ps(o + d + 24, _mm256_mul_ps(a3, iv));
    }
#endif
    if (d == hd) return;
    /* the rest of the columns (all of them without AVX2): as before */
    memset(o + d, 0, (size_t)(hd - d) * sizeof(float));
    for (int64_t i = 0; i < n; i++) lmc_cpu_axpy(o + d, s[i], vb + i * kv_row + d, hd - d);
    for (int64_t e = d; e < hd; e++) o[e] *= inv;
}

/* attention_mask's task: the prefix rows, then the new rows of the query's
 * mask in order (a causal mask: attn_task's sums in attn_task's order) */
static void attn_mask_task(const struct attn_job *j, int64_t m, int64_t h, int thread) {
    int64_t hd = j->hd, kvh = h / (j->n_heads / j->n_kv), kv_row = j->n_kv * hd;
    const float *q = j->q + (m * j->n_heads + h) * hd;
    const float *kb = j->k + kvh * hd, *vb = j->v + kvh * hd;
    float *s = j->c->scratch[thread], *o = j->out + (m * j->n_heads + h) * hd;
    int32_t *row = (int32_t *)(s + j->pos0 + j->M); /* the rows behind s[] */
    int64_t n = 0;
    float mx = -INFINITY;
    for (int64_t i = 0; i < j->pos0 + j->M; i++) {
        if (i >= j->pos0 && !((j->mask[m] >> (i - j->pos0)) & 1)) continue;
        row[n] = (int32_t)i;
        s[n] = j->scale * lmc_cpu_dot(q, kb + i * kv_row, hd);
        if (s[n] > mx) mx = s[n];
        n++;
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t i = 0; i < n; i++) lmc_cpu_axpy(o, s[i], vb + (int64_t)row[i] * kv_row, hd);
    float inv = (float)(1.0 / sum);
    for (int64_t d = 0; d < hd; d++) o[d] *= inv;
}

/* s[i] = scale * lmc_cpu_dot(q, k_i, hd) for keys k_i = kb + i * kv_row,
 * i < n; returns their max (compared in key order). With AVX2 and hd a
 * multiple of 8, 4 keys at a time: each key's two accumulators as
 * lmc_cpu_dot's, their 4 horizontal sums in one lmc_hsum256x4 (the same
 * adds), q loaded once for 4 keys: the same bits, fewer operations per key
 * (spec23: with the 64-column weighted sum, decode attention at 5 rows
 * -19%, 1 row -15%, 1-thread CPU time). */
static float scores(float *s, const float *q, const float *kb, int64_t kv_row, int64_t n, int64_t hd,
                    float scale) {
    float mx = -INFINITY;
    int64_t i = 0;
#ifdef __AVX2__
    if (hd % 8 == 0)
        for (; i + 4 <= n; i += 4) {
            __m256 a0[4], a1[4];
            const float *k = kb + i * kv_row;
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) a0[r] = a1[r] = _mm256_setzero_ps();
            int64_t d = 0;
            for (; d + 16 <= hd; d += 16) {
                __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
                _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                    a0[r] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k + r * kv_row + d), a0[r]);
                    a1[r] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(k + r * kv_row + d + 8), a1[r]);
                }
            }
            if (d + 8 <= hd)
                _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
                    a0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + r * kv_row + d), a0[r]);
            float t[4];
            _mm_storeu_ps(t, lmc_hsum256x4(_mm256_add_ps(a0[0], a1[0]), _mm256_add_ps(a0[1], a1[1]),
                                           _mm256_add_ps(a0[2], a1[2]), _mm256_add_ps(a0[3], a1[3])));
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                s[i + r] = scale * t[r];
                if (s[i + r] > mx) mx = s[i + r];
            }
        }
#endif
    for (; i < n; i++) {
        s[i] = scale * lmc_cpu_dot(q, kb + i * kv_row, hd);
        if (s[i] > mx) mx = s[i];
    }
    return mx;
}

static void attn_task(void *arg, int64_t t, int thread) {
    const struct attn_job *j = arg;
    /* head-major: consecutive tasks are the same head's rows, which read the
     * same K and V rows (still in the claiming thread's L2 for the next) */
    int64_t h = t / j->M, m = t % j->M, hd = j->hd;
    if (j->mask) {
        attn_mask_task(j, m, h, thread);
        return;
    }
    int64_t p = j->pos0 + m;
    int64_t lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0, n = p - lo + 1;
    int64_t kvh = h / (j->n_heads / j->n_kv), kv_row = j->n_kv * hd;
    const float *q = j->q + (m * j->n_heads + h) * hd;
    const float *kb = j->k + lo * kv_row + kvh * hd, *vb = j->v + lo * kv_row + kvh * hd;
    float *s = j->c->scratch[thread], *o = j->out + (m * j->n_heads + h) * hd;

    float mx = scores(s, q, kb, kv_row, n, hd, j->scale);
    double sum = lmc_cpu_exp_sum(s, n, mx);
    if (j->lse) j->lse[m * j->n_heads + h] = (float)((double)mx + log(sum));
    weighted_sum(o, s, vb, kv_row, n, hd, (float)(1.0 / sum));
}

void lmc_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                       float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0);
    if (M <= 0 || n_heads <= 0 || hd <= 0) return;
    if (M >= LMC_CPU_ATTN_BLOCK_MIN_M) { /* prefill: blocks of queries (attention_prefill.c) */
        lmc_cpu_attention_prefill(c, out, q, k, v, M, pos0, n_heads, n_kv, hd, scale, window);
        return;
    }
    struct attn_job j = {c, out, NULL, q, k, v, M, pos0, n_heads, n_kv, hd, window, scale, NULL};
    lmc_cpu_scratch_reserve(c, (size_t)(pos0 + M));
    lmc_pool_run(c->pool, M * n_heads, attn_task, &j);
}

void lmc_cpu_attention_mask(void *ctx, float *out, const float *q, const float *k, const float *v,
                            int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                            float scale, const uint64_t *mask) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0 && M <= 64);
    if (M <= 0 || n_heads <= 0 || hd <= 0) return;
    struct attn_job j = {c, out, NULL, q, k, v, M, pos0, n_heads, n_kv, hd, 0, scale, mask};
    lmc_cpu_scratch_reserve(c, (size_t)(2 * (pos0 + M))); /* scores, then their rows */
    lmc_pool_run(c->pool, M * n_heads, attn_task, &j);
}

void lmc_cpu_attention_train(void *ctx, float *out, float *lse, const float *q, const float *k,
                             const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                             int64_t hd, float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    if (B <= 0 || T <= 0 || n_heads <= 0 || hd <= 0) return;
    if (T >= LMC_CPU_ATTN_TRAIN_BLOCK_MIN_T) { /* what the inference op does at M = T: query blocks */
        lmc_cpu_attention_prefill_train(c, out, lse, q, k, v, B, T, n_heads, n_kv, hd, scale, window);
        return;
    }
    int64_t qd = n_heads * hd, kvd = n_kv * hd;
    lmc_cpu_scratch_reserve(c, (size_t)T);
    for (int64_t b = 0; b < B; b++) {
        struct attn_job j = {c,           out + b * T * qd, lse + b * T * n_heads, q + b * T * qd,
                             k + b * T * kvd, v + b * T * kvd, T, 0, n_heads, n_kv, hd, window,
                             scale, NULL};
        lmc_pool_run(c->pool, T * n_heads, attn_task, &j);
    }
}

/* ---- backward, blocked (training: B sequences of T tokens from position 0) ----
 * The training forward above is the inference op's (bit-identical to
 * it, as tests require). The backward works on blocks of ATQ queries
 * against the keys they see through sgemm. */
#define ATQ 64

struct attn_train_job {
    float *dq, *dk, *dv;
    const float *lse, *q, *k, *v, *dout;
    float **scratch;
    int64_t T, n_heads, n_kv, hd, window, nqb;
    float scale;
};

/* The keys row i sees, relative to the block's first key lo: [*a, *b). */
static inline void row_keys(const struct attn_train_job *j, int64_t i, int64_t lo, int64_t *a,
                            int64_t *b) {
    *a = (j->window > 0 ? LMC_MAX(0, i - j->window + 1) : 0) - lo;
    *b = i + 1 - lo;
}

/* S (R, nk) = scale * Q K^T for queries i0.. of head h against keys lo..
 * (our own GEMM, gemm_f32.c: faster than sgemm on these small A B^T
 * products; ws: its workspace) */
static void block_scores(const struct attn_train_job *j, float *S, int64_t b, int64_t h, int64_t i0,
                         int64_t R, int64_t lo, int64_t nk, float *ws) {
    int64_t hd = j->hd, qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    int64_t kvh = h / (j->n_heads / j->n_kv);
    lmc_cpu_gemm_f32(false, true, R, nk, hd, j->scale, j->q + (b * j->T + i0) * qrow + h * hd, qrow,
                     j->k + (b * j->T + lo) * kvrow + kvh * hd, LMC_DTYPE_F32, kvrow, 0.0f, S, nk, ws);
}

/* ---- backward (training: B sequences of T tokens from position 0) ----
 * One task per (sequence, kv head): it owns the dk, dv rows of its kv head
 * and walks the query heads of its group and their query blocks in order,
 * so the accumulation order is fixed. Per block (sgemms as the forward):
 * P = exp(scale Q K^T - lse) masked, dP = dout V^T, D_i = sum_j P dP (in
 * double), dS = P (dP - D) scale; dq = dS K, dk += dS^T Q, dv += P^T dout.
 * Scratch: 2 ATQ x T floats per thread, then gemm_f32's workspace. */
static void attn_bwd_task(void *arg, int64_t t, int thread) {
    const struct attn_train_job *j = arg;
    int64_t b = t / j->n_kv, g = t % j->n_kv, hd = j->hd, T = j->T;
    int64_t group = j->n_heads / j->n_kv, qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    float *dkb = j->dk + b * T * kvrow + g * hd, *dvb = j->dv + b * T * kvrow + g * hd;
    const float *vb = j->v + b * T * kvrow + g * hd, *kb = j->k + b * T * kvrow + g * hd;
    float *P = j->scratch[thread], *dP = P + ATQ * T, *ws = dP + ATQ * T; /* 64-byte aligned */
    for (int64_t i = 0; i < T; i++) {
        memset(dkb + i * kvrow, 0, (size_t)hd * sizeof(float));
        memset(dvb + i * kvrow, 0, (size_t)hd * sizeof(float));
    }
    for (int64_t h = g * group; h < (g + 1) * group; h++) {
        for (int64_t qb = 0; qb < j->nqb; qb++) {
            int64_t i0 = qb * ATQ, R = LMC_MIN(T, i0 + ATQ) - i0;
            int64_t lo = j->window > 0 ? LMC_MAX(0, i0 - j->window + 1) : 0, nk = i0 + R - lo;
            const float *Q = j->q + (b * T + i0) * qrow + h * hd;
            const float *dO = j->dout + (b * T + i0) * qrow + h * hd;
            block_scores(j, P, b, h, i0, R, lo, nk, ws);
            lmc_cpu_gemm_f32(false, true, R, nk, hd, 1.0f, dO, qrow, vb + lo * kvrow, LMC_DTYPE_F32, kvrow, 0.0f, dP,
                             nk, ws);
            for (int64_t r = 0; r < R; r++) {
                float *p = P + r * nk, *dp = dP + r * nk;
                int64_t a, e;
                row_keys(j, i0 + r, lo, &a, &e);
                lmc_cpu_exp_sum(p + a, e - a, j->lse[(b * T + i0 + r) * j->n_heads + h]);
                for (int64_t x = 0; x < a; x++) p[x] = 0;
                for (int64_t x = e; x < nk; x++) p[x] = 0;
                lmc_cpu_dsoft(dp, p, nk, a, e, j->scale);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)hd, (int)nk, 1.0f, dP,
                        (int)nk, kb + lo * kvrow, (int)kvrow, 0.0f, j->dq + (b * T + i0) * qrow + h * hd,
                        (int)qrow);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)hd, (int)R, 1.0f, dP,
                        (int)nk, Q, (int)qrow, 1.0f, dkb + lo * kvrow, (int)kvrow);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nk, (int)hd, (int)R, 1.0f, P,
                        (int)nk, dO, (int)qrow, 1.0f, dvb + lo * kvrow, (int)kvrow);
        }
    }
}

void lmc_cpu_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                           const float *out, const float *lse, const float *q, const float *k,
                           const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                           int64_t hd, float scale, int64_t window) {
    (void)out; /* the probabilities come from q, k and the forward's lse */
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    if (B <= 0 || T <= 0 || hd <= 0) return;
    LMC_ASSERT(T <= INT32_MAX && n_heads * hd <= INT32_MAX);
    struct attn_train_job j = {.dq = dq, .dk = dk, .dv = dv, .lse = lse, .q = q, .k = k,
                               .v = v, .dout = dout, .scratch = c->scratch, .T = T, .n_heads = n_heads,
                               .n_kv = n_kv, .hd = hd, .window = window, .nqb = (T + ATQ - 1) / ATQ,
                               .scale = scale};
    lmc_cpu_scratch_reserve(c, (size_t)(2 * ATQ * T) + lmc_cpu_gemm_f32_ws(ATQ, T, hd));
    lmc_pool_run(c->pool, B * n_kv, attn_bwd_task, &j);
}
