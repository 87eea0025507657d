/* gemm_amx.c — the AMX-BF16 block kernel: C (+)= A @ B for one block of
 * K (at most LMC_AMX_KP_MAX bf16 pairs), A as rows of pairs or as
 * gemm_bf16.c's 8-row panels, B as the 32-column panels gemm_bf16.c and
 * matmul_pf.c pack ([pair][32 columns], which is AMX's VNNI layout for the
 * second operand: a 16-pair x 16-column tile is a tileloadd of 16 rows
 * with a 128-byte stride).
 *
 * Tiles: C 0-3 (a 32 x 32 block of outputs as 2 x 2 tiles of 16 x 16
 * f32), A 4-5 (16 rows x 16 pairs each), B 6-7 (16 pairs x 16 columns,
 * the two halves of a panel). Rows are taken 32 at a time (16 for a last
 * group of at most 16 rows); per 16 pairs of K: 2 A loads, 2 B loads, 4
 * TDPBF16PS (16 x 16 x 32 products each). A last step of fewer than 16
 * pairs reads B from a zero-padded local copy (A's padding pairs are
 * zero). The C tiles start at zero and go through a local 32 x 32 block,
 * added to C (load_c) or stored, only the live rows and columns: every
 * element gets the same sequence whatever its place, so the bits never
 * depend on how callers split M or N.
 *
 * Compiled with target attributes (gcc >= 11, clang >= 12, x86-64) and run
 * only where lmc_cpu_has_amx(), so the rest of the build stays portable.
 * gcc's tile intrinsics are asm statements without a memory clobber:
 * AMX_FENCE orders the plain stores and loads of the local buffers against
 * them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall() */
#endif
#include "ops/cpu/gemm_amx.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/x86_transpose.h"
#include "core/dtype.h"
#include "core/once.h"

#include <stdlib.h>
#include <string.h>

#if defined(LMC_AMX_EMULATE)
/* tests/test_gemm_amx_emu.c includes this file with the tile instructions
 * modelled in memory (amx_emu.h; and scalar twins of the AVX-512 helpers;
 * the AVX2 re-layout as is where the CPU has AVX2), so the kernel's
 * addressing is checked on CPUs without AMX */
#define AMX_X86 1
#define AMX_EMU 1
#define AMX_TARGET
#define AMX_FENCE() ((void)0)
#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#include <immintrin.h>
#define AMX_EMU_AVX2 1 /* the re-layout's AVX2 transposes run too, where the CPU has AVX2 */
#define AMX_RELAYOUT_TARGET __attribute__((target("avx2")))
#endif
#elif defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || \
                              (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define AMX_X86 1
#include <cpuid.h>
#include <immintrin.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bf16,avx512bw,avx512vl,avx2")))
#define AMX_FENCE() __asm__ volatile("" ::: "memory")
#endif

/* Whether AMX runs where the CPU has it when LMC_CPU_AMX is unset: on
 * (bench/amx_device.sh passed on the device's Xeon on 2026-12-06: every bf16
 * test with AMX on and off; bench/results/amx-xeon-2026-12-06.md);
 * LMC_CPU_AMX=0 keeps the AVX512-BF16 kernels, 1 asks for AMX. */
#ifndef LMC_CPU_AMX_DEFAULT
#define LMC_CPU_AMX_DEFAULT 1
#endif

#if defined(AMX_X86) && !defined(AMX_EMU)
static bool amx_probe(void) {
    const char *e = getenv("LMC_CPU_AMX");
    if (e ? e[0] != '1' : !LMC_CPU_AMX_DEFAULT) return false;
    if (!lmc_cpu_has_bf16()) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return false; /* AMX-BF16, AMX-TILE */
#ifdef __linux__
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18), then
     * ARCH_GET_XCOMP_PERM (0x1022) to see it granted */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return false;
    unsigned long long perm = 0;
    if (syscall(SYS_arch_prctl, 0x1022, &perm) != 0) return false;
    return (perm & (1ull << 18)) != 0;
#else
    return false;
#endif
}
#endif

