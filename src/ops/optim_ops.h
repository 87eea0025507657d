/* optim_ops.h — the backend ops of the memory-efficient optimizers
 * (train/optim.h): Muon's step (momentum, quintic Newton–Schulz
 * orthogonalisation, scaled update) and 8-bit AdamW's blockwise
 * dequantize / update / requantize pass, with their step scalars, the
 * dynamic 8-bit code, and the host-memory cores that the CPU backend runs
 * (one source of truth for the formulas; the CUDA twins follow them
 * operation by operation). */
#ifndef LMC_OPS_OPTIM_OPS_H
#define LMC_OPS_OPTIM_OPS_H

#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

/* One Muon step's scalars (torch.optim.Muon's formula, float32 tensors):
 * (each lerp evaluated as torch does: start + w (end - start) for w < 0.5,
 * else end - (end - start)(1 - w))
 *   g' = g * grad_scale
 *   buf = buf + (1 - momentum) * (g' - buf)                 (buf.lerp_(g, 1 - mu))
 *   u = nesterov ? g' + momentum * (buf - g') : buf          (g.lerp(buf, mu))
 *   X = u (u^T when rows > cols);  X = X / max(||X||_F, ns_eps)
 *   ns_steps times: A = X X^T;  B = ns_b A + ns_c A A;  X = ns_a X + B X
 *   p = p * decay_mul - lr_adj * (X, transposed back)          */
struct lmc_muon_step {
    float momentum;
    int nesterov;
    int ns_steps;
    float ns_a, ns_b, ns_c;  /* 3.4445, -4.7750, 2.0315 */
    float ns_eps;            /* 1e-7 (torch) */
    float decay_mul;         /* 1 - lr * weight_decay */
    float lr_adj;            /* lr * max(1, rows/cols)^0.5, or lr * 0.2 * sqrt(max(rows, cols)) */
    float grad_scale;        /* clipping's factor; 1 = none */
    int ns_bf16;             /* the iteration's GEMM operands in bf16 (fp32 accumulation and
                                element-wise math): CUDA tensor cores, the CPU's vdpbf16ps
                                GEMM (muon_bf16.c); 0: fp32 GEMMs */
    int ns_gram;             /* CPU, fp32 (ns_bf16 0): a rectangular matrix's iteration in
                                Gram space (newton_schulz_gram.c; the same map, 0.59x the
                                flops at w = 4k); 0: the plain iteration. Square matrices,
                                the bf16 iteration and CUDA stay plain */
};

/* Floats of work memory the muon op needs for a (rows, cols) matrix:
 * X and its next iterate (k*n each) and A, B and the Gram path's Q, T
 * (k*k each), k = min, n = max. */
int64_t lmc_muon_work_floats(int64_t rows, int64_t cols);

/* Quintic Newton–Schulz on host memory: x (k, n) row-major, k <= n (tall:
 * x (n, k) row-major, its Gram matrix taken on the other side, the same
 * iterate without a transpose), is replaced by its orthogonalised iterate
 * (after Frobenius normalisation and s->ns_steps iterations). work:
 * lmc_muon_work_floats(k, n) floats (x may be its first k*n floats).
 * Returns the pointer (x or work) holding the result. */
float *lmc_newton_schulz_apply(float *x, int64_t k, int64_t n, bool tall, const struct lmc_muon_step *s,
                               float *work);

/* Several matrices of one shape for a batched Muon step (the backend's
 * muon_batch entry): each with its own lr_adj (the step's lr_adj unused). */
#define LMC_MUON_BATCH_MAX 32
#define LMC_MUON_BATCH_PARTS 128 /* partial norm sums per matrix, at most */
struct lmc_muon_mat {
    float *p;
    const float *g;
    float *buf;
    int64_t rows, cols;
    float lr_adj;
};
/* Floats of work memory muon_batch needs for `count` (rows, cols) matrices:
 * count * LMC_MUON_BATCH_PARTS doubles, then X, Y (k*w) and A, B (k*k) in
 * bf16 per matrix, each rounded up to 128 elements. */
