/* kvquant_layout.h — the byte layout of a compressed KV-cache layer
 * (kvquant.h) and the decoding of one element, written once for the CPU
 * (kvquant.c, attention_kvq.c) and the CUDA kernel (ops/cuda/
 * attention_kvq.cu): plain C arithmetic, __host__ __device__ under nvcc. */
#ifndef LMC_KVQUANT_LAYOUT_H
#define LMC_KVQUANT_LAYOUT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define LMC_KVQ_HD __host__ __device__ __forceinline__
#else
#define LMC_KVQ_HD static inline
#endif

#define LMC_KVQ_G 32 /* = LMC_KVQ_GROUP: q4 and KIVI-2 groups, KIVI's key blocks */
#define LMC_KVQ_Q8_G 64 /* q8: values per f16 scale (2 + 64 bytes per 64 values: 0.516x bf16) */

/* values per scale of a quantized format (fmt: 1 q8, else 32) */
LMC_KVQ_HD int64_t lmc_kvq_group_of(int64_t fmt) { return fmt == 1 ? LMC_KVQ_Q8_G : LMC_KVQ_G; }
#define LMC_KVQ_MAGIC 0x6b7671636163686full
#define LMC_KVQ_HDR 64

/* at the start of a layer's K region */
struct lmc_kvq_hdr {
    uint64_t magic;
    int64_t fmt, ctx, row, residual, len, n_quant;
};

/* byte offsets of a layer's arrays in its K and V regions */
struct lmc_kvq_layout {
    size_t kcodes, kscales, kring, kend;
    size_t vcodes, vscales, vring, vend;
    int64_t rowbytes, ng, ring;
};

LMC_KVQ_HD size_t lmc_kvq_al8(size_t x) { return (x + 7) & ~(size_t)7; }

/* fmt: 1 q8, 2 q4, 3 kivi2 (enum lmc_kvq_fmt) */
LMC_KVQ_HD struct lmc_kvq_layout lmc_kvq_layout_of(int64_t fmt, int64_t ctx, int64_t row,
                                                   int64_t residual) {
    struct lmc_kvq_layout L;
    size_t C = (size_t)ctx, r = (size_t)row;
    L.ng = (row + lmc_kvq_group_of(fmt) - 1) / lmc_kvq_group_of(fmt);
    size_t ng = (size_t)L.ng;
    L.kcodes = LMC_KVQ_HDR;
    L.vcodes = 0;
    L.kring = L.vring = 0;
    L.ring = 0;
    if (fmt == 1) {
        L.rowbytes = row;
        L.kscales = lmc_kvq_al8(L.kcodes + C * r);
        L.kend = L.kscales + C * ng * 2;
        L.vscales = lmc_kvq_al8(C * r);
        L.vend = L.vscales + C * ng * 2;
    } else if (fmt == 2) {
        L.rowbytes = (row * 4 + 7) / 8;
        L.kscales = lmc_kvq_al8(L.kcodes + C * (size_t)L.rowbytes);
        L.kend = L.kscales + C * ng * 4;
        L.vscales = lmc_kvq_al8(C * (size_t)L.rowbytes);
        L.vend = L.vscales + C * ng * 4;
    } else {
        size_t nb = (C + LMC_KVQ_G - 1) / LMC_KVQ_G;
        L.rowbytes = (row * 2 + 7) / 8;
        L.ring = residual + LMC_KVQ_G;
        L.kscales = lmc_kvq_al8(L.kcodes + nb * r * (LMC_KVQ_G / 4));
        L.kring = lmc_kvq_al8(L.kscales + nb * r * 4);
        L.kend = L.kring + (size_t)L.ring * r * 2;
        L.vscales = lmc_kvq_al8(C * (size_t)L.rowbytes);
        L.vring = lmc_kvq_al8(L.vscales + C * ng * 4);
        L.vend = L.vring + (size_t)L.ring * r * 2;
    }
    return L;
}

/* IEEE half bits to float, exactly */
LMC_KVQ_HD float lmc_kvq_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {
        if (m == 0) {
            u = sign;
        } else {
            e = 113;
            while (!(m & 0x400u)) {
                m <<= 1;
                e--;
            }
            u = sign | (e << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (e == 31) {
        u = sign | 0x7f800000u | (m << 13);
    } else {
        u = sign | ((e + 112) << 23) | (m << 13);
    }
    union { uint32_t u; float f; } x;
    x.u = u;
    return x.f;
}

LMC_KVQ_HD int lmc_kvq_code(const uint8_t *codes, int64_t i, int bits) {
    int64_t b = i * bits;
    return (codes[b >> 3] >> (b & 7)) & ((1 << bits) - 1);
}

/* float to IEEE half bits, round to nearest even (core/dtype.h's
 * lmc_f32_to_f16, here for the device too) */
LMC_KVQ_HD uint16_t lmc_kvq_to_f16(float f) {
    union { uint32_t u; float f; } x;
    x.f = f;
    uint32_t u = x.u, sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t out = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (out & 1u))) out++;
        return (uint16_t)(sign | out);
    }
    uint32_t out = (a >> 13) - (112u << 10), rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) out++;
    return (uint16_t)(sign | out);
}

