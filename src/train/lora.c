/* lora.c — LoRA adapters (see lora.h): the PEFT folder's config and
 * tensors read and checked against the base's linears (found by walking
 * the architecture's tensor spec table), new adapters, PEFT folders
 * written atomically, binding into lmc_linear.adapters and merging. */
#include "train/lora.h"
#include "core/core.h"
#include "core/rng.h"
#include "io/json_util.h"
#include "io/safetensors.h"
#include "model/arch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_PREFIX "base_model.model."
#define SCRATCH_ROWS 256

double lmc_lora_scale(const struct lmc_lora_config *c) {
    return c->rslora ? c->alpha / sqrt((double)c->r) : c->alpha / (double)c->r;
}

/* ---------------- the base's linears ---------------- */

struct lin_list {
    struct lmc_lora_module *m;
    int n, cap;
};

static lmc_status list_one(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    struct lin_list *ll = user;
    if ((t->spec->kind != LMC_TK_LIN_W && t->spec->kind != LMC_TK_EXPERT_W) || t->layer < 0) return LMC_OK;
    if (ll->n == ll->cap) {
        int cap = ll->cap ? 2 * ll->cap : 64;
        void *p = realloc(ll->m, (size_t)cap * sizeof *ll->m);
        if (!p) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
        ll->m = p;
        ll->cap = cap;
    }
    struct lmc_lora_module *m = &ll->m[ll->n++];
    memset(m, 0, sizeof *m);
    size_t n = strlen(t->name);
    if (n > 7 && !strcmp(t->name + n - 7, ".weight")) n -= 7;
    if (n >= sizeof m->module) n = sizeof m->module - 1;
    memcpy(m->module, t->name, n);
    m->module[n] = 0;
    m->layer = t->layer;
    m->slot = t->spec->slot;
    m->expert = t->spec->kind == LMC_TK_EXPERT_W ? t->expert : -1;
    m->parts = t->spec->parts > 1 ? t->spec->parts : 1;
    m->out = t->rows;
    m->in = t->cols;
    m->transposed = (t->spec->flags & LMC_TF_TRANSPOSED) != 0;
    return LMC_OK;
}

/* Every layer linear of mc (modules without data). */
static lmc_status base_linears(const struct lmc_config *mc, struct lin_list *ll, lmc_err *err) {
    memset(ll, 0, sizeof *ll);
    lmc_status s = lmc_arch_walk(lmc_arch_of(mc), mc, list_one, ll, err);
    if (s) free(ll->m);
    return s;
}

static const char *short_name(const char *module) {
    const char *d = strrchr(module, '.');
    return d ? d + 1 : module;
}

static bool targeted(const struct lmc_lora_config *c, const char *module) {
    for (int i = 0; i < c->n_targets; i++)
        if (!strcmp(c->targets[i], "all-linear") || !strcmp(c->targets[i], short_name(module)))
            return true;
    return false;
}

lmc_status lmc_lora_parse_targets(struct lmc_lora_config *cfg, const char *list, lmc_err *err) {
    cfg->n_targets = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || n >= sizeof cfg->targets[0] || cfg->n_targets == LMC_LORA_MAX_TARGETS)
            return lmc_err_set(err, LMC_ERR_ARG, "LoRA targets '%s': expected up to %d comma-separated "
                               "module names or all-linear", list, LMC_LORA_MAX_TARGETS);
        memcpy(cfg->targets[cfg->n_targets], p, n);
        cfg->targets[cfg->n_targets++][n] = 0;
        p += n + (e ? 1 : 0);
    }
    if (!cfg->n_targets) return lmc_err_set(err, LMC_ERR_ARG, "LoRA targets: empty list");
    return LMC_OK;
}

/* ---------------- adapter_config.json ---------------- */

