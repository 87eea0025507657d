/* qmatmul_smallm.c — quantized products for any number of activation rows
 * (made for few: speculative verification, batched decode steps): each
 * weight block is loaded and unpacked once and dotted against every
 * activation row, register-blocked over up to QSM_MR rows at a time (more
 * rows: balanced chunks, the weight row then comes from L1). An AVX-512
 * VNNI kernel for Q8_0, two blocks per 512-bit vector (Q4_0 and lmc's 4-bit
 * groups have their own 4-row tiles in qmatmul_q4.c, which also uses the
 * lmc_q8rows fill/view below). A row's operations never depend on the
 * other rows, so its result is the same for every M (verification logits
 * = decode logits, bit for bit). Other kinds and instruction sets keep
 * qmatmul.c's per-row kernels.
 * Functions carry their target attribute; qmatmul.c calls them only when
 * the CPU has the features. */
#include "quant/qmatmul.h"
#include "core/core.h"
#include "core/dtype.h"

#include <string.h>

#define QSM_MR 8 /* activation rows per register block */
/* i over the block's rows, unrolled (MR is a constant: registers, not memory) */
#define QSM_EACH(i) _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)

#if defined(__x86_64__)
#include <immintrin.h>

#define T_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define T_VNNI_INLINE __attribute__((always_inline, target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))) static inline

/* Chunk c of m rows split into the fewest chunks of at most QSM_MR, sizes
 * as equal as possible: first row and count. */
static void qsm_chunk(int64_t m, int64_t c, int64_t *i0, int *mr) {
    int64_t nch = (m + QSM_MR - 1) / QSM_MR, base = m / nch, rem = m % nch;
    *i0 = c * base + LMC_MIN(c, rem);
    *mr = (int)(base + (c < rem));
}

T_VNNI_INLINE float qsm_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
/* The sums of 4 vectors (one per row), each row's arithmetic the same
 * whatever the others hold (so a row's result does not depend on MR). */
T_VNNI_INLINE __m128 qsm_sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
#define QSM_FOLD(v) _mm256_add_ps(_mm512_castps512_ps256(v), \
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(QSM_FOLD(a), QSM_FOLD(b)), _mm256_hadd_ps(QSM_FOLD(c), QSM_FOLD(d)));
#undef QSM_FOLD
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
/* out[i] = the sum of acc[i]'s lanes, i < MR. */
T_VNNI_INLINE void qsm_store(const __m512 *acc, int MR, float *out) {
    _Pragma("GCC unroll 2") for (int i = 0; i < MR; i += 4) {
        __m512 z = _mm512_setzero_ps();
        __m128 s = qsm_sum4(acc[i], i + 1 < MR ? acc[i + 1] : z, i + 2 < MR ? acc[i + 2] : z,
                            i + 3 < MR ? acc[i + 3] : z);
        float t[4];
        _mm_storeu_ps(t, s);
        for (int k = 0; k < 4 && i + k < MR; k++) out[i + k] = t[k];
    }
}
T_VNNI_INLINE __m512 qsm_two(float a, float b) {
    return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
}

/* Row i's (of the register block) codes and scales (lmc_q8rows; q, d, qs,
 * ds in the caller) for blocks b, b + 1 (full) or block b alone (the upper
 * lanes zero). */
#define QSM_X(i, b, full) ((full) ? _mm512_loadu_si512(q + (i) * qs + 32 * (b)) \
                                  : _mm512_maskz_loadu_epi8(0xffffffffull, q + (i) * qs + 32 * (b)))
#define QSM_D(i, b, full) ((full) ? _mm512_loadu_ps(d + (i) * ds + 8 * (b)) \
                                  : _mm512_maskz_loadu_ps(0xff, d + (i) * ds + 8 * (b)))

/* GGUF Q8_0 (34-byte blocks: f16 scale, 32 signed codes): |w| times x with
 * w's sign moved onto x (vpdpbusd multiplies unsigned by signed). */
T_VNNI_INLINE void qsm_q8_0(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x, int64_t i0,
                            int MR, float *out) {
    const uint8_t *p = w->data + row * w->row_bytes;
    int64_t nb = w->k / 32, b = 0, qs = w->kp, ds = w->kp / 4;
    const int8_t *q = x->q + i0 * qs;
    const float *d = x->d8 + i0 * ds;
    __m512 acc[QSM_MR];
    QSM_EACH(i) acc[i] = _mm512_setzero_ps();
    for (; b < nb; b += 2, p += 68) {
        int full = b + 2 <= nb;
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(p + 2));
        __m512i wv = full ? _mm512_inserti64x4(_mm512_castsi256_si512(w0),
                                               _mm256_loadu_si256((const __m256i *)(p + 36)), 1)
                          : _mm512_zextsi256_si512(w0);
        __m512 dw = full ? qsm_two(qsm_f16(p), qsm_f16(p + 34)) : _mm512_set1_ps(qsm_f16(p));
        __mmask64 neg = _mm512_movepi8_mask(wv);
        __m512i aw = _mm512_abs_epi8(wv);
        QSM_EACH(i) {
            __m512i xv = full ? QSM_X(i, b, 1) : QSM_X(i, b, 0);
            xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, xv);
            __m512 dx = full ? QSM_D(i, b, 1) : QSM_D(i, b, 0);
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx), acc[i]);
        }
    }
    qsm_store(acc, MR, out);
}

