/* ssm_scan.cu — Mamba-1's selective scan on the GPU (ops/ssm.h gives the
 * recurrence): forward over a prompt, decode step, recomputation backward.
 *
 * Forward: S lanes of a warp per channel (S = N rounded up to a power of
 * two, at most 32; each lane keeps up to SCAN_MAXJ states in registers),
 * one fused pass per token: discretisation, state update, C readout
 * (a shuffle sum over the S lanes), D skip and the SiLU gate. Channels run
 * in parallel; from 2 * SCAN_CHUNK tokens on, chunks of the sequence do
 * too: each chunk's end state from zero, a pass over chunks turning those
 * into entering states (the decay over a chunk is exp(A * sum dt)), then
 * every chunk again from its entering state, writing y. Decode is the
 * direct kernel with T = 1.
 *
 * Backward: a block holds 256/S channels and loops over the sequences; per
 * channel the states are checkpointed every L = sqrt(T) tokens in global
 * scratch and recomputed segment by segment (memory O(sqrt(T) N) per
 * channel). dBm/dCm (sums over channels) are reduced over the block's
 * channels in a fixed order (warp shuffles, then shared memory), written
 * as one partial per block, and summed over blocks in block order by a
 * second kernel: deterministic, no atomics. */
#include "ops/cuda/ssm.cuh"

#define SCAN_MAXJ 8      /* N <= 32 * SCAN_MAXJ */
#define SCAN_THREADS 256

static int scan_lanes(int64_t N) {
    int s = 1;
    while (s < N && s < 32) s *= 2;
    return s;
}

/* Chunked forward (T >= 2 * SCAN_CHUNK): blockIdx.y is a chunk of
 * SCAN_CHUNK tokens, all chunks run at once. mode SCAN_DIRECT: one chunk
 * of the whole sequence, from and to `state`. SCAN_LOCAL: each chunk from
 * a zero state, writing its end state to hbuf (B, nch, D, N) and its sum
 * of dt to sdt (B, nch, D); no y. SCAN_FINAL: each chunk from the state
 * entering it (hbuf, after ssm_scan_combine_kernel), writing y. */
#define SCAN_CHUNK 128
enum { SCAN_DIRECT = 0, SCAN_LOCAL = 1, SCAN_FINAL = 2 };

__global__ void __launch_bounds__(SCAN_THREADS)
    ssm_scan_fwd_kernel(float *y, lmc_ssm_io in, float *state, const int32_t *slots, int64_t B,
                        int64_t T, int64_t D, int64_t N, int S, int mode, float *hbuf, float *sdt) {
    const int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, ch = g / S;
    const int sub = (int)(g % S), J = (int)((N + S - 1) / S);
    const bool valid = ch < B * D;
    const int64_t b = valid ? ch / D : 0, d = valid ? ch % D : 0;
    const int64_t nch = gridDim.y, c = blockIdx.y;
    const int64_t t0 = mode == SCAN_DIRECT ? 0 : c * SCAN_CHUNK;
    const int64_t t1 = mode == SCAN_DIRECT ? T : (t0 + SCAN_CHUNK < T ? t0 + SCAN_CHUNK : T);
    float *st = valid && state && mode == SCAN_DIRECT ? state + lmc_ssm_slot_d(slots, b) * D * N + d * N : NULL;
    float *hc = valid && mode != SCAN_DIRECT ? hbuf + ((b * nch + c) * D + d) * N : NULL;
    float h[SCAN_MAXJ], A[SCAN_MAXJ];
#pragma unroll
    for (int j = 0; j < SCAN_MAXJ; j++) {
        const int64_t n = sub + (int64_t)j * S;
        const bool on = j < J && n < N;
        A[j] = on ? -expf(in.A_log[d * N + n]) : 0.0f;
        h[j] = on && st ? st[n] : on && hc && mode == SCAN_FINAL ? hc[n] : 0.0f;
    }
    const float bias = in.delta_bias ? in.delta_bias[d] : 0.0f, Dd = in.Dskip ? in.Dskip[d] : 0.0f;
    float dtsum = 0.0f;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t r = b * T + t;
        const float dt = lmc_ssm_softplus_d(in.delta[r * D + d] + bias), u = in.u[r * D + d];
        const float *Bm = in.Bm + r * in.ldbc, *Cm = in.Cm + r * in.ldbc;
        dtsum += dt;
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < SCAN_MAXJ; j++) {
            const int64_t n = sub + (int64_t)j * S;
            if (j < J && n < N) {
                h[j] = expf(dt * A[j]) * h[j] + dt * Bm[n] * u;
                acc += h[j] * Cm[n];
            }
        }
        if (mode == SCAN_LOCAL) continue; /* uniform over the grid */
        for (int o = S / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (valid && sub == 0) {
            float v = acc + Dd * u;
            y[r * D + d] = in.z ? v * lmc_ssm_silu_d(in.z[r * in.ldz + d]) : v;
        }
    }
    float *out = st ? st : mode == SCAN_LOCAL ? hc : NULL;
    if (out)