/* the f16 at or above / at or below x (finite x in the f16 range) */
LMC_KVQ_HD uint16_t lmc_kvq_f16_step(uint16_t h, int up) {
    if ((h & 0x7fff) == 0) return up ? 0x0001 : 0x8001;
    if (h & 0x8000) return (uint16_t)(up ? h - 1 : h + 1);
    return (uint16_t)(up ? h + 1 : h - 1);
}
LMC_KVQ_HD uint16_t lmc_kvq_f16_up(float x) {
    uint16_t h = lmc_kvq_to_f16(x);
    return lmc_kvq_f16(h) < x ? lmc_kvq_f16_step(h, 1) : h;
}
LMC_KVQ_HD uint16_t lmc_kvq_f16_down(float x) {
    uint16_t h = lmc_kvq_to_f16(x);
    return lmc_kvq_f16(h) > x ? lmc_kvq_f16_step(h, 0) : h;
}

/* One group of n <= 64 values x[i * xs]: int8 symmetric codes and the f16
 * scale (|x - code * scale| <= scale / 2). */
LMC_KVQ_HD void lmc_kvq_q8_group(const float *x, int64_t xs, int64_t n, int8_t *codes,
                                 uint16_t *scale) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i * xs]));
    uint16_t s16 = lmc_kvq_f16_up(amax / 127.0f);
    float s = lmc_kvq_f16(s16);
    *scale = s16;
    for (int64_t i = 0; i < n; i++) {
        float c = s > 0 ? rintf(x[i * xs] / s) : 0;
        codes[i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, c));
    }
}

/* One group of n <= 32 values x[i * xs]: `bits`-bit asymmetric codes packed
 * from codes[0] (the group's ceil(n * bits / 8) bytes, overwritten), sm[0]
 * the f16 scale, sm[1] the f16 minimum. */
LMC_KVQ_HD void lmc_kvq_asym_group(const float *x, int64_t xs, int64_t n, int bits,
                                   uint8_t *codes, uint16_t *sm) {
    int levels = (1 << bits) - 1;
    float mn = x[0], mx = x[0];
    for (int64_t i = 0; i < n; i++) {
        mn = fminf(mn, x[i * xs]);
        mx = fmaxf(mx, x[i * xs]);
    }
    uint16_t m16 = lmc_kvq_f16_down(mn);
    float m = lmc_kvq_f16(m16);
    uint16_t s16 = lmc_kvq_f16_up((mx - m) / (float)levels);
    float s = lmc_kvq_f16(s16);
    sm[0] = s16;
    sm[1] = m16;
    for (int64_t b = 0; b < (n * bits + 7) / 8; b++) codes[b] = 0;
    for (int64_t i = 0; i < n; i++) {
        float c = s > 0 ? rintf((x[i * xs] - m) / s) : 0;
        int ci = (int)fmaxf(0.0f, fminf((float)levels, c));
        int64_t b = i * bits;
        codes[b >> 3] |= (uint8_t)(ci << (b & 7));
    }
}

/* Element c of position t's key (kv = 0) or value (kv = 1) row; base is
 * the K or V region. */
