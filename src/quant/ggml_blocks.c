/* ggml_blocks.c — the GGUF (ggml) block formats: the type table, one
 * block's packing to and from integers (struct lmc_qblock), dequantization
 * of rows, and the quantizers (llama.cpp's reference rules for Q8_0, Q4_0,
 * Q4_1, Q5_0, Q5_1; a min/max rule for the K-quants' sub-blocks). Layouts
 * follow ggml's block_q* structs: little-endian fp16 scales first (Q6_K's
 * last), codes after. */
#include "quant/quant.h"
#include "core/core.h"
#include "core/dtype.h"

#include <math.h>
#include <string.h>
#include <strings.h>

static const struct {
    int type;
    const char *name;
    int64_t block, bytes;
} types[] = {
    {LMC_GGML_F32, "F32", 1, 4},       {LMC_GGML_F16, "F16", 1, 2},       {LMC_GGML_Q4_0, "Q4_0", 32, 18},
    {LMC_GGML_Q4_1, "Q4_1", 32, 20},   {LMC_GGML_Q5_0, "Q5_0", 32, 22},   {LMC_GGML_Q5_1, "Q5_1", 32, 24},
    {LMC_GGML_Q8_0, "Q8_0", 32, 34},   {LMC_GGML_Q4_K, "Q4_K", 256, 144}, {LMC_GGML_Q5_K, "Q5_K", 256, 176},
    {LMC_GGML_Q6_K, "Q6_K", 256, 210}, {LMC_GGML_I8, "I8", 1, 1},         {LMC_GGML_I16, "I16", 1, 2},
    {LMC_GGML_I32, "I32", 1, 4},       {LMC_GGML_I64, "I64", 1, 8},       {LMC_GGML_F64, "F64", 1, 8},
    {LMC_GGML_BF16, "BF16", 1, 2},
};

bool lmc_ggml_type_info(int type, int64_t *block_elems, int64_t *block_bytes) {
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].type == type) {
            if (block_elems) *block_elems = types[i].block;
            if (block_bytes) *block_bytes = types[i].bytes;
            return true;
        }
    return false;
}

const char *lmc_ggml_type_name(int type) {
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].type == type) return types[i].name;
    return NULL;
}

int lmc_ggml_type_parse(const char *s) {
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!strcasecmp(s, types[i].name)) return types[i].type;
    return -1;
}

