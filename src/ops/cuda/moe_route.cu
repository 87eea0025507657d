/* moe_route.cu — mixture-of-experts routing on the GPU (backend.h:
 * moe_route, moe_stats, moe_gather, moe_gather_bwd, moe_combine,
 * moe_combine_bwd; CPU twin ops/cpu/moe_route.c, whose numbers it
 * follows): one thread per token takes the softmax of its router logits
 * in double and the top k (ties to the lower expert, as torch.topk), with
 * the optional renormalisation; the n k choices are grouped by expert with
 * a stable counting sort (a block per expert counts its choices, one
 * thread scans the E counts into offsets, a block per expert places its
 * choices in token order with a block-wide prefix sum); only the E + 1
 * offsets go back to the host (the expert GEMMs need their row counts).
 * The gather, the weighted combine (plus a gated shared expert) and the
 * backward of both (the combine weights through the renormalisation and
 * the softmax into the router logits, a block per token) are elementwise
 * or per-token kernels. Deterministic: no atomics. */
#include "ops/cuda/common.cuh"

#define MR_T 256 /* threads per block */

/* softmax (double), top-k, renormalisation: the CPU loop per token */
__global__ void moe_route_fwd_kernel(float *probs, int32_t *sel, float *wts, int64_t n, int64_t E, int64_t k,
                                     int norm) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
        float *p = probs + t * E;
        double mx = p[0], sum = 0;
        for (int64_t e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
        for (int64_t e = 0; e < E; e++) sum += exp((double)p[e] - mx);
        for (int64_t e = 0; e < E; e++) p[e] = (float)(exp((double)p[e] - mx) / sum);
        int32_t *s = sel + t * k;
        float *w = wts + t * k;
        double tot = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j; i++) taken |= s[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e; /* ties: lower index */
            }
            s[j] = (int32_t)best;
            w[j] = p[best];
            tot += p[best];
        }
        if (norm)
            for (int64_t j = 0; j < k; j++) w[j] = (float)((double)w[j] / tot);
    }
}

/* block e: off[e + 1] = the choices of expert e */
__global__ void moe_count_kernel(int64_t *off, const int32_t *sel, int64_t nk) {
    __shared__ double sh[32];
    const int e = blockIdx.x;
    double c = 0;
    for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) c += sel[i] == e ? 1.0 : 0.0;
    c = lmc_block_sum_d(c, sh);
    if (threadIdx.x == 0) off[e + 1] = (int64_t)c;
}

/* off[0] = 0, off[e + 1] += off[e] (one thread; E <= 4096) */
__global__ void moe_scan_kernel(int64_t *off, int64_t E) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    off[0] = 0;
    for (int64_t e = 0; e < E; e++) off[e + 1] += off[e];
}

/* block e places its choices, in token order, at rows off[e] ...: an
 * inclusive prefix sum of the match flags per chunk of MR_T choices */
__global__ void __launch_bounds__(MR_T) moe_place_kernel(int32_t *perm, int32_t *row, const int32_t *sel,
                                                         const int64_t *off, int64_t nk) {
    __shared__ int sc[MR_T];
    const int e = blockIdx.x, tid = threadIdx.x;
    int64_t base = off[e];
    for (int64_t i0 = 0; i0 < nk; i0 += MR_T) {
        int64_t i = i0 + tid;
        int f = i < nk && sel[i] == e;
        sc[tid] = f;
        __syncthreads();
        for (int d = 1; d < MR_T; d <<= 1) {
            int v = tid >= d ? sc[tid - d] : 0;
            __syncthreads();
            sc[tid] += v;
            __syncthreads();
        }
        if (f) {
            int64_t r = base + sc[tid] - 1;
            perm[r] = (int32_t)i;
            row[i] = (int32_t)r;
        }
        int total = sc[MR_T - 1];
        __syncthreads(); /* sc is rewritten by the next chunk */
        base += total;
    }
}

