/* gemm_bf16.c — the CPU's bf16 GEMM (mixed-precision training): C(M,N)
 * (+)= A(M,K) @ B(K,N), f32 operands in any strides rounded to bf16 while
 * they are packed, exact products, f32 sums.
 *
 * Blocking (one thread): K in blocks of at most GB_KC, N in blocks of
 * GB_NC, M in blocks of GB_MC. Each B block is packed into panels of
 * GB_NR columns and each A block into panels of GB_MR rows, both as bf16
 * pairs along K: one 32-bit word holds elements k and k+1 (the low half
 * k), panel words ordered [pair][row or column]. The AVX512-BF16
 * microkernel (GB_MR x GB_NR, 16 accumulators) broadcasts one A word and
 * multiplies it against 16 B words with vdpbf16ps: 2 multiply-adds per
 * lane and instruction, twice fp32 FMA's. It is compiled with a target
 * attribute and chosen at run time (__builtin_cpu_supports), so the rest
 * of the build stays portable; without it a portable microkernel adds the
 * same exact products in the instruction's order (odd element, then even).
 * Edge tiles go through a local tile. Results depend only on the shapes,
 * never on timing.
 *
 * Where lmc_cpu_has_amx() (gemm_amx.h) every entry point runs the
 * products on AMX-BF16 tiles instead, block by block (gemm_amx.c): the B
 * panels as they are, A's rows converted straight into AMX's [row][pair]
 * layout where A's K is contiguous (lmc_cpu_amx_pack_rows), else its 8-row
 * panels re-laid per 32 rows; the blocking and the workspace layout stay
 * (the A part sized for either layout). */
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_amx.h"

#include <string.h>

#define GB_MR 8
#define GB_NR 32
#define GB_KC 384 /* elements of K per block (even) */
#define GB_MC 96
#define GB_NC 768

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#define GB_X86 1
#include <immintrin.h>
#define GB_TARGET __attribute__((target("avx512f,avx512bf16")))
#endif
#ifdef LMC_GB_AMX_EMULATE
/* tests/test_gemm_bf16_amx_emu.c: this file with the portable packs and
 * gemm_amx.c's emulated tiles behind every entry point (the AMX paths'
 * blocking, workspace and same-bits promises checked on any CPU) */
#undef GB_X86
#endif

bool lmc_cpu_has_bf16(void) {
#ifdef GB_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/* K block sizes: nkb blocks of kc elements (kc even, the last may be shorter). */
static int64_t gb_kc(int64_t K) {
    int64_t nkb = (K + GB_KC - 1) / GB_KC;
    int64_t kc = (K + nkb - 1) / nkb;
    return (kc + 1) & ~(int64_t)1;
}

/* Words of one packed A block: 8-row panels, or (AMX, K contiguous) rows
 * of pairs with rows and pairs rounded up to 16 (gemm_amx.h); the larger. */
static int64_t gb_a_words(int64_t M, int64_t kp) {
    int64_t m = LMC_MIN(M, GB_MC);
    return LMC_MAX((m + GB_MR - 1) / GB_MR * GB_MR * kp, (m + 15) / 16 * 16 * ((kp + 15) / 16 * 16));
}

size_t lmc_cpu_gemm_bf16_ws(int64_t M, int64_t N, int64_t K) {
    int64_t kp = gb_kc(K > 0 ? K : 1) / 2;
    int64_t nc = (LMC_MIN(N, GB_NC) + GB_NR - 1) / GB_NR * GB_NR;
    /* each part rounded to 16 words so the B panels start 64-byte aligned */
    return (size_t)((nc * kp + 15) / 16 * 16 + (gb_a_words(M, kp) + 15) / 16 * 16);
}

static inline uint32_t gb_pair(float lo, float hi) {
    return (uint32_t)lmc_f32_to_bf16(lo) | (uint32_t)lmc_f32_to_bf16(hi) << 16;
}

/* Packs R (GB_MR or GB_NR) lines of kc elements: element (i, k) at
 * src[i*si + k*sk], lines i >= n and k >= kc as zeros, into
 * d[p*R + i] = pair(k = 2p, 2p+1). */
static void gb_pack(uint32_t *d, int R, const float *src, int64_t si, int64_t sk, int64_t n,
                    int64_t kc) {
    int64_t kp = (kc + 1) / 2, kf = kc / 2; /* pairs, full pairs */
    if (n < R || sk == 1) {
        for (int64_t i = 0; i < R; i++) {
            if (i >= n) {
                for (int64_t p = 0; p < kp; p++) d[p * R + i] = 0;
                continue;
            }
            const float *s = src + i * si;
            if (sk == 1)
                for (int64_t p = 0; p < kf; p++) d[p * R + i] = gb_pair(s[2 * p], s[2 * p + 1]);
            else
                for (int64_t p = 0; p < kf; p++) d[p * R + i] = gb_pair(s[2 * p * sk], s[(2 * p + 1) * sk]);
            if (kf < kp) d[kf * R + i] = gb_pair(s[2 * kf * sk], 0.0f);
        }
        return;
    }
    for (int64_t p = 0; p < kp; p++) {
        const float *s0 = src + 2 * p * sk, *s1 = s0 + sk;
        uint32_t *o = d + p * R;
        if (p < kf) {
            if (si == 1)
                for (int i = 0; i < R; i++) o[i] = gb_pair(s0[i], s1[i]);
            else
                for (int i = 0; i < R; i++) o[i] = gb_pair(s0[i * si], s1[i * si]);
        } else {
            for (int i = 0; i < R; i++) o[i] = gb_pair(s0[i * si], 0.0f);
        }
    }
}

#ifdef GB_X86
/* Software prefetches for the packs. A pack that walks K rows of strided
 * lines (one or two cache lines per row, then the next row: dW's dy^T and
 * x, the classifier's g^T) is bound by memory latency, which the
 * hardware's prefetchers do not hide for such walks (training's operands
 * come from DRAM; measured: the cold-operand GEMMs of the default model's
 * shapes 1.08-1.14x faster with these). gb_prefetch_rows fetches, for the
 * pair of rows at s0 and s0 + sk and n floats from s0's column, the rows
 * GB_PF_ROWS ahead and the next n columns of these two rows (the next
 * panel's, walked next). Past the block or the matrix they are harmless:
 * a prefetch never faults, and the address is computed as an integer. */
#define GB_PF_ROWS 48
static inline void gb_prefetch(const float *base, int64_t off) { /* base + off, computed as an address */
    _mm_prefetch((const char *)(uintptr_t)((uintptr_t)base + (uintptr_t)off * sizeof(float)), _MM_HINT_T0);
}
static inline void gb_prefetch_rows(const float *s0, int64_t sk, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        gb_prefetch(s0, GB_PF_ROWS * sk + i);
        gb_prefetch(s0, (GB_PF_ROWS + 1) * sk + i);
        gb_prefetch(s0, n + i);
        gb_prefetch(s0, sk + n + i);
    }
}

