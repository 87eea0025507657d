/* test_spec.c — the speculative sampling rule (infer/spec_sample.c) is
 * exact: on a synthetic history-dependent "model" (logits from the last two
 * tokens, V = 37) with a noisy draft, 20,000 seeded speculative generations
 * (K = 2 drafts a round, three tokens each) per sampler setting give the
 * target's own distribution for the first token, the second and third
 * (marginals computed exactly by enumerating prefixes) and the joint of the
 * first two: chi-square p > 0.001 and total variation below 3x the
 * expected sampling TV (sum_i sqrt(p_i (1 - p_i) / N) / 2, stated per
 * check). Settings: plain, temperature + top-k, top-p + min-p, penalties
 * (repetition, presence, frequency), deterministic drafts (prompt lookup).
 * A wrong rule (resampling from p on rejection) is rejected by the same
 * test (p < 1e-6), so the test has power. Greedy gives exactly the argmax
 * chain. Also lmc_spec_draw / lmc_spec_draw_residual edge cases. */
#include "test.h"
#include "test_chi2.h"
#include "infer/sampler.h"
#include "infer/spec_sample.h"
#include "core/rng.h"

#include <stdbool.h>
#include <stdlib.h>

#define V 37
#define NPROMPT 4
#define NGEN 3
#define KDRAFT 2
#define NSAMP 20000

static float W1[V][V], W2[V][V], DN[V][V];

static void model_logits(const int32_t *h, int64_t n, bool draft, float sigma, float *out) {
    int32_t a = h[n - 1], b = h[n - 2];
    for (int i = 0; i < V; i++) {
        out[i] = 2.0f * W1[a][i] + 0.8f * W2[b][i];
        if (draft) out[i] += sigma * DN[a][i];
    }
}

/* Chi-square goodness of fit of counts against probabilities (n cells),
 * cells of expected count < 5 pooled; returns the p-value and the TV and
 * its bound through the pointers. */
static double chi2_p(const int64_t *cnt, const double *prob, int64_t n, int64_t N, double *tv,
                     double *tv_bound) {
    double stat = 0, pool_e = 0, pool_o = 0;
    int64_t dof = -1;
    *tv = 0;
    *tv_bound = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = prob[i] * (double)N;
        *tv += fabs((double)cnt[i] / (double)N - prob[i]) / 2;
        *tv_bound += sqrt(prob[i] * (1 - prob[i]) / (double)N) / 2;
        if (e < 5) {
            pool_e += e;
            pool_o += (double)cnt[i];
            continue;
        }
        stat += ((double)cnt[i] - e) * ((double)cnt[i] - e) / e;
        dof++;
    }
    if (pool_e > 0) {
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        dof++;
    }
    if (dof < 1) return 1.0;
    return gamma_q(dof / 2.0, stat / 2.0);
}

struct setting {
    const char *name;
    struct lmc_sampler_params sp;
    float sigma;        /* draft noise */
    bool deterministic; /* drafts copied, q one-hot (prompt lookup) */
};

/* The naive wrong rule for the negative control: on rejection resample
 * from p instead of the residual. */
static int64_t wrong_accept(const float *p, const float *q, const int32_t *draft, int64_t K,
                            uint64_t *rng, int32_t *out) {
    for (int64_t i = 0; i < K; i++) {
        double u = lmc_rng_uniform(rng);
        if (u * q[i * V + draft[i]] < p[i * V + draft[i]]) {
            out[i] = draft[i];
            continue;
        }
        out[i] = lmc_spec_draw(p + i * V, V, lmc_rng_uniform(rng));
        return i;
    }
    out[K] = lmc_spec_draw(p + K * V, V, lmc_rng_uniform(rng));
    return K;
}

/* One speculative generation of NGEN tokens after prompt (NPROMPT). */
static void spec_generate(struct lmc_sampler *tgt, struct lmc_sampler *drf, const struct setting *st,
                          const int32_t *prompt, uint64_t *rng, bool wrong, int32_t *gen) {
    int32_t h[NPROMPT + NGEN + KDRAFT + 2];
    memcpy(h, prompt, NPROMPT * sizeof *h);
    int64_t n = NPROMPT;
    float p[(KDRAFT + 1) * V], q[KDRAFT * V], lg[V];
    while (n < NPROMPT + NGEN) {
        int32_t d[KDRAFT], out[KDRAFT + 1];
        for (int k = 0; k < KDRAFT; k++) {
            model_logits(h, n + k, true, st->sigma, lg);
            lmc_sampler_probs(drf, lg, h, n + k, q + k * V);
            d[k] = st->deterministic ? lmc_argmax(lg, V) : lmc_spec_draw(q + k * V, V, lmc_rng_uniform(rng));
            h[n + k] = d[k];
        }
        for (int k = 0; k <= KDRAFT; k++) {
            model_logits(h, n + k, false, 0, lg);
            lmc_sampler_probs(tgt, lg, h, n + k, p + k * V);
        }
        int64_t a = wrong ? wrong_accept(p, q, d, KDRAFT, rng, out)
                          : lmc_spec_accept(p, st->deterministic ? NULL : q, V, d, KDRAFT, rng, out);
        for (int64_t i = 0; i <= a; i++) h[n + i] = out[i];
        n += a + 1;
    }
    memcpy(gen, h + NPROMPT, NGEN * sizeof *gen);
}

