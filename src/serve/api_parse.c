/* api_parse.c — OpenAI request bodies (/v1/completions,
 * /v1/chat/completions) to validated lmc_serve_request values. Every
 * refusal is a 400-class lmc_serve_error naming the field, in the shape
 * OpenAI clients expect; nothing here allocates without a bound from the
 * limits. The fuzz target fuzz_serve_request.c drives lmc_serve_parse. */
#include "serve/serve.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STOP_USER (LMC_SCHED_MAX_STOP - 2) /* two kept for a template's turn stops */
#define MAX_STOP_LEN 512

void lmc_serve_limits_default(struct lmc_serve_limits *l) {
    memset(l, 0, sizeof *l);
    l->max_body = 1 << 20;
    l->ctx = 4096;
    l->max_n = 8;
    l->max_messages = 512;
}

lmc_status lmc_serve_fail(struct lmc_serve_error *e, int http, const char *param, const char *code,
                          const char *fmt, ...) {
    memset(e, 0, sizeof *e);
    e->http = http;
    e->type = http == 401   ? "authentication_error"
              : http == 404 ? "not_found_error"
              : http == 429 ? "rate_limit_error"
              : http >= 500 ? "server_error"
                            : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err.msg, sizeof e->err.msg, fmt, ap);
    va_end(ap);
    e->err.status = http >= 500 ? LMC_ERR_INTERNAL : LMC_ERR_ARG;
    return e->err.status;
}

void lmc_serve_request_free(struct lmc_serve_request *r) {
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < LMC_SCHED_MAX_STOP; i++) free(r->stops[i]);
    free(r->user);
    lmc_serve_ext_free(&r->x);
    memset(r, 0, sizeof *r);
}

/* ---- typed field readers: null means "not given" (returns 0), a wrong
 * type or range fails. Return: 1 set, 0 absent, -1 error (e filled). */
static int get_bool(const cJSON *it, const char *name, bool *out, struct lmc_serve_error *e) {
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsBool(it)) {
        lmc_serve_fail(e, 400, name, "invalid_type", "'%s' must be a boolean", name);
        return -1;
    }
    *out = cJSON_IsTrue(it);
    return 1;
}

static int get_num(const cJSON *it, const char *name, double lo, double hi, double *out,
                   struct lmc_serve_error *e) {
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsNumber(it)) {
        lmc_serve_fail(e, 400, name, "invalid_type", "'%s' must be a number", name);
        return -1;
    }
    double v = it->valuedouble;
    if (!isfinite(v) || v < lo || v > hi) {
        lmc_serve_fail(e, 400, name, "invalid_value", "'%s' = %g is out of range [%g, %g]", name, v, lo, hi);
        return -1;
    }
    *out = v;
    return 1;
}

static int get_int(const cJSON *it, const char *name, int64_t lo, int64_t hi, int64_t *out,
                   struct lmc_serve_error *e) {
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble != floor(it->valuedouble)) {
        lmc_serve_fail(e, 400, name, "invalid_type", "'%s' must be an integer", name);
        return -1;
    }
    double v = it->valuedouble;
    if (v < (double)lo || v > (double)hi) {
        lmc_serve_fail(e, 400, name, "invalid_value", "'%s' = %.0f is out of range [%lld, %lld]", name, v,
                       (long long)lo, (long long)hi);
        return -1;
    }
    *out = (int64_t)v;
    return 1;
}

static char *dup_str(const char *s, struct lmc_serve_error *e) {
    char *d = strdup(s);
    if (!d) lmc_serve_fail(e, 500, NULL, NULL, "out of memory");
    return d;
}

