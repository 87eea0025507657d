/* qmatmul.h — quantized matrix products on the CPU: y(M,N) = x(M,K) @ W^T
 * for a weight W (N, K) kept in a quantized format, never expanded whole.
 * Activations are quantized per block of 32 to int8 (one float scale and
 * the block's integer sums), each weight block is dotted with them in
 * integers and the block's scales are applied to the integer sum. The
 * instruction set (AVX-512 VNNI, AVX2, portable C) is chosen once, when a
 * context is initialised from the CPU's features; there are no globals.
 *
 * This is the entry point for a quantized linear: prepare a
 * `struct lmc_qweight` once at load (lmc_qweight_init_*), then call
 * lmc_qmatmul for each forward. */
#ifndef LMC_QMATMUL_H
#define LMC_QMATMUL_H

#include "lmc.h"
#include "quant/quant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lmc_pool;

enum lmc_qisa { LMC_QISA_C = 0, LMC_QISA_AVX2 = 1, LMC_QISA_AVX512VNNI = 2 };

/* The kernels a weight kind runs with (one slot per kind). */
enum lmc_qkernel {
    LMC_QK_Q8_0, LMC_QK_Q4_0, LMC_QK_Q4_1, LMC_QK_Q5_0, LMC_QK_Q5_1,
    LMC_QK_Q4_K, LMC_QK_Q5_K, LMC_QK_Q6_K,
    LMC_QK_U4G,  /* 2..4-bit codes in nibbles, scale and integer zero per group (GPTQ, AWQ, rtn, ternary) */
    LMC_QK_U8G,  /* 5..8-bit codes in bytes, likewise */
    LMC_QK_NF4,  /* NF4 codes with a float absmax per 64 (float math through the 16-value table) */
    LMC_QK_Q4_KR, /* GGUF Q4_K repacked at load for the CPU kernels (lmc_qweight_init_q4kr; ggml_type Q4_K) */
    LMC_QK_Q4_0R, /* GGUF Q4_0 repacked at load for the CPU kernels (lmc_qweight_init_q40r; ggml_type Q4_0) */
    LMC_QK_COUNT
};

/* One block of 32 quantized activations: x[j] ~ d * q[j]; s0/s1 the sums
 * of q[0..15] and q[16..31]. */
struct lmc_q8act {
    float d;
    int16_t s0, s1;
    int8_t q[32];
};

struct lmc_qweight;
typedef float (*lmc_qdot_fn)(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *xq,
                             const float *xf);

/* Four activation rows at once (x: rows xs blocks apart) into out[4]. */
typedef void (*lmc_qdot4_fn)(const struct lmc_qweight *w, int64_t row, const struct lmc_q8act *x, int64_t xs,
                             float *out);

/* m activation rows laid out for the small-M kernels (qmatmul_q4.c): row
 * i's slots at pairs + i * pair_stride, 128 bytes a slot (a pair of blocks
 * for Q4_0 and the 4-bit groups, one block for Q8_0; the layouts there). */
struct lmc_q8rows {
    int64_t m;
    const uint8_t *pairs;
    int64_t pair_stride;
    const struct lmc_q8act *xq; /* the same rows as plain blocks (row i's at xq + i * kp / 32) */
};
/* All m rows against weight rows [r0, r1): y[i * ldy + r] = row i's product
 * with weight row r. */
typedef void (*lmc_qdotm_fn)(const struct lmc_qweight *w, int64_t r0, int64_t r1, const struct lmc_q8rows *x,
                             float *y, int64_t ldy);

typedef void (*lmc_q8quant_fn)(const float *x, int64_t n, struct lmc_q8act *out);

/* Default qctx small_max: the small-M kernels take every M (measured no
 * slower than the four-row kernels at M = 16..64, and exact in the zero
 * points, so a row's result does not depend on M). */
#define LMC_QSMALL_MAX INT64_MAX

struct lmc_qctx {
    enum lmc_qisa isa;
    lmc_qdot_fn dot[LMC_QK_COUNT];
    lmc_qdot4_fn dot4[LMC_QK_COUNT]; /* NULL: four dot calls */
    lmc_qdotm_fn dotm[LMC_QK_COUNT]; /* small M, each weight row read once (NULL: dot4/dot) */
    int64_t small_max;               /* M <= small_max (and >= 1) goes to dotm where it exists */
    lmc_q8quant_fn quantize;         /* lmc_q8act_quantize or a vector form (the same integers) */
    lmc_q8quant_fn quantize_k;       /* lmc_q8act_quantize_k or a vector form (Q4_K's activations) */
};

/* The activation quantizer lmc_qmatmul uses for w: Q4_K's activations
 * share one scale per super-block of 256 (lmc_q8act_quantize_k, as
 * llama.cpp's q8_K), every other kind one per block of 32. */
