/* test_bf16.h — the bf16 GEMM tests' reference (test_gemm_bf16.c,
 * test_gemm_bf16_amx_emu.c, test_matmul_pf.c): a float rounded to bf16 as
 * the kernels round it (nearest even), the error of a C against the
 * float64 sum of the bf16-rounded operands' products in units of the f32
 * summation bound, one GEMM case's random operands (struct
 * test_gemm_case), and 64-byte aligned workspaces sized in 32-bit words. */
#ifndef LMC_TEST_BF16_H
#define LMC_TEST_BF16_H

#include "core/dtype.h"
#include "test.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* One case of the bf16 GEMM tests: A (M x K; stored (K, M) when ta), B
 * (K x N; stored (N, K) when tb) and C (M rows of ldc, the columns past N
 * padding) drawn from rng in that order, C0 a copy of C; a_sm, a_sk, b_sk,
 * b_sn: the strides of A's and B's elements as the GEMMs take them. */
struct test_gemm_case {
    int64_t M, N, K, ldc, a_sm, a_sk, b_sk, b_sn;
    float *A, *B, *C, *C0;
};
static inline struct test_gemm_case test_gemm_case_new(uint64_t *rng, int64_t M, int64_t N, int64_t K, int ta, int tb,
                                                       int64_t ldc) {
    struct test_gemm_case g = {M, N, K, ldc, ta ? 1 : K, ta ? M : 1, tb ? 1 : N, tb ? K : 1, NULL, NULL, NULL, NULL};
    g.A = test_rand_vec(rng, M * K, 1.0f);
    g.B = test_rand_vec(rng, K * N, 1.0f);
    g.C = test_rand_vec(rng, M * ldc, 1.0f);
    g.C0 = malloc((size_t)(M * ldc > 0 ? M * ldc : 1) * sizeof *g.C0);
    memcpy(g.C0, g.C, (size_t)(M * ldc) * sizeof *g.C0);
    return g;
}
/* a C (M rows of ldc) computed from g's A and B (accum: added to C0):
 * test_bf16_gemm_err */
static inline double test_gemm_case_err(const struct test_gemm_case *g, const float *C, bool accum) {
    return test_bf16_gemm_err(g->M, g->N, g->K, g->A, g->a_sm, g->a_sk, g->B, g->b_sk, g->b_sn, C, g->ldc,
                              accum ? g->C0 : NULL);
}
/* whether C's padding columns [N, ldc) are still C0's */
static inline bool test_gemm_case_pad_same(const struct test_gemm_case *g, const float *C) {
    bool same = true;
    for (int64_t m = 0; m < g->M; m++)
        for (int64_t n = g->N; n < g->ldc; n++) same &= C[m * g->ldc + n] == g->C0[m * g->ldc + n];
    return same;
}
static inline void test_gemm_case_free(struct test_gemm_case *g) { free(g->A), free(g->B), free(g->C), free(g->C0); }

/* words 32-bit words, 64-byte aligned (the size rounded up to 64 bytes:
 * no slack past it for the sanitizers to miss); free() it */
static inline void *test_alloc64_words(size_t words) { return aligned_alloc(64, (words * 4 + 63) / 64 * 64); }

#endif
