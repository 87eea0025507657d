/* test_mamba_parity.c — Mamba and Mamba-2 composed from the SSM ops
 * (src/ssm/) against transformers' float64 references
 * (tests/fixtures/mamba-tiny, mamba2-tiny):
 *   - prompt logits (fp32, max|err| / max|ref| <= 1e-4), prefill from a zero state;
 *   - greedy continuations (24 tokens, exact) through prefill + decode
 *     steps with the recurrent state;
 *   - batched decode of all prompts at once from a slot pool in scrambled
 *     slot order: the same ids as one at a time;
 *   - chunked prefill (a prompt in two calls through the state) == one
 *     prefill, at every split point; a state snapshot (lmc_mamba_state_copy)
 *     continued with two different suffixes == their full prefills;
 *   - BF16 weights (every tensor of the fixture converted): logits within
 *     2e-2 of the reference;
 *   - the state bytes per sequence;
 *   - training: ref.json's batch (B=2, T=32): the loss and every
 *     parameter's gradient (ref_grads.safetensors) through the backward
 *     ops (max|err| / max|ref| <= 1e-4 per tensor), then one AdamW step
 *     (ref.json's settings, decay on every tensor) from those gradients
 *     against ref_step.safetensors (1e-4 per tensor);
 *   - bad input: inconsistent configs, missing A_log / D, wrong shapes,
 *     bad time_step_limit: clear errors naming the field or tensor. */
#include "test.h"
#include "ssm/mamba.h"
#include "core/core.h"
#include "infer/sampler.h"
#include "io/safetensors.h"
#include "train/adamw.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define NEW_TOKENS 24

struct prompt {
    int32_t ids[256], want[NEW_TOKENS];
    int64_t n, n_want;
};

static int load_prompts(const char *dir, struct prompt *p, int max) {
    char path[512], *json;
    size_t len;
    lmc_err err;
    snprintf(path, sizeof path, "%s/ref.json", dir);
    if (lmc_file_read(path, 1 << 24, &json, &len, &err)) return 0;
    cJSON *ref = cJSON_Parse(json);
    free(json);
    int n = 0;
    const cJSON *ps = cJSON_GetObjectItem(ref, "prompts"), *it;
    cJSON_ArrayForEach(it, ps) {
        if (n == max) break;
        const cJSON *ids = cJSON_GetObjectItem(it, "ids"), *g = cJSON_GetObjectItem(it, "greedy_new_ids"), *v;
        p[n].n = p[n].n_want = 0;
        cJSON_ArrayForEach(v, ids) if (p[n].n < 256) p[n].ids[p[n].n++] = (int32_t)v->valueint;
        cJSON_ArrayForEach(v, g) if (p[n].n_want < NEW_TOKENS) p[n].want[p[n].n_want++] = (int32_t)v->valueint;
        n++;
    }
    cJSON_Delete(ref);
    return n;
}

