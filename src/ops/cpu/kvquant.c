/* kvquant.c — the compressed KV-cache formats (see kvquant.h): group
 * quantizers, the per-layer layout inside a 2-byte-per-value cache region,
 * storing rows (with KIVI's residual ring and block quantization of keys
 * per channel) and decoding one position's rows. */
#include "ops/cpu/kvquant.h"
#include "ops/cpu/kvquant_layout.h"
#include "core/core.h"
#include "core/dtype.h"

#include <math.h>
#include <string.h>

#define G LMC_KVQ_GROUP

const char *lmc_kvq_name(enum lmc_kvq_fmt f) {
    switch (f) {
    case LMC_KVQ_Q8: return "q8";
    case LMC_KVQ_Q4: return "q4";
    case LMC_KVQ_KIVI2: return "kivi2";
    case LMC_KVQ_F16: return "f16";
    case LMC_KVQ_BF16: return "bf16";
    default: return NULL;
    }
}

enum lmc_kvq_fmt lmc_kvq_parse(const char *s) {
    for (int f = LMC_KVQ_Q8; f <= LMC_KVQ_BF16; f++)
        if (!strcmp(s, lmc_kvq_name((enum lmc_kvq_fmt)f))) return (enum lmc_kvq_fmt)f;
    return LMC_KVQ_NONE;
}

static int64_t ngroups(int64_t n) { return (n + G - 1) / G; }

double lmc_kvq_bytes_per_token(enum lmc_kvq_fmt f, int64_t row) {
    double ng = (double)ngroups(row);
    switch (f) {
    case LMC_KVQ_Q8: return 2 * ((double)row + 2 * (double)((row + LMC_KVQ_Q8_G - 1) / LMC_KVQ_Q8_G));
    case LMC_KVQ_Q4: return 2 * ((double)((row * 4 + 7) / 8) + 4 * ng);
    case LMC_KVQ_KIVI2: /* keys: 2 bits + (scale, min) per channel per 32 tokens; values per token */
        return (double)row * 2 / 8 + (double)row * 4 / G + (double)((row * 2 + 7) / 8) + 4 * ng;
    default: return 4.0 * (double)row; /* f16 (and bf16) */
    }
}

void lmc_kvq_q8_quant(const float *x, int64_t n, int8_t *codes, uint16_t *scales) {
    for (int64_t g0 = 0, gi = 0; g0 < n; g0 += LMC_KVQ_Q8_G, gi++)
        lmc_kvq_q8_group(x + g0, 1, LMC_MIN(LMC_KVQ_Q8_G, n - g0), codes + g0, scales + gi);
}

void lmc_kvq_q8_dequant(const int8_t *codes, const uint16_t *scales, int64_t n, float *x) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)codes[i] * lmc_f16_to_f32(scales[i / LMC_KVQ_Q8_G]);
}


void lmc_kvq_asym_quant(const float *x, int64_t n, int bits, uint8_t *codes, uint16_t *sm) {
    LMC_ASSERT(bits == 2 || bits == 4);
    for (int64_t g0 = 0, gi = 0; g0 < n; g0 += G, gi++) /* groups start on byte boundaries */
        lmc_kvq_asym_group(x + g0, 1, LMC_MIN(G, n - g0), bits, codes + g0 * bits / 8, sm + 2 * gi);
}

void lmc_kvq_asym_dequant(const uint8_t *codes, const uint16_t *sm, int64_t n, int bits, float *x) {
    for (int64_t i = 0; i < n; i++) {
        int64_t gi = i / G;
        x[i] = lmc_f16_to_f32(sm[2 * gi + 1]) + (float)lmc_kvq_code(codes, i, bits) * lmc_f16_to_f32(sm[2 * gi]);
    }
}

size_t lmc_kvq_layer_bytes(enum lmc_kvq_fmt f, int64_t ctx, int64_t row, int64_t residual) {
    if (f < LMC_KVQ_Q8 || f > LMC_KVQ_KIVI2 || ctx <= 0 || row <= 0 || residual < 0 || residual > 4096) return 0;
    struct lmc_kvq_layout L = lmc_kvq_layout_of(f, ctx, row, residual);
    return (LMC_MAX(L.kend, L.vend) + 63) & ~(size_t)63;
}

