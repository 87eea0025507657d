/* attention_paged.cu — the CUDA twin of attention_paged (contract in
 * backend.h): causal attention of a batch of tokens from many sequences
 * over a paged KV pool, read through per-sequence block tables. Two
 * kernels and a combine:
 *
 *  - attention_paged_store_fwd_kernel: token i's new K/V rows (f32) go to
 *    row bt[seq[i]][pos[i] / bs] * bs + pos[i] % bs of the layer's pool,
 *    converted to the pool's dtype (the backend's kv_dtype: bf16, or f32
 *    in the fp32 checking mode).
 *
 *  - attention_paged_fwd_kernel<KT>: split-K flash decoding in f32 for
 *    every token, prefill and decode alike. A block owns (token, group of
 *    query heads sharing one kv head, key split): its warps are G query
 *    heads x KW key lanes (G * KW <= 8 warps), so one K/V row read from
 *    the pool serves all the heads of the GQA group (the other warps hit
 *    it in L1). Each warp walks keys in steps of 4 with an online softmax
 *    (base 2, max-subtracted), a lane holding a slice of the head dim; a
 *    key's pool row is found through the block table. The KW warps of a
 *    head merge in shared memory; when the keys were split,
 *    attention_paged_combine_fwd_kernel merges the splits' (max, sum, acc)
 *    partials. Positions are device memory, so the split count is chosen
 *    from the block table's capacity (max_blocks * block_size, or the
 *    window) with at most 128 keys a split; blocks of splits past a
 *    token's keys exit at once, a token whose keys fit in one split is
 *    written directly, and the combine reads only the splits with keys.
 */
#include "ops/cuda/common.cuh"

#define PA_MAXJ 8   /* head_dim <= 256 */
#define PA_UNROLL 4
#define PA_MAX_WARPS 8

struct pattn_args {
    float *out;
    const float *q;
    const void *kc, *vc;            /* the layer's pool, KT elements */
    const int32_t *seq, *pos, *bt;
    int64_t T, max_blocks, bs, window, kps;
    int H, KV, hd, G, KW, n_grp, grp_heads, splits;
    float scale_log2;
    float *part;                    /* (T, H, splits, hd + 2) when splits > 1 */
};

__device__ __forceinline__ float pa_ld(const float *p) { return *p; }
__device__ __forceinline__ float pa_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void pa_st(float *p, float x) { *p = x; }
__device__ __forceinline__ void pa_st(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }

template <typename KT>
__global__ void attention_paged_store_fwd_kernel(KT *kc, KT *vc, const float *k_new,
                                                 const float *v_new, const int32_t *seq,
                                                 const int32_t *pos, const int32_t *bt,
                                                 int64_t T, int64_t kv_row, int64_t max_blocks,
                                                 int64_t bs) {
    int64_t n = T * kv_row;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / kv_row, d = idx % kv_row, p = pos[i];
        int64_t slot = (int64_t)bt[(int64_t)seq[i] * max_blocks + p / bs] * bs + p % bs;
        pa_st(kc + slot * kv_row + d, k_new[idx]);
        pa_st(vc + slot * kv_row + d, v_new[idx]);
    }
}