/* ---- prompt (completions): a string, [string], [ints] or [[ints]] */
static lmc_status parse_prompt(const cJSON *it, const struct lmc_serve_limits *lim,
                               struct lmc_serve_request *r, struct lmc_serve_error *e) {
    if (!it || cJSON_IsNull(it)) return lmc_serve_fail(e, 400, "prompt", "missing_required_parameter",
                                                       "'prompt' is required");
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 1 &&
        (cJSON_IsString(it->child) || cJSON_IsArray(it->child)))
        it = it->child; /* a batch of one */
    if (cJSON_IsString(it)) {
        r->prompt = dup_str(it->valuestring, e);
        return r->prompt ? LMC_OK : e->err.status;
    }
    if (!cJSON_IsArray(it))
        return lmc_serve_fail(e, 400, "prompt", "invalid_type",
                              "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(it);
    if (n == 0) return lmc_serve_fail(e, 400, "prompt", "invalid_value", "'prompt' is empty");
    if (n > lim->ctx)
        return lmc_serve_fail(e, 400, "prompt", "context_length_exceeded",
                              "the prompt has %d tokens; this model's maximum context length is %lld tokens",
                              n, (long long)lim->ctx);
    r->prompt_ids = malloc((size_t)n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return lmc_serve_fail(e, 500, NULL, NULL, "out of memory");
    int64_t hi = lim->vocab > 0 ? lim->vocab - 1 : INT32_MAX;
    int i = 0;
    for (const cJSON *c = it->child; c; c = c->next, i++) {
        int64_t v;
        if (get_int(c, "prompt", 0, hi, &v, e) != 1) {
            if (cJSON_IsNull(c)) lmc_serve_fail(e, 400, "prompt", "invalid_type", "'prompt' holds a null");
            else if (cJSON_IsString(c) || cJSON_IsArray(c))
                lmc_serve_fail(e, 400, "prompt", "invalid_value",
                               "'prompt' must be a single string or token-id array (batches are not supported)");
            return e->err.status;
        }
        r->prompt_ids[i] = (int32_t)v;
    }
    r->n_prompt_ids = n;
    return LMC_OK;
}

/* ---- messages (chat): [{role, content: string | [{type:"text", text}]}] */
static lmc_status parse_content(const cJSON *c, int idx, struct lmc_serve_error *e, char **out) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", idx);
    if (!c || cJSON_IsNull(c)) {
        *out = dup_str("", e);
        return *out ? LMC_OK : e->err.status;
    }
    if (cJSON_IsString(c)) {
        *out = dup_str(c->valuestring, e);
        return *out ? LMC_OK : e->err.status;
    }
    if (!cJSON_IsArray(c))
        return lmc_serve_fail(e, 400, param, "invalid_type", "'%s' must be a string or an array of text parts",
                              param);
    size_t total = 0;
    for (const cJSON *p = c->child; p; p = p->next) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "text") != 0 ||
            !cJSON_IsString(tx))
            return lmc_serve_fail(e, 400, param, "invalid_value",
                                  "'%s' parts must be {\"type\": \"text\", \"text\": ...} (only text is supported)",
                                  param);
        total += strlen(tx->valuestring);
    }
    char *s = malloc(total + 1);
    if (!s) return lmc_serve_fail(e, 500, NULL, NULL, "out of memory");
    size_t at = 0;
    for (const cJSON *p = c->child; p; p = p->next) {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(s + at, t, l);
        at += l;
    }
    s[at] = 0;
    *out = s;
    return LMC_OK;
}

static lmc_status parse_messages(const cJSON *it, const struct lmc_serve_limits *lim,
                                 struct lmc_serve_request *r, struct lmc_serve_error *e) {
    if (!it || cJSON_IsNull(it))
        return lmc_serve_fail(e, 400, "messages", "missing_required_parameter", "'messages' is required");
    if (!cJSON_IsArray(it))
        return lmc_serve_fail(e, 400, "messages", "invalid_type", "'messages' must be an array");
    int n = cJSON_GetArraySize(it);
    if (n == 0) return lmc_serve_fail(e, 400, "messages", "invalid_value", "'messages' is empty");
    if (n > lim->max_messages)
        return lmc_serve_fail(e, 400, "messages", "invalid_value", "'messages' has %d entries; at most %d",
                              n, lim->max_messages);
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return lmc_serve_fail(e, 500, NULL, NULL, "out of memory");
    int i = 0;
    for (const cJSON *m = it->child; m; m = m->next, i++) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m))
            return lmc_serve_fail(e, 400, param, "invalid_type", "'%s' must be an object", param);
        for (const cJSON *f = m->child; f; f = f->next)
            if (strcmp(f->string, "role") && strcmp(f->string, "content") && strcmp(f->string, "name") &&
                strcmp(f->string, "tool_calls") && strcmp(f->string, "tool_call_id")) {
                snprintf(param, sizeof param, "messages[%d].%.32s", i, f->string);
                return lmc_serve_fail(e, 400, param, "unsupported_parameter",
                                      "unsupported field '%s' in a message", param);
            }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role))
            return lmc_serve_fail(e, 400, param, "invalid_type", "'%s' must be a string", param);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return lmc_serve_fail(e, 400, param, "invalid_value",
                                  "'%s' must be system, developer, user, assistant or tool", param);
        char *content = NULL;
        if (parse_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, e, &content)) return e->err.status;
        char *rd = dup_str(rs, e);
        if (!rd) {
            free(content);
            return e->err.status;
        }
        r->msgs[i].role = rd;
        r->msgs[i].content = content;
        r->n_msgs = i + 1;
    }
    return LMC_OK;
}

