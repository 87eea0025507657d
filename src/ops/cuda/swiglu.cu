/* swiglu.cu — y[i] = silu(gate[i]) * up[i] on the GPU; y may alias gate
 * or up (each element is read before it is written by the same thread). */
#include "ops/cuda/common.cuh"

__global__ void swiglu_fwd_kernel(float *y, const float *g, const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float a = g[i];
        y[i] = a / (1.0f + expf(-a)) * u[i];
    }
}

extern "C" void lmc_cuda_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    swiglu_fwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(y, gate, up, n);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward ----
 * s = sigmoid(g): dgate = dy * up * s * (1 + g * (1 - s)), dup = dy * g * s
 * (as the CPU twin). Each thread reads its element of dy, gate and up
 * before writing, so dgate or dup may alias dy. */
__global__ void swiglu_bwd_kernel(float *dg, float *du, const float *dy, const float *g,
                                  const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float a = g[i], b = u[i], d = dy[i];
        float s = 1.0f / (1.0f + expf(-a));
        dg[i] = d * b * s * (1.0f + a * (1.0f - s));
        du[i] = d * a * s;
    }
}

extern "C" void lmc_cuda_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dy,
                                    const float *gate, const float *up, int64_t n) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    swiglu_bwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(dgate, dup, dy, gate, up, n);
    LMC_CUDA_LAUNCH_CHECK();
}