template <typename KT>
__global__ void __launch_bounds__(PA_MAX_WARPS * 32)
attention_paged_fwd_kernel(struct pattn_args a) {
    extern __shared__ float psh[]; /* per warp: m, l, acc (hd) */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, hd = a.hd;
    const int hg = warp / a.KW, kw = warp % a.KW;
    const int64_t t = blockIdx.x;
    const int kvh = blockIdx.y / a.n_grp, grp = blockIdx.y % a.n_grp, split = blockIdx.z;
    const int hi = grp * a.grp_heads + hg;           /* head within the kv group */
    const bool active = hg < a.grp_heads && hi < a.G;
    const int h = kvh * a.G + (active ? hi : 0);
    const int64_t kv_row = (int64_t)a.KV * hd;
    const KT *kb = (const KT *)a.kc + (int64_t)kvh * hd;
    const KT *vb = (const KT *)a.vc + (int64_t)kvh * hd;
    const int32_t *bt = a.bt + (int64_t)a.seq[t] * a.max_blocks;
    const int64_t p = a.pos[t], bs = a.bs;
    const int64_t lo = a.window > 0 ? LMC_MAX((int64_t)0, p - a.window + 1) : 0;
    const int64_t k0 = lo + split * a.kps, k1 = LMC_MIN(p + 1, k0 + a.kps); /* [k0, k1) */
    /* splits past this token's keys do nothing (the combine skips them);
     * a token whose keys fit in split 0 is written directly */
    if (k0 > p) return;
    const bool direct = a.splits == 1 || p + 1 - lo <= a.kps;
    float *wsh = psh + warp * (hd + 2);

    const float *q = a.q + (t * a.H + h) * (int64_t)hd;
    float qd[PA_MAXJ], acc[PA_MAXJ];
#pragma unroll
    for (int j = 0; j < PA_MAXJ; j++) {
        int d = lane + 32 * j;
        qd[j] = d < hd ? q[d] * a.scale_log2 : 0.f;
        acc[j] = 0.f;
    }
    float mrun = -INFINITY, lrun = 0.f;
    if (active) {
        for (int64_t kk = k0 + kw * PA_UNROLL; kk < k1; kk += a.KW * PA_UNROLL) {
            float sc[PA_UNROLL];
            int64_t row[PA_UNROLL];
#pragma unroll
            for (int u = 0; u < PA_UNROLL; u++) {
                int64_t key = kk + u;
                row[u] = key < k1 ? ((int64_t)bt[key / bs] * bs + key % bs) * kv_row : 0;
                float s = 0.f;
                if (key < k1) {
                    const KT *kr = kb + row[u];
#pragma unroll
                    for (int j = 0; j < PA_MAXJ; j++) {
                        int d = lane + 32 * j;
                        if (d < hd) s = fmaf(qd[j], pa_ld(kr + d), s);
                    }
                }
                sc[u] = s;
            }
            float mx = -INFINITY;
#pragma unroll
            for (int u = 0; u < PA_UNROLL; u++) {
                sc[u] = lmc_warp_sum(sc[u]);
                if (kk + u >= k1) sc[u] = -INFINITY;
                mx = fmaxf(mx, sc[u]);
            }
            float mnew = fmaxf(mrun, mx); /* finite: key kk is valid */
            float corr = exp2f(mrun - mnew);
            mrun = mnew;
            lrun *= corr;
#pragma unroll
            for (int j = 0; j < PA_MAXJ; j++) acc[j] *= corr;
#pragma unroll
            for (int u = 0; u < PA_UNROLL; u++) {
                if (kk + u >= k1) break;
                float pu = exp2f(sc[u] - mnew);
                lrun += pu;
                const KT *vr = vb + row[u];
#pragma unroll
                for (int j = 0; j < PA_MAXJ; j++) {
                    int d = lane + 32 * j;
                    if (d < hd) acc[j] = fmaf(pu, pa_ld(vr + d), acc[j]);
                }
            }
        }
    }
    if (lane == 0) wsh[0] = mrun, wsh[1] = lrun;
#pragma unroll
    for (int j = 0; j < PA_MAXJ; j++) {
        int d = lane + 32 * j;
        if (d < hd) wsh[2 + d] = acc[j];
    }
    __syncthreads();
    if (!active || kw != 0) return;
    /* warp kw 0 of each head merges that head's KW warps */
    const float *hs = psh + hg * a.KW * (hd + 2);
    float mall = -INFINITY;
    for (int w = 0; w < a.KW; w++) mall = fmaxf(mall, hs[w * (hd + 2)]);
    float muse = mall == -INFINITY ? 0.f : mall, lall = 0.f;
    float wt[PA_MAX_WARPS];
    for (int w = 0; w < a.KW; w++) {
        wt[w] = exp2f(hs[w * (hd + 2)] - muse);
        lall += hs[w * (hd + 2) + 1] * wt[w];
    }
    float *dst = direct ? a.out + (t * a.H + h) * (int64_t)hd
                        : a.part + ((t * a.H + h) * a.splits + split) * (int64_t)(hd + 2);
    for (int d = lane; d < hd; d += 32) {
        float s = 0.f;
        for (int w = 0; w < a.KW; w++) s += hs[w * (hd + 2) + 2 + d] * wt[w];
        if (direct) dst[d] = lall > 0.f ? s / lall : 0.f;
        else dst[2 + d] = s;
    }
    if (!direct && lane == 0) dst[0] = mall, dst[1] = lall;
}

__global__ void attention_paged_combine_fwd_kernel(struct pattn_args a) {
    const int64_t t = blockIdx.x;
    const int h = blockIdx.y, hd = a.hd;
    const int64_t p = a.pos[t], lo = a.window > 0 ? LMC_MAX((int64_t)0, p - a.window + 1) : 0;
    const int S = (int)((p - lo + a.kps) / a.kps); /* splits holding keys */
    if (S <= 1) return;                            /* written directly */
    const float *pp = a.part + (t * a.H + h) * a.splits * (int64_t)(hd + 2);
    float mall = -INFINITY;
    for (int s = 0; s < S; s++) mall = fmaxf(mall, pp[s * (hd + 2)]);
    float muse = mall == -INFINITY ? 0.f : mall, lall = 0.f;
    for (int s = 0; s < S; s++) lall += pp[s * (hd + 2) + 1] * exp2f(pp[s * (hd + 2)] - muse);
    float *dst = a.out + (t * a.H + h) * (int64_t)hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < S; s++) acc += pp[s * (hd + 2) + 2 + d] * exp2f(pp[s * (hd + 2)] - muse);
        dst[d] = lall > 0.f ? acc / lall : 0.f;
    }
}

