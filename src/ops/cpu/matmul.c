/* matmul.c — y(M,N) = x(M,K) @ w(N,K)^T (+ bias) on the CPU, weights in
 * F32, F16 or BF16 used in place; and matmul_multi, several such products
 * sharing x done as one parallel job; the training backward matmul_bwd and
 * matmul_bwd_multi (the backward of several products sharing x, two jobs).
 *
 * Paths:
 *  - M < 4 (decode), and M where lmc_cpu_smallm_ok with AVX-512 or AVX2 (the
 *    small-M kernel of matmul_smallm.c: 4 W rows x up to 6 x rows in registers,
 *    AVX2 4 W rows x 1-2 or 2 x 3-6;
 *    with AVX-512 every F16/BF16 M=1 too, and F32 M=1 on short rows):
 *    our own dot-product kernels, W streamed from memory once. Other M=1 with AVX-512
 *    (F32 long rows; F16/BF16 where the small-M kernel is off): one W row at a time, 16 lanes, f16 (F16C) /
 *    bf16 (shift) widened on the fly, f32 with 64-byte-aligned loads.
 *    Threads claim W in units from a contiguous range each and steal half
 *    of another's remainder when done (see "M < 4" below).
 *  - small M >= 4: AVX-512 4x4-blocked kernels (x staged to W's alignment).
 *  - F16/BF16 weights from ctx->pf_min_m rows on CPUs with AVX512-BF16:
 *    the bf16 prefill GEMM of matmul_pf.c (x and W rounded to bf16).
 *  - large M (prefill, from lmc_cpu_gemm_from: ctx->gemm_min_m, F16/BF16
 *    weights ctx->gemm_min_m16): our AVX2+FMA GEMM
 *    (gemm_f32.c), single-threaded per call, on blocks of W rows claimed by
 *    our threads: x packed once per matmul on the pool (in ctx->xbuf), each
 *    task packs its W block, F16/BF16 widened while packed. F32 weights
 *    (training, fp32 models) stay on OpenBLAS sgemm on every path (ours
 *    measured no gain there, and one engine keeps a product's bits
 *    independent of the path its M takes): from MM_ROWS_MIN_M rows
 *    (training) on blocks of x's rows, all matrices of a matmul_multi in
 *    one job (mm_rows). Without AVX2 (or with ctx->gemm_blas, for A/B
 *    benches) OpenBLAS does the F16/BF16 calls too, blocks first converted
 *    into the thread's f32 scratch (never the whole matrix). The backward
 *    (matmul_bwd*) keeps OpenBLAS.
 * AVX2 kernels serve builds without AVX-512, a scalar path those without AVX2. */
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/gemm_f32.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* W rows per sgemm task (OpenBLAS: F32 weights, or without AVX2; its bits
 * depend on the split, and fixture tests hold training steps to them). */
#ifndef MM_GEMM_NB
#define MM_GEMM_NB 128
#endif
/* W rows per task with our GEMM (xp): 64, so the o and down projections of a
 * 768-wide model split into 12 tasks, not 6, and two threads running at
 * different speeds end a run closer together; x's packed block is then
 * re-read from L3 per 64 columns, 32 FLOP per byte, which cost nothing
 * measurable. Our GEMM's sums do not depend on the split. */
#define MM_OURS_NB 64
/* Minimum W elements per small-M task (below: fewer threads). */
#define MM_MIN_TASK_ELEMS 32768
/* Small-M tasks per thread (M >= 4): slack for a thread the OS preempts. */
#ifndef MM_OVERSPLIT
#define MM_OVERSPLIT 4
#endif
/* Bytes prefetched in a burst where an M=1 thread starts a stream. */
#ifndef MM_PF_START
#define MM_PF_START 4096
#endif

struct mm_job {
    struct lmc_cpu_ctx *c;
    float *y;
    const float *x;
    int64_t M, N, K;
    const void *w;
    enum lmc_dtype dt;
    const float *bias;
    int64_t n_tasks;
    /* AVX-512 path, M >= 4: x staged with row stride ldx, placed so that
     * element `peel` of every row is 64-byte aligned like W's (if K % 16 == 0) */
    const float *xs;
    int64_t ldx, peel;
    /* large M with our own GEMM (gemm_f32.c): x packed once for all tasks */
    const float *xp;
    bool acc; /* with xp: y += the product (lmc_cpu_matmul_add) */
};

