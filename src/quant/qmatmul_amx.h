/* qmatmul_amx.h — the AMX-INT8 path of the quantized product at prefill
 * sizes (qmatmul_amx.c): Q8_0, Q4_0 (the file's layout or Q4_0R), Q4_KR and 4-bit group (GPTQ/AWQ/rtn) weights
 * against activation rows
 * quantized to int8 blocks of 32, the integer block sums through TDPBSSD
 * on 16 x 16 int32 tiles, scaled per block into f32 with AVX-512. */
#ifndef LMC_QMATMUL_AMX_H
#define LMC_QMATMUL_AMX_H

#include "quant/qmatmul.h"

#include <stdbool.h>
#include <stdint.h>

/* Rows of input from which lmc_qmatmul takes the AMX path: a whole 32-row
 * tile group. Below it the small-M kernels keep every row the bits of the
 * 1-row product (test_matmul_smallm's rows-vs-M checks run to M = 17; the
 * server's short chunks and drafts stay batch-invariant); the AMX rows have
 * their own summation order. */
#define LMC_QAMX_MIN_M 32

/* True when this process may run AMX-INT8: the switch — LMC_CPU_AMX_INT8=1
 * on, any other value off; unset: LMC_CPU_AMX=1 on, another value off,
 * unset LMC_QAMX_DEFAULT (1: on; qmatmul_amx.c) — and
 * lmc_cpu_has_amx() (the CPU's AMX tiles, the OS grant, LMC_CPU_AMX not 0;
 * ops/cpu/gemm_amx.h) and the CPU's AMX-INT8. Asked once per process. So
 * LMC_CPU_AMX=1 turns on both AMX paths, LMC_CPU_AMX=1 LMC_CPU_AMX_INT8=0
 * only the bf16 one. */
bool lmc_qamx_available(void);

/* Whether the kernel takes w: Q8_0, Q4_0, Q4_0R and Q4_KR (the CPU loader's
 * repacks of GGUF Q4_0 and Q4_K, read as they are), or 4-bit groups (U4G) without a
 * column permutation whose groups are each at most 32 blocks (1024
 * columns; a per-channel scale over a longer row is refused). */
bool lmc_qamx_supports(const struct lmc_qweight *w);

/* Whether lmc_qmatmul gives (c, w, m) to lmc_qmatmul_amx: the AVX-512
 * VNNI context (tests that cap the instruction set lower never get it),
 * m >= LMC_QAMX_MIN_M, lmc_qamx_supports(w), lmc_qamx_available(). */
bool lmc_qamx_takes(const struct lmc_qctx *c, const struct lmc_qweight *w, int64_t m);

/* y(m, w->n) = x(m, w->k) @ W^T for a weight lmc_qamx_supports: x
 * quantized with c's quantizer into xq (m * w->k / 32 blocks of scratch),
 * then, per output, Q8_0/Q4_0/Q4_0R: acc = fma(d_x[b] * d_w[b], (float)isum_b,
 * acc) over the blocks b in order from acc = 0, isum_b the exact integer
 * block product (Q4_0's codes minus 8); 4-bit groups: per group in order
 * ga = fma(d_x[b], (float)(isum_b - zero * sx_b), ga) over its blocks from
 * 0, then acc = fma(scale, ga, acc) (empty groups skipped); Q4_KR (x
 * through c's quantize_k: one d_x per super-block): per super-block in
 * order, in int32, sk = sum_j sc_j isum_j (codes 0..15) and mk = sum_j
 * mn_j sx_j over its 8 sub-blocks, then acc = fma(d * d_x, (float)sk,
 * acc), acc = fma(-(dmin * d_x), (float)mk, acc): the bits
 * depend only on the output's row of x, row of W and k, never on m, n, the
 * pool or its threads. Tasks: panels of 32
 * weight rows, each packed in the task's stack in AMX's VNNI layout 32
 * blocks of K at a time. pool may be NULL. */
void lmc_qmatmul_amx(const struct lmc_qctx *c, const struct lmc_qweight *w, float *y, const float *x, int64_t m,
                     struct lmc_q8act *xq, struct lmc_pool *pool);

/* The same for nw <= 8 weights of one input (q/k/v, gate/up; each
 * lmc_qamx_supports, the same k): x quantized once, one pool run over every weight's
 * panels; y[i] the same bits as lmc_qmatmul_amx(w[i]) gives. */
void lmc_qmatmul_amx_multi(const struct lmc_qctx *c, int nw, const struct lmc_qweight *const *w, float *const *y,
                           const float *x, int64_t m, struct lmc_q8act *xq, struct lmc_pool *pool);

#endif
