/* groups.c — integer weights with a scale and zero per group: the common
 * unpacked form (struct lmc_qgroups), round-to-nearest quantization with
 * GPTQ's scale/zero rule, and packing to and from the GPTQ (v1/v2, 2/3/4/8
 * bits, bit streams across int32 words) and AWQ GEMM checkpoint layouts. */
#include "quant/quant.h"
#include "core/core.h"
#include "core/dtype.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lmc_status lmc_qgroups_alloc(struct lmc_qgroups *g, int64_t n, int64_t k, int bits, int64_t group_size,
                             lmc_err *err) {
    memset(g, 0, sizeof *g);
    if (n <= 0 || k <= 0 || bits < 2 || bits > 8 || group_size <= 0)
        return lmc_err_set(err, LMC_ERR_ARG, "quantize: bad shape (%lld, %lld), bits %d or group %lld", (long long)n,
                           (long long)k, bits, (long long)group_size);
    int64_t nk, ng = (k + group_size - 1) / group_size, gn;
    if (!lmc_mul_ok(n, k, &nk) || !lmc_mul_ok(ng, n, &gn) || nk > ((int64_t)1 << 40))
        return lmc_err_set(err, LMC_ERR_OOM, "quantize: (%lld, %lld) is too large", (long long)n, (long long)k);
    g->n = n;
    g->k = k;
    g->bits = bits;
    g->group_size = group_size;
    g->n_groups = ng;
    g->q = malloc((size_t)nk);
    g->scale = malloc((size_t)gn * sizeof *g->scale);
    g->zero = malloc((size_t)gn * sizeof *g->zero);
    g->g_idx = malloc((size_t)k * sizeof *g->g_idx);
    if (!g->q || !g->scale || !g->zero || !g->g_idx) {
        lmc_qgroups_free(g);
        return lmc_err_set(err, LMC_ERR_OOM, "quantize: out of memory for (%lld, %lld)", (long long)n, (long long)k);
    }
    for (int64_t i = 0; i < k; i++) g->g_idx[i] = (int32_t)(i / group_size);
    return LMC_OK;
}

void lmc_qgroups_free(struct lmc_qgroups *g) {
    free(g->q);
    free(g->scale);
    free(g->zero);
    free(g->g_idx);
    memset(g, 0, sizeof *g);
}

void lmc_qgroups_dequantize(const struct lmc_qgroups *g, float *w) {
    for (int64_t r = 0; r < g->n; r++)
        for (int64_t i = 0; i < g->k; i++) {
            int64_t gi = (int64_t)g->g_idx[i] * g->n + r;
            w[r * g->k + i] = g->scale[gi] * (float)((int32_t)g->q[r * g->k + i] - g->zero[gi]);
        }
}

void lmc_quant_minmax_params(float lo, float hi, int bits, bool sym, float *scale, int32_t *zero) {
    float maxq = (float)((1 << bits) - 1);
    lo = fminf(lo, 0.0f);
    hi = fmaxf(hi, 0.0f);
    if (sym) {
        hi = fmaxf(fabsf(lo), hi);
        if (lo < 0) lo = -hi;
    }
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    *scale = (hi - lo) / maxq;
    *zero = sym ? (int32_t)(((1 << bits) - 1 + 1) / 2) : (int32_t)nearbyintf(-lo / *scale);
}

/* Round to nearest per group, each group's range [lo, hi] shrunk by the
 * factor among 1.00, 0.99, ..., 1 - (grid - 1) / 100 whose codes give the
 * smallest squared error (grid 1: the plain rule; GPTQ's reference
 * quantizer's `mse` search, norm 2, for more): clipping a few outliers for
 * a finer step. Factor 1 is the plain rule, so no group does worse. */
