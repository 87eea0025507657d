/* qmatmul_x86.c — x86 dot products for the quantized matmul: the same
 * kernels compiled twice, once with AVX2 (maddubs + madd) and once with
 * AVX-512 VNNI (vpdpbusd on 256-bit vectors), for Q8_0, Q4_0, Q4_1, Q4_K and
 * lmc's 4-bit groups (GPTQ/AWQ/rtn/ternary), each also in a four-row form
 * that unpacks a weight block once for four activation rows (Q4_1 single
 * row only); NF4 with AVX-512's 16-entry
 * table lookup (vpermps). Q4_0's and the groups' zero points are subtracted
 * in integers (a second dot of the zero against the activations: exact),
 * and the four-row forms do each row's operations in the single-row order,
 * so with AVX2 a row's result does not depend on M either. Each function carries its target attribute, so
 * this file builds without -march flags; qmatmul.c calls them only when the
 * CPU has the features. */
#include "quant/qmatmul.h"
#include "core/dtype.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define T_VNNI_KEEP __attribute__((unused, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

T_AVX2 static inline float f16at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 16 bytes of nibbles -> 32 unsigned bytes: low nibbles (elements 0..15)
 * then high nibbles (16..31). */
#define NIB32(p) _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(_mm_loadu_si128((const __m128i *)(p)), 4), _mm_set1_epi8(15)), \
                                  _mm_and_si128(_mm_loadu_si128((const __m128i *)(p)), _mm_set1_epi8(15)))

T_AVX2 static inline __m256i dot_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
T_VNNI static inline __m256i dot_vnni(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}
T_AVX2 static inline float hsum_avx2(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

#define XQ(b) _mm256_loadu_si256((const __m256i *)x[b].q)

#define KERNELS(SUF, TGT, DOT)                                                                                   \
    TGT static float q8_0_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x,            \
                                const float *xf) {                                                              \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        __m256 acc = _mm256_setzero_ps();                                                                       \
        for (int64_t b = 0; b < w->k / 32; b++, p += 34) {                                                      \
            __m256i q = _mm256_loadu_si256((const __m256i *)(p + 2));                                           \
            __m256i s = DOT(_mm256_sign_epi8(q, q), _mm256_sign_epi8(XQ(b), q));                                \
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f16at(p) * x[b].d), acc);               \
        }                                                                                                       \
        return hsum_avx2(acc);                                                                                  \
    }                                                                                                           \
    TGT static float q4_01_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, int one) { \
        int bb = one ? 20 : 18, o = one ? 4 : 2;                                                                \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        const __m256i eight = _mm256_set1_epi8(8);                                                              \
        __m256 acc = _mm256_setzero_ps();                                                                       \
        float corr = 0;                                                                                         \
        for (int64_t b = 0; b < w->k / 32; b++, p += bb) {                                                      \
            __m256i s = DOT(NIB32(p + o), XQ(b));                                                               \
            if (!one) s = _mm256_sub_epi32(s, DOT(eight, XQ(b))); /* Q4_0's zero point, exact */                \
            float dd = f16at(p) * x[b].d;                                                                       \
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dd), acc);                              \
            if (one) corr -= f16at(p + 2) * x[b].d * (float)(x[b].s0 + x[b].s1); /* Q4_1's float minimum */     \
        }                                                                                                       \
        return hsum_avx2(acc) - corr;                                                                           \
    }                                                                                                           \
    TGT static float q4_0_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x,            \
                                const float *xf) {                                                              \
        return q4_01_##SUF(w, row, x, 0);                                                                       \
    }                                                                                                           \
    TGT static float q4_1_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x,            \
                                const float *xf) {                                                              \
        return q4_01_##SUF(w, row, x, 1);                                                                       \
    }                                                                                                           \
    TGT static float q4_k_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x,            \
                                const float *xf) {                                                              \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        __m256 acc = _mm256_setzero_ps();                                                                       \
        float corr = 0;                                                                                         \
        for (int64_t sb = 0; sb < w->k / 256; sb++, p += 144, x += 8) {                                         \
            int16_t sc[8], mn[8];                                                                               \
            lmc_ggml_kscales_unpack(p + 4, sc, mn);                                                             \
            float d = f16at(p), dmin = f16at(p + 2);                                                            \
            for (int c = 0; c < 4; c++) {                                                                       \
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * c));                             \
                __m256i lo = _mm256_and_si256(v, _mm256_set1_epi8(15));                                         \
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));                   \
                __m256i s0 = DOT(lo, XQ(2 * c)), s1 = DOT(hi, XQ(2 * c + 1));                                   \
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d * (float)sc[2 * c] * x[2 * c].d), acc); \
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1),                                                   \
                                      _mm256_set1_ps(d * (float)sc[2 * c + 1] * x[2 * c + 1].d), acc);          \
                corr += dmin * (float)mn[2 * c] * x[2 * c].d * (float)(x[2 * c].s0 + x[2 * c].s1);              \
                corr += dmin * (float)mn[2 * c + 1] * x[2 * c + 1].d * (float)(x[2 * c + 1].s0 + x[2 * c + 1].s1); \
            }                                                                                                   \
        }                                                                                                       \
        return hsum_avx2(acc) - corr;                                                                           \
    }                                                                                                           \
    TGT static float u4g_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x,             \
                               const float *xf) {                                                               \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        const float *sc = w->scale + row * w->n_groups;                                                         \
        const int32_t *zr = w->zero + row * w->n_groups;                                                        \
        __m256 acc = _mm256_setzero_ps();                                                                       \
        for (int64_t g = 0; g < w->n_groups; g++) {                                                             \
            const __m256i zv = _mm256_set1_epi8((char)zr[g]);                                                   \
            for (int64_t b = w->gblk[g]; b < w->gblk[g + 1]; b++) { /* zero point in integers: exact */         \
                __m256i s = _mm256_sub_epi32(DOT(NIB32(p + 16 * b), XQ(b)), DOT(zv, XQ(b)));                    \
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(sc[g] * x[b].d), acc);              \
            }                                                                                                   \
        }                                                                                                       \
        return hsum_avx2(acc);                                                                                  \
    }

