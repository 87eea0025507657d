/* chat_template.c — finds a model's chat template(s) and special tokens the
 * way transformers does, compiles them with the Jinja engine and renders
 * conversations with the variables apply_chat_template passes. One path
 * renders every template; nothing is recognised by its text except the
 * end-of-turn stop strings and the tool-call format. */
#include "tokenizer/chat_template.h"
#include "core/core.h"
#include "template/jinja.h"
#include "tokenizer/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEMPLATES 16
#define MAX_TOKENS 32
#define MAX_FILE ((size_t)16 << 20)

struct named {
    char *name;
    char *text;
    lmc_jinja_tmpl *t;
};

struct lmc_chat_template {
    struct named tm[MAX_TEMPLATES];
    int n;
    cJSON *tokens;                    /* object: bos_token, eos_token, ... -> string */
    const char *stops[LMC_CHAT_MAX_TURN_STOPS];
    int n_stops;
    char *stop_store[LMC_CHAT_MAX_TURN_STOPS];
};

void lmc_chat_template_free(struct lmc_chat_template *ct) {
    if (!ct) return;
    for (int i = 0; i < ct->n; i++) {
        free(ct->tm[i].name);
        free(ct->tm[i].text);
        lmc_jinja_free(ct->tm[i].t);
    }
    for (int i = 0; i < ct->n_stops; i++) free(ct->stop_store[i]);
    cJSON_Delete(ct->tokens);
    free(ct);
}

static lmc_status add_template(struct lmc_chat_template *ct, const char *name, const char *text, const char *where,
                               lmc_err *err) {
    if (ct->n == MAX_TEMPLATES) return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "%s: more than %d chat templates", where, MAX_TEMPLATES);
    struct named *m = &ct->tm[ct->n];
    m->name = strdup(name);
    m->text = strdup(text);
    if (!m->name || !m->text) {
        free(m->name);
        free(m->text);
        return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    }
    ct->n++;
    lmc_status st = lmc_jinja_parse(text, strlen(text), &m->t, err);
    if (st) return lmc_err_prefix(err, "%s: chat template '%s': ", where, name);
    return LMC_OK;
}

static void add_stop(struct lmc_chat_template *ct, const char *s) {
    if (!s || !*s || ct->n_stops == LMC_CHAT_MAX_TURN_STOPS) return;
    for (int i = 0; i < ct->n_stops; i++)
        if (!strcmp(ct->stops[i], s)) return;
    char *d = strdup(s);
    if (!d) return;
    ct->stop_store[ct->n_stops] = d;
    ct->stops[ct->n_stops++] = d;
}

/* end-of-turn markers written after each message by the common template families */
static void find_stops(struct lmc_chat_template *ct) {
    static const char *const markers[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                          "<|END_OF_TURN_TOKEN|>", "<|eom_id|>", "<|endoftext|>", NULL};
    for (int i = 0; markers[i]; i++)
        for (int k = 0; k < ct->n; k++)
            if (strstr(ct->tm[k].text, markers[i])) {
                add_stop(ct, markers[i]);
                break;
            }
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(ct->tokens, "eos_token");
    if (cJSON_IsString(eos)) add_stop(ct, eos->valuestring);
}

static lmc_status set_token(struct lmc_chat_template *ct, const char *key, const char *val, lmc_err *err) {
    if (!val) return LMC_OK;
    cJSON *s = cJSON_CreateString(val);
    if (!s) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    if (cJSON_GetObjectItemCaseSensitive(ct->tokens, key)) cJSON_ReplaceItemInObjectCaseSensitive(ct->tokens, key, s);
    else cJSON_AddItemToObject(ct->tokens, key, s);
    return LMC_OK;
}

static struct lmc_chat_template *ct_new(lmc_err *err) {
    struct lmc_chat_template *ct = calloc(1, sizeof *ct);
    if (ct && !(ct->tokens = cJSON_CreateObject())) {
        free(ct);
        ct = NULL;
    }
    if (!ct) lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    return ct;
}

lmc_status lmc_chat_template_new(const char *text, const char *bos, const char *eos, struct lmc_chat_template **out,
                                 lmc_err *err) {
    *out = NULL;
    if (!text) return lmc_err_set(err, LMC_ERR_ARG, "chat template: no text");
    struct lmc_chat_template *ct = ct_new(err);
    if (!ct) return LMC_ERR_OOM;
    lmc_status st = add_template(ct, "default", text, "chat template", err);
    if (!st) st = set_token(ct, "bos_token", bos, err);
    if (!st) st = set_token(ct, "eos_token", eos, err);
    if (st) {
        lmc_chat_template_free(ct);
        return st;
    }
    find_stops(ct);
    *out = ct;
    return LMC_OK;
}

