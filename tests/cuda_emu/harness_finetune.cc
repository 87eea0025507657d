/* harness_finetune.cc — included by harness.cc (its helpers and backends in
 * scope): section finetune, the path of `lmc finetune --full --pack
 * --device cuda` through the real CUDA table against the CPU backend: the
 * whole model loaded as trainable (lmc_tmodel_load), a trainer fed by a
 * batch source (o.next_batch, as cmd_finetune's SFT batcher) whose rows
 * hold packed examples (segments of odd lengths, positions restarting per
 * segment, attention never crossing one) with masked targets, two
 * optimizer steps of gradient accumulation 2 with clipping and AdamW. On
 * llama-tiny and qwen2-tiny (biases, one KV head, tied embedding), fp32:
 * the losses, the gradient of the second step and every weight after it vs
 * the CPU run; bf16 (train_bf16): the losses and the gradient's cosine. */
extern "C" {
#include "train/trainer.h"
}

struct ft_feed {
    int64_t B, T, drawn;
    std::vector<int32_t> in, tg; /* (4 micro-batches, B*T) */
    std::vector<int64_t> segs;   /* (offset, length) pairs over the B*T tokens of a micro-batch */
};

static lmc_status ft_next(void *user, int32_t *in, int32_t *tg, const int64_t **segs, int64_t *n_segs, lmc_err *) {
    auto *f = (ft_feed *)user;
    int64_t n = f->B * f->T, k = f->drawn++ % 4;
    memcpy(in, f->in.data() + k * n, (size_t)n * sizeof *in);
    memcpy(tg, f->tg.data() + k * n, (size_t)n * sizeof *tg);
    *segs = f->segs.data();
    *n_segs = (int64_t)f->segs.size() / 2;
    return LMC_OK;
}

static bool ft_run(const struct lmc_backend *be, const std::string &dir, ft_feed f, std::vector<double> &losses,
                   std::vector<float> &g, std::vector<float> &w) {
    lmc_err err;
    struct lmc_tmodel tm;
    struct lmc_trainer tr;
    if (lmc_tmodel_load(&tm, dir.c_str(), be, &err)) {
        printf("FAIL finetune load on %s: %s\n", be->name, err.msg), n_fail++;
        return false;
    }
    struct lmc_train_opts o = {};
    o.B = f.B, o.T = f.T, o.accum = 2, o.decay = LMC_DECAY_DEFAULT, o.clip = 0.5, o.next_batch = ft_next;
    o.batch_user = &f;
    /* eps 1e-3 (harness_qlora.cc says why): the update a smooth function of g */
    o.adamw = (struct lmc_adamw_cfg){1e-3, 0.9, 0.999, 1e-3, 0.01};
    o.sched = (struct lmc_schedule){};
    o.sched.kind = LMC_SCHED_CONSTANT, o.sched.lr_max = 1e-3, o.sched.lr_min = 1e-3, o.sched.total = 100;
    if (lmc_trainer_init(&tr, &tm, be, NULL, NULL, &o, &err)) {
        printf("FAIL finetune trainer on %s: %s\n", be->name, err.msg), n_fail++;
        return false;
    }
    bool ok = true;
    for (int s = 0; s < 2 && ok; s++) {
        struct lmc_train_stats st;
        ok = !lmc_trainer_step(&tr, &st, &err);
        if (ok) losses.push_back(st.loss);
    }
    if (ok) {
        g.resize((size_t)(tr.tm.numel - tr.tm.g_off)), w.resize((size_t)tr.tm.numel);
        be->download(be->ctx, g.data(), tr.tm.g, g.size() * sizeof(float));
        be->download(be->ctx, w.data(), tr.tm.w, w.size() * sizeof(float));
    } else {
        printf("FAIL finetune step on %s: %s\n", be->name, err.msg), n_fail++;
    }
    lmc_trainer_free(&tr);
    return ok;
}

static void test_finetune() {
    emu_strict_device = true;
    for (const char *mn : {"llama-tiny", "qwen2-tiny"}) {
        const std::string dir = std::string(fixtures()) + "/" + mn;
        ft_feed f;
        f.B = 2, f.T = 24, f.drawn = 0;
        /* row 0: examples of 5, 11, 8 tokens; row 1: 13, then 11 (padding-free packing) */
        f.segs = {0, 5, 5, 11, 16, 8, 24, 13, 37, 11};
        int64_t n = f.B * f.T;
        f.in.resize((size_t)(4 * n)), f.tg.resize((size_t)(4 * n));
        for (auto &i : f.in) i = irand(512);
        for (size_t i = 0; i < f.tg.size(); i++) f.tg[i] = irand(3) == 0 ? -1 : irand(512); /* prompts masked */
        std::vector<double> lc, lg;
        std::vector<float> gc, wc, gg, wg;
        if (!ft_run(&cpu, dir, f, lc, gc, wc)) continue;
        for (int bf = 0; bf < 2; bf++) {
            lmc_backend_cuda_set_train_bf16(&gpu, bf);
            lg.clear();
            if (!ft_run(&gpu, dir, f, lg, gg, wg)) continue;
            const std::string p = std::string("finetune full packed ") + (bf ? "bf16 " : "fp32 ");
            double el = std::max(fabs(lg[0] - lc[0]) / fabs(lc[0]), fabs(lg[1] - lc[1]) / fabs(lc[1]));
            double eg = rel(gg, gc), ew = rel(wg, wc), cs = cosine(gg.data(), gc.data(), gc.size());
            check(p + "losses", el, bf ? 2e-2 : 1e-5, "%s", mn);
            if (bf) {
                check(p + "grads (1 - cosine)", 1 - cs, 1e-2, "%s", mn);
            } else {
                check(p + "grads", eg, 1e-4, "%s", mn);
                check(p + "weights after 2 steps", ew, 1e-5, "%s", mn);
            }
            printf("  %s full finetune packed %s: losses %.9f %.9f vs cpu %.9f %.9f (%.2e), step-2 grads rel %.2e "
                   "cosine %.7f, weights %.2e\n", mn, bf ? "bf16" : "fp32", lg[0], lg[1], lc[0], lc[1], el, eg, cs, ew);
        }
        lmc_backend_cuda_set_train_bf16(&gpu, false);
    }
    emu_strict_device = false;
}
