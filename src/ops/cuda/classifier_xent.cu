/* classifier_xent.cu — the fused classifier + cross-entropy on the GPU
 * (see backend.h and the CPU twin ops/cpu/classifier_xent.c). Rows of h go
 * a block of R at a time; per block:
 *   1. logits (R, V) f32 in scratch = h_blk @ w^T (cuBLASLt),
 *   2. one CUDA block per row: max and sum of exp (online, the sum in
 *      double), loss = logsumexp - logit[target] (0 where target < 0),
 *      then (with dh) the row becomes dscale * (softmax - onehot) (zero for
 *      target < 0), in place in f32 or, in the bf16 mode, as bf16,
 *   3. dh_blk = g @ w, dw += g^T @ h_blk (cuBLASLt, beta = 1).
 * Only one block of logits exists at a time: R rows with R * V at most
 * XENT_BLOCK_FLOATS (32 MB of f32; with the bf16 mode's gradient copy and
 * h block about 48 MiB at a 32k vocabulary, R = 256), but never fewer than
 * XENT_MIN_ROWS rows (a 128k vocabulary: 128 rows, 62.6 MiB f32), so the
 * GEMMs stay tall enough for the tensor cores (ctx->xent_rows, when set,
 * is the rows per block: the tests' several blocks at small sizes).
 * fp32 mode: fp32 GEMMs (no TF32). bf16 training mode: w (once) and each
 * h block are converted to bf16, tensor-core GEMMs with f32 accumulation;
 * a BF16 w (a frozen bf16 head, no dw) is used as stored.
 * Deterministic: fixed blocks, fixed reduction trees, cuBLASLt with a
 * fixed algorithm per shape. */
#include "ops/cuda/common.cuh"

#include <math.h>

#define XENT_BLOCK_FLOATS ((int64_t)1 << 23) /* 32 MB of f32 logits per block */
#define XENT_MIN_ROWS ((int64_t)128)

/* (m, s) of an online softmax: s = sum of exp(l - m); m = -inf: empty. */
__device__ __forceinline__ void xent_merge(float &m, double &s, float m2, double s2) {
    float nm = fmaxf(m, m2);
    if (nm == -INFINITY) return; /* both empty */
    double a = m == -INFINITY ? 0.0 : s * (double)expf(m - nm);
    double b = m2 == -INFINITY ? 0.0 : s2 * (double)expf(m2 - nm);
    m = nm, s = a + b;
}

/* Rows r < R of lg (R, V): loss[r] and, with grad, the row's gradient
 * into lg (f32, in place) or g16 (bf16) when g16 is non-NULL. */
__global__ void classifier_xent_bwd_kernel(float *loss, float *lg, __nv_bfloat16 *g16,
                                           const int32_t *tg, int64_t R, int64_t V, float dscale,
                                           int grad) {
    __shared__ float shm[32];
    __shared__ double shs[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        float *l = lg + r * V;
        const int32_t t = tg[r];
        float mx = -INFINITY;
        double s = 0;
        int64_t v0 = 0;
        if (V % 4 == 0) { /* rows 16-byte aligned: 4 logits a load */
            const float4 *l4 = (const float4 *)l;
            for (int64_t q = threadIdx.x; q < V / 4; q += blockDim.x) {
                float4 x = l4[q];
                float m4 = fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w));
                if (m4 == -INFINITY) continue; /* no mass */
                if (m4 > mx) {
                    s = mx == -INFINITY ? 0.0 : s * (double)expf(mx - m4);
                    mx = m4;
                }
                s += (double)(expf(x.x - mx) + expf(x.y - mx) + expf(x.z - mx) + expf(x.w - mx));
            }
            v0 = V;
        }
        for (int64_t v = v0 + threadIdx.x; v < V; v += blockDim.x) {
            float x = l[v];
            if (x > mx) {
                s *= (double)expf(mx - x); /* mx = -inf: s is 0 already */
                mx = x;
            }
            if (x != -INFINITY) s += (double)expf(x - mx); /* -inf while mx is: no mass */
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, mx, o);
            double s2 = __shfl_xor_sync(0xffffffffu, s, o);
            xent_merge(mx, s, m2, s2);
        }
        __syncthreads(); /* shm/shs of the previous row are no longer read */
        if (lane == 0) shm[wid] = mx, shs[wid] = s;
        __syncthreads();
        mx = lane < nw ? shm[lane] : -INFINITY;
        s = lane < nw ? shs[lane] : 0.0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, mx, o);
            double s2 = __shfl_xor_sync(0xffffffffu, s, o);
            xent_merge(mx, s, m2, s2);
        }
        /* every thread holds the row's max and sum now */
        const float lt = t >= 0 ? l[t] : 0.0f;
        if (threadIdx.x == 0) loss[r] = t < 0 ? 0.0f : (float)(log(s) + (double)mx - (double)lt);
        if (!grad) continue;
        __syncthreads(); /* l[t] is read by all before anyone overwrites it */
        const double k = t < 0 ? 0.0 : (double)dscale / s;
        v0 = 0;
        if (V % 4 == 0) {
            float4 *l4 = (float4 *)l;
            for (int64_t q = threadIdx.x; q < V / 4; q += blockDim.x) {
                float4 x = l4[q];
                float g[4] = {(float)((double)expf(x.x - mx) * k), (float)((double)expf(x.y - mx) * k),
                              (float)((double)expf(x.z - mx) * k), (float)((double)expf(x.w - mx) * k)};
                if (t >= 4 * q && t < 4 * q + 4) g[t - 4 * q] -= dscale;
                if (g16) {
                    __align__(8) __nv_bfloat16 b[4] = {__float2bfloat16_rn(g[0]), __float2bfloat16_rn(g[1]),
                                                       __float2bfloat16_rn(g[2]), __float2bfloat16_rn(g[3])};
                    *(uint2 *)(g16 + r * V + 4 * q) = *(const uint2 *)b;
                } else {
                    l4[q] = make_float4(g[0], g[1], g[2], g[3]);
                }
            }
            v0 = V;
        }
        for (int64_t v = v0 + threadIdx.x; v < V; v += blockDim.x) {
            float g = (float)((double)expf(l[v] - mx) * k);
            if (v == t) g -= dscale;
            if (g16) g16[r * V + v] = __float2bfloat16_rn(g);
            else l[v] = g;
        }
    }
}

