/* ssd_chunk.cu — Mamba-2's SSD on the GPU (ops/ssm.h gives the recurrence;
 * ops/cpu/ssd_chunk.c the chunked form), all chunks in parallel:
 *   1. per (sequence, head, chunk): dt (softplus, clamp) and the running
 *      sum cs of dt*A inside the chunk;
 *   2. per (sequence, head, tile of 16 rows): the in-chunk output
 *      y_i = sum_{j<=i} exp(cs_i - cs_j) dt_j (C_i . B_j) x_j + D x_i, the
 *      (16 x 16) weight tiles staged in shared memory;
 *   3. per (sequence, head, chunk): the chunk's own end state
 *      sum_j exp(cs_last - cs_j) dt_j x_j B_j^T;
 *   4. per (sequence, head, state element): the pass over chunks, turning
 *      those into the state entering each chunk (carried in from `state`,
 *      the final one written back);
 *   5. per output: y_i += exp(cs_i) S_in C_i.
 * Decode: one thread per (sequence, head, p) updates its state row.
 * Backward: one block per (sequence, head) runs the reverse recurrence of
 * G = dL/dS through states recomputed from checkpoints every sqrt(T)
 * tokens (global scratch); row and column sums in fixed orders; dBm/dCm
 * per head, summed over a group's heads in head order by a last kernel. */
#include "ops/cuda/ssm.cuh"

#define SSD_TILE 16
#define SSD_THREADS 256
#define SSD_MAXACC 16 /* outputs per thread in the tile kernel: 16 * P <= 256 * 16 */

struct ssd_dims {
    int64_t B, T, H, P, G, N, L, nch; /* L = chunk */
};

__device__ __forceinline__ float ssd_dt_d(const lmc_ssd_io &in, int64_t r, int64_t h) {
    float v = lmc_ssm_softplus_d(in.dt[r * in.lddt + h] + (in.dt_bias ? in.dt_bias[h] : 0.0f));
    return v < in.dt_min ? in.dt_min : v > in.dt_max ? in.dt_max : v;
}

/* dtv, cs: (B, H, T) */
__global__ void ssd_cs_kernel(float *dtv, float *cs, lmc_ssd_io in, ssd_dims s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < s.B * s.H * s.nch;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % s.nch, h = (i / s.nch) % s.H, b = i / (s.nch * s.H);
        const float A = -expf(in.A_log[h]);
        const int64_t t0 = c * s.L, t1 = t0 + s.L < s.T ? t0 + s.L : s.T;
        float acc = 0.0f;
        for (int64_t t = t0; t < t1; t++) {
            const float dt = ssd_dt_d(in, b * s.T + t, h);
            acc += dt * A;
            dtv[(b * s.H + h) * s.T + t] = dt;
            cs[(b * s.H + h) * s.T + t] = acc;
        }
    }
}

/* grid (nch * tiles per chunk, H, B) */
__global__ void __launch_bounds__(SSD_THREADS)
    ssd_intra_kernel(float *y, lmc_ssd_io in, const float *dtv, const float *cs, ssd_dims s) {
    __shared__ float W[SSD_TILE][SSD_TILE];
    const int64_t tpc = (s.L + SSD_TILE - 1) / SSD_TILE, c = blockIdx.x / tpc, it = blockIdx.x % tpc;
    const int64_t h = blockIdx.y, b = blockIdx.z, g = h / (s.H / s.G), HP = s.H * s.P;
    const int64_t cend = (c + 1) * s.L < s.T ? (c + 1) * s.L : s.T;
    const int64_t i0 = c * s.L + it * SSD_TILE;
    if (i0 >= cend) return; /* uniform over the block */
    const int64_t i1 = i0 + SSD_TILE < cend ? i0 + SSD_TILE : cend;
    const float *csr = cs + (b * s.H + h) * s.T, *dtr = dtv + (b * s.H + h) * s.T;
    float acc[SSD_MAXACC];
#pragma unroll
    for (int k = 0; k < SSD_MAXACC; k++) acc[k] = 0.0f;
    for (int64_t jt = 0; jt <= it; jt++) {
        const int64_t j0 = c * s.L + jt * SSD_TILE, j1 = j0 + SSD_TILE < cend ? j0 + SSD_TILE : cend;
        {
            const int ii = threadIdx.x / SSD_TILE, jj = threadIdx.x % SSD_TILE;
            const int64_t i = i0 + ii, j = j0 + jj;
            float w = 0.0f;
            if (i < i1 && j < j1 && j <= i) {
                const float *Ci = in.Cm + (b * s.T + i) * in.ldx + g * s.N;
                const float *Bj = in.Bm + (b * s.T + j) * in.ldx + g * s.N;
                float dot = 0.0f;
                for (int64_t n = 0; n < s.N; n++) dot += Ci[n] * Bj[n];
                w = expf(csr[i] - csr[j]) * dtr[j] * dot;
            }
            W[ii][jj] = w;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < SSD_MAXACC; k++) {
            const int64_t o = threadIdx.x + (int64_t)k * SSD_THREADS, ii = o / s.P, p = o % s.P;
            if (ii < SSD_TILE && i0 + ii < i1)
                for (int64_t j = j0; j < j1; j++)
                    acc[k] += W[ii][j - j0] * in.x[(b * s.T + j) * in.ldx + h * s.P + p];
        }
        __syncthreads();
    }
    const float Dh = in.Dskip ? in.Dskip[h] : 0.0f;
#pragma unroll
    for (int k = 0; k < SSD_MAXACC; k++) {
        const int64_t o = threadIdx.x + (int64_t)k * SSD_THREADS, ii = o / s.P, p = o % s.P;
        if (ii < SSD_TILE && i0 + ii < i1) {
            const int64_t r = b * s.T + i0 + ii;
            y[r * HP + h * s.P + p] = acc[k] + Dh * in.x[r * in.ldx + h * s.P + p];
        }
    }
}