LMC_KVQ_HD float lmc_kvq_elem(const struct lmc_kvq_hdr *h, const struct lmc_kvq_layout *L,
                              const uint8_t *base, int kv, int64_t t, int64_t c) {
    size_t codes = kv ? L->vcodes : L->kcodes, scales = kv ? L->vscales : L->kscales;
    if (h->fmt == 1) {
        const int8_t *cd = (const int8_t *)(base + codes) + (size_t)t * (size_t)L->rowbytes;
        const uint16_t *sc = (const uint16_t *)(base + scales) + (size_t)t * (size_t)L->ng;
        return (float)cd[c] * lmc_kvq_f16(sc[c / LMC_KVQ_Q8_G]);
    }
    if (h->fmt == 2 || (kv && t < h->n_quant)) {
        int bits = h->fmt == 2 ? 4 : 2;
        const uint8_t *cd = base + codes + (size_t)t * (size_t)L->rowbytes;
        const uint16_t *sm = (const uint16_t *)(base + scales) + (size_t)t * (size_t)L->ng * 2;
        int64_t g = c / LMC_KVQ_G;
        return lmc_kvq_f16(sm[2 * g + 1]) + (float)lmc_kvq_code(cd, c, bits) * lmc_kvq_f16(sm[2 * g]);
    }
    if (t >= h->n_quant) { /* KIVI ring, f16 */
        const uint16_t *ring = (const uint16_t *)(base + (kv ? L->vring : L->kring));
        return lmc_kvq_f16(ring[(size_t)(t % L->ring) * (size_t)h->row + (size_t)c]);
    }
    /* KIVI key: per channel over the block of t */
    int64_t blk = t / LMC_KVQ_G, tt = t % LMC_KVQ_G;
    const uint8_t *cd = base + codes + (size_t)(blk * h->row + c) * (LMC_KVQ_G / 4);
    const uint16_t *sm = (const uint16_t *)(base + scales) + (size_t)(blk * h->row + c) * 2;
    return lmc_kvq_f16(sm[1]) + (float)lmc_kvq_code(cd, tt, 2) * lmc_kvq_f16(sm[0]);
}

/* ---- q8 / q4 in the paged pool (attention_paged_kvq.c): a token's K or
 * V row in one slot, f16 scales (q8: one per 64 values; q4: scale and
 * minimum per 32) then the codes (q8 int8, q4 4-bit), padded to 8 bytes. */
LMC_KVQ_HD size_t lmc_kvq_paged_scale_bytes(int64_t fmt, int64_t row) {
    size_t ng = (size_t)((row + lmc_kvq_group_of(fmt) - 1) / lmc_kvq_group_of(fmt));
    return fmt == 1 ? 2 * ng : 4 * ng;
}
/* value c of a q8 (fmt 1) or q4 (fmt 2) slot */
LMC_KVQ_HD float lmc_kvq_paged_elem(int64_t fmt, const uint8_t *slot, int64_t row, int64_t c) {
    const uint16_t *sc = (const uint16_t *)slot;
    const uint8_t *codes = slot + lmc_kvq_paged_scale_bytes(fmt, row);
    int64_t g = c / lmc_kvq_group_of(fmt);
    if (fmt == 1) return (float)((const int8_t *)codes)[c] * lmc_kvq_f16(sc[g]);
    return lmc_kvq_f16(sc[2 * g + 1]) + (float)lmc_kvq_code(codes, c, 4) * lmc_kvq_f16(sc[2 * g]);
}

/* ---- KIVI-2 in the paged pool (attention_paged_kivi.c): one slot of
 * lmc_kvq_kivi_slot_bytes(row) bytes per token for K and for V. A value
 * slot: (scale, min) f16 per 32 channels, then the 2-bit codes (row / 4
 * bytes). Keys: the 32 slots of a key group (positions 32g..32g+31 of a
 * sequence, inside one block since the block size is a multiple of 32)
 * hold together (scale, min) f16 per channel (4 * row bytes), then per
 * channel 8 bytes of 2-bit codes, code j for position 32g + j. */
LMC_KVQ_HD size_t lmc_kvq_kivi_slot_bytes(int64_t row) {
    size_t r = (size_t)row, ng = (r + LMC_KVQ_G - 1) / LMC_KVQ_G;
    size_t k = (12 * r + LMC_KVQ_G - 1) / LMC_KVQ_G, v = 4 * ng + (r + 3) / 4;
    return lmc_kvq_al8(k > v ? k : v);
}
/* key channel c of position index j (0..31) of a key group at `grp` */
LMC_KVQ_HD float lmc_kvq_kivi_key(const uint8_t *grp, int64_t row, int64_t c, int64_t j) {
    const uint16_t *sm = (const uint16_t *)grp + 2 * c;
    const uint8_t *cd = grp + 4 * (size_t)row + 8 * (size_t)c;
    return lmc_kvq_f16(sm[1]) + (float)lmc_kvq_code(cd, j, 2) * lmc_kvq_f16(sm[0]);
}
/* value channel c of a value slot */
LMC_KVQ_HD float lmc_kvq_kivi_val(const uint8_t *slot, int64_t row, int64_t c) {
    int64_t ng = (row + LMC_KVQ_G - 1) / LMC_KVQ_G, g = c / LMC_KVQ_G;
    const uint16_t *sm = (const uint16_t *)slot;
    return lmc_kvq_f16(sm[2 * g + 1]) + (float)lmc_kvq_code(slot + 4 * ng, c, 2) * lmc_kvq_f16(sm[2 * g]);
}

#endif