lmc_status lmc_lora_config_read(struct lmc_lora_config *c, const char *dir, lmc_err *err) {
    memset(c, 0, sizeof *c);
    char path[4096], *text = NULL;
    size_t len;
    if (!lmc_path_join(path, sizeof path, dir, "adapter_config.json"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    lmc_status s = lmc_file_read(path, 1 << 24, &text, &len, err);
    if (s) return s;
    s = lmc_lora_config_parse(c, text, len, path, err);
    free(text);
    return s;
}

lmc_status lmc_lora_config_parse(struct lmc_lora_config *c, const char *text, size_t len, const char *path,
                                 lmc_err *err) {
    memset(c, 0, sizeof *c);
    lmc_status s = LMC_OK;
    cJSON *o = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *v;
    v = cJSON_GetObjectItemCaseSensitive(o, "peft_type");
    if (!cJSON_IsString(v)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field 'peft_type' is %s, expected a string", path,
                        lmc_json_kind(v));
        goto out;
    }
    if (strcmp(v->valuestring, "LORA") != 0) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: peft_type '%s' is not supported (only LORA)", path,
                        v->valuestring);
        goto out;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "r");
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 ||
        v->valuedouble != floor(v->valuedouble)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field 'r' must be an integer in 1..65536", path);
        goto out;
    }
    c->r = (int64_t)v->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(o, "lora_alpha");
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: field 'lora_alpha' is %s, expected a number", path,
                        lmc_json_kind(v));
        goto out;
    }
    c->alpha = v->valuedouble;
    c->rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "use_rslora"));
    c->fan_in_fan_out = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "fan_in_fan_out"));
    v = cJSON_GetObjectItemCaseSensitive(o, "lora_dropout");
    c->dropout = cJSON_IsNumber(v) ? v->valuedouble : 0;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "use_dora"))) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: DoRA adapters (use_dora) are not supported", path);
        goto out;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "bias");
    if (cJSON_IsString(v) && strcmp(v->valuestring, "none") != 0) {
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: bias '%s' is not supported (only none)", path,
                        v->valuestring);
        goto out;
    }
    const cJSON *pat[2] = {cJSON_GetObjectItemCaseSensitive(o, "rank_pattern"),
                           cJSON_GetObjectItemCaseSensitive(o, "alpha_pattern")};
    for (int i = 0; i < 2; i++)
        if (cJSON_IsObject(pat[i]) && pat[i]->child) {
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: per-module %s is not supported", path,
                            i ? "alpha_pattern" : "rank_pattern");
            goto out;
        }
    v = cJSON_GetObjectItemCaseSensitive(o, "target_modules");
    if (cJSON_IsString(v)) {
        snprintf(c->targets[0], sizeof c->targets[0], "%s", v->valuestring);
        c->n_targets = 1;
    } else if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsString(e) || strlen(e->valuestring) >= sizeof c->targets[0] ||
                c->n_targets == LMC_LORA_MAX_TARGETS) {
                s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: target_modules: expected up to %d module names",
                                path, LMC_LORA_MAX_TARGETS);
                goto out;
            }
            snprintf(c->targets[c->n_targets++], sizeof c->targets[0], "%s", e->valuestring);
        }
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "base_model_name_or_path");
    if (cJSON_IsString(v)) snprintf(c->base_model, sizeof c->base_model, "%s", v->valuestring);
out:
    cJSON_Delete(o);
    return s;
}

/* ---------------- tensors ---------------- */

static float st_f32(const struct lmc_st_tensor *t, int64_t i) {
    if (t->dtype == LMC_DTYPE_F64) {
        double d;
        memcpy(&d, (const char *)t->data + 8 * i, 8);
        return (float)d;
    }
    if (t->dtype == LMC_DTYPE_F32) {
        float f;
        memcpy(&f, (const char *)t->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * i, 2);
    return t->dtype == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h) : lmc_f16_to_f32(h);
}

/* A tensor of the adapter file as host f32 with the expected shape. */
static lmc_status take(const struct lmc_st *st, const char *path, const char *key, int64_t rows,
                       int64_t cols, float **out, lmc_err *err) {
    const struct lmc_st_tensor *t = lmc_st_find(st, key);
    if (!t) return lmc_err_set(err, LMC_ERR_FORMAT, "%s: missing tensor '%s'", path, key);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected "
                           "[%lld, %lld] for the base", path, key, (long long)t->shape[0],
                           (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)rows, (long long)cols);
    if (t->dtype != LMC_DTYPE_F32 && t->dtype != LMC_DTYPE_F16 && t->dtype != LMC_DTYPE_BF16 &&
        t->dtype != LMC_DTYPE_F64)
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected F64, F32, F16 or BF16",
                           path, key, lmc_dtype_name(t->dtype));
    float *f = malloc((size_t)(rows * cols) * sizeof *f);
    if (!f) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", key);
    for (int64_t i = 0; i < rows * cols; i++) f[i] = st_f32(t, i);
    *out = f;
    return LMC_OK;
}

