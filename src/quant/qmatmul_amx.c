/* qmatmul_amx.c — the quantized product on AMX-INT8 tiles at prefill
 * sizes (M >= LMC_QAMX_MIN_M rows) for Q8_0, Q4_0, Q4_KR and 4-bit group
 * (GPTQ/AWQ/rtn) weights (Q4_0 in the file's layout or as Q4_0R, the CPU
 * loader's pairs of blocks, and Q4_KR, its repack of Q4_K, read where they
 * lie: qamx_code_off / qamx_scale_off): the activation rows are quantized
 * to int8 blocks of 32 (struct lmc_q8act, c's quantizer, quantize_k for
 * Q4_KR: the integers every other kernel uses), then per block of K one
 * TDPBSSD per 16 x 16 outputs gives the exact integer block products,
 * which AVX-512 scales into f32 accumulators (Q8_0/Q4_0: by d_x * d_w;
 * groups: d_x after subtracting zero x the block's code sum, then the
 * group's scale per group; Q4_KR: int32 sums of the sub-blocks' products
 * times their scales and of their code sums times their mins, then per
 * super-block two FMAs: qamx_scale_k, qamx_sb_end).
 *
 * Tasks are panels of 32 weight rows (output columns). A task packs its
 * panel 32 blocks of K at a time into its stack in AMX's VNNI layout for
 * the second operand (per block and 16 columns: 8 rows of 16 columns x 4
 * consecutive K bytes, Q4_0's nibbles unpacked minus 8 so that the signed
 * product is Q4_0's s - 8 sx exactly; Q8_0's bytes reordered; the groups'
 * codes as they are, a chunk holding whole groups) plus the blocks' f32
 * weight scales (the groups' zeros and scales), then runs every group of
 * 32 activation rows against it: per block, tiles A 4-5 (16 rows x 32 bytes, read straight
 * from the lmc_q8act rows with their 40-byte block stride; a partial last
 * group through a zero-padded local copy), B 6-7 (8 x 64 bytes, the two
 * halves of the panel), C 0-3 (2 x 2 tiles of 16 x 16 int32, zeroed per
 * block), 4 TDPBSSD (16 x 16 x 32 each), the C tiles stored and scaled
 * (qamx_scale, qamx_scale_z and qamx_group_end: the formulas there) per
 * output, the blocks in order from acc = 0 (kept in y between the chunks
 * of K). Every output
 * gets the same sequence whatever its place, so the bits depend only on
 * its row of x, its row of W and K.
 *
 * Compiled with target attributes (gcc >= 11, clang >= 12, x86-64) and run
 * only where lmc_qamx_available(). With LMC_AMX_EMULATE (tests/
 * test_qmatmul_amx_emu.c includes this file) the tile instructions are
 * modelled in memory and the AVX-512 scaling has a scalar twin of the same
 * bits, so the addressing is checked on CPUs without AMX. gcc's tile
 * intrinsics are asm statements without a memory clobber: QAMX_FENCE
 * orders the plain stores and loads of the local buffers against them. */
#include "quant/qmatmul_amx.h"
#include "core/core.h"
#include "core/dtype.h"
#include "core/once.h"
#include "core/threadpool.h"
#include "ops/cpu/gemm_amx.h"
#include "ops/cpu/x86_transpose.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(LMC_AMX_EMULATE)
#define QAMX_X86 1
#define QAMX_EMU 1
#define QAMX_TARGET
#define QAMX_FENCE() ((void)0)
#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#include <cpuid.h>
#include <immintrin.h>
#define QAMX_EMU_AVX2 1 /* the packing's AVX2 transposes run too, where the CPU has AVX2 and F16C */
#define QAMX_PACK_TARGET __attribute__((target("avx2,f16c")))
#endif
#elif defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || \
                              (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define QAMX_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define QAMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define QAMX_FENCE() __asm__ volatile("" ::: "memory")
#endif

/* blocks of K a task packs at a time: 32 KiB of codes on its stack */
#define QAMX_KB 32

/* Whether AMX-INT8 runs where the CPU has it when neither LMC_CPU_AMX_INT8
 * nor LMC_CPU_AMX is set: on (the device's Xeon, 2026-12-07: the CPU's own
 * TDPBSSD equals tests/test_qmatmul_amx_emu.c's tile model bit for bit on
 * 48 shapes, the quantized tests pass with it, and a 512-token prefill of
 * the 125M model runs 1.2-1.75x the VNNI kernels' speed; bench/results/
 * issue10-xeon-2026-12-07.md). Its own default, apart from the AMX-BF16
 * path's (LMC_CPU_AMX_DEFAULT). */
#ifndef LMC_QAMX_DEFAULT
#define LMC_QAMX_DEFAULT 1
#endif

#if defined(QAMX_X86) && !defined(QAMX_EMU)
static bool qamx_probe(void) {
    const char *e8 = getenv("LMC_CPU_AMX_INT8"), *e = getenv("LMC_CPU_AMX");
    bool ok = e8 ? e8[0] == '1' : e ? e[0] == '1' : LMC_QAMX_DEFAULT;
    ok = ok && lmc_cpu_has_amx(); /* LMC_CPU_AMX=0 off; AMX-TILE, the OS grant */
    unsigned a, b, c, d;
    ok = ok && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 25)) && (d & (1u << 24)); /* AMX-INT8 */
    return ok && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
}
#endif

