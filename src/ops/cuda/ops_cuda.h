/* ops_cuda.h — the CUDA backend's op entry points (one .cu file each),
 * callable from C: the table in backend_cuda.cu points at them, and tests
 * and benches may call the extended launchers directly. ctx is the
 * backend's `struct lmc_cuda_ctx` (common.cuh). All work is queued on the
 * ctx's stream; pointers are device memory from the backend's alloc. */
#ifndef LMC_OPS_CUDA_H
#define LMC_OPS_CUDA_H

#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void *lmc_cuda_alloc(void *ctx, size_t bytes);
void lmc_cuda_free_mem(void *ctx, void *p);
void lmc_cuda_upload(void *ctx, void *dst, const void *src, size_t bytes);
void lmc_cuda_download(void *ctx, void *dst, const void *src, size_t bytes);
void lmc_cuda_sync(void *ctx);

void lmc_cuda_matmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                     const float *bias);
void lmc_cuda_embed(void *ctx, float *y, const struct lmc_mat *table, const int32_t *ids,
                    int64_t n);
void lmc_cuda_rmsnorm(void *ctx, float *y, const float *x, const float *w, int64_t M, int64_t C,
                      float eps);
void lmc_cuda_layernorm(void *ctx, float *y, const float *x, const float *w, const float *b,
                        int64_t M, int64_t C, float eps);
void lmc_cuda_rope(void *ctx, float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                   int64_t rot_dim, const int32_t *pos, const double *inv_freq, float attn_scale);
void lmc_cuda_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                        int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                        float scale, int64_t window);
void lmc_cuda_attention_paged(void *ctx, float *out, const float *q, const float *k_new,
                              const float *v_new, float *kc, float *vc, int64_t T,
                              const int32_t *seq, const int32_t *pos, const int32_t *bt,
                              int64_t max_blocks, int64_t block_size, int64_t n_heads,
                              int64_t n_kv, int64_t hd, float scale, int64_t window);
void lmc_cuda_swiglu(void *ctx, float *y, const float *gate, const float *up, int64_t n);
void lmc_cuda_gelu(void *ctx, float *y, const float *x, int64_t n, int tanh_approx);
void lmc_cuda_add(void *ctx, float *y, const float *a, const float *b, int64_t n);
void lmc_cuda_dropout(void *ctx, float *y, const float *x, int64_t n, float p, uint64_t seed, int64_t offset);
void lmc_cuda_argmax_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows, int64_t V);
void lmc_cuda_sample_rows(void *ctx, int32_t *out_ids, const float *logits, int64_t rows, int64_t V,
                          const struct lmc_sample_row *params);
void lmc_cuda_matmul_multi(void *ctx, int n, float *const *y, const float *x, int64_t M,
                           const struct lmc_mat *const *w, const float *const *bias);
void lmc_cuda_matmul_add(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                         const float *bias);
void lmc_cuda_matmul_swiglu(void *ctx, float *y, const float *x, int64_t M,
                            const struct lmc_mat *w_gate, const struct lmc_mat *w_up);
void lmc_cuda_rope_kv_store(void *ctx, float *q, float *k, const float *v, void *kc, void *vc,
                            int64_t M, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim,
                            const int32_t *pos, const double *inv_freq, float attn_scale);

/* Ring attention's block ops (backend.h; attn_block.cu), hd <= 512. */
void lmc_cuda_attn_block_fwd(void *ctx, float *ob, float *lb, const float *q, const float *k, const float *v,
                             const int32_t *qpos, const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV,
                             int64_t hd, float scale, int causal);
void lmc_cuda_attn_block_merge(void *ctx, float *out, float *lse, const float *ob, const float *lb, int64_t n,
                               int64_t H, int64_t hd);
void lmc_cuda_attn_block_bwd(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v, const int32_t *qpos,
                             const int32_t *kpos, int64_t n, int64_t ns, int64_t H, int64_t KV, int64_t hd,
                             float scale, int causal);

/* Training (backend.h's "Training" entries; attention_train/attention_bwd
 * are declared with the attention kernels). */
void lmc_cuda_matmul_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, int64_t M, const struct lmc_mat *w, int accum_dx);
void lmc_cuda_operand_hold(void *ctx, int n, const float *const *src, const int64_t *numel,
                           const uint16_t *const *copy);
void lmc_cuda_operand_release(void *ctx);
void lmc_cuda_embed_bwd(void *ctx, float *dtable, const float *dy, const int32_t *ids, int64_t n,
                        int64_t C);
void lmc_cuda_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                          const float *w, int64_t M, int64_t C, float eps);
void lmc_cuda_layernorm_bwd(void *ctx, float *dx, float *dw, float *db, const float *dy,
                            const float *x, const float *w, int64_t M, int64_t C, float eps);
