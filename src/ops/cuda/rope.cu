/* rope.cu — rotary position embedding in place on the GPU, HF
 * "rotate_half" layout (see backend.h). One block per row: the row's
 * cos/sin (angles in double, times attn_scale) go to shared memory once,
 * then every head's pairs (i, i + rot_dim/2) rotate. */
#include "ops/cuda/common.cuh"

/* inverse: rotate by the opposite angles (the backward: the rotation is
 * orthogonal times attn_scale, so the gradient turns back by -angle). */
__global__ void rope_kernel(float *x, int64_t M, int64_t n_heads, int64_t head_dim, int64_t half,
                            const int32_t *pos, const double *inv_freq, float attn_scale,
                            bool inverse) {
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
            float a = *x1, b = *x2, si = inverse ? -sn[i] : sn[i];
            *x1 = a * cs[i] - b * si;
            *x2 = b * cs[i] + a * si;
        }
    }
}

static void rope_launch(struct lmc_cuda_ctx *c, float *x, int64_t M, int64_t n_heads,
                        int64_t head_dim, int64_t rot_dim, const int32_t *pos,
                        const double *inv_freq, float attn_scale, bool inverse) {
    LMC_ASSERT(rot_dim >= 0 && rot_dim <= head_dim && rot_dim % 2 == 0);
    if (M <= 0 || rot_dim == 0 || n_heads <= 0) return;
    int64_t half = rot_dim / 2;
    LMC_ASSERT(half <= 4096);
    rope_kernel<<<(unsigned)LMC_MIN(M, (int64_t)65535), 128, (size_t)(2 * half) * sizeof(float),
                  c->stream>>>(x, M, n_heads, head_dim, half, pos, inv_freq, attn_scale, inverse);
    LMC_CUDA_LAUNCH_CHECK();
}

extern "C" void lmc_cuda_rope(void *ctx, float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                              int64_t rot_dim, const int32_t *pos, const double *inv_freq,
                              float attn_scale) {
    rope_launch((struct lmc_cuda_ctx *)ctx, x, M, n_heads, head_dim, rot_dim, pos, inv_freq,
                attn_scale, false);
}

/* rope_kv_store: one block per row m. q rotates in place as above; k is
 * rotated on the way out (read-only here) and stored with v as T into row
 * pos[m] of the caches. */
__device__ __forceinline__ void st_kv(float *p, float v) { *p = v; }
__device__ __forceinline__ void st_kv(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void st_kv(__half *p, float v) { *p = __float2half_rn(v); }

template <typename T>
__global__ void rope_kv_store_fwd_kernel(float *q, const float *k, const float *v, T *kc, T *vc,
                                         int64_t M, int n_heads, int n_kv, int hd, int half,
                                         const int32_t *pos, const double *inv_freq,
                                         float attn_scale) {
    extern __shared__ float cs_sn[];
    float *cs = cs_sn, *sn = cs_sn + half;
    const int64_t kvd = (int64_t)n_kv * hd;
    for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
        const int64_t p = pos[m];
        __syncthreads();
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            double s, c;
            sincos((double)p * inv_freq[i], &s, &c);
            cs[i] = (float)(c * attn_scale);
            sn[i] = (float)(s * attn_scale);
        }
        __syncthreads();
        if (half > 0) {
            float *row = q + m * n_heads * hd;
            for (int t = threadIdx.x; t < n_heads * half; t += blockDim.x) {
                int h = t / half, i = t % half;
                float *x1 = row + h * hd + i, *x2 = x1 + half;
                float a = *x1, b = *x2;
                *x1 = a * cs[i] - b * sn[i];
                *x2 = b * cs[i] + a * sn[i];
            }
        }
        const float *kr = k + m * kvd, *vr = v + m * kvd;
        T *kd = kc + p * kvd, *vd = vc + p * kvd;
        for (int64_t t = threadIdx.x; t < kvd; t += blockDim.x) {
            int d = (int)(t % hd);
            float val = kr[t];
            if (d < half) val = val * cs[d] - kr[t + half] * sn[d];
            else if (d < 2 * half) val = val * cs[d - half] + kr[t - half] * sn[d - half];
            st_kv(kd + t, val);
            st_kv(vd + t, vr[t]);
        }
    }
}

extern "C" void lmc_cuda_rope_kv_store(void *ctx, float *q, float *k, const float *v, void *kc,
                                       void *vc, int64_t M, int64_t n_heads, int64_t n_kv,
                                       int64_t hd, int64_t rot_dim, const int32_t *pos,
                                       const double *inv_freq, float attn_scale) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(rot_dim >= 0 && rot_dim <= hd && rot_dim % 2 == 0);
    LMC_ASSERT(n_heads <= 1 << 20 && n_kv <= 1 << 20 && hd <= 1 << 16);
    if (M <= 0) return;
    int half = (int)(rot_dim / 2);
    unsigned grid = (unsigned)LMC_MIN(M, (int64_t)65535);
    size_t shm = (size_t)(2 * half + 1) * sizeof(float);
#define RKS(T)                                                                                 \
    rope_kv_store_fwd_kernel<T><<<grid, 1024, shm, c->stream>>>(                                \
        q, k, v, (T *)kc, (T *)vc, M, (int)n_heads, (int)n_kv, (int)hd, half, pos, inv_freq,   \
        attn_scale)
    switch (c->kv_dtype) {
    case LMC_DTYPE_BF16: RKS(__nv_bfloat16); break;
    case LMC_DTYPE_F16: RKS(__half); break;
    default: RKS(float); break;
    }
#undef RKS
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward: the forward kernel turning the other way ---- */
extern "C" void lmc_cuda_rope_bwd(void *ctx, float *dx, int64_t M, int64_t n_heads,
                                  int64_t head_dim, int64_t rot_dim, const int32_t *pos,
                                  const double *inv_freq, float attn_scale) {
    rope_launch((struct lmc_cuda_ctx *)ctx, dx, M, n_heads, head_dim, rot_dim, pos, inv_freq,
                attn_scale, true);
}
