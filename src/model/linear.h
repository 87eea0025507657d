/* linear.h — the model's one matrix abstraction: a Linear layer y = x W^T
 * + b whose weight may be in any format, with an optional bias, optional
 * low-rank adapters and a split for tensor parallelism. lmc_linear_fwd /
 * lmc_linear_bwd are the only place model code reaches the backend's
 * matmul entries: they pick the kernel for the format and fuse what the
 * backend can fuse (several linears sharing one input: matmul_multi /
 * matmul_bwd_multi; SwiGLU: matmul_swiglu; residual accumulate:
 * matmul_add), falling back to plain ops otherwise. */
#ifndef LMC_MODEL_LINEAR_H
#define LMC_MODEL_LINEAR_H

#include "ops/backend.h"

#include <stdbool.h>
#include <stdint.h>

/* Weight formats. DENSE: w is an lmc_mat in F32, BF16 or F16. Block-
 * quantized formats add an entry here, keep their packed blocks in w.data
 * (w.rows/cols = out/in features) and their scales, zeros and group index
 * in the fields below; lmc_linear_fwd dispatches on the format. */
enum lmc_wformat {
    LMC_WFMT_DENSE = 0,
    /* Quantized (CPU): `q` holds the kernel-ready weight (quant/qmatmul.h,
     * GGUF blocks, GPTQ/AWQ/rtn integer groups, NF4 or ternary) and the
     * backend's qmatmul entry runs it; w keeps rows/cols (data: the codes,
     * not floats). Forward only. */
    LMC_WFMT_QUANT,
};

struct lmc_qweight;

/* Tensor-parallel split: COLUMN shards the output features (no collective
 * in the forward; dx all-reduced in the backward), ROW shards the input
 * features (y all-reduced in the forward, the bias joining rank 0's part;
 * none in the backward). The collective runs over `tp` (below); a failed
 * one leaves its status in tp->st for the driver to check after the step
 * (later collectives of a broken communicator fail too). */
enum lmc_split { LMC_SPLIT_NONE = 0, LMC_SPLIT_COLUMN, LMC_SPLIT_ROW };

struct lmc_comm;
struct lmc_tp_group {
    struct lmc_comm *c;            /* the tensor-parallel ranks */
    lmc_status st;                 /* first failed collective (sticky) */
    lmc_err err;
    /* sequence parallelism (block.h, lmc_sp): a row-parallel
     * lmc_linear_fwd_res writes only its partial product into y (no
     * all-reduce, no residual: the block reduce-scatters it and adds its
     * rows of the residual), and a column-parallel lmc_linear_bwd leaves
     * dx's partial sums (the block reduce-scatters them) */
    bool sp;
};

/* A low-rank adapter: y += scale * (x A^T) B^T, A (r, in), B (out, r),
 * F32. The backend table has no scaling op, so the scale is applied as a
 * matmul with s = diag(scale) (r, r), exact in f32. scratch (backend
 * memory, scratch_rows * (2 r + out) floats) holds the low-rank products
 * of up to scratch_rows rows; longer inputs go through in row chunks.
 * Adapters of the gradient linear (lmc_linear_bwd's D) hold dA and dB in
 * a.data / b.data (NULL: not accumulated). */
struct lmc_adapter {
    struct lmc_mat a, b, s;
    float scale;
    float *scratch;
    int64_t scratch_rows;
    /* LoRA dropout (training only; PEFT: scale * (dropout(x) A^T) B^T):
     * p in [0, 1) and the mask's seed (the backend's dropout op; the
     * backward recomputes the same mask). With p > 0 the scratch holds
     * scratch_rows * (2 r + out + in) floats. 0 at inference. */
    float dropout;
    uint64_t drop_seed;
};

/* Per-row adapters (multi-adapter serving): one step's rows grouped by
 * adapter, filled by the batched driver (model/forward_batch.c) before the
 * layers run and emptied after. Group g is rows row0[g] .. row0[g] +
 * rows[g] - 1 of every linear input (total rows in all), served by adapter
 * id[g] (1..n_ids; base rows are in no group). Host memory. */
struct lmc_row_groups {
    int n_ids;                     /* adapters the bank holds */
    int n;                         /* groups this step (0: no per-row adapters) */
    int64_t total;                 /* rows of the step */
    int64_t *row0, *rows;          /* (n_ids) each */
    int32_t *id;                   /* (n_ids) */
};

