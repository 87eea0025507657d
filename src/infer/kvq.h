/* kvq.h — compressed KV caches (q8, q4, kivi2: ops/cpu/kvquant.h) for a
 * single-sequence model forward on the CPU, without changes to the model
 * code: a CPU backend variant whose KV element type is an opaque 2-byte
 * slot (the forward writes the cache only through rope_kv_store and
 * reads it only through attention, at layer offsets of kv->layer_bytes),
 * with those two entries replaced by the compressed store and the
 * attention that reads compressed rows. The cache holds the compressed
 * rows only (no f32 copy); lmc_kvq_kv_init sizes its layers by the
 * format. Also the f16 / bf16 caches (2-byte rows) and the paged pool's
 * formats. */
#ifndef LMC_KVQ_H
#define LMC_KVQ_H

#include "lmc.h"
#include "model/model.h"
#include "ops/cpu/kvquant.h"

/* out = cpu with kv_dtype, rope_kv_store and attention replaced (sharing
 * cpu's ctx: free only cpu). LMC_ERR_UNSUPPORTED unless cpu is the CPU
 * backend. */
lmc_status lmc_kvq_backend(struct lmc_backend *out, const struct lmc_backend *cpu, lmc_err *err);

/* The backend a single-sequence cache of format f runs on: for q8, q4
 * and kivi2 lmc_kvq_backend's variant (then lmc_kvq_kv_format on each
 * cache); for f16 and bf16 on the CPU a variant whose cache holds 2-byte
 * rows (kv_dtype F16 / BF16: rope_kv_store rounds the rows to nearest
 * even, attention reads them directly, attention_paged_f16.c's kernel);
 * on CUDA bf16 is the backend's own cache (*out = *cpu) and f16 is
 * refused. Shares cpu's ctx (free only cpu). LMC_ERR_UNSUPPORTED for a
 * backend without that format. */
lmc_status lmc_kvq_backend_fmt(struct lmc_backend *out, const struct lmc_backend *cpu, enum lmc_kvq_fmt f,
                               lmc_err *err);

/* Prepares every layer of kv (from lmc_kv_init with such a backend) for
 * format f; KIVI keeps the last `residual` tokens in f16. Call again to
 * start a new sequence from position 0 in another format. f16 / bf16 need
 * nothing prepared: LMC_OK when kv's backend keeps that element type
 * (lmc_kvq_backend_fmt), else LMC_ERR_ARG. */
lmc_status lmc_kvq_kv_format(struct lmc_kv *kv, enum lmc_kvq_fmt f, int64_t residual, lmc_err *err);

/* lmc_kv_init for a cache of format f on be (lmc_kvq_backend_fmt's
 * backend for f; NONE: lmc_kv_init, the backend's own cache) and
 * lmc_kvq_kv_format: the layers sized by the format
 * (q8 ~0.53x, q4 ~0.31x, kivi2 ~0.19x a bf16 cache's bytes, plus KIVI's
 * ring of residual + 32 f16 rows; f16 / bf16 2 bytes a value), so the
 * compressed formats save memory in a single-sequence cache too. */
lmc_status lmc_kvq_kv_init(struct lmc_kv *kv, const struct lmc_model *m, const struct lmc_backend *be, int64_t ctx,
                           enum lmc_kvq_fmt f, int64_t residual, lmc_err *err);

/* StreamingLLM eviction (kvq_stream.h) over every layer of a host cache
 * holding `used` positions, in whatever it holds: rows sinks+e..used-1
 * move to sinks.., their keys rotated back by e positions. f32 rows move
 * in place; f16 / bf16 and compressed rows are decoded into scratch (2 *
 * (used - sinks) * row floats), moved there and stored again, so each
 * eviction rounds or quantizes the moved rows once more (callers evict in
 * chunks: a row is moved a few times in its life, not once per token).
 * kvq_evict.c. */
void lmc_kvq_evict(struct lmc_kv *kv, int64_t used, int64_t n_kv, int64_t hd, int64_t rot_dim,
                   const double *inv_freq, int64_t sinks, int64_t e, float *scratch);

/* out = cpu with the paged pool in format f (f16, bf16, q8, q4, kivi2):
 * attention_paged stores and reads rows of that format and kv_row_bytes
 * sizes the pool by them, so lmc_kv_pool_init / the scheduler give f32's
 * memory budget 2x (f16, bf16), ~3.8x (q8), ~6.4x (q4) or ~10x (kivi2) the
 * blocks. f16 (attention_paged_f16.c's kernel, half the bytes attention
 * reads) is lmc serve's default on the CPU backend; f16 and bf16 are CPU
 * only. kivi2 uses
 * attention_paged_ring instead: its pool needs lmc_kv_pool_ring_init (each
 * running sequence's recent rows in f16) and a block size that is a
 * multiple of 32. Prefix caching and copy-on-write move blocks as bytes.
 * Shares cpu's ctx (free only cpu). LMC_ERR_UNSUPPORTED for another format
 * or backend. */
lmc_status lmc_kvq_paged_backend(struct lmc_backend *out, const struct lmc_backend *cpu,
                                 enum lmc_kvq_fmt f, lmc_err *err);

#endif