__attribute__((unused)) static inline float w_at(const void *w, enum lmc_dtype dt, int64_t i) {
    switch (dt) {
    case LMC_DTYPE_F16: return lmc_f16_to_f32(((const uint16_t *)w)[i]);
    case LMC_DTYPE_BF16: return lmc_bf16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

#ifdef __AVX2__

static inline __m256 ld_f32(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 ld_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline __m256 ld_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline float sc_f32(const float *p) { return *p; }
static inline float sc_f16(const uint16_t *p) { return lmc_f16_to_f32(*p); }
static inline float sc_bf16(const uint16_t *p) { return lmc_bf16_to_f32(*p); }

/* Kernels per weight type S (element type T, vector load LD, scalar SC):
 *   k1x4: one x row against 4 W rows, two accumulators per row;
 *   k2x4: two x rows against 4 W rows (each W vector loaded once);
 *   k1x1: one x row against one W row. */
#define MM_KERNELS(S, T)                                                                      \
    static void k1x4_##S(const float *x, const T *w0, const T *w1, const T *w2, const T *w3,  \
                         int64_t K, float *out) {                                             \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                           \
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                            \
        int64_t i = 0;                                                                        \
        for (; i + 16 <= K; i += 16) {                                                        \
            __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);              \
            a0 = _mm256_fmadd_ps(ld_##S(w0 + i), x0, a0);                                     \
            a1 = _mm256_fmadd_ps(ld_##S(w1 + i), x0, a1);                                     \
            a2 = _mm256_fmadd_ps(ld_##S(w2 + i), x0, a2);                                     \
            a3 = _mm256_fmadd_ps(ld_##S(w3 + i), x0, a3);                                     \
            b0 = _mm256_fmadd_ps(ld_##S(w0 + i + 8), x1, b0);                                 \
            b1 = _mm256_fmadd_ps(ld_##S(w1 + i + 8), x1, b1);                                 \
            b2 = _mm256_fmadd_ps(ld_##S(w2 + i + 8), x1, b2);                                 \
            b3 = _mm256_fmadd_ps(ld_##S(w3 + i + 8), x1, b3);                                 \
        }                                                                                     \
        if (i + 8 <= K) {                                                                     \
            __m256 x0 = _mm256_loadu_ps(x + i);                                               \
            a0 = _mm256_fmadd_ps(ld_##S(w0 + i), x0, a0);                                     \
            a1 = _mm256_fmadd_ps(ld_##S(w1 + i), x0, a1);                                     \
            a2 = _mm256_fmadd_ps(ld_##S(w2 + i), x0, a2);                                     \
            a3 = _mm256_fmadd_ps(ld_##S(w3 + i), x0, a3);                                     \
            i += 8;                                                                           \
        }                                                                                     \
        float s0 = lmc_hsum256(_mm256_add_ps(a0, b0)), s1 = lmc_hsum256(_mm256_add_ps(a1, b1)); \
        float s2 = lmc_hsum256(_mm256_add_ps(a2, b2)), s3 = lmc_hsum256(_mm256_add_ps(a3, b3)); \
        for (; i < K; i++) {                                                                  \
            s0 += sc_##S(w0 + i) * x[i];                                                      \
            s1 += sc_##S(w1 + i) * x[i];                                                      \
            s2 += sc_##S(w2 + i) * x[i];                                                      \
            s3 += sc_##S(w3 + i) * x[i];                                                      \
        }                                                                                     \
        out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;                                   \
    }                                                                                         \
    static void k2x4_##S(const float *x, const float *xb, const T *w0, const T *w1,           \
                         const T *w2, const T *w3, int64_t K, float *out, float *outb) {      \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                           \
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                            \
        int64_t i = 0;                                                                        \
        for (; i + 8 <= K; i += 8) {                                                          \
            __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(xb + i), v;              \
            v = ld_##S(w0 + i), a0 = _mm256_fmadd_ps(v, x0, a0), b0 = _mm256_fmadd_ps(v, x1, b0); \
            v = ld_##S(w1 + i), a1 = _mm256_fmadd_ps(v, x0, a1), b1 = _mm256_fmadd_ps(v, x1, b1); \
            v = ld_##S(w2 + i), a2 = _mm256_fmadd_ps(v, x0, a2), b2 = _mm256_fmadd_ps(v, x1, b2); \
            v = ld_##S(w3 + i), a3 = _mm256_fmadd_ps(v, x0, a3), b3 = _mm256_fmadd_ps(v, x1, b3); \
        }                                                                                     \
        float s[8] = {lmc_hsum256(a0), lmc_hsum256(a1), lmc_hsum256(a2), lmc_hsum256(a3),     \
                      lmc_hsum256(b0), lmc_hsum256(b1), lmc_hsum256(b2), lmc_hsum256(b3)};    \
        for (; i < K; i++) {                                                                  \
            float v0 = sc_##S(w0 + i), v1 = sc_##S(w1 + i);                                   \
            float v2 = sc_##S(w2 + i), v3 = sc_##S(w3 + i);                                   \
            s[0] += v0 * x[i], s[1] += v1 * x[i], s[2] += v2 * x[i], s[3] += v3 * x[i];       \
            s[4] += v0 * xb[i], s[5] += v1 * xb[i], s[6] += v2 * xb[i], s[7] += v3 * xb[i];   \
        }                                                                                     \
        memcpy(out, s, 4 * sizeof(float));                                                    \
        memcpy(outb, s + 4, 4 * sizeof(float));                                               \
    }                                                                                         \
    static float k1x1_##S(const float *x, const T *w, int64_t K) {                            \
        __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;                                  \
        int64_t i = 0;                                                                        \
        for (; i + 32 <= K; i += 32) {                                                        \
            a = _mm256_fmadd_ps(ld_##S(w + i), _mm256_loadu_ps(x + i), a);                    \
            b = _mm256_fmadd_ps(ld_##S(w + i + 8), _mm256_loadu_ps(x + i + 8), b);            \
            c = _mm256_fmadd_ps(ld_##S(w + i + 16), _mm256_loadu_ps(x + i + 16), c);          \
            d = _mm256_fmadd_ps(ld_##S(w + i + 24), _mm256_loadu_ps(x + i + 24), d);          \
        }                                                                                     \
        for (; i + 8 <= K; i += 8) a = _mm256_fmadd_ps(ld_##S(w + i), _mm256_loadu_ps(x + i), a); \
        float s = lmc_hsum256(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));       \
        for (; i < K; i++) s += sc_##S(w + i) * x[i];                                         \
        return s;                                                                             \
    }                                                                                         \
    /* rows [r0, r1) of W for all M rows of x */                                              \
    static void rows_##S(const struct mm_job *j, int64_t r0, int64_t r1) {                    \
        const T *w = j->w;                                                                    \
        int64_t K = j->K, N = j->N, M = j->M, r = r0;                                         \
        if (M == 1) { /* one sequential stream through the slice */                           \
            for (; r < r1; r++) j->y[r] = k1x1_##S(j->x, w + r * K, K);                       \
            return;                                                                           \
        }                                                                                     \
        for (; r + 4 <= r1; r += 4) {                                                         \
            const T *w0 = w + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;                \
            int64_t m = 0;                                                                    \
            for (; m + 2 <= M; m += 2)                                                        \
                k2x4_##S(j->x + m * K, j->x + (m + 1) * K, w0, w1, w2, w3, K,                 \
                         j->y + m * N + r, j->y + (m + 1) * N + r);                           \
            if (m < M) k1x4_##S(j->x + m * K, w0, w1, w2, w3, K, j->y + m * N + r);           \
        }                                                                                     \
        for (; r < r1; r++)                                                                   \
            for (int64_t m = 0; m < M; m++) j->y[m * N + r] = k1x1_##S(j->x + m * K, w + r * K, K); \
    }

MM_KERNELS(f32, float)
MM_KERNELS(f16, uint16_t)
MM_KERNELS(bf16, uint16_t)

static void rows_dispatch(const struct mm_job *j, int64_t r0, int64_t r1) {
    switch (j->dt) {
    case LMC_DTYPE_F16: rows_f16(j, r0, r1); break;
    case LMC_DTYPE_BF16: rows_bf16(j, r0, r1); break;
    default: rows_f32(j, r0, r1); break;
    }
}


#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define MM_AVX512 1
/* M=1 F16/BF16 with AVX-512 where the small-M kernel is off (ctx
 * mm_small_max = 0; by default M=1 F16/BF16 rows take that kernel's 4-row
 * tiles, ops_cpu.h): one W row at a time (a single sequential
 * stream per thread), 16 weights per 256-bit load widened to 16 lanes, four
 * accumulators, no software prefetch in the loop (the hardware prefetchers
 * follow the stream; only its first 4 KB are prefetched, small_rows).
 * Measured by bench/bench_gemv16 (1 thread, CPU time, 256 MB of weights,
 * bench/results/moe-cpu-2026-12-06.md): the 4 KB-ahead T0 prefetch this
 * loop had streamed at 43-50% (F16) and 62-68% (BF16) of the 1-thread read;
 * without it 75-84% for both; T2 hints 8-16 KB ahead 69-74%. (F32 stays on
 * AVX2: 64-byte loads of unaligned rows, the usual case for mmapped
 * weights, stream markedly slower on this CPU than 32-byte ones.) */
static inline __m512 ld512_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline __m512 ld512_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
#define DOT512(S)                                                                             \
    static float dot512_##S(const float *x, const uint16_t *w, int64_t K) {                   \
        __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;                                  \
        int64_t i = 0;                                                                        \
        for (; i + 64 <= K; i += 64) {                                                        \
            a = _mm512_fmadd_ps(ld512_##S(w + i), _mm512_loadu_ps(x + i), a);                 \
            b = _mm512_fmadd_ps(ld512_##S(w + i + 16), _mm512_loadu_ps(x + i + 16), b);      \
            c = _mm512_fmadd_ps(ld512_##S(w + i + 32), _mm512_loadu_ps(x + i + 32), c);      \
            d = _mm512_fmadd_ps(ld512_##S(w + i + 48), _mm512_loadu_ps(x + i + 48), d);      \
        }                                                                                     \
        for (; i + 16 <= K; i += 16)                                                          \
            a = _mm512_fmadd_ps(ld512_##S(w + i), _mm512_loadu_ps(x + i), a);                 \
        float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d))); \
        for (; i < K; i++) s += sc_##S(w + i) * x[i];                                         \
        return s;                                                                             \
    }
DOT512(f16)
DOT512(bf16)

/* M=1 F32: the first step is masked so that every later 64-byte W load is
 * aligned (64-byte loads that split cache lines stream markedly slower on
 * this CPU than 32-byte ones); K tail masked too. The software prefetch is
 * prefetchnta: measured with bench/bench_decode_f32 (a decode's ~400 MB of
 * M=1 matmuls, variants interleaved with order rotated per round), NTA
 * streamed 3-8% faster than T0 on anonymous, madvised-huge and mmapped-file
 * weights alike (won 26-30 of 30 same-round pairs), at 50-80 GB/s.
 * Unchanged or worse there: no prefetch (-6% at the model's 24-byte row
 * offset), 1-2 KB or 6-8 KB distance (2-3 KB within 1%), NTA for the
 * start burst too (same), 128 floats and 8 accumulators per iteration
 * (-9%), 4 W rows at once (-16% with NTA; 2 rows without prefetch -36%),
 * 256-bit loads without prefetch like membw's read loop (T0 +-2%). */
#ifndef MM_PF_BYTES_F32
#define MM_PF_BYTES_F32 4096
#endif
static float dot512_f32(const float *x, const float *w, int64_t K) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    int64_t i = LMC_MIN(K, (int64_t)((-(uintptr_t)w & 63) / sizeof(float)));
    if (i > 0) {
        __mmask16 k = (__mmask16)((1u << i) - 1);
        a = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w), _mm512_maskz_loadu_ps(k, x));
    }
    for (; i + 64 <= K; i += 64) {
        const char *p = (const char *)(w + i) + MM_PF_BYTES_F32;
        _mm_prefetch(p, _MM_HINT_NTA);
        _mm_prefetch(p + 64, _MM_HINT_NTA);
        _mm_prefetch(p + 128, _MM_HINT_NTA);
        _mm_prefetch(p + 192, _MM_HINT_NTA);
        a = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a);
        b = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), b);
        c = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), c);
        d = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), d);
    }
    for (; i + 16 <= K; i += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a);
    if (i < K) {
        __mmask16 k = (__mmask16)((1u << (K - i)) - 1);
        b = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, w + i), _mm512_maskz_loadu_ps(k, x + i), b);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

/* Small M >= 4 with AVX-512: 4 x rows against 4 W rows per 16-wide step
 * (16 accumulators), each converted W vector used 4 times; K tails with
 * masked loads. */
static inline __m512 ld512_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 ldm512_f32(const float *p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
static inline __m512 ldm512_f16(const uint16_t *p, __mmask16 k) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}
static inline __m512 ldm512_bf16(const uint16_t *p, __mmask16 k) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
/* 4 sums of 16 lanes each -> one 4-float vector */
static inline __m128 reduce4_512(__m512 a, __m512 b, __m512 c, __m512 d) {
#define MM_FOLD(v) _mm256_add_ps(_mm512_castps512_ps256(v), \
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(MM_FOLD(a), MM_FOLD(b)),
                              _mm256_hadd_ps(MM_FOLD(c), MM_FOLD(d)));
#undef MM_FOLD
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#define MM_MB 48 /* x rows per L2 block, multiple of 4 */
#define MM_U4(v) _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)
/* 4 x rows (stride ldx) against 4 W rows (stride ldw) over K, into y (stride
 * ldy). The first `peel` elements are taken as one masked step so that the
 * following loads are aligned (the caller staged x to match W's alignment). */
#define K4X4_512(S, T)                                                                        \
    static void k4x4_512_##S(const float *x, int64_t ldx, const T *w, int64_t ldw, int64_t K, \
                             int64_t peel, float *y, int64_t ldy) {                           \
        __m512 acc[4][4];                                                                     \
        MM_U4(m) MM_U4(r) acc[m][r] = _mm512_setzero_ps();                                    \
        for (int64_t i = 0; i < K;) {                                                         \
            int64_t n = LMC_MIN(i == 0 && peel > 0 ? peel : 16, K - i);                       \
            __m512 wv[4], xv[4];                                                              \
            if (n == 16) {                                                                    \
                MM_U4(r) wv[r] = ld512_##S(w + r * ldw + i);                                  \
                MM_U4(m) xv[m] = _mm512_loadu_ps(x + m * ldx + i);                            \
            } else {                                                                          \
                __mmask16 k = (__mmask16)((1u << n) - 1);                                     \
                MM_U4(r) wv[r] = ldm512_##S(w + r * ldw + i, k);                              \
                MM_U4(m) xv[m] = _mm512_maskz_loadu_ps(k, x + m * ldx + i);                   \
            }                                                                                 \
            MM_U4(m) MM_U4(r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv[m], acc[m][r]);           \
            i += n;                                                                           \
        }                                                                                     \
        MM_U4(m) _mm_storeu_ps(y + m * ldy, reduce4_512(acc[m][0], acc[m][1], acc[m][2], acc[m][3])); \
    }                                                                                         \
    static void rows512_##S(const struct mm_job *j, int64_t r0, int64_t r1) {                 \
        const T *w = j->w;                                                                    \
        int64_t K = j->K, N = j->N, M = j->M, r = r0;                                         \
        /* blocks of MM_MB staged x rows stay in L2 while the slice's W tiles pass */         \
        for (int64_t mb = 0; mb + 4 <= M; mb += MM_MB) {                                      \
            int64_t me = LMC_MIN(M, mb + MM_MB) & ~(int64_t)3;                                \
            for (int64_t rr = r0; rr + 4 <= r1; rr += 4)                                      \
                for (int64_t m = mb; m < me; m += 4)                                          \
                    k4x4_512_##S(j->xs + m * j->ldx, j->ldx, w + rr * K, K, K, j->peel,       \
                                 j->y + m * N + rr, N);                                       \
        }                                                                                     \
        for (; r + 4 <= r1; r += 4) {                                                         \
            const T *w0 = w + r * K;                                                          \
            int64_t m = M & ~(int64_t)3;                                                      \
            for (; m + 2 <= M; m += 2)                                                        \
                k2x4_##S(j->x + m * K, j->x + (m + 1) * K, w0, w0 + K, w0 + 2 * K, w0 + 3 * K, \
                         K, j->y + m * N + r, j->y + (m + 1) * N + r);                        \
            if (m < M)                                                                        \
                k1x4_##S(j->x + m * K, w0, w0 + K, w0 + 2 * K, w0 + 3 * K, K, j->y + m * N + r); \
        }                                                                                     \
        for (; r < r1; r++)                                                                   \
            for (int64_t m = 0; m < M; m++)                                                   \
                j->y[m * N + r] = k1x1_##S(j->x + m * K, w + r * K, K);                       \
    }
