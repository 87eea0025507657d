/* moe_gemm.cu — the grouped GEMM of mixture-of-experts layers on the GPU
 * (backend.h: moe_gemm, moe_gemm_bwd; CPU twin ops/cpu/moe_gemm.c), two
 * ways (lmc_cuda_moe_gemm_ex picks; the table's entries run the loop):
 * LOOP, one matmul per expert with rows (the backend's matmul: cuBLASLt,
 * the GEMV for few rows, bf16 operands in the train_bf16 mode — the
 * numbers of a dense linear), and GROUPED, one launch for up to MOE_CHUNK
 * experts: blockIdx.z picks the expert, whose
 * weight pointer and row range travel in the kernel's parameter block (no
 * upload), blocks beyond an expert's rows exit at once. Each thread owns one
 * output element (a straight dot product with f32 accumulation; weights
 * F32, BF16 or F16): the simple form, checked against the CPU twin through
 * the emulator; a tiled tensor-core version is the single-GPU issue's. The
 * weight gradient sums rows in order (deterministic). */
#include "ops/cuda/common.cuh"

#define MOE_CHUNK 128 /* experts per launch: 128 pointers + 129 offsets < 4 KiB of parameters */
#define MOE_T 16      /* 16 x 16 threads per block */

struct moe_group {
    const void *w[MOE_CHUNK];   /* (N, K) per expert */
    float *dw[MOE_CHUNK];       /* backward: (N, K) per expert or NULL */
    int64_t off[MOE_CHUNK + 1]; /* row ranges, from the chunk's first expert */
};

__device__ __forceinline__ float moe_wload(const void *w, int dt, int64_t i) {
    if (dt == LMC_DTYPE_F32) return ((const float *)w)[i];
    if (dt == LMC_DTYPE_BF16) return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
    return __half2float(((const __half *)w)[i]);
}

/* y[r, n] = sum_k x[r, k] w_e[n, k] for the rows r of expert e */
__global__ void moe_gemm_fwd_kernel(float *y, const float *x, const struct moe_group *gp, int dt, int64_t N,
                                    int64_t K) {
    const struct moe_group &g = *gp;
    int e = blockIdx.z;
    int64_t r = g.off[e] + blockIdx.y * (int64_t)MOE_T + threadIdx.y;
    int64_t n = blockIdx.x * (int64_t)MOE_T + threadIdx.x;
    if (r >= g.off[e + 1] || n >= N) return;
    const float *xr = x + r * K;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; k++) acc += xr[k] * moe_wload(g.w[e], dt, n * K + k);
    y[r * N + n] = acc;
}

/* dx[r, k] (+)= sum_n dy[r, n] w_e[n, k] */
__global__ void moe_gemm_dx_kernel(float *dx, const float *dy, const struct moe_group *gp, int64_t N, int64_t K,
                                   int accum) {
    const struct moe_group &g = *gp;
    int e = blockIdx.z;
    int64_t r = g.off[e] + blockIdx.y * (int64_t)MOE_T + threadIdx.y;
    int64_t k = blockIdx.x * (int64_t)MOE_T + threadIdx.x;
    if (r >= g.off[e + 1] || k >= K) return;
    const float *w = (const float *)g.w[e], *d = dy + r * N;
    float acc = 0.0f;
    for (int64_t n = 0; n < N; n++) acc += d[n] * w[n * K + k];
    dx[r * K + k] = accum ? dx[r * K + k] + acc : acc;
}

/* dw_e[n, k] += sum over e's rows r of dy[r, n] x[r, k] */
__global__ void moe_gemm_dw_kernel(const float *dy, const float *x, const struct moe_group *gp, int64_t N,
                                   int64_t K) {
    const struct moe_group &g = *gp;
    int e = blockIdx.z;
    int64_t n = blockIdx.y * (int64_t)MOE_T + threadIdx.y;
    int64_t k = blockIdx.x * (int64_t)MOE_T + threadIdx.x;
    if (!g.dw[e] || n >= N || k >= K) return;
    float acc = 0.0f;
    for (int64_t r = g.off[e]; r < g.off[e + 1]; r++) acc += dy[r * N + n] * x[r * K + k];
    g.dw[e][n * K + k] += acc;
}

/* Fills g for experts e0 .. e0+ne-1; the largest row count among them. */
static int64_t moe_fill(struct moe_group *g, const int64_t *off, int64_t e0, int64_t ne,
                        const struct lmc_mat *const *w, float *const *dw) {
    int64_t most = 0;
    for (int64_t i = 0; i < ne; i++) {
        g->w[i] = w[e0 + i]->data;
        g->dw[i] = dw ? dw[e0 + i] : NULL;
        g->off[i] = off[e0 + i];
        int64_t m = off[e0 + i + 1] - off[e0 + i];
        LMC_ASSERT(m >= 0);
        most = m > most ? m : most;
    }
    g->off[ne] = off[e0 + ne];
    return most;
}

/* The parameter block goes to the device through the ctx's scratch (one
 * small upload on the stream, ordered before the launch). */
