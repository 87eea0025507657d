/* test_adamw.c — AdamW against torch.optim.AdamW's first step on every
 * fixture (model.safetensors + ref_grads -> ref_step, settings from
 * ref.json train.adamw, decay on every parameter), several steps against a
 * float64 re-implementation, the decay rule, gradient clipping and the
 * learning-rate schedules. */
#include "core/core.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/adamw.h"
#include "train/schedule.h"
#include "ops/backend.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static float *copy_f32(const struct lmc_st_tensor *t) {
    float *p = malloc((size_t)t->numel * sizeof *p);
    memcpy(p, t->data, (size_t)t->numel * sizeof *p);
    return p;
}

static void fixture_step(const char *name) {
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    lmc_err err = {0};
    char *json;
    size_t len;
    snprintf(path, sizeof path, "%s/ref.json", dir);
    if (lmc_file_read(path, 1 << 26, &json, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    cJSON *ref = cJSON_Parse(json);
    free(json);
    const cJSON *aw = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "train"), "adamw");
    CHECK(aw != NULL);
    if (!aw) {
        cJSON_Delete(ref);
        return;
    }
    struct lmc_adamw_cfg c;
    lmc_adamw_cfg_default(&c);
    c.lr = cJSON_GetObjectItem(aw, "lr")->valuedouble;
    c.beta1 = cJSON_GetObjectItem(aw, "beta1")->valuedouble;
    c.beta2 = cJSON_GetObjectItem(aw, "beta2")->valuedouble;
    c.eps = cJSON_GetObjectItem(aw, "eps")->valuedouble;
    c.weight_decay = cJSON_GetObjectItem(aw, "weight_decay")->valuedouble;
    cJSON_Delete(ref);

    struct lmc_st model = {0}, grads = {0}, step = {0};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_MSG(!lmc_st_open_file(&model, path, &err), "%s", err.msg);
    snprintf(path, sizeof path, "%s/ref_grads.safetensors", dir);
    CHECK_MSG(!lmc_st_open_file(&grads, path, &err), "%s", err.msg);
    snprintf(path, sizeof path, "%s/ref_step.safetensors", dir);
    CHECK_MSG(!lmc_st_open_file(&step, path, &err), "%s", err.msg);
    CHECK(grads.n_tensors > 0 && grads.n_tensors == step.n_tensors);
    double worst = 0;
    const char *worst_name = "";
    for (int64_t i = 0; i < grads.n_tensors; i++) {
        const struct lmc_st_tensor *g = &grads.tensors[i];
        const struct lmc_st_tensor *p = lmc_st_find(&model, g->name), *r = lmc_st_find(&step, g->name);
        CHECK_MSG(p && r && p->numel == g->numel && r->numel == g->numel, "%s", g->name);
        if (!p || !r || p->numel != g->numel || r->numel != g->numel) continue;
        CHECK(p->dtype == LMC_DTYPE_F32 && g->dtype == LMC_DTYPE_F32 && r->dtype == LMC_DTYPE_F32);
        float *pp = copy_f32(p), *gg = copy_f32(g), *rr = copy_f32(r);
        float *m = calloc((size_t)g->numel, sizeof *m), *v = calloc((size_t)g->numel, sizeof *v);
        lmc_adamw_update(&c, 1, c.lr, lmc_adamw_decays(LMC_DECAY_ALL, g->name, g->ndim), pp, gg, m, v, g->numel);
        double num = 0, den = 0;
        for (int64_t k = 0; k < g->numel; k++) {
            double d = fabs((double)pp[k] - rr[k]);
            if (d > num || d != d) num = d;
            if (fabs(rr[k]) > den) den = fabs(rr[k]);
        }
        double rel = num / (den > 1e-30 ? den : 1e-30);
        CHECK_MSG(rel <= 1e-6, "%s %s: relative error %.3g", name, g->name, rel);
        if (rel > worst) {
            worst = rel;
            worst_name = g->name;
        }
        free(pp); free(gg); free(rr); free(m); free(v);
    }
    printf("%s: %lld tensors, worst relative error %.3g (%s)\n", name, (long long)grads.n_tensors, worst,
           worst_name);
    lmc_st_free(&model);
    lmc_st_free(&grads);
    lmc_st_free(&step);
}

