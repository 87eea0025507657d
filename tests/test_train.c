/* test_train.c — the training loop on a tiny Llama and GPT-2 over token
 * data generated here: resuming from a checkpoint reproduces an
 * uninterrupted run bit-exactly (20 steps vs 10 + save + load + 10),
 * gradient accumulation equals one larger batch (B=4 vs 2 x 2, 1e-6),
 * activation recomputation changes nothing, the validation loss falls,
 * and the weight-decay rule (the parameter table's roles) exempts norms,
 * biases and embeddings unless told to decay everything.
 * The arenas are backend memory: every host look goes through
 * lmc_tmodel_download_*. One step checks the backend-op optimizer (norm =
 * sqrt(be->sumsq), clipping folded into be->adamw) against the host
 * reference (lmc_grad_clip + lmc_adamw_update per tensor), a non-finite
 * gradient skips the update, and a backend lacking a training op fails
 * with an error naming it. */
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
    lmc_err err = {0};
    struct lmc_model_shape sh = {.vocab = 64, .hidden = 32, .layers = 2, .heads = 4,
                                 .kv_heads = gpt2 ? 4 : 2, .intermediate = gpt2 ? 128 : 72,
                                 .max_pos = 64, .tie = gpt2, .rope_theta = 10000};
    LMC_ASSERT(!lmc_config_build(&c, gpt2 ? "gpt2" : "llama", &sh, &err));
    c.qkv_bias = !gpt2; /* the Qwen2-style biases, to train them too */
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
    LMC_ASSERT(!lmc_tmodel_init(&tm, &c, be, &err));
    LMC_ASSERT(!lmc_tmodel_init_random(&tm, 5, 0.05, &err));
    LMC_ASSERT(!lmc_trainer_init(tr, &tm, be, d, d, &o, &err));
}

/* A host copy of a backend arena laid out like tm->w (malloc'd). */
static float *host_copy(const struct lmc_tmodel *tm, const float *arena) {
    float *h = malloc((size_t)tm->numel * sizeof(float));
    LMC_ASSERT(h);
    lmc_tmodel_download_arena(tm, arena, h);
    return h;
}

/* Training learns: the validation loss (the same held-out batches every
 * time) falls by more than 0.1 nats over 20 steps, for both families
 * (per-step training losses are each on another batch, too noisy to
 * compare two of them). */
static void test_loss_falls(const struct lmc_backend *be, const struct lmc_token_data *d, int gpt2) {
    struct lmc_trainer a;
    struct lmc_train_stats st;
    lmc_err err = {0};
    double before, after;
    new_trainer(&a, be, d, gpt2, opts(2, 1, false));
    CHECK_MSG(!lmc_trainer_eval(&a, &before, &err), "%s", err.msg);
    for (int i = 0; i < 20; i++) CHECK(!lmc_trainer_step(&a, &st, &err));
    CHECK_MSG(!lmc_trainer_eval(&a, &after, &err), "%s", err.msg);
    CHECK_MSG(isfinite(after) && after < before - 0.1, "%s validation loss falls: %.4f -> %.4f",
              gpt2 ? "gpt2" : "llama", before, after);
    lmc_trainer_free(&a);
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
    CHECK_MSG(isfinite(la[19]), "loss finite: %.4f", la[19]);
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
    CHECK_MSG(!lmc_tmodel_load(&tm, ck, be, &err), "%s", err.msg);
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
    float *wa = host_copy(&a.tm, a.tm.w), *wb = host_copy(&b.tm, b.tm.w);
    CHECK(!memcmp(wa, wb, (size_t)a.tm.numel * sizeof(float)));
    free(wa);
    free(wb);
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
    float *ga = host_copy(&a.tm, a.tm.g), *gb = host_copy(&b.tm, b.tm.g), *gc = host_copy(&c.tm, c.tm.g);
    double num = 0, den = 0;
    for (int64_t i = 0; i < a.tm.numel; i++) {
        num = fmax(num, fabs((double)ga[i] - gb[i]));
        den = fmax(den, fabs((double)ga[i]));
    }
    CHECK_MSG(num / den <= 1e-6, "%s accumulation: gradient rel err %.3e", gpt2 ? "gpt2" : "llama", num / den);
    CHECK_MSG(fabs(sa.loss - sb.loss) <= 1e-6 * sa.loss, "loss %.9f vs %.9f", sa.loss, sb.loss);
    CHECK_MSG(!memcmp(ga, gc, (size_t)a.tm.numel * sizeof(float)) && sa.loss == sc.loss,
              "%s recomputation gives identical gradients", gpt2 ? "gpt2" : "llama");
    free(ga);
    free(gb);
    free(gc);
    lmc_trainer_free(&a);
    lmc_trainer_free(&b);
    lmc_trainer_free(&c);
}

