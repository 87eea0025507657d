/* attention_kv16.c — the single-sequence KV cache in f16 or bf16 on the
 * CPU (`lmc generate/chat/eval --kv-dtype f16|bf16`; infer/kvq.h's
 * lmc_kvq_backend_fmt): a layer's cache is (ctx, n_kv * hd) 2-byte values,
 * row t = position t, no header. rope_kv_store rotates q and k (the CPU
 * rope), then rounds the k and v rows to nearest even into rows pos[m];
 * attention runs the paged f16/bf16 kernel (attention_paged_f16.c) over
 * the cache as one block of one sequence, queries at pos0.., so a decode
 * step reads half the f32 cache's bytes and never a converted copy. */
#include "ops/cpu/kvquant.h"
#include "ops/cpu/kvquant_paged.h"
#include "ops/cpu/ops_cpu.h"

static void kv16_store(void *ctx, enum lmc_kvq_fmt f, float *q, float *k, const float *v, void *kc, void *vc,
                       int64_t M, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim, const int32_t *pos,
                       const double *inv_freq, float attn_scale) {
    struct lmc_cpu_ctx *c = ctx;
    if (M <= 0) return;
    if (rot_dim) {
        lmc_cpu_rope(ctx, q, M, n_heads, hd, rot_dim, pos, inv_freq, attn_scale);
        lmc_cpu_rope(ctx, k, M, n_kv, hd, rot_dim, pos, inv_freq, attn_scale);
    }
    int64_t row = n_kv * hd;
    for (int64_t m = 0; m < M; m++) {
        LMC_ASSERT(pos[m] >= 0);
        uint16_t *kd = (uint16_t *)kc + (size_t)pos[m] * (size_t)row, *vd = (uint16_t *)vc + (size_t)pos[m] * (size_t)row;
        if (f == LMC_KVQ_BF16) {
            lmc_kvq_paged_store_bf16(kd, k + m * row, row);
            lmc_kvq_paged_store_bf16(vd, v + m * row, row);
        } else {
            lmc_kvq_paged_store_f16(kd, k + m * row, row, c->drf_avx2);
            lmc_kvq_paged_store_f16(vd, v + m * row, row, c->drf_avx2);
        }
    }
}

static void kv16_attention(void *ctx, enum lmc_kvq_fmt f, float *out, const float *q, const float *k,
                           const float *v, int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                           float scale, int64_t window) {
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0);
    if (M <= 0 || n_heads <= 0 || hd <= 0) return;
    static const int32_t one_block[1] = {0};
    /* one block as long as the cache can be: position t is row t */
    struct lmc_kvq_paged_job j = {ctx, f, out, q, (const char *)k, (const char *)v, NULL, NULL, one_block,
                                  M, 1, INT64_MAX / 4, n_heads, n_kv, hd, window, pos0 + M - 1,
                                  (size_t)(n_kv * hd) * 2, scale, pos0};
    lmc_kvq_paged_attend_h16(&j);
}

void lmc_kvq_rope_kv_store_f16(void *ctx, float *q, float *k, const float *v, void *kc, void *vc, int64_t M,
                               int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim, const int32_t *pos,
                               const double *inv_freq, float attn_scale) {
    kv16_store(ctx, LMC_KVQ_F16, q, k, v, kc, vc, M, n_heads, n_kv, hd, rot_dim, pos, inv_freq, attn_scale);
}

void lmc_kvq_rope_kv_store_bf16(void *ctx, float *q, float *k, const float *v, void *kc, void *vc, int64_t M,
                                int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim, const int32_t *pos,
                                const double *inv_freq, float attn_scale) {
    kv16_store(ctx, LMC_KVQ_BF16, q, k, v, kc, vc, M, n_heads, n_kv, hd, rot_dim, pos, inv_freq, attn_scale);
}

void lmc_kvq_attention_f16(void *ctx, float *out, const float *q, const float *k, const float *v, int64_t M,
                           int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window) {
    kv16_attention(ctx, LMC_KVQ_F16, out, q, k, v, M, pos0, n_heads, n_kv, hd, scale, window);
}

void lmc_kvq_attention_bf16(void *ctx, float *out, const float *q, const float *k, const float *v, int64_t M,
                            int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window) {
    kv16_attention(ctx, LMC_KVQ_BF16, out, q, k, v, M, pos0, n_heads, n_kv, hd, scale, window);
}
