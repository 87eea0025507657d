/* harness_rl.cc — section rl (included by harness.cc): lmc rl's GRPO and
 * PPO step on llama-tiny through the real CUDA table (emulated) vs the CPU
 * backend, fp32: the trainer's per-token log-probabilities (lmc_rl_fwd_temp
 * at temperature 1 and 0.7) and their weighted backward (lmc_rl_bwd_temp),
 * then one whole lmc_rl_step (rollouts through the scheduler on the
 * policy's arena view, rewards, reference and policy forwards, loss,
 * backward, AdamW), full-parameter GRPO and PPO and LoRA GRPO (the
 * reference: the policy with its adapters off): the sampled completions,
 * the loss, the KL, the sampler-vs-trainer log-probability gap and the
 * updated weights. */
extern "C" {
#include "train/rl.h"
#include "train/rl_model.h"
#include "tokenizer/tokenizer.h"
}

struct rl_out {
    std::vector<float> lp, lp_t, grad;  /* fixed-batch log-probs (T 1, T 0.7), gradient */
    struct lmc_rl_metrics mt[2];         /* two steps */
    std::vector<float> w0, w;            /* the policy before and after */
};

static bool rl_run(const struct lmc_backend *be, const std::string &dir, enum lmc_rl_algo algo, bool lora,
                   const std::vector<int32_t> &in, const std::vector<int32_t> &tg, const std::vector<float> &dl,
                   int64_t B, int64_t T, rl_out &o) {
    lmc_err err;
    memset(&err, 0, sizeof err);
    struct lmc_tokenizer *tok = nullptr;
    if (lmc_tokenizer_load(&tok, dir.c_str(), &err)) { printf("FAIL rl tokenizer %s\n", err.msg), n_fail++; return false; }
    const char *jl = "{\"prompt\": \"one plus one is\", \"answer\": \"e\"}\n{\"prompt\": \"the end\", \"answer\": \"a\"}\n";
    struct lmc_rl_task *t = nullptr;
    int64_t n = 0;
    bool ok = !lmc_rl_tasks_parse(jl, strlen(jl), "t.jsonl", &t, &n, &err);
    struct lmc_rl_opts ro;
    lmc_rl_opts_default(&ro);
    ro.algo = algo, ro.group = 4, ro.prompts = 2, ro.max_new = 8, ro.epochs = 2, ro.lr = 1e-3;
    ro.extract = LMC_EXTRACT_REGEX, ro.regex = "([aeiou])";
    struct lmc_lora_config lc;
    memset(&lc, 0, sizeof lc);
    lc.r = 4, lc.alpha = 8;
    if (lora && ok) ok = !lmc_lora_parse_targets(&lc, "all-linear", &err);
    if (lora) ro.lr = 1e-2, ro.lora = &lc; /* a new adapter (B = 0); the reference: adapters off */
    struct lmc_rl rl;
    if (ok) ok = !lmc_rl_init(&rl, dir.c_str(), be, tok, t, n, &ro, &err);
    if (ok) {
        /* (a) the fixed batch's log-probabilities and their backward */
        struct lmc_tacts a;
        ok = !lmc_tacts_init(&a, &rl.pol, be, B, T, false, &err);
        o.lp.assign((size_t)(B * T), NAN);
        o.lp_t.assign((size_t)(B * T), NAN);
        if (ok) ok = !lmc_rl_fwd_temp(&rl.pol, &a, in.data(), tg.data(), 0.7, o.lp_t.data(), nullptr, &err);
        if (ok) {
            lmc_tmodel_zero_grad(&rl.pol);
            ok = !lmc_rl_fwd_temp(&rl.pol, &a, in.data(), tg.data(), 1.0, o.lp.data(), nullptr, &err) &&
                 !lmc_rl_bwd_temp(&rl.pol, &a, tg.data(), 1.0, dl.data(), nullptr, &err);
        }
        if (ok) {
            o.grad.resize((size_t)(rl.pol.numel - rl.pol.g_off)); /* LoRA: the adapters' gradients only */
            be->download(be->ctx, o.grad.data(), rl.pol.g, o.grad.size() * sizeof(float));
            lmc_tmodel_zero_grad(&rl.pol);
        }
        lmc_tacts_free(&a);
        /* (b) two whole steps */
        if (ok) {
            o.w0.resize((size_t)rl.pol.numel);
            lmc_tmodel_download_arena(&rl.pol, rl.pol.w, o.w0.data());
        }
        for (int k = 0; ok && k < 2; k++) ok = !lmc_rl_step(&rl, &o.mt[k], &err);
        if (ok) {
            o.w.resize((size_t)rl.pol.numel);
            lmc_tmodel_download_arena(&rl.pol, rl.pol.w, o.w.data());
        }
        lmc_rl_free(&rl);
    }
    if (!ok) printf("FAIL rl on %s: %s\n", be->name, err.msg), n_fail++;
    lmc_rl_tasks_free(t, n);
    lmc_tokenizer_free(tok);
    return ok;
}

