/* test_rl.c — the RL plumbing on the llama-tiny fixture (CPU backend):
 *  - lmc_rl_bwd with dlogp = -c everywhere equals the training step's
 *    cross-entropy gradient with dscale c (same op, row by row);
 *  - lmc_rl_bwd with random per-token weights and a hidden-state gradient
 *    against a central finite difference of L = sum w.logp + sum u.h along
 *    a random direction of all parameters, at temperature 1 and 0.7;
 *  - one GRPO step: the log-probabilities the trainer recomputes for the
 *    sampled tokens equal the sampler's (fp32, <= 1e-5; also sampling at
 *    temperature 0.7), metrics sane;
 *  - micro-batches of 2 rows update the policy as the whole batch of 8
 *    (GRPO, 2 epochs: the re-forward before each backward);
 *  - chat "messages" tasks rendered through a chat template (an error
 *    naming the task without one);
 *  - task JSONL errors name the line. */
#include "test.h"
#include "core/core.h"
#include "ops/backend.h"
#include "train/rl.h"
#include "train/rl_model.h"
#include "tokenizer/chat_template.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *DIR_ = "tests/fixtures/llama-tiny";

static double objective(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *in, const int32_t *tg,
                        double temp, const float *w, const float *u, float *lp, float *hid) {
    lmc_err err = {0};
    LMC_ASSERT(!lmc_rl_fwd_temp(tm, a, in, tg, temp, lp, hid, &err));
    int64_t M = a->B * a->T, C = tm->cfg.hidden_size;
    double L = 0;
    for (int64_t i = 0; i < M; i++) L += (double)w[i] * lp[i];
    for (int64_t i = 0; i < M * C; i++) L += (double)u[i] * hid[i];
    return L;
}

static int64_t tm_numel(const char *dir, const struct lmc_backend *be) {
    lmc_err err = {0};
    struct lmc_tmodel tm;
    LMC_ASSERT(!lmc_tmodel_load(&tm, dir, be, &err));
    int64_t n = tm.numel;
    lmc_tmodel_free(&tm);
    return n;
}

static void grads(struct lmc_backend *be) {
    lmc_err err = {0};
    struct lmc_tmodel tm;
    CHECK(!lmc_tmodel_load(&tm, DIR_, be, &err));
    int64_t B = 2, T = 7, M = B * T, C = tm.cfg.hidden_size, V = tm.cfg.vocab_size;
    struct lmc_tacts a;
    CHECK(!lmc_tacts_init(&a, &tm, be, B, T, false, &err));
    int32_t in[14], tg[14];
    uint64_t rng = 7;
    for (int64_t i = 0; i < M; i++) {
        in[i] = (int32_t)(test_rng_next(&rng) % (uint64_t)V);
        tg[i] = (i % T) < 2 ? -1 : (int32_t)(test_rng_next(&rng) % (uint64_t)V);
    }
    /* 1: uniform weights = the cross-entropy backward */
    float *g1 = malloc((size_t)tm.numel * sizeof(float)), *g2 = malloc((size_t)tm.numel * sizeof(float));
    float lp[14], w[14];
    double ls;
    int64_t cnt;
    lmc_tmodel_zero_grad(&tm);
    CHECK(!lmc_tmodel_step(&tm, be, &a, in, tg, true, 0.37f, &ls, &cnt, &err));
    lmc_tmodel_download_arena(&tm, tm.g, g1);
    for (int64_t i = 0; i < M; i++) w[i] = -0.37f;
    lmc_tmodel_zero_grad(&tm);
    CHECK(!lmc_rl_fwd(&tm, &a, in, tg, lp, NULL, &err));
    CHECK(!lmc_rl_bwd(&tm, &a, tg, w, NULL, &err));
    lmc_tmodel_download_arena(&tm, tm.g, g2);
    double num = 0, den = 0;
    for (int64_t i = 0; i < tm.numel; i++) num = fmax(num, fabs(g1[i] - g2[i])), den = fmax(den, fabs(g1[i]));
    CHECK_MSG(num <= 1e-5 * den, "uniform weights: %g / %g", num, den);
    /* 2: random weights + hidden gradient vs finite differences, at
     * temperature 1 and at a sampling temperature 0.7 (logits / 0.7) */
    float *u = malloc((size_t)(M * C) * sizeof(float)), *hid = malloc((size_t)(M * C) * sizeof(float));
    float *w0 = malloc((size_t)tm.numel * sizeof(float)), *d = malloc((size_t)tm.numel * sizeof(float));
    lmc_tmodel_download_arena(&tm, tm.w, w0);
    for (int ti = 0; ti < 2; ti++) {
        double temp = ti ? 0.7 : 1.0;
        lmc_tmodel_upload_arena(&tm, tm.w, w0);
        for (int64_t i = 0; i < M; i++) w[i] = tg[i] >= 0 ? test_rand(&rng) : 0.0f;
        for (int64_t i = 0; i < M * C; i++) u[i] = 0.05f * test_rand(&rng);
        lmc_tmodel_zero_grad(&tm);
        objective(&tm, &a, in, tg, temp, w, u, lp, hid);
        CHECK(!lmc_rl_bwd_temp(&tm, &a, tg, temp, w, u, &err));
        lmc_tmodel_download_arena(&tm, tm.g, g1);
        double gd = 0;
        for (int64_t i = 0; i < tm.numel; i++) {
            d[i] = test_rand(&rng);
            gd += (double)g1[i] * d[i];
        }
        double h = 1e-3, Lp, Lm;
        for (int64_t i = 0; i < tm.numel; i++) g2[i] = w0[i] + (float)h * d[i];
        lmc_tmodel_upload_arena(&tm, tm.w, g2);
        Lp = objective(&tm, &a, in, tg, temp, w, u, lp, hid);
        for (int64_t i = 0; i < tm.numel; i++) g2[i] = w0[i] - (float)h * d[i];
        lmc_tmodel_upload_arena(&tm, tm.w, g2);
        Lm = objective(&tm, &a, in, tg, temp, w, u, lp, hid);
        double fd = (Lp - Lm) / (2 * h);
        CHECK_MSG(fabs(fd - gd) <= 2e-2 * fabs(gd) && fabs(gd) > 1e-3, "temp %g: fd %g vs analytic %g", temp, fd, gd);
    }
    free(g1), free(g2), free(u), free(hid), free(w0), free(d);
    lmc_tacts_free(&a);
    lmc_tmodel_free(&tm);
}