/* Several steps with a varying lr against a float64 AdamW. */
static void multi_step(void) {
    enum { N = 1031, STEPS = 7 };
    uint64_t rng = 42;
    float p[N], m[N] = {0}, v[N] = {0}, g[N];
    double pd[N], md[N] = {0}, vd[N] = {0};
    for (int i = 0; i < N; i++) pd[i] = p[i] = test_rand(&rng);
    struct lmc_adamw_cfg c = {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    for (int s = 1; s <= STEPS; s++) {
        double lr = c.lr * s / STEPS;
        for (int i = 0; i < N; i++) g[i] = test_rand(&rng) * (i % 3 ? 1.0f : 1e-3f);
        lmc_adamw_update(&c, s, lr, true, p, g, m, v, N);
        for (int i = 0; i < N; i++) {
            pd[i] *= 1 - lr * c.weight_decay;
            md[i] = c.beta1 * md[i] + (1 - c.beta1) * g[i];
            vd[i] = c.beta2 * vd[i] + (1 - c.beta2) * (double)g[i] * g[i];
            double mh = md[i] / (1 - pow(c.beta1, s)), vh = vd[i] / (1 - pow(c.beta2, s));
            pd[i] -= lr * mh / (sqrt(vh) + c.eps);
        }
    }
    CHECK_MSG(test_rel_err_f32_f64(p, pd, N) < 1e-6, "multi-step rel err %g", test_rel_err_f32_f64(p, pd, N));
    /* decay off leaves the decay term out */
    float q = 2.0f, gq = 0.0f, mq = 0, vq = 0;
    lmc_adamw_update(&c, 1, 0.5, false, &q, &gq, &mq, &vq, 1);
    CHECK(q == 2.0f);
    lmc_adamw_update(&c, 1, 0.5, true, &q, &gq, &mq, &vq, 1);
    CHECK(fabsf(q - 2.0f * (1 - 0.5f * 0.1f)) < 1e-6f);
}

/* lmc_adamw_apply (the CPU's element-wise AdamW) is backend.h's formula with
 * every operation rounded on its own (volatile stores keep the compiler from
 * contracting the reference into FMAs), bit for bit, on odd lengths (the
 * 16-lane body and its masked tail, or the AVX2 8-lane body and its tail) and with tiny and zero gradients. */
static void apply_uncontracted(void) {
    static const int64_t ns[] = {1, 15, 17, 1003};
    uint64_t rng = 99;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        int64_t n = ns[ni];
        float *p = malloc((size_t)n * 4), *g = malloc((size_t)n * 4), *m = malloc((size_t)n * 4),
              *v = malloc((size_t)n * 4), *pr = malloc((size_t)n * 4), *mr = malloc((size_t)n * 4),
              *vr = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) {
            p[i] = test_rand(&rng), g[i] = i % 7 == 3 ? 0.0f : i % 5 == 1 ? 1e-20f : 0.1f * test_rand(&rng);
            m[i] = 0.01f * test_rand(&rng), v[i] = 1e-4f * fabsf(test_rand(&rng));
            pr[i] = p[i], mr[i] = m[i], vr[i] = v[i];
        }
        struct lmc_adamw_step st = {.step_size = 3.1e-3f, .decay_mul = 0.9997f, .beta2 = 0.95f,
                                    .one_minus_b1 = 0.1f, .one_minus_b2 = 0.05f, .bc2_sqrt = 0.31f,
                                    .eps = 1e-8f, .grad_scale = 0.37f};
        lmc_adamw_apply(p, g, m, v, n, &st);
        int same = 1;
        for (int64_t i = 0; i < n; i++) {
            volatile float gi = g[i] * st.grad_scale, pi = pr[i] * st.decay_mul;
            volatile float t1 = st.one_minus_b1 * (gi - mr[i]);
            volatile float mi = mr[i] + t1;
            volatile float t2 = vr[i] * st.beta2, t3 = st.one_minus_b2 * gi;
            volatile float t4 = t3 * gi;
            volatile float vi = t2 + t4;
            volatile float sq = sqrtf(vi);
            volatile float den = sq / st.bc2_sqrt + st.eps;
            volatile float q = mi / den;
            volatile float t5 = st.step_size * q;
            volatile float pn = pi - t5;
            float a = pn, b = mi, c = vi;
            same &= !memcmp(&p[i], &a, 4) && !memcmp(&m[i], &b, 4) && !memcmp(&v[i], &c, 4);
        }
#if defined(__AVX512F__) || defined(__AVX2__)
        CHECK_MSG(same, "adamw n %lld: not the uncontracted formula's bits", (long long)n);
#else
        (void)same; /* the scalar loop may contract into FMAs */
#endif
        free(p), free(g), free(m), free(v), free(pr), free(mr), free(vr);
    }
}

