/* gguf_arch.c — GGUF (llama.cpp) forms of the architectures, read from
 * their tables (arch_*.c: tensor names in the spec tables, the
 * general.architecture variants and the hyper-parameter key map): a GGUF's
 * metadata as a config.json, a config's hyper-parameters as GGUF keys, a
 * tensor's GGUF name and whether llama.cpp permuted its rows. Nothing here
 * compares architectures. */
#include "model/arch.h"
#include "core/core.h"
#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct lmc_architecture *const gguf_archs[] = {&lmc_arch_llama, &lmc_arch_gpt2, &lmc_arch_qwen3,
                                                            &lmc_arch_mixtral, &lmc_arch_qwen3moe,
                                                            &lmc_arch_qwen2moe, &lmc_arch_olmoe, &lmc_arch_mamba,
                                                            &lmc_arch_mamba2};
#define N_GA ((int)(sizeof gguf_archs / sizeof *gguf_archs))

/* Whether g holds the key "<name>.<key>". */
static bool has_key(const struct lmc_gguf *g, const char *name, const char *key) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", name, key);
    for (int64_t i = 0; g && i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, k)) return true;
    return false;
}

lmc_status lmc_gguf_arch_find(const struct lmc_gguf *g, const char *name, const struct lmc_architecture **a,
                              const struct lmc_gguf_variant **v, lmc_err *err) {
    char known[256] = "";
    for (int pass = 0; pass < 2; pass++) /* variants that need a key first */
        for (int i = 0; i < N_GA; i++)
            for (int j = 0; j < gguf_archs[i]->n_gguf; j++) {
                const struct lmc_gguf_variant *x = &gguf_archs[i]->gguf[j];
                if ((x->needs_key != NULL) != (pass == 0)) continue;
                if (!strcmp(x->name, name) && (!x->needs_key || has_key(g, name, x->needs_key))) {
                    *a = gguf_archs[i];
                    *v = x;
                    return LMC_OK;
                }
                size_t l = strlen(known);
                if (!x->needs_key) /* the others share a name listed already */
                    snprintf(known + l, sizeof known - l, "%s%s", l ? ", " : "", x->name);
            }
    return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "general.architecture '%.64s' (lmc reads %s)", name, known);
}

bool lmc_gguf_tensor_view(const struct lmc_gguf_tensor *t, const struct lmc_tensor_ref *r, const struct lmc_config *c,
                          int64_t rb, const uint8_t **data) {
    *data = t->data;
    if (r->spec->kind == LMC_TK_EXPERT_W) { /* the stack of every expert: ne [cols, rows, experts] */
        if (t->n_dims != 3 || t->ne[0] != r->cols || t->ne[1] != r->rows || t->ne[2] != c->num_experts ||
            r->expert < 0 || r->expert >= c->num_experts)
            return false;
        *data += (size_t)r->expert * (size_t)r->rows * (size_t)rb;
        return true;
    }
    if (r->ndim == 1) return t->n_dims == 1 && t->ne[0] == r->rows;
    /* a one-row matrix may be stored as a vector (llama.cpp's ffn_gate_inp_shexp) */
    if (r->rows == 1 && t->n_dims == 1) return t->ne[0] == r->cols;
    return t->n_dims == 2 && t->ne[0] == r->cols && t->ne[1] == r->rows;
}

