/* tp.h — tensor-parallel (Megatron-LM) building blocks over a communicator
 * of T ranks: column- and row-parallel linears with their "f"/"g"
 * all-reduce pair, shard planning by attention heads (GQA: KV heads split,
 * or replicated when T exceeds them), a vocabulary-parallel embedding and a
 * vocabulary-parallel cross-entropy that never gathers the full logits.
 * Matmuls go through the backend table; the collectives through the
 * communicator (its buffers must be the backend's memory: host backends
 * with tcp/mpi, CUDA with nccl). The embedding lookup and the
 * cross-entropy's per-row work run on host buffers. */
#ifndef LMC_TP_H
#define LMC_TP_H

#include "dist/comm.h"
#include "ops/backend.h"

struct lmc_tp {
    struct lmc_comm *c;              /* the tensor-parallel group */
    const struct lmc_backend *be;
};

/* Heads a rank owns: q heads [q0, q0+nq); KV heads [kv0, kv0+nkv). With
 * n_kv >= T the KV heads are split (n_kv % T == 0); with n_kv < T each rank
 * holds the one KV head its q heads share, replicated on kv_replicas =
 * T / n_kv ranks (T % n_kv == 0), whose gradients those ranks must sum. */
struct lmc_tp_heads {
    int64_t q0, nq, kv0, nkv;
    int kv_replicas;
    /* vocabulary-parallel embedding and head (training, tp_train.h): this
     * rank's rows [v0, v0+nv) of them; vocab false: replicated */
    bool vocab;
    int64_t v0, nv;
};
lmc_status lmc_tp_plan_heads(int64_t n_heads, int64_t n_kv, int T, int rank, struct lmc_tp_heads *p,
                             lmc_err *err);

/* Sums the gradient of replicated KV-head weights over the ranks holding
 * the same head (n_kv < T): dw (rows_per_head, cols), this rank's head
 * p->kv0, is replaced by the sum over its replicas (one all-reduce of n_kv
 * heads' rows through the whole group). No-op when the heads are split. */
lmc_status lmc_tp_sum_replicated(const struct lmc_tp *tp, const struct lmc_tp_heads *p, int64_t n_kv,
                                 float *dw, int64_t head_floats, lmc_err *err);

/* Rows [r0, r0+nr) of a row-major (rows, cols) matrix into dst: the shard
 * of a column-parallel weight (out features). */
void lmc_tp_take_rows(float *dst, const float *src, int64_t cols, int64_t r0, int64_t nr);
/* Columns [c0, c0+nc) of every row: the shard of a row-parallel weight. */
void lmc_tp_take_cols(float *dst, const float *src, int64_t rows, int64_t cols, int64_t c0,
                      int64_t nc);

/* Column-parallel linear: y (M, N/T) = x @ W_r^T + b_r, no collective.
 * Backward: dx (M, K) = all-reduce over ranks of dy_r @ W_r ("f"'s
 * backward); dW_r, db_r += as matmul_bwd. */
void lmc_tp_col_fwd(const struct lmc_tp *tp, float *y, const float *x, int64_t M,
                    const struct lmc_mat *w, const float *bias);
lmc_status lmc_tp_col_bwd(const struct lmc_tp *tp, float *dx, float *dw, float *db, const float *dy,
                          const float *x, int64_t M, const struct lmc_mat *w, lmc_err *err);

/* Row-parallel linear: y (M, N) = all-reduce over ranks of x_r @ W_r^T
 * ("g"), then + bias (the full bias, added once after the reduction).
 * Backward: dx_r = dy @ W_r (no collective), dW_r +=, db += column sums of
 * dy (the same on every rank). */
lmc_status lmc_tp_row_fwd(const struct lmc_tp *tp, float *y, const float *x, int64_t M,
                          const struct lmc_mat *w, const float *bias, lmc_err *err);
void lmc_tp_row_bwd(const struct lmc_tp *tp, float *dx, float *dw, float *db, const float *dy,
                    const float *x, int64_t M, const struct lmc_mat *w);

/* Vocabulary-parallel embedding: this rank holds rows [v0, v0+vr) of the
 * (V, C) table; x (n, C) = all-reduce of the rows it holds (zeros for ids
 * outside). Ids out of [0, V) are refused naming the position. Backward:
 * dtable_r[id - v0] += dx[i] for the ids it holds. Host buffers. */
lmc_status lmc_tp_embed_fwd(const struct lmc_tp *tp, float *x, const float *table, int64_t v0,
                            int64_t vr, int64_t V, int64_t C, const int32_t *ids, int64_t n,
                            lmc_err *err);
void lmc_tp_embed_bwd(float *dtable, int64_t v0, int64_t vr, int64_t C, const int32_t *ids,
                      int64_t n, const float *dx);

/* Vocabulary-parallel logits gathered (inference): logits holds this
 * rank's (rows, nv) columns [v0, v0+nv) of lmc_dist_slice(V, rank, world)
 * packed at its start, and gets the full (rows, V) (room for rows x V
 * floats). One all-gather of rows x ceil(V/world) floats. Host buffers. */
lmc_status lmc_tp_vocab_gather(struct lmc_comm *c, float *logits, int64_t rows, int64_t V, lmc_err *err);

/* Vocabulary-parallel cross-entropy: logits (M, vr) are this rank's columns
 * [v0, v0+vr) of the full (M, V) logits. loss = mean over the rows whose
 * target is >= 0 of logsumexp(full row) - logit[target], from three
 * all-reduces of M floats each (row max, row sum of exp, target logit);
 * dlogits (M, vr) (may be NULL; may alias logits) = (softmax - onehot) /
 * rows counted. Targets >= V are refused. Host buffers. */
lmc_status lmc_tp_xent(const struct lmc_tp *tp, double *loss, float *dlogits, const float *logits,
                       int64_t M, int64_t v0, int64_t vr, int64_t V, const int32_t *targets,
                       lmc_err *err);

#endif