struct lmc_linear {
    enum lmc_wformat format;
    struct lmc_mat w;              /* (out, in) */
    const void *scales, *zeros;    /* quantized formats; NULL for DENSE */
    const int32_t *g_idx;          /* quantized formats with act-order; NULL otherwise */
    int64_t group_size;            /* quantized formats; 0 for DENSE */
    const struct lmc_qweight *q;   /* LMC_WFMT_QUANT: the prepared weight */
    /* LMC_WFMT_QUANT in float math (QLoRA training): the backend's
     * qmatmul_f (W dequantized per tile, float activations) instead of
     * qmatmul, and a backward (dx through qmatmul_f_bwd; the base frozen). */
    bool qfloat;
    /* Input observer (GPTQ calibration): when set, lmc_linear_fwd calls it
     * with the linear's input x (M, in) before the product, and runs the
     * linear unfused. NULL in every model except one being calibrated. */
    void (*observe)(void *user, const struct lmc_linear *L, const float *x, int64_t M);
    void *observe_user;
    const float *bias;             /* (out) or NULL */
    enum lmc_split split;
    struct lmc_tp_group *tp;       /* split != NONE */
    const struct lmc_adapter *adapters; /* n_adapters of them, added after the base matmul */
    int n_adapters;
    /* Per-row adapters (forward only): slots[k - 1] is adapter k of the
     * bank (a.data NULL: adapter k leaves this linear alone); groups says
     * which rows take which adapter this step. Each group's rows get their
     * adapter's low-rank product (one GEMM pair per group), after the
     * shared adapters above. NULL / 0: none. */
    const struct lmc_adapter *slots;
    int n_slots;
    const struct lmc_row_groups *groups;
};

/* y[i](M, out_i) = x(M, in) @ L[i]^T (+ bias) for i < k (k <= 8): one
 * backend job when the backend has matmul_multi. The y[i] must not overlap
 * each other or x. */
void lmc_linear_fwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    float *const *y, const float *x, int64_t M);
/* y = res + x @ L^T (+ bias). y == res: accumulated in place (the fused
 * matmul_add when the backend has it, else through tmp (M, out)); y != res:
 * tmp unused. */
void lmc_linear_fwd_res(const struct lmc_backend *be, const struct lmc_linear *L, float *y,
                        const float *res, const float *x, int64_t M, float *tmp);
/* y(M, out) = silu(x @ G^T + bg) * (x @ U^T + bu): one fused matmul_swiglu
 * when the backend has it and there are no biases; else two matmuls (tmp
 * (M, out) holds the up projection) and swiglu. */
void lmc_linear_fwd_swiglu(const struct lmc_backend *be, const struct lmc_linear *G,
                           const struct lmc_linear *U, float *y, const float *x, int64_t M,
                           float *tmp);
/* Backward of y[i] = x @ L[i]^T + b[i], i < k (F32 weights, or a frozen
 * LMC_WFMT_QUANT base with qfloat: dx only, no dW / db): dx (M, in) =
 * sum_i dy[i] @ L[i] (+= when accum_dx), dW[i] += dy[i]^T x and db[i] +=
 * column sums of dy[i] into the gradient linears D[i] (their w.data and
 * bias; NULL parts skipped: a frozen base). One job when the backend has
 * matmul_bwd_multi. Adapters of L[i] add their dx part, and their dA / dB
 * into D[i]'s adapters (same count) when D[i] has them. */
void lmc_linear_bwd(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                    const struct lmc_linear *const *D, float *dx, const float *const *dy,
                    const float *x, int64_t M, bool accum_dx);
/* lmc_linear_fwd / lmc_linear_bwd with the products in f32 even under a
 * mixed-precision training mode (through the backend's matmul_f32 /
 * matmul_bwd_f32 when it has them; else the same as the plain calls).
 * MoE routers use them: bf16-rounded router logits send tokens to other
 * experts, and the gradients then point elsewhere. */
void lmc_linear_fwd_f32(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                        float *const *y, const float *x, int64_t M);
void lmc_linear_bwd_f32(const struct lmc_backend *be, int k, const struct lmc_linear *const *L,
                        const struct lmc_linear *const *D, float *dx, const float *const *dy,
                        const float *x, int64_t M, bool accum_dx);

#endif
