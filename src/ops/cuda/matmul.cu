/* matmul.cu — y(M,N) = x(M,K) @ w(N,K)^T (+ bias) on the GPU, weights in
 * F32, F16 or BF16 as uploaded, activations f32.
 *
 * Two paths:
 *  - M <= GEMV_MAX_M (decode, small batches): our own kernel, one warp per
 *    W row, GEMV_U 16-byte weight loads in flight per lane, converted in
 *    registers, f32 x and f32 accumulation, bias fused. W streams from
 *    memory once. One launch serves several matrices sharing x
 *    (matmul_multi: q/k/v), the residual add (matmul_add: y +=) and
 *    gate/up with SwiGLU (matmul_swiglu: one warp reads both rows).
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

#include <string.h>

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

/* 8 weights as raw 16-byte words (two for f32), converted at use, so the
 * loads in flight cost 4 (8) registers each. */
template <typename T> struct raw8 { uint4 u; };
template <> struct raw8<float> { uint4 u, v; };
__device__ __forceinline__ void ldraw(raw8<__nv_bfloat16> &r, const __nv_bfloat16 *p) {
    r.u = *(const uint4 *)p;
}
__device__ __forceinline__ void ldraw(raw8<__half> &r, const __half *p) { r.u = *(const uint4 *)p; }
__device__ __forceinline__ void ldraw(raw8<float> &r, const float *p) {
    r.u = *(const uint4 *)p;
    r.v = *(const uint4 *)(p + 4);
}
__device__ __forceinline__ void cvt8(const raw8<__nv_bfloat16> &r, float f[8]) {
    load8((const __nv_bfloat16 *)&r.u, f);
}
__device__ __forceinline__ void cvt8(const raw8<__half> &r, float f[8]) {
    load8((const __half *)&r.u, f);
}
__device__ __forceinline__ void cvt8(const raw8<float> &r, float f[8]) {
    f[0] = __uint_as_float(r.u.x), f[1] = __uint_as_float(r.u.y);
    f[2] = __uint_as_float(r.u.z), f[3] = __uint_as_float(r.u.w);
    f[4] = __uint_as_float(r.v.x), f[5] = __uint_as_float(r.v.y);
    f[6] = __uint_as_float(r.v.z), f[7] = __uint_as_float(r.v.w);
}

/* One GEMV launch over up to GEMV_MATS weight matrices sharing x (q/k/v,
 * or gate/up): output row r < row0[n] belongs to matrix i with row0[i] <=
 * r < row0[i+1]. mode: GEMV_STORE y = xW^T + b, GEMV_ACC y += xW^T + b,
 * GEMV_SWIGLU y = silu(x Wg^T) * (x Wu^T) (w[0] gate, w[1] up, rows N). */
#define GEMV_MATS 4
enum { GEMV_STORE = 0, GEMV_ACC, GEMV_SWIGLU };
struct gemv_args {
    const void *w[GEMV_MATS];
    float *y[GEMV_MATS];
    const float *b[GEMV_MATS];
    int64_t row0[GEMV_MATS + 1];
    const float *x;
    int64_t K;
    int n, M, mode, vec;
};

#define GEMV_U 8 /* 16-byte weight loads in flight per lane (per matrix) */

