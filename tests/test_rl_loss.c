/* test_rl_loss.c — GRPO and PPO losses and gradients (train/rl_loss.h)
 * against float64 references from TRL's formulas (tests/make_rl_refs.py ->
 * tests/fixtures/rl/refs.txt): advantages, the three GRPO averages with
 * the k3 KL, PPO's KL-penalised rewards, GAE returns, whitened advantages,
 * clipped policy and value losses; all within 1e-5 (absolute, values of
 * order 1). Plus finite differences of the losses on the same batch. */
#include "test.h"
#include "train/rl_loss.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXA 40
static char names[MAXA][64];
static double *vals[MAXA];
static int64_t cnt[MAXA];
static int na;

static const double *get(const char *name, int64_t *n) {
    for (int i = 0; i < na; i++)
        if (!strcmp(names[i], name)) {
            if (n) *n = cnt[i];
            return vals[i];
        }
    fprintf(stderr, "missing %s\n", name);
    exit(1);
}

static double maxdiff(const double *a, const double *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

int main(void) {
    FILE *f = fopen("tests/fixtures/rl/refs.txt", "r");
    CHECK(f != NULL);
    if (!f) return test_finish("test_rl_loss");
    char nm[64];
    long long n;
    while (na < MAXA && fscanf(f, "%63s %lld", nm, &n) == 2) {
        snprintf(names[na], sizeof names[na], "%s", nm);
        vals[na] = malloc((size_t)n * sizeof(double));
        cnt[na] = n;
        for (long long i = 0; i < n; i++)
            if (fscanf(f, "%lf", &vals[na][i]) != 1) exit(1);
        na++;
    }
    fclose(f);
    int64_t ns, N;
    const double *lens = get("lens", &ns);
    int64_t off[16] = {0};
    for (int64_t i = 0; i < ns; i++) off[i + 1] = off[i] + (int64_t)lens[i];
    N = off[ns];
    const double *old = get("old_logp", NULL), *lp = get("logp", NULL), *ref = get("ref_logp", NULL);
    const double *rew = get("rewards", NULL);
    double adv[16], adv0[16];
    lmc_rl_grpo_advantages(rew, ns, 3, true, adv);
    lmc_rl_grpo_advantages(rew, ns, 3, false, adv0);
    CHECK(maxdiff(adv, get("grpo_adv", NULL), ns) < 1e-5);
    CHECK(maxdiff(adv0, get("grpo_adv_nostd", NULL), ns) < 1e-5);

    double *d = malloc((size_t)N * sizeof(double)), *dv = malloc((size_t)N * sizeof(double));
    const char *types[3] = {"grpo", "bnpo", "dr_grpo"};
    enum lmc_rl_avg avgs[3] = {LMC_RL_AVG_SEQ, LMC_RL_AVG_TOKEN, LMC_RL_AVG_DR};
    for (int k = 0; k < 3; k++) {
        struct lmc_rl_grpo_cfg c = {.eps_low = 0.2, .eps_high = 0.28, .beta = 0.04, .avg = avgs[k], .max_len = 8};
        struct lmc_rl_stats st;
        double loss = lmc_rl_grpo_loss(&c, ns, off, adv, lp, old, ref, d, &st);
        char key[64];
        snprintf(key, sizeof key, "grpo_%s_loss", types[k]);
        CHECK_MSG(fabs(loss - get(key, NULL)[0]) < 1e-5, "%s %g vs %g", key, loss, get(key, NULL)[0]);
        snprintf(key, sizeof key, "grpo_%s_dlogp", types[k]);
        CHECK_MSG(maxdiff(d, get(key, NULL), N) < 1e-5, "%s %g", key, maxdiff(d, get(key, NULL), N));
        snprintf(key, sizeof key, "grpo_%s_kl", types[k]);
        CHECK(fabs(st.kl - get(key, NULL)[0]) < 1e-5);
        CHECK(st.clip_frac > 0 && st.clip_frac < 1); /* the batch exercises both regions */
        /* finite differences of the loss w.r.t. each logp */
        double *x = malloc((size_t)N * sizeof(double)), *dd = malloc((size_t)N * sizeof(double));
        memcpy(x, lp, (size_t)N * sizeof(double));
        double worst = 0;
        for (int64_t t = 0; t < N; t++) {
            double h = 1e-6, s0 = x[t];
            struct lmc_rl_stats s2;
            x[t] = s0 + h;
            double lpl = lmc_rl_grpo_loss(&c, ns, off, adv, x, old, ref, dd, &s2);
            x[t] = s0 - h;
            double lmi = lmc_rl_grpo_loss(&c, ns, off, adv, x, old, ref, dd, &s2);
            x[t] = s0;
            worst = fmax(worst, fabs((lpl - lmi) / (2 * h) - d[t]));
        }
        CHECK_MSG(worst < 1e-6, "grpo fd %g", worst);
        free(x);
        free(dd);
    }

    /* PPO */
    struct lmc_rl_ppo_cfg pc = {.clip = 0.2, .clip_value = 0.2, .vf_coef = 0.1, .gamma = 1.0, .lam = 0.95,
                                .kl_coef = 0.05};
    double *tr = malloc((size_t)N * sizeof(double)), *pa = malloc((size_t)N * sizeof(double)),
           *ret = malloc((size_t)N * sizeof(double));
    const double *values = get("values", NULL), *vpred = get("vpred", NULL);
    lmc_rl_ppo_rewards(&pc, ns, off, rew, old, ref, tr);
    CHECK(maxdiff(tr, get("ppo_rewards", NULL), N) < 1e-5);
    lmc_rl_ppo_gae(&pc, ns, off, tr, values, pa, ret);
    CHECK(maxdiff(ret, get("ppo_returns", NULL), N) < 1e-5);
    CHECK(maxdiff(pa, get("ppo_adv", NULL), N) < 1e-5);
    struct lmc_rl_stats st;
    double loss = lmc_rl_ppo_loss(&pc, N, lp, old, pa, vpred, values, ret, d, dv, &st);
    CHECK_MSG(fabs(loss - get("ppo_loss", NULL)[0]) < 1e-5, "ppo %g vs %g", loss, get("ppo_loss", NULL)[0]);
    CHECK(fabs(st.pg_loss - get("ppo_pg_loss", NULL)[0]) < 1e-5);
    CHECK(fabs(st.vf_loss - get("ppo_vf_loss", NULL)[0]) < 1e-5);
    CHECK(fabs(st.clip_frac - get("ppo_clipfrac", NULL)[0]) < 1e-12);
    CHECK(maxdiff(d, get("ppo_dlogp", NULL), N) < 1e-5);
    CHECK(maxdiff(dv, get("ppo_dv", NULL), N) < 1e-5);
    CHECK(st.vf_clip_frac > 0 && st.vf_clip_frac < 1);
    free(d);
    free(dv);
    free(tr);
    free(pa);
    free(ret);
    for (int i = 0; i < na; i++) free(vals[i]);
    return test_finish("test_rl_loss");
}
