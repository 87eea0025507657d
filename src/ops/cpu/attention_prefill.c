/* attention_prefill.c — inference attention (backend.h's `attention`) for
 * many queries at once (prefill chunks, from LMC_CPU_ATTN_BLOCK_MIN_M queries; fewer go
 * to attention.c's per-query kernel). One task per (block of ATP_Q
 * queries, group of query heads sharing a kv head, stacked: atp_task; the
 * widest blocks first): S = scale Q K^T over the keys the block sees (our fp32
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

/* heads of one kv head stacked in a task: at most ATP_ROWS query rows, and
 * S of at most ATP_S_MAX floats per thread (longer windows stack fewer) */
#ifndef ATP_ROWS
#define ATP_ROWS 144
#endif
#define ATP_S_MAX ((int64_t)4 << 20)

struct atp_job {
    struct lmc_cpu_ctx *c;
    float *out, *lse; /* lse: (B * M, n_heads) or NULL */
    const float *q, *k, *v;
    int64_t M, pos0, n_heads, n_kv, hd, window;
    float scale;
    int64_t nqb; /* query blocks per sequence */
    int64_t B;   /* sequences */
    int64_t gs;  /* heads per task (all of one kv head) */
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

/* scratch floats per thread: the GEMM's workspace (64-byte multiple), then
 * the stacked Q and O (rows x hd each), then S (rows x nk) */
static int64_t atp_ws(int64_t nk, int64_t hd, int64_t rows) {
    return ((int64_t)lmc_cpu_gemm_f32_ws(rows, LMC_MAX(nk, hd), LMC_MAX(nk, hd)) + 15) / 16 * 16 +
           2 * ((rows * hd + 15) / 16 * 16);
}

/* heads stacked per task: the largest divisor of the group (n_heads / n_kv)
 * that keeps the rows within ATP_ROWS and S within ATP_S_MAX */
static int64_t atp_gs(int64_t n_heads, int64_t n_kv, int64_t nk) {
    int64_t g = n_heads / n_kv, gs = 1;
    for (int64_t d = 1; d <= g; d++)
        if (g % d == 0 && d * ATP_Q <= ATP_ROWS && d * ATP_Q * nk <= ATP_S_MAX) gs = d;
    return gs;
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

/* One task: the gs heads h0.. of one kv head over one block of queries,
 * stacked (head-major) into one S = scale Q K^T and one O = P V, so K and V
 * are packed once for them. Tasks run the largest blocks (the last
 * queries, which see the most keys) first, so the run does not end on one
 * thread with the widest block. Every element is the same sum as with one
 * head per task (our GEMM's sums do not depend on M), so the bits are. */
static void atp_task(void *arg, int64_t t, int thread) {
    const struct atp_job *j = arg;
    int64_t ng = j->n_heads / j->gs, hg = t % ng, o_ = t / ng, hd = j->hd;
    int64_t seq = o_ % j->B, qb = j->nqb - 1 - o_ / j->B; /* widest blocks first */
    int64_t i0 = qb * ATP_Q, R = LMC_MIN(ATP_Q, j->M - i0), gs = j->gs, h0 = hg * gs, rows = gs * R;
    int64_t kvh = h0 / (j->n_heads / j->n_kv), qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    const float *qs = j->q + seq * j->M * qrow, *ks = j->k + seq * j->M * kvrow, *vs = j->v + seq * j->M * kvrow;
    float *lse = j->lse ? j->lse + (seq * j->M + i0) * j->n_heads + h0 : NULL;
    int64_t p0 = j->pos0 + i0; /* the block's first query position */
    int64_t klo = j->window > 0 ? LMC_MAX(0, p0 - j->window + 1) : 0, nk = p0 + R - klo;
    int64_t st = (gs * ATP_Q * hd + 15) / 16 * 16;
    float *ws = j->c->scratch[thread], *Qs = ws + j->ws - 2 * st, *Os = Qs + st, *S = ws + j->ws;
    float inv[ATP_ROWS > ATP_Q ? ATP_ROWS : ATP_Q];
    const float *A = qs + i0 * qrow + h0 * hd;
    int64_t lda = qrow;
    if (gs > 1) { /* rows hh * R + r: query r of head h0 + hh */
        for (int64_t hh = 0; hh < gs; hh++)
            for (int64_t r = 0; r < R; r++)
                memcpy(Qs + (hh * R + r) * hd, qs + (i0 + r) * qrow + (h0 + hh) * hd, (size_t)hd * sizeof(float));
        A = Qs, lda = hd;
    }
    atp_gemm(j->c, true, rows, nk, hd, j->scale, A, lda, ks + klo * kvrow + kvh * hd, kvrow, S, nk, ws);
    for (int64_t rr = 0; rr < rows; rr++) {
        int64_t r = rr % R, p = p0 + r, lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0;
        int64_t a = lo - klo, b = p + 1 - klo; /* the row's keys: [a, b) */
        float *row = S + rr * nk, mx = row_max(row + a, b - a);
        double sum = lmc_cpu_exp_sum(row + a, b - a, mx);
        memset(row, 0, (size_t)a * sizeof(float));
        memset(row + b, 0, (size_t)(nk - b) * sizeof(float));
        inv[rr] = (float)(1.0 / sum);
        if (lse) lse[r * j->n_heads + rr / R] = (float)((double)mx + log(sum));
    }
    float *o = j->out + (seq * j->M + i0) * qrow + h0 * hd;
    if (gs == 1) {
        atp_gemm(j->c, false, R, hd, nk, 1.0f, S, nk, vs + klo * kvrow + kvh * hd, kvrow, o, qrow, ws);
        for (int64_t r = 0; r < R; r++)
            for (int64_t d = 0; d < hd; d++) o[r * qrow + d] *= inv[r];
        return;
    }
    atp_gemm(j->c, false, rows, hd, nk, 1.0f, S, nk, vs + klo * kvrow + kvh * hd, kvrow, Os, hd, ws);
    for (int64_t rr = 0; rr < rows; rr++) {
        float *d = o + rr % R * qrow + rr / R * hd;
        const float *sr = Os + rr * hd;
        for (int64_t e = 0; e < hd; e++) d[e] = sr[e] * inv[rr];
    }
}

void lmc_cpu_attention_prefill(struct lmc_cpu_ctx *c, float *out, const float *q, const float *k, const float *v,
                               int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                               int64_t window) {
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0 && M > 0 && hd > 0 && n_heads > 0);
    LMC_ASSERT(pos0 + M <= INT32_MAX && n_heads * hd <= INT32_MAX);
    struct atp_job j = {c, out, NULL, q, k, v, M, pos0, n_heads, n_kv, hd, window, scale, (M + ATP_Q - 1) / ATP_Q, 1, 1, 0};
    int64_t klo0 = window > 0 ? LMC_MAX(0, pos0 - window + 1) : 0; /* the widest block's key count */
    int64_t nk = window > 0 ? LMC_MIN(pos0 + M - klo0, window + ATP_Q - 1) : pos0 + M;
    j.gs = atp_gs(n_heads, n_kv, nk);
    j.ws = atp_ws(nk, hd, j.gs * ATP_Q);
    lmc_cpu_scratch_reserve(c, (size_t)(j.ws + j.gs * ATP_Q * nk));
    lmc_pool_run(c->pool, j.nqb * (n_heads / j.gs), atp_task, &j);
}

void lmc_cpu_attention_prefill_train(struct lmc_cpu_ctx *c, float *out, float *lse, const float *q, const float *k,
                                     const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv, int64_t hd,
                                     float scale, int64_t window) {
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && B > 0 && T > 0 && hd > 0 && n_heads > 0 && lse);
    LMC_ASSERT(T <= INT32_MAX && n_heads * hd <= INT32_MAX);
    struct atp_job j = {c, out, lse, q, k, v, T, 0, n_heads, n_kv, hd, window, scale, (T + ATP_Q - 1) / ATP_Q, B, 1, 0};
    int64_t nk = window > 0 ? LMC_MIN(T, window + ATP_Q - 1) : T; /* the widest block's key count */
    j.gs = atp_gs(n_heads, n_kv, nk);
    j.ws = atp_ws(nk, hd, j.gs * ATP_Q);
    lmc_cpu_scratch_reserve(c, (size_t)(j.ws + j.gs * ATP_Q * nk));
    lmc_pool_run(c->pool, B * j.nqb * (n_heads / j.gs), atp_task, &j);
}