bool lmc_cpu_has_amx(void) {
#if defined(AMX_X86) && !defined(AMX_EMU)
    static int state; /* the process-wide answer: the OS grant is per process */
    return lmc_once_bool(&state, amx_probe);
#else
    return false;
#endif
}

#ifdef AMX_EMU
#include "ops/cpu/amx_emu.h" /* the tiles and TDPBF16PS modelled in memory */
#endif

#ifdef AMX_X86
AMX_TARGET static void amx_release(void) {
    AMX_FENCE();
    _tile_release();
}

/* every tile used (0-7) 16 rows of 64 bytes */
AMX_TARGET static void amx_config(void) {
    _Alignas(64) struct lmc_amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    AMX_FENCE();
    _tile_loadconfig(&cfg);
    AMX_FENCE();
}

/* One step of 16 pairs of K: A's rows at as (byte stride sa; rows 16-31
 * at as + 16 lda words when two), B's 16 pairs x 32 columns at bs (128
 * bytes a pair): C tiles 0-1 (and 2-3) += the products. The full steps
 * read B from the panel, a last partial step from the zero-padded copy;
 * two is a constant at each call of the loops, so each loop keeps its own
 * straight instruction sequence. */
AMX_TARGET __attribute__((always_inline)) static inline void amx_step(const uint32_t *as, long sa, int64_t lda,
                                                                      const uint32_t *bs, const bool two) {
    _tile_loadd(4, as, sa);
    _tile_loadd(6, bs, 128);
    _tile_loadd(7, bs + 16, 128);
    if (two) _tile_loadd(5, as + 16 * lda, sa);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (two) {
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
}

/* One 16- or 32-row group against one B panel: ct (32 x 32, row stride 32
 * floats) = A @ B over kp pairs; A rows at at (stride lda words), B panel
 * at b; bt: 16 x 32 words of scratch for the last partial step. */
AMX_TARGET static void amx_group(int64_t kp, const uint32_t *at, int64_t lda, bool two, const uint32_t *b,
                                 uint32_t *bt, float *ct) {
    const int64_t full = kp / 16, tail = kp % 16;
    const long sa = (long)(lda * 4);
    _tile_zero(0);
    _tile_zero(1);
    if (two) {
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t s = 0; s < full; s++) amx_step(at + s * 16, sa, lda, b + s * 16 * 32, true);
    } else {
        for (int64_t s = 0; s < full; s++) amx_step(at + s * 16, sa, lda, b + s * 16 * 32, false);
    }
    if (tail) {
        memcpy(bt, b + full * 16 * 32, (size_t)tail * 32 * 4);
        memset(bt + tail * 32, 0, (size_t)(16 - tail) * 32 * 4);
        AMX_FENCE();
        amx_step(at + full * 16, sa, lda, bt, two);
    }
    AMX_FENCE();
    _tile_stored(0, ct, 128);
    _tile_stored(1, ct + 16, 128);
    if (two) {
        _tile_stored(2, ct + 16 * 32, 128);
        _tile_stored(3, ct + 16 * 32 + 16, 128);
    }
    AMX_FENCE();
}

#ifdef AMX_EMU
static void amx_out(const float *ct, int64_t rows, int64_t nr, float *c, int64_t ldc, bool load_c) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < nr; j++) c[r * ldc + j] = load_c ? ct[r * 32 + j] + c[r * ldc + j] : ct[r * 32 + j];
}
#else
/* C rows [0, rows), columns [0, nr) (+)= ct */
AMX_TARGET static void amx_out(const float *ct, int64_t rows, int64_t nr, float *c, int64_t ldc, bool load_c) {
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nr - 16)) - 1);
    for (int64_t r = 0; r < rows; r++) {
        float *o = c + r * ldc;
        __m512 v0 = _mm512_load_ps(ct + r * 32), v1 = _mm512_load_ps(ct + r * 32 + 16);
        if (load_c) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, o));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, o + 16));
        }
        _mm512_mask_storeu_ps(o, m0, v0);
        _mm512_mask_storeu_ps(o + 16, m1, v1);
    }
}
#endif

