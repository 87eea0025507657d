/* adamw.h — the AdamW optimizer on float32 arrays, exactly as
 * torch.optim.AdamW computes it (decoupled weight decay applied to the
 * parameter before the Adam update, bias-corrected moments, eps added to the
 * bias-corrected sqrt of the second moment), the weight-decay rule that
 * exempts norms, biases and embeddings, and global-norm gradient clipping
 * (torch.nn.utils.clip_grad_norm_). State (m, v) is caller-owned. */
#ifndef LMC_TRAIN_ADAMW_H
#define LMC_TRAIN_ADAMW_H

#include <stdbool.h>
#include <stdint.h>

struct lmc_adamw_cfg {
    double lr;            /* peak rate; the schedule may pass another per step */
    double beta1, beta2;  /* torch defaults 0.9, 0.999 */
    double eps;           /* 1e-8 */
    double weight_decay;  /* decoupled, multiplied by lr (torch default 0.01) */
};

/* Fills torch.optim.AdamW's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01). */
void lmc_adamw_cfg_default(struct lmc_adamw_cfg *c);

/* One AdamW step on n parameters p with gradients g and moments m, v
 * (zero-initialised before step 1). step is 1-based (the count after this
 * update, as torch's state['step']). lr is this step's learning rate; decay
 * selects whether weight decay applies to this tensor. */
void lmc_adamw_update(const struct lmc_adamw_cfg *c, int64_t step, double lr, bool decay, float *p,
                      const float *g, float *m, float *v, int64_t n);

/* The float32 scalars of the backend's adamw op for this step (the same
 * values lmc_adamw_update uses); grad_scale multiplies the gradients first
 * (clipping; 1 = none). */
struct lmc_adamw_step;
void lmc_adamw_step_make(const struct lmc_adamw_cfg *c, int64_t step, double lr, bool decay,
                         float grad_scale, struct lmc_adamw_step *s);

/* Which tensors get weight decay. LMC_DECAY_DEFAULT: every tensor of two or
 * more dimensions except embeddings (names containing "embed", "wte", "wpe");
 * norm weights and biases (1-D) are exempt. LMC_DECAY_ALL: every tensor (what
 * torch does when given all parameters in one group). */
enum lmc_decay_rule { LMC_DECAY_DEFAULT, LMC_DECAY_ALL };
bool lmc_adamw_decays(enum lmc_decay_rule rule, const char *name, int ndim);

/* The factor torch.nn.utils.clip_grad_norm_ scales gradients by for a
 * global norm `norm`: max_norm / (norm + 1e-6) when max_norm > 0 and a
 * finite norm exceeds it, else 1. */
float lmc_grad_clip_scale(double norm, double max_norm);
/* L2 norm over k gradient arrays g[i] of n[i] floats, accumulated in double. */
double lmc_grad_global_norm(float *const *g, const int64_t *n, int k);
/* Clips in place as torch.nn.utils.clip_grad_norm_: if the global norm
 * exceeds max_norm (> 0), every gradient is scaled by max_norm / (norm + 1e-6).
 * Returns the norm before clipping (non-finite norms are returned and nothing
 * is scaled, so the caller can skip the step). */
double lmc_grad_clip(float *const *g, const int64_t *n, int k, double max_norm);

#endif
