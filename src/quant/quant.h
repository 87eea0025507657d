/* quant.h — quantized weight formats: descriptions, (un)packing and
 * dequantization of the GGUF block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K, Q6_K) and of the Python ecosystem's layouts (GPTQ v1/v2,
 * AWQ GEMM, bitsandbytes NF4, BitNet ternary), plus the quantizers that
 * make them (round-to-nearest, llama.cpp-style block quantizers, NF4,
 * absmean ternary). GPTQ itself is in quant/gptq_algo.h. Everything here is
 * plain CPU code on caller-owned buffers; nothing is global. */
#ifndef LMC_QUANT_H
#define LMC_QUANT_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- GGUF / ggml tensor types (the numbers are ggml's, as in files) ---- */
enum lmc_ggml_type {
    LMC_GGML_F32 = 0,
    LMC_GGML_F16 = 1,
    LMC_GGML_Q4_0 = 2,
    LMC_GGML_Q4_1 = 3,
    LMC_GGML_Q5_0 = 6,
    LMC_GGML_Q5_1 = 7,
    LMC_GGML_Q8_0 = 8,
    LMC_GGML_Q4_K = 12,
    LMC_GGML_Q5_K = 13,
    LMC_GGML_Q6_K = 14,
    LMC_GGML_I8 = 24,
    LMC_GGML_I16 = 25,
    LMC_GGML_I32 = 26,
    LMC_GGML_I64 = 27,
    LMC_GGML_F64 = 28,
    LMC_GGML_BF16 = 30,
    LMC_GGML_TYPE_LIMIT = 40 /* ids at or above are unknown */
};

/* Elements per block and bytes per block of a type lmc knows; false for
 * a type it does not (block 1 for the plain types). */
bool lmc_ggml_type_info(int type, int64_t *block_elems, int64_t *block_bytes);
/* "Q4_K", "F16", ...; NULL for an unknown type. */
const char *lmc_ggml_type_name(int type);
/* Parses a name ("q4_0", "Q8_0", "f16"); -1 if unknown. */
int lmc_ggml_type_parse(const char *s);
/* Bytes of a row of n elements of `type` into *bytes; false when n is not
 * a multiple of the block, the type is unknown, or the size overflows. */
bool lmc_ggml_row_bytes(int type, int64_t n, int64_t *bytes);

/* Dequantizes one row of n elements (n a multiple of the type's block) to
 * float32. Works for every type lmc_ggml_type_info knows (F32, F16, BF16,
 * F64 and the integer types converted too). */
void lmc_ggml_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Quantizes one row of n floats into `type` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K, Q6_K, F16, BF16, F32). Returns false for a type without a
 * quantizer or n not a multiple of the block. */
bool lmc_ggml_quantize_row(int type, const float *src, void *dst, int64_t n);

/* One block's contents as integers, the unpacked view that packing round
 * trips through: q[] are the stored codes (unsigned, as on disk: Q4_0 0..15,
 * Q5_* 0..31, Q8_0 -128..127, Q6_K 0..63), sc[]/mn[] the K-quants' sub-block
 * scales and mins (6-bit for Q4_K/Q5_K, int8 for Q6_K), d/dm the fp16 bits of
 * the block scale and min (dm: Q4_1/Q5_1's m, the K-quants' dmin). */
struct lmc_qblock {
    int16_t q[256];
    int16_t sc[16], mn[16];
    uint16_t d, dm;
};
/* Q4_K/Q5_K's 12 bytes of eight 6-bit sub-block scales and mins. */
void lmc_ggml_kscales_unpack(const uint8_t *s, int16_t *sc, int16_t *mn);
/* Unpacks / packs one block of a GGUF quantized type (Q*_0/1/K). */
void lmc_ggml_unpack_block(int type, const void *src, struct lmc_qblock *b);
void lmc_ggml_pack_block(int type, const struct lmc_qblock *b, void *dst);

/* ---- integer groups: GPTQ, AWQ, rtn ----
 * A weight (N out, K in) quantized to `bits`-bit unsigned integers q[n][k]
 * with a scale and an integer zero per (group, n): w = scale * (q - zero).
 * Group of input k: g_idx[k] (GPTQ act-order) or k / group_size. */
struct lmc_qgroups {
    int64_t n, k;
    int bits;             /* 2..8 */
    int64_t group_size;   /* k when one group per row */
    int64_t n_groups;
    uint8_t *q;           /* (n, k) one code per byte */
    float *scale;         /* (n_groups, n) */
    int32_t *zero;        /* (n_groups, n) integer zero points */
    int32_t *g_idx;       /* (k) group of each input column */
};
lmc_status lmc_qgroups_alloc(struct lmc_qgroups *g, int64_t n, int64_t k, int bits, int64_t group_size,
                             lmc_err *err);
void lmc_qgroups_free(struct lmc_qgroups *g);
/* w[n*k + i] = scale[g][n] * (q - zero), with g = g_idx[i]. */
void lmc_qgroups_dequantize(const struct lmc_qgroups *g, float *w);

/* Round-to-nearest: per group of group_size inputs (or per channel when
 * group_size = k), symmetric or asymmetric with GPTQ's rule for scale and
 * zero (lmc_quant_minmax_params). Fills g (allocated here). */
lmc_status lmc_quant_rtn(const float *w, int64_t n, int64_t k, int bits, int64_t group_size, bool sym,
                         struct lmc_qgroups *g, lmc_err *err);