bool lmc_qamx_available(void) {
#if defined(QAMX_X86) && !defined(QAMX_EMU)
    static int state; /* asked once per process */
    return lmc_once_bool(&state, qamx_probe);
#else
    return false;
#endif
}

bool lmc_qamx_supports(const struct lmc_qweight *w) {
    if (w->perm || w->nf4_flat || w->kp != w->k || w->k % 32) return false;
    if (w->kernel == LMC_QK_Q8_0 || w->kernel == LMC_QK_Q4_0 || w->kernel == LMC_QK_Q4_0R) return w->ggml_type >= 0;
    if (w->kernel == LMC_QK_Q4_KR) return w->ggml_type >= 0 && w->k % 256 == 0;
    if (w->kernel != LMC_QK_U4G) return false;
    for (int64_t g = 0; g < w->n_groups; g++)
        if (w->gblk[g + 1] - w->gblk[g] > QAMX_KB) return false;
    return true;
}

bool lmc_qamx_takes(const struct lmc_qctx *c, const struct lmc_qweight *w, int64_t m) {
    return c->isa == LMC_QISA_AVX512VNNI && m >= LMC_QAMX_MIN_M && lmc_qamx_supports(w) && lmc_qamx_available();
}

#ifdef QAMX_EMU
#include "ops/cpu/amx_emu.h" /* the tiles and TDPBSSD modelled in memory, one set per thread */
#endif

#ifdef QAMX_X86
/* C 0-3: 16 x 64 bytes (16 int32 columns); A 4-5: 16 rows x 32 bytes (one
 * block of K); B 6-7: 8 rows x 64 bytes (32 bytes of K x 16 columns) */
QAMX_TARGET static void qamx_config(void) {
    _Alignas(64) struct lmc_amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = t == 4 || t == 5 ? 32 : 64;
        cfg.rows[t] = t >= 6 ? 8 : 16;
    }
    QAMX_FENCE();
    _tile_loadconfig(&cfg);
    QAMX_FENCE();
}

QAMX_TARGET static void qamx_release(void) {
    QAMX_FENCE();
    _tile_release();
}

#ifndef QAMX_PACK_TARGET
#define QAMX_PACK_TARGET QAMX_TARGET
#endif

/* Where block b (of nb a row) keeps its 32 codes (Q8_0: bytes; Q4_0, Q4_0R,
 * groups: 16 bytes of nibbles, element j low, 16 + j high) and its fp16
 * scale, from the row's start. Q4_0R (q4k_repack.c, qmatmul.h): blocks in
 * pairs of 36 bytes, codes of 2p at 36p, of 2p + 1 at 36p + 16, their
 * scales at 36p + 32 and + 34; an odd last block codes at 36p, scale at
 * 36p + 16. Q4_KR: sub-block j of super-block s (148 bytes) at 148 s +
 * 16 j, the same nibble order (unsigned codes; the scales apart). */
static inline int64_t qamx_code_off(int kernel, int64_t b) {
    switch (kernel) {
    case LMC_QK_Q8_0: return 34 * b + 2;
    case LMC_QK_Q4_0: return 18 * b + 2;
    case LMC_QK_Q4_0R: return 36 * (b >> 1) + 16 * (b & 1);
    case LMC_QK_Q4_KR: return LMC_Q4KR_BYTES * (b >> 3) + 16 * (b & 7); /* sub-block b & 7: chunk (b & 7) / 2, half b & 1 */
    default: return 16 * b; /* groups */
    }
}
static inline int64_t qamx_scale_off(int kernel, int64_t b, int64_t nb) {
    switch (kernel) {
    case LMC_QK_Q8_0: return 34 * b;
    case LMC_QK_Q4_0: return 18 * b;
    default: return 36 * (b >> 1) + ((b & 1) ? 34 : b + 1 < nb ? 32 : 16); /* Q4_0R */
    }
}
#if !defined(QAMX_EMU) || defined(QAMX_EMU_AVX2)
/* qamx_pack's layout for the 8 weight rows [n0 + n, n0 + n + 8) (n a
 * multiple of 8, all live): per block the 8 rows' 32 codes as 8 words
 * each, an 8 x 8 transpose of words (ops/cpu/x86_transpose.h), 8 stores
 * of 32 bytes; the 8 scales through vcvtph2ps (exact, as lmc_f16_to_f32) */
