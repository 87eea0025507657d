/* backend.h — the backend table. Model code reaches every op through a
 * `struct lmc_backend`; a new backend (CUDA, ...) is a new table, never new
 * branches in model code. Activations are float32 row-major on the CPU
 * backend; weight matrices are `struct lmc_mat` in their on-disk dtype
 * (F32/F16/BF16), used in place. */
#ifndef LMC_BACKEND_H
#define LMC_BACKEND_H

#include "lmc.h"
#include "core/dtype.h"
#include "ops/ssm.h" /* operand structs of the SSM entries (issue 15) */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LMC_OFFLOAD_SLOTS 4 /* backend offload's copy slots */

/* A weight matrix (rows, cols) row-major, e.g. a Linear weight (out, in) or
 * an embedding table (vocab, hidden). */
struct lmc_mat {
    enum lmc_dtype dtype;   /* F32, F16 or BF16 */
    int64_t rows, cols;
    const void *data;
};

/* One row's sampling parameters for sample_rows (sampler.h semantics;
 * penalties are applied to the logits before, by the owner of the history). */
struct lmc_sample_row {
    double temperature;     /* 0 = greedy argmax (u unused) */
    double top_p;           /* 1 = off */
    double min_p;           /* 0 = off */
    double u;               /* uniform [0, 1) drawn from the request's own rng */
    int64_t top_k;          /* 0 = off */
};

/* One AdamW step's float32 scalars (adamw entry; train/adamw.c makes them
 * from the optimizer's settings in double, as torch does). */
struct lmc_adamw_step {
    float step_size;    /* lr / (1 - beta1^t) */
    float decay_mul;    /* 1 - lr * weight_decay; 1 for tensors without decay */
    float beta2, one_minus_b1, one_minus_b2;
    float bc2_sqrt;     /* sqrt(1 - beta2^t) */
    float eps;
    float grad_scale;   /* clipping's factor; 1 = none */
};

struct lmc_muon_step;    /* ops/optim_ops.h (the optimizer entries at the end) */
struct lmc_muon_mat;
struct lmc_lowrank_step;
struct lmc_qweight;

/* One routing of n tokens over E experts with k choices each (backend
 * memory; the moe_* entries). */
struct lmc_moe_routing {
    float *probs;       /* (n, E) softmax of the router logits */
    int32_t *sel;       /* (n, k) chosen experts, best first */
    float *wts;         /* (n, k) their weights */
    int32_t *perm;      /* (n k) grouped row -> choice t k + j */
    int32_t *row;       /* (n k) choice -> grouped row */
    int64_t *off;       /* (E + 1) first grouped row of each expert */
};

struct lmc_backend {
    const char *name;
    void *ctx;              /* backend state: thread pool, scratch, streams */

    /* Memory. Every pointer an op receives (activations, KV cache, ids,
     * positions, weights) lives in memory from alloc. host_memory backends
     * (the CPU) can use host pointers, such as memory-mapped weights, as
     * they are; others get weights uploaded once at load. */
    bool host_memory;
    void *(*alloc)(void *ctx, size_t bytes);        /* NULL when out of memory */
    void (*free)(void *ctx, void *p);
    void (*upload)(void *ctx, void *dst, const void *src, size_t bytes);   /* host -> backend */
    void (*download)(void *ctx, void *dst, const void *src, size_t bytes); /* backend -> host */
    void (*sync)(void *ctx);                        /* wait for queued work */

    /* y(M,N) = x(M,K) @ w(N,K)^T (+ bias(N) if non-NULL). N = w->rows, K = w->cols. */
    void (*matmul)(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                   const float *bias);
    /* y(n,C) = table[ids[i]] converted to f32. ids are in range (caller checks). */
    void (*embed)(void *ctx, float *y, const struct lmc_mat *table, const int32_t *ids, int64_t n);
    /* y(M,C) = x / sqrt(mean(x^2) + eps) * w. y may alias x. */
    void (*rmsnorm)(void *ctx, float *y, const float *x, const float *w, int64_t M, int64_t C,
                    float eps);
    /* y(M,C) = (x - mean) / sqrt(var + eps) * w + b. y may alias x. */
    void (*layernorm)(void *ctx, float *y, const float *x, const float *w, const float *b,
                      int64_t M, int64_t C, float eps);
    /* In-place rotary embedding, HF "rotate_half" layout: for each row m and
     * head h, the first `rot_dim` dims of x[m, h*head_dim ...] are rotated as
     * pairs (i, i + rot_dim/2) by angle pos[m]*inv_freq[i], cos/sin multiplied
     * by attn_scale. x is (M, n_heads*head_dim). Angles computed in double
     * (inv_freq is backend memory, rot_dim/2 doubles). */
    void (*rope)(void *ctx, float *x, int64_t M, int64_t n_heads, int64_t head_dim,
                 int64_t rot_dim, const int32_t *pos, const double *inv_freq, float attn_scale);
    /* Causal attention for M new queries at positions pos0..pos0+M-1 over a
     * cache holding positions 0..pos0+M-1:
     *   q   (M, n_heads*hd)
     *   k,v (>= pos0+M rows, n_kv*hd) — row t is position t
     *   out (M, n_heads*hd)
     * Head h uses kv head h / (n_heads/n_kv). scale multiplies q·k.
     * window > 0 limits each query to the last `window` positions. */
    void (*attention)(void *ctx, float *out, const float *q, const float *k, const float *v,
                      int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                      float scale, int64_t window);
    /* Attention with a row mask (a token tree's verification): the M new
     * rows sit in cache rows pos0..pos0+M-1 (their rotary positions are the
     * caller's); query m attends to cache rows 0..pos0-1 and to the new row
     * pos0+j where bit j of mask[m] is set (mask: M words, host memory,
     * M <= 64; a lower-triangular mask is attention's causal op, bit for
     * bit). No window. NULL where the backend has none. */
    void (*attention_mask)(void *ctx, float *out, const float *q, const float *k, const float *v,
                           int64_t M, int64_t pos0, int64_t n_heads, int64_t n_kv, int64_t hd,
                           float scale, const uint64_t *mask);
    /* y[i] = silu(gate[i]) * up[i], i < n. y may alias gate. */
    void (*swiglu)(void *ctx, float *y, const float *gate, const float *up, int64_t n);
    /* y[i] = gelu(x[i]) (tanh approximation when tanh_approx). y may alias x. */
    void (*gelu)(void *ctx, float *y, const float *x, int64_t n, int tanh_approx);
    /* y[i] = a[i] + b[i]. y may alias a or b. */
    void (*add)(void *ctx, float *y, const float *a, const float *b, int64_t n);
    /* Paged attention over many sequences (continuous batching). First
     * stores k_new/v_new (T, n_kv*hd) into the slots of their tokens: token
     * i (sequence seq[i], position pos[i]) goes to row
     * bt[seq[i]*max_blocks + pos[i]/block_size]*block_size + pos[i]%block_size
     * of kc and vc (n_blocks*block_size, n_kv*hd, this layer's pool). Then
     * query i (q, out: (T, n_heads*hd)) attends causally to its sequence's
     * positions 0..pos[i] (window > 0: the last `window`), read through the
     * block table; GQA and scale as in attention. The positions < pos[i]
     * not in this batch must already be stored. seq, pos, bt are backend memory. */
    void (*attention_paged)(void *ctx, float *out, const float *q, const float *k_new,
                            const float *v_new, float *kc, float *vc, int64_t T,
                            const int32_t *seq, const int32_t *pos, const int32_t *bt,
                            int64_t max_blocks, int64_t block_size, int64_t n_heads,
                            int64_t n_kv, int64_t hd, float scale, int64_t window);