/* groups of rows of A (rows at at, stride lda) against every panel */
AMX_TARGET static void amx_rows(int64_t kp, const uint32_t *at, int64_t lda, int64_t g, int64_t rows,
                                const uint32_t *b, int64_t nc, float *c, int64_t ldc, bool load_c, uint32_t *bt,
                                float *ct) {
    for (int64_t j = 0; j < nc; j += 32) {
        amx_group(kp, at, lda, rows > 16, b + j * kp, bt, ct);
        amx_out(ct, rows, LMC_MIN(32, nc - j), c + g * ldc + j, ldc, load_c);
    }
}

/* rows [0, R) of a group (R = 16 or 32) from the 8-row panels at a
 * (stride ps) into at[r * kpp + p], kpp = kp rounded up to 16: pairs past
 * kp zero, panels past the live rows (rows) zero. 8 x 8 transposes of
 * words (x86_transpose.h). */
#ifndef AMX_RELAYOUT_TARGET
#define AMX_RELAYOUT_TARGET AMX_TARGET
#endif
AMX_RELAYOUT_TARGET static void amx_relayout(uint32_t *at, int64_t kpp, const uint32_t *a, int64_t ps, int64_t kp,
                                             int64_t rows, int R) {
#if !defined(AMX_EMU)
    const int64_t p8 = kp / 8 * 8;
#elif defined(AMX_EMU_AVX2)
    const int64_t p8 = __builtin_cpu_supports("avx2") ? kp / 8 * 8 : 0;
#else
    const int64_t p8 = 0; /* all through the scalar loop below */
#endif
    for (int i = 0; i < R / 8; i++) {
        uint32_t *o = at + (int64_t)i * 8 * kpp;
        if (8 * i >= rows) {
            memset(o, 0, (size_t)(8 * kpp) * 4);
            continue;
        }
        const uint32_t *s = a + i * ps;
#if !defined(AMX_EMU) || defined(AMX_EMU_AVX2)
        for (int64_t p = 0; p < p8; p += 8) {
            __m256i r[8];
            for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_si256((const __m256i *)(s + (p + j) * 8));
            lmc_x86_tr8x8_epi32_store(r, o + p, kpp * 4);
        }
#endif
        for (int r = 0; r < 8; r++) {
            for (int64_t p = p8; p < kp; p++) o[r * kpp + p] = s[p * 8 + r];
            for (int64_t p = kp; p < kpp; p++) o[r * kpp + p] = 0;
        }
    }
}
#endif

void lmc_cpu_amx_bf16_rows(int64_t kp, const uint32_t *at, int64_t lda, int64_t mc, const uint32_t *b,
                           int64_t nc, float *c, int64_t ldc, bool load_c) {
#ifdef AMX_X86
    LMC_ASSERT(kp > 0 && kp <= LMC_AMX_KP_MAX && lda >= (kp + 15) / 16 * 16);
    if (mc <= 0 || nc <= 0) return;
    _Alignas(64) uint32_t bt[16 * 32];
    _Alignas(64) float ct[32 * 32];
    amx_config();
    for (int64_t g = 0; g < mc; g += 32)
        amx_rows(kp, at + g * lda, lda, g, LMC_MIN(32, mc - g), b, nc, c, ldc, load_c, bt, ct);
    amx_release();
#else
    (void)kp, (void)at, (void)lda, (void)mc, (void)b, (void)nc, (void)c, (void)ldc, (void)load_c;
    LMC_ASSERT(!"lmc_cpu_amx_bf16_rows: no AMX kernels in this build");
#endif
}