/* acc[m] += w-row . x[m] over the lane's slice; R rows (1, or 2 for swiglu) */
template <typename T, int MT, int R>
__device__ __forceinline__ void gemv_rows(const T *const wr[R], const float *x, int M, int64_t K,
                                          int lane, int vec, float acc[R][MT]) {
    if (vec) {
        int64_t k = (int64_t)lane * 8;
        for (; k + (GEMV_U - 1) * 256 < K; k += GEMV_U * 256) {
            raw8<T> wraw[R][GEMV_U];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int u = 0; u < GEMV_U; u++) ldraw(wraw[r][u], wr[r] + k + 256 * u);
#pragma unroll
            for (int u = 0; u < GEMV_U; u++) {
                float wf[R][8];
#pragma unroll
                for (int r = 0; r < R; r++) cvt8(wraw[r][u], wf[r]);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    if (m < M) {
                        float xf[8];
                        load8(x + m * K + k + 256 * u, xf);
#pragma unroll
                        for (int r = 0; r < R; r++)
#pragma unroll
                            for (int i = 0; i < 8; i++) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
                    }
                }
            }
        }
        if (k < K) { /* the rest (< GEMV_U chunks): all its loads issued before use */
            raw8<T> wraw[R][GEMV_U - 1];
#pragma unroll
            for (int u = 0; u < GEMV_U - 1; u++)
                if (k + 256 * u < K)
#pragma unroll
                    for (int r = 0; r < R; r++) ldraw(wraw[r][u], wr[r] + k + 256 * u);
#pragma unroll
            for (int u = 0; u < GEMV_U - 1; u++) {
                if (k + 256 * u >= K) break;
                float wf[R][8];
#pragma unroll
                for (int r = 0; r < R; r++) cvt8(wraw[r][u], wf[r]);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    if (m < M) {
                        float xf[8];
                        load8(x + m * K + k + 256 * u, xf);
#pragma unroll
                        for (int r = 0; r < R; r++)
#pragma unroll
                            for (int i = 0; i < 8; i++) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
                    }
                }
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += 32) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                float wf = lmc_ld_f(wr[r], k);
#pragma unroll
                for (int m = 0; m < MT; m++)
                    if (m < M) acc[r][m] = fmaf(wf, x[m * K + k], acc[r][m]);
            }
        }
    }
}

/* One warp per output row, GEMV_WARPS rows per block, grid-stride. */
template <typename T, int MT, int R>
__global__ void __launch_bounds__(GEMV_WARPS * 32) matmul_gemv_fwd_kernel(struct gemv_args a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t total = a.row0[a.n], K = a.K;
    for (int64_t r = (int64_t)blockIdx.x * GEMV_WARPS + warp; r < total;
         r += (int64_t)gridDim.x * GEMV_WARPS) {
        int i = 0;
        while (i + 1 < a.n && r >= a.row0[i + 1]) i++;
        const int64_t n = r - a.row0[i], N = a.row0[i + 1] - a.row0[i];
        const T *wr[R];
        wr[0] = (const T *)a.w[i] + n * K;
        if (R == 2) wr[R - 1] = (const T *)a.w[1] + n * K;
        float acc[R][MT];
#pragma unroll
        for (int q = 0; q < R; q++)
#pragma unroll
            for (int m = 0; m < MT; m++) acc[q][m] = 0.0f;
        gemv_rows<T, MT, R>(wr, a.x, a.M, K, lane, a.vec, acc);
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float s0 = lmc_warp_sum(acc[0][m]);
            float s1 = R == 2 ? lmc_warp_sum(acc[R - 1][m]) : 0.0f;
            if (lane == 0 && m < a.M) {
                float *yp = a.y[i] + m * N + n;
                if (R == 2) {
                    *yp = s0 / (1.0f + expf(-s0)) * s1;
                } else {
                    float v = s0 + (a.b[i] ? a.b[i][n] : 0.0f);
                    *yp = a.mode == GEMV_ACC ? *yp + v : v;
                }
            }
        }
    }
}

template <typename T, int R>
static void gemv_launch_t(struct lmc_cuda_ctx *c, const struct gemv_args *a) {
    int64_t rows = a->row0[a->n];
    unsigned grid = (unsigned)LMC_MIN((rows + GEMV_WARPS - 1) / GEMV_WARPS, (int64_t)1 << 20);
    int threads = GEMV_WARPS * 32;
    if (a->M == 1)
        matmul_gemv_fwd_kernel<T, 1, R><<<grid, threads, 0, c->stream>>>(*a);
    else if (a->M == 2)
        matmul_gemv_fwd_kernel<T, 2, R><<<grid, threads, 0, c->stream>>>(*a);
    else if (a->M <= 4)
        matmul_gemv_fwd_kernel<T, 4, R><<<grid, threads, 0, c->stream>>>(*a);
    else
        matmul_gemv_fwd_kernel<T, 8, R><<<grid, threads, 0, c->stream>>>(*a);
    LMC_CUDA_LAUNCH_CHECK();
}