QAMX_PACK_TARGET static void qamx_pack8(const struct lmc_qweight *w, int64_t n0, int64_t n, int64_t b0, int64_t kc,
                                        int8_t *bp, float *dw) {
    const int kind = w->kernel;
    const bool q4 = kind == LMC_QK_Q4_0 || kind == LMC_QK_Q4_0R, u4 = kind == LMC_QK_U4G || kind == LMC_QK_Q4_KR;
    const int64_t nb = w->k / 32;
    const uint8_t *p[8];
    for (int j = 0; j < 8; j++) p[j] = w->data + (n0 + n + j) * w->row_bytes;
    const __m256i m4 = _mm256_set1_epi8(15), off = _mm256_set1_epi8(q4 ? 8 : 0);
    for (int64_t b = 0; b < kc; b++) {
        __m256i r[8];
        const int64_t co = qamx_code_off(kind, b0 + b);
        for (int j = 0; j < 8; j++) {
            if (q4 || u4) {
                __m128i q = _mm_loadu_si128((const __m128i *)(p[j] + co));
                __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q); /* codes 0-15 low, 16-31 high */
                r[j] = _mm256_sub_epi8(_mm256_and_si256(v, m4), off);
            } else r[j] = _mm256_loadu_si256((const __m256i *)(p[j] + co));
        }
        lmc_x86_tr8x8_epi32_store(r, bp + (2 * b + n / 16) * 512 + (n % 16) * 4, 64);
        if (!u4) {
            uint16_t h[8];
            const int64_t so = qamx_scale_off(kind, b0 + b, nb);
            for (int j = 0; j < 8; j++) h[j] = (uint16_t)(p[j][so] | p[j][so + 1] << 8);
            _mm256_storeu_ps(dw + 32 * b + n, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
        }
    }
}
#endif

/* weight rows [n0, n0 + nc) (nc <= 32), blocks [b0, b0 + kc): block b's
 * half h (columns 16h..16h+15) at bp + (2b + h) * 512, its row kk (K bytes
 * 4kk..4kk+3) at + 64 kk, column n's 4 bytes at + 4 (n % 16); Q8_0/Q4_0:
 * the block scales at dw[32 b + n]; 4-bit groups: the codes as they are
 * (0..15), groups [g0, g1)'s zeros and scales at zc / sg[32 (g - g0) + n];
 * Q4_KR: the codes as they are (0..15), block b's scale and min at
 * zc / kmn[32 b + n], super-block b / 8's d and dmin at dw / sg[32 (b / 8)
 * + n] (chunks start on super-blocks);
 * columns past nc zero. Whole 8-row steps through qamx_pack8, the rest
 * (and CPUs without AVX2 in the emulation) here. */
