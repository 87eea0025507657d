/* attention_paged_kvq.c — paged attention (backend.h, attention_paged)
 * over a compressed or f16 KV pool: each token's K and V rows are stored
 * in a slot of lmc_kvq_paged_row_bytes bytes, f16 or bf16 (row values), q8 (int8
 * codes, one f16 scale per 64 values) or q4 (4-bit codes, f16 scale and
 * minimum per 32 values), the same group quantizers as the
 * single-sequence cache (kvquant.c). A quantized slot is [scales][codes],
 * padded to 8 bytes, so every block of the pool is a plain byte range
 * (copy-on-write and the prefix cache move bytes). One step, every
 * format: the new rows are stored first (calling thread), then the
 * format's kernel (kvquant_paged.h) runs one task per (token, head). f16's
 * and bf16's is attention_paged_f16.c's; the quantized formats' (here) decodes its
 * head's slice of each cached key once, scores it, takes a max-subtracted
 * exp with the sum in double (as attention_paged.c), and accumulates the
 * decoded value slices. */
#include "core/dtype.h"
#include "ops/cpu/kvquant.h"
#include "ops/cpu/kvquant_layout.h"
#include "ops/cpu/kvquant_paged.h"

#include <string.h>

#define G LMC_KVQ_GROUP

static size_t scale_bytes(enum lmc_kvq_fmt f, int64_t row) { return lmc_kvq_paged_scale_bytes(f, row); }

size_t lmc_kvq_paged_row_bytes(enum lmc_kvq_fmt f, int64_t row) {
    LMC_ASSERT((f == LMC_KVQ_Q8 || f == LMC_KVQ_Q4 || lmc_kvq_is_half(f)) && row > 0);
    if (lmc_kvq_is_half(f)) return (size_t)row * sizeof(uint16_t);
    size_t codes = f == LMC_KVQ_Q8 ? (size_t)row : (size_t)(row * 4 + 7) / 8;
    return (scale_bytes(f, row) + codes + 7) & ~(size_t)7;
}
size_t lmc_kvq_paged_row_bytes_q8(int64_t row) { return lmc_kvq_paged_row_bytes(LMC_KVQ_Q8, row); }
size_t lmc_kvq_paged_row_bytes_q4(int64_t row) { return lmc_kvq_paged_row_bytes(LMC_KVQ_Q4, row); }
size_t lmc_kvq_paged_row_bytes_f16(int64_t row) { return lmc_kvq_paged_row_bytes(LMC_KVQ_F16, row); }
size_t lmc_kvq_paged_row_bytes_bf16(int64_t row) { return lmc_kvq_paged_row_bytes(LMC_KVQ_BF16, row); }

void lmc_kvq_paged_store(enum lmc_kvq_fmt f, void *slot, const float *x, int64_t row) {
    char *s = slot;
    if (f == LMC_KVQ_F16) {
        lmc_kvq_paged_store_f16(slot, x, row, false);
        return;
    }
    if (f == LMC_KVQ_BF16) {
        lmc_kvq_paged_store_bf16(slot, x, row);
        return;
    }
    size_t sb = scale_bytes(f, row);
    if (f == LMC_KVQ_Q8) lmc_kvq_q8_quant(x, row, (int8_t *)(s + sb), (uint16_t *)s);
    else lmc_kvq_asym_quant(x, row, 4, (uint8_t *)(s + sb), (uint16_t *)s);
}

void lmc_kvq_paged_decode(enum lmc_kvq_fmt f, const void *slot, int64_t row, int64_t a, int64_t n,
                          float *out) {
    const char *s = slot;
    const uint16_t *sc = (const uint16_t *)s;
    if (lmc_kvq_is_half(f)) {
        for (int64_t i = 0; i < n; i++) out[i] = f == LMC_KVQ_BF16 ? lmc_bf16_to_f32(sc[a + i]) : lmc_f16_to_f32(sc[a + i]);
        return;
    }
    const char *codes = s + scale_bytes(f, row);
    for (int64_t i = a; i < a + n;) { /* one group's run at a time */
        int64_t gs = lmc_kvq_group_of(f), g = i / gs, end = LMC_MIN(a + n, (g + 1) * gs);
        if (f == LMC_KVQ_Q8) {
            float d = lmc_f16_to_f32(sc[g]);
            for (; i < end; i++) out[i - a] = (float)((const int8_t *)codes)[i] * d;
        } else {
            float d = lmc_f16_to_f32(sc[2 * g]), mn = lmc_f16_to_f32(sc[2 * g + 1]);
            for (; i < end; i++) out[i - a] = mn + (float)lmc_kvq_code((const uint8_t *)codes, i, 4) * d;
        }
    }
}

/* a task's scratch: the scores (positions 0..max_pos, rounded up to 16), then the decoded slice */
static int64_t scores_len(int64_t max_pos) { return (max_pos + 1 + 15) / 16 * 16; }

