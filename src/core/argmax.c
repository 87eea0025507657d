/* argmax.c — the first maximum of a float row (see argmax.h). The
 * semantics are a left-to-right scan keeping the first strict maximum: ties
 * go to the first index, a NaN is never taken over a number, a NaN at
 * index 0 stays (lmc_argmax_f32_scan). The AVX2 kernel gets the same
 * index in two passes: the maximum over the non-NaN values (vmaxps keeps
 * its second operand when the first is a NaN, and the running maxima start
 * at x[0], a number), then the first index equal to it (-0 == +0 as in the
 * scan's ">"; a NaN equals nothing). Both passes read the row from L2 at
 * vocabulary sizes; the scan's compare-and-branch chain is the slow part. */
#include "core/argmax.h"
#include "core/core.h"

#include <math.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

int64_t lmc_argmax_f32_scan(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int64_t lmc_argmax_f32(const float *x, int64_t n) {
#ifdef __AVX2__
    if (n < 64 || isnan(x[0])) return lmc_argmax_f32_scan(x, n); /* NaN at 0: the scan keeps 0 */
    __m256 m0 = _mm256_set1_ps(x[0]), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float mx = _mm_cvtss_f32(h);
    for (; i < n; i++)
        if (x[i] > mx) mx = x[i];
    const __m256 mv = _mm256_set1_ps(mx);
    for (i = 0; i + 8 <= n; i += 8) {
        int bits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), mv, _CMP_EQ_OQ));
        if (bits) return i + __builtin_ctz((unsigned)bits);
    }
    for (; i < n; i++)
        if (x[i] == mx) return i;
    LMC_ASSERT(0 && "argmax: the maximum is an element");
    return 0;
#else
    return lmc_argmax_f32_scan(x, n);
#endif
}
