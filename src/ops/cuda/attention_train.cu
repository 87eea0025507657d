/* attention_train.cu — causal attention for training on the GPU, forward
 * (attention_train: out and the log-sum-exp lse) and backward
 * (attention_bwd: dq, dk, dv), FlashAttention-2 style: the T x T scores are
 * never stored; the backward recomputes P = exp(scale q.k - lse) tile by
 * tile. Shapes in backend.h / attention_train.h. Two precisions, picked by
 * ctx->train_bf16:
 *
 *  fp32 (checking mode, any head dim <= 256; also the fallback of the bf16
 *  mode for other head dims or unaligned pointers), SIMT, 256 threads:
 *   - attn_train_fwd_f32_kernel: a block owns 32 queries of one (sequence,
 *     head); 8 warps x 4 query rows. Q stays in shared memory; K and V tiles
 *     of 32 keys are staged in shared memory (K rows padded to an odd stride:
 *     lane j reads key j conflict-free). Lane j scores key j for the warp's
 *     4 rows; online softmax per row (running max and sum, expf); P V with
 *     p broadcast by shuffles, lane owning head-dim columns lane + 32c.
 *   - attn_train_bwd_d_kernel: D = rowsum(dout * out) per (row, head), one
 *     warp each (into the ctx's attn_part scratch).
 *   - attn_train_bwd_dkdv_f32_kernel: a block owns 32 keys of one (sequence,
 *     kv head) and walks the query heads of its GQA group and every query
 *     tile (32) that attends to them: S and dP (lane = key, warp = 4 query
 *     rows), P = exp(scale S - lse), dS = P (dP - D) into shared memory, then
 *     dV += P^T dO and dK += dS^T Q with warp = 4 keys, lane = columns. dK, dV
 *     are owned by the block: no atomics.
 *   - attn_train_bwd_dq_f32_kernel: a block owns 32 queries of one head and
 *     walks their key tiles as the forward does, recomputing S, dP, dS and
 *     accumulating dQ += dS K in registers: deterministic, no atomics.
 *
 *  bf16 (train_bf16, head dims 64, 80, 96, 128), 4 warps = 128 threads,
 *  mma.sync.m16n8k16 (bf16 in, f32 accumulate), fragments as in
 *  attention.cu; f32 tiles are rounded to bf16 as they are copied to shared
 *  memory (rows padded by 8 bf16: conflict-free ldmatrix):
 *   - attn_train_fwd_bf16_kernel: 64 queries per block (16 per warp, Q as
 *     A-fragments in registers), K/V tiles of 64 keys; S = Q K^T and
 *     O += P V on tensor cores, online softmax in f32 base 2; lse written
 *     in natural log.
 *   - attn_train_bwd_dkdv_bf16_kernel: 64 keys per block (16 per warp, its
 *     own dK, dV accumulators), query tiles of 32: S^T = K Q^T and
 *     dP^T = V dO^T (A from K/V via ldmatrix, B from Q/dO via ldmatrix),
 *     P^T, dS^T in f32 registers, then dV += P^T dO and dK += dS^T Q with
 *     the accumulators reused as A-fragments and Q/dO via ldmatrix.trans.
 *   - attn_train_bwd_dq_bf16_kernel: 64 queries per block, key tiles of 64:
 *     S = Q K^T, dP = dO V^T, dS, dQ += dS K (K via ldmatrix.trans).
 *
 * Masks: key j is attended by query i iff j <= i and (window <= 0 or
 * j > i - window); rows and keys past T are zero-filled and masked. A row
 * whose keys are all masked in a tile keeps its running max at -inf and
 * exponents are taken against 0, so no inf - inf appears; masked
 * probabilities are set to 0 directly in the backward. The backward's D
 * buffer lives in ctx->attn_part (grown with lmc_cuda_reserve). */
#include "ops/cuda/common.cuh"
#include "ops/cuda/attention_train.h"
#include "ops/cuda/mma.cuh"
#include "ops/cuda/ops_cuda.h"

#define AT_LOG2E 1.4426950408889634f
#define AT_LN2 0.6931471805599453f

struct at_args {
    float *out, *lse;                  /* forward outputs */
    float *dq, *dk, *dv;               /* backward outputs */
    const float *q, *k, *v;
    const float *dout, *lse_in, *D;    /* backward inputs; D (B*T, H) */
    const float *out_in;               /* backward input: the forward's out (for D) */
    int64_t T, window;
    int H, KV, hd;
    float scale;
    const int64_t *seg; /* device (offset, length) pairs, one a blockIdx.z; NULL: B sequences of T */
};

