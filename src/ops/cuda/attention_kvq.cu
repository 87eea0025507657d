/* attention_kvq.cu — the CUDA twins of ops/cpu/attention_kvq.c: the
 * compressed store (rope_kv_store) and causal attention reading a
 * compressed KV-cache layer (q8, q4, KIVI-2; layout, f16 conversions,
 * group quantizers and element decoding shared with the CPU through
 * ops/cpu/kvquant_layout.h, so both write the same bytes).
 *
 * Store: the launcher reads the layer's header (and pos[0]) back to the
 * host, then queues q8/q4 groups one thread each; KIVI rows go to the f16
 * ring one launch per row, a whole key block quantized (keys per channel,
 * values per token group, a thread each) when the ring is full, and a
 * rollback into a quantized block first restores its kept rows to the
 * ring; the updated header goes back last. Attention: one block per
 * (query, head): the query in
 * shared memory, each thread scores keys j = lo + tid, lo + tid + blockDim
 * ... decoding the head's slice of the key row element by element, then a
 * block max, exp and a block sum in double, then each thread owns output
 * dims and accumulates the decoded values over the keys in order. A
 * reference kernel (no tiling): correctness first, speed in the GPU run. */
#include "ops/cuda/common.cuh"
#include "ops/cpu/kvquant_layout.h"
#include "ops/cuda/kvquant_cuda.h"
#include "ops/cuda/ops_cuda.h"
#include "ops/backend_cuda.h"

#include <string.h>

#define KVQ_THREADS 128
#define KVQ_MAX_POS 12000

__global__ void __launch_bounds__(KVQ_THREADS)
attention_kvq_fwd_kernel(float *out, const float *q, const uint8_t *kr, const uint8_t *vr,
                         int64_t pos0, int H, int KV, int hd, float scale, int64_t window) {
    extern __shared__ float ksh[]; /* scores (positions), then q (hd) */
    __shared__ double dsh[32];
    __shared__ float fsh[32];
    const struct lmc_kvq_hdr *h = (const struct lmc_kvq_hdr *)kr;
    const struct lmc_kvq_layout L = lmc_kvq_layout_of(h->fmt, h->ctx, h->row, h->residual);
    const int64_t i = blockIdx.x / H;
    const int head = (int)(blockIdx.x % H), kvh = head / (H / KV);
    const int64_t p = pos0 + i, lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    float *s = ksh, *qs = ksh + (p + 1);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[(i * H + head) * (int64_t)hd + d];
    __syncthreads();
    float mx = -INFINITY;
    for (int64_t j = lo + threadIdx.x; j <= p; j += blockDim.x) {
        float acc = 0;
        for (int d = 0; d < hd; d++) acc += qs[d] * lmc_kvq_elem(h, &L, kr, 0, j, (int64_t)kvh * hd + d);
        s[j] = scale * acc;
        mx = fmaxf(mx, s[j]);
    }
    mx = lmc_warp_max(mx);
    if ((threadIdx.x & 31) == 0) fsh[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) mx = fmaxf(mx, fsh[w]);
    double sum = 0;
    for (int64_t j = lo + threadIdx.x; j <= p; j += blockDim.x) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    sum = lmc_block_sum_d(sum, dsh); /* its barriers also publish s */
    const float inv = (float)(1.0 / sum);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0;
        for (int64_t j = lo; j <= p; j++) o += s[j] * lmc_kvq_elem(h, &L, vr, 1, j, (int64_t)kvh * hd + d);
        out[(i * H + head) * (int64_t)hd + d] = o * inv;
    }
}

__global__ void kvq_store_rows_fwd_kernel(uint8_t *kr, uint8_t *vr, const float *k, const float *v,
                                          int64_t M, int64_t t0, int64_t row, int fmt,
                                          struct lmc_kvq_layout L) {
    const int64_t n = M * L.ng * 2;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int kv = (int)(idx % 2);
        const int64_t g = idx / 2 % L.ng, m = idx / 2 / L.ng, t = t0 + m, G = lmc_kvq_group_of(fmt);
        const int64_t cnt = row - g * G < G ? row - g * G : G;
        const float *x = (kv ? v : k) + m * row + g * G;
        uint8_t *base = kv ? vr : kr;
        uint8_t *codes = base + (kv ? L.vcodes : L.kcodes) + (size_t)t * (size_t)L.rowbytes;
        uint16_t *sc = (uint16_t *)(base + (kv ? L.vscales : L.kscales));
        if (fmt == 1)
            lmc_kvq_q8_group(x, 1, cnt, (int8_t *)codes + g * G, sc + t * L.ng + g);
        else
            lmc_kvq_asym_group(x, 1, cnt, 4, codes + g * G / 2, sc + (t * L.ng + g) * 2);
    }
}

