/* qmatmul_smallm.c — the activation side of the small-M quantized
 * products (qmatmul_q4.c's kernels for Q8_0, Q4_0 and lmc's 4-bit groups,
 * which take every M): the vectorized int8 quantizers (AVX-512, AVX2) and the row layout
 * (lmc_q8rows: 128-byte slots per pair of blocks, or per block for Q8_0,
 * filled in parallel for prefill by lmc_qmatmul). */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define T_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

/* lmc_q8act_quantize with AVX-512: the same integers (x * (1 / d) rounded
 * to nearest even, as lrintf in the default rounding mode) and scales. */
T_VNNI static void qsm_quantize(const float *x, int64_t n, struct lmc_q8act *out) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / 32; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(v0, absmask), _mm512_and_ps(v1, absmask)));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        _mm_storeu_si128((__m128i *)out[b].q, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out[b].q + 16), _mm512_cvtsepi32_epi8(q1));
        out[b].d = d;
        out[b].s0 = (int16_t)_mm512_reduce_add_epi32(q0);
        out[b].s1 = (int16_t)_mm512_reduce_add_epi32(q1);
    }
}

/* lmc_q8act_quantize_k with AVX-512: one amax per 256, the same integers. */
T_VNNI static void qsm_quantize_k(const float *x, int64_t n, struct lmc_q8act *out) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t sb = 0; sb < n / 256; sb++) {
        const float *v = x + 256 * sb;
        __m512 m = _mm512_setzero_ps();
        for (int t = 0; t < 16; t++) m = _mm512_max_ps(m, _mm512_and_ps(_mm512_loadu_ps(v + 16 * t), absmask));
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        const __m512 idv = _mm512_set1_ps(id);
        for (int b = 0; b < 8; b++) {
            struct lmc_q8act *o = &out[8 * sb + b];
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + 32 * b), idv));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v + 32 * b + 16), idv));
            _mm_storeu_si128((__m128i *)o->q, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(o->q + 16), _mm512_cvtsepi32_epi8(q1));
            o->d = d;
            o->s0 = (int16_t)_mm512_reduce_add_epi32(q0);
            o->s1 = (int16_t)_mm512_reduce_add_epi32(q1);
        }
    }
}

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static inline int32_t qsm_hsum8(__m256i v) {
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(a);
}

T_AVX2 static inline float qsm_hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* One block of 32 floats at v times id, rounded to nearest even (as lrintf
 * in the default rounding mode), into o (codes and sums; d set by the
 * caller). The codes are within +-127, so the saturating packs keep them;
 * packs work per 128-bit lane, hence the final dword permutation. */
T_AVX2 static inline void qsm_block_avx2(const float *v, __m256 id, struct lmc_q8act *o) {
    __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v), id));
    __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 8), id));
    __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 16), id));
    __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 24), id));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)o->q, p);
    o->s0 = (int16_t)qsm_hsum8(_mm256_add_epi32(q0, q1));
    o->s1 = (int16_t)qsm_hsum8(_mm256_add_epi32(q2, q3));
}

/* lmc_q8act_quantize with AVX2: the same scales and integers. */
T_AVX2 static void qsm_quantize_avx2(const float *x, int64_t n, struct lmc_q8act *out) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + 32 * b;
        __m256 m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(v), absmask), _mm256_and_ps(_mm256_loadu_ps(v + 8), absmask));
        m = _mm256_max_ps(m, _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(v + 16), absmask),
                                           _mm256_and_ps(_mm256_loadu_ps(v + 24), absmask)));
        float amax = qsm_hmax8(m);
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        qsm_block_avx2(v, _mm256_set1_ps(id), &out[b]);
        out[b].d = d;
    }
}

/* lmc_q8act_quantize_k with AVX2: one amax per 256, the same integers. */
T_AVX2 static void qsm_quantize_k_avx2(const float *x, int64_t n, struct lmc_q8act *out) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t sb = 0; sb < n / 256; sb++) {
        const float *v = x + 256 * sb;
        __m256 m = _mm256_setzero_ps();
        for (int t = 0; t < 32; t++) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(v + 8 * t), absmask));
        float amax = qsm_hmax8(m);
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        for (int b = 0; b < 8; b++) {
            qsm_block_avx2(v + 32 * b, _mm256_set1_ps(id), &out[8 * sb + b]);
            out[8 * sb + b].d = d;
        }
    }
}

lmc_q8quant_fn lmc_q8act_quantize_vnni(void) { return qsm_quantize; }
lmc_q8quant_fn lmc_q8act_quantize_k_vnni(void) { return qsm_quantize_k; }
lmc_q8quant_fn lmc_q8act_quantize_avx2(void) { return qsm_quantize_avx2; }
lmc_q8quant_fn lmc_q8act_quantize_k_avx2(void) { return qsm_quantize_k_avx2; }
#else
lmc_q8quant_fn lmc_q8act_quantize_vnni(void) { return lmc_q8act_quantize; }
lmc_q8quant_fn lmc_q8act_quantize_k_vnni(void) { return lmc_q8act_quantize_k; }
lmc_q8quant_fn lmc_q8act_quantize_avx2(void) { return lmc_q8act_quantize; }
lmc_q8quant_fn lmc_q8act_quantize_k_avx2(void) { return lmc_q8act_quantize_k; }
#endif

void lmc_q8rows_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, int64_t i0, int64_t i1,
                     void *buf) {
    (void)m;
    lmc_q8rows_fill_pairs(w, xq, i0, i1, buf);
}

void lmc_q8rows_view(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, void *buf,
                     struct lmc_q8rows *out) {
    *out = (struct lmc_q8rows){m, buf, lmc_q8rows_pairs(w) * 128, xq};
}

void lmc_q8rows_prepare(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, void *buf,
                        struct lmc_q8rows *out) {
    lmc_q8rows_fill(w, xq, m, 0, m, buf);
    lmc_q8rows_view(w, xq, m, buf, out);
}

/* 128 bytes per slot */
size_t lmc_q8rows_bytes(const struct lmc_qweight *w, int64_t m) { return (size_t)(m * lmc_q8rows_pairs(w)) * 128; }