K4X4_512(f32, float)
K4X4_512(f16, uint16_t)
K4X4_512(bf16, uint16_t)

static void rows512_dispatch(const struct mm_job *j, int64_t r0, int64_t r1) {
    switch (j->dt) {
    case LMC_DTYPE_F16: rows512_f16(j, r0, r1); break;
    case LMC_DTYPE_BF16: rows512_bf16(j, r0, r1); break;
    default: rows512_f32(j, r0, r1); break;
    }
}
#endif

#else /* scalar reference path */

static void rows_dispatch(const struct mm_job *j, int64_t r0, int64_t r1) {
    int64_t K = j->K, N = j->N;
    for (int64_t r = r0; r < r1; r++) {
        const char *wr = (const char *)j->w + (size_t)(r * K) * (size_t)lmc_dtype_size(j->dt);
        for (int64_t m = 0; m < j->M; m++) {
            const float *x = j->x + m * K;
            float s = 0;
            for (int64_t i = 0; i < K; i++) s += w_at(wr, j->dt, i) * x[i];
            j->y[m * N + r] = s;
        }
    }
}

#endif

static void add_bias(const struct mm_job *j, int64_t r0, int64_t r1) {
    if (!j->bias) return;
    for (int64_t m = 0; m < j->M; m++) {
        float *yr = j->y + m * j->N;
        for (int64_t r = r0; r < r1; r++) yr[r] += j->bias[r];
    }
}

