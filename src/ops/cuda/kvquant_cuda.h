/* kvquant_cuda.h — the CUDA twin of the compressed KV cache's attention
 * (ops/cpu/kvquant.h), callable from C: same contract as the backend's
 * attention with k, v pointing at one layer's compressed K and V regions
 * (device memory, laid out by ops/cpu/kvquant_layout.h). Up to 12,000
 * positions (the scores stay in shared memory). The compressed store
 * (rope_kv_store) has no CUDA twin yet. */
#ifndef LMC_KVQUANT_CUDA_H
#define LMC_KVQUANT_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void lmc_cuda_kvq_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                            int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                            float scale, int64_t window);

#ifdef __cplusplus
}
#endif

#endif
