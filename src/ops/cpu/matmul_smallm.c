/* matmul_smallm.c — the float matmul's small-M kernel (M = 2..ctx
 * mm_small_max rows: speculative verification, batched decode steps; M = 1
 * too for short rows and for F16/BF16 rows of any length, lmc_cpu_smallm_ok in ops_cpu.h):
 * y(M, rows r0..r1) = x(M, K) @ W^T for W in F32, F16 or BF16, with AVX-512.
 * A tile of 4 W rows is loaded (and widened to f32) once per 16 columns and
 * multiplied into every x row of a register block of up to SM_MR rows
 * (4 x MR accumulators); more rows run as balanced blocks over the same W
 * tile, which then comes from L1. Each (x row, W row) pair has its own
 * accumulator and reduction, so a row's result does not depend on M.
 * matmul.c calls it from its GEMV scheduler (threads claim W byte ranges,
 * boundaries on multiples of 4 rows).
 * The AVX2 twin (AVX2 + FMA + F16C builds without AVX-512, below): 8-lane
 * tiles of 4 W rows for blocks of 1-2 x rows and of 2 W rows for 3-6 (at
 * most 12 accumulators of the 16 registers), so a W vector is widened once
 * for up to 6 rows (matmul.c's AVX2 2x4 kernel widened it once per 2 rows
 * and read 4 rows without prefetch: a 5-row verification of a 52M bf16
 * model cost 2.5x a 1-row step on the 2-core Zen 3); the same software
 * prefetch ahead of the tile; a K tail through a zero-padded copy. More
 * than 6 x rows (blocks of 3-6) run each 2-row tile through every block
 * before the next, so the tile comes from L1 (lmc_cpu_smallm_ok takes them
 * up to 2-row tiles of LMC_CPU_SMALLM_TILE bytes: K <= 4096 BF16/F16).
 * One block of 3-6 rows runs all its 2-row tiles in one call (the tile
 * inlined in a loop) and sums a tile's accumulators 4 at a time in
 * lmc_hsum256's order: the per-tile call and sums cost ~9% of a K = 576
 * tile, now ~6.5%; 5 rows then run at ~85% of a 10-chain FMA peak on the
 * 2-core Zen 3 (bench/spec_tile_cpu.c, bench/results/spec-kernel-2026-12-07.md).
 * Builds without AVX2 keep matmul.c's scalar kernels.
 * Both keep each x vector in a register (an empty asm): GCC otherwise folds
 * the x load into every FMA, one load per W row (AVX-512 5x4: 20 loads per
 * 16 columns instead of 5; measured on Zen 4, bench/results/spec-cpu-2026-12-06.md:
 * 5-token forward -5%, 8-token -9%, same bits). */
#include "ops/cpu/ops_cpu.h"

#include <stdbool.h>
#include <string.h>

#if defined(LMC_CPU_SMALLM) && !defined(LMC_CPU_SMALLM_AVX2)

#define SM_MR LMC_CPU_SMALLM_MR /* x rows per register block: 4 * 6 accumulators + 4 W vectors */
#define SM_EACH(m) _Pragma("GCC unroll 6") for (int m = 0; m < MR; m++)
#define SM_R(r) _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)

static inline __m512 sm_ld_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 sm_ld_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline __m512 sm_ld_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline __m512 sm_ldm_f32(const float *p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
static inline __m512 sm_ldm_f16(const uint16_t *p, __mmask16 k) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}
static inline __m512 sm_ldm_bf16(const uint16_t *p, __mmask16 k) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* The sums of 4 vectors; each one's arithmetic is the same whatever the
 * others hold. */