void lmc_cpu_amx_bf16_panels(int64_t kp, const uint32_t *a, int64_t ps, int64_t mc, const uint32_t *b,
                             int64_t nc, float *c, int64_t ldc, bool load_c) {
#ifdef AMX_X86
    LMC_ASSERT(kp > 0 && kp <= LMC_AMX_KP_MAX);
    if (mc <= 0 || nc <= 0) return;
    const int64_t kpp = (kp + 15) / 16 * 16;
    _Alignas(64) uint32_t at[32 * LMC_AMX_KP_MAX];
    _Alignas(64) uint32_t bt[16 * 32];
    _Alignas(64) float ct[32 * 32];
    amx_config();
    for (int64_t g = 0; g < mc; g += 32) {
        int64_t rows = LMC_MIN(32, mc - g);
        amx_relayout(at, kpp, a + (g / 8) * ps, ps, kp, rows, rows > 16 ? 32 : 16);
        AMX_FENCE();
        amx_rows(kp, at, kpp, g, rows, b, nc, c, ldc, load_c, bt, ct);
    }
    amx_release();
#else
    (void)kp, (void)a, (void)ps, (void)mc, (void)b, (void)nc, (void)c, (void)ldc, (void)load_c;
    LMC_ASSERT(!"lmc_cpu_amx_bf16_panels: no AMX kernels in this build");
#endif
}

#ifdef AMX_EMU
void lmc_cpu_amx_pack_rows(uint32_t *at, int64_t lda, const float *a, int64_t a_sm, int64_t mc, int64_t kc) {
    int64_t kpp = ((kc + 1) / 2 + 15) / 16 * 16;
    LMC_ASSERT(lda >= kpp);
    for (int64_t r = 0; r < (mc + 15) / 16 * 16; r++)
        for (int64_t p = 0; p < kpp; p++) {
            uint32_t w = 0;
            if (r < mc && 2 * p < kc) {
                w = lmc_f32_to_bf16(a[r * a_sm + 2 * p]);
                if (2 * p + 1 < kc) w |= (uint32_t)lmc_f32_to_bf16(a[r * a_sm + 2 * p + 1]) << 16;
            }
            at[r * lda + p] = w;
        }
}
#elif defined(AMX_X86)
/* 32 elements per step: two masked loads (past kc: zeros), one
 * vcvtne2ps2bf16 (elements in order, so word p = elements 2p, 2p + 1) */
AMX_TARGET static void amx_pack_rows(uint32_t *at, int64_t lda, const float *a, int64_t a_sm, int64_t mc,
                                     int64_t kc) {
    int64_t kpp = ((kc + 1) / 2 + 15) / 16 * 16;
    for (int64_t r = 0; r < (mc + 15) / 16 * 16; r++) {
        uint32_t *d = at + r * lda;
        if (r >= mc) {
            memset(d, 0, (size_t)kpp * 4);
            continue;
        }
        const float *s = a + r * a_sm;
        for (int64_t e = 0; e < 2 * kpp; e += 32) {
            int64_t v0 = kc - e, v1 = kc - e - 16;
            __mmask16 m0 = v0 >= 16 ? (__mmask16)0xffff : v0 <= 0 ? (__mmask16)0 : (__mmask16)((1u << v0) - 1);
            __mmask16 m1 = v1 >= 16 ? (__mmask16)0xffff : v1 <= 0 ? (__mmask16)0 : (__mmask16)((1u << v1) - 1);
            const float *s0 = v0 > 0 ? s + e : s, *s1 = v1 > 0 ? s + e + 16 : s; /* fully masked: any address */
            __m512i w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, s1), _mm512_maskz_loadu_ps(m0, s0));
            _mm512_storeu_si512((void *)(d + e / 2), w);
        }
    }
}

void lmc_cpu_amx_pack_rows(uint32_t *at, int64_t lda, const float *a, int64_t a_sm, int64_t mc, int64_t kc) {
    LMC_ASSERT(lda >= ((kc + 1) / 2 + 15) / 16 * 16);
    amx_pack_rows(at, lda, a, a_sm, mc, kc);
}
#else
void lmc_cpu_amx_pack_rows(uint32_t *at, int64_t lda, const float *a, int64_t a_sm, int64_t mc, int64_t kc) {
    (void)at, (void)lda, (void)a, (void)a_sm, (void)mc, (void)kc;
    LMC_ASSERT(!"lmc_cpu_amx_pack_rows: no AMX kernels in this build");
}
#endif
