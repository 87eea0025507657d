/* q4k_repack.c — GGUF Q4_K super-blocks (and Q4_0 blocks, below)
 * repacked once at load into the layout the CPU kernels read ("Q4_KR",
 * qmatmul.h's LMC_Q4KR_BYTES comment; "Q4_0R") and back, bit for bit.
 *
 * Why: the 4-bit M = 1 kernels are issue-bound, and per super-block and
 * weight row the file's layout costs the Q4_K tile ~8 vector operations to
 * unpack the 12 bytes of 6-bit scales and mins, and per 64 weights two
 * 16-byte broadcasts and two variable shifts to bring the nibbles of
 * sub-blocks 2c and 2c + 1 (which the file keeps in the low and high
 * nibbles of the same bytes) into the pair layout. Repacked, the scales
 * and mins are one byte each (a 16-byte broadcast and a zero-extension),
 * and the codes of a 64-weight chunk one 32-byte load, a mask, a shift and
 * a mask: the same integers in the same lanes (the tile's results are the
 * same bits as on the file's layout). The row keeps its super-blocks in
 * order, each self-contained (148 bytes), so row views, column cuts by
 * whole super-blocks and dequantization work per block as before. */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

void lmc_q4kr_pack_block(const uint8_t *g, uint8_t *r) {
    const uint8_t *qs = g + 16;
    for (int c = 0; c < 4; c++) {
        const uint8_t *s = qs + 32 * c;
        uint8_t *o = r + 32 * c;
        for (int i = 0; i < 16; i++) {
            o[i] = (uint8_t)((s[i] & 15) | (s[16 + i] & 15) << 4);     /* sub-block 2c: elements i, 16 + i */
            o[16 + i] = (uint8_t)((s[i] >> 4) | (s[16 + i] & 0xF0)); /* sub-block 2c + 1 */
        }
    }
    memcpy(r + 128, g, 4); /* d, dmin */
    int16_t sc[8], mn[8];
    lmc_ggml_kscales_unpack(g + 4, sc, mn);
    for (int j = 0; j < 8; j++) {
        r[132 + j] = (uint8_t)sc[j];
        r[140 + j] = (uint8_t)mn[j];
    }
}

void lmc_q4kr_unpack_block(const uint8_t *r, uint8_t *g) {
    struct lmc_qblock b;
    memset(&b, 0, sizeof b);
    memcpy(&b.d, r + 128, 2);
    memcpy(&b.dm, r + 130, 2);
    for (int j = 0; j < 8; j++) {
        b.sc[j] = r[132 + j];
        b.mn[j] = r[140 + j];
    }
    for (int c = 0; c < 4; c++) {
        const uint8_t *o = r + 32 * c;
        for (int i = 0; i < 16; i++) {
            b.q[64 * c + i] = o[i] & 15;
            b.q[64 * c + 16 + i] = o[i] >> 4;
            b.q[64 * c + 32 + i] = o[16 + i] & 15;
            b.q[64 * c + 48 + i] = o[16 + i] >> 4;
        }
    }
    lmc_ggml_pack_block(LMC_GGML_Q4_K, &b, g);
}

void lmc_q4kr_pack_rows(const void *ggml, void *dst, int64_t nrows, int64_t k) {
    LMC_ASSERT(k > 0 && k % 256 == 0 && nrows >= 0);
    const uint8_t *s = ggml;
    uint8_t *d = dst;
    for (int64_t i = 0; i < nrows * (k / 256); i++) lmc_q4kr_pack_block(s + 144 * i, d + LMC_Q4KR_BYTES * i);
}

lmc_status lmc_qweight_init_q4kr(struct lmc_qweight *w, const void *data, int64_t n, int64_t k, lmc_err *err) {
    lmc_status s = lmc_qweight_init_ggml(w, LMC_GGML_Q4_K, data, n, k, err);
    if (s) return s;
    w->kernel = LMC_QK_Q4_KR;
    w->row_bytes = k / 256 * LMC_Q4KR_BYTES;
    return LMC_OK;
}

void lmc_q4kr_row_to_ggml(const struct lmc_qweight *w, int64_t r, void *dst) {
    LMC_ASSERT(w->kernel == LMC_QK_Q4_KR && r >= 0 && r < w->n);
    const uint8_t *p = w->data + r * w->row_bytes;
    for (int64_t s = 0; s < w->k / 256; s++) lmc_q4kr_unpack_block(p + LMC_Q4KR_BYTES * s, (uint8_t *)dst + 144 * s);
}

