/* qmatmul_q4.c — the small-M quantized products (any number of
 * activation rows, decode's M = 1 first) for GGUF Q4_0 (in the file's
 * layout or repacked in pairs at load, Q4_0R: q4k_repack.c), lmc's 4-bit groups
 * (GPTQ/AWQ/rtn/ternary; the same scheme, pairs within a group, further
 * below) and GGUF Q8_0 (at the end; AVX2 in the single-row kernel's order),
 * on 256-bit vectors:
 * AVX-512 VNNI (vpdpbusd on ymm; Zen 4 runs 512-bit integer ops as two
 * halves, so ymm loses nothing and needs no cross-lane unpacking) and AVX2
 * (maddubs + madd: the same integers). Prefill (M above one chunk of rows)
 * unpacks each 4-row weight tile once for all M rows (Q4_0; the groups'
 * masked codes; AVX2 Q8_0's |q| and scales): the same operations on the
 * same values, so the same bits as M = 1.
 *
 * The activations are quantized once per call (lmc_q8act) and laid out per
 * pair of blocks (lmc_q8rows_prepare, "pair layout"): 32 codes xa (elements
 * 0..15 of the first block, then 0..15 of the second), 32 codes xb (16..31,
 * 16..31), 8 floats (the first block's scale four times, the second's four
 * times) and 8 int32 -8 * (the sum of the 8 codes that lane l of the two
 * dot products below meets). The weight's 16 nibble bytes of the two blocks
 * side by side in a ymm then give, masked and shifted, exactly the codes
 * xa and xb meet: lane l of dpbusd(dpbusd(-8 sum, lo, xa), hi, xb) is the
 * exact integer sum((c - 8) q) of its 8 elements. Each lane is converted
 * once and multiplied by d_w d_x; an odd last block pairs with a zero
 * block (zero codes and scales).
 *
 * A tile of 4 weight rows x up to Q4_MR activation rows keeps 4 x MR
 * accumulators, so even at M = 1 four independent chains hide the FMA
 * latency and the activations are loaded once for four weight rows. Each
 * (weight row, activation row) pair has its own accumulator, reduction and
 * operation sequence, whatever the tile: a row's result is the same for
 * every M, bit for bit, and the same on both instruction sets. */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <string.h>

/* Bytes of one pair of blocks in the pair layout. */
#define Q4_PAIR 128

/* The pair layout pairs blocks within a zero-point group (lmc's 4-bit
 * groups; Q4_0 is one group of all its blocks): a group's odd last block
 * pairs with the zero block. */
static int64_t q4_groups(const struct lmc_qweight *w) { return w->kernel == LMC_QK_U4G ? w->n_groups : 1; }
static int64_t q4_gb0(const struct lmc_qweight *w, int64_t g) { return w->kernel == LMC_QK_U4G ? w->gblk[g] : 0; }
static int64_t q4_gb1(const struct lmc_qweight *w, int64_t g) {
    return w->kernel == LMC_QK_U4G ? w->gblk[g + 1] : w->kp / 32;
}

int64_t lmc_q8rows_pairs(const struct lmc_qweight *w) {
    if (w->kernel == LMC_QK_Q8_0) return (w->kp / 32 + 1) / 2; /* the pair layout, lane sums times -128 */
    if (w->kernel == LMC_QK_Q4_K || w->kernel == LMC_QK_Q4_KR) return lmc_q4k_slots(w); /* qmatmul_q4k.c */
    int64_t np = 0;
    for (int64_t g = 0; g < q4_groups(w); g++) np += (q4_gb1(w, g) - q4_gb0(w, g) + 1) / 2;
    return np;
}

/* One pair of activation blocks (a1 NULL: the zero block) into o; the lane
 * sums times mult (Q4_0: -8, its zero point; groups: 1, then summed per
 * group by q4g_fill_zsums). */
static void q4_pair_c(const struct lmc_q8act *a0, const struct lmc_q8act *a1, int32_t mult, uint8_t *o) {
    int8_t *xa = (int8_t *)o, *xb = (int8_t *)(o + 32);
    float d[8];
    int32_t z[8];
    for (int h = 0; h < 2; h++) {
        const struct lmc_q8act *a = h ? a1 : a0;
        if (a) {
            memcpy(xa + 16 * h, a->q, 16);
            memcpy(xb + 16 * h, a->q + 16, 16);
            for (int l = 0; l < 4; l++) {
                int32_t s = 0;
                for (int t = 0; t < 4; t++) s += a->q[4 * l + t] + a->q[16 + 4 * l + t];
                z[4 * h + l] = mult * s;
                d[4 * h + l] = a->d;
            }
        } else {
            memset(xa + 16 * h, 0, 16);
            memset(xb + 16 * h, 0, 16);
            for (int l = 0; l < 4; l++) z[4 * h + l] = 0, d[4 * h + l] = 0.0f;
        }
    }
    memcpy(o + 64, d, 32);
    memcpy(o + 96, z, 32);
}

#if defined(__x86_64__)
#include <immintrin.h>
/* q4_pair_c for whole pairs of blocks b0 .. b1 with AVX2 (the same bytes):
 * the lane sums by maddubs of ones; returns the next output pair. */
__attribute__((target("avx2"))) static uint8_t *q4_pairs_avx2(const struct lmc_q8act *xq, int64_t b0, int64_t b1,
                                                            int32_t mult, uint8_t *o) {
    const __m256i ones = _mm256_set1_epi8(1), mv = _mm256_set1_epi16((int16_t)mult);
    for (int64_t b = b0; b + 1 < b1; b += 2, o += Q4_PAIR) {
        const struct lmc_q8act *a0 = &xq[b], *a1 = &xq[b + 1];
        __m256i xa = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)a1->q), _mm_loadu_si128((const __m128i *)a0->q));
        __m256i xb = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(a1->q + 16)),
                                      _mm_loadu_si128((const __m128i *)(a0->q + 16)));
        __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(ones, xa), _mm256_maddubs_epi16(ones, xb));
        _mm256_store_si256((__m256i *)o, xa);
        _mm256_store_si256((__m256i *)(o + 32), xb);
        _mm256_store_ps((float *)(o + 64), _mm256_set_m128(_mm_set1_ps(a1->d), _mm_set1_ps(a0->d)));
        _mm256_store_si256((__m256i *)(o + 96), _mm256_madd_epi16(t, mv));
    }
    return o;
}
#endif

/* The 4-bit groups' zero share (qmatmul_q4.c's tile): over a group's slots
 * [s, e) the lane sums (+ 96, int32) times the scales (+ 64), summed in
 * slot order into the first slot's + 96 as 8 floats. One function for
 * every M: the same bits whatever tile reads them. */
static void q4g_fill_zsums(uint8_t *s, const uint8_t *e) {
    float v[8] = {0};
    for (const uint8_t *o = s; o < e; o += Q4_PAIR) {
        float d[8];
        int32_t z[8];
        memcpy(d, o + 64, 32);
        memcpy(z, o + 96, 32);
        for (int l = 0; l < 8; l++) v[l] += (float)z[l] * d[l];
    }
    memcpy(s + 96, v, 32);
}