extern "C" void lmc_cuda_moe_route(void *ctx, const struct lmc_moe_routing *r, int64_t *off_host, int64_t n,
                                   int64_t E, int64_t k, int norm_topk) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(k >= 1 && k <= E && E <= 4096 && n >= 0 && n * k <= INT32_MAX);
    const int64_t nk = n * k;
    if (n > 0) {
        moe_route_fwd_kernel<<<lmc_cuda_blocks(n, 128), 128, 0, c->stream>>>(r->probs, r->sel, r->wts, n, E, k,
                                                                               norm_topk);
        LMC_CUDA_LAUNCH_CHECK();
    }
    moe_count_kernel<<<(unsigned)E, MR_T, 0, c->stream>>>(r->off, r->sel, nk);
    LMC_CUDA_LAUNCH_CHECK();
    moe_scan_kernel<<<1, 32, 0, c->stream>>>(r->off, E);
    LMC_CUDA_LAUNCH_CHECK();
    if (nk > 0) {
        moe_place_kernel<<<(unsigned)E, MR_T, 0, c->stream>>>(r->perm, r->row, r->sel, r->off, nk);
        LMC_CUDA_LAUNCH_CHECK();
    }
    LMC_CUDA_CHECK(cudaMemcpyAsync(off_host, r->off, (size_t)(E + 1) * sizeof(int64_t), cudaMemcpyDeviceToHost,
                                   c->stream));
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

/* block e: st[e] = choices of e, st[E + e] = sum over tokens of probs[t, e] */
__global__ void moe_stats_kernel(double *st, const int32_t *sel, const float *probs, int64_t n, int64_t k,
                                 int64_t E) {
    __shared__ double sh[32];
    const int e = blockIdx.x;
    double cnt = 0, ps = 0;
    for (int64_t i = threadIdx.x; i < n * k; i += blockDim.x) cnt += sel[i] == e ? 1.0 : 0.0;
    for (int64_t t = threadIdx.x; t < n; t += blockDim.x) ps += probs[t * E + e];
    cnt = lmc_block_sum_d(cnt, sh);
    ps = lmc_block_sum_d(ps, sh);
    if (threadIdx.x == 0) st[e] = cnt, st[E + e] = ps;
}

extern "C" void lmc_cuda_moe_stats(void *ctx, double *cnt, double *psum, const int32_t *sel, const float *probs,
                                   int64_t n, int64_t k, int64_t E) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(E >= 1 && E <= 4096 && n >= 0);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, (size_t)(2 * E) * sizeof(double));
    double *st = (double *)c->scratch;
    moe_stats_kernel<<<(unsigned)E, MR_T, 0, c->stream>>>(st, sel, probs, n, k, E);
    LMC_CUDA_LAUNCH_CHECK();
    LMC_CUDA_CHECK(cudaMemcpyAsync(cnt, st, (size_t)E * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    LMC_CUDA_CHECK(cudaMemcpyAsync(psum, st + E, (size_t)E * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

__global__ void moe_gather_kernel(float *xs, const float *h, const int32_t *perm, int64_t nk, int64_t k,
                                  int64_t C) {
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < nk * C; x += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = x / C, ch = x - i * C;
        xs[x] = h[(int64_t)(perm[i] / k) * C + ch];
    }
}

extern "C" void lmc_cuda_moe_gather(void *ctx, float *xs, const float *h, const int32_t *perm, int64_t nk,
                                    int64_t k, int64_t C) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (nk <= 0 || C <= 0) return;
    moe_gather_kernel<<<lmc_cuda_blocks(nk * C, MR_T), MR_T, 0, c->stream>>>(xs, h, perm, nk, k, C);
    LMC_CUDA_LAUNCH_CHECK();
}

__global__ void moe_gather_bwd_kernel(float *dh, const float *dxs, const int32_t *row, int64_t n, int64_t k,
                                      int64_t C) {
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < n * C; x += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = x / C, ch = x - t * C;
        float acc = 0;
        for (int64_t j = 0; j < k; j++) acc += dxs[(int64_t)row[t * k + j] * C + ch];
        dh[x] = acc;
    }
}

extern "C" void lmc_cuda_moe_gather_bwd(void *ctx, float *dh, const float *dxs, const int32_t *row, int64_t n,
                                        int64_t k, int64_t C) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0 || C <= 0) return;
    moe_gather_bwd_kernel<<<lmc_cuda_blocks(n * C, MR_T), MR_T, 0, c->stream>>>(dh, dxs, row, n, k, C);
    LMC_CUDA_LAUNCH_CHECK();
}

__global__ void moe_combine_kernel(float *y, const float *res, const float *o, const float *wts,
                                   const int32_t *row, const float *so, const float *sl, int64_t n, int64_t k,
                                   int64_t C) {
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < n * C; x += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = x / C, ch = x - t * C;
        float acc = 0;
        for (int64_t j = 0; j < k; j++) acc += wts[t * k + j] * o[(int64_t)row[t * k + j] * C + ch];
        if (so) acc += (1.0f / (1.0f + expf(-sl[t]))) * so[x];
        y[x] = res[x] + acc;
    }
}