static void step(struct lmc_backend *be) {
    lmc_err err = {0};
    struct lmc_tokenizer *tok;
    CHECK(!lmc_tokenizer_load(&tok, DIR_, &err));
    const char *jl = "{\"prompt\": \"one plus one is\", \"answer\": \"e\"}\n\n{\"prompt\": \"the end\", \"answer\": \"a\"}\n";
    struct lmc_rl_task *t;
    int64_t n;
    CHECK(!lmc_rl_tasks_parse(jl, strlen(jl), "t.jsonl", &t, &n, &err) && n == 2);
    CHECK(!strcmp(t[0].answer, "e") && !strcmp(t[1].prompt, "the end"));
    struct lmc_rl_opts o;
    lmc_rl_opts_default(&o);
    o.group = 4, o.prompts = 2, o.max_new = 12, o.epochs = 2, o.lr = 1e-3;
    /* a dense toy reward: the completion's last vowel is the answer, so
     * rewards differ within a group and the policy moves */
    o.extract = LMC_EXTRACT_REGEX, o.regex = "([aeiou])";
    struct lmc_rl rl;
    CHECK(!lmc_rl_init(&rl, DIR_, be, tok, t, n, &o, &err));
    struct lmc_rl_metrics mt;
    lmc_status s = lmc_rl_step(&rl, &mt, &err);
    CHECK_MSG(!s, "%s", err.msg);
    CHECK_MSG(mt.logp_maxdiff <= 1e-5, "sampler vs trainer logp: %g", mt.logp_maxdiff);
    CHECK(mt.rollout_tokens > 0 && mt.resp_len > 0 && mt.entropy > 0 && mt.kl == 0 && isfinite(mt.loss));
    s = lmc_rl_step(&rl, &mt, &err);
    CHECK_MSG(!s, "%s", err.msg);
    CHECK(mt.kl > 0); /* the policy moved away from the reference */
    lmc_rl_free(&rl);
    /* at a sampling temperature the trainer's log-probabilities are the
     * sampler's too (logits / temperature) */
    o.temperature = 0.7;
    CHECK(!lmc_rl_init(&rl, DIR_, be, tok, t, n, &o, &err));
    s = lmc_rl_step(&rl, &mt, &err);
    CHECK_MSG(!s && mt.logp_maxdiff <= 1e-5, "temperature 0.7: %s %g", err.msg, mt.logp_maxdiff);
    lmc_rl_free(&rl);
    o.temperature = 1.0;
    /* PPO runs too */
    o.algo = LMC_RL_PPO;
    CHECK(!lmc_rl_init(&rl, DIR_, be, tok, t, n, &o, &err));
    s = lmc_rl_step(&rl, &mt, &err);
    CHECK_MSG(!s && isfinite(mt.vf_loss) && mt.logp_maxdiff <= 1e-5, "%s %g", err.msg, mt.logp_maxdiff);
    lmc_rl_free(&rl);
    lmc_rl_tasks_free(t, n);
    /* micro-batches of 2 rows give the same update as the whole batch of 8 */
    {
        t = NULL;
        CHECK(!lmc_rl_tasks_parse(jl, strlen(jl), "t.jsonl", &t, &n, &err));
        float *w[2];
        double loss[2];
        for (int k = 0; k < 2; k++) {
            struct lmc_rl_opts mo = o;
            mo.algo = LMC_RL_GRPO, mo.micro = k ? 2 : 0;
            CHECK(!lmc_rl_init(&rl, DIR_, be, tok, t, n, &mo, &err));
            CHECK(!lmc_rl_step(&rl, &mt, &err));
            loss[k] = mt.loss;
            w[k] = malloc((size_t)rl.pol.numel * sizeof(float));
            lmc_tmodel_download_arena(&rl.pol, rl.pol.w, w[k]);
            n = rl.n_tasks;
            lmc_rl_free(&rl);
        }
        double num = 0, den = 0;
        int64_t nw = tm_numel(DIR_, be);
        for (int64_t i = 0; i < nw; i++) num = fmax(num, fabs(w[0][i] - w[1][i])), den = fmax(den, fabs(w[0][i]));
        CHECK_MSG(num <= 1e-5 * den && fabs(loss[0] - loss[1]) <= 1e-6, "micro-batches: %g / %g, loss %g vs %g", num,
                  den, loss[0], loss[1]);
        struct lmc_rl_opts mo = o;
        mo.micro = 3;
        CHECK(lmc_rl_init(&rl, DIR_, be, tok, t, n, &mo, &err) == LMC_ERR_ARG && strstr(err.msg, "micro-batch"));
        free(w[0]), free(w[1]);
        lmc_rl_tasks_free(t, n);
    }
    /* chat messages go through the chat template with the generation prompt */
    const char *cj = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi there\"}], \"answer\": \"e\"}\n";
    CHECK(!lmc_rl_tasks_parse(cj, strlen(cj), "chat.jsonl", &t, &n, &err) && n == 1 && t[0].messages && !t[0].prompt);
    o.algo = LMC_RL_GRPO;
    CHECK(lmc_rl_init(&rl, DIR_, be, tok, t, n, &o, &err) == LMC_ERR_ARG && strstr(err.msg, "task 1"));
    struct lmc_chat_template *ct;
    CHECK(!lmc_chat_template_new("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                                 "{% if add_generation_prompt %}<assistant>{% endif %}", "", "", &ct, &err));
    o.chat = ct;
    CHECK(!lmc_rl_init(&rl, DIR_, be, tok, t, n, &o, &err));
    CHECK(t[0].prompt && !strcmp(t[0].prompt, "<user>hi there<assistant>"));
    s = lmc_rl_step(&rl, &mt, &err);
    CHECK_MSG(!s && mt.logp_maxdiff <= 1e-5, "%s", err.msg);
    lmc_rl_free(&rl);
    lmc_chat_template_free(ct);
    lmc_rl_tasks_free(t, n);
    lmc_tokenizer_free(tok);
    const char *bad[] = {"{\"prompt\": 1}\n", "{\"prompt\": \"a\"}\nnot json\n", "{\"messages\": []}\n",
                         "{\"prompt\": \"a\", \"answer\": []}\n", "\n \n"};
    for (int i = 0; i < 5; i++) {
        CHECK(lmc_rl_tasks_parse(bad[i], strlen(bad[i]), "bad.jsonl", &t, &n, &err) == LMC_ERR_FORMAT);
        CHECK(strstr(err.msg, "bad.jsonl") != NULL);
    }
    CHECK(strstr(err.msg, "no tasks") != NULL);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err = {0};
    LMC_ASSERT(!lmc_backend_cpu_init(&be, 1, &err));
    grads(&be);
    step(&be);
    lmc_backend_cpu_free(&be);
    return test_finish("test_rl");
}
