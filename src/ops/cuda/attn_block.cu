/* attn_block.cu — ring attention's block ops on the GPU (backend.h's
 * attn_block_fwd / attn_block_merge / attn_block_bwd; context parallelism,
 * dist/ring_attn.h), twins of ops/cpu/attn_block.c:
 *  - forward: one block of 128 threads per (query, head); the K/V block
 *    in tiles of 128 keys (a thread a key's score, masked by global
 *    position when causal), an online softmax (running max and sum), each
 *    thread accumulating hd / 128 output dimensions; writes the block's
 *    normalised output and its log-sum-exp (-inf, output 0: no key);
 *  - merge: a thread per (query, head) folds (ob, lb) into (out, lse);
 *  - backward with the merged lse: dq by (query, head) blocks over key
 *    tiles, dk / dv by (key, KV head) blocks over the group's heads and
 *    query tiles (each output element written by one thread: no atomics),
 *    both recomputing the probabilities; D = dout . out per row.
 * hd <= 512. */
#include "ops/cuda/common.cuh"
#include "ops/cuda/ops_cuda.h"

#define AB_T 128   /* threads a block, keys (or queries) a tile */
#define AB_HD 512  /* the largest head dimension */
#define AB_U (AB_HD / AB_T)

__device__ __forceinline__ float ab_block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lmc_warp_max(v);
    __syncthreads(); /* sh's previous readers are done */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    float r = sh[0];
    for (int w = 1; w < nw; w++) r = fmaxf(r, sh[w]);
    return r;
}

__device__ __forceinline__ float ab_block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lmc_warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    float r = 0;
    for (int w = 0; w < nw; w++) r += sh[w];
    return r;
}

__device__ __forceinline__ float ab_dot(const float *a, const float *b, int64_t hd) {
    float d = 0;
    for (int64_t e = 0; e < hd; e++) d += a[e] * b[e];
    return d;
}

__global__ void attn_block_fwd_kernel(float *ob, float *lb, const float *q, const float *k, const float *v,
                                      const int32_t *qpos, const int32_t *kpos, int64_t n, int64_t ns, int64_t H,
                                      int64_t KV, int64_t hd, float scale, int causal) {
    __shared__ float qs[AB_HD], sp[AB_T], sh[32];
    const int64_t qd = H * hd, kvd = KV * hd, grp = H / KV;
    const int t = threadIdx.x;
    for (int64_t r = blockIdx.x; r < n * H; r += gridDim.x) {
        const int64_t i = r / H, h = r % H, kh = h / grp;
        const float *qi = q + i * qd + h * hd;
        __syncthreads(); /* the previous row's readers of qs */
        for (int64_t e = t; e < hd; e += AB_T) qs[e] = qi[e];
        __syncthreads();
        float acc[AB_U], m = -INFINITY, l = 0;
        for (int u = 0; u < AB_U; u++) acc[u] = 0;
        const int32_t p0 = qpos[i];
        for (int64_t j0 = 0; j0 < ns; j0 += AB_T) {
            const int64_t j = j0 + t;
            float s = -INFINITY;
            if (j < ns && (!causal || kpos[j] <= p0)) s = ab_dot(qs, k + j * kvd + kh * hd, hd) * scale;
            const float mn = fmaxf(m, ab_block_max(s, sh));
            if (mn == -INFINITY) continue; /* nothing visible yet (uniform over the block) */
            const float p = s == -INFINITY ? 0.0f : expf(s - mn), c = m == -INFINITY ? 0.0f : expf(m - mn);
            l = l * c + ab_block_sum(p, sh);
            m = mn;
            sp[t] = p;
            __syncthreads();
            const int64_t cnt = ns - j0 < AB_T ? ns - j0 : AB_T;
            for (int u = 0; u < AB_U; u++) {
                const int64_t e = t + (int64_t)u * AB_T;
                if (e >= hd) break;
                float a = acc[u] * c;
                for (int64_t x = 0; x < cnt; x++) a += sp[x] * v[(j0 + x) * kvd + kh * hd + e];
                acc[u] = a;
            }
            __syncthreads(); /* sp read before the next tile writes it */
        }
        float *o = ob + i * qd + h * hd;
        for (int u = 0; u < AB_U; u++) {
            const int64_t e = t + (int64_t)u * AB_T;
            if (e < hd) o[e] = m == -INFINITY ? 0.0f : acc[u] / l;
        }
        if (t == 0) lb[r] = m == -INFINITY ? -INFINITY : m + logf(l);
    }
}