/* grid (nch, H, B): sloc (B, H, nch, P*N) = the chunk's own end state */
__global__ void ssd_chunk_state_kernel(float *sloc, lmc_ssd_io in, const float *dtv, const float *cs,
                                       ssd_dims s) {
    const int64_t c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (s.H / s.G), PN = s.P * s.N;
    const int64_t t0 = c * s.L, t1 = t0 + s.L < s.T ? t0 + s.L : s.T;
    const float *csr = cs + (b * s.H + h) * s.T, *dtr = dtv + (b * s.H + h) * s.T;
    float *out = sloc + ((b * s.H + h) * s.nch + c) * PN;
    for (int64_t e = threadIdx.x; e < PN; e += blockDim.x) {
        const int64_t p = e / s.N, n = e % s.N;
        float acc = 0.0f;
        for (int64_t t = t0; t < t1; t++) {
            const int64_t r = b * s.T + t;
            acc += expf(csr[t1 - 1] - csr[t]) * dtr[t] * in.x[r * in.ldx + h * s.P + p] *
                   in.Bm[r * in.ldx + g * s.N + n];
        }
        out[e] = acc;
    }
}

/* grid (ceil(PN/256), H, B): sloc[c] becomes the state entering chunk c */
__global__ void ssd_pass_kernel(float *sloc, float *state, const int32_t *slots, const float *cs,
                                ssd_dims s) {
    const int64_t h = blockIdx.y, b = blockIdx.z, PN = s.P * s.N;
    const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (e >= PN) return;
    float *st = state ? state + (lmc_ssm_slot_d(slots, b) * s.H + h) * PN : NULL;
    float S = st ? st[e] : 0.0f;
    const float *csr = cs + (b * s.H + h) * s.T;
    for (int64_t c = 0; c < s.nch; c++) {
        float *q = sloc + ((b * s.H + h) * s.nch + c) * PN + e;
        const int64_t last = ((c + 1) * s.L < s.T ? (c + 1) * s.L : s.T) - 1;
        const float tmp = *q;
        *q = S;
        S = expf(csr[last]) * S + tmp;
    }
    if (st) st[e] = S;
}

/* y += exp(cs_t) S_in(chunk of t) C_t */
__global__ void ssd_inter_kernel(float *y, lmc_ssd_io in, const float *sloc, const float *cs,
                                 ssd_dims s) {
    const int64_t HP = s.H * s.P, PN = s.P * s.N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < s.B * s.T * HP;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t p = i % s.P, h = (i / s.P) % s.H, r = i / HP, t = r % s.T, b = r / s.T;
        const int64_t g = h / (s.H / s.G), c = t / s.L;
        const float *Sp = sloc + ((b * s.H + h) * s.nch + c) * PN + p * s.N;
        const float *Cm = in.Cm + r * in.ldx + g * s.N;
        float acc = 0.0f;
        for (int64_t n = 0; n < s.N; n++) acc += Sp[n] * Cm[n];
        y[i] += expf(cs[(b * s.H + h) * s.T + t]) * acc;
    }
}

