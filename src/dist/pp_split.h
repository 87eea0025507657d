/* pp_split.h — where a pipeline's stage boundaries fall, for every --pp
 * command (lmc train / finetune, generate / serve / eval, info): the
 * model's L layers cut into K = P x V contiguous chunks in model order
 * (model chunk k = v P + s is stage s's local chunk v; V = 1: one chunk a
 * stage), each at least one layer, as bounds[0] = 0 < bounds[1] < ... <
 * bounds[K] = L.
 *
 * The planner (lmc_pp_split_plan without a text) minimises the largest
 * chunk's parameters — min over the cuts of max over the chunks — a
 * chunk's parameters being its layers' tensors (the architecture's table),
 * the first chunk's also the embeddings (token and learned positions), the
 * last chunk's the final norm and the head. A tied head is the embedding
 * matrix, which the last stage holds again to compute the logits (both
 * training and inference keep it there), so it counts on the first and
 * on the last chunk, once when one chunk holds both. Among the cuts
 * reaching that optimum it takes the one with the least sum of squared
 * chunk parameters (the chunks below the largest even too; ties to the
 * earliest cut; models with more than about 5e7 / (P V) squared layers
 * keep the greedy cut that packs each chunk up to the optimum).
 * --pp-layers a,b,... (lmc_pp_split_parse) gives the K counts in model
 * order instead. */
#ifndef LMC_PP_SPLIT_H
#define LMC_PP_SPLIT_H

#include "io/hf_config.h"
#include "lmc.h"

/* What the planner weighs: each layer's parameters and what the first and
 * the last chunk add (shared: in both, counted once when one chunk is
 * first and last). */
struct lmc_pp_costs {
    int64_t L;
    int64_t *layer;          /* (L) */
    int64_t first, last, shared;
};

/* c's costs walked from its architecture's tensor table (LMC_ERR_ARG for a
 * config without layers; LMC_ERR_OOM). */
lmc_status lmc_pp_costs_init(struct lmc_pp_costs *k, const struct lmc_config *c, lmc_err *err);
void lmc_pp_costs_free(struct lmc_pp_costs *k);
/* Parameters of layers [l0, l1) as a chunk (0 <= l0 < l1 <= L). */
int64_t lmc_pp_costs_chunk(const struct lmc_pp_costs *k, int64_t l0, int64_t l1);
/* The cut of k's layers into K chunks whose largest is smallest (bounds:
 * K + 1). LMC_ERR_ARG when K is out of 1..L. */
lmc_status lmc_pp_costs_balance(const struct lmc_pp_costs *k, int K, int64_t *bounds, lmc_err *err);

/* --pp-layers text: P x V comma-separated positive counts summing to L,
 * in model order -> bounds (P V + 1). LMC_ERR_ARG naming what is wrong (a
 * count that is not a positive integer, a zero, how many counts, the sum). */
lmc_status lmc_pp_split_parse(const char *text, int64_t L, int P, int V, int64_t *bounds, lmc_err *err);

/* The split of c for P stages x V chunks (bounds: P V + 1): text's when
 * text is given and not empty, else the planner's. LMC_ERR_ARG when P x V
 * is out of 1..L ("a stage needs at least one layer") or text is wrong. */
lmc_status lmc_pp_split_plan(const struct lmc_config *c, int P, int V, const char *text, int64_t *bounds,
                             lmc_err *err);

/* Layers [*l0, *l1) of stage rank's local chunk v (model chunk v P + rank). */
void lmc_pp_chunk_layers(const int64_t *bounds, int P, int V, int rank, int v, int64_t *l0, int64_t *l1);

#endif
