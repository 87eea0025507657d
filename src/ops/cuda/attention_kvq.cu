/* attention_kvq.cu — the CUDA twin of ops/cpu/attention_kvq.c's attention:
 * causal attention reading a compressed KV-cache layer (q8, q4, KIVI-2;
 * layout and element decoding shared with the CPU through
 * ops/cpu/kvquant_layout.h). One block per (query, head): the query in
 * shared memory, each thread scores keys j = lo + tid, lo + tid + blockDim
 * ... decoding the head's slice of the key row element by element, then a
 * block max, exp and a block sum in double, then each thread owns output
 * dims and accumulates the decoded values over the keys in order. A
 * reference kernel (no tiling): correctness first, speed in the GPU run. */
#include "ops/cuda/common.cuh"
#include "ops/cpu/kvquant_layout.h"
#include "ops/cuda/kvquant_cuda.h"

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
