/* attention_dsoft.c — the softmax backward of one attention row, shared by
 * the training backwards (attention.c's f32, attention_bf16.c's bf16):
 * D = sum of p dp over the keys the query sees, in double (the float
 * products are exact in double; 4 lanes of 2 accumulators where AVX2 is
 * built in, then in order), then dS = p (dp - D) scale over the whole
 * row, the two products rounded on their own (so every element has the
 * same bits whatever the vector width: 16 lanes where AVX-512 is built
 * in, 8 with AVX2, scalar otherwise). */
#include "ops/cpu/ops_cpu.h"

double lmc_cpu_row_dot(const float *p, const float *dp, int64_t n) {
    int64_t x = 0;
    double D = 0;
#ifdef __AVX2__
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    for (; x + 8 <= n; x += 8) {
        __m256 pv = _mm256_loadu_ps(p + x), dv = _mm256_loadu_ps(dp + x);
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(pv)),
                                             _mm256_cvtps_pd(_mm256_castps256_ps128(dv))));
        a1 = _mm256_add_pd(a1, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(pv, 1)),
                                             _mm256_cvtps_pd(_mm256_extractf128_ps(dv, 1))));
    }
    D = lmc_hsum256d(_mm256_add_pd(a0, a1));
#endif
    for (; x < n; x++) D += (double)p[x] * dp[x];
    return D;
}

float lmc_cpu_dsoft(float *dp, const float *p, int64_t n, int64_t a, int64_t e, float scale) {
    LMC_ASSERT(0 <= a && a <= e && e <= n);
    const float D = (float)lmc_cpu_row_dot(p + a, dp + a, e - a);
    int64_t x = 0;
#if defined(__AVX512F__)
    const __m512 dw = _mm512_set1_ps(D), sw = _mm512_set1_ps(scale);
    for (; x + 16 <= n; x += 16)
        _mm512_storeu_ps(dp + x, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(p + x),
                                                             _mm512_sub_ps(_mm512_loadu_ps(dp + x), dw)), sw));
#endif
#ifdef __AVX2__
    const __m256 dv = _mm256_set1_ps(D), sv = _mm256_set1_ps(scale);
    for (; x + 8 <= n; x += 8)
        _mm256_storeu_ps(dp + x, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(p + x),
                                                             _mm256_sub_ps(_mm256_loadu_ps(dp + x), dv)), sv));
#endif
    for (; x < n; x++) dp[x] = p[x] * (dp[x] - D) * scale;
    return D;
}