/* One optimizer step through the backend ops against the host reference:
 * from w0 (m = v = 0), the gradients the step left in tm.g, clipped with
 * lmc_grad_clip and applied with lmc_adamw_update per tensor, give the
 * step's parameters and moments (the norm is summed in another order, so
 * the clip factor may differ in its last bit: 1e-6 relative). */
static void test_optimizer_ops(const struct lmc_backend *be, const struct lmc_token_data *d, int gpt2) {
    struct lmc_trainer a;
    struct lmc_train_stats st;
    lmc_err err = {0};
    struct lmc_train_opts o = opts(2, 1, false);
    o.clip = 0.05; /* small enough to clip */
    new_trainer(&a, be, d, gpt2, o);
    struct lmc_tmodel *tm = &a.tm;
    int64_t N = tm->numel;
    float *w0 = host_copy(tm, tm->w);
    CHECK(!lmc_trainer_step(&a, &st, &err));
    float *g = host_copy(tm, tm->g), *w1 = host_copy(tm, tm->w), *m1 = host_copy(tm, a.m),
          *v1 = host_copy(tm, a.v);
    float *m = calloc((size_t)N, sizeof(float)), *v = calloc((size_t)N, sizeof(float));
    float **gp = malloc((size_t)tm->n_params * sizeof *gp);
    int64_t *len = malloc((size_t)tm->n_params * sizeof *len);
    LMC_ASSERT(m && v && gp && len);
    /* the padding between tensors is zero in every arena */
    bool pad_zero = true;
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        int64_t end = i + 1 < tm->n_params ? tm->params[i + 1].off : N;
        for (int64_t k = p->off + p->numel; k < end; k++)
            pad_zero = pad_zero && g[k] == 0 && w1[k] == 0 && m1[k] == 0 && v1[k] == 0;
        gp[i] = g + p->off;
        len[i] = p->numel;
    }
    CHECK_MSG(pad_zero, "%s: arena padding stays zero", gpt2 ? "gpt2" : "llama");
    double norm = lmc_grad_clip(gp, len, tm->n_params, o.clip);
    CHECK_MSG(fabs(norm - st.grad_norm) <= 1e-12 * norm && norm > o.clip && !st.skipped,
              "grad norm %.17g (host %.17g), clip %.3g", st.grad_norm, norm, o.clip);
    for (int i = 0; i < tm->n_params; i++) {
        const struct lmc_tparam *p = &tm->params[i];
        lmc_adamw_update(&o.adamw, 1, st.lr, lmc_adamw_decays(o.decay, p->name, p->ndim), w0 + p->off,
                         gp[i], m + p->off, v + p->off, p->numel);
    }
    double ew = 0, em = 0, ev = 0, dw = 0, dm = 0, dv = 0;
    for (int64_t k = 0; k < N; k++) {
        ew = fmax(ew, fabs((double)w0[k] - w1[k]));
        em = fmax(em, fabs((double)m[k] - m1[k]));
        ev = fmax(ev, fabs((double)v[k] - v1[k]));
        dw = fmax(dw, fabs((double)w0[k]));
        dm = fmax(dm, fabs((double)m[k]));
        dv = fmax(dv, fabs((double)v[k]));
    }
    CHECK_MSG(ew <= 1e-6 * dw && em <= 1e-6 * dm && ev <= 1e-6 * dv && dm > 0,
              "%s: backend adamw with folded clipping vs host reference: w %.3e m %.3e v %.3e",
              gpt2 ? "gpt2" : "llama", ew / dw, em / dm, ev / dv);
    /* a NaN weight: non-finite gradient norm, the update is skipped */
    float nan = NAN;
    lmc_tmodel_download_arena(tm, tm->w, w0);
    be->upload(be->ctx, tm->w + tm->params[1].off, &nan, sizeof nan);
    w0[tm->params[1].off] = NAN;
    CHECK(!lmc_trainer_step(&a, &st, &err));
    lmc_tmodel_download_arena(tm, tm->w, w1);
    CHECK_MSG(st.skipped && !isfinite(st.grad_norm) && a.step == 2 &&
                  !memcmp(w0, w1, (size_t)N * sizeof(float)),
              "non-finite gradient skips the update (skipped %d, norm %g)", st.skipped, st.grad_norm);
    free(w0);
    free(g);
    free(w1);
    free(m1);
    free(v1);
    free(m);
    free(v);
    free(gp);
    free(len);
    lmc_trainer_free(&a);
}