KERNELS(avx2, T_AVX2, dot_avx2)
KERNELS(vnni, T_VNNI_KEEP, dot_vnni) /* Q4_0 and 4-bit groups: the AVX-512 forms below */

/* Four activation rows against one weight row: each weight block is loaded
 * and unpacked once for the four (prefill, batched decode). x holds the
 * rows' blocks xs apart. */
#define KERNELS4(SUF, TGT, DOT)                                                                                  \
    TGT static void q8_0x4_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, int64_t xs, \
                                 float *out) {                                                                  \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};   \
        for (int64_t b = 0; b < w->k / 32; b++, p += 34) {                                                      \
            __m256i q = _mm256_loadu_si256((const __m256i *)(p + 2)), aq = _mm256_sign_epi8(q, q);              \
            float d = f16at(p);                                                                                 \
            for (int i = 0; i < 4; i++) {                                                                       \
                const struct lmc_q8act *xb = x + i * xs + b;                                                    \
                __m256i s = DOT(aq, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->q), q));           \
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xb->d), acc[i]);             \
            }                                                                                                   \
        }                                                                                                       \
        for (int i = 0; i < 4; i++) out[i] = hsum_avx2(acc[i]);                                                 \
    }                                                                                                           \
    TGT static void q4_0x4_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, int64_t xs, \
                                 float *out) {                                                                  \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        const __m256i eight = _mm256_set1_epi8(8);                                                              \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};   \
        for (int64_t b = 0; b < w->k / 32; b++, p += 18) {                                                      \
            __m256i wv = NIB32(p + 2);                                                                          \
            float d = f16at(p);                                                                                 \
            for (int i = 0; i < 4; i++) { /* q4_01's operations for each row: the same bits */                  \
                const struct lmc_q8act *xb = x + i * xs + b;                                                    \
                __m256i xv = _mm256_loadu_si256((const __m256i *)xb->q);                                        \
                __m256i s = _mm256_sub_epi32(DOT(wv, xv), DOT(eight, xv));                                      \
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xb->d), acc[i]);             \
            }                                                                                                   \
        }                                                                                                       \
        for (int i = 0; i < 4; i++) out[i] = hsum_avx2(acc[i]);                                                 \
    }                                                                                                           \
    TGT static void q4_kx4_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, int64_t xs, \
                                 float *out) {                                                                  \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};   \
        float corr[4] = {0, 0, 0, 0};                                                                           \
        for (int64_t sb = 0; sb < w->k / 256; sb++, p += 144) {                                                 \
            int16_t sc[8], mn[8];                                                                               \
            lmc_ggml_kscales_unpack(p + 4, sc, mn);                                                             \
            float d = f16at(p), dmin = f16at(p + 2);                                                            \
            for (int c = 0; c < 4; c++) {                                                                       \
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * c));                             \
                __m256i lo = _mm256_and_si256(v, _mm256_set1_epi8(15));                                         \
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));                   \
                float s0 = d * (float)sc[2 * c], s1 = d * (float)sc[2 * c + 1];                                 \
                float m0 = dmin * (float)mn[2 * c], m1 = dmin * (float)mn[2 * c + 1];                           \
                for (int i = 0; i < 4; i++) {                                                                   \
                    const struct lmc_q8act *a = x + i * xs + 8 * sb + 2 * c, *bq = a + 1;                       \
                    __m256i t0 = DOT(lo, _mm256_loadu_si256((const __m256i *)a->q));                            \
                    __m256i t1 = DOT(hi, _mm256_loadu_si256((const __m256i *)bq->q));                           \
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t0), _mm256_set1_ps(s0 * a->d), acc[i]);        \
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t1), _mm256_set1_ps(s1 * bq->d), acc[i]);       \
                    corr[i] += m0 * a->d * (float)(a->s0 + a->s1) + m1 * bq->d * (float)(bq->s0 + bq->s1);      \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        for (int i = 0; i < 4; i++) out[i] = hsum_avx2(acc[i]) - corr[i];                                       \
    }                                                                                                           \
    TGT static void u4gx4_##SUF(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, int64_t xs,  \
                                float *out) {                                                                   \
        const uint8_t *p = w->data + row * w->row_bytes;                                                        \
        const float *sc = w->scale + row * w->n_groups;                                                         \
        const int32_t *zr = w->zero + row * w->n_groups;                                                        \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};   \
        for (int64_t g = 0; g < w->n_groups; g++) {                                                             \
            const __m256i zv = _mm256_set1_epi8((char)zr[g]);                                                   \
            for (int64_t b = w->gblk[g]; b < w->gblk[g + 1]; b++) {                                             \
                __m256i wv = NIB32(p + 16 * b);                                                                 \
                for (int i = 0; i < 4; i++) { /* u4g's operations for each row: the same bits */                \
                    const struct lmc_q8act *xb = x + i * xs + b;                                                \
                    __m256i xv = _mm256_loadu_si256((const __m256i *)xb->q);                                    \
                    __m256i s = _mm256_sub_epi32(DOT(wv, xv), DOT(zv, xv));                                     \
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(sc[g] * xb->d), acc[i]);     \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        for (int i = 0; i < 4; i++) out[i] = hsum_avx2(acc[i]);                                                 \
    }

KERNELS4(avx2, T_AVX2, dot_avx2)
KERNELS4(vnni, T_VNNI, dot_vnni)

/* NF4: the 16 codes in one register, looked up per nibble (vpermps). */
T_VNNI static float nf4_avx512(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    const float *am = w->absmax + row * (w->k / 64);
    const __m512 table = _mm512_loadu_ps(w->code);
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < w->k / 64; b++) {
        __m512 blk = _mm512_setzero_ps();
        for (int h = 0; h < 2; h++) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 32 * b + 16 * h)));
            __m512 we = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
            __m512 wo = _mm512_permutexvar_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)), table);
            const float *xs = xf + 64 * b + 32 * h;
            __m512 xa = _mm512_loadu_ps(xs), xb = _mm512_loadu_ps(xs + 16);
            blk = _mm512_fmadd_ps(we, _mm512_permutex2var_ps(xa, ie, xb), blk);
            blk = _mm512_fmadd_ps(wo, _mm512_permutex2var_ps(xa, io, xb), blk);
        }
        acc = _mm512_fmadd_ps(blk, _mm512_set1_ps(am[b]), acc);
    }
    return _mm512_reduce_add_ps(acc);
}