    /* Optional (NULL: call matmul n times). n matmuls sharing one input:
     * y[i](M, w[i]->rows) = x(M,K) @ w[i]^T (+ bias[i] if bias and bias[i]
     * are non-NULL), i < n; every w[i] has K = w[i]->cols columns. Same
     * result as n matmul calls, done as one parallel job (decode: one
     * thread-pool dispatch for q/k/v, one for gate/up). The y[i] must not
     * overlap each other or x. */
    void (*matmul_multi)(void *ctx, int n, float *const *y, const float *x, int64_t M,
                         const struct lmc_mat *const *w, const float *const *bias);

    /* KV cache element type (F32 on the CPU; BF16 on the CUDA backend unless
     * its fp32 checking mode is set). lmc_kv_init sizes the cache by it;
     * when it is not F32 the cache is written only through rope_kv_store
     * and read only by attention, whose k/v pointers then point at this
     * type (cast to const float *). */
    enum lmc_dtype kv_dtype;
    /* Optional (NULL: row * sizeof kv_dtype). Bytes one token's K (or V)
     * row of `row` values takes in a paged KV pool (forward_batch.h), for
     * backends whose attention_paged stores rows compressed (infer/kvq.h:
     * q8, q4); the pool is then sized and addressed in these bytes. */
    size_t (*kv_row_bytes)(int64_t row);
    /* Optional (NULL: the pool has no ring). attention_paged over a pool
     * that keeps, per running sequence, a ring of its most recent K/V rows
     * in f16 (KIVI-2 paged, infer/kvq.h): ring is this layer's ring memory,
     * n_ring slots of lmc_kv_ring_slot_bytes(row, ring_rows) bytes each;
     * tok_ring (T) the ring slot of each token's sequence (backend memory).
     * A sequence's tokens in the step are one run of consecutive
     * positions. Keys and values at positions > pos[i] - residual are read
     * in f16: the step's own rows, or earlier ones from the ring row
     * (pos % ring_rows) tagged with that position; all others from the
     * pool. The new rows go to the pool and, after the attention, to their
     * ring rows and tags. Otherwise as attention_paged. */
    void (*attention_paged_ring)(void *ctx, float *out, const float *q, const float *k_new,
                                 const float *v_new, float *kc, float *vc, void *ring,
                                 const int32_t *tok_ring, int64_t ring_rows, int64_t residual,
                                 int64_t T, const int32_t *seq, const int32_t *pos,
                                 const int32_t *bt, int64_t max_blocks, int64_t block_size,
                                 int64_t n_heads, int64_t n_kv, int64_t hd, float scale,
                                 int64_t window);