static lmc_status parse_stop(const cJSON *it, struct lmc_serve_request *r, struct lmc_serve_error *e) {
    if (!it || cJSON_IsNull(it)) return LMC_OK;
    const cJSON *one = cJSON_IsString(it) ? it : NULL;
    if (!one && !cJSON_IsArray(it))
        return lmc_serve_fail(e, 400, "stop", "invalid_type", "'stop' must be a string or an array of strings");
    if (!one && cJSON_GetArraySize(it) > MAX_STOP_USER)
        return lmc_serve_fail(e, 400, "stop", "invalid_value", "'stop' has more than %d strings", MAX_STOP_USER);
    for (const cJSON *s = one ? one : it->child; s; s = one ? NULL : s->next) {
        if (!cJSON_IsString(s))
            return lmc_serve_fail(e, 400, "stop", "invalid_type", "'stop' entries must be strings");
        size_t l = strlen(s->valuestring);
        if (l == 0 || l > MAX_STOP_LEN)
            return lmc_serve_fail(e, 400, "stop", "invalid_value", "'stop' strings must have 1..%d bytes",
                                  MAX_STOP_LEN);
        if (!(r->stops[r->r.n_stop] = dup_str(s->valuestring, e))) return e->err.status;
        r->r.stop[r->r.n_stop] = r->stops[r->r.n_stop];
        r->r.n_stop++;
    }
    return LMC_OK;
}

static const char *const common_fields[] = {
    "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "min_p",
    "seed", "stop", "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs",
    "user", "ignore_eos", "best_of", "logit_bias", NULL};
static const char *const completion_fields[] = {"prompt", "echo", "suffix", "add_special_tokens",
                                                "response_format", NULL};
static const char *const chat_fields[] = {"messages", "top_logprobs", "max_completion_tokens",
                                          "response_format", "tools", "tool_choice",
                                          "parallel_tool_calls", NULL};

static bool in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return true;
    return false;
}

