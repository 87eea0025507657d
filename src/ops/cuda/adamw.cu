/* adamw.cu — the optimizer's backend ops on the GPU (see backend.h and the
 * CPU twin ops/cpu/adamw.c): zero (cudaMemsetAsync), a deterministic sum
 * of squares and the element-wise AdamW update.
 *
 * sumsq: fixed chunks of SUMSQ_CHUNK elements, one block each (a fixed
 * strided assignment and reduction tree, squares summed in double), then
 * one block sums the chunks' partials in a fixed assignment; the order
 * depends on n alone, so every call on the same data gives the same bits.
 *
 * adamw: operation by operation as backend.h's formula, each rounded to
 * float32 through the _rn intrinsics, which the compiler never contracts
 * into FMAs (whatever -fmad says) — sqrt and divisions IEEE-rounded. */
#include "ops/cuda/common.cuh"

#define SUMSQ_CHUNK ((int64_t)1 << 16)
#define SUMSQ_THREADS 256

extern "C" void lmc_cuda_zero(void *ctx, void *p, size_t bytes) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (bytes) LMC_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, c->stream));
}

__global__ void __launch_bounds__(SUMSQ_THREADS)
    sumsq_part_kernel(double *part, const float *x, int64_t n) {
    __shared__ double sh[32];
    const int64_t lo = (int64_t)blockIdx.x * SUMSQ_CHUNK;
    const int64_t hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
    double s = 0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += SUMSQ_THREADS) {
        double v = x[i];
        s += v * v;
    }
    s = lmc_block_sum_d(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(SUMSQ_THREADS)
    sumsq_final_kernel(double *out, const double *part, int64_t nq) {
    __shared__ double sh[32];
    double s = 0;
    for (int64_t q = threadIdx.x; q < nq; q += SUMSQ_THREADS) s += part[q];
    s = lmc_block_sum_d(s, sh);
    if (threadIdx.x == 0) *out = s;
}

extern "C" double lmc_cuda_sumsq(void *ctx, const float *x, int64_t n) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return 0;
    const int64_t nq = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    LMC_ASSERT(nq <= 0x7fffffff);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, (size_t)(nq + 1) * sizeof(double));
    double *part = (double *)c->scratch, *out = part + nq;
    sumsq_part_kernel<<<(unsigned)nq, SUMSQ_THREADS, 0, c->stream>>>(part, x, n);
    LMC_CUDA_LAUNCH_CHECK();
    sumsq_final_kernel<<<1, SUMSQ_THREADS, 0, c->stream>>>(out, part, nq);
    LMC_CUDA_LAUNCH_CHECK();
    double r = 0;
    lmc_cuda_download(ctx, &r, out, sizeof r); /* waits */
    return r;
}

/* g' = g * grad_scale;  p' = p * decay_mul;
 * m = m + one_minus_b1 * (g' - m);  v = v * beta2 + one_minus_b2 * g' * g';
 * p = p' - step_size * (m / (sqrtf(v) / bc2_sqrt + eps)). */
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n,
                             struct lmc_adamw_step s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float gi = __fmul_rn(g[i], s.grad_scale);
        const float pi = __fmul_rn(p[i], s.decay_mul);
        const float m0 = m[i], v0 = v[i];
        const float mi = __fadd_rn(m0, __fmul_rn(s.one_minus_b1, __fsub_rn(gi, m0)));
        const float vi = __fadd_rn(__fmul_rn(v0, s.beta2), __fmul_rn(__fmul_rn(s.one_minus_b2, gi), gi));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fsub_rn(pi, __fmul_rn(s.step_size, __fdiv_rn(mi, denom)));
    }
}

extern "C" void lmc_cuda_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                               const struct lmc_adamw_step *s) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0) return;
    adamw_kernel<<<lmc_cuda_blocks(n, 256), 256, 0, c->stream>>>(p, g, m, v, n, *s);
    LMC_CUDA_LAUNCH_CHECK();
}
