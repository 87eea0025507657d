/* gemm_f32.c — our own single-threaded fp32 GEMM for AVX2+FMA CPUs:
 * C = alpha * op(A) @ op(B) + beta * C, row-major, either operand
 * transposed, B in F32, F16 or BF16 (widened while packed).
 *
 * BLIS-style blocking for a Zen 3 core (32 KB L1d, 512 KB L2): N in blocks
 * of GF_NC columns, K in blocks of GF_KC, M in blocks of GF_MC rows. Each
 * B block (GF_KC x GF_NC, up to 1.5 MB, L3) is packed into panels of GF_NR
 * = 16 columns ([k][16], zero-padded past N); each A block (GF_MC x GF_KC,
 * 144 KB, L2) into panels of GF_MR = 6 rows ([k][6], zero-padded past M).
 * The microkernel holds a 6 x 16 tile of C in 12 ymm accumulators, and per
 * k loads two B vectors (16 KB B panel stays in L1) and broadcasts six A
 * values: 12 FMAs against 8 loads. The first K block merges into C with
 * beta, later blocks add to C. Edge tiles (M % 6, N % 16) go through a
 * local tile. Zero padding adds exact zeros, so every element of C is the
 * same sum whatever M, N and where a caller's block sits (threads may
 * split M or N freely); K blocks always start at k = 0. Up to GF_PANEL_M
 * rows (the server's short prompt chunks) B is packed a panel at a time
 * into L1 and tiles of fewer than 6 rows run their own row count's kernel:
 * the same sums.
 * Without AVX2 the call forwards to OpenBLAS (F16/BF16 B converted per
 * block into the workspace). */
#include "ops/cpu/gemm_f32.h"

#include "core/core.h"

#include <cblas.h>
#include <string.h>

#define GF_MR LMC_GEMM_F32_MR
#define GF_NR 16
#ifndef GF_KC /* (overridable for tuning experiments) */
#define GF_KC 256
#endif
#ifndef GF_MC
#define GF_MC 144
#endif
#ifndef GF_NC
#define GF_NC 1536
#endif

#ifdef __AVX2__
#include <immintrin.h>
#endif

bool lmc_cpu_gemm_f32_native(void) {
#ifdef __AVX2__
    return true;
#else
    return false;
#endif
}

static int64_t rup(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

size_t lmc_cpu_gemm_f32_ws(int64_t M, int64_t N, int64_t K) {
    (void)M;
    (void)K;
    int64_t nc = LMC_MIN(GF_NC, rup(N > 0 ? N : 1, GF_NR));
    /* packed A block (+ one panel's overrun slack) and packed B block */
    return (size_t)(GF_MC * GF_KC + 64 + nc * GF_KC);
}

/* C (M x N, beta, no NaN from C when beta == 0) scaled in place */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) C[m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[m * ldc + n];
}

static inline float b_at(const void *B, enum lmc_dtype dt, int64_t i) {
    switch (dt) {
    case LMC_DTYPE_F16: return lmc_f16_to_f32(((const uint16_t *)B)[i]);
    case LMC_DTYPE_BF16: return lmc_bf16_to_f32(((const uint16_t *)B)[i]);
    default: return ((const float *)B)[i];
    }
}

#ifdef __AVX2__

static inline __m256 ld8(const void *B, enum lmc_dtype dt, int64_t i) {
    switch (dt) {
    case LMC_DTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)B + i)));
    case LMC_DTYPE_BF16: {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)B + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
    default: return _mm256_loadu_ps((const float *)B + i);
    }
}