static ssd_dims ssd_make_dims(const struct lmc_ssd_io *in, const struct lmc_ssd_shape *sh) {
    LMC_ASSERT(sh->H > 0 && sh->P > 0 && sh->G > 0 && sh->N > 0 && sh->H % sh->G == 0);
    LMC_ASSERT(sh->chunk > 0 && in->ldx >= sh->H * sh->P && in->lddt >= sh->H);
    LMC_ASSERT(sh->H <= 65535 && sh->B <= 65535);
    ssd_dims s = {sh->B, sh->T, sh->H, sh->P, sh->G, sh->N, sh->chunk,
                  (sh->T + sh->chunk - 1) / sh->chunk};
    return s;
}

extern "C" void lmc_cuda_ssd_chunk(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                                   const int32_t *slots, const struct lmc_ssd_shape *sh) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (sh->B <= 0 || sh->T <= 0) return;
    const ssd_dims s = ssd_make_dims(in, sh);
    LMC_ASSERT(SSD_TILE * s.P <= SSD_THREADS * SSD_MAXACC);
    const int64_t BHT = s.B * s.H * s.T, PN = s.P * s.N;
    const size_t o_cs = lmc_cuda_al256((size_t)BHT * 4), o_sl = 2 * o_cs;
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, o_sl + (size_t)(s.B * s.H * s.nch * PN) * 4);
    float *dtv = (float *)c->scratch, *cs = (float *)((char *)c->scratch + o_cs);
    float *sloc = (float *)((char *)c->scratch + o_sl);
    ssd_cs_kernel<<<lmc_cuda_blocks(s.B * s.H * s.nch, 128), 128, 0, c->stream>>>(dtv, cs, *in, s);
    LMC_CUDA_LAUNCH_CHECK();
    const int64_t tpc = (s.L + SSD_TILE - 1) / SSD_TILE;
    LMC_ASSERT(s.nch * tpc <= 0x7fffffff);
    ssd_intra_kernel<<<dim3((unsigned)(s.nch * tpc), (unsigned)s.H, (unsigned)s.B), SSD_THREADS, 0,
                       c->stream>>>(y, *in, dtv, cs, s);
    LMC_CUDA_LAUNCH_CHECK();
    ssd_chunk_state_kernel<<<dim3((unsigned)s.nch, (unsigned)s.H, (unsigned)s.B), SSD_THREADS, 0,
                             c->stream>>>(sloc, *in, dtv, cs, s);
    LMC_CUDA_LAUNCH_CHECK();
    ssd_pass_kernel<<<dim3((unsigned)((PN + 255) / 256), (unsigned)s.H, (unsigned)s.B), 256, 0,
                      c->stream>>>(sloc, state, slots, cs, s);
    LMC_CUDA_LAUNCH_CHECK();
    ssd_inter_kernel<<<lmc_cuda_blocks(s.B * s.T * s.H * s.P, 256), 256, 0, c->stream>>>(y, *in, sloc,
                                                                                       cs, s);
    LMC_CUDA_LAUNCH_CHECK();
}

__global__ void ssd_step_kernel(float *y, lmc_ssd_io in, float *state, const int32_t *slots,
                                ssd_dims s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < s.B * s.H * s.P;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t p = i % s.P, h = (i / s.P) % s.H, b = i / (s.P * s.H), g = h / (s.H / s.G);
        const float dt = ssd_dt_d(in, b, h), a = expf(dt * -expf(in.A_log[h]));
        const float xv = in.x[b * in.ldx + h * s.P + p], xdt = dt * xv;
        const float *Bm = in.Bm + b * in.ldx + g * s.N, *Cm = in.Cm + b * in.ldx + g * s.N;
        float *Sp = state + ((lmc_ssm_slot_d(slots, b) * s.H + h) * s.P + p) * s.N;
        float acc = 0.0f;
        for (int64_t n = 0; n < s.N; n++) {
            const float v = a * Sp[n] + xdt * Bm[n];
            Sp[n] = v;
            acc += v * Cm[n];
        }
        y[b * s.H * s.P + h * s.P + p] = acc + (in.Dskip ? in.Dskip[h] : 0.0f) * xv;
    }
}

extern "C" void lmc_cuda_ssd_step(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                                  const int32_t *slots, const struct lmc_ssd_shape *sh) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (sh->B <= 0) return;
    const ssd_dims s = ssd_make_dims(in, sh);
    LMC_ASSERT(sh->T == 1 && state != NULL);
    ssd_step_kernel<<<lmc_cuda_blocks(s.B * s.H * s.P, 128), 128, 0, c->stream>>>(y, *in, state,
                                                                                 slots, s);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward (zero state before t = 0; ops/cpu/ssd_chunk.c has the formulas) ----
 * One block per (sequence, head). Each thread owns the state elements
 * e = threadIdx.x + k * blockDim.x of S (P, N) and of G = dL/dS; the
 * per-token products are staged in global scratch and summed by rows (dx)
 * and columns (dB, dC) in index order after a barrier. Scratch per block:
 * checkpoints (n_ck, PN), a segment (L+1, PN), G, and three product
 * arrays (PN each). */