extern "C" void lmc_cuda_moe_combine(void *ctx, float *y, const float *res, const float *o, const float *wts,
                                     const int32_t *row, const float *so, const float *sl, int64_t n, int64_t k,
                                     int64_t C) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (n <= 0 || C <= 0) return;
    moe_combine_kernel<<<lmc_cuda_blocks(n * C, MR_T), MR_T, 0, c->stream>>>(y, res, o, wts, row, so, sl, n, k, C);
    LMC_CUDA_LAUNCH_CHECK();
}

/* a block per token: dox rows, d(weights) (block sums in double), their
 * backward through the renormalisation and the softmax, the shared gate */
__global__ void __launch_bounds__(MR_T) moe_combine_bwd_kernel(float *dox, float *dlog, float *dso, float *dsl,
                                                               const float *dy, const float *o,
                                                               struct lmc_moe_routing r, const float *so,
                                                               const float *sl, const double *aux, int64_t n,
                                                               int64_t E, int64_t k, int64_t C, int norm) {
    __shared__ double sh[32];
    __shared__ double dwp[64];
    __shared__ double S, dot;
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        const float *g = dy + t * C;
        for (int64_t j = 0; j < k; j++) {
            const int64_t rw = r.row[t * k + j];
            const float *ot = o + rw * C;
            float *d = dox + rw * C, w = r.wts[t * k + j];
            double acc = 0;
            for (int64_t ch = threadIdx.x; ch < C; ch += blockDim.x) {
                acc += (double)g[ch] * ot[ch];
                d[ch] = w * g[ch];
            }
            acc = lmc_block_sum_d(acc, sh);
            if (threadIdx.x == 0) dwp[j] = acc;
        }
        const float *p = r.probs + t * E;
        const int32_t *sel = r.sel + t * k;
        __syncthreads();
        if (threadIdx.x == 0) {
            double s = 0, dt = 0;
            if (norm) {
                for (int64_t j = 0; j < k; j++) s += p[sel[j]];
                for (int64_t j = 0; j < k; j++) dt += dwp[j] * (p[sel[j]] / s);
            }
            S = s, dot = dt;
        }
        __syncthreads();
        double pd = 0;
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
            double dp = aux ? aux[e] : 0;
            for (int64_t j = 0; j < k; j++)
                if (sel[j] == e) dp += norm ? (dwp[j] - dot) / S : dwp[j];
            pd += dp * p[e];
        }
        pd = lmc_block_sum_d(pd, sh);
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
            double dp = aux ? aux[e] : 0;
            for (int64_t j = 0; j < k; j++)
                if (sel[j] == e) dp += norm ? (dwp[j] - dot) / S : dwp[j];
            dlog[t * E + e] = (float)(p[e] * (dp - pd));
        }
        if (so) { /* y += sig(l) so: dso = sig dy, dl = sig (1 - sig) (dy . so) */
            float sig = 1.0f / (1.0f + expf(-sl[t]));
            double sd = 0;
            for (int64_t ch = threadIdx.x; ch < C; ch += blockDim.x) {
                sd += (double)g[ch] * so[t * C + ch];
                dso[t * C + ch] = sig * g[ch];
            }
            sd = lmc_block_sum_d(sd, sh);
            if (threadIdx.x == 0) dsl[t] = (float)(sig * (1.0f - sig) * sd);
        }
        __syncthreads(); /* dwp, S, dot are rewritten by the next token */
    }
}

extern "C" void lmc_cuda_moe_combine_bwd(void *ctx, float *dox, float *dlog, float *dso, float *dsl,
                                         const float *dy, const float *o, const struct lmc_moe_routing *r,
                                         const float *so, const float *sl, const double *aux, int64_t n,
                                         int64_t E, int64_t k, int64_t C, int norm_topk) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    LMC_ASSERT(k >= 1 && k <= 64 && E <= 4096);
    if (n <= 0) return;
    double *auxd = NULL;
    if (aux) { /* the host's E doubles, on the stream before the launch */
        lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, (size_t)E * sizeof(double));
        auxd = (double *)c->scratch;
        LMC_CUDA_CHECK(cudaMemcpyAsync(auxd, aux, (size_t)E * sizeof(double), cudaMemcpyHostToDevice, c->stream));
        LMC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    }
    unsigned blocks = (unsigned)(n < 65535 ? n : 65535);
    moe_combine_bwd_kernel<<<blocks, MR_T, 0, c->stream>>>(dox, dlog, dso, dsl, dy, o, *r, so, sl, auxd, n, E, k, C,
                                                           norm_topk);
    LMC_CUDA_LAUNCH_CHECK();
}