/* The table entry: kc and vc point at the layer's pool in the backend's
 * kv_dtype (cast to float *). */
extern "C" void lmc_cuda_attention_paged(void *ctx, float *out, const float *q,
                                         const float *k_new, const float *v_new, float *kc,
                                         float *vc, int64_t T, const int32_t *seq,
                                         const int32_t *pos, const int32_t *bt,
                                         int64_t max_blocks, int64_t block_size,
                                         int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                         int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && block_size > 0 && max_blocks > 0);
    LMC_ASSERT(c->kv_dtype == LMC_DTYPE_F32 || c->kv_dtype == LMC_DTYPE_BF16);
    if (T <= 0 || n_heads <= 0 || hd <= 0) return;
    LMC_ASSERT(hd <= 32 * PA_MAXJ && T <= 0x7fffffff);
    const bool bf = c->kv_dtype == LMC_DTYPE_BF16;
    int64_t kv_row = n_kv * hd;

    unsigned sb = lmc_cuda_blocks(T * kv_row, 256);
    if (bf)
        attention_paged_store_fwd_kernel<__nv_bfloat16><<<sb, 256, 0, c->stream>>>(
            (__nv_bfloat16 *)kc, (__nv_bfloat16 *)vc, k_new, v_new, seq, pos, bt, T, kv_row,
            max_blocks, block_size);
    else
        attention_paged_store_fwd_kernel<float><<<sb, 256, 0, c->stream>>>(
            kc, vc, k_new, v_new, seq, pos, bt, T, kv_row, max_blocks, block_size);
    LMC_CUDA_LAUNCH_CHECK();

    struct pattn_args a;
    a.out = out, a.q = q, a.kc = kc, a.vc = vc, a.seq = seq, a.pos = pos, a.bt = bt;
    a.T = T, a.max_blocks = max_blocks, a.bs = block_size, a.window = window;
    a.H = (int)n_heads, a.KV = (int)n_kv, a.hd = (int)hd, a.G = (int)(n_heads / n_kv);
    a.scale_log2 = scale * 1.4426950408889634f;
    /* warps: the group's heads (up to 8 per block), the rest of the 4..8
     * warps share a head's keys */
    a.grp_heads = LMC_MIN(a.G, PA_MAX_WARPS);
    a.n_grp = (a.G + a.grp_heads - 1) / a.grp_heads;
    a.KW = LMC_MAX(1, 4 / a.grp_heads);
    int warps = a.grp_heads * a.KW;
    /* keys: at most the block table's capacity (positions are on the device) */
    int64_t n_max = max_blocks * block_size;
    if (window > 0) n_max = LMC_MIN(n_max, window);
    int64_t rows = T * n_kv * a.n_grp;
    int64_t want = (8 * (int64_t)c->n_sm + rows - 1) / rows;
    /* at most 128 keys per split: short serial chains per warp whatever
     * the table's capacity (splits past a token's keys exit at once) */
    int64_t kps = LMC_MAX((int64_t)(32 * a.KW), LMC_MIN((int64_t)128, (n_max + want - 1) / want));
    int64_t splits = (n_max + kps - 1) / kps;
    LMC_ASSERT(splits <= 65535 && n_kv * a.n_grp <= 65535);
    a.kps = kps, a.splits = (int)splits, a.part = NULL;
    if (splits > 1) {
        lmc_cuda_reserve(c, &c->attn_part, &c->attn_part_bytes,
                         (size_t)(T * n_heads * splits * (hd + 2)) * sizeof(float));
        a.part = (float *)c->attn_part;
    }
    dim3 grid((unsigned)T, (unsigned)(n_kv * a.n_grp), (unsigned)splits);
    size_t shm = (size_t)warps * (size_t)(hd + 2) * sizeof(float);
    if (bf)
        attention_paged_fwd_kernel<__nv_bfloat16><<<grid, warps * 32, shm, c->stream>>>(a);
    else
        attention_paged_fwd_kernel<float><<<grid, warps * 32, shm, c->stream>>>(a);
    LMC_CUDA_LAUNCH_CHECK();
    if (splits > 1) {
        dim3 g2((unsigned)T, (unsigned)n_heads);
        attention_paged_combine_fwd_kernel<<<g2, 64, 0, c->stream>>>(a);
        LMC_CUDA_LAUNCH_CHECK();
    }
}