void lmc_cuda_rope_bwd(void *ctx, float *dx, int64_t M, int64_t n_heads, int64_t head_dim,
                       int64_t rot_dim, const int32_t *pos, const double *inv_freq,
                       float attn_scale);
void lmc_cuda_moe_gemm(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                       const struct lmc_mat *const *w);
void lmc_cuda_moe_gemm_bwd(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                           const int64_t *off, int64_t E, const struct lmc_mat *const *w, int accum_dx);
/* moe_gemm.cu's two ways: LOOP (the table's), one lmc_cuda_matmul(_bwd)
 * per expert with rows; GROUPED, one launch over up to 128 experts. */
enum lmc_cuda_moe_path { LMC_CUDA_MOE_LOOP = 0, LMC_CUDA_MOE_GROUPED };
void lmc_cuda_moe_gemm_ex(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                          const struct lmc_mat *const *w, enum lmc_cuda_moe_path path);
/* the table's moe_gemm_dev: the tensor-core grouped kernel, offsets in device memory (BF16 weights) */
void lmc_cuda_moe_gemm_dev(void *ctx, float *y, const float *x, const int64_t *off, int64_t max_rows, int64_t E,
                           const struct lmc_mat *const *w);
/* lmc_cuda_moe_gemm_ex(..., GROUPED) with the table's moe_gemm signature */
void lmc_cuda_moe_gemm_grouped(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                               const struct lmc_mat *const *w);
void lmc_cuda_moe_gemm_bwd_ex(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                              const int64_t *off, int64_t E, const struct lmc_mat *const *w, int accum_dx,
                              enum lmc_cuda_moe_path path);
/* moe_route.cu: routing, the gather and the weighted combine (backend.h) */
void lmc_cuda_moe_route(void *ctx, const struct lmc_moe_routing *r, int64_t *off_host, int64_t n, int64_t E,
                        int64_t k, int norm_topk);
void lmc_cuda_moe_stats(void *ctx, double *cnt, double *psum, const int32_t *sel, const float *probs, int64_t n,
                        int64_t k, int64_t E);
void lmc_cuda_moe_gather(void *ctx, float *xs, const float *h, const int32_t *perm, int64_t nk, int64_t k,
                         int64_t C);
void lmc_cuda_moe_gather_bwd(void *ctx, float *dh, const float *dxs, const int32_t *row, int64_t n, int64_t k,
                             int64_t C);
void lmc_cuda_moe_combine(void *ctx, float *y, const float *res, const float *o, const float *wts,
                          const int32_t *row, const float *so, const float *sl, int64_t n, int64_t k, int64_t C);
void lmc_cuda_moe_combine_bwd(void *ctx, float *dox, float *dlog, float *dso, float *dsl, const float *dy,
                              const float *o, const struct lmc_moe_routing *r, const float *so, const float *sl,
                              const double *aux, int64_t n, int64_t E, int64_t k, int64_t C, int norm_topk);
/* clamp.cu: the table's clamp / clamp_bwd (OLMoE clip_qkv) */
void lmc_cuda_clamp(void *ctx, float *y, const float *x, int64_t n, float c);
void lmc_cuda_clamp_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n, float c);
/* convert.cu: the table's convert (F32 <-> BF16; bf16-saved training activations) */
void lmc_cuda_convert(void *ctx, void *dst, enum lmc_dtype dst_dt, const void *src, enum lmc_dtype src_dt, int64_t n);
void *lmc_cuda_host_alloc(void *ctx, size_t bytes);
void lmc_cuda_host_free(void *ctx, void *p);
void lmc_cuda_offload(void *ctx, void *dst, const void *src, size_t bytes, int slot);
void lmc_cuda_offload_wait(void *ctx, int slot);
void lmc_cuda_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dy, const float *gate,
                         const float *up, int64_t n);
void lmc_cuda_gelu_bwd(void *ctx, float *dx, const float *dy, const float *x, int64_t n,
                       int tanh_approx);
void lmc_cuda_classifier_xent(void *ctx, float *loss, float *dh, float *dw, const float *h,
                              const struct lmc_mat *w, const int32_t *targets, int64_t M,
                              float dscale);
void lmc_cuda_soft_xent(void *ctx, float *ce, float *kl, float *agree, float *s, const float *t,
                        const int32_t *targets, int64_t R, int64_t V, float alpha, float temp, float dscale,
                        int grad);
void lmc_cuda_zero(void *ctx, void *p, size_t bytes);
double lmc_cuda_sumsq(void *ctx, const float *x, int64_t n);
void lmc_cuda_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                    const struct lmc_adamw_step *s);

