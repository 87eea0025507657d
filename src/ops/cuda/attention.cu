/* attention.cu — causal multi-head attention over a KV cache on the GPU
 * (shapes in backend.h), two kernels:
 *
 *  - attention_fwd_kernel<HD> (prefill, bf16 tensor cores, bf16 K/V): a
 *    FlashAttention-2-style forward. A block of 8 warps owns 128 queries
 *    of one head; each warp owns 16 query rows, its Q rounded to bf16 and
 *    kept in registers as mma A-fragments (read once from f32 q). K and V
 *    tiles of 64 keys are copied from the bf16 cache by cp.async straight
 *    into a double-buffered shared-memory ring (the next tile lands while
 *    this one computes; one barrier per tile); B-fragments load with
 *    ldmatrix (V with .trans, so V stays row-major). S = Q K^T and
 *    O += P V run on mma.sync.m16n8k16 (bf16 in, f32 accumulate); scores
 *    are scaled by scale*log2(e) in f32 and the online softmax uses exp2
 *    (running max and sum per row in f32 registers). Keys past a row's
 *    position (causal), before its window, or past the cache are masked;
 *    a warp skips tiles wholly past its last row. Head dims 64, 80, 96,
 *    128; GQA by reading kv head h / (H / KV).
 *
 *  - attention_dec_fwd_kernel<KT> (decode and the fp32 mode; f32 or bf16
 *    K/V): split-K flash decoding in f32. A block of 4 warps owns one
 *    (query, head, key split); the warps take keys in turn, each lane a
 *    slice of the head dim, with an online softmax per warp; the warps
 *    merge in shared memory, and when the keys were split a second kernel
 *    (attention_combine_fwd_kernel) merges the splits' (max, sum, acc)
 *    partials.
 *
 * A row whose keys are all masked in a tile keeps its running max at
 * -inf; exponents are then taken against 0 so no inf - inf appears. */
#include "ops/cuda/common.cuh"
#include "ops/cuda/mma.cuh"

struct attn_args {
    float *out;
    const float *q;
    const void *k, *v;             /* f32 or bf16 */
    int64_t M, pos0, window;
    int H, KV, hd;
    float scale_log2;              /* scale * log2(e): softmax in base 2 */
    int64_t q_row, kv_row;         /* elements per row: H*hd, KV*hd */
    int64_t q_bstride, kv_bstride; /* elements per sequence of a batch */
};

/* ------------------------------------------------------------------ */
/* bf16 tensor-core prefill                                            */

