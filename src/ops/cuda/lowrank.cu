/* lowrank.cu — GaLore's and APOLLO's step on the GPU (CPU twin:
 * ops/cpu/lowrank.c; formulas in ops/optim_ops.h): the projected gradient
 * and GaLore's projection back as fp32 cuBLASLt GEMMs (lmc_cuda_gemm, the
 * back-projection accumulating into p), the moments element-wise, APOLLO's
 * channel norms one thread per channel (double sums in a fixed order),
 * (a warp per channel when the channel is a row of R), the factors in one
 * block, ||S||^2 as per-block partials over rows (up to LR_SQ_BLOCKS
 * blocks) summed by the one-block limiter (fixed orders: deterministic,
 * read on the device: no host sync), and the update with the decay after
 * it, rows over blocks. Element-wise math through the _rn intrinsics.
 * (||S|| once ran in a single block over the whole gradient with a 64-bit
 * division per element: ~40 ms of a 124M step on an H100.) */
#include "ops/cuda/common.cuh"

extern "C" {
#include "ops/optim_ops.h"
}

#define LR_THREADS 256
#define LR_RED 1024
#define LR_SQ_BLOCKS 1024 /* blocks of the ||S||^2 partial sums (<= rows) */
#define LR_UPD_BLOCKS 8192

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

/* per channel q (a row of R when right, a column when left): sums of R^2
 * and N^2. Left: one thread per column (adjacent threads read adjacent
 * columns: coalesced). Right: one warp per row (a row is rank contiguous
 * floats; lanes stride it, then a fixed shuffle tree: deterministic). */
__global__ void apollo_chan_kernel(double *nr, double *nn, const float *R, const float *m, const float *v,
                                   int64_t nch, int64_t len, int right, int64_t low_cols, float eps) {
    const int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, nth = (int64_t)gridDim.x * blockDim.x;
    if (right) { /* q is the same across a warp: the shuffles see whole warps */
        const int lane = threadIdx.x & 31;
        for (int64_t q = tid >> 5; q < nch; q += nth >> 5) {
            double a = 0, b = 0;
            for (int64_t t = lane; t < len; t += 32) {
                const int64_t i = q * low_cols + t;
                const float x = __fdiv_rn(m[i], __fadd_rn(__fsqrt_rn(v[i]), eps));
                a += (double)R[i] * (double)R[i];
                b += (double)x * (double)x;
            }
            a = lmc_warp_sum_d(a);
            b = lmc_warp_sum_d(b);
            if (lane == 0) nr[q] = a, nn[q] = b;
        }
        return;
    }
    for (int64_t q = tid; q < nch; q += nth) {
        double a = 0, b = 0;
        for (int64_t t = 0; t < len; t++) {
            const int64_t i = t * low_cols + q;
            const float x = __fdiv_rn(m[i], __fadd_rn(__fsqrt_rn(v[i]), eps));
            a += (double)R[i] * (double)R[i];
            b += (double)x * (double)x;
        }
        nr[q] = a, nn[q] = b;
    }
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

/* ||S||^2 = sum (g gs f)^2 over the whole gradient, many blocks: block b
 * takes rows b, b + gridDim.x, ... (threads along the row: no index
 * division), its double partial in part[b] (a fixed tree: deterministic). */
__global__ void apollo_sq_kernel(double *part, const float *g, const float *f, int64_t rows, int64_t cols, int right,
                                 int tensor, float gs) {
    __shared__ double sh[32];
    double ss = 0;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *gr = g + r * cols;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const double x = (double)__fmul_rn(gr[c], gs) * (double)f[tensor ? 0 : right ? r : c];
            ss += x * x;
        }
    }
    ss = lmc_block_sum_d(ss, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = ss;
}

/* the partials summed (one block, fixed order), then the limiter:
 * lim_out[0], prev_norm[0] updated */