extern "C" void lmc_cuda_classifier_xent(void *ctx, float *loss, float *dh, float *dw,
                                         const float *h, const struct lmc_mat *w,
                                         const int32_t *targets, int64_t M, float dscale) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    const int64_t V = w->rows, C = w->cols;
    /* a BF16 head (LoRA's frozen bf16 base): the bf16 mode's GEMM operand as
     * stored (no conversion, no copy in the scratch); frozen: no dw */
    const bool w_b16 = w->dtype == LMC_DTYPE_BF16;
    LMC_ASSERT(w->dtype == LMC_DTYPE_F32 || (w_b16 && c->train_bf16 && !dw));
    LMC_ASSERT(V > 0);
    if (M <= 0) return;
    int64_t R = LMC_MIN(M, c->xent_rows > 0 ? c->xent_rows : LMC_MAX(XENT_MIN_ROWS, XENT_BLOCK_FLOATS / V));
    if (R < M && R >= 64) R -= R % 64; /* keeps h_blk as aligned as h */
    const bool b16 = c->train_bf16 && C > 0;
    const bool grad = dh != NULL;
    /* scratch: [logits f32 (R,V)][w bf16 (V,C)][h_blk bf16 (R,C)][g bf16 (R,V)] */
    size_t o_w = lmc_cuda_al256((size_t)(R * V) * sizeof(float)), o_h = o_w, o_g = o_w, sz = o_w;
    if (b16) {
        o_h = o_w + (w_b16 ? 0 : lmc_cuda_al256((size_t)(V * C) * 2));
        o_g = o_h + lmc_cuda_al256((size_t)(R * C) * 2);
        sz = o_g + (grad ? (size_t)(R * V) * 2 : 0);
    }
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sz);
    char *s = (char *)c->scratch;
    float *lg = (float *)s;
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)(s + o_w), *h16 = (__nv_bfloat16 *)(s + o_h);
    __nv_bfloat16 *g16 = b16 && grad ? (__nv_bfloat16 *)(s + o_g) : NULL;
    const enum lmc_dtype dt = b16 ? LMC_DTYPE_BF16 : LMC_DTYPE_F32;
    const void *W = w->data;
    if (b16 && !w_b16) {
        lmc_cuda_to_bf16(c, w16, (const float *)w->data, V * C);
        W = w16;
    }
    int threads = V >= 4096 ? 512 : V >= 512 ? 256 : 64;
    for (int64_t r0 = 0; r0 < M; r0 += R) {
        const int64_t Rb = LMC_MIN(R, M - r0);
        const float *hb = h + r0 * C;
        const void *H = hb;
        if (b16) {
            lmc_cuda_to_bf16(c, h16, hb, Rb * C);
            H = h16;
        }
        /* logits^T (V, Rb) col-major = w (stored (C, V) col-major)^T h_blk^T */
        if (C > 0)
            lmc_cuda_gemm(c, true, false, V, Rb, C, W, C, H, C, lg, V, dt, NULL, 0.0f);
        else
            LMC_CUDA_CHECK(cudaMemsetAsync(lg, 0, (size_t)(Rb * V) * sizeof(float), c->stream));
        classifier_xent_bwd_kernel<<<(unsigned)LMC_MIN(Rb, (int64_t)1 << 20), threads, 0,
                                     c->stream>>>(loss + r0, lg, g16, targets + r0, Rb, V,
                                                  dscale, grad);
        LMC_CUDA_LAUNCH_CHECK();
        if (!grad || C == 0) continue;
        const void *G = b16 ? (const void *)g16 : (const void *)lg;
        /* dh_blk^T (C, Rb) = w^T (C, V) g^T (V, Rb) */
        lmc_cuda_gemm(c, false, false, C, Rb, V, W, C, G, V, dh + r0 * C, C, dt, NULL, 0.0f);
        /* dw^T (C, V) += h_blk^T (C, Rb) g (Rb, V) */
        if (dw) lmc_cuda_gemm(c, false, true, C, V, Rb, H, C, G, V, dw, C, dt, NULL, 1.0f);
    }
}