#pragma unroll
        for (int j = 0; j < SCAN_MAXJ; j++) {
            const int64_t n = sub + (int64_t)j * S;
            if (j < J && n < N) out[n] = h[j];
        }
    if (mode == SCAN_LOCAL && valid && sub == 0) sdt[(b * nch + c) * D + d] = dtsum;
}

/* hbuf[c] (a chunk's end state from zero) becomes the state entering chunk
 * c: h_in(c+1) = exp(A sum(dt of c)) h_in(c) + hbuf[c]; the last one goes
 * to `state`. One thread per (sequence, channel, state). */
__global__ void ssm_scan_combine_kernel(float *hbuf, const float *sdt, float *state,
                                        const int32_t *slots, const float *A_log, int64_t B,
                                        int64_t nch, int64_t D, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B * D * N;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = i % N, d = (i / N) % D, b = i / (N * D);
        const float A = -expf(A_log[d * N + n]);
        float *st = state ? state + lmc_ssm_slot_d(slots, b) * D * N + d * N + n : NULL;
        float h = st ? *st : 0.0f;
        for (int64_t c = 0; c < nch; c++) {
            float *q = hbuf + ((b * nch + c) * D + d) * N + n;
            const float loc = *q;
            *q = h;
            h = expf(A * sdt[(b * nch + c) * D + d]) * h + loc;
        }
        if (st) *st = h;
    }
}

extern "C" void lmc_cuda_ssm_scan(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                                  const int32_t *slots, int64_t B, int64_t T, int64_t D, int64_t N) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || T <= 0 || D <= 0 || N <= 0) return;
    LMC_ASSERT(N <= 32 * SCAN_MAXJ && in->ldbc >= N && (!in->z || in->ldz >= D));
    const int S = scan_lanes(N);
    const int64_t threads = B * D * S;
    LMC_ASSERT((threads + SCAN_THREADS - 1) / SCAN_THREADS <= 0x7fffffff);
    const unsigned bx = (unsigned)((threads + SCAN_THREADS - 1) / SCAN_THREADS);
    if (T < 2 * SCAN_CHUNK) {
        ssm_scan_fwd_kernel<<<dim3(bx, 1), SCAN_THREADS, 0, c->stream>>>(y, *in, state, slots, B, T, D, N,
                                                                         S, SCAN_DIRECT, nullptr, nullptr);
        LMC_CUDA_LAUNCH_CHECK();
        return;
    }
    /* chunks in parallel: local end states, the pass over chunks, the outputs */
    const int64_t nch = (T + SCAN_CHUNK - 1) / SCAN_CHUNK;
    LMC_ASSERT(nch <= 65535);
    const size_t o_s = lmc_cuda_al256((size_t)(B * nch * D * N) * 4);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, o_s + (size_t)(B * nch * D) * 4);
    float *hbuf = (float *)c->scratch, *sdt = (float *)((char *)c->scratch + o_s);
    ssm_scan_fwd_kernel<<<dim3(bx, (unsigned)nch), SCAN_THREADS, 0, c->stream>>>(
        y, *in, nullptr, nullptr, B, T, D, N, S, SCAN_LOCAL, hbuf, sdt);
    LMC_CUDA_LAUNCH_CHECK();
    ssm_scan_combine_kernel<<<lmc_cuda_blocks(B * D * N, 256), 256, 0, c->stream>>>(
        hbuf, sdt, state, slots, in->A_log, B, nch, D, N);
    LMC_CUDA_LAUNCH_CHECK();
    ssm_scan_fwd_kernel<<<dim3(bx, (unsigned)nch), SCAN_THREADS, 0, c->stream>>>(
        y, *in, nullptr, nullptr, B, T, D, N, S, SCAN_FINAL, hbuf, sdt);
    LMC_CUDA_LAUNCH_CHECK();
}

extern "C" void lmc_cuda_ssm_scan_step(void *ctx, float *y, const struct lmc_ssm_io *in,
                                       float *state, const int32_t *slots, int64_t B, int64_t D,
                                       int64_t N) {
    LMC_ASSERT(state != NULL);
    lmc_cuda_ssm_scan(ctx, y, in, state, slots, B, 1, D, N);
}