lmc_status lmc_chat_template_from_tokenizer(const struct lmc_tokenizer *tok, struct lmc_chat_template **out,
                                            lmc_err *err) {
    *out = NULL;
    const char *text = lmc_tokenizer_chat_template(tok);
    if (!text)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "this model has no chat template (no chat_template in tokenizer_config.json and no "
                           "chat_template.jinja)");
    return lmc_chat_template_new(text, lmc_tokenizer_bos_str(tok), lmc_tokenizer_eos_str(tok), out, err);
}

/* "x" or {"content": "x", ...} (an AddedToken) -> "x" */
static const char *token_text(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

/* chat_template.jinja ("default") and additional_chat_templates/NAME.jinja
 * beside the model */
static lmc_status add_file_templates(struct lmc_chat_template *ct, const char *dir, lmc_err *err) {
    char path[4096], sub[4096];
    char *text = NULL;
    lmc_status st = LMC_OK;
    if (lmc_path_join(path, sizeof path, dir, "chat_template.jinja") && lmc_file_exists(path)) {
        st = lmc_file_read(path, MAX_FILE, &text, NULL, err);
        if (!st) st = add_template(ct, "default", text, path, err);
        free(text);
        text = NULL;
    }
    if (st || !lmc_path_join(sub, sizeof sub, dir, "additional_chat_templates")) return st;
    DIR *d = opendir(sub);
    if (!d) return st;
    struct dirent *e;
    while (!st && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= 6 || strcmp(e->d_name + l - 6, ".jinja") || !lmc_path_join(path, sizeof path, sub, e->d_name)) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(l - 6), e->d_name);
        st = lmc_file_read(path, MAX_FILE, &text, NULL, err);
        if (!st) st = add_template(ct, name, text, path, err);
        free(text);
        text = NULL;
    }
    closedir(d);
    return st;
}

lmc_status lmc_chat_template_load(const char *dir, const char *template_file, const struct lmc_tokenizer *tok,
                                  struct lmc_chat_template **out, lmc_err *err) {
    *out = NULL;
    struct lmc_chat_template *ct = ct_new(err);
    if (!ct) return LMC_ERR_OOM;
    lmc_status st = LMC_OK;
    char cfg_path[4096];
    cJSON *cfg = NULL;
    char *text = NULL;
    if (dir && lmc_path_join(cfg_path, sizeof cfg_path, dir, "tokenizer_config.json") && lmc_file_exists(cfg_path)) {
        st = lmc_file_read(cfg_path, MAX_FILE, &text, NULL, err);
        if (!st && !(cfg = cJSON_Parse(text)))
            st = lmc_err_set(err, LMC_ERR_FORMAT, "%s: not valid JSON", cfg_path);
        free(text);
        text = NULL;
    }
    /* special tokens: every "*_token" field that is a string or an AddedToken */
    if (!st && tok) {
        st = set_token(ct, "bos_token", lmc_tokenizer_bos_str(tok), err);
        if (!st) st = set_token(ct, "eos_token", lmc_tokenizer_eos_str(tok), err);
    }
    int ntok = 0;
    for (const cJSON *e = cfg ? cfg->child : NULL; e && !st && ntok < MAX_TOKENS; e = e->next) {
        size_t l = e->string ? strlen(e->string) : 0;
        if (l > 6 && !strcmp(e->string + l - 6, "_token") && token_text(e)) {
            st = set_token(ct, e->string, token_text(e), err);
            ntok++;
        }
    }
    /* the template(s) */
    if (!st && template_file) {
        st = lmc_file_read(template_file, MAX_FILE, &text, NULL, err);
        if (!st) st = add_template(ct, "default", text, template_file, err);
    } else if (!st && dir && (st = add_file_templates(ct, dir, err)) == LMC_OK && ct->n) {
        /* template files take priority over tokenizer_config.json, as in transformers */
    } else if (!st && cfg) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsString(t)) st = add_template(ct, "default", t->valuestring, cfg_path, err);
        else if (cJSON_IsArray(t)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, t) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"),
                            *tx = cJSON_GetObjectItemCaseSensitive(e, "template");
                if (!cJSON_IsString(nm) || !cJSON_IsString(tx)) {
                    st = lmc_err_set(err, LMC_ERR_FORMAT, "%s: chat_template[]: expected {\"name\": string, "
                                     "\"template\": string}", cfg_path);
                    break;
                }
                if ((st = add_template(ct, nm->valuestring, tx->valuestring, cfg_path, err))) break;
            }
        } else if (t && !cJSON_IsNull(t))
            st = lmc_err_set(err, LMC_ERR_FORMAT, "%s: chat_template: expected a string or a list of {name, template}",
                             cfg_path);
    }
    free(text);
    cJSON_Delete(cfg);
    if (!st && ct->n == 0 && tok && lmc_tokenizer_chat_template(tok)) /* a GGUF's tokenizer.chat_template */
        st = add_template(ct, "default", lmc_tokenizer_chat_template(tok), "tokenizer.chat_template", err);
    if (!st && ct->n == 0)
        st = lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                         "%s has no chat template (no chat_template.jinja and no chat_template in "
                         "tokenizer_config.json); give one with --chat-template FILE", dir ? dir : "the model");
    if (st) {
        lmc_chat_template_free(ct);
        return st;
    }
    find_stops(ct);
    *out = ct;
    return LMC_OK;
}