/* The backend's adamw op (CPU) equals lmc_adamw_update bit for bit, with
 * and without decay, and with a clipping factor folded in; sumsq is the
 * float64 sum of squares and does not depend on the thread count. */
static void backend_ops(void) {
    enum { N = 200003, STEPS = 3 };
    struct lmc_backend b1, b2;
    lmc_err err;
    CHECK(lmc_backend_cpu_init(&b1, 1, &err) == LMC_OK);
    CHECK(lmc_backend_cpu_init(&b2, 2, &err) == LMC_OK);
    float *p = malloc(N * 4), *m = calloc(N, 4), *v = calloc(N, 4), *g = malloc(N * 4);
    float *p2 = malloc(N * 4), *m2 = calloc(N, 4), *v2 = calloc(N, 4), *gs = malloc(N * 4);
    uint64_t rng = 7;
    for (int i = 0; i < N; i++) p2[i] = p[i] = test_rand(&rng);
    struct lmc_adamw_cfg c = {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    int same = 1;
    for (int s = 1; s <= STEPS; s++) {
        bool decay = s != 2;
        float scale = s == 3 ? 0.37f : 1.0f;
        for (int i = 0; i < N; i++) gs[i] = (g[i] = test_rand(&rng)) * scale;
        struct lmc_adamw_step st;
        lmc_adamw_step_make(&c, s, c.lr / s, decay, scale, &st);
        b1.adamw(b1.ctx, p, g, m, v, N, &st);
        lmc_adamw_update(&c, s, c.lr / s, decay, p2, gs, m2, v2, N);
        same &= !memcmp(p, p2, N * 4) && !memcmp(m, m2, N * 4) && !memcmp(v, v2, N * 4);
    }
    CHECK_MSG(same, "backend adamw differs from lmc_adamw_update");
    double want = 0;
    for (int i = 0; i < N; i++) want += (double)g[i] * g[i];
    double s1 = b1.sumsq(b1.ctx, g, N), s2 = b2.sumsq(b2.ctx, g, N);
    CHECK_MSG(fabs(s1 - want) <= 1e-12 * want, "sumsq %.17g want %.17g", s1, want);
    CHECK(s1 == s2);
    CHECK(b1.sumsq(b1.ctx, g, 0) == 0.0);
    b2.zero(b2.ctx, g + 5, 7 * 4);
    CHECK(g[4] != 0 && g[5] == 0 && g[11] == 0 && g[12] != 0);
    free(p); free(m); free(v); free(g); free(p2); free(m2); free(v2); free(gs);
    lmc_backend_cpu_free(&b1);
    lmc_backend_cpu_free(&b2);
}

static void decay_rule(void) {
    CHECK(lmc_adamw_decays(LMC_DECAY_DEFAULT, "model.layers.0.self_attn.q_proj.weight", 2));
    CHECK(!lmc_adamw_decays(LMC_DECAY_DEFAULT, "model.layers.0.input_layernorm.weight", 1));
    CHECK(!lmc_adamw_decays(LMC_DECAY_DEFAULT, "transformer.h.0.attn.c_attn.bias", 1));
    CHECK(!lmc_adamw_decays(LMC_DECAY_DEFAULT, "model.embed_tokens.weight", 2));
    CHECK(!lmc_adamw_decays(LMC_DECAY_DEFAULT, "transformer.wte.weight", 2));
    CHECK(!lmc_adamw_decays(LMC_DECAY_DEFAULT, "transformer.wpe.weight", 2));
    CHECK(lmc_adamw_decays(LMC_DECAY_DEFAULT, "lm_head.weight", 2));
    CHECK(lmc_adamw_decays(LMC_DECAY_ALL, "model.norm.weight", 1));
}

static void clipping(void) {
    float a[3] = {3, 0, 0}, b[2] = {0, 4};
    float *g[2] = {a, b};
    int64_t n[2] = {3, 2};
    CHECK(fabs(lmc_grad_global_norm(g, n, 2) - 5.0) < 1e-12);
    double norm = lmc_grad_clip(g, n, 2, 10.0); /* below the limit: untouched */
    CHECK(norm == 5.0 && a[0] == 3 && b[1] == 4);
    norm = lmc_grad_clip(g, n, 2, 1.0);
    CHECK(norm == 5.0);
    CHECK(fabs(lmc_grad_global_norm(g, n, 2) - 1.0) < 1e-6);
    CHECK(fabsf(a[0] - 0.6f) < 1e-6f && fabsf(b[1] - 0.8f) < 1e-6f);
    a[1] = NAN;
    norm = lmc_grad_clip(g, n, 2, 1.0);
    CHECK(isnan(norm) && fabsf(a[0] - 0.6f) < 1e-6f); /* non-finite: reported, not scaled */
}

static void schedules(void) {
    lmc_err err = {0};
    struct lmc_schedule s = {.kind = LMC_SCHED_COSINE, .lr_max = 1e-3, .lr_min = 1e-4, .warmup = 10, .total = 110};
    CHECK(!lmc_schedule_check(&s, &err));
    CHECK(fabs(lmc_schedule_lr(&s, 0) - 1e-4) < 1e-15);  /* (0+1)/10 of peak */
    CHECK(fabs(lmc_schedule_lr(&s, 9) - 1e-3) < 1e-15);  /* end of warmup */
    CHECK(fabs(lmc_schedule_lr(&s, 10) - 1e-3) < 1e-15); /* cosine starts at peak */
    CHECK(fabs(lmc_schedule_lr(&s, 109) - 1e-4) < 1e-15);
    CHECK(fabs(lmc_schedule_lr(&s, 500) - 1e-4) < 1e-15);
    double mid = lmc_schedule_lr(&s, 10 + 99 / 2);
    CHECK(mid > 5.4e-4 && mid < 5.6e-4);
    for (int64_t i = 10; i < 109; i++) CHECK(lmc_schedule_lr(&s, i + 1) <= lmc_schedule_lr(&s, i));
    s.kind = LMC_SCHED_LINEAR;
    s.warmup = 0;
    s.total = 11;
    CHECK(fabs(lmc_schedule_lr(&s, 0) - 1e-3) < 1e-15);
    CHECK(fabs(lmc_schedule_lr(&s, 5) - 5.5e-4) < 1e-15);
    CHECK(fabs(lmc_schedule_lr(&s, 10) - 1e-4) < 1e-15);
    s = (struct lmc_schedule){.kind = LMC_SCHED_WSD, .lr_max = 1.0, .lr_min = 0.0, .warmup = 2, .total = 20,
                              .decay_steps = 4};
    CHECK(!lmc_schedule_check(&s, &err));
    CHECK(lmc_schedule_lr(&s, 0) == 0.5 && lmc_schedule_lr(&s, 1) == 1.0);
    CHECK(lmc_schedule_lr(&s, 15) == 1.0);
    CHECK(lmc_schedule_lr(&s, 16) == 0.75 && lmc_schedule_lr(&s, 17) == 0.5);
    CHECK(lmc_schedule_lr(&s, 19) == 0.0);
    s.kind = LMC_SCHED_CONSTANT;
    CHECK(lmc_schedule_lr(&s, 19) == 1.0);
    enum lmc_sched_kind k;
    CHECK(lmc_schedule_kind_parse("wsd", &k) && k == LMC_SCHED_WSD);
    CHECK(!lmc_schedule_kind_parse("step", &k));
    s.warmup = 30;
    CHECK(lmc_schedule_check(&s, &err) == LMC_ERR_ARG && strstr(err.msg, "warmup"));
    s.warmup = 2;
    s.lr_min = 2.0;
    CHECK(lmc_schedule_check(&s, &err) == LMC_ERR_ARG && strstr(err.msg, "min lr"));
}

int main(void) {
    fixture_step("gpt2-tiny");
    fixture_step("llama-tiny");
    fixture_step("qwen2-tiny");
    multi_step();
    backend_ops();
    apply_uncontracted();
    decay_rule();
    clipping();
    schedules();
    return test_finish("test_adamw");
}