lmc_status lmc_kvq_layer_init(void *kregion, void *vregion, enum lmc_kvq_fmt f, int64_t ctx,
                              int64_t row, int64_t residual, size_t have, lmc_err *err) {
    (void)vregion;
    if (f < LMC_KVQ_Q8 || f > LMC_KVQ_KIVI2)
        return lmc_err_set(err, LMC_ERR_ARG, "KV cache format %d unknown", (int)f);
    if (ctx <= 0 || row <= 0) return lmc_err_set(err, LMC_ERR_ARG, "KV cache: empty layer");
    if (f == LMC_KVQ_KIVI2 && (residual < 0 || residual > 4096))
        return lmc_err_set(err, LMC_ERR_ARG, "KIVI residual length %lld out of range (0..4096)",
                           (long long)residual);
    struct lmc_kvq_layout L = lmc_kvq_layout_of(f, ctx, row, residual);
    if (L.kend > have || L.vend > have)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "KV cache format %s needs %zu bytes per layer, the %lld-position cache "
                           "has %zu (a longer context or a shorter residual)",
                           lmc_kvq_name(f), LMC_MAX(L.kend, L.vend), (long long)ctx, have);
    struct lmc_kvq_hdr h = {LMC_KVQ_MAGIC, f, ctx, row, f == LMC_KVQ_KIVI2 ? residual : 0, 0, 0};
    memcpy(kregion, &h, sizeof h);
    return LMC_OK;
}

static struct lmc_kvq_hdr *hdr_of(const void *kregion) {
    struct lmc_kvq_hdr *h = (struct lmc_kvq_hdr *)kregion;
    LMC_ASSERT(h->magic == LMC_KVQ_MAGIC);
    return h;
}

int64_t lmc_kvq_layer_len(const void *kregion) { return hdr_of(kregion)->len; }

#define AT(base, off, type) ((type *)((char *)(base) + (off)))

static void f32_to_f16_row(const float *x, int64_t n, uint16_t *y) {
    for (int64_t i = 0; i < n; i++) y[i] = lmc_kvq_to_f16(x[i]);
}

/* KIVI: quantizes the block of G positions starting at h->n_quant out of the ring. */
static void kivi_quant_block(struct lmc_kvq_hdr *h, const struct lmc_kvq_layout *L, void *kr, void *vr) {
    int64_t r = h->row, b0 = h->n_quant, blk = b0 / G;
    uint16_t *kring = AT(kr, L->kring, uint16_t), *vring = AT(vr, L->vring, uint16_t);
    float tmp[G], vrow[r];
    for (int64_t c = 0; c < r; c++) {
        for (int64_t t = 0; t < G; t++) tmp[t] = lmc_f16_to_f32(kring[((b0 + t) % L->ring) * r + c]);
        lmc_kvq_asym_quant(tmp, G, 2, AT(kr, L->kcodes, uint8_t) + (size_t)(blk * r + c) * (G / 4),
                           AT(kr, L->kscales, uint16_t) + (size_t)(blk * r + c) * 2);
    }
    for (int64_t t = b0; t < b0 + G; t++) {
        for (int64_t c = 0; c < r; c++) vrow[c] = lmc_f16_to_f32(vring[(t % L->ring) * r + c]);
        lmc_kvq_asym_quant(vrow, r, 2, AT(vr, L->vcodes, uint8_t) + (size_t)t * (size_t)L->rowbytes,
                           AT(vr, L->vscales, uint16_t) + (size_t)t * (size_t)L->ng * 2);
    }
    h->n_quant += G;
}

/* Decodes position t: key row into k and value row into v (either NULL). */
static void decode(const struct lmc_kvq_hdr *h, const struct lmc_kvq_layout *L, const void *kr, const void *vr,
                   int64_t t, float *k, float *v) {
    int64_t r = h->row;
    size_t rb = (size_t)L->rowbytes, sg = (size_t)L->ng;
    switch ((enum lmc_kvq_fmt)h->fmt) {
    case LMC_KVQ_Q8:
        if (k) lmc_kvq_q8_dequant(AT(kr, L->kcodes, int8_t) + (size_t)t * rb,
                                  AT(kr, L->kscales, uint16_t) + (size_t)t * sg, r, k);
        if (v) lmc_kvq_q8_dequant(AT(vr, L->vcodes, int8_t) + (size_t)t * rb,
                                  AT(vr, L->vscales, uint16_t) + (size_t)t * sg, r, v);
        return;
    case LMC_KVQ_Q4:
        if (k) lmc_kvq_asym_dequant(AT(kr, L->kcodes, uint8_t) + (size_t)t * rb,
                                    AT(kr, L->kscales, uint16_t) + (size_t)t * sg * 2, r, 4, k);
        if (v) lmc_kvq_asym_dequant(AT(vr, L->vcodes, uint8_t) + (size_t)t * rb,
                                    AT(vr, L->vscales, uint16_t) + (size_t)t * sg * 2, r, 4, v);
        return;
    default:
        break;
    }
    if (t >= h->n_quant) { /* in the ring, f16 */
        const uint16_t *kring = AT(kr, L->kring, const uint16_t), *vring = AT(vr, L->vring, const uint16_t);
        size_t slot = (size_t)(t % L->ring) * (size_t)r;
        for (int64_t c = 0; c < r; c++) {
            if (k) k[c] = lmc_f16_to_f32(kring[slot + c]);
            if (v) v[c] = lmc_f16_to_f32(vring[slot + c]);
        }
        return;
    }
    if (k) {
        int64_t blk = t / G, tt = t % G;
        const uint8_t *codes = AT(kr, L->kcodes, const uint8_t) + (size_t)(blk * r) * (G / 4);
        const uint16_t *sm = AT(kr, L->kscales, const uint16_t) + (size_t)(blk * r) * 2;
        for (int64_t c = 0; c < r; c++)
            k[c] = lmc_f16_to_f32(sm[2 * c + 1]) +
                   (float)lmc_kvq_code(codes + c * (G / 4), tt, 2) * lmc_f16_to_f32(sm[2 * c]);
    }
    if (v) lmc_kvq_asym_dequant(AT(vr, L->vcodes, const uint8_t) + (size_t)t * rb,
                                AT(vr, L->vscales, const uint16_t) + (size_t)t * sg * 2, r, 2, v);
}