static lmc_status parse_object(enum lmc_serve_kind kind, const cJSON *root, const struct lmc_serve_limits *lim,
                               struct lmc_serve_request *r, struct lmc_serve_error *e) {
    for (const cJSON *f = root->child; f; f = f->next) {
        bool ok = in_list(common_fields, f->string) ||
                  in_list(kind == LMC_SERVE_CHAT ? chat_fields : completion_fields, f->string);
        if (!ok) {
            char p[64];
            snprintf(p, sizeof p, "%.60s", f->string);
            return lmc_serve_fail(e, 400, p, "unknown_parameter", "Unrecognized request argument supplied: %s",
                                  p);
        }
    }
#define G(x) cJSON_GetObjectItemCaseSensitive(root, x)
    const cJSON *model = G("model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model))
            return lmc_serve_fail(e, 400, "model", "invalid_type", "'model' must be a string");
        if (!(r->model = dup_str(model->valuestring, e))) return e->err.status;
    }
    const cJSON *user = G("user");
    if (user && !cJSON_IsNull(user)) {
        if (!cJSON_IsString(user)) return lmc_serve_fail(e, 400, "user", "invalid_type", "'user' must be a string");
        if (!(r->user = dup_str(user->valuestring, e))) return e->err.status;
    }
    if (get_bool(G("stream"), "stream", &r->stream, e) < 0) return e->err.status;
    const cJSON *so = G("stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so))
            return lmc_serve_fail(e, 400, "stream_options", "invalid_type", "'stream_options' must be an object");
        for (const cJSON *f = so->child; f; f = f->next)
            if (strcmp(f->string, "include_usage"))
                return lmc_serve_fail(e, 400, "stream_options", "unknown_parameter",
                                      "unknown field in 'stream_options' (only include_usage)");
        if (get_bool(cJSON_GetObjectItemCaseSensitive(so, "include_usage"), "stream_options.include_usage",
                     &r->include_usage, e) < 0)
            return e->err.status;
    }
    int64_t cap = lim->max_tokens > 0 ? lim->max_tokens : lim->ctx;
    int64_t v;
    int got = get_int(G("max_tokens"), "max_tokens", 1, cap, &v, e);
    if (got < 0) return e->err.status;
    if (got == 0 && kind == LMC_SERVE_CHAT)
        got = get_int(G("max_completion_tokens"), "max_completion_tokens", 1, cap, &v, e);
    if (got < 0) return e->err.status;
    r->r.max_tokens = got ? v : 0;

    struct lmc_sampler_params *p = &r->r.sampling;
    if (get_num(G("temperature"), "temperature", 0, 100, &p->temperature, e) < 0 ||
        get_num(G("top_p"), "top_p", 0, 1, &p->top_p, e) < 0 ||
        get_num(G("min_p"), "min_p", 0, 1, &p->min_p, e) < 0 ||
        get_num(G("presence_penalty"), "presence_penalty", -2, 2, &p->presence_penalty, e) < 0 ||
        get_num(G("frequency_penalty"), "frequency_penalty", -2, 2, &p->frequency_penalty, e) < 0 ||
        get_num(G("repetition_penalty"), "repetition_penalty", 1e-3, 100, &p->repeat_penalty, e) < 0)
        return e->err.status;
    if (p->top_p <= 0)
        return lmc_serve_fail(e, 400, "top_p", "invalid_value", "'top_p' must be in (0, 1]");
    got = get_int(G("top_k"), "top_k", -1, 1 << 30, &v, e);
    if (got < 0) return e->err.status;
    if (got) p->top_k = v < 0 ? 0 : v; /* -1 = off, as vLLM */
    got = get_int(G("seed"), "seed", -(INT64_C(1) << 53), INT64_C(1) << 53, &v, e);
    if (got < 0) return e->err.status;
    if (got) {
        p->seed = (uint64_t)v;
        r->seed_set = true;
    }
    got = get_int(G("n"), "n", 1, lim->max_n, &v, e);
    if (got < 0) return e->err.status;
    r->n = got ? (int)v : 1;
    got = get_int(G("best_of"), "best_of", r->n, r->n, &v, e);
    if (got < 0) return e->err.status;
    if (get_bool(G("ignore_eos"), "ignore_eos", &r->r.ignore_eos, e) < 0) return e->err.status;
    const cJSON *lb = G("logit_bias");
    if (lb && !cJSON_IsNull(lb) && !(cJSON_IsObject(lb) && !lb->child))
        return lmc_serve_fail(e, 400, "logit_bias", "unsupported_parameter", "'logit_bias' is not supported");
    if (parse_stop(G("stop"), r, e)) return e->err.status;

    r->r.top_logprobs = -1;
    if (kind == LMC_SERVE_COMPLETION) {
        got = get_int(G("logprobs"), "logprobs", 0, LMC_SCHED_MAX_TOP_LOGPROBS, &v, e);
        if (got < 0) return e->err.status;
        if (got) {
            r->logprobs = true;
            r->r.top_logprobs = (int)v;
        }
        if (get_bool(G("echo"), "echo", &r->echo, e) < 0) return e->err.status;
        const cJSON *sfx = G("suffix");
        if (sfx && !cJSON_IsNull(sfx) && !(cJSON_IsString(sfx) && !sfx->valuestring[0]))
            return lmc_serve_fail(e, 400, "suffix", "unsupported_parameter", "'suffix' is not supported");
        bool as;
        got = get_bool(G("add_special_tokens"), "add_special_tokens", &as, e);
        if (got < 0) return e->err.status;
        r->add_special = got ? as : -1;
        if (parse_prompt(G("prompt"), lim, r, e)) return e->err.status;
    } else {
        bool lp = false;
        if (get_bool(G("logprobs"), "logprobs", &lp, e) < 0) return e->err.status;
        got = get_int(G("top_logprobs"), "top_logprobs", 0, LMC_SCHED_MAX_TOP_LOGPROBS, &v, e);
        if (got < 0) return e->err.status;
        if (got && !lp)
            return lmc_serve_fail(e, 400, "top_logprobs", "invalid_value",
                                  "'top_logprobs' needs 'logprobs': true");
        if (lp) {
            r->logprobs = true;
            r->r.top_logprobs = got ? (int)v : 0;
        }
        r->add_special = 0;
        if (parse_messages(G("messages"), lim, r, e)) return e->err.status;
    }
    if (lmc_serve_ext_parse(root, r, e)) return e->err.status; /* tools, tool_choice, response_format */
#undef G
    lmc_err se = {0};
    if (lmc_sampler_check(p, &se))
        return lmc_serve_fail(e, 400, NULL, "invalid_value", "%s", se.msg);
    return LMC_OK;
}

