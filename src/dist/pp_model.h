/* pp_model.h — a pipeline stage of the model layer's trainable model
 * (model/backward.h) for lmc_pp_run (pp.h): rank s of P runs layers
 * [l0, l1) (lmc_dist_slice of the layers), the first stage also the
 * embedding, the last the final norm, the head and the loss; activations
 * (B*T, C) float32 travel between stages. Gradients accumulate into
 * tm->g over the step's micro-batches (each stage's own tensors: its
 * layers, the embedding on the first, norm and head on the last). The
 * stage keeps one activation arena per micro-batch alive at once under
 * 1F1B, min(P - rank, M) of them (each sized for the whole model today) and reads the whole model's weights (the stage's share is
 * all it touches). Tied embeddings are refused when P > 1 (the embedding's
 * two gradient halves would live on two stages). */
#ifndef LMC_PP_MODEL_H
#define LMC_PP_MODEL_H

#include "dist/pp.h"
#include "model/backward.h"

struct lmc_pp_tstage {
    struct lmc_tmodel *tm;
    const struct lmc_backend *be;
    int64_t l0, l1, B, T;
    bool first, last;
    int M;
    struct lmc_tacts *acts;           /* n_acts = min(P - rank, M): micro-batch mb in acts[mb % n_acts] */
    int n_acts;
    const int32_t *inputs, *targets;  /* host (M*B*T): micro-batch mb at mb*B*T */
    float dscale;                     /* loss scale for the backward (1/tokens for a mean) */
    double loss_sum;                  /* last stage: summed over the step */
    int64_t count;
};

/* Stage c->rank of c->world (P) for M micro-batches of B x T tokens. */
lmc_status lmc_pp_tstage_init(struct lmc_pp_tstage *s, struct lmc_tmodel *tm,
                              const struct lmc_backend *be, int rank, int P, int M, int64_t B,
                              int64_t T, lmc_err *err);
void lmc_pp_tstage_free(struct lmc_pp_tstage *s);
/* The lmc_pp_stage driving s. */
struct lmc_pp_stage lmc_pp_tstage_ops(struct lmc_pp_tstage *s);

#endif