#define TC_BM 128
#define TC_BN 64
#define TC_WARPS 8
#define TC_THREADS (TC_WARPS * 32)

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int bytes) {
    uint32_t sa = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

/* Dynamic shared memory of attention_fwd_kernel<HD>: two stages of a bf16
 * K tile and a bf16 V tile, rows padded by 8 elements (conflict-free
 * ldmatrix). */
static constexpr size_t tc_smem_bytes(int hd) { return (size_t)2 * 2 * TC_BN * (hd + 8) * 2; }

template <int HD>
__global__ void __launch_bounds__(TC_THREADS, HD <= 64 ? 2 : 1) attention_fwd_kernel(struct attn_args a) {
    constexpr int KS = HD + 8; /* smem row stride (bf16) */
    constexpr int C8 = HD / 8; /* 16-byte chunks per row */
    extern __shared__ __align__(16) unsigned char tc_smem[];
    __nv_bfloat16 *sm = (__nv_bfloat16 *)tc_smem; /* stage s: K at s*2*BN*KS, V after it */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int64_t m0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * TC_BM; /* longest tiles first */
    const int h = blockIdx.y, kvh = h / (a.H / a.KV);
    const int64_t b = blockIdx.z, M = a.M;
    const float *q = a.q + b * a.q_bstride + (int64_t)h * HD;
    const __nv_bfloat16 *kb = (const __nv_bfloat16 *)a.k + b * a.kv_bstride + (int64_t)kvh * HD;
    const __nv_bfloat16 *vb = (const __nv_bfloat16 *)a.v + b * a.kv_bstride + (int64_t)kvh * HD;
    float *out = a.out + b * a.q_bstride + (int64_t)h * HD;

    const int64_t last_m = LMC_MIN(m0 + TC_BM, M) - 1;
    const int64_t p_lo = a.pos0 + m0, p_hi = a.pos0 + last_m;
    const int64_t k_lo = a.window > 0 ? LMC_MAX((int64_t)0, p_lo - a.window + 1) : 0;
    const int64_t n_first = k_lo / TC_BN * TC_BN;

    /* K/V tile at key n0 into stage st, asynchronously; keys past p_hi are
     * zero-filled (and masked) */
    auto issue = [&](int64_t n0, int st) {
        __nv_bfloat16 *Kd = sm + st * 2 * TC_BN * KS, *Vd = Kd + TC_BN * KS;
        for (int idx = tid; idx < TC_BN * C8; idx += TC_THREADS) {
            int r = idx / C8, c8 = idx % C8;
            bool ok = n0 + r <= p_hi;
            int64_t off = ok ? (n0 + r) * a.kv_row + c8 * 8 : 0;
            cp_async16(Kd + r * KS + c8 * 8, kb + off, ok ? 16 : 0);
            cp_async16(Vd + r * KS + c8 * 8, vb + off, ok ? 16 : 0);
        }
        cp_async_commit();
    };

    issue(n_first, 0); /* the first tile's copy overlaps the Q load */

    /* Q fragments straight from f32 q (rows past M are zero); the softmax
     * scale is applied to S in f32, so bf16 rounds only q itself */
    const int64_t r0 = m0 + warp * 16 + g, r1 = r0 + 8;
    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++) {
        const int c = kc * 16 + t * 2;
        float2 z = make_float2(0.f, 0.f);
        float2 x0 = r0 < M ? *(const float2 *)(q + r0 * a.q_row + c) : z;
        float2 x1 = r1 < M ? *(const float2 *)(q + r1 * a.q_row + c) : z;
        float2 x2 = r0 < M ? *(const float2 *)(q + r0 * a.q_row + c + 8) : z;
        float2 x3 = r1 < M ? *(const float2 *)(q + r1 * a.q_row + c + 8) : z;
        qf[kc][0] = lmc_pack_bf16(x0.x, x0.y);
        qf[kc][1] = lmc_pack_bf16(x1.x, x1.y);
        qf[kc][2] = lmc_pack_bf16(x2.x, x2.y);
        qf[kc][3] = lmc_pack_bf16(x3.x, x3.y);
    }

    /* positions of this thread's two rows (rows past M act as the last row) */
    int64_t pr[2];
    pr[0] = a.pos0 + LMC_MIN(r0, last_m);
    pr[1] = a.pos0 + LMC_MIN(r1, last_m);
    const int64_t w_first = a.pos0 + LMC_MIN(m0 + warp * 16, last_m);
    const int64_t w_last = a.pos0 + LMC_MIN(m0 + warp * 16 + 15, last_m);

    float o[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};

    /* ldmatrix lane addressing: matrix mat = lane/8, its row lane%8 */
    const int lm = lane >> 3, lr = lane & 7;

    int st = 0;
    for (int64_t n0 = n_first; n0 <= p_hi; n0 += TC_BN, st ^= 1) {
        cp_async_wait_all();
        __syncthreads(); /* tile n0 landed and is visible; stage st^1 is free */
        if (n0 + TC_BN <= p_hi) issue(n0 + TC_BN, st ^ 1); /* lands while this tile computes */

        /* this warp's rows see keys (w_first - window, w_last]: skip others */
        if (n0 > w_last || (a.window > 0 && n0 + TC_BN - 1 <= w_first - a.window)) continue;
        const __nv_bfloat16 *Ks = sm + st * 2 * TC_BN * KS, *Vs = Ks + TC_BN * KS;

        float s[TC_BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < TC_BN / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < HD / 16; kc++)
#pragma unroll
            for (int np = 0; np < TC_BN / 16; np++) {
                uint32_t bf[4];
                lmc_ldsm_x4(bf, Ks + (np * 16 + (lm >> 1) * 8 + lr) * KS + kc * 16 + (lm & 1) * 8);
                lmc_mma_bf16(s[2 * np], qf[kc], bf[0], bf[1]);
                lmc_mma_bf16(s[2 * np + 1], qf[kc], bf[2], bf[3]);
            }

#pragma unroll
        for (int nt = 0; nt < TC_BN / 8; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[nt][i] *= a.scale_log2;

        bool need_mask = n0 + TC_BN - 1 > w_first || (a.window > 0 && n0 <= w_last - a.window);
        if (need_mask) {
#pragma unroll
            for (int nt = 0; nt < TC_BN / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int64_t key = n0 + nt * 8 + t * 2 + (i & 1), p = pr[i >> 1];
                    bool ok = key <= p && (a.window <= 0 || key > p - a.window);
                    if (!ok) s[nt][i] = -INFINITY;
                }
        }

        /* online softmax, rows g and g+8 */
        lmc_online_softmax(s, mrow, lrow, o);

        /* O += P V: the S accumulators are already P's A-fragment layout */
#pragma unroll
        for (int kc = 0; kc < TC_BN / 16; kc++) {
            uint32_t pa[4];
            lmc_c2a(pa, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                uint32_t bf[4];
                lmc_ldsm_x4_t(bf, Vs + (kc * 16 + (lm & 1) * 8 + lr) * KS + dp * 16 + (lm >> 1) * 8);
                lmc_mma_bf16(o[2 * dp], pa, bf[0], bf[1]);
                lmc_mma_bf16(o[2 * dp + 1], pa, bf[2], bf[3]);
            }
        }
    }

#pragma unroll
    for (int e = 0; e < 2; e++) {
        float l = lrow[e];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.f ? 1.0f / l : 0.f;
        int64_t row = e ? r1 : r0;
        if (row < M) {
            float *orow = out + row * a.q_row;
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++)
                *(float2 *)(orow + dt * 8 + t * 2) = make_float2(o[dt][2 * e] * inv, o[dt][2 * e + 1] * inv);
        }
    }
}

