/* lowrank.cu — GaLore's and APOLLO's step on the GPU (CPU twin:
 * ops/cpu/lowrank.c; formulas in ops/optim_ops.h): the projected gradient
 * and GaLore's projection back as fp32 cuBLASLt GEMMs (lmc_cuda_gemm, the
 * back-projection accumulating into p), the moments element-wise, APOLLO's
 * channel norms one thread per channel (double sums in a fixed order),
 * the factors, ||S|| and the norm-growth limiter in one block each
 * (deterministic, read on the device: no host sync), and the update with
 * the decay after it. Element-wise math through the _rn intrinsics. */
#include "ops/cuda/common.cuh"

extern "C" {
#include "ops/optim_ops.h"
}

#define LR_THREADS 256
#define LR_RED 1024

/* r = R gs; m = m b1 + r omb1; v = v b2 + omb2 r^2; R = write_n ? alpha N : r */
__global__ void lowrank_moments_kernel(float *R, float *m, float *v, int64_t nl, struct lmc_lowrank_step s,
                                       int write_n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < nl; i += (int64_t)gridDim.x * blockDim.x) {
        const float r = __fmul_rn(R[i], s.grad_scale);
        const float mi = __fadd_rn(__fmul_rn(m[i], s.beta1), __fmul_rn(r, s.one_minus_b1));
        const float vi = __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(s.one_minus_b2, __fmul_rn(r, r)));
        m[i] = mi, v[i] = vi;
        R[i] = write_n ? __fmul_rn(s.alpha, __fdiv_rn(mi, __fadd_rn(__fsqrt_rn(vi), s.eps))) : r;
    }
}

/* per channel q (a row of R when right, a column when left): sums of R^2 and N^2 */
__global__ void apollo_chan_kernel(double *nr, double *nn, const float *R, const float *m, const float *v,
                                   int64_t nch, int64_t len, int right, int64_t low_cols, float eps) {
    const int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (q >= nch) return;
    double a = 0, b = 0;
    for (int64_t t = 0; t < len; t++) {
        const int64_t i = right ? q * low_cols + t : t * low_cols + q;
        const float x = __fdiv_rn(m[i], __fadd_rn(__fsqrt_rn(v[i]), eps));
        a += (double)R[i] * (double)R[i];
        b += (double)x * (double)x;
    }
    nr[q] = a, nn[q] = b;
}

/* f[q] = ||N_q|| / (||R_q|| + 1e-8) as float; tensor-wise one f[0] from the totals */
__global__ void __launch_bounds__(LR_RED)
    apollo_factor_kernel(float *f, const double *nr, const double *nn, int64_t nch, int tensor) {
    __shared__ double sh[32];
    if (!tensor) {
        for (int64_t q = threadIdx.x; q < nch; q += LR_RED) f[q] = (float)(sqrt(nn[q]) / (sqrt(nr[q]) + 1e-8));
        return;
    }
    double a = 0, b = 0;
    for (int64_t q = threadIdx.x; q < nch; q += LR_RED) a += nr[q], b += nn[q];
    a = lmc_block_sum_d(a, sh);
    b = lmc_block_sum_d(b, sh);
    if (threadIdx.x == 0) f[0] = (float)(sqrt(b) / (sqrt(a) + 1e-8));
}

/* ||S||^2 = sum (g gs f)^2; the limiter: lim_out[0], prev_norm[0] updated */
__global__ void __launch_bounds__(LR_RED)
    apollo_limit_kernel(double *lim_out, float *prev_norm, const float *g, const float *f, int64_t rows,
                        int64_t cols, int right, int tensor, float gs) {
    __shared__ double sh[32];
    double ss = 0;
    for (int64_t i = threadIdx.x; i < rows * cols; i += LR_RED) {
        const int64_t r = i / cols, c = i % cols;
        const double x = (double)__fmul_rn(g[i], gs) * (double)f[tensor ? 0 : right ? r : c];
        ss += x * x;
    }
    ss = lmc_block_sum_d(ss, sh);
    if (threadIdx.x == 0) {
        float prev = prev_norm[0];
        double nrm = sqrt(ss), lim = 1.0;
        if (prev >= 0) {
            lim = fmax(nrm / ((double)prev + 1e-8), 1.01) / 1.01;
            prev = (float)(nrm / lim);
        } else {
            prev = (float)nrm;
        }
        prev_norm[0] = prev;
        lim_out[0] = lim;
    }
}

