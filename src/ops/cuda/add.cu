/* add.cu — y[i] = a[i] + b[i] on the GPU; y may alias a or b. */
#include "ops/cuda/common.cuh"

__global__ void add_fwd_kernel(float *y, const float *a, const float *b, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

extern "C" void lmc_cuda_add(void *ctx, float *y, const float *a, const float *b, int64_t n) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    add_fwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(y, a, b, n);
    LMC_CUDA_LAUNCH_CHECK();
}
