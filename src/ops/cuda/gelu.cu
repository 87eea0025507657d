/* gelu.cu — y[i] = gelu(x[i]) on the GPU: the tanh approximation as
 * x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (no cancellation), or
 * the exact 0.5 x erfc(-x / sqrt 2), as the CPU twin. y may alias x. */
#include "ops/cuda/common.cuh"

__global__ void gelu_fwd_kernel(float *y, const float *x, int64_t n, int tanh_approx) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        if (tanh_approx) {
            float inner = v + 0.044715f * v * v * v;
            y[i] = v / (1.0f + expf(-2.0f * 0.7978845608028654f * inner));
        } else {
            y[i] = 0.5f * v * erfcf(-v * 0.70710678118654752f);
        }
    }
}

extern "C" void lmc_cuda_gelu(void *ctx, float *y, const float *x, int64_t n, int tanh_approx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    gelu_fwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(y, x, n, tanh_approx);
    LMC_CUDA_LAUNCH_CHECK();
}
