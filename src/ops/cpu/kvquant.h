/* kvquant.h — compressed KV-cache rows on the CPU: int8 (symmetric, one
 * f16 scale per 64 values of a token's row), int4 (asymmetric, f16 scale
 * and minimum per 32 values of a row) and KIVI-2 (Liu et al. 2024: keys
 * quantized per channel over blocks of 32 tokens, values per token in
 * groups of 32 channels, both 2-bit asymmetric, the most recent R tokens
 * kept in f16 until a whole block of keys is older than them).
 *
 * A layer's compressed cache lives inside the bytes the model allocates
 * for a 2-byte KV cache (backend kv_dtype of size 2: ctx * row * 2 bytes
 * for K and again for V): a header at the start of the K region, then the
 * format's codes, scales and (KIVI) residual ring. The model writes it only
 * through rope_kv_store and reads it only through attention (backend.h's
 * contract for non-f32 caches), so lmc_kvq_rope_kv_store and
 * lmc_kvq_attention here are those two entries of a CPU backend variant
 * (infer/kvq.c). The attention decodes each cached row once per call, in
 * place, never a dequantized copy of the cache. */
#ifndef LMC_KVQUANT_H
#define LMC_KVQUANT_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LMC_KVQ_GROUP 32 /* values per scale (rows), tokens per key block (KIVI) */

/* The compressed formats Q8..KIVI2 (a header and codes inside a layer's
 * region, below), then F16 and BF16: plain 2-byte rows (the paged pool's
 * f16 / bf16 slots; the single-sequence cache of infer/kvq.h's
 * lmc_kvq_backend_fmt, kv_dtype F16 / BF16, no header). */
enum lmc_kvq_fmt { LMC_KVQ_NONE = 0, LMC_KVQ_Q8, LMC_KVQ_Q4, LMC_KVQ_KIVI2, LMC_KVQ_F16, LMC_KVQ_BF16 };

/* "q8", "q4", "kivi2", "f16", "bf16"; NULL for NONE. lmc_kvq_parse
 * returns the format of such a name, NONE for anything else ("f32"
 * included: the float cache). */
const char *lmc_kvq_name(enum lmc_kvq_fmt f);
enum lmc_kvq_fmt lmc_kvq_parse(const char *s);
/* F16 or BF16 (2-byte float rows) */
static inline bool lmc_kvq_is_half(enum lmc_kvq_fmt f) { return f == LMC_KVQ_F16 || f == LMC_KVQ_BF16; }

/* Steady-state bytes per token of K and V together for a row of `row`
 * values per token and per layer (codes and scales; the KIVI ring of R+32
 * f16 rows is a constant per sequence, not counted). bf16 and f16 are
 * 4 * row. */
double lmc_kvq_bytes_per_token(enum lmc_kvq_fmt f, int64_t row);

/* Group quantizers (n values, groups of LMC_KVQ_Q8_G = 64 (q8) or
 * LMC_KVQ_GROUP = 32 (asym), the last possibly partial). q8: codes (n)
 * int8, scales (ceil(n/64)) f16 with
 * |x - code * scale| <= scale / 2. asym (bits 2 or 4): codes packed
 * little-end first (ceil(n*bits/8) bytes), sm (2 per group) f16 scale then
 * minimum, |x - (min + code * scale)| <= scale / 2. */
void lmc_kvq_q8_quant(const float *x, int64_t n, int8_t *codes, uint16_t *scales);
void lmc_kvq_q8_dequant(const int8_t *codes, const uint16_t *scales, int64_t n, float *x);
void lmc_kvq_asym_quant(const float *x, int64_t n, int bits, uint8_t *codes, uint16_t *sm);
void lmc_kvq_asym_dequant(const uint8_t *codes, const uint16_t *sm, int64_t n, int bits, float *x);

/* Bytes one layer's K (or V) region needs in format f (Q8..KIVI2) for ctx
 * positions of row values (the larger of the two, a multiple of 64); 0
 * for a residual out of range (KIVI: 0..4096) or another format. */
size_t lmc_kvq_layer_bytes(enum lmc_kvq_fmt f, int64_t ctx, int64_t row, int64_t residual);
/* Prepares one layer's cache in its regions of `have` bytes each.
 * LMC_ERR_ARG when the format's data does not fit in them (KIVI with a
 * context shorter than about its ring, in a bf16-sized region) or
 * residual is out of range (KIVI: 0..4096). */
lmc_status lmc_kvq_layer_init(void *kregion, void *vregion, enum lmc_kvq_fmt f, int64_t ctx,
                              int64_t row, int64_t residual, size_t have, lmc_err *err);
/* Positions stored in a layer cache (0 after init). */
int64_t lmc_kvq_layer_len(const void *kregion);
/* Appends n rows k, v (n, row) at positions len..len+n-1 after dropping
 * positions >= pos (pos <= len; KIVI: a dropped part of a quantized block
 * comes back to the ring dequantized). */
void lmc_kvq_layer_store(void *kregion, void *vregion, const float *k, const float *v, int64_t n,
                         int64_t pos);