lmc_status lmc_lora_load(struct lmc_lora *lo, const char *dir, const struct lmc_config *mc,
                         lmc_err *err) {
    memset(lo, 0, sizeof *lo);
    lmc_status s = lmc_lora_config_read(&lo->cfg, dir, err);
    if (s) return s;
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, "adapter_model.safetensors"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    struct lmc_st st;
    if ((s = lmc_st_open_file(&st, path, err))) return s;
    struct lin_list ll;
    if ((s = base_linears(mc, &ll, err))) {
        lmc_st_free(&st);
        return s;
    }
    bool *used = calloc((size_t)st.n_tensors + 1, 1);
    lo->mods = calloc((size_t)ll.n + 1, sizeof *lo->mods);
    if (!used || !lo->mods) {
        s = lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", path);
        goto out;
    }
    int64_t r = lo->cfg.r;
    for (int i = 0; i < ll.n && !s; i++) {
        char ka[256], kb[256];
        snprintf(ka, sizeof ka, KEY_PREFIX "%s.lora_A.weight", ll.m[i].module);
        snprintf(kb, sizeof kb, KEY_PREFIX "%s.lora_B.weight", ll.m[i].module);
        const struct lmc_st_tensor *ta = lmc_st_find(&st, ka), *tb = lmc_st_find(&st, kb);
        if (!ta && !tb) continue;
        struct lmc_lora_module *m = &lo->mods[lo->n_mods];
        *m = ll.m[i];
        m->a = m->b = NULL;
        if (ta) used[ta - st.tensors] = true;
        if (tb) used[tb - st.tensors] = true;
        if ((s = take(&st, path, ka, r, m->in, &m->a, err)) || (s = take(&st, path, kb, m->out, r, &m->b, err))) {
            free(m->a);
            free(m->b);
            break;
        }
        lo->n_mods++;
    }
    for (int64_t i = 0; !s && i < st.n_tensors; i++)
        if (!used[i])
            s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: tensor '%s' is not a lora_A/lora_B weight of a "
                            "linear of this %s model (%lld layers)", path, st.tensors[i].name,
                            mc->model_type, (long long)mc->num_layers);
    if (!s && !lo->n_mods) s = lmc_err_set(err, LMC_ERR_FORMAT, "%s: no adapter tensors", path);
out:
    free(used);
    free(ll.m);
    lmc_st_free(&st);
    if (s) lmc_lora_free(lo);
    return s;
}

lmc_status lmc_lora_create(struct lmc_lora *lo, const struct lmc_lora_config *cfg,
                           const struct lmc_config *mc, uint64_t seed, lmc_err *err) {
    memset(lo, 0, sizeof *lo);
    lo->cfg = *cfg;
    if (cfg->r < 1 || cfg->r > 65536) return lmc_err_set(err, LMC_ERR_ARG, "LoRA rank %lld out of range", (long long)cfg->r);
    struct lin_list ll;
    lmc_status s = base_linears(mc, &ll, err);
    if (s) return s;
    lo->mods = calloc((size_t)ll.n + 1, sizeof *lo->mods);
    if (!lo->mods) {
        free(ll.m);
        return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    }
    uint64_t rs = seed ^ 0x6c6f72612d696e69ull;
    for (int i = 0; i < ll.n && !s; i++) {
        if (!targeted(cfg, ll.m[i].module)) continue;
        struct lmc_lora_module *m = &lo->mods[lo->n_mods];
        *m = ll.m[i];
        m->a = malloc((size_t)(cfg->r * m->in) * sizeof(float));
        m->b = calloc((size_t)(cfg->r * m->out), sizeof(float));
        if (!m->a || !m->b) {
            free(m->a);
            free(m->b);
            s = lmc_err_set(err, LMC_ERR_OOM, "LoRA weights: out of memory");
            break;
        }
        lo->n_mods++;
        double bound = 1.0 / sqrt((double)m->in);
        for (int64_t k = 0; k < cfg->r * m->in; k++)
            m->a[k] = (float)((2.0 * lmc_rng_uniform(&rs) - 1.0) * bound);
    }
    if (!s && !lo->n_mods) {
        s = lmc_err_set(err, LMC_ERR_ARG, "LoRA targets match no linear of this %s model", mc->model_type);
    }
    free(ll.m);
    if (s) lmc_lora_free(lo);
    return s;
}

