/* adamw8bit.cu — 8-bit AdamW on the GPU (CPU twin: ops/cpu/adamw8bit.c;
 * formulas in ops/optim_ops.h). One thread block per quantisation block:
 * the 256 threads dequantize their elements (up to block/256 each, kept in
 * registers), apply AdamW's element formula (operation by operation as
 * adamw.cu, each rounded through the _rn intrinsics so nothing is
 * contracted into an FMA), reduce the block's new absmax of both moments,
 * and re-quantize against the codes held in shared memory (binary search,
 * nearest, lower on a tie, non-zero never to 0) — one pass over memory. */
#include "ops/cuda/common.cuh"

extern "C" {
#include "ops/optim_ops.h"
}

#define Q8_THREADS 256
#define Q8_PER_THREAD (LMC_Q8_BLOCK_MAX / Q8_THREADS)

__device__ __forceinline__ unsigned char q8_quantize_d(const float *code, float x) {
    if (x <= code[0]) return 0;
    if (x >= code[255]) return 255;
    int lo = 0, hi = 255;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (code[mid] <= x) lo = mid;
        else hi = mid;
    }
    int q = (__fsub_rn(x, code[lo]) <= __fsub_rn(code[hi], x)) ? lo : hi;
    if (code[q] == 0.0f && x != 0.0f) q = x > 0 ? q + 1 : q - 1;
    return (unsigned char)q;
}

__device__ __forceinline__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    v = lmc_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0f;
    return lmc_warp_max(v);
}

__global__ void __launch_bounds__(Q8_THREADS)
    adamw8bit_kernel(float *p, const float *g, unsigned char *qm, unsigned char *qv, float *absmax_m,
                     float *absmax_v, int64_t n, int64_t block, const float *code_m,
                     const float *code_v, struct lmc_adamw_step s) {
    __shared__ float cm[256], cv[256], sh[32];
    cm[threadIdx.x] = code_m[threadIdx.x];
    cv[threadIdx.x] = code_v[threadIdx.x];
    __syncthreads();
    const int64_t lo = (int64_t)blockIdx.x * block;
    const int64_t len = n - lo < block ? n - lo : block;
    const float am = absmax_m[blockIdx.x], av = absmax_v[blockIdx.x];
    float mr[Q8_PER_THREAD], vr[Q8_PER_THREAD];
    float nm = 0.0f, nv = 0.0f;
#pragma unroll
    for (int u = 0; u < Q8_PER_THREAD; u++) {
        const int64_t j = threadIdx.x + (int64_t)u * Q8_THREADS;
        mr[u] = vr[u] = 0.0f;
        if (j >= len) continue;
        const int64_t i = lo + j;
        const float gi = __fmul_rn(g[i], s.grad_scale);
        const float pi = __fmul_rn(p[i], s.decay_mul);
        const float m0 = __fmul_rn(cm[qm[i]], am), v0 = __fmul_rn(cv[qv[i]], av);
        const float mi = __fadd_rn(m0, __fmul_rn(s.one_minus_b1, __fsub_rn(gi, m0)));
        const float vi = __fadd_rn(__fmul_rn(v0, s.beta2), __fmul_rn(__fmul_rn(s.one_minus_b2, gi), gi));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
        p[i] = __fsub_rn(pi, __fmul_rn(s.step_size, __fdiv_rn(mi, denom)));
        mr[u] = mi, vr[u] = vi;
        nm = fmaxf(nm, fabsf(mi)), nv = fmaxf(nv, vi);
    }
    nm = block_max(nm, sh);
    nv = block_max(nv, sh);
    if (threadIdx.x == 0) absmax_m[blockIdx.x] = nm, absmax_v[blockIdx.x] = nv;
#pragma unroll
    for (int u = 0; u < Q8_PER_THREAD; u++) {
        const int64_t j = threadIdx.x + (int64_t)u * Q8_THREADS;
        if (j >= len) continue;
        qm[lo + j] = q8_quantize_d(cm, nm > 0.0f ? __fdiv_rn(mr[u], nm) : 0.0f);
        qv[lo + j] = q8_quantize_d(cv, nv > 0.0f ? __fdiv_rn(vr[u], nv) : 0.0f);
    }
}

extern "C" void lmc_cuda_adamw8bit(void *ctx, float *p, const float *g, uint8_t *qm, uint8_t *qv,
                                   float *absmax_m, float *absmax_v, int64_t n, int64_t block,
                                   const float *code_m, const float *code_v,
                                   const struct lmc_adamw_step *s) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    LMC_ASSERT(block >= 1 && block <= LMC_Q8_BLOCK_MAX);
    const int64_t nb = (n + block - 1) / block;
    LMC_ASSERT(nb <= 0x7fffffff);
    adamw8bit_kernel<<<(unsigned)nb, Q8_THREADS, 0, c->stream>>>(p, g, qm, qv, absmax_m, absmax_v, n, block,
                                                                   code_m, code_v, *s);
    LMC_CUDA_LAUNCH_CHECK();
}
