/* gemm_amx.h — the AMX-BF16 block kernel (gemm_amx.c) behind the bf16
 * GEMMs of gemm_bf16.c (training) and matmul_pf.c (float prefill) on CPUs
 * with Intel AMX (TDPBF16PS on 16 x 16 tiles). */
#ifndef LMC_GEMM_AMX_H
#define LMC_GEMM_AMX_H

#include <stdbool.h>
#include <stdint.h>

/* True when this CPU has AMX-BF16 and AMX-TILE (and AVX512-BF16), the OS
 * grants the tile data (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA), asked here) and the environment allows it:
 * LMC_CPU_AMX=1 on, 0 off (the AVX512-BF16 kernels), unset: the build's
 * LMC_CPU_AMX_DEFAULT (1: on; gemm_amx.c). Asked once per process: the grant is per process. */
bool lmc_cpu_has_amx(void);

/* The 64-byte tile configuration _tile_loadconfig reads (palette 1: for
 * each tile t < 8 its bytes per row colsb[t] and rows[t]); gemm_amx.c and
 * the quantized kernels of qmatmul_amx.c fill it with their tile shapes. */
struct lmc_amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* The most pairs of K one call takes (the K blocks of the callers are
 * shorter: 384 elements). */
#define LMC_AMX_KP_MAX 256

/* C (mc x nc at c, row stride ldc) = (load_c ? C : 0) + A @ B over kp
 * pairs of K (kp <= LMC_AMX_KP_MAX), B given as nc / 32 (rounded up)
 * panels of 32 columns, panel j at b + j * 32 * kp words ordered [pair][32
 * columns] (bf16 pairs: element 2p in the low half; columns past nc zero).
 * Each element's block sum starts from zero and runs through TDPBF16PS in
 * steps of 16 pairs from pair 0, then C is added (when load_c): the bits
 * depend only on the element's row of A, column of B and kp, never on mc,
 * nc or the element's place in its tile.
 * _rows: A as rows, row r's pair p at at[r * lda + p]; the rows up to mc
 * rounded up to 16 readable, pairs [kp, kp rounded up to 16) zero.
 * _panels: A as gemm_bf16.c packs it, panels of 8 rows, panel i at a + i *
 * ps ordered [pair][8 rows] (rows past mc in the last panel zero);
 * re-laid into rows 32 at a time on the stack. */
void lmc_cpu_amx_bf16_rows(int64_t kp, const uint32_t *at, int64_t lda, int64_t mc, const uint32_t *b,
                           int64_t nc, float *c, int64_t ldc, bool load_c);
void lmc_cpu_amx_bf16_panels(int64_t kp, const uint32_t *a, int64_t ps, int64_t mc, const uint32_t *b,
                             int64_t nc, float *c, int64_t ldc, bool load_c);

/* Rows [0, mc) of an f32 A with contiguous K (row r's element k at a[r *
 * a_sm + k], k < kc) as the rows _rows reads: at[r * lda + p] = the bf16
 * pair of elements 2p, 2p + 1 (rounded to nearest even, as the packs of
 * gemm_bf16.c; lda >= kc / 2 rounded up to 16), pairs past the data up to
 * that rounding zero, rows from mc up to mc rounded up to 16 zero. */
void lmc_cpu_amx_pack_rows(uint32_t *at, int64_t lda, const float *a, int64_t a_sm, int64_t mc, int64_t kc);

#endif
