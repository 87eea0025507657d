/* gemm_f32.h — the CPU's own single-threaded fp32 GEMM (gemm_f32.c): a
 * drop-in for row-major cblas_sgemm whose B may also be F16 or BF16 (weight
 * rows widened while they are packed, no separate conversion pass). */
#ifndef LMC_GEMM_F32_H
#define LMC_GEMM_F32_H

#include "core/dtype.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when lmc_cpu_gemm_f32 runs our AVX2+FMA kernel (a compile-time
 * fact); false where it forwards to OpenBLAS. */
bool lmc_cpu_gemm_f32_native(void);

/* Floats of workspace lmc_cpu_gemm_f32 needs for these sizes (at most
 * about 0.45 M floats whatever the sizes). */
size_t lmc_cpu_gemm_f32_ws(int64_t M, int64_t N, int64_t K);

/* C(M,N) = alpha * op(A) @ op(B) + beta * C, row-major like
 * cblas_sgemm(CblasRowMajor, ...): op(A)(m,k) is A[m*lda + k], or
 * A[k*lda + m] when ta; op(B)(k,n) is B[k*ldb + n], or B[n*ldb + k] when tb
 * (x @ W^T: tb with W's rows). B's elements are F32, F16 or BF16 (bdt).
 * beta == 0: C is only written (NaN in C does not propagate). ws: at least
 * lmc_cpu_gemm_f32_ws(M, N, K) floats, 64-byte aligned. Each element of C
 * is summed over k in the same order whatever M, N and the position of
 * the call's block in a larger product (K in fixed blocks from k = 0), so
 * callers may split M or N among threads without changing bits. */
void lmc_cpu_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const void *B, enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc, float *ws);

/* A packed once for several calls (threads splitting N share it, e.g.
 * the prefill's x against blocks of W rows): the floats a packed op(A)
 * (M x K) takes; the packing of its rows [m0, m1) (m0 a multiple of
 * LMC_GEMM_F32_MR; threads may pack disjoint row ranges at once: nothing
 * is written outside a range's rows; ap 64-byte aligned); and
 * lmc_cpu_gemm_f32 with such an A (the same sums, so the same bits). */
#define LMC_GEMM_F32_MR 6
size_t lmc_cpu_gemm_f32_apack_words(int64_t M, int64_t K);
void lmc_cpu_gemm_f32_apack(float *ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t m0,
                            int64_t m1);
void lmc_cpu_gemm_f32_pa(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *ap, const void *B,
                         enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc, float *ws);

#endif
