/* soft_xent.cu — the soft-target cross-entropy of knowledge distillation
 * on the GPU (backend.h soft_xent; CPU twin ops/cpu/soft_xent.c). One CUDA
 * block per row: (1) the maxima and first argmax of the student and the
 * teacher row, (2) the four sums (exp(s - ms), exp((s - ms)/T),
 * exp((t - mt)/T) and the KL's cross term) in double, each a fixed tree
 * over the block's threads, (3) the gradient in place. The element
 * expressions are the twin's; only the order of the double sums differs.
 * Deterministic: fixed grid, fixed trees. */
#include "ops/cuda/common.cuh"

#include <math.h>

#define SOFT_THREADS 256

__global__ void soft_xent_kernel(float *ce, float *kl, float *agree, float *S, const float *T,
                                 const int32_t *tg, int64_t R, int64_t V, float alpha, float temp,
                                 float dscale, int grad) {
    __shared__ float sm[2][SOFT_THREADS];
    __shared__ int64_t si[2][SOFT_THREADS];
    __shared__ double sd[4][SOFT_THREADS];
    const int tid = threadIdx.x;
    const float it = 1.0f / temp;
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        float *s = S + r * V;
        const float *t = T + r * V;
        const int32_t y = tg[r];
        if (y < 0) { /* not counted: no loss, no gradient */
            if (tid == 0) ce[r] = kl[r] = agree[r] = 0.0f;
            if (grad)
                for (int64_t v = tid; v < V; v += blockDim.x) s[v] = 0.0f;
            continue;
        }
        float ms = -INFINITY, mt = -INFINITY;
        int64_t as = 0, at = 0;
        for (int64_t v = tid; v < V; v += blockDim.x) {
            if (s[v] > ms) ms = s[v], as = v;
            if (t[v] > mt) mt = t[v], at = v;
        }
        __syncthreads(); /* the previous row's shared values are read */
        sm[0][tid] = ms, si[0][tid] = as, sm[1][tid] = mt, si[1][tid] = at;
        __syncthreads();
        for (int o = SOFT_THREADS / 2; o > 0; o >>= 1) {
            if (tid < o)
                for (int k = 0; k < 2; k++) {
                    const float m2 = sm[k][tid + o];
                    const int64_t i2 = si[k][tid + o];
                    if (m2 > sm[k][tid] || (m2 == sm[k][tid] && i2 < si[k][tid])) sm[k][tid] = m2, si[k][tid] = i2;
                }
            __syncthreads();
        }
        ms = sm[0][0], mt = sm[1][0];
        double s1 = 0, sS = 0, sT = 0, x = 0;
        for (int64_t v = tid; v < V; v += blockDim.x) {
            const float ds = s[v] - ms, dt = t[v] - mt;
            const double eT = (double)expf(dt * it);
            s1 += (double)expf(ds);
            sS += (double)expf(ds * it);
            sT += eT;
            x += eT * ((double)(dt * it) - (double)(ds * it));
        }
        sd[0][tid] = s1, sd[1][tid] = sS, sd[2][tid] = sT, sd[3][tid] = x;
        __syncthreads();
        for (int o = SOFT_THREADS / 2; o > 0; o >>= 1) {
            if (tid < o)
                for (int k = 0; k < 4; k++) sd[k][tid] += sd[k][tid + o];
            __syncthreads();
        }
        s1 = sd[0][0], sS = sd[1][0], sT = sd[2][0], x = sd[3][0];
        if (tid == 0) {
            ce[r] = (float)(log(s1) - (double)(s[y] - ms));
            kl[r] = (float)(x / sT - log(sT) + log(sS));
            agree[r] = si[0][0] == si[1][0] ? 1.0f : 0.0f;
        }
        if (!grad) continue;
        __syncthreads(); /* s[y] is read before the row is overwritten */
        const double a1 = (1.0 - (double)alpha) * (double)dscale;
        const double a2 = (double)alpha * (double)temp * (double)dscale;
        for (int64_t v = tid; v < V; v += blockDim.x) {
            const float ds = s[v] - ms, dt = t[v] - mt;
            double g = a1 * ((double)expf(ds) / s1) + a2 * ((double)expf(ds * it) / sS - (double)expf(dt * it) / sT);
            if (v == y) g -= a1;
            s[v] = (float)g;
        }
    }
}

extern "C" void lmc_cuda_soft_xent(void *ctx, float *ce, float *kl, float *agree, float *s, const float *t,
                                   const int32_t *targets, int64_t R, int64_t V, float alpha, float temp,
                                   float dscale, int grad) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(V > 0 && temp > 0.0f);
    if (R <= 0) return;
    soft_xent_kernel<<<(unsigned)LMC_MIN(R, (int64_t)1 << 20), SOFT_THREADS, 0, c->stream>>>(
        ce, kl, agree, s, t, targets, R, V, alpha, temp, dscale, grad);
    LMC_CUDA_LAUNCH_CHECK();
}