    /* Optional fused ops (NULL: the forward composes the plain ops). */
    /* y(M,N) += x(M,K) @ w^T (+ bias): the residual add fused into the
     * matmul. y must not overlap x. */
    void (*matmul_add)(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                       const float *bias);
    /* y(M,N) = silu(x @ w_gate^T) * (x @ w_up^T), both weights (N,K), no
     * bias. y must not overlap x. */
    void (*matmul_swiglu)(void *ctx, float *y, const float *x, int64_t M,
                          const struct lmc_mat *w_gate, const struct lmc_mat *w_up);
    /* Optional (NULL: none; both or neither). operand_hold opens a scope
     * holding n f32 arrays (src[i], numel[i] floats; NULL / empty ones
     * skipped) as GEMM operands until the matching operand_release (scopes
     * nest): the caller leaves them unchanged meanwhile, so a backend that
     * rounds GEMM operands (the CUDA bf16 training mode) may round each
     * once and reuse that copy in the matmul / matmul_bwd / qmatmul_f
     * calls that read it (or a part of it). copy (NULL, or NULL entries:
     * none): a bf16 copy of src[i] (round to nearest even) the caller
     * already holds, e.g. a bf16-saved activation, used instead of one.
     * Results are bit-identical either way; fewer conversion launches. */
    void (*operand_hold)(void *ctx, int n, const float *const *src, const int64_t *numel,
                         const uint16_t *const *copy);
    void (*operand_release)(void *ctx);
    /* Rotary embedding of q (M, n_heads*hd) in place and of k (M, n_kv*hd)
     * (as rope; rot_dim 0: none), then k and v (M, n_kv*hd) stored as
     * kv_dtype into rows pos[m] of the layer's caches kc, vc (ctx, n_kv*hd).
     * k and v are left unspecified. */
    void (*rope_kv_store)(void *ctx, float *q, float *k, const float *v, void *kc, void *vc,
                          int64_t M, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t rot_dim,
                          const int32_t *pos, const double *inv_freq, float attn_scale);
    /* Optional (NULL: the caller downloads the logits and takes the argmax
     * on the host). out_ids[r] (host memory, rows entries) = the index of
     * the largest of logits[r*V .. r*V+V-1] (backend memory), the first one
     * on ties, NaN entries never chosen, except that a NaN at index 0 gives
     * 0 — the same answer as a left-to-right scan keeping the first strict
     * maximum (the sampler's greedy choice). Waits for the result. */
    void (*argmax_rows)(void *ctx, int32_t *out_ids, const float *logits, int64_t rows,
                        int64_t V);
    /* Optional (NULL: download the logits, sample on the host). out_ids[r]
     * (host memory) = the id lmc_sample_logits_row (below: the sampler's
     * core) picks from logits[r*V ..] (backend memory, finite or
     * -inf) with params[r] (host memory): temperature 0 = argmax_rows'
     * answer; else softmax at temperature, top-k, top-p over the top-k set,
     * min-p relative to the top token, a draw with u. Waits for the result. */
    void (*sample_rows)(void *ctx, int32_t *out_ids, const float *logits, int64_t rows,
                        int64_t V, const struct lmc_sample_row *params);

    /* ---- Training: backward ops (NULL where a backend has none). Gradients
     * are f32; "+=" outputs accumulate into what the caller holds, "="
     * outputs are overwritten. Weights here are F32 (training master copies). */
    /* Backward of y(M,N) = x(M,K) @ w(N,K)^T + b: dx (M,K) = dy @ w (+= when
     * accum_dx, else =; dx NULL: skipped), dw (N,K) += dy^T @ x (NULL:
     * skipped), db (N) += column sums of dy (NULL: skipped). dx must not
     * overlap dy or x. Deterministic for a given thread count. */
    void (*matmul_bwd)(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                       int64_t M, const struct lmc_mat *w, int accum_dx);
    /* Optional (NULL: matmul_bwd n times). The backward of n matmuls
     * sharing the input x (matmul_multi's): dx (M,K) = sum_i dy[i] @ w[i]
     * (+= when accum_dx; dx NULL: skipped), dw[i] += dy[i]^T @ x, db[i] +=
     * column sums of dy[i] (NULL entries skipped); dy[i] is (M, w[i]->rows).
     * Same results as the n matmul_bwd calls (each dx contribution summed
     * in i order), done as one parallel job. */
    void (*matmul_bwd_multi)(void *ctx, int n, float *dx, float *const *dw, float *const *db,
                             const float *const *dy, const float *x, int64_t M,
                             const struct lmc_mat *const *w, int accum_dx);
    /* Optional: the f32 twins of matmul and matmul_bwd (same contracts)
     * while a mixed-precision training mode rounds the operands of those
     * (the CPU's bf16 mode); NULL when matmul / matmul_bwd are f32
     * already. Linears that must stay exact (MoE routers: lmc_linear_*_f32
     * in model/linear.h) run through them. */
    void (*matmul_f32)(void *ctx, float *y, const float *x, int64_t M, const struct lmc_mat *w,
                       const float *bias);
    void (*matmul_bwd_f32)(void *ctx, float *dx, float *dw, float *db, const float *dy, const float *x,
                           int64_t M, const struct lmc_mat *w, int accum_dx);
    /* dtable(rows, C) += dy(n, C) scattered by ids (rows in range). */
    void (*embed_bwd)(void *ctx, float *dtable, const float *dy, const int32_t *ids, int64_t n,
                      int64_t C);
    /* RMSNorm backward (x is the forward input): dx (M,C) +=, dw (C) +=. */
    void (*rmsnorm_bwd)(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                        const float *w, int64_t M, int64_t C, float eps);
    /* LayerNorm backward: dx (M,C) +=, dw (C) +=, db (C) +=. */
    void (*layernorm_bwd)(void *ctx, float *dx, float *dw, float *db, const float *dy,
                          const float *x, const float *w, int64_t M, int64_t C, float eps);
    /* Backward of rope (same arguments): rotates the gradient dx in place
     * by the opposite angles. */
    void (*rope_bwd)(void *ctx, float *dx, int64_t M, int64_t n_heads, int64_t head_dim,
                     int64_t rot_dim, const int32_t *pos, const double *inv_freq, float attn_scale);
    /* Backward of causal attention for B independent sequences of T tokens
     * (pos0 = 0; q, dq, dout (B*T, n_heads*hd); k, v, dk, dv (B*T, n_kv*hd)):
     * dq, dk, dv = (overwritten). The softmax is recomputed from q and k. */
    void (*attention_bwd)(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                          const float *out, const float *lse, const float *q, const float *k,
                          const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                          int64_t hd, float scale, int64_t window);
    /* The training forward of causal attention over B independent sequences
     * of T tokens (pos0 = 0), everything float32 whatever kv_dtype is:
     * q, out (B*T, n_heads*hd), k, v (B*T, n_kv*hd), and
     * lse (B*T, n_heads): lse[(b*T+t)*n_heads + h] = log of the sum over the
     * attended keys j of exp(scale * q_t·k_j) (natural log). attention_bwd
     * receives out and lse (a backend may use them, FlashAttention-2 style,
     * instead of recomputing the softmax's normaliser). GQA, scale, window
     * as attention. */
    void (*attention_train)(void *ctx, float *out, float *lse, const float *q, const float *k,
                            const float *v, int64_t B, int64_t T, int64_t n_heads, int64_t n_kv,
                            int64_t hd, float scale, int64_t window);
    /* Optional (NULL: the caller runs attention_train / attention_bwd once
     * a segment): the same over n_segs packed sequences in one call. segs
     * (host memory) holds (first row, length) pairs; sequence i is rows
     * segs[2i] .. segs[2i] + segs[2i+1] - 1, positions from 0; rows in no
     * segment are not written. Results equal the per-segment calls'. */
    void (*attention_train_segs)(void *ctx, float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int64_t *segs, int64_t n_segs, int64_t n_heads,
                                 int64_t n_kv, int64_t hd, float scale, int64_t window);
    void (*attention_bwd_segs)(void *ctx, float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const int64_t *segs, int64_t n_segs, int64_t n_heads,
                               int64_t n_kv, int64_t hd, float scale, int64_t window);
    /* dgate[i] = dy[i] * up[i] * silu'(gate[i]), dup[i] = dy[i] * silu(gate[i]).
     * dgate or dup may alias dy. */
    void (*swiglu_bwd)(void *ctx, float *dgate, float *dup, const float *dy, const float *gate,
                       const float *up, int64_t n);
    /* dx[i] = dy[i] * gelu'(x[i]); dx may alias dy. */
    void (*gelu_bwd)(void *ctx, float *dx, const float *dy, const float *x, int64_t n,
                     int tanh_approx);
    /* Fused classifier + cross-entropy over h (M,C) and w (V,C): loss[m] =
     * logsumexp(h_m @ w^T) - (h_m @ w^T)[targets[m]] (0 where targets[m] < 0).
     * With dh non-NULL also the backward of sum_m dscale * loss[m]: dh (M,C) =,
     * dw (V,C) += (dw may be NULL). Logits are made a block of rows at a time:
     * the full (M,V) logits (or their gradient) never exist at once. */
    void (*classifier_xent)(void *ctx, float *loss, float *dh, float *dw, const float *h,
                            const struct lmc_mat *w, const int32_t *targets, int64_t M,
                            float dscale);
    /* Soft-target cross-entropy (knowledge distillation) over R rows of
     * student logits s (R,V) and teacher logits t (R,V), fwd and bwd
     * together. Per row r, with p = softmax(s), pT = softmax(s / temp),
     * qT = softmax(t / temp), and targets[r] >= 0 (else the row's outputs
     * and gradient are 0):
     *   ce[r] = logsumexp(s) - s[targets[r]];
     *   kl[r] = KL(qT || pT) = sum_v qT (log qT - log pT);
     *   agree[r] = 1 when argmax s = argmax t (first maximum), else 0.
     * With grad, s becomes (in place) the gradient of
     * dscale * ((1 - alpha) ce + alpha temp^2 kl):
     *   dscale * ((1 - alpha) (p - onehot) + alpha temp (pT - qT)).
     * Exps summed in double. Optional (NULL: no distillation). */
    void (*soft_xent)(void *ctx, float *ce, float *kl, float *agree, float *s, const float *t,
                      const int32_t *targets, int64_t R, int64_t V, float alpha, float temp,
                      float dscale, int grad);

