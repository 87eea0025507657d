/* argmax.cu — per-row argmax of logits on the GPU, so that greedy decoding
 * downloads one id per row instead of the (rows, V) logits: one block per
 * row running lmc_block_argmax (argmax.cuh, which says how ties and NaNs
 * go: as the host's left-to-right scan). */
#include "ops/cuda/common.cuh"
#include "ops/cuda/argmax.cuh"

#define ARGMAX_THREADS 512

__global__ void argmax_rows_kernel(int32_t *ids, const float *logits, int64_t V) {
    int64_t best = lmc_block_argmax<ARGMAX_THREADS>(logits + (int64_t)blockIdx.x * V, V);
    if (threadIdx.x == 0) ids[blockIdx.x] = (int32_t)best;
}

extern "C" void lmc_cuda_argmax_rows(void *ctx, int32_t *out_ids, const float *logits,
                                     int64_t rows, int64_t V) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (rows <= 0) return;
    LMC_ASSERT(V > 0 && rows <= INT32_MAX);
    /* the ids go through the per-op scratch (free between ops) */
    size_t bytes = (size_t)rows * sizeof(int32_t);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, bytes);
    int32_t *d_ids = (int32_t *)c->scratch;
    argmax_rows_kernel<<<(unsigned)rows, ARGMAX_THREADS, 0, c->stream>>>(d_ids, logits, V);
    LMC_CUDA_LAUNCH_CHECK();
    lmc_cuda_download(ctx, out_ids, d_ids, bytes);
}