QAMX_TARGET static void qamx_pack(const struct lmc_qweight *w, int64_t n0, int64_t nc, int64_t b0, int64_t kc,
                                  int64_t g0, int64_t g1, int8_t *bp, float *dw, int32_t *zc, float *sg,
                                  int32_t *kmn) {
    const int kind = w->kernel;
    const bool q4 = kind == LMC_QK_Q4_0 || kind == LMC_QK_Q4_0R, k4 = kind == LMC_QK_Q4_KR;
    const bool u4 = kind == LMC_QK_U4G || k4; /* unsigned codes, no block scale */
    const int64_t nb = w->k / 32;
    if (nc < 32) {
        memset(bp, 0, (size_t)kc * 1024);
        memset(dw, 0, (size_t)kc * 32 * sizeof *dw);
        memset(zc, 0, (size_t)(g1 - g0) * 32 * sizeof *zc);
        memset(sg, 0, (size_t)(g1 - g0) * 32 * sizeof *sg);
        if (k4) {
            memset(zc, 0, (size_t)kc * 32 * sizeof *zc);
            memset(kmn, 0, (size_t)kc * 32 * sizeof *kmn);
            memset(sg, 0, (size_t)kc * 32 * sizeof *sg);
        }
    }
    int64_t n8 = 0;
#if !defined(QAMX_EMU)
    for (; n8 + 8 <= nc; n8 += 8) qamx_pack8(w, n0, n8, b0, kc, bp, dw);
#elif defined(QAMX_EMU_AVX2)
    unsigned ca, cb, cc, cd; /* F16C: CPUID.1:ECX bit 29 (clang 14 has no "f16c" for __builtin_cpu_supports) */
    if (__builtin_cpu_supports("avx2") && __get_cpuid(1, &ca, &cb, &cc, &cd) && (cc >> 29 & 1))
        for (; n8 + 8 <= nc; n8 += 8) qamx_pack8(w, n0, n8, b0, kc, bp, dw);
#endif
    for (int64_t n = n8; n < nc; n++) {
        const uint8_t *row = w->data + (n0 + n) * w->row_bytes;
        for (int64_t b = 0; b < kc; b++) {
            const uint8_t *p = row + qamx_code_off(kind, b0 + b);
            int8_t v[32];
            if (q4 || u4)
                for (int j = 0; j < 16; j++) {
                    v[j] = (int8_t)((p[j] & 15) - (q4 ? 8 : 0));
                    v[j + 16] = (int8_t)((p[j] >> 4) - (q4 ? 8 : 0));
                }
            else memcpy(v, p, 32);
            int8_t *o = bp + (2 * b + n / 16) * 512 + (n % 16) * 4;
            for (int kk = 0; kk < 8; kk++) memcpy(o + 64 * kk, v + 4 * kk, 4);
            if (!u4) {
                const uint8_t *h = row + qamx_scale_off(kind, b0 + b, nb);
                dw[32 * b + n] = lmc_f16_to_f32((uint16_t)(h[0] | h[1] << 8));
            }
        }
    }
    if (k4) /* per block the 6-bit scale and min, per super-block d and dmin */
        for (int64_t n = 0; n < nc; n++) {
            const uint8_t *row = w->data + (n0 + n) * w->row_bytes;
            for (int64_t b = 0; b < kc; b++) {
                const uint8_t *sb = row + LMC_Q4KR_BYTES * ((b0 + b) >> 3);
                zc[32 * b + n] = sb[132 + ((b0 + b) & 7)];
                kmn[32 * b + n] = sb[140 + ((b0 + b) & 7)];
                if (((b0 + b) & 7) == 0) {
                    dw[32 * (b >> 3) + n] = lmc_f16_to_f32((uint16_t)(sb[128] | sb[129] << 8));
                    sg[32 * (b >> 3) + n] = lmc_f16_to_f32((uint16_t)(sb[130] | sb[131] << 8));
                }
            }
        }
    else if (u4)
        for (int64_t n = 0; n < nc; n++)
            for (int64_t g = g0; g < g1; g++) {
                zc[32 * (g - g0) + n] = w->zero[(n0 + n) * w->n_groups + g];
                sg[32 * (g - g0) + n] = w->scale[(n0 + n) * w->n_groups + g];
            }
}

/* For the live rows [0, rows) of 32 columns (row stride 32), d_x(r) =
 * xb[r * nb].d and sx(r) its block's code sum (the rows past `rows` are
 * never stored):
 * qamx_scale: acc[r][n] = fma(d_x(r) * dw[n], (float)ct[r][n], acc[r][n]);
 * qamx_scale_z: ga[r][n] = fma(d_x(r), (float)(ct[r][n] - zc[n] sx(r)), ga[r][n]);
 * qamx_group_end: acc[r][n] = fma(sg[n], ga[r][n], acc[r][n]), ga = 0;
 * Q4_KR, per block (sub-block j, scales sc = zc, mins mn = kmn of the
 * block), all integers, exact (|sk| <= 8 x 63 x 60960, |mk| <= 8 x 63 x
 * 4064): qamx_scale_k: sk[r][n] += sc[n] ct[r][n], mk[r][n] += mn[n] sx(r);
 * per super-block (d_x(r) its first block's d: lmc_q8act_quantize_k gives
 * the 8 the same), qamx_sb_end: acc[r][n] = fma(d[n] * d_x(r),
 * (float)sk[r][n], acc[r][n]), then acc[r][n] = fma(-(dmin[n] * d_x(r)),
 * (float)mk[r][n], acc[r][n]), sk = mk = 0. */