static inline __m128 sm_sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
#define SM_FOLD(v) _mm256_add_ps(_mm512_castps512_ps256(v), \
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(SM_FOLD(a), SM_FOLD(b)), _mm256_hadd_ps(SM_FOLD(c), SM_FOLD(d)));
#undef SM_FOLD
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* MR x rows (stride K) against R (4 or 1) W rows (stride K) into y (row
 * stride N); MR and R are constants in each instance below. W streams from
 * memory as in the GEMV: a tile of at most SM_PF_TILE_BYTES (short rows,
 * which the hardware prefetcher follows badly) prefetches the bytes two
 * tiles ahead as it goes (the rows are contiguous; 4 rows x 16 columns =
 * the element size in 64-byte lines per step). Longer tiles of F16/BF16
 * rows prefetch the same way SM_PF_FAR bytes ahead with the T2 hint: the
 * tile reads 4 rows at once, 4 streams the hardware alone kept at 24-36%
 * of the 1-thread read for M = 2-4 (bench/bench_gemv16, 1 thread, CPU
 * time, K = 1024 and 2816: bench/results/moe-cpu-2026-12-06.md); 16-32 KB
 * ahead with T2 gave 53-76% at M = 2, T0 at 4-16 KB 28-59%. (F32 rows are
 * left as they were measured: to the hardware; software prefetch 256-2048
 * bytes ahead in each row measured no better, bench/results/smallm-2026-12-05.md.) */
#ifndef SM_PF_TILE_BYTES
#define SM_PF_TILE_BYTES LMC_CPU_SMALLM_TILE
#endif
#ifndef SM_PF_FAR
#define SM_PF_FAR (24 * 1024)
#endif
#define SM_TILE(S, T)                                                                             \
    static inline __attribute__((always_inline)) void sm_tile_##S(const float *x, const T *w,     \
                                                                  int64_t K, int MR, int R,       \
                                                                  float *y, int64_t N) {          \
        __m512 acc[SM_MR][4], wv[4];                                                              \
        SM_EACH(m) SM_R(r) acc[m][r] = _mm512_setzero_ps();                                       \
        int64_t i = 0;                                                                            \
        bool near = 4 * K * (int64_t)sizeof(T) <= SM_PF_TILE_BYTES;                               \
        bool far = !near && sizeof(T) == 2;                                                       \
        const char *pf = near ? (const char *)(w + 8 * K) : (const char *)w + SM_PF_FAR;          \
        for (; i + 16 <= K; i += 16, pf += 64 * sizeof(T)) {                                      \
            if (R == 4 && near)                                                                   \
                for (int l = 0; l < (int)sizeof(T); l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);  \
            else if (R == 4 && far)                                                               \
                for (int l = 0; l < (int)sizeof(T); l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T2);  \
            SM_R(r) wv[r] = sm_ld_##S(w + r * K + i);                                             \
            SM_EACH(m) {                                                                          \
                __m512 xv = _mm512_loadu_ps(x + m * K + i);                                       \
                __asm__("" : "+v"(xv)); /* one load per x vector, not one per W row */            \
                SM_R(r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);                        \
            }                                                                                     \
        }                                                                                         \
        if (i < K) {                                                                              \
            __mmask16 k = (__mmask16)((1u << (K - i)) - 1);                                       \
            SM_R(r) wv[r] = sm_ldm_##S(w + r * K + i, k);                                         \
            SM_EACH(m) {                                                                          \
                __m512 xv = _mm512_maskz_loadu_ps(k, x + m * K + i);                              \
                SM_R(r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);                        \
            }                                                                                     \
        }                                                                                         \
        __m512 z = _mm512_setzero_ps();                                                           \
        SM_EACH(m) {                                                                              \
            __m128 s = sm_sum4(acc[m][0], R > 1 ? acc[m][1] : z, R > 2 ? acc[m][2] : z,           \
                               R > 3 ? acc[m][3] : z);                                            \
            if (R == 4) _mm_storeu_ps(y + m * N, s);                                              \
            else y[m * N] = _mm_cvtss_f32(s);                                                     \
        }                                                                                         \
    }
SM_TILE(f32, float)
SM_TILE(f16, uint16_t)
SM_TILE(bf16, uint16_t)

typedef void (*sm_fn)(const float *x, const void *w, int64_t K, float *y, int64_t N);
#define SM_ONE(S, T, MR, R)                                                                       \
    static void sm_##S##_##MR##x##R(const float *x, const void *w, int64_t K, float *y, int64_t N) { \
        sm_tile_##S(x, (const T *)w, K, MR, R, y, N);                                             \
    }
