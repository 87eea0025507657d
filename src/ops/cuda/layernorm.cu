/* layernorm.cu — layer normalisation on the GPU: y(M,C) = (x - mean) /
 * sqrt(var + eps) * w + b, biased variance, one block per row, two passes
 * accumulated in double (as the CPU twin); y may alias x. */
#include "ops/cuda/common.cuh"

__global__ void layernorm_fwd_kernel(float *y, const float *x, const float *w, const float *b,
                                     int64_t M, int64_t C, float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C;
        float *yr = y + m * C;
        double s = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
        double mean = lmc_block_sum_d(s, sh) / (double)C;
        double v = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            double d = (double)xr[i] - mean;
            v += d * d;
        }
        double rstd = 1.0 / sqrt(lmc_block_sum_d(v, sh) / (double)C + (double)eps);
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
            yr[i] = (float)(((double)xr[i] - mean) * rstd) * w[i] + b[i];
    }
}

extern "C" void lmc_cuda_layernorm(void *ctx, float *y, const float *x, const float *w,
                                   const float *b, int64_t M, int64_t C, float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 64;
    layernorm_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
        y, x, w, b, M, C, eps);
    LMC_CUDA_LAUNCH_CHECK();
}