/* gb_pack with the CPU's conversion (vcvtne2ps2bf16: round to nearest
 * even like lmc_f32_to_bf16; denormals flushed, as vdpbf16ps does to its
 * inputs anyway): full panels (n == R) of lines of contiguous K (sk == 1)
 * by 8x8 transposes of pair words, 8 lines at a time; contiguous lines
 * (si == 1, edge panels too) by interleaving the halves of two converted
 * K rows. The rest
 * (other strides, the odd K tail) goes to gb_pack. */
GB_TARGET __attribute__((target("avx512bw,avx512vl"))) static void
gb_pack_avx512(uint32_t *d, int R, const float *src, int64_t si, int64_t sk, int64_t n, int64_t kc) {
    int64_t kf = kc / 2;
    /* edge panels (n < R) only through the line-contiguous path below: the
     * K-contiguous one loads 8 whole lines (si == sk == 1 happens for a
     * single line, and those loads would run past it) */
    if ((n < R && (si != 1 || sk == 1)) || (sk != 1 && si != 1) || kf == 0) {
        gb_pack(d, R, src, si, sk, n, kc);
        return;
    }
    if (sk == 1) {
        const __m512i i1a = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
        const __m512i i1b = _mm512_add_epi32(i1a, _mm512_set1_epi32(4));
        const __m512i i2a = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const __m512i i2b = _mm512_add_epi32(i2a, _mm512_set1_epi32(8));
        int64_t p16 = kf / 8 * 8; /* pairs done 8 at a time (16 elements of K) */
        for (int g = 0; g < R; g += 8) {
            const float *s = src + g * si;
            for (int64_t p = 0; p < p16; p += 8) {
                const float *q = s + 2 * p;
                /* the same 16 elements of lines 16-23 from here (the
                 * panel after next, or past the block: a prefetch never
                 * faults), loaded from memory while two panels are
                 * converted (one panel ahead hid less of the latency) */
                for (int r = 16; r < 24; r++) gb_prefetch(q, r * si);
                __m512i x[4];
                x[0] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + si), _mm512_loadu_ps(q));
                x[1] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 3 * si), _mm512_loadu_ps(q + 2 * si));
                x[2] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 5 * si), _mm512_loadu_ps(q + 4 * si));
                x[3] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 7 * si), _mm512_loadu_ps(q + 6 * si));
                __m512i y0 = _mm512_permutex2var_epi32(x[0], i1a, x[1]);
                __m512i y1 = _mm512_permutex2var_epi32(x[0], i1b, x[1]);
                __m512i z0 = _mm512_permutex2var_epi32(x[2], i1a, x[3]);
                __m512i z1 = _mm512_permutex2var_epi32(x[2], i1b, x[3]);
                __m512i o[4] = {_mm512_permutex2var_epi32(y0, i2a, z0), _mm512_permutex2var_epi32(y0, i2b, z0),
                                _mm512_permutex2var_epi32(y1, i2a, z1), _mm512_permutex2var_epi32(y1, i2b, z1)};
                for (int t = 0; t < 4; t++) {
                    _mm256_storeu_si256((__m256i *)(d + (p + 2 * t) * R + g), _mm512_castsi512_si256(o[t]));
                    _mm256_storeu_si256((__m256i *)(d + (p + 2 * t + 1) * R + g),
                                        _mm512_extracti64x4_epi64(o[t], 1));
                }
            }
            for (int r = 0; r < 8; r++) {
                const float *q = s + r * si;
                for (int64_t p = p16; p < kf; p++) d[p * R + g + r] = gb_pair(q[2 * p], q[2 * p + 1]);
                if (kf * 2 < kc) d[kf * R + g + r] = gb_pair(q[2 * kf], 0.0f);
            }
        }
        return;
    }
    /* si == 1: word i of pair p = (bf16(row 2p)[i], bf16(row 2p+1)[i]);
     * lines i >= n (an edge panel) load as zeros */
    static const uint16_t ilv[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i il = _mm512_loadu_si512((const void *)ilv);
    for (int64_t p = 0; p < kf; p++) {
        const float *s0 = src + 2 * p * sk, *s1 = s0 + sk;
        uint32_t *o = d + p * R;
        gb_prefetch_rows(s0, sk, R);
        for (int i = 0; i < R; i += 16) {
            __mmask16 m = R - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (R - i)) - 1);
            int64_t v = n - i;
            __mmask16 ml = v >= 16 ? m : v <= 0 ? (__mmask16)0 : (__mmask16)(m & ((1u << v) - 1));
            __m512i x = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(ml, s1 + i),
                                                     _mm512_maskz_loadu_ps(ml, s0 + i));
            _mm512_mask_storeu_epi32(o + i, m, _mm512_permutexvar_epi16(il, x));
        }
    }
    if (kf * 2 < kc)
        for (int i = 0; i < R; i++) d[kf * R + i] = i < n ? gb_pair(src[2 * kf * sk + i], 0.0f) : 0;
}
#endif

