/* qmatmul_q4k.c — the small-M product (any number of activation rows,
 * decode's M = 1 first) for GGUF Q4_K (super-blocks of 256: fp16 d and
 * dmin, eight 6-bit sub-block scales and mins, 128 nibble bytes), AVX-512
 * VNNI on 256-bit vectors, in the 4 weight rows x up to 4 activation rows
 * tiles of qmatmul_q4.c.
 *
 * A weight element is d sc_j q - dmin mn_j (q 0..15, j its sub-block of 32),
 * so a sub-block's share of a row's product with activation block j
 * (x ~ dx_j c) is d sc_j dx_j sum(q c) - dmin mn_j dx_j sum(c). The first is
 * one vpdpbusd of the unsigned codes with the signed activation codes
 * (exact int32 lanes), converted and scaled per lane; the second is, per
 * super-block, one 8-lane product of the row's dmin mn_j with the
 * activation's dx_j sum(c_j). Each 32-byte chunk of the codes holds two
 * sub-blocks: its low nibbles sub-block 2c, its high nibbles 2c + 1, each in
 * element order, so the activation codes are used as quantized.
 *
 * Activation layout ("Q4_K slots"): per super-block Q4K_SLOTS slots of 128
 * bytes: for each of its 8 blocks 64 bytes (the 32 codes, the scale dx 8
 * times), then 8 floats dx_j sum(c_j). Each (weight row, activation row)
 * pair has its own accumulator and operation order, so a row's result is
 * the same bits for every M. */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <string.h>

#define Q4K_SLOTS 5 /* 128-byte slots a super-block's activations take (544 bytes used) */

int64_t lmc_q4k_slots(const struct lmc_qweight *w) { return w->kp / 256 * Q4K_SLOTS; }

void lmc_q4k_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t i0, int64_t i1, void *buf) {
    int64_t nb = w->kp / 32, nsb = w->kp / 256;
    for (int64_t i = i0; i < i1; i++) {
        uint8_t *o = (uint8_t *)buf + i * nsb * Q4K_SLOTS * 128;
        const struct lmc_q8act *x = xq + i * nb;
        for (int64_t s = 0; s < nsb; s++, o += Q4K_SLOTS * 128) {
            float f[8];
            for (int j = 0; j < 8; j++) {
                const struct lmc_q8act *a = &x[8 * s + j];
                float d8[8];
                for (int l = 0; l < 8; l++) d8[l] = a->d;
                memcpy(o + 64 * j, a->q, 32);
                memcpy(o + 64 * j + 32, d8, 32);
                f[j] = a->d * (float)(a->s0 + a->s1);
            }
            memcpy(o + 512, f, 32);
            memset(o + 544, 0, Q4K_SLOTS * 128 - 544);
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define K_MR 4
#define K_PF_TILES 2
#define K_PRE_MAX 64 /* super-blocks a row's scales are decoded ahead for (K <= 16384) */
#define TK __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define IK __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))) static inline

/* A super-block's d sc_j (j = 0..7) into sc and dmin mn_j into mn: the
 * 12 scale bytes as three little-endian words w0 w1 w2 (bytes 0-3: the low
 * 6 bits of sc_0..3, their top 2 bits the high bits of sc_4..7; bytes 4-7
 * likewise for mn; bytes 8-11: the low 4 bits of sc_4..7, high 4 of
 * mn_4..7), unpacked 4 bytes at a time. */
IK void q4k_scales(const uint8_t *b, __m256 *sc, __m256 *mn) {
    uint32_t w[3];
    memcpy(w, b + 4, 12);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    uint32_t s03 = w[0] & m6, m03 = w[1] & m6;
    uint32_t s47 = (w[2] & m4) | (((w[0] >> 6) & m2) << 4), m47 = ((w[2] >> 4) & m4) | (((w[1] >> 6) & m2) << 4);
    __m128i v = _mm_set_epi32((int)m47, (int)m03, (int)s47, (int)s03);
    uint32_t dd;
    memcpy(&dd, b, 4);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)); /* d, dmin */
    *sc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), _mm256_set1_ps(_mm_cvtss_f32(dm)));
    *mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))),
                        _mm256_permutexvar_ps(_mm256_set1_epi32(1), _mm256_castps128_ps256(dm)));
}