void lmc_q8rows_fill_pairs(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t i0, int64_t i1,
                           void *buf) {
    if (w->kernel == LMC_QK_Q4_K || w->kernel == LMC_QK_Q4_KR) {
        lmc_q4k_fill(w, xq, i0, i1, buf);
        return;
    }
    int64_t nb = w->kp / 32, np = lmc_q8rows_pairs(w);
    int32_t mult = w->kernel == LMC_QK_Q4_0 || w->kernel == LMC_QK_Q4_0R ? -8 : w->kernel == LMC_QK_Q8_0 ? -128 : 1;
#if defined(__x86_64__)
    const bool avx2 = __builtin_cpu_supports("avx2");
#endif
    for (int64_t i = i0; i < i1; i++) {
        uint8_t *o = (uint8_t *)buf + i * np * Q4_PAIR;
        const struct lmc_q8act *x = xq + i * nb;
        for (int64_t g = 0; g < q4_groups(w); g++) {
            int64_t b = q4_gb0(w, g), e = q4_gb1(w, g);
#if defined(__x86_64__)
            if (avx2) {
                o = q4_pairs_avx2(x, b, e, mult, o);
                b += (e - b) / 2 * 2;
            }
#endif
            for (; b < e; b += 2, o += Q4_PAIR) q4_pair_c(&x[b], b + 1 < e ? &x[b + 1] : NULL, mult, o);
            if (w->kernel == LMC_QK_U4G && e > q4_gb0(w, g)) q4g_fill_zsums(o - (e - q4_gb0(w, g) + 1) / 2 * Q4_PAIR, o);
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define Q4_MR 4      /* activation rows per tile */
#ifndef Q4_PF_BYTES
/* software prefetch: the weight bytes 2 4-row tiles ahead, 1 for tiles of this many bytes or more (0: none;
 * as the Q4_K tile, qmatmul_q4k.c, whose comment has the measurements) */
#define Q4_PF_BYTES 4096
#endif

#define T4_AVX2 __attribute__((target("avx2,fma,f16c"), aligned(64))) /* 64: the same op-cache footing in every binary */
#define T4_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"), aligned(64)))
#define I4_AVX2 __attribute__((always_inline, target("avx2,fma,f16c"))) static inline
#define I4_VNNI __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))) static inline

/* Chunk c of m rows split into the fewest chunks of at most Q4_MR, sizes
 * as equal as possible: first row and count. */
static void q4_chunk(int64_t m, int64_t c, int64_t *i0, int *mr) {
    int64_t nch = (m + Q4_MR - 1) / Q4_MR, base = m / nch, rem = m % nch;
    *i0 = c * base + LMC_MIN(c, rem);
    *mr = (int)(base + (c < rem));
}

/* s + the 4-byte dot products of lo with xa and hi with xb, per int32 lane. */
I4_VNNI __m256i q4_dot_vnni(__m256i s, __m256i lo, __m256i xa, __m256i hi, __m256i xb) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(s, lo, xa), hi, xb);
}
/* maddubs: codes <= 15 times |q| <= 127, two of them, and two of those
 * added: |.| <= 7620, no int16 saturation: the same integers as vpdpbusd. */
I4_AVX2 __m256i q4_dot_avx2(__m256i s, __m256i lo, __m256i xa, __m256i hi, __m256i xb) {
    __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
    return _mm256_add_epi32(s, _mm256_madd_epi16(t, _mm256_set1_epi16(1)));
}

/* The groups' pair dot without a start value: lo with xa plus hi with xb. */
I4_VNNI __m256i q4g_dot_vnni(__m256i lo, __m256i xa, __m256i hi, __m256i xb) {
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, xa), hi, xb);
}
I4_AVX2 __m256i q4g_dot_avx2(__m256i lo, __m256i xa, __m256i hi, __m256i xb) {
    __m256i t = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
    return _mm256_madd_epi16(t, _mm256_set1_epi16(1));
}

/* The sums of 4 vectors' lanes; each one's arithmetic the same whatever
 * the others hold. */
#define Q4_SUM4(TGTI, SUF)                                                                                  \
    TGTI __m128 q4_sum4_##SUF(__m256 a, __m256 b, __m256 c, __m256 d) {                                    \
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));                             \
        return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));                         \
    }

/* Row r's weight of the pair (full: both blocks; else the first and a zero
 * block): codes lo (elements 0..15 of both blocks) and hi (16..31) and the
 * scales, [d0 x 4, d1 x 4]. */
static inline int16_t q4_f16bits(const uint8_t *b) {
    int16_t h;
    memcpy(&h, b, 2);
    return h;
}
I4_VNNI __m256 q4_scales_vnni(const uint8_t *b, int full) {
    __m128i h = _mm_set1_epi16(q4_f16bits(b));
    h = full ? _mm_mask_set1_epi16(h, 0xf0, q4_f16bits(b + 18)) : _mm_maskz_mov_epi16(0x0f, h);
    return _mm256_cvtph_ps(h);
}
I4_AVX2 __m256 q4_scales_avx2(const uint8_t *b, int full) {
    __m128i h0 = _mm_set1_epi16(q4_f16bits(b)), h1 = full ? _mm_set1_epi16(q4_f16bits(b + 18)) : _mm_setzero_si128();
    return _mm256_cvtph_ps(_mm_unpacklo_epi64(h0, h1));
}

/* Q4_0R's pair (q4k_repack.c): the scales d0 d1 (fp16, adjacent; full 0: d0 alone) as [d0 x 4, d1 x 4]
 * (d1 0 when not full), the values of q4_scales_*. A full pair converts the 8 bytes that end with its
 * scales (its last 4 code bytes, then d0 d1: never past the pair) in one vcvtph2ps from memory, whose
 * load form needs no shuffle port, and one permute spreads lanes 2 and 3: on the device's Xeon the
 * decode step's products took 0.94-0.96x the time of a 4-byte load, byte shuffle and vcvtph2ps from a
 * register (bench_qdecode_step q4_0, 1 thread). GCC keeps the load apart from an intrinsic's
 * conversion, hence the asm. */
typedef uint64_t __attribute__((may_alias, aligned(1))) q4_u64_any;
I4_AVX2 __m256 q4r_scales(const uint8_t *b, int full) {
    __m128 d;
    if (full) {
        __asm__("vcvtph2ps %1, %0" : "=x"(d) : "m"(*(const q4_u64_any *)(const void *)(b - 4)));
        return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d), _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3));
    }
    uint32_t dd = 0;
    memcpy(&dd, b, 2);
    d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

/* The tile: weight rows row .. row + R - 1 (R 4 or 1) against activation
 * rows i0 .. i0 + MR - 1, y[i * ldy + r]. */
#define Q4_WEIGHT(SUF, FULL, r)                                                                            \
    do {                                                                                                   \
        const uint8_t *b = wp + (r) * rb + 36 * p;                                                         \
        __m256i v;                                                                                         \
        if (RP) { /* Q4_0R: the pair's codes at 0 (one load), its scales after them */                     \
            v = FULL ? _mm256_loadu_si256((const __m256i *)b)                                              \
                     : _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)b)), \
                                               _mm_setzero_si128(), 1);                                    \
            dw[r] = q4r_scales(b + (FULL ? 32 : 16), FULL);                                                \
        } else {                                                                                           \
            __m128i n0 = _mm_loadu_si128((const __m128i *)(b + 2));                                        \
            v = _mm256_inserti128_si256(_mm256_castsi128_si256(n0),                                        \
                                        FULL ? _mm_loadu_si128((const __m128i *)(b + 20))                  \
                                             : _mm_setzero_si128(), 1);                                    \
            dw[r] = q4_scales_##SUF(b, FULL);                                                              \
        }                                                                                                  \
        lo[r] = _mm256_and_si256(v, m15);                                                                  \
        hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);                                            \
    } while (0)