/* rows [r0, r1) of W for all M rows of x, bias included (M < 4, or
 * lmc_cpu_smallm_ok with AVX-512 or AVX2: the small-M kernel;
 * M >= 4 only in builds without AVX-512). `start`: a thread's stream
 * starts here (not where its previous call ended). */
static void small_rows(const struct mm_job *j, int64_t r0, int64_t r1, bool start) {
#ifdef __AVX2__
    if ((j->M == 1 || lmc_cpu_smallm_ok(j->c, j->M, j->K, j->dt)) && start) { /* get many misses in flight at once */
        size_t es = (size_t)lmc_dtype_size(j->dt);
        const char *p = (const char *)j->w + (size_t)(r0 * j->K) * es;
        size_t n = LMC_MIN((size_t)((r1 - r0) * j->K) * es, (size_t)MM_PF_START);
        for (size_t b = 0; b < n; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
    }
#endif
#ifdef LMC_CPU_SMALLM
    if (lmc_cpu_smallm_ok(j->c, j->M, j->K, j->dt)) {
        lmc_cpu_matmul_smallm_rows(j->y, j->x, j->M, j->w, j->dt, j->K, j->N, r0, r1);
        add_bias(j, r0, r1);
        return;
    }
#endif
#ifdef MM_AVX512
    if (j->M >= 4) {
        rows512_dispatch(j, r0, r1);
    } else if (j->M == 1) {
        const uint16_t *w = j->w;
        if (j->dt == LMC_DTYPE_F16)
            for (int64_t r = r0; r < r1; r++) j->y[r] = dot512_f16(j->x, w + r * j->K, j->K);
        else if (j->dt == LMC_DTYPE_BF16)
            for (int64_t r = r0; r < r1; r++) j->y[r] = dot512_bf16(j->x, w + r * j->K, j->K);
        else
            for (int64_t r = r0; r < r1; r++)
                j->y[r] = dot512_f32(j->x, (const float *)j->w + r * j->K, j->K);
    } else
#endif
        rows_dispatch(j, r0, r1);
    add_bias(j, r0, r1);
}

static void small_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mm_job *j = arg;
    int64_t r0, r1;
    lmc_cpu_range(j->N, j->n_tasks, t, 4, &r0, &r1);
    small_rows(j, r0, r1, true);
}

/* ---- M < 4: one job over the concatenated weight bytes of one or more
 * matrices sharing x (matmul_multi; matmul is the case of one). The bytes
 * are cut into units of c->mm_unit_bytes and the units into one contiguous
 * range per thread. A task claims units from the front of its own range, so
 * each thread streams one sequential run (which the hardware prefetchers
 * follow; every jump costs a DRAM latency and a prefetcher ramp). A task
 * whose range is empty moves the back half of another's remainder into its
 * own range and goes on, so the threads finish together even when one
 * starts late or is slowed down, with few jumps. A unit may finish one
 * matrix and start the next. Claims are a CAS on the range's word
 * (front << 32 | back); the words are written before lmc_pool_run, which
 * publishes them, and the pool's completion count orders the results.
 * Below 3 units the calling thread does it all (no dispatch). */
#define MM_MULTI_MAX 16 /* an MoE layer's gate and up for 8 experts: one job */
struct mm_multi_job {
    struct mm_job part[MM_MULTI_MAX];
    int64_t start[MM_MULTI_MAX + 1]; /* byte offset of each part in the concatenation */
    int64_t row_bytes[MM_MULTI_MAX];
    int n;
    int64_t unit, n_tasks;
    _Atomic uint64_t *claim;         /* task t's word: claim[t * LMC_CPU_CLAIM_STRIDE] */
};

/* First row of part i at or after concatenated byte offset b, on a multiple
 * of 4 rows (or N): monotonic in b, so consecutive units tile every part. */
static int64_t multi_row(const struct mm_multi_job *mj, int i, int64_t b) {
    if (b <= mj->start[i]) return 0;
    if (b >= mj->start[i + 1]) return mj->part[i].N;
    int64_t rb = mj->row_bytes[i], r = (b - mj->start[i] + rb - 1) / rb;
    return LMC_MIN((r + 3) & ~(int64_t)3, mj->part[i].N);
}

/* bytes [b0, b1) of the concatenation; `start` as in small_rows */
static void multi_bytes(const struct mm_multi_job *mj, int64_t b0, int64_t b1, bool start) {
    for (int i = 0; i < mj->n; i++) {
        if (mj->start[i + 1] <= b0 || mj->start[i] >= b1) continue;
        int64_t r0 = multi_row(mj, i, b0), r1 = multi_row(mj, i, b1);
        if (r0 < r1) small_rows(&mj->part[i], r0, r1, start);
        start = true; /* the next matrix is elsewhere in memory */
    }
}

/* The front unit of the range behind w; -1 if empty. */
static int64_t claim_front(_Atomic uint64_t *w) {
    uint64_t v = atomic_load_explicit(w, memory_order_relaxed);
    for (;;) {
        if ((uint32_t)(v >> 32) >= (uint32_t)v) return -1;
        if (atomic_compare_exchange_weak_explicit(w, &v, v + ((uint64_t)1 << 32),
                                                  memory_order_relaxed, memory_order_relaxed))
            return (int64_t)(v >> 32);
    }
}

/* Moves the back half of the range behind `victim` (at least one unit)
 * into the empty range `own`; false if the victim's range is empty. `own`
 * is written while empty: no other CAS on it can succeed then (a thief's
 * CAS expects a non-empty value, and no non-empty value ever comes back,
 * as units only move from unclaimed to claimed). */
static bool steal_half(_Atomic uint64_t *victim, _Atomic uint64_t *own) {
    uint64_t v = atomic_load_explicit(victim, memory_order_relaxed);
    for (;;) {
        uint64_t f = v >> 32, b = (uint32_t)v;
        if (f >= b) return false;
        uint64_t mid = f + (b - f) / 2;
        if (atomic_compare_exchange_weak_explicit(victim, &v, f << 32 | mid, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            atomic_store_explicit(own, mid << 32 | b, memory_order_relaxed);
            return true;
        }
    }
}

static void multi_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mm_multi_job *mj = arg;
    int64_t u, total = mj->start[mj->n], n = mj->n_tasks;
    _Atomic uint64_t *own = &mj->claim[t * LMC_CPU_CLAIM_STRIDE];
    for (bool start = true;; start = true) {
        for (; (u = claim_front(own)) >= 0; start = false)
            multi_bytes(mj, u * mj->unit, LMC_MIN(total, (u + 1) * mj->unit), start);
        int64_t s = 1;
        while (s < n && !steal_half(&mj->claim[((t + s) % n) * LMC_CPU_CLAIM_STRIDE], own)) s++;
        if (s == n) return;
    }
}

/* y[i] = x[i] (M[i] rows) @ w[i]^T (+ bias[i]) as one job, for up to
 * MM_MULTI_MAX matrices with K > 0, each M[i] < 4 (or <= mm_small_max):
 * matmul_multi (x and M shared) and the grouped small-M products of MoE
 * experts (lmc_cpu_matmul_small_group). */
