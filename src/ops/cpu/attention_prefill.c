/* attention_prefill.c — inference attention (backend.h's `attention`) for
 * many queries at once (prefill chunks, from LMC_CPU_ATTN_BLOCK_MIN_M queries; fewer go
 * to attention.c's per-query kernel). One task per (block of ATP_Q
 * queries, head): S = scale Q K^T over the keys the block sees (our fp32
 * GEMM, gemm_f32.c, single-threaded per task; OpenBLAS sgemm with
 * ctx->gemm_blas or without AVX2), each row masked to its own causal
 * window, softmax as attention.c does it (max, exp, sum in double), then
 * O = P V (the same GEMM) scaled by 1 / sum. f32 throughout: the same products as
 * the per-query kernel in another order. Head h reads kv head
 * h / (n_heads / n_kv) (GQA); window > 0 keeps the last `window`
 * positions, the query's own included.
 * The training forward (lmc_cpu_attention_prefill_train) runs the same
 * tasks over B sequences of T tokens from position 0 in one pool run and
 * also writes each row's lse = max + log(sum): its out is, sequence by
 * sequence, this op's out for M = T, pos0 = 0, bit for bit. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_f32.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* queries per task: a multiple of the GEMM's 6-row panels (no padded rows);
 * smaller blocks compute fewer masked scores above the diagonal (the
 * scores a row does not see add exact zeros, so the block size does not
 * change any output's value) */
#ifndef ATP_Q
#define ATP_Q 48
#endif

struct atp_job {
    struct lmc_cpu_ctx *c;
    float *out, *lse; /* lse: (B * M, n_heads) or NULL */
    const float *q, *k, *v;
    int64_t M, pos0, n_heads, n_kv, hd, window;
    float scale;
    int64_t nqb; /* query blocks per sequence */
    int64_t ws;  /* floats of a thread's scratch before S: our GEMM's workspace */
};

/* C (M x N, ldc) = alpha op(A) op(B): our GEMM, or OpenBLAS with ctx->gemm_blas */
static void atp_gemm(const struct lmc_cpu_ctx *c, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    if (c->gemm_blas)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A,
                    (int)lda, B, (int)ldb, 0.0f, C, (int)ldc);
    else
        lmc_cpu_gemm_f32(false, tb, M, N, K, alpha, A, lda, B, LMC_DTYPE_F32, ldb, 0.0f, C, ldc, ws);
}

/* scratch floats per thread: the GEMM's workspace (64-byte multiple), then S (ATP_Q x nk) */
static int64_t atp_ws(int64_t nk, int64_t hd) {
    return ((int64_t)lmc_cpu_gemm_f32_ws(ATP_Q, LMC_MAX(nk, hd), LMC_MAX(nk, hd)) + 15) / 16 * 16;
}

/* max of s[0..n) (-inf for n = 0; NaNs skipped, as `s[i] > mx ? s[i] : mx`) */
static float row_max(const float *s, int64_t n) {
    float mx = -INFINITY;
    int64_t i = 0;
#ifdef __AVX2__
    if (n >= 8) {
        __m256 m = _mm256_set1_ps(-INFINITY);
        for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(s + i), m); /* NaN lane: keeps m */
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        mx = _mm_cvtss_f32(h);
    }
#endif
    for (; i < n; i++) mx = s[i] > mx ? s[i] : mx;
    return mx;
}

static void atp_task(void *arg, int64_t t, int thread) {
    const struct atp_job *j = arg;
    int64_t h = t % j->n_heads, qb = t / j->n_heads, seq = qb / j->nqb, hd = j->hd;
    int64_t i0 = qb % j->nqb * ATP_Q, R = LMC_MIN(ATP_Q, j->M - i0);
    int64_t kvh = h / (j->n_heads / j->n_kv), qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    const float *qs = j->q + seq * j->M * qrow, *ks = j->k + seq * j->M * kvrow, *vs = j->v + seq * j->M * kvrow;
    float *lse = j->lse ? j->lse + (seq * j->M + i0) * j->n_heads + h : NULL;
    int64_t p0 = j->pos0 + i0; /* the block's first query position */
    int64_t klo = j->window > 0 ? LMC_MAX(0, p0 - j->window + 1) : 0, nk = p0 + R - klo;
    float *ws = j->c->scratch[thread], *S = ws + j->ws, inv[ATP_Q];
    atp_gemm(j->c, true, R, nk, hd, j->scale, qs + i0 * qrow + h * hd, qrow, ks + klo * kvrow + kvh * hd, kvrow, S,
             nk, ws);
    for (int64_t r = 0; r < R; r++) {
        int64_t p = p0 + r, lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0;
        int64_t a = lo - klo, b = p + 1 - klo; /* the row's keys: [a, b) */
        float *row = S + r * nk, mx = row_max(row + a, b - a);
        double sum = lmc_cpu_exp_sum(row + a, b - a, mx);
        memset(row, 0, (size_t)a * sizeof(float));
        memset(row + b, 0, (size_t)(nk - b) * sizeof(float));
        inv[r] = (float)(1.0 / sum);
        if (lse) lse[r * j->n_heads] = (float)((double)mx + log(sum));
    }
    float *o = j->out + (seq * j->M + i0) * qrow + h * hd;
    atp_gemm(j->c, false, R, hd, nk, 1.0f, S, nk, vs + klo * kvrow + kvh * hd, kvrow, o, qrow, ws);
    for (int64_t r = 0; r < R; r++)
        for (int64_t d = 0; d < hd; d++) o[r * qrow + d] *= inv[r];
}

void lmc_cpu_attention_prefill(struct lmc_cpu_ctx *c, float *out, const float *q, const float *k, const float *v,
                               int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                               int64_t window) {
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0 && M > 0 && hd > 0 && n_heads > 0);
    LMC_ASSERT(pos0 + M <= INT32_MAX && n_heads * hd <= INT32_MAX);
    struct atp_job j = {c, out, NULL, q, k, v, M, pos0, n_heads, n_kv, hd, window, scale, (M + ATP_Q - 1) / ATP_Q, 0};
    int64_t klo0 = window > 0 ? LMC_MAX(0, pos0 - window + 1) : 0; /* the widest block's key count */
    int64_t nk = window > 0 ? LMC_MIN(pos0 + M - klo0, window + ATP_Q - 1) : pos0 + M;
    j.ws = atp_ws(nk, hd);
    lmc_cpu_scratch_reserve(c, (size_t)(j.ws + ATP_Q * nk));
    lmc_pool_run(c->pool, (M + ATP_Q - 1) / ATP_Q * n_heads, atp_task, &j);
}

void lmc_cpu_attention_prefill_train(struct lmc_cpu_ctx *c, float *out, float *lse, const float *q, const float *k,
                                     const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv, int64_t hd,
                                     float scale, int64_t window) {
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && B > 0 && T > 0 && hd > 0 && n_heads > 0 && lse);
    LMC_ASSERT(T <= INT32_MAX && n_heads * hd <= INT32_MAX);
    struct atp_job j = {c, out, lse, q, k, v, T, 0, n_heads, n_kv, hd, window, scale, (T + ATP_Q - 1) / ATP_Q, 0};
    int64_t nk = window > 0 ? LMC_MIN(T, window + ATP_Q - 1) : T; /* the widest block's key count */
    j.ws = atp_ws(nk, hd);
    lmc_cpu_scratch_reserve(c, (size_t)(j.ws + ATP_Q * nk));
    lmc_pool_run(c->pool, B * j.nqb * n_heads, atp_task, &j);
}
