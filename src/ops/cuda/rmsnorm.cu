/* rmsnorm.cu — RMS normalisation on the GPU: y(M,C) = x / sqrt(mean(x^2)
 * + eps) * w, one block per row (a register-cached float4 path when the
 * row fits, else a strided loop), the sum of squares in double (as the CPU
 * twin); y may alias x (each thread rereads only what it writes). */
#include "ops/cuda/common.cuh"

__global__ void rmsnorm_fwd_kernel(float *y, const float *x, const float *w, int64_t M, int64_t C,
                                   float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C;
        float *yr = y + m * C;
        double ss = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += (double)xr[i] * xr[i];
        ss = lmc_block_sum_d(ss, sh);
        float s = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) yr[i] = xr[i] * s * w[i];
    }
}

/* C % 4 == 0 and C <= 4 * 4 * blockDim.x: each thread keeps up to 4
 * float4 of its row in registers, all loads (x and w) issued up front, so
 * a row costs one memory round trip and one block reduction. */
__global__ void rmsnorm_vec_fwd_kernel(float *y, const float *x, const float *w, int64_t M,
                                       int64_t C, float eps) {
    __shared__ double sh[32];
    const int C4 = (int)(C / 4);
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float4 *xr = (const float4 *)(x + m * C);
        float4 xv[4], wv[4];
        double ss = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int i = threadIdx.x + j * blockDim.x;
            if (i < C4) xv[j] = xr[i], wv[j] = ((const float4 *)w)[i];
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int i = threadIdx.x + j * blockDim.x;
            if (i < C4)
                ss += (double)xv[j].x * xv[j].x + (double)xv[j].y * xv[j].y +
                      (double)xv[j].z * xv[j].z + (double)xv[j].w * xv[j].w;
        }
        ss = lmc_block_sum_d(ss, sh);
        float s = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        float4 *yr = (float4 *)(y + m * C);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int i = threadIdx.x + j * blockDim.x;
            if (i < C4)
                yr[i] = make_float4(xv[j].x * s * wv[j].x, xv[j].y * s * wv[j].y,
                                    xv[j].z * s * wv[j].z, xv[j].w * s * wv[j].w);
        }
    }
}

extern "C" void lmc_cuda_rmsnorm(void *ctx, float *y, const float *x, const float *w, int64_t M,
                                 int64_t C, float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    uintptr_t al = (uintptr_t)x | (uintptr_t)y | (uintptr_t)w;
    if (C % 4 == 0 && al % 16 == 0 && C <= 4 * 4 * 1024) {
        int threads = (int)LMC_MIN((int64_t)1024, ((C / 4 + 3) / 4 + 31) / 32 * 32);
        threads = LMC_MAX(threads, 32);
        rmsnorm_vec_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
            y, x, w, M, C, eps);
        LMC_CUDA_LAUNCH_CHECK();
        return;
    }
    int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 64;
    rmsnorm_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(y, x, w, M,
                                                                                        C, eps);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward ----
 * y = x * r * w, r = 1/sqrt(mean(x^2) + eps) (as the CPU twin):
 *   dx[m,i] += r w[i] dy[m,i] - x[m,i] r^3 / C * sum_j w[j] dy[m,j] x[m,j]
 *   dw[i]   += sum_m dy[m,i] x[m,i] r[m]
 * dx: one block per row, sums in double; r[m] staged (as float) in scratch.
 * dw: lmc_colsum (fixed-order partial sums, no atomics: deterministic). */
__global__ void rmsnorm_bwd_kernel(float *dx, float *rbuf, const float *dy, const float *x,
                                   const float *w, int64_t M, int64_t C, float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C, *dyr = dy + m * C;
        double ss = 0, dot = 0;
        for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
            double xv = xr[i];
            ss += xv * xv;
            dot += (double)w[i] * dyr[i] * xv;
        }
        ss = lmc_block_sum_d(ss, sh);
        dot = lmc_block_sum_d(dot, sh);
        double r = 1.0 / sqrt(ss / (double)C + (double)eps);
        double k = r * r * r * dot / (double)C;
        if (dx) {
            float *dxr = dx + m * C;
            for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
                dxr[i] += (float)(r * w[i] * dyr[i] - k * xr[i]);
        }
        if (threadIdx.x == 0) rbuf[m] = (float)r;
    }
}

struct rmsnorm_dw_term {
    const float *dy, *x, *r;
    int64_t C;
    __device__ float operator()(int64_t m, int64_t j) const {
        return dy[m * C + j] * x[m * C + j] * r[m];
    }
};

extern "C" void lmc_cuda_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy,
                                     const float *x, const float *w, int64_t M, int64_t C,
                                     float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    size_t o_part = lmc_cuda_al256((size_t)M * sizeof(float));
    size_t sz = o_part + (dw ? (size_t)(lmc_colsum_chunks(M) * C) * sizeof(double) : 0);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sz);
    float *r = (float *)c->scratch;
    int threads = C >= 1024 ? 512 : C >= 256 ? 256 : 64;
    rmsnorm_bwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
        dx, r, dy, x, w, M, C, eps);
    LMC_CUDA_LAUNCH_CHECK();
    if (dw)
        lmc_colsum(c, dw, (double *)((char *)c->scratch + o_part), M, C,
                   rmsnorm_dw_term{dy, x, r, C});
}