#ifdef QAMX_EMU
static void qamx_scale_k(const int32_t *ct, const struct lmc_q8act *xb, int64_t nb, const int32_t *sc,
                         const int32_t *mn, int32_t *sk, int32_t *mk, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        int32_t sx = xb[r * nb].s0 + xb[r * nb].s1;
        for (int n = 0; n < 32; n++) {
            sk[r * 32 + n] += sc[n] * ct[r * 32 + n];
            mk[r * 32 + n] += mn[n] * sx;
        }
    }
}
static void qamx_sb_end(const struct lmc_q8act *xb, int64_t nb, const float *d, const float *dmin, int32_t *sk,
                        int32_t *mk, float *acc, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        const float dx = xb[r * nb].d;
        for (int n = 0; n < 32; n++) {
            float a = fmaf(d[n] * dx, (float)sk[r * 32 + n], acc[r * 32 + n]);
            acc[r * 32 + n] = fmaf(-(dmin[n] * dx), (float)mk[r * 32 + n], a);
            sk[r * 32 + n] = mk[r * 32 + n] = 0;
        }
    }
}
static void qamx_scale(const int32_t *ct, const struct lmc_q8act *xb, int64_t nb, const float *dw, float *acc,
                       int64_t rows) {
    for (int64_t r = 0; r < rows; r++)
        for (int n = 0; n < 32; n++)
            acc[r * 32 + n] = fmaf(xb[r * nb].d * dw[n], (float)ct[r * 32 + n], acc[r * 32 + n]);
}
static void qamx_scale_z(const int32_t *ct, const struct lmc_q8act *xb, int64_t nb, const int32_t *zc, float *ga,
                         int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        int32_t sx = xb[r * nb].s0 + xb[r * nb].s1;
        for (int n = 0; n < 32; n++)
            ga[r * 32 + n] = fmaf(xb[r * nb].d, (float)(int32_t)((uint32_t)ct[r * 32 + n] - (uint32_t)zc[n] * (uint32_t)sx),
                                  ga[r * 32 + n]);
    }
}
static void qamx_group_end(const float *sg, float *ga, float *acc, int64_t rows) {
    for (int64_t r = 0; r < rows; r++)
        for (int n = 0; n < 32; n++) {
            acc[r * 32 + n] = fmaf(sg[n], ga[r * 32 + n], acc[r * 32 + n]);
            ga[r * 32 + n] = 0;
        }
}
#else
QAMX_TARGET static void qamx_scale(const int32_t *ct, const struct lmc_q8act *xb, int64_t nb, const float *dw,
                                   float *acc, int64_t rows) {
    const __m512 w0 = _mm512_loadu_ps(dw), w1 = _mm512_loadu_ps(dw + 16);
    for (int64_t r = 0; r < rows; r++) {
        const __m512 d = _mm512_set1_ps(xb[r * nb].d);
        float *o = acc + r * 32;
        __m512 s0 = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(ct + r * 32)));
        __m512 s1 = _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(ct + r * 32 + 16)));
        _mm512_store_ps(o, _mm512_fmadd_ps(_mm512_mul_ps(d, w0), s0, _mm512_load_ps(o)));
        _mm512_store_ps(o + 16, _mm512_fmadd_ps(_mm512_mul_ps(d, w1), s1, _mm512_load_ps(o + 16)));
    }
}
QAMX_TARGET static void qamx_scale_z(const int32_t *ct, const struct lmc_q8act *xb, int64_t nb, const int32_t *zc,
                                     float *ga, int64_t rows) {
    const __m512i z0 = _mm512_loadu_si512((const void *)zc), z1 = _mm512_loadu_si512((const void *)(zc + 16));
    for (int64_t r = 0; r < rows; r++) {
        const __m512 d = _mm512_set1_ps(xb[r * nb].d);
        const __m512i sx = _mm512_set1_epi32(xb[r * nb].s0 + xb[r * nb].s1);
        float *o = ga + r * 32;
        __m512i t0 = _mm512_sub_epi32(_mm512_load_si512((const void *)(ct + r * 32)), _mm512_mullo_epi32(z0, sx));
        __m512i t1 = _mm512_sub_epi32(_mm512_load_si512((const void *)(ct + r * 32 + 16)), _mm512_mullo_epi32(z1, sx));
        _mm512_store_ps(o, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(t0), _mm512_load_ps(o)));
        _mm512_store_ps(o + 16, _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(t1), _mm512_load_ps(o + 16)));
    }
}
QAMX_TARGET static void qamx_group_end(const float *sg, float *ga, float *acc, int64_t rows) {
    const __m512 s0 = _mm512_loadu_ps(sg), s1 = _mm512_loadu_ps(sg + 16), zero = _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; r++) {
        float *o = acc + r * 32, *q = ga + r * 32;
        _mm512_store_ps(o, _mm512_fmadd_ps(s0, _mm512_load_ps(q), _mm512_load_ps(o)));
        _mm512_store_ps(o + 16, _mm512_fmadd_ps(s1, _mm512_load_ps(q + 16), _mm512_load_ps(o + 16)));
        _mm512_store_ps(q, zero);
        _mm512_store_ps(q + 16, zero);
    }
}
QAMX_TARGET static void qamx_scale_k(const int32_t *ct, const struct lmc_q8act *xb, int64_t nb, const int32_t *sc,
                                     const int32_t *mn, int32_t *sk, int32_t *mk, int64_t rows) {
    const __m512i s0 = _mm512_loadu_si512((const void *)sc), s1 = _mm512_loadu_si512((const void *)(sc + 16));
    const __m512i m0 = _mm512_loadu_si512((const void *)mn), m1 = _mm512_loadu_si512((const void *)(mn + 16));
    for (int64_t r = 0; r < rows; r++) {
        const __m512i sx = _mm512_set1_epi32(xb[r * nb].s0 + xb[r * nb].s1);
        int32_t *o = sk + r * 32, *q = mk + r * 32;
        const int32_t *c = ct + r * 32;
        _mm512_store_si512((void *)o, _mm512_add_epi32(_mm512_load_si512((const void *)o),
                                                       _mm512_mullo_epi32(s0, _mm512_load_si512((const void *)c))));
        _mm512_store_si512((void *)(o + 16),
                           _mm512_add_epi32(_mm512_load_si512((const void *)(o + 16)),
                                            _mm512_mullo_epi32(s1, _mm512_load_si512((const void *)(c + 16)))));
        _mm512_store_si512((void *)q, _mm512_add_epi32(_mm512_load_si512((const void *)q), _mm512_mullo_epi32(m0, sx)));
        _mm512_store_si512((void *)(q + 16),
                           _mm512_add_epi32(_mm512_load_si512((const void *)(q + 16)), _mm512_mullo_epi32(m1, sx)));
    }
}
QAMX_TARGET static void qamx_sb_end(const struct lmc_q8act *xb, int64_t nb, const float *d, const float *dmin,
                                    int32_t *sk, int32_t *mk, float *acc, int64_t rows) {
    const __m512 d0 = _mm512_loadu_ps(d), d1 = _mm512_loadu_ps(d + 16);
    const __m512 e0 = _mm512_loadu_ps(dmin), e1 = _mm512_loadu_ps(dmin + 16);
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t r = 0; r < rows; r++) {
        const __m512 dx = _mm512_set1_ps(xb[r * nb].d);
        float *o = acc + r * 32;
        int32_t *p = sk + r * 32, *q = mk + r * 32;
        __m512 a0 = _mm512_fmadd_ps(_mm512_mul_ps(d0, dx), _mm512_cvtepi32_ps(_mm512_load_si512((const void *)p)),
                                    _mm512_load_ps(o));
        __m512 a1 = _mm512_fmadd_ps(_mm512_mul_ps(d1, dx),
                                    _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(p + 16))), _mm512_load_ps(o + 16));
        a0 = _mm512_fnmadd_ps(_mm512_mul_ps(e0, dx), _mm512_cvtepi32_ps(_mm512_load_si512((const void *)q)), a0);
        a1 = _mm512_fnmadd_ps(_mm512_mul_ps(e1, dx), _mm512_cvtepi32_ps(_mm512_load_si512((const void *)(q + 16))), a1);
        _mm512_store_ps(o, a0);
        _mm512_store_ps(o + 16, a1);
        _mm512_store_si512((void *)p, zero);
        _mm512_store_si512((void *)(p + 16), zero);
        _mm512_store_si512((void *)q, zero);
        _mm512_store_si512((void *)(q + 16), zero);
    }
}
#endif