static void qpattn_task(void *arg, int64_t t, int thread) {
    const struct lmc_kvq_paged_job *j = arg;
    int64_t m = t / j->n_heads, h = t % j->n_heads, hd = j->hd, bs = j->bs;
    int64_t p = j->pos[m];
    int64_t lo = j->window > 0 ? LMC_MAX(0, p - j->window + 1) : 0, n = p - lo + 1;
    int64_t kvh = h / (j->n_heads / j->n_kv), row = j->n_kv * hd;
    const int32_t *bt = j->bt + (int64_t)j->seq[m] * j->max_blocks;
    const float *q = j->q + (m * j->n_heads + h) * hd;
    float *s = j->c->scratch[thread], *dec = s + scores_len(j->max_pos), *o = j->out + (m * j->n_heads + h) * hd;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        int64_t ps = lo + i;
        const char *slot = j->kc + ((size_t)bt[ps / bs] * (size_t)bs + (size_t)(ps % bs)) * j->rb;
        lmc_kvq_paged_decode(j->f, slot, row, kvh * hd, hd, dec);
        s[i] = j->scale * lmc_cpu_dot(q, dec, hd);
        if (s[i] > mx) mx = s[i];
    }
    double sum = lmc_cpu_exp_sum(s, n, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        int64_t ps = lo + i;
        const char *slot = j->vc + ((size_t)bt[ps / bs] * (size_t)bs + (size_t)(ps % bs)) * j->rb;
        lmc_kvq_paged_decode(j->f, slot, row, kvh * hd, hd, dec);
        lmc_cpu_axpy(o, s[i], dec, hd);
    }
    float inv = (float)(1.0 / sum);
    for (int64_t d = 0; d < hd; d++) o[d] *= inv;
}

/* every format's step: the new rows into their slots, then the format's kernel */
static void attention_paged_kvq(void *ctx, enum lmc_kvq_fmt f, float *out, const float *q,
                                const float *k_new, const float *v_new, void *kc, void *vc, int64_t T,
                                const int32_t *seq, const int32_t *pos, const int32_t *bt,
                                int64_t max_blocks, int64_t block_size, int64_t n_heads, int64_t n_kv,
                                int64_t hd, float scale, int64_t window) {
    struct lmc_cpu_ctx *c = ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    int64_t row = n_kv * hd, max_pos = 0;
    size_t rb = lmc_kvq_paged_row_bytes(f, row);
    for (int64_t i = 0; i < T; i++) {
        int64_t p = pos[i];
        LMC_ASSERT(p >= 0 && p / block_size < max_blocks);
        size_t slot = (size_t)bt[(int64_t)seq[i] * max_blocks + p / block_size] * (size_t)block_size +
                      (size_t)(p % block_size);
        char *ks = (char *)kc + slot * rb, *vs = (char *)vc + slot * rb;
        if (f == LMC_KVQ_F16) {
            lmc_kvq_paged_store_f16((uint16_t *)(void *)ks, k_new + i * row, row, c->drf_avx2);
            lmc_kvq_paged_store_f16((uint16_t *)(void *)vs, v_new + i * row, row, c->drf_avx2);
        } else if (f == LMC_KVQ_BF16) {
            lmc_kvq_paged_store_bf16((uint16_t *)(void *)ks, k_new + i * row, row);
            lmc_kvq_paged_store_bf16((uint16_t *)(void *)vs, v_new + i * row, row);
        } else {
            lmc_kvq_paged_store(f, ks, k_new + i * row, row);
            lmc_kvq_paged_store(f, vs, v_new + i * row, row);
        }
        if (p > max_pos) max_pos = p;
    }
    struct lmc_kvq_paged_job j = {c, f, out, q, kc, vc, seq, pos, bt, T, max_blocks, block_size,
                                  n_heads, n_kv, hd, window, max_pos, rb, scale, 0};
    if (lmc_kvq_is_half(f)) {
        lmc_kvq_paged_attend_h16(&j);
        return;
    }
    lmc_cpu_scratch_reserve(c, (size_t)(scores_len(max_pos) + hd));
    lmc_pool_run(c->pool, T * n_heads, qpattn_task, &j);
}

/* the backend entries lmc_kvq_attention_paged_q8, _q4, _f16 and _bf16 (backend.h's attention_paged) */
#define PAGED_ENTRY(name, fmt)                                                                                    \
    void name(void *ctx, float *out, const float *q, const float *k_new, const float *v_new, float *kc, float *vc, \
              int64_t T, const int32_t *seq, const int32_t *pos, const int32_t *bt, int64_t max_blocks,         \
              int64_t block_size, int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window) {     \
        attention_paged_kvq(ctx, fmt, out, q, k_new, v_new, kc, vc, T, seq, pos, bt, max_blocks, block_size,     \
                            n_heads, n_kv, hd, scale, window);                                                   \
    }
PAGED_ENTRY(lmc_kvq_attention_paged_q8, LMC_KVQ_Q8)
PAGED_ENTRY(lmc_kvq_attention_paged_q4, LMC_KVQ_Q4)
PAGED_ENTRY(lmc_kvq_attention_paged_f16, LMC_KVQ_F16)
PAGED_ENTRY(lmc_kvq_attention_paged_bf16, LMC_KVQ_BF16)
