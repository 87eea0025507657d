/* api_format.c — OpenAI response JSON: completion and chat completion
 * objects, their streaming chunks (as server-sent events), the usage
 * chunk, error objects and the /v1/models list. Logprobs spell each token
 * by decoding it alone (a piece of a character is spelt "bytes:\\xNN" in
 * "token"; chat also gives the raw "bytes"). */
#include "serve/serve.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds a string of n bytes (which must be valid UTF-8) to obj. */
static void add_strn(cJSON *obj, const char *key, const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return;
    memcpy(t, s, n);
    t[n] = 0;
    cJSON_AddStringToObject(obj, key, t);
    free(t);
}

/* The token's text, sanitised (malloc'd), and its raw bytes. */
static char *token_text(const struct lmc_tokenizer *tok, int32_t id, char **raw, size_t *raw_len) {
    char *t = NULL;
    size_t n = 0;
    lmc_err err = {0};
    *raw = NULL;
    *raw_len = 0;
    if (!tok || lmc_tokenizer_decode(tok, &id, 1, &t, &n, &err)) {
        char buf[32];
        snprintf(buf, sizeof buf, "<%d>", id);
        return strdup(buf);
    }
    /* a piece of a character is spelt "bytes:\\xNN..." as OpenAI does */
    bool valid = lmc_utf8_valid_prefix(t, n) == n;
    char *out = malloc(valid ? n + 1 : 6 + 4 * n + 1);
    if (out && valid) {
        memcpy(out, t, n);
        out[n] = 0;
    } else if (out) {
        size_t w = (size_t)sprintf(out, "bytes:");
        for (size_t i = 0; i < n; i++) w += (size_t)sprintf(out + w, "\\x%02x", (unsigned char)t[i]);
    }
    *raw = t;
    *raw_len = n;
    return out;
}

static cJSON *bytes_array(const char *raw, size_t n) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)raw[i]));
    return a;
}

/* Chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]} */
static cJSON *chat_logprobs(const struct lmc_serve_token *t, int64_t n, const struct lmc_tokenizer *tok) {
    cJSON *lp = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(lp, "content");
    for (int64_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        char *raw;
        size_t rl;
        char *s = token_text(tok, t[i].id, &raw, &rl);
        cJSON_AddStringToObject(o, "token", s ? s : "");
        cJSON_AddNumberToObject(o, "logprob", t[i].logprob);
        cJSON_AddItemToObject(o, "bytes", bytes_array(raw, rl));
        free(s);
        free(raw);
        cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
        for (int k = 0; k < t[i].n_top; k++) {
            cJSON *x = cJSON_CreateObject();
            s = token_text(tok, t[i].top_ids[k], &raw, &rl);
            cJSON_AddStringToObject(x, "token", s ? s : "");
            cJSON_AddNumberToObject(x, "logprob", t[i].top_logprobs[k]);
            cJSON_AddItemToObject(x, "bytes", bytes_array(raw, rl));
            free(s);
            free(raw);
            cJSON_AddItemToArray(tops, x);
        }
        cJSON_AddItemToArray(content, o);
    }
    return lp;
}

/* Completions: {tokens, token_logprobs, top_logprobs: [{tok: lp}], text_offset} */
static cJSON *completion_logprobs(const struct lmc_serve_token *t, int64_t n, const struct lmc_tokenizer *tok,
                                  size_t offset0) {
    cJSON *lp = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(lp, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(lp, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(lp, "text_offset");
    size_t off = offset0;
    for (int64_t i = 0; i < n; i++) {
        char *raw;
        size_t rl;
        char *s = token_text(tok, t[i].id, &raw, &rl);
        cJSON_AddItemToArray(toks, cJSON_CreateString(s ? s : ""));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t[i].logprob));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += rl;
        free(s);
        free(raw);
        cJSON *x = cJSON_CreateObject();
        for (int k = 0; k < t[i].n_top; k++) {
            s = token_text(tok, t[i].top_ids[k], &raw, &rl);
            if (s && !cJSON_GetObjectItemCaseSensitive(x, s))
                cJSON_AddNumberToObject(x, s, t[i].top_logprobs[k]);
            free(s);
            free(raw);
        }
        cJSON_AddItemToArray(tops, x);
    }
    return lp;
}

static cJSON *base_object(enum lmc_serve_kind kind, const char *id, int64_t created, const char *model,
                          bool chunk) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object",
                            kind == LMC_SERVE_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                   : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    return o;
}

static cJSON *usage_object(const struct lmc_serve_usage *u) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->prompt_tokens + u->completion_tokens));
    cJSON *d = cJSON_AddObjectToObject(o, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", (double)u->cached_tokens);
    return o;
}