int64_t lmc_muon_batch_work_floats(int count, int64_t rows, int64_t cols);

/* Muon's step on host memory (the CPU op): p, g, buf (rows, cols). */
void lmc_muon_apply(float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                    const struct lmc_muon_step *s, float *work);

/* ---- 8-bit AdamW. Each moment is stored as one byte per element (an
 * index into a 256-entry code, sorted ascending) and one float per block
 * of `block` elements (the block's absmax): value = code[q] * absmax.
 * The dynamic code (Dettmers' dynamic tree quantisation, our generator):
 * magnitudes 10^-E * (0.1 + 0.9 * (j + 0.5) / 2^(B-1-E)), j < 2^(B-1-E),
 * for E = 0..6 (B = 7 magnitude bits signed, 8 unsigned), plus 0 and 1.0;
 * the signed code has each magnitude with both signs (127*2 + 2 = 256),
 * the unsigned one 254 magnitudes + 2. Quantisation picks the nearest code
 * value (the lower on a tie), except that a non-zero value never becomes 0
 * (it takes the nearest non-zero code of its sign): a second moment
 * rounded to 0 would divide a non-zero first moment by eps. */
#define LMC_Q8_BLOCK_MIN 64
#define LMC_Q8_BLOCK_MAX 2048
void lmc_q8_dynamic_code(float code[256], bool is_signed);
/* The index of the code value nearest x (a value already divided by its
 * block's absmax, in [-1, 1]) under the rule above. */
uint8_t lmc_q8_quantize(const float code[256], float x);
/* The CPU op's table-driven quantiser on x (builds its table each call:
 * for tests, which check it gives lmc_q8_quantize's answer). */
uint8_t lmc_q8_quantize_fast_check(const float code[256], float x);

/* 8-bit AdamW's element formula is AdamW's (backend.h's adamw entry) on the
 * dequantized moments; the new moments' absmax per block is taken after
 * the update and the moments are re-quantized with it. n elements in
 * blocks of `block` (the last one may be short). */
void lmc_adamw8bit_apply(float *p, const float *g, uint8_t *qm, uint8_t *qv, float *absmax_m,
                         float *absmax_v, int64_t n, int64_t block, const float *code_m,
                         const float *code_v, const struct lmc_adamw_step *s);

/* ---- GaLore / APOLLO: one step in the rank-r space given the projection
 * P (train/optim_lowrank.c refreshes it on the host). right (rows >= cols):
 * P (rank, cols), R = gs G P^T (rows, rank); else P (rows, rank), R = gs P^T G
 * (rank, cols). m = m b1 + omb1 R; v = v b2 + omb2 R^2 (the authors' order);
 * N = m / (sqrtf(v) + eps).
 *  GaLore: p += alpha * back(N) (right: N P; left: P N), alpha = -step * scale.
 *  APOLLO: channel factors f = ||N_c|| / (||R_c|| + 1e-8) per row of R (right)
 *  or per column (left), or one for the tensor; S = G gs f; the limiter:
 *  with prev = *prev_norm >= 0, lim = max(||S|| / (prev + 1e-8), 1.01) / 1.01,
 *  *prev_norm = ||S|| / lim (else lim = 1, *prev_norm = ||S||);
 *  p += alpha * ((S / lim) * sqrt_scale), alpha = -step.
 * Then p += p * decay (decay = -lr wd; 0: none). Norms in double. */
struct lmc_lowrank_step {
    int apollo, right, tensor;
    float beta1, beta2, one_minus_b1, one_minus_b2, eps;
    float grad_scale;
    float alpha;
    float sqrt_scale;
    float decay;
};
/* Floats of work memory the lowrank op needs (R, channel sums, factors). */
int64_t lmc_lowrank_work_floats(int64_t rows, int64_t cols, int64_t rank);
/* The step on host memory (the CPU op). m, v: the low-rank moments; proj: P;
 * prev_norm: one float (APOLLO; unused by GaLore). */