void lmc_gguf_shape_str(const struct lmc_gguf_tensor *t, const struct lmc_tensor_ref *r, const struct lmc_config *c,
                        char *got, size_t gcap, char *want, size_t wcap) {
    got[0] = 0;
    for (int d = 0; d < t->n_dims && d < LMC_GGUF_MAX_DIMS; d++)
        snprintf(got + strlen(got), gcap - strlen(got), "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (r->spec->kind == LMC_TK_EXPERT_W)
        snprintf(want, wcap, "%lld, %lld, %lld", (long long)r->cols, (long long)r->rows, (long long)c->num_experts);
    else if (r->ndim == 1) snprintf(want, wcap, "%lld", (long long)r->rows);
    else snprintf(want, wcap, "%lld, %lld", (long long)r->cols, (long long)r->rows);
}

const struct lmc_gguf_variant *lmc_gguf_variant_of(const struct lmc_config *c) {
    const struct lmc_architecture *a = lmc_arch_of(c);
    for (int j = 0; j < a->n_gguf; j++)
        if (!strcmp(a->gguf[j].model_type, c->model_type)) return &a->gguf[j];
    return a->n_gguf ? &a->gguf[0] : NULL;
}

bool lmc_gguf_tensor_name(const struct lmc_architecture *a, const struct lmc_tensor_ref *t, char *out, size_t cap) {
    ptrdiff_t i = t->spec - a->specs;
    if (!a->gguf_names || i < 0 || i >= a->n_specs || !a->gguf_names[i]) return false;
    const char *g = a->gguf_names[i];
    int n = t->spec->per_layer ? snprintf(out, cap, g, (long long)t->layer) : snprintf(out, cap, "%s", g);
    return n > 0 && (size_t)n < cap;
}

int64_t lmc_gguf_rope_heads(const struct lmc_tensor_ref *t, const struct lmc_config *c,
                            const struct lmc_gguf_variant *v) {
    if (!v->permute_qk || !(t->spec->flags & LMC_TF_GGUF_ROPE) || c->head_dim <= 0) return 0;
    return t->rows / c->head_dim;
}

lmc_status lmc_gguf_config_json(const struct lmc_gguf *g, const char *label, cJSON **out,
                                const struct lmc_gguf_variant **vout, lmc_err *err) {
    *out = NULL;
    char *name = NULL, key[160];
    const struct lmc_architecture *a;
    const struct lmc_gguf_variant *v;
    lmc_status s = lmc_gguf_get_str(g, "general.architecture", &name, NULL, err);
    if (!s) s = lmc_gguf_arch_find(g, name, &a, &v, err);
    if (s) {
        free(name);
        lmc_err_prefix(err, "%s: ", label);
        return s;
    }
    cJSON *o = cJSON_Parse(v->fixed_json ? v->fixed_json : "{}");
    if (!o) {
        free(name);
        return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
    }
    cJSON *cls = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(cls, cJSON_CreateString(v->hf_class));
    cJSON_AddStringToObject(o, "model_type", v->model_type);
    for (int i = 0; !s && i < a->n_gguf_keys; i++) {
        const struct lmc_gguf_key *k = &a->gguf_keys[i];
        if (k->use == LMC_GK_WRITE || cJSON_GetObjectItemCaseSensitive(o, k->field)) continue;
        snprintf(key, sizeof key, "%s.%s", name, k->key);
        bool found = true;
        double f = 0;
        int64_t n = 0;
        bool *fp = k->use == LMC_GK_REQUIRED ? NULL : &found;
        if (k->type == LMC_GGUF_F32) s = lmc_gguf_get_float(g, key, &f, fp, err);
        else s = lmc_gguf_get_int(g, key, &n, fp, err);
        if (s) break;
        if (k->type != LMC_GGUF_F32) f = (double)n;
        if (!found && k->use == LMC_GK_DEFAULT) f = k->def, found = true;
        if (found) cJSON_AddNumberToObject(o, k->field, f);
    }
    /* rope scaling is not read from GGUF yet: refuse rather than run it wrong */
    char *rs = NULL;
    bool found = false;
    snprintf(key, sizeof key, "%s.rope.scaling.type", name);
    if (!s && !(s = lmc_gguf_get_str(g, key, &rs, &found, err)) && found && strcmp(rs, "none"))
        s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "GGUF metadata '%s' is '%.32s' (lmc reads unscaled rope only)", key,
                        rs);
    free(rs);
    const struct lmc_gguf_tensor *emb = lmc_gguf_find_tensor(g, "token_embd.weight");
    if (!s && (!emb || emb->n_dims != 2))
        s = lmc_err_set(err, LMC_ERR_FORMAT, "tensor 'token_embd.weight' is %s (expected (hidden, vocab))",
                        emb ? "not 2-D" : "missing");
    if (!s && v->sparse_probe) { /* layers without a router are dense */
        const cJSON *nl = cJSON_GetObjectItemCaseSensitive(o, "num_hidden_layers");
        int64_t L = cJSON_IsNumber(nl) && nl->valuedouble > 0 && nl->valuedouble <= 4096 ? (int64_t)nl->valuedouble : 0;
        cJSON *only = cJSON_AddArrayToObject(o, "mlp_only_layers");
        for (int64_t l = 0; only && l < L; l++) {
            snprintf(key, sizeof key, v->sparse_probe, (long long)l);
            if (!lmc_gguf_find_tensor(g, key)) cJSON_AddItemToArray(only, cJSON_CreateNumber((double)l));
        }
    }
    if (!s) {
        cJSON_AddNumberToObject(o, "vocab_size", (double)emb->ne[1]);
        cJSON_AddBoolToObject(o, "tie_word_embeddings", !lmc_gguf_find_tensor(g, "output.weight"));
        const char *ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                {"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                {"tokenizer.ggml.padding_token_id", "pad_token_id"}};
        for (int i = 0; !s && i < 3; i++) {
            int64_t id;
            s = lmc_gguf_get_int(g, ids[i][0], &id, &found, err);
            if (!s && found) cJSON_AddNumberToObject(o, ids[i][1], (double)id);
        }
    }
    free(name);
    if (s) {
        cJSON_Delete(o);
        lmc_err_prefix(err, "%s: ", label);
        return s;
    }
    *out = o;
    if (vout) *vout = v;
    return LMC_OK;
}

lmc_status lmc_gguf_config(const struct lmc_gguf *g, const char *label, struct lmc_config *c,
                           const struct lmc_gguf_variant **v, lmc_err *err) {
    cJSON *o;
    lmc_status s = lmc_gguf_config_json(g, label, &o, v, err);
    if (s) return s;
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory", label);
    s = lmc_config_parse(c, text, strlen(text), label, err);
    free(text);
    return s;
}

lmc_status lmc_gguf_hparams_write(struct lmc_gguf_writer *w, const struct lmc_config *c,
                                  const struct lmc_gguf_variant *v, lmc_err *err) {
    const struct lmc_architecture *a = lmc_arch_of(c);
    cJSON *o = cJSON_CreateObject();
    if (!o) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    a->config_json(c, o);
    /* fields the GGUF does not hold must be what llama.cpp assumes */
    cJSON *fixed = cJSON_Parse(v->fixed_json ? v->fixed_json : "{}");
    const cJSON *f;
    lmc_status s = fixed ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    cJSON_ArrayForEach(f, fixed) {
        const cJSON *mine = cJSON_GetObjectItemCaseSensitive(o, f->string);
        if (!s && mine && !cJSON_Compare(mine, f, true)) {
            char *a1 = cJSON_PrintUnformatted(mine), *a2 = cJSON_PrintUnformatted(f);
            s = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: '%s' is %s, but llama.cpp's %s runs %s (not written to GGUF)",
                            c->model_type, f->string, a1 ? a1 : "?", v->name, a2 ? a2 : "?");
            free(a1);
            free(a2);
        }
    }
    cJSON_Delete(fixed);
    if (s) {
        cJSON_Delete(o);
        return s;
    }
    lmc_gguf_add_str(w, "general.architecture", v->name);
    char key[160];
    for (int i = 0; i < a->n_gguf_keys; i++) {
        const struct lmc_gguf_key *k = &a->gguf_keys[i];
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, k->field);
        if (!cJSON_IsNumber(f)) continue;
        snprintf(key, sizeof key, "%s.%s", v->name, k->key);
        if (k->type == LMC_GGUF_F32) lmc_gguf_add_f32(w, key, (float)f->valuedouble);
        else lmc_gguf_add_u32(w, key, (uint32_t)f->valuedouble);
    }
    cJSON_Delete(o);
    return LMC_OK;
}