/* Weight rows row .. row + R - 1 against activation rows i0 .. i0 + MR - 1.
 * pre: the rows' decoded scales (16 floats per row and super-block, row
 * r's at pre + 16 (r nsb + s)) and un their codes unpacked (256 bytes per
 * row and super-block: per chunk c the low-nibble then the high-nibble
 * codes), or both NULL to decode them here (the same values, so the same
 * bits). */
IK void q4k_tile(const struct lmc_qweight *w, int64_t row, int R, const struct lmc_q8rows *x, int64_t i0, int MR,
                 float *y, int64_t ldy, const float *pre, const uint8_t *un) {
    const int64_t nsb = w->k / 256, rb = w->row_bytes;
    const uint8_t *wp = w->data + row * rb;
    const uint8_t *xp = x->pairs + i0 * x->pair_stride;
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256 acc[4][K_MR];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) acc[r][i] = _mm256_setzero_ps();
    /* software prefetch, as Q4_0's tiles: the 4 rows' bytes (contiguous) K_PF_TILES tiles ahead, swept at
     * the rate this tile reads its own (576 bytes a super-block) */
    const uint8_t *pf = wp + (int64_t)K_PF_TILES * 4 * rb;
    const int pf_on = !pre && R == 4 && row + (K_PF_TILES + 1) * 4 <= w->n;
    for (int64_t s = 0; s < nsb; s++) {
        if (pf_on)
            _Pragma("GCC unroll 9") for (int t = 0; t < 9; t++) _mm_prefetch((const char *)pf + 576 * s + 64 * t, _MM_HINT_T0);
        __m256 scv[4], mnv[4];
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            if (pre) {
                scv[r] = _mm256_load_ps(pre + 16 * (r * nsb + s));
                mnv[r] = _mm256_load_ps(pre + 16 * (r * nsb + s) + 8);
            } else {
                q4k_scales(wp + r * rb + 144 * s, &scv[r], &mnv[r]);
            }
        }
        const uint8_t *xs = xp + s * Q4K_SLOTS * 128;
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
            __m256i lo[4], hi[4];
            __m256 s0[4], s1[4];
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                if (pre) {
                    const uint8_t *u = un + (r * nsb + s) * 256 + 64 * c;
                    lo[r] = _mm256_load_si256((const __m256i *)u);
                    hi[r] = _mm256_load_si256((const __m256i *)(u + 32));
                    s0[r] = _mm256_broadcast_ss(pre + 16 * (r * nsb + s) + 2 * c);
                    s1[r] = _mm256_broadcast_ss(pre + 16 * (r * nsb + s) + 2 * c + 1);
                    continue;
                }
                __m256i v = _mm256_loadu_si256((const __m256i *)(wp + r * rb + 144 * s + 16 + 32 * c));
                lo[r] = _mm256_and_si256(v, m15);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
                s0[r] = _mm256_permutexvar_ps(_mm256_set1_epi32(2 * c), scv[r]);
                s1[r] = _mm256_permutexvar_ps(_mm256_set1_epi32(2 * c + 1), scv[r]);
            }
            _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
                const uint8_t *a = xs + i * x->pair_stride + 128 * c;
                __m256i xa = _mm256_load_si256((const __m256i *)a);
                __m256 da = _mm256_load_ps((const float *)(a + 32));
                __m256i xb = _mm256_load_si256((const __m256i *)(a + 64));
                __m256 db = _mm256_load_ps((const float *)(a + 96));
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
                    __m256i ta = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo[r], xa);
                    __m256i tb = _mm256_dpbusd_epi32(_mm256_setzero_si256(), hi[r], xb);
                    acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ta), _mm256_mul_ps(s0[r], da), acc[r][i]);
                    acc[r][i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tb), _mm256_mul_ps(s1[r], db), acc[r][i]);
                }
            }
        }
        _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
            __m256 f = _mm256_load_ps((const float *)(xs + i * x->pair_stride + 512));
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) acc[r][i] = _mm256_fnmadd_ps(mnv[r], f, acc[r][i]);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    _Pragma("GCC unroll 4") for (int i = 0; i < MR; i++) {
        __m256 a = acc[0][i], b = R > 1 ? acc[1][i] : zero, c = R > 2 ? acc[2][i] : zero, d = R > 3 ? acc[3][i] : zero;
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        __m128 sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        if (R == 4) _mm_storeu_ps(y + (i0 + i) * ldy + row, sum);
        else y[(i0 + i) * ldy + row] = _mm_cvtss_f32(sum);
    }
}