bool lmc_ggml_row_bytes(int type, int64_t n, int64_t *bytes) {
    int64_t be, bb;
    if (!lmc_ggml_type_info(type, &be, &bb) || n < 0 || n % be) return false;
    return lmc_mul_ok(n / be, bb, bytes);
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Q4_K/Q5_K's 12 bytes of eight 6-bit scales and eight 6-bit mins. */
void lmc_ggml_kscales_unpack(const uint8_t *s, int16_t *sc, int16_t *mn) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = s[j] & 63;
            mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (int16_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
            mn[j] = (int16_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
        }
    }
}
static void kscales_pack(const int16_t *sc, const int16_t *mn, uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = sc[j] & 63, lm = mn[j] & 63;
        if (j < 4) {
            s[j] |= (uint8_t)ls;
            s[j + 4] |= (uint8_t)lm;
        } else {
            s[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls >> 4) << 6);
            s[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
}

void lmc_ggml_unpack_block(int type, const void *src, struct lmc_qblock *b) {
    const uint8_t *p = src;
    memset(b, 0, sizeof *b);
    switch (type) {
    case LMC_GGML_Q8_0:
        b->d = rd16(p);
        for (int j = 0; j < 32; j++) b->q[j] = (int8_t)p[2 + j];
        break;
    case LMC_GGML_Q4_0:
    case LMC_GGML_Q4_1: {
        int o = type == LMC_GGML_Q4_1 ? 4 : 2;
        b->d = rd16(p);
        if (type == LMC_GGML_Q4_1) b->dm = rd16(p + 2);
        for (int j = 0; j < 16; j++) {
            b->q[j] = p[o + j] & 0xF;
            b->q[j + 16] = p[o + j] >> 4;
        }
        break;
    }
    case LMC_GGML_Q5_0:
    case LMC_GGML_Q5_1: {
        int o = type == LMC_GGML_Q5_1 ? 4 : 2;
        b->d = rd16(p);
        if (type == LMC_GGML_Q5_1) b->dm = rd16(p + 2);
        uint32_t qh = (uint32_t)p[o] | (uint32_t)p[o + 1] << 8 | (uint32_t)p[o + 2] << 16 | (uint32_t)p[o + 3] << 24;
        const uint8_t *qs = p + o + 4;
        for (int j = 0; j < 16; j++) {
            b->q[j] = (int16_t)((qs[j] & 0xF) | (((qh >> j) & 1) << 4));
            b->q[j + 16] = (int16_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
        break;
    }
    case LMC_GGML_Q4_K:
    case LMC_GGML_Q5_K: {
        b->d = rd16(p);
        b->dm = rd16(p + 2);
        lmc_ggml_kscales_unpack(p + 4, b->sc, b->mn);
        bool five = type == LMC_GGML_Q5_K;
        const uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                uint8_t v = qs[c * 32 + l];
                b->q[c * 64 + l] = v & 0xF;
                b->q[c * 64 + 32 + l] = v >> 4;
                if (five) {
                    b->q[c * 64 + l] |= (int16_t)(((qh[l] >> (2 * c)) & 1) << 4);
                    b->q[c * 64 + 32 + l] |= (int16_t)(((qh[l] >> (2 * c + 1)) & 1) << 4);
                }
            }
        break;
    }
    case LMC_GGML_Q6_K: {
        const uint8_t *ql = p, *qh = p + 128;
        for (int j = 0; j < 16; j++) b->sc[j] = (int8_t)p[192 + j];
        b->d = rd16(p + 208);
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
                int16_t *q = b->q + 128 * h;
                q[l] = (int16_t)((L[l] & 0xF) | ((H[l] & 3) << 4));
                q[l + 32] = (int16_t)((L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4));
                q[l + 64] = (int16_t)((L[l] >> 4) | (((H[l] >> 4) & 3) << 4));
                q[l + 96] = (int16_t)((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4));
            }
        break;
    }
    default:
        LMC_ASSERT(0);
    }
}

void lmc_ggml_pack_block(int type, const struct lmc_qblock *b, void *dst) {
    uint8_t *p = dst;
    switch (type) {
    case LMC_GGML_Q8_0:
        wr16(p, b->d);
        for (int j = 0; j < 32; j++) p[2 + j] = (uint8_t)(int8_t)b->q[j];
        break;
    case LMC_GGML_Q4_0:
    case LMC_GGML_Q4_1: {
        int o = type == LMC_GGML_Q4_1 ? 4 : 2;
        wr16(p, b->d);
        if (type == LMC_GGML_Q4_1) wr16(p + 2, b->dm);
        for (int j = 0; j < 16; j++) p[o + j] = (uint8_t)((b->q[j] & 0xF) | (b->q[j + 16] & 0xF) << 4);
        break;
    }
    case LMC_GGML_Q5_0:
    case LMC_GGML_Q5_1: {
        int o = type == LMC_GGML_Q5_1 ? 4 : 2;
        wr16(p, b->d);
        if (type == LMC_GGML_Q5_1) wr16(p + 2, b->dm);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            qh |= (uint32_t)((b->q[j] >> 4) & 1) << j;
            qh |= (uint32_t)((b->q[j + 16] >> 4) & 1) << (j + 16);
            p[o + 4 + j] = (uint8_t)((b->q[j] & 0xF) | (b->q[j + 16] & 0xF) << 4);
        }
        for (int i = 0; i < 4; i++) p[o + i] = (uint8_t)(qh >> (8 * i));
        break;
    }
    case LMC_GGML_Q4_K:
    case LMC_GGML_Q5_K: {
        wr16(p, b->d);
        wr16(p + 2, b->dm);
        kscales_pack(b->sc, b->mn, p + 4);
        bool five = type == LMC_GGML_Q5_K;
        uint8_t *qh = p + 16, *qs = p + (five ? 48 : 16);
        if (five) memset(qh, 0, 32);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = b->q[c * 64 + l], hi = b->q[c * 64 + 32 + l];
                qs[c * 32 + l] = (uint8_t)((lo & 0xF) | (hi & 0xF) << 4);
                if (five) qh[l] |= (uint8_t)((((lo >> 4) & 1) << (2 * c)) | (((hi >> 4) & 1) << (2 * c + 1)));
            }
        break;
    }
    case LMC_GGML_Q6_K: {
        uint8_t *ql = p, *qh = p + 128;
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int16_t *q = b->q + 128 * h;
                uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
                L[l] = (uint8_t)((q[l] & 0xF) | (q[l + 64] & 0xF) << 4);
                L[l + 32] = (uint8_t)((q[l + 32] & 0xF) | (q[l + 96] & 0xF) << 4);
                H[l] = (uint8_t)(((q[l] >> 4) & 3) | ((q[l + 32] >> 4) & 3) << 2 | ((q[l + 64] >> 4) & 3) << 4 |
                                 ((q[l + 96] >> 4) & 3) << 6);
            }
        for (int j = 0; j < 16; j++) p[192 + j] = (uint8_t)(int8_t)b->sc[j];
        wr16(p + 208, b->d);
        break;
    }
    default:
        LMC_ASSERT(0);
    }
}