lmc_q8quant_fn lmc_qctx_quantizer(const struct lmc_qctx *c, const struct lmc_qweight *w);

/* Picks the best instruction set the CPU has, at most max_isa (tests pass
 * a lower one to check every path); returns the one chosen. */
enum lmc_qisa lmc_qctx_init(struct lmc_qctx *c, enum lmc_qisa max_isa);
const char *lmc_qisa_name(enum lmc_qisa isa);

/* A weight prepared for the kernels. GGUF blocks are used in place
 * (borrowed; on a CPU backend the model loader repacks Q4_K and Q4_0 into
 * Q4_KR / Q4_0R, below); the other formats are repacked at load into lmc's kernel
 * layout: per row, blocks of 32 codes, the input dimension permuted so that
 * each group's columns (GPTQ g_idx, act-order) are contiguous and padded to
 * whole blocks. */
struct lmc_qweight {
    enum lmc_qkernel kernel;
    int ggml_type;          /* GGUF kinds; -1 otherwise */
    int64_t n, k;           /* rows (out), columns (in) */
    int64_t kp;             /* columns in the kernel's order, padded to blocks of 32 */
    const uint8_t *data;    /* n rows of row_bytes */
    int64_t row_bytes;
    /* groups (U4G/U8G): blocks [gblk[g], gblk[g+1]) of every row form group g */
    int64_t n_groups;
    int64_t *gblk;          /* n_groups + 1 */
    float *scale;           /* (n, n_groups) */
    int32_t *zero;          /* (n, n_groups) */
    int32_t *perm;          /* (kp): input column of kernel column j, -1 for padding; NULL = identity */
    float *absmax;          /* NF4: (n, k/64) */
    float code[16];         /* NF4: the file's 16 code values */
    /* NF4 with bitsandbytes' blocks of 64 over the flattened weight (any k;
     * lmc_qweight_init_nf4_flat): element (r, i) is number flat_off + r k + i
     * of data (two per byte, high nibble first) and absmax. Dequantization
     * only (lmc_qweight_dequant_rows): the qmatmul kernels refuse it. */
    bool nf4_flat;
    int64_t flat_off;
    /* NF4 double quantization as the file or quantizer made it (NULL
     * dq_code: plain float absmax only): absmax[b] == dq_nested[dq_code[b]]
     * * dq_absmax2[(dq_b0 + b) / dq_bs2] + dq_offset, each operation rounded
     * once (lmc_nf4_absmax). A device backend keeps this compact form (8
     * bits per block of 64 instead of 32) and expands absmax itself. Row
     * views offset dq_code and dq_b0 as they offset absmax. */
    const uint8_t *dq_code;
    const float *dq_absmax2;   /* dq_n2 floats, for blocks 0 .. dq_n2 * dq_bs2 - 1 */
    const float *dq_nested;    /* 256: the signed dynamic map */
    float dq_offset;
    int64_t dq_b0, dq_bs2, dq_n2;
    void *dq_owned;            /* what the dq_ pointers point into (freed by lmc_qweight_free) */
    void *owned;            /* repacked codes (freed by lmc_qweight_free) */
};

/* GGUF rows of `type` (any type lmc_ggml_type_info knows with a block of
 * 32 or 256), data borrowed: n rows of k elements, k a multiple of the block. */
lmc_status lmc_qweight_init_ggml(struct lmc_qweight *w, int type, const void *data, int64_t n, int64_t k,
                                 lmc_err *err);
/* GGUF Q4_K repacked for the CPU kernels ("Q4_KR", q4k_repack.c): per row
 * the same super-blocks of 256 in the same order, each LMC_Q4KR_BYTES
 * bytes: the 128 code bytes first, chunk c (sub-blocks 2c, 2c + 1) at 32 c
 * with byte i < 16 holding element i of sub-block 2c in its low nibble and
 * element 16 + i in its high one, byte 16 + i the same for sub-block 2c + 1
 * (one 32-byte load, a mask and a shift give the kernels' pair layout);
 * then d and dmin (fp16 bits, as in the file), the eight 6-bit scales and
 * the eight 6-bit mins one per byte (no unpacking in the kernels). The
 * file's bytes come back exactly (lmc_q4kr_unpack_block); 148 / 144 bytes
 * = 2.8% more than the file. */
#define LMC_Q4KR_BYTES 148
void lmc_q4kr_pack_block(const uint8_t *ggml, uint8_t *r);
void lmc_q4kr_unpack_block(const uint8_t *r, uint8_t *ggml);
/* nrows rows of k (a multiple of 256) elements, GGUF Q4_K rows (k / 256 *
 * 144 bytes each) into repacked rows (k / 256 * LMC_Q4KR_BYTES). */
