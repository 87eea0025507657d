/* tp_model.h — a loaded model cut into one tensor-parallel rank's shard:
 * attention q/k/v column-parallel by heads (GQA: KV heads split when there
 * are at least T of them, else the one a rank's q heads share replicated),
 * the output projection row-parallel, the MLP gate/up (GELU: fc) column-
 * and down row-parallel, with the all-reduces in lmc_linear_fwd/bwd. The
 * rank's lmc_model carries a local config (its heads, KV heads and
 * intermediate size) so the model layer's drivers run it unchanged;
 * embedding, norms and the head stay replicated (or, with the vocab
 * variant, the embedding and head split by vocabulary rows). */
#ifndef LMC_TP_MODEL_H
#define LMC_TP_MODEL_H

#include "dist/tp.h"
#include "model/model.h"

struct lmc_tp_model {
    struct lmc_model m;              /* the rank's model (not to be lmc_model_free'd) */
    struct lmc_tp_group group;       /* linears point here: do not move the struct */
    struct lmc_tp_heads heads;
    struct lmc_block_w *layers;
    void *arena;                     /* the sharded dense weights in their dtype, f32 biases, row-split
                                      * adapters' A columns (64-byte aligned pieces) */
    struct lmc_qweight *qw;          /* the quantized weights' cuts (tp_quant.h), n_qw of them */
    int n_qw;
    struct lmc_adapter *adapters;    /* the linears' adapters cut as their base (A whole / B's rows over a
                                      * column split, A's columns / B whole over a row split) */
    int n_adapters;
    struct lmc_wvocab wv;            /* vocabulary-parallel embedding/head (m.w.vocab) */
    float *varena;                   /* their rows (NULL: replicated) */
};

/* Shards `full` (host memory; dense F32/F16/BF16 linears, or quantized ones
 * cut by rows / whole blocks of columns: tp_quant.h) for
 * rank c->rank of c->world. Refused with a message naming the field when
 * heads, KV heads or the layout do not split. `full` must outlive t. */
lmc_status lmc_tp_model_shard(struct lmc_tp_model *t, const struct lmc_model *full,
                              struct lmc_comm *c, lmc_err *err);
/* The same, with vocab: the token embedding and the head cut to this rank's
 * rows [v0, v0+nv) of lmc_dist_slice(V, rank, world) (a tied head the same
 * rows), the lookup all-reduced and the logits all-gathered over the group
 * (lmc_weights.vocab), so the logits the sampler sees are the full rows. */
lmc_status lmc_tp_model_shard_vocab(struct lmc_tp_model *t, const struct lmc_model *full,
                                    struct lmc_comm *c, bool vocab, lmc_err *err);
void lmc_tp_model_free(struct lmc_tp_model *t);

/* The group's status after a step (the first failed collective), reset. */
lmc_status lmc_tp_model_check(struct lmc_tp_model *t, lmc_err *err);

#endif