/* Quantized weights (qmatmul.cu; issue 10): the table's qweight_upload /
 * qweight_free / qmatmul entries. lmc_cuda_qmatmul_ex picks the kernel:
 * AUTO runs the dequantize-in-register GEMV for M <= LMC_CUDA_Q_GEMV_MAX_M
 * and the tensor-core tile GEMM above; GEMV / MMA force one (any M). */
#define LMC_CUDA_Q_GEMV_MAX_M 16
enum lmc_cuda_qpath { LMC_CUDA_Q_AUTO = 0, LMC_CUDA_Q_GEMV, LMC_CUDA_Q_MMA };
struct lmc_qweight;
lmc_status lmc_cuda_qweight_upload(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                   lmc_err *err);
void lmc_cuda_qweight_free(void *ctx, struct lmc_qweight *w);
void lmc_cuda_qmatmul(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                      const float *bias);
void lmc_cuda_qmatmul_ex(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                         const float *bias, enum lmc_cuda_qpath path);
/* Device bytes of an uploaded weight (codes, scales, permutation) and its
 * GPU layout: "g4", "g4-lut" (NF4), "g8" or "dense-bf16". */
size_t lmc_cuda_qweight_device_bytes(const struct lmc_qweight *w);
const char *lmc_cuda_qweight_layout(const struct lmc_qweight *w);
/* For bench_qmatmul_cuda: a device-side copy of an uploaded weight (to
 * rotate through more bytes than L2 holds), a queued device-to-device copy,
 * f32 -> bf16, and cuBLASLt's bf16 y(M,N) = x(M,K) @ w(N,K)^T (x, w bf16). */
lmc_status lmc_cuda_qweight_clone(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                  lmc_err *err);
void lmc_cuda_copy_d2d(void *ctx, void *dst, const void *src, size_t bytes);
void lmc_cuda_f32_to_bf16(void *ctx, void *dst, const float *src, int64_t n);
void lmc_cuda_gemm_bf16(void *ctx, float *y, const void *xb, int64_t M, const void *wb, int64_t N,
                        int64_t K);

/* QLoRA's frozen 4-bit base (qmatmul_f.cu; issue 12): the table's
 * qweight_upload_f / qweight_free_f / qmatmul_f / qmatmul_f_bwd entries.
 * The _ex launchers take the rows per dequantized tile (0: the default,
 * the whole weight up to 16M weights); lmc_cuda_qweight_dequant_f writes
 * rows [r0, r0 + nr) of an uploaded weight as f32 (nr, k) into dst (device
 * memory), for tests against lmc_qweight_dequant_rows. */
lmc_status lmc_cuda_qweight_upload_f(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                     size_t *bytes, lmc_err *err);
void lmc_cuda_qweight_free_f(void *ctx, struct lmc_qweight *w);
void lmc_cuda_qmatmul_f(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                        const float *bias);
void lmc_cuda_qmatmul_f_bwd(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                            int accum_dx);
void lmc_cuda_qmatmul_f_ex(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                           const float *bias, int64_t tile_rows);
void lmc_cuda_qmatmul_f_bwd_ex(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                               int accum_dx, int64_t tile_rows);
void lmc_cuda_qweight_dequant_f(void *ctx, const struct lmc_qweight *w, int64_t r0, int64_t nr, float *dst);

/* Which attention kernel lmc_cuda_attention_ex runs. AUTO picks as the
 * table entry does (tensor cores for prefill unless fp32 attention is set). */
enum lmc_cuda_attn_kind {
    LMC_CUDA_ATTN_AUTO = 0,
    LMC_CUDA_ATTN_TC,    /* bf16 mma.sync FlashAttention-2-style kernel */
    LMC_CUDA_ATTN_F32,   /* fp32 split-K (flash-decoding) kernel */
};

/* The attention op over `batch` independent sequences: sequence b reads
 * q + b*q_bstride, k/v + b*kv_bstride and writes out + b*q_bstride
 * (strides in elements); k and v hold kv_dtype elements (F32 or BF16);
 * other arguments as the table's attention. Returns the kind that ran. */
enum lmc_cuda_attn_kind lmc_cuda_attention_ex(void *ctx, float *out, const float *q,
                                              const void *k, const void *v,
                                              enum lmc_dtype kv_dtype, int64_t M,
                                              int64_t pos0, int64_t n_heads, int64_t n_kv,
                                              int64_t hd, float scale, int64_t window,
                                              int64_t batch, int64_t q_bstride,
                                              int64_t kv_bstride, enum lmc_cuda_attn_kind kind);

#ifdef __cplusplus
}
#endif

#endif