    /* ---- Training: memory and the optimizer on the backend. */
    /* Sets bytes bytes at p (backend memory) to zero. */
    void (*zero)(void *ctx, void *p, size_t bytes);
    /* Sum of x[i]^2 over i < n (backend memory), accumulated in double in
     * an order fixed by n alone (deterministic across runs); waits. */
    double (*sumsq)(void *ctx, const float *x, int64_t n);
    /* One AdamW step on n parameters (all backend memory), element by
     * element exactly as lmc_adamw_update (train/adamw.c) in float32:
     *   g' = g * grad_scale;  p' = p * decay_mul;
     *   m = m + one_minus_b1 * (g' - m);  v = v * beta2 + one_minus_b2 * g' * g';
     *   p = p' - step_size * (m / (sqrtf(v) / bc2_sqrt + eps)).
     * g is not modified. */
    void (*adamw)(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                  const struct lmc_adamw_step *s);

    /* ---- Selective state-space models (Mamba, Mamba-2; issue 15). Operands,
     * state layouts and `slots` are documented in ops/ssm.h. NULL where a
     * backend has none. */
    /* Causal depthwise conv1d over B sequences of T tokens: y (B*T, C) =
     * bias[c] + sum_k w[c,k] * x[t-K+1+k, c] (x row r at r * ldx; w (C, K) as
     * HF's conv1d.weight (C, 1, K)), then SiLU when silu. Inputs before t=0
     * come from state ((K-1, C) per slot, updated) or are 0 (state NULL). y
     * must not overlap x. */
    void (*conv1d_causal)(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                          const float *bias, float *state, const int32_t *slots, int64_t B,
                          int64_t T, int64_t C, int64_t K, int silu);
    /* Its backward (zero state before t=0): dx = (row r at r * ldx, only the
     * C columns), dw (C, K) +=, dbias (C) += (NULL skips). */
    void (*conv1d_causal_bwd)(void *ctx, float *dx, float *dw, float *dbias, const float *dy,
                              const float *x, int64_t ldx, const float *w, const float *bias,
                              int64_t B, int64_t T, int64_t C, int64_t K, int silu);
    /* One decode token per sequence: x, y (B rows); state required. */
    void (*conv1d_causal_step)(void *ctx, float *y, const float *x, int64_t ldx, const float *w,
                               const float *bias, float *state, const int32_t *slots, int64_t B,
                               int64_t C, int64_t K, int silu);
    /* Mamba-1 selective scan over B sequences of T tokens: y (B*T, D) =. */
    void (*ssm_scan)(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                     const int32_t *slots, int64_t B, int64_t T, int64_t D, int64_t N);
    /* Its backward (zero state before t=0), recomputing the states from the
     * inputs (memory O(sqrt(T)) per channel, linear overall). */
    void (*ssm_scan_bwd)(void *ctx, const struct lmc_ssm_grads *g, const float *dy,
                         const struct lmc_ssm_io *in, int64_t B, int64_t T, int64_t D,
                         int64_t N);
    /* One decode token per sequence (T = 1), the plain recurrence; state required. */
    void (*ssm_scan_step)(void *ctx, float *y, const struct lmc_ssm_io *in, float *state,
                          const int32_t *slots, int64_t B, int64_t D, int64_t N);
    /* Mamba-2 SSD, chunked, over s->B sequences of s->T tokens: y (B*T, H*P) =. */
    void (*ssd_chunk)(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                      const int32_t *slots, const struct lmc_ssd_shape *s);
    /* Its backward (zero state before t=0), states recomputed as ssm_scan_bwd. */
    void (*ssd_chunk_bwd)(void *ctx, const struct lmc_ssd_grads *g, const float *dy,
                          const struct lmc_ssd_io *in, const struct lmc_ssd_shape *s);
    /* One decode token per sequence (s->T must be 1); state required. */
    void (*ssd_step)(void *ctx, float *y, const struct lmc_ssd_io *in, float *state,
                     const int32_t *slots, const struct lmc_ssd_shape *s);
    /* Gated RMSNorm (Mamba-2, norm_before_gate = False): v = x * silu(z) (z
     * NULL: v = x), y (M,C) = v / sqrt(mean(v^2) + eps) * w, the mean over
     * each group of `group` columns (C % group == 0). z row m at m * ldz. y
     * may alias x. */
    void (*rmsnorm_gated)(void *ctx, float *y, const float *x, const float *z, int64_t ldz,
                          const float *w, int64_t M, int64_t C, int64_t group, float eps);
    /* Its backward: dx (M,C) =, dz = (row m at m * ldz; unused when z is
     * NULL), dw (C) += (NULL skips). */
    void (*rmsnorm_gated_bwd)(void *ctx, float *dx, float *dz, float *dw, const float *dy,
                              const float *x, const float *z, int64_t ldz, const float *w,
                              int64_t M, int64_t C, int64_t group, float eps);
    /* ---- Memory-efficient optimizers (train/optim.h; formulas and host
     * cores in ops/optim_ops.h). NULL where a backend has none: the
     * optimizer then refuses to start with a clear error. */
    /* One Muon step on p, g, buf (rows, cols), all backend memory; work:
     * lmc_muon_work_floats(rows, cols) floats of backend memory. */
    void (*muon)(void *ctx, float *p, const float *g, float *buf, int64_t rows, int64_t cols,
                 const struct lmc_muon_step *s, float *work);
    /* Optional (NULL: the optimizer calls muon per matrix): one Muon step
     * with bf16 Newton–Schulz (s->ns_bf16) on count <= LMC_MUON_BATCH_MAX
     * matrices of one shape at once (struct lmc_muon_mat, ops/optim_ops.h);
     * work: lmc_muon_batch_work_floats(count, rows, cols) floats. */
    void (*muon_batch)(void *ctx, const struct lmc_muon_mat *mats, int count, const struct lmc_muon_step *s,
                       float *work);
    /* Whether muon_batch also takes the fp32 iteration (!s->ns_bf16; the
     * CPU's: a matrix per thread, each through OpenBLAS single-threaded),
     * and then matrices of different shapes in one call. */
    bool muon_batch_f32;
    /* One 8-bit AdamW step on n parameters: moments as codes qm, qv (n bytes)
     * and per-block absmax_m, absmax_v (ceil(n / block) floats); code_m,
     * code_v (256 floats each) the signed and unsigned dynamic codes; all
     * backend memory. AdamW's formula (adamw entry) on the dequantized
     * moments, then re-quantized with the block's new absmax. */
    void (*adamw8bit)(void *ctx, float *p, const float *g, uint8_t *qm, uint8_t *qv,
                      float *absmax_m, float *absmax_v, int64_t n, int64_t block,
                      const float *code_m, const float *code_v, const struct lmc_adamw_step *s);
    /* One GaLore / APOLLO step in rank-r space (ops/optim_ops.h) on p, g
     * (rows, cols), the low-rank moments m, v, the projection proj and
     * APOLLO's prev_norm (1 float), all backend memory; work:
     * lmc_lowrank_work_floats(rows, cols, rank) floats of backend memory. */
    void (*lowrank)(void *ctx, float *p, const float *g, float *m, float *v, const float *proj,
                    float *prev_norm, int64_t rows, int64_t cols, int64_t rank,
                    const struct lmc_lowrank_step *s, float *work);
    /* Optional (NULL: GaLore refreshes exactly, on the host): GaLore's
     * subspace refresh on the backend (ops/optim_ops.h): galore_ritz writes
     * Y and C (rank^2 floats) for the host's Cholesky; galore_orth
     * multiplies Y (or P) by the host's factor x (a CholeskyQR pass) and
     * writes C again and, with g, T (2 rank^2 floats) for the host's r x r
     * work; galore_rotate the new projection from Y and the solve's
     * coefficients w (rank^2 floats, backend memory), signed. work:
     * lmc_galore_ritz_work_floats. All three or none. */
    void (*galore_ritz)(void *ctx, const float *g, const float *proj, int64_t rows, int64_t cols, int64_t rank,
                        float *y, float *ct, float *work);
    void (*galore_orth)(void *ctx, const float *g, float *y, const float *x, int64_t rows, int64_t cols,
                        int64_t rank, float *ct, float *work);
    void (*galore_rotate)(void *ctx, float *proj, const float *y, const float *w, int64_t rows, int64_t cols,
                          int64_t rank);