/* One block of K (kb) for rows [0, rows) of x0 (rows <= 32; two: rows >
 * 16): C tiles of the packed block bs into cb (32 x 32 int32). abuf: 32 x
 * 32 bytes, zero in the rows past `rows`. */
QAMX_TARGET static void qamx_tiles(const struct lmc_q8act *x0, int64_t nb, int64_t kb, int64_t rows, const int8_t *bs,
                                   int32_t *cb, int8_t *abuf) {
    const bool two = rows > 16;
    const int64_t R = two ? 32 : 16;
    const long sa = (long)(nb * (int64_t)sizeof *x0);
    const int8_t *a0 = x0[kb].q, *a1 = two && rows >= 32 ? x0[16 * nb + kb].q : abuf + 32 * 16;
    long s0 = sa, s1 = sa;
    if (rows < R) { /* the live rows of the last half into the zero-padded copy */
        int64_t r0 = two ? 16 : 0;
        for (int64_t r = r0; r < rows; r++) memcpy(abuf + 32 * r, x0[r * nb + kb].q, 32);
        if (two) a1 = abuf + 32 * 16, s1 = 32;
        else a0 = abuf, s0 = 32;
    }
    QAMX_FENCE();
    _tile_zero(0);
    _tile_zero(1);
    _tile_loadd(4, a0, s0);
    _tile_loadd(6, bs, 64);
    _tile_loadd(7, bs + 512, 64);
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_stored(0, cb, 128);
    _tile_stored(1, cb + 16, 128);
    if (two) {
        _tile_zero(2);
        _tile_zero(3);
        _tile_loadd(5, a1, s1);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
        _tile_stored(2, cb + 16 * 32, 128);
        _tile_stored(3, cb + 16 * 32 + 16, 128);
    }
    QAMX_FENCE();
}

