/* nf4.c — bitsandbytes 4-bit NormalFloat: the 16 NF4 code values, blocks
 * of 64 with an absmax each, and the double quantization of those absmax
 * values (mean subtracted, 8-bit codes of the signed dynamic map in blocks
 * of 256 with a float32 absmax each), as bitsandbytes stores them. */
#include "quant/quant.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NF4_BLOCK 64
#define NF4_BLOCK2 256

const float lmc_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* bitsandbytes' create_dynamic_map(signed=True, 7 exponent bits, 8 bits):
 * for exponent i in 0..6, the midpoints of linspace(0.1, 1, 2^i + 1) times
 * 10^(i-6), both signs, plus 0 and 1; sorted. */
void lmc_dynamic_map_signed(float map[256]) {
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        float p10 = powf(10.0f, (float)(i - 6));
        for (int j = 0; j + 1 < items; j++) {
            float step = (1.0f - 0.1f) / (float)(items - 1);
            float a = 0.1f + step * (float)j, b = 0.1f + step * (float)(j + 1);
            float mean = (a + b) / 2.0f;
            map[n++] = p10 * mean;
            map[n++] = -p10 * mean;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    LMC_ASSERT(n == 256);
    qsort(map, 256, sizeof *map, cmp_f);
}

/* Index of the nearest entry of a sorted code table (first on ties). */
static int nearest_code(const float *code, int n, float x) {
    int best = 0;
    float bd = fabsf(x - code[0]);
    for (int i = 1; i < n; i++) {
        float d = fabsf(x - code[i]);
        if (d < bd) {
            bd = d;
            best = i;
        }
    }
    return best;
}

void lmc_nf4_free(struct lmc_nf4 *q) {
    free(q->packed);
    free(q->absmax_q);
    free(q->absmax2);
    free(q->absmax_f);
    memset(q, 0, sizeof *q);
}

lmc_status lmc_nf4_quantize(const float *w, int64_t numel, struct lmc_nf4 *q, lmc_err *err) {
    memset(q, 0, sizeof *q);
    if (numel <= 0) return lmc_err_set(err, LMC_ERR_ARG, "nf4: %lld elements", (long long)numel);
    q->numel = numel;
    q->n_blocks = (numel + NF4_BLOCK - 1) / NF4_BLOCK;
    q->n_blocks2 = (q->n_blocks + NF4_BLOCK2 - 1) / NF4_BLOCK2;
    q->blocksize2 = NF4_BLOCK2;
    memcpy(q->quant_map, lmc_nf4_code, sizeof q->quant_map);
    lmc_dynamic_map_signed(q->nested_map);
    q->packed = calloc((size_t)(numel + 1) / 2, 1);
    q->absmax_q = malloc((size_t)q->n_blocks);
    q->absmax2 = malloc((size_t)q->n_blocks2 * sizeof *q->absmax2);
    float *absmax = malloc((size_t)q->n_blocks * sizeof *absmax);
    if (!q->packed || !q->absmax_q || !q->absmax2 || !absmax) {
        free(absmax);
        lmc_nf4_free(q);
        return lmc_err_set(err, LMC_ERR_OOM, "nf4: out of memory for %lld elements", (long long)numel);
    }
    double mean = 0;
    for (int64_t b = 0; b < q->n_blocks; b++) {
        int64_t a = b * NF4_BLOCK, e = LMC_MIN(numel, a + NF4_BLOCK);
        float m = 0;
        for (int64_t i = a; i < e; i++) m = fmaxf(m, fabsf(w[i]));
        absmax[b] = m;
        mean += m;
        for (int64_t i = a; i < e; i++) {
            int c = nearest_code(lmc_nf4_code, 16, m > 0 ? w[i] / m : 0.0f);
            q->packed[i / 2] |= (uint8_t)(i % 2 ? c : c << 4);
        }
    }
    q->offset = (float)(mean / (double)q->n_blocks);
    for (int64_t b2 = 0; b2 < q->n_blocks2; b2++) {
        int64_t a = b2 * NF4_BLOCK2, e = LMC_MIN(q->n_blocks, a + NF4_BLOCK2);
        float m = 0;
        for (int64_t i = a; i < e; i++) m = fmaxf(m, fabsf(absmax[i] - q->offset));
        q->absmax2[b2] = m;
        for (int64_t i = a; i < e; i++)
            q->absmax_q[i] = (uint8_t)nearest_code(q->nested_map, 256, m > 0 ? (absmax[i] - q->offset) / m : 0.0f);
    }
    free(absmax);
    return LMC_OK;
}

/* One rounding per operation (no fused multiply-add), as bitsandbytes'
 * dequantize_blockwise then `+ offset` compute it in float32. */
static float mul_rounded(float a, float b) {
    volatile float p = a * b;
    return p;
}

float lmc_nf4_absmax(const struct lmc_nf4 *q, int64_t b) {
    if (q->absmax_f) return q->absmax_f[b];
    return mul_rounded(q->nested_map[q->absmax_q[b]], q->absmax2[b / q->blocksize2]) + q->offset;
}

void lmc_nf4_dequantize(const struct lmc_nf4 *q, float *w) {
    for (int64_t b = 0; b < q->n_blocks; b++) {
        float m = lmc_nf4_absmax(q, b);
        int64_t a = b * NF4_BLOCK, e = LMC_MIN(q->numel, a + NF4_BLOCK);
        for (int64_t i = a; i < e; i++) {
            int c = i % 2 ? q->packed[i / 2] & 15 : q->packed[i / 2] >> 4;
            w[i] = q->quant_map[c] * m;
        }
    }
}
