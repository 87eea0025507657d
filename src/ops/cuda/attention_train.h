/* attention_train.h — the CUDA training attention (FlashAttention-2 style
 * forward and backward, attention_train.cu), callable from C. Semantics and
 * shapes are those of the backend table's attention_train / attention_bwd
 * (ops/backend.h): B causal sequences of T tokens from position 0, float32
 * row-major q, out, dq, dout (B*T, n_heads*hd), k, v, dk, dv (B*T, n_kv*hd),
 * lse (B*T, n_heads) natural log; GQA head h reads kv head
 * h / (n_heads / n_kv); window > 0 keeps the last `window` positions (own
 * included). dq, dk, dv are overwritten. ctx is the CUDA backend's context;
 * its train_bf16 flag picks bf16 tensor cores (head dims 64, 80, 96, 128)
 * or fp32 (any head dim <= 256). Work is queued on the ctx's stream. */
#ifndef LMC_CUDA_ATTENTION_TRAIN_H
#define LMC_CUDA_ATTENTION_TRAIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void lmc_cuda_attention_train(void *ctx, float *out, float *lse, const float *q, const float *k,
                              const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                              int64_t hd, float scale, int64_t window);

void lmc_cuda_attention_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                            const float *out, const float *lse, const float *q, const float *k,
                            const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                            int64_t hd, float scale, int64_t window);

/* The same over n_segs packed sequences in one launch each: segs holds
 * (first row, length) pairs (host memory, read before the call returns);
 * sequence i is rows segs[2i] .. segs[2i] + segs[2i+1] - 1 of the tensors,
 * positions from 0; rows in no segment are not written. */
void lmc_cuda_attention_train_segs(void *ctx, float *out, float *lse, const float *q, const float *k,
                                   const float *v, const int64_t *segs, int64_t n_segs, int64_t n_heads,
                                   int64_t n_kv, int64_t hd, float scale, int64_t window);

void lmc_cuda_attention_bwd_segs(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q, const float *k,
                                 const float *v, const int64_t *segs, int64_t n_segs, int64_t n_heads,
                                 int64_t n_kv, int64_t hd, float scale, int64_t window);

#ifdef __cplusplus
}
#endif

#endif