static char *print_free(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *lmc_serve_format_response(enum lmc_serve_kind kind, const char *id, int64_t created,
                                const char *model, const struct lmc_serve_choice *ch, int n,
                                const struct lmc_serve_usage *u, bool logprobs,
                                const struct lmc_tokenizer *tok) {
    cJSON *o = base_object(kind, id, created, model, false);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", i);
        if (kind == LMC_SERVE_CHAT) {
            cJSON *m = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            add_strn(m, "content", ch[i].text, ch[i].text_len);
            if (logprobs) cJSON_AddItemToObject(c, "logprobs", chat_logprobs(ch[i].toks, ch[i].n_toks, tok));
            else cJSON_AddNullToObject(c, "logprobs");
        } else {
            add_strn(c, "text", ch[i].text, ch[i].text_len);
            if (logprobs)
                cJSON_AddItemToObject(c, "logprobs", completion_logprobs(ch[i].toks, ch[i].n_toks, tok, 0));
            else cJSON_AddNullToObject(c, "logprobs");
        }
        cJSON_AddStringToObject(c, "finish_reason", ch[i].finish_reason ? ch[i].finish_reason : "stop");
        cJSON_AddItemToArray(choices, c);
    }
    cJSON_AddItemToObject(o, "usage", usage_object(u));
    return print_free(o);
}

/* "data: " + json + "\n\n" */
static char *sse_wrap(char *json) {
    if (!json) return NULL;
    size_t n = strlen(json);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, json, n);
        memcpy(s + 6 + n, "\n\n", 3);
    }
    free(json);
    return s;
}

char *lmc_serve_format_chunk(enum lmc_serve_kind kind, const char *id, int64_t created,
                             const char *model, int index, const char *text, size_t text_len,
                             const struct lmc_serve_token *tk, const char *finish_reason,
                             bool first, const struct lmc_tokenizer *tok) {
    cJSON *o = base_object(kind, id, created, model, true);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    if (kind == LMC_SERVE_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (first) cJSON_AddStringToObject(d, "role", "assistant");
        if (text_len || !finish_reason) add_strn(d, "content", text, text_len);
        if (tk) cJSON_AddItemToObject(c, "logprobs", chat_logprobs(tk, 1, tok));
        else cJSON_AddNullToObject(c, "logprobs");
    } else {
        add_strn(c, "text", text, text_len);
        if (tk) cJSON_AddItemToObject(c, "logprobs", completion_logprobs(tk, 1, tok, 0));
        else cJSON_AddNullToObject(c, "logprobs");
    }
    if (finish_reason) cJSON_AddStringToObject(c, "finish_reason", finish_reason);
    else cJSON_AddNullToObject(c, "finish_reason");
    cJSON_AddItemToArray(choices, c);
    return sse_wrap(print_free(o));
}

char *lmc_serve_format_usage_chunk(enum lmc_serve_kind kind, const char *id, int64_t created,
                                   const char *model, const struct lmc_serve_usage *u) {
    cJSON *o = base_object(kind, id, created, model, true);
    cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToObject(o, "usage", usage_object(u));
    return sse_wrap(print_free(o));
}

char *lmc_serve_format_error(const struct lmc_serve_error *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON *x = cJSON_AddObjectToObject(o, "error");
    /* messages may quote request bytes: keep them valid UTF-8 */
    size_t n = strnlen(e->err.msg, sizeof e->err.msg);
    char *m = malloc(3 * n + 1);
    if (m) {
        size_t used;
        m[lmc_utf8_sanitize(e->err.msg, n, true, m, &used)] = 0;
    }
    cJSON_AddStringToObject(x, "message", m ? m : "error");
    free(m);
    cJSON_AddStringToObject(x, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0]) {
        n = strnlen(e->param, sizeof e->param);
        char p[3 * sizeof e->param + 1];
        size_t used;
        p[lmc_utf8_sanitize(e->param, n, true, p, &used)] = 0;
        cJSON_AddStringToObject(x, "param", p);
    } else {
        cJSON_AddNullToObject(x, "param");
    }
    if (e->code) cJSON_AddStringToObject(x, "code", e->code);
    else cJSON_AddNullToObject(x, "code");
    return print_free(o);
}

char *lmc_serve_format_models(const char *model, int64_t created, int64_t ctx, bool chat) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "lmc");
    cJSON_AddNumberToObject(m, "max_model_len", (double)ctx);
    cJSON_AddBoolToObject(m, "chat_template", chat);
    cJSON_AddItemToArray(data, m);
    return print_free(o);
}
