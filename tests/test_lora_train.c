/* test_lora_train.c — LoRA training against PEFT in float64
 * (tests/fixtures/<model>/lora_train, made by tests/make_lora_refs.py) on
 * llama-tiny (all seven projections), qwen2-tiny (rsLoRA, qkv biases, tied
 * head) and gpt2-tiny (Conv1D, c_attn's three parts sharing A): through
 * lmc_trainer_step with a batch source whose targets mask each row's first
 * 5 tokens, the loss (mean over exactly the unmasked targets), every
 * lora_A / lora_B gradient, the adapter after one AdamW step and the
 * losses of steps 2..4; the base arena is bit-for-bit unchanged. */
#include "test.h"
#include "harness_batch.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "train/lora_train.h"
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* max |a - b| / max |b| over a tensor */
static double rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

static void run(const char *model) {
    char dir[256], ldir[300], path[400];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", model);
    snprintf(ldir, sizeof ldir, "%s/lora_train", dir);
    lmc_err err = {0};
    int64_t B, T;
    struct harness_batch bt;
    cJSON *ref = harness_batch_ref(ldir, &bt, &B, &T, &err);
    if (!ref) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    int64_t counted = 0;
    for (int64_t i = 0; i < B * T; i++) counted += bt.tg[i] >= 0;
    CHECK(counted == B * (T - 5));
    struct lmc_backend be;
    CHECK(!lmc_backend_cpu_init(&be, 2, &err));
    struct lmc_tmodel tm;
    struct lmc_lora lo;
    struct lmc_lora_train lt;
    if (lmc_tmodel_load(&tm, dir, &be, &err) || lmc_lora_load(&lo, ldir, &tm.cfg, &err) ||
        lmc_lora_train_attach(&lt, &tm, &lo, &err)) {
        CHECK_MSG(0, "%s: %s", model, err.msg);
        return;
    }
    int64_t base = tm.trainable_off;
    float *base0 = malloc(sizeof(float) * (size_t)base), *base1 = malloc(sizeof(float) * (size_t)base);
    be.download(be.ctx, base0, tm.w, (size_t)base * sizeof(float));
    const cJSON *aw = cJSON_GetObjectItem(ref, "adamw");
    struct lmc_train_opts o = {.B = B, .T = T, .accum = 1, .decay = LMC_DECAY_ALL,
                               .next_batch = harness_batch_next, .batch_user = &bt};
    o.adamw = (struct lmc_adamw_cfg){cJSON_GetObjectItem(aw, "lr")->valuedouble,
                                     cJSON_GetObjectItem(aw, "beta1")->valuedouble,
                                     cJSON_GetObjectItem(aw, "beta2")->valuedouble,
                                     cJSON_GetObjectItem(aw, "eps")->valuedouble,
                                     cJSON_GetObjectItem(aw, "weight_decay")->valuedouble};
    o.sched = (struct lmc_schedule){.kind = LMC_SCHED_CONSTANT, .lr_max = o.adamw.lr, .lr_min = o.adamw.lr, .total = 10};
    struct lmc_trainer tr;
    if (lmc_trainer_init(&tr, &tm, &be, NULL, NULL, &o, &err)) {
        CHECK_MSG(0, "%s trainer: %s", model, err.msg);
        return;
    }
    struct lmc_train_stats st;
    CHECK_MSG(!lmc_trainer_step(&tr, &st, &err), "%s step: %s", model, err.msg);
    double want = cJSON_GetObjectItem(ref, "loss")->valuedouble;
    double loss_err = fabs(st.loss - want) / want;
    CHECK_MSG(loss_err < 1e-5, "%s loss %.9f ref %.9f", model, st.loss, want);
    struct lmc_st rg, rs;
    snprintf(path, sizeof path, "%s/ref_grads.safetensors", ldir);
    CHECK(!lmc_st_open_file(&rg, path, &err));
    snprintf(path, sizeof path, "%s/ref_step.safetensors", ldir);
    CHECK(!lmc_st_open_file(&rs, path, &err));
    double worst_g = 0, worst_p = 0;
    int n_checked = 0;
    for (int i = lt.first_param; i < tr.tm.n_params; i++) {
        const struct lmc_tparam *p = &tr.tm.params[i];
        const struct lmc_st_tensor *g = lmc_st_find(&rg, p->name), *s = lmc_st_find(&rs, p->name);
        if (!g || !s || g->numel != p->numel) {
            CHECK_MSG(0, "%s: %s missing from the references", model, p->name);
            continue;
        }
        float *h = malloc(sizeof(float) * (size_t)p->numel);
        be.download(be.ctx, h, lmc_tmodel_grad(&tr.tm, p), sizeof(float) * (size_t)p->numel);
        for (int64_t k = 0; k < p->numel; k++) h[k] /= (float)counted; /* summed gradients */
        double eg = rel(h, g->data, p->numel);
        lmc_tmodel_download_param(&tr.tm, tr.tm.w, i, h, &err);
        double ep = rel(h, s->data, p->numel);
        CHECK_MSG(eg <= 1e-4, "%s grad %s: %.3e", model, p->name, eg);
        CHECK_MSG(ep <= 1e-5, "%s step %s: %.3e", model, p->name, ep);
        worst_g = fmax(worst_g, eg);
        worst_p = fmax(worst_p, ep);
        n_checked++;
        free(h);
    }
    CHECK(n_checked == (int)rg.n_tensors && n_checked == 2 * lo.n_mods);
    const cJSON *later = cJSON_GetObjectItem(ref, "losses_after_step1"), *v;
    double worst_l = 0;
    cJSON_ArrayForEach(v, later) {
        CHECK(!lmc_trainer_step(&tr, &st, &err));
        worst_l = fmax(worst_l, fabs(st.loss - v->valuedouble) / v->valuedouble);
    }
    CHECK_MSG(worst_l < 1e-4, "%s later losses: %.3e", model, worst_l);
    be.download(be.ctx, base1, tr.tm.w, (size_t)base * sizeof(float));
    CHECK_MSG(!memcmp(base0, base1, sizeof(float) * (size_t)base), "%s: base weights unchanged", model);
    printf("%s: %d LoRA tensors, loss rel %.2e, grads <= %.2e, step <= %.2e, steps 2..4 <= %.2e\n", model,
           n_checked, loss_err, worst_g, worst_p, worst_l);
    lmc_st_free(&rg);
    lmc_st_free(&rs);
    lmc_trainer_free(&tr);
    lmc_lora_train_free(&lt);
    lmc_lora_free(&lo);
    lmc_backend_cpu_free(&be);
    free(base0), free(base1), harness_batch_free(&bt);
    cJSON_Delete(ref);
}

int main(void) {
    run("llama-tiny");
    run("qwen2-tiny");
    run("gpt2-tiny");
    return test_finish("test_lora_train");
}
