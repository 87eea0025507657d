/* dropout.cu — inverted dropout on the GPU (backend.h dropout): the same
 * counter-based mask as the CPU op (lmc_dropout_keep of core/rng.h, shared
 * host/device), so both backends drop the same elements for a seed and the
 * op is its own backward. y may alias x. */
#include "ops/cuda/common.cuh"
#include "core/rng.h"

__global__ void dropout_kernel(float *y, const float *x, int64_t n, uint32_t thr, float scale, uint64_t seed,
                               int64_t offset) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = lmc_dropout_keep(seed, (uint64_t)(offset + i), thr) ? x[i] * scale : 0.0f;
}

extern "C" void lmc_cuda_dropout(void *ctx, float *y, const float *x, int64_t n, float p, uint64_t seed,
                                 int64_t offset) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n >= 0 && offset >= 0 && p >= 0.0f && p < 1.0f);
    if (n <= 0) return;
    dropout_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(y, x, n, lmc_dropout_threshold(p),
                                                                    (float)(1.0 / (1.0 - (double)p)), seed, offset);
    LMC_CUDA_LAUNCH_CHECK();
}
