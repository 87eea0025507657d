/* ssm_cpu.h — the CPU backend's state-space-model ops (issue 15; one file
 * each: conv1d_causal.c, ssm_scan.c, ssd_chunk.c, rmsnorm_gated.c), as
 * backend.h's SSM entries document them, plus the scalar helpers their
 * files share (softplus as torch computes it, SiLU and its derivative). */
#ifndef LMC_SSM_CPU_H
#define LMC_SSM_CPU_H

#include "ops/backend.h"

#include <math.h>
#include <stdint.h>

/* torch.nn.functional.softplus (beta 1, threshold 20). */
static inline float lmc_ssm_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
/* Its derivative: sigmoid(x), 1 past the threshold. */
static inline float lmc_ssm_softplus_grad(float x) { return x > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-x)); }
static inline float lmc_ssm_silu(float x) { return x / (1.0f + expf(-x)); }
/* d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x). */
static inline float lmc_ssm_silu_grad(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}
/* The state slot of sequence b. */
static inline int64_t lmc_ssm_slot(const int32_t *slots, int64_t b) { return slots ? slots[b] : b; }

void lmc_cpu_conv1d_causal(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                           const float *bias, float *state, const int32_t *slots, int64_t B,
                           int64_t T, int64_t C, int64_t K, int silu);
void lmc_cpu_conv1d_causal_bwd(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                               const float *x, int64_t ldx, const float *w, const float *bias,
                               int64_t B, int64_t T, int64_t C, int64_t K, int silu);
void lmc_cpu_conv1d_causal_step(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                                const float *bias, float *state, const int32_t *slots, int64_t B,
                                int64_t C, int64_t K, int silu);
void lmc_cpu_ssm_scan(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                      const int32_t *slots, int64_t B, int64_t T, int64_t D, int64_t N);
void lmc_cpu_ssm_scan_bwd(void *ctx, const struct lmc_ssm_grads *g, const float *dy,
                          const struct lmc_ssm_io *in, int64_t B, int64_t T, int64_t D,
                          int64_t N);
void lmc_cpu_ssm_scan_step(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                           const int32_t *slots, int64_t B, int64_t D, int64_t N);
void lmc_cpu_ssd_chunk(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                       const int32_t *slots, const struct lmc_ssd_shape *s);
void lmc_cpu_ssd_chunk_bwd(void *ctx, const struct lmc_ssd_grads *g, const float *dy,
                           const struct lmc_ssd_io *in, const struct lmc_ssd_shape *s);
void lmc_cpu_ssd_step(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                      const int32_t *slots, const struct lmc_ssd_shape *s);
void lmc_cpu_rmsnorm_gated(void *ctx, float *y, const float *x, const float *z, int64_t ldz,
                           const float *w, int64_t M, int64_t C, int64_t group, float eps);
void lmc_cpu_rmsnorm_gated_bwd(void *ctx, float *dx, float *dz, float *dw, const float *dy,
                               const float *x, const float *z, int64_t ldz, const float *w,
                               int64_t M, int64_t C, int64_t group, float eps);

#endif
