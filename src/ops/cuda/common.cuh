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
 * one column-major GEMM shape D(m,n) = op(A)(m,k) op(B)(k,n) (see
 * lmc_cuda_gemm): sizes, leading dimensions, transposes, operand dtype,
 * the pointers' common alignment and whether the epilogue adds a bias. */
struct lmc_cuda_mm_plan {
    bool used;
    int64_t m, n, k, lda, ldb, ldd;
    int ta, tb;         /* 1: the operand is transposed */
    int dtype;          /* enum lmc_dtype of A and B */
    int align;          /* min alignment in bytes of A, B and D (<= 256) */
    bool bias_req;      /* the GEMM adds a bias (part of the key) */
    int bias_align;     /* its alignment in bytes (<= 256; part of the key) */
    bool bias;          /* the epilogue adds it (else a kernel does) */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

#define LMC_CUDA_MM_PLANS 64

/* One held GEMM operand: src[0..n) f32, its bf16 copy at byte off of
 * hold_buf once done. */
#define LMC_CUDA_HOLDS 24
struct lmc_cuda_hold {
    const float *src;
    int64_t n;
    size_t off;
    bool done;
    const __nv_bfloat16 *copy; /* the caller's bf16 copy (then off unused), or NULL */
};

struct lmc_cuda_ctx {
    int device;
    int n_sm;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;                 /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    void *scratch;               /* per-op scratch: bf16/f16 GEMM operands, training
                                    ops' row stats, partial sums, logits blocks */
    size_t scratch_bytes;
    void *attn_part;             /* split-K attention partials */
    size_t attn_part_bytes;
    void *attn_segs;             /* training attention's (offset, length) pairs of packed sequences */
    size_t attn_segs_bytes;
    bool attn_fp32;              /* lmc_backend_cuda_set_fp32_attention */
    enum lmc_dtype kv_dtype;     /* the table's kv_dtype: BF16, or F32 in the fp32 mode */
    bool train_bf16;             /* lmc_backend_cuda_set_train_bf16 */
    void *stage;                 /* pinned host staging ring for asynchronous uploads */
    size_t stage_bytes, stage_off;
    cudaStream_t copy_stream;    /* offload.cu's copies (NULL until used) */
    cudaEvent_t copy_after, copy_done[LMC_OFFLOAD_SLOTS];
    unsigned copy_slots;         /* slots with a copy recorded */
    struct lmc_cuda_qf_arena *qf_arena; /* qmatmul_f.cu's chunks of quantized base weights (NULL until used) */
    int64_t xent_rows;           /* classifier_xent's rows per logits block; 0: sized from the
                                    vocabulary (classifier_xent.cu); tests set a few rows */
    void *ff_up;                 /* f32 scratch: the up projection of matmul_swiglu (M > 8) */
    size_t ff_up_bytes;
    struct lmc_cuda_mm_plan plans[LMC_CUDA_MM_PLANS];
    int next_plan;               /* round-robin eviction */
    /* GEMM operands held by be->operand_hold (matmul.cu): f32 ranges whose
     * bf16 copy, made at the first GEMM that reads them, later GEMMs of the
     * holding scope reuse */
    struct lmc_cuda_hold holds[LMC_CUDA_HOLDS];
    int n_holds;
    int scope0[LMC_CUDA_HOLDS];  /* n_holds before each open scope */
    int n_scopes;
    void *hold_buf;
    size_t hold_bytes;
    long n_cvt;                  /* f32 -> 16-bit operand conversion launches (a counter for tests) */
    struct lmc_cuda_muon_cache *muon_cache; /* muon_batch.cu's GEMM plans (NULL until used) */
};

/* Releases the ctx's muon_cache (muon_batch.cu). */
void lmc_cuda_muon_cache_free(struct lmc_cuda_ctx *c);
/* Releases the ctx's qf_arena and any chunk left in it (qmatmul_f.cu). */
void lmc_cuda_qf_arena_free(struct lmc_cuda_ctx *c);

/* Grows *buf to at least `bytes` (waiting for queued work before freeing
 * the old buffer); aborts when device memory runs out. */
void lmc_cuda_reserve(struct lmc_cuda_ctx *c, void **buf, size_t *cap, size_t bytes);

/* One column-major GEMM through cuBLASLt (matmul.cu), queued on the ctx's
 * stream: D(m,n) = op(A) op(B) (+ bias(m) per row of D) + beta * D, with
 * op(A) (m,k): A stored (m,k) ld lda, or (k,m) when ta; op(B) (k,n): B
 * stored (k,n) ld ldb, or (n,k) when tb. A and B are dt (F32: fp32 math,
 * CUBLAS_COMPUTE_32F, no TF32; BF16/F16: tensor cores with f32
 * accumulation), D is f32. Plans are cached per shape and alignment.
 * A row-major (r,c) matrix is the column-major (c,r) one. */
void lmc_cuda_gemm(struct lmc_cuda_ctx *c, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                   const void *A, int64_t lda, const void *B, int64_t ldb, float *D, int64_t ldd,
                   enum lmc_dtype dt, const float *bias, float beta);

/* dst[i] = bf16(src[i]) (round to nearest even), i < n, on the ctx's stream. */
void lmc_cuda_to_bf16(struct lmc_cuda_ctx *c, __nv_bfloat16 *dst, const float *src, int64_t n);

/* The bf16 GEMM operand for src[0..n): inside a range held by
 * operand_hold (at a 256-byte offset of its copy, so the GEMM plan's
 * alignment key is the scratch's) the held copy, converted at its first
 * use; else src converted into dst here. Either way the same bits. */
const __nv_bfloat16 *lmc_cuda_operand_bf16(struct lmc_cuda_ctx *c, __nv_bfloat16 *dst, const float *src,
                                           int64_t n);

/* Byte offsets into one scratch reservation, each piece 256-byte aligned. */
static inline size_t lmc_cuda_al256(size_t b) { return (b + 255) & ~(size_t)255; }

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

/* Deterministic column sums, used by the backward ops for dw/db: for an
 * (M, C) array of terms f(m, j), part[q*C + j] = the sum (double) over the
 * rows of chunk q (LMC_COLSUM_ROWS rows) in a fixed order, then
 * out[j] += (float)(sum over q in order of part[q*C + j]). The order
 * depends on M and C alone: no atomics, same bits on every run.
 * Launch the first as grid (ceil(C/32), nq), block (32, LMC_COLSUM_LANES);
 * F is a functor with `__device__ float operator()(int64_t m, int64_t j) const`. */
#define LMC_COLSUM_ROWS 256
#define LMC_COLSUM_LANES 8
static inline int64_t lmc_colsum_chunks(int64_t M) {
    return (M + LMC_COLSUM_ROWS - 1) / LMC_COLSUM_ROWS;
}

template <typename F>
__global__ void __launch_bounds__(32 * LMC_COLSUM_LANES)
    lmc_colsum_part_kernel(double *part, int64_t M, int64_t C, F f) {
    __shared__ double sh[LMC_COLSUM_LANES][33];
    const int64_t j = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t m0 = (int64_t)blockIdx.y * LMC_COLSUM_ROWS;
    const int64_t m1 = m0 + LMC_COLSUM_ROWS < M ? m0 + LMC_COLSUM_ROWS : M;
    double s = 0;
    if (j < C)
        for (int64_t m = m0 + threadIdx.y; m < m1; m += LMC_COLSUM_LANES) s += (double)f(m, j);
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < C) {
        double t = sh[0][threadIdx.x];
#pragma unroll
        for (int y = 1; y < LMC_COLSUM_LANES; y++) t += sh[y][threadIdx.x];
        part[(int64_t)blockIdx.y * C + j] = t;
    }
}

