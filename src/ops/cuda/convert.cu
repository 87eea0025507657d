/* convert.cu — copy with conversion between F32 and BF16 on the GPU
 * (backend.h convert: training's bf16-saved activations): to BF16 rounds
 * to nearest even (__float2bfloat16_rn, the CPU's lmc_f32_to_bf16), from
 * BF16 is exact, F32 to F32 is a device copy. CPU twin ops/cpu/convert.c. */
#include "ops/cuda/common.cuh"

#include <cuda_bf16.h>

__global__ void convert_to_bf16_kernel(__nv_bfloat16 *d, const float *s, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16_rn(s[i]);
}

__global__ void convert_from_bf16_kernel(float *d, const __nv_bfloat16 *s, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = __bfloat162float(s[i]);
}

extern "C" void lmc_cuda_convert(void *ctx, void *dst, enum lmc_dtype dst_dt, const void *src, enum lmc_dtype src_dt,
                                 int64_t n) {
    struct lmc_cuda_ctx *cc = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n >= 0 && (dst_dt == LMC_DTYPE_F32 || dst_dt == LMC_DTYPE_BF16) &&
               (src_dt == LMC_DTYPE_F32 || src_dt == LMC_DTYPE_BF16) &&
               (dst_dt == LMC_DTYPE_F32 || src_dt == LMC_DTYPE_F32));
    if (n == 0) return;
    if (dst_dt == LMC_DTYPE_F32 && src_dt == LMC_DTYPE_F32) {
        LMC_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, cc->stream));
    } else if (dst_dt == LMC_DTYPE_BF16) {
        convert_to_bf16_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, cc->stream>>>((__nv_bfloat16 *)dst,
                                                                               (const float *)src, n);
        LMC_CUDA_LAUNCH_CHECK();
    } else {
        convert_from_bf16_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, cc->stream>>>(
            (float *)dst, (const __nv_bfloat16 *)src, n);
        LMC_CUDA_LAUNCH_CHECK();
    }
}