void lmc_lora_free(struct lmc_lora *lo) {
    for (int i = 0; i < lo->n_mods; i++) {
        free(lo->mods[i].a);
        free(lo->mods[i].b);
    }
    free(lo->mods);
    memset(lo, 0, sizeof *lo);
}

/* ---------------- writing ---------------- */

static lmc_status write_config(const struct lmc_lora *lo, const char *path, const struct lmc_config *mc,
                               lmc_err *err) {
    const struct lmc_lora_config *c = &lo->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON *t = cJSON_CreateArray();
    /* the targets as PEFT lists them: the distinct short names adapted */
    for (int i = 0; i < lo->n_mods; i++) {
        const char *sn = short_name(lo->mods[i].module);
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(short_name(lo->mods[j].module), sn);
        if (!seen) cJSON_AddItemToArray(t, cJSON_CreateString(sn));
    }
    cJSON_AddStringToObject(o, "peft_type", "LORA");
    cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
    cJSON_AddNumberToObject(o, "r", (double)c->r);
    cJSON_AddNumberToObject(o, "lora_alpha", c->alpha);
    cJSON_AddNumberToObject(o, "lora_dropout", c->dropout);
    cJSON_AddItemToObject(o, "target_modules", t);
    cJSON_AddStringToObject(o, "bias", "none");
    cJSON_AddBoolToObject(o, "use_rslora", c->rslora);
    cJSON_AddBoolToObject(o, "use_dora", false);
    bool fifo = false;
    for (int i = 0; i < lo->n_mods; i++) fifo |= lo->mods[i].transposed;
    cJSON_AddBoolToObject(o, "fan_in_fan_out", fifo);
    cJSON_AddBoolToObject(o, "inference_mode", true);
    cJSON_AddStringToObject(o, "base_model_name_or_path", c->base_model);
    cJSON_AddItemToObject(o, "rank_pattern", cJSON_CreateObject());
    cJSON_AddItemToObject(o, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(o, "modules_to_save");
    cJSON_AddNullToObject(o, "layers_to_transform");
    (void)mc;
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return lmc_err_set(err, LMC_ERR_OOM, "adapter_config.json: out of memory");
    FILE *f = fopen(path, "wb");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = false;
    free(text);
    if (!ok) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return LMC_OK;
}

static const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "chat_template.jinja"};

static void remove_adapter_dir(const char *dir) {
    static const char *files[] = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                                  "optimizer.safetensors", "trainer_state.json"}; /* and a checkpoint's */
    char p[4200];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static lmc_status copy_into(const char *src_dir, const char *name, const char *dst_dir, lmc_err *err) {
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/%s", src_dir, name);
    if (!lmc_file_exists(src)) return LMC_OK;
    snprintf(dst, sizeof dst, "%s/%s", dst_dir, name);
    return lmc_file_copy(src, dst, err);
}

