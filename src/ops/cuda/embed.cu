/* embed.cu — embedding gather on the GPU: y(n,C) = table[ids[i]] as f32,
 * the table in F32, F16 or BF16. One block row per token. */
#include "ops/cuda/common.cuh"

template <typename T>
__global__ void embed_fwd_kernel(float *y, const T *table, const int32_t *ids, int64_t n,
                                 int64_t C) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const T *row = table + (int64_t)ids[i] * C;
        float *out = y + i * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[c] = lmc_ld_f(row, c);
    }
}

extern "C" void lmc_cuda_embed(void *ctx, float *y, const struct lmc_mat *table, const int32_t *ids,
                               int64_t n) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0 || table->cols == 0) return;
    unsigned grid = (unsigned)LMC_MIN(n, (int64_t)65535);
    int threads = table->cols >= 256 ? 256 : 128;
    switch (table->dtype) {
    case LMC_DTYPE_F32:
        embed_fwd_kernel<<<grid, threads, 0, c->stream>>>(y, (const float *)table->data, ids, n,
                                                          table->cols);
        break;
    case LMC_DTYPE_BF16:
        embed_fwd_kernel<<<grid, threads, 0, c->stream>>>(y, (const __nv_bfloat16 *)table->data,
                                                          ids, n, table->cols);
        break;
    case LMC_DTYPE_F16:
        embed_fwd_kernel<<<grid, threads, 0, c->stream>>>(y, (const __half *)table->data, ids, n,
                                                          table->cols);
        break;
    default: LMC_ASSERT(!"embed: table dtype must be F32, F16 or BF16");
    }
    LMC_CUDA_LAUNCH_CHECK();
}
