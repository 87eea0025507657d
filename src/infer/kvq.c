/* kvq.c — the CPU backend variant for compressed KV caches (see kvq.h). */
#include "infer/kvq.h"
#include "core/core.h"

#include <string.h>

lmc_status lmc_kvq_backend(struct lmc_backend *out, const struct lmc_backend *cpu, lmc_err *err) {
    if (!cpu->name || strcmp(cpu->name, "cpu") || !cpu->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "compressed KV caches run on the CPU backend only (not %s)",
                           cpu->name ? cpu->name : "?");
    *out = *cpu;
    out->kv_dtype = LMC_DTYPE_I16; /* opaque 2-byte slots: the layer's compressed data */
    out->rope_kv_store = lmc_kvq_rope_kv_store;
    out->attention = lmc_kvq_attention;
    out->attention_paged = NULL; /* the paged pool is not compressed (pending) */
    return LMC_OK;
}

lmc_status lmc_kvq_kv_format(struct lmc_kv *kv, enum lmc_kvq_fmt f, int64_t residual, lmc_err *err) {
    if (!kv->be || kv->be->kv_dtype != LMC_DTYPE_I16 || kv->be->attention != lmc_kvq_attention)
        return lmc_err_set(err, LMC_ERR_ARG, "KV cache was not made with the compressed-cache backend");
    size_t layer = (size_t)kv->ctx * (size_t)kv->row * 2;
    for (int64_t l = 0; l < kv->n_layers; l++) {
        lmc_status st = lmc_kvq_layer_init((char *)kv->k + (size_t)l * layer,
                                           (char *)kv->v + (size_t)l * layer, f, kv->ctx, kv->row,
                                           residual, err);
        if (st) return st;
    }
    return LMC_OK;
}
