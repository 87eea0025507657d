/* muon_batch.cu — Muon's step on the GPU for several matrices of one shape
 * at once (the optimizer groups its Muon tensors by shape; formula in
 * ops/optim_ops.h, CPU twin ops/cpu/newton_schulz.c applied per matrix):
 *  1. one kernel over all matrices: momentum (torch's lerps), the update
 *     rounded to bf16 into X, and per-block partial sums of its squares;
 *  2. one kernel: each block sums its matrix's partials in a fixed order
 *     (deterministic, no atomics), X = bf16(X / max(||X||_F, eps));
 *  3. per Newton–Schulz iteration three strided-batched cuBLASLt GEMMs with
 *     bf16 operands and outputs, fp32 accumulation (tensor cores), as
 *     torch.optim.Muon runs it on the GPU:
 *       A = X X^T;  B = c A A + b A (beta = b, C = A);  X' = B X + a X (beta = a);
 *     tall matrices (rows > cols) use the Gram matrix of the other side
 *     (A = X^T X, X' = X B + a X), the same iterate as transposing, without
 *     a transpose;
 *  4. one kernel over all matrices: p = p * decay_mul - lr_adj * X.
 * 3 + 3 * ns_steps launches per shape group, nothing read back on the host.
 * The GEMM plans (descriptors and the heuristic's algorithm) are cached in
 * the ctx (struct lmc_cuda_muon_cache). */
#include "ops/cuda/common.cuh"

extern "C" {
#include "ops/optim_ops.h"
}

#define MB_THREADS 256
#define MB_PARTS LMC_MUON_BATCH_PARTS /* partial-sum blocks per matrix, at most */
#define MB_PLANS 16

struct muon_plan {
    bool used;
    int ta, tb, batch, align;
    int64_t m, n, k, lda, ldb, ldd, sa, sb, sd;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
};

struct lmc_cuda_muon_cache {
    struct muon_plan plans[MB_PLANS];
    int next;
};

static void plan_release(struct muon_plan *p) {
    if (!p->used) return;
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->d);
    cublasLtMatmulDescDestroy(p->desc);
    p->used = false;
}

void lmc_cuda_muon_cache_free(struct lmc_cuda_ctx *c) {
    if (!c->muon_cache) return;
    for (int i = 0; i < MB_PLANS; i++) plan_release(&c->muon_cache->plans[i]);
    free(c->muon_cache);
    c->muon_cache = NULL;
}

static void layout(cublasLtMatrixLayout_t *l, int64_t rows, int64_t cols, int64_t ld, int batch, int64_t stride) {
    LMC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, CUDA_R_16BF, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t b = batch;
        LMC_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b));
        LMC_CUBLAS_CHECK(
            cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
}

static void plan_build(struct lmc_cuda_ctx *c, struct muon_plan *p) {
    LMC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = p->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LMC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (p->ta) layout(&p->a, p->k, p->m, p->lda, p->batch, p->sa);
    else layout(&p->a, p->m, p->k, p->lda, p->batch, p->sa);
    if (p->tb) layout(&p->b, p->n, p->k, p->ldb, p->batch, p->sb);
    else layout(&p->b, p->k, p->n, p->ldb, p->batch, p->sb);
    layout(&p->d, p->m, p->n, p->ldd, p->batch, p->sd);
    cublasLtMatmulPreference_t pref;
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &c->lt_ws_bytes, sizeof c->lt_ws_bytes));
    uint32_t al = (uint32_t)p->align;
    for (int a = CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES; a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES; a++)
        LMC_CUBLAS_CHECK(
            cublasLtMatmulPreferenceSetAttribute(pref, (cublasLtMatmulPreferenceAttributes_t)a, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res, &found);
    LMC_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (s != CUBLAS_STATUS_SUCCESS || found < 1)
        lmc_cuda_fail("cublasLtMatmulAlgoGetHeuristic", "no algorithm for Muon's batched bf16 GEMM", __FILE__,
                      __LINE__);
    p->algo = res.algo;
    p->used = true;
}

static int align_of(const void *ptr, int64_t stride_bytes) {
    uintptr_t a = (uintptr_t)ptr | (uintptr_t)stride_bytes;
    int al = 256;
    while (al > 1 && a % (uintptr_t)al) al >>= 1;
    return al;
}

/* batch column-major bf16 GEMMs D_i = alpha op(A_i) op(B_i) + beta C_i
 * (C_i = D's layout at C; C may be D when beta = 0), strides in elements. */