#ifdef GB_X86
/* Two A panels at once from contiguous lines (si == 1): lines 0..7 into
 * d0, 8..15 into d1 (lines >= n as zeros), each K row read as one full
 * 16-float line instead of two halves; the same words as two gb_pack_avx512
 * calls. */
GB_TARGET __attribute__((target("avx512bw,avx512vl"))) static void
gb_pack2_avx512(uint32_t *d0, uint32_t *d1, const float *src, int64_t sk, int64_t n, int64_t kc) {
    static const uint16_t ilv[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i il = _mm512_loadu_si512((const void *)ilv);
    int64_t kf = kc / 2;
    __mmask16 ml = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    for (int64_t p = 0; p < kf; p++) {
        const float *s0 = src + 2 * p * sk, *s1 = s0 + sk;
        gb_prefetch_rows(s0, sk, 16);
        __m512i x = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(ml, s1), _mm512_maskz_loadu_ps(ml, s0));
        x = _mm512_permutexvar_epi16(il, x);
        _mm256_storeu_si256((__m256i *)(d0 + p * GB_MR), _mm512_castsi512_si256(x));
        _mm256_storeu_si256((__m256i *)(d1 + p * GB_MR), _mm512_extracti64x4_epi64(x, 1));
    }
    if (kf * 2 < kc)
        for (int i = 0; i < 16; i++)
            (i < 8 ? d0 : d1)[kf * GB_MR + i % 8] = i < n ? gb_pair(src[2 * kf * sk + i], 0.0f) : 0;
}
#endif

/* c (GB_MR x GB_NR, row stride ldc) = (load_c ? c : 0) + a-panel @ b-panel over kp pairs */
typedef void (*gb_micro_fn)(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                            bool load_c);
typedef void (*gb_pack_fn)(uint32_t *d, int R, const float *src, int64_t si, int64_t sk, int64_t n,
                           int64_t kc);

typedef void (*gb_pack2_fn)(uint32_t *d0, uint32_t *d1, const float *src, int64_t sk, int64_t n, int64_t kc);

/* The A panels of rows [0, mc) of a block (A at a, strides a_sm, a_sk; kc
 * elements of K) into ap, panel ir at ap + ir * kp: two panels per pass
 * where the lines are contiguous (pack2, when not NULL). */
static void gb_pack_a(gb_pack_fn pack, gb_pack2_fn pack2, uint32_t *ap, const float *a, int64_t a_sm, int64_t a_sk,
                      int64_t mc, int64_t kc) {
    int64_t kp = (kc + 1) / 2;
    for (int64_t ir = 0; ir < mc; ir += GB_MR) {
        if (pack2 && a_sm == 1 && a_sk != 1 && ir + GB_MR < mc) {
            pack2(ap + ir * kp, ap + (ir + GB_MR) * kp, a + ir, a_sk, LMC_MIN(2 * GB_MR, mc - ir), kc);
            ir += GB_MR;
            continue;
        }
        pack(ap + ir * kp, GB_MR, a + ir * a_sm, a_sm, a_sk, LMC_MIN(GB_MR, mc - ir), kc);
    }
}

static void gb_micro_portable(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                              int64_t ldc, bool load_c) {
    float acc[GB_MR][GB_NR];
    for (int r = 0; r < GB_MR; r++)
        for (int j = 0; j < GB_NR; j++) acc[r][j] = 0.0f;
    for (int64_t p = 0; p < kp; p++, a += GB_MR, b += GB_NR)
        for (int r = 0; r < GB_MR; r++) {
            float alo = lmc_bf16_to_f32((uint16_t)a[r]), ahi = lmc_bf16_to_f32((uint16_t)(a[r] >> 16));
            for (int j = 0; j < GB_NR; j++) {
                float t = acc[r][j] + ahi * lmc_bf16_to_f32((uint16_t)(b[j] >> 16));
                acc[r][j] = t + alo * lmc_bf16_to_f32((uint16_t)b[j]);
            }
        }
    /* C added last, as the AVX512 kernel and the edge tiles do: a row's
     * bits do not depend on whether its tile is full */
    for (int r = 0; r < GB_MR; r++)
        for (int j = 0; j < GB_NR; j++) c[r * ldc + j] = load_c ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

#ifdef GB_X86
GB_TARGET static void gb_micro_avx512(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                                      int64_t ldc, bool load_c) {
    /* the tile of C, fetched (for writing) while the products run: its
     * lines are often out of cache (C blocks larger than the caches), and
     * the stores or loads at the end would wait for them */
    for (int r = 0; r < GB_MR; r++) {
        __builtin_prefetch(c + r * ldc, 1, 3);
        __builtin_prefetch(c + r * ldc + 16, 1, 3);
    }
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
           c70 = c00, c71 = c00;
    for (int64_t p = 0; p < kp; p++, a += GB_MR, b += GB_NR) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b);
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + 16));
#define GB_ROW(r)                                                                                  \
    {                                                                                              \
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r]);                                      \
        c##r##0 = _mm512_dpbf16_ps(c##r##0, av, b0);                                               \
        c##r##1 = _mm512_dpbf16_ps(c##r##1, av, b1);                                               \
    }
        GB_ROW(0) GB_ROW(1) GB_ROW(2) GB_ROW(3) GB_ROW(4) GB_ROW(5) GB_ROW(6) GB_ROW(7)
