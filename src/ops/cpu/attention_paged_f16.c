/* attention_paged_f16.c — the f16 and bf16 formats of the paged KV pool
 * (kvquant_paged.h; f16 is lmc serve's default on the CPU) and of the
 * single-sequence 2-byte cache (attention_kv16.c: the same kernel over one
 * contiguous block, positions pos0..): each token's K and V rows are
 * stored as row f16 / bf16 values (2 * row bytes, half the f32 pool's, as
 * llama.cpp's default cache), by attention_paged_kvq.c's step like every
 * format (lmc_kvq_paged_store_f16 / _bf16 round to nearest even; F16C
 * where available). Here the attention: one task per (token, head)
 * computes q·k for four cached positions at a time (F16C converts each
 * key slice in registers, bf16 is a 16-bit shift; eight f32 lanes per position, reduced once per
 * four positions), a max-subtracted exp with the sum in double (as
 * attention_paged.c), and the weighted sum of the V slices with the
 * output kept in registers (up to 64 values per pass). Each position's
 * slot offset is computed once per task (no division per row) and the
 * keys 16 positions ahead and the values being scored are prefetched
 * (blocks are scattered, so the hardware prefetchers lose the stream at
 * every block; the kernel is bound by these reads). CPUs without
 * AVX2/FMA/F16C, and head sizes not a multiple of 8, take the portable
 * twin (same math, scalar). Results differ from the f32 pool by the f16
 * (bf16) rounding of K and V: relative 2^-11 (2^-8) per value. */
#include "core/dtype.h"
#include "ops/cpu/kvquant_paged.h"
#include "ops/cpu/ops_cpu.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9))
#define PH_X86 1
#include <immintrin.h>
#define PH_TARGET __attribute__((target("avx2,fma,f16c")))
#define PH_INLINE PH_TARGET __attribute__((always_inline)) static inline
#define PH_PF 16 /* key prefetch distance, positions */
#endif

struct hpattn_job {
    struct lmc_cpu_ctx *c;
    float *out;
    const float *q;
    const uint16_t *kc, *vc;
    const int32_t *seq, *pos, *bt; /* seq NULL: one sequence; pos NULL: token m at pos0 + m */
    int64_t max_blocks, bs, n_heads, n_kv, hd, window, pos0;
    float scale;
    bool avx2, bf; /* bf: bf16 values, else f16 */
};

static inline float hp_cvt(const struct hpattn_job *j, uint16_t h) {
    return j->bf ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
}

/* the head slice of position ps's row in pool p */
static inline const uint16_t *hp_row(const struct hpattn_job *j, const uint16_t *p, const int32_t *bt,
                                     int64_t ps, int64_t kvh) {
    return p + ((size_t)bt[ps / j->bs] * (size_t)j->bs + (size_t)(ps % j->bs)) * (size_t)(j->n_kv * j->hd) +
           (size_t)(kvh * j->hd);
}

/* The portable twin: scores s[0..n), output o (hd). */
static void hp_head_ref(const struct hpattn_job *j, const float *q, const int32_t *bt, int64_t lo, int64_t n,
                        int64_t kvh, float *s, float *o) {
    const int64_t hd = j->hd;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *k = hp_row(j, j->kc, bt, lo + i, kvh);
        float d = 0;
        for (int64_t e = 0; e < hd; e++) d += q[e] * hp_cvt(j, k[e]);
        s[i] = j->scale * d;
        if (s[i] > mx) mx = s[i];
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *v = hp_row(j, j->vc, bt, lo + i, kvh);
        for (int64_t e = 0; e < hd; e++) o[e] += s[i] * hp_cvt(j, v[e]);
    }
    float inv = (float)(1.0 / sum);
    for (int64_t e = 0; e < hd; e++) o[e] *= inv;
}

#ifdef PH_X86
/* 8 values from p: f16 through F16C, bf16 widened and shifted into the high half */
PH_INLINE __m256 ph_ld(const uint16_t *p, const bool bf) {
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    return bf ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)) : _mm256_cvtph_ps(h);
}