/* Exact marginals of positions 1..3 and the joint of 1-2 by enumeration. */
static void exact(struct lmc_sampler *tgt, const int32_t *prompt, double m[NGEN][V], double *joint) {
    int32_t h[NPROMPT + NGEN];
    memcpy(h, prompt, NPROMPT * sizeof *h);
    float lg[V], p1[V], p2[V], p3[V];
    memset(m, 0, sizeof(double) * NGEN * V);
    model_logits(h, NPROMPT, false, 0, lg);
    lmc_sampler_probs(tgt, lg, h, NPROMPT, p1);
    for (int a = 0; a < V; a++) {
        m[0][a] += p1[a];
        if (p1[a] == 0) {
            for (int b = 0; b < V; b++) joint[a * V + b] = 0;
            continue;
        }
        h[NPROMPT] = a;
        model_logits(h, NPROMPT + 1, false, 0, lg);
        lmc_sampler_probs(tgt, lg, h, NPROMPT + 1, p2);
        for (int b = 0; b < V; b++) {
            double pab = (double)p1[a] * p2[b];
            joint[a * V + b] = pab;
            m[1][b] += pab;
            if (pab == 0) continue;
            h[NPROMPT + 1] = b;
            model_logits(h, NPROMPT + 2, false, 0, lg);
            lmc_sampler_probs(tgt, lg, h, NPROMPT + 2, p3);
            for (int c = 0; c < V; c++) m[2][c] += pab * p3[c];
        }
    }
}

/* Runs NSAMP generations; returns the smallest chi-square p-value over
 * the four checks and whether every TV was within its bound. */
static double run_setting(const struct setting *st, bool wrong, bool *tv_ok) {
    struct lmc_sampler tgt, drf;
    lmc_err err = {0};
    CHECK(lmc_sampler_init(&tgt, &st->sp, V, &err) == LMC_OK);
    CHECK(lmc_sampler_init(&drf, &st->sp, V, &err) == LMC_OK);
    const int32_t prompt[NPROMPT] = {3, 17, 3, 29};
    static double m[NGEN][V], joint[V * V];
    exact(&tgt, prompt, m, joint);
    static int64_t cnt[NGEN][V], jc[V * V];
    memset(cnt, 0, sizeof cnt);
    memset(jc, 0, sizeof jc);
    uint64_t rng = 0x5bec + (uint64_t)st->sigma * 1000 + (wrong ? 7 : 0);
    for (int s = 0; s < NSAMP; s++) {
        int32_t g[NGEN];
        spec_generate(&tgt, &drf, st, prompt, &rng, wrong, g);
        for (int i = 0; i < NGEN; i++) cnt[i][g[i]]++;
        jc[g[0] * V + g[1]]++;
    }
    double pmin = 1;
    *tv_ok = true;
    for (int i = 0; i <= NGEN; i++) {
        double tv, tvb;
        double pv = i < NGEN ? chi2_p(cnt[i], m[i], V, NSAMP, &tv, &tvb)
                             : chi2_p(jc, joint, V * V, NSAMP, &tv, &tvb);
        if (!wrong)
            printf("  %-22s %-8s chi2 p = %.4f  TV = %.4f (bound %.4f)\n", st->name,
                   i < NGEN ? (i == 0 ? "token 1" : i == 1 ? "token 2" : "token 3") : "joint12", pv,
                   tv, 3 * tvb);
        if (pv < pmin) pmin = pv;
        if (!(tv < 3 * tvb)) *tv_ok = false;
    }
    lmc_sampler_free(&tgt);
    lmc_sampler_free(&drf);
    return pmin;
}

static void test_greedy(void) {
    struct setting st = {.name = "greedy", .sigma = 1.5f};
    lmc_sampler_defaults(&st.sp);
    st.sp.temperature = 0;
    st.sp.repeat_penalty = 1.2;
    struct lmc_sampler tgt, drf;
    lmc_err err = {0};
    CHECK(lmc_sampler_init(&tgt, &st.sp, V, &err) == LMC_OK);
    CHECK(lmc_sampler_init(&drf, &st.sp, V, &err) == LMC_OK);
    const int32_t prompt[NPROMPT] = {1, 2, 3, 4};
    /* the plain greedy chain */
    int32_t h[NPROMPT + NGEN];
    memcpy(h, prompt, sizeof prompt);
    float lg[V];
    for (int i = 0; i < NGEN; i++) {
        model_logits(h, NPROMPT + i, false, 0, lg);
        h[NPROMPT + i] = lmc_sampler_sample(&tgt, lg, h, NPROMPT + i);
    }
    uint64_t rng = 99;
    int same = 0;
    for (int s = 0; s < 200; s++) {
        int32_t g[NGEN];
        spec_generate(&tgt, &drf, &st, prompt, &rng, false, g);
        same += !memcmp(g, h + NPROMPT, sizeof g);
    }
    CHECK_MSG(same == 200, "%d of 200 greedy speculative runs gave the greedy chain", same);
    lmc_sampler_free(&tgt);
    lmc_sampler_free(&drf);
}

