/* mma.cuh — the bf16 tensor-core pieces the FlashAttention-style kernels
 * share (attention.cu: inference prefill; attention_train.cu: training
 * forward and backward): mma.sync m16n8k16 (bf16 in, f32 accumulate),
 * ldmatrix x4 (plain and .trans), bf16 packing, two C-fragments reused as
 * one A-fragment, and the online-softmax update of a warp's 16-row tile. */
#ifndef LMC_CUDA_MMA_CUH
#define LMC_CUDA_MMA_CUH

#include "ops/cuda/common.cuh"

#include <string.h>

/* c += a (16x16, row) * b (16x8, col), bf16 in, f32 accumulate. */
static __device__ __forceinline__ void lmc_mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                                    uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats rounded to bf16, lo in the low half. */
static __device__ __forceinline__ uint32_t lmc_pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

static __device__ __forceinline__ void lmc_ldsm_x4(uint32_t r[4], const void *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
static __device__ __forceinline__ void lmc_ldsm_x4_t(uint32_t r[4], const void *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

/* The C-fragments of two adjacent n-tiles (16 columns) as one A-fragment. */
static __device__ __forceinline__ void lmc_c2a(uint32_t pa[4], const float c0[4],
                                               const float c1[4]) {
    pa[0] = lmc_pack_bf16(c0[0], c0[1]);
    pa[1] = lmc_pack_bf16(c0[2], c0[3]);
    pa[2] = lmc_pack_bf16(c1[0], c1[1]);
    pa[3] = lmc_pack_bf16(c1[2], c1[3]);
}

/* Online softmax over one key tile of a warp's 16 query rows: s holds the
 * tile's scores (NT n-tiles of 8 keys, log2 units; row g in elements 0-1,
 * row g+8 in 2-3; a row is spread over the 4 threads of a quad). Updates
 * the running max mrow and sum lrow of rows g and g+8, rescales the output
 * accumulators o (DT n-tiles) and turns s into exp2(s - max). Fully masked
 * rows (-inf) stay finite: their max is taken as 0. */
template <int NT, int DT>
static __device__ __forceinline__ void lmc_online_softmax(float (&s)[NT][4], float mrow[2],
                                                          float lrow[2], float (&o)[DT][4]) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * e], s[nt][2 * e + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mnew = fmaxf(mrow[e], mx);
        float muse = mnew == -INFINITY ? 0.f : mnew;
        float corr = exp2f(mrow[e] - muse);
        mrow[e] = mnew;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            s[nt][2 * e] = exp2f(s[nt][2 * e] - muse);
            s[nt][2 * e + 1] = exp2f(s[nt][2 * e + 1] - muse);
            sum += s[nt][2 * e] + s[nt][2 * e + 1];
        }
        lrow[e] = lrow[e] * corr + sum;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            o[dt][2 * e] *= corr;
            o[dt][2 * e + 1] *= corr;
        }
    }
}

#endif
