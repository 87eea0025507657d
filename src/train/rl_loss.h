/* rl_loss.h — the reinforcement-learning objectives on per-token
 * log-probabilities, with their gradients (host float64, no model here):
 * GRPO (group-normalised advantages, clipped importance ratio per token,
 * k3 KL to a frozen reference, per-sequence / per-token / Dr. GRPO
 * averaging) and PPO (per-token KL penalty in the reward, GAE, whitened
 * advantages, clipped policy and value losses). Formulas as TRL's
 * GRPOTrainer / PPOTrainer compute them (tests/make_rl_refs.py). A batch is
 * n sequences of response tokens laid end to end: sequence i holds tokens
 * off[i] .. off[i+1]-1. */
#ifndef LMC_TRAIN_RL_LOSS_H
#define LMC_TRAIN_RL_LOSS_H

#include <stdbool.h>
#include <stdint.h>

/* GRPO averaging: per sequence then over sequences (TRL "grpo"), over all
 * tokens of the batch (TRL "bnpo", DAPO's token-level), or the token sum
 * over n * max_len (TRL "dr_grpo", Dr. GRPO). */
enum lmc_rl_avg { LMC_RL_AVG_SEQ = 0, LMC_RL_AVG_TOKEN, LMC_RL_AVG_DR };

struct lmc_rl_grpo_cfg {
    double eps_low, eps_high; /* ratio clipped to [1-eps_low, 1+eps_high] */
    double beta;              /* KL coefficient (0: no reference needed) */
    enum lmc_rl_avg avg;
    int64_t max_len;          /* for LMC_RL_AVG_DR: the completion length budget */
};

struct lmc_rl_stats {
    double loss, pg_loss, vf_loss;
    double kl;                /* mean per-token KL estimate (k3 for GRPO, k1 for PPO) */
    double clip_frac;         /* tokens whose ratio was clipped (region active) */
    double vf_clip_frac;
    int64_t tokens;
};

/* adv[i] = (r[i] - mean of its group) / (std of its group + 1e-4) with the
 * unbiased std (groups: n/group consecutive blocks of `group`); without
 * scale_std only the mean is subtracted (Dr. GRPO). group must divide n. */
void lmc_rl_grpo_advantages(const double *r, int64_t n, int64_t group, bool scale_std, double *adv);

/* The GRPO loss for n sequences (adv per sequence; ref_logp may be NULL
 * when beta == 0). dlogp (per token) receives d loss / d logp. Returns the
 * loss (also in st->loss). */
double lmc_rl_grpo_loss(const struct lmc_rl_grpo_cfg *c, int64_t n, const int64_t *off,
                        const double *adv, const double *logp, const double *old_logp,
                        const double *ref_logp, double *dlogp, struct lmc_rl_stats *st);

struct lmc_rl_ppo_cfg {
    double clip;              /* policy ratio clip */
    double clip_value;        /* value clip around the rollout values */
    double vf_coef;
    double gamma, lam;
    double kl_coef;           /* per-token KL penalty in the reward */
};

/* Per-token rewards: -kl_coef * (old_logp - ref_logp), plus score[i] on
 * the last token of sequence i. */
void lmc_rl_ppo_rewards(const struct lmc_rl_ppo_cfg *c, int64_t n, const int64_t *off,
                        const double *score, const double *old_logp, const double *ref_logp,
                        double *rew);
/* GAE within each sequence (value 0 after its last token), returns =
 * advantages + values, then advantages whitened over the whole batch
 * (mean 0, unbiased variance 1, eps 1e-8). */
void lmc_rl_ppo_gae(const struct lmc_rl_ppo_cfg *c, int64_t n, const int64_t *off,
                    const double *rew, const double *values, double *adv, double *ret);
/* The PPO loss: masked means over all tokens of max(-A r, -A clip(r)) and
 * vf_coef * 0.5 * max((v - R)^2, (clip(v, v_old +- clip_value) - R)^2).
 * dlogp, dv (per token) receive the gradients. */
double lmc_rl_ppo_loss(const struct lmc_rl_ppo_cfg *c, int64_t ntok, const double *logp,
                       const double *old_logp, const double *adv, const double *v,
                       const double *old_v, const double *ret, double *dlogp, double *dv,
                       struct lmc_rl_stats *st);

#endif
