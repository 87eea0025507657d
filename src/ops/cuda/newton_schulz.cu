/* newton_schulz.cu — Muon's step on the GPU (CPU twin:
 * ops/cpu/newton_schulz.c; formula in ops/optim_ops.h): a kernel for the
 * momentum (torch's lerps) that writes the update X, transposed when
 * rows > cols; the Frobenius norm (one block, double, a fixed order) and
 * the division by max(norm, eps) read on the device (no host sync); five
 * quintic iterations as three fp32 cuBLASLt GEMMs each (lmc_cuda_gemm:
 * A = X X^T, A A, B X) with element-wise kernels for B = b A + c A A and
 * Y = a X + B X; and the decayed update of p. With ns_bf16 the GEMMs
 * read bf16 copies of X, A and B (tensor cores, fp32 accumulation) while
 * X, A, B and the element-wise steps stay fp32; without it everything is
 * fp32 (the CPU twin's precision). */
#include "ops/cuda/common.cuh"

extern "C" {
#include "ops/optim_ops.h"
}

#define NS_THREADS 256
#define NORM_THREADS 1024

/* buf = lerp(buf, g', 1 - mu); u = nesterov ? lerp(g', buf, mu) : buf;
 * X[(tr ? j*rows + r : i)] = u, i = r*cols + j. */
__global__ void muon_momentum_kernel(float *X, float *buf, const float *g, int64_t rows, int64_t cols,
                                     int tr, struct lmc_muon_step s) {
    const int64_t n = rows * cols;
    const float mu = s.momentum, omm = __fsub_rn(1.0f, s.momentum);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float gi = __fmul_rn(g[i], s.grad_scale), b0 = buf[i];
        const float b = omm < 0.5f ? __fadd_rn(b0, __fmul_rn(omm, __fsub_rn(gi, b0)))
                                   : __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, b0), mu));
        buf[i] = b;
        const float u = !s.nesterov ? b
                        : mu < 0.5f ? __fadd_rn(gi, __fmul_rn(mu, __fsub_rn(b, gi)))
                                    : __fsub_rn(b, __fmul_rn(__fsub_rn(b, gi), omm));
        X[tr ? (i % cols) * rows + i / cols : i] = u;
    }
}

/* out[0] = max(sqrt(sum x^2), eps) as float (one block, double sums). */
__global__ void __launch_bounds__(NORM_THREADS)
    muon_norm_kernel(float *out, const float *x, int64_t n, float eps) {
    __shared__ double sh[32];
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += NORM_THREADS) s += (double)x[i] * (double)x[i];
    s = lmc_block_sum_d(s, sh);
    if (threadIdx.x == 0) {
        float nrm = (float)sqrt(s);
        out[0] = nrm < eps ? eps : nrm;
    }
}

__global__ void muon_div_kernel(float *x, int64_t n, const float *nrm) {
    const float d = nrm[0];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fdiv_rn(x[i], d);
}

/* y = alpha * x + beta * y */
__global__ void muon_axpby_kernel(float *y, const float *x, int64_t n, float alpha, float beta) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(__fmul_rn(alpha, x[i]), __fmul_rn(beta, y[i]));
}

/* p = p * decay_mul - lr_adj * O (O transposed back when tr) */
__global__ void muon_update_kernel(float *p, const float *O, int64_t rows, int64_t cols, int tr,
                                   float decay_mul, float lr_adj) {
    const int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float o = O[tr ? (i % cols) * rows + i / cols : i];
        p[i] = __fsub_rn(__fmul_rn(p[i], decay_mul), __fmul_rn(lr_adj, o));
    }
}

extern "C" void lmc_cuda_muon(void *ctx, float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                              const struct lmc_muon_step *s, float *work) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const int64_t n = rows * cols;
    if (n <= 0) return;
    const int tr = rows > cols;
    const int64_t k = tr ? cols : rows, w = tr ? rows : cols;
    float *X = work, *Y = work + k * w, *A = Y + k * w, *B = A + k * k;
    const size_t o_xb = 256, o_ab = o_xb + lmc_cuda_al256((size_t)(k * w) * 2),
                 o_bb = o_ab + lmc_cuda_al256((size_t)(k * k) * 2), need = o_bb + lmc_cuda_al256((size_t)(k * k) * 2);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, s->ns_bf16 ? need : sizeof(float));
    float *nrm = (float *)c->scratch;
    __nv_bfloat16 *xb = (__nv_bfloat16 *)((char *)c->scratch + o_xb);
    __nv_bfloat16 *ab = (__nv_bfloat16 *)((char *)c->scratch + o_ab), *bb = (__nv_bfloat16 *)((char *)c->scratch + o_bb);
    const unsigned bl = lmc_cuda_blocks(n, NS_THREADS), bk = lmc_cuda_blocks(k * k, NS_THREADS);
    muon_momentum_kernel<<<bl, NS_THREADS, 0, c->stream>>>(X, buf, g, rows, cols, tr, *s);
    LMC_CUDA_LAUNCH_CHECK();
    muon_norm_kernel<<<1, NORM_THREADS, 0, c->stream>>>(nrm, X, n, s->ns_eps);
    LMC_CUDA_LAUNCH_CHECK();
    muon_div_kernel<<<bl, NS_THREADS, 0, c->stream>>>(X, n, nrm);
    LMC_CUDA_LAUNCH_CHECK();
    /* Row-major X (k, w) is the column-major (w, k) matrix Xc; A, B are
     * symmetric, so their layout does not matter. */
    const enum lmc_dtype dt = s->ns_bf16 ? LMC_DTYPE_BF16 : LMC_DTYPE_F32;
    for (int it = 0; it < s->ns_steps; it++) {
        const void *xo = X, *ao = A, *bo = B;
        if (s->ns_bf16) lmc_cuda_to_bf16(c, xb, X, k * w), xo = xb;
        lmc_cuda_gemm(c, true, false, k, k, w, xo, w, xo, w, A, k, dt, NULL, 0.0f); /* A = X X^T */
        if (s->ns_bf16) lmc_cuda_to_bf16(c, ab, A, k * k), ao = ab;
        lmc_cuda_gemm(c, false, false, k, k, k, ao, k, ao, k, B, k, dt, NULL, 0.0f); /* B = A A */
        muon_axpby_kernel<<<bk, NS_THREADS, 0, c->stream>>>(B, A, k * k, s->ns_b, s->ns_c); /* B = b A + c A A */
        LMC_CUDA_LAUNCH_CHECK();
        if (s->ns_bf16) lmc_cuda_to_bf16(c, bb, B, k * k), bo = bb;
        /* Y^T (w, k) = Xc B: Y = B X */
        lmc_cuda_gemm(c, false, false, w, k, k, xo, w, bo, k, Y, w, dt, NULL, 0.0f);
        muon_axpby_kernel<<<bl, NS_THREADS, 0, c->stream>>>(Y, X, n, s->ns_a, 1.0f); /* Y = a X + B X */
        LMC_CUDA_LAUNCH_CHECK();
        float *t = X;
        X = Y, Y = t;
    }
    muon_update_kernel<<<bl, NS_THREADS, 0, c->stream>>>(p, X, rows, cols, tr, s->decay_mul, s->lr_adj);
    LMC_CUDA_LAUNCH_CHECK();
}
