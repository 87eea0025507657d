/* matmul.cu — y(M,N) = x(M,K) @ w(N,K)^T (+ bias) on the GPU, weights in
 * F32, F16 or BF16 as uploaded, activations f32.
 *
 * Two paths:
 *  - M <= GEMV_MAX_M (decode, small batches): our own kernel, one warp per
 *    W row, 16-byte weight loads converted in registers, f32 x and f32
 *    accumulation, bias fused. W streams from memory once.
 *  - larger M (prefill): cuBLASLt. BF16/F16 weights: x is converted to the
 *    weight dtype by a small kernel, then a bf16 x bf16 (f16 x f16) GEMM
 *    with f32 accumulation writes f32. F32 weights: a plain f32 GEMM
 *    (CUBLAS_COMPUTE_32F, no TF32) for the checking mode. The bias rides
 *    the epilogue (a kernel adds it where the heuristic has no such algo).
 *    Descriptors and the heuristic's pick are cached per shape in the ctx.
 *
 * cuBLASLt is column-major: row-major y(M,N) is column-major y^T (N,M) =
 * w (column-major (K,N), transposed) times x^T (column-major (K,M)). */
#include "ops/cuda/common.cuh"

#define GEMV_MAX_M 8
#define GEMV_WARPS 8

__device__ __forceinline__ void load8(const float *p, float f[8]) {
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float f[8]) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void load8(const __half *p, float f[8]) {
    uint4 u = *(const uint4 *)p;
    const __half2 *h = (const __half2 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}

/* Rows m < M (M <= MT) of y against every W row; one warp per W row. vec:
 * K % 8 == 0 (16-byte aligned rows) so 8 elements load at once. */
template <typename T, int MT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
matmul_gemv_fwd_kernel(float *y, const float *x, const T *w, const float *bias, int M, int64_t N,
                       int64_t K, int vec) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int64_t n = (int64_t)blockIdx.x * GEMV_WARPS + warp; n < N;
         n += (int64_t)gridDim.x * GEMV_WARPS) {
        const T *wr = w + n * K;
        float acc[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) acc[m] = 0.0f;
        if (vec) {
            int64_t k = (int64_t)lane * 8;
            /* four 16-byte weight loads in flight per lane before their use */
            for (; k + 768 < K; k += 1024) {
                float wf[4][8];
#pragma unroll
                for (int u = 0; u < 4; u++) load8(wr + k + 256 * u, wf[u]);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    if (m < M) {
#pragma unroll
                        for (int u = 0; u < 4; u++) {
                            float xf[8];
                            load8(x + m * K + k + 256 * u, xf);
#pragma unroll
                            for (int i = 0; i < 8; i++) acc[m] = fmaf(wf[u][i], xf[i], acc[m]);
                        }
                    }
                }
            }
            for (; k < K; k += 256) {
                float wf[8];
                load8(wr + k, wf);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    if (m < M) {
                        float xf[8];
                        load8(x + m * K + k, xf);
#pragma unroll
                        for (int i = 0; i < 8; i++) acc[m] = fmaf(wf[i], xf[i], acc[m]);
                    }
                }
            }
        } else {
            for (int64_t k = lane; k < K; k += 32) {
                float wf = lmc_ld_f(wr, k);
#pragma unroll
                for (int m = 0; m < MT; m++)
                    if (m < M) acc[m] = fmaf(wf, x[m * K + k], acc[m]);
            }
        }
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float s = lmc_warp_sum(acc[m]);
            if (lane == 0 && m < M) y[m * N + n] = s + (bias ? bias[n] : 0.0f);
        }
    }
}

template <typename T>
static void gemv(struct lmc_cuda_ctx *c, float *y, const float *x, int64_t M, const T *w,
                 const float *bias, int64_t N, int64_t K) {
    int vec = K % 8 == 0 && ((uintptr_t)w % 16) == 0 && ((uintptr_t)x % 16) == 0;
    unsigned grid = (unsigned)LMC_MIN((N + GEMV_WARPS - 1) / GEMV_WARPS, (int64_t)1 << 20);
    int threads = GEMV_WARPS * 32;
    if (M == 1)
        matmul_gemv_fwd_kernel<T, 1><<<grid, threads, 0, c->stream>>>(y, x, w, bias, 1, N, K, vec);
    else if (M == 2)
        matmul_gemv_fwd_kernel<T, 2><<<grid, threads, 0, c->stream>>>(y, x, w, bias, 2, N, K, vec);
    else if (M <= 4)
        matmul_gemv_fwd_kernel<T, 4><<<grid, threads, 0, c->stream>>>(y, x, w, bias, (int)M, N, K,
                                                                       vec);
    else
        matmul_gemv_fwd_kernel<T, 8><<<grid, threads, 0, c->stream>>>(y, x, w, bias, (int)M, N, K,
                                                                       vec);
    LMC_CUDA_LAUNCH_CHECK();
}

template <typename T>
__global__ void matmul_cvt_fwd_kernel(T *dst, const float *src, int64_t n);
template <>
__global__ void matmul_cvt_fwd_kernel<__nv_bfloat16>(__nv_bfloat16 *dst, const float *src,
                                                     int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}