static lmc_status rtn_groups(const float *w, int64_t n, int64_t k, int bits, int64_t group_size, bool sym, int grid,
                             struct lmc_qgroups *g, lmc_err *err) {
    if (group_size <= 0 || group_size > k) group_size = k;
    lmc_status s = lmc_qgroups_alloc(g, n, k, bits, group_size, err);
    if (s) return s;
    int32_t maxq = (1 << bits) - 1;
    for (int64_t r = 0; r < n; r++)
        for (int64_t gi = 0; gi < g->n_groups; gi++) {
            int64_t a = gi * group_size, b = LMC_MIN(k, a + group_size);
            const float *x = w + r * k;
            float lo = x[a], hi = x[a];
            for (int64_t i = a; i < b; i++) {
                lo = fminf(lo, x[i]);
                hi = fmaxf(hi, x[i]);
            }
            float sc = 0.0f;
            int32_t z = 0;
            double best = INFINITY;
            for (int t = 0; t < grid; t++) {
                float p = 1.0f - 0.01f * (float)t, sc_t;
                int32_t z_t;
                lmc_quant_minmax_params(lo * p, hi * p, bits, sym, &sc_t, &z_t);
                double e = 0;
                for (int64_t i = a; grid > 1 && i < b; i++) {
                    double d = (double)sc_t * (double)(lmc_quant_code(x[i], sc_t, z_t, maxq) - z_t) - (double)x[i];
                    e += d * d;
                }
                if (e < best) best = e, sc = sc_t, z = z_t;
            }
            g->scale[gi * n + r] = sc;
            g->zero[gi * n + r] = z;
            for (int64_t i = a; i < b; i++) g->q[r * k + i] = (uint8_t)lmc_quant_code(x[i], sc, z, maxq);
        }
    return LMC_OK;
}

lmc_status lmc_quant_rtn(const float *w, int64_t n, int64_t k, int bits, int64_t group_size, bool sym,
                         struct lmc_qgroups *g, lmc_err *err) {
    return rtn_groups(w, n, k, bits, group_size, sym, 1, g, err);
}

lmc_status lmc_quant_rtn_search(const float *w, int64_t n, int64_t k, int bits, int64_t group_size, bool sym,
                                struct lmc_qgroups *g, lmc_err *err) {
    return rtn_groups(w, n, k, bits, group_size, sym, LMC_QUANT_CLIP_GRID, g, err);
}

/* Bit streams: value j of `bits` bits at bit j*bits of an int32 array. */
static void stream_put(uint32_t *w, int64_t j, int bits, uint32_t v) {
    int64_t pos = j * bits;
    int64_t word = pos / 32;
    int sh = (int)(pos % 32);
    w[word] |= v << sh;
    if (sh + bits > 32) w[word + 1] |= v >> (32 - sh);
}
static uint32_t stream_get(const uint32_t *w, int64_t j, int bits) {
    int64_t pos = j * bits;
    int64_t word = pos / 32;
    int sh = (int)(pos % 32);
    uint64_t v = w[word] >> sh;
    if (sh + bits > 32) v |= (uint64_t)w[word + 1] << (32 - sh);
    return (uint32_t)v & ((1u << bits) - 1);
}

void lmc_gptq_tensors_free(struct lmc_gptq_tensors *t) {
    free(t->qweight);
    free(t->qzeros);
    free(t->g_idx);
    free(t->scales);
    memset(t, 0, sizeof *t);
}

