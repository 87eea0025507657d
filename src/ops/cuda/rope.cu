/* rope.cu — rotary position embedding in place on the GPU, HF
 * "rotate_half" layout (see backend.h). One block per row: the row's
 * cos/sin (angles in double, times attn_scale) go to shared memory once,
 * then every head's pairs (i, i + rot_dim/2) rotate. */
#include "ops/cuda/common.cuh"

__global__ void rope_fwd_kernel(float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                                int64_t half, const int32_t *pos, const double *inv_freq,
                                float attn_scale) {
    extern __shared__ float cs_sn[]; /* cos (half), then sin (half) */
    float *cs = cs_sn, *sn = cs_sn + half;
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        double p = (double)pos[m];
        __syncthreads(); /* the previous row's tables are no longer read */
        for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
            double s, c;
            sincos(p * inv_freq[i], &s, &c);
            cs[i] = (float)(c * attn_scale);
            sn[i] = (float)(s * attn_scale);
        }
        __syncthreads();
        float *row = x + m * n_heads * head_dim;
        for (int64_t t = threadIdx.x; t < n_heads * half; t += blockDim.x) {
            int64_t h = t / half, i = t % half;
            float *x1 = row + h * head_dim + i, *x2 = x1 + half;
            float a = *x1, b = *x2;
            *x1 = a * cs[i] - b * sn[i];
            *x2 = b * cs[i] + a * sn[i];
        }
    }
}

extern "C" void lmc_cuda_rope(void *ctx, float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                              int64_t rot_dim, const int32_t *pos, const double *inv_freq,
                              float attn_scale) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(rot_dim >= 0 && rot_dim <= head_dim && rot_dim % 2 == 0);
    if (M <= 0 || rot_dim == 0 || n_heads <= 0) return;
    int64_t half = rot_dim / 2;
    LMC_ASSERT(half <= 4096);
    rope_fwd_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), 128, (size_t)(2 * half) * sizeof(float),
                      c->stream>>>(x, M, n_heads, head_dim, half, pos, inv_freq, attn_scale);
    LMC_CUDA_LAUNCH_CHECK();
}
