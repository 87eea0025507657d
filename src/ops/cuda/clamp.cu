/* clamp.cu — y = min(max(x, -c), c) elementwise on the GPU (backend.h
 * clamp; OLMoE's clip_qkv) and its backward dx = dy where -c <= x <= c,
 * 0 elsewhere (torch.clamp's gradient, the bounds included), x the values
 * before clamping. CPU twin ops/cpu/clamp.c. y may alias x, dx dy. */
#include "ops/cuda/common.cuh"

__global__ void clamp_fwd_kernel(float *y, const float *x, int64_t n, float c) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v > c ? c : v < -c ? -c : v;
    }
}

__global__ void clamp_bwd_kernel(float *dx, const float *dy, const float *x, int64_t n, float c) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dx[i] = (x[i] >= -c && x[i] <= c) ? dy[i] : 0.0f;
}

extern "C" void lmc_cuda_clamp(void *ctx, float *y, const float *x, int64_t n, float c) {
    struct lmc_cuda_ctx *cc = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n >= 0 && c > 0.0f);
    if (n == 0) return;
    clamp_fwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, cc->stream>>>(y, x, n, c);
    LMC_CUDA_LAUNCH_CHECK();
}

extern "C" void lmc_cuda_clamp_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n, float c) {
    struct lmc_cuda_ctx *cc = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n >= 0 && c > 0.0f);
    if (n == 0) return;
    clamp_bwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, cc->stream>>>(dx, dy, x, n, c);
    LMC_CUDA_LAUNCH_CHECK();
}