#undef GB_ROW
    }
#define GB_OUT(r)                                                                                  \
    {                                                                                              \
        float *o = c + (int64_t)(r) * ldc;                                                         \
        if (load_c) {                                                                              \
            c##r##0 = _mm512_add_ps(c##r##0, _mm512_loadu_ps(o));                                  \
            c##r##1 = _mm512_add_ps(c##r##1, _mm512_loadu_ps(o + 16));                             \
        }                                                                                          \
        _mm512_storeu_ps(o, c##r##0);                                                              \
        _mm512_storeu_ps(o + 16, c##r##1);                                                         \
    }
    GB_OUT(0) GB_OUT(1) GB_OUT(2) GB_OUT(3) GB_OUT(4) GB_OUT(5) GB_OUT(6) GB_OUT(7)
#undef GB_OUT
}
#endif

#ifdef GB_X86
/* gb_micro_avx512 on the first 16 columns of the B panel (a panel of at
 * most 16 live columns, e.g. the 48 = 32 + 16 of a head): the same sums
 * for those columns, half the work */
GB_TARGET static void gb_micro16_avx512(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                                        int64_t ldc, bool load_c) {
    for (int r = 0; r < GB_MR; r++) __builtin_prefetch(c + r * ldc, 1, 3); /* as gb_micro_avx512 */
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int64_t p = 0; p < kp; p++, a += GB_MR, b += GB_NR) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)b);
#define GB_ROW16(r) c##r = _mm512_dpbf16_ps(c##r, (__m512bh)_mm512_set1_epi32((int)a[r]), b0);
        GB_ROW16(0) GB_ROW16(1) GB_ROW16(2) GB_ROW16(3) GB_ROW16(4) GB_ROW16(5) GB_ROW16(6) GB_ROW16(7)
#undef GB_ROW16
    }
#define GB_OUT16(r)                                                                                \
    {                                                                                              \
        float *o = c + (int64_t)(r) * ldc;                                                         \
        if (load_c) c##r = _mm512_add_ps(c##r, _mm512_loadu_ps(o));                                \
        _mm512_storeu_ps(o, c##r);                                                                 \
    }
    GB_OUT16(0) GB_OUT16(1) GB_OUT16(2) GB_OUT16(3) GB_OUT16(4) GB_OUT16(5) GB_OUT16(6) GB_OUT16(7)
#undef GB_OUT16
}
#endif

/* One tile of C (mr x nr at c) from an A panel and a B panel: the full
 * kernel, the 16-column one where at most 16 columns live (micro16, when
 * not NULL), through a local tile at the edges. */
static inline void gb_tile(gb_micro_fn micro, gb_micro_fn micro16, int64_t kp, const uint32_t *a, const uint32_t *b,
                           float *c, int64_t ldc, bool load_c, int64_t mr, int64_t nr) {
    float tile[GB_MR * GB_NR];
    if (mr == GB_MR && nr == GB_NR) {
        micro(kp, a, b, c, ldc, load_c);
        return;
    }
    if (micro16 && nr <= 16) {
        if (mr == GB_MR && nr == 16) {
            micro16(kp, a, b, c, ldc, load_c);
            return;
        }
        micro16(kp, a, b, tile, GB_NR, false);
    } else {
        micro(kp, a, b, tile, GB_NR, false);
    }
    for (int64_t r = 0; r < mr; r++)
        for (int64_t j = 0; j < nr; j++)
            c[r * ldc + j] = load_c ? c[r * ldc + j] + tile[r * GB_NR + j] : tile[r * GB_NR + j];
}

/* B's packed words (K pairs of all of K) and the offset of block (jc, pc)
 * in a whole pre-packed B: blocks by jc, then pc; panels by jr inside. */
static int64_t gb_kp_total(int64_t K) {
    int64_t kcm = gb_kc(K), t = 0;
    for (int64_t pc = 0; pc < K; pc += kcm) t += (LMC_MIN(kcm, K - pc) + 1) / 2;
    return t;
}

/* The kernels for this CPU: AVX512-BF16 where present, else the portable
 * ones (no 16-column microkernel, no two-panel pack); true when the AMX
 * block kernel (gemm_amx.c) is to run the products instead (allowed, and
 * lmc_cpu_has_amx()): the packs stay the same. */