/* ---- backward (zero state before t = 0; ops/cpu/ssm_scan.c has the formulas) ---- */
__global__ void __launch_bounds__(SCAN_THREADS)
    ssm_scan_bwd_kernel(lmc_ssm_grads gr, const float *dy, lmc_ssm_io in, float *ckbuf,
                        float *part, int64_t B, int64_t T, int64_t D, int64_t N, int S, int64_t L) {
    __shared__ float shB[SCAN_THREADS / 32][32 * SCAN_MAXJ];
    __shared__ float shC[SCAN_THREADS / 32][32 * SCAN_MAXJ];
    const int cpb = SCAN_THREADS / S, sub = (int)(threadIdx.x % S), J = (int)((N + S - 1) / S);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t d0 = (int64_t)blockIdx.x * cpb, dl = threadIdx.x / S;
    const bool valid = d0 + dl < D;
    const int64_t d = valid ? d0 + dl : 0, n_ck = (T + L - 1) / L;
    float *ck = ckbuf + (d0 + dl) * (n_ck + L + 1) * N, *seg = ck + n_ck * N; /* padded: own rows */
    float *pB = part + (int64_t)blockIdx.x * 2 * B * T * N, *pC = pB + B * T * N;
    float A[SCAN_MAXJ];
    double dA[SCAN_MAXJ];
#pragma unroll
    for (int j = 0; j < SCAN_MAXJ; j++) {
        const int64_t n = sub + (int64_t)j * S;
        A[j] = j < J && n < N ? -expf(in.A_log[d * N + n]) : 0.0f;
        dA[j] = 0;
    }
    const float bias = in.delta_bias ? in.delta_bias[d] : 0.0f, Dd = in.Dskip ? in.Dskip[d] : 0.0f;
    double dD = 0, dbias = 0;
    for (int64_t b = 0; b < B; b++) {
        float h[SCAN_MAXJ], gc[SCAN_MAXJ];
#pragma unroll
        for (int j = 0; j < SCAN_MAXJ; j++) h[j] = 0.0f, gc[j] = 0.0f;
        for (int64_t t = 0; t < T; t++) { /* checkpoints: the state before token k*L */
            const int64_t r = b * T + t;
            const float dt = lmc_ssm_softplus_d(in.delta[r * D + d] + bias), u = in.u[r * D + d];
#pragma unroll
            for (int j = 0; j < SCAN_MAXJ; j++) {
                const int64_t n = sub + (int64_t)j * S;
                if (j < J && n < N) {
                    if (t % L == 0) ck[(t / L) * N + n] = h[j];
                    h[j] = expf(dt * A[j]) * h[j] + dt * in.Bm[r * in.ldbc + n] * u;
                }
            }
        }
        for (int64_t t1 = T; t1 > 0;) {
            const int64_t t0 = ((t1 - 1) / L) * L, len = t1 - t0;
#pragma unroll
            for (int j = 0; j < SCAN_MAXJ; j++) {
                const int64_t n = sub + (int64_t)j * S;
                if (j < J && n < N) {
                    float hv = ck[(t0 / L) * N + n];
                    seg[n] = hv;
                    for (int64_t i = 0; i < len; i++) {
                        const int64_t r = b * T + t0 + i;
                        const float dt = lmc_ssm_softplus_d(in.delta[r * D + d] + bias);
                        hv = expf(dt * A[j]) * hv + dt * in.Bm[r * in.ldbc + n] * in.u[r * D + d];
                        seg[(i + 1) * N + n] = hv;
                    }
                }
            }
            for (int64_t i = len - 1; i >= 0; i--) {
                const int64_t r = b * T + t0 + i;
                const float x = in.delta[r * D + d] + bias, dt = lmc_ssm_softplus_d(x);
                const float u = in.u[r * D + d];
                const float *Bm = in.Bm + r * in.ldbc, *Cm = in.Cm + r * in.ldbc;
                const float dout = valid ? dy[r * D + d] : 0.0f;
                float dyv = dout;
                if (in.z) {
                    float yv = 0.0f;
#pragma unroll
                    for (int j = 0; j < SCAN_MAXJ; j++) {
                        const int64_t n = sub + (int64_t)j * S;
                        if (j < J && n < N) yv += Cm[n] * seg[(i + 1) * N + n];
                    }
                    for (int o = S / 2; o > 0; o >>= 1) yv += __shfl_xor_sync(0xffffffffu, yv, o);
                    yv += Dd * u;
                    const float z = in.z[r * in.ldz + d];
                    if (valid && sub == 0) gr.dz[r * in.ldz + d] = dout * yv * lmc_ssm_silu_grad_d(z);
                    dyv = dout * lmc_ssm_silu_d(z);
                }
                float du = 0.0f, ddt = 0.0f, vB[SCAN_MAXJ], vC[SCAN_MAXJ];
#pragma unroll
                for (int j = 0; j < SCAN_MAXJ; j++) {
                    const int64_t n = sub + (int64_t)j * S;
                    vB[j] = vC[j] = 0.0f;
                    if (j < J && n < N) {
                        const float hp = seg[i * N + n], hc = seg[(i + 1) * N + n];
                        const float a = expf(dt * A[j]), gn = gc[j] + dyv * Cm[n];
                        vC[j] = dyv * hc;
                        vB[j] = gn * dt * u;
                        du += gn * dt * Bm[n];
                        ddt += gn * (Bm[n] * u + hp * a * A[j]);
                        dA[j] += (double)gn * hp * a * dt;
                        gc[j] = gn * a;
                    }
                }
                for (int o = S / 2; o > 0; o >>= 1) {
                    du += __shfl_xor_sync(0xffffffffu, du, o);
                    ddt += __shfl_xor_sync(0xffffffffu, ddt, o);
                }
                if (valid && sub == 0) {
                    gr.du[r * D + d] = du + dyv * Dd;
                    const float dx = ddt * lmc_ssm_softplus_grad_d(x);
                    gr.ddelta[r * D + d] = dx;
                    dbias += dx;
                    dD += (double)dyv * u;
                }
                /* dB, dC: sum over the block's channels, in a fixed order */
#pragma unroll
                for (int j = 0; j < SCAN_MAXJ; j++) {
                    if (j >= J) break;
                    for (int o = S; o < 32; o <<= 1) {
                        vB[j] += __shfl_xor_sync(0xffffffffu, vB[j], o);
                        vC[j] += __shfl_xor_sync(0xffffffffu, vC[j], o);
                    }
                    if (lane < S) shB[warp][sub + j * S] = vB[j], shC[warp][sub + j * S] = vC[j];
                }
                __syncthreads();
                for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
                    float sb = 0.0f, sc = 0.0f;
                    for (int w = 0; w < (int)(blockDim.x >> 5); w++) sb += shB[w][n], sc += shC[w][n];
                    pB[r * N + n] = sb;
                    pC[r * N + n] = sc;
                }
                __syncthreads();
            }
            t1 = t0;
        }
    }
    if (!valid) return;