PH_INLINE __m128 ph_reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* o[d0, d0 + 8 * ND) = sum_i s[i] * v_i[d0, ...) (registers across the positions) */
PH_INLINE void ph_wsum(const struct hpattn_job *j, const size_t *off, int64_t n, const float *s, float *o,
                       int64_t d0, const int ND, const bool bf) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int u = 0; u < ND; u++) acc[u] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *v = j->vc + off[i] + d0;
        const __m256 sv = _mm256_broadcast_ss(s + i);
#pragma GCC unroll 8
        for (int u = 0; u < ND; u++) acc[u] = _mm256_fmadd_ps(sv, ph_ld(v + 8 * u, bf), acc[u]);
    }
#pragma GCC unroll 8
    for (int u = 0; u < ND; u++) _mm256_storeu_ps(o + d0 + 8 * u, acc[u]);
}

/* the weighted sums of 64, 32 and 8 columns, one instance per element type */
#define PH_WSUM(name, ND, bf)                                                                                   \
    PH_TARGET static void name(const struct hpattn_job *j, const size_t *off, int64_t n, const float *s, float *o, \
                               int64_t d0) {                                                                    \
        ph_wsum(j, off, n, s, o, d0, ND, bf);                                                                   \
    }
PH_WSUM(ph_wsum8_h, 8, false)
PH_WSUM(ph_wsum4_h, 4, false)
PH_WSUM(ph_wsum1_h, 1, false)
PH_WSUM(ph_wsum8_b, 8, true)
PH_WSUM(ph_wsum4_b, 4, true)
PH_WSUM(ph_wsum1_b, 1, true)

/* hd % 8 == 0; bf a constant at each call (hp_head_f16 / hp_head_bf16) */
PH_INLINE void hp_head_avx2(const struct hpattn_job *j, const float *q, const int32_t *bt, int64_t lo, int64_t n,
                            int64_t kvh, float *s, float *o, const bool bf) {
    const int64_t hd = j->hd, row = j->n_kv * hd;
    /* each position's element offset in the pools (K and V share slots), after the scores */
    size_t *off = (size_t *)(void *)(s + ((n + 7) & ~(int64_t)7));
    for (int64_t i = 0; i < n;) { /* one block's run of positions at a time */
        const int64_t ps = lo + i, run = LMC_MIN(j->bs - ps % j->bs, n - i);
        size_t base = ((size_t)bt[ps / j->bs] * (size_t)j->bs + (size_t)(ps % j->bs)) * (size_t)row + (size_t)(kvh * hd);
        for (int64_t r = 0; r < run; r++, i++, base += (size_t)row) off[i] = base;
    }
    const __m256 scv = _mm256_set1_ps(j->scale);
    __m128 mxv = _mm_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint16_t *k0 = j->kc + off[i], *k1 = j->kc + off[i + 1], *k2 = j->kc + off[i + 2], *k3 = j->kc + off[i + 3];
        /* the keys PH_PF positions ahead into L1, these positions' values into L2 (the rows of a block
         * are consecutive, the blocks scattered: the hardware prefetchers lose the stream at each block) */
        for (int u = 0; u < 4; u++)
            for (int64_t e = 0; e < hd; e += 32) {
                if (i + PH_PF + u < n) _mm_prefetch((const char *)(j->kc + off[i + PH_PF + u] + e), _MM_HINT_T0);
                _mm_prefetch((const char *)(j->vc + off[i + u] + e), _MM_HINT_T1);
            }
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t e = 0; e < hd; e += 8) {
            const __m256 qv = _mm256_loadu_ps(q + e);
            a0 = _mm256_fmadd_ps(qv, ph_ld(k0 + e, bf), a0);
            a1 = _mm256_fmadd_ps(qv, ph_ld(k1 + e, bf), a1);
            a2 = _mm256_fmadd_ps(qv, ph_ld(k2 + e, bf), a2);
            a3 = _mm256_fmadd_ps(qv, ph_ld(k3 + e, bf), a3);
        }
        __m128 r = _mm_mul_ps(ph_reduce4(a0, a1, a2, a3), _mm256_castps256_ps128(scv));
        _mm_storeu_ps(s + i, r);
        mxv = _mm_max_ps(mxv, r);
    }
    float mx = -INFINITY;
    {
        float t[4];
        _mm_storeu_ps(t, mxv);
        for (int u = 0; u < 4; u++) mx = t[u] > mx ? t[u] : mx;
    }
    for (; i < n; i++) {
        const uint16_t *k = j->kc + off[i];
        __m256 a = _mm256_setzero_ps();
        for (int64_t e = 0; e < hd; e += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + e), ph_ld(k + e, bf), a);
        s[i] = j->scale * _mm_cvtss_f32(ph_reduce4(a, _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()));
        mx = s[i] > mx ? s[i] : mx;
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    int64_t d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) (bf ? ph_wsum8_b : ph_wsum8_h)(j, off, n, s, o, d0);
    for (; d0 + 32 <= hd; d0 += 32) (bf ? ph_wsum4_b : ph_wsum4_h)(j, off, n, s, o, d0);
    for (; d0 < hd; d0 += 8) (bf ? ph_wsum1_b : ph_wsum1_h)(j, off, n, s, o, d0);
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (int64_t e = 0; e < hd; e += 8) _mm256_storeu_ps(o + e, _mm256_mul_ps(_mm256_loadu_ps(o + e), inv));
}