__global__ void attn_block_merge_kernel(float *out, float *lse, const float *ob, const float *lb, int64_t rows,
                                        int64_t hd) {
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
        const float b = lb[r], a = lse[r];
        float *o = out + r * hd;
        const float *p = ob + r * hd;
        if (b == -INFINITY) continue;
        if (a == -INFINITY) {
            for (int64_t e = 0; e < hd; e++) o[e] = p[e];
            lse[r] = b;
            continue;
        }
        const float m = fmaxf(a, b), wa = expf(a - m), wb = expf(b - m), s = wa + wb;
        for (int64_t e = 0; e < hd; e++) o[e] = (o[e] * wa + p[e] * wb) / s;
        lse[r] = m + logf(s);
    }
}

__global__ void attn_block_bwd_dq_kernel(float *dq, const float *dout, const float *out, const float *lse,
                                         const float *q, const float *k, const float *v, const int32_t *qpos,
                                         const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV,
                                         int64_t hd, float scale, int causal) {
    __shared__ float qs[AB_HD], ds_[AB_HD], sd[AB_T], sh[32];
    const int64_t qd = H * hd, kvd = KV * hd, grp = H / KV;
    const int t = threadIdx.x;
    for (int64_t r = blockIdx.x; r < n * H; r += gridDim.x) {
        const int64_t i = r / H, h = r % H, kh = h / grp;
        const float l = lse[r];
        if (l == -INFINITY) continue; /* uniform over the block */
        __syncthreads();
        float dpart = 0;
        for (int64_t e = t; e < hd; e += AB_T) {
            qs[e] = q[i * qd + h * hd + e];
            ds_[e] = dout[i * qd + h * hd + e];
            dpart += ds_[e] * out[i * qd + h * hd + e];
        }
        const float D = ab_block_sum(dpart, sh); /* also the barrier after the loads */
        float acc[AB_U];
        for (int u = 0; u < AB_U; u++) acc[u] = 0;
        const int32_t p0 = qpos[i];
        for (int64_t j0 = 0; j0 < ns; j0 += AB_T) {
            const int64_t j = j0 + t;
            float g = 0;
            if (j < ns && (!causal || kpos[j] <= p0)) {
                const float s = ab_dot(qs, k + j * kvd + kh * hd, hd) * scale;
                const float dp = ab_dot(ds_, v + j * kvd + kh * hd, hd);
                g = expf(s - l) * (dp - D) * scale;
            }
            sd[t] = g;
            __syncthreads();
            const int64_t cnt = ns - j0 < AB_T ? ns - j0 : AB_T;
            for (int u = 0; u < AB_U; u++) {
                const int64_t e = t + (int64_t)u * AB_T;
                if (e >= hd) break;
                float a = acc[u];
                for (int64_t x = 0; x < cnt; x++) a += sd[x] * k[(j0 + x) * kvd + kh * hd + e];
                acc[u] = a;
            }
            __syncthreads();
        }
        for (int u = 0; u < AB_U; u++) {
            const int64_t e = t + (int64_t)u * AB_T;
            if (e < hd) dq[i * qd + h * hd + e] += acc[u];
        }
    }
}

