/* qmatmul_smallm.c — the activation side of the small-M quantized
 * products (qmatmul_q4.c's kernels for Q8_0, Q4_0 and lmc's 4-bit groups,
 * which take every M): the vectorized int8 quantizer and the row layout
 * (lmc_q8rows: 128-byte slots per pair of blocks, or per block for Q8_0,
 * filled in parallel for prefill by lmc_qmatmul). */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define T_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

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

lmc_q8quant_fn lmc_q8act_quantize_vnni(void) { return qsm_quantize; }
lmc_q8quant_fn lmc_q8act_quantize_k_vnni(void) { return qsm_quantize_k; }
#else
lmc_q8quant_fn lmc_q8act_quantize_vnni(void) { return lmc_q8act_quantize; }
lmc_q8quant_fn lmc_q8act_quantize_k_vnni(void) { return lmc_q8act_quantize_k; }
#endif

void lmc_q8rows_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, int64_t i0, int64_t i1,
                     void *buf) {
    (void)m;
    lmc_q8rows_fill_pairs(w, xq, i0, i1, buf);
}

void lmc_q8rows_view(const struct lmc_qweight *w, int64_t m, void *buf, struct lmc_q8rows *out) {
    *out = (struct lmc_q8rows){m, buf, lmc_q8rows_pairs(w) * 128};
}

void lmc_q8rows_prepare(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, void *buf,
                        struct lmc_q8rows *out) {
    lmc_q8rows_fill(w, xq, m, 0, m, buf);
    lmc_q8rows_view(w, m, buf, out);
}

/* 128 bytes per slot */
size_t lmc_q8rows_bytes(const struct lmc_qweight *w, int64_t m) { return (size_t)(m * lmc_q8rows_pairs(w)) * 128; }