/* ------------------------------------------------------------------ */
/* f32 split-K (flash-decoding) kernel                                 */

#define DEC_WARPS 4
#define DEC_MAXJ 8 /* head_dim <= 256 */
#define DEC_UNROLL 4

__device__ __forceinline__ float ld_kv(const float *p) { return *p; }
__device__ __forceinline__ float ld_kv(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

template <typename KT>
__global__ void __launch_bounds__(DEC_WARPS * 32)
attention_dec_fwd_kernel(struct attn_args a, int64_t kps, int splits, float *part) {
    extern __shared__ float dsh[]; /* q (hd), then per warp: m, l, acc (hd) */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, hd = a.hd;
    const int64_t mb = blockIdx.x, b = mb / a.M, m = mb % a.M;
    const int h = blockIdx.y, split = blockIdx.z, kvh = h / (a.H / a.KV);
    const float *q = a.q + b * a.q_bstride + m * a.q_row + (int64_t)h * hd;
    const KT *kb = (const KT *)a.k + b * a.kv_bstride + (int64_t)kvh * hd;
    const KT *vb = (const KT *)a.v + b * a.kv_bstride + (int64_t)kvh * hd;
    float *qs = dsh, *wsh = dsh + hd + warp * (hd + 2);

    const int64_t p = a.pos0 + m;
    const int64_t lo = a.window > 0 ? LMC_MAX((int64_t)0, p - a.window + 1) : 0;
    const int64_t k0 = lo + split * kps, k1 = LMC_MIN(p + 1, k0 + kps); /* [k0, k1) */

    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[d] * a.scale_log2;
    __syncthreads();
    float qd[DEC_MAXJ], acc[DEC_MAXJ];
#pragma unroll
    for (int j = 0; j < DEC_MAXJ; j++) {
        int d = lane + 32 * j;
        qd[j] = d < hd ? qs[d] : 0.f;
        acc[j] = 0.f;
    }
    float mrun = -INFINITY, lrun = 0.f;
    for (int64_t kk = k0 + warp * DEC_UNROLL; kk < k1; kk += DEC_WARPS * DEC_UNROLL) {
        float sc[DEC_UNROLL];
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++) {
            int64_t key = kk + u;
            float part_s = 0.f;
            if (key < k1) {
                const KT *kr = kb + key * a.kv_row;
#pragma unroll
                for (int j = 0; j < DEC_MAXJ; j++) {
                    int d = lane + 32 * j;
                    if (d < hd) part_s = fmaf(qd[j], ld_kv(kr + d), part_s);
                }
            }
            sc[u] = part_s;
        }
        float mx = -INFINITY;
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++) {
            sc[u] = lmc_warp_sum(sc[u]);
            if (kk + u >= k1) sc[u] = -INFINITY;
            mx = fmaxf(mx, sc[u]);
        }
        float mnew = fmaxf(mrun, mx); /* finite: key kk is always valid */
        float corr = exp2f(mrun - mnew);
        mrun = mnew;
        lrun *= corr;
#pragma unroll
        for (int j = 0; j < DEC_MAXJ; j++) acc[j] *= corr;
#pragma unroll
        for (int u = 0; u < DEC_UNROLL; u++) {
            if (kk + u >= k1) break;
            float pu = exp2f(sc[u] - mnew);
            lrun += pu;
            const KT *vr = vb + (kk + u) * a.kv_row;
#pragma unroll
            for (int j = 0; j < DEC_MAXJ; j++) {
                int d = lane + 32 * j;
                if (d < hd) acc[j] = fmaf(pu, ld_kv(vr + d), acc[j]);
            }
        }
    }
    if (lane == 0) wsh[0] = mrun, wsh[1] = lrun;