    /* ---- Mixture of experts: grouped GEMM (ops/cpu/moe_gemm.c,
     * ops/cuda/moe_gemm.cu). Optional (NULL: the model runs one matmul per
     * expert). E experts whose rows are contiguous: rows off[e] ..
     * off[e+1]-1 of x (rows, K) go through expert e's weight w[e] (N, K):
     * those rows of y (rows, N) = x_e @ w[e]^T. off: host memory, E+1
     * entries, nondecreasing from 0; w: host array of E matrices of one
     * shape and dtype (F32, BF16 or F16). Experts without rows are skipped. */
    void (*moe_gemm)(void *ctx, float *y, const float *x, const int64_t *off, int64_t E,
                     const struct lmc_mat *const *w);
    /* Backward (F32 weights): dx rows of e (rows, K) = dy_e @ w[e] (+= when
     * accum_dx; dx NULL: skipped), dw[e] (N, K) += dy_e^T @ x_e (dw NULL:
     * skipped); dx must not overlap dy or x. Deterministic. */
    void (*moe_gemm_bwd)(void *ctx, float *dx, float *const *dw, const float *dy, const float *x,
                         const int64_t *off, int64_t E, const struct lmc_mat *const *w, int accum_dx);
    /* Optional (NULL: moe_gemm once per product): n products sharing x
     * and off in one call, y[i] = what moe_gemm(y[i], x, off, E, w[i])
     * gives (w[i]: E matrices), bit for bit; the experts' gate and up
     * projections of a layer, one parallel job on the CPU at decode. */
    void (*moe_gemm_multi)(void *ctx, int n, float *const *y, const float *x, const int64_t *off, int64_t E,
                           const struct lmc_mat *const *const *w);
    /* Quantized weights (issue 10). Optional (NULL: the backend runs no
     * quantized linears). y(M, w->n) = x(M, w->k) @ W^T (+ bias) for a
     * weight prepared by quant/qmatmul.h (activations quantized to int8
     * per block of 32, integer block dots); scratch comes from the
     * backend's context, no allocation per call once it has grown. */
    void (*qmatmul)(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                    const float *bias);
    /* Optional (NULL: one qmatmul per weight): y[i] = x @ W_i^T (+ bias[i],
     * NULL for none) for n weights sharing the input (q/k/v, gate/up), each
     * y[i] the same as qmatmul gives it; the CPU quantizes x once and runs
     * the n products in one pool run. */
    void (*qmatmul_multi)(void *ctx, int n, float *const *y, const float *x, int64_t M,
                          const struct lmc_qweight *const *w, const float *const *bias);
    /* y(n, w->k) = rows ids of a quantized table w (a GGUF token embedding
     * kept in its blocks), dequantized to f32; ids in range (caller checks).
     * Optional (NULL: the model gives this backend the table expanded to
     * float before it places it). */
    void (*qembed)(void *ctx, float *y, const struct lmc_qweight *w, const int32_t *ids, int64_t n);
    /* Optional (NULL on host_memory backends, whose qmatmul takes the host
     * weight itself): a backend-resident copy of a prepared weight w (host
     * memory, not kept) in the backend's own layout; *out is what this
     * backend's qmatmul then receives, released by qweight_free. */
    lmc_status (*qweight_upload)(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out,
                                 lmc_err *err);
    void (*qweight_free)(void *ctx, struct lmc_qweight *w);
    /* Quantized weights in float math (QLoRA training, issue 12). Optional
     * (NULL: no training over a quantized base). qmatmul_f: y(M, w->n) =
     * x @ deq(W)^T (+ bias); qmatmul_f_bwd: dx(M, w->k) = dy(M, w->n) @
     * deq(W) (+= when accum_dx). W is dequantized a tile of rows at a time
     * into scratch (never whole), activations stay float: the numbers of a
     * dense F32 linear holding deq(W), to float rounding. Deterministic. */
    void (*qmatmul_f)(void *ctx, float *y, const float *x, int64_t M, const struct lmc_qweight *w,
                      const float *bias);
    void (*qmatmul_f_bwd)(void *ctx, float *dx, const float *dy, int64_t M, const struct lmc_qweight *w,
                          int accum_dx);
    /* Optional (NULL on host_memory backends, whose qmatmul_f takes the
     * host weight itself): a backend-resident copy of w (host memory, not
     * kept; NF4 — flat or per row, double-quantized absmax kept compact —
     * or integer groups) for qmatmul_f / qmatmul_f_bwd, dequantizing to
     * the floats lmc_qweight_dequant_rows gives; *bytes = the backend
     * memory it takes. Released by qweight_free_f. */
    lmc_status (*qweight_upload_f)(void *ctx, const struct lmc_qweight *w, struct lmc_qweight **out, size_t *bytes,
                                   lmc_err *err);
    void (*qweight_free_f)(void *ctx, struct lmc_qweight *w);
    /* Inverted dropout (LoRA dropout, issue 12). Optional (NULL: adapters
     * train without dropout only). y[i] = x[i] / (1 - p) where element
     * offset + i is kept, 0 where dropped; whether an element is kept is a
     * pure function of (seed, offset + i) (lmc_dropout_keep, core/rng.h),
     * so the backward applies the same mask to the gradient by calling it
     * again with the same seed. y may alias x. 0 <= p < 1. */
    void (*dropout)(void *ctx, float *y, const float *x, int64_t n, float p, uint64_t seed, int64_t offset);
    /* Clamping to [-c, c] (OLMoE's clip_qkv). Optional (NULL: models with
     * clip_qkv report the missing op). clamp: y = min(max(x, -c), c), y
     * may alias x; clamp_bwd: dx = dy where -c <= x <= c, else 0 (x: the
     * values before clamping; dx may alias dy). c > 0. */
    void (*clamp)(void *ctx, float *y, const float *x, int64_t n, float c);
    void (*clamp_bwd)(void *ctx, float *dx, const float *dy, const float *x, int64_t n, float c);
    /* Copy with conversion between F32 and BF16 (training's bf16-saved
     * activations, issue 12): dst (n elements of dst_dt) = src (n of
     * src_dt); to BF16 rounds to nearest even (lmc_f32_to_bf16), from BF16
     * is exact, F32 to F32 copies; BF16 elements are uint16_t. dst and src
     * do not overlap. Optional (NULL: the trainer keeps activations f32). */
    void (*convert)(void *ctx, void *dst, enum lmc_dtype dst_dt, const void *src, enum lmc_dtype src_dt, int64_t n);
    /* Host memory for offloaded training checkpoints (issue 12: full
     * recomputation's layer inputs kept off the device; ops/cpu/offload.c,
     * ops/cuda/offload.cu). host_alloc: host memory the offload copies can
     * reach fast (pinned on a GPU; NULL when out of memory), not counted as
     * the backend's; host_free waits for copies still using it. offload:
     * bytes from src to dst (one backend memory, the other host_alloc's)
     * after the work queued so far, overlapping the work queued after it;
     * slot (0 <= slot < LMC_OFFLOAD_SLOTS) names the copy for offload_wait,
     * which makes the work queued after it wait for the slot's last copy.
     * Copies run in the order they were queued. The embed op may read a
     * bf16 table in host_alloc memory in place (a frozen token embedding
     * kept off the device, train/qlora.h; CUDA: pinned memory is mapped
     * into the device's unified address space). All four optional (NULL:
     * no offloading). */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p);
    void (*offload)(void *ctx, void *dst, const void *src, size_t bytes, int slot);
    void (*offload_wait)(void *ctx, int slot);

    /* ---- Mixture of experts: routing, token permutation and the weighted
     * combine (ops/cpu/moe_route.c, ops/cuda/moe_route.cu; struct
     * lmc_moe_routing below). NULL where a backend has none: MoE models
     * then report the missing op. n tokens, E experts, k choices a token;
     * every array is backend memory unless it says host. */
    /* r->probs (n, E): router logits in, softmax (in double, rounded) out;
     * r->sel / r->wts (n, k): the top k (largest first, ties to the lower
     * index, as torch.topk) and their probabilities, divided by their sum
     * when norm_topk; r->perm / r->row / r->off: the n k choices grouped by
     * expert, stable (an expert's rows in token order): grouped row perm^-1;
     * off_host (host, E + 1) receives r->off and the call waits; off_host
     * NULL: no copy (moe_gemm_dev reads r->off), nothing waits. */
    void (*moe_route)(void *ctx, const struct lmc_moe_routing *r, int64_t *off_host, int64_t n,
                      int64_t E, int64_t k, int norm_topk);
    /* Optional (NULL: moe_gemm with host offsets), BF16 weights only: the
     * grouped GEMM with the offsets in backend memory (r->off of
     * moe_route, which then takes off_host NULL: no copy, no wait); every
     * expert has at most max_rows rows. Same result as moe_gemm. */
    void (*moe_gemm_dev)(void *ctx, float *y, const float *x, const int64_t *off, int64_t max_rows,
                         int64_t E, const struct lmc_mat *const *w);
    /* Load-balancing statistics: cnt[e] = choices of e among sel (n k),
     * psum[e] = sum over tokens of probs[t, e]; cnt, psum host (E). Waits. */
    void (*moe_stats)(void *ctx, double *cnt, double *psum, const int32_t *sel, const float *probs,
                      int64_t n, int64_t k, int64_t E);
    /* xs (n k, C): row i = h row perm[i] / k (tokens into expert order). */
    void (*moe_gather)(void *ctx, float *xs, const float *h, const int32_t *perm, int64_t nk, int64_t k,
                       int64_t C);
    /* Its backward: dh (n, C) = sum over j < k of dxs row row[t k + j] (=). */
    void (*moe_gather_bwd)(void *ctx, float *dh, const float *dxs, const int32_t *row, int64_t n, int64_t k,
                           int64_t C);
    /* y (n, C) = res + sum_j wts[t, j] o[row[t, j]] (+ sigmoid(sl[t]) so[t]
     * when so is non-NULL: a shared expert's output and gate logit), the
     * sum in float in j order, the shared term last. y may alias res. */
    void (*moe_combine)(void *ctx, float *y, const float *res, const float *o, const float *wts,
                        const int32_t *row, const float *so, const float *sl, int64_t n, int64_t k,
                        int64_t C);
    /* Backward of moe_combine and of the routing for dy (n, C): dox rows
     * row[t, j] = wts[t, j] dy_t (=); dlog (n, E) = the router logits'
     * gradient (=) through the renormalisation (norm_topk) and the softmax
     * of dW_tj = dy_t . o[row[t, j]] (double) plus aux[e] for every e
     * (aux: host, E doubles, the load-balancing loss's d/dp; NULL: none);
     * with so: dso (n, C) = sigmoid(sl) dy (=), dsl (n) = sig (1 - sig)
     * (dy . so) (=). */
    void (*moe_combine_bwd)(void *ctx, float *dox, float *dlog, float *dso, float *dsl, const float *dy,
                            const float *o, const struct lmc_moe_routing *r, const float *so,
                            const float *sl, const double *aux, int64_t n, int64_t E, int64_t k,
                            int64_t C, int norm_topk);

    /* ---- Ring attention's block ops (context parallelism, dist/ring_attn.h;
     * ops/cpu/attn_block.c, ops/cuda/attn_block.cu). NULL where a backend
     * has none. n queries q (n, n_heads*hd) at global positions qpos (n)
     * against one block of ns keys k, v (ns, n_kv*hd) at kpos (ns); GQA as
     * attention. causal: key j is visible to query i when kpos[j] <=
     * qpos[i]; else every key is. */
    /* ob (n, n_heads*hd): the attention within the block (normalised over
     * its visible keys), lb (n, n_heads): its log-sum-exp of scale q.k
     * (natural log); a row with no visible key gets ob 0, lb -inf. */
    void (*attn_block_fwd)(void *ctx, float *ob, float *lb, const float *q, const float *k, const float *v,
                           const int32_t *qpos, const int32_t *kpos, int64_t n, int64_t ns, int64_t n_heads,
                           int64_t n_kv, int64_t hd, float scale, int causal);
    /* (out, lse) <- the log-sum-exp merge of (out, lse) and (ob, lb), per
     * row and head; lb -inf rows leave out unchanged; lse -inf rows take
     * (ob, lb). */
    void (*attn_block_merge)(void *ctx, float *out, float *lse, const float *ob, const float *lb, int64_t n,
                             int64_t n_heads, int64_t hd);
    /* The block's share of the backward with the merged forward's out and
     * lse (over every block): dq (n, n_heads*hd) +=, dk, dv (ns, n_kv*hd)
     * += the gradients of the block's keys and values (D = rowsum(dout *
     * out) per row and head). */
    void (*attn_block_bwd)(void *ctx, float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v, const int32_t *qpos,
                           const int32_t *kpos, int64_t n, int64_t ns, int64_t n_heads, int64_t n_kv, int64_t hd,
                           float scale, int causal);
};

