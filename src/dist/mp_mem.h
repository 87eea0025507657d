/* mp_mem.h — per-rank training memory of a model-parallel layout (tensor
 * T x pipeline P x context C) as lmc lays it out today: float32 weights,
 * gradients and AdamW's two moments (16 bytes a parameter) of the rank's
 * shard (tp_train.h's cut: heads, KV heads replicated when fewer than T,
 * MLP features; embedding, norms and head replicated) on the pipeline
 * stage that needs the most (the layers of its chunks of the split
 * dist/pp_split.h makes, balanced by parameters or --pp-layers; the first
 * stage also the embeddings, the last the final norm and head, a tied head
 * the embeddings again: what lmc train --pp makes each stage hold), and
 * the training activation arena (lmc_tacts_bytes_layers of the rank's
 * local config for its largest chunk and B x ceil(seq/C) tokens) times the
 * micro-batches the stage keeps alive (1F1B: min(P - s, M); interleaved
 * with V chunks: lmc_pp_interleaved_live). With vocab, the embedding and
 * head hold ceil(V/T) rows on the largest rank and the activations count
 * the rank's (tokens, ceil(V/T)) logits. */
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
    const char *pp_layers;     /* --pp-layers (P x chunks counts; NULL: the planner's split) */
};

struct lmc_mp_mem {
    int64_t params;            /* parameters on the largest rank */
    int64_t layers;            /* layers on it */
    int64_t tokens;            /* tokens per micro-batch on a rank */
    int live;                  /* micro-batches alive at once */
    double weights, grads, optimizer, activations, total; /* bytes */
    int stage;                 /* the pipeline stage these are of (the largest total; the first on a tie) */
};

/* LMC_ERR_ARG naming the dimension that does not split (heads, KV heads,
 * layers, sequence), a wrong --pp-layers or a value out of range. */
lmc_status lmc_mp_mem(const struct lmc_config *c, const struct lmc_mp_layout *l, struct lmc_mp_mem *m,
                      lmc_err *err);

#endif