static void multi_small_x(struct lmc_cpu_ctx *c, int n, float *const *y, const float *const *x,
                          const int64_t *M, const struct lmc_mat *const *w, const float *const *bias) {
    struct mm_multi_job mj;
    memset(&mj, 0, sizeof mj);
    for (int i = 0; i < n; i++) {
        struct mm_job *j = &mj.part[mj.n];
        if (w[i]->rows == 0 || M[i] == 0) continue;
        *j = (struct mm_job){c, y[i], x[i], M[i], w[i]->rows, w[i]->cols, w[i]->data, w[i]->dtype,
                             bias ? bias[i] : NULL, 1, NULL, 0, 0, NULL, false};
        mj.row_bytes[mj.n] = j->K * lmc_dtype_size(j->dt);
        mj.start[mj.n + 1] = mj.start[mj.n] + j->N * mj.row_bytes[mj.n];
        mj.n++;
    }
    int64_t total = mj.start[mj.n];
    if (total == 0) return;
    /* units fit the 32-bit halves of a claim word */
    mj.unit = LMC_MAX(LMC_MAX(1, c->mm_unit_bytes), total / ((int64_t)1 << 30) + 1);
    int64_t n_units = (total + mj.unit - 1) / mj.unit;
    mj.n_tasks = LMC_MIN(c->n_threads, n_units / 2);
    if (mj.n_tasks <= 1) {
        multi_bytes(&mj, 0, total, true);
        return;
    }
    mj.claim = c->mm_claim;
    for (int64_t t = 0; t < mj.n_tasks; t++)
        atomic_store_explicit(&mj.claim[t * LMC_CPU_CLAIM_STRIDE],
                              (uint64_t)(n_units * t / mj.n_tasks) << 32 |
                                  (uint64_t)(n_units * (t + 1) / mj.n_tasks),
                              memory_order_relaxed);
    lmc_pool_run(c->pool, mj.n_tasks, multi_task, &mj);
}

static bool mat_ok(const struct lmc_mat *w) {
    return (w->dtype == LMC_DTYPE_F32 || w->dtype == LMC_DTYPE_F16 || w->dtype == LMC_DTYPE_BF16) &&
           w->rows >= 0 && w->cols >= 0;
}

/* multi_small_x with x and M shared */
static void multi_small(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                        const struct lmc_mat *const *w, const float *const *bias) {
    const float *xs[MM_MULTI_MAX];
    int64_t Ms[MM_MULTI_MAX];
    LMC_ASSERT(n <= MM_MULTI_MAX);
    for (int i = 0; i < n; i++) xs[i] = x, Ms[i] = M;
    multi_small_x(c, n, y, xs, Ms, w, bias);
}

bool lmc_cpu_matmul_small_group(struct lmc_cpu_ctx *c, int n, float *const *y, const float *const *x,
                                const int64_t *M, const struct lmc_mat *const *w) {
    for (int i = 0; i < n; i++) {
        const struct lmc_mat *m = w[i];
        LMC_ASSERT(M[i] >= 0);
        /* the products lmc_cpu_matmul itself sends to multi_small */
        if (!mat_ok(m) || m->cols == 0 || lmc_cpu_pf_ok(c, M[i], m->cols, m->dtype) ||
            M[i] >= lmc_cpu_gemm_from(c, m->dtype) ||
            !(M[i] < 4 || lmc_cpu_smallm_ok(c, M[i], m->cols, m->dtype)))
            return false;
    }
    for (int i = 0; i < n; i += MM_MULTI_MAX)
        multi_small_x(c, LMC_MIN(MM_MULTI_MAX, n - i), y + i, x + i, M + i, w + i, NULL);
    return true;
}

static bool mm_rows(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                    const struct lmc_mat *const *w, const float *const *bias);
static bool mm_gemm_multi(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                          const struct lmc_mat *const *w, const float *const *bias);
static void mm_route_prompt(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t P,
                            const struct lmc_mat *const *w, const float *const *bias);

void lmc_cpu_matmul_multi(void *ctx, int n, float *const *y, const float *x, int64_t M,
                          const struct lmc_mat *const *w, const float *const *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n >= 0 && M >= 0);
    for (int i = 0; i < n; i++) LMC_ASSERT(mat_ok(w[i]) && w[i]->cols == w[0]->cols);
    if (n == 0 || M == 0) return;
    bool routed = true; /* the server's rows by kind: the leading P prompt rows, then generated ones */
    for (int i = 0; i < n; i++) routed = routed && lmc_cpu_routed(c, M, w[i]);
    if (routed) {
        int64_t P = lmc_cpu_route_pf_rows(c, w[0]);
        for (int i = 1; i < n; i++) LMC_ASSERT(lmc_cpu_route_pf_rows(c, w[i]) == P);
        if (P) mm_route_prompt(c, n, y, x, P, w, bias);
        if (P < M) {
            float *yr[MM_MULTI_MAX];
            for (int i0 = 0; i0 < n; i0 += MM_MULTI_MAX) {
                int k = LMC_MIN(MM_MULTI_MAX, n - i0);
                for (int i = 0; i < k; i++) yr[i] = y[i0 + i] + P * w[i0 + i]->rows;
                lmc_cpu_matmul_dr(c, k, yr, x + P * w[0]->cols, M - P, w + i0, bias ? bias + i0 : NULL);
            }
        }
        return;
    }
    bool pf = true; /* the bf16 prefill GEMM for every matrix: one job, x packed once */
    for (int i = 0; i < n; i++) pf = pf && lmc_cpu_pf_ok(c, M, w[i]->cols, w[i]->dtype);
    if (pf) {
        lmc_cpu_matmul_pf(c, n, y, x, M, w, bias);
        return;
    }
    bool small = true; /* one GEMV-style job: M < 4, or the small-M kernel for every matrix */
    for (int i = 0; i < n; i++) small = small && (M < 4 || lmc_cpu_smallm_ok(c, M, w[i]->cols, w[i]->dtype));
    if (!small || M >= lmc_cpu_gemm_from(c, w[0]->dtype) || w[0]->cols == 0) {
        if (mm_rows(c, n, y, x, M, w, bias)) return; /* F32, large M: one job over x's row blocks */
        if (mm_gemm_multi(c, n, y, x, M, w, bias)) return; /* large M: x packed once, one job */
        for (int i = 0; i < n; i++) lmc_cpu_matmul(ctx, y[i], x, M, w[i], bias ? bias[i] : NULL);
        return;
    }
    for (int i = 0; i < n; i += MM_MULTI_MAX)
        multi_small(c, LMC_MIN(MM_MULTI_MAX, n - i), y + i, x, M, w + i, bias ? bias + i : NULL);
}

/* x packed for our GEMM (lmc_cpu_gemm_f32_apack) on the pool, in ranges of rows */
#define MM_XPACK_ROWS (8 * LMC_GEMM_F32_MR)
struct mm_xpack_job {
    float *ap;
    const float *x;
    int64_t M, K;
};

static void mm_xpack_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mm_xpack_job *j = arg;
    lmc_cpu_gemm_f32_apack(j->ap, false, j->M, j->K, j->x, j->K, t * MM_XPACK_ROWS,
                           LMC_MIN(j->M, (t + 1) * MM_XPACK_ROWS));
}

/* Large-M products through our GEMM (gemm_f32.c): F16/BF16 weights, widened
 * while packed. F32 weights (training, fp32 models) stay on OpenBLAS sgemm on
 * every path (gemm_task, mm_rows, matmul_bwd), so a product's bits do not
 * depend on which path its M takes: the multi-rank training tests compare a
 * one-process run (M = 1024 rows: mm_rows) with ranks of fewer rows. */
static bool mm_ours(const struct lmc_cpu_ctx *c, enum lmc_dtype dt) {
    return dt != LMC_DTYPE_F32 && lmc_cpu_gemm_f32_native() && !c->gemm_blas;
}

