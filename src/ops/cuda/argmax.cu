/* argmax.cu — per-row argmax of logits on the GPU, so that greedy decoding
 * downloads one id per row instead of the (rows, V) logits. One block per
 * row; each thread scans a strided slice keeping its first strict maximum,
 * then (value, index) pairs are reduced with ties to the lower index. NaNs
 * are never taken; a NaN at index 0 gives 0. That is the answer of the
 * host's left-to-right scan (lmc_cpu_argmax_rows, the sampler's argmax). */
#include "ops/cuda/common.cuh"

#define ARGMAX_THREADS 512
#define ARGMAX_NONE INT64_MAX

/* true when (vb, ib) beats (va, ia); ARGMAX_NONE marks "nothing yet" */
__device__ __forceinline__ bool argmax_better(float vb, int64_t ib, float va, int64_t ia) {
    if (ib == ARGMAX_NONE) return false;
    if (ia == ARGMAX_NONE) return true;
    return vb > va || (vb == va && ib < ia);
}

__global__ void argmax_rows_kernel(int32_t *ids, const float *logits, int64_t V) {
    const float *x = logits + (int64_t)blockIdx.x * V;
    float bv = 0.0f;
    int64_t bi = ARGMAX_NONE;
    for (int64_t i = threadIdx.x; i < V; i += ARGMAX_THREADS) {
        float v = x[i];
        if (v != v) continue; /* NaN */
        if (bi == ARGMAX_NONE || v > bv) {
            bv = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_down_sync(0xffffffffu, bi, o);
        if (argmax_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    __shared__ float sv[ARGMAX_THREADS / 32];
    __shared__ int64_t si[ARGMAX_THREADS / 32];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; w++)
            if (argmax_better(sv[w], si[w], bv, bi)) {
                bv = sv[w];
                bi = si[w];
            }
        float x0 = x[0];
        ids[blockIdx.x] = (bi == ARGMAX_NONE || x0 != x0) ? 0 : (int32_t)bi;
    }
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