__global__ void kvq_ring_fwd_kernel(uint8_t *kr, uint8_t *vr, const float *k, const float *v,
                                    int64_t t, int64_t row, struct lmc_kvq_layout L) {
    uint16_t *kring = (uint16_t *)(kr + L.kring) + (size_t)(t % L.ring) * (size_t)row;
    uint16_t *vring = (uint16_t *)(vr + L.vring) + (size_t)(t % L.ring) * (size_t)row;
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < row;
         c += (int64_t)gridDim.x * blockDim.x) {
        kring[c] = lmc_kvq_to_f16(k[c]);
        vring[c] = lmc_kvq_to_f16(v[c]);
    }
}

/* KIVI: the block of positions b0.. (b0 a multiple of 32) out of the ring */
__global__ void kvq_block_fwd_kernel(uint8_t *kr, uint8_t *vr, int64_t b0, int64_t row,
                                     struct lmc_kvq_layout L) {
    const int64_t n = row + LMC_KVQ_G * L.ng, blk = b0 / LMC_KVQ_G;
    const uint16_t *kring = (const uint16_t *)(kr + L.kring), *vring = (const uint16_t *)(vr + L.vring);
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        float tmp[LMC_KVQ_G];
        if (idx < row) { /* key channel idx over the block's 32 tokens */
            for (int u = 0; u < LMC_KVQ_G; u++)
                tmp[u] = lmc_kvq_f16(kring[(size_t)((b0 + u) % L.ring) * (size_t)row + (size_t)idx]);
            lmc_kvq_asym_group(tmp, 1, LMC_KVQ_G, 2, kr + L.kcodes + (size_t)(blk * row + idx) * (LMC_KVQ_G / 4),
                               (uint16_t *)(kr + L.kscales) + (size_t)(blk * row + idx) * 2);
        } else { /* one value group of one token */
            const int64_t j = idx - row, t = b0 + j / L.ng, g = j % L.ng;
            const int64_t cnt = row - g * LMC_KVQ_G < LMC_KVQ_G ? row - g * LMC_KVQ_G : LMC_KVQ_G;
            for (int64_t u = 0; u < cnt; u++)
                tmp[u] = lmc_kvq_f16(vring[(size_t)(t % L.ring) * (size_t)row + (size_t)(g * LMC_KVQ_G + u)]);
            lmc_kvq_asym_group(tmp, 1, cnt, 2, vr + L.vcodes + (size_t)t * (size_t)L.rowbytes + g * LMC_KVQ_G / 4,
                               (uint16_t *)(vr + L.vscales) + (size_t)(t * L.ng + g) * 2);
        }
    }
}

/* KIVI rollback: positions [b0, pos) of a quantized block back to the ring */
__global__ void kvq_restore_fwd_kernel(uint8_t *kr, uint8_t *vr, struct lmc_kvq_hdr h, int64_t b0,
                                       int64_t pos, struct lmc_kvq_layout L) {
    const int64_t row = h.row, n = (pos - b0) * row;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = b0 + idx / row, c = idx % row;
        const size_t slot = (size_t)(t % L.ring) * (size_t)row + (size_t)c;
        ((uint16_t *)(kr + L.kring))[slot] = lmc_kvq_to_f16(lmc_kvq_elem(&h, &L, kr, 0, t, c));
        ((uint16_t *)(vr + L.vring))[slot] = lmc_kvq_to_f16(lmc_kvq_elem(&h, &L, vr, 1, t, c));
    }
}

