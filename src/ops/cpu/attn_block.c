/* attn_block.c — ring attention's block ops on the CPU (backend.h's
 * attn_block_fwd / attn_block_merge / attn_block_bwd): the attention of a
 * rank's queries against one K/V block at given global positions (causal
 * by position, or every key), the log-sum-exp merge of partial outputs,
 * and the block's backward with the merged forward's lse. Sums in double;
 * the reference the CUDA kernels (ops/cuda/attn_block.cu) are checked
 * against. */
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int visible(const int32_t *qpos, const int32_t *kpos, int64_t i, int64_t j, int causal) {
    return !causal || kpos[j] <= qpos[i];
}

void lmc_cpu_attn_block_fwd(void *ctx, float *ob, float *lb, const float *q, const float *k, const float *v,
                            const int32_t *qpos, const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV,
                            int64_t hd, float scale, int causal) {
    (void)ctx;
    int64_t qd = H * hd, kvd = KV * hd, grp = H / KV;
    double *sc = malloc(sizeof(double) * (size_t)(ns + 1)), *acc = malloc(sizeof(double) * (size_t)hd);
    LMC_ASSERT(sc && acc);
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < H; h++) {
            const float *qi = q + i * qd + h * hd;
            float *o = ob + i * qd + h * hd;
            int64_t kh = h / grp;
            double m = -INFINITY;
            for (int64_t j = 0; j < ns; j++) {
                sc[j] = -INFINITY;
                if (!visible(qpos, kpos, i, j, causal)) continue;
                const float *kj = k + j * kvd + kh * hd;
                double d = 0;
                for (int64_t e = 0; e < hd; e++) d += (double)qi[e] * kj[e];
                sc[j] = d * scale;
                if (sc[j] > m) m = sc[j];
            }
            if (m == -INFINITY) {
                lb[i * H + h] = -INFINITY;
                memset(o, 0, sizeof(float) * (size_t)hd);
                continue;
            }
            double sum = 0;
            memset(acc, 0, sizeof(double) * (size_t)hd);
            for (int64_t j = 0; j < ns; j++) {
                if (sc[j] == -INFINITY) continue;
                double p = exp(sc[j] - m);
                sum += p;
                const float *vj = v + j * kvd + kh * hd;
                for (int64_t e = 0; e < hd; e++) acc[e] += p * vj[e];
            }
            for (int64_t e = 0; e < hd; e++) o[e] = (float)(acc[e] / sum);
            lb[i * H + h] = (float)(m + log(sum));
        }
    free(sc), free(acc);
}

void lmc_cpu_attn_block_merge(void *ctx, float *out, float *lse, const float *ob, const float *lb, int64_t n,
                              int64_t H, int64_t hd) {
    (void)ctx;
    for (int64_t r = 0; r < n * H; r++) {
        float b = lb[r], *l = &lse[r], *o = out + r * hd;
        const float *p = ob + r * hd;
        if (b == -INFINITY) continue;
        if (*l == -INFINITY) {
            memcpy(o, p, sizeof(float) * (size_t)hd);
            *l = b;
            continue;
        }
        double m = fmax(*l, b), wa = exp(*l - m), wb = exp(b - m), s = wa + wb;
        for (int64_t e = 0; e < hd; e++) o[e] = (float)((o[e] * wa + p[e] * wb) / s);
        *l = (float)(m + log(s));
    }
}

void lmc_cpu_attn_block_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v, const int32_t *qpos,
                            const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV, int64_t hd,
                            float scale, int causal) {
    (void)ctx;
    int64_t qd = H * hd, kvd = KV * hd, grp = H / KV;
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < H; h++) {
            const float *qi = q + i * qd + h * hd, *di = dout + i * qd + h * hd, *oi = out + i * qd + h * hd;
            float *dqi = dq + i * qd + h * hd;
            int64_t kh = h / grp;
            double l = lse[i * H + h], D = 0;
            if (l == -INFINITY) continue; /* no key anywhere: no gradient */
            for (int64_t e = 0; e < hd; e++) D += (double)di[e] * oi[e];
            for (int64_t j = 0; j < ns; j++) {
                if (!visible(qpos, kpos, i, j, causal)) continue;
                const float *kj = k + j * kvd + kh * hd, *vj = v + j * kvd + kh * hd;
                double d = 0, dp = 0;
                for (int64_t e = 0; e < hd; e++) d += (double)qi[e] * kj[e], dp += (double)di[e] * vj[e];
                double p = exp(d * scale - l), ds = p * (dp - D) * scale;
                float *dkj = dk + j * kvd + kh * hd, *dvj = dv + j * kvd + kh * hd;
                for (int64_t e = 0; e < hd; e++) {
                    dqi[e] += (float)(ds * kj[e]);
                    dkj[e] += (float)(ds * qi[e]);
                    dvj[e] += (float)(p * di[e]);
                }
            }
        }
}