void lmc_lowrank_apply(float *p, const float *g, float *m, float *v, const float *proj,
                       float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                       const struct lmc_lowrank_step *s, float *work);

/* ---- GaLore's subspace refresh, the parts on the backend (the r x r
 * solves between them are the host's: train/optim_lowrank.c).
 * k = min(rows, cols); right (rows >= cols): P (rank, cols), the vectors its
 * rows, Y kept as Yt (rank, cols); left: P (rows, rank), the vectors its
 * columns, Y (rows, rank). With M = G^T G (right) or G G^T (left):
 *  ritz: Y = M Q (Q the previous vectors: Z = G P^T, Yt = Z^T G; or
 *  Zt = P^T G, Y = G Zt^T) and ct[0 .. r*r) = C = Y^T Y, row-major, fp32
 *  GEMMs; work: lmc_galore_ritz_work_floats floats.
 *  orth: Y <- Y X (X (rank, rank) row-major, the host's inverse Cholesky
 *  factor of C: a CholeskyQR pass; as Yt <- X^T Yt on the right), then
 *  ct[0 .. r*r) = C = Y^T Y and, when g is not NULL, ct[r*r .. 2*r*r) =
 *  T = Y^T M Y (as (G Yt^T)^T (G Yt^T) or (Y^T G)(Y^T G)^T); same work.
 *  P has Y's layout: orth of P gives P M P^T (X = I) and P's update.
 *  rotate: w (rank, rank) row-major, row j the coefficients of vector j;
 *  P = w Yt (right) or Y w^T (left), then each vector negated where its
 *  largest-magnitude entry (the first of equals) is negative. */
int64_t lmc_galore_ritz_work_floats(int64_t rows, int64_t cols, int64_t rank);
void lmc_galore_ritz_apply(const float *g, const float *proj, int64_t rows, int64_t cols, int64_t rank, float *y,
                           float *ct, float *work);
void lmc_galore_orth_apply(const float *g, float *y, const float *x, int64_t rows, int64_t cols, int64_t rank,
                           float *ct, float *work);
void lmc_galore_rotate_apply(float *proj, const float *y, const float *w, int64_t rows, int64_t cols, int64_t rank);
void lmc_cpu_galore_ritz(void *ctx, const float *g, const float *proj, int64_t rows, int64_t cols, int64_t rank,
                         float *y, float *ct, float *work);
void lmc_cpu_galore_orth(void *ctx, const float *g, float *y, const float *x, int64_t rows, int64_t cols,
                         int64_t rank, float *ct, float *work);
void lmc_cpu_galore_rotate(void *ctx, float *proj, const float *y, const float *w, int64_t rows, int64_t cols,
                           int64_t rank);
void lmc_cuda_galore_ritz(void *ctx, const float *g, const float *proj, int64_t rows, int64_t cols, int64_t rank,
                          float *y, float *ct, float *work);
void lmc_cuda_galore_orth(void *ctx, const float *g, float *y, const float *x, int64_t rows, int64_t cols,
                          int64_t rank, float *ct, float *work);
void lmc_cuda_galore_rotate(void *ctx, float *proj, const float *y, const float *w, int64_t rows, int64_t cols,
                            int64_t rank);

/* The CPU backend's entries (ops/cpu/newton_schulz.c, ops/cpu/adamw8bit.c,
 * ops/cpu/lowrank.c). */
void lmc_cpu_lowrank(void *ctx, float *p, const float *g, float *m, float *v, const float *proj,
                     float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                     const struct lmc_lowrank_step *s, float *work);
void lmc_cpu_muon(void *ctx, float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                  const struct lmc_muon_step *s, float *work);
/* ops/cpu/muon_bf16.c: the bf16 Newton–Schulz on the CPU (ns_bf16). The
 * batched entry runs one matrix per pool task (work: X and A of each
 * matrix in lmc_muon_batch_work_floats's layout). */
void lmc_cpu_muon_batch(void *ctx, const struct lmc_muon_mat *mats, int count, const struct lmc_muon_step *s,
                        float *work);
