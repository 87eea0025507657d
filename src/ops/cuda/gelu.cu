/* gelu.cu — y[i] = gelu(x[i]) on the GPU: the tanh approximation as
 * x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (no cancellation), or
 * the exact 0.5 x erfc(-x / sqrt 2), as the CPU twin. y may alias x. */
#include "ops/cuda/common.cuh"

__device__ __forceinline__ float gelu_f(float v, int tanh_approx) {
    if (tanh_approx) {
        float inner = v + 0.044715f * v * v * v;
        return v / (1.0f + expf(-2.0f * 0.7978845608028654f * inner));
    }
    return 0.5f * v * erfcf(-v * 0.70710678118654752f);
}

/* vec: x and y 16-byte aligned, 4 elements a step; the n % 4 tail (and
 * everything when !vec) one element a thread. */
__global__ void gelu_fwd_kernel(float *y, const float *x, int64_t n, int tanh_approx, int vec) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t gi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec) {
        for (int64_t i = gi; i < n / 4; i += stride) {
            float4 v = __ldg((const float4 *)(x + 4 * i));
            v.x = gelu_f(v.x, tanh_approx), v.y = gelu_f(v.y, tanh_approx);
            v.z = gelu_f(v.z, tanh_approx), v.w = gelu_f(v.w, tanh_approx);
            *(float4 *)(y + 4 * i) = v;
        }
        done = n / 4 * 4;
    }
    for (int64_t i = done + gi; i < n; i += stride) y[i] = gelu_f(x[i], tanh_approx);
}

static int gelu_vec(const void *a, const void *b, const void *c) {
    return ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % 16 == 0;
}

extern "C" void lmc_cuda_gelu(void *ctx, float *y, const float *x, int64_t n, int tanh_approx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    int vec = gelu_vec(y, x, x);
    gelu_fwd_kernel<<<lmc_cuda_blocks(vec ? (n + 3) / 4 : n, 256), 256, 0, c->stream>>>(y, x, n, tanh_approx, vec);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward ----
 * tanh form: gelu = 0.5 x (1 + tanh u), u = k0 (x + k1 x^3):
 *   gelu' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k0 (1 + 3 k1 x^2)
 * exact: gelu' = Phi(x) + x phi(x) (as the CPU twin). dx may alias dy. */
__device__ __forceinline__ float gelu_d(float v, int tanh_approx) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    if (tanh_approx) {
        float th = tanhf(k0 * (v + k1 * v * v * v));
        return 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * k0 * (1.0f + 3.0f * k1 * v * v);
    }
    return 0.5f * erfcf(-v * 0.70710678118654752f) + v * 0.39894228040143268f * expf(-0.5f * v * v);
}

__global__ void gelu_bwd_kernel(float *dx, const float *dy, const float *x, int64_t n,
                                int tanh_approx, int vec) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t gi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec) { /* dx may alias dy: each element is read before it is written */
        for (int64_t i = gi; i < n / 4; i += stride) {
            float4 v = __ldg((const float4 *)(x + 4 * i)), d = *(const float4 *)(dy + 4 * i);
            d.x *= gelu_d(v.x, tanh_approx), d.y *= gelu_d(v.y, tanh_approx);
            d.z *= gelu_d(v.z, tanh_approx), d.w *= gelu_d(v.w, tanh_approx);
            *(float4 *)(dx + 4 * i) = d;
        }
        done = n / 4 * 4;
    }
    for (int64_t i = done + gi; i < n; i += stride) dx[i] = dy[i] * gelu_d(x[i], tanh_approx);
}

extern "C" void lmc_cuda_gelu_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n,
                                  int tanh_approx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    int vec = gelu_vec(dx, dy, x);
    gelu_bwd_kernel<<<lmc_cuda_blocks(vec ? (n + 3) / 4 : n, 256), 256, 0, c->stream>>>(dx, dy, x, n, tanh_approx, vec);
    LMC_CUDA_LAUNCH_CHECK();
}