/* r[i] <- column i of the 8 x 8 block whose rows are r[0..7] */
static inline void tr8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20), r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20), r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31), r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31), r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* B(k0 + k, n0 + j), k < kc, j < nc, into panels of GF_NR columns at dst */
static void pack_b(float *dst, const void *B, enum lmc_dtype dt, int64_t ldb, bool tb, int64_t k0, int64_t kc,
                   int64_t n0, int64_t nc) {
    for (int64_t jp = 0; jp < nc; jp += GF_NR, dst += GF_NR * kc) {
        int64_t nj = LMC_MIN(GF_NR, nc - jp);
        if (!tb) { /* B(k, n) = B[k*ldb + n]: rows of 16 contiguous elements */
            for (int64_t k = 0; k < kc; k++) {
                int64_t base = (k0 + k) * ldb + n0 + jp;
                float *d = dst + k * GF_NR;
                if (nj == GF_NR) {
                    _mm256_store_ps(d, ld8(B, dt, base));
                    _mm256_store_ps(d + 8, ld8(B, dt, base + 8));
                } else {
                    int64_t j = 0;
                    for (; j < nj; j++) d[j] = b_at(B, dt, base + j);
                    for (; j < GF_NR; j++) d[j] = 0.0f;
                }
            }
            continue;
        }
        /* B(k, n) = B[n*ldb + k]: 16 rows of B read along k, transposed 8 x 8 */
        for (int64_t h = 0; h < GF_NR; h += 8) {
            int64_t nh = LMC_MAX(0, LMC_MIN(8, nj - h));
            int64_t k = 0;
            if (nh == 8) {
                /* one loop per type, the 8 rows' pointers hoisted (a switch
                 * and an index product per load left this at ~1.3 cycles
                 * per element in the model's profile) */
                int64_t base = (n0 + jp + h) * ldb + k0;
                if (dt == LMC_DTYPE_F16) {
                    const uint16_t *b0 = (const uint16_t *)B + base;
                    for (; k + 8 <= kc; k += 8) {
                        __m256 r[8];
#pragma GCC unroll 8
                        for (int i = 0; i < 8; i++)
                            r[i] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b0 + i * ldb + k)));
                        tr8(r);
#pragma GCC unroll 8
                        for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (k + i) * GF_NR + h, r[i]);
                    }
                } else if (dt == LMC_DTYPE_F32) {
                    const float *b0 = (const float *)B + base;
                    for (; k + 8 <= kc; k += 8) {
                        __m256 r[8];
#pragma GCC unroll 8
                        for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(b0 + i * ldb + k);
                        tr8(r);
#pragma GCC unroll 8
                        for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (k + i) * GF_NR + h, r[i]);
                    }
                } else {
                    for (; k + 8 <= kc; k += 8) {
                        __m256 r[8];
                        for (int i = 0; i < 8; i++) r[i] = ld8(B, dt, base + i * ldb + k);
                        tr8(r);
                        for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (k + i) * GF_NR + h, r[i]);
                    }
                }
            }
            for (; k < kc; k++) {
                float *d = dst + k * GF_NR + h;
                int64_t i = 0;
                for (; i < nh; i++) d[i] = b_at(B, dt, (n0 + jp + h + i) * ldb + k0 + k);
                for (; i < 8; i++) d[i] = 0.0f;
            }
        }
    }
}

/* the low 6 floats of v to d */
static inline void st6(float *d, __m256 v) {
    _mm_storeu_ps(d, _mm256_castps256_ps128(v));
    _mm_storel_pi((__m64 *)(d + 4), _mm256_extractf128_ps(v, 1));
}

/* A(m0 + i, k0 + k), i < mc, k < kc, into panels of GF_MR rows at dst
 * (nothing written past the last panel) */