/* The fp32 iteration (lmc_muon_apply) of count matrices of any shapes, one
 * per pool task in the order given, each in its thread's scratch; a
 * matrix's bits are lmc_muon_apply's whatever the thread count or the
 * batch (OpenBLAS runs single-threaded in each task). */
struct lmc_cpu_ctx;
void lmc_cpu_muon_batch_f32(struct lmc_cpu_ctx *c, const struct lmc_muon_mat *mats, int count,
                            const struct lmc_muon_step *s);
/* One matrix's step with the bf16 iteration: X, Y (rows*cols floats) and
 * A, B (k*k) scratch, ws: lmc_cpu_muon_bf16_ws(rows, cols) floats, 64-byte
 * aligned; lr_adj replaces s->lr_adj. */
void lmc_muon_bf16_apply(float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                         const struct lmc_muon_step *s, float lr_adj, float *X, float *Y, float *A, float *B,
                         void *ws);
size_t lmc_cpu_muon_bf16_ws(int64_t rows, int64_t cols);
/* C (k, k) = A (k, K) @ B (K, k) for a product known to be symmetric (A's
 * (i, kk) at A[i*a_sm + kk*a_sk], B's (kk, j) at B[kk*b_sk + j*b_sn]), in
 * bf16 operands: only the row blocks' diagonal and right-hand parts are
 * computed, the strict lower triangle is mirrored. ws as above. */
/* ops/cpu/newton_schulz_gram.c: s->ns_steps quintic iterations of the
 * normalised X (k, w) (tall: X (w, k)) in Gram space, restarted
 * from X every `restart` iterations (0: never); returns the result, X or Y
 * (both overwritten); A, P, Q, T: (k, k) scratch; ws: bf16's
 * lmc_cpu_muon_bf16_ws (NULL for fp32). The bf16 mode is not used by the
 * muon entries (it loses ill-conditioned inputs' small directions: see
 * tests/test_muon_bf16.c); the fp32 one is lmc_newton_schulz_apply's. */
/* The fp32 Gram path's restart period: one restart (after the third of 5
 * steps) brings gradient-like inputs' errors back to the plain iteration's
 * (without: 1 - cos ~5e-7, largest error ~1e-3 of the largest element) */
#define LMC_NS_GRAM_RESTART 3
float *lmc_ns_gram(float *X, float *Y, int64_t k, int64_t w, bool tall, const struct lmc_muon_step *s, int restart,
                   bool bf16, float *A, float *P, float *Q, float *T, void *ws);
void lmc_cpu_sym_gemm_bf16(int64_t k, int64_t K, const float *A, int64_t a_sm, int64_t a_sk, const float *B,
                           int64_t b_sk, int64_t b_sn, float *C, void *ws);
void lmc_cpu_adamw8bit(void *ctx, float *p, const float *g, uint8_t *qm, uint8_t *qv,
                       float *absmax_m, float *absmax_v, int64_t n, int64_t block,
                       const float *code_m, const float *code_v, const struct lmc_adamw_step *s);

/* The CUDA backend's entries (ops/cuda/newton_schulz.cu, adamw8bit.cu, lowrank.cu). */
void lmc_cuda_lowrank(void *ctx, float *p, const float *g, float *m, float *v, const float *proj,
                      float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                      const struct lmc_lowrank_step *s, float *work);
void lmc_cuda_muon(void *ctx, float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                   const struct lmc_muon_step *s, float *work);
/* ops/cuda/muon_batch.cu: the batched bf16 Newton–Schulz (ns_bf16 only). */
void lmc_cuda_muon_batch(void *ctx, const struct lmc_muon_mat *mats, int count, const struct lmc_muon_step *s,
                         float *work);
void lmc_cuda_adamw8bit(void *ctx, float *p, const float *g, uint8_t *qm, uint8_t *qv,
                        float *absmax_m, float *absmax_v, int64_t n, int64_t block,
                        const float *code_m, const float *code_v, const struct lmc_adamw_step *s);

#endif
