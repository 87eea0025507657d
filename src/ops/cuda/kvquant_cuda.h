/* kvquant_cuda.h — the CUDA twin of the compressed KV cache's attention
 * (ops/cpu/kvquant.h), callable from C: same contract as the backend's
 * attention with k, v pointing at one layer's compressed K and V regions
 * (device memory, laid out by ops/cpu/kvquant_layout.h). Up to 12,000
 * positions (the scores stay in shared memory); and the compressed store
 * with rope_kv_store's contract (pos consecutive; it reads the layer's
 * header and pos[0] back to the host, so it synchronises). */
#ifndef LMC_KVQUANT_CUDA_H
#define LMC_KVQUANT_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void lmc_cuda_kvq_rope_kv_store(void *ctx, float *q, float *k, const float *v, void *kc, void *vc,
                                int64_t M, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim,
                                const int32_t *pos, const double *inv_freq, float attn_scale);
void lmc_cuda_kvq_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                            int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                            float scale, int64_t window);

#ifdef __cplusplus
}
#endif

#endif