static void pack_a(float *dst, const float *A, int64_t lda, bool ta, int64_t m0, int64_t mc, int64_t k0,
                   int64_t kc) {
    for (int64_t ip = 0; ip < mc; ip += GF_MR, dst += GF_MR * kc) {
        int64_t ni = LMC_MIN(GF_MR, mc - ip);
        if (ta) { /* A(m, k) = A[k*lda + m]: 6 contiguous elements per k */
            if (ip + 8 <= mc) { /* 8 loaded (all inside the block), 6 kept */
                for (int64_t k = 0; k < kc; k++) {
                    __m256 v = _mm256_loadu_ps(A + (k0 + k) * lda + m0 + ip);
                    if (k + 1 < kc) _mm256_storeu_ps(dst + k * GF_MR, v); /* 2 extra, overwritten next */
                    else st6(dst + k * GF_MR, v);
                }
                continue;
            }
            for (int64_t k = 0; k < kc; k++) {
                const float *s = A + (k0 + k) * lda + m0 + ip;
                float *d = dst + k * GF_MR;
                int64_t i = 0;
                for (; i < ni; i++) d[i] = s[i];
                for (; i < GF_MR; i++) d[i] = 0.0f;
            }
            continue;
        }
        int64_t k = 0;
        if (ni == GF_MR) { /* the 6 rows' pointers hoisted and the stores unrolled (the
                            * compiler kept r[] on the stack and looped over them) */
            const float *a0 = A + (m0 + ip) * lda + k0;
            for (; k + 8 <= kc; k += 8) {
                __m256 r[8];
#pragma GCC unroll 6
                for (int i = 0; i < GF_MR; i++) r[i] = _mm256_loadu_ps(a0 + i * lda + k);
                r[6] = r[7] = _mm256_setzero_ps();
                tr8(r);
                float *d = dst + k * GF_MR;
#pragma GCC unroll 7
                for (int i = 0; i < 7; i++) _mm256_storeu_ps(d + i * GF_MR, r[i]); /* 2 extra, overwritten next */
                if (k + 8 < kc) _mm256_storeu_ps(d + 7 * GF_MR, r[7]);
                else st6(d + 7 * GF_MR, r[7]);
            }
        }
        for (; k < kc; k++) {
            float *d = dst + k * GF_MR;
            int64_t i = 0;
            for (; i < ni; i++) d[i] = A[(m0 + ip + i) * lda + k0 + k];
            for (; i < GF_MR; i++) d[i] = 0.0f;
        }
    }
}

/* c (6 x 16, row stride ldc) = alpha * a-panel @ b-panel + beta * c.
 * Not inlined: inlined into gemm's loops, GCC hoisted alpha and beta's
 * broadcasts out of them, which left 14 ymm registers for the loop's 15 (12
 * accumulators, two B vectors, one A broadcast) and spilled a B vector to
 * the stack (a store and six reloads per k). */
__attribute__((noinline)) static void ukr(int64_t kc, const float *restrict a, const float *restrict b, float *c, int64_t ldc,
                       float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    /* the C tile's lines, fetched while the k loop runs (~1.5k cycles at
     * kc = 256): in the model a task's C columns (512 x 128 floats) do not
     * stay in L2 next to the A and B blocks, so each call's read-modify-write
     * otherwise waits on L3 */
    for (int i = 0; i < GF_MR; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
        av = _mm256_broadcast_ss(a + 0), c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a + 1), c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a + 2), c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a + 3), c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a + 4), c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a + 5), c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
        a += GF_MR, b += GF_NR;
    }
    __m256 acc[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int i = 0; i < GF_MR; i++)
        for (int h = 0; h < 2; h++) {
            float *p = c + i * ldc + 8 * h;
            __m256 v = acc[2 * i + h];
            if (alpha != 1.0f) v = _mm256_mul_ps(va, v);
            if (beta == 1.0f) v = _mm256_add_ps(_mm256_loadu_ps(p), v);
            else if (beta != 0.0f) v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), v);
            _mm256_storeu_ps(p, v);
        }
}

/* The same tile for mr < 6 rows of the A panel (the panel's stride stays
 * 6): each row's accumulators take the same FMAs in the same order as in
 * ukr, so its bits are ukr's; without the zero rows' FMAs a product of a
 * few rows costs a few rows' work. */
#define GF_UKR_ROWS(MRR)                                                                                            \
    __attribute__((noinline)) static void ukr##MRR(int64_t kc, const float *restrict a, const float *restrict b,    \
                                                   float *c, int64_t ldc, float alpha, float beta) {                \
        __m256 acc[2 * MRR];                                                                                        \
        _Pragma("GCC unroll 10") for (int i = 0; i < 2 * MRR; i++) acc[i] = _mm256_setzero_ps();                    \
        _Pragma("GCC unroll 4") for (int64_t k = 0; k < kc; k++) {                                                  \
            __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);                                              \
            _Pragma("GCC unroll 5") for (int i = 0; i < MRR; i++) {                                                 \
                __m256 av = _mm256_broadcast_ss(a + i);                                                             \
                acc[2 * i] = _mm256_fmadd_ps(av, b0, acc[2 * i]);                                                   \
                acc[2 * i + 1] = _mm256_fmadd_ps(av, b1, acc[2 * i + 1]);                                           \
            }                                                                                                       \
            a += GF_MR, b += GF_NR;                                                                                 \
        }                                                                                                           \
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);                                               \
        _Pragma("GCC unroll 5") for (int i = 0; i < MRR; i++)                                                       \
            _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {                                                   \
                float *p = c + i * ldc + 8 * h;                                                                     \
                __m256 v = acc[2 * i + h];                                                                          \
                if (alpha != 1.0f) v = _mm256_mul_ps(va, v);                                                        \
                if (beta == 1.0f) v = _mm256_add_ps(_mm256_loadu_ps(p), v);                                         \
                else if (beta != 0.0f) v = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), v);                              \
                _mm256_storeu_ps(p, v);                                                                             \
            }                                                                                                       \
    }
