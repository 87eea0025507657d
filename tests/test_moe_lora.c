/* test_moe_lora.c — LoRA on expert projections (each expert's gate / up /
 * down is a linear the adapter path adapts; the MoE part then runs the
 * per-expert lmc_linear path) on mixtral-tiny and qwen2moe-tiny: the loss
 * with adapters (random non-zero A and B) equals the loss of the base with
 * the adapters merged into the expert weights (so the adapters act on
 * exactly the routed rows of their expert), and the lora_A / lora_B
 * gradients of expert modules match central differences of the loss.
 * Also: an adapter folder round-trips (save, load) with the expert
 * modules under their per-expert names. */
#include "test.h"
#include "core/core.h"
#include "core/rng.h"
#include "train/lora.h"
#include "train/lora_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double step_loss(struct lmc_tmodel *tm, struct lmc_tacts *a, const int32_t *in, const int32_t *tg, bool bwd) {
    double sum;
    int64_t cnt;
    lmc_err err = {0};
    CHECK_MSG(!lmc_tmodel_step(tm, tm->be, a, in, tg, bwd, 1.0f, &sum, &cnt, &err), "%s", err.msg);
    return sum;
}

static void run(const char *fixture, const char *targets) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", fixture);
    lmc_err err = {0};
    struct lmc_backend be;
    CHECK(!lmc_backend_cpu_init(&be, 2, &err));
    struct lmc_tmodel tm, mg;
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    struct lmc_lora_config lc = {.r = 3, .alpha = 6};
    enum { B = 1, T = 9 };
    struct lmc_tacts a, am;
    if (lmc_tmodel_load(&tm, dir, &be, &err) || lmc_tmodel_load(&mg, dir, &be, &err) ||
        lmc_lora_parse_targets(&lc, targets, &err) || lmc_lora_create(&lo, &lc, &tm.cfg, 11, &err)) {
        CHECK_MSG(0, "%s: %s", fixture, err.msg);
        return;
    }
    int experts = 0;
    uint64_t rs = 5;
    for (int k = 0; k < lo.n_mods; k++) { /* B non-zero so that the adapters change the outputs */
        struct lmc_lora_module *m = &lo.mods[k];
        experts += m->expert >= 0;
        for (int64_t i = 0; i < m->out * lc.r; i++) m->b[i] = (float)(0.2 * (2 * lmc_rng_uniform(&rs) - 1));
    }
    CHECK_MSG(experts >= 3 * (int)tm.cfg.num_experts, "%s: %d expert modules of %d", fixture, experts, lo.n_mods);
    /* the merged twin */
    for (int k = 0; k < lo.n_mods; k++) {
        char name[200];
        snprintf(name, sizeof name, "%s.weight", lo.mods[k].module);
        int i = lmc_tmodel_find(&mg, name);
        CHECK_MSG(i >= 0, "%s: no parameter %s", fixture, name);
        if (i < 0) continue;
        float *w = malloc((size_t)mg.params[i].numel * sizeof *w);
        CHECK(!lmc_tmodel_download_param(&mg, mg.w, i, w, &err));
        lmc_lora_merge_into(&lo.mods[k], lc.r, lmc_lora_scale(&lc), w, LMC_DTYPE_F32);
        CHECK(!lmc_tmodel_upload_param(&mg, mg.w, i, w, &err));
        free(w);
    }
    CHECK_MSG(!lmc_lora_train_attach(&lt, &tm, &lo, &err), "%s", err.msg);
    CHECK(!lmc_tacts_init(&a, &tm, &be, B, T, false, &err) && !lmc_tacts_init(&am, &mg, &be, B, T, false, &err));
    int32_t in[T], tg[T];
    uint64_t s = 3;
    for (int t = 0; t < T; t++) in[t] = (int32_t)(lmc_rng_next(&s) % (uint64_t)tm.cfg.vocab_size);
    for (int t = 0; t < T; t++) tg[t] = t + 1 < T ? in[t + 1] : 7;
    double lbase;
    {
        struct lmc_tmodel plain;
        struct lmc_tacts ap;
        CHECK(!lmc_tmodel_load(&plain, dir, &be, &err) && !lmc_tacts_init(&ap, &plain, &be, B, T, false, &err));
        lbase = step_loss(&plain, &ap, in, tg, false);
        lmc_tacts_free(&ap);
        lmc_tmodel_free(&plain);
    }
    lmc_tmodel_zero_grad(&tm);
    double la = step_loss(&tm, &a, in, tg, true), lm = step_loss(&mg, &am, in, tg, false);
    CHECK_MSG(fabs(la - lm) <= 2e-5 * fabs(lm) && fabs(la - lbase) > 1e-3 * fabs(lbase),
              "%s: loss with adapters %.9g, merged %.9g, base %.9g", fixture, la, lm, lbase);
    /* lora_A / lora_B of expert modules vs central differences */
    int checked = 0;
    double worst = 0;
    for (int k = 0; k < lo.n_mods; k++) {
        if (lo.mods[k].expert < 0 || lo.mods[k].expert % 2) continue; /* every other expert */
        for (int ab = 0; ab < 2; ab++) {
            const struct lmc_tparam *p = &tm.params[lt.first_param + 2 * k + ab];
            for (int64_t e = 0; e < 2; e++) {
                int64_t j = (e * 37 + k) % p->numel;
                float *w = tm.w + p->off + j, keep = *w, eps = 2e-3f;
                *w = keep + eps;
                double lp = step_loss(&tm, &a, in, tg, false);
                *w = keep - eps;
                double lq = step_loss(&tm, &a, in, tg, false);
                *w = keep;
                double fd = (lp - lq) / (2.0 * eps), g = lmc_tmodel_grad(&tm, p)[j];
                double rel = fabs(fd - g) / (fabs(fd) + 0.02);
                if (rel > worst) worst = rel;
                if (rel > 0.03) fprintf(stderr, "%s %s[%lld]: fd %.6f grad %.6f\n", fixture, p->name, (long long)j, fd, g);
                checked++;
            }
        }
    }
    CHECK_MSG(checked >= 8 && worst < 0.03, "%s: %d expert adapter gradients vs central differences, worst %.3e",
              fixture, checked, worst);
    /* save and load: the expert modules come back under their names */
    char tmp[] = "/tmp/lmc_moe_lora_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    struct lmc_lora back;
    char adir[64];
    snprintf(adir, sizeof adir, "%s/adapter", tmp);
    CHECK_MSG(!lmc_lora_save(&lo, adir, &tm.cfg, NULL, &err) && !lmc_lora_load(&back, adir, &tm.cfg, &err), "%s",
              err.msg);
    CHECK(back.n_mods == lo.n_mods);
    for (int k = 0; k < back.n_mods && k < lo.n_mods; k++)
        CHECK(back.mods[k].expert == lo.mods[k].expert && !strcmp(back.mods[k].module, lo.mods[k].module) &&
              !memcmp(back.mods[k].b, lo.mods[k].b, (size_t)(lo.mods[k].out * lc.r) * sizeof(float)));
    printf("%s: %d modules (%d expert), loss base %.6f adapters %.9f merged %.9f, %d gradients within %.2e\n", fixture,
           lo.n_mods, experts, lbase, la, lm, checked, worst);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK(system(cmd) == 0);
    lmc_lora_free(&back);
    lmc_tacts_free(&a);
    lmc_tacts_free(&am);
    lmc_lora_train_free(&lt);
    lmc_lora_free(&lo);
    lmc_tmodel_free(&tm);
    lmc_tmodel_free(&mg);
    lmc_backend_cpu_free(&be);
}

int main(void) {
    run("mixtral-tiny", "w1,w2,w3,q_proj");
    run("qwen2moe-tiny", "gate_proj,up_proj,down_proj");
    return test_finish("test_moe_lora");
}