static void gemm_task(void *arg, int64_t t, int thread) {
    const struct mm_job *j = arg;
    int64_t nb = j->xp ? MM_OURS_NB : MM_GEMM_NB, r0 = t * nb, r1 = LMC_MIN(j->N, r0 + nb), K = j->K;
    if (j->xp) { /* W rows widened while packed */
        const char *w = (const char *)j->w + r0 * K * lmc_dtype_size(j->dt);
        lmc_cpu_gemm_f32_pa(true, j->M, r1 - r0, K, 1.0f, j->xp, w, j->dt, K, j->acc ? 1.0f : 0.0f, j->y + r0,
                            j->N, j->c->scratch[thread]);
        add_bias(j, r0, r1);
        return;
    }
    const float *b;
    if (j->dt == LMC_DTYPE_F32) {
        b = (const float *)j->w + r0 * K;
    } else {
        float *s = j->c->scratch[thread];
        const uint16_t *w = (const uint16_t *)j->w + r0 * K;
        lmc_cpu_row_to_f32(s, w, j->dt, (r1 - r0) * K);
        b = s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->M, (int)(r1 - r0), (int)K, 1.0f,
                j->x, (int)K, b, (int)K, 0.0f, j->y + r0, (int)j->N);
    add_bias(j, r0, r1);
}

/* matmul_multi's large-M products with our GEMM (not mm_rows): x packed
 * once, the matrices' 64-row W blocks (MM_OURS_NB) as the tasks of one pool run (each
 * task the same call as lmc_cpu_matmul's, so the same bits) */
struct mm_gmulti_job {
    int n;
    struct mm_job part[MM_MULTI_MAX];
    int64_t start[MM_MULTI_MAX + 1]; /* first task of each part */
};

static void gemm_multi_task(void *arg, int64_t t, int thread) {
    struct mm_gmulti_job *j = arg;
    int i = 0;
    while (t >= j->start[i + 1]) i++;
    gemm_task(&j->part[i], t - j->start[i], thread);
}

/* x packed for our GEMM into ctx->xbuf on the pool */
static const float *mm_xpack(struct lmc_cpu_ctx *c, const float *x, int64_t M, int64_t K) {
    lmc_cpu_xbuf_reserve(c, lmc_cpu_gemm_f32_apack_words(M, K));
    struct mm_xpack_job xj = {c->xbuf, x, M, K};
    lmc_pool_run(c->pool, (M + MM_XPACK_ROWS - 1) / MM_XPACK_ROWS, mm_xpack_task, &xj);
    return c->xbuf;
}

/* The products of n matrices (F16/BF16, K columns each) with our GEMM: x
 * packed once, each MM_MULTI_MAX matrices' 64-row W blocks (MM_OURS_NB) the
 * tasks of one pool run (each task the same call as lmc_cpu_matmul's, so
 * the same bits). */
static void mm_gemm_run(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                        const struct lmc_mat *const *w, const float *const *bias) {
    const int64_t K = w[0]->cols;
    const float *xp = mm_xpack(c, x, M, K);
    lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_f32_ws(M, MM_OURS_NB, K));
    for (int i0 = 0; i0 < n; i0 += MM_MULTI_MAX) {
        struct mm_gmulti_job j = {.n = 0};
        for (int i = i0; i < n && i < i0 + MM_MULTI_MAX; i++) {
            if (w[i]->rows == 0) continue;
            j.part[j.n] = (struct mm_job){c, y[i], x, M, w[i]->rows, K, w[i]->data, w[i]->dtype,
                                          bias ? bias[i] : NULL, 1, NULL, 0, 0, xp, false};
            j.start[j.n + 1] = j.start[j.n] + (w[i]->rows + MM_OURS_NB - 1) / MM_OURS_NB;
            j.n++;
        }
        if (j.n) lmc_pool_run(c->pool, j.start[j.n], gemm_multi_task, &j);
    }
}

/* true if the products went through gemm_multi_task */
static bool mm_gemm_multi(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                          const struct lmc_mat *const *w, const float *const *bias) {
    int64_t K = w[0]->cols;
    if (n > MM_MULTI_MAX || M < lmc_cpu_gemm_from(c, w[0]->dtype) || K == 0 || K > INT32_MAX || M > INT32_MAX)
        return false;
    for (int i = 0; i < n; i++)
        if (!mm_ours(c, w[i]->dtype) || w[i]->cols != K || w[i]->rows > INT32_MAX || lmc_cpu_routed(c, M, w[i]) ||
            lmc_cpu_pf_ok(c, M, K, w[i]->dtype))
            return false;
    mm_gemm_run(c, n, y, x, M, w, bias);
    return true;
}

/* The serving route's prompt rows (lmc_backend_cpu_route_rows): the bf16
 * prefill GEMM with AVX512-BF16, else our GEMM (AVX2) for any P >= 1: each
 * element is the same sum whatever P and wherever the row sits
 * (gemm_f32.c; a few rows take its panel mode, so a short chunk costs about
 * one read of W), so a prompt's rows keep their bits however the scheduler
 * chunks and batches them (mm_gemm_run). */
static void mm_route_prompt(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t P,
                            const struct lmc_mat *const *w, const float *const *bias) {
    if (c->has_bf16) {
        lmc_cpu_matmul_pf(c, n, y, x, P, w, bias);
        return;
    }
    const int64_t K = w[0]->cols;
    LMC_ASSERT(K > 0 && K <= INT32_MAX && P <= INT32_MAX);
    for (int i = 0; i < n; i++) LMC_ASSERT(mm_ours(c, w[i]->dtype) && w[i]->cols == K && w[i]->rows <= INT32_MAX);
    mm_gemm_run(c, n, y, x, P, w, bias);
}

/* F32 weights from MM_ROWS_MIN_M rows (training's B*T tokens, long
 * prefills): tasks own blocks of x's rows and run every matrix of the job
 * on them (one GEMM call each), so each row of x is packed once per matrix
 * instead of once per 128 W rows, x's block stays in cache across the
 * matrices, and narrow W (N = 288: 3 W blocks) no longer leaves a thread
 * idle. Each element is the same dot product over K as gemm_task's (the
 * same bits, with our GEMM). */
#define MM_ROWS_MIN_M 1024
#define MM_ROWS_MB 512 /* x rows per task (4096 training rows: 8 tasks) */
struct mm_rows_job {
    int n;
    float *y[MM_MULTI_MAX];
    const float *w[MM_MULTI_MAX], *bias[MM_MULTI_MAX];
    int64_t N[MM_MULTI_MAX];
    const float *x;
    int64_t M, K, mb;
};

static void mm_rows_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mm_rows_job *j = arg;
    int64_t r0 = t * j->mb, r1 = LMC_MIN(j->M, r0 + j->mb), K = j->K;
    for (int i = 0; i < j->n; i++) {
        int64_t N = j->N[i];
        float *y = j->y[i] + r0 * N;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)N, (int)K, 1.0f,
                    j->x + r0 * K, (int)K, j->w[i], (int)K, 0.0f, y, (int)N);
        if (j->bias[i])
            for (int64_t m = 0; m < r1 - r0; m++)
                for (int64_t c = 0; c < N; c++) y[m * N + c] += j->bias[i][c];
    }
}

/* true if the products went through mm_rows_task: all F32, M from MM_ROWS_MIN_M */
static bool mm_rows(struct lmc_cpu_ctx *c, int n, float *const *y, const float *x, int64_t M,
                    const struct lmc_mat *const *w, const float *const *bias) {
    if (n > MM_MULTI_MAX || M < MM_ROWS_MIN_M || M < c->gemm_min_m || M > INT32_MAX) return false;
    struct mm_rows_job j = {.n = n, .x = x, .M = M, .K = w[0]->cols};
    if (j.K == 0 || j.K > INT32_MAX) return false;
    for (int i = 0; i < n; i++) {
        if (w[i]->dtype != LMC_DTYPE_F32 || w[i]->cols != j.K || w[i]->rows == 0 || w[i]->rows > INT32_MAX ||
            lmc_cpu_routed(c, M, w[i]))
            return false;
        j.y[i] = y[i], j.w[i] = w[i]->data, j.bias[i] = bias ? bias[i] : NULL, j.N[i] = w[i]->rows;
    }
    /* fixed blocks: the same products for any thread count */
    j.mb = MM_ROWS_MB;
    lmc_pool_run(c->pool, (M + j.mb - 1) / j.mb, mm_rows_task, &j);
    return true;
}