/* AVX-512 single-row Q4_0 and 4-bit groups: two blocks per 512-bit vector
 * (codes unsigned; the zero point's share subtracted in the vector by a
 * second vpdpbusd of the zero against the activations). */
T_VNNI static inline __m512i nib64(const uint8_t *p0, const uint8_t *p1) {
    __m256i v = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)p1), _mm_loadu_si128((const __m128i *)p0));
    __m256i lo = _mm256_and_si256(v, _mm256_set1_epi8(15));
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(15));
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                              _mm256_permute2x128_si256(lo, hi, 0x31), 1);
}
T_VNNI static inline __m512i xq64(const struct lmc_q8act *a, const struct lmc_q8act *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a->q)),
                              _mm256_loadu_si256((const __m256i *)b->q), 1);
}
T_VNNI static inline __m512 two(float a, float b) {
    return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
}

T_VNNI static float q4_0_avx512(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    int64_t nb = w->k / 32, b = 0;
    __m512 acc = _mm512_setzero_ps();
    const __m512i eight = _mm512_set1_epi8(8);
    for (; b + 2 <= nb; b += 2, p += 36) {
        __m512i xv = xq64(&x[b], &x[b + 1]);
        __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), nib64(p + 2, p + 20), xv);
        s = _mm512_sub_epi32(s, _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, xv));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), two(f16at(p) * x[b].d, f16at(p + 18) * x[b + 1].d), acc);
    }
    float r = _mm512_reduce_add_ps(acc);
    for (; b < nb; b++, p += 18) { /* an odd last block */
        int32_t t = 0;
        for (int j = 0; j < 16; j++) t += ((p[2 + j] & 15) - 8) * x[b].q[j] + ((p[2 + j] >> 4) - 8) * x[b].q[j + 16];
        r += f16at(p) * x[b].d * (float)t;
    }
    return r;
}