/* A backend table lacking one training op: a clear LMC_ERR_UNSUPPORTED
 * naming it, from the model (forward ops) or the trainer (the rest). */
static void test_missing_op(const struct lmc_backend *cpu, const struct lmc_token_data *d) {
    struct lmc_backend be = *cpu;
    struct lmc_tmodel tm;
    struct lmc_trainer tr;
    lmc_err err = {0};
    struct lmc_config c = tiny(0);
    be.attention_train = NULL;
    CHECK(lmc_tmodel_init(&tm, &c, &be, &err) == LMC_ERR_UNSUPPORTED &&
          strstr(err.msg, "attention_train"));
    be = *cpu;
    be.adamw = NULL;
    LMC_ASSERT(!lmc_tmodel_init(&tm, &c, &be, &err));
    struct lmc_train_opts o = opts(2, 1, false);
    lmc_status s = lmc_trainer_init(&tr, &tm, &be, d, d, &o, &err);
    CHECK_MSG(s == LMC_ERR_UNSUPPORTED && strstr(err.msg, "adamw"), "missing adamw: %s", err.msg);
    be = *cpu;
    be.matmul_bwd = NULL;
    LMC_ASSERT(!lmc_tmodel_init(&tm, &c, &be, &err));
    s = lmc_trainer_init(&tr, &tm, &be, d, d, &o, &err);
    CHECK_MSG(s == LMC_ERR_UNSUPPORTED && strstr(err.msg, "matmul_bwd"), "missing matmul_bwd: %s", err.msg);
}

/* The trainer decays by the spec table's roles (lmc_tparam_decays); they
 * must agree with the documented name rule (lmc_adamw_decays) on every
 * tensor, name the tensors we know, and decay everything when told to. */
static void test_decay_rule(const struct lmc_backend *be) {
    struct lmc_tmodel tm;
    lmc_err err = {0};
    for (int gpt2 = 0; gpt2 < 2; gpt2++) {
        struct lmc_config c = tiny(gpt2);
        LMC_ASSERT(!lmc_tmodel_init(&tm, &c, be, &err));
        int decayed = 0;
        for (int i = 0; i < tm.n_params; i++) {
            const struct lmc_tparam *p = &tm.params[i];
            bool got = lmc_tparam_decays(p, false);
            CHECK_MSG(got == lmc_adamw_decays(LMC_DECAY_DEFAULT, p->name, p->ndim), "decay rule for %s", p->name);
            CHECK(lmc_tparam_decays(p, true));
            decayed += got;
        }
        CHECK(decayed == (gpt2 ? 8 : 15));
        const char *yes = gpt2 ? "transformer.h.1.attn.c_attn.weight" : "model.layers.1.self_attn.q_proj.weight";
        const char *no[] = {gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight",
                            gpt2 ? "transformer.wpe.weight" : "model.norm.weight",
                            gpt2 ? "transformer.h.0.ln_1.bias" : "model.layers.0.self_attn.k_proj.bias",
                            gpt2 ? "transformer.ln_f.weight" : "model.layers.1.input_layernorm.weight"};
        int iy = lmc_tmodel_find(&tm, yes);
        CHECK_MSG(iy >= 0 && lmc_tparam_decays(&tm.params[iy], false), "%s decays", yes);
        for (int k = 0; k < 4; k++) {
            int ix = lmc_tmodel_find(&tm, no[k]);
            CHECK_MSG(ix >= 0 && !lmc_tparam_decays(&tm.params[ix], false), "%s does not decay", no[k]);
        }
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
    test_decay_rule(&be);
    test_missing_op(&be, &d);
    for (int gpt2 = 0; gpt2 < 2; gpt2++) {
        test_optimizer_ops(&be, &d, gpt2);
        test_accum(&be, &d, gpt2);
        test_resume(&be, &d, gpt2);
        test_loss_falls(&be, &d, gpt2);
    }
    lmc_token_data_close(&d);
    lmc_backend_cpu_free(&be);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish("test_train");
}