static bool gb_pick(bool allow_amx, gb_micro_fn *micro, gb_micro_fn *micro16, gb_pack_fn *pack,
                    gb_pack2_fn *pack2) {
    *micro = gb_micro_portable;
    *micro16 = NULL;
    *pack = gb_pack;
    *pack2 = NULL;
#ifdef GB_X86
    if (lmc_cpu_has_bf16()) {
        *micro = gb_micro_avx512;
        *micro16 = gb_micro16_avx512;
        *pack = gb_pack_avx512;
        *pack2 = gb_pack2_avx512;
        return allow_amx && lmc_cpu_has_amx();
    }
#endif
#ifdef LMC_GB_AMX_EMULATE
    return allow_amx;
#else
    (void)allow_amx;
    return false;
#endif
}

static void gb_run(bool amx, gb_micro_fn micro, gb_micro_fn micro16, gb_pack_fn pack, gb_pack2_fn pack2, int64_t M,
                   int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk, const float *B, int64_t b_sk,
                   int64_t b_sn, const uint32_t *bpre, float *C, int64_t ldc, bool accum, void *ws) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accum)
            for (int64_t m = 0; m < M; m++) memset(C + m * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const int64_t kcm = gb_kc(K), kpm = kcm / 2;
    const int64_t ncm = (LMC_MIN(N, GB_NC) + GB_NR - 1) / GB_NR * GB_NR;
    uint32_t *bp = ws, *ap = bp + (ncm * kpm + 15) / 16 * 16;
    const int64_t KP = bpre ? gb_kp_total(K) : 0;
    for (int64_t jc = 0; jc < N; jc += GB_NC) {
        int64_t nc = LMC_MIN(GB_NC, N - jc), ncp = (nc + GB_NR - 1) / GB_NR * GB_NR;
        for (int64_t pc = 0; pc < K; pc += kcm) {
            int64_t kc = LMC_MIN(kcm, K - pc), kp = (kc + 1) / 2;
            bool load_c = accum || pc > 0;
            if (bpre)
                bp = (uint32_t *)bpre + jc * KP + ncp * (pc / 2);
            else
                for (int64_t jr = 0; jr < nc; jr += GB_NR)
                    pack(bp + jr * kp, GB_NR, B + pc * b_sk + (jc + jr) * b_sn, b_sn, b_sk,
                         LMC_MIN(GB_NR, nc - jr), kc);
            for (int64_t ic = 0; ic < M; ic += GB_MC) {
                int64_t mc = LMC_MIN(GB_MC, M - ic);
                if (amx && a_sk == 1) { /* rows of contiguous K: converted straight into AMX's layout */
                    int64_t kpa = (kp + 15) / 16 * 16;
                    lmc_cpu_amx_pack_rows(ap, kpa, A + ic * a_sm + pc, a_sm, mc, kc);
                    lmc_cpu_amx_bf16_rows(kp, ap, kpa, mc, bp, nc, C + ic * ldc + jc, ldc, load_c);
                    continue;
                }
                gb_pack_a(pack, pack2, ap, A + ic * a_sm + pc * a_sk, a_sm, a_sk, mc, kc);
                if (amx) {
                    lmc_cpu_amx_bf16_panels(kp, ap, GB_MR * kp, mc, bp, nc, C + ic * ldc + jc, ldc, load_c);
                    continue;
                }
                for (int64_t jr = 0; jr < nc; jr += GB_NR) {
                    int64_t nr = LMC_MIN(GB_NR, nc - jr);
                    for (int64_t ir = 0; ir < mc; ir += GB_MR)
                        gb_tile(micro, micro16, kp, ap + ir * kp, bp + jr * kp, C + (ic + ir) * ldc + jc + jr, ldc,
                                load_c, LMC_MIN(GB_MR, mc - ir), nr);
                }
            }
        }
    }
}

void lmc_cpu_gemm_bf16_portable(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm,
                                int64_t a_sk, const float *B, int64_t b_sk, int64_t b_sn, float *C,
                                int64_t ldc, bool accum, void *ws) {
    gb_run(false, gb_micro_portable, NULL, gb_pack, NULL, M, N, K, A, a_sm, a_sk, B, b_sk, b_sn, NULL, C, ldc, accum, ws);
}

static void gb_gemm(bool allow_amx, int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                    const float *B, int64_t b_sk, int64_t b_sn, float *C, int64_t ldc, bool accum, void *ws) {
    gb_micro_fn micro, micro16;
    gb_pack_fn pack;
    gb_pack2_fn pack2;
    bool amx = gb_pick(allow_amx, &micro, &micro16, &pack, &pack2);
    gb_run(amx, micro, micro16, pack, pack2, M, N, K, A, a_sm, a_sk, B, b_sk, b_sn, NULL, C, ldc, accum, ws);
}

void lmc_cpu_gemm_bf16(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                       const float *B, int64_t b_sk, int64_t b_sn, float *C, int64_t ldc, bool accum,
                       void *ws) {
    gb_gemm(true, M, N, K, A, a_sm, a_sk, B, b_sk, b_sn, C, ldc, accum, ws);
}

void lmc_cpu_gemm_bf16_noamx(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                             const float *B, int64_t b_sk, int64_t b_sn, float *C, int64_t ldc, bool accum,
                             void *ws) {
    gb_gemm(false, M, N, K, A, a_sm, a_sk, B, b_sk, b_sn, C, ldc, accum, ws);
}

/* ---- a B packed once, shared by the calls (threads) that multiply it ---- */

size_t lmc_cpu_gemm_bf16_bpack_words(int64_t N, int64_t K) {
    if (N <= 0 || K <= 0) return 0;
    return (size_t)((N + GB_NR - 1) / GB_NR * GB_NR * gb_kp_total(K));
}