lmc_status lmc_gptq_pack(const struct lmc_qgroups *g, bool v2, struct lmc_gptq_tensors *t, lmc_err *err) {
    memset(t, 0, sizeof *t);
    int b = g->bits;
    if ((g->k * b) % 32 || (g->n * b) % 32 || (b != 2 && b != 3 && b != 4 && b != 8))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "GPTQ packing needs whole int32 words: in and out features times %d bits multiples of 32 "
                           "(got out %lld, in %lld)", b, (long long)g->n, (long long)g->k);
    int64_t rows = g->k * b / 32, zcols = g->n * b / 32;
    t->n = g->n;
    t->k = g->k;
    t->n_groups = g->n_groups;
    t->bits = b;
    t->v2 = v2;
    t->qweight = calloc((size_t)(rows * g->n), 4);
    t->qzeros = calloc((size_t)(g->n_groups * zcols), 4);
    t->scales = malloc((size_t)(g->n_groups * g->n) * 2);
    t->g_idx = malloc((size_t)g->k * 4);
    if (!t->qweight || !t->qzeros || !t->scales || !t->g_idx) {
        lmc_gptq_tensors_free(t);
        return lmc_err_set(err, LMC_ERR_OOM, "GPTQ packing: out of memory");
    }
    uint32_t *col = calloc((size_t)rows, 4);
    if (!col) {
        lmc_gptq_tensors_free(t);
        return lmc_err_set(err, LMC_ERR_OOM, "GPTQ packing: out of memory");
    }
    for (int64_t r = 0; r < g->n; r++) { /* column r of qweight: its bit stream along K */
        memset(col, 0, (size_t)rows * 4);
        for (int64_t i = 0; i < g->k; i++) stream_put(col, i, b, g->q[r * g->k + i]);
        for (int64_t w = 0; w < rows; w++) t->qweight[w * g->n + r] = (int32_t)col[w];
    }
    free(col);
    uint32_t mask = (1u << b) - 1;
    for (int64_t gi = 0; gi < g->n_groups; gi++)
        for (int64_t r = 0; r < g->n; r++) {
            int32_t z = g->zero[gi * g->n + r] - (v2 ? 0 : 1);
            if (z < 0 || (uint32_t)z > mask) {
                lmc_gptq_tensors_free(t);
                return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                                   "GPTQ %s cannot store zero point %d (group %lld, output %lld) in %d bits%s",
                                   v2 ? "v2" : "v1", g->zero[gi * g->n + r], (long long)gi, (long long)r, b,
                                   v2 ? "" : " (v1 stores zero-1; use gptq_v2)");
            }
            stream_put((uint32_t *)t->qzeros + gi * zcols, r, b, (uint32_t)z);
            t->scales[gi * g->n + r] = lmc_f32_to_f16(g->scale[gi * g->n + r]);
        }
    memcpy(t->g_idx, g->g_idx, (size_t)g->k * 4);
    return LMC_OK;
}

lmc_status lmc_gptq_unpack(const struct lmc_gptq_tensors *t, const char *label, struct lmc_qgroups *g,
                           lmc_err *err) {
    int b = t->bits;
    if (b != 2 && b != 3 && b != 4 && b != 8)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: GPTQ bits %d (expected 2, 3, 4 or 8)", label, b);
    if ((t->k * b) % 32 || (t->n * b) % 32 || t->n_groups <= 0 || t->n_groups > t->k)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: GPTQ shape (in %lld, out %lld, %lld groups) is not packable",
                           label, (long long)t->k, (long long)t->n, (long long)t->n_groups);
    int64_t gs = (t->k + t->n_groups - 1) / t->n_groups;
    lmc_status s = lmc_qgroups_alloc(g, t->n, t->k, b, gs, err);
    if (s) return s;
    g->n_groups = t->n_groups;
    for (int64_t i = 0; i < t->k; i++) {
        int32_t gi = t->g_idx ? t->g_idx[i] : (int32_t)(i / gs);
        if (gi < 0 || gi >= t->n_groups) {
            lmc_qgroups_free(g);
            return lmc_err_set(err, LMC_ERR_FORMAT, "%s.g_idx[%lld] = %d is outside [0, %lld)", label, (long long)i,
                               gi, (long long)t->n_groups);
        }
        g->g_idx[i] = gi;
    }
    int64_t rows = t->k * b / 32, zcols = t->n * b / 32;
    uint32_t *col = malloc((size_t)rows * 4);
    if (!col) {
        lmc_qgroups_free(g);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
    }
    for (int64_t r = 0; r < t->n; r++) {
        for (int64_t w = 0; w < rows; w++) col[w] = (uint32_t)t->qweight[w * t->n + r];
        for (int64_t i = 0; i < t->k; i++) g->q[r * t->k + i] = (uint8_t)stream_get(col, i, b);
    }
    free(col);
    for (int64_t gi = 0; gi < t->n_groups; gi++)
        for (int64_t r = 0; r < t->n; r++) {
            g->zero[gi * t->n + r] = (int32_t)stream_get((const uint32_t *)t->qzeros + gi * zcols, r, b) + (t->v2 ? 0 : 1);
            g->scale[gi * t->n + r] = lmc_f16_to_f32(t->scales[gi * t->n + r]);
        }
    return LMC_OK;
}

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