/* UN: the weight tile's codes and scales come unpacked from un (Q4_UNPACK
 * bytes a row and pair, q4_unpack), the same values. */
#define Q4_UNPACK 96
#define Q4_STEP(SUF, FULL)                                                                                 \
    do {                                                                                                   \
        __m256i lo[4], hi[4];                                                                              \
        __m256 dw[4];                                                                                      \
        if (MR == 1 && !UN) { /* decode: one weight row at a time, few vectors live (no spills on AVX2) */ \
            const uint8_t *a = xp + Q4_PAIR * p;                                                           \
            __m256i xa = _mm256_load_si256((const __m256i *)a);                                            \
            __m256i xb = _mm256_load_si256((const __m256i *)(a + 32));                                     \
            __m256 dx = _mm256_load_ps((const float *)(a + 64));                                           \
            __m256i z = _mm256_load_si256((const __m256i *)(a + 96));                                      \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                          \
                Q4_WEIGHT(SUF, FULL, r);                                                                   \
                __m256i s = q4_dot_##SUF(z, lo[r], xa, hi[r], xb);                                         \
                acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw[r], dx), acc[r][0]);   \
            }                                                                                              \
            break;                                                                                         \
        }                                                                                                  \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                              \
            if (UN) {                                                                                      \
                const uint8_t *u = un + (4 * p + r) * Q4_UNPACK;                                           \
                lo[r] = _mm256_load_si256((const __m256i *)u);                                             \
                hi[r] = _mm256_load_si256((const __m256i *)(u + 32));                                      \
                dw[r] = _mm256_load_ps((const float *)(u + 64));                                           \
                continue;                                                                                  \
            }                                                                                              \
            Q4_WEIGHT(SUF, FULL, r);                                                                       \
        }                                                                                                  \
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {                                             \
            const uint8_t *a = xp + i * x->pair_stride + Q4_PAIR * p;                                      \
            __m256i xa = _mm256_load_si256((const __m256i *)a);                                            \
            __m256i xb = _mm256_load_si256((const __m256i *)(a + 32));                                     \
            __m256 dx = _mm256_load_ps((const float *)(a + 64));                                           \
            __m256i z = _mm256_load_si256((const __m256i *)(a + 96));                                      \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                          \
                __m256i s = q4_dot_##SUF(z, lo[r], xa, hi[r], xb);                                         \
                acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw[r], dx), acc[r][i]);   \
            }                                                                                              \
        }                                                                                                  \
    } while (0)
#define Q4_TILE(TGTI, SUF)                                                                                 \
    TGTI void q4_tile_##SUF(const struct lmc_qweight *w, int64_t row, int R, const struct lmc_q8rows *x,   \
                            int64_t i0, int MR, float *y, int64_t ldy, int UN, const uint8_t *un,          \
                            const int RP) { /* RP: Q4_0R's pairs (a constant per instance) */              \
        const int64_t nb = w->k / 32, rb = w->row_bytes;                                                   \
        const uint8_t *wp = w->data + row * rb;                                                            \
        const uint8_t *xp = x->pairs + i0 * x->pair_stride;                                                \
        const __m256i m15 = _mm256_set1_epi8(15);                                                          \
        const int64_t pft = (4 * rb < Q4_PF_BYTES ? 2 : 1);                                 \
        const uint8_t *pf = wp + pft * 4 * rb;                                                             \
        const int pf_on = !UN && Q4_PF_BYTES > 0 && R == 4 && row + (pft + 1) * 4 <= w->n;                 \
        __m256 acc[4][Q4_MR];                                                                              \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                                \
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) acc[r][i] = _mm256_setzero_ps();          \
        int64_t p = 0;                                                                                     \
        for (; 2 * p + 1 < nb; p++) {                                                                      \
            if (pf_on) { /* the same bytes of the tile pft ahead: 144 a pair */                    \
                _mm_prefetch((const char *)pf + 144 * p, _MM_HINT_T0);                                     \
                _mm_prefetch((const char *)pf + 144 * p + 64, _MM_HINT_T0);                                \
                _mm_prefetch((const char *)pf + 144 * p + 128, _MM_HINT_T0);                               \
            }                                                                                              \
            Q4_STEP(SUF, 1);                                                                               \
        }                                                                                                  \
        if (2 * p < nb) Q4_STEP(SUF, 0);                                                                   \
        const __m256 zero = _mm256_setzero_ps();                                                           \
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {                                             \
            __m128 s = q4_sum4_##SUF(acc[0][i], R > 1 ? acc[1][i] : zero, R > 2 ? acc[2][i] : zero,        \
                                     R > 3 ? acc[3][i] : zero);                                            \
            if (R == 4) _mm_storeu_ps(y + (i0 + i) * ldy + row, s);                                        \
            else y[(i0 + i) * ldy + row] = _mm_cvtss_f32(s);                                               \
        }                                                                                                  \
    }

/* A 4-row weight tile unpacked into un (Q4_UNPACK bytes a row and pair):
 * for more activation rows than one tile takes, the unpacking is done once
 * and each block of rows loads it (from L1). */
#define Q4_UNPACKER(TGT, SUF)                                                                              \
    TGT static void q4_unpack_##SUF(const struct lmc_qweight *w, int64_t row, uint8_t *un) {              \
        const int64_t nb = w->k / 32, rb = w->row_bytes;                                                   \
        const int RP = w->kernel == LMC_QK_Q4_0R;                                                          \
        const uint8_t *wp = w->data + row * rb;                                                            \
        const __m256i m15 = _mm256_set1_epi8(15);                                                          \
        __m256i lo[4], hi[4];                                                                              \
        __m256 dw[4];                                                                                      \
        for (int64_t p = 0; 2 * p < nb; p++)                                                               \
            for (int r = 0; r < 4; r++) {                                                                  \
                if (2 * p + 1 < nb) Q4_WEIGHT(SUF, 1, r);                                                  \
                else Q4_WEIGHT(SUF, 0, r);                                                                 \
                uint8_t *u = un + (4 * p + r) * Q4_UNPACK;                                                 \
                _mm256_store_si256((__m256i *)u, lo[r]);                                                   \
                _mm256_store_si256((__m256i *)(u + 32), hi[r]);                                            \
                _mm256_store_ps((float *)(u + 64), dw[r]);                                                 \
            }                                                                                              \
    }

/* The unpacked tile's room on the stack (K up to 4096: 24 KB, within L1);
 * longer rows are unpacked per block of activation rows. */
#define Q4_UNPACK_MAX (64 * 4 * Q4_UNPACK)

/* One function per tile shape (R and MR constants: accumulators in
 * registers) and the driver over rows [r0, r1) and all m activation rows. */
typedef void (*q4_fn)(const struct lmc_qweight *, int64_t, const struct lmc_q8rows *, int64_t, float *, int64_t,
                      const uint8_t *);