/* ---- Q4_0 in pairs of blocks ----
 * Why: the Q4_0 tile reads a pair of blocks per step; in the file's layout
 * (scale, 16 code bytes; scale, 16 code bytes) that is two 16-byte loads
 * and an insert for the codes and two 2-byte loads, two broadcasts and an
 * unpack for the scales; paired, one 32-byte load, and one conversion from
 * memory of the 8 bytes that end with the two scales and a permute. The same
 * bytes, so no memory grows. */

/* One row of nb blocks: the file's blocks into pairs, and back. */
static void q40r_pack_row(const uint8_t *g, uint8_t *r, int64_t nb) {
    for (int64_t b = 0; b < nb; b += 2, g += 36, r += 36) {
        if (b + 1 < nb) { /* a pair: codes 0, codes 1, d0, d1 */
            memcpy(r, g + 2, 16), memcpy(r + 16, g + 20, 16), memcpy(r + 32, g, 2), memcpy(r + 34, g + 18, 2);
        } else { /* an odd last block: codes, d */
            memcpy(r, g + 2, 16), memcpy(r + 16, g, 2);
        }
    }
}
static void q40r_unpack_row(const uint8_t *r, uint8_t *g, int64_t nb) {
    for (int64_t b = 0; b < nb; b += 2, g += 36, r += 36) {
        if (b + 1 < nb) {
            memcpy(g + 2, r, 16), memcpy(g + 20, r + 16, 16), memcpy(g, r + 32, 2), memcpy(g + 18, r + 34, 2);
        } else {
            memcpy(g + 2, r, 16), memcpy(g, r + 16, 2);
        }
    }
}

void lmc_q40r_pack_rows(const void *ggml, void *dst, int64_t nrows, int64_t k) {
    LMC_ASSERT(k > 0 && k % 32 == 0 && nrows >= 0);
    for (int64_t i = 0; i < nrows; i++)
        q40r_pack_row((const uint8_t *)ggml + i * (k / 32) * 18, (uint8_t *)dst + i * (k / 32) * 18, k / 32);
}

void lmc_q40r_row_to_ggml(const struct lmc_qweight *w, int64_t r, void *dst) {
    LMC_ASSERT(w->kernel == LMC_QK_Q4_0R && r >= 0 && r < w->n);
    q40r_unpack_row(w->data + r * w->row_bytes, dst, w->k / 32);
}

lmc_status lmc_qweight_init_q40r(struct lmc_qweight *w, const void *data, int64_t n, int64_t k, lmc_err *err) {
    lmc_status s = lmc_qweight_init_ggml(w, LMC_GGML_Q4_0, data, n, k, err);
    if (s) return s;
    w->kernel = LMC_QK_Q4_0R;
    return LMC_OK;
}

lmc_status lmc_qweight_file_layout(const struct lmc_qweight *w, struct lmc_qweight *g, lmc_err *err) {
    LMC_ASSERT(w->kernel == LMC_QK_Q4_KR || w->kernel == LMC_QK_Q4_0R);
    bool k4 = w->kernel == LMC_QK_Q4_KR;
    int64_t rb = k4 ? w->k / 256 * 144 : w->k / 32 * 18;
    uint8_t *p = malloc((size_t)(w->n * rb) + 1);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "quantized weight: out of memory");
    for (int64_t r = 0; r < w->n; r++) (k4 ? lmc_q4kr_row_to_ggml : lmc_q40r_row_to_ggml)(w, r, p + r * rb);
    lmc_status s = lmc_qweight_init_ggml(g, k4 ? LMC_GGML_Q4_K : LMC_GGML_Q4_0, p, w->n, w->k, err);
    if (s) {
        free(p);
        return s;
    }
    g->owned = p;
    return LMC_OK;
}

lmc_status lmc_qweight_repack(struct lmc_qweight *w, lmc_err *err) {
    LMC_ASSERT((w->kernel == LMC_QK_Q4_K || w->kernel == LMC_QK_Q4_0) && w->owned == w->data);
    bool k4 = w->kernel == LMC_QK_Q4_K;
    int64_t rb = k4 ? w->k / 256 * LMC_Q4KR_BYTES : w->row_bytes;
    uint8_t *p = malloc((size_t)(w->n * rb) + 1);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "quantized weight: out of memory");
    (k4 ? lmc_q4kr_pack_rows : lmc_q40r_pack_rows)(w->data, p, w->n, w->k);
    free(w->owned);
    w->owned = p;
    w->data = p;
    w->row_bytes = rb;
    w->kernel = k4 ? LMC_QK_Q4_KR : LMC_QK_Q4_0R;
    return LMC_OK;
}
