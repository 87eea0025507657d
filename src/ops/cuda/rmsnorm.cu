/* rmsnorm.cu — RMS normalisation on the GPU: y(M,C) = x / sqrt(mean(x^2)
 * + eps) * w, one block per row, the sum of squares in double (as the CPU
 * twin); y may alias x (each thread rereads only what it writes). */
#include "ops/cuda/common.cuh"

__global__ void rmsnorm_fwd_kernel(float *y, const float *x, const float *w, int64_t M, int64_t C,
                                   float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C;
        float *yr = y + m * C;
        double ss = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += (double)xr[i] * xr[i];
        ss = lmc_block_sum_d(ss, sh);
        float s = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) yr[i] = xr[i] * s * w[i];
    }
}

extern "C" void lmc_cuda_rmsnorm(void *ctx, float *y, const float *x, const float *w, int64_t M,
                                 int64_t C, float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 64;
    rmsnorm_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(y, x, w, M,
                                                                                        C, eps);
    LMC_CUDA_LAUNCH_CHECK();
}