PH_TARGET static void hp_head_f16(const struct hpattn_job *j, const float *q, const int32_t *bt, int64_t lo,
                                  int64_t n, int64_t kvh, float *s, float *o) {
    hp_head_avx2(j, q, bt, lo, n, kvh, s, o, false);
}
PH_TARGET static void hp_head_bf16(const struct hpattn_job *j, const float *q, const int32_t *bt, int64_t lo,
                                   int64_t n, int64_t kvh, float *s, float *o) {
    hp_head_avx2(j, q, bt, lo, n, kvh, s, o, true);
}

PH_TARGET static void hp_store_avx2(uint16_t *dst, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = lmc_f32_to_f16(x[i]);
}
#endif

static void hpattn_task(void *arg, int64_t t, int thread) {
    const struct hpattn_job *j = arg;
    int64_t m = t / j->n_heads, h = t % j->n_heads, hd = j->hd;
    int64_t p = j->pos ? j->pos[m] : j->pos0 + m;
    int64_t lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0, n = p - lo + 1;
    int64_t kvh = h / (j->n_heads / j->n_kv);
    const int32_t *bt = j->bt + (j->seq ? (int64_t)j->seq[m] * j->max_blocks : 0);
    const float *q = j->q + (m * j->n_heads + h) * hd;
    float *s = j->c->scratch[thread], *o = j->out + (m * j->n_heads + h) * hd;
#ifdef PH_X86
    if (j->avx2 && hd % 8 == 0) {
        (j->bf ? hp_head_bf16 : hp_head_f16)(j, q, bt, lo, n, kvh, s, o);
        return;
    }
#endif
    hp_head_ref(j, q, bt, lo, n, kvh, s, o);
}

void lmc_kvq_paged_store_f16(uint16_t *dst, const float *x, int64_t n, bool avx2) {
#ifdef PH_X86
    if (avx2) {
        hp_store_avx2(dst, x, n);
        return;
    }
#endif
    (void)avx2;
    for (int64_t e = 0; e < n; e++) dst[e] = lmc_f32_to_f16(x[e]);
}

void lmc_kvq_paged_store_bf16(uint16_t *dst, const float *x, int64_t n) {
    for (int64_t e = 0; e < n; e++) dst[e] = lmc_f32_to_bf16(x[e]);
}

void lmc_kvq_paged_attend_h16(const struct lmc_kvq_paged_job *q) {
    struct lmc_cpu_ctx *c = q->c;
    LMC_ASSERT(lmc_kvq_is_half(q->f));
    struct hpattn_job j = {c, q->out, q->q, (const uint16_t *)(const void *)q->kc,
                           (const uint16_t *)(const void *)q->vc, q->seq, q->pos, q->bt, q->max_blocks, q->bs,
                           q->n_heads, q->n_kv, q->hd, q->window, q->pos0, q->scale, c->drf_avx2,
                           q->f == LMC_KVQ_BF16};
    /* scores, then (AVX2) each position's offset: size_t, 8-aligned after the scores */
    lmc_cpu_scratch_reserve(c, (size_t)(3 * (q->max_pos + 1) + 16));
    lmc_pool_run(c->pool, q->T * q->n_heads, hpattn_task, &j);
}
