/* test_train.c — the training loop on a tiny Llama and GPT-2 over token
 * data generated here: resuming from a checkpoint reproduces an
 * uninterrupted run bit-exactly (20 steps vs 10 + save + load + 10),
 * gradient accumulation equals one larger batch (B=4 vs 2 x 2, 1e-6),
 * activation recomputation changes nothing, and the weight-decay rule
 * exempts norms, biases and embeddings unless told to decay everything. */
#include "test.h"
#include "train/trainer.h"
#include "core/core.h"

#include <stdlib.h>
#include <unistd.h>

static char dir[256];

/* Token stream with some structure (a noisy counter) so losses fall. */
static void make_data(struct lmc_token_data *d) {
    struct lmc_shard_writer *w;
    lmc_err err = {0};
    char path[300];
    snprintf(path, sizeof path, "%s/train_00000.bin", dir);
    LMC_ASSERT(!lmc_shard_writer_open(&w, path, 64, 2, 63, &err));
    uint64_t s = 7;
    for (int i = 0; i < 6000; i++) {
        int32_t id = (int32_t)((i * 7 + (lmc_rng_next(&s) % 3)) % 60);
        lmc_shard_writer_add(w, &id, 1, &err);
        if (i % 97 == 96) lmc_shard_writer_end_doc(w);
    }
    LMC_ASSERT(!lmc_shard_writer_close(w, &err));
    LMC_ASSERT(!lmc_token_data_open(d, dir, "train", &err));
}

static struct lmc_config tiny(int gpt2) {
    struct lmc_config c;
    memset(&c, 0, sizeof c);
    c.arch = gpt2 ? LMC_ARCH_GPT2 : LMC_ARCH_LLAMA;
    snprintf(c.model_type, sizeof c.model_type, "%s", gpt2 ? "gpt2" : "llama");
    c.vocab_size = 64;
    c.hidden_size = 32;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = gpt2 ? 4 : 2;
    c.head_dim = 8;
    c.intermediate_size = gpt2 ? 128 : 72;
    c.max_position_embeddings = 64;
    c.norm_eps = 1e-5;
    c.qkv_bias = !gpt2;
    c.tie_word_embeddings = gpt2;
    c.act = gpt2 ? LMC_ACT_GELU_TANH : LMC_ACT_SILU;
    c.rope.theta = 10000;
    c.rope.factor = 1;
    c.rope.partial_rotary_factor = 1;
    c.bos_token_id = c.pad_token_id = -1;
    return c;
}

static struct lmc_train_opts opts(int64_t B, int64_t accum, bool recompute) {
    struct lmc_train_opts o = {.B = B, .T = 16, .accum = accum, .clip = 1.0, .recompute = recompute,
                               .seed = 99, .eval_batches = 2};
    lmc_adamw_cfg_default(&o.adamw);
    o.adamw.lr = 3e-3;
    o.adamw.weight_decay = 0.1;
    o.decay = LMC_DECAY_DEFAULT;
    o.sched = (struct lmc_schedule){LMC_SCHED_COSINE, 3e-3, 3e-4, 3, 20, 0};
    return o;
}

static void new_trainer(struct lmc_trainer *tr, const struct lmc_backend *be,
                        const struct lmc_token_data *d, int gpt2, struct lmc_train_opts o) {
    struct lmc_tmodel tm;
    lmc_err err = {0};
    struct lmc_config c = tiny(gpt2);
    LMC_ASSERT(!lmc_tmodel_init(&tm, &c, &err));
    lmc_tmodel_init_random(&tm, 5, 0.05);
    LMC_ASSERT(!lmc_trainer_init(tr, &tm, be, d, d, &o, &err));
}

