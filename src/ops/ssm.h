/* ssm.h — operands of the selective state-space ops (issue 15): Mamba's
 * selective scan and Mamba-2's chunked SSD, as backend.h's SSM entries take
 * them (by pointer; every pointer inside is backend memory). Rows are tokens:
 * row b*T + t is token t of sequence b. Strided operands let the ops read
 * their inputs where the projections wrote them (HF packs x|z, dt|B|C and
 * x|B|C into single rows) and write gradients into the same layout.
 *
 * Recurrent state per sequence (the "fixed slot" of a recurrent layer):
 *   conv:    (K-1, C)  the last K-1 conv inputs, oldest first
 *   Mamba-1: (D, N)    h[d][n]
 *   Mamba-2: (H, P, N) h[head][p][n]
 * Ops that take `state` read it as the state before the first token and
 * overwrite it with the state after the last; NULL = zero start, not kept.
 * `slots` (B entries, int32, backend memory) picks sequence b's state
 * state + slots[b] * (per-sequence size); NULL = slot b. */
#ifndef LMC_OPS_SSM_H
#define LMC_OPS_SSM_H

#include <stdint.h>

/* Mamba-1 selective scan, per channel d < D and state n < N:
 *   dt   = softplus(delta[t,d] + delta_bias[d])         (torch's, threshold 20)
 *   h[n] = exp(dt * A[d,n]) * h[n] + dt * Bm[t,n] * u[t,d],  A = -exp(A_log)
 *   y    = (sum_n Cm[t,n] h[n] + Dskip[d] u[t,d]) * silu(z[t,d]) */
struct lmc_ssm_io {
    const float *u;          /* (B*T, D) the scan input (the conv's output) */
    const float *delta;      /* (B*T, D) dt before bias and softplus */
    const float *delta_bias; /* (D) or NULL */
    const float *A_log;      /* (D, N) */
    const float *Bm, *Cm;    /* (N) each, row r at r * ldbc */
    int64_t ldbc;
    const float *Dskip;      /* (D) or NULL */
    const float *z;          /* (D), row r at r * ldz; NULL: no gate */
    int64_t ldz;
};

/* Gradients of the scan (ssm_scan_bwd). "=" outputs are overwritten (dBm,
 * dCm at stride ldbc and dz at stride ldz, as the operands); "+=" ones
 * accumulate. NULL skips a "+=" output. */
struct lmc_ssm_grads {
    float *du, *ddelta;                 /* (B*T, D) = */
    float *dBm, *dCm;                   /* = */
    float *dz;                          /* = (unused when z is NULL) */
    float *ddelta_bias, *dA_log, *dDskip; /* += (D), (D, N), (D) */
};

/* Mamba-2 SSD, per head h < H (group g = h / (H/G)), p < P, n < N:
 *   dt      = clamp(softplus(dt_raw[t,h] + dt_bias[h]), dt_min, dt_max)
 *   S[p][n] = exp(dt * A[h]) * S[p][n] + dt * x[t,h,p] * Bm[t,g,n],  A = -exp(A_log)
 *   y[t,h,p]= sum_n S[p][n] Cm[t,g,n] + Dskip[h] * x[t,h,p]
 * (the gate is rmsnorm_gated's). Prefill runs the chunked algorithm over
 * chunks of `chunk` tokens from the call's first token. */
struct lmc_ssd_io {
    const float *x;          /* (H*P), row r at r * ldx */
    const float *Bm, *Cm;    /* (G*N) each, row r at r * ldx */
    int64_t ldx;
    const float *dt;         /* (H), row r at r * lddt, raw (before bias) */
    int64_t lddt;
    const float *dt_bias;    /* (H) or NULL */
    const float *A_log;      /* (H) */
    const float *Dskip;      /* (H) or NULL */
    float dt_min, dt_max;    /* clamp after softplus; 0 and INFINITY: none */
};

struct lmc_ssd_shape {
    int64_t B, T;            /* sequences, tokens each */
    int64_t H, P, G, N;      /* heads, head dim, groups (divide H), state size */
    int64_t chunk;           /* chunk length (prefill) */
};

/* Gradients of the SSD (ssd_chunk_bwd): dx, dBm, dCm "=" at stride ldx and
 * ddt "=" at stride lddt (the operands' layout); the rest "+=" (NULL skips). */
struct lmc_ssd_grads {
    float *dx, *dBm, *dCm;
    float *ddt;
    float *ddt_bias, *dA_log, *dDskip; /* (H) each */
};

#endif
