/* kvq.c — the backend variants for compressed and 2-byte KV caches (see
 * kvq.h): the single-sequence cache (CPU: f16, bf16, q8, q4, kivi2; CUDA:
 * its own bf16, q8, q4, kivi2) and the paged pool of the scheduler (CPU:
 * f16, bf16, q8, q4, kivi2; CUDA: q8, q4, kivi2). */
#include "infer/kvq.h"
#include "ops/cpu/kvquant_layout.h"
#include "core/core.h"
#include "ops/backend_cuda.h"

#include <string.h>

static bool is_cpu(const struct lmc_backend *be) { return be->name && !strcmp(be->name, "cpu") && be->host_memory; }

lmc_status lmc_kvq_backend(struct lmc_backend *out, const struct lmc_backend *cpu, lmc_err *err) {
    if (cpu->name && !strcmp(cpu->name, "cuda")) {
        *out = *cpu;
        lmc_backend_cuda_set_kvq(out);
        if (out->attention == cpu->attention)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "the CUDA module has no compressed KV cache");
        return LMC_OK;
    }
    if (!is_cpu(cpu))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "compressed KV caches run on the CPU and CUDA backends only (not %s)",
                           cpu->name ? cpu->name : "?");
    *out = *cpu;
    out->kv_dtype = LMC_DTYPE_I16; /* opaque 2-byte slots: the layer's compressed data */
    out->rope_kv_store = lmc_kvq_rope_kv_store;
    out->attention = lmc_kvq_attention;
    out->attention_paged = NULL; /* the paged pool is not compressed (pending) */
    return LMC_OK;
}

lmc_status lmc_kvq_backend_fmt(struct lmc_backend *out, const struct lmc_backend *cpu, enum lmc_kvq_fmt f,
                               lmc_err *err) {
    if (!lmc_kvq_is_half(f)) {
        if (f < LMC_KVQ_Q8 || f > LMC_KVQ_KIVI2) return lmc_err_set(err, LMC_ERR_ARG, "KV cache format %d unknown", (int)f);
        return lmc_kvq_backend(out, cpu, err);
    }
    if (cpu->name && !strcmp(cpu->name, "cuda")) { /* the CUDA cache is bf16 already (its fp32 check mode: f32) */
        if (f == LMC_KVQ_BF16 && cpu->kv_dtype == LMC_DTYPE_BF16) {
            *out = *cpu;
            return LMC_OK;
        }
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "the CUDA backend's KV cache is %s; --kv-dtype %s runs on the CPU",
                           cpu->kv_dtype == LMC_DTYPE_BF16 ? "bf16" : "f32", lmc_kvq_name(f));
    }
    if (!is_cpu(cpu))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "the %s KV cache runs on the CPU and CUDA backends only (not %s)",
                           lmc_kvq_name(f), cpu->name ? cpu->name : "?");
    *out = *cpu;
    bool bf = f == LMC_KVQ_BF16;
    out->kv_dtype = bf ? LMC_DTYPE_BF16 : LMC_DTYPE_F16;
    out->rope_kv_store = bf ? lmc_kvq_rope_kv_store_bf16 : lmc_kvq_rope_kv_store_f16;
    out->attention = bf ? lmc_kvq_attention_bf16 : lmc_kvq_attention_f16;
    out->attention_mask = NULL;   /* token trees need the f32 cache (lmc_model_mask_ok) */
    out->attention_paged = NULL;  /* the paged pool's formats: lmc_kvq_paged_backend */
    return LMC_OK;
}

lmc_status lmc_kvq_kv_format(struct lmc_kv *kv, enum lmc_kvq_fmt f, int64_t residual, lmc_err *err) {
    const struct lmc_backend *be = kv->be;
    if (lmc_kvq_is_half(f)) { /* plain 2-byte rows: nothing to prepare */
        if (be && be->kv_dtype == (f == LMC_KVQ_BF16 ? LMC_DTYPE_BF16 : LMC_DTYPE_F16)) return LMC_OK;
        return lmc_err_set(err, LMC_ERR_ARG, "KV cache was not made with the %s cache's backend", lmc_kvq_name(f));
    }
    if (!be || be->kv_dtype != LMC_DTYPE_I16 || !be->rope_kv_store)
        return lmc_err_set(err, LMC_ERR_ARG, "KV cache was not made with the compressed-cache backend");
    size_t layer = kv->layer_bytes;
    /* the header is all a fresh layer needs: made on the host, uploaded
     * where the cache is device memory */
    _Alignas(8) unsigned char hdr[LMC_KVQ_HDR];
    for (int64_t l = 0; l < kv->n_layers; l++) {
        char *kr = (char *)kv->k + (size_t)l * layer, *vr = (char *)kv->v + (size_t)l * layer;
        if (be->host_memory) {
            lmc_status st = lmc_kvq_layer_init(kr, vr, f, kv->ctx, kv->row, residual, layer, err);
            if (st) return st;
            continue;
        }
        if (layer < sizeof hdr) return lmc_err_set(err, LMC_ERR_ARG, "KV cache layer too small");
        lmc_status st = lmc_kvq_layer_init(hdr, NULL, f, kv->ctx, kv->row, residual, layer, err);
        if (st) return st;
        be->upload(be->ctx, kr, hdr, sizeof hdr);
    }
    return LMC_OK;
}

