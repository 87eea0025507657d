/* rl_model.h — what RL needs from a trainable model, built on the training
 * forward/backward (model/backward.h) without changing it: per-token
 * log-probabilities of given targets (and the final hidden states, for a
 * value head) from one forward, then the backward of an arbitrary
 * per-token weighting of those log-probabilities (plus a gradient on the
 * hidden states); and a read-only inference view of the trainable weights
 * so the serving scheduler samples from the current policy in place. */
#ifndef LMC_TRAIN_RL_MODEL_H
#define LMC_TRAIN_RL_MODEL_H

#include "lmc.h"
#include "model/backward.h"
#include "model/model.h"

/* Forward of inputs/targets (a->B * a->T each, host; targets < 0 ignored):
 * logp[i] = log p(targets[i] | inputs[..i]) (0 where ignored); hidden
 * (optional, B*T*C host floats) gets the final-norm output. Keeps the
 * activations for lmc_rl_bwd. */
lmc_status lmc_rl_fwd(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *inputs,
                      const int32_t *targets, float *logp, float *hidden, lmc_err *err);
/* After lmc_rl_fwd on the same a: adds to tm->g the gradient of
 *   L = sum_i dlogp[i] * logp[i] + sum_i dhidden[i] . hidden[i]
 * (dlogp per token, 0 to skip; dhidden optional, B*T*C). */
lmc_status lmc_rl_bwd(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *targets,
                      const float *dlogp, const float *dhidden, lmc_err *err);
/* The same at a sampling temperature: logp[i] = log softmax(logits_i /
 * temp)[targets[i]] as the sampler draws them (hidden: the final-norm
 * output itself); the backward of L over those (temp must be the
 * forward's). temp 1: lmc_rl_fwd / lmc_rl_bwd. */
lmc_status lmc_rl_fwd_temp(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *inputs,
                           const int32_t *targets, double temp, float *logp, float *hidden, lmc_err *err);
lmc_status lmc_rl_bwd_temp(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *targets, double temp,
                           const float *dlogp, const float *dhidden, lmc_err *err);
/* m = an inference model reading tm's parameter arena in place (nothing
 * copied or owned: never lmc_model_free it). Updates to tm->w are seen by
 * the next forward. */
void lmc_rl_model_view(struct lmc_model *m, const struct lmc_tmodel *tm);

#endif