#define Q4_ONE(SUF, TGT, R, MR, UN, RP)                                                                    \
    TGT static void q4_##SUF##_##R##x##MR##_##UN##_##RP(const struct lmc_qweight *w, int64_t row,          \
                                                        const struct lmc_q8rows *x, int64_t i0, float *y,  \
                                                        int64_t ldy, const uint8_t *un) {                  \
        q4_tile_##SUF(w, row, R, x, i0, MR, y, ldy, UN, un, RP);                                           \
    }
#define Q4_SET(SUF, TGT, RP)                                                                               \
    Q4_ONE(SUF, TGT, 4, 1, 0, RP) Q4_ONE(SUF, TGT, 4, 2, 0, RP) Q4_ONE(SUF, TGT, 4, 3, 0, RP)              \
    Q4_ONE(SUF, TGT, 4, 4, 0, RP) Q4_ONE(SUF, TGT, 1, 1, 0, RP) Q4_ONE(SUF, TGT, 1, 2, 0, RP)              \
    Q4_ONE(SUF, TGT, 1, 3, 0, RP) Q4_ONE(SUF, TGT, 1, 4, 0, RP) Q4_ONE(SUF, TGT, 4, 1, 1, RP)              \
    Q4_ONE(SUF, TGT, 4, 2, 1, RP) Q4_ONE(SUF, TGT, 4, 3, 1, RP) Q4_ONE(SUF, TGT, 4, 4, 1, RP)
#define Q4_TAB(SUF, RP)                                                                                    \
    {{NULL, q4_##SUF##_4x1_0_##RP, q4_##SUF##_4x2_0_##RP, q4_##SUF##_4x3_0_##RP, q4_##SUF##_4x4_0_##RP},   \
     {NULL, q4_##SUF##_1x1_0_##RP, q4_##SUF##_1x2_0_##RP, q4_##SUF##_1x3_0_##RP, q4_##SUF##_1x4_0_##RP},   \
     {NULL, q4_##SUF##_4x1_1_##RP, q4_##SUF##_4x2_1_##RP, q4_##SUF##_4x3_1_##RP, q4_##SUF##_4x4_1_##RP}}
#define Q4_ALL(SUF, TGT, TGTI)                                                                             \
    Q4_SUM4(TGTI, SUF)                                                                                     \
    Q4_TILE(TGTI, SUF)                                                                                     \
    Q4_UNPACKER(TGT, SUF)                                                                                  \
    Q4_SET(SUF, TGT, 0) Q4_SET(SUF, TGT, 1)                                                                \
    /* [Q4_0R][unpacked / R == 1 / R == 4][MR] */                                                          \
    static const q4_fn q4_##SUF##_fns[2][3][Q4_MR + 1] = {Q4_TAB(SUF, 0), Q4_TAB(SUF, 1)};                 \
    static void q4_many_##SUF(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, \
                              float *y, int64_t ldy) {                                                     \
        _Alignas(64) uint8_t un[Q4_UNPACK_MAX];                                                            \
        int64_t nch = (x->m + Q4_MR - 1) / Q4_MR, np = (w->k / 32 + 1) / 2;                                \
        const int rp = w->kernel == LMC_QK_Q4_0R;                                                          \
        for (int64_t r = r0; r < r1;) {                                                                    \
            int four = r + 4 <= r1, unp = four && np * 4 * Q4_UNPACK <= Q4_UNPACK_MAX;                     \
            if (unp) q4_unpack_##SUF(w, r, un);                                                            \
            for (int64_t c = 0; c < nch; c++) {                                                            \
                int64_t i0;                                                                                \
                int mr;                                                                                    \
                q4_chunk(x->m, c, &i0, &mr);                                                               \
                q4_##SUF##_fns[rp][unp ? 2 : four ? 0 : 1][mr](w, r, x, i0, y, ldy, un);                   \
            }                                                                                              \
            r += four ? 4 : 1;                                                                             \
        }                                                                                                  \
    }                                                                                                      \
    static void q4_rows_##SUF(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, \
                              float *y, int64_t ldy) {                                                     \
        if (x->m > Q4_MR) {                                                                                \
            q4_many_##SUF(w, r0, r1, x, y, ldy);                                                           \
            return;                                                                                        \
        }                                                                                                  \
        const int rp = w->kernel == LMC_QK_Q4_0R;                                                          \
        int64_t r = r0;                                                                                    \
        for (; r + 4 <= r1; r += 4) q4_##SUF##_fns[rp][0][x->m](w, r, x, 0, y, ldy, NULL);                 \
        for (; r < r1; r++) q4_##SUF##_fns[rp][1][x->m](w, r, x, 0, y, ldy, NULL);                         \
    }

/* The groups' zero terms, -zero x scale (float), of n consecutive (row,
 * group) entries (n <= 4 Q4G_ZC) into zs: 8 a vector, once per 4-row tile
 * and chunk of groups, not per group with scalar operations in the tile's
 * loop; the same floats either way (an exact negation, one rounding). */
#define Q4G_ZC 64
#define Q4G_ZS(TGTI, SUF)                                                                                  \
    TGTI void q4g_zs_##SUF(const int32_t *z, const float *sc, int64_t n, float *zs) {                      \
        const __m256 neg = _mm256_set1_ps(-0.0f);                                                          \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                                    \
        int64_t j = 0;                                                                                     \
        for (; j + 8 <= n; j += 8)                                                                         \
            _mm256_store_ps(zs + j, _mm256_mul_ps(_mm256_xor_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(     \
                                                                    (const __m256i *)(z + j))), neg),     \
                                                  _mm256_loadu_ps(sc + j)));                               \
        if (j < n) { /* a part-full last vector: masked loads */                                           \
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j)), lane);                         \
            __m256 zf = _mm256_cvtepi32_ps(_mm256_maskload_epi32((const int *)(z + j), m));                \
            _mm256_store_ps(zs + j, _mm256_mul_ps(_mm256_xor_ps(zf, neg), _mm256_maskload_ps(sc + j, m))); \
        }                                                                                                  \
    }
/* lmc's 4-bit groups (GPTQ/AWQ/rtn/ternary: 16 nibble bytes a block, codes
 * 0..15, a float scale and an integer zero per row and group): the same
 * tiles, the pair's nibbles one 32-byte load; lane l of a pair is the exact
 * integer sum(c q) of its 8 elements (no zero in the integers), times the
 * group's scale and d_x. The zero point enters once per group and
 * activation row as a float: the fill (q4g_fill_zsums) leaves in the slot of
 * the group's first pair, at + 96, V = sum over the group's pairs of the
 * lane sums times d_x (row-independent: once per token, not per weight
 * row), and each (weight row, activation row) accumulator takes
 * fma(-zero scale, V) after the group's pairs. Per pair and weight row: 2
 * maddubs, 1 madd (AVX2; VNNI 2 vpdpbusd), no vpmulld. The M = 1 tile
 * takes the weight rows one at a time (few vectors live: no spills on AVX2)
 * in the order of the others, so a row's result is the same bits for every
 * M; a group of exactly 4 blocks (g128) there runs its two pairs straight,
 * without the per-row test for a part-full pair. The zero terms -zero x
 * scale of a tile's rows and groups come from one vector pass (q4g_zs). */
