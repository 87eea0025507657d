/* spec_tree.h — the shape of a token tree for speculative decoding (greedy):
 * the draft's chain of K tokens (its top choice at each depth) plus sibling
 * leaves, the draft's 2nd and 3rd choices at the drafted depths (hung from
 * the chain node above them: no extra draft forwards). All rows are verified in
 * one target forward with a row mask (model.h's lmc_model_forward_mask);
 * the walk keeps the child equal to the target's argmax at each node, so
 * the output is plain greedy decoding's. The shape is picked per round
 * from the draft's confidence at each depth, calibrated by running
 * statistics of how often the target's token was the draft's rank-r
 * choice at that confidence. Sampling (temperature > 0) keeps the chain
 * and its exact rejection rule (spec_sample.h): a tree there would need
 * the multi-candidate rule (recursive rejection over siblings drawn
 * without replacement), not built — on this pair a sibling rarely pays. */
#ifndef LMC_SPEC_TREE_H
#define LMC_SPEC_TREE_H

#include "infer/spec.h"

#include <stdint.h>

#define LMC_SPEC_TREE_RANKS 3  /* the chain token and two siblings per depth */
#define LMC_SPEC_TREE_DEPTH 64 /* depths 1..64 */
#define LMC_SPEC_TREE_ROWS 64  /* verification rows at most (the mask's word) */

/* Calibration of the draft's confidence (its softmax top-1 probability
 * at temperature 1, in LMC_SPEC_TREE_BINS bins): decayed counts of trials
 * (a chain node whose target token the verification gave) and of the
 * ranks the target's token had among the draft's choices there. */
#define LMC_SPEC_TREE_BINS 10
struct lmc_spec_tree_stats {
    double trial[LMC_SPEC_TREE_BINS], hit[LMC_SPEC_TREE_BINS][LMC_SPEC_TREE_RANKS];
};
void lmc_spec_tree_stats_init(struct lmc_spec_tree_stats *s);
/* one trial at a node of draft confidence conf: rank of the target's token
 * among the draft's choices, -1 when none */
void lmc_spec_tree_stats_add(struct lmc_spec_tree_stats *s, double conf, int rank);
/* estimated P(the target's token is the draft's rank-r choice | conf) */
double lmc_spec_tree_p(const struct lmc_spec_tree_stats *s, double conf, int r);

/* A tree: rows 0 (the last decided id, depth 0), 1..k (the chain, depth =
 * row), then n_sib siblings (depth sib_depth[i] in 1..k+1, rank sib_rank[i]
 * in 1..RANKS-1, parent row sib_depth[i] - 1). */
struct lmc_spec_tree {
    int64_t k, n_sib;
    int32_t sib_depth[LMC_SPEC_TREE_ROWS], sib_rank[LMC_SPEC_TREE_ROWS];
};

/* The tree over kd drafted depths (conf[d - 1]: the draft's confidence at
 * depth d) of at most rows_max rows that maximizes expected tokens per
 * round, 1 + the sum over its nodes of the probability that the node is on
 * the accepted path (a chain node at depth d: the product of the chain's
 * rank-0 estimates to d; a rank-r sibling: that product to d - 1 times its
 * rank-r estimate), over the round's cost in 1-token target forwards (kd
 * draft tokens at c->draft, a verification of the rows as
 * lmc_spec_round_cost has it). The nodes are taken by value, best first,
 * so each one's parent is in. Returns the expected tokens per unit of
 * cost (a plain step: 1). */
double lmc_spec_tree_pick(const struct lmc_spec_tree_stats *s, const float *conf, int64_t kd, int64_t rows_max,
                          const struct lmc_spec_cost *c, struct lmc_spec_tree *t);

/* The verification's rows: ids (1 + k + n_sib) from last (the last decided
 * id), chain (k) and alt (drafted depths x (RANKS-1): the draft's rank 1..
 * choices at each depth, k + 1 of them where a sibling hangs from the
 * chain's end); depth and mask per row (model.h's forward_mask). Returns the rows. */
int64_t lmc_spec_tree_rows(const struct lmc_spec_tree *t, int32_t last, const int32_t *chain, const int32_t *alt,
                           int32_t *ids, int32_t *depth, uint64_t *mask);

/* The draft's RANKS best ids of logits (V), best first (ties: lower id);
 * returns the softmax probability of the best (the draft's confidence;
 * logits more than 18 below the best left out of the sum). */
double lmc_spec_tree_topk(const float *logits, int64_t V, int32_t *out);

#endif