GF_UKR_ROWS(1)
GF_UKR_ROWS(2)
GF_UKR_ROWS(3)
GF_UKR_ROWS(4)
GF_UKR_ROWS(5)
typedef void (*gf_ukr_fn)(int64_t, const float *restrict, const float *restrict, float *, int64_t, float, float);
static const gf_ukr_fn gf_ukrs[GF_MR + 1] = {NULL, ukr1, ukr2, ukr3, ukr4, ukr5, ukr};

/* Up to GF_PANEL_M rows of A, B is packed one panel of GF_NR columns at a
 * time, just before the tiles use it (in L1), rather than a block of GF_NC
 * columns (to L3) first: a product of a few rows (a serving step's short
 * prompt chunk) then costs little more than reading W once. The sums do
 * not change (they depend on the K blocks alone). */
#define GF_PANEL_M 24

/* the product; A packed whole beforehand (apk, lmc_cpu_gemm_f32_apack's
 * layout) or, apk NULL, per block into ws */
static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *apk, const void *B, enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc,
                 float *ws) {
    LMC_ASSERT(M >= 0 && N >= 0 && K >= 0);
    LMC_ASSERT(bdt == LMC_DTYPE_F32 || bdt == LMC_DTYPE_F16 || bdt == LMC_DTYPE_BF16);
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        if (beta != 1.0f) scale_c(M, N, beta, C, ldc);
        return;
    }
    LMC_ASSERT(((uintptr_t)ws & 63) == 0);
    int64_t mp = rup(M, GF_MR);
    float *ap = ws, *bp = ws + GF_MC * GF_KC + 64;
    float tile[GF_MR * GF_NR];
    const bool panel = M <= GF_PANEL_M; /* then one M block (GF_PANEL_M <= GF_MC) */
    for (int64_t jc = 0; jc < N; jc += GF_NC) {
        int64_t nc = LMC_MIN(GF_NC, N - jc);
        for (int64_t pc = 0; pc < K; pc += GF_KC) {
            int64_t kc = LMC_MIN(GF_KC, K - pc);
            float be = pc == 0 ? beta : 1.0f;
            if (!panel) pack_b(bp, B, bdt, ldb, tb, pc, kc, jc, nc);
            for (int64_t ic = 0; ic < M; ic += GF_MC) {
                int64_t mc = LMC_MIN(GF_MC, M - ic);
                const float *a;
                if (apk) {
                    a = apk + pc * mp + ic * kc;
                } else {
                    pack_a(ap, A, lda, ta, ic, mc, pc, kc);
                    a = ap;
                }
                for (int64_t jr = 0; jr < nc; jr += GF_NR) {
                    int64_t nr = LMC_MIN(GF_NR, nc - jr);
                    const float *bpp = bp + jr * kc;
                    if (panel) {
                        pack_b(bp, B, bdt, ldb, tb, pc, kc, jc + jr, nr);
                        bpp = bp;
                    }
                    for (int64_t ir = 0; ir < mc; ir += GF_MR) {
                        int64_t mr = LMC_MIN(GF_MR, mc - ir);
                        float *cp = C + (ic + ir) * ldc + jc + jr;
                        if (nr == GF_NR) {
                            gf_ukrs[mr](kc, a + ir * kc, bpp, cp, ldc, alpha, be);
                            continue;
                        }
                        gf_ukrs[mr](kc, a + ir * kc, bpp, tile, GF_NR, 1.0f, 0.0f);
                        for (int64_t i = 0; i < mr; i++)
                            for (int64_t j = 0; j < nr; j++) {
                                float v = alpha * tile[i * GF_NR + j], *o = cp + i * ldc + j;
                                *o = be == 0.0f ? v : be == 1.0f ? *o + v : be * *o + v;
                            }
                    }
                }
            }
        }
    }
}