/* Fills the vec flag (every row 16-byte aligned) and launches by dtype. */
static void gemv_launch(struct lmc_cuda_ctx *c, struct gemv_args *a, enum lmc_dtype dt) {
    int es = dt == LMC_DTYPE_F32 ? 4 : 2;
    uintptr_t al = (uintptr_t)a->x;
    for (int i = 0; i < a->n; i++) al |= (uintptr_t)a->w[i];
    if (a->mode == GEMV_SWIGLU) al |= (uintptr_t)a->w[1];
    a->vec = a->K % 8 == 0 && al % 16 == 0 && ((size_t)a->K * (size_t)es) % 16 == 0;
    int R2 = a->mode == GEMV_SWIGLU;
    if (dt == LMC_DTYPE_BF16) R2 ? gemv_launch_t<__nv_bfloat16, 2>(c, a) : gemv_launch_t<__nv_bfloat16, 1>(c, a);
    else if (dt == LMC_DTYPE_F16) R2 ? gemv_launch_t<__half, 2>(c, a) : gemv_launch_t<__half, 1>(c, a);
    else R2 ? gemv_launch_t<float, 2>(c, a) : gemv_launch_t<float, 1>(c, a);
}

/* dst[i] = src[i] rounded to 16 bits (nearest even). vec: src and dst
 * 16-byte aligned, 8 elements per step (two 16-byte loads, one 16-byte
 * store); the n % 8 tail (and everything when !vec) one element a thread. */
__device__ __forceinline__ void cvt16(__nv_bfloat16 *d, float v) { *d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void cvt16(__half *d, float v) { *d = __float2half_rn(v); }
template <typename T>
__global__ void matmul_cvt_fwd_kernel(T *dst, const float *src, int64_t n, int vec) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t gi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t done = 0;
    if (vec) {
        const int64_t n8 = n / 8;
        for (int64_t i = gi; i < n8; i += stride) {
            float4 a = __ldg((const float4 *)(src + 8 * i)), b = __ldg((const float4 *)(src + 8 * i + 4));
            __align__(16) T t[8];
            cvt16(&t[0], a.x), cvt16(&t[1], a.y), cvt16(&t[2], a.z), cvt16(&t[3], a.w);
            cvt16(&t[4], b.x), cvt16(&t[5], b.y), cvt16(&t[6], b.z), cvt16(&t[7], b.w);
            *(uint4 *)(dst + 8 * i) = *(const uint4 *)t;
        }
        done = 8 * n8;
    }
    for (int64_t i = done + gi; i < n; i += stride) cvt16(&dst[i], src[i]);
}

template <typename T> static void cvt_launch(struct lmc_cuda_ctx *c, T *dst, const float *src, int64_t n) {
    if (n <= 0) return;
    int vec = ((uintptr_t)dst % 16 == 0) && ((uintptr_t)src % 16 == 0);
    matmul_cvt_fwd_kernel<T><<<lmc_cuda_blocks(vec ? (n + 7) / 8 : n, 256), 256, 0, c->stream>>>(dst, src, n, vec);
    LMC_CUDA_LAUNCH_CHECK();
    c->n_cvt++;
}

/* D(m,n) col-major (ld ldd) += bias[i] per row i: the bias when the
 * heuristic has no epilogue algorithm for it. */
__global__ void matmul_bias_fwd_kernel(float *d, const float *bias, int64_t m, int64_t n,
                                       int64_t ldd) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m * n;
         i += (int64_t)gridDim.x * blockDim.x)
        d[(i / m) * ldd + i % m] += bias[i % m];
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

/* Builds descriptors for the key in *p and asks the heuristic for an
 * algorithm; false when it has none (the plan is then released). */
/* bias: the call's bias pointer, set before the heuristic, which reads its
 * alignment from it (a NULL one reads as 256-byte aligned). */