static void test_rl() {
    emu_strict_device = true;
    lmc_backend_cuda_set_fp32_attention(&gpu, true); /* fp32 KV cache for the rollouts: the CPU's tokens */
    std::string dir = std::string(fixtures()) + "/llama-tiny";
    const int64_t B = 2, T = 13, V = 512;
    std::vector<int32_t> in(B * T), tg(B * T);
    std::vector<float> dl(B * T);
    for (auto &i : in) i = irand((int)V);
    for (int64_t i = 0; i < B * T; i++) tg[i] = i % 5 == 1 ? -1 : irand((int)V);
    for (auto &d : dl) d = frand();
    const enum lmc_rl_algo algos[3] = {LMC_RL_GRPO, LMC_RL_PPO, LMC_RL_GRPO};
    for (int v = 0; v < 3; v++) {
        enum lmc_rl_algo al = algos[v];
        bool lora = v == 2;
        const char *an = lora ? "grpo lora" : al == LMC_RL_GRPO ? "grpo" : "ppo";
        rl_out c, g;
        if (!rl_run(&cpu, dir, al, lora, in, tg, dl, B, T, c) || !rl_run(&gpu, dir, al, lora, in, tg, dl, B, T, g))
            continue;
        std::string p = std::string("rl ") + an + " ";
        if (v == 0) { /* the fixed batch: the same for every variant */
            check("rl logp (fixed batch)", rel(g.lp, c.lp), 1e-5, "llama-tiny");
            check("rl logp T 0.7 (fixed batch)", rel(g.lp_t, c.lp_t), 1e-5, "llama-tiny");
            check("rl weighted backward grads", rel(g.grad, c.grad), 1e-4, "llama-tiny");
            check("rl logp T 0.7 differs from T 1 (cpu)", (double)!(rel(c.lp_t, c.lp) > 1e-3), 0, "llama-tiny");
            printf("  logp %.2e, logp T0.7 %.2e (cpu T0.7 vs T1 %.2e), grads %.2e\n", rel(g.lp, c.lp),
                   rel(g.lp_t, c.lp_t), rel(c.lp_t, c.lp), rel(g.grad, c.grad));
        }
        for (int k = 0; k < 2; k++) {
            const struct lmc_rl_metrics &mc = c.mt[k], &mg = g.mt[k];
            std::string q = p + "step " + std::to_string(k + 1) + " ";
            check(q + "rollouts (tokens, reward)",
                  (double)(mc.rollout_tokens != mg.rollout_tokens || mc.reward != mg.reward), 0, "llama-tiny");
            double el = fabs(mg.loss - mc.loss) / fmax(fabs(mc.loss), 1e-3);
            double ek = fabs(mg.kl - mc.kl) / fmax(fabs(mc.kl), 1e-6);
            check(q + "loss", el, 1e-4, "llama-tiny");
            if (k) check(q + "kl", ek, 1e-3, "llama-tiny");
            check(q + "sampler vs trainer logp", mg.logp_maxdiff, 1e-5, "llama-tiny");
            if (al == LMC_RL_PPO) check(q + "value loss", fabs(mg.vf_loss - mc.vf_loss) / fmax(fabs(mc.vf_loss), 1e-6), 1e-4, "llama-tiny");
            printf("  %s step %d: tokens %ld/%ld reward %.3f/%.3f loss %.6g/%.6g kl %.3g/%.3g logp gap %.2e/%.2e\n", an,
                   k + 1, (long)mg.rollout_tokens, (long)mc.rollout_tokens, mg.reward, mc.reward, mg.loss, mc.loss,
                   mg.kl, mc.kl, mg.logp_maxdiff, mc.logp_maxdiff);
        }
        /* the updates (AdamW, 4 steps at lr 1e-3) relative to the CPU's update */
        std::vector<float> dc(c.w.size()), dg(g.w.size());
        for (size_t i = 0; i < c.w.size(); i++) dc[i] = c.w[i] - c.w0[i], dg[i] = g.w[i] - g.w0[i];
        double ew0 = rel(g.w0, c.w0), eu = rel(dg, dc), cs = cosine(dg.data(), dc.data(), dc.size());
        check(p + "weights before", ew0, 0, "llama-tiny");
        /* AdamW's first steps move each weight by about lr * sign(g): a
         * weight whose gradient is near zero on both backends may differ by
         * a few % of lr there; the direction (cosine) is the tight check */
        check(p + "weight update (max rel err)", eu, 5e-2, "llama-tiny");
        check(p + "weight update (1 - cosine)", 1 - cs, 1e-5, "llama-tiny");
        check(p + "weights after", rel(g.w, c.w), 1e-4, "llama-tiny");
        printf("  %s updated weights: rel %.2e, update rel %.2e, 1 - cosine %.2e\n", an, rel(g.w, c.w), eu, 1 - cs);
    }
    lmc_backend_cuda_set_fp32_attention(&gpu, false);
    emu_strict_device = false;
}
