/* mp_mem.h — per-rank training memory of a model-parallel layout (tensor
 * T x pipeline P x context C) as lmc lays it out today: float32 weights,
 * gradients and AdamW's two moments (16 bytes a parameter) of the rank's
 * shard (tp_train.h's cut: heads, KV heads replicated when fewer than T,
 * MLP features; embedding, norms and head replicated), on pipeline stage
 * 0 (the layers of its chunks as dist/pp_model.h cuts them, with the
 * embedding; what lmc train --pp makes it hold), and the training
 * activation arena (lmc_tacts_bytes_layers of the rank's local config for
 * its largest chunk and B x ceil(seq/C) tokens) times the micro-batches
 * stage 0 keeps alive (1F1B: min(P, M); interleaved with V chunks:
 * lmc_pp_interleaved_live). With vocab, the embedding and head hold
 * ceil(V/T) rows on the largest rank. */
#ifndef LMC_MP_MEM_H
#define LMC_MP_MEM_H

#include "io/hf_config.h"
#include "lmc.h"

struct lmc_mp_layout {
    int tp, pp, cp;
    int64_t micro_batch, seq;  /* sequences per micro-batch, tokens per sequence */
    int micro_batches;         /* M per step (pipeline) */
    bool vocab;                /* the embedding and head split over the T ranks by vocabulary
                                * rows (--tp-vocab); the activations then count the rank's
                                * (tokens, ceil(V/T)) logits */
    int chunks;                /* interleaved pipeline: layer chunks per stage (0 or 1: 1F1B) */
};

struct lmc_mp_mem {
    int64_t params;            /* parameters on the largest rank */
    int64_t layers;            /* layers on it */
    int64_t tokens;            /* tokens per micro-batch on a rank */
    int live;                  /* micro-batches alive at once */
    double weights, grads, optimizer, activations, total; /* bytes */
};

/* LMC_ERR_ARG naming the dimension that does not split (heads, KV heads,
 * layers, sequence) or a value out of range. */
lmc_status lmc_mp_mem(const struct lmc_config *c, const struct lmc_mp_layout *l, struct lmc_mp_mem *m,
                      lmc_err *err);

#endif