static const struct named *pick(const struct lmc_chat_template *ct, bool tools) {
    const struct named *def = NULL;
    for (int i = 0; i < ct->n; i++) {
        if (tools && !strcmp(ct->tm[i].name, "tool_use")) return &ct->tm[i];
        if (!strcmp(ct->tm[i].name, "default")) def = &ct->tm[i];
    }
    return def ? def : ct->n == 1 ? &ct->tm[0] : NULL;
}

static bool add_ref(cJSON *obj, const char *key, const cJSON *v) {
    cJSON *d = v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();
    if (!d) return false;
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    cJSON_AddItemToObject(obj, key, d);
    return true;
}

lmc_status lmc_chat_template_render(const struct lmc_chat_template *ct, const cJSON *messages,
                                    const struct lmc_chat_render_opts *o, char **out, lmc_err *err) {
    *out = NULL;
    struct lmc_chat_render_opts none = {0};
    if (!o) o = &none;
    if (!cJSON_IsArray(messages)) return lmc_err_set(err, LMC_ERR_ARG, "chat: messages must be a list");
    const struct named *m = pick(ct, o->tools != NULL);
    if (!m) return lmc_err_set(err, LMC_ERR_ARG, "chat: the model's chat templates include no 'default' template");
    /* special tokens first, then the fixed variables, then extra kwargs (which win, as in transformers) */
    cJSON *vars = cJSON_Duplicate(ct->tokens, 1);
    bool ok = vars && add_ref(vars, "messages", messages) && add_ref(vars, "tools", o->tools) &&
              add_ref(vars, "documents", o->documents);
    if (ok) {
        cJSON_DeleteItemFromObjectCaseSensitive(vars, "add_generation_prompt");
        ok = cJSON_AddBoolToObject(vars, "add_generation_prompt", o->add_generation_prompt) != NULL;
    }
    for (const cJSON *e = cJSON_IsObject(o->kwargs) ? o->kwargs->child : NULL; e && ok; e = e->next)
        ok = e->string && add_ref(vars, e->string, e);
    if (!ok) {
        cJSON_Delete(vars);
        return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    }
    struct lmc_jinja_opts jo = {0};
    if (o->now_year) {
        jo.now_set = true;
        jo.now_year = o->now_year;
        jo.now_month = o->now_month;
        jo.now_day = o->now_day;
    }
    lmc_status st = lmc_jinja_render(m->t, vars, &jo, out, NULL, err);
    cJSON_Delete(vars);
    return st;
}

lmc_status lmc_chat_template_render_msgs(const struct lmc_chat_template *ct, const struct lmc_chat_msg *msgs, int n,
                                         char **out, lmc_err *err) {
    *out = NULL;
    if (n < 0 || (n > 0 && !msgs)) return lmc_err_set(err, LMC_ERR_ARG, "chat: %d messages given", n);
    cJSON *arr = cJSON_CreateArray();
    bool ok = arr != NULL;
    for (int i = 0; i < n && ok; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            cJSON_Delete(arr);
            return lmc_err_set(err, LMC_ERR_ARG, "chat message %d: role and content are required", i);
        }
        cJSON *m = cJSON_CreateObject();
        ok = m && cJSON_AddStringToObject(m, "role", msgs[i].role) &&
             cJSON_AddStringToObject(m, "content", msgs[i].content);
        if (m) cJSON_AddItemToArray(arr, m);
    }
    if (!ok) {
        cJSON_Delete(arr);
        return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    }
    struct lmc_chat_render_opts o = {.add_generation_prompt = true};
    lmc_status st = lmc_chat_template_render(ct, arr, &o, out, err);
    cJSON_Delete(arr);
    return st;
}

int lmc_chat_template_turn_stops(const struct lmc_chat_template *ct, const char **out) {
    if (!ct) return 0;
    for (int i = 0; i < ct->n_stops; i++) out[i] = ct->stops[i];
    return ct->n_stops;
}

const char *lmc_chat_template_tool_format(const struct lmc_chat_template *ct) {
    for (int i = 0; ct && i < ct->n; i++) {
        const char *t = ct->tm[i].text;
        if (strstr(t, "<function=") && strstr(t, "<parameter=")) return "qwen3_xml";
        if (strstr(t, "<arg_key>")) return "glm";
        if (strstr(t, "<tool_call>")) return "hermes";
        if (strstr(t, "[TOOL_CALLS]")) return "mistral";
        if (strstr(t, "<|start_header_id|>") && strstr(t, "parameters")) return "llama3";
    }
    return "json";
}