static bool plan_build(struct lmc_cuda_ctx *c, struct lmc_cuda_mm_plan *p, const float *bias) {
    cudaDataType_t t = cuda_type((enum lmc_dtype)p->dtype);
    p->used = true;
    LMC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (p->bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_32F;
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias, sizeof bias));
    }
    if (p->ta)
        LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, (uint64_t)p->k, (uint64_t)p->m, p->lda));
    else
        LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, (uint64_t)p->m, (uint64_t)p->k, p->lda));
    if (p->tb)
        LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, (uint64_t)p->n, (uint64_t)p->k, p->ldb));
    else
        LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, (uint64_t)p->k, (uint64_t)p->n, p->ldb));
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)p->m, (uint64_t)p->n, p->ldd));
    cublasLtMatmulPreference_t pref;
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes, sizeof c->lt_ws_bytes));
    /* pointers need not be 256-byte aligned (the default assumption) */
    uint32_t al = (uint32_t)p->align;
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
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

static bool plan_match(const struct lmc_cuda_mm_plan *p, const struct lmc_cuda_mm_plan *q) {
    return p->used && p->m == q->m && p->n == q->n && p->k == q->k && p->lda == q->lda &&
           p->ldb == q->ldb && p->ldd == q->ldd && p->ta == q->ta && p->tb == q->tb &&
           p->dtype == q->dtype && p->align == q->align && p->bias_req == q->bias_req &&
           p->bias_align == q->bias_align;
}

/* The cached plan for key (its descriptor fields unused), built on a miss
 * (round-robin eviction); with a bias, falls back to a plan without the
 * epilogue (p->bias false: the caller adds the bias by kernel), cached
 * under the same key. */
static struct lmc_cuda_mm_plan *plan_get(struct lmc_cuda_ctx *c, struct lmc_cuda_mm_plan key,
                                         const float *bias) {
    key.used = true;
    for (int i = 0; i < LMC_CUDA_MM_PLANS; i++)
        if (plan_match(&c->plans[i], &key)) return &c->plans[i];
    struct lmc_cuda_mm_plan *p = &c->plans[c->next_plan];
    c->next_plan = (c->next_plan + 1) % LMC_CUDA_MM_PLANS;
    plan_destroy(p);
    *p = key;
    if (plan_build(c, p, bias)) return p;
    if (key.bias) {
        *p = key;
        p->bias = false;
        if (plan_build(c, p, NULL)) return p;
    }
    lmc_cuda_fail("cublasLtMatmulAlgoGetHeuristic", "no algorithm for this GEMM", __FILE__, __LINE__);
}

static int ptr_align(const void *ptr) {
    uintptr_t a = (uintptr_t)ptr;
    int al = 256;
    while (al > 1 && a % (uintptr_t)al) al >>= 1;
    return al;
}