struct ssd_bwd_bufs {
    float *scr;          /* per block: (n_ck + Ls + 1 + 4) * PN */
    float *pB, *pC;      /* (B*T, H, N) per-head dB, dC */
    double *pscal;       /* (B*H, 3): dA, dD, dbias per (sequence, head) */
    int64_t Ls, n_ck;    /* checkpoint interval, count */
};

__global__ void __launch_bounds__(SSD_THREADS)
    ssd_bwd_kernel(lmc_ssd_grads gr, const float *dy, lmc_ssd_io in, ssd_dims s, ssd_bwd_bufs w) {
    __shared__ double sh[32];
    const int64_t h = blockIdx.x, b = blockIdx.y, g = h / (s.H / s.G);
    const int64_t P = s.P, N = s.N, PN = P * N, T = s.T, L = w.Ls, HP = s.H * P;
    float *ck = w.scr + (b * s.H + h) * (w.n_ck + L + 5) * PN, *seg = ck + w.n_ck * PN;
    float *G = seg + (L + 1) * PN, *prB = G + PN, *prX = prB + PN, *prS = prX + PN;
    const float A = -expf(in.A_log[h]), Dh = in.Dskip ? in.Dskip[h] : 0.0f;
    for (int64_t e = threadIdx.x; e < PN; e += blockDim.x) G[e] = 0.0f, seg[e] = 0.0f;
    for (int64_t t = 0; t < T; t++) { /* checkpoints (seg row 0 as the running state) */
        const int64_t r = b * T + t;
        const float dt = ssd_dt_d(in, r, h), a = expf(dt * A);
        for (int64_t e = threadIdx.x; e < PN; e += blockDim.x) {
            if (t % L == 0) ck[(t / L) * PN + e] = seg[e];
            const int64_t p = e / N, n = e % N;
            seg[e] = a * seg[e] + dt * in.x[r * in.ldx + h * P + p] * in.Bm[r * in.ldx + g * N + n];
        }
    }
    double dA = 0, dD = 0, dbias = 0;
    for (int64_t t1 = T; t1 > 0;) {
        const int64_t t0 = ((t1 - 1) / L) * L, len = t1 - t0;
        for (int64_t e = threadIdx.x; e < PN; e += blockDim.x) {
            const int64_t p = e / N, n = e % N;
            float v = ck[(t0 / L) * PN + e];
            seg[e] = v;
            for (int64_t i = 0; i < len; i++) {
                const int64_t r = b * T + t0 + i;
                const float dt = ssd_dt_d(in, r, h);
                v = expf(dt * A) * v + dt * in.x[r * in.ldx + h * P + p] * in.Bm[r * in.ldx + g * N + n];
                seg[(i + 1) * PN + e] = v;
            }
        }
        for (int64_t i = len - 1; i >= 0; i--) {
            const int64_t r = b * T + t0 + i;
            const float raw = in.dt[r * in.lddt + h] + (in.dt_bias ? in.dt_bias[h] : 0.0f);
            const float dt = ssd_dt_d(in, r, h), a = expf(dt * A);
            const float *x = in.x + r * in.ldx + h * P, *Bm = in.Bm + r * in.ldx + g * N;
            const float *Cm = in.Cm + r * in.ldx + g * N, *dyr = dy + r * HP + h * P;
            double gs = 0;
            for (int64_t e = threadIdx.x; e < PN; e += blockDim.x) {
                const int64_t p = e / N, n = e % N;
                const float gn = G[e] + dyr[p] * Cm[n];
                prB[e] = gn * Bm[n];
                prX[e] = gn * x[p];
                prS[e] = seg[(i + 1) * PN + e] * dyr[p];
                gs += (double)gn * seg[i * PN + e];
                G[e] = gn * a;
            }
            gs = lmc_block_sum_d(gs, sh); /* its barriers also publish the products */
            double dxs = 0, dds = 0;
            for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
                float rs = 0.0f;
                for (int64_t n = 0; n < N; n++) rs += prB[p * N + n];
                gr.dx[r * in.ldx + h * P + p] = dt * rs + Dh * dyr[p];
                dxs += (double)x[p] * rs;
                dds += (double)dyr[p] * x[p];
            }
            for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
                float sb = 0.0f, sc = 0.0f;
                for (int64_t p = 0; p < P; p++) sb += prX[p * N + n], sc += prS[p * N + n];
                w.pB[(r * s.H + h) * N + n] = dt * sb;
                w.pC[(r * s.H + h) * N + n] = sc;
            }
            dxs = lmc_block_sum_d(dxs, sh);
            dds = lmc_block_sum_d(dds, sh);
            const double ddt = dxs + (double)a * A * gs;
            dA += (double)dt * a * gs;
            dD += dds;
            const float v = lmc_ssm_softplus_d(raw);
            const float dr = (v < in.dt_min || v > in.dt_max) ? 0.0f
                                                              : (float)ddt * lmc_ssm_softplus_grad_d(raw);
            if (threadIdx.x == 0) gr.ddt[r * in.lddt + h] = dr;
            dbias += dr;
            __syncthreads(); /* the products are rewritten by the next token */
        }
        t1 = t0;
    }
    if (threadIdx.x == 0) {
        double *q = w.pscal + (b * s.H + h) * 3;
        q[0] = dA * A, q[1] = dD, q[2] = dbias;
    }
}