#pragma unroll
    for (int j = 0; j < DEC_MAXJ; j++) {
        int d = lane + 32 * j;
        if (d < hd) wsh[2 + d] = acc[j];
    }
    __syncthreads();
    /* merge the warps */
    float mall = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) mall = fmaxf(mall, dsh[hd + w * (hd + 2)]);
    float muse = mall == -INFINITY ? 0.f : mall, lall = 0.f;
    float wt[DEC_WARPS];
    for (int w = 0; w < DEC_WARPS; w++) {
        const float *ws = dsh + hd + w * (hd + 2);
        wt[w] = exp2f(ws[0] - muse);
        lall += ws[1] * wt[w];
    }
    int64_t row = b * a.M + m;
    float *dst = splits == 1 ? a.out + b * a.q_bstride + m * a.q_row + (int64_t)h * hd
                             : part + ((row * a.H + h) * splits + split) * (int64_t)(hd + 2);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float s = 0.f;
        for (int w = 0; w < DEC_WARPS; w++) s += dsh[hd + w * (hd + 2) + 2 + d] * wt[w];
        if (splits == 1) dst[d] = lall > 0.f ? s / lall : 0.f;
        else dst[2 + d] = s;
    }
    if (splits > 1 && threadIdx.x == 0) dst[0] = mall, dst[1] = lall;
}

__global__ void attention_combine_fwd_kernel(struct attn_args a, int splits, const float *part) {
    const int64_t row = blockIdx.x, b = row / a.M, m = row % a.M;
    const int h = blockIdx.y, hd = a.hd;
    const float *pp = part + (row * a.H + h) * splits * (int64_t)(hd + 2);
    float mall = -INFINITY;
    for (int s = 0; s < splits; s++) mall = fmaxf(mall, pp[s * (hd + 2)]);
    float muse = mall == -INFINITY ? 0.f : mall, lall = 0.f;
    for (int s = 0; s < splits; s++) lall += pp[s * (hd + 2) + 1] * exp2f(pp[s * (hd + 2)] - muse);
    float *dst = a.out + b * a.q_bstride + m * a.q_row + (int64_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < splits; s++)
            acc += pp[s * (hd + 2) + 2 + d] * exp2f(pp[s * (hd + 2)] - muse);
        dst[d] = lall > 0.f ? acc / lall : 0.f;
    }
}

/* ------------------------------------------------------------------ */

static bool tc_ok(const struct attn_args *a, enum lmc_dtype kv_dtype) {
    if (kv_dtype != LMC_DTYPE_BF16) return false;
    if (a->hd != 64 && a->hd != 80 && a->hd != 96 && a->hd != 128) return false;
    uintptr_t al = (uintptr_t)a->q | (uintptr_t)a->k | (uintptr_t)a->v | (uintptr_t)a->out;
    return al % 16 == 0 && a->q_bstride % 4 == 0 && a->kv_bstride % 8 == 0;
}

static void launch_tc(struct lmc_cuda_ctx *c, const struct attn_args *a, int64_t batch) {
    dim3 grid((unsigned)((a->M + TC_BM - 1) / TC_BM), (unsigned)a->H, (unsigned)batch);
#define TC_LAUNCH(HD)                                                                         \
    do {                                                                                      \
        LMC_CUDA_CHECK(cudaFuncSetAttribute(attention_fwd_kernel<HD>,                         \
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,      \
                                            (int)tc_smem_bytes(HD)));                         \
        attention_fwd_kernel<HD><<<grid, TC_THREADS, tc_smem_bytes(HD), c->stream>>>(*a);     \
    } while (0)
    switch (a->hd) {
    case 64: TC_LAUNCH(64); break;
    case 80: TC_LAUNCH(80); break;
    case 96: TC_LAUNCH(96); break;
    default: TC_LAUNCH(128); break;
    }
#undef TC_LAUNCH
    LMC_CUDA_LAUNCH_CHECK();
}