void lmc_cuda_gemm(struct lmc_cuda_ctx *c, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                   const void *A, int64_t lda, const void *B, int64_t ldb, float *D, int64_t ldd,
                   enum lmc_dtype dt, const float *bias, float beta) {
    if (m <= 0 || n <= 0) return;
    LMC_ASSERT(k > 0);
    struct lmc_cuda_mm_plan key;
    memset(&key, 0, sizeof key);
    key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldd = ldd;
    key.ta = ta, key.tb = tb, key.dtype = (int)dt, key.bias_req = key.bias = bias != NULL;
    key.align = LMC_MIN(ptr_align(A), LMC_MIN(ptr_align(B), ptr_align(D)));
    key.bias_align = bias ? ptr_align(bias) : 0;
    struct lmc_cuda_mm_plan *p = plan_get(c, key, bias);
    if (p->bias)
        LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias, sizeof bias));
    const float one = 1.0f;
    LMC_CUBLAS_CHECK(cublasLtMatmul(c->lt, p->desc, &one, A, p->a, B, p->b, &beta, D, p->c, D,
                                    p->c, &p->algo, c->lt_ws, c->lt_ws_bytes, c->stream));
    if (bias && !p->bias) {
        matmul_bias_fwd_kernel<<<lmc_cuda_blocks(m * n, 256), 256, 0, c->stream>>>(D, bias, m, n, ldd);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

void lmc_cuda_to_bf16(struct lmc_cuda_ctx *c, __nv_bfloat16 *dst, const float *src, int64_t n) {
    cvt_launch(c, dst, src, n);
}

/* ---- held operands (backend.h operand_hold / operand_release) ----
 * The caller promises the held f32 ranges stay unchanged until their
 * release; a GEMM reading one (or a part of one starting at a 256-byte
 * offset of its bf16 copy: the plan's alignment key stays the scratch's)
 * in the bf16 mode converts the whole range once into hold_buf and every
 * later GEMM of the scope reads that copy: the same rounding of the same
 * floats, so the same bits, one launch instead of one per GEMM. Holds
 * nest (a stack of scopes; an operand held twice, as an adapter's A in the
 * step's arena and in its linear's backward, is read from the outer copy).
 * Lazy: a held range
 * no bf16 GEMM reads costs nothing; hold_buf is grown at a use when the
 * entries outgrow it, which drops every copy made so far (remade at
 * their next use; it stops growing after the first step). */
extern "C" void lmc_cuda_operand_hold(void *ctx, int n, const float *const *src, const int64_t *numel,
                                      const uint16_t *const *copy) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n >= 0 && c->n_scopes < LMC_CUDA_HOLDS);
    c->scope0[c->n_scopes++] = c->n_holds;
    size_t off = 0;
    if (c->n_holds) {
        const struct lmc_cuda_hold *e = &c->holds[c->n_holds - 1];
        off = e->off + (e->copy ? 0 : lmc_cuda_al256((size_t)e->n * 2));
    }
    /* only the bf16 training mode rounds f32 operands (inference on BF16
     * weights would only spend hold_buf) */
    for (int i = 0; c->train_bf16 && i < n && c->n_holds < LMC_CUDA_HOLDS; i++) {
        if (!src[i] || numel[i] <= 0) continue;
        struct lmc_cuda_hold *h = &c->holds[c->n_holds++];
        h->src = src[i], h->n = numel[i], h->off = off, h->done = false, h->copy = NULL;
        /* a caller's copy at a 256-byte boundary (the plan key's alignment), else one made here */
        if (copy && copy[i] && (uintptr_t)copy[i] % 256 == 0) {
            h->copy = (const __nv_bfloat16 *)copy[i], h->done = true;
            continue;
        }
        off += lmc_cuda_al256((size_t)numel[i] * 2);
    }
}

extern "C" void lmc_cuda_operand_release(void *ctx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(c->n_scopes > 0);
    c->n_holds = c->scope0[--c->n_scopes];
}

const __nv_bfloat16 *lmc_cuda_operand_bf16(struct lmc_cuda_ctx *c, __nv_bfloat16 *dst, const float *src,
                                           int64_t n) {
    for (int i = 0; i < c->n_holds; i++) { /* outer scopes first: their copies are the likelier made */
        struct lmc_cuda_hold *h = &c->holds[i];
        if (src < h->src || src + n > h->src + h->n || ((size_t)(src - h->src) * 2) % 256) continue;
        if (h->copy) return h->copy + (src - h->src);
        const struct lmc_cuda_hold *e = &c->holds[c->n_holds - 1];
        size_t need = e->off + (e->copy ? 0 : lmc_cuda_al256((size_t)e->n * 2));
        if (need > c->hold_bytes) {
            lmc_cuda_reserve(c, &c->hold_buf, &c->hold_bytes, need);
            for (int j = 0; j < c->n_holds; j++) c->holds[j].done = c->holds[j].copy != NULL;
        }
        __nv_bfloat16 *b = (__nv_bfloat16 *)((char *)c->hold_buf + h->off);
        if (!h->done) {
            cvt_launch(c, b, h->src, h->n);
            h->done = true;
        }
        return b + (src - h->src);
    }
    cvt_launch(c, dst, src, n);
    return dst;
}

/* The GEMM operand dtype for weights of dtype dt: F32 weights run in bf16
 * in the mixed-precision training mode, else as stored. */