void lmc_kvq_layer_row(const void *kregion, const void *vregion, int64_t t, float *k, float *v) {
    const struct lmc_kvq_hdr *h = hdr_of(kregion);
    LMC_ASSERT(t >= 0 && t < h->len);
    struct lmc_kvq_layout L = lmc_kvq_layout_of((enum lmc_kvq_fmt)h->fmt, h->ctx, h->row, h->residual);
    decode(h, &L, kregion, vregion, t, k, v);
}

void lmc_kvq_layer_store(void *kregion, void *vregion, const float *k, const float *v, int64_t n,
                         int64_t pos) {
    struct lmc_kvq_hdr *h = hdr_of(kregion);
    LMC_ASSERT(pos >= 0 && pos <= h->len && pos + n <= h->ctx);
    struct lmc_kvq_layout L = lmc_kvq_layout_of((enum lmc_kvq_fmt)h->fmt, h->ctx, h->row, h->residual);
    int64_t r = h->row;
    size_t rb = (size_t)L.rowbytes, sg = (size_t)L.ng;
    if (h->fmt == LMC_KVQ_KIVI2 && pos < h->n_quant) {
        /* rollback into a quantized block: its kept positions return to the
         * ring (dequantized: the values they had) */
        int64_t b0 = pos / G * G;
        float kk[r], vv[r];
        uint16_t *kring = AT(kregion, L.kring, uint16_t), *vring = AT(vregion, L.vring, uint16_t);
        for (int64_t t = b0; t < pos; t++) {
            decode(h, &L, kregion, vregion, t, kk, vv);
            f32_to_f16_row(kk, r, kring + (size_t)(t % L.ring) * (size_t)r);
            f32_to_f16_row(vv, r, vring + (size_t)(t % L.ring) * (size_t)r);
        }
        h->n_quant = b0;
    }
    h->len = pos;
    for (int64_t i = 0; i < n; i++, h->len++) {
        const float *ki = k + i * r, *vi = v + i * r;
        size_t t = (size_t)h->len;
        switch ((enum lmc_kvq_fmt)h->fmt) {
        case LMC_KVQ_Q8:
            lmc_kvq_q8_quant(ki, r, AT(kregion, L.kcodes, int8_t) + t * rb, AT(kregion, L.kscales, uint16_t) + t * sg);
            lmc_kvq_q8_quant(vi, r, AT(vregion, L.vcodes, int8_t) + t * rb, AT(vregion, L.vscales, uint16_t) + t * sg);
            break;
        case LMC_KVQ_Q4:
            lmc_kvq_asym_quant(ki, r, 4, AT(kregion, L.kcodes, uint8_t) + t * rb,
                               AT(kregion, L.kscales, uint16_t) + t * sg * 2);
            lmc_kvq_asym_quant(vi, r, 4, AT(vregion, L.vcodes, uint8_t) + t * rb,
                               AT(vregion, L.vscales, uint16_t) + t * sg * 2);
            break;
        default:
            if (h->len - h->n_quant == L.ring) kivi_quant_block(h, &L, kregion, vregion);
            f32_to_f16_row(ki, r, AT(kregion, L.kring, uint16_t) + (t % (size_t)L.ring) * (size_t)r);
            f32_to_f16_row(vi, r, AT(vregion, L.vring, uint16_t) + (t % (size_t)L.ring) * (size_t)r);
            break;
        }
    }
}

_Static_assert(LMC_KVQ_G == LMC_KVQ_GROUP, "one group size");
_Static_assert(sizeof(struct lmc_kvq_hdr) <= LMC_KVQ_HDR, "header fits its bytes");
