/* attention_paged.cuh — the split-K flash-decoding kernel of paged
 * attention (attention_paged.cu says how it works), templated on an
 * element loader so the plain pools (f32, bf16: attention_paged.cu) and
 * the compressed ones (q8, q4, KIVI-2: attention_paged_kvq.cu) share it:
 * the loader gives channel c of a key or value from its pool slot (or,
 * KIVI, from the sequence's f16 ring). pattn_run launches it (and the
 * split combine) over a layer whose new rows are already stored. */
#ifndef LMC_ATTENTION_PAGED_CUH
#define LMC_ATTENTION_PAGED_CUH

#include "ops/cuda/common.cuh"

#define PA_MAXJ 8   /* head_dim <= 256 */
#define PA_UNROLL 4
#define PA_MAX_WARPS 8

struct pattn_args {
    float *out;
    const float *q;
    const void *kc, *vc;            /* the layer's pool: kv_row KT elements or rb bytes a slot */
    const int32_t *seq, *pos, *bt;
    int64_t T, max_blocks, bs, window, kps, kv_row;
    int H, KV, hd, G, KW, n_grp, grp_heads, splits;
    float scale_log2;
    float *part;                    /* (T, H, splits, hd + 2) when splits > 1 */
    size_t rb;                      /* compressed pools: bytes of a slot */
    /* KIVI-2: the rings (ring_slot bytes a slot: K, V parts of ring_part
     * bytes, then the tags), each token's slot, rows, the residual */
    const uint8_t *ring;
    const int32_t *tok_ring;
    const float *k_new, *v_new;     /* the step's rows (T, kv_row) */
    size_t ring_slot, ring_part;
    int64_t ring_rows, residual;
};

static __device__ __forceinline__ float pa_ld(const float *p) { return *p; }
static __device__ __forceinline__ float pa_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void pa_st(float *p, float x) { *p = x; }
static __device__ __forceinline__ void pa_st(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }

/* Element loaders of the attention kernel: channel c of the key (k) or
 * value (v) at position key, pool slot slot; rr what ring_row said for
 * token t's key (KIVI: a ring row, -2 - the step's row, or -1: the pool). Plain pools: KT elements here; the compressed ones in
 * attention_paged_kvq.cu. */
template <typename KT> struct pa_plain {
    static __device__ __forceinline__ int64_t ring_row(const pattn_args &, const uint8_t *, int64_t, int64_t,
                                                       int64_t) {
        return -1;
    }
    static __device__ __forceinline__ float k(const pattn_args &a, const uint8_t *, int64_t, int64_t,
                                              int64_t slot, int64_t c) {
        return pa_ld((const KT *)a.kc + slot * a.kv_row + c);
    }
    static __device__ __forceinline__ float v(const pattn_args &a, const uint8_t *, int64_t, int64_t,
                                              int64_t slot, int64_t c) {
        return pa_ld((const KT *)a.vc + slot * a.kv_row + c);
    }
};

template <typename LD>
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
    const int64_t c0 = (int64_t)kvh * hd;
    const uint8_t *rg = a.ring ? a.ring + (size_t)a.tok_ring[t] * a.ring_slot : nullptr;
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
            int64_t row[PA_UNROLL], rr[PA_UNROLL];
#pragma unroll
            for (int u = 0; u < PA_UNROLL; u++) {
                int64_t key = kk + u;
                row[u] = key < k1 ? (int64_t)bt[key / bs] * bs + key % bs : 0; /* the pool slot */
                rr[u] = key < k1 ? LD::ring_row(a, rg, t, p, key) : -1;
                float s = 0.f;
                if (key < k1) {
#pragma unroll
                    for (int j = 0; j < PA_MAXJ; j++) {
                        int d = lane + 32 * j;
                        if (d < hd) s = fmaf(qd[j], LD::k(a, rg, rr[u], key, row[u], c0 + d), s);
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
#pragma unroll
                for (int j = 0; j < PA_MAXJ; j++) {
                    int d = lane + 32 * j;
                    if (d < hd) acc[j] = fmaf(pu, LD::v(a, rg, rr[u], kk + u, row[u], c0 + d), acc[j]);
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

static __global__ void attention_paged_combine_fwd_kernel(struct pattn_args a) {
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

/* Launches the attention over a stored layer with loader LD; a carries
 * the loader's fields (kv_row, rb, the ring). */
template <typename LD>
static void pattn_run(struct lmc_cuda_ctx *c, struct pattn_args a, float *out, const float *q,
                      const void *kc, const void *vc, int64_t T, const int32_t *seq,
                      const int32_t *pos, const int32_t *bt, int64_t max_blocks, int64_t block_size,
                      int64_t n_heads, int64_t n_kv, int64_t hd, float scale, int64_t window) {
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
    attention_paged_fwd_kernel<LD><<<grid, warps * 32, shm, c->stream>>>(a);
    LMC_CUDA_LAUNCH_CHECK();
    if (splits > 1) {
        dim3 g2((unsigned)T, (unsigned)n_heads);
        attention_paged_combine_fwd_kernel<<<g2, 64, 0, c->stream>>>(a);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

#endif