static enum lmc_dtype gemm_dtype(const struct lmc_cuda_ctx *c, enum lmc_dtype dt) {
    return dt == LMC_DTYPE_F32 && c->train_bf16 ? LMC_DTYPE_BF16 : dt;
}

/* x as the GEMM's B operand: converted into scratch when the GEMM runs in
 * 16 bits; when weights of dtype wdt are converted too (F32 in the bf16
 * training mode) the scratch also holds room for wmax of their elements
 * after x (gemm_run converts each weight there). */
static const void *gemm_prep(struct lmc_cuda_ctx *c, const float *x, int64_t M, int64_t K,
                             enum lmc_dtype wdt, int64_t wmax) {
    enum lmc_dtype dt = gemm_dtype(c, wdt);
    if (dt == LMC_DTYPE_F32) return x;
    size_t xb = lmc_cuda_al256((size_t)(M * K) * 2);
    size_t wb = dt != wdt ? (size_t)wmax * 2 : 0;
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, xb + wb);
    if (dt == LMC_DTYPE_BF16) return lmc_cuda_operand_bf16(c, (__nv_bfloat16 *)c->scratch, x, M * K);
    cvt_launch(c, (__half *)c->scratch, x, M * K);
    return c->scratch;
}

/* y = b @ w^T (+ bias) + beta*y through cuBLASLt; b from gemm_prep (for M
 * rows). F32 weights in the bf16 training mode are converted into the
 * scratch room gemm_prep left after x. */
static void gemm_run(struct lmc_cuda_ctx *c, float *y, const void *b, int64_t M,
                     const struct lmc_mat *w, const float *bias, float beta) {
    int64_t N = w->rows, K = w->cols;
    enum lmc_dtype dt = gemm_dtype(c, w->dtype);
    const void *a = w->data;
    if (dt != w->dtype) {
        __nv_bfloat16 *wb = (__nv_bfloat16 *)((char *)c->scratch + lmc_cuda_al256((size_t)(M * K) * 2));
        a = lmc_cuda_operand_bf16(c, wb, (const float *)w->data, N * K);
    }
    lmc_cuda_gemm(c, true, false, N, M, K, a, K, b, K, y, N, dt, bias, beta);
}

/* K == 0: y = bias (or 0), or y += bias when accumulating. */
static void matmul_k0(struct lmc_cuda_ctx *c, float *y, int64_t M, int64_t N, const float *bias,
                      bool acc) {
    if (!acc) LMC_CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)(M * N) * sizeof(float), c->stream));
    if (bias) {
        matmul_bias_fwd_kernel<<<lmc_cuda_blocks(M * N, 256), 256, 0, c->stream>>>(y, bias, N, M, N);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

static void check_w(const struct lmc_mat *w) {
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32 || w->dtype == LMC_DTYPE_F16 || w->dtype == LMC_DTYPE_BF16);
}

static void matmul_one(struct lmc_cuda_ctx *c, float *y, const float *x, int64_t M,
                       const struct lmc_mat *w, const float *bias, bool acc) {
    int64_t N = w->rows, K = w->cols;
    if (M <= 0 || N <= 0) return;
    check_w(w);
    if (K == 0) return matmul_k0(c, y, M, N, bias, acc);
    if (M <= GEMV_MAX_M) {
        struct gemv_args a;
        memset(&a, 0, sizeof a);
        a.w[0] = w->data, a.y[0] = y, a.b[0] = bias, a.row0[0] = 0, a.row0[1] = N;
        a.x = x, a.K = K, a.n = 1, a.M = (int)M, a.mode = acc ? GEMV_ACC : GEMV_STORE;
        gemv_launch(c, &a, w->dtype);
        return;
    }
    gemm_run(c, y, gemm_prep(c, x, M, K, w->dtype, N * K), M, w, bias, acc ? 1.0f : 0.0f);
}

extern "C" void lmc_cuda_matmul(void *ctx, float *y, const float *x, int64_t M,
                                const struct lmc_mat *w, const float *bias) {
    matmul_one((struct lmc_cuda_ctx *)ctx, y, x, M, w, bias, false);
}