/* p += alpha ((S / lim) sqrt_scale), S = g gs f; then p += p decay */
__global__ void apollo_update_kernel(float *p, const float *g, const float *f, const double *lim, int64_t rows,
                                     int64_t cols, int right, int tensor, struct lmc_lowrank_step s) {
    const double L = lim[0];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * cols;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        const float fq = f[tensor ? 0 : right ? r : c];
        const float S = (float)((double)__fmul_rn(__fmul_rn(g[i], s.grad_scale), fq) / L);
        float pi = __fadd_rn(p[i], __fmul_rn(s.alpha, __fmul_rn(S, s.sqrt_scale)));
        if (s.decay != 0.0f) pi = __fadd_rn(pi, __fmul_rn(pi, s.decay));
        p[i] = pi;
    }
}

__global__ void lowrank_decay_kernel(float *p, int64_t n, float decay) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = __fadd_rn(p[i], __fmul_rn(p[i], decay));
}

extern "C" void lmc_cuda_lowrank(void *ctx, float *p, const float *g, float *m, float *v, const float *proj,
                                 float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                                 const struct lmc_lowrank_step *s, float *work) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const int right = s->right;
    LMC_ASSERT(right == (rows >= cols) && rank >= 1 && rank <= (rows < cols ? rows : cols));
    const int64_t low_cols = right ? rank : cols, nl = (right ? rows : rank) * low_cols, n = rows * cols;
    const int64_t nch = right ? rows : cols;
    float *R = work;
    double *nr = (double *)(work + ((nl + 1) & ~(int64_t)1)), *nn = nr + nch, *sc = nn + nch;
    float *f = (float *)(sc + 4);
    /* R = G P^T (right) or P^T G, row-major; gs is applied in the moments kernel */
    if (right) lmc_cuda_gemm(c, true, false, rank, rows, cols, proj, cols, g, cols, R, rank, LMC_DTYPE_F32, NULL, 0.0f);
    else lmc_cuda_gemm(c, false, true, cols, rank, rows, g, cols, proj, rank, R, cols, LMC_DTYPE_F32, NULL, 0.0f);
    lowrank_moments_kernel<<<lmc_cuda_blocks(nl, LR_THREADS), LR_THREADS, 0, c->stream>>>(R, m, v, nl, *s, !s->apollo);
    LMC_CUDA_LAUNCH_CHECK();
    const unsigned bn = lmc_cuda_blocks(n, LR_THREADS);
    if (!s->apollo) {
        /* p += (alpha N) P (right) or P (alpha N): column-major, p^T (cols, rows) += ... */
        if (right) lmc_cuda_gemm(c, false, false, cols, rows, rank, proj, cols, R, rank, p, cols, LMC_DTYPE_F32, NULL, 1.0f);
        else lmc_cuda_gemm(c, false, false, cols, rows, rank, R, cols, proj, rank, p, cols, LMC_DTYPE_F32, NULL, 1.0f);
        if (s->decay != 0.0f) {
            lowrank_decay_kernel<<<bn, LR_THREADS, 0, c->stream>>>(p, n, s->decay);
            LMC_CUDA_LAUNCH_CHECK();
        }
        return;
    }
    apollo_chan_kernel<<<lmc_cuda_blocks(nch, LR_THREADS), LR_THREADS, 0, c->stream>>>(nr, nn, R, m, v, nch, rank,
                                                                                        right, low_cols, s->eps);
    LMC_CUDA_LAUNCH_CHECK();
    apollo_factor_kernel<<<1, LR_RED, 0, c->stream>>>(f, nr, nn, nch, s->tensor);
    LMC_CUDA_LAUNCH_CHECK();
    apollo_limit_kernel<<<1, LR_RED, 0, c->stream>>>(sc, prev_norm, g, f, rows, cols, right, s->tensor, s->grad_scale);
    LMC_CUDA_LAUNCH_CHECK();
    apollo_update_kernel<<<bn, LR_THREADS, 0, c->stream>>>(p, g, f, sc, rows, cols, right, s->tensor, *s);
    LMC_CUDA_LAUNCH_CHECK();
}