int64_t lmc_cpu_gemm_bf16_bpack_panels(int64_t N, int64_t K) {
    if (N <= 0 || K <= 0) return 0;
    int64_t kcm = gb_kc(K);
    return (N + GB_NR - 1) / GB_NR * ((K + kcm - 1) / kcm);
}

#ifdef GB_X86
/* The panels of columns [j0, j1) of one B block (kc rows of contiguous
 * lines, B's row k at src + k * sk, nc columns live): gb_pack_avx512's
 * contiguous-line path (the same words) with the panels innermost, so each
 * pair of K rows is read once along its whole width, line after line,
 * instead of 128 bytes of it per panel and row. */
GB_TARGET __attribute__((target("avx512bw,avx512vl"))) static void
gb_bpack_rows_avx512(uint32_t *bp, const float *src, int64_t sk, int64_t nc, int64_t j0, int64_t j1, int64_t kc) {
    static const uint16_t ilv[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i il = _mm512_loadu_si512((const void *)ilv);
    int64_t kp = (kc + 1) / 2, kf = kc / 2;
    for (int64_t p = 0; p < kf; p++) {
        const float *s0 = src + 2 * p * sk, *s1 = s0 + sk;
        for (int64_t j = j0; j < LMC_MIN(j1, nc); j += 16) { /* the rows GB_PF_ROWS ahead */
            gb_prefetch(s0, GB_PF_ROWS * sk + j);
            gb_prefetch(s0, (GB_PF_ROWS + 1) * sk + j);
        }
        for (int64_t jr = j0; jr < j1; jr += GB_NR) {
            uint32_t *o = bp + jr * kp + p * GB_NR;
            for (int i = 0; i < GB_NR; i += 16) {
                int64_t v = nc - jr - i;
                __mmask16 ml = v >= 16 ? (__mmask16)0xffff : v <= 0 ? (__mmask16)0 : (__mmask16)((1u << v) - 1);
                __m512i x = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(ml, s1 + jr + i),
                                                         _mm512_maskz_loadu_ps(ml, s0 + jr + i));
                _mm512_storeu_si512((void *)(o + i), _mm512_permutexvar_epi16(il, x));
            }
        }
    }
    if (kf * 2 < kc)
        for (int64_t jr = j0; jr < j1; jr += GB_NR)
            for (int i = 0; i < GB_NR; i++)
                bp[jr * kp + kf * GB_NR + i] = jr + i < nc ? gb_pair(src[2 * kf * sk + jr + i], 0.0f) : 0;
}
#endif

void lmc_cpu_gemm_bf16_bpack(uint32_t *dst, int64_t N, int64_t K, const float *B, int64_t b_sk, int64_t b_sn,
                             int64_t p0, int64_t p1) {
    if (N <= 0 || K <= 0) return;
    gb_pack_fn pack = gb_pack;
    bool rows = false; /* contiguous lines (b_sn == 1) walked a pair of rows at a time */
#ifdef GB_X86
    if (lmc_cpu_has_bf16()) {
        pack = gb_pack_avx512;
        rows = b_sn == 1 && b_sk != 1;
    }
#endif
    (void)rows; /* used only where the x86 kernels are built */
    const int64_t kcm = gb_kc(K), KP = gb_kp_total(K);
    int64_t idx = 0; /* panels in (jc, pc, jr) order */
    for (int64_t jc = 0; jc < N; jc += GB_NC) {
        int64_t nc = LMC_MIN(GB_NC, N - jc), ncp = (nc + GB_NR - 1) / GB_NR * GB_NR;
        for (int64_t pc = 0; pc < K; pc += kcm) {
            int64_t kc = LMC_MIN(kcm, K - pc), kp = (kc + 1) / 2;
            uint32_t *bp = dst + jc * KP + ncp * (pc / 2);
#ifdef GB_X86
            if (rows && kc >= 2) { /* this block's panels in [p0, p1), at once */
                int64_t np = ncp / GB_NR, a = LMC_MAX(p0 - idx, 0), b = LMC_MIN(p1 - idx, np);
                if (b > a) gb_bpack_rows_avx512(bp, B + pc * b_sk + jc, b_sk, nc, a * GB_NR, b * GB_NR, kc);
                idx += np;
                continue;
            }
#endif
            for (int64_t jr = 0; jr < nc; jr += GB_NR, idx++)
                if (idx >= p0 && idx < p1)
                    pack(bp + jr * kp, GB_NR, B + pc * b_sk + (jc + jr) * b_sn, b_sn, b_sk,
                         LMC_MIN(GB_NR, nc - jr), kc);
        }
    }
}

void lmc_cpu_gemm_bf16_pb(int64_t M, int64_t N, int64_t K, const float *A, int64_t a_sm, int64_t a_sk,
                          const uint32_t *bp, float *C, int64_t ldc, bool accum, void *ws) {
    gb_micro_fn micro, micro16;
    gb_pack_fn pack;
    gb_pack2_fn pack2;
    bool amx = gb_pick(true, &micro, &micro16, &pack, &pack2);
    gb_run(amx, micro, micro16, pack, pack2, M, N, K, A, a_sm, a_sk, NULL, 0, 0, bp, C, ldc, accum, ws);
}

/* ---- an A packed whole by its producer (gemm_bf16.h) ---- */

size_t lmc_cpu_gemm_bf16_apack_words(int64_t M, int64_t K) {
    if (M <= 0 || K <= 0) return 0;
    return (size_t)((M + GB_MR - 1) / GB_MR * GB_MR * ((K + 1) / 2));
}

