/* gemm_bf16.h — the CPU's bf16 GEMM for mixed-precision training
 * (gemm_bf16.c) and the bf16 training ops built on it (matmul_bf16.c). */
#ifndef LMC_GEMM_BF16_H
#define LMC_GEMM_BF16_H

#include "ops/cpu/ops_cpu.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when this CPU runs AVX512-BF16 (vdpbf16ps); checked at run time. */
bool lmc_cpu_has_bf16(void);

/* 4-byte words of workspace lmc_cpu_gemm_bf16 needs for these sizes. */
size_t lmc_cpu_gemm_bf16_ws(int64_t M, int64_t N, int64_t K);

/* C(M,N) = A(M,K) @ B(K,N), or C += when accum. A's element (m,k) is
 * A[m*a_sm + k*a_sk], B's (k,n) is B[k*b_sk + n*b_sn], C's (m,n) is
 * C[m*ldc + n]: any transposition of either operand. The operands are
 * rounded to bf16 (to nearest even, as lmc_f32_to_bf16), the products are
 * exact and summed in f32 (in C's memory between K blocks). ws: at least
 * lmc_cpu_gemm_bf16_ws(M, N, K) words, 64-byte aligned. Single-threaded;
 * callers split M or N among threads. Uses vdpbf16ps when the CPU has it,
 * else a portable kernel with the same products. */
void lmc_cpu_gemm_bf16(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                       const float *B, int64_t b_sk, int64_t b_sn, float *C, int64_t ldc, bool accum,
                       void *ws);

/* lmc_cpu_gemm_bf16 with the AMX kernel kept off (AVX512-BF16 where the
 * CPU has it, else portable): the tests compare the two. Every other entry
 * point here runs the products through AMX-BF16 tiles where
 * lmc_cpu_has_amx() (gemm_amx.h; LMC_CPU_AMX=0 switches it off): the same
 * packs, the sums of one block in another f32 order (within the same
 * bound), and still one kernel per CPU, so the same-bits promises below
 * hold between the entry points. */
void lmc_cpu_gemm_bf16_noamx(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                             const float *B, int64_t b_sk, int64_t b_sn, float *C, int64_t ldc, bool accum,
                             void *ws);

/* B packed once for several calls (threads splitting M share it): the
 * words a whole packed B(K, N) takes, its panel count, and the packing of
 * panels [p0, p1) into dst (64-byte aligned; callers split the panels
 * among threads). lmc_cpu_gemm_bf16_pb is lmc_cpu_gemm_bf16 with such a B
 * (the same sums, so the same bits). */
size_t lmc_cpu_gemm_bf16_bpack_words(int64_t N, int64_t K);
int64_t lmc_cpu_gemm_bf16_bpack_panels(int64_t N, int64_t K);
void lmc_cpu_gemm_bf16_bpack(uint32_t *dst, int64_t N, int64_t K, const float *B, int64_t b_sk, int64_t b_sn,
                             int64_t p0, int64_t p1);
void lmc_cpu_gemm_bf16_pb(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                          const uint32_t *bp, float *C, int64_t ldc, bool accum, void *ws);

/* A packed whole by its producer (the fused classifier writes its
 * logits' gradient this way, so the dW GEMM packs nothing): for A(M, K)
 * the word of row m and pair p (elements k = 2p, 2p+1) sits at
 * ap[(m / 8) * 8 * KP + p * 8 + m % 8], KP = (K + 1) / 2 (the layout of
 * gemm_bf16.c's A panels, all of K in one panel). apack_words: its size,
 * rows rounded up to 8. apack_t writes pairs [p0, p0 + (n + 1) / 2) of an
 * A given as its transpose: A(m, 2 p0 + i) = x[i * ldx + m] for the n
 * lines i < n (an odd n pairs its last line with 0), every m < M, zeros in
 * the rows past M; the rounding is the packs' (so lmc_cpu_gemm_bf16_pp
 * gives the bits lmc_cpu_gemm_bf16_pb gives on the f32 A). pp: C(M, N)
 * (+)= A @ B, A packed whole this way and B by bpack; no workspace. */
