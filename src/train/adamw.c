/* adamw.c — AdamW update, the weight-decay rule and global-norm gradient
 * clipping. The update follows torch.optim.AdamW's single-tensor float32
 * path operation by operation, so that one step reproduces torch's result
 * to float32 rounding. */
#include "train/adamw.h"
#include "ops/backend.h"

#include <math.h>
#include <string.h>

void lmc_adamw_cfg_default(struct lmc_adamw_cfg *c) {
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = 0.01;
}

void lmc_adamw_update(const struct lmc_adamw_cfg *c, int64_t step, double lr, bool decay, float *p,
                      const float *g, float *m, float *v, int64_t n) {
    struct lmc_adamw_step s;
    lmc_adamw_step_make(c, step, lr, decay, 1.0f, &s);
    lmc_adamw_apply(p, g, m, v, n, &s);
}

/* torch: bias_correction1 = 1 - beta1^step; step_size = lr / bc1;
 * bias_correction2_sqrt = sqrt(1 - beta2^step); denom = sqrt(v) /
 * bc2_sqrt + eps; p -= step_size * m / denom. The scalars are computed in
 * double (Python floats), the tensors in float (lmc_adamw_apply). */
void lmc_adamw_step_make(const struct lmc_adamw_cfg *c, int64_t step, double lr, bool decay,
                         float grad_scale, struct lmc_adamw_step *s) {
    double bc1 = 1.0 - pow(c->beta1, (double)step);
    s->step_size = (float)(lr / bc1);
    s->decay_mul = decay && c->weight_decay != 0.0 ? (float)(1.0 - lr * c->weight_decay) : 1.0f;
    s->beta2 = (float)c->beta2;
    s->one_minus_b1 = (float)(1.0 - c->beta1);
    s->one_minus_b2 = (float)(1.0 - c->beta2);
    s->bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, (double)step));
    s->eps = (float)c->eps;
    s->grad_scale = grad_scale;
}

bool lmc_adamw_decays(enum lmc_decay_rule rule, const char *name, int ndim) {
    if (rule == LMC_DECAY_ALL) return true;
    if (ndim < 2) return false; /* biases, norm weights and scales */
    static const char *const exempt[] = {"embed", "wte.", "wpe.", "embeddings"};
    for (size_t i = 0; i < sizeof exempt / sizeof *exempt; i++)
        if (strstr(name, exempt[i])) return false;
    return true;
}

double lmc_grad_global_norm(float *const *g, const int64_t *n, int k) {
    double s = 0;
    for (int t = 0; t < k; t++)
        for (int64_t i = 0; i < n[t]; i++) s += (double)g[t][i] * (double)g[t][i];
    return sqrt(s);
}

float lmc_grad_clip_scale(double norm, double max_norm) {
    if (!isfinite(norm) || !(max_norm > 0) || norm <= max_norm) return 1.0f;
    return (float)(max_norm / (norm + 1e-6));
}

double lmc_grad_clip(float *const *g, const int64_t *n, int k, double max_norm) {
    double norm = lmc_grad_global_norm(g, n, k);
    float scale = lmc_grad_clip_scale(norm, max_norm);
    if (scale == 1.0f) return norm;
    for (int t = 0; t < k; t++)
        for (int64_t i = 0; i < n[t]; i++) g[t][i] *= scale;
    return norm;
}
