/* conv1d_causal.cu — causal depthwise conv1d on the GPU (bias and SiLU
 * fused, optional carried conv state): forward with one thread per output
 * element, the state update (one thread per channel, oldest row first, as
 * the CPU twin), the decode step, and the backward: dx per element with
 * the pre-activations recomputed, dw and dbias through lmc_colsum (fixed
 * order, no atomics). */
#include "ops/cuda/ssm.cuh"

struct conv_args {
    const float *x, *w, *bias;
    const float *state; /* read side: NULL or the pool */
    const int32_t *slots;
    int64_t ldx, B, T, C, K;
};

/* conv input of sequence b at position s (s < 0: from the state, or 0) */
__device__ __forceinline__ float conv_in_d(const conv_args &a, int64_t b, int64_t s, int64_t c) {
    if (s >= 0) return a.x[(b * a.T + s) * a.ldx + c];
    if (!a.state) return 0.0f;
    return a.state[lmc_ssm_slot_d(a.slots, b) * (a.K - 1) * a.C + (a.K - 1 + s) * a.C + c];
}

__device__ __forceinline__ float conv_pre_d(const conv_args &a, int64_t b, int64_t t, int64_t c) {
    float acc = a.bias ? a.bias[c] : 0.0f;
    for (int64_t k = 0; k < a.K; k++) acc += a.w[c * a.K + k] * conv_in_d(a, b, t - a.K + 1 + k, c);
    return acc;
}

__global__ void conv1d_causal_fwd_kernel(float *y, conv_args a, int silu) {
    const int64_t n = a.B * a.T * a.C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % a.C, bt = i / a.C, t = bt % a.T, b = bt / a.T;
        float v = conv_pre_d(a, b, t, c);
        y[i] = silu ? lmc_ssm_silu_d(v) : v;
    }
}

/* new state row r = the input at T-K+1+r; ascending r only reads old rows >= r */
__global__ void conv1d_causal_state_kernel(float *state, conv_args a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.B * a.C;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % a.C, b = i / a.C;
        float *st = state + lmc_ssm_slot_d(a.slots, b) * (a.K - 1) * a.C;
        for (int64_t r = 0; r < a.K - 1; r++) st[r * a.C + c] = conv_in_d(a, b, a.T - a.K + 1 + r, c);
    }
}

extern "C" void lmc_cuda_conv1d_causal(void *ctx, float *y, const float *x, int64_t ldx,
                                       const float *w, const float *bias, float *state,
                                       const int32_t *slots, int64_t B, int64_t T, int64_t C,
                                       int64_t K, int silu) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || T <= 0 || C <= 0) return;
    LMC_ASSERT(K >= 1 && ldx >= C);
    conv_args a = {x, w, bias, state, slots, ldx, B, T, C, K};
    conv1d_causal_fwd_kernel<<<lmc_cuda_blocks(B * T * C, 256), 256, 0, c->stream>>>(y, a, silu);
    LMC_CUDA_LAUNCH_CHECK();
    if (state && K > 1) {
        conv1d_causal_state_kernel<<<lmc_cuda_blocks(B * C, 256), 256, 0, c->stream>>>(state, a);
        LMC_CUDA_LAUNCH_CHECK();
    }
}

__global__ void conv1d_causal_step_kernel(float *y, float *state, const float *x, int64_t ldx,
                                          const float *w, const float *bias, const int32_t *slots,
                                          int64_t B, int64_t C, int64_t K, int silu) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < B * C;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % C, b = i / C;
        float *st = state + lmc_ssm_slot_d(slots, b) * (K - 1) * C;
        const float xv = x[b * ldx + c];
        float a = bias ? bias[c] : 0.0f;
        for (int64_t k = 0; k < K - 1; k++) a += w[c * K + k] * st[k * C + c];
        a += w[c * K + K - 1] * xv;
        for (int64_t k = 0; k + 1 < K - 1; k++) st[k * C + c] = st[(k + 1) * C + c];
        if (K > 1) st[(K - 2) * C + c] = xv;
        y[b * C + c] = silu ? lmc_ssm_silu_d(a) : a;
    }
}