lmc_status lmc_lora_save(const struct lmc_lora *lo, const char *dir, const struct lmc_config *mc,
                         const char *tok_dir, lmc_err *err) {
    char tmp[4096], path[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dir, (long)getpid()) >= (int)sizeof tmp)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    remove_adapter_dir(tmp);
    if (mkdir(tmp, 0777) != 0) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    int64_t r = lo->cfg.r;
    struct lmc_st_write_tensor *t = calloc((size_t)(2 * lo->n_mods + 1), sizeof *t);
    char (*names)[192] = calloc((size_t)(2 * lo->n_mods + 1), sizeof *names);
    lmc_status s = LMC_OK;
    if (!t || !names) {
        s = lmc_err_set(err, LMC_ERR_OOM, "out of memory");
        goto out;
    }
    for (int i = 0; i < lo->n_mods; i++) {
        const struct lmc_lora_module *m = &lo->mods[i];
        snprintf(names[2 * i], sizeof names[0], KEY_PREFIX "%s.lora_A.weight", m->module);
        snprintf(names[2 * i + 1], sizeof names[0], KEY_PREFIX "%s.lora_B.weight", m->module);
        t[2 * i] = (struct lmc_st_write_tensor){names[2 * i], LMC_DTYPE_F32, 2, {r, m->in}, m->a};
        t[2 * i + 1] = (struct lmc_st_write_tensor){names[2 * i + 1], LMC_DTYPE_F32, 2, {m->out, r}, m->b};
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmp);
    static const char *meta[] = {"format", "pt"};
    if ((s = lmc_st_write(path, t, 2 * lo->n_mods, meta, 1, err))) goto out;
    snprintf(path, sizeof path, "%s/adapter_config.json", tmp);
    if ((s = write_config(lo, path, mc, err))) goto out;
    for (size_t i = 0; tok_dir && i < sizeof tok_files / sizeof *tok_files; i++)
        if ((s = copy_into(tok_dir, tok_files[i], tmp, err))) goto out;
    /* replace an existing adapter folder, never anything else */
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        if (!lmc_file_exists(path)) {
            s = lmc_err_set(err, LMC_ERR_IO, "%s exists and is not an adapter folder; not replacing it", dir);
            goto out;
        }
        remove_adapter_dir(dir);
    }
    if (rename(tmp, dir) != 0) s = lmc_err_set(err, LMC_ERR_IO, "%s: cannot rename into place: %s", dir, strerror(errno));
out:
    if (s) remove_adapter_dir(tmp);
    free(t);
    free(names);
    return s;
}

/* ---------------- binding ---------------- */

void *lmc_lora_buf_new(const struct lmc_backend *be, void ***bufs, int *n, int *cap, const void *host, size_t bytes) {
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 64;
        void **p = realloc(*bufs, (size_t)c * sizeof *p);
        if (!p) return NULL;
        *bufs = p;
        *cap = c;
    }
    void *d = be->alloc(be->ctx, bytes);
    if (!d) return NULL;
    (*bufs)[(*n)++] = d;
    if (host) be->upload(be->ctx, d, host, bytes);
    return d;
}

static void *bind_buf(struct lmc_lora_binding *b, const void *host, size_t bytes) {
    return lmc_lora_buf_new(b->be, &b->bufs, &b->n_bufs, &b->cap_bufs, host, bytes);
}