/* pair p of rows [m0, m0 + 16) (of Mp padded rows) from lines x0, x1 (x1
 * NULL: the odd last line, paired with 0 as gb_pack does) */
static void gb_apack_t_portable(uint32_t *ap, int64_t M, int64_t KP, int64_t p, const float *x0, const float *x1) {
    int64_t Mp = (M + GB_MR - 1) / GB_MR * GB_MR;
    for (int64_t m = 0; m < Mp; m++)
        ap[m / GB_MR * GB_MR * KP + p * GB_MR + m % GB_MR] =
            m < M ? gb_pair(x0[m], x1 ? x1[m] : 0.0f) : 0;
}

#ifdef GB_X86
/* full pairs with the packs' conversion (gb_pack2_avx512's interleave),
 * rows 16 at a time; a pair's half line past M loads as zeros */
GB_TARGET __attribute__((target("avx512bw,avx512vl"))) static void
gb_apack_t_avx512(uint32_t *ap, int64_t M, int64_t KP, int64_t p0, const float *x, int64_t ldx, int64_t np) {
    static const uint16_t ilv[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i il = _mm512_loadu_si512((const void *)ilv);
    int64_t Mp = (M + GB_MR - 1) / GB_MR * GB_MR;
    for (int64_t m = 0; m < Mp; m += 2 * GB_MR) {
        int64_t v = M - m;
        __mmask16 ml = v >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << v) - 1);
        uint32_t *d0 = ap + m * KP + p0 * GB_MR, *d1 = d0 + GB_MR * KP;
        bool second = m + GB_MR < Mp; /* the upper 8 rows are a panel of their own */
        /* the panel's pairs are written in order: whole lines, one panel
         * (then the next) at a time */
        for (int64_t i = 0; i < np; i++) {
            const float *s0 = x + 2 * i * ldx + m, *s1 = s0 + ldx;
            __m512i w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(ml, s1), _mm512_maskz_loadu_ps(ml, s0));
            w = _mm512_permutexvar_epi16(il, w);
            _mm256_storeu_si256((__m256i *)(d0 + i * GB_MR), _mm512_castsi512_si256(w));
            if (second) _mm256_storeu_si256((__m256i *)(d1 + i * GB_MR), _mm512_extracti64x4_epi64(w, 1));
        }
    }
}
#endif

void lmc_cpu_gemm_bf16_apack_t(uint32_t *ap, int64_t M, int64_t K, int64_t p0, const float *x, int64_t ldx,
                               int64_t n) {
    if (M <= 0 || K <= 0 || n <= 0) return;
    int64_t KP = (K + 1) / 2, nf = n / 2; /* full pairs */
    LMC_ASSERT(p0 >= 0 && p0 + (n + 1) / 2 <= KP);
    int64_t i = 0;
#ifdef GB_X86
    if (lmc_cpu_has_bf16()) {
        gb_apack_t_avx512(ap, M, KP, p0, x, ldx, nf);
        i = nf;
    }
#endif
    for (; i < nf; i++) gb_apack_t_portable(ap, M, KP, p0 + i, x + 2 * i * ldx, x + (2 * i + 1) * ldx);
    if (n % 2) gb_apack_t_portable(ap, M, KP, p0 + nf, x + 2 * nf * ldx, NULL);
}

void lmc_cpu_gemm_bf16_apack(uint32_t *ap, int64_t M, int64_t K, int64_t m0, const float *x, int64_t ldx,
                             int64_t n) {
    if (M <= 0 || K <= 0 || n <= 0) return;
    LMC_ASSERT(m0 >= 0 && m0 % GB_MR == 0 && m0 + n <= M && (n % GB_MR == 0 || m0 + n == M));
    gb_pack_fn pack = gb_pack;
#ifdef GB_X86
    if (lmc_cpu_has_bf16()) pack = gb_pack_avx512;
#endif
    int64_t KP = (K + 1) / 2;
    for (int64_t i = 0; i < n; i += GB_MR) /* one panel: all of K, as a K block's pack */
        pack(ap + (m0 + i) * KP, GB_MR, x + i * ldx, ldx, 1, LMC_MIN(GB_MR, n - i), K);
}

static void gb_run_pp(bool amx, gb_micro_fn micro, gb_micro_fn micro16, int64_t M, int64_t N, int64_t K, const uint32_t *ap,
                      const uint32_t *bpre, float *C, int64_t ldc, bool accum) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accum)
            for (int64_t m = 0; m < M; m++) memset(C + m * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    const int64_t kcm = gb_kc(K), KP = gb_kp_total(K); /* = (K + 1) / 2: only the last block is odd */
    for (int64_t jc = 0; jc < N; jc += GB_NC) {
        int64_t nc = LMC_MIN(GB_NC, N - jc), ncp = (nc + GB_NR - 1) / GB_NR * GB_NR;
        for (int64_t pc = 0; pc < K; pc += kcm) {
            int64_t kc = LMC_MIN(kcm, K - pc), kp = (kc + 1) / 2;
            bool load_c = accum || pc > 0;
            const uint32_t *bp = bpre + jc * KP + ncp * (pc / 2);
            for (int64_t ic = 0; ic < M; ic += GB_MC) {
                int64_t mc = LMC_MIN(GB_MC, M - ic);
                if (amx) {
                    lmc_cpu_amx_bf16_panels(kp, ap + ic * KP + (pc / 2) * GB_MR, GB_MR * KP, mc, bp, nc,
                                            C + ic * ldc + jc, ldc, load_c);
                    continue;
                }
                for (int64_t jr = 0; jr < nc; jr += GB_NR) {
                    int64_t nr = LMC_MIN(GB_NR, nc - jr);
                    for (int64_t ir = 0; ir < mc; ir += GB_MR)
                        gb_tile(micro, micro16, kp, ap + (ic + ir) * KP + (pc / 2) * GB_MR, bp + jr * kp,
                                C + (ic + ir) * ldc + jc + jr, ldc, load_c, LMC_MIN(GB_MR, mc - ir), nr);
                }
            }
        }
    }
}