size_t lmc_cpu_gemm_bf16_apack_words(int64_t M, int64_t K);
void lmc_cpu_gemm_bf16_apack_t(uint32_t *ap, int64_t M, int64_t K, int64_t p0, const float *x, int64_t ldx,
                               int64_t n);
/* Rows [m0, m0 + n) of such an A from its row-major lines: A(m0 + i, k) =
 * x[i * ldx + k]; m0 a multiple of 8, and n too unless m0 + n = M (the
 * last panel's rows past M become zeros). */
void lmc_cpu_gemm_bf16_apack(uint32_t *ap, int64_t M, int64_t K, int64_t m0, const float *x, int64_t ldx,
                             int64_t n);
void lmc_cpu_gemm_bf16_pp(int64_t M, int64_t N, int64_t K, const uint32_t *ap, const uint32_t *bp, float *C,
                          int64_t ldc, bool accum);

/* Several products over the same M rows, each with its B packed ahead
 * (lmc_cpu_gemm_bf16_bpack, the whole of B): term i computes C_i(M, N_i)
 * (+)= A_i(M, K_i) @ B_i in term order, M blocks outermost, so a term that
 * reuses the previous term's A (same pointer, strides and K, one K block)
 * finds it packed, and terms accumulating into one C find its block in
 * cache. Each C element gets the same sums in the same order as separate
 * lmc_cpu_gemm_bf16 calls (the same bits). ws: at least
 * lmc_cpu_gemm_bf16_terms_ws(M, the largest K_i) words, 64-byte aligned. */
struct lmc_gb_term {
    const float *A;
    int64_t a_sm, a_sk, K;
    const uint32_t *bp; /* B (K, N) packed whole */
    int64_t N;
    float *C;
    int64_t ldc;
    bool accum;
};
size_t lmc_cpu_gemm_bf16_terms_ws(int64_t M, int64_t Kmax);
void lmc_cpu_gemm_bf16_terms(int64_t M, int n, const struct lmc_gb_term *t, void *ws);

/* The same with the portable kernel forced (tests compare the two). */
void lmc_cpu_gemm_bf16_terms_portable(int64_t M, int n, const struct lmc_gb_term *t, void *ws);
void lmc_cpu_gemm_bf16_portable(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm,
                                int64_t a_sk, const float *B, int64_t b_sk, int64_t b_sn, float *C,
                                int64_t ldc, bool accum, void *ws);

/* The bf16 training entry points (matmul_bf16.c): the same contracts as
 * backend.h's matmul, matmul_multi, matmul_bwd, matmul_bwd_multi and
 * classifier_xent, with the GEMMs in bf16 operands (F32 weights; other
 * weight types and M < 16 go to the fp32 ops). */
void lmc_cpu_matmul_bf16(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                         const float *bias);
void lmc_cpu_matmul_multi_bf16(void *ctx, int n, float *const *y, const float *x, int64_t M,
                               const struct lmc_mat *const *w, const float *const *bias);
void lmc_cpu_matmul_bwd_bf16(void *ctx, float *dx, float *dw, float *db, const float *dy,
                             const float *x, int64_t M, const struct lmc_mat *w, int accum_dx);
void lmc_cpu_matmul_bwd_multi_bf16(void *ctx, int n, float *dx, float *const *dw, float *const *db,
                                   const float *const *dy, const float *x, int64_t M,
                                   const struct lmc_mat *const *w, int accum_dx);
void lmc_cpu_classifier_xent_bf16(void *ctx, float *loss, float *dh, float *dw, const float *h,
                                  const struct lmc_mat *w, const int32_t *targets, int64_t M,
                                  float dscale);

/* Training attention in the bf16 mode (attention_bf16.c): backend.h's
 * attention_train / attention_bwd contracts, the products through the
 * bf16 GEMM. */
void lmc_cpu_attention_train_bf16(void *ctx, float *out, float *lse, const float *q, const float *k,
                                  const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                                  int64_t hd, float scale, int64_t window);
void lmc_cpu_attention_bwd_bf16(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                const float *out, const float *lse, const float *q, const float *k,
                                const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                                int64_t hd, float scale, int64_t window);

#endif