void lmc_q4kr_pack_rows(const void *ggml, void *dst, int64_t nrows, int64_t k);
/* A weight of repacked Q4_K rows (data borrowed; kernel LMC_QK_Q4_KR,
 * ggml_type LMC_GGML_Q4_K). */
lmc_status lmc_qweight_init_q4kr(struct lmc_qweight *w, const void *data, int64_t n, int64_t k, lmc_err *err);
/* Row r of a Q4_KR weight back as the file's Q4_K bytes (k / 256 * 144). */
void lmc_q4kr_row_to_ggml(const struct lmc_qweight *w, int64_t r, void *dst);
/* GGUF Q4_0 repacked for the CPU kernels ("Q4_0R", q4k_repack.c): the
 * same bytes per row (18 a block), blocks in pairs: per pair the 16 code
 * bytes of its first block, those of its second (one 32-byte load), then
 * the two fp16 scales; an odd last block as codes then scale. */
void lmc_q40r_pack_rows(const void *ggml, void *dst, int64_t nrows, int64_t k);
/* Row r of a Q4_0R weight back as the file's Q4_0 bytes (k / 32 * 18). */
void lmc_q40r_row_to_ggml(const struct lmc_qweight *w, int64_t r, void *dst);
lmc_status lmc_qweight_init_q40r(struct lmc_qweight *w, const void *data, int64_t n, int64_t k, lmc_err *err);
/* A Q4_KR / Q4_0R weight's rows back in the file's layout: g (kernel
 * Q4_K / Q4_0, its own copy of the codes, freed by lmc_qweight_free). */
lmc_status lmc_qweight_file_layout(const struct lmc_qweight *w, struct lmc_qweight *g, lmc_err *err);
/* A GGUF Q4_K / Q4_0 weight whose codes it owns (w->owned == w->data)
 * repacked into Q4_KR / Q4_0R (a new owned buffer, the old one freed). */
lmc_status lmc_qweight_repack(struct lmc_qweight *w, lmc_err *err);
/* Integer groups (rtn, GPTQ with any g_idx, AWQ): codes repacked. */
lmc_status lmc_qweight_init_groups(struct lmc_qweight *w, const struct lmc_qgroups *g, lmc_err *err);
/* bitsandbytes NF4 of a (n, k) weight, k a multiple of 64. */
lmc_status lmc_qweight_init_nf4(struct lmc_qweight *w, const struct lmc_nf4 *q, int64_t n, int64_t k,
                                lmc_err *err);
/* NF4 of any (n, k) with blocks of 64 over the flattened weight (QLoRA's
 * training base; float products only). */
lmc_status lmc_qweight_init_nf4_flat(struct lmc_qweight *w, const struct lmc_nf4 *q, int64_t n, int64_t k,
                                     lmc_err *err);
/* Keeps q's double-quantized absmax in w (the dq_ fields; n_blocks of
 * them): a no-op for q with plain float absmax. For lmc_qweight_init_nf4*. */
lmc_status lmc_qweight_keep_dq(struct lmc_qweight *w, const struct lmc_nf4 *q, lmc_err *err);
/* BitNet ternary codes q (n, k) in {-1, 0, 1} with one scale: w = q * scale. */
lmc_status lmc_qweight_init_ternary(struct lmc_qweight *w, const int8_t *q, float scale, int64_t n, int64_t k,
                                    lmc_err *err);
void lmc_qweight_free(struct lmc_qweight *w);
/* Bytes the weight's codes and scales take (for lmc info / benches). */
size_t lmc_qweight_bytes(const struct lmc_qweight *w);

/* Bytes of w in its compact form — the form a device copy for float math
 * (backend qweight_upload_f) takes: NF4, the codes of the weight's element
 * range from its first whole block, per block the double-quantized absmax
 * code (plus the 256-value nested map and the absmax2 floats its blocks
 * use) or a float absmax; integer groups, the codes, f32 scale and int32
 * zero per (row, group), the block -> group map (int32 per block of 32)
 * and the permutation (int32 per kernel column). Other kinds:
 * lmc_qweight_bytes. */
size_t lmc_qweight_bytes_compact(const struct lmc_qweight *w);

/* Rows [r0, r0 + nr) of w expanded to float32: dst (nr, w->k), input
 * columns in their own order (act-order permutation undone). */
void lmc_qweight_dequant_rows(const struct lmc_qweight *w, int64_t r0, int64_t nr, float *dst);