void lmc_cpu_matmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                    const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(mat_ok(w) && M >= 0);
    if (M == 0 || w->rows == 0) return;
    struct mm_job j = {c, y, x, M, w->rows, w->cols, w->data, w->dtype, bias, 1, NULL, 0, 0, NULL, false};
    if (w->cols == 0) {
        for (int64_t i = 0; i < M * j.N; i++) y[i] = 0;
        for (int64_t m = 0; bias && m < M; m++) memcpy(y + m * j.N, bias, j.N * sizeof(float));
        return;
    }
    if (lmc_cpu_routed(c, M, w)) { /* the server's rows by kind: the leading P prompt rows, then generated ones */
        int64_t P = lmc_cpu_route_pf_rows(c, w);
        if (P) mm_route_prompt(c, 1, &y, x, P, &w, &bias);
        float *yr = y + P * j.N;
        if (P < M) lmc_cpu_matmul_dr(c, 1, &yr, x + P * j.K, M - P, &w, &bias);
        return;
    }
    if (lmc_cpu_pf_ok(c, M, j.K, j.dt)) {
        lmc_cpu_matmul_pf(c, 1, &y, x, M, &w, &bias);
        return;
    }
    if (j.dt == LMC_DTYPE_F32 && mm_rows(c, 1, &y, x, M, &w, &bias)) return;
    if (M >= lmc_cpu_gemm_from(c, j.dt) && j.K <= INT32_MAX && j.N <= INT32_MAX && M <= INT32_MAX) {
        if (mm_ours(c, j.dt)) {
            j.xp = mm_xpack(c, x, M, j.K);
            lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_f32_ws(M, MM_OURS_NB, j.K));
        } else if (j.dt != LMC_DTYPE_F32) {
            lmc_cpu_scratch_reserve(c, (size_t)(MM_GEMM_NB * j.K));
        }
        int64_t nb = j.xp ? MM_OURS_NB : MM_GEMM_NB;
        j.n_tasks = (j.N + nb - 1) / nb;
        lmc_pool_run(c->pool, j.n_tasks, gemm_task, &j);
        return;
    }
    if (M < 4 || lmc_cpu_smallm_ok(c, M, j.K, j.dt)) { /* the same job as one of several matmuls */
        multi_small(c, 1, &y, x, M, &w, &bias);
        return;
    }
    j.n_tasks = lmc_cpu_ntasks(c, j.N * j.K * M, MM_MIN_TASK_ELEMS, MM_OVERSPLIT);
#ifdef MM_AVX512
    if (M >= 4) {
        int64_t es = lmc_dtype_size(j.dt), woff = (int64_t)(((uintptr_t)j.w / (uintptr_t)es) % 16);
        j.peel = (16 - woff) % 16;
        j.ldx = (j.K + 15) / 16 * 16 + 16;
        lmc_cpu_xbuf_reserve(c, (size_t)(M * j.ldx));
        float *xs = c->xbuf + woff;
        for (int64_t m = 0; m < M; m++) memcpy(xs + m * j.ldx, x + m * j.K, (size_t)j.K * sizeof(float));
        j.xs = xs;
    }
#endif
    lmc_pool_run(c->pool, j.n_tasks, small_task, &j);
}

/* ---- fused matmul_add / matmul_swiglu (ops_cpu.h) ---- */

/* true if x (M rows) times every one of w goes through our GEMM on the
 * route lmc_cpu_matmul / matmul_multi would take for it (large M, F16/BF16
 * weights, the rows not routed by kind, no bf16 prefill GEMM) */
static bool mm_ours_route(const struct lmc_cpu_ctx *c, int n, int64_t M, const struct lmc_mat *const *w) {
    int64_t K = w[0]->cols;
    if (M < lmc_cpu_gemm_from(c, w[0]->dtype) || K == 0 || K > INT32_MAX || M > INT32_MAX) return false;
    for (int i = 0; i < n; i++)
        if (!mm_ours(c, w[i]->dtype) || w[i]->cols != K || w[i]->rows == 0 || w[i]->rows > INT32_MAX ||
            lmc_cpu_routed(c, M, w[i]) || lmc_cpu_pf_ok(c, M, K, w[i]->dtype))
            return false;
    return true;
}

static float *ybuf(struct lmc_cpu_ctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (c->ybuf_cap < n) {
        free(c->ybuf);
        c->ybuf = aligned_alloc(64, n * sizeof(float));
        LMC_ASSERT(c->ybuf != NULL);
        c->ybuf_cap = n;
    }
    return c->ybuf;
}

void lmc_cpu_matmul_add(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                        const float *bias) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(mat_ok(w) && M >= 0);
    if (M == 0 || w->rows == 0) return;
    if (!mm_ours_route(c, 1, M, &w)) { /* the product, then the add: as the ops composed */
        float *t = ybuf(c, (size_t)(M * w->rows));
        lmc_cpu_matmul(c, t, x, M, w, bias);
        lmc_cpu_add(c, y, y, t, M * w->rows);
        return;
    }
    struct mm_job j = {c, y, x, M, w->rows, w->cols, w->data, w->dtype, bias, 0, NULL, 0, 0, NULL, true};
    j.xp = mm_xpack(c, x, M, j.K);
    lmc_cpu_scratch_reserve(c, lmc_cpu_gemm_f32_ws(M, MM_OURS_NB, j.K));
    j.n_tasks = (j.N + MM_OURS_NB - 1) / MM_OURS_NB;
    lmc_pool_run(c->pool, j.n_tasks, gemm_task, &j);
}

/* gate's and up's columns [r0, r1) into the thread's scratch after the
 * GEMM's workspace (rows of 64: y's rows, N apart, would fall into a few L2
 * sets at N = 2048 and leave the cache), then y = silu(gate) * up, row by row */
struct mm_glu_job {
    struct lmc_cpu_ctx *c;
    float *y;
    const float *xp;
    int64_t M, N, K, ws;
    const struct lmc_mat *g, *u;
};

static void glu_task(void *arg, int64_t t, int thread) {
    const struct mm_glu_job *j = arg;
    int64_t r0 = t * MM_OURS_NB, nb = LMC_MIN(j->N, r0 + MM_OURS_NB) - r0, K = j->K;
    float *ws = j->c->scratch[thread], *gt = ws + j->ws, *up = gt + j->M * MM_OURS_NB;
    const char *wg = (const char *)j->g->data + r0 * K * lmc_dtype_size(j->g->dtype);
    const char *wu = (const char *)j->u->data + r0 * K * lmc_dtype_size(j->u->dtype);
    lmc_cpu_gemm_f32_pa(true, j->M, nb, K, 1.0f, j->xp, wg, j->g->dtype, K, 0.0f, gt, nb, ws);
    lmc_cpu_gemm_f32_pa(true, j->M, nb, K, 1.0f, j->xp, wu, j->u->dtype, K, 0.0f, up, nb, ws);
    for (int64_t m = 0; m < j->M; m++) {
        if (m + 8 < j->M) /* y's rows are N apart: fetch the lines to be written a few rows ahead */
            for (int64_t b = 0; b < nb; b += 16) __builtin_prefetch(j->y + (m + 8) * j->N + r0 + b, 1, 3);
        lmc_cpu_swiglu_span(j->y + m * j->N + r0, gt + m * nb, up + m * nb, nb);
    }
}