lmc_status lmc_lora_bind(struct lmc_lora_binding *b, struct lmc_weights *w, const struct lmc_config *mc,
                         const struct lmc_lora *const *los, const double *mul, int n,
                         const struct lmc_backend *be, lmc_err *err) {
    memset(b, 0, sizeof *b);
    b->be = be;
    int64_t L = mc->num_layers, total = 0, rmax = 0, omax = 0;
    for (int k = 0; k < n; k++) {
        rmax = LMC_MAX(rmax, los[k]->cfg.r);
        for (int i = 0; i < los[k]->n_mods; i++) {
            const struct lmc_lora_module *m = &los[k]->mods[i];
            LMC_ASSERT(m->layer >= 0 && m->layer < L && m->slot + m->parts <= LMC_L_N);
            LMC_ASSERT(m->expert < mc->num_experts && (m->expert < 0 || (m->parts == 1 && w->layers[m->layer].experts)));
            total += m->parts;
            omax = LMC_MAX(omax, m->out / m->parts);
        }
    }
    b->adapters = calloc((size_t)total + 1, sizeof *b->adapters);
    int64_t sfloats = SCRATCH_ROWS * (2 * rmax + omax);
    float *scratch = b->adapters ? bind_buf(b, NULL, (size_t)sfloats * sizeof(float)) : NULL;
    if (!scratch) goto oom;
    /* per linear, in (layer, slot) order then the experts' (expert, slot),
     * the adapters of every folder */
    int64_t next = 0, NX = mc->num_experts > 0 ? mc->num_experts * LMC_X_N : 0;
    for (int64_t l = 0; l < L; l++)
        for (int64_t sl = 0; sl < LMC_L_N + NX; sl++) {
            bool ex = sl >= LMC_L_N; /* expert (sl - LMC_L_N) / LMC_X_N, slot (sl - LMC_L_N) % LMC_X_N */
            if (ex && !w->layers[l].experts) break;
            struct lmc_linear *lin = ex ? &w->layers[l].experts[sl - LMC_L_N] : &w->layers[l].lin[sl];
            int64_t first = next;
            for (int k = 0; k < n; k++) {
                const struct lmc_lora *lo = los[k];
                int64_t r = lo->cfg.r;
                float sc = (float)(lmc_lora_scale(&lo->cfg) * mul[k]);
                for (int i = 0; i < lo->n_mods; i++) {
                    const struct lmc_lora_module *m = &lo->mods[i];
                    if (m->layer != l || (m->expert >= 0) != ex) continue;
                    if (ex ? sl - LMC_L_N != m->expert * LMC_X_N + m->slot : sl < m->slot || sl >= m->slot + m->parts)
                        continue;
                    int64_t po = m->out / m->parts, p = ex ? 0 : sl - m->slot;
                    float *diag = calloc((size_t)(r * r), sizeof *diag);
                    if (!diag) goto oom;
                    for (int64_t q = 0; q < r; q++) diag[q * r + q] = sc;
                    void *da = bind_buf(b, m->a, (size_t)(r * m->in) * sizeof(float));
                    void *db = bind_buf(b, m->b + p * po * r, (size_t)(po * r) * sizeof(float));
                    void *ds = bind_buf(b, diag, (size_t)(r * r) * sizeof(float));
                    free(diag);
                    if (!da || !db || !ds) goto oom;
                    b->adapters[next++] = (struct lmc_adapter){
                        .a = {LMC_DTYPE_F32, r, m->in, da}, .b = {LMC_DTYPE_F32, po, r, db},
                        .s = {LMC_DTYPE_F32, r, r, ds}, .scale = sc, .scratch = scratch,
                        .scratch_rows = SCRATCH_ROWS};
                }
            }
            if (next > first) {
                lin->adapters = &b->adapters[first];
                lin->n_adapters = (int)(next - first);
            }
        }
    be->sync(be->ctx);
    return LMC_OK;
oom:
    lmc_lora_unbind(b, w, mc);
    return lmc_err_set(err, LMC_ERR_OOM, "LoRA adapters: not enough %s memory", be->name);
}

void lmc_lora_unbind(struct lmc_lora_binding *b, struct lmc_weights *w, const struct lmc_config *mc) {
    for (int64_t l = 0; w->layers && l < mc->num_layers; l++)
    {
        for (int sl = 0; sl < LMC_L_N; sl++) {
            w->layers[l].lin[sl].adapters = NULL;
            w->layers[l].lin[sl].n_adapters = 0;
        }
        for (int64_t i = 0; w->layers[l].experts && i < mc->num_experts * LMC_X_N; i++) {
            w->layers[l].experts[i].adapters = NULL;
            w->layers[l].experts[i].n_adapters = 0;
        }
    }
    for (int i = 0; i < b->n_bufs; i++) b->be->free(b->be->ctx, b->bufs[i]);
    free(b->bufs);
    free(b->adapters);
    memset(b, 0, sizeof *b);
}

/* ---------------- merge ---------------- */

void lmc_lora_merge_into(const struct lmc_lora_module *m, int64_t r, double scale, void *data,
                         enum lmc_dtype dt) {
    for (int64_t o = 0; o < m->out; o++)
        for (int64_t i = 0; i < m->in; i++) {
            double d = 0;
            for (int64_t q = 0; q < r; q++) d += (double)m->b[o * r + q] * m->a[q * m->in + i];
            /* on disk (out, in), or (in, out) for Conv1D */
            int64_t k = m->transposed ? i * m->out + o : o * m->in + i;
            if (dt == LMC_DTYPE_F32) {
                float *f = data;
                f[k] = (float)((double)f[k] + scale * d);
            } else {
                uint16_t *h = data;
                float x = dt == LMC_DTYPE_BF16 ? lmc_bf16_to_f32(h[k]) : lmc_f16_to_f32(h[k]);
                x = (float)((double)x + scale * d);
                h[k] = dt == LMC_DTYPE_BF16 ? lmc_f32_to_bf16(x) : lmc_f32_to_f16(x);
            }
        }
}