/* The range search of `lmc quantize --clip-search` (rtn and gptq): a
 * group's range [lo, hi] shrunk by 1 - t / 100 for t < LMC_QUANT_CLIP_GRID
 * (1.00 down to 0.81), the factor with the smallest squared error kept. */
#define LMC_QUANT_CLIP_GRID 20
/* lmc_quant_rtn with that search per group. */
lmc_status lmc_quant_rtn_search(const float *w, int64_t n, int64_t k, int bits, int64_t group_size, bool sym,
                                struct lmc_qgroups *g, lmc_err *err);
/* Scale and zero of one group from its range [lo, hi], GPTQ's find_params
 * (shared by rtn and gptq): lo = min(lo, 0), hi = max(hi, 0); sym: hi =
 * max(|lo|, hi), lo = -hi when lo < 0, zero = (maxq+1)/2; asym: zero =
 * round(-lo/scale); scale = (hi-lo)/maxq; an all-zero range becomes [-1, 1]. */
void lmc_quant_minmax_params(float lo, float hi, int bits, bool sym, float *scale, int32_t *zero);
static inline int32_t lmc_quant_code(float x, float scale, int32_t zero, int32_t maxq) {
    float v = __builtin_nearbyintf(x / scale) + (float)zero; /* round half to even, as torch.round */
    return v < 0 ? 0 : v > (float)maxq ? maxq : (int32_t)v;
}

/* GPTQ checkpoint tensors (AutoGPTQ / transformers layout):
 *   qweight (K*bits/32, N) int32: packed along K, bit stream per column
 *           (3-bit codes cross word boundaries: 32 codes in 3 words);
 *   qzeros  (G, N*bits/32) int32: packed along N likewise; v1 stores zero-1;
 *   scales  (G, N) fp16; g_idx (K) int32.
 * K*bits and N*bits must be multiples of 32 (whole int32 words). */
struct lmc_gptq_tensors {
    int64_t n, k, n_groups;
    int bits;
    bool v2;              /* checkpoint_format gptq_v2: zeros stored as is */
    int32_t *qweight, *qzeros, *g_idx;
    uint16_t *scales;
};
lmc_status lmc_gptq_pack(const struct lmc_qgroups *g, bool v2, struct lmc_gptq_tensors *t, lmc_err *err);
/* Unpacks checkpoint tensors (borrowed) into g (allocated here); errors
 * name `label` and the field when shapes or values disagree. */
lmc_status lmc_gptq_unpack(const struct lmc_gptq_tensors *t, const char *label, struct lmc_qgroups *g,
                           lmc_err *err);
void lmc_gptq_tensors_free(struct lmc_gptq_tensors *t);

/* AWQ GEMM layout: qweight (K, N/8) int32 packed along N with AWQ's nibble
 * order {0,2,4,6,1,3,5,7}; qzeros (G, N/8) likewise, raw zeros; scales
 * (G, N) fp16. 4 bits only; groups contiguous. */
struct lmc_awq_tensors {
    int64_t n, k, n_groups;
    int32_t *qweight, *qzeros;
    uint16_t *scales;
};
lmc_status lmc_awq_pack(const struct lmc_qgroups *g, struct lmc_awq_tensors *t, lmc_err *err);
lmc_status lmc_awq_unpack(const struct lmc_awq_tensors *t, int64_t group_size, const char *label,
                          struct lmc_qgroups *g, lmc_err *err);
void lmc_awq_tensors_free(struct lmc_awq_tensors *t);

/* ---- bitsandbytes NF4 ----
 * numel elements in blocks of 64: code q (two per byte, first element in
 * the high nibble), absmax per block; double quantization stores absmax as
 * uint8 codes of the 256-entry signed dynamic map in blocks of 256 with a
 * float32 absmax each, after subtracting the mean (offset). */
extern const float lmc_nf4_code[16];
void lmc_dynamic_map_signed(float map[256]);
struct lmc_nf4 {
    int64_t numel, n_blocks, n_blocks2;
    int64_t blocksize2;     /* absmax values per nested block (256) */
    uint8_t *packed;        /* (numel+1)/2 */
    uint8_t *absmax_q;      /* n_blocks codes (double quantization) */
    float *absmax2;         /* n_blocks2 */
    float *absmax_f;        /* n_blocks plain float32 absmax (files without double quantization); else NULL */
    float offset;
    float quant_map[16], nested_map[256];
};
lmc_status lmc_nf4_quantize(const float *w, int64_t numel, struct lmc_nf4 *q, lmc_err *err);
/* absmax of block b after undoing the double quantization. */
float lmc_nf4_absmax(const struct lmc_nf4 *q, int64_t b);
void lmc_nf4_dequantize(const struct lmc_nf4 *q, float *w);
void lmc_nf4_free(struct lmc_nf4 *q);

/* ---- BitNet b1.58 ternary ----
 * absmean: s = mean|w| (at least 1e-5), q = clamp(round(w * (1/s)), -1, 1);
 * w' = q * s (checkpoints store weight_scale = 1/s and w' = q / weight_scale). Packed as transformers' bitnet layout: (ceil(N/4), K) uint8,
 * code q+1 in bits 2j..2j+1 of byte [r][k] for row j*ceil(N/4)+r. */
float lmc_ternary_quantize(const float *w, int64_t numel, int8_t *q);
lmc_status lmc_ternary_pack(const int8_t *q, int64_t n, int64_t k, uint8_t **packed, lmc_err *err);
void lmc_ternary_unpack(const uint8_t *packed, int64_t n, int64_t k, int8_t *q);

#endif