void lmc_awq_tensors_free(struct lmc_awq_tensors *t) {
    free(t->qweight);
    free(t->qzeros);
    free(t->scales);
    memset(t, 0, sizeof *t);
}

lmc_status lmc_awq_pack(const struct lmc_qgroups *g, struct lmc_awq_tensors *t, lmc_err *err) {
    memset(t, 0, sizeof *t);
    if (g->bits != 4 || g->n % 8)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "AWQ packing needs 4 bits and N a multiple of 8");
    for (int64_t i = 0; i < g->k; i++)
        if (g->g_idx[i] != (int32_t)(i / g->group_size))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "AWQ has no g_idx: groups must be contiguous");
    int64_t c8 = g->n / 8;
    t->n = g->n;
    t->k = g->k;
    t->n_groups = g->n_groups;
    t->qweight = calloc((size_t)(g->k * c8), 4);
    t->qzeros = calloc((size_t)(g->n_groups * c8), 4);
    t->scales = malloc((size_t)(g->n_groups * g->n) * 2);
    if (!t->qweight || !t->qzeros || !t->scales) {
        lmc_awq_tensors_free(t);
        return lmc_err_set(err, LMC_ERR_OOM, "AWQ packing: out of memory");
    }
    for (int64_t i = 0; i < g->k; i++)
        for (int64_t c = 0; c < c8; c++) {
            uint32_t w = 0;
            for (int j = 0; j < 8; j++) w |= (uint32_t)(g->q[(c * 8 + awq_order[j]) * g->k + i] & 15) << (4 * j);
            t->qweight[i * c8 + c] = (int32_t)w;
        }
    for (int64_t gi = 0; gi < g->n_groups; gi++) {
        for (int64_t c = 0; c < c8; c++) {
            uint32_t w = 0;
            for (int j = 0; j < 8; j++) {
                int32_t z = g->zero[gi * g->n + c * 8 + awq_order[j]];
                if (z < 0 || z > 15) {
                    lmc_awq_tensors_free(t);
                    return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "AWQ cannot store zero point %d", z);
                }
                w |= (uint32_t)z << (4 * j);
            }
            t->qzeros[gi * c8 + c] = (int32_t)w;
        }
        for (int64_t r = 0; r < g->n; r++) t->scales[gi * g->n + r] = lmc_f32_to_f16(g->scale[gi * g->n + r]);
    }
    return LMC_OK;
}

lmc_status lmc_awq_unpack(const struct lmc_awq_tensors *t, int64_t group_size, const char *label,
                          struct lmc_qgroups *g, lmc_err *err) {
    if (t->n % 8 || group_size <= 0 || t->n_groups != (t->k + group_size - 1) / group_size)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: AWQ shape (in %lld, out %lld) disagrees with %lld groups of %lld",
                           label, (long long)t->k, (long long)t->n, (long long)t->n_groups, (long long)group_size);
    lmc_status s = lmc_qgroups_alloc(g, t->n, t->k, 4, group_size, err);
    if (s) return s;
    int64_t c8 = t->n / 8;
    for (int64_t i = 0; i < t->k; i++)
        for (int64_t c = 0; c < c8; c++) {
            uint32_t w = (uint32_t)t->qweight[i * c8 + c];
            for (int j = 0; j < 8; j++) g->q[(c * 8 + awq_order[j]) * t->k + i] = (uint8_t)((w >> (4 * j)) & 15);
        }
    for (int64_t gi = 0; gi < t->n_groups; gi++) {
        for (int64_t c = 0; c < c8; c++) {
            uint32_t w = (uint32_t)t->qzeros[gi * c8 + c];
            for (int j = 0; j < 8; j++) g->zero[gi * t->n + c * 8 + awq_order[j]] = (int32_t)((w >> (4 * j)) & 15);
        }
        for (int64_t r = 0; r < t->n; r++) g->scale[gi * t->n + r] = lmc_f16_to_f32(t->scales[gi * t->n + r]);
    }
    return LMC_OK;
}