static void bgemm(struct lmc_cuda_ctx *c, int batch, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                  const __nv_bfloat16 *A, int64_t lda, int64_t sa, const __nv_bfloat16 *B, int64_t ldb, int64_t sb,
                  const __nv_bfloat16 *C, __nv_bfloat16 *D, int64_t ldd, int64_t sd, float alpha, float beta) {
    if (!c->muon_cache) {
        c->muon_cache = (struct lmc_cuda_muon_cache *)calloc(1, sizeof *c->muon_cache);
        if (!c->muon_cache) lmc_cuda_fail("calloc", "out of host memory for Muon's GEMM plans", __FILE__, __LINE__);
    }
    struct muon_plan key;
    memset(&key, 0, sizeof key);
    key.ta = ta, key.tb = tb, key.batch = batch, key.m = m, key.n = n, key.k = k;
    key.lda = lda, key.ldb = ldb, key.ldd = ldd, key.sa = sa, key.sb = sb, key.sd = sd;
    key.align = LMC_MIN(align_of(A, sa * 2), LMC_MIN(align_of(B, sb * 2), LMC_MIN(align_of(C, sd * 2),
                                                                                   align_of(D, sd * 2))));
    struct lmc_cuda_muon_cache *mc = c->muon_cache;
    struct muon_plan *p = NULL;
    for (int i = 0; i < MB_PLANS && !p; i++) {
        struct muon_plan *q = &mc->plans[i];
        if (q->used && q->ta == key.ta && q->tb == key.tb && q->batch == key.batch && q->m == key.m &&
            q->n == key.n && q->k == key.k && q->lda == key.lda && q->ldb == key.ldb && q->ldd == key.ldd &&
            q->sa == key.sa && q->sb == key.sb && q->sd == key.sd && q->align == key.align)
            p = q;
    }
    if (!p) {
        p = &mc->plans[mc->next];
        mc->next = (mc->next + 1) % MB_PLANS;
        plan_release(p);
        *p = key;
        plan_build(c, p);
    }
    LMC_CUBLAS_CHECK(cublasLtMatmul(c->lt, p->desc, &alpha, A, p->a, B, p->b, &beta, C, p->d, D, p->d, &p->algo,
                                    c->lt_ws, c->lt_ws_bytes, c->stream));
}

/* The matrices of one launch, passed by value (no upload). */
struct muon_mats {
    float *p[LMC_MUON_BATCH_MAX];
    const float *g[LMC_MUON_BATCH_MAX];
    float *buf[LMC_MUON_BATCH_MAX];
    float lr_adj[LMC_MUON_BATCH_MAX];
};

/* grid (parts, count): buf = lerp(buf, g', 1 - mu); u = nesterov ? lerp(g', buf, mu) : buf;
 * X = bf16(u); part[z * parts + block] = sum of X^2 over the block's elements. */
__global__ void __launch_bounds__(MB_THREADS)
    muon_batch_momentum_kernel(__nv_bfloat16 *X, int64_t sx, double *part, struct muon_mats mm, int64_t n,
                               struct lmc_muon_step s) {
    __shared__ double sh[32];
    const int z = blockIdx.y;
    const float *g = mm.g[z];
    float *buf = mm.buf[z];
    __nv_bfloat16 *x = X + z * sx;
    const float mu = s.momentum, omm = __fsub_rn(1.0f, s.momentum);
    double acc = 0;
    for (int64_t i = blockIdx.x * (int64_t)MB_THREADS + threadIdx.x; i < n; i += (int64_t)gridDim.x * MB_THREADS) {
        const float gi = __fmul_rn(g[i], s.grad_scale), b0 = buf[i];
        const float b = omm < 0.5f ? __fadd_rn(b0, __fmul_rn(omm, __fsub_rn(gi, b0)))
                                   : __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, b0), mu));
        buf[i] = b;
        const float u = !s.nesterov ? b
                        : mu < 0.5f ? __fadd_rn(gi, __fmul_rn(mu, __fsub_rn(b, gi)))
                                    : __fsub_rn(b, __fmul_rn(__fsub_rn(b, gi), omm));
        const __nv_bfloat16 ub = __float2bfloat16_rn(u);
        x[i] = ub;
        const double ud = (double)__bfloat162float(ub);
        acc += ud * ud;
    }
    acc = lmc_block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[z * (int64_t)gridDim.x + blockIdx.x] = acc;
}

/* grid (blocks, count): X = bf16(X / max(sqrt(sum of the matrix's parts), eps)). */
__global__ void __launch_bounds__(MB_THREADS)
    muon_batch_normalize_kernel(__nv_bfloat16 *X, int64_t sx, const double *part, int parts, int64_t n, float eps) {
    __shared__ float nrm;
    const int z = blockIdx.y;
    if (threadIdx.x == 0) {
        double t = 0;
        for (int q = 0; q < parts; q++) t += part[z * (int64_t)parts + q];
        const float f = (float)sqrt(t);
        nrm = f < eps ? eps : f;
    }
    __syncthreads();
    const float d = nrm;
    __nv_bfloat16 *x = X + z * sx;
    for (int64_t i = blockIdx.x * (int64_t)MB_THREADS + threadIdx.x; i < n; i += (int64_t)gridDim.x * MB_THREADS)
        x[i] = __float2bfloat16_rn(__fdiv_rn(__bfloat162float(x[i]), d));
}