/* Decodes position t's key and value rows (row floats each). */
void lmc_kvq_layer_row(const void *kregion, const void *vregion, int64_t t, float *k, float *v);

/* The two backend entries (backend.h semantics, CPU ctx). kc, vc: one
 * layer's regions as prepared by lmc_kvq_layer_init. pos must be
 * consecutive (single-sequence forward). */
void lmc_kvq_rope_kv_store(void *ctx, float *q, float *k, const float *v, void *kc, void *vc,
                           int64_t M, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim,
                           const int32_t *pos, const double *inv_freq, float attn_scale);
void lmc_kvq_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                       float scale, int64_t window);

/* The paged pool (forward_batch.h) in f16, q8 or q4: one token's K (or
 * V) row in a slot of lmc_kvq_paged_row_bytes bytes (f16: row values; q8,
 * q4: f16 scales, then codes, an 8-byte multiple), written by the
 * attention_paged of the format (attention_paged_kvq.c's step, f16's
 * kernel in attention_paged_f16.c) and read only by it. The _f16 / _q8 /
 * _q4 functions are the backend entries kv_row_bytes and attention_paged
 * of the variant infer/kvq.h's lmc_kvq_paged_backend makes (f16: lmc
 * serve's default on the CPU; AVX2/F16C kernel with a portable twin). */
size_t lmc_kvq_paged_row_bytes(enum lmc_kvq_fmt f, int64_t row);
size_t lmc_kvq_paged_row_bytes_q8(int64_t row);
size_t lmc_kvq_paged_row_bytes_q4(int64_t row);
size_t lmc_kvq_paged_row_bytes_f16(int64_t row);
size_t lmc_kvq_paged_row_bytes_bf16(int64_t row);
/* Stores x (row) into a slot (quantized, or rounded to f16); decodes
 * values [a, a+n) of a slot. */
void lmc_kvq_paged_store(enum lmc_kvq_fmt f, void *slot, const float *x, int64_t row);
void lmc_kvq_paged_decode(enum lmc_kvq_fmt f, const void *slot, int64_t row, int64_t a, int64_t n,
                          float *out);
void lmc_kvq_attention_paged_q8(void *ctx, float *out, const float *q, const float *k_new,
                                const float *v_new, float *kc, float *vc, int64_t T,
                                const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv,
                                int64_t hd, float scale, int64_t window);
void lmc_kvq_attention_paged_q4(void *ctx, float *out, const float *q, const float *k_new,
                                const float *v_new, float *kc, float *vc, int64_t T,
                                const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv,
                                int64_t hd, float scale, int64_t window);
void lmc_kvq_attention_paged_f16(void *ctx, float *out, const float *q, const float *k_new,
                                 const float *v_new, float *kc, float *vc, int64_t T,
                                 const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                 int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv,
                                 int64_t hd, float scale, int64_t window);
void lmc_kvq_attention_paged_bf16(void *ctx, float *out, const float *q, const float *k_new,
                                  const float *v_new, float *kc, float *vc, int64_t T,
                                  const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                  int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv,
                                  int64_t hd, float scale, int64_t window);

/* The single-sequence 2-byte cache (attention_kv16.c; infer/kvq.h's
 * lmc_kvq_backend_fmt): rope_kv_store (rotary on q and k, then the k and v
 * rows rounded to f16 / bf16 into rows pos[m] of kc, vc) and causal
 * attention over those rows (attention_paged_f16.c's kernel over one
 * block), the backend entries of kv_dtype F16 / BF16. */
void lmc_kvq_rope_kv_store_f16(void *ctx, float *q, float *k, const float *v, void *kc, void *vc, int64_t M,
                               int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim, const int32_t *pos,
                               const double *inv_freq, float attn_scale);
void lmc_kvq_rope_kv_store_bf16(void *ctx, float *q, float *k, const float *v, void *kc, void *vc, int64_t M,
                                int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim, const int32_t *pos,
                                const double *inv_freq, float attn_scale);
void lmc_kvq_attention_f16(void *ctx, float *out, const float *q, const float *k, const float *v, int64_t M,
                           int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window);
void lmc_kvq_attention_bf16(void *ctx, float *out, const float *q, const float *k, const float *v, int64_t M,
                            int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window);

/* KIVI-2 in the paged pool (attention_paged_kivi.c; layout in
 * kvquant_layout.h): kv_row_bytes and attention_paged_ring of the variant
 * lmc_kvq_paged_backend makes for kivi2. The block size must be a
 * multiple of 32 (a key group never straddles blocks). */
size_t lmc_kvq_paged_row_bytes_kivi2(int64_t row);
void lmc_kvq_attention_paged_kivi2(void *ctx, float *out, const float *q, const float *k_new,
                                   const float *v_new, float *kc, float *vc, void *ring,
                                   const int32_t *tok_ring, int64_t ring_rows, int64_t residual,
                                   int64_t T, const int32_t *seq, const int32_t *pos,
                                   const int32_t *bt, int64_t max_blocks, int64_t block_size,
                                   int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                   int64_t window);

#endif
