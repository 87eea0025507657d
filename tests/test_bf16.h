/* test_bf16.h — the bf16 GEMM tests' reference (test_gemm_bf16.c,
 * test_gemm_bf16_amx_emu.c, test_matmul_pf.c): a float rounded to bf16 as
 * the kernels round it (nearest even), the error of a C against the
 * float64 sum of the bf16-rounded operands' products in units of the f32
 * summation bound, and 64-byte aligned workspaces sized in 32-bit words. */
#ifndef LMC_TEST_BF16_H
#define LMC_TEST_BF16_H

#include "core/dtype.h"
#include "test.h"

#include <stdlib.h>

/* f rounded to bf16 (nearest even), exactly, as a double */
static inline double test_bf16r(float f) { return (double)lmc_bf16_to_f32(lmc_f32_to_bf16(f)); }

/* max over C (M x N, row stride ldc) of |c - ref| / bound: ref = (C0 ?
 * C0 : 0) + the float64 sum over k of bf16(A[m, k]) bf16(B[k, n]) (A's
 * element at a_sm m + a_sk k, B's at b_sk k + b_sn n), bound = (K + 2)
 * 2^-24 (sum |products| + |c0|) + 1e-30; NaN anywhere gives NaN (fails
 * any e <= x check). */
static inline double test_bf16_gemm_err(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                                        const float *B, int64_t b_sk, int64_t b_sn, const float *C, int64_t ldc,
                                        const float *C0) {
    double worst = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = C0 ? C0[m * ldc + n] : 0, mag = fabs(s);
            for (int64_t k = 0; k < K; k++) {
                double p = test_bf16r(A[m * a_sm + k * a_sk]) * test_bf16r(B[k * b_sk + n * b_sn]);
                s += p;
                mag += fabs(p);
            }
            double e = fabs((double)C[m * ldc + n] - s) / ((double)(K + 2) * ldexp(1.0, -24) * mag + 1e-30);
            if (e > worst || e != e) worst = e;
        }
    return worst;
}

/* words 32-bit words, 64-byte aligned (the size rounded up to 64 bytes:
 * no slack past it for the sanitizers to miss); free() it */
static inline void *test_alloc64_words(size_t words) { return aligned_alloc(64, (words * 4 + 63) / 64 * 64); }

#endif