__global__ void __launch_bounds__(LR_RED)
    apollo_limit_kernel(double *lim_out, float *prev_norm, const double *part, int64_t nparts) {
    __shared__ double sh[32];
    double ss = 0;
    for (int64_t i = threadIdx.x; i < nparts; i += LR_RED) ss += part[i];
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

/* p += alpha ((S / lim) sqrt_scale), S = g gs f; then p += p decay; rows
 * over blocks, threads along the row (no index division) */
__global__ void apollo_update_kernel(float *p, const float *g, const float *f, const double *lim, int64_t rows,
                                     int64_t cols, int right, int tensor, struct lmc_lowrank_step s) {
    const double L = lim[0];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const int64_t i = r * cols + c;
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
    /* right: a warp per channel (row); left: a thread per channel (column) */
    const unsigned bc = lmc_cuda_blocks(right ? nch * 32 : nch, LR_THREADS);
    apollo_chan_kernel<<<bc, LR_THREADS, 0, c->stream>>>(nr, nn, R, m, v, nch, rank, right, low_cols, s->eps);
    LMC_CUDA_LAUNCH_CHECK();
    apollo_factor_kernel<<<1, LR_RED, 0, c->stream>>>(f, nr, nn, nch, s->tensor);
    LMC_CUDA_LAUNCH_CHECK();
    /* nr is free once f is written: the ||S||^2 partials go there (nparts
     * <= rows <= nch when right; <= rows < cols = nch when left) */
    const unsigned nparts = (unsigned)(rows < LR_SQ_BLOCKS ? rows : LR_SQ_BLOCKS);
    apollo_sq_kernel<<<nparts, LR_THREADS, 0, c->stream>>>(nr, g, f, rows, cols, right, s->tensor, s->grad_scale);
    LMC_CUDA_LAUNCH_CHECK();
    apollo_limit_kernel<<<1, LR_RED, 0, c->stream>>>(sc, prev_norm, nr, nparts);
    LMC_CUDA_LAUNCH_CHECK();
    const unsigned bu = (unsigned)(rows < LR_UPD_BLOCKS ? rows : LR_UPD_BLOCKS);
    apollo_update_kernel<<<bu, LR_THREADS, 0, c->stream>>>(p, g, f, sc, rows, cols, right, s->tensor, *s);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- GaLore's subspace refresh (ops/optim_ops.h; CPU twin
 * ops/cpu/lowrank.c): fp32 cuBLASLt GEMMs, a device copy (orth) and the
 * sign rule, a block per vector; nothing leaves the device. */

/* row-major C (M, N) = op(A) op(B), as the column-major GEMM C^T = op(B)^T op(A)^T */
static void rm_gemm(struct lmc_cuda_ctx *c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    lmc_cuda_gemm(c, tb, ta, N, M, K, B, ldb, A, lda, C, ldc, LMC_DTYPE_F32, NULL, 0.0f);
}

/* C = Y^T Y (Yt Yt^T on the right) and, with g, T = Y^T M Y through work */
static void gram_ct(struct lmc_cuda_ctx *c, const float *g, const float *y, int64_t rows, int64_t cols, int64_t rank,
                    float *ct, float *work) {
    const int64_t M = rows, N = cols, r = rank;
    float *C = ct, *T = ct + r * r, *Z = work;
    if (rows >= cols) {
        rm_gemm(c, false, true, r, r, N, y, N, y, N, C, r); /* C = Yt Yt^T */
        if (!g) return;
        rm_gemm(c, false, true, M, r, N, g, N, y, N, Z, r); /* Z2 = G Yt^T */
        rm_gemm(c, true, false, r, r, M, Z, r, Z, r, T, r); /* T = Z2^T Z2 */
    } else {
        rm_gemm(c, true, false, r, r, M, y, r, y, r, C, r); /* C = Y^T Y */
        if (!g) return;
        rm_gemm(c, true, false, r, N, M, y, r, g, N, Z, N); /* Z2t = Y^T G */
        rm_gemm(c, false, true, r, r, N, Z, N, Z, N, T, r); /* T = Z2t Z2t^T */
    }
}

extern "C" void lmc_cuda_galore_ritz(void *ctx, const float *g, const float *proj, int64_t rows, int64_t cols,
                                     int64_t rank, float *y, float *ct, float *work) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const int64_t M = rows, N = cols, r = rank;
    float *Z = work;
    if (rows >= cols) {
        rm_gemm(c, false, true, M, r, N, g, N, proj, N, Z, r); /* Z = G P^T */
        rm_gemm(c, true, false, r, N, M, Z, r, g, N, y, N);    /* Yt = Z^T G */
    } else {
        rm_gemm(c, true, false, r, N, M, proj, r, g, N, Z, N); /* Zt = P^T G */
        rm_gemm(c, false, true, M, r, N, g, N, Z, N, y, r);    /* Y = G Zt^T */
    }
    gram_ct(c, NULL, y, rows, cols, rank, ct, work);
}

