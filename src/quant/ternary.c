/* ternary.c — BitNet b1.58 ternary weights: absmean quantization to
 * {-1, 0, 1} with one scale per tensor, and transformers' 2-bit packing
 * (four rows per byte, row j*R + r in bits 2j of packed row r). */
#include "quant/quant.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float lmc_ternary_quantize(const float *w, int64_t numel, int8_t *q) {
    double s = 0;
    for (int64_t i = 0; i < numel; i++) s += fabs((double)w[i]);
    float scale = numel > 0 ? (float)(s / (double)numel) : 0.0f;
    if (scale < 1e-5f) scale = 1e-5f;
    float inv = 1.0f / scale; /* BitNet's weight_quant: round(w * (1 / mean|w|)) */
    for (int64_t i = 0; i < numel; i++) {
        float v = nearbyintf(w[i] * inv);
        q[i] = (int8_t)(v < -1 ? -1 : v > 1 ? 1 : v);
    }
    return scale;
}

lmc_status lmc_ternary_pack(const int8_t *q, int64_t n, int64_t k, uint8_t **packed, lmc_err *err) {
    *packed = NULL;
    if (n <= 0 || k <= 0 || n % 4)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "ternary packing needs a row count divisible by 4 (got %lld)",
                           (long long)n);
    int64_t r = n / 4;
    uint8_t *p = calloc((size_t)(r * k), 1);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "ternary packing: out of memory");
    for (int j = 0; j < 4; j++)
        for (int64_t i = 0; i < r; i++)
            for (int64_t c = 0; c < k; c++) {
                int v = q[(j * r + i) * k + c];
                LMC_ASSERT(v >= -1 && v <= 1);
                p[i * k + c] |= (uint8_t)((v + 1) << (2 * j));
            }
    *packed = p;
    return LMC_OK;
}

void lmc_ternary_unpack(const uint8_t *packed, int64_t n, int64_t k, int8_t *q) {
    int64_t r = n / 4;
    for (int j = 0; j < 4; j++)
        for (int64_t i = 0; i < r; i++)
            for (int64_t c = 0; c < k; c++) q[(j * r + i) * k + c] = (int8_t)(((packed[i * k + c] >> (2 * j)) & 3) - 1);
}