template <>
__global__ void matmul_cvt_fwd_kernel<__half>(__half *dst, const float *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

__global__ void matmul_bias_fwd_kernel(float *y, const float *bias, int64_t M, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < M * N;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += bias[i % N];
}

static cudaDataType_t cuda_type(enum lmc_dtype dt) {
    switch (dt) {
    case LMC_DTYPE_BF16: return CUDA_R_16BF;
    case LMC_DTYPE_F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
}

static void plan_destroy(struct lmc_cuda_mm_plan *p) {
    if (!p->used) return;
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->a));
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->b));
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->c));
    LMC_CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
    p->used = false;
}

/* Builds descriptors and asks the heuristic for an algorithm; false when it
 * has none (the plan is then released). */
static bool plan_build(struct lmc_cuda_ctx *c, struct lmc_cuda_mm_plan *p, int64_t M, int64_t N,
                       int64_t K, enum lmc_dtype dt, bool bias) {
    cudaDataType_t t = cuda_type(dt);
    p->M = M, p->N = N, p->K = K, p->dtype = (int)dt, p->bias = bias, p->used = true;
    LMC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_32F;
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, (uint64_t)K, (uint64_t)N, K));
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, (uint64_t)K, (uint64_t)M, K));
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)N, (uint64_t)M, N));
    cublasLtMatmulPreference_t pref;
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes, sizeof c->lt_ws_bytes));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->c, p->c, pref,
                                                      1, &res, &found);
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (s != CUBLAS_STATUS_SUCCESS || found < 1) {
        plan_destroy(p);
        return false;
    }
    p->algo = res.algo;
    return true;
}

static struct lmc_cuda_mm_plan *plan_get(struct lmc_cuda_ctx *c, int64_t M, int64_t N, int64_t K,
                                         enum lmc_dtype dt, bool bias) {
    for (int i = 0; i < LMC_CUDA_MM_PLANS; i++) {
        struct lmc_cuda_mm_plan *p = &c->plans[i];
        if (p->used && p->M == M && p->N == N && p->K == K && p->dtype == (int)dt &&
            p->bias == bias)
            return p;
    }
    struct lmc_cuda_mm_plan *p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % LMC_CUDA_MM_PLANS;
    plan_destroy(p);
    if (plan_build(c, p, M, N, K, dt, bias)) return p;
    if (bias && plan_build(c, p, M, N, K, dt, false)) return p; /* bias by kernel */
    lmc_cuda_fail("cublasLtMatmulAlgoGetHeuristic", "no algorithm for this GEMM", __FILE__, __LINE__);
}

extern "C" void lmc_cuda_matmul(void *ctx, float *y, const float *x, int64_t M,
                                const struct lmc_mat *w, const float *bias) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    int64_t N = w->rows, K = w->cols;
    if (M <= 0 || N <= 0) return;
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32 || w->dtype == LMC_DTYPE_F16 || w->dtype == LMC_DTYPE_BF16);
    if (K == 0) {
        LMC_CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)(M * N) * sizeof(float), c->stream));
        if (bias) {
            matmul_bias_fwd_kernel<<<lmc_cuda_blocks(M * N, 256), 256, 0, c->stream>>>(y, bias, M, N);
            LMC_CUDA_LAUNCH_CHECK();
        }
        return;
    }
    if (M <= GEMV_MAX_M) {
        if (w->dtype == LMC_DTYPE_BF16)
            gemv(c, y, x, M, (const __nv_bfloat16 *)w->data, bias, N, K);
        else if (w->dtype == LMC_DTYPE_F16)
            gemv(c, y, x, M, (const __half *)w->data, bias, N, K);
        else
            gemv(c, y, x, M, (const float *)w->data, bias, N, K);
        return;
    }
    const void *b = x;
    if (w->dtype != LMC_DTYPE_F32) {
        lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, (size_t)(M * K) * 2);
        if (w->dtype == LMC_DTYPE_BF16)
            matmul_cvt_fwd_kernel<<<lmc_cuda_blocks(M * K, 256), 256, 0, c->stream>>>(
                (__nv_bfloat16 *)c->scratch, x, M * K);
        else
            matmul_cvt_fwd_kernel<<<lmc_cuda_blocks(M * K, 256), 256, 0, c->stream>>>(
                (__half *)c->scratch, x, M * K);
        LMC_CUDA_LAUNCH_CHECK();
        b = c->scratch;
    }
    struct lmc_cuda_mm_plan *p = plan_get(c, M, N, K, w->dtype, bias != NULL);
    if (p->bias)
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias, sizeof bias));
    const float one = 1.0f, zero = 0.0f;
    LMC_CUBLAS_CHECK(cublasLtMatmul(c->lt, p->desc, &one, w->data, p->a, b, p->b, &zero, y, p->c, y,
                                    p->c, &p->algo, c->lt_ws, c->lt_ws_bytes, c->stream));
    if (bias && !p->bias) {
        matmul_bias_fwd_kernel<<<lmc_cuda_blocks(M * N, 256), 256, 0, c->stream>>>(y, bias, M, N);
        LMC_CUDA_LAUNCH_CHECK();
    }
}