/* The CPU backend with n_threads threads (0 = number of online CPUs).
 * lmc_backend_cpu_free releases the table's ctx. */
lmc_status lmc_backend_cpu_init(struct lmc_backend *be, int n_threads, lmc_err *err);
void lmc_backend_cpu_free(struct lmc_backend *be);
/* The CPU's bf16 mixed-precision training mode (on) or fp32 (off, the
 * default): the training GEMMs (matmul, matmul_multi, matmul_bwd,
 * matmul_bwd_multi, classifier_xent) take bf16-rounded operands with f32
 * sums (ops/cpu/gemm_bf16.c); weights, gradients, optimizer and every other
 * op stay f32. LMC_ERR_UNSUPPORTED (nothing changed) where the CPU lacks
 * AVX512-BF16. */
lmc_status lmc_backend_cpu_set_train_bf16(struct lmc_backend *be, bool on, lmc_err *err);
/* Inference's bf16 prefill route (on by default where the CPU has
 * AVX512-BF16): matmul/matmul_multi on F16/BF16 weights from
 * LMC_CPU_PF_MIN_M rows take bf16-rounded operands with f32 sums
 * (ops/cpu/matmul_pf.c). Off: the fp32 kernels, for callers that need
 * fp32 accuracy on those weights (a reference), or whose rows must not
 * depend on what else shares a batch (the server). No-op on another
 * backend. */
