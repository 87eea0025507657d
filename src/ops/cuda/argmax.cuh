/* argmax.cuh — a row's argmax by one block (argmax.cu's kernel, and the
 * greedy step and the max of sample.cu): each thread scans a strided slice
 * keeping its first strict maximum, then (value, index) pairs are reduced
 * with ties to the lower index. NaNs are never taken; a NaN at index 0 (or
 * a row of NaNs) gives 0 — the answer of the host's left-to-right scan
 * (lmc_cpu_argmax_rows, the sampler's argmax). */
#ifndef LMC_CUDA_ARGMAX_CUH
#define LMC_CUDA_ARGMAX_CUH

#include "ops/cuda/common.cuh"

#define LMC_ARGMAX_NONE INT64_MAX

/* true when (vb, ib) beats (va, ia); LMC_ARGMAX_NONE marks "nothing yet" */
static __device__ __forceinline__ bool lmc_argmax_better(float vb, int64_t ib, float va,
                                                         int64_t ia) {
    if (ib == LMC_ARGMAX_NONE) return false;
    if (ia == LMC_ARGMAX_NONE) return true;
    return vb > va || (vb == va && ib < ia);
}

/* The argmax of x[0..V) for a block of THREADS threads (a multiple of 32),
 * returned to every thread. Every thread of the block must call it. */
template <int THREADS>
static __device__ int64_t lmc_block_argmax(const float *x, int64_t V) {
    __shared__ float sv[THREADS / 32];
    __shared__ int64_t si[THREADS / 32];
    __shared__ int64_t s_best;
    float bv = 0.0f;
    int64_t bi = LMC_ARGMAX_NONE;
    for (int64_t i = threadIdx.x; i < V; i += THREADS) {
        float v = x[i];
        if (v != v) continue; /* NaN */
        if (bi == LMC_ARGMAX_NONE || v > bv) {
            bv = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_down_sync(0xffffffffu, bi, o);
        if (lmc_argmax_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < THREADS / 32; w++)
            if (lmc_argmax_better(sv[w], si[w], bv, bi)) {
                bv = sv[w];
                bi = si[w];
            }
        float x0 = x[0];
        s_best = (bi == LMC_ARGMAX_NONE || x0 != x0) ? 0 : bi;
    }
    __syncthreads();
    return s_best;
}

#endif
