/* layernorm.cu — layer normalisation on the GPU: y(M,C) = (x - mean) /
 * sqrt(var + eps) * w + b, biased variance, one block per row, two passes
 * accumulated in double (as the CPU twin); y may alias x. */
#include "ops/cuda/common.cuh"

__global__ void layernorm_fwd_kernel(float *y, const float *x, const float *w, const float *b,
                                     int64_t M, int64_t C, float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C;
        float *yr = y + m * C;
        double s = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
        double mean = lmc_block_sum_d(s, sh) / (double)C;
        double v = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            double d = (double)xr[i] - mean;
            v += d * d;
        }
        double rstd = 1.0 / sqrt(lmc_block_sum_d(v, sh) / (double)C + (double)eps);
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
            yr[i] = (float)(((double)xr[i] - mean) * rstd) * w[i] + b[i];
    }
}

extern "C" void lmc_cuda_layernorm(void *ctx, float *y, const float *x, const float *w,
                                   const float *b, int64_t M, int64_t C, float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 64;
    layernorm_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
        y, x, w, b, M, C, eps);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward ----
 * xhat = (x - mean) * rstd, y = xhat * w + b (as the CPU twin):
 *   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w
 *   dw += sum_m dy * xhat, db += sum_m dy
 * dx: one block per row, statistics and sums in double; mean and rstd per
 * row staged (as float) in scratch. dw, db: lmc_colsum (fixed-order
 * partial sums, no atomics: deterministic). */
__global__ void layernorm_bwd_kernel(float *dx, float *stats, const float *dy, const float *x,
                                     const float *w, int64_t M, int64_t C, float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C, *dyr = dy + m * C;
        double s = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
        double mean = lmc_block_sum_d(s, sh) / (double)C;
        double v = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            double d = (double)xr[i] - mean;
            v += d * d;
        }
        double rstd = 1.0 / sqrt(lmc_block_sum_d(v, sh) / (double)C + (double)eps);
        double sg = 0, sgx = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            double g = (double)dyr[i] * w[i], xh = ((double)xr[i] - mean) * rstd;
            sg += g;
            sgx += g * xh;
        }
        sg = lmc_block_sum_d(sg, sh) / (double)C;
        sgx = lmc_block_sum_d(sgx, sh) / (double)C;
        if (dx) {
            float *dxr = dx + m * C;
            for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
                double g = (double)dyr[i] * w[i], xh = ((double)xr[i] - mean) * rstd;
                dxr[i] += (float)(rstd * (g - sg - xh * sgx));
            }
        }
        if (threadIdx.x == 0) stats[2 * m] = (float)mean, stats[2 * m + 1] = (float)rstd;
    }
}

struct layernorm_dw_term {
    const float *dy, *x, *stats;
    int64_t C;
    __device__ float operator()(int64_t m, int64_t j) const {
        return dy[m * C + j] * ((x[m * C + j] - stats[2 * m]) * stats[2 * m + 1]);
    }
};
struct layernorm_db_term {
    const float *dy;
    int64_t C;
    __device__ float operator()(int64_t m, int64_t j) const { return dy[m * C + j]; }
};

extern "C" void lmc_cuda_layernorm_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                                       const float *x, const float *w, int64_t M, int64_t C,
                                       float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    size_t o_part = lmc_cuda_al256((size_t)(2 * M) * sizeof(float));
    size_t sz = o_part + (dw || db ? (size_t)(lmc_colsum_chunks(M) * C) * sizeof(double) : 0);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sz);
    float *stats = (float *)c->scratch;
    double *part = (double *)((char *)c->scratch + o_part);
    int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 64;
    layernorm_bwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
        dx, stats, dy, x, w, M, C, eps);
    LMC_CUDA_LAUNCH_CHECK();
    /* one partial buffer, reused in stream order */
    if (dw) lmc_colsum(c, dw, part, M, C, layernorm_dw_term{dy, x, stats, C});
    if (db) lmc_colsum(c, db, part, M, C, layernorm_db_term{dy, C});
}