#define Q4G_TILE(TGTI, SUF)                                                                                \
    TGTI void q4g_tile_##SUF(const struct lmc_qweight *w, int64_t row, int R, const struct lmc_q8rows *x,  \
                             int64_t i0, int MR, float *y, int64_t ldy, int UN, const uint8_t *un) {       \
        const int64_t rb = w->row_bytes, ng = w->n_groups;                                                 \
        const uint8_t *wp = w->data + row * rb;                                                            \
        const uint8_t *a0 = x->pairs + i0 * x->pair_stride;                                                \
        const __m256i m15 = _mm256_set1_epi8(15);                                                          \
        __m256 acc[4][Q4_MR];                                                                              \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                                \
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) acc[r][i] = _mm256_setzero_ps();          \
        const int64_t pft = (4 * rb < Q4_PF_BYTES ? 2 : 1); /* as Q4_0's: 64 bytes a block */ \
        const uint8_t *pf = wp + pft * 4 * rb;                                                             \
        const int pf_on = !UN && Q4_PF_BYTES > 0 && R == 4 && row + (pft + 1) * 4 <= w->n;                 \
        const uint8_t *us = un;                                                                            \
        /* -zero scale of row r, group g0 + j at zsb[r zst + j]: with one chunk (ng <= Q4G_ZC) the R rows' \
           groups are contiguous in w->zero and w->scale, one pass over R ng */                            \
        _Alignas(32) float zsb[4 * Q4G_ZC];                                                                \
        const int64_t zst = ng <= Q4G_ZC ? ng : Q4G_ZC;                                                    \
        for (int64_t g0 = 0; g0 < ng; g0 += Q4G_ZC) {                                                      \
          const int64_t g1 = LMC_MIN(ng, g0 + Q4G_ZC);                                                     \
          if (ng <= Q4G_ZC) q4g_zs_##SUF(w->zero + row * ng, w->scale + row * ng, R * ng, zsb);            \
          else                                                                                             \
              for (int r = 0; r < R; r++)                                                                  \
                  q4g_zs_##SUF(w->zero + (row + r) * ng + g0, w->scale + (row + r) * ng + g0, g1 - g0,     \
                               zsb + r * Q4G_ZC);                                                          \
          for (int64_t g = g0; g < g1; g++) {                                                              \
            const float *scg = w->scale + row * ng + g;                                                    \
            const uint8_t *ag = a0; /* the group's first slot: V at + 96 */                                \
            if (w->gblk[g] == w->gblk[g + 1]) continue; /* no columns (act-order): no slot */              \
            if (MR == 1 && !UN && w->gblk[g + 1] - w->gblk[g] == 4) { /* decode, 4 blocks (g128): */    \
                const int64_t b = w->gblk[g]; /* both pairs straight, the loop's operations per row */   \
                if (pf_on)                                                                                 \
                    _Pragma("GCC unroll 4") for (int t = 0; t < 4; t++)                                    \
                        _mm_prefetch((const char *)pf + 64 * b + 64 * t, _MM_HINT_T0);                     \
                __m256i xa0 = _mm256_load_si256((const __m256i *)a0);                                      \
                __m256i xb0 = _mm256_load_si256((const __m256i *)(a0 + 32));                               \
                __m256 dx0 = _mm256_load_ps((const float *)(a0 + 64));                                     \
                __m256i xa1 = _mm256_load_si256((const __m256i *)(a0 + Q4_PAIR));                          \
                __m256i xb1 = _mm256_load_si256((const __m256i *)(a0 + Q4_PAIR + 32));                     \
                __m256 dx1 = _mm256_load_ps((const float *)(a0 + Q4_PAIR + 64));                           \
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                      \
                    const uint8_t *c = wp + r * rb + 16 * b;                                               \
                    __m256i v0 = _mm256_loadu_si256((const __m256i *)c);                                   \
                    __m256i v1 = _mm256_loadu_si256((const __m256i *)(c + 32));                            \
                    __m256 sg = _mm256_broadcast_ss(scg + r * ng);                                         \
                    __m256i s0 = q4g_dot_##SUF(_mm256_and_si256(v0, m15), xa0,                             \
                                               _mm256_and_si256(_mm256_srli_epi16(v0, 4), m15), xb0);      \
                    __m256i s1 = q4g_dot_##SUF(_mm256_and_si256(v1, m15), xa1,                             \
                                               _mm256_and_si256(_mm256_srli_epi16(v1, 4), m15), xb1);      \
                    acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(sg, dx0), acc[r][0]); \
                    acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(sg, dx1), acc[r][0]); \
                }                                                                                          \
                a0 += 2 * Q4_PAIR;                                                                         \
            } else                                                                                         \
            for (int64_t b = w->gblk[g], e = w->gblk[g + 1]; b < e; b += 2, a0 += Q4_PAIR) {               \
                const int full = b + 1 < e;                                                                \
                if (pf_on) {                                                                               \
                    _mm_prefetch((const char *)pf + 64 * b, _MM_HINT_T0);                                  \
                    _mm_prefetch((const char *)pf + 64 * b + 64, _MM_HINT_T0);                             \
                }                                                                                          \
                if (MR == 1 && !UN) { /* decode: one weight row at a time */                              \
                    __m256i xa = _mm256_load_si256((const __m256i *)a0);                                   \
                    __m256i xb = _mm256_load_si256((const __m256i *)(a0 + 32));                            \
                    __m256 dx = _mm256_load_ps((const float *)(a0 + 64));                                  \
                    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                  \
                        const uint8_t *c = wp + r * rb + 16 * b;                                           \
                        __m256i v = full ? _mm256_loadu_si256((const __m256i *)c)                          \
                                         : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)c));    \
                        __m256i s = q4g_dot_##SUF(_mm256_and_si256(v, m15), xa,                            \
                                                  _mm256_and_si256(_mm256_srli_epi16(v, 4), m15), xb);     \
                        acc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),                                 \
                                                    _mm256_mul_ps(_mm256_broadcast_ss(scg + r * ng), dx), acc[r][0]); \
                    }                                                                                      \
                    continue;                                                                              \
                }                                                                                          \
                __m256i lo[4], hi[4];                                                                      \
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                      \
                    if (UN) { /* unpacked: slot by slot, 4 rows each */                                    \
                        lo[r] = _mm256_load_si256((const __m256i *)(us + Q4G_UNPACK * r));                 \
                        hi[r] = _mm256_load_si256((const __m256i *)(us + Q4G_UNPACK * r + 32));            \
                        continue;                                                                          \
                    }                                                                                      \
                    const uint8_t *c = wp + r * rb + 16 * b;                                               \
                    __m256i v = full ? _mm256_loadu_si256((const __m256i *)c)                              \
                                     : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)c));        \
                    lo[r] = _mm256_and_si256(v, m15);                                                      \
                    hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);                                \
                }                                                                                          \
                if (UN) us += 4 * Q4G_UNPACK;                                                              \
                _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {                                     \
                    const uint8_t *a = a0 + i * x->pair_stride;                                            \
                    __m256i xa = _mm256_load_si256((const __m256i *)a);                                    \
                    __m256i xb = _mm256_load_si256((const __m256i *)(a + 32));                             \
                    __m256 dx = _mm256_load_ps((const float *)(a + 64));                                   \
                    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                  \
                        __m256i s = q4g_dot_##SUF(lo[r], xa, hi[r], xb);                                   \
                        acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),                                 \
                                                    _mm256_mul_ps(_mm256_broadcast_ss(scg + r * ng), dx), acc[r][i]); \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) { /* the zero's share of the group */     \
                __m256 vz = _mm256_load_ps((const float *)(ag + i * x->pair_stride + 96));                 \
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)                                        \
                    acc[r][i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&zsb[r * zst + g - g0]), vz, acc[r][i]);       \
            }                                                                                              \
          }                                                                                                \
        }                                                                                                  \
        const __m256 zero = _mm256_setzero_ps();                                                           \
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {                                             \
            __m128 s = q4_sum4_##SUF(acc[0][i], R > 1 ? acc[1][i] : zero, R > 2 ? acc[2][i] : zero,        \
                                     R > 3 ? acc[3][i] : zero);                                            \
            if (R == 4) _mm_storeu_ps(y + (i0 + i) * ldy + row, s);                                        \
            else y[(i0 + i) * ldy + row] = _mm_cvtss_f32(s);                                               \
        }                                                                                                  \
    }