T_VNNI static float u4g_avx512(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, const float *xf) {
    const uint8_t *p = w->data + row * w->row_bytes;
    const float *sc = w->scale + row * w->n_groups;
    const int32_t *zr = w->zero + row * w->n_groups;
    __m512 acc = _mm512_setzero_ps();
    float r = 0;
    for (int64_t g = 0; g < w->n_groups; g++) {
        const __m512i z = _mm512_set1_epi8((char)zr[g]);
        int64_t b = w->gblk[g], e = w->gblk[g + 1];
        for (; b + 2 <= e; b += 2) {
            __m512i xv = xq64(&x[b], &x[b + 1]);
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), nib64(p + 16 * b, p + 16 * b + 16), xv);
            s = _mm512_sub_epi32(s, _mm512_dpbusd_epi32(_mm512_setzero_si512(), z, xv));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), two(sc[g] * x[b].d, sc[g] * x[b + 1].d), acc);
        }
        for (; b < e; b++) {
            const uint8_t *q = p + 16 * b;
            int32_t t = 0;
            for (int j = 0; j < 16; j++) t += (q[j] & 15) * x[b].q[j] + (q[j] >> 4) * x[b].q[j + 16];
            r += sc[g] * x[b].d * (float)(t - zr[g] * (x[b].s0 + x[b].s1));
        }
    }
    return r + _mm512_reduce_add_ps(acc);
}

void lmc_qdot4_table_avx2(lmc_qdot4_fn *dot4) {
    dot4[LMC_QK_Q8_0] = q8_0x4_avx2;
    dot4[LMC_QK_Q4_0] = q4_0x4_avx2;
    dot4[LMC_QK_Q4_K] = q4_kx4_avx2;
    dot4[LMC_QK_U4G] = u4gx4_avx2;
}

void lmc_qdot4_table_vnni(lmc_qdot4_fn *dot4) {
    dot4[LMC_QK_Q8_0] = q8_0x4_vnni;
    dot4[LMC_QK_Q4_0] = q4_0x4_vnni;
    dot4[LMC_QK_Q4_K] = q4_kx4_vnni;
    dot4[LMC_QK_U4G] = u4gx4_vnni;
}

void lmc_qdot_table_avx2(lmc_qdot_fn *dot) {
    dot[LMC_QK_Q8_0] = q8_0_avx2;
    dot[LMC_QK_Q4_0] = q4_0_avx2;
    dot[LMC_QK_Q4_1] = q4_1_avx2;
    dot[LMC_QK_Q4_K] = q4_k_avx2;
    dot[LMC_QK_U4G] = u4g_avx2;
}

void lmc_qdot_table_vnni(lmc_qdot_fn *dot) {
    dot[LMC_QK_Q8_0] = q8_0_vnni;
    dot[LMC_QK_Q4_0] = q4_0_avx512;
    dot[LMC_QK_Q4_1] = q4_1_vnni;
    dot[LMC_QK_Q4_K] = q4_k_vnni;
    dot[LMC_QK_U4G] = u4g_avx512;
    dot[LMC_QK_NF4] = nf4_avx512;
}

#else
void lmc_qdot4_table_avx2(lmc_qdot4_fn *dot4) { (void)dot4; }
void lmc_qdot4_table_vnni(lmc_qdot4_fn *dot4) { (void)dot4; }
void lmc_qdot_table_avx2(lmc_qdot_fn *dot) { (void)dot; }
void lmc_qdot_table_vnni(lmc_qdot_fn *dot) { (void)dot; }
#endif