lmc_status lmc_serve_parse(enum lmc_serve_kind kind, const char *body, size_t len,
                           const struct lmc_serve_limits *lim, struct lmc_serve_request *out,
                           struct lmc_serve_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    lmc_sampler_defaults(&out->r.sampling);
    out->r.stop[0] = NULL;
    if (len > lim->max_body)
        return lmc_serve_fail(e, 413, NULL, "request_too_large", "request body of %zu bytes exceeds the limit of %zu",
                              len, lim->max_body);
    if (len == 0) return lmc_serve_fail(e, 400, NULL, "invalid_json", "empty request body; expected a JSON object");
    size_t ok = lmc_utf8_valid_prefix(body, len);
    if (ok != len)
        return lmc_serve_fail(e, 400, NULL, "invalid_encoding", "request body is not valid UTF-8 (byte %zu)", ok);
    if (memchr(body, 0, len))
        return lmc_serve_fail(e, 400, NULL, "invalid_json", "request body contains a NUL byte");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return lmc_serve_fail(e, 400, NULL, "invalid_json", "request body is not valid JSON (near byte %zu)", at);
    }
    for (const char *q = end; q && q < body + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\r' && *q != '\n') {
            cJSON_Delete(root);
            return lmc_serve_fail(e, 400, NULL, "invalid_json", "trailing bytes after the JSON object");
        }
    lmc_status st;
    if (!cJSON_IsObject(root)) st = lmc_serve_fail(e, 400, NULL, "invalid_json", "request body must be a JSON object");
    else st = parse_object(kind, root, lim, out, e);
    cJSON_Delete(root);
    if (st) lmc_serve_request_free(out);
    return st;
}

lmc_status lmc_serve_check_length(struct lmc_serve_request *r, int64_t n_prompt,
                                  const struct lmc_serve_limits *lim, struct lmc_serve_error *e) {
    const char *field = r->kind == LMC_SERVE_CHAT ? "messages" : "prompt";
    if (n_prompt <= 0) return lmc_serve_fail(e, 400, field, "invalid_value", "the prompt is empty (0 tokens)");
    if (n_prompt >= lim->ctx)
        return lmc_serve_fail(e, 400, field, "context_length_exceeded",
                              "This model's maximum context length is %lld tokens. However, your prompt has %lld "
                              "tokens, leaving no room for the completion.",
                              (long long)lim->ctx, (long long)n_prompt);
    int64_t cap = lim->max_tokens > 0 ? lim->max_tokens : lim->ctx;
    if (r->r.max_tokens <= 0) {
        r->r.max_tokens = LMC_MIN(cap, lim->ctx - n_prompt);
    } else if (n_prompt + r->r.max_tokens > lim->ctx) {
        return lmc_serve_fail(e, 400, "max_tokens", "context_length_exceeded",
                              "This model's maximum context length is %lld tokens. However, you requested %lld "
                              "tokens (%lld in the prompt, %lld for the completion).",
                              (long long)lim->ctx, (long long)(n_prompt + r->r.max_tokens), (long long)n_prompt,
                              (long long)r->r.max_tokens);
    }
    return LMC_OK;
}

lmc_status lmc_serve_add_turn_stops(struct lmc_serve_request *r, const struct lmc_chat_template *ct,
                                    struct lmc_serve_error *e) {
    /* a grammar ends the reply itself (end of sequence once complete); a turn
     * marker's text inside a JSON string must not cut it */
    if (r->r.grammar) return LMC_OK;
    const char *s[LMC_CHAT_MAX_TURN_STOPS];
    int n = lmc_chat_template_turn_stops(ct, s);
    if (r->r.n_stop + n > LMC_SCHED_MAX_STOP)
        return lmc_serve_fail(e, 400, "stop", "invalid_value", "too many stop strings");
    for (int i = 0; i < n; i++) r->r.stop[r->r.n_stop++] = s[i];
    return LMC_OK;
}