extern "C" void lmc_cuda_matmul_add(void *ctx, float *y, const float *x, int64_t M,
                                    const struct lmc_mat *w, const float *bias) {
    matmul_one((struct lmc_cuda_ctx *)ctx, y, x, M, w, bias, true);
}

/* Small M: one GEMV launch over all matrices (same dtype and K, in groups
 * of GEMV_MATS); large M: x converted once, one cuBLASLt GEMM each. */
extern "C" void lmc_cuda_matmul_multi(void *ctx, int n, float *const *y, const float *x,
                                      int64_t M, const struct lmc_mat *const *w,
                                      const float *const *bias) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0 || M <= 0) return;
    bool same = true;
    for (int i = 0; i < n; i++) {
        check_w(w[i]);
        same = same && w[i]->dtype == w[0]->dtype && w[i]->cols == w[0]->cols && w[i]->rows > 0;
    }
    int64_t K = w[0]->cols;
    if (!same || K == 0) {
        for (int i = 0; i < n; i++) matmul_one(c, y[i], x, M, w[i], bias ? bias[i] : NULL, false);
        return;
    }
    if (M <= GEMV_MAX_M) {
        for (int i0 = 0; i0 < n; i0 += GEMV_MATS) {
            struct gemv_args a;
            memset(&a, 0, sizeof a);
            a.n = LMC_MIN(GEMV_MATS, n - i0);
            for (int j = 0; j < a.n; j++) {
                a.w[j] = w[i0 + j]->data, a.y[j] = y[i0 + j];
                a.b[j] = bias ? bias[i0 + j] : NULL;
                a.row0[j + 1] = a.row0[j] + w[i0 + j]->rows;
            }
            a.x = x, a.K = K, a.M = (int)M, a.mode = GEMV_STORE;
            gemv_launch(c, &a, w[0]->dtype);
        }
        return;
    }
    int64_t wmax = 0;
    for (int i = 0; i < n; i++) wmax = LMC_MAX(wmax, w[i]->rows * K);
    const void *b = gemm_prep(c, x, M, K, w[0]->dtype, wmax);
    for (int i = 0; i < n; i++) gemm_run(c, y[i], b, M, w[i], bias ? bias[i] : NULL, 0.0f);
}

__global__ void matmul_swiglu_fwd_kernel(float *y, const float *u, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g = y[i];
        y[i] = g / (1.0f + expf(-g)) * u[i];
    }
}

extern "C" void lmc_cuda_matmul_swiglu(void *ctx, float *y, const float *x, int64_t M,
                                       const struct lmc_mat *wg, const struct lmc_mat *wu) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    int64_t N = wg->rows, K = wg->cols;
    LMC_ASSERT(wu->rows == N && wu->cols == K);
    if (M <= 0 || N <= 0) return;
    check_w(wg), check_w(wu);
    if (K == 0) { /* silu(0) * 0 */
        LMC_CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)(M * N) * sizeof(float), c->stream));
        return;
    }
    if (M <= GEMV_MAX_M && wg->dtype == wu->dtype) {
        struct gemv_args a;
        memset(&a, 0, sizeof a);
        a.w[0] = wg->data, a.w[1] = wu->data, a.y[0] = y, a.row0[1] = N;
        a.x = x, a.K = K, a.n = 1, a.M = (int)M, a.mode = GEMV_SWIGLU;
        gemv_launch(c, &a, wg->dtype);
        return;
    }
    lmc_cuda_reserve(c, &c->ff_up, &c->ff_up_bytes, (size_t)(M * N) * sizeof(float));
    if (wg->dtype == wu->dtype) {
        const void *b = gemm_prep(c, x, M, K, wg->dtype, N * K);
        gemm_run(c, y, b, M, wg, NULL, 0.0f);
        gemm_run(c, (float *)c->ff_up, b, M, wu, NULL, 0.0f);
    } else {
        matmul_one(c, y, x, M, wg, NULL, false);
        matmul_one(c, (float *)c->ff_up, x, M, wu, NULL, false);
    }
    matmul_swiglu_fwd_kernel<<<lmc_cuda_blocks(M * N, 256), 256, 0, c->stream>>>(
        y, (const float *)c->ff_up, M * N);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward (training) ----
 * y(M,N) = x(M,K) @ w(N,K)^T + b with F32 weights (the master copies):
 *   dx(M,K) = / += dy @ w        col-major: dx^T (K,M) = w^T (K,N) dy^T (N,M)
 *   dw(N,K) += dy^T @ x          col-major: dw^T (K,N) = x^T (K,M) dy (M,N)
 *   db(N)   += column sums of dy (lmc_colsum: fixed order, no atomics)
 * fp32 mode: fp32 GEMMs (CUBLAS_COMPUTE_32F, no TF32). bf16 training mode:
 * w, dy and x are converted to bf16 in scratch, tensor-core GEMMs with f32
 * accumulation write (or, beta = 1, accumulate into) the f32 gradients.
 * cuBLASLt with a fixed algorithm per shape is run-to-run deterministic. */