/* the packed chunk of a panel: blocks [b0, b0 + kc); 4-bit groups: groups
 * [g0, g1) exactly (gblk[g0] = b0, gblk[g1] = b0 + kc) */
struct qamx_chunk {
    int64_t b0, kc, g0, g1;
    const int8_t *bp;
    const float *dw, *sg;
    const int32_t *zc, *kmn;
};

/* rows [g, g + rows) of xq (nb blocks a row; rows <= 32) against a packed
 * chunk into acc (32 x 32). ct: 2 x 32 x 32 int32, ga: 32 x 32 zeros and
 * sk: 2 x 32 x 32 zeros (Q4_KR's sums; both left zero), abuf: 32 x 32 bytes of scratch. Two C buffers alternate: block b
 * + 1's stores need not wait for b's scaling. */
QAMX_TARGET static void qamx_group(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t g, int64_t rows,
                                   const struct qamx_chunk *ch, float *acc, float *ga, int32_t *sk, int32_t *ct,
                                   int8_t *abuf) {
    const int64_t nb = w->k / 32;
    const struct lmc_q8act *x0 = xq + g * nb;
    if (rows < (rows > 16 ? 32 : 16)) memset(abuf, 0, 32 * 32);
    if (w->kernel == LMC_QK_Q4_KR) { /* the chunk holds whole super-blocks */
        for (int64_t b = 0; b < ch->kc; b++) {
            const int64_t kb = ch->b0 + b;
            int32_t *cb = ct + (b & 1) * 32 * 32;
            qamx_tiles(x0, nb, kb, rows, ch->bp + b * 1024, cb, abuf);
            qamx_scale_k(cb, x0 + kb, nb, ch->zc + 32 * b, ch->kmn + 32 * b, sk, sk + 32 * 32, rows);
            if ((kb & 7) == 7)
                qamx_sb_end(x0 + kb - 7, nb, ch->dw + 32 * (b >> 3), ch->sg + 32 * (b >> 3), sk, sk + 32 * 32, acc,
                            rows);
        }
        return;
    }
    if (w->kernel != LMC_QK_U4G) {
        for (int64_t b = 0; b < ch->kc; b++) {
            int32_t *cb = ct + (b & 1) * 32 * 32;
            qamx_tiles(x0, nb, ch->b0 + b, rows, ch->bp + b * 1024, cb, abuf);
            qamx_scale(cb, x0 + ch->b0 + b, nb, ch->dw + 32 * b, acc, rows);
        }
        return;
    }
    for (int64_t gi = ch->g0; gi < ch->g1; gi++) {
        const int64_t e = w->gblk[gi + 1];
        if (e == w->gblk[gi]) continue; /* an empty group adds nothing */
        for (int64_t kb = w->gblk[gi]; kb < e; kb++) {
            int32_t *cb = ct + (kb & 1) * 32 * 32;
            qamx_tiles(x0, nb, kb, rows, ch->bp + (kb - ch->b0) * 1024, cb, abuf);
            qamx_scale_z(cb, x0 + kb, nb, ch->zc + 32 * (gi - ch->g0), ga, rows);
        }
        qamx_group_end(ch->sg + 32 * (gi - ch->g0), ga, acc, rows);
    }
}

/* the panel of weight rows [n0, n0 + 32) (fewer at the end) against all m
 * rows of xq into y (row stride ldy = w->n), K in chunks of at most
 * QAMX_KB blocks (4-bit groups: whole groups, at most QAMX_KB of them) */