/* One unpacked block to floats (the formats' dequantization rules). */
static void block_to_float(int type, const struct lmc_qblock *b, float *y) {
    float d = lmc_f16_to_f32(b->d), m = lmc_f16_to_f32(b->dm);
    switch (type) {
    case LMC_GGML_Q8_0:
        for (int j = 0; j < 32; j++) y[j] = d * (float)b->q[j];
        break;
    case LMC_GGML_Q4_0:
        for (int j = 0; j < 32; j++) y[j] = d * (float)(b->q[j] - 8);
        break;
    case LMC_GGML_Q5_0:
        for (int j = 0; j < 32; j++) y[j] = d * (float)(b->q[j] - 16);
        break;
    case LMC_GGML_Q4_1:
    case LMC_GGML_Q5_1:
        for (int j = 0; j < 32; j++) y[j] = d * (float)b->q[j] + m;
        break;
    case LMC_GGML_Q4_K:
    case LMC_GGML_Q5_K:
        for (int j = 0; j < 256; j++) {
            float d1 = d * (float)b->sc[j / 32], m1 = m * (float)b->mn[j / 32];
            y[j] = d1 * (float)b->q[j] - m1;
        }
        break;
    case LMC_GGML_Q6_K:
        for (int j = 0; j < 256; j++) y[j] = d * (float)b->sc[j / 16] * (float)(b->q[j] - 32);
        break;
    default:
        LMC_ASSERT(0);
    }
}

void lmc_ggml_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    int64_t be, bb;
    LMC_ASSERT(lmc_ggml_type_info(type, &be, &bb) && n % be == 0);
    for (int64_t i = 0; i < n; i++) { /* plain types; unaligned reads */
        if (be != 1) break;
        const uint8_t *e = p + i * bb;
        switch (type) {
        case LMC_GGML_F32: memcpy(&dst[i], e, 4); break;
        case LMC_GGML_F16: dst[i] = lmc_f16_to_f32(rd16(e)); break;
        case LMC_GGML_BF16: dst[i] = lmc_bf16_to_f32(rd16(e)); break;
        case LMC_GGML_F64: { double v; memcpy(&v, e, 8); dst[i] = (float)v; break; }
        case LMC_GGML_I8: dst[i] = (float)(int8_t)e[0]; break;
        case LMC_GGML_I16: dst[i] = (float)(int16_t)rd16(e); break;
        case LMC_GGML_I32: { int32_t v; memcpy(&v, e, 4); dst[i] = (float)v; break; }
        case LMC_GGML_I64: { int64_t v; memcpy(&v, e, 8); dst[i] = (float)v; break; }
        }
    }
    if (be == 1) return;
    struct lmc_qblock b;
    for (int64_t i = 0; i < n / be; i++) {
        lmc_ggml_unpack_block(type, p + i * bb, &b);
        block_to_float(type, &b, dst + i * be);
    }
}

static int nearest(float x) { return (int)lrintf(x); }

