/* attention_paged.c — causal attention of a batch of tokens from many
 * sequences over a paged KV pool (see backend.h, attention_paged). The
 * step's new K/V rows are first stored into their slots (calling thread),
 * then one task per (token, head) computes scores through the sequence's
 * block table into the thread's scratch, a max-subtracted exp with the sum
 * in double, and the weighted sum of V rows — the same arithmetic, in the
 * same order, as attention.c, so a sequence gets the same result whether
 * its cache is contiguous or paged. */
#include "ops/cpu/ops_cpu.h"

#include <string.h>

struct pattn_job {
    struct lmc_cpu_ctx *c;
    float *out;
    const float *q, *kc, *vc;
    const int32_t *seq, *pos, *bt;
    int64_t max_blocks, bs, n_heads, n_kv, hd, window;
    float scale;
};

static void pattn_task(void *arg, int64_t t, int thread) {
    const struct pattn_job *j = arg;
    int64_t m = t / j->n_heads, h = t % j->n_heads, hd = j->hd, bs = j->bs;
    int64_t p = j->pos[m];
    int64_t lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0, n = p - lo + 1;
    int64_t kvh = h / (j->n_heads / j->n_kv), kv_row = j->n_kv * hd;
    const int32_t *bt = j->bt + (int64_t)j->seq[m] * j->max_blocks;
    const float *q = j->q + (m * j->n_heads + h) * hd;
    float *s = j->c->scratch[thread], *o = j->out + (m * j->n_heads + h) * hd;

    float mx = -INFINITY;
    for (int64_t i = 0; i < n;) { /* one block's run of positions at a time */
        int64_t ps = lo + i, off = ps % bs, run = LMC_MIN(bs - off, n - i);
        const float *kb = j->kc + ((int64_t)bt[ps / bs] * bs + off) * kv_row + kvh * hd;
        for (int64_t r = 0; r < run; r++, i++) {
            s[i] = j->scale * lmc_cpu_dot(q, kb + r * kv_row, hd);
            if (s[i] > mx) mx = s[i];
        }
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t i = 0; i < n;) {
        int64_t ps = lo + i, off = ps % bs, run = LMC_MIN(bs - off, n - i);
        const float *vb = j->vc + ((int64_t)bt[ps / bs] * bs + off) * kv_row + kvh * hd;
        for (int64_t r = 0; r < run; r++, i++) lmc_cpu_axpy(o, s[i], vb + r * kv_row, hd);
    }
    float inv = (float)(1.0 / sum);
    for (int64_t d = 0; d < hd; d++) o[d] *= inv;
}

void lmc_cpu_attention_paged(void *ctx, float *out, const float *q, const float *k_new,
                             const float *v_new, float *kc, float *vc, int64_t T,
                             const int32_t *seq, const int32_t *pos, const int32_t *bt,
                             int64_t max_blocks, int64_t block_size, int64_t n_heads,
                             int64_t n_kv, int64_t hd, float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    int64_t kv_row = n_kv * hd, max_pos = 0;
    for (int64_t i = 0; i < T; i++) {
        int64_t p = pos[i];
        LMC_ASSERT(p >= 0 && p / block_size < max_blocks);
        int64_t slot = (int64_t)bt[(int64_t)seq[i] * max_blocks + p / block_size] * block_size +
                       p % block_size;
        memcpy(kc + slot * kv_row, k_new + i * kv_row, (size_t)kv_row * sizeof(float));
        memcpy(vc + slot * kv_row, v_new + i * kv_row, (size_t)kv_row * sizeof(float));
        if (p > max_pos) max_pos = p;
    }
    struct pattn_job j = {c, out, q, kc, vc, seq, pos, bt, max_blocks, block_size,
                          n_heads, n_kv, hd, window, scale};
    lmc_cpu_scratch_reserve(c, (size_t)(max_pos + 1));
    lmc_pool_run(c->pool, T * n_heads, pattn_task, &j);
}
