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

/* ---- backward ----
 * tanh form: gelu = 0.5 x (1 + tanh u), u = k0 (x + k1 x^3):
 *   gelu' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k0 (1 + 3 k1 x^2)
 * exact: gelu' = Phi(x) + x phi(x) (as the CPU twin). dx may alias dy. */
__global__ void gelu_bwd_kernel(float *dx, const float *dy, const float *x, int64_t n,
                                int tanh_approx) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i], d;
        if (tanh_approx) {
            float th = tanhf(k0 * (v + k1 * v * v * v));
            d = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * k0 * (1.0f + 3.0f * k1 * v * v);
        } else {
            d = 0.5f * erfcf(-v * 0.70710678118654752f) +
                v * 0.39894228040143268f * expf(-0.5f * v * v);
        }
        dx[i] = dy[i] * d;
    }
}

extern "C" void lmc_cuda_gelu_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n,
                                  int tanh_approx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    gelu_bwd_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(dx, dy, x, n, tanh_approx);
    LMC_CUDA_LAUNCH_CHECK();
}