extern "C" void lmc_cuda_kvq_rope_kv_store(void *ctx, float *q, float *k, const float *v, void *kc,
                                           void *vc, int64_t M, int64_t n_heads, int64_t n_kv,
                                           int64_t hd, int64_t rot_dim, const int32_t *pos,
                                           const double *inv_freq, float attn_scale) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (M <= 0) return;
    if (rot_dim) {
        lmc_cuda_rope(ctx, q, M, n_heads, hd, rot_dim, pos, inv_freq, attn_scale);
        lmc_cuda_rope(ctx, k, M, n_kv, hd, rot_dim, pos, inv_freq, attn_scale);
    }
    int32_t p0;
    struct lmc_kvq_hdr h;
    lmc_cuda_download(ctx, &p0, pos, sizeof p0);
    lmc_cuda_download(ctx, &h, kc, sizeof h);
    LMC_ASSERT(h.magic == LMC_KVQ_MAGIC && p0 >= 0 && p0 <= h.len && p0 + M <= h.ctx);
    const struct lmc_kvq_layout L = lmc_kvq_layout_of(h.fmt, h.ctx, h.row, h.residual);
    uint8_t *kr = (uint8_t *)kc, *vr = (uint8_t *)vc;
    const int64_t row = h.row;
    if (h.fmt == 3 && p0 < h.n_quant) {
        const int64_t b0 = p0 / LMC_KVQ_G * LMC_KVQ_G;
        if (p0 > b0) {
            kvq_restore_fwd_kernel<<<lmc_cuda_blocks((p0 - b0) * row, 256), 256, 0, c->stream>>>(kr, vr, h, b0,
                                                                                                  p0, L);
            LMC_CUDA_LAUNCH_CHECK();
        }
        h.n_quant = b0;
    }
    h.len = p0;
    if (h.fmt != 3) {
        kvq_store_rows_fwd_kernel<<<lmc_cuda_blocks(M * L.ng * 2, 128), 128, 0, c->stream>>>(
            kr, vr, k, v, M, p0, row, (int)h.fmt, L);
        LMC_CUDA_LAUNCH_CHECK();
        h.len += M;
    } else {
        for (int64_t m = 0; m < M; m++, h.len++) {
            if (h.len - h.n_quant == L.ring) {
                kvq_block_fwd_kernel<<<lmc_cuda_blocks(row + LMC_KVQ_G * L.ng, 128), 128, 0, c->stream>>>(
                    kr, vr, h.n_quant, row, L);
                LMC_CUDA_LAUNCH_CHECK();
                h.n_quant += LMC_KVQ_G;
            }
            kvq_ring_fwd_kernel<<<lmc_cuda_blocks(row, 256), 256, 0, c->stream>>>(kr, vr, k + m * row,
                                                                                  v + m * row, h.len, row, L);
            LMC_CUDA_LAUNCH_CHECK();
        }
    }
    lmc_cuda_upload(ctx, kc, &h, sizeof h);
}

extern "C" void lmc_cuda_kvq_attention(void *ctx, float *out, const float *q, const float *k,
                                       const float *v, int64_t M, int64_t pos0, int64_t n_heads,
                                       int64_t n_kv, int64_t hd, float scale, int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0 && pos0 + M <= KVQ_MAX_POS);
    if (M <= 0 || n_heads <= 0 || hd <= 0) return;
    size_t smem = (size_t)(pos0 + M + hd) * sizeof(float);
    attention_kvq_fwd_kernel<<<(unsigned)(M * n_heads), KVQ_THREADS, smem, c->stream>>>(
        out, q, (const uint8_t *)k, (const uint8_t *)v, pos0, (int)n_heads, (int)n_kv, (int)hd, scale,
        window);
    LMC_CUDA_LAUNCH_CHECK();
}

/* the compressed-cache variant of a CUDA table (backend_cuda.h) */
extern "C" void lmc_backend_cuda_set_kvq(struct lmc_backend *be) {
    if (!be || !be->name || strcmp(be->name, "cuda")) return;
    be->kv_dtype = LMC_DTYPE_I16;
    be->rope_kv_store = lmc_cuda_kvq_rope_kv_store;
    be->attention = lmc_cuda_kvq_attention;
    be->attention_paged = NULL;
}