void lmc_backend_cpu_set_bf16_prefill(const struct lmc_backend *be, bool on);
bool lmc_backend_cpu_bf16_prefill(const struct lmc_backend *be); /* whether it is on (false elsewhere) */
/* The server's batch-invariant form of that route (infer/scheduler.c sets
 * it around each step's forward, with the row-count route off): F16/BF16
 * calls of exactly m rows (the step's) send rows [0, pf_rows) (prompt
 * rows) through the bf16 prefill GEMM and rows [pf_rows, m) (generated
 * rows) through the decode-row GEMM (ops/cpu/matmul_dr.c), two calls
 * whose per-row bits depend on neither M nor the row's place; the weight
 * `head` takes every row of any call through the decode-row GEMM; other
 * calls keep the fp32 kernels. m = 0 clears it. Where the CPU lacks
 * AVX512-BF16 but has AVX2 (+FMA, F16C), every routed row (prompt rows
 * too) takes the decode-row GEMM's f32 family (ops/cpu/matmul_drf.c). No-op
 * on CPUs with neither or on another backend. */
void lmc_backend_cpu_route_rows(const struct lmc_backend *be, int64_t m, int64_t pf_rows, const void *head);
/* Whether lmc_backend_cpu_route_rows can take effect on be. */
bool lmc_backend_cpu_can_route_rows(const struct lmc_backend *be);