__global__ void attn_block_bwd_dkv_kernel(float *dk, float *dv, const float *dout, const float *out,
                                          const float *lse, const float *q, const float *k, const float *v,
                                          const int32_t *qpos, const int32_t *kpos, int64_t n, int64_t ns, int64_t H,
                                          int64_t KV, int64_t hd, float scale, int causal) {
    __shared__ float ks[AB_HD], vs[AB_HD], sp[AB_T], sd[AB_T];
    const int64_t qd = H * hd, kvd = KV * hd, grp = H / KV;
    const int t = threadIdx.x;
    for (int64_t r = blockIdx.x; r < ns * KV; r += gridDim.x) {
        const int64_t j = r / KV, kh = r % KV;
        __syncthreads();
        for (int64_t e = t; e < hd; e += AB_T) ks[e] = k[j * kvd + kh * hd + e], vs[e] = v[j * kvd + kh * hd + e];
        __syncthreads();
        float ak[AB_U], av[AB_U];
        for (int u = 0; u < AB_U; u++) ak[u] = av[u] = 0;
        const int32_t pj = kpos[j];
        for (int64_t h = kh * grp; h < (kh + 1) * grp; h++)
            for (int64_t i0 = 0; i0 < n; i0 += AB_T) {
                const int64_t i = i0 + t;
                float p = 0, g = 0;
                if (i < n && (!causal || pj <= qpos[i]) && lse[i * H + h] != -INFINITY) {
                    const float *qi = q + i * qd + h * hd, *di = dout + i * qd + h * hd;
                    const float s = ab_dot(qi, ks, hd) * scale, dp = ab_dot(di, vs, hd);
                    const float D = ab_dot(di, out + i * qd + h * hd, hd);
                    p = expf(s - lse[i * H + h]);
                    g = p * (dp - D) * scale;
                }
                sp[t] = p, sd[t] = g;
                __syncthreads();
                const int64_t cnt = n - i0 < AB_T ? n - i0 : AB_T;
                for (int u = 0; u < AB_U; u++) {
                    const int64_t e = t + (int64_t)u * AB_T;
                    if (e >= hd) break;
                    float a = ak[u], b = av[u];
                    for (int64_t x = 0; x < cnt; x++) {
                        a += sd[x] * q[(i0 + x) * qd + h * hd + e];
                        b += sp[x] * dout[(i0 + x) * qd + h * hd + e];
                    }
                    ak[u] = a, av[u] = b;
                }
                __syncthreads();
            }
        for (int u = 0; u < AB_U; u++) {
            const int64_t e = t + (int64_t)u * AB_T;
            if (e < hd) dk[j * kvd + kh * hd + e] += ak[u], dv[j * kvd + kh * hd + e] += av[u];
        }
    }
}

static unsigned ab_grid(int64_t rows) { return (unsigned)(rows < 65535 ? rows : 65535); }

extern "C" void lmc_cuda_attn_block_fwd(void *ctx, float *ob, float *lb, const float *q, const float *k,
                                        const float *v, const int32_t *qpos, const int32_t *kpos, int64_t n,
                                        int64_t ns, int64_t H, int64_t KV, int64_t hd, float scale, int causal) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(hd > 0 && hd <= AB_HD && KV > 0 && H % KV == 0);
    if (n <= 0) return;
    attn_block_fwd_kernel<<<ab_grid(n * H), AB_T, 0, c->stream>>>(ob, lb, q, k, v, qpos, kpos, n, ns, H, KV, hd,
                                                                   scale, causal);
    LMC_CUDA_LAUNCH_CHECK();
}

extern "C" void lmc_cuda_attn_block_merge(void *ctx, float *out, float *lse, const float *ob, const float *lb,
                                          int64_t n, int64_t H, int64_t hd) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    int64_t rows = n * H;
    if (rows <= 0) return;
    attn_block_merge_kernel<<<ab_grid((rows + 127) / 128), 128, 0, c->stream>>>(out, lse, ob, lb, rows, hd);
    LMC_CUDA_LAUNCH_CHECK();
}

extern "C" void lmc_cuda_attn_block_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                        const float *out, const float *lse, const float *q, const float *k,
                                        const float *v, const int32_t *qpos, const int32_t *kpos, int64_t n,
                                        int64_t ns, int64_t H, int64_t KV, int64_t hd, float scale, int causal) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(hd > 0 && hd <= AB_HD && KV > 0 && H % KV == 0);
    if (n <= 0 || ns <= 0) return;
    attn_block_bwd_dq_kernel<<<ab_grid(n * H), AB_T, 0, c->stream>>>(dq, dout, out, lse, q, k, v, qpos, kpos, n, ns,
                                                                      H, KV, hd, scale, causal);
    LMC_CUDA_LAUNCH_CHECK();
    attn_block_bwd_dkv_kernel<<<ab_grid(ns * KV), AB_T, 0, c->stream>>>(dk, dv, dout, out, lse, q, k, v, qpos, kpos,
                                                                        n, ns, H, KV, hd, scale, causal);
    LMC_CUDA_LAUNCH_CHECK();
}