void lmc_cpu_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const void *B, enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc, float *ws) {
    gemm(ta, tb, M, N, K, alpha, A, lda, NULL, B, bdt, ldb, beta, C, ldc, ws);
}

size_t lmc_cpu_gemm_f32_apack_words(int64_t M, int64_t K) { return (size_t)(rup(M, GF_MR) * K); }

void lmc_cpu_gemm_f32_apack(float *ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t m0,
                            int64_t m1) {
    LMC_ASSERT(m0 % GF_MR == 0 && 0 <= m0 && m0 <= m1 && m1 <= M);
    int64_t mp = rup(M, GF_MR);
    for (int64_t pc = 0; pc < K && m1 > m0; pc += GF_KC) {
        int64_t kc = LMC_MIN(GF_KC, K - pc);
        pack_a(ap + pc * mp + m0 * kc, A, lda, ta, m0, m1 - m0, pc, kc);
    }
}

void lmc_cpu_gemm_f32_pa(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *ap, const void *B,
                         enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc, float *ws) {
    gemm(false, tb, M, N, K, alpha, NULL, 0, ap, B, bdt, ldb, beta, C, ldc, ws);
}

#else /* !__AVX2__: OpenBLAS */

void lmc_cpu_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                      const void *B, enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc, float *ws) {
    LMC_ASSERT(M >= 0 && N >= 0 && K >= 0);
    LMC_ASSERT(bdt == LMC_DTYPE_F32 || bdt == LMC_DTYPE_F16 || bdt == LMC_DTYPE_BF16);
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        if (beta != 1.0f) scale_c(M, N, beta, C, ldc);
        return;
    }
    enum CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans;
    if (bdt == LMC_DTYPE_F32) {
        cblas_sgemm(CblasRowMajor, tA, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda,
                    B, (int)ldb, beta, C, (int)ldc);
        return;
    }
    /* B widened per block (kc x nc, row-major) into ws */
    for (int64_t jc = 0; jc < N; jc += GF_NC)
        for (int64_t pc = 0; pc < K; pc += GF_KC) {
            int64_t nc = LMC_MIN(GF_NC, N - jc), kc = LMC_MIN(GF_KC, K - pc);
            for (int64_t k = 0; k < kc; k++)
                for (int64_t n = 0; n < nc; n++)
                    ws[k * nc + n] = b_at(B, bdt, tb ? (jc + n) * ldb + pc + k : (pc + k) * ldb + jc + n);
            const float *a = ta ? A + pc * lda : A + pc;
            cblas_sgemm(CblasRowMajor, tA, CblasNoTrans, (int)M, (int)nc, (int)kc, alpha, a, (int)lda, ws, (int)nc,
                        pc == 0 ? beta : 1.0f, C + jc, (int)ldc);
        }
}

size_t lmc_cpu_gemm_f32_apack_words(int64_t M, int64_t K) { return (size_t)(M * K + 64); }

/* the fallback's packed A is A itself, row-major */
void lmc_cpu_gemm_f32_apack(float *ap, bool ta, int64_t M, int64_t K, const float *A, int64_t lda, int64_t m0,
                            int64_t m1) {
    LMC_ASSERT(m0 % 6 == 0 && 0 <= m0 && m0 <= m1 && m1 <= M);
    for (int64_t m = m0; m < m1; m++)
        for (int64_t k = 0; k < K; k++) ap[m * K + k] = ta ? A[k * lda + m] : A[m * lda + k];
}

void lmc_cpu_gemm_f32_pa(bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *ap, const void *B,
                         enum lmc_dtype bdt, int64_t ldb, float beta, float *C, int64_t ldc, float *ws) {
    lmc_cpu_gemm_f32(false, tb, M, N, K, alpha, ap, K, B, bdt, ldb, beta, C, ldc, ws);
}

#endif