void lmc_cpu_gemm_bf16_pp(int64_t M, int64_t N, int64_t K, const uint32_t *ap, const uint32_t *bp, float *C,
                          int64_t ldc, bool accum) {
    gb_micro_fn micro, micro16;
    gb_pack_fn pack;
    gb_pack2_fn pack2;
    bool amx = gb_pick(true, &micro, &micro16, &pack, &pack2);
    gb_run_pp(amx, micro, micro16, M, N, K, ap, bp, C, ldc, accum);
}

/* ---- several products over the same M rows, M blocks outermost ---- */

size_t lmc_cpu_gemm_bf16_terms_ws(int64_t M, int64_t Kmax) {
    int64_t kp = gb_kc(Kmax > 0 ? Kmax : 1) / 2;
    return (size_t)((gb_a_words(M, kp) + 15) / 16 * 16);
}

static void gb_terms(bool amx, gb_micro_fn micro, gb_micro_fn micro16, gb_pack_fn pack, gb_pack2_fn pack2, int64_t M, int n,
                     const struct lmc_gb_term *t, void *ws) {
    uint32_t *ap = ws;
    for (int64_t ic = 0; ic < M; ic += GB_MC) {
        int64_t mc = LMC_MIN(GB_MC, M - ic);
        for (int i = 0; i < n; i++) {
            const struct lmc_gb_term *x = &t[i];
            if (x->N <= 0) continue;
            float *C = x->C + ic * x->ldc;
            if (x->K <= 0) {
                if (!x->accum)
                    for (int64_t m = 0; m < mc; m++) memset(C + m * x->ldc, 0, (size_t)x->N * sizeof(float));
                continue;
            }
            const int64_t kcm = gb_kc(x->K), KP = gb_kp_total(x->K);
            /* this term's A blocks are the previous term's: packed already
             * (only with one K block, the one in ap) */
            bool same_a = i > 0 && t[i - 1].A == x->A && t[i - 1].a_sm == x->a_sm && t[i - 1].a_sk == x->a_sk &&
                          t[i - 1].K == x->K && x->K <= kcm && t[i - 1].N > 0;
            for (int64_t pc = 0; pc < x->K; pc += kcm) {
                int64_t kc = LMC_MIN(kcm, x->K - pc), kp = (kc + 1) / 2;
                bool load_c = x->accum || pc > 0;
                bool rows = amx && x->a_sk == 1; /* AMX, contiguous K: A as rows (gb_run's path) */
                int64_t kpa = (kp + 15) / 16 * 16;
                if (!same_a) {
                    if (rows)
                        lmc_cpu_amx_pack_rows(ap, kpa, x->A + ic * x->a_sm + pc, x->a_sm, mc, kc);
                    else
                        gb_pack_a(pack, pack2, ap, x->A + ic * x->a_sm + pc * x->a_sk, x->a_sm, x->a_sk, mc, kc);
                }
                for (int64_t jc = 0; jc < x->N; jc += GB_NC) {
                    int64_t nc = LMC_MIN(GB_NC, x->N - jc), ncp = (nc + GB_NR - 1) / GB_NR * GB_NR;
                    const uint32_t *bp = x->bp + jc * KP + ncp * (pc / 2);
                    if (rows) {
                        lmc_cpu_amx_bf16_rows(kp, ap, kpa, mc, bp, nc, C + jc, x->ldc, load_c);
                        continue;
                    }
                    if (amx) {
                        lmc_cpu_amx_bf16_panels(kp, ap, GB_MR * kp, mc, bp, nc, C + jc, x->ldc, load_c);
                        continue;
                    }
                    for (int64_t jr = 0; jr < nc; jr += GB_NR) {
                        int64_t nr = LMC_MIN(GB_NR, nc - jr);
                        for (int64_t ir = 0; ir < mc; ir += GB_MR)
                            gb_tile(micro, micro16, kp, ap + ir * kp, bp + jr * kp, C + ir * x->ldc + jc + jr, x->ldc,
                                    load_c, LMC_MIN(GB_MR, mc - ir), nr);
                    }
                }
            }
        }
    }
}

void lmc_cpu_gemm_bf16_terms(int64_t M, int n, const struct lmc_gb_term *t, void *ws) {
    if (M <= 0) return;
    gb_micro_fn micro, micro16;
    gb_pack_fn pack;
    gb_pack2_fn pack2;
    bool amx = gb_pick(true, &micro, &micro16, &pack, &pack2);
    gb_terms(amx, micro, micro16, pack, pack2, M, n, t, ws);
}

void lmc_cpu_gemm_bf16_terms_portable(int64_t M, int n, const struct lmc_gb_term *t, void *ws) {
    if (M > 0) gb_terms(false, gb_micro_portable, NULL, gb_pack, NULL, M, n, t, ws);
}