static struct moe_group *moe_stage(struct lmc_cuda_ctx *c, const struct moe_group *g) {
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sizeof *g);
    struct moe_group *d = (struct moe_group *)c->scratch;
    LMC_CUDA_CHECK(cudaMemcpyAsync(d, g, sizeof *g, cudaMemcpyHostToDevice, c->stream));
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream)); /* g lives on the caller's stack */
    return d;
}

static void moe_gemm_grouped(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                             const struct lmc_mat *const *w) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (E <= 0) return;
    int64_t N = w[0]->rows, K = w[0]->cols;
    int dt = (int)w[0]->dtype;
    static_assert(sizeof(struct moe_group) < 8192, "moe_group");
    for (int64_t e0 = 0; e0 < E; e0 += MOE_CHUNK) {
        int64_t ne = E - e0 < MOE_CHUNK ? E - e0 : MOE_CHUNK;
        struct moe_group g;
        int64_t most = moe_fill(&g, off, e0, ne, w, NULL);
        if (!most) continue;
        struct moe_group *d = moe_stage(c, &g);
        dim3 grid((unsigned)((N + MOE_T - 1) / MOE_T), (unsigned)((most + MOE_T - 1) / MOE_T), (unsigned)ne);
        moe_gemm_fwd_kernel<<<grid, dim3(MOE_T, MOE_T), 0, c->stream>>>(y, x, d, dt, N, K);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

static void moe_gemm_bwd_grouped(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                                 const int64_t *off, int64_t E, const struct lmc_mat *const *w, int accum_dx) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (E <= 0) return;
    int64_t N = w[0]->rows, K = w[0]->cols;
    LMC_ASSERT(w[0]->dtype == LMC_DTYPE_F32);
    for (int64_t e0 = 0; e0 < E; e0 += MOE_CHUNK) {
        int64_t ne = E - e0 < MOE_CHUNK ? E - e0 : MOE_CHUNK;
        struct moe_group g;
        int64_t most = moe_fill(&g, off, e0, ne, w, dw);
        if (!most) continue;
        struct moe_group *d = moe_stage(c, &g);
        if (dx) {
            dim3 grid((unsigned)((K + MOE_T - 1) / MOE_T), (unsigned)((most + MOE_T - 1) / MOE_T), (unsigned)ne);
            moe_gemm_dx_kernel<<<grid, dim3(MOE_T, MOE_T), 0, c->stream>>>(dx, dy, d, N, K, accum_dx);
            LMC_CUDA_LAUNCH_CHECK();
        }
        if (dw) {
            dim3 grid((unsigned)((K + MOE_T - 1) / MOE_T), (unsigned)((N + MOE_T - 1) / MOE_T), (unsigned)ne);
            moe_gemm_dw_kernel<<<grid, dim3(MOE_T, MOE_T), 0, c->stream>>>(dy, x, d, N, K);
            LMC_CUDA_LAUNCH_CHECK();
        }
    }
}

extern "C" void lmc_cuda_moe_gemm_ex(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                                     const struct lmc_mat *const *w, enum lmc_cuda_moe_path path) {
    if (path == LMC_CUDA_MOE_GROUPED) {
        moe_gemm_grouped(ctx, y, x, off, E, w);
        return;
    }
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0;
        LMC_ASSERT(r0 >= 0 && m >= 0);
        if (m) lmc_cuda_matmul(ctx, y + r0 * w[e]->rows, x + r0 * w[e]->cols, m, w[e], NULL);
    }
}

extern "C" void lmc_cuda_moe_gemm_bwd_ex(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                                         const int64_t *off, int64_t E, const struct lmc_mat *const *w,
                                         int accum_dx, enum lmc_cuda_moe_path path) {
    if (path == LMC_CUDA_MOE_GROUPED) {
        moe_gemm_bwd_grouped(ctx, dx, dw, dy, x, off, E, w, accum_dx);
        return;
    }
    for (int64_t e = 0; e < E; e++) {
        int64_t r0 = off[e], m = off[e + 1] - r0, N = w[e]->rows, K = w[e]->cols;
        LMC_ASSERT(r0 >= 0 && m >= 0);
        if (m)
            lmc_cuda_matmul_bwd(ctx, dx ? dx + r0 * K : NULL, dw ? dw[e] : NULL, NULL, dy + r0 * N, x + r0 * K, m,
                                w[e], accum_dx);
    }
}

extern "C" void lmc_cuda_moe_gemm(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                                  const struct lmc_mat *const *w) {
    lmc_cuda_moe_gemm_ex(ctx, y, x, off, E, w, LMC_CUDA_MOE_LOOP);
}

extern "C" void lmc_cuda_moe_gemm_bwd(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                                      const int64_t *off, int64_t E, const struct lmc_mat *const *w,
                                      int accum_dx) {
    lmc_cuda_moe_gemm_bwd_ex(ctx, dx, dw, dy, x, off, E, w, accum_dx, LMC_CUDA_MOE_LOOP);
}