/* Weight rows stream from memory: row `row`'s bytes are prefetched
 * QSM_PF_ROWS rows ahead of the one being dotted. */
#define QSM_PF_ROWS 4
static void qsm_prefetch(const struct lmc_qweight *w, int64_t row) {
    if (row >= w->n) return;
    const char *p = (const char *)(w->data + row * w->row_bytes);
    for (int64_t b = 0; b < w->row_bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

/* One function per register-block height (MR is a constant in each, so the
 * accumulators live in registers), and the row driver over chunks. */
typedef void (*qsm_fn)(const struct lmc_qweight *, int64_t, const struct lmc_q8rows *, int64_t, float *);
#define QSM_ONE(K, R)                                                                                    \
    T_VNNI static void K##_r##R(const struct lmc_qweight *w, int64_t row, const struct lmc_q8rows *x,     \
                                int64_t i0, float *out) {                                                \
        K(w, row, x, i0, R, out);                                                                        \
    }
#define QSM_ALL(K)                                                                                       \
    QSM_ONE(K, 1) QSM_ONE(K, 2) QSM_ONE(K, 3) QSM_ONE(K, 4) QSM_ONE(K, 5) QSM_ONE(K, 6) QSM_ONE(K, 7)    \
    QSM_ONE(K, 8)                                                                                        \
    static const qsm_fn K##_fns[QSM_MR + 1] = {NULL,     K##_r1, K##_r2, K##_r3, K##_r4,                 \
                                               K##_r5,   K##_r6, K##_r7, K##_r8};                        \
    static void K##_rows(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x, \
                         float *y, int64_t ldy) {                                                        \
        float o[QSM_MR];                                                                                 \
        int64_t nch = (x->m + QSM_MR - 1) / QSM_MR;                                                      \
        for (int64_t row = r0; row < r1; row++)                                                          \
            for (int64_t c = 0; c < nch; c++) {                                                          \
                int64_t i0;                                                                              \
                int mr;                                                                                  \
                qsm_chunk(x->m, c, &i0, &mr);                                                            \
                if (c == 0) qsm_prefetch(w, row + QSM_PF_ROWS);                                          \
                K##_fns[mr](w, row, x, i0, o);                                                           \
                for (int t = 0; t < mr; t++) y[(i0 + t) * ldy + row] = o[t];                             \
            }                                                                                            \
    }
QSM_ALL(qsm_q8_0)

/* lmc_q8act_quantize with AVX-512: the same integers (x * (1 / d) rounded
 * to nearest even, as lrintf in the default rounding mode) and scales. */
T_VNNI static void qsm_quantize(const float *x, int64_t n, struct lmc_q8act *out) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / 32; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(v0, absmask), _mm512_and_ps(v1, absmask)));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        _mm_storeu_si128((__m128i *)out[b].q, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out[b].q + 16), _mm512_cvtsepi32_epi8(q1));
        out[b].d = d;
        out[b].s0 = (int16_t)_mm512_reduce_add_epi32(q0);
        out[b].s1 = (int16_t)_mm512_reduce_add_epi32(q1);
    }
}

void lmc_qdotm_table_vnni(lmc_qdotm_fn *dotm) {
    dotm[LMC_QK_Q8_0] = qsm_q8_0_rows;
}
lmc_q8quant_fn lmc_q8act_quantize_vnni(void) { return qsm_quantize; }
#else
void lmc_qdotm_table_vnni(lmc_qdotm_fn *dotm) { (void)dotm; }
lmc_q8quant_fn lmc_q8act_quantize_vnni(void) { return lmc_q8act_quantize; }
#endif

void lmc_q8rows_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, int64_t i0, int64_t i1,
                     void *buf) {
    if (w->kernel == LMC_QK_Q4_0 || w->kernel == LMC_QK_U4G) {
        lmc_q8rows_fill_pairs(w, xq, i0, i1, buf);
        return;
    }
    int64_t nb = w->kp / 32;
    int8_t *q = buf;
    float *d8 = (float *)(q + m * nb * 32);
    for (int64_t i = i0 * nb; i < i1 * nb; i++) {
        memcpy(q + 32 * i, xq[i].q, 32);
        for (int j = 0; j < 8; j++) d8[8 * i + j] = xq[i].d;
    }
}

void lmc_q8rows_view(const struct lmc_qweight *w, int64_t m, void *buf, struct lmc_q8rows *out) {
    if (w->kernel == LMC_QK_Q4_0 || w->kernel == LMC_QK_U4G)
        *out = (struct lmc_q8rows){NULL, NULL, m, buf, lmc_q8rows_pairs(w) * 128};
    else *out = (struct lmc_q8rows){buf, (const float *)((int8_t *)buf + m * w->kp), m, NULL, 0};
}

void lmc_q8rows_prepare(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, void *buf,
                        struct lmc_q8rows *out) {
    lmc_q8rows_fill(w, xq, m, 0, m, buf);
    lmc_q8rows_view(w, m, buf, out);
}

/* the pair layout: 128 bytes per pair of blocks (2 kp bytes, rounded up to a pair) */
size_t lmc_q8rows_bytes(const struct lmc_qweight *w, int64_t m) {
    return w->kernel == LMC_QK_Q4_0 || w->kernel == LMC_QK_U4G ? (size_t)(m * lmc_q8rows_pairs(w)) * 128
                                                               : (size_t)(m * w->kp) * 2;
}