/* dBm/dCm: sum of the group's heads in head order; the per-head scalars over sequences */
__global__ void ssd_bwd_sum_kernel(lmc_ssd_grads gr, int64_t ldx, ssd_bwd_bufs w, ssd_dims s) {
    const int64_t GN = s.G * s.N, hpg = s.H / s.G;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < s.B * s.T * GN;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / GN, k = i % GN, g = k / s.N, n = k % s.N;
        float sb = 0.0f, sc = 0.0f;
        for (int64_t h = g * hpg; h < (g + 1) * hpg; h++)
            sb += w.pB[(r * s.H + h) * s.N + n], sc += w.pC[(r * s.H + h) * s.N + n];
        gr.dBm[r * ldx + k] = sb;
        gr.dCm[r * ldx + k] = sc;
    }
    for (int64_t h = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; h < s.H;
         h += (int64_t)gridDim.x * blockDim.x) {
        double a = 0, d = 0, bb = 0;
        for (int64_t b = 0; b < s.B; b++)
            a += w.pscal[(b * s.H + h) * 3], d += w.pscal[(b * s.H + h) * 3 + 1],
                bb += w.pscal[(b * s.H + h) * 3 + 2];
        if (gr.dA_log) gr.dA_log[h] += (float)a;
        if (gr.dDskip) gr.dDskip[h] += (float)d;
        if (gr.ddt_bias) gr.ddt_bias[h] += (float)bb;
    }
}

extern "C" void lmc_cuda_ssd_chunk_bwd(void *ctx, const struct lmc_ssd_grads *g, const float *dy,
                                       const struct lmc_ssd_io *in, const struct lmc_ssd_shape *sh) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (sh->B <= 0 || sh->T <= 0) return;
    const ssd_dims s = ssd_make_dims(in, sh);
    ssd_bwd_bufs w;
    w.Ls = 1;
    while ((w.Ls + 1) * (w.Ls + 1) <= s.T) w.Ls++;
    w.n_ck = (s.T + w.Ls - 1) / w.Ls;
    const int64_t PN = s.P * s.N, BH = s.B * s.H;
    const size_t o_p = lmc_cuda_al256((size_t)(BH * (w.n_ck + w.Ls + 5) * PN) * 4);
    const size_t o_s = o_p + 2 * lmc_cuda_al256((size_t)(s.B * s.T * s.H * s.N) * 4);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, o_s + (size_t)BH * 3 * sizeof(double));
    w.scr = (float *)c->scratch;
    w.pB = (float *)((char *)c->scratch + o_p);
    w.pC = (float *)((char *)c->scratch + o_p + lmc_cuda_al256((size_t)(s.B * s.T * s.H * s.N) * 4));
    w.pscal = (double *)((char *)c->scratch + o_s);
    ssd_bwd_kernel<<<dim3((unsigned)s.H, (unsigned)s.B), SSD_THREADS, 0, c->stream>>>(*g, dy, *in, s, w);
    LMC_CUDA_LAUNCH_CHECK();
    ssd_bwd_sum_kernel<<<lmc_cuda_blocks(LMC_MAX(s.B * s.T * s.G * s.N, s.H), 256), 256, 0,
                         c->stream>>>(*g, in->ldx, w, s);
    LMC_CUDA_LAUNCH_CHECK();
}
