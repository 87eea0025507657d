/* dtype.h — element types of tensors on disk and in memory, with the
 * float16/bfloat16 <-> float32 conversions (round to nearest even). */
#ifndef LMC_DTYPE_H
#define LMC_DTYPE_H

#include <stdint.h>
#include <string.h>

enum lmc_dtype {
    LMC_DTYPE_F32 = 0,
    LMC_DTYPE_F16,
    LMC_DTYPE_BF16,
    LMC_DTYPE_F64,
    LMC_DTYPE_I64,
    LMC_DTYPE_I32,
    LMC_DTYPE_I16,
    LMC_DTYPE_I8,
    LMC_DTYPE_U8,
    LMC_DTYPE_BOOL,
    LMC_DTYPE_COUNT
};

/* Bytes per element; 0 for an out-of-range value. */
int lmc_dtype_size(enum lmc_dtype t);
/* safetensors spelling ("F32", "BF16", ...). */
const char *lmc_dtype_name(enum lmc_dtype t);
/* Parses a safetensors dtype string; returns -1 if unknown. */
int lmc_dtype_parse(const char *s);

static inline float lmc_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t lmc_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float lmc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t lmc_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (a < 0x38800000u) { /* subnormal or zero in f16 */
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t out = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (out & 1u))) out++;
        return (uint16_t)(sign | out);
    }
    uint32_t out = ((a >> 13) - (112u << 10));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) out++;
    return (uint16_t)(sign | out);
}

#endif