/* The AdamW formula of the adamw entry on host memory (defined in
 * ops/cpu/adamw.c): the CPU op and lmc_adamw_update both run it. */
void lmc_adamw_apply(float *p, const float *g, float *m, float *v, int64_t n,
                     const struct lmc_adamw_step *s);

/* The sampler's per-row core, on host memory (one source of truth for
 * lmc_sampler_sample, the CPU sample_rows and the CUDA kernel's semantics;
 * defined in ops/cpu/sample.c): picks an id from logits (V) with p (p->u
 * used only when temperature > 0). idx, prob: (V) scratch. */
int32_t lmc_sample_logits_row(const float *logits, int64_t V, const struct lmc_sample_row *p,
                              int32_t *idx, float *prob);
/* The filtering half of lmc_sample_logits_row (temperature > 0): returns
 * the number n of candidates kept; idx[0..n) are their ids and prob[idx[i]]
 * their unnormalised weights (the draw picks idx[i] with probability
 * prob[idx[i]] / sum). 0 when every logit is -inf. */
int64_t lmc_sample_filter_row(const float *logits, int64_t V, const struct lmc_sample_row *p,
                              int32_t *idx, float *prob);

/* The ring of attention_paged_ring, one slot (a sequence) of one layer:
 * K rows (ring_rows, row) f16, V rows the same, then ring_rows int32 tags
 * (the position each ring row holds, -1: none), each part 8-aligned. */
static inline size_t lmc_kv_ring_part_bytes(int64_t row, int64_t ring_rows) {
    return ((size_t)ring_rows * (size_t)row * 2 + 7) & ~(size_t)7;
}
static inline size_t lmc_kv_ring_slot_bytes(int64_t row, int64_t ring_rows) {
    return 2 * lmc_kv_ring_part_bytes(row, ring_rows) + (((size_t)ring_rows * 4 + 7) & ~(size_t)7);
}

#endif