/* grid (blocks, count): p = p * decay_mul - lr_adj * X */
__global__ void __launch_bounds__(MB_THREADS)
    muon_batch_update_kernel(const __nv_bfloat16 *X, int64_t sx, struct muon_mats mm, int64_t n, float decay_mul) {
    const int z = blockIdx.y;
    float *p = mm.p[z];
    const float lr = mm.lr_adj[z];
    const __nv_bfloat16 *x = X + z * sx;
    for (int64_t i = blockIdx.x * (int64_t)MB_THREADS + threadIdx.x; i < n; i += (int64_t)gridDim.x * MB_THREADS)
        p[i] = __fsub_rn(__fmul_rn(p[i], decay_mul), __fmul_rn(lr, __bfloat162float(x[i])));
}

/* element strides of the work pieces: multiples of 128 (256-byte aligned);
 * the layout lmc_muon_batch_work_floats (ops/cpu/newton_schulz.c) sizes */
static int64_t up128(int64_t x) { return (x + 127) / 128 * 128; }

extern "C" void lmc_cuda_muon_batch(void *ctx, const struct lmc_muon_mat *mats, int count,
                                    const struct lmc_muon_step *s, float *work) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (count <= 0) return;
    LMC_ASSERT(count <= LMC_MUON_BATCH_MAX);
    const int64_t rows = mats[0].rows, cols = mats[0].cols, n = rows * cols;
    for (int i = 1; i < count; i++) LMC_ASSERT(mats[i].rows == rows && mats[i].cols == cols);
    const bool tall = rows > cols;
    const int64_t k = LMC_MIN(rows, cols), w = LMC_MAX(rows, cols);
    const int64_t sx = up128(k * w), sa = up128(k * k);
    /* work: partial sums (double) first, then X, Y, A, B */
    double *part = (double *)work;
    __nv_bfloat16 *X = (__nv_bfloat16 *)((char *)work + lmc_cuda_al256((size_t)count * MB_PARTS * sizeof(double)));
    __nv_bfloat16 *Y = X + count * sx, *A = Y + count * sx, *B = A + count * sa;
    struct muon_mats mm;
    memset(&mm, 0, sizeof mm);
    for (int i = 0; i < count; i++)
        mm.p[i] = mats[i].p, mm.g[i] = mats[i].g, mm.buf[i] = mats[i].buf, mm.lr_adj[i] = mats[i].lr_adj;
    int64_t parts = (n + MB_THREADS * 8 - 1) / (MB_THREADS * 8);
    parts = LMC_MAX((int64_t)1, LMC_MIN(parts, (int64_t)MB_PARTS));
    const dim3 grid((unsigned)parts, (unsigned)count);
    muon_batch_momentum_kernel<<<grid, MB_THREADS, 0, c->stream>>>(X, sx, part, mm, n, *s);
    LMC_CUDA_LAUNCH_CHECK();
    muon_batch_normalize_kernel<<<grid, MB_THREADS, 0, c->stream>>>(X, sx, part, (int)parts, n, s->ns_eps);
    LMC_CUDA_LAUNCH_CHECK();
    /* Row-major X (rows, cols) is the column-major (cols, rows) matrix Xc, ld cols.
     * wide (rows = k): A = X X^T = Xc^T Xc (k, k); X' = B X, i.e. Xc' = Xc Bc.
     * tall (cols = k): A = X^T X = Xc Xc^T (k, k); X' = X B, i.e. Xc' = Bc Xc.
     * A and B are symmetric, so their storage order does not matter. */
    for (int it = 0; it < s->ns_steps; it++) {
        if (!tall) bgemm(c, count, true, false, k, k, w, X, w, sx, X, w, sx, A, A, k, sa, 1.0f, 0.0f);
        else bgemm(c, count, false, true, k, k, w, X, k, sx, X, k, sx, A, A, k, sa, 1.0f, 0.0f);
        bgemm(c, count, false, false, k, k, k, A, k, sa, A, k, sa, A, B, k, sa, s->ns_c, s->ns_b);
        if (!tall) bgemm(c, count, false, false, w, k, k, X, w, sx, B, k, sa, X, Y, w, sx, 1.0f, s->ns_a);
        else bgemm(c, count, false, false, k, w, k, B, k, sa, X, k, sx, X, Y, k, sx, 1.0f, s->ns_a);
        __nv_bfloat16 *t = X;
        X = Y, Y = t;
    }
    muon_batch_update_kernel<<<grid, MB_THREADS, 0, c->stream>>>(X, sx, mm, n, s->decay_mul);
    LMC_CUDA_LAUNCH_CHECK();
}