/* The value of largest magnitude, with its sign. */
static float signed_absmax(const float *x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void quantize_block(int type, const float *x, struct lmc_qblock *b) {
    memset(b, 0, sizeof *b);
    switch (type) {
    case LMC_GGML_Q8_0: {
        float amax = fabsf(signed_absmax(x, 32)), d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        b->d = lmc_f32_to_f16(d);
        for (int j = 0; j < 32; j++) b->q[j] = (int16_t)roundf(x[j] * id);
        break;
    }
    case LMC_GGML_Q4_0:
    case LMC_GGML_Q5_0: {
        bool five = type == LMC_GGML_Q5_0;
        float d = signed_absmax(x, 32) / (five ? -16.0f : -8.0f), id = d ? 1.0f / d : 0.0f;
        b->d = lmc_f32_to_f16(d);
        for (int j = 0; j < 32; j++) {
            int v = (int8_t)(x[j] * id + (five ? 16.5f : 8.5f));
            b->q[j] = (int16_t)(v > (five ? 31 : 15) ? (five ? 31 : 15) : v);
        }
        break;
    }
    case LMC_GGML_Q4_1:
    case LMC_GGML_Q5_1: {
        int maxq = type == LMC_GGML_Q5_1 ? 31 : 15;
        float lo = x[0], hi = x[0];
        for (int j = 1; j < 32; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
        }
        float d = (hi - lo) / (float)maxq, id = d ? 1.0f / d : 0.0f;
        b->d = lmc_f32_to_f16(d);
        b->dm = lmc_f32_to_f16(lo);
        for (int j = 0; j < 32; j++) {
            int v = (uint8_t)((x[j] - lo) * id + 0.5f);
            b->q[j] = (int16_t)(v > maxq ? maxq : v);
        }
        break;
    }
    case LMC_GGML_Q4_K:
    case LMC_GGML_Q5_K: {
        int maxq = type == LMC_GGML_Q5_K ? 31 : 15;
        float sc[8], mn[8], msc = 0, mmn = 0;
        for (int s = 0; s < 8; s++) {
            float lo = 0, hi = x[32 * s];
            for (int j = 0; j < 32; j++) {
                lo = fminf(lo, x[32 * s + j]);
                hi = fmaxf(hi, x[32 * s + j]);
            }
            sc[s] = (hi - lo) / (float)maxq;
            mn[s] = -lo;
            msc = fmaxf(msc, sc[s]);
            mmn = fmaxf(mmn, mn[s]);
        }
        b->d = lmc_f32_to_f16(msc / 63.0f);
        b->dm = lmc_f32_to_f16(mmn / 63.0f);
        float d = lmc_f16_to_f32(b->d), dmin = lmc_f16_to_f32(b->dm);
        for (int s = 0; s < 8; s++) {
            int ls = d > 0 ? nearest(sc[s] / d) : 0, lm = dmin > 0 ? nearest(mn[s] / dmin) : 0;
            b->sc[s] = (int16_t)(ls < 0 ? 0 : ls > 63 ? 63 : ls);
            b->mn[s] = (int16_t)(lm < 0 ? 0 : lm > 63 ? 63 : lm);
            float d1 = d * (float)b->sc[s], m1 = dmin * (float)b->mn[s];
            for (int j = 0; j < 32; j++) {
                int v = d1 > 0 ? nearest((x[32 * s + j] + m1) / d1) : 0;
                b->q[32 * s + j] = (int16_t)(v < 0 ? 0 : v > maxq ? maxq : v);
            }
        }
        break;
    }
    case LMC_GGML_Q6_K: {
        float sc[16], amax = 0, max = 0;
        for (int s = 0; s < 16; s++) {
            sc[s] = signed_absmax(x + 16 * s, 16) / -32.0f;
            if (fabsf(sc[s]) > amax) {
                amax = fabsf(sc[s]);
                max = sc[s];
            }
        }
        float iscale = max != 0 ? -128.0f / max : 0.0f;
        b->d = lmc_f32_to_f16(iscale != 0 ? 1.0f / iscale : 0.0f);
        float d = lmc_f16_to_f32(b->d);
        for (int s = 0; s < 16; s++) {
            int ls = nearest(iscale * sc[s]);
            b->sc[s] = (int16_t)(ls < -128 ? -128 : ls > 127 ? 127 : ls);
            float d1 = d * (float)b->sc[s];
            for (int j = 0; j < 16; j++) {
                int v = d1 != 0 ? nearest(x[16 * s + j] / d1) + 32 : 32;
                b->q[16 * s + j] = (int16_t)(v < 0 ? 0 : v > 63 ? 63 : v);
            }
        }
        break;
    }
    default:
        LMC_ASSERT(0);
    }
}

bool lmc_ggml_quantize_row(int type, const float *src, void *dst, int64_t n) {
    int64_t be, bb;
    if (!lmc_ggml_type_info(type, &be, &bb) || n % be) return false;
    uint8_t *p = dst;
    if (type == LMC_GGML_F32) {
        memcpy(dst, src, (size_t)n * 4);
        return true;
    }
    if (type == LMC_GGML_F16 || type == LMC_GGML_BF16) {
        for (int64_t i = 0; i < n; i++)
            wr16(p + 2 * i, type == LMC_GGML_F16 ? lmc_f32_to_f16(src[i]) : lmc_f32_to_bf16(src[i]));
        return true;
    }
    if (be == 1) return false;
    struct lmc_qblock b;
    for (int64_t i = 0; i < n / be; i++) {
        quantize_block(type, src + i * be, &b);
        lmc_ggml_pack_block(type, &b, p + i * bb);
    }
    return true;
}