template <typename T>
__global__ void lmc_colsum_finish_kernel(T *out, const double *part, int64_t nq, int64_t C) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < C;
         j += (int64_t)gridDim.x * blockDim.x) {
        double s = 0;
        for (int64_t q = 0; q < nq; q++) s += part[q * C + j];
        out[j] += (T)s;
    }
}

/* Launches both column-sum kernels: out(C) += column sums of f over M rows;
 * part holds lmc_colsum_chunks(M) * C doubles. */
template <typename F>
static inline void lmc_colsum(struct lmc_cuda_ctx *c, float *out, double *part, int64_t M,
                              int64_t C, F f) {
    int64_t nq = lmc_colsum_chunks(M);
    LMC_ASSERT(nq <= 65535 && (C + 31) / 32 <= 0x7fffffff);
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)nq), block(32, LMC_COLSUM_LANES);
    lmc_colsum_part_kernel<F><<<grid, block, 0, c->stream>>>(part, M, C, f);
    LMC_CUDA_LAUNCH_CHECK();
    lmc_colsum_finish_kernel<float><<<lmc_cuda_blocks(C, 256), 256, 0, c->stream>>>(out, part, nq, C);
    LMC_CUDA_LAUNCH_CHECK();
}

/* Element loads of weights as float. */
__device__ __forceinline__ float lmc_ld_f(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float lmc_ld_f(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ float lmc_ld_f(const __half *p, int64_t i) { return __half2float(p[i]); }

#endif