#pragma unroll
    for (int j = 0; j < SCAN_MAXJ; j++) {
        const int64_t n = sub + (int64_t)j * S;
        if (gr.dA_log && j < J && n < N) gr.dA_log[d * N + n] += (float)(dA[j] * A[j]);
    }
    if (sub == 0) {
        if (gr.dDskip) gr.dDskip[d] += (float)dD;
        if (gr.ddelta_bias) gr.ddelta_bias[d] += (float)dbias;
    }
}

__global__ void ssm_scan_bwd_sum_kernel(float *dB, float *dC, int64_t ldbc, const float *part,
                                        int64_t nblk, int64_t BT, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < BT * N;
         i += (int64_t)gridDim.x * blockDim.x) {
        float sb = 0.0f, sc = 0.0f;
        for (int64_t k = 0; k < nblk; k++) sb += part[k * 2 * BT * N + i], sc += part[(k * 2 + 1) * BT * N + i];
        const int64_t r = i / N, n = i % N;
        dB[r * ldbc + n] = sb;
        dC[r * ldbc + n] = sc;
    }
}

extern "C" void lmc_cuda_ssm_scan_bwd(void *ctx, const struct lmc_ssm_grads *g, const float *dy,
                                      const struct lmc_ssm_io *in, int64_t B, int64_t T,
                                      int64_t D, int64_t N) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || T <= 0 || D <= 0 || N <= 0) return;
    LMC_ASSERT(N <= 32 * SCAN_MAXJ && in->ldbc >= N && (!in->z || (in->ldz >= D && g->dz)));
    const int S = scan_lanes(N);
    int64_t L = 1;
    while ((L + 1) * (L + 1) <= T) L++;
    const int64_t n_ck = (T + L - 1) / L, cpb = SCAN_THREADS / S, nblk = (D + cpb - 1) / cpb;
    const size_t ck_bytes = lmc_cuda_al256((size_t)(nblk * cpb * (n_ck + L + 1) * N) * sizeof(float));
    const size_t part_bytes = (size_t)(nblk * 2 * B * T * N) * sizeof(float);
    lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, ck_bytes + part_bytes);
    float *ck = (float *)c->scratch, *part = (float *)((char *)c->scratch + ck_bytes);
    ssm_scan_bwd_kernel<<<(unsigned)nblk, SCAN_THREADS, 0, c->stream>>>(*g, dy, *in, ck, part, B, T,
                                                                        D, N, S, L);
    LMC_CUDA_LAUNCH_CHECK();
    ssm_scan_bwd_sum_kernel<<<lmc_cuda_blocks(B * T * N, 256), 256, 0, c->stream>>>(
        g->dBm, g->dCm, in->ldbc, part, nblk, B * T, N);
    LMC_CUDA_LAUNCH_CHECK();
}
