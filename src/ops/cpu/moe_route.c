/* moe_route.c — mixture-of-experts routing on the CPU (backend.h: moe_route,
 * moe_stats, moe_gather, moe_gather_bwd, moe_combine, moe_combine_bwd;
 * CUDA twin ops/cuda/moe_route.cu): the router's softmax (in double) and
 * top-k (ties to the lower expert, as torch.topk) with the optional
 * renormalisation, a stable counting sort of the n k choices by expert,
 * the gather of token rows into expert order, the weighted sum of the
 * expert outputs back per token (plus a gated shared expert), and the
 * backward of each: through the combine weights, the renormalisation and
 * the softmax into the router logits. */
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <string.h>

void lmc_cpu_moe_route(void *ctx, const struct lmc_moe_routing *s, int64_t *off_host, int64_t n, int64_t E,
                       int64_t k, int norm_topk) {
    (void)ctx;
    LMC_ASSERT(k >= 1 && k <= E);
    for (int64_t t = 0; t < n; t++) {
        float *p = s->probs + t * E;
        double mx = p[0], sum = 0;
        for (int64_t e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
        for (int64_t e = 0; e < E; e++) sum += exp((double)p[e] - mx);
        for (int64_t e = 0; e < E; e++) p[e] = (float)(exp((double)p[e] - mx) / sum);
        int32_t *sel = s->sel + t * k;
        float *w = s->wts + t * k;
        double tot = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j; i++) taken |= sel[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e; /* ties: lower index */
            }
            sel[j] = (int32_t)best;
            w[j] = p[best];
            tot += p[best];
        }
        if (norm_topk)
            for (int64_t j = 0; j < k; j++) w[j] = (float)((double)w[j] / tot);
    }
    int64_t *off = s->off;
    memset(off, 0, (size_t)(E + 1) * sizeof *off);
    for (int64_t i = 0; i < n * k; i++) off[s->sel[i] + 1]++;
    for (int64_t e = 0; e < E; e++) off[e + 1] += off[e];
    for (int64_t i = 0; i < n * k; i++) { /* stable: rows of an expert in token order */
        int32_t e = s->sel[i];
        int32_t r = (int32_t)off[e]++;
        s->perm[r] = (int32_t)i;
        s->row[i] = r;
    }
    for (int64_t e = E; e > 0; e--) off[e] = off[e - 1];
    off[0] = 0;
    if (off_host != off) memcpy(off_host, off, (size_t)(E + 1) * sizeof *off);
}

void lmc_cpu_moe_stats(void *ctx, double *cnt, double *psum, const int32_t *sel, const float *probs, int64_t n,
                       int64_t k, int64_t E) {
    (void)ctx;
    for (int64_t e = 0; e < E; e++) cnt[e] = psum[e] = 0;
    for (int64_t i = 0; i < n * k; i++) cnt[sel[i]] += 1;
    for (int64_t t = 0; t < n; t++)
        for (int64_t e = 0; e < E; e++) psum[e] += probs[t * E + e];
}

void lmc_cpu_moe_gather(void *ctx, float *xs, const float *h, const int32_t *perm, int64_t nk, int64_t k,
                        int64_t C) {
    (void)ctx;
    for (int64_t i = 0; i < nk; i++)
        memcpy(xs + i * C, h + (int64_t)(perm[i] / k) * C, (size_t)C * sizeof(float));
}

void lmc_cpu_moe_gather_bwd(void *ctx, float *dh, const float *dxs, const int32_t *row, int64_t n, int64_t k,
                            int64_t C) {
    (void)ctx;
    for (int64_t t = 0; t < n; t++)
        for (int64_t ch = 0; ch < C; ch++) {
            float acc = 0;
            for (int64_t j = 0; j < k; j++) acc += dxs[(int64_t)row[t * k + j] * C + ch];
            dh[t * C + ch] = acc;
        }
}

void lmc_cpu_moe_combine(void *ctx, float *y, const float *res, const float *o, const float *wts,
                         const int32_t *row, const float *so, const float *sl, int64_t n, int64_t k, int64_t C) {
    (void)ctx;
    for (int64_t t = 0; t < n; t++) {
        float sig = so ? 1.0f / (1.0f + expf(-sl[t])) : 0.0f;
        for (int64_t ch = 0; ch < C; ch++) {
            float acc = 0;
            for (int64_t j = 0; j < k; j++) acc += wts[t * k + j] * o[(int64_t)row[t * k + j] * C + ch];
            if (so) acc += sig * so[t * C + ch];
            y[t * C + ch] = res[t * C + ch] + acc;
        }
    }
}

void lmc_cpu_moe_combine_bwd(void *ctx, float *dox, float *dlog, float *dso, float *dsl, const float *dy,
                             const float *o, const struct lmc_moe_routing *s, const float *so, const float *sl,
                             const double *aux, int64_t n, int64_t E, int64_t k, int64_t C, int norm_topk) {
    (void)ctx;
    LMC_ASSERT(k <= 64 && E <= 4096);
    for (int64_t t = 0; t < n; t++) {
        double dwp[64];
        for (int64_t j = 0; j < k; j++) {
            const float *ot = o + (int64_t)s->row[t * k + j] * C, *g = dy + t * C;
            float *d = dox + (int64_t)s->row[t * k + j] * C, w = s->wts[t * k + j];
            double acc = 0;
            for (int64_t ch = 0; ch < C; ch++) {
                acc += (double)g[ch] * ot[ch];
                d[ch] = w * g[ch];
            }
            dwp[j] = acc;
        }
        const float *p = s->probs + t * E;
        const int32_t *sel = s->sel + t * k;
        double dp[4096];
        for (int64_t e = 0; e < E; e++) dp[e] = aux ? aux[e] : 0; /* the load-balancing loss's share */
        if (norm_topk) { /* w_j = p_j / S over the chosen */
            double S = 0, dot = 0;
            for (int64_t j = 0; j < k; j++) S += p[sel[j]];
            for (int64_t j = 0; j < k; j++) dot += dwp[j] * (p[sel[j]] / S);
            for (int64_t j = 0; j < k; j++) dp[sel[j]] += (dwp[j] - dot) / S;
        } else {
            for (int64_t j = 0; j < k; j++) dp[sel[j]] += dwp[j];
        }
        double pd = 0;
        for (int64_t e = 0; e < E; e++) pd += dp[e] * p[e];
        for (int64_t e = 0; e < E; e++) dlog[t * E + e] = (float)(p[e] * (dp[e] - pd));
    }
    if (!so) return;
    /* shared expert: y += sig(l) so; dso = sig dy, dl = sig (1 - sig) (dy . so) */
    for (int64_t t = 0; t < n; t++) {
        float sig = 1.0f / (1.0f + expf(-sl[t]));
        double dot = 0;
        for (int64_t ch = 0; ch < C; ch++) {
            dot += (double)dy[t * C + ch] * so[t * C + ch];
            dso[t * C + ch] = sig * dy[t * C + ch];
        }
        dsl[t] = (float)(sig * (1.0f - sig) * dot);
    }
}