typedef void (*q4k_fn)(const struct lmc_qweight *, int64_t, const struct lmc_q8rows *, int64_t, float *, int64_t,
                       const float *, const uint8_t *);
#define K_ONE(R, MR)                                                                                          \
    TK static void q4k_##R##x##MR(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x,     \
                                  int64_t i0, float *y, int64_t ldy, const float *pre, const uint8_t *un) { \
        q4k_tile(w, row, R, x, i0, MR, y, ldy, pre, un);                                                    \
    }
K_ONE(4, 1) K_ONE(4, 2) K_ONE(4, 3) K_ONE(4, 4) K_ONE(1, 1) K_ONE(1, 2) K_ONE(1, 3) K_ONE(1, 4)
static const q4k_fn q4k_fns[2][K_MR + 1] = {{NULL, q4k_4x1, q4k_4x2, q4k_4x3, q4k_4x4},
                                            {NULL, q4k_1x1, q4k_1x2, q4k_1x3, q4k_1x4}};

TK static void q4k_rows_vnni(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, float *y,
                          int64_t ldy) {
    int64_t nch = (x->m + K_MR - 1) / K_MR, nsb = w->k / 256;
    /* More than one chunk of activation rows: each 4-row tile's scales decoded and codes unpacked once for
     * all of them. */
    _Alignas(64) float pre[4 * 16 * K_PRE_MAX];
    _Alignas(64) uint8_t un[4 * 256 * K_PRE_MAX];
    const int use_pre = nch > 1 && nsb <= K_PRE_MAX;
    for (int64_t r = r0; r < r1;) {
        int four = r + 4 <= r1, R = four ? 4 : 1;
        if (use_pre)
            for (int t = 0; t < R; t++)
                for (int64_t s = 0; s < nsb; s++) {
                    __m256 a, b;
                    q4k_scales(w->data + (r + t) * w->row_bytes + 144 * s, &a, &b);
                    _mm256_store_ps(pre + 16 * (t * nsb + s), a);
                    _mm256_store_ps(pre + 16 * (t * nsb + s) + 8, b);
                    const uint8_t *q = w->data + (r + t) * w->row_bytes + 144 * s + 16;
                    for (int c = 0; c < 4; c++) {
                        __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
                        uint8_t *u = un + (t * nsb + s) * 256 + 64 * c;
                        _mm256_store_si256((__m256i *)u, _mm256_and_si256(v, _mm256_set1_epi8(15)));
                        _mm256_store_si256((__m256i *)(u + 32),
                                           _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15)));
                    }
                }
        for (int64_t c = 0; c < nch; c++) {
            int64_t base = x->m / nch, rem = x->m % nch, i0 = c * base + LMC_MIN(c, rem);
            int mr = (int)(base + (c < rem));
            q4k_fns[four ? 0 : 1][mr](w, r, x, i0, y, ldy, use_pre ? pre : NULL, use_pre ? un : NULL);
        }
        r += R;
    }
}

void lmc_qdotm_table_q4k_vnni(lmc_qdotm_fn *dotm) { dotm[LMC_QK_Q4_K] = q4k_rows_vnni; }
#else
void lmc_qdotm_table_q4k_vnni(lmc_qdotm_fn *dotm) { (void)dotm; }
#endif