static void test_fixture(struct lmc_backend *be, const char *name) {
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    struct lmc_mamba_model m;
    lmc_err err;
    lmc_status s = lmc_mamba_load(&m, dir, be, &err);
    CHECK_MSG(s == LMC_OK, "%s: %s", name, err.msg);
    if (s) return;
    const int64_t V = m.cfg.vocab_size;
    struct prompt P[3];
    int np = load_prompts(dir, P, 3);
    CHECK(np == 3);
    struct lmc_st ref;
    snprintf(path, sizeof path, "%s/ref_logits.safetensors", dir);
    CHECK_MSG(!lmc_st_open_file(&ref, path, &err), "%s", err.msg);
    double worst = 0;
    for (int i = 0; i < np; i++) {
        char key[32];
        snprintf(key, sizeof key, "prompt%d", i);
        const struct lmc_st_tensor *t = lmc_st_find(&ref, key);
        CHECK(t && t->numel == P[i].n * V);
        if (!t) continue;
        float *lg = malloc((size_t)(P[i].n * V) * sizeof *lg);
        CHECK(!lmc_mamba_forward(&m, NULL, NULL, P[i].ids, 1, P[i].n, lg, &err));
        double num = 0, den = 0;
        const float *r = t->data;
        for (int64_t k = 0; k < P[i].n * V; k++) {
            num = fmax(num, fabs((double)lg[k] - r[k]));
            den = fmax(den, fabs((double)r[k]));
            if (lg[k] != lg[k]) num = INFINITY;
        }
        worst = fmax(worst, num / den);
        free(lg);
    }
    CHECK_MSG(worst <= 1e-4, "%s logits: rel err %.3e", name, worst);
    printf("  %s: prompt logits max rel err %.2e\n", name, worst);
    lmc_st_free(&ref);

    /* greedy: prefill then decode steps through the state, one prompt at a time */
    struct lmc_mamba_state st;
    CHECK(!lmc_mamba_state_init(&st, &m, 3, &err));
    float *lg = malloc((size_t)(256 * V) * sizeof *lg);
    int exact = 0;
    for (int i = 0; i < np; i++) {
        lmc_mamba_state_reset(&st, &m, 0);
        CHECK(!lmc_mamba_forward(&m, &st, NULL, P[i].ids, 1, P[i].n, lg, &err));
        int32_t tok = lmc_argmax(lg + (P[i].n - 1) * V, V), got[NEW_TOKENS];
        int ok = 1;
        for (int k = 0; k < P[i].n_want; k++) {
            got[k] = tok;
            ok &= tok == P[i].want[k];
            CHECK(!lmc_mamba_forward(&m, &st, NULL, &tok, 1, 1, lg, &err));
            tok = lmc_argmax(lg, V);
        }
        CHECK_MSG(ok, "%s prompt %d greedy differs (first got %d want %d)", name, i, got[0], P[i].want[0]);
        exact += ok;
    }
    printf("  %s: greedy %d/%d prompts exact (%d tokens each)\n", name, exact, np, NEW_TOKENS);
    /* batched decode from scrambled slots: every prompt prefilled into its slot,
     * then all decoded together */
    const int32_t slot_of[3] = {2, 0, 1};
    int32_t tok[3], gen[3][NEW_TOKENS];
    for (int i = 0; i < np; i++) {
        lmc_mamba_state_reset(&st, &m, slot_of[i]);
        CHECK(!lmc_mamba_forward(&m, &st, &slot_of[i], P[i].ids, 1, P[i].n, lg, &err));
        tok[i] = lmc_argmax(lg + (P[i].n - 1) * V, V);
    }
    for (int k = 0; k < NEW_TOKENS; k++) {
        for (int i = 0; i < np; i++) gen[i][k] = tok[i];
        CHECK(!lmc_mamba_forward(&m, &st, slot_of, tok, np, 1, lg, &err));
        for (int i = 0; i < np; i++) tok[i] = lmc_argmax(lg + i * V, V);
    }
    int same = 1;
    for (int i = 0; i < np; i++) same &= !memcmp(gen[i], P[i].want, sizeof gen[i]);
    CHECK_MSG(same, "%s: batched decode from slots differs", name);
    /* chunked prefill at every split point of prompt 0 == one prefill */
    {
        const int64_t n = P[0].n;
        float *full = malloc((size_t)(n * V) * 4), *part = malloc((size_t)(n * V) * 4);
        CHECK(!lmc_mamba_forward(&m, NULL, NULL, P[0].ids, 1, n, full, &err));
        double worst_split = 0;
        for (int64_t k = 1; k < n; k++) {
            lmc_mamba_state_reset(&st, &m, 1);
            const int32_t one = 1;
            CHECK(!lmc_mamba_forward(&m, &st, &one, P[0].ids, 1, k, part, &err));
            CHECK(!lmc_mamba_forward(&m, &st, &one, P[0].ids + k, 1, n - k, part + k * V, &err));
            double num = 0, den = 0;
            for (int64_t i = 0; i < n * V; i++)
                num = fmax(num, fabs((double)part[i] - full[i])), den = fmax(den, fabs((double)full[i]));
            worst_split = fmax(worst_split, num / den);
        }
        CHECK_MSG(worst_split <= 1e-5, "%s chunked prefill: %.3e", name, worst_split);
        /* snapshot after a prefix of 9 tokens, continued two ways */
        const int64_t pre = 9;
        lmc_mamba_state_reset(&st, &m, 0);
        CHECK(!lmc_mamba_forward(&m, &st, NULL, P[0].ids, 1, pre, part, &err));
        CHECK(!lmc_mamba_state_copy(&st, &m, 2, 0, &err));
        CHECK(lmc_mamba_state_copy(&st, &m, 3, 0, &err) == LMC_ERR_ARG);
        int32_t alt[64];
        const int64_t na = P[1].n < 64 ? P[1].n : 64;
        memcpy(alt, P[0].ids, (size_t)pre * 4);
        memcpy(alt + pre, P[1].ids, (size_t)(na - pre > 0 ? na - pre : 0) * 4);
        const int32_t two = 2;
        float *ra = malloc((size_t)(na * V) * 4);
        CHECK(!lmc_mamba_forward(&m, &st, NULL, P[0].ids + pre, 1, n - pre, part, &err)); /* slot 0: prompt 0 */
        CHECK(!lmc_mamba_forward(&m, &st, &two, alt + pre, 1, na - pre, ra, &err));       /* slot 2: fork */
        double es = 0, den = 0;
        for (int64_t i = 0; i < (n - pre) * V; i++)
            es = fmax(es, fabs((double)part[i] - full[pre * V + i])), den = fmax(den, fabs((double)full[i]));
        float *fa = malloc((size_t)(na * V) * 4);
        CHECK(!lmc_mamba_forward(&m, NULL, NULL, alt, 1, na, fa, &err));
        for (int64_t i = 0; i < (na - pre) * V; i++) es = fmax(es, fabs((double)ra[i] - fa[pre * V + i]));
        CHECK_MSG(es / den <= 1e-5, "%s state snapshot: %.3e", name, es / den);
        printf("  %s: chunked prefill at every split %.2e; snapshot forked two ways %.2e\n", name, worst_split,
               es / den);
        free(full), free(part), free(ra), free(fa);
    }
    free(lg);
    lmc_mamba_state_free(&st, &m);

    /* state bytes per sequence: L * ((K-1) * conv_dim + D * N) floats */
    const struct lmc_mamba_config *c = &m.cfg;
    size_t want = (size_t)c->num_layers * 4 *
                  (size_t)((c->conv_kernel - 1) * c->conv_dim + c->d_inner * c->state_size);
    CHECK(lmc_mamba_state_bytes(c) == want);
    printf("  %s: recurrent state %zu bytes per sequence\n", name, lmc_mamba_state_bytes(c));
    lmc_mamba_free(&m);
}