QAMX_TARGET static void qamx_panel(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, float *y,
                                   int64_t n0) {
    const int64_t nb = w->k / 32, nc = LMC_MIN(32, w->n - n0), ldy = w->n;
    const bool u4 = w->kernel == LMC_QK_U4G;
    _Alignas(64) int8_t bp[QAMX_KB * 1024];
    _Alignas(64) float dw[QAMX_KB * 32], sg[QAMX_KB * 32];
    _Alignas(64) int32_t zc[QAMX_KB * 32], kmn[QAMX_KB * 32], sk[2 * 32 * 32];
    _Alignas(64) int32_t ct[2 * 32 * 32];
    _Alignas(64) float acc[32 * 32], ga[32 * 32];
    _Alignas(64) int8_t abuf[32 * 32];
    memset(ga, 0, sizeof ga);
    memset(sk, 0, sizeof sk);
    qamx_config();
    struct qamx_chunk ch = {0, 0, 0, 0, bp, dw, sg, zc, kmn};
    for (bool first = true; ch.b0 < nb || (u4 && ch.g0 < w->n_groups); first = false) {
        if (u4) {
            ch.b0 = w->gblk[ch.g0];
            ch.g1 = ch.g0 + 1; /* every group fits (lmc_qamx_supports) */
            while (ch.g1 < w->n_groups && ch.g1 - ch.g0 < QAMX_KB && w->gblk[ch.g1 + 1] - ch.b0 <= QAMX_KB) ch.g1++;
            ch.kc = w->gblk[ch.g1] - ch.b0;
        } else ch.kc = LMC_MIN(QAMX_KB, nb - ch.b0);
        qamx_pack(w, n0, nc, ch.b0, ch.kc, ch.g0, ch.g1, bp, dw, zc, sg, kmn);
        for (int64_t g = 0; g < m; g += 32) {
            const int64_t rows = LMC_MIN(32, m - g);
            float *yg = y + g * ldy + n0;
            if (first) memset(acc, 0, sizeof acc);
            else
                for (int64_t r = 0; r < rows; r++) memcpy(acc + 32 * r, yg + r * ldy, (size_t)nc * sizeof *acc);
            qamx_group(w, xq, g, rows, &ch, acc, ga, sk, ct, abuf);
            for (int64_t r = 0; r < rows; r++) memcpy(yg + r * ldy, acc + 32 * r, (size_t)nc * sizeof *acc);
        }
        ch.b0 += ch.kc;
        ch.g0 = ch.g1;
    }
    qamx_release();
}

#define QAMX_MULTI_MAX 8

struct qamx_job {
    int nw;
    const struct lmc_qweight *const *w;
    float *const *y;
    int64_t task0[QAMX_MULTI_MAX + 1]; /* weight i's panels: tasks [task0[i], task0[i + 1]) */
    const float *x;
    struct lmc_q8act *xq;
    lmc_q8quant_fn quant;
    int64_t k, m, rows_per_task;
};

static void qamx_quant_run(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct qamx_job *j = arg;
    const int64_t nb = j->k / 32, i0 = task * j->rows_per_task, i1 = LMC_MIN(j->m, i0 + j->rows_per_task);
    for (int64_t i = i0; i < i1; i++) j->quant(j->x + i * j->k, j->k, j->xq + i * nb);
}

static void qamx_panel_run(void *arg, int64_t task, int thread) {
    (void)thread;
    const struct qamx_job *j = arg;
    int i = 0;
    while (task >= j->task0[i + 1]) i++;
    qamx_panel(j->w[i], j->xq, j->m, j->y[i], (task - j->task0[i]) * 32);
}
#endif

void lmc_qmatmul_amx_multi(const struct lmc_qctx *c, int nw, const struct lmc_qweight *const *w, float *const *y,
                           const float *x, int64_t m, struct lmc_q8act *xq, struct lmc_pool *pool) {
#ifdef QAMX_X86
    LMC_ASSERT(nw >= 1 && nw <= QAMX_MULTI_MAX);
    if (m <= 0) return;
    struct qamx_job j = {.nw = nw, .w = w, .y = y, .x = x, .xq = xq, .k = w[0]->k, .m = m};
    j.task0[0] = 0;
    for (int i = 0; i < nw; i++) {
        LMC_ASSERT(lmc_qamx_supports(w[i]) && w[i]->k == j.k);
        j.task0[i + 1] = j.task0[i] + (w[i]->n + 31) / 32;
    }
    j.quant = lmc_qctx_quantizer(c, w[0]);
    const int threads = pool ? lmc_pool_threads(pool) : 1;
    j.rows_per_task = (m + 4 * threads - 1) / (4 * threads);
    const int64_t qtasks = (m + j.rows_per_task - 1) / j.rows_per_task;
    if (pool && threads > 1) {
        lmc_pool_run(pool, qtasks, qamx_quant_run, &j);
        lmc_pool_run(pool, j.task0[nw], qamx_panel_run, &j);
    } else {
        for (int64_t t = 0; t < qtasks; t++) qamx_quant_run(&j, t, 0);
        for (int64_t t = 0; t < j.task0[nw]; t++) qamx_panel_run(&j, t, 0);
    }
#else
    (void)c, (void)nw, (void)w, (void)y, (void)x, (void)m, (void)xq, (void)pool;
    LMC_ASSERT(!"lmc_qmatmul_amx_multi: no AMX kernels in this build");
#endif
}

void lmc_qmatmul_amx(const struct lmc_qctx *c, const struct lmc_qweight *w, float *y, const float *x, int64_t m,
                     struct lmc_q8act *xq, struct lmc_pool *pool) {
    lmc_qmatmul_amx_multi(c, 1, &w, &y, x, m, xq, pool);
}
