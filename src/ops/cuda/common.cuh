/* common.cuh — internals shared by the CUDA backend's .cu files: the
 * backend context (device, stream, cuBLASLt handle and workspace, scratch
 * buffers, matmul plan cache), the check macros every CUDA/cuBLAS call and
 * launch goes through, and small device helpers (warp/block reductions). */
#ifndef LMC_CUDA_COMMON_CUH
#define LMC_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "core/core.h"
#include "ops/backend.h"
#include "ops/backend_cuda.h"
#include "ops/cuda/ops_cuda.h"
}

#include <stdint.h>

/* A broken invariant on the device side (a failed launch, a lost device,
 * an illegal address): log what failed and where, then the abort hook.
 * Op signatures carry no status, as on the CPU backend. */
extern "C" void lmc_cuda_fail(const char *what, const char *msg, const char *file, int line)
    __attribute__((noreturn));

#define LMC_CUDA_CHECK(call)                                                  \
    do {                                                                      \
        cudaError_t e_ = (call);                                              \
        if (e_ != cudaSuccess)                                                \
            lmc_cuda_fail(#call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)

#define LMC_CUBLAS_CHECK(call)                                                   \
    do {                                                                         \
        cublasStatus_t s_ = (call);                                              \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                         \
            lmc_cuda_fail(#call, cublasLtGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)

/* After every kernel launch. */
#define LMC_CUDA_LAUNCH_CHECK() LMC_CUDA_CHECK(cudaGetLastError())

/* A cached cuBLASLt matmul: descriptors and the heuristic's algorithm for
 * one (M, N, K, weight dtype, bias) shape. */
struct lmc_cuda_mm_plan {
    bool used;
    int64_t M, N, K;
    int dtype;
    bool bias;          /* the epilogue adds the bias */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

#define LMC_CUDA_MM_PLANS 64

struct lmc_cuda_ctx {
    int device;
    int n_sm;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;                 /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    void *scratch;               /* per-op scratch: bf16/f16 activations for GEMMs */
    size_t scratch_bytes;
    void *attn_part;             /* split-K attention partials */
    size_t attn_part_bytes;
    bool attn_fp32;              /* lmc_backend_cuda_set_fp32_attention */
    enum lmc_dtype kv_dtype;     /* the table's kv_dtype: BF16, or F32 in the fp32 mode */
    bool train_bf16;             /* lmc_backend_cuda_set_train_bf16 */
    void *stage;                 /* pinned host staging ring for asynchronous uploads */
    size_t stage_bytes, stage_off;
    void *ff_up;                 /* f32 scratch: the up projection of matmul_swiglu (M > 8) */
    size_t ff_up_bytes;
    struct lmc_cuda_mm_plan plans[LMC_CUDA_MM_PLANS];
    int next_plan;               /* round-robin eviction */
};

/* Grows *buf to at least `bytes` (waiting for queued work before freeing
 * the old buffer); aborts when device memory runs out. */
void lmc_cuda_reserve(struct lmc_cuda_ctx *c, void **buf, size_t *cap, size_t bytes);

/* Blocks of `threads` for n items, capped for grid-stride loops. */
static inline unsigned lmc_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)(b < 1 ? 1 : b);
}

__device__ __forceinline__ float lmc_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double lmc_warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float lmc_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread
 * gets the result. `sh` holds 32 doubles. */
__device__ __forceinline__ double lmc_block_sum_d(double v, double *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lmc_warp_sum_d(v);
    __syncthreads(); /* sh may be in use from a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return lmc_warp_sum_d(v);
}

/* Element loads of weights as float. */
__device__ __forceinline__ float lmc_ld_f(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float lmc_ld_f(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ float lmc_ld_f(const __half *p, int64_t i) { return __half2float(p[i]); }

#endif
