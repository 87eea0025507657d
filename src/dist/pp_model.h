/* pp_model.h — a pipeline stage of the model layer's trainable model
 * (model/backward.h) for lmc_pp_run / lmc_pp_run_interleaved (pp.h). The
 * model's layers are cut into P x V chunks (pp_split.h: balanced by
 * parameters, or the user's --pp-layers); rank r of P holds chunks r,
 * r + P, ... (V = 1: one chunk,
 * plain 1F1B), the rank holding chunk 0 also the embedding, the one
 * holding the last chunk (rank P - 1) the final norm, the head and the
 * loss; activations (B*T, C) float32 travel between chunks. Gradients
 * accumulate into tm->g over the step's micro-batches (the stage's own
 * tensors). The stage keeps a pool of activation arenas, each sized for
 * its largest chunk's layers, as many as its schedule keeps micro-batches
 * alive (min(P - rank, M) in 1F1B; lmc_pp_interleaved_live), taken at a
 * chunk's forward and given back after its backward.
 *
 * tm may be the whole model (the stage touches only its share) or the
 * stage's part of it (lmc_tmodel_init_parts with lmc_pp_stage_keep): only
 * its layers' tensors, the embedding on the first stage, the final norm
 * and head on the last. Tied embeddings over P > 1 stages: the last stage
 * also holds the embedding (its head); its gradient there is the head's
 * half, the first stage's the lookup's, and the caller sums the two
 * (lmc_trainer_pp does, between ranks 0 and P - 1). */
#ifndef LMC_PP_MODEL_H
#define LMC_PP_MODEL_H

#include "dist/pp.h"
#include "dist/pp_split.h"
#include "model/backward.h"

/* keep (L + 2, lmc_tmodel_init_parts' parts) for rank of P with V chunks
 * each, the layers cut at bounds (P V + 1, lmc_pp_split_plan): its chunks'
 * layers, part 0 on rank 0 (and on rank P - 1 when tied), part L + 1 on
 * rank P - 1. */
void lmc_pp_stage_keep(const int64_t *bounds, int64_t L, bool tied, int P, int V, int rank, bool *keep);

struct lmc_pp_chunk {
    int64_t l0, l1;
    bool first, last;                 /* model chunk 0 (embedding) / the last (norm, head, loss) */
};

struct lmc_pp_tstage {
    struct lmc_tmodel *tm;
    const struct lmc_backend *be;
    int64_t l0, l1, B, T;             /* l0, l1: chunk 0's layers (V = 1: the stage's) */
    bool first, last;                 /* holds model chunk 0 / the last model chunk */
    int M, V, P, rank;
    int64_t *bounds;                  /* (P V + 1) the split (pp_split.h) */
    struct lmc_pp_chunk *ch;          /* (V) */
    struct lmc_tacts *acts;           /* (n_acts) the pool */
    int n_acts;
    int *slot;                        /* (V M) the arena of (v, mb) between its forward and backward; -1 */
    int *pool;                        /* (n_acts) free arenas, n_free of them */
    int n_free;
    const int32_t *inputs, *targets;  /* host (M*B*T): micro-batch mb at mb*B*T */
    float dscale;                     /* loss scale for the backward (1/tokens for a mean) */
    double loss_sum;                  /* last stage: summed over the step */
    int64_t count;
};

/* Stage c->rank of c->world (P) for M micro-batches of B x T tokens, V
 * chunks per rank (V > 1: M a multiple of P), the layers cut at bounds (P V
 * + 1, lmc_pp_split_plan; copied) or, NULL, as the planner cuts tm's
 * config. LMC_ERR_ARG when the model has fewer layers than P x V chunks,
 * bounds are not a split of its layers or tm lacks a tensor the stage
 * needs. */
lmc_status lmc_pp_tstage_init_split(struct lmc_pp_tstage *s, struct lmc_tmodel *tm, const struct lmc_backend *be,
                                    const int64_t *bounds, int rank, int P, int V, int M, int64_t B, int64_t T,
                                    lmc_err *err);
/* The planner's split. */
lmc_status lmc_pp_tstage_init_v(struct lmc_pp_tstage *s, struct lmc_tmodel *tm, const struct lmc_backend *be,
                                int rank, int P, int V, int M, int64_t B, int64_t T, lmc_err *err);
/* V = 1, the planner's split. */
lmc_status lmc_pp_tstage_init(struct lmc_pp_tstage *s, struct lmc_tmodel *tm,
                              const struct lmc_backend *be, int rank, int P, int M, int64_t B,
                              int64_t T, lmc_err *err);
void lmc_pp_tstage_free(struct lmc_pp_tstage *s);
/* The lmc_pp_stage driving s (V = 1, lmc_pp_run). */
struct lmc_pp_stage lmc_pp_tstage_ops(struct lmc_pp_tstage *s);
/* The lmc_pp_vstage driving s (any V, lmc_pp_run_interleaved). */
struct lmc_pp_vstage lmc_pp_tstage_vops(struct lmc_pp_tstage *s);
/* Forward only of one micro-batch of B x T (inputs, targets: host) through
 * the whole pipeline over c (every rank calls it; chunks in model order,
 * each passing its output on): on the last stage *sum / *count are the
 * summed loss and counted targets (0 elsewhere). Needs no step running. */
lmc_status lmc_pp_tstage_eval(struct lmc_pp_tstage *s, struct lmc_comm *c, const int32_t *inputs,
                              const int32_t *targets, double *sum, int64_t *count, lmc_err *err);

#endif