extern "C" void lmc_cuda_conv1d_causal_step(void *ctx, float *y, const float *x, int64_t ldx,
                                            const float *w, const float *bias, float *state,
                                            const int32_t *slots, int64_t B, int64_t C, int64_t K,
                                            int silu) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || C <= 0) return;
    LMC_ASSERT(K >= 1 && ldx >= C && state);
    conv1d_causal_step_kernel<<<lmc_cuda_blocks(B * C, 256), 256, 0, c->stream>>>(
        y, state, x, ldx, w, bias, slots, B, C, K, silu);
    LMC_CUDA_LAUNCH_CHECK();
}

/* ---- backward (zero state before t = 0) ----
 * da = dy * silu'(a);  dx[s,c] = sum_k w[c,k] da[s+K-1-k,c]
 * dw[c,k] += sum_t da[t,c] x[t-K+1+k,c];  dbias[c] += sum_t da[t,c] */
__device__ __forceinline__ float conv_da_d(const conv_args &a, const float *dy, int silu, int64_t b,
                                           int64_t t, int64_t c) {
    float g = dy[(b * a.T + t) * a.C + c];
    return silu ? g * lmc_ssm_silu_grad_d(conv_pre_d(a, b, t, c)) : g;
}

__global__ void conv1d_causal_bwd_kernel(float *dx, const float *dy, conv_args a, int silu) {
    const int64_t n = a.B * a.T * a.C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % a.C, bt = i / a.C, s = bt % a.T, b = bt / a.T;
        float acc = 0.0f;
        for (int64_t k = 0; k < a.K; k++) {
            int64_t t = s + a.K - 1 - k;
            if (t < a.T) acc += a.w[c * a.K + k] * conv_da_d(a, dy, silu, b, t, c);
        }
        dx[bt * a.ldx + c] = acc;
    }
}

struct conv_dw_term { /* column j = c*K + k over rows m = b*T + t */
    conv_args a;
    const float *dy;
    int silu;
    __device__ float operator()(int64_t m, int64_t j) const {
        const int64_t c = j / a.K, k = j % a.K, t = m % a.T, b = m / a.T, s = t - a.K + 1 + k;
        return s < 0 ? 0.0f : conv_da_d(a, dy, silu, b, t, c) * a.x[(b * a.T + s) * a.ldx + c];
    }
};
struct conv_db_term {
    conv_args a;
    const float *dy;
    int silu;
    __device__ float operator()(int64_t m, int64_t c) const {
        return conv_da_d(a, dy, silu, m / a.T, m % a.T, c);
    }
};

extern "C" void lmc_cuda_conv1d_causal_bwd(void *ctx, float *dx, float *dw, float *dbias,
                                           const float *dy, const float *x, int64_t ldx,
                                           const float *w, const float *bias, int64_t B, int64_t T,
                                           int64_t C, int64_t K, int silu) {
    struct lmc_cuda_ctx *c = (struct lmc_cuda_ctx *)ctx;
    if (B <= 0 || T <= 0 || C <= 0) return;
    LMC_ASSERT(K >= 1 && ldx >= C);
    conv_args a = {x, w, bias, NULL, NULL, ldx, B, T, C, K};
    conv1d_causal_bwd_kernel<<<lmc_cuda_blocks(B * T * C, 256), 256, 0, c->stream>>>(dx, dy, a, silu);
    LMC_CUDA_LAUNCH_CHECK();
    const int64_t M = B * T;
    if (dw || dbias) {
        size_t sz = (size_t)(lmc_colsum_chunks(M) * C * K) * sizeof(double);
        lmc_cuda_reserve(c, &c->scratch, &c->scratch_bytes, sz);
    }
    if (dw) lmc_colsum(c, dw, (double *)c->scratch, M, C * K, conv_dw_term{a, dy, silu});
    if (dbias) lmc_colsum(c, dbias, (double *)c->scratch, M, C, conv_db_term{a, dy, silu});
}
