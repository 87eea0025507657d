/* attention.c — causal multi-head attention over a KV cache (see backend.h
 * for shapes). One task per (query, head): scores into the thread's scratch,
 * max-subtracted exp (stable softmax), sum in double, then the weighted sum
 * of V rows. Head h reads kv head h / (n_heads / n_kv) (GQA); window > 0
 * keeps the last `window` positions, the query's own included. */
#include "ops/cpu/ops_cpu.h"

#include <math.h>
#include <string.h>

struct attn_job {
    struct lmc_cpu_ctx *c;
    float *out, *lse;       /* lse: (M, n_heads) or NULL */
    const float *q, *k, *v;
    int64_t M, pos0, n_heads, n_kv, hd, window;
    float scale;
};

static void attn_task(void *arg, int64_t t, int thread) {
    const struct attn_job *j = arg;
    int64_t m = t / j->n_heads, h = t % j->n_heads, hd = j->hd;
    int64_t p = j->pos0 + m;
    int64_t lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0, n = p - lo + 1;
    int64_t kvh = h / (j->n_heads / j->n_kv), kv_row = j->n_kv * hd;
    const float *q = j->q + (m * j->n_heads + h) * hd;
    const float *kb = j->k + lo * kv_row + kvh * hd, *vb = j->v + lo * kv_row + kvh * hd;
    float *s = j->c->scratch[thread], *o = j->out + (m * j->n_heads + h) * hd;

    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s[i] = j->scale * lmc_cpu_dot(q, kb + i * kv_row, hd);
        if (s[i] > mx) mx = s[i];
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    if (j->lse) j->lse[m * j->n_heads + h] = (float)((double)mx + log(sum));
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t i = 0; i < n; i++) lmc_cpu_axpy(o, s[i], vb + i * kv_row, hd);
    float inv = (float)(1.0 / sum);
    for (int64_t d = 0; d < hd; d++) o[d] *= inv;
}

void lmc_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                       float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0);
    if (M <= 0 || n_heads <= 0 || hd <= 0) return;
    struct attn_job j = {c, out, NULL, q, k, v, M, pos0, n_heads, n_kv, hd, window, scale};
    lmc_cpu_scratch_reserve(c, (size_t)(pos0 + M));
    lmc_pool_run(c->pool, M * n_heads, attn_task, &j);
}

void lmc_cpu_attention_train(void *ctx, float *out, float *lse, const float *q, const float *k,
                             const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                             int64_t hd, float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    if (B <= 0 || T <= 0 || n_heads <= 0 || hd <= 0) return;
    int64_t qd = n_heads * hd, kvd = n_kv * hd;
    lmc_cpu_scratch_reserve(c, (size_t)T);
    for (int64_t b = 0; b < B; b++) {
        struct attn_job j = {c,           out + b * T * qd, lse + b * T * n_heads, q + b * T * qd,
                             k + b * T * kvd, v + b * T * kvd, T, 0, n_heads, n_kv, hd, window,
                             scale};
        lmc_pool_run(c->pool, T * n_heads, attn_task, &j);
    }
}

/* ---- backward (training: B sequences of T tokens from position 0) ----
 * One task per (sequence, kv head): it owns the dk, dv rows of its kv head
 * and walks the query heads of its group and every query in order, so the
 * accumulation order is fixed. Per query i: p = softmax(scale q_i k_j^T)
 * over j <= i (recomputed), dp_j = dout_i . v_j, ds_j = p_j (dp_j - sum p dp),
 * dq_i = scale sum_j ds_j k_j, dk_j += scale ds_j q_i, dv_j += p_j dout_i. */
struct attn_bwd_job {
    struct lmc_cpu_ctx *c;
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v;
    int64_t T, n_heads, n_kv, hd, window;
    float scale;
};

static void attn_bwd_task(void *arg, int64_t t, int thread) {
    const struct attn_bwd_job *j = arg;
    int64_t b = t / j->n_kv, g = t % j->n_kv, hd = j->hd, T = j->T;
    int64_t group = j->n_heads / j->n_kv, qrow = j->n_heads * hd, kvrow = j->n_kv * hd;
    const float *kb = j->k + b * T * kvrow + g * hd, *vb = j->v + b * T * kvrow + g * hd;
    float *dkb = j->dk + b * T * kvrow + g * hd, *dvb = j->dv + b * T * kvrow + g * hd;
    float *p = j->c->scratch[thread], *dp = p + T;
    for (int64_t i = 0; i < T; i++) {
        memset(dkb + i * kvrow, 0, (size_t)hd * sizeof(float));
        memset(dvb + i * kvrow, 0, (size_t)hd * sizeof(float));
    }
    for (int64_t h = g * group; h < (g + 1) * group; h++) {
        for (int64_t i = 0; i < T; i++) {
            const float *q = j->q + (b * T + i) * qrow + h * hd;
            const float *dout = j->dout + (b * T + i) * qrow + h * hd;
            float *dq = j->dq + (b * T + i) * qrow + h * hd;
            int64_t lo = j->window > 0 ? LMC_MAX(0, i - j->window + 1) : 0, n = i - lo + 1;
            float mx = -INFINITY;
            for (int64_t s = 0; s < n; s++) {
                p[s] = j->scale * lmc_cpu_dot(q, kb + (lo + s) * kvrow, hd);
                if (p[s] > mx) mx = p[s];
            }
            double sum = lmc_cpu_exp_sum(p, n, mx), pdp = 0;
            float inv = (float)(1.0 / sum);
            for (int64_t s = 0; s < n; s++) {
                p[s] *= inv;
                dp[s] = lmc_cpu_dot(dout, vb + (lo + s) * kvrow, hd);
                pdp += (double)p[s] * dp[s];
            }
            memset(dq, 0, (size_t)hd * sizeof(float));
            for (int64_t s = 0; s < n; s++) {
                float ds = p[s] * (dp[s] - (float)pdp) * j->scale;
                lmc_cpu_axpy(dq, ds, kb + (lo + s) * kvrow, hd);
                lmc_cpu_axpy(dkb + (lo + s) * kvrow, ds, q, hd);
                lmc_cpu_axpy(dvb + (lo + s) * kvrow, p[s], dout, hd);
            }
        }
    }
}

void lmc_cpu_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                           const float *out, const float *lse, const float *q, const float *k,
                           const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                           int64_t hd, float scale, int64_t window) {
    (void)out; /* the softmax is recomputed here; out and lse serve other backends */
    (void)lse;
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    if (B <= 0 || T <= 0 || hd <= 0) return;
    struct attn_bwd_job j = {c, dq, dk, dv, dout, q, k, v, T, n_heads, n_kv, hd, window, scale};
    lmc_cpu_scratch_reserve(c, (size_t)(2 * T));
    lmc_pool_run(c->pool, B * n_kv, attn_bwd_task, &j);
}