typedef void (*q4g_fn)(const struct lmc_qweight *, int64_t, const struct lmc_q8rows *, int64_t, float *, int64_t);
#define Q4G_ONE(SUF, TGT, R, MR)                                                                           \
    TGT static void q4g_##SUF##_##R##x##MR(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x, \
                                           int64_t i0, float *y, int64_t ldy) {                            \
        q4g_tile_##SUF(w, row, R, x, i0, MR, y, ldy, 0, NULL);                                             \
    }
/* The 4-row tile against MR rows with its codes unpacked in un
 * (q4g_unpack, Q4G_UNPACK bytes per slot of the pair layout and row: the
 * masked codes lo, elements 0..15 of both blocks, and hi, 16..31): the
 * packed tile's operations without the masking, the same bits. */
#define Q4G_UNPACK 64
#define Q4G_ONE_UN(SUF, TGT, MR)                                                                           \
    TGT static void q4g_##SUF##_4x##MR##_un(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x, \
                                            int64_t i0, float *y, int64_t ldy, const uint8_t *un) {        \
        q4g_tile_##SUF(w, row, 4, x, i0, MR, y, ldy, 1, un);                                               \
    }
#define Q4G_UNPACKER(TGT, SUF)                                                                             \
    TGT static void q4g_unpack_##SUF(const struct lmc_qweight *w, int64_t row, uint8_t *un) {             \
        const int64_t rb = w->row_bytes, ng = w->n_groups;                                                 \
        const uint8_t *wp = w->data + row * rb;                                                            \
        const __m256i m15 = _mm256_set1_epi8(15);                                                          \
        for (int64_t g = 0; g < ng; g++)                                                                   \
            for (int64_t b = w->gblk[g], e = w->gblk[g + 1]; b < e; b += 2, un += 4 * Q4G_UNPACK)          \
                for (int r = 0; r < 4; r++) {                                                              \
                    const uint8_t *c = wp + r * rb + 16 * b;                                               \
                    __m256i v = b + 1 < e ? _mm256_loadu_si256((const __m256i *)c)                         \
                                          : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)c));   \
                    _mm256_store_si256((__m256i *)(un + Q4G_UNPACK * r), _mm256_and_si256(v, m15));        \
                    _mm256_store_si256((__m256i *)(un + Q4G_UNPACK * r + 32),                              \
                                       _mm256_and_si256(_mm256_srli_epi16(v, 4), m15));                    \
                }                                                                                          \
    }
/* Room for the unpacked tile (K up to 12288 at groups of 128: 48 KB, L1 and L2). */
#define Q4G_UNPACK_MAX (192 * 4 * Q4G_UNPACK)
#define Q4G_ALL(SUF, TGT, TGTI)                                                                            \
    Q4G_ZS(TGTI, SUF)                                                                                      \
    Q4G_TILE(TGTI, SUF)                                                                                    \
    Q4G_ONE(SUF, TGT, 4, 1) Q4G_ONE(SUF, TGT, 4, 2) Q4G_ONE(SUF, TGT, 4, 3) Q4G_ONE(SUF, TGT, 4, 4)        \
    Q4G_ONE(SUF, TGT, 1, 1) Q4G_ONE(SUF, TGT, 1, 2) Q4G_ONE(SUF, TGT, 1, 3) Q4G_ONE(SUF, TGT, 1, 4)        \
    Q4G_ONE_UN(SUF, TGT, 1) Q4G_ONE_UN(SUF, TGT, 2) Q4G_ONE_UN(SUF, TGT, 3) Q4G_ONE_UN(SUF, TGT, 4)        \
    Q4G_UNPACKER(TGT, SUF)                                                                                 \
    static const q4g_fn q4g_##SUF##_fns[2][Q4_MR + 1] = {                                                  \
        {NULL, q4g_##SUF##_4x1, q4g_##SUF##_4x2, q4g_##SUF##_4x3, q4g_##SUF##_4x4},                        \
        {NULL, q4g_##SUF##_1x1, q4g_##SUF##_1x2, q4g_##SUF##_1x3, q4g_##SUF##_1x4}};                       \
    static void (*const q4g_##SUF##_un_fns[Q4_MR + 1])(const struct lmc_qweight *, int64_t,               \
                                                       const struct lmc_q8rows *, int64_t, float *, int64_t, \
                                                       const uint8_t *) = {                                \
        NULL, q4g_##SUF##_4x1_un, q4g_##SUF##_4x2_un, q4g_##SUF##_4x3_un, q4g_##SUF##_4x4_un};             \
    static void q4g_rows_##SUF(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, \
                               float *y, int64_t ldy) {                                                    \
        _Alignas(64) uint8_t un[Q4G_UNPACK_MAX];                                                           \
        int64_t nch = (x->m + Q4_MR - 1) / Q4_MR;                                                          \
        const int un_ok = x->m > Q4_MR && lmc_q8rows_pairs(w) * 4 * Q4G_UNPACK <= Q4G_UNPACK_MAX;          \
        for (int64_t r = r0; r < r1;) {                                                                    \
            int four = r + 4 <= r1, unp = four && un_ok;                                                   \
            if (unp) q4g_unpack_##SUF(w, r, un);                                                           \
            for (int64_t c = 0; c < nch; c++) {                                                            \
                int64_t i0;                                                                                \
                int mr;                                                                                    \
                q4_chunk(x->m, c, &i0, &mr);                                                               \
                if (unp) q4g_##SUF##_un_fns[mr](w, r, x, i0, y, ldy, un);                                  \
                else q4g_##SUF##_fns[four ? 0 : 1][mr](w, r, x, i0, y, ldy);                               \
            }                                                                                              \
            r += four ? 4 : 1;                                                                             \
        }                                                                                                  \
    }

Q4_ALL(vnni, T4_VNNI, I4_VNNI)
Q4_ALL(avx2, T4_AVX2, I4_AVX2)
Q4G_ALL(vnni, T4_VNNI, I4_VNNI)
Q4G_ALL(avx2, T4_AVX2, I4_AVX2)

/* GGUF Q8_0 (34-byte blocks: f16 scale, 32 signed codes), VNNI only, in
 * the pair layout of Q4_0: the codes of elements 0..15 of two blocks side
 * by side in one ymm, 16..31 in another, plus 128 as unsigned bytes
 * (vpdpbusd sums in int32, no saturation; AVX2's maddubs would saturate);
 * the -128 x lane sums the dot's start, so lane l is the exact sum(w q) of
 * its 8 elements; one conversion, scale product and FMA per pair of blocks
 * (an odd last block pairs with a zero block). The same 4 x MR tiles. */
T4_VNNI static void q8_tile(const struct lmc_qweight *w, int64_t row, int R, const struct lmc_q8rows *x, int64_t i0,
                            int MR, float *y, int64_t ldy) {
    const int64_t nb = w->k / 32, rb = w->row_bytes;
    const uint8_t *wp = w->data + row * rb;
    const uint8_t *xp = x->pairs + i0 * x->pair_stride;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[4][Q4_MR];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) acc[r][i] = _mm256_setzero_ps();
    const int64_t pft = (4 * rb < Q4_PF_BYTES ? 2 : 1); /* as Q4_0's: 272 bytes a pair */
    const uint8_t *pf = wp + pft * 4 * rb;
    const int pf_on = Q4_PF_BYTES > 0 && R == 4 && row + (pft + 1) * 4 <= w->n;
    for (int64_t p = 0; 2 * p < nb; p++) {
        const int full = 2 * p + 1 < nb;
        if (pf_on)
            _Pragma("GCC unroll 5") for (int t = 0; t < 5; t++) _mm_prefetch((const char *)pf + 272 * p + 64 * t, _MM_HINT_T0);
        __m256i wa[4], wb[4];
        __m256 dw[4];
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const uint8_t *c = wp + r * rb + 68 * p;
            __m128i a1 = full ? _mm_loadu_si128((const __m128i *)(c + 36)) : _mm_set1_epi8((char)0x80);
            __m128i b1 = full ? _mm_loadu_si128((const __m128i *)(c + 52)) : _mm_set1_epi8((char)0x80);
            wa[r] = _mm256_xor_si256(_mm256_set_m128i(a1, _mm_loadu_si128((const __m128i *)(c + 2))), flip);
            wb[r] = _mm256_xor_si256(_mm256_set_m128i(b1, _mm_loadu_si128((const __m128i *)(c + 18))), flip);
            __m128i h = _mm_set1_epi16(q4_f16bits(c));
            h = full ? _mm_mask_set1_epi16(h, 0xf0, q4_f16bits(c + 34)) : _mm_maskz_mov_epi16(0x0f, h);
            dw[r] = _mm256_cvtph_ps(h);
        }
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
            const uint8_t *a = xp + i * x->pair_stride + Q4_PAIR * p;
            __m256i xa = _mm256_load_si256((const __m256i *)a);
            __m256i xb = _mm256_load_si256((const __m256i *)(a + 32));
            __m256 dx = _mm256_load_ps((const float *)(a + 64));
            __m256i z = _mm256_load_si256((const __m256i *)(a + 96));
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                __m256i s = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(z, wa[r], xa), wb[r], xb);
                acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw[r], dx), acc[r][i]);
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
        __m128 s = q4_sum4_vnni(acc[0][i], R > 1 ? acc[1][i] : zero, R > 2 ? acc[2][i] : zero,
                                R > 3 ? acc[3][i] : zero);
        if (R == 4) _mm_storeu_ps(y + (i0 + i) * ldy + row, s);
        else y[(i0 + i) * ldy + row] = _mm_cvtss_f32(s);
    }
}
#define Q8_ONE(R, MR)                                                                                      \
    T4_VNNI static void q8_##R##x##MR(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x, \
                                      int64_t i0, float *y, int64_t ldy) {                                 \
        q8_tile(w, row, R, x, i0, MR, y, ldy);                                                             \
    }
