/* qdequant.c — rows of a kernel-ready quantized weight (quant/qmatmul.h)
 * expanded to float32 (and the flat NF4 weight only this reads) in the input columns' own order: the tile a float
 * product (QLoRA training: y = x W^T and dx = dy W with float activations)
 * works on, so that no whole matrix is ever resident in float. */
#include "quant/qmatmul.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

/* Row r of a U4G/U8G weight: kernel column j (group gi of its block) holds
 * code q; input column perm[j] (or j) gets scale * (q - zero). */
static void groups_row(const struct lmc_qweight *w, int64_t r, float *dst) {
    const uint8_t *row = w->data + r * w->row_bytes;
    const float *sc = w->scale + r * w->n_groups;
    const int32_t *zr = w->zero + r * w->n_groups;
    if (!w->perm && w->kernel == LMC_QK_U4G) { /* identity order (kp == k): whole blocks of 32, no lookups */
        for (int64_t gi = 0; gi < w->n_groups; gi++) {
            float s = sc[gi], z = (float)zr[gi];
            for (int64_t b = w->gblk[gi]; b < w->gblk[gi + 1]; b++) {
                const uint8_t *p = row + b * 16;
                float *d = dst + b * 32;
                for (int t = 0; t < 16; t++) {
                    d[t] = s * ((float)(p[t] & 15) - z);
                    d[t + 16] = s * ((float)(p[t] >> 4) - z);
                }
            }
        }
        return;
    }
    if (w->perm) memset(dst, 0, (size_t)w->k * sizeof *dst);
    for (int64_t gi = 0; gi < w->n_groups; gi++) {
        float s = sc[gi];
        float z = (float)zr[gi];
        for (int64_t j = w->gblk[gi] * 32; j < w->gblk[gi + 1] * 32; j++) {
            int q;
            if (w->kernel == LMC_QK_U8G) q = row[j];
            else if (j % 32 < 16) q = row[j / 32 * 16 + j % 32] & 15;
            else q = row[j / 32 * 16 + j % 32 - 16] >> 4;
            int64_t col = w->perm ? w->perm[j] : j;
            if (col >= 0 && col < w->k) dst[col] = s * ((float)q - z);
        }
    }
}

/* Row r of an NF4 weight: element i is code[c] * absmax of its block of 64
 * (two codes per byte, the first in the high nibble). */
static void nf4_row(const struct lmc_qweight *w, int64_t r, float *dst) {
    const uint8_t *row = w->data + r * w->row_bytes;
    const float *am = w->absmax + r * (w->k / 64);
    for (int64_t i = 0; i < w->k; i += 2) {
        float m = am[i / 64];
        uint8_t b = row[i / 2];
        dst[i] = w->code[b >> 4] * m;
        dst[i + 1] = w->code[b & 15] * m;
    }
}

/* Row r of a flat NF4 weight (blocks of 64 over the flattened tensor). */
static void nf4_flat_row(const struct lmc_qweight *w, int64_t r, float *dst) {
    int64_t e = w->flat_off + r * w->k, end = e + w->k;
    const uint8_t *p = w->data;
    const float *code = w->code;
    while (e < end) { /* one block of 64 (or the row's part of it) at a time, codes in pairs */
        int64_t be = LMC_MIN(end, (e / 64 + 1) * 64);
        float m = w->absmax[e / 64];
        if (e & 1) {
            *dst++ = code[p[e / 2] & 15] * m;
            e++;
        }
        for (; e + 1 < be; e += 2) {
            uint8_t b = p[e / 2];
            dst[0] = code[b >> 4] * m;
            dst[1] = code[b & 15] * m;
            dst += 2;
        }
        if (e < be) {
            *dst++ = code[p[e / 2] >> 4] * m;
            e++;
        }
    }
}

lmc_status lmc_qweight_init_nf4_flat(struct lmc_qweight *w, const struct lmc_nf4 *q, int64_t n, int64_t k,
                                     lmc_err *err) {
    memset(w, 0, sizeof *w);
    int64_t nk;
    if (n <= 0 || k <= 0 || !lmc_mul_ok(n, k, &nk) || nk != q->numel)
        return lmc_err_set(err, LMC_ERR_FORMAT, "NF4 weight (%lld, %lld): %lld elements stored", (long long)n,
                           (long long)k, (long long)q->numel);
    w->kernel = LMC_QK_NF4;
    w->ggml_type = -1;
    w->nf4_flat = true;
    w->n = n;
    w->k = w->kp = k;
    w->row_bytes = 0;
    uint8_t *codes = malloc((size_t)(nk + 1) / 2);
    w->absmax = malloc((size_t)q->n_blocks * sizeof *w->absmax);
    w->owned = codes;
    w->data = codes;
    if (!codes || !w->absmax) {
        lmc_qweight_free(w);
        return lmc_err_set(err, LMC_ERR_OOM, "NF4 weight: out of memory");
    }
    memcpy(codes, q->packed, (size_t)(nk + 1) / 2);
    memcpy(w->code, q->quant_map, sizeof w->code);
    for (int64_t b = 0; b < q->n_blocks; b++) w->absmax[b] = lmc_nf4_absmax(q, b);
    lmc_status s = lmc_qweight_keep_dq(w, q, err);
    if (s) lmc_qweight_free(w);
    return s;
}