/* The sequence of this block (blockIdx.z): its first row and its length. */
struct at_seq {
    int64_t base, T;
};
static __device__ __forceinline__ at_seq at_seq_of(const struct at_args &a) {
    at_seq r;
    if (a.seg) {
        r.base = a.seg[2 * blockIdx.z], r.T = a.seg[2 * blockIdx.z + 1];
    } else {
        r.base = (int64_t)blockIdx.z * a.T, r.T = a.T;
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* fp32 SIMT kernels                                                   */

#define F_BM 32 /* queries per tile */
#define F_BN 32 /* keys per tile */
#define F_WARPS 8
#define F_RPW (F_BM / F_WARPS) /* rows per warp: 4 */
#define F_THREADS (F_WARPS * 32)
#define F_MAXHD 256

/* rows x hd floats of src (row stride `stride`) into dst (row stride ds);
 * rows >= valid are zero */
static __device__ __forceinline__ void f32_tile_load(float *dst, int ds, const float *src,
                                                     int64_t stride, int rows, int valid, int hd) {
    for (int idx = threadIdx.x; idx < rows * hd; idx += blockDim.x) {
        int r = idx / hd, d = idx - r * hd;
        dst[r * ds + d] = r < valid ? src[(int64_t)r * stride + d] : 0.f;
    }
}

static __device__ __forceinline__ bool at_attends(int64_t i, int64_t j, int64_t T, int64_t window) {
    return i < T && j <= i && (window <= 0 || j > i - window);
}

/* NC: 32-column chunks of the head dim held per lane (hd <= 32 * NC) */
template <int NC>
__global__ void __launch_bounds__(F_THREADS) attn_train_fwd_f32_kernel(struct at_args a) {
    extern __shared__ float fsm[];
    const int hd = a.hd, KS = hd | 1, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *Qs = fsm, *Ks = Qs + F_BM * hd, *Vs = Ks + F_BN * KS;
    const at_seq sq = at_seq_of(a);
    const int64_t T = sq.T, m0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * F_BM; /* longest first */
    const int h = blockIdx.y, kvh = h / (a.H / a.KV);
    const int64_t b0 = sq.base, q_row = (int64_t)a.H * hd, kv_row = (int64_t)a.KV * hd;
    if (m0 >= T) return; /* a tile past its segment (several sequences in one grid) */
    const float *kb = a.k + b0 * kv_row + (int64_t)kvh * hd;
    const float *vb = a.v + b0 * kv_row + (int64_t)kvh * hd;
    const int64_t last_m = LMC_MIN(m0 + F_BM, T) - 1;
    const int64_t lo = a.window > 0 ? LMC_MAX((int64_t)0, m0 - a.window + 1) : 0;

    f32_tile_load(Qs, hd, a.q + (b0 + m0) * q_row + (int64_t)h * hd, q_row, F_BM,
                  (int)(last_m - m0 + 1), hd);

    float o[F_RPW][NC], mrow[F_RPW], lsum[F_RPW];
#pragma unroll
    for (int r = 0; r < F_RPW; r++) {
        mrow[r] = -INFINITY, lsum[r] = 0.f;
#pragma unroll
        for (int c = 0; c < NC; c++) o[r][c] = 0.f;
    }
    const float *qr = Qs + warp * F_RPW * hd;
    for (int64_t n0 = lo / F_BN * F_BN; n0 <= last_m; n0 += F_BN) {
        __syncthreads(); /* the previous tile is consumed */
        int nv = (int)LMC_MIN((int64_t)F_BN, last_m - n0 + 1);
        f32_tile_load(Ks, KS, kb + n0 * kv_row, kv_row, F_BN, nv, hd);
        f32_tile_load(Vs, hd, vb + n0 * kv_row, kv_row, F_BN, nv, hd);
        __syncthreads();

        float s[F_RPW];
#pragma unroll
        for (int r = 0; r < F_RPW; r++) s[r] = 0.f;
        const float *kr = Ks + lane * KS;
        for (int d = 0; d < hd; d++) {
            float kd = kr[d];
#pragma unroll
            for (int r = 0; r < F_RPW; r++) s[r] = fmaf(qr[r * hd + d], kd, s[r]);
        }
        const int64_t key = n0 + lane;
        float p[F_RPW];
#pragma unroll
        for (int r = 0; r < F_RPW; r++) {
            int64_t i = m0 + warp * F_RPW + r;
            float sv = at_attends(i, key, T, a.window) ? a.scale * s[r] : -INFINITY;
            float mnew = fmaxf(mrow[r], lmc_warp_max(sv));
            float muse = mnew == -INFINITY ? 0.f : mnew;
            float corr = expf(mrow[r] - muse);
            mrow[r] = mnew;
            p[r] = expf(sv - muse);
            lsum[r] = lsum[r] * corr + p[r]; /* per-lane partial sum */
#pragma unroll
            for (int c = 0; c < NC; c++) o[r][c] *= corr;
        }
        for (int j = 0; j < F_BN; j++) {
            float vj[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                vj[c] = d < hd ? Vs[j * hd + d] : 0.f;
            }
#pragma unroll
            for (int r = 0; r < F_RPW; r++) {
                float pj = __shfl_sync(0xffffffffu, p[r], j);
#pragma unroll
                for (int c = 0; c < NC; c++) o[r][c] = fmaf(pj, vj[c], o[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < F_RPW; r++) {
        float l = lmc_warp_sum(lsum[r]);
        int64_t i = m0 + warp * F_RPW + r;
        if (i < T) { /* l >= 1: the row's own key is attended */
            float inv = 1.0f / l;
            float *orow = a.out + (b0 + i) * q_row + (int64_t)h * hd;
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                if (d < hd) orow[d] = o[r][c] * inv;
            }
            if (lane == 0) a.lse[(b0 + i) * a.H + h] = mrow[r] + logf(l);
        }
    }
}

/* D[(row, head)] = dout . out over the head dim; one warp per pair */
__global__ void attn_train_bwd_d_kernel(float *D, const float *dout, const float *out,
                                        int64_t pairs, int hd) {
    const int lane = threadIdx.x & 31;
    const int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < pairs; w += nw) {
        const float *x = dout + w * hd, *y = out + w * hd;
        float s = 0.f;
        for (int d = lane; d < hd; d += 32) s = fmaf(x[d], y[d], s);
        s = lmc_warp_sum(s);
        if (lane == 0) D[w] = s;
    }
}

template <int NC>
__global__ void __launch_bounds__(F_THREADS) attn_train_bwd_dkdv_f32_kernel(struct at_args a) {
    extern __shared__ float fsm[];
    const int hd = a.hd, KS = hd | 1, PS = F_BN + 1;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float *Ks = fsm, *Vs = Ks + F_BN * KS, *Qs = Vs + F_BN * KS, *dOs = Qs + F_BM * hd;
    float *Ps = dOs + F_BM * hd, *dSs = Ps + F_BM * PS, *ls = dSs + F_BM * PS, *Ds = ls + F_BM;
    const at_seq sq = at_seq_of(a);
    const int64_t T = sq.T, n0 = (int64_t)blockIdx.x * F_BN; /* early keys: most queries */
    const int g = blockIdx.y, group = a.H / a.KV;
    const int64_t b0 = sq.base, q_row = (int64_t)a.H * hd, kv_row = (int64_t)a.KV * hd;
    if (n0 >= T) return; /* a tile past its segment (several sequences in one grid) */
    const int nv = (int)LMC_MIN((int64_t)F_BN, T - n0);
    f32_tile_load(Ks, KS, a.k + (b0 + n0) * kv_row + (int64_t)g * hd, kv_row, F_BN, nv, hd);
    f32_tile_load(Vs, KS, a.v + (b0 + n0) * kv_row + (int64_t)g * hd, kv_row, F_BN, nv, hd);

    float dk[F_RPW][NC], dv[F_RPW][NC];
#pragma unroll
    for (int r = 0; r < F_RPW; r++)
#pragma unroll
        for (int c = 0; c < NC; c++) dk[r][c] = dv[r][c] = 0.f;

    /* queries that see keys n0 .. n0+F_BN-1 */
    const int64_t qhi = a.window > 0 ? LMC_MIN(T - 1, n0 + F_BN - 1 + a.window - 1) : T - 1;
    const int64_t key = n0 + lane;
    const float *kr = Ks + lane * KS, *vr = Vs + lane * KS;
    for (int hh = 0; hh < group; hh++) {
        const int h = g * group + hh;
        const float *q = a.q + b0 * q_row + (int64_t)h * hd;
        const float *dout = a.dout + b0 * q_row + (int64_t)h * hd;
        const float *lse = a.lse_in + b0 * a.H + h, *D = a.D + b0 * a.H + h;
        for (int64_t m0 = n0 / F_BM * F_BM; m0 <= qhi; m0 += F_BM) {
            __syncthreads(); /* Ps, dSs, Qs, dOs of the previous tile are consumed */
            const int mv = (int)LMC_MIN((int64_t)F_BM, T - m0);
            f32_tile_load(Qs, hd, q + m0 * q_row, q_row, F_BM, mv, hd);
            f32_tile_load(dOs, hd, dout + m0 * q_row, q_row, F_BM, mv, hd);
            if (tid < F_BM) {
                ls[tid] = tid < mv ? lse[(m0 + tid) * a.H] : 0.f;
                Ds[tid] = tid < mv ? D[(m0 + tid) * a.H] : 0.f;
            }
            __syncthreads();

            /* S, dP: lane = key, warp = 4 query rows */
            float s[F_RPW], dp[F_RPW];
#pragma unroll
            for (int r = 0; r < F_RPW; r++) s[r] = dp[r] = 0.f;
            const float *qr = Qs + warp * F_RPW * hd, *orr = dOs + warp * F_RPW * hd;
            for (int d = 0; d < hd; d++) {
                float kd = kr[d], vd = vr[d];
#pragma unroll
                for (int r = 0; r < F_RPW; r++) {
                    s[r] = fmaf(qr[r * hd + d], kd, s[r]);
                    dp[r] = fmaf(orr[r * hd + d], vd, dp[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < F_RPW; r++) {
                int il = warp * F_RPW + r;
                float p = at_attends(m0 + il, key, T, a.window) ? expf(a.scale * s[r] - ls[il])
                                                                 : 0.f;
                Ps[il * PS + lane] = p;
                dSs[il * PS + lane] = p * (dp[r] - Ds[il]);
            }
            __syncthreads();

            /* dV += P^T dO, dK += dS^T Q: warp = 4 keys, lane = columns */
            for (int il = 0; il < F_BM; il++) {
                float qv[NC], ov[NC];
#pragma unroll
                for (int c = 0; c < NC; c++) {
                    int d = lane + 32 * c;
                    qv[c] = d < hd ? Qs[il * hd + d] : 0.f;
                    ov[c] = d < hd ? dOs[il * hd + d] : 0.f;
                }
#pragma unroll
                for (int r = 0; r < F_RPW; r++) {
                    float pv = Ps[il * PS + warp * F_RPW + r], sv = dSs[il * PS + warp * F_RPW + r];
#pragma unroll
                    for (int c = 0; c < NC; c++) {
                        dv[r][c] = fmaf(pv, ov[c], dv[r][c]);
                        dk[r][c] = fmaf(sv, qv[c], dk[r][c]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < F_RPW; r++) {
        int64_t j = n0 + warp * F_RPW + r;
        if (j >= T) continue;
        float *dkr = a.dk + (b0 + j) * kv_row + (int64_t)g * hd;
        float *dvr = a.dv + (b0 + j) * kv_row + (int64_t)g * hd;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < hd) dkr[d] = a.scale * dk[r][c], dvr[d] = dv[r][c];
        }
    }
}

template <int NC>
__global__ void __launch_bounds__(F_THREADS) attn_train_bwd_dq_f32_kernel(struct at_args a) {
    extern __shared__ float fsm[];
    const int hd = a.hd, KS = hd | 1, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *Qs = fsm, *dOs = Qs + F_BM * hd, *Ks = dOs + F_BM * hd, *Vs = Ks + F_BN * KS;
    const at_seq sq = at_seq_of(a);
    const int64_t T = sq.T, m0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * F_BM;
    const int h = blockIdx.y, kvh = h / (a.H / a.KV);
    const int64_t b0 = sq.base, q_row = (int64_t)a.H * hd, kv_row = (int64_t)a.KV * hd;
    if (m0 >= T) return; /* a tile past its segment (several sequences in one grid) */
    const float *kb = a.k + b0 * kv_row + (int64_t)kvh * hd;
    const float *vb = a.v + b0 * kv_row + (int64_t)kvh * hd;
    const int64_t last_m = LMC_MIN(m0 + F_BM, T) - 1;
    const int64_t lo = a.window > 0 ? LMC_MAX((int64_t)0, m0 - a.window + 1) : 0;
    const int mv = (int)(last_m - m0 + 1);
    f32_tile_load(Qs, hd, a.q + (b0 + m0) * q_row + (int64_t)h * hd, q_row, F_BM, mv, hd);
    f32_tile_load(dOs, hd, a.dout + (b0 + m0) * q_row + (int64_t)h * hd, q_row, F_BM, mv, hd);

    float dq[F_RPW][NC], lr[F_RPW], Dr[F_RPW];
#pragma unroll
    for (int r = 0; r < F_RPW; r++) {
        int64_t i = m0 + warp * F_RPW + r;
        lr[r] = i < T ? a.lse_in[(b0 + i) * a.H + h] : 0.f;
        Dr[r] = i < T ? a.D[(b0 + i) * a.H + h] : 0.f;
#pragma unroll
        for (int c = 0; c < NC; c++) dq[r][c] = 0.f;
    }
    const float *qr = Qs + warp * F_RPW * hd, *orr = dOs + warp * F_RPW * hd;
    const float *kr = Ks + lane * KS, *vr = Vs + lane * KS;
    for (int64_t n0 = lo / F_BN * F_BN; n0 <= last_m; n0 += F_BN) {
        __syncthreads();
        int nv = (int)LMC_MIN((int64_t)F_BN, last_m - n0 + 1);
        f32_tile_load(Ks, KS, kb + n0 * kv_row, kv_row, F_BN, nv, hd);
        f32_tile_load(Vs, KS, vb + n0 * kv_row, kv_row, F_BN, nv, hd);
        __syncthreads();

        float s[F_RPW], dp[F_RPW];
#pragma unroll
        for (int r = 0; r < F_RPW; r++) s[r] = dp[r] = 0.f;
        for (int d = 0; d < hd; d++) {
            float kd = kr[d], vd = vr[d];
#pragma unroll
            for (int r = 0; r < F_RPW; r++) {
                s[r] = fmaf(qr[r * hd + d], kd, s[r]);
                dp[r] = fmaf(orr[r * hd + d], vd, dp[r]);
            }
        }
        const int64_t key = n0 + lane;
        float ds[F_RPW];
#pragma unroll
        for (int r = 0; r < F_RPW; r++) {
            int64_t i = m0 + warp * F_RPW + r;
            float p = at_attends(i, key, T, a.window) ? expf(a.scale * s[r] - lr[r]) : 0.f;
            ds[r] = p * (dp[r] - Dr[r]);
        }
        /* dQ += dS K: key j's dS comes from lane j */
        for (int j = 0; j < F_BN; j++) {
            float kv[NC];
#pragma unroll
            for (int c = 0; c < NC; c++) {
                int d = lane + 32 * c;
                kv[c] = d < hd ? Ks[j * KS + d] : 0.f;
            }
#pragma unroll
            for (int r = 0; r < F_RPW; r++) {
                float dsj = __shfl_sync(0xffffffffu, ds[r], j);
#pragma unroll
                for (int c = 0; c < NC; c++) dq[r][c] = fmaf(dsj, kv[c], dq[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < F_RPW; r++) {
        int64_t i = m0 + warp * F_RPW + r;
        if (i >= T) continue;
        float *dqr = a.dq + (b0 + i) * q_row + (int64_t)h * hd;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            int d = lane + 32 * c;
            if (d < hd) dqr[d] = a.scale * dq[r][c];
        }
    }
}

/* ------------------------------------------------------------------ */
/* bf16 tensor-core kernels                                            */

#define B_BM 64 /* queries per block (forward, dq): 4 warps x 16 rows */
#define B_BN 64 /* keys per tile (forward, dq) and per block (dkdv): 4 x 16 */
#define B_QM 32 /* queries per step of the dkdv kernel */
#define B_WARPS 4
#define B_THREADS (B_WARPS * 32)

/* ROWS x HD floats of src (row stride `stride`, 16-byte aligned rows) into
 * dst as bf16 with row stride HD + 8; rows >= valid are zero. */
template <int ROWS, int HD>
static __device__ __forceinline__ void bf_tile_load(__nv_bfloat16 *dst, const float *src,
                                                    int64_t stride, int valid) {
    constexpr int KS = HD + 8, C4 = HD / 4, N = ROWS * C4;
    static_assert(N % B_THREADS == 0, "tile size");
#pragma unroll 4
    for (int it = 0; it < N / B_THREADS; it++) {
        int idx = it * B_THREADS + threadIdx.x, r = idx / C4, c = (idx % C4) * 4;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < valid) x = __ldg((const float4 *)(src + (int64_t)r * stride + c));
        uint2 u;
        u.x = lmc_pack_bf16(x.x, x.y);
        u.y = lmc_pack_bf16(x.z, x.w);
        *(uint2 *)(dst + r * KS + c) = u;
    }
}

static constexpr size_t bf_fwd_smem(int hd) { return (size_t)2 * B_BN * (hd + 8) * 2; }
static constexpr size_t bf_dq_smem(int hd) { return (size_t)(2 * B_BM + 2 * B_BN) * (hd + 8) * 2; }
static constexpr size_t bf_dkdv_smem(int hd) {
    return (size_t)(2 * B_BN + 2 * B_QM) * (hd + 8) * 2 + 2 * B_QM * sizeof(float);
}

template <int HD>
__global__ void __launch_bounds__(B_THREADS) attn_train_fwd_bf16_kernel(struct at_args a) {
    constexpr int KS = HD + 8;
    extern __shared__ __align__(16) unsigned char bsm[];
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)bsm, *Vs = Ks + B_BN * KS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int lm = lane >> 3, lr = lane & 7; /* ldmatrix: matrix lm, its row lr */
    const at_seq sq = at_seq_of(a);
    const int64_t T = sq.T, m0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * B_BM;
    const int h = blockIdx.y, kvh = h / (a.H / a.KV);
    const int64_t b0 = sq.base, q_row = (int64_t)a.H * HD, kv_row = (int64_t)a.KV * HD;
    if (m0 >= T) return; /* a tile past its segment (several sequences in one grid) */
    const float *q = a.q + b0 * q_row + (int64_t)h * HD;
    const float *kb = a.k + b0 * kv_row + (int64_t)kvh * HD;
    const float *vb = a.v + b0 * kv_row + (int64_t)kvh * HD;
    const int64_t last_m = LMC_MIN(m0 + B_BM, T) - 1;
    const int64_t lo = a.window > 0 ? LMC_MAX((int64_t)0, m0 - a.window + 1) : 0;
    const float sl2 = a.scale * AT_LOG2E;

    /* Q A-fragments from f32 (rows past T are zero) */
    const int64_t r0 = m0 + warp * 16 + g, r1 = r0 + 8;
    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++) {
        const int c = kc * 16 + t * 2;
        float2 z = make_float2(0.f, 0.f);
        float2 x0 = r0 < T ? *(const float2 *)(q + r0 * q_row + c) : z;
        float2 x1 = r1 < T ? *(const float2 *)(q + r1 * q_row + c) : z;
        float2 x2 = r0 < T ? *(const float2 *)(q + r0 * q_row + c + 8) : z;
        float2 x3 = r1 < T ? *(const float2 *)(q + r1 * q_row + c + 8) : z;
        qf[kc][0] = lmc_pack_bf16(x0.x, x0.y);
        qf[kc][1] = lmc_pack_bf16(x1.x, x1.y);
        qf[kc][2] = lmc_pack_bf16(x2.x, x2.y);
        qf[kc][3] = lmc_pack_bf16(x3.x, x3.y);
    }
    /* positions of this thread's rows; rows past T act as the last row */
    const int64_t pr[2] = {LMC_MIN(r0, last_m), LMC_MIN(r1, last_m)};
    const int64_t w_first = LMC_MIN(m0 + warp * 16, last_m);
    const int64_t w_last = LMC_MIN(m0 + warp * 16 + 15, last_m);

    float o[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};

    for (int64_t n0 = lo / B_BN * B_BN; n0 <= last_m; n0 += B_BN) {
        __syncthreads(); /* the previous tile is consumed */
        const int nv = (int)LMC_MIN((int64_t)B_BN, last_m - n0 + 1);
        bf_tile_load<B_BN, HD>(Ks, kb + n0 * kv_row, kv_row, nv);
        bf_tile_load<B_BN, HD>(Vs, vb + n0 * kv_row, kv_row, nv);
        __syncthreads();
        /* this warp's rows see keys (w_first - window, w_last] */
        if (n0 > w_last || (a.window > 0 && n0 + B_BN - 1 <= w_first - a.window)) continue;

        float s[B_BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < B_BN / 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < HD / 16; kc++)
#pragma unroll
            for (int np = 0; np < B_BN / 16; np++) {
                uint32_t bf[4];
                lmc_ldsm_x4(bf, Ks + (np * 16 + (lm >> 1) * 8 + lr) * KS + kc * 16 + (lm & 1) * 8);
                lmc_mma_bf16(s[2 * np], qf[kc], bf[0], bf[1]);
                lmc_mma_bf16(s[2 * np + 1], qf[kc], bf[2], bf[3]);
            }
#pragma unroll
        for (int nt = 0; nt < B_BN / 8; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[nt][i] *= sl2;

        bool need_mask = n0 + B_BN - 1 > w_first || (a.window > 0 && n0 <= w_last - a.window);
        if (need_mask) {
#pragma unroll
            for (int nt = 0; nt < B_BN / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int64_t key = n0 + nt * 8 + t * 2 + (i & 1), p = pr[i >> 1];
                    if (!(key <= p && (a.window <= 0 || key > p - a.window))) s[nt][i] = -INFINITY;
                }
        }

        /* online softmax, rows g and g+8 */
        lmc_online_softmax(s, mrow, lrow, o);

        /* O += P V: the S accumulators are P's A-fragments; V via .trans */
#pragma unroll
        for (int kc = 0; kc < B_BN / 16; kc++) {
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
        int64_t row = e ? r1 : r0;
        if (row < T) { /* l >= 1: the row's own key is attended */
            float inv = 1.0f / l;
            float *orow = a.out + (b0 + row) * q_row + (int64_t)h * HD;
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++)
                *(float2 *)(orow + dt * 8 + t * 2) =
                    make_float2(o[dt][2 * e] * inv, o[dt][2 * e + 1] * inv);
            if (t == 0) a.lse[(b0 + row) * a.H + h] = (mrow[e] + log2f(l)) * AT_LN2;
        }
    }
}

template <int HD>
__global__ void __launch_bounds__(B_THREADS) attn_train_bwd_dkdv_bf16_kernel(struct at_args a) {
    constexpr int KS = HD + 8;
    extern __shared__ __align__(16) unsigned char bsm[];
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)bsm, *Vs = Ks + B_BN * KS, *Qs = Vs + B_BN * KS;
    __nv_bfloat16 *dOs = Qs + B_QM * KS;
    float *ls2 = (float *)(dOs + B_QM * KS), *Ds = ls2 + B_QM; /* lse * log2(e), D */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int lm = lane >> 3, lr = lane & 7;
    const at_seq sq = at_seq_of(a);
    const int64_t T = sq.T, n0 = (int64_t)blockIdx.x * B_BN; /* early keys: most queries */
    const int gk = blockIdx.y, group = a.H / a.KV;
    const int64_t b0 = sq.base, q_row = (int64_t)a.H * HD, kv_row = (int64_t)a.KV * HD;
    if (n0 >= T) return; /* a tile past its segment (several sequences in one grid) */
    const float sl2 = a.scale * AT_LOG2E;
    const int nv = (int)LMC_MIN((int64_t)B_BN, T - n0);
    bf_tile_load<B_BN, HD>(Ks, a.k + (b0 + n0) * kv_row + (int64_t)gk * HD, kv_row, nv);
    bf_tile_load<B_BN, HD>(Vs, a.v + (b0 + n0) * kv_row + (int64_t)gk * HD, kv_row, nv);

    const int64_t kw = n0 + warp * 16;         /* this warp's first key */
    const int64_t kr[2] = {kw + g, kw + g + 8}; /* this thread's two keys (C rows) */
    float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.f;

    const int64_t qhi = a.window > 0 ? LMC_MIN(T - 1, n0 + B_BN - 1 + a.window - 1) : T - 1;
    for (int hh = 0; hh < group; hh++) {
        const int h = gk * group + hh;
        const float *q = a.q + b0 * q_row + (int64_t)h * HD;
        const float *dout = a.dout + b0 * q_row + (int64_t)h * HD;
        const float *lse = a.lse_in + b0 * a.H + h, *D = a.D + b0 * a.H + h;
        for (int64_t m0 = n0 / B_QM * B_QM; m0 <= qhi; m0 += B_QM) {
            __syncthreads(); /* the previous query tile is consumed */
            const int mv = (int)LMC_MIN((int64_t)B_QM, T - m0);
            bf_tile_load<B_QM, HD>(Qs, q + m0 * q_row, q_row, mv);
            bf_tile_load<B_QM, HD>(dOs, dout + m0 * q_row, q_row, mv);
            if (tid < B_QM) {
                ls2[tid] = tid < mv ? lse[(m0 + tid) * a.H] * AT_LOG2E : 0.f;
                Ds[tid] = tid < mv ? D[(m0 + tid) * a.H] : 0.f;
            }
            __syncthreads();
            /* every pair masked: keys past T, queries all before the keys,
             * or all past the keys' windows */
            if (kw >= T || m0 + B_QM - 1 < kw || (a.window > 0 && m0 - a.window >= kw + 15))
                continue;

            /* S^T = K Q^T and dP^T = V dO^T: rows = this warp's 16 keys,
             * columns = the tile's 32 queries */
            float st[B_QM / 8][4], dpt[B_QM / 8][4];
#pragma unroll
            for (int nt = 0; nt < B_QM / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.f;
#pragma unroll
            for (int kc = 0; kc < HD / 16; kc++) {
                uint32_t ka[4], va[4];
                const int ao = (warp * 16 + (lm & 1) * 8 + lr) * KS + kc * 16 + (lm >> 1) * 8;
                lmc_ldsm_x4(ka, Ks + ao);
                lmc_ldsm_x4(va, Vs + ao);
#pragma unroll
                for (int np = 0; np < B_QM / 16; np++) {
                    uint32_t bq[4], bo[4];
                    const int bo_off = (np * 16 + (lm >> 1) * 8 + lr) * KS + kc * 16 + (lm & 1) * 8;
                    lmc_ldsm_x4(bq, Qs + bo_off);
                    lmc_ldsm_x4(bo, dOs + bo_off);
                    lmc_mma_bf16(st[2 * np], ka, bq[0], bq[1]);
                    lmc_mma_bf16(st[2 * np + 1], ka, bq[2], bq[3]);
                    lmc_mma_bf16(dpt[2 * np], va, bo[0], bo[1]);
                    lmc_mma_bf16(dpt[2 * np + 1], va, bo[2], bo[3]);
                }
            }
            /* P^T = exp2(S^T scale log2e - lse log2e) (0 where masked),
             * dS^T = P^T (dP^T - D) */
#pragma unroll
            for (int nt = 0; nt < B_QM / 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int il = nt * 8 + t * 2 + (e & 1);
                    float p = at_attends(m0 + il, kr[e >> 1], T, a.window)
                                  ? exp2f(st[nt][e] * sl2 - ls2[il])
                                  : 0.f;
                    st[nt][e] = p;
                    dpt[nt][e] = p * (dpt[nt][e] - Ds[il]);
                }
            /* dV += P^T dO, dK += dS^T Q (dO, Q as B via .trans) */
#pragma unroll
            for (int kc = 0; kc < B_QM / 16; kc++) {
                uint32_t pa[4], sa[4];
                lmc_c2a(pa, st[2 * kc], st[2 * kc + 1]);
                lmc_c2a(sa, dpt[2 * kc], dpt[2 * kc + 1]);
#pragma unroll
                for (int dp = 0; dp < HD / 16; dp++) {
                    uint32_t bo[4], bq[4];
                    const int to = (kc * 16 + (lm & 1) * 8 + lr) * KS + dp * 16 + (lm >> 1) * 8;
                    lmc_ldsm_x4_t(bo, dOs + to);
                    lmc_mma_bf16(dv[2 * dp], pa, bo[0], bo[1]);
                    lmc_mma_bf16(dv[2 * dp + 1], pa, bo[2], bo[3]);
                    lmc_ldsm_x4_t(bq, Qs + to);
                    lmc_mma_bf16(dk[2 * dp], sa, bq[0], bq[1]);
                    lmc_mma_bf16(dk[2 * dp + 1], sa, bq[2], bq[3]);
                }
            }
        }
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int64_t j = kr[e];
        if (j >= T) continue;
        float *dkr = a.dk + (b0 + j) * kv_row + (int64_t)gk * HD;
        float *dvr = a.dv + (b0 + j) * kv_row + (int64_t)gk * HD;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) {
            *(float2 *)(dkr + dt * 8 + t * 2) =
                make_float2(a.scale * dk[dt][2 * e], a.scale * dk[dt][2 * e + 1]);
            *(float2 *)(dvr + dt * 8 + t * 2) = make_float2(dv[dt][2 * e], dv[dt][2 * e + 1]);
        }
    }
}

template <int HD>
__global__ void __launch_bounds__(B_THREADS) attn_train_bwd_dq_bf16_kernel(struct at_args a) {
    constexpr int KS = HD + 8;
    extern __shared__ __align__(16) unsigned char bsm[];
    __nv_bfloat16 *Qs = (__nv_bfloat16 *)bsm, *dOs = Qs + B_BM * KS, *Ks = dOs + B_BM * KS;
    __nv_bfloat16 *Vs = Ks + B_BN * KS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int lm = lane >> 3, lr = lane & 7;
    const at_seq sq = at_seq_of(a);
    const int64_t T = sq.T, m0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * B_BM;
    const int h = blockIdx.y, kvh = h / (a.H / a.KV);
    const int64_t b0 = sq.base, q_row = (int64_t)a.H * HD, kv_row = (int64_t)a.KV * HD;
    if (m0 >= T) return; /* a tile past its segment (several sequences in one grid) */
    const float *kb = a.k + b0 * kv_row + (int64_t)kvh * HD;
    const float *vb = a.v + b0 * kv_row + (int64_t)kvh * HD;
    const int64_t last_m = LMC_MIN(m0 + B_BM, T) - 1;
    const int64_t lo = a.window > 0 ? LMC_MAX((int64_t)0, m0 - a.window + 1) : 0;
    const float sl2 = a.scale * AT_LOG2E;
    const int mv = (int)(last_m - m0 + 1);
    bf_tile_load<B_BM, HD>(Qs, a.q + (b0 + m0) * q_row + (int64_t)h * HD, q_row, mv);
    bf_tile_load<B_BM, HD>(dOs, a.dout + (b0 + m0) * q_row + (int64_t)h * HD, q_row, mv);

    const int64_t row[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};
    float l2r[2], Dr[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        l2r[e] = row[e] < T ? a.lse_in[(b0 + row[e]) * a.H + h] * AT_LOG2E : 0.f;
        Dr[e] = row[e] < T ? a.D[(b0 + row[e]) * a.H + h] : 0.f;
    }
    const int64_t w_first = LMC_MIN(m0 + warp * 16, last_m);
    const int64_t w_last = LMC_MIN(m0 + warp * 16 + 15, last_m);
    const int ao = (warp * 16 + (lm & 1) * 8 + lr) * KS + (lm >> 1) * 8; /* A rows: this warp's */

    float dq[HD / 8][4];
#pragma unroll
    for (int i = 0; i < HD / 8; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

    for (int64_t n0 = lo / B_BN * B_BN; n0 <= last_m; n0 += B_BN) {
        __syncthreads(); /* the previous tile is consumed (and Q, dO landed) */
        const int nv = (int)LMC_MIN((int64_t)B_BN, last_m - n0 + 1);
        bf_tile_load<B_BN, HD>(Ks, kb + n0 * kv_row, kv_row, nv);
        bf_tile_load<B_BN, HD>(Vs, vb + n0 * kv_row, kv_row, nv);
        __syncthreads();
        if (n0 > w_last || (a.window > 0 && n0 + B_BN - 1 <= w_first - a.window)) continue;

        /* S = Q K^T, dP = dO V^T (rows: this warp's 16 queries) */
        float s[B_BN / 8][4], dp[B_BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < B_BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.f;
#pragma unroll
        for (int kc = 0; kc < HD / 16; kc++) {
            uint32_t qa[4], oa[4];
            lmc_ldsm_x4(qa, Qs + ao + kc * 16);
            lmc_ldsm_x4(oa, dOs + ao + kc * 16);
#pragma unroll
            for (int np = 0; np < B_BN / 16; np++) {
                uint32_t bk[4], bv[4];
                const int bo_off = (np * 16 + (lm >> 1) * 8 + lr) * KS + kc * 16 + (lm & 1) * 8;
                lmc_ldsm_x4(bk, Ks + bo_off);
                lmc_ldsm_x4(bv, Vs + bo_off);
                lmc_mma_bf16(s[2 * np], qa, bk[0], bk[1]);
                lmc_mma_bf16(s[2 * np + 1], qa, bk[2], bk[3]);
                lmc_mma_bf16(dp[2 * np], oa, bv[0], bv[1]);
                lmc_mma_bf16(dp[2 * np + 1], oa, bv[2], bv[3]);
            }
        }
        /* dS = P (dP - D), P = 0 where masked; into s */
#pragma unroll
        for (int nt = 0; nt < B_BN / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t key = n0 + nt * 8 + t * 2 + (e & 1);
                float p = at_attends(row[e >> 1], key, T, a.window)
                              ? exp2f(s[nt][e] * sl2 - l2r[e >> 1])
                              : 0.f;
                s[nt][e] = p * (dp[nt][e] - Dr[e >> 1]);
            }
        /* dQ += dS K (K as B via .trans) */
#pragma unroll
        for (int kc = 0; kc < B_BN / 16; kc++) {
            uint32_t da[4];
            lmc_c2a(da, s[2 * kc], s[2 * kc + 1]);
#pragma unroll
            for (int dt = 0; dt < HD / 16; dt++) {
                uint32_t bk[4];
                lmc_ldsm_x4_t(bk, Ks + (kc * 16 + (lm & 1) * 8 + lr) * KS + dt * 16 + (lm >> 1) * 8);
                lmc_mma_bf16(dq[2 * dt], da, bk[0], bk[1]);
                lmc_mma_bf16(dq[2 * dt + 1], da, bk[2], bk[3]);
            }
        }
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        if (row[e] >= T) continue;
        float *dqr = a.dq + (b0 + row[e]) * q_row + (int64_t)h * HD;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++)
            *(float2 *)(dqr + dt * 8 + t * 2) =
                make_float2(a.scale * dq[dt][2 * e], a.scale * dq[dt][2 * e + 1]);
    }
}

/* ------------------------------------------------------------------ */
/* launchers                                                           */

/* The bf16 kernels: train_bf16 set, a head dim they are built for, and
 * 16-byte aligned tensors (float4 tile loads, float2 stores). */
static bool use_bf16(const struct lmc_cuda_ctx *c, int64_t hd, const void *const *p, int n) {
    if (!c->train_bf16 || (hd != 64 && hd != 80 && hd != 96 && hd != 128)) return false;
    uintptr_t al = 0;
    for (int i = 0; i < n; i++) al |= (uintptr_t)p[i];
    return al % 16 == 0;
}

/* fp32 register chunks per lane for a head dim: 2, 3, 4 or 8 */
static int f32_nc(int64_t hd) { return hd <= 64 ? 2 : hd <= 96 ? 3 : hd <= 128 ? 4 : 8; }

template <typename K>
static void at_launch(K kernel, dim3 grid, int threads, size_t smem, cudaStream_t st,
                      const struct at_args &a) {
    LMC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    kernel<<<grid, threads, smem, st>>>(a);
    LMC_CUDA_LAUNCH_CHECK();
}

static void check_shape(int64_t B, int64_t T, int64_t n_heads, int64_t n_kv, int64_t hd) {
    LMC_ASSERT(n_kv > 0 && n_heads % n_kv == 0);
    LMC_ASSERT(n_heads <= 65535 && B <= 65535 && hd <= F_MAXHD);
    LMC_ASSERT((T + F_BM - 1) / F_BM <= 0x7fffffff);
}

/* The forward over nz sequences (blockIdx.z) of at most Tmax tokens; a's
 * pointers, shape and seg filled. */
static void at_fwd(struct lmc_cuda_ctx *c, const struct at_args &a, int64_t nz, int64_t Tmax) {
    const int64_t hd = a.hd;
    const void *ptrs[] = {a.out, a.q, a.k, a.v};
    if (use_bf16(c, hd, ptrs, 4)) {
        dim3 grid((unsigned)((Tmax + B_BM - 1) / B_BM), (unsigned)a.H, (unsigned)nz);
#define AT_FWD_BF16(HD) \
    at_launch(attn_train_fwd_bf16_kernel<HD>, grid, B_THREADS, bf_fwd_smem(HD), c->stream, a)
        switch (hd) {
        case 64: AT_FWD_BF16(64); break;
        case 80: AT_FWD_BF16(80); break;
        case 96: AT_FWD_BF16(96); break;
        default: AT_FWD_BF16(128); break;
        }
#undef AT_FWD_BF16
        return;
    }
    dim3 grid((unsigned)((Tmax + F_BM - 1) / F_BM), (unsigned)a.H, (unsigned)nz);
    size_t smem = (size_t)(F_BM * hd + F_BN * (hd | 1) + F_BN * hd) * sizeof(float);
    switch (f32_nc(hd)) {
    case 2: at_launch(attn_train_fwd_f32_kernel<2>, grid, F_THREADS, smem, c->stream, a); break;
    case 3: at_launch(attn_train_fwd_f32_kernel<3>, grid, F_THREADS, smem, c->stream, a); break;
    case 4: at_launch(attn_train_fwd_f32_kernel<4>, grid, F_THREADS, smem, c->stream, a); break;
    default: at_launch(attn_train_fwd_f32_kernel<8>, grid, F_THREADS, smem, c->stream, a); break;
    }
}

/* The backward over nz sequences of at most Tmax tokens in `rows` rows
 * (D = rowsum(dout * out) over every row first, into the attn_part
 * scratch); a's pointers, shape and seg filled, D set here. */
static void at_bwd(struct lmc_cuda_ctx *c, struct at_args &a, int64_t nz, int64_t Tmax, int64_t rows) {
    const int64_t hd = a.hd;
    const int64_t pairs = rows * a.H;
    lmc_cuda_reserve(c, &c->attn_part, &c->attn_part_bytes, (size_t)pairs * sizeof(float));
    float *D = (float *)c->attn_part;
    attn_train_bwd_d_kernel<<<lmc_cuda_blocks(pairs * 32, 256), 256, 0, c->stream>>>(
        D, a.dout, a.out_in, pairs, (int)hd);
    LMC_CUDA_LAUNCH_CHECK();
    a.D = D;
    const void *ptrs[] = {a.dq, a.dk, a.dv, a.dout, a.q, a.k, a.v};
    if (use_bf16(c, hd, ptrs, 7)) {
        dim3 gkv((unsigned)((Tmax + B_BN - 1) / B_BN), (unsigned)a.KV, (unsigned)nz);
        dim3 gq((unsigned)((Tmax + B_BM - 1) / B_BM), (unsigned)a.H, (unsigned)nz);
#define AT_BWD_BF16(HD)                                                                      \
    do {                                                                                     \
        at_launch(attn_train_bwd_dkdv_bf16_kernel<HD>, gkv, B_THREADS, bf_dkdv_smem(HD),     \
                  c->stream, a);                                                             \
        at_launch(attn_train_bwd_dq_bf16_kernel<HD>, gq, B_THREADS, bf_dq_smem(HD), c->stream, \
                  a);                                                                        \
    } while (0)
        switch (hd) {
        case 64: AT_BWD_BF16(64); break;
        case 80: AT_BWD_BF16(80); break;
        case 96: AT_BWD_BF16(96); break;
        default: AT_BWD_BF16(128); break;
        }
#undef AT_BWD_BF16
        return;
    }
    const int KS = (int)(hd | 1);
    dim3 gkv((unsigned)((Tmax + F_BN - 1) / F_BN), (unsigned)a.KV, (unsigned)nz);
    dim3 gq((unsigned)((Tmax + F_BM - 1) / F_BM), (unsigned)a.H, (unsigned)nz);
    size_t s_kv = (size_t)(2 * F_BN * KS + 2 * F_BM * hd + 2 * F_BM * (F_BN + 1) + 2 * F_BM) *
                  sizeof(float);
    size_t s_q = (size_t)(2 * F_BM * hd + 2 * F_BN * KS) * sizeof(float);
#define AT_BWD_F32(NC)                                                                      \
    do {                                                                                    \
        at_launch(attn_train_bwd_dkdv_f32_kernel<NC>, gkv, F_THREADS, s_kv, c->stream, a);  \
        at_launch(attn_train_bwd_dq_f32_kernel<NC>, gq, F_THREADS, s_q, c->stream, a);      \
    } while (0)
    switch (f32_nc(hd)) {
    case 2: AT_BWD_F32(2); break;
    case 3: AT_BWD_F32(3); break;
    case 4: AT_BWD_F32(4); break;
    default: AT_BWD_F32(8); break;
    }
#undef AT_BWD_F32
}

static void at_shape(struct at_args &a, int64_t T, int64_t n_heads, int64_t n_kv, int64_t hd,
                     float scale, int64_t window) {
    a.T = T, a.window = window, a.H = (int)n_heads, a.KV = (int)n_kv, a.hd = (int)hd;
    a.scale = scale;
}

/* The segments to the device (the ctx's attn_segs buffer, ordered on the
 * stream before the launches that read it); the longest length and the
 * rows they span. */
static const int64_t *at_segs_upload(struct lmc_cuda_ctx *c, const int64_t *segs, int64_t n_segs,
                                     int64_t *Tmax, int64_t *rows) {
    *Tmax = 0, *rows = 0;
    for (int64_t i = 0; i < n_segs; i++) {
        LMC_ASSERT(segs[2 * i] >= 0 && segs[2 * i + 1] >= 0);
        *Tmax = LMC_MAX(*Tmax, segs[2 * i + 1]);
        *rows = LMC_MAX(*rows, segs[2 * i] + segs[2 * i + 1]);
    }
    const size_t bytes = (size_t)n_segs * 2 * sizeof(int64_t);
    lmc_cuda_reserve(c, &c->attn_segs, &c->attn_segs_bytes, bytes);
    lmc_cuda_upload(c, c->attn_segs, segs, bytes);
    return (const int64_t *)c->attn_segs;
}

extern "C" void lmc_cuda_attention_train(void *ctx, float *out, float *lse, const float *q,
                                         const float *k, const float *v, int64_t B, int64_t T,
                                         int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                         int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || T <= 0 || n_heads <= 0 || hd <= 0) return;
    check_shape(B, T, n_heads, n_kv, hd);
    struct at_args a;
    memset(&a, 0, sizeof a);
    a.out = out, a.lse = lse, a.q = q, a.k = k, a.v = v;
    at_shape(a, T, n_heads, n_kv, hd, scale, window);
    at_fwd(c, a, B, T);
}

extern "C" void lmc_cuda_attention_train_segs(void *ctx, float *out, float *lse, const float *q,
                                              const float *k, const float *v, const int64_t *segs,
                                              int64_t n_segs, int64_t n_heads, int64_t n_kv,
                                              int64_t hd, float scale, int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n_segs <= 0 || n_heads <= 0 || hd <= 0) return;
    int64_t Tmax, rows;
    const int64_t *dseg = at_segs_upload(c, segs, n_segs, &Tmax, &rows);
    if (Tmax <= 0) return;
    check_shape(n_segs, Tmax, n_heads, n_kv, hd);
    struct at_args a;
    memset(&a, 0, sizeof a);
    a.out = out, a.lse = lse, a.q = q, a.k = k, a.v = v, a.seg = dseg;
    at_shape(a, 0, n_heads, n_kv, hd, scale, window);
    at_fwd(c, a, n_segs, Tmax);
}

extern "C" void lmc_cuda_attention_bwd(void *ctx, float *dq, float *dk, float *dv,
                                       const float *dout, const float *out, const float *lse,
                                       const float *q, const float *k, const float *v, int64_t B,
                                       int64_t T, int64_t n_heads, int64_t n_kv, int64_t hd,
                                       float scale, int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || T <= 0 || n_heads <= 0 || hd <= 0) return;
    check_shape(B, T, n_heads, n_kv, hd);
    struct at_args a;
    memset(&a, 0, sizeof a);
    a.dq = dq, a.dk = dk, a.dv = dv, a.q = q, a.k = k, a.v = v;
    a.dout = dout, a.out_in = out, a.lse_in = lse;
    at_shape(a, T, n_heads, n_kv, hd, scale, window);
    at_bwd(c, a, B, T, B * T);
}

extern "C" void lmc_cuda_attention_bwd_segs(void *ctx, float *dq, float *dk, float *dv,
                                            const float *dout, const float *out, const float *lse,
                                            const float *q, const float *k, const float *v,
                                            const int64_t *segs, int64_t n_segs, int64_t n_heads,
                                            int64_t n_kv, int64_t hd, float scale, int64_t window) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n_segs <= 0 || n_heads <= 0 || hd <= 0) return;
    int64_t Tmax, rows;
    const int64_t *dseg = at_segs_upload(c, segs, n_segs, &Tmax, &rows);
    if (Tmax <= 0) return;
    check_shape(n_segs, Tmax, n_heads, n_kv, hd);
    struct at_args a;
    memset(&a, 0, sizeof a);
    a.dq = dq, a.dk = dk, a.dv = dv, a.q = q, a.k = k, a.v = v;
    a.dout = dout, a.out_in = out, a.lse_in = lse, a.seg = dseg;
    at_shape(a, 0, n_heads, n_kv, hd, scale, window);
    at_bwd(c, a, n_segs, Tmax, rows);
}