Q8_ONE(4, 1) Q8_ONE(4, 2) Q8_ONE(4, 3) Q8_ONE(4, 4) Q8_ONE(1, 1) Q8_ONE(1, 2) Q8_ONE(1, 3) Q8_ONE(1, 4)
static const q4g_fn q8_fns[2][Q4_MR + 1] = {{NULL, q8_4x1, q8_4x2, q8_4x3, q8_4x4},
                                             {NULL, q8_1x1, q8_1x2, q8_1x3, q8_1x4}};
static void q8_rows_vnni(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, float *y,
                         int64_t ldy) {
    int64_t nch = (x->m + Q4_MR - 1) / Q4_MR;
    for (int64_t r = r0; r < r1;) {
        int four = r + 4 <= r1;
        for (int64_t c = 0; c < nch; c++) {
            int64_t i0;
            int mr;
            q4_chunk(x->m, c, &i0, &mr);
            q8_fns[four ? 0 : 1][mr](w, r, x, i0, y, ldy);
        }
        r += four ? 4 : 1;
    }
}


/* Q8_0 with AVX2 (maddubs cannot take the VNNI kernel's codes + 128: its
 * int16 pairs would saturate): per weight row and block the sign trick of
 * qmatmul_x86.c's single-row kernel, in its operation order (one FMA chain
 * per (weight row, activation row), block by block, then its horizontal
 * sum), so each product is the same bits as that kernel's and the same for
 * every M. Four weight rows at a time share the activation block, rebuilt
 * from the pair layout (elements 0..15 of both blocks in xa, 16..31 in xb;
 * scales at slot + 64, lanes 0 and 4), and are software-prefetched as the
 * 4-bit tiles are. */
T4_AVX2 static inline float q8s_hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* One block into acc, as the single-row kernel: aq = |q|, sx = sign(x, q),
 * scale = d_w d_x (shared by the row kernel and the prefill tile below). */
I4_AVX2 __m256 q8s_fma(__m256i aq, __m256i sx, __m256 scale, __m256 acc) {
    __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, sx), _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, acc);
}

I4_AVX2 __m256 q8s_step(const uint8_t *p, __m256i xv, float dx, __m256 acc) {
    __m256i q = _mm256_loadu_si256((const __m256i *)(p + 2));
    uint16_t h;
    memcpy(&h, p, 2);
    return q8s_fma(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q), _mm256_set1_ps(_cvtsh_ss(h) * dx), acc);
}

T4_AVX2 static void q8s_rows_avx2(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x,
                                  float *y, int64_t ldy) {
    const int64_t nb = w->k / 32, rb = w->row_bytes, pft = 4 * rb < Q4_PF_BYTES ? 2 : 1;
    int64_t r = r0;
    /* a 4-row tile against every activation row (prefill: the tile stays in L1) */
    for (; r + 4 <= r1; r += 4)
        for (int64_t i = 0; i < x->m; i++) {
            const uint8_t *xp = x->pairs + i * x->pair_stride;
            const uint8_t *wp = w->data + r * rb, *pf = wp + pft * 4 * rb;
            const int pf_on = Q4_PF_BYTES > 0 && i == 0 && r + (pft + 1) * 4 <= w->n;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *sl = xp + (b / 2) * 128;
                __m256i xa = _mm256_load_si256((const __m256i *)sl), xb = _mm256_load_si256((const __m256i *)(sl + 32));
                __m256i xv = b % 2 ? _mm256_permute2x128_si256(xa, xb, 0x31) : _mm256_permute2x128_si256(xa, xb, 0x20);
                float dx;
                memcpy(&dx, sl + 64 + 16 * (b % 2), 4);
                if (pf_on) {
                    _mm_prefetch((const char *)pf + 136 * b, _MM_HINT_T0);
                    _mm_prefetch((const char *)pf + 136 * b + 64, _MM_HINT_T0);
                    _mm_prefetch((const char *)pf + 136 * b + 128, _MM_HINT_T0);
                }
                a0 = q8s_step(wp + 34 * b, xv, dx, a0);
                a1 = q8s_step(wp + rb + 34 * b, xv, dx, a1);
                a2 = q8s_step(wp + 2 * rb + 34 * b, xv, dx, a2);
                a3 = q8s_step(wp + 3 * rb + 34 * b, xv, dx, a3);
            }
            float *yo = y + i * ldy + r;
            yo[0] = q8s_hsum(a0), yo[1] = q8s_hsum(a1), yo[2] = q8s_hsum(a2), yo[3] = q8s_hsum(a3);
        }
    for (; r < r1; r++)
        for (int64_t i = 0; i < x->m; i++) {
            const uint8_t *xp = x->pairs + i * x->pair_stride;
            const uint8_t *wp = w->data + r * rb;
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *sl = xp + (b / 2) * 128;
                __m256i xa = _mm256_load_si256((const __m256i *)sl), xb = _mm256_load_si256((const __m256i *)(sl + 32));
                __m256i xv = b % 2 ? _mm256_permute2x128_si256(xa, xb, 0x31) : _mm256_permute2x128_si256(xa, xb, 0x20);
                float dx;
                memcpy(&dx, sl + 64 + 16 * (b % 2), 4);
                a0 = q8s_step(wp + 34 * b, xv, dx, a0);
            }
            y[i * ldy + r] = q8s_hsum(a0);
        }
}