static void test_draw_edges(void) {
    float p[5] = {0, 0.25f, 0, 0.75f, 0};
    CHECK(lmc_spec_draw(p, 5, 0.0) == 1);
    CHECK(lmc_spec_draw(p, 5, 0.2499) == 1);
    CHECK(lmc_spec_draw(p, 5, 0.2501) == 3);
    CHECK(lmc_spec_draw(p, 5, 0.9999999999) == 3);
    float q[5] = {0, 0.5f, 0, 0.5f, 0};
    /* residual max(0, p - q) = {0, 0, 0, 0.25, 0}: always 3 */
    CHECK(lmc_spec_draw_residual(p, q, 1, 5, 0.0) == 3);
    CHECK(lmc_spec_draw_residual(p, q, 1, 5, 0.99) == 3);
    /* deterministic draft 3: residual {0, .25, 0, 0, 0} */
    CHECK(lmc_spec_draw_residual(p, NULL, 3, 5, 0.7) == 1);
    /* p == q: no residual mass, falls back to p */
    CHECK(lmc_spec_draw_residual(p, p, 1, 5, 0.5) == 3);
    /* K = 0: one draw from p */
    uint64_t rng = 1;
    int32_t out[1];
    CHECK(lmc_spec_accept(p, NULL, 5, NULL, 0, &rng, out) == 0 && (out[0] == 1 || out[0] == 3));
    /* a draft the target gives probability 1 is always accepted, one it
     * gives 0 never */
    float pp[2 * 5] = {0, 0, 1, 0, 0, 0, 0, 1, 0, 0};
    int32_t d1 = 2, d0 = 3, o2[2];
    for (int i = 0; i < 50; i++) {
        CHECK(lmc_spec_accept(pp, NULL, 5, &d1, 1, &rng, o2) == 1 && o2[0] == 2 && o2[1] == 2);
        CHECK(lmc_spec_accept(pp, NULL, 5, &d0, 1, &rng, o2) == 0 && o2[0] == 2);
    }
}

int main(void) {
    uint64_t s = 12345;
    for (int a = 0; a < V; a++)
        for (int b = 0; b < V; b++) {
            W1[a][b] = test_rand(&s);
            W2[a][b] = test_rand(&s);
            DN[a][b] = test_rand(&s);
        }
    test_draw_edges();
    test_greedy();
    struct setting st[5];
    memset(st, 0, sizeof st);
    for (int i = 0; i < 5; i++) lmc_sampler_defaults(&st[i].sp);
    st[0].name = "T=1";
    st[0].sigma = 1.0f;
    st[1].name = "T=0.7 top-k 10";
    st[1].sp.temperature = 0.7;
    st[1].sp.top_k = 10;
    st[1].sigma = 1.5f;
    st[2].name = "T=1.3 top-p .8 min-p .03";
    st[2].sp.temperature = 1.3;
    st[2].sp.top_p = 0.8;
    st[2].sp.min_p = 0.03;
    st[2].sigma = 1.2f;
    st[3].name = "penalties";
    st[3].sp.repeat_penalty = 1.4;
    st[3].sp.presence_penalty = 0.5;
    st[3].sp.frequency_penalty = 0.3;
    st[3].sigma = 1.0f;
    st[4].name = "deterministic drafts";
    st[4].sp.top_k = 12;
    st[4].sigma = 0.7f;
    st[4].deterministic = true;
    for (int i = 0; i < 5; i++) {
        bool tv_ok;
        double pv = run_setting(&st[i], false, &tv_ok);
        CHECK_MSG(pv > 0.001, "%s: smallest chi-square p %.2g", st[i].name, pv);
        CHECK_MSG(tv_ok, "%s: a total variation above its bound", st[i].name);
    }
    /* negative control: the wrong rule is detected */
    for (int i = 0; i < 2; i++) {
        bool tv_ok;
        double pv = run_setting(&st[i], true, &tv_ok);
        printf("  wrong rule (%s): smallest chi2 p = %.3g\n", st[i].name, pv);
        CHECK_MSG(pv < 1e-6, "wrong rule not detected on %s: p %.3g", st[i].name, pv);
    }
    return test_finish("test_spec");
}
