/* ssm.cuh — the CUDA backend's state-space-model ops (issue 15; one .cu
 * each: conv1d_causal, ssm_scan, ssd_chunk, rmsnorm_gated): their C-callable
 * launchers (backend.h's SSM entries document them) and the device helpers
 * they share, computed as the CPU twins (ops/cpu/ssm_cpu.h) compute them. */
#ifndef LMC_CUDA_SSM_CUH
#define LMC_CUDA_SSM_CUH

#include "ops/cuda/common.cuh"

extern "C" {
void lmc_cuda_conv1d_causal(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                            const float *bias, float *state, const int32_t *slots, int64_t B,
                            int64_t T, int64_t C, int64_t K, int silu);
void lmc_cuda_conv1d_causal_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                                const float *x, int64_t ldx, const float *w, const float *bias,
                                int64_t B, int64_t T, int64_t C, int64_t K, int silu);
void lmc_cuda_conv1d_causal_step(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                                 const float *bias, float *state, const int32_t *slots, int64_t B,
                                 int64_t C, int64_t K, int silu);
void lmc_cuda_ssm_scan(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                       const int32_t *slots, int64_t B, int64_t T, int64_t D, int64_t N);
void lmc_cuda_ssm_scan_bwd(void *ctx, const struct lmc_ssm_grads *g, const float *dy,
                           const struct lmc_ssm_io *in, int64_t B, int64_t T, int64_t D,
                           int64_t N);
void lmc_cuda_ssm_scan_step(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                            const int32_t *slots, int64_t B, int64_t D, int64_t N);
void lmc_cuda_ssd_chunk(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                        const int32_t *slots, const struct lmc_ssd_shape *s);
void lmc_cuda_ssd_chunk_bwd(void *ctx, const struct lmc_ssd_grads *g, const float *dy,
                            const struct lmc_ssd_io *in, const struct lmc_ssd_shape *s);
void lmc_cuda_ssd_step(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                       const int32_t *slots, const struct lmc_ssd_shape *s);
void lmc_cuda_rmsnorm_gated(void *ctx, float *y, const float *x, const float *z, int64_t ldz,
                            const float *w, int64_t M, int64_t C, int64_t group, float eps);
void lmc_cuda_rmsnorm_gated_bwd(void *ctx, float *dx, float *dz, float *dw, const float *dy,
                                const float *x, const float *z, int64_t ldz, const float *w,
                                int64_t M, int64_t C, int64_t group, float eps);
}

/* torch's softplus (threshold 20) and its derivative; SiLU and its derivative */
__device__ __forceinline__ float lmc_ssm_softplus_d(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}
__device__ __forceinline__ float lmc_ssm_softplus_grad_d(float x) {
    return x > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-x));
}
__device__ __forceinline__ float lmc_ssm_silu_d(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float lmc_ssm_silu_grad_d(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}
__device__ __forceinline__ int64_t lmc_ssm_slot_d(const int32_t *slots, int64_t b) {
    return slots ? (int64_t)slots[b] : b;
}

#endif