static void test_resume(const struct lmc_backend *be, const struct lmc_token_data *d, int gpt2) {
    struct lmc_trainer a, b;
    struct lmc_train_stats st;
    lmc_err err = {0};
    double la[20], lb[20];
    new_trainer(&a, be, d, gpt2, opts(2, 1, false));
    for (int i = 0; i < 20; i++) {
        CHECK(!lmc_trainer_step(&a, &st, &err));
        la[i] = st.loss;
    }
    CHECK_MSG(isfinite(la[19]) && (gpt2 || la[19] < la[0] - 0.1), "loss falls: %.4f -> %.4f", la[0], la[19]);
    new_trainer(&b, be, d, gpt2, opts(2, 1, false));
    for (int i = 0; i < 10; i++) {
        CHECK(!lmc_trainer_step(&b, &st, &err));
        lb[i] = st.loss;
    }
    char ck[300];
    snprintf(ck, sizeof ck, "%s/ckpt%d", dir, gpt2);
    CHECK_MSG(!lmc_ckpt_save(&b, ck, NULL, NULL, &err), "%s", err.msg);
    lmc_trainer_free(&b);
    struct lmc_tmodel tm;
    CHECK_MSG(!lmc_tmodel_load(&tm, ck, &err), "%s", err.msg);
    struct lmc_train_opts o = opts(2, 1, false);
    CHECK(!lmc_trainer_init(&b, &tm, be, d, d, &o, &err));
    CHECK_MSG(!lmc_ckpt_load_state(&b, ck, &err), "%s", err.msg);
    CHECK(b.step == 10);
    for (int i = 10; i < 20; i++) {
        CHECK(!lmc_trainer_step(&b, &st, &err));
        lb[i] = st.loss;
    }
    CHECK_MSG(!memcmp(la, lb, sizeof la), "%s resumed losses equal bit for bit (step 20: %.17g vs %.17g)",
              gpt2 ? "gpt2" : "llama", la[19], lb[19]);
    CHECK(!memcmp(a.tm.w, b.tm.w, (size_t)a.tm.numel * sizeof(float)));
    double vl;
    CHECK(!lmc_trainer_eval(&a, &vl, &err) && isfinite(vl));
    lmc_trainer_free(&a);
    lmc_trainer_free(&b);
}

static void test_accum(const struct lmc_backend *be, const struct lmc_token_data *d, int gpt2) {
    struct lmc_trainer a, b, c;
    struct lmc_train_stats sa, sb, sc;
    lmc_err err = {0};
    struct lmc_train_opts o = opts(4, 1, false);
    o.clip = 0;
    new_trainer(&a, be, d, gpt2, o);
    o = opts(2, 2, false);
    o.clip = 0;
    new_trainer(&b, be, d, gpt2, o);
    o = opts(4, 1, true);
    o.clip = 0;
    new_trainer(&c, be, d, gpt2, o);
    CHECK(!lmc_trainer_step(&a, &sa, &err));
    CHECK(!lmc_trainer_step(&b, &sb, &err));
    CHECK(!lmc_trainer_step(&c, &sc, &err));
    double num = 0, den = 0;
    for (int64_t i = 0; i < a.tm.numel; i++) {
        num = fmax(num, fabs((double)a.tm.g[i] - b.tm.g[i]));
        den = fmax(den, fabs((double)a.tm.g[i]));
    }
    CHECK_MSG(num / den <= 1e-6, "%s accumulation: gradient rel err %.3e", gpt2 ? "gpt2" : "llama", num / den);
    CHECK_MSG(fabs(sa.loss - sb.loss) <= 1e-6 * sa.loss, "loss %.9f vs %.9f", sa.loss, sb.loss);
    CHECK_MSG(!memcmp(a.tm.g, c.tm.g, (size_t)a.tm.numel * sizeof(float)) && sa.loss == sc.loss,
              "%s recomputation gives identical gradients", gpt2 ? "gpt2" : "llama");
    lmc_trainer_free(&a);
    lmc_trainer_free(&b);
    lmc_trainer_free(&c);
}

static void test_decay_rule(void) {
    struct lmc_tmodel tm;
    lmc_err err = {0};
    for (int gpt2 = 0; gpt2 < 2; gpt2++) {
        struct lmc_config c = tiny(gpt2);
        LMC_ASSERT(!lmc_tmodel_init(&tm, &c, &err));
        int decayed = 0;
        for (int i = 0; i < tm.n_params; i++) {
            const struct lmc_tparam *p = &tm.params[i];
            bool want = p->ndim == 2 && !strstr(p->name, "embed") && !strstr(p->name, "wte") &&
                        !strstr(p->name, "wpe");
            bool got = lmc_adamw_decays(LMC_DECAY_DEFAULT, p->name, p->ndim);
            CHECK_MSG(got == want, "decay rule for %s", p->name);
            CHECK(lmc_adamw_decays(LMC_DECAY_ALL, p->name, p->ndim));
            decayed += got;
        }
        CHECK(decayed == (gpt2 ? 8 : 15));
        lmc_tmodel_free(&tm);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/lmc_test_train_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 2, &err)) return 1;
    struct lmc_token_data d;
    make_data(&d);
    test_decay_rule();
    for (int gpt2 = 0; gpt2 < 2; gpt2++) {
        test_accum(&be, &d, gpt2);
        test_resume(&be, &d, gpt2);
    }
    lmc_token_data_close(&d);
    lmc_backend_cpu_free(&be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish("test_train");
}
