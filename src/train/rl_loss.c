/* rl_loss.c — GRPO and PPO objectives and their gradients w.r.t. the
 * per-token log-probabilities and values (see rl_loss.h). */
#include "train/rl_loss.h"

#include <math.h>
#include <string.h>

void lmc_rl_grpo_advantages(const double *r, int64_t n, int64_t group, bool scale_std, double *adv) {
    for (int64_t g0 = 0; g0 < n; g0 += group) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < group; i++) mean += r[g0 + i];
        mean /= (double)group;
        for (int64_t i = 0; i < group; i++) var += (r[g0 + i] - mean) * (r[g0 + i] - mean);
        double sd = group > 1 ? sqrt(var / (double)(group - 1)) : 0.0;
        for (int64_t i = 0; i < group; i++)
            adv[g0 + i] = scale_std ? (r[g0 + i] - mean) / (sd + 1e-4) : r[g0 + i] - mean;
    }
}

double lmc_rl_grpo_loss(const struct lmc_rl_grpo_cfg *c, int64_t n, const int64_t *off,
                        const double *adv, const double *logp, const double *old_logp,
                        const double *ref_logp, double *dlogp, struct lmc_rl_stats *st) {
    memset(st, 0, sizeof *st);
    int64_t ntok = off[n] - off[0];
    double loss = 0, kl_sum = 0;
    int64_t clipped = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = off[i + 1] - off[i];
        /* weight of each token's term in the average */
        double w;
        if (c->avg == LMC_RL_AVG_SEQ) w = 1.0 / ((double)(len > 0 ? len : 1) * (double)n);
        else if (c->avg == LMC_RL_AVG_TOKEN) w = 1.0 / (double)(ntok > 0 ? ntok : 1);
        else w = 1.0 / ((double)n * (double)c->max_len);
        double A = adv[i];
        for (int64_t t = off[i]; t < off[i + 1]; t++) {
            double r1 = exp(logp[t] - old_logp[t]);
            double lo = 1.0 - c->eps_low, hi = 1.0 + c->eps_high;
            double r2 = r1 < lo ? lo : r1 > hi ? hi : r1;
            double l1 = r1 * A, l2 = r2 * A;
            double term = -(l1 < l2 ? l1 : l2);
            /* the unclipped branch carries the gradient when it is the
             * minimum or the ratio is inside the range (both agree there) */
            double g = (l1 <= l2 || (r1 >= lo && r1 <= hi)) ? -A * r1 : 0.0;
            if (l2 < l1 && (r1 < lo || r1 > hi)) clipped++;
            if (c->beta != 0) {
                double d = ref_logp[t] - logp[t];
                double kl = exp(d) - d - 1.0;
                term += c->beta * kl;
                g += c->beta * (1.0 - exp(d));
                kl_sum += kl;
            }
            loss += w * term;
            dlogp[t] = w * g;
        }
    }
    st->loss = st->pg_loss = loss;
    st->tokens = ntok;
    st->kl = ntok ? kl_sum / (double)ntok : 0;
    st->clip_frac = ntok ? (double)clipped / (double)ntok : 0;
    return loss;
}

void lmc_rl_ppo_rewards(const struct lmc_rl_ppo_cfg *c, int64_t n, const int64_t *off,
                        const double *score, const double *old_logp, const double *ref_logp,
                        double *rew) {
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = off[i]; t < off[i + 1]; t++)
            rew[t] = -c->kl_coef * (old_logp[t] - ref_logp[t]);
        if (off[i + 1] > off[i]) rew[off[i + 1] - 1] += score[i];
    }
}

void lmc_rl_ppo_gae(const struct lmc_rl_ppo_cfg *c, int64_t n, const int64_t *off,
                    const double *rew, const double *values, double *adv, double *ret) {
    for (int64_t i = 0; i < n; i++) {
        double last = 0;
        for (int64_t t = off[i + 1] - 1; t >= off[i]; t--) {
            double next = t + 1 < off[i + 1] ? values[t + 1] : 0.0;
            double delta = rew[t] + c->gamma * next - values[t];
            last = delta + c->gamma * c->lam * last;
            adv[t] = last;
            ret[t] = last + values[t];
        }
    }
    int64_t N = off[n] - off[0];
    if (N < 2) return;
    double mean = 0, var = 0;
    for (int64_t t = off[0]; t < off[n]; t++) mean += adv[t];
    mean /= (double)N;
    for (int64_t t = off[0]; t < off[n]; t++) var += (adv[t] - mean) * (adv[t] - mean);
    var /= (double)(N - 1);
    double inv = 1.0 / sqrt(var + 1e-8);
    for (int64_t t = off[0]; t < off[n]; t++) adv[t] = (adv[t] - mean) * inv;
}

double lmc_rl_ppo_loss(const struct lmc_rl_ppo_cfg *c, int64_t ntok, const double *logp,
                       const double *old_logp, const double *adv, const double *v,
                       const double *old_v, const double *ret, double *dlogp, double *dv,
                       struct lmc_rl_stats *st) {
    memset(st, 0, sizeof *st);
    if (ntok <= 0) return 0;
    double inv = 1.0 / (double)ntok, pg = 0, vf = 0, kl = 0;
    int64_t clipped = 0, vclipped = 0;
    for (int64_t t = 0; t < ntok; t++) {
        double r = exp(logp[t] - old_logp[t]);
        double lo = 1.0 - c->clip, hi = 1.0 + c->clip;
        double rc = r < lo ? lo : r > hi ? hi : r;
        double p1 = -adv[t] * r, p2 = -adv[t] * rc;
        bool inside = r >= lo && r <= hi;
        pg += (p1 > p2 ? p1 : p2) * inv;
        dlogp[t] = (p1 >= p2 || inside) ? -adv[t] * r * inv : 0.0;
        if (p2 > p1) clipped++;
        double vlo = old_v[t] - c->clip_value, vhi = old_v[t] + c->clip_value;
        double vc = v[t] < vlo ? vlo : v[t] > vhi ? vhi : v[t];
        double e1 = (v[t] - ret[t]) * (v[t] - ret[t]), e2 = (vc - ret[t]) * (vc - ret[t]);
        bool vin = v[t] >= vlo && v[t] <= vhi;
        vf += 0.5 * (e1 > e2 ? e1 : e2) * inv;
        double gv = (e1 >= e2 || vin) ? (v[t] - ret[t]) : 0.0;
        dv[t] = c->vf_coef * 0.5 * 2.0 * gv * inv;
        if (e2 > e1) vclipped++;
        kl += logp[t] - old_logp[t];
    }
    st->pg_loss = pg;
    st->vf_loss = vf;
    st->loss = pg + c->vf_coef * vf;
    st->kl = kl * inv;
    st->clip_frac = (double)clipped * inv;
    st->vf_clip_frac = (double)vclipped * inv;
    st->tokens = ntok;
    return st->loss;
}