/* Q8_0 prefill with AVX2 (M >= Q8P_MIN): a 4 x Q8P_MR tile of (weight row,
 * activation row) products, each the single-row kernel's operations in its
 * order (the same bits as q8s_rows_avx2 and c.dot). Per 4-row weight tile
 * the codes' absolute values and the scales as floats are unpacked once
 * (q8p_unpack; the signed codes are read in place); per block of
 * activation rows the products d_w d_x of every block are formed four at a
 * time into pd, so the inner step is sign, maddubs, madd, convert and an
 * FMA with a broadcast load. The activations come as plain blocks (x->xq),
 * in panels of rows that stay in L2 while the thread's weight rows pass. */
#define Q8P_MR 2
#define Q8P_MIN 4
#define Q8P_NB_MAX 256                   /* K up to 8192 (longer rows: q8s_rows_avx2) */
#define Q8P_PANEL_BYTES (192 * 1024)     /* activation blocks a panel of rows takes */

T4_AVX2 static void q8p_unpack(const struct lmc_qweight *w, int64_t row, uint8_t *un, float *dw) {
    const int64_t nb = w->k / 32, rb = w->row_bytes;
    const uint8_t *wp = w->data + row * rb;
    for (int64_t b = 0; b < nb; b++)
        for (int r = 0; r < 4; r++) {
            const uint8_t *c = wp + r * rb + 34 * b;
            _mm256_store_si256((__m256i *)(un + 128 * b + 32 * r), _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(c + 2))));
            uint16_t h;
            memcpy(&h, c, 2);
            dw[4 * b + r] = _cvtsh_ss(h);
        }
}

I4_AVX2 void q8p_tile(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x, int64_t i0, int MR,
                      float *y, int64_t ldy, const uint8_t *un, const float *dw, float *pd) {
    const int64_t nb = w->k / 32, rb = w->row_bytes;
    const uint8_t *wp = w->data + row * rb;
    const struct lmc_q8act *xa[Q8P_MR];
    _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) xa[i] = x->xq + (i0 + i) * nb;
    for (int64_t b = 0; b < nb; b++) {
        __m128 d4 = _mm_load_ps(dw + 4 * b);
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++)
            _mm_store_ps(pd + 4 * (b * MR + i), _mm_mul_ps(d4, _mm_set1_ps(xa[i][b].d)));
    }
    __m256 acc[4][Q8P_MR];
    _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) acc[r][i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i xv[Q8P_MR];
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) xv[i] = _mm256_loadu_si256((const __m256i *)xa[i][b].q);
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
            __m256i aq = _mm256_load_si256((const __m256i *)(un + 128 * b + 32 * r));
            __m256i q = _mm256_loadu_si256((const __m256i *)(wp + r * rb + 34 * b + 2));
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++)
                acc[r][i] = q8s_fma(aq, _mm256_sign_epi8(xv[i], q), _mm256_broadcast_ss(pd + 4 * (b * MR + i) + r),
                                    acc[r][i]);
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++)
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) y[(i0 + i) * ldy + row + r] = q8s_hsum(acc[r][i]);
}
#define Q8P_ONE(MR)                                                                                        \
    T4_AVX2 static void q8p_4x##MR(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x,    \
                                   int64_t i0, float *y, int64_t ldy, const uint8_t *un, const float *dw,  \
                                   float *pd) {                                                            \
        q8p_tile(w, row, x, i0, MR, y, ldy, un, dw, pd);                                                   \
    }
Q8P_ONE(1) Q8P_ONE(2)

static void q8_rows_avx2(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, float *y,
                         int64_t ldy) {
    const int64_t nb = w->k / 32;
    if (x->m < Q8P_MIN || !x->xq || nb > Q8P_NB_MAX || r1 - r0 < 4) {
        q8s_rows_avx2(w, r0, r1, x, y, ldy);
        return;
    }
    _Alignas(64) uint8_t un[128 * Q8P_NB_MAX];
    _Alignas(64) float dw[4 * Q8P_NB_MAX], pd[4 * Q8P_MR * Q8P_NB_MAX];
    const int64_t r4 = r0 + (r1 - r0) / 4 * 4;
    const int64_t panel = LMC_MAX(Q8P_MR, Q8P_PANEL_BYTES / (nb * (int64_t)sizeof(struct lmc_q8act)) / Q8P_MR * Q8P_MR);
    for (int64_t m0 = 0; m0 < x->m; m0 += panel) {
        const int64_t m1 = LMC_MIN(x->m, m0 + panel);
        for (int64_t r = r0; r < r4; r += 4) {
            q8p_unpack(w, r, un, dw);
            int64_t i = m0;
            for (; i + Q8P_MR <= m1; i += Q8P_MR) q8p_4x2(w, r, x, i, y, ldy, un, dw, pd);
            for (; i < m1; i++) q8p_4x1(w, r, x, i, y, ldy, un, dw, pd);
        }
    }
    if (r4 < r1) q8s_rows_avx2(w, r4, r1, x, y, ldy); /* the 1-row tail */
}

void lmc_qdotm_table_q4_vnni(lmc_qdotm_fn *dotm) {
    dotm[LMC_QK_Q8_0] = q8_rows_vnni;
    dotm[LMC_QK_Q4_0] = q4_rows_vnni;
    dotm[LMC_QK_Q4_0R] = q4_rows_vnni;
    dotm[LMC_QK_U4G] = q4g_rows_vnni;
}
void lmc_qdotm_table_q4_avx2(lmc_qdotm_fn *dotm) {
    dotm[LMC_QK_Q8_0] = q8_rows_avx2;
    dotm[LMC_QK_Q4_0] = q4_rows_avx2;
    dotm[LMC_QK_Q4_0R] = q4_rows_avx2;
    dotm[LMC_QK_U4G] = q4g_rows_avx2;
}
#else
void lmc_qdotm_table_q4_vnni(lmc_qdotm_fn *dotm) { (void)dotm; }
void lmc_qdotm_table_q4_avx2(lmc_qdotm_fn *dotm) { (void)dotm; }
#endif