/* Scratch lmc_qmatmul needs for m rows of input. */
size_t lmc_qmatmul_scratch_bytes(const struct lmc_qweight *w, int64_t m);
/* y(m, n) = x(m, k) @ W^T. scratch: lmc_qmatmul_scratch_bytes(w, m) bytes,
 * 64-byte aligned. pool may be NULL (one thread). */
void lmc_qmatmul(const struct lmc_qctx *c, const struct lmc_qweight *w, float *y, const float *x, int64_t m,
                 void *scratch, struct lmc_pool *pool);

/* y[i](m, w[i]->n) = x(m, k) @ W_i^T for k <= 8 weights of one input
 * (q/k/v, gate/up): where they share the activation layout (the same kind,
 * columns and groups, no permutation; the small-M kernels) x is quantized
 * once and all k run in one pool run; otherwise k lmc_qmatmul calls. Each
 * y[i] is the same bits as lmc_qmatmul(w[i]) gives. scratch:
 * lmc_qmatmul_scratch_bytes of the largest (any of them: the same size when
 * shared). */
void lmc_qmatmul_multi(const struct lmc_qctx *c, int k, const struct lmc_qweight *const *w, float *const *y,
                       const float *x, int64_t m, void *scratch, struct lmc_pool *pool);

/* Quantizes n (a multiple of 32) floats into n/32 activation blocks. */
void lmc_q8act_quantize(const float *x, int64_t n, struct lmc_q8act *out);
/* The same blocks with one scale d = amax / 127 per 256 floats (n a
 * multiple of 256): every block of a super-block carries the same d, so a
 * Q4_K super-block's sub-block products add up in integers. */
void lmc_q8act_quantize_k(const float *x, int64_t n, struct lmc_q8act *out);

/* The instruction-set kernels (qmatmul_x86.c); NULL slots fall back to C. */
void lmc_qdot_table_avx2(lmc_qdot_fn *dot);
void lmc_qdot_table_vnni(lmc_qdot_fn *dot);
void lmc_qdot4_table_avx2(lmc_qdot4_fn *dot4);
void lmc_qdot4_table_vnni(lmc_qdot4_fn *dot4);
/* The small-M kernels (qmatmul_q4.c: Q8_0, Q4_0 and 4-bit groups with
 * VNNI or AVX2; AVX2 Q8_0 at M >= 4 reads the plain blocks, lmc_q8rows.xq). */
void lmc_qdotm_table_q4_vnni(lmc_qdotm_fn *dotm);
void lmc_qdotm_table_q4_avx2(lmc_qdotm_fn *dotm);
/* Q4_K's small-M kernel (qmatmul_q4k.c, VNNI or AVX2: the same bits) and
 * its activation layout: the 128-byte slots a row takes and rows [i0, i1)
 * filled into buf. */
void lmc_qdotm_table_q4k_vnni(lmc_qdotm_fn *dotm);
void lmc_qdotm_table_q4k_avx2(lmc_qdotm_fn *dotm);
int64_t lmc_q4k_slots(const struct lmc_qweight *w);
void lmc_q4k_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t i0, int64_t i1, void *buf);
/* The slots a row (qmatmul_q4.c: Q4_0 and groups pair blocks within a
 * group, an odd last block with zeros; Q8_0 likewise), and rows
 * [i0, i1) of activation blocks (row i's at xq + i * kp / 32) into them. */
int64_t lmc_q8rows_pairs(const struct lmc_qweight *w);
void lmc_q8rows_fill_pairs(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t i0, int64_t i1,
                           void *buf);
/* lmc_q8act_quantize's and lmc_q8act_quantize_k's AVX-512 forms (the same
 * blocks, bit for bit). */
lmc_q8quant_fn lmc_q8act_quantize_vnni(void);
lmc_q8quant_fn lmc_q8act_quantize_k_vnni(void);
/* And their AVX2 forms (the same blocks, bit for bit). */
lmc_q8quant_fn lmc_q8act_quantize_avx2(void);
lmc_q8quant_fn lmc_q8act_quantize_k_avx2(void);
/* m rows of w->kp / 32 activation blocks each (row i's at xq + i * kp / 32)
 * into the small-M layout of w's kind in buf (lmc_q8rows_bytes(w, m) bytes, 64-byte
 * aligned); out points into buf. */
void lmc_q8rows_prepare(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, void *buf,
                        struct lmc_q8rows *out);
/* The same in two steps (rows filled in parallel): rows [i0, i1) of m into
 * buf, then the view of all m. */
void lmc_q8rows_fill(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, int64_t i0, int64_t i1,
                     void *buf);
void lmc_q8rows_view(const struct lmc_qweight *w, const struct lmc_q8act *xq, int64_t m, void *buf,
                     struct lmc_q8rows *out);
size_t lmc_q8rows_bytes(const struct lmc_qweight *w, int64_t m);

#endif
