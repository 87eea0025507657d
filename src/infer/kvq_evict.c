/* kvq_evict.c — StreamingLLM eviction (kvq_stream.h) over a whole
 * single-sequence cache in any format it holds: f32 rows in place
 * (lmc_stream_evict_rows); f16 / bf16 rows (lmc_kvq_backend_fmt's cache)
 * and the compressed layers (q8, q4, kivi2: lmc_kvq_backend) decoded into
 * a scratch, moved and re-rotated there in f32, and stored back. */
#include "infer/kvq.h"
#include "infer/kvq_stream.h"
#include "core/core.h"

void lmc_kvq_evict(struct lmc_kv *kv, int64_t used, int64_t n_kv, int64_t hd, int64_t rot_dim,
                   const double *inv_freq, int64_t sinks, int64_t e, float *scratch) {
    const struct lmc_backend *be = kv->be;
    LMC_ASSERT(be->host_memory && used <= kv->ctx && n_kv * hd == kv->row);
    if (e <= 0) return;
    int64_t row = kv->row, moved = used - sinks - e;
    for (int64_t l = 0; l < kv->n_layers; l++) {
        char *kr = (char *)kv->k + (size_t)l * kv->layer_bytes, *vr = (char *)kv->v + (size_t)l * kv->layer_bytes;
        if (be->kv_dtype == LMC_DTYPE_F32) {
            lmc_stream_evict_rows((float *)(void *)kr, (float *)(void *)vr, used, n_kv, hd, rot_dim, inv_freq, sinks, e);
            continue;
        }
        /* the rows from the sinks on, decoded: k then v (used - sinks rows each) */
        float *k = scratch, *v = scratch + (used - sinks) * row;
        if (be->kv_dtype == LMC_DTYPE_F16 || be->kv_dtype == LMC_DTYPE_BF16) {
            /* the rows as one run of 2-byte values, through the paged pool's converters */
            enum lmc_kvq_fmt f = be->kv_dtype == LMC_DTYPE_BF16 ? LMC_KVQ_BF16 : LMC_KVQ_F16;
            const int64_t nd = (used - sinks) * row, ne = moved * row;
            lmc_kvq_paged_decode(f, (const uint16_t *)(void *)kr + sinks * row, nd, 0, nd, k);
            lmc_kvq_paged_decode(f, (const uint16_t *)(void *)vr + sinks * row, nd, 0, nd, v);
            lmc_stream_evict_rows(k, v, used - sinks, n_kv, hd, rot_dim, inv_freq, 0, e);
            lmc_kvq_paged_store(f, (uint16_t *)(void *)kr + sinks * row, k, ne);
            lmc_kvq_paged_store(f, (uint16_t *)(void *)vr + sinks * row, v, ne);
            continue;
        }
        LMC_ASSERT(lmc_kvq_layer_len(kr) >= used);
        for (int64_t t = sinks; t < used; t++)
            lmc_kvq_layer_row(kr, vr, t, k + (t - sinks) * row, v + (t - sinks) * row);
        lmc_stream_evict_rows(k, v, used - sinks, n_kv, hd, rot_dim, inv_freq, 0, e);
        lmc_kvq_layer_store(kr, vr, k, v, moved, sinks); /* drops positions >= sinks, appends the moved rows */
    }
}