struct matmul_db_term {
    const float *dy;
    int64_t N;
    __device__ float operator()(int64_t m, int64_t j) const { return dy[m * N + j]; }
};

extern "C" void lmc_cuda_matmul_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                                    const float *x, int64_t M, const struct lmc_mat *w,
                                    int accum_dx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    /* BF16 weights (a frozen bf16 base, train/qlora.h): the bf16 mode's
     * operand as stored, so no conversion (the same GEMM as its F32
     * master converted here) */
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32 || (w->dtype == LMC_DTYPE_BF16 && c->train_bf16));
    const bool w16 = w->dtype == LMC_DTYPE_BF16;
    const int64_t N = w->rows, K = w->cols;
    if (M <= 0) return;
    bool gx = dx && K > 0 && N > 0, gw = dw && K > 0 && N > 0, gb = db && N > 0;
    if (dx && K > 0 && N == 0 && !accum_dx) /* an empty sum */
        LMC_CUDA_CHECK(cudaMemsetAsync(dx, 0, (size_t)(M * K) * sizeof(float), c->stream));
    const bool b16 = c->train_bf16;
    /* scratch: [w bf16][dy bf16][x bf16][db partials] */
    size_t o_w = 0, o_dy, o_x, o_db, sz = 0;
    if (b16 && gx && !w16) sz += lmc_cuda_al256((size_t)(N * K) * 2);
    o_dy = sz;
    if (b16 && (gx || gw)) sz += lmc_cuda_al256((size_t)(M * N) * 2);
    o_x = sz;
    if (b16 && gw) sz += lmc_cuda_al256((size_t)(M * K) * 2);
    o_db = sz;
    if (gb) sz += (size_t)(lmc_colsum_chunks(M) * N) * sizeof(double);
    if (sz) lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sz);
    char *s = (char *)c->scratch;
    const void *W = w->data, *DY = dy, *X = x;
    enum lmc_dtype dt = LMC_DTYPE_F32;
    if (b16 && (gx || gw)) {
        dt = LMC_DTYPE_BF16;
        DY = lmc_cuda_operand_bf16(c, (__nv_bfloat16 *)(s + o_dy), dy, M * N);
        if (gx && !w16) W = lmc_cuda_operand_bf16(c, (__nv_bfloat16 *)(s + o_w), (const float *)w->data, N * K);
        if (gw) X = lmc_cuda_operand_bf16(c, (__nv_bfloat16 *)(s + o_x), x, M * K);
    }
    if (gx) lmc_cuda_gemm(c, false, false, K, M, N, W, K, DY, N, dx, K, dt, NULL, accum_dx ? 1.0f : 0.0f);
    if (gw) lmc_cuda_gemm(c, false, true, K, N, M, X, K, DY, N, dw, K, dt, NULL, 1.0f);
    if (gb) lmc_colsum(c, db, (double *)(s + o_db), M, N, matmul_db_term{dy, N});
}