extern "C" void lmc_cuda_galore_orth(void *ctx, const float *g, float *y, const float *x, int64_t rows, int64_t cols,
                                     int64_t rank, float *ct, float *work) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const int64_t r = rank, k = rows >= cols ? cols : rows;
    if (rows >= cols) rm_gemm(c, true, false, r, cols, r, x, r, y, cols, work, cols); /* Yt <- X^T Yt */
    else rm_gemm(c, false, false, rows, r, r, y, r, x, r, work, r);                      /* Y X */
    LMC_CUDA_CHECK(cudaMemcpyAsync(y, work, (size_t)(k * r) * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
    gram_ct(c, g, y, rows, cols, rank, ct, work);
}

#define SIGN_THREADS 256

/* vector j = blockIdx.x of P (a row when right, a column when left, k
 * entries): negated where its first largest-magnitude entry is negative
 * (each thread's first maximum over its entries in order, then a tree
 * keeping the larger magnitude, the lower index on ties: the CPU's rule) */
__global__ void __launch_bounds__(SIGN_THREADS) galore_sign_kernel(float *P, int64_t k, int64_t r, int right) {
    __shared__ float sa[SIGN_THREADS], sv[SIGN_THREADS];
    __shared__ int64_t si[SIGN_THREADS];
    const int64_t j = blockIdx.x;
    const int t = threadIdx.x;
    float ba = 0, bv = 0;
    int64_t bi = INT64_MAX;
    for (int64_t e = t; e < k; e += SIGN_THREADS) {
        const float x = P[right ? j * k + e : e * r + j];
        if (fabsf(x) > ba) ba = fabsf(x), bv = x, bi = e;
    }
    sa[t] = ba, sv[t] = bv, si[t] = bi;
    __syncthreads();
    for (int h = SIGN_THREADS / 2; h > 0; h >>= 1) {
        if (t < h && (sa[t + h] > sa[t] || (sa[t + h] == sa[t] && si[t + h] < si[t])))
            sa[t] = sa[t + h], sv[t] = sv[t + h], si[t] = si[t + h];
        __syncthreads();
    }
    if (!(sv[0] < 0)) return;
    for (int64_t e = t; e < k; e += SIGN_THREADS) {
        float *x = &P[right ? j * k + e : e * r + j];
        *x = -*x;
    }
}

extern "C" void lmc_cuda_galore_rotate(void *ctx, float *proj, const float *y, const float *w, int64_t rows,
                                       int64_t cols, int64_t rank) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const int right = rows >= cols;
    const int64_t k = right ? cols : rows, r = rank;
    if (right) rm_gemm(c, false, false, r, k, r, w, r, y, k, proj, k); /* P = w Yt */
    else rm_gemm(c, false, true, k, r, r, y, r, w, r, proj, r);        /* P = Y w^T */
    galore_sign_kernel<<<(unsigned)r, SIGN_THREADS, 0, c->stream>>>(proj, k, r, right);
    LMC_CUDA_LAUNCH_CHECK();
}
