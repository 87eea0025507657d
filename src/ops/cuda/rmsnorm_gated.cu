/* rmsnorm_gated.cu — Mamba-2's gated RMSNorm on the GPU (norm_before_gate
 * = False): v = x * silu(z), y = v / sqrt(mean_group(v^2) + eps) * w. One
 * block per row, each group's sum of squares in double (as the CPU twin);
 * backward: dx, dz per row, dw through lmc_colsum (fixed order). y may
 * alias x (each thread rereads only what it writes). */
#include "ops/cuda/ssm.cuh"

__global__ void rmsnorm_gated_fwd_kernel(float *y, const float *x, const float *z, int64_t ldz,
                                         const float *w, int64_t M, int64_t C, int64_t group,
                                         float eps) {
    __shared__ double sh[32];
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C, *zr = z ? z + m * ldz : NULL;
        float *yr = y + m * C;
        for (int64_t g0 = 0; g0 < C; g0 += group) {
            double ss = 0;
            for (int64_t i = g0 + threadIdx.x; i < g0 + group; i += blockDim.x) {
                float v = zr ? xr[i] * lmc_ssm_silu_d(zr[i]) : xr[i];
                ss += (double)v * v;
            }
            ss = lmc_block_sum_d(ss, sh);
            float r = (float)(1.0 / sqrt(ss / (double)group + (double)eps));
            for (int64_t i = g0 + threadIdx.x; i < g0 + group; i += blockDim.x) {
                float v = zr ? xr[i] * lmc_ssm_silu_d(zr[i]) : xr[i];
                yr[i] = v * r * w[i];
            }
        }
    }
}

extern "C" void lmc_cuda_rmsnorm_gated(void *ctx, float *y, const float *x, const float *z,
                                       int64_t ldz, const float *w, int64_t M, int64_t C,
                                       int64_t group, float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    LMC_ASSERT(group > 0 && C % group == 0 && (!z || ldz >= C));
    int threads = group >= 1024 ? 512 : group >= 256 ? 256 : 64;
    rmsnorm_gated_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
        y, x, z, ldz, w, M, C, group, eps);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward ----
 * dv = r w dy - v r^3 / group * sum_group(w dy v);  dx = dv silu(z);
 * dz = dv x silu'(z);  dw += dy v r (r staged per (row, group) in scratch). */
__global__ void rmsnorm_gated_bwd_kernel(float *dx, float *dz, float *rbuf, const float *dy,
                                         const float *x, const float *z, int64_t ldz,
                                         const float *w, int64_t M, int64_t C, int64_t group,
                                         float eps) {
    __shared__ double sh[32];
    const int64_t ng = C / group;
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const float *xr = x + m * C, *zr = z ? z + m * ldz : NULL, *dyr = dy + m * C;
        for (int64_t gi = 0; gi < ng; gi++) {
            const int64_t g0 = gi * group, g1 = g0 + group;
            double ss = 0, dot = 0;
            for (int64_t i = g0 + threadIdx.x; i < g1; i += blockDim.x) {
                double v = zr ? xr[i] * lmc_ssm_silu_d(zr[i]) : xr[i];
                ss += v * v;
                dot += (double)w[i] * dyr[i] * v;
            }
            ss = lmc_block_sum_d(ss, sh);
            dot = lmc_block_sum_d(dot, sh);
            double r = 1.0 / sqrt(ss / (double)group + (double)eps);
            double k = r * r * r * dot / (double)group;
            if (threadIdx.x == 0) rbuf[m * ng + gi] = (float)r;
            for (int64_t i = g0 + threadIdx.x; i < g1; i += blockDim.x) {
                float sz = zr ? lmc_ssm_silu_d(zr[i]) : 1.0f;
                double v = zr ? xr[i] * sz : xr[i];
                float dv = (float)(r * w[i] * dyr[i] - k * v);
                dx[m * C + i] = dv * sz;
                if (zr) dz[m * ldz + i] = dv * xr[i] * lmc_ssm_silu_grad_d(zr[i]);
            }
        }
    }
}

struct rmsnorm_gated_dw_term {
    const float *dy, *x, *z, *r;
    int64_t ldz, C, group;
    __device__ float operator()(int64_t m, int64_t j) const {
        float v = z ? x[m * C + j] * lmc_ssm_silu_d(z[m * ldz + j]) : x[m * C + j];
        return dy[m * C + j] * v * r[m * (C / group) + j / group];
    }
};

extern "C" void lmc_cuda_rmsnorm_gated_bwd(void *ctx, float *dx, float *dz, float *dw,
                                           const float *dy, const float *x, const float *z,
                                           int64_t ldz, const float *w, int64_t M, int64_t C,
                                           int64_t group, float eps) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0 || C <= 0) return;
    LMC_ASSERT(group > 0 && C % group == 0 && (!z || (ldz >= C && dz)));
    size_t o_part = lmc_cuda_al256((size_t)(M * (C / group)) * sizeof(float));
    size_t sz = o_part + (dw ? (size_t)(lmc_colsum_chunks(M) * C) * sizeof(double) : 0);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sz);
    float *r = (float *)c->scratch;
    int threads = group >= 1024 ? 512 : group >= 256 ? 256 : 64;
    rmsnorm_gated_bwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), threads, 0, c->stream>>>(
        dx, dz, r, dy, x, z, ldz, w, M, C, group, eps);
    LMC_CUDA_LAUNCH_CHECK();
    if (dw)
        lmc_colsum(c, dw, (double *)((char *)c->scratch + o_part), M, C,
                   rmsnorm_gated_dw_term{dy, x, z, r, ldz, C, group});
}
