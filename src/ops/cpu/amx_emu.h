/* amx_emu.h — the AMX tile registers and the tile instructions the
 * kernels use, modelled in memory as the ISA reference describes them, for
 * the emulation builds (LMC_AMX_EMULATE) of ops/cpu/gemm_amx.c (TDPBF16PS)
 * and quant/qmatmul_amx.c (TDPBSSD): tests/test_gemm_amx_emu.c,
 * test_gemm_bf16_amx_emu.c and test_qmatmul_amx_emu.c compile those files
 * with it, so the kernels' addressing is checked on CPUs without AMX.
 *
 * One set of 8 tiles per thread, as the hardware's (the kernels run on
 * pools); _tile_loadconfig takes the rows and bytes per row of each tile
 * from the 64-byte configuration and fills the tiles with garbage (0xA5),
 * so a kernel that reads a tile it never loaded or zeroed shows. The
 * intrinsics are redefined as macros over these functions (a build for an
 * AMX CPU, -march=native, has them as immintrin.h's macros: undefined
 * first). */
#ifndef LMC_AMX_EMU_H
#define LMC_AMX_EMU_H

#ifndef LMC_AMX_EMULATE
#error "amx_emu.h is for the LMC_AMX_EMULATE builds of the AMX kernels"
#endif

#include "core/core.h"
#include "core/dtype.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct lmc_amx_emu_tile {
    int rows, colsb;
    uint8_t d[16][64];
};
static _Thread_local struct lmc_amx_emu_tile lmc_amx_emu_t[8];

static inline void lmc_amx_emu_cfg(const void *cfg) {
    const uint8_t *c = cfg;
    for (int t = 0; t < 8; t++) {
        lmc_amx_emu_t[t].colsb = c[16 + 2 * t] | c[17 + 2 * t] << 8;
        lmc_amx_emu_t[t].rows = c[48 + t];
        LMC_ASSERT(lmc_amx_emu_t[t].rows <= 16 && lmc_amx_emu_t[t].colsb <= 64);
        memset(lmc_amx_emu_t[t].d, 0xA5, sizeof lmc_amx_emu_t[t].d); /* garbage until loaded or zeroed */
    }
}
static inline void lmc_amx_emu_load(int t, const void *base, long stride) {
    for (int r = 0; r < lmc_amx_emu_t[t].rows; r++)
        memcpy(lmc_amx_emu_t[t].d[r], (const uint8_t *)base + r * stride, (size_t)lmc_amx_emu_t[t].colsb);
}
static inline void lmc_amx_emu_store(int t, void *base, long stride) {
    for (int r = 0; r < lmc_amx_emu_t[t].rows; r++)
        memcpy((uint8_t *)base + r * stride, lmc_amx_emu_t[t].d[r], (size_t)lmc_amx_emu_t[t].colsb);
}

/* C's row m, column word n (4 bytes) += A's row m . B's column n over the
 * k words of A's row (B's rows): TDPBF16PS (bf16) per pair k, the even then
 * the odd bf16 product added in f32; TDPBSSD the 4 signed byte products
 * added in int32 */
static inline void lmc_amx_emu_dp(int c, int a, int b, bool bf16) {
    struct lmc_amx_emu_tile *C = &lmc_amx_emu_t[c], *A = &lmc_amx_emu_t[a], *B = &lmc_amx_emu_t[b];
    LMC_ASSERT(A->rows == C->rows && B->rows * 4 == A->colsb && B->colsb == C->colsb);
    for (int m = 0; m < C->rows; m++)
        for (int n = 0; n < C->colsb / 4; n++) {
            float f = 0;
            int32_t i = 0;
            memcpy(bf16 ? (void *)&f : (void *)&i, &C->d[m][4 * n], 4);
            for (int k = 0; k < A->colsb / 4; k++) {
                const uint8_t *x = &A->d[m][4 * k], *y = &B->d[k][4 * n];
                if (bf16) {
                    uint16_t a0, a1, b0, b1;
                    memcpy(&a0, x, 2), memcpy(&a1, x + 2, 2), memcpy(&b0, y, 2), memcpy(&b1, y + 2, 2);
                    f += lmc_bf16_to_f32(a0) * lmc_bf16_to_f32(b0);
                    f += lmc_bf16_to_f32(a1) * lmc_bf16_to_f32(b1);
                } else
                    for (int j = 0; j < 4; j++) i += (int8_t)x[j] * (int8_t)y[j];
            }
            memcpy(&C->d[m][4 * n], bf16 ? (void *)&f : (void *)&i, 4);
        }
}

#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbf16ps
#undef _tile_dpbssd
#define _tile_loadconfig(cfg) lmc_amx_emu_cfg(cfg)
#define _tile_release() ((void)0)
#define _tile_zero(t) memset(lmc_amx_emu_t[t].d, 0, sizeof lmc_amx_emu_t[t].d)
#define _tile_loadd(t, base, stride) lmc_amx_emu_load(t, base, stride)
#define _tile_stored(t, base, stride) lmc_amx_emu_store(t, base, stride)
#define _tile_dpbf16ps(c, a, b) lmc_amx_emu_dp(c, a, b, true)
#define _tile_dpbssd(c, a, b) lmc_amx_emu_dp(c, a, b, false)

#endif