lmc_status lmc_qweight_keep_dq(struct lmc_qweight *w, const struct lmc_nf4 *q, lmc_err *err) {
    if (q->absmax_f || !q->absmax_q || !q->absmax2 || q->blocksize2 <= 0) return LMC_OK;
    int64_t n2 = (q->n_blocks + q->blocksize2 - 1) / q->blocksize2;
    LMC_ASSERT(n2 <= q->n_blocks2);
    size_t fl = (size_t)(256 + n2) * sizeof(float);
    char *p = malloc(fl + (size_t)q->n_blocks);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "NF4 weight: out of memory");
    float *nested = (float *)p;
    memcpy(nested, q->nested_map, 256 * sizeof(float));
    memcpy(nested + 256, q->absmax2, (size_t)n2 * sizeof(float));
    memcpy(p + fl, q->absmax_q, (size_t)q->n_blocks);
    w->dq_owned = p;
    w->dq_nested = nested;
    w->dq_absmax2 = nested + 256;
    w->dq_code = (const uint8_t *)(p + fl);
    w->dq_offset = q->offset;
    w->dq_b0 = 0;
    w->dq_bs2 = q->blocksize2;
    w->dq_n2 = n2;
    return LMC_OK;
}

void lmc_qweight_dequant_rows(const struct lmc_qweight *w, int64_t r0, int64_t nr, float *dst) {
    LMC_ASSERT(r0 >= 0 && nr >= 0 && r0 + nr <= w->n);
    for (int64_t i = 0; i < nr; i++) {
        float *d = dst + i * w->k;
        int64_t r = r0 + i;
        switch (w->kernel) {
        case LMC_QK_U4G:
        case LMC_QK_U8G: groups_row(w, r, d); break;
        case LMC_QK_NF4: w->nf4_flat ? nf4_flat_row(w, r, d) : nf4_row(w, r, d); break;
        case LMC_QK_Q4_0R: /* each pair back in the file's bytes (q4k_repack.c's layout): the same floats */
            for (int64_t b = 0, nb = w->k / 32; b < nb; b += 2) {
                const uint8_t *p = w->data + r * w->row_bytes + 18 * b;
                uint8_t g[36];
                if (b + 1 < nb) {
                    memcpy(g, p + 32, 2), memcpy(g + 2, p, 16), memcpy(g + 18, p + 34, 2), memcpy(g + 20, p + 16, 16);
                } else {
                    memcpy(g, p + 16, 2), memcpy(g + 2, p, 16);
                }
                lmc_ggml_dequantize_row(LMC_GGML_Q4_0, g, d + 32 * b, b + 1 < nb ? 64 : 32);
            }
            break;
        case LMC_QK_Q4_KR: /* each super-block back in the file's bytes: the same floats */
            for (int64_t s = 0; s < w->k / 256; s++) {
                uint8_t g[144];
                lmc_q4kr_unpack_block(w->data + r * w->row_bytes + LMC_Q4KR_BYTES * s, g);
                lmc_ggml_dequantize_row(LMC_GGML_Q4_K, g, d + 256 * s, 256);
            }
            break;
        default: lmc_ggml_dequantize_row(w->ggml_type, w->data + r * w->row_bytes, d, w->k); break;
        }
    }
}

size_t lmc_qweight_bytes_compact(const struct lmc_qweight *w) {
    if (w->kernel == LMC_QK_NF4) {
        int64_t E = w->nf4_flat ? w->flat_off : 0, B0 = E / 64, L = E - B0 * 64 + w->n * w->k, nbl = (L + 63) / 64;
        size_t b = (size_t)(L + 1) / 2;
        if (!w->dq_code) return b + (size_t)nbl * sizeof(float);
        int64_t g = w->dq_b0 + B0, a0 = g / w->dq_bs2, a1 = (g + nbl - 1) / w->dq_bs2;
        return b + (size_t)nbl + (size_t)(256 + a1 - a0 + 1) * sizeof(float);
    }
    if (w->kernel == LMC_QK_U4G || w->kernel == LMC_QK_U8G)
        return (size_t)(w->n * w->row_bytes) + (size_t)(w->n * w->n_groups) * 8 + (size_t)(w->kp / 32) * 4 +
               (w->perm ? (size_t)w->kp * 4 : 0);
    return lmc_qweight_bytes(w);
}