void lmc_cpu_matmul_swiglu(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w_gate,
                           const struct lmc_mat *w_up) {
    struct lmc_cpu_ctx *c = ctx;
    const struct lmc_mat *w[2] = {w_gate, w_up};
    LMC_ASSERT(mat_ok(w_gate) && mat_ok(w_up) && M >= 0);
    LMC_ASSERT(w_gate->rows == w_up->rows && w_gate->cols == w_up->cols);
    if (M == 0 || w_gate->rows == 0) return;
    if (!mm_ours_route(c, 2, M, w)) { /* both products in one job, then the pass: as the ops composed */
        float *t = ybuf(c, (size_t)(M * w_up->rows)), *ys[2] = {y, t};
        lmc_cpu_matmul_multi(c, 2, ys, x, M, w, NULL);
        lmc_cpu_swiglu(c, y, y, t, M * w_up->rows);
        return;
    }
    struct mm_glu_job j = {c, y, NULL, M, w_gate->rows, w_gate->cols, 0, w_gate, w_up};
    j.xp = mm_xpack(c, x, M, j.K);
    j.ws = ((int64_t)lmc_cpu_gemm_f32_ws(M, MM_OURS_NB, j.K) + 15) / 16 * 16;
    lmc_cpu_scratch_reserve(c, (size_t)(j.ws + 2 * M * MM_OURS_NB));
    lmc_pool_run(c->pool, (j.N + MM_OURS_NB - 1) / MM_OURS_NB, glu_task, &j);
}

/* ---- backward (training) ----
 * y = x @ w^T + b with F32 weights, through OpenBLAS sgemm split into fixed
 * slices per task so results do not depend on scheduling: dx by row ranges
 * of M, dw and db by row ranges of N. */
/* dx tasks per thread: slack for a thread the OS preempts (dw keeps one a
 * thread: each of its tasks packs all of x) */
#define MM_BWD_DX_SPLIT 4
struct mm_bwd_job {
    float *dx, *dw, *db;
    const float *dy, *x, *w;
    int64_t M, N, K, n_tasks;
    int accum_dx;
};

static void mm_bwd_dx_task(void *arg, int64_t t, int thread) {
    const struct mm_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->M, j->n_tasks, t, 4, &lo, &hi);
    if (hi <= lo) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)j->K, (int)j->N,
                1.0f, j->dy + lo * j->N, (int)j->N, j->w, (int)j->K, j->accum_dx ? 1.0f : 0.0f,
                j->dx + lo * j->K, (int)j->K);
}

static void mm_bwd_dw_task(void *arg, int64_t t, int thread) {
    const struct mm_bwd_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->N, j->n_tasks, t, 4, &lo, &hi);
    if (hi <= lo) return;
    if (j->dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), (int)j->K, (int)j->M,
                    1.0f, j->dy + lo, (int)j->N, j->x, (int)j->K, 1.0f, j->dw + lo * j->K, (int)j->K);
    if (j->db)
        for (int64_t n = lo; n < hi; n++) {
            double s = 0;
            for (int64_t m = 0; m < j->M; m++) s += j->dy[m * j->N + n];
            j->db[n] += (float)s;
        }
}

void lmc_cpu_matmul_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                        const float *x, int64_t M, const struct lmc_mat *w, int accum_dx) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32);
    if (M <= 0) return;
    struct mm_bwd_job j = {dx, dw, db, dy, x, w->data, M, w->rows, w->cols, 1, accum_dx};
    int64_t work = M * w->rows * w->cols;
    if (dx) { /* MM_BWD_DX_SPLIT tasks a thread: each packs only its dy rows and w (small) */
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, MM_BWD_DX_SPLIT), (M + 3) / 4);
        lmc_pool_run(c->pool, j.n_tasks, mm_bwd_dx_task, &j);
    }
    if (dw || db) {
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, 1), (w->rows + 3) / 4);
        lmc_pool_run(c->pool, j.n_tasks, mm_bwd_dw_task, &j);
    }
}

/* matmul_bwd_multi: the backward of n matmuls sharing x in two jobs. dx:
 * tasks own row ranges of M and run the n products into their rows in i
 * order (beta 0 for the first unless accum_dx); dw / db: tasks own ranges
 * of the concatenated rows of all w[i] (a range may span matrices). */
#define MM_BWD_MULTI_MAX 8
struct mm_bwdm_job {
    int n;
    float *dx;
    float *const *dw, *const *db;
    const float *const *dy;
    const float *x;
    const float *w[MM_BWD_MULTI_MAX];
    int64_t N[MM_BWD_MULTI_MAX], start[MM_BWD_MULTI_MAX + 1];
    int64_t M, K, n_tasks;
    int accum_dx;
};

static void mm_bwdm_dx_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mm_bwdm_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->M, j->n_tasks, t, 4, &lo, &hi);
    if (hi <= lo) return;
    for (int i = 0; i < j->n; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)j->K, (int)j->N[i],
                    1.0f, j->dy[i] + lo * j->N[i], (int)j->N[i], j->w[i], (int)j->K,
                    i == 0 && !j->accum_dx ? 0.0f : 1.0f, j->dx + lo * j->K, (int)j->K);
}

static void mm_bwdm_dw_task(void *arg, int64_t t, int thread) {
    (void)thread;
    const struct mm_bwdm_job *j = arg;
    int64_t lo, hi;
    lmc_cpu_range(j->start[j->n], j->n_tasks, t, 4, &lo, &hi);
    for (int i = 0; i < j->n && lo < hi; i++) {
        int64_t a = LMC_MAX(lo, j->start[i]) - j->start[i], b = LMC_MIN(hi, j->start[i + 1]) - j->start[i];
        if (b <= a) continue;
        int64_t N = j->N[i];
        if (j->dw[i])
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(b - a), (int)j->K, (int)j->M, 1.0f,
                        j->dy[i] + a, (int)N, j->x, (int)j->K, 1.0f, j->dw[i] + a * j->K, (int)j->K);
        if (j->db[i])
            for (int64_t c = a; c < b; c++) {
                double s = 0;
                for (int64_t m = 0; m < j->M; m++) s += j->dy[i][m * N + c];
                j->db[i][c] += (float)s;
            }
    }
}

void lmc_cpu_matmul_bwd_multi(void *ctx, int n, float *dx, float *const *dw, float *const *db,
                              const float *const *dy, const float *x, int64_t M,
                              const struct lmc_mat *const *w, int accum_dx) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n > 0 && n <= MM_BWD_MULTI_MAX);
    if (M <= 0) return;
    struct mm_bwdm_job j = {.n = n, .dx = dx, .dw = dw, .db = db, .dy = dy, .x = x, .M = M,
                            .K = w[0]->cols, .accum_dx = accum_dx};
    for (int i = 0; i < n; i++) {
        LMC_ASSERT(w[i]->dtype == LMC_DTYPE_F32 && w[i]->cols == j.K);
        j.w[i] = w[i]->data;
        j.N[i] = w[i]->rows;
        j.start[i + 1] = j.start[i] + w[i]->rows;
    }
    int64_t work = M * j.start[n] * j.K;
    if (dx) {
        j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, MM_BWD_DX_SPLIT), (M + 3) / 4);
        lmc_pool_run(c->pool, j.n_tasks, mm_bwdm_dx_task, &j);
    }
    j.n_tasks = LMC_MIN(lmc_cpu_ntasks(c, work, 1 << 16, 1), (j.start[n] + 3) / 4);
    lmc_pool_run(c->pool, j.n_tasks, mm_bwdm_dw_task, &j);
}

