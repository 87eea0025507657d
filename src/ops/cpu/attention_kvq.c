/* attention_kvq.c — the two backend entries of a compressed KV cache on the
 * CPU (kvquant.h): rope_kv_store (rotary on q and k, then the rows stored
 * in the layer's format) and causal attention reading the compressed rows:
 * each cached position's key row is decoded once and scored against every
 * query and head that sees it, then softmax (max-subtracted, sums in
 * double), then each value row decoded once and accumulated. */
#include "ops/cpu/kvquant.h"
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lmc_kvq_rope_kv_store(void *ctx, float *q, float *k, const float *v, void *kc, void *vc,
                           int64_t M, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim,
                           const int32_t *pos, const double *inv_freq, float attn_scale) {
    if (M <= 0) return;
    if (rot_dim) {
        lmc_cpu_rope(ctx, q, M, n_heads, hd, rot_dim, pos, inv_freq, attn_scale);
        lmc_cpu_rope(ctx, k, M, n_kv, hd, rot_dim, pos, inv_freq, attn_scale);
    }
    for (int64_t m = 1; m < M; m++) LMC_ASSERT(pos[m] == pos[0] + m);
    lmc_kvq_layer_store(kc, vc, k, v, M, pos[0]);
}

void lmc_kvq_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                       float scale, int64_t window) {
    (void)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0);
    if (M <= 0 || n_heads <= 0 || hd <= 0) return;
    const void *kr = k, *vr = v;
    int64_t total = pos0 + M, r = n_kv * hd, grp = n_heads / n_kv, QH = M * n_heads;
    LMC_ASSERT(lmc_kvq_layer_len(kr) >= total);
    float *s = malloc((size_t)QH * (size_t)total * sizeof *s);
    float *row = malloc((size_t)r * sizeof *row);
    double *sum = malloc((size_t)QH * sizeof *sum);
    LMC_ASSERT(s && row && sum);
    for (int64_t j = 0; j < total; j++) {
        lmc_kvq_layer_row(kr, vr, j, row, NULL);
        for (int64_t i = 0; i < M; i++) {
            int64_t p = pos0 + i, lo = window > 0 ? LMC_MAX(0, p - window + 1) : 0;
            if (j < lo || j > p) continue;
            for (int64_t h = 0; h < n_heads; h++)
                s[(i * n_heads + h) * total + j] =
                    scale * lmc_cpu_dot(q + (i * n_heads + h) * hd, row + (h / grp) * hd, hd);
        }
    }
    for (int64_t i = 0; i < M; i++) {
        int64_t p = pos0 + i, lo = window > 0 ? LMC_MAX(0, p - window + 1) : 0;
        for (int64_t h = 0; h < n_heads; h++) {
            float *si = s + (i * n_heads + h) * total;
            float mx = -INFINITY;
            for (int64_t j = lo; j <= p; j++) mx = si[j] > mx ? si[j] : mx;
            double acc = 0;
            for (int64_t j = lo; j <= p; j++) {
                si[j] = expf(si[j] - mx);
                acc += si[j];
            }
            sum[i * n_heads + h] = acc;
        }
    }
    memset(out, 0, (size_t)QH * (size_t)hd * sizeof *out);
    for (int64_t j = 0; j < total; j++) {
        lmc_kvq_layer_row(kr, vr, j, NULL, row);
        for (int64_t i = 0; i < M; i++) {
            int64_t p = pos0 + i, lo = window > 0 ? LMC_MAX(0, p - window + 1) : 0;
            if (j < lo || j > p) continue;
            for (int64_t h = 0; h < n_heads; h++)
                lmc_cpu_axpy(out + (i * n_heads + h) * hd, s[(i * n_heads + h) * total + j],
                             row + (h / grp) * hd, hd);
        }
    }
    for (int64_t t = 0; t < QH; t++) {
        float inv = (float)(1.0 / sum[t]);
        for (int64_t d = 0; d < hd; d++) out[t * hd + d] *= inv;
    }
    free(s);
    free(row);
    free(sum);
}