lmc_status lmc_kvq_kv_init(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be, int64_t ctx,
                           enum lmc_kvq_fmt f, int64_t residual, lmc_err *err) {
    if (f == LMC_KVQ_NONE) return lmc_kv_init(kv, m, be, ctx, err); /* the backend's own cache */
    size_t bytes = 0;
    if (!lmc_kvq_is_half(f)) {
        if (f == LMC_KVQ_KIVI2 && (residual < 0 || residual > 4096))
            return lmc_err_set(err, LMC_ERR_ARG, "KIVI residual length %lld out of range (0..4096)", (long long)residual);
        bytes = lmc_kvq_layer_bytes(f, ctx, m->arch->mixer->kv_row(&m->cfg), residual);
        if (!bytes) return lmc_err_set(err, LMC_ERR_ARG, "KV cache format %d unknown", (int)f);
    }
    lmc_status st = lmc_kv_init_bytes(kv, m, be, ctx, bytes, err);
    if (!st) st = lmc_kvq_kv_format(kv, f, residual, err);
    if (st) lmc_kv_free(kv);
    return st;
}

/* attention_paged of the KIVI-2 variant: its pool is read only through
 * attention_paged_ring, which forward_batch calls once the pool has a ring
 * (and refuses a step before) */
static void kivi_unringed(void *ctx, float *out, const float *q, const float *k_new,
                          const float *v_new, float *kc, float *vc, int64_t T, const int32_t *seq,
                          const int32_t *pos, const int32_t *bt, int64_t max_blocks,
                          int64_t block_size, int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                          int64_t window) {
    (void)ctx, (void)out, (void)q, (void)k_new, (void)v_new, (void)kc, (void)vc, (void)T, (void)seq;
    (void)pos, (void)bt, (void)max_blocks, (void)block_size, (void)n_heads, (void)n_kv, (void)hd;
    (void)scale, (void)window;
    LMC_ASSERT(!"a KIVI-2 paged pool needs its ring (lmc_kv_pool_ring_init)");
}

lmc_status lmc_kvq_paged_backend(struct lmc_backend *out, const struct lmc_backend *cpu,
                                 enum lmc_kvq_fmt f, lmc_err *err) {
    if (!lmc_kvq_is_half(f) && f != LMC_KVQ_Q8 && f != LMC_KVQ_Q4 && f != LMC_KVQ_KIVI2)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "the paged KV pool (lmc serve) takes --kv-dtype f32, f16, bf16, q8, q4 or kivi2, not %s",
                           lmc_kvq_name(f) ? lmc_kvq_name(f) : "?");
    if (lmc_kvq_is_half(f) && !(cpu->name && !strcmp(cpu->name, "cpu")))
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "the %s paged KV pool runs on the CPU backend only (not %s)",
                           lmc_kvq_name(f), cpu->name ? cpu->name : "?");
    if (cpu->name && !strcmp(cpu->name, "cuda")) { /* ops/cuda/attention_paged_kvq.cu */
        *out = *cpu;
        lmc_backend_cuda_set_kvq_paged(out, (int)f);
        if (f == LMC_KVQ_KIVI2 ? !out->attention_paged_ring : out->attention_paged == cpu->attention_paged)
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "the CUDA module has no compressed paged KV pool");
        if (f == LMC_KVQ_KIVI2) out->attention_paged = kivi_unringed;
        out->kv_row_bytes = f == LMC_KVQ_Q8 ? lmc_kvq_paged_row_bytes_q8
                            : f == LMC_KVQ_Q4 ? lmc_kvq_paged_row_bytes_q4 : lmc_kvq_paged_row_bytes_kivi2;
        return LMC_OK;
    }
    if (!is_cpu(cpu) || !cpu->attention_paged)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "a compressed paged KV pool runs on the CPU and CUDA backends only (not %s)",
                           cpu->name ? cpu->name : "?");
    *out = *cpu;
    if (f == LMC_KVQ_KIVI2) {
        out->attention_paged = kivi_unringed;
        out->attention_paged_ring = lmc_kvq_attention_paged_kivi2;
        out->kv_row_bytes = lmc_kvq_paged_row_bytes_kivi2;
        return LMC_OK;
    }
    out->attention_paged = f == LMC_KVQ_Q8 ? lmc_kvq_attention_paged_q8
                           : f == LMC_KVQ_Q4 ? lmc_kvq_attention_paged_q4
                           : f == LMC_KVQ_BF16 ? lmc_kvq_attention_paged_bf16 : lmc_kvq_attention_paged_f16;
    out->kv_row_bytes = f == LMC_KVQ_Q8 ? lmc_kvq_paged_row_bytes_q8
                        : f == LMC_KVQ_Q4 ? lmc_kvq_paged_row_bytes_q4
                        : f == LMC_KVQ_BF16 ? lmc_kvq_paged_row_bytes_bf16 : lmc_kvq_paged_row_bytes_f16;
    return LMC_OK;
}