#define SM_ALL(S, T)                                                                              \
    SM_ONE(S, T, 1, 4) SM_ONE(S, T, 2, 4) SM_ONE(S, T, 3, 4) SM_ONE(S, T, 4, 4) SM_ONE(S, T, 5, 4) \
    SM_ONE(S, T, 6, 4) SM_ONE(S, T, 1, 1) SM_ONE(S, T, 2, 1) SM_ONE(S, T, 3, 1) SM_ONE(S, T, 4, 1) \
    SM_ONE(S, T, 5, 1) SM_ONE(S, T, 6, 1)                                                         \
    static const sm_fn sm_##S##_fns[2][SM_MR + 1] = {                                             \
        {NULL, sm_##S##_1x4, sm_##S##_2x4, sm_##S##_3x4, sm_##S##_4x4, sm_##S##_5x4, sm_##S##_6x4}, \
        {NULL, sm_##S##_1x1, sm_##S##_2x1, sm_##S##_3x1, sm_##S##_4x1, sm_##S##_5x1, sm_##S##_6x1}};
SM_ALL(f32, float)
SM_ALL(f16, uint16_t)
SM_ALL(bf16, uint16_t)

void lmc_cpu_matmul_smallm_rows(float *y, const float *x, int64_t M, const void *w, enum lmc_dtype dt,
                                int64_t K, int64_t N, int64_t r0, int64_t r1) {
    const sm_fn(*fns)[SM_MR + 1] = dt == LMC_DTYPE_F16 ? sm_f16_fns : dt == LMC_DTYPE_BF16 ? sm_bf16_fns : sm_f32_fns;
    size_t es = (size_t)lmc_dtype_size(dt);
    int64_t nch = (M + SM_MR - 1) / SM_MR, base = M / nch, rem = M % nch;
    for (int64_t r = r0; r < r1;) {
        int four = r + 4 <= r1;
        const char *wr = (const char *)w + (size_t)(r * K) * es;
        for (int64_t c = 0, m0 = 0; c < nch; c++) {
            int64_t mr = base + (c < rem);
            fns[four ? 0 : 1][mr](x + m0 * K, wr, K, y + m0 * N + r, N);
            m0 += mr;
        }
        r += four ? 4 : 1;
    }
}

#endif

#if defined(LMC_CPU_SMALLM) && defined(LMC_CPU_SMALLM_AVX2)

#define SM_MR LMC_CPU_SMALLM_MR
#define SM_EACH(m) _Pragma("GCC unroll 6") for (int m = 0; m < MR; m++)
#define SM_R(r) _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
#ifndef SM_PF_FAR
#define SM_PF_FAR (8 * 1024)
#endif

static inline __m256 sm_ld_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 sm_ld_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 sm_ld_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* lmc_hsum256 of 4 vectors at once, the same adds (ops_cpu.h) */
#define sm_hsum4 lmc_hsum256x4

/* MR x rows (stride K) against R (4, 2 or 1) W rows (stride K) into y (row
 * stride N). Each (x row, W row) pair sums 8-lane products in column order
 * in one accumulator, then lmc_hsum256: its bits do not depend on MR or R.
 * The loop prefetches SM_PF_FAR bytes ahead of the tile, the tile's bytes
 * per step (its rows are contiguous); a K tail of 1-7 columns is copied
 * into zero-padded vectors. */
#define SM_TILE(S, T)                                                                             \
    static inline __attribute__((always_inline)) void sm_tile_##S(const float *x, const T *w,     \
                                                                  int64_t K, int MR, int R,       \
                                                                  float *y, int64_t N) {          \
        __m256 acc[SM_MR][4];                                                                     \
        SM_EACH(m) SM_R(r) acc[m][r] = _mm256_setzero_ps();                                       \
        int64_t i = 0;                                                                            \
        const char *pf = (const char *)w + SM_PF_FAR;                                             \
        for (; i + 16 <= K; i += 16, pf += 16 * R * (int)sizeof(T)) {                             \
            for (int l = 0; l < R * (int)sizeof(T) / 4; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T0); \
            _Pragma("GCC unroll 2") for (int h = 0; h < 16; h += 8) {                             \
                __m256 wv[4];                                                                     \
                SM_R(r) wv[r] = sm_ld_##S(w + r * K + i + h);                                     \
                SM_EACH(m) {                                                                      \
                    __m256 xv = _mm256_loadu_ps(x + m * K + i + h);                               \
                    __asm__("" : "+x"(xv)); /* one load per x vector, not one per W row */        \
                    SM_R(r) acc[m][r] = _mm256_fmadd_ps(wv[r], xv, acc[m][r]);                    \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (; i < K; i += 8) {                                                                   \
            int64_t n = LMC_MIN(8, K - i);                                                        \
            __m256 wv[4];                                                                         \
            if (n == 8) {                                                                         \
                SM_R(r) wv[r] = sm_ld_##S(w + r * K + i);                                         \
            } else {                                                                              \
                T t[8];                                                                           \
                SM_R(r) {                                                                         \
                    memset(t, 0, sizeof t);                                                       \
                    memcpy(t, w + r * K + i, (size_t)n * sizeof(T));                              \
                    wv[r] = sm_ld_##S(t);                                                         \
                }                                                                                 \
            }                                                                                     \
            SM_EACH(m) {                                                                          \
                float xt[8] = {0};                                                                \
                memcpy(xt, x + m * K + i, (size_t)n * sizeof(float));                             \
                __m256 xv = _mm256_loadu_ps(xt);                                                  \
                SM_R(r) acc[m][r] = _mm256_fmadd_ps(wv[r], xv, acc[m][r]);                        \
            }                                                                                     \
        }                                                                                         \
        if (R == 2) { /* two x rows' pairs at a time: lmc_hsum256's sums, transposed */           \
            _Pragma("GCC unroll 3") for (int m = 0; m < MR; m += 2) {                             \
                __m256 z = _mm256_setzero_ps();                                                   \
                __m128 s = sm_hsum4(acc[m][0], acc[m][1], m + 1 < MR ? acc[m + 1][0] : z,         \
                                    m + 1 < MR ? acc[m + 1][1] : z);                              \
                _mm_storel_pi((__m64 *)(y + m * N), s);                                           \
                if (m + 1 < MR) _mm_storeh_pi((__m64 *)(y + (m + 1) * N), s);                     \
            }                                                                                     \
        } else {                                                                                  \
            SM_EACH(m) SM_R(r) y[m * N + r] = lmc_hsum256(acc[m][r]);                             \
        }                                                                                         \
    }
SM_TILE(f32, float)
SM_TILE(f16, uint16_t)
SM_TILE(bf16, uint16_t)

typedef void (*sm_fn)(const float *x, const void *w, int64_t K, float *y, int64_t N);
#define SM_ONE(S, T, MR, R)                                                                       \
    static void sm_##S##_##MR##x##R(const float *x, const void *w, int64_t K, float *y, int64_t N) { \
        sm_tile_##S(x, (const T *)w, K, MR, R, y, N);                                             \
    }
/* [0]: 4 W rows (blocks of 1-2 x rows) or 2 (3-6); [1]: 1 W row (the tail) */
#define SM_ALL(S, T)                                                                              \
    SM_ONE(S, T, 1, 4) SM_ONE(S, T, 2, 4) SM_ONE(S, T, 3, 2) SM_ONE(S, T, 4, 2) SM_ONE(S, T, 5, 2) \
    SM_ONE(S, T, 6, 2) SM_ONE(S, T, 1, 1) SM_ONE(S, T, 2, 1) SM_ONE(S, T, 3, 1) SM_ONE(S, T, 4, 1) \
    SM_ONE(S, T, 5, 1) SM_ONE(S, T, 6, 1)                                                         \
    static const sm_fn sm_##S##_fns[2][SM_MR + 1] = {                                             \
        {NULL, sm_##S##_1x4, sm_##S##_2x4, sm_##S##_3x2, sm_##S##_4x2, sm_##S##_5x2, sm_##S##_6x2}, \
        {NULL, sm_##S##_1x1, sm_##S##_2x1, sm_##S##_3x1, sm_##S##_4x1, sm_##S##_5x1, sm_##S##_6x1}};
SM_ALL(f32, float)
SM_ALL(f16, uint16_t)
SM_ALL(bf16, uint16_t)

/* One block of 3-6 x rows (M <= SM_MR): n 2-row tiles from w in one loop,
 * the tile inlined (with the per-tile call, its prologue and scalar sums a
 * K = 576 tile at 5 rows lost ~9% to them: bench/spec_tile_cpu.c); the same
 * arithmetic per tile as the table's, so the same bits. */
typedef void (*sm_run_fn)(const float *x, const void *w, int64_t K, float *y, int64_t N, int64_t n);
#define SM_RUN(S, T, MR)                                                                          \
    static void sm_##S##_run##MR(const float *x, const void *w, int64_t K, float *y, int64_t N, int64_t n) { \
        for (int64_t t = 0; t < n; t++) sm_tile_##S(x, (const T *)w + 2 * t * K, K, MR, 2, y + 2 * t, N); \
    }
#define SM_RUNS(S, T)                                                                             \
    SM_RUN(S, T, 3) SM_RUN(S, T, 4) SM_RUN(S, T, 5) SM_RUN(S, T, 6)                               \
    static const sm_run_fn sm_##S##_runs[SM_MR + 1] = {NULL, NULL, NULL, sm_##S##_run3, sm_##S##_run4, \
                                                       sm_##S##_run5, sm_##S##_run6};
SM_RUNS(f32, float)
SM_RUNS(f16, uint16_t)
SM_RUNS(bf16, uint16_t)

void lmc_cpu_matmul_smallm_rows(float *y, const float *x, int64_t M, const void *w, enum lmc_dtype dt,
                                int64_t K, int64_t N, int64_t r0, int64_t r1) {
    const sm_fn(*fns)[SM_MR + 1] = dt == LMC_DTYPE_F16 ? sm_f16_fns : dt == LMC_DTYPE_BF16 ? sm_bf16_fns : sm_f32_fns;
    size_t es = (size_t)lmc_dtype_size(dt);
    int64_t nch = (M + SM_MR - 1) / SM_MR, base = M / nch, rem = M % nch;
    if (nch == 1 && M >= 3 && r1 - r0 >= 4) { /* one block: its 2-row tiles in one loop */
        int64_t n4 = (r1 - r0) / 4;
        const sm_run_fn *runs = dt == LMC_DTYPE_F16 ? sm_f16_runs : dt == LMC_DTYPE_BF16 ? sm_bf16_runs : sm_f32_runs;
        runs[M](x, (const char *)w + (size_t)(r0 * K) * es, K, y + r0, N, 2 * n4);
        r0 += 4 * n4;
    }
    for (int64_t r = r0; r < r1;) {
        int four = r + 4 <= r1;
        const char *wr = (const char *)w + (size_t)(r * K) * es;
        if (four && base >= 3) { /* tiles of 2 W rows, each through every block while in L1 */
            for (int half = 0; half < 2; half++)
                for (int64_t c = 0, m0 = 0; c < nch; c++) {
                    int64_t mr = base + (c < rem);
                    fns[0][mr](x + m0 * K, wr + (size_t)(half * 2 * K) * es, K, y + m0 * N + r + 2 * half, N);
                    m0 += mr;
                }
            r += 4;
            continue;
        }
        for (int64_t c = 0, m0 = 0; c < nch; c++) {
            int64_t mr = base + (c < rem);
            if (!four) fns[1][mr](x + m0 * K, wr, K, y + m0 * N + r, N);
            else fns[0][mr](x + m0 * K, wr, K, y + m0 * N + r, N); /* 1-2 rows: a tile of 4 W rows */
            m0 += mr;
        }
        r += four ? 4 : 1;
    }
}

#endif