/* ---- BF16 weights: every tensor converted, logits within 2e-2 ---- */
static void test_bf16(struct lmc_backend *be, const char *fixture) {
    char src[256], dir[] = "/tmp/lmc_mamba_bf16XXXXXX", path[512];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    lmc_err err;
    struct lmc_st st;
    CHECK(!lmc_st_open_dir(&st, src, &err));
    struct lmc_st_write_tensor *w = calloc((size_t)st.n_tensors, sizeof *w);
    uint16_t **bufs = calloc((size_t)st.n_tensors, sizeof *bufs);
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const struct lmc_st_tensor *t = &st.tensors[i];
        bufs[i] = malloc((size_t)t->numel * 2);
        for (int64_t k = 0; k < t->numel; k++) bufs[i][k] = lmc_f32_to_bf16(((const float *)t->data)[k]);
        w[i] = (struct lmc_st_write_tensor){t->name, LMC_DTYPE_BF16, t->ndim, {0}, bufs[i]};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(!lmc_st_write(path, w, st.n_tensors, NULL, 0, &err));
    char *cfg;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", src);
    CHECK(!lmc_file_read(path, 1 << 20, &cfg, &len, &err));
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    fwrite(cfg, 1, len, f);
    fclose(f);
    free(cfg);
    struct lmc_mamba_model m;
    lmc_status s = lmc_mamba_load(&m, dir, be, &err);
    CHECK_MSG(s == LMC_OK, "%s bf16: %s", fixture, err.msg);
    if (!s) {
        struct prompt P[1];
        CHECK(load_prompts(src, P, 1) == 1);
        struct lmc_st ref;
        char rpath[512];
        snprintf(rpath, sizeof rpath, "%s/ref_logits.safetensors", src);
        CHECK(!lmc_st_open_file(&ref, rpath, &err));
        const struct lmc_st_tensor *t = lmc_st_find(&ref, "prompt0");
        const int64_t V = m.cfg.vocab_size;
        float *lg = malloc((size_t)(P[0].n * V) * 4);
        CHECK(!lmc_mamba_forward(&m, NULL, NULL, P[0].ids, 1, P[0].n, lg, &err));
        double num = 0, den = 0;
        for (int64_t k = 0; t && k < P[0].n * V; k++)
            num = fmax(num, fabs((double)lg[k] - ((const float *)t->data)[k])),
            den = fmax(den, fabs((double)((const float *)t->data)[k]));
        CHECK_MSG(t && num / den <= 2e-2, "%s bf16 logits: %.3e", fixture, num / den);
        printf("  %s with BF16 weights: logits rel err %.2e (tol 2e-2)\n", fixture, num / den);
        free(lg);
        lmc_st_free(&ref);
        lmc_mamba_free(&m);
    }
    for (int64_t i = 0; i < st.n_tensors; i++) free(bufs[i]);
    free(bufs), free(w);
    lmc_st_free(&st);
    snprintf(path, sizeof path, "%s/config.json", dir); /* the temporary copy's files only */
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

/* ---- training: loss and gradients ---- */
static int64_t read_ids(const cJSON *rows, int32_t *out, int64_t max) {
    int64_t n = 0;
    const cJSON *row, *v;
    cJSON_ArrayForEach(row, rows) cJSON_ArrayForEach(v, row) if (n < max) out[n++] = (int32_t)v->valueint;
    return n;
}

static void test_train(struct lmc_backend *be, const char *name) {
    char dir[256], path[512], *json;
    size_t len;
    lmc_err err;
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    struct lmc_mamba_model m;
    if (lmc_mamba_load(&m, dir, be, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    snprintf(path, sizeof path, "%s/ref.json", dir);
    CHECK(!lmc_file_read(path, 1 << 24, &json, &len, &err));
    cJSON *ref = cJSON_Parse(json);
    free(json);
    const cJSON *tr = cJSON_GetObjectItem(ref, "train");
    const int64_t B = cJSON_GetObjectItem(tr, "B")->valueint, T = cJSON_GetObjectItem(tr, "T")->valueint;
    const double want_loss = cJSON_GetObjectItem(tr, "loss")->valuedouble;
    const cJSON *aw = cJSON_GetObjectItem(tr, "adamw");
    struct lmc_adamw_cfg ac;
    lmc_adamw_cfg_default(&ac);
    ac.lr = cJSON_GetObjectItem(aw, "lr")->valuedouble;
    ac.beta1 = cJSON_GetObjectItem(aw, "beta1")->valuedouble;
    ac.beta2 = cJSON_GetObjectItem(aw, "beta2")->valuedouble;
    ac.eps = cJSON_GetObjectItem(aw, "eps")->valuedouble;
    ac.weight_decay = cJSON_GetObjectItem(aw, "weight_decay")->valuedouble;
    int32_t *in = malloc((size_t)(B * T) * 4), *tg = malloc((size_t)(B * T) * 4);
    CHECK(read_ids(cJSON_GetObjectItem(tr, "inputs"), in, B * T) == B * T);
    CHECK(read_ids(cJSON_GetObjectItem(tr, "targets"), tg, B * T) == B * T);
    cJSON_Delete(ref);
    struct lmc_mamba_grads g;
    double loss = 0;
    CHECK(!lmc_mamba_grads_init(&g, &m, &err));
    CHECK_MSG(!lmc_mamba_loss_backward(&m, in, tg, B, T, &loss, &g, &err), "%s", err.msg);
    const double el = fabs(loss - want_loss) / fabs(want_loss);
    CHECK_MSG(el <= 1e-5, "%s loss %.8f vs %.8f", name, loss, want_loss);
    struct lmc_st rg, rs, mw;
    snprintf(path, sizeof path, "%s/ref_grads.safetensors", dir);
    CHECK(!lmc_st_open_file(&rg, path, &err));
    snprintf(path, sizeof path, "%s/ref_step.safetensors", dir);
    CHECK(!lmc_st_open_file(&rs, path, &err));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(!lmc_st_open_file(&mw, path, &err));
    double worst_step = 0;
    double worst = 0;
    const char *wname = "";
    int n_cmp = 0;
    /* our gradients by name (lmc_mamba_grads_params): one per reference tensor */
    const int64_t np = lmc_mamba_grads_params(&m, &g, NULL);
    struct lmc_mamba_param *prm = calloc((size_t)np, sizeof *prm);
    lmc_mamba_grads_params(&m, &g, prm);
    CHECK_MSG(np == rg.n_tensors, "%s: %lld gradients, the reference has %lld", name, (long long)np,
              (long long)rg.n_tensors);
    for (int64_t i = 0; i < rg.n_tensors; i++) {
        const struct lmc_st_tensor *t = &rg.tensors[i];
        const float *got = NULL;
        int64_t stride = 0, cols = 1;
        for (int64_t k = 0; k < np; k++)
            if (!strcmp(prm[k].name, t->name) && prm[k].rows * prm[k].cols == t->numel)
                got = prm[k].grad, stride = prm[k].ld, cols = prm[k].cols;
        CHECK_MSG(got != NULL, "%s: no gradient for %s", name, t->name);
        if (!got || t->dtype != LMC_DTYPE_F32) continue;
        const float *r = t->data;
        double num = 0, den = 0;
        for (int64_t k = 0; k < t->numel; k++) {
            const float v = got[(k / cols) * stride + k % cols];
            num = fmax(num, fabs((double)v - r[k]));
            den = fmax(den, fabs((double)r[k]));
            if (v != v) num = INFINITY;
        }
        const double e = num / (den > 0 ? den : 1);
        CHECK_MSG(e <= 1e-4, "%s grad %s: rel err %.3e", name, t->name, e);
        /* one AdamW step from our gradient vs transformers' step */
        const struct lmc_st_tensor *p0 = lmc_st_find(&mw, t->name), *p1 = lmc_st_find(&rs, t->name);
        CHECK(p0 && p1 && p0->numel == t->numel && p1->numel == t->numel);
        if (p0 && p1 && p0->numel == t->numel && p1->numel == t->numel) {
            float *pp = malloc((size_t)t->numel * 4), *gg = malloc((size_t)t->numel * 4);
            float *mm = calloc((size_t)t->numel, 4), *vv = calloc((size_t)t->numel, 4);
            memcpy(pp, p0->data, (size_t)t->numel * 4);
            for (int64_t k = 0; k < t->numel; k++) gg[k] = got[(k / cols) * stride + k % cols];
            lmc_adamw_update(&ac, 1, ac.lr, true, pp, gg, mm, vv, t->numel);
            double sn = 0, sd = 0;
            for (int64_t k = 0; k < t->numel; k++) {
                const double ref1 = ((const float *)p1->data)[k];
                sn = fmax(sn, fabs((double)pp[k] - ref1)), sd = fmax(sd, fabs(ref1));
            }
            CHECK_MSG(sn / sd <= 1e-4, "%s adamw step %s: rel err %.3e", name, t->name, sn / sd);
            worst_step = fmax(worst_step, sn / sd);
            free(pp), free(gg), free(mm), free(vv);
        }
        if (e > worst) worst = e, wname = t->name;
        n_cmp++;
    }
    printf("  %s: loss %.7f (ref %.7f, rel %.1e); %d gradients, worst rel err %.2e (%s); AdamW step %.2e\n",
           name, loss, want_loss, el, n_cmp, worst, wname, worst_step);
    free(prm);
    lmc_st_free(&rg);
    lmc_st_free(&rs);
    lmc_st_free(&mw);
    lmc_mamba_grads_free(&g, &m);
    free(in), free(tg);
    lmc_mamba_free(&m);
}

/* ---- bad input ---- */
static const char *M2_CFG =
    "{\"model_type\": \"mamba2\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
    " \"state_size\": 16, \"expand\": 2, \"num_heads\": 8, \"head_dim\": 16, \"n_groups\": 1,"
    " \"chunk_size\": 16, \"time_step_limit\": [0.0, {\"__float__\": \"Infinity\"}]}";

static void expect_cfg_error(const char *json, const char *needle) {
    struct lmc_mamba_config c;
    lmc_err err;
    memset(&err, 0, sizeof err);
    lmc_status s = lmc_mamba_config_parse(&c, json, strlen(json), "config.json", &err);
    CHECK_MSG(s != LMC_OK && strstr(err.msg, needle), "want an error with '%s', got %d '%s'", needle,
              (int)s, err.msg);
}

static char *replace(const char *s, const char *from, const char *to) {
    const char *p = strstr(s, from);
    LMC_ASSERT(p);
    char *o = malloc(strlen(s) + strlen(to) + 1);
    memcpy(o, s, (size_t)(p - s));
    strcpy(o + (p - s), to);
    strcat(o, p + strlen(from));
    return o;
}

static void test_config_errors(void) {
    struct lmc_mamba_config c;
    lmc_err err;
    CHECK(!lmc_mamba_config_parse(&c, M2_CFG, strlen(M2_CFG), "config.json", &err));
    CHECK(c.kind == LMC_MAMBA_2 && c.d_inner == 128 && c.conv_dim == 160 && c.in_proj_dim == 296);
    CHECK(c.dt_min == 0 && isinf(c.dt_max));
    struct { const char *from, *to, *needle; } bad[] = {
        {"\"num_heads\": 8", "\"num_heads\": 7", "num_heads (7) * head_dim (16)"},
        {"\"expand\": 2", "\"expand\": 3", "!= expand (3)"},
        {"\"n_groups\": 1", "\"n_groups\": 3", "not a multiple of n_groups"},
        {"\"state_size\": 16", "\"state_size\": -1", "'state_size'"},
        {"\"hidden_size\": 64", "\"hidden_size\": \"64\"", "'hidden_size' is a string"},
        {"[0.0, {\"__float__\": \"Infinity\"}]", "[1.0, 0.5]", "time_step_limit"},
        {"[0.0, {\"__float__\": \"Infinity\"}]", "[0.0]", "time_step_limit"},
        {"\"mamba2\"", "\"mamba3\"", "model_type 'mamba3'"},
        {", \"num_hidden_layers\": 2", "", "missing field 'num_hidden_layers'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *j = replace(M2_CFG, bad[i].from, bad[i].to);
        expect_cfg_error(j, bad[i].needle);
        free(j);
    }
    expect_cfg_error("{\"model_type\": \"mamba\", \"vocab_size\": 5, \"hidden_size\": 4, "
                     "\"num_hidden_layers\": 1, \"intermediate_size\": 9}",
                     "intermediate_size 9 != expand (2) * hidden_size (4)");
    { /* Python's bare Infinity (transformers 4 configs), outside strings only */
        char *j = replace(M2_CFG, "[0.0, {\"__float__\": \"Infinity\"}]", "[0.5, Infinity], \"note\": \"NaN Infinity\"");
        CHECK(!lmc_mamba_config_parse(&c, j, strlen(j), "config.json", &err));
        CHECK(c.dt_min == 0.5 && isinf(c.dt_max) && c.dt_max > 0);
        free(j);
        j = replace(M2_CFG, "[0.0, {\"__float__\": \"Infinity\"}]", "[NaN, Infinity]");
        expect_cfg_error(j, "time_step_limit");
        free(j);
        j = replace(M2_CFG, "[0.0, {\"__float__\": \"Infinity\"}]", "[-Infinity, 1]");
        expect_cfg_error(j, "time_step_limit");
        free(j);
    }
    expect_cfg_error("[1, 2]", "expected a JSON object");
    expect_cfg_error("{\"model_type\": ", "not valid JSON");
    const char *m1 = "{\"model_type\": \"mamba\", \"vocab_size\": 5, \"hidden_size\": 40, "
                     "\"num_hidden_layers\": 1, \"time_step_rank\": \"auto\"}";
    CHECK(!lmc_mamba_config_parse(&c, m1, strlen(m1), "config.json", &err));
    CHECK(c.kind == LMC_MAMBA_1 && c.time_step_rank == 3 && c.d_inner == 80 && c.xproj_dim == 35);
}

/* A copy of a fixture with one tensor dropped or reshaped must fail naming it. */
static void test_weight_errors(struct lmc_backend *be, const char *fixture, const char *tensor,
                               int drop, const char *needle) {
    char src[256], dir[] = "/tmp/lmc_mamba_badXXXXXX", path[512];
    snprintf(src, sizeof src, "tests/fixtures/%s", fixture);
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    lmc_err err;
    struct lmc_st st;
    CHECK(!lmc_st_open_dir(&st, src, &err));
    struct lmc_st_write_tensor *w = calloc((size_t)st.n_tensors, sizeof *w);
    int64_t n = 0;
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const struct lmc_st_tensor *t = &st.tensors[i];
        if (!strcmp(t->name, tensor) && drop) continue;
        w[n] = (struct lmc_st_write_tensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[n].shape, t->shape, sizeof t->shape);
        if (!strcmp(t->name, tensor)) { /* same bytes, another shape */
            w[n].ndim = 2;
            w[n].shape[0] = 1;
            w[n].shape[1] = t->numel;
        }
        n++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(!lmc_st_write(path, w, n, NULL, 0, &err));
    char *cfg;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", src);
    CHECK(!lmc_file_read(path, 1 << 20, &cfg, &len, &err));
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    fwrite(cfg, 1, len, f);
    fclose(f);
    free(cfg);
    struct lmc_mamba_model m;
    memset(&err, 0, sizeof err);
    lmc_status s = lmc_mamba_load(&m, dir, be, &err);
    CHECK_MSG(s != LMC_OK && strstr(err.msg, needle), "%s %s: got %d '%s'", fixture, tensor, (int)s,
              err.msg);
    if (!s) lmc_mamba_free(&m);
    free(w);
    lmc_st_free(&st);
    snprintf(path, sizeof path, "%s/config.json", dir); /* the temporary copy's files only */
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    struct lmc_backend be;
    lmc_err err;
    if (lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_fixture(&be, "mamba-tiny");
    test_fixture(&be, "mamba2-tiny");
    test_bf16(&be, "mamba-tiny");
    test_bf16(&be, "mamba2-tiny");
    test_train(&be, "mamba-tiny");
    test_train(&be, "mamba2-tiny");
    test_config_errors();
    test_weight_errors(&be, "mamba-tiny", "backbone.layers.1.mixer.A_log", 1,
                       "missing tensor 'backbone.layers.1.mixer.A_log'");
    test_weight_errors(&be, "mamba-tiny", "backbone.layers.0.mixer.D", 1,
                       "missing tensor 'backbone.layers.0.mixer.D'");
    test_weight_errors(&be, "mamba-tiny", "backbone.layers.0.mixer.x_proj.weight", 0,
                       "'backbone.layers.0.mixer.x_proj.weight' has shape [1, 2560], expected [20, 128]");
    test_weight_errors(&be, "mamba2-tiny", "backbone.layers.0.mixer.A_log", 1,
                       "missing tensor 'backbone.layers.0.mixer.A_log'");
    test_weight_errors(&be, "mamba2-tiny", "backbone.layers.1.mixer.D", 1,
                       "missing tensor 'backbone.layers.1.mixer.D'");
    test_weight_errors(&be, "mamba2-tiny", "backbone.layers.0.mixer.in_proj.weight", 0,
                       "has shape [1, 18944], expected [296, 64]");
    test_weight_errors(&be, "mamba2-tiny", "lm_head.weight", 1, "missing tensor 'lm_head.weight'");
    lmc_backend_cpu_free(&be);
    return test_finish("test_mamba_parity");
}