static void launch_dec(struct lmc_cuda_ctx *c, const struct attn_args *a, int64_t batch,
                       enum lmc_dtype kv_dtype) {
    LMC_ASSERT(a->hd <= 32 * DEC_MAXJ);
    int64_t n_max = a->pos0 + a->M; /* keys of the last query */
    if (a->window > 0) n_max = LMC_MIN(n_max, a->window);
    /* enough blocks for ~8 per SM, at least 32 keys (2 rounds of the 4
     * warps' 4-key steps) per split: short serial chains per warp */
    int64_t rows = batch * a->M * a->H;
    /* the split count depends on one sequence's shape only, so a batched
     * call computes exactly what per-sequence calls do */
    int64_t want = (8 * (int64_t)c->n_sm + a->M * a->H - 1) / (a->M * a->H);
    int64_t splits = LMC_MAX((int64_t)1, LMC_MIN(want, (n_max + 31) / 32));
    int64_t kps = (n_max + splits - 1) / splits;
    splits = (n_max + kps - 1) / kps;
    LMC_ASSERT(splits <= 65535 && batch * a->M <= 0x7fffffff);
    if (splits > 1)
        lmc_cuda_reserve(c, &c->attn_part, &c->attn_part_bytes,
                         (size_t)(rows * splits * (a->hd + 2)) * sizeof(float));
    dim3 grid((unsigned)(batch * a->M), (unsigned)a->H, (unsigned)splits);
    size_t shm = (size_t)(a->hd + DEC_WARPS * (a->hd + 2)) * sizeof(float);
    if (kv_dtype == LMC_DTYPE_BF16)
        attention_dec_fwd_kernel<__nv_bfloat16><<<grid, DEC_WARPS * 32, shm, c->stream>>>(
            *a, kps, (int)splits, (float *)c->attn_part);
    else
        attention_dec_fwd_kernel<float><<<grid, DEC_WARPS * 32, shm, c->stream>>>(
            *a, kps, (int)splits, (float *)c->attn_part);
    LMC_CUDA_LAUNCH_CHECK();
    if (splits > 1) {
        dim3 g2((unsigned)(batch * a->M), (unsigned)a->H);
        attention_combine_fwd_kernel<<<g2, 128, 0, c->stream>>>(*a, (int)splits,
                                                               (const float *)c->attn_part);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

extern "C" enum lmc_cuda_attn_kind lmc_cuda_attention_ex(
    void *ctx, float *out, const float *q, const void *k, const void *v, enum lmc_dtype kv_dtype,
    int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
    int64_t window, int64_t batch, int64_t q_bstride, int64_t kv_bstride,
    enum lmc_cuda_attn_kind kind) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0 && pos0 >= 0);
    LMC_ASSERT(kv_dtype == LMC_DTYPE_F32 || kv_dtype == LMC_DTYPE_BF16);
    if (M <= 0 || n_heads <= 0 || hd <= 0 || batch <= 0) return kind;
    LMC_ASSERT(n_heads <= 65535);
    struct attn_args a;
    a.out = out, a.q = q, a.k = k, a.v = v;
    a.M = M, a.pos0 = pos0, a.window = window;
    a.H = (int)n_heads, a.KV = (int)n_kv, a.hd = (int)hd;
    a.scale_log2 = scale * 1.4426950408889634f;
    a.q_row = n_heads * hd, a.kv_row = n_kv * hd;
    a.q_bstride = q_bstride, a.kv_bstride = kv_bstride;
    if (kind == LMC_CUDA_ATTN_AUTO)
        kind = !c->attn_fp32 && M >= 16 && tc_ok(&a, kv_dtype) ? LMC_CUDA_ATTN_TC : LMC_CUDA_ATTN_F32;
    if (kind == LMC_CUDA_ATTN_TC && !tc_ok(&a, kv_dtype)) kind = LMC_CUDA_ATTN_F32;
    if (kind == LMC_CUDA_ATTN_TC) launch_tc(c, &a, batch);
    else launch_dec(c, &a, batch, kv_dtype);
    return kind;
}

/* The table entry: k and v point at the cache in the backend's kv_dtype. */
extern "C" void lmc_cuda_attention(void *ctx, float *out, const float *q, const float *k,
                                   const float *v, int64_t M, int64_t pos0, int64_t n_heads,
                                   int64_t n_kv, int64_t hd, float scale, int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    lmc_cuda_attention_ex(ctx, out, q, k, v, c->kv_dtype, M, pos0, n_heads, n_kv, hd, scale,
                          window, 1, 0, 0, LMC_CUDA_ATTN_AUTO);
}
