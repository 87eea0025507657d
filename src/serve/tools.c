/* tools.c — tool calling and structured output of the OpenAI endpoints
 * (see tools.h). tool_choice "required" and a named function constrain
 * sampling as vLLM does: a named function's output is its arguments (the
 * grammar of its parameter schema), "required" outputs a JSON list of
 * {"name", "arguments"} (one entry when parallel_tool_calls is false),
 * read back with the generic JSON tool-call parser; "auto" leaves the
 * model free and reads its reply by the template's tool-call format. */
#include "serve/tools.h"
#include "core/core.h"
#include "infer/tool_call.h"
#include "serve/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOOLS 128
#define ARG_FRAGMENT 24 /* bytes of arguments per streamed delta */

void lmc_serve_ext_free(struct lmc_serve_ext *x) {
    cJSON_Delete(x->messages);
    cJSON_Delete(x->tools);
    free(x->choice_name);
    lmc_grammar_free(x->grammar);
    memset(x, 0, sizeof *x);
}

bool lmc_serve_ext_tool_mode(const struct lmc_serve_ext *x) {
    return x->tools && x->choice != LMC_SERVE_TOOLS_NONE;
}

static lmc_status oom(struct lmc_serve_error *e) { return lmc_serve_fail(e, 500, NULL, NULL, "out of memory"); }

/* ---- tools: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}] */
static lmc_status parse_tools(const cJSON *t, struct lmc_serve_ext *x, struct lmc_serve_error *e) {
    if (!t || cJSON_IsNull(t)) return LMC_OK;
    if (!cJSON_IsArray(t)) return lmc_serve_fail(e, 400, "tools", "invalid_type", "'tools' must be an array");
    int n = cJSON_GetArraySize(t);
    if (n > MAX_TOOLS) return lmc_serve_fail(e, 400, "tools", "invalid_value", "'tools' has %d entries; at most %d", n, MAX_TOOLS);
    int i = 0;
    for (const cJSON *it = t->child; it; it = it->next, i++) {
        char p[64];
        snprintf(p, sizeof p, "tools[%d]", i);
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(it, "function");
        if (!cJSON_IsObject(it) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsObject(fn))
            return lmc_serve_fail(e, 400, p, "invalid_value",
                                  "'%s' must be {\"type\": \"function\", \"function\": {...}}", p);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *par = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 64)
            return lmc_serve_fail(e, 400, p, "invalid_value", "'%s.function.name' must be a string of 1..64 bytes", p);
        if (par && !cJSON_IsNull(par) && !cJSON_IsObject(par))
            return lmc_serve_fail(e, 400, p, "invalid_type", "'%s.function.parameters' must be a JSON Schema object", p);
        if (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc))
            return lmc_serve_fail(e, 400, p, "invalid_type", "'%s.function.description' must be a string", p);
    }
    if (n == 0) return LMC_OK; /* [] is no tools */
    if (!(x->tools = cJSON_Duplicate(t, true))) return oom(e);
    return LMC_OK;
}

static const cJSON *find_tool(const struct lmc_serve_ext *x, const char *name) {
    for (const cJSON *it = x->tools ? x->tools->child : NULL; it; it = it->next) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(it, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!strcmp(nm->valuestring, name)) return fn;
    }
    return NULL;
}

static lmc_status parse_choice(const cJSON *c, struct lmc_serve_ext *x, struct lmc_serve_error *e) {
    x->choice = LMC_SERVE_TOOLS_AUTO;
    if (!c || cJSON_IsNull(c)) return LMC_OK;
    if (cJSON_IsString(c)) {
        const char *v = c->valuestring;
        if (!strcmp(v, "auto")) x->choice = LMC_SERVE_TOOLS_AUTO;
        else if (!strcmp(v, "none")) x->choice = LMC_SERVE_TOOLS_NONE;
        else if (!strcmp(v, "required")) x->choice = LMC_SERVE_TOOLS_REQUIRED;
        else
            return lmc_serve_fail(e, 400, "tool_choice", "invalid_value",
                                  "'tool_choice' must be \"auto\", \"none\", \"required\" or a function");
    } else {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(c, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsObject(c) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsString(nm))
            return lmc_serve_fail(e, 400, "tool_choice", "invalid_value",
                                  "'tool_choice' object must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
        if (!find_tool(x, nm->valuestring))
            return lmc_serve_fail(e, 400, "tool_choice", "invalid_value",
                                  "'tool_choice' names function '%.64s', which is not in 'tools'", nm->valuestring);
        x->choice = LMC_SERVE_TOOLS_NAMED;
        if (!(x->choice_name = strdup(nm->valuestring))) return oom(e);
    }
    if (x->choice != LMC_SERVE_TOOLS_AUTO && x->choice != LMC_SERVE_TOOLS_NONE && !x->tools)
        return lmc_serve_fail(e, 400, "tool_choice", "invalid_value", "'tool_choice' needs 'tools'");
    return LMC_OK;
}

/* ---- messages as the template sees them: role, content (null for an
 * assistant turn with only tool calls), name, tool_calls (arguments as
 * objects where they parse, as vLLM passes them), tool_call_id */
static lmc_status parse_tool_calls(const cJSON *tc, int i, cJSON *out, struct lmc_serve_error *e) {
    char p[64];
    snprintf(p, sizeof p, "messages[%d].tool_calls", i);
    if (!cJSON_IsArray(tc)) return lmc_serve_fail(e, 400, p, "invalid_type", "'%s' must be an array", p);
    cJSON *arr = cJSON_AddArrayToObject(out, "tool_calls");
    if (!arr) return oom(e);
    for (const cJSON *c = tc->child; c; c = c->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsObject(c) || !cJSON_IsObject(fn) || !cJSON_IsString(nm) || (id && !cJSON_IsString(id)) ||
            (args && !cJSON_IsString(args) && !cJSON_IsObject(args)))
            return lmc_serve_fail(e, 400, p, "invalid_value",
                                  "'%s' entries must be {\"id\", \"type\": \"function\", \"function\": {\"name\", "
                                  "\"arguments\"}}", p);
        cJSON *o = cJSON_CreateObject(), *f = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        if (id) cJSON_AddStringToObject(o, "id", id->valuestring);
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddItemToObject(o, "function", f);
        cJSON_AddStringToObject(f, "name", nm->valuestring);
        cJSON *a = NULL;
        if (cJSON_IsString(args)) a = cJSON_Parse(args->valuestring);
        if (a && !cJSON_IsObject(a)) {
            cJSON_Delete(a);
            a = NULL;
        }
        if (!a) a = args && cJSON_IsObject(args) ? cJSON_Duplicate(args, true)
                    : cJSON_CreateString(args ? args->valuestring : "{}");
        cJSON_AddItemToObject(f, "arguments", a);
    }
    return LMC_OK;
}

static lmc_status parse_messages(const cJSON *msgs, const struct lmc_serve_request *r, struct lmc_serve_ext *x,
                                 struct lmc_serve_error *e) {
    if (!(x->messages = cJSON_CreateArray())) return oom(e);
    int i = 0;
    for (const cJSON *m = msgs->child; m && i < r->n_msgs; m = m->next, i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) return oom(e);
        cJSON_AddItemToArray(x->messages, o);
        cJSON_AddStringToObject(o, "role", r->msgs[i].role);
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        bool calls = tc && !cJSON_IsNull(tc);
        char p[64];
        if (calls && strcmp(r->msgs[i].role, "assistant")) {
            snprintf(p, sizeof p, "messages[%d].tool_calls", i);
            return lmc_serve_fail(e, 400, p, "invalid_value", "'%s' is only allowed in assistant messages", p);
        }
        if (calls && (!c || cJSON_IsNull(c))) cJSON_AddNullToObject(o, "content");
        else cJSON_AddStringToObject(o, "content", r->msgs[i].content);
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(nm)) cJSON_AddStringToObject(o, "name", nm->valuestring);
        if (calls && parse_tool_calls(tc, i, o, e)) return e->err.status;
        const cJSON *tid = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
        if (tid && !cJSON_IsNull(tid)) {
            snprintf(p, sizeof p, "messages[%d].tool_call_id", i);
            if (!cJSON_IsString(tid)) return lmc_serve_fail(e, 400, p, "invalid_type", "'%s' must be a string", p);
            cJSON_AddStringToObject(o, "tool_call_id", tid->valuestring);
        }
    }
    return LMC_OK;
}

/* ---- the grammar */
static lmc_status schema_grammar(const cJSON *schema, const char *param, struct lmc_serve_ext *x,
                                 struct lmc_serve_error *e) {
    char *t = cJSON_PrintUnformatted(schema);
    if (!t) return oom(e);
    lmc_err err = {0};
    lmc_status st = lmc_grammar_from_json_schema(t, strlen(t), &x->grammar, &err);
    free(t);
    if (st == LMC_ERR_OOM) return oom(e);
    if (st) return lmc_serve_fail(e, 400, param, "invalid_value", "%s", err.msg);
    return LMC_OK;
}

static cJSON *params_of(const cJSON *fn) {
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    if (cJSON_IsObject(par)) return cJSON_Duplicate(par, true);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "object");
    return o;
}

static lmc_status tool_grammar(struct lmc_serve_ext *x, struct lmc_serve_error *e) {
    if (x->choice == LMC_SERVE_TOOLS_NAMED) {
        cJSON *s = params_of(find_tool(x, x->choice_name));
        lmc_status st = s ? schema_grammar(s, "tools", x, e) : oom(e);
        cJSON_Delete(s);
        return st;
    }
    /* required: [{"name": const, "arguments": parameters} | ...], at least one */
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "array");
    cJSON_AddNumberToObject(s, "minItems", 1);
    if (!x->parallel) cJSON_AddNumberToObject(s, "maxItems", 1);
    cJSON *any = cJSON_AddArrayToObject(cJSON_AddObjectToObject(s, "items"), "anyOf");
    for (const cJSON *it = x->tools->child; it; it = it->next) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(it, "function");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(any, o);
        cJSON_AddStringToObject(o, "type", "object");
        cJSON *props = cJSON_AddObjectToObject(o, "properties");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(props, "name"), "const",
                                cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring);
        cJSON_AddItemToObject(props, "arguments", params_of(fn));
        cJSON *req = cJSON_AddArrayToObject(o, "required");
        cJSON_AddItemToArray(req, cJSON_CreateString("name"));
        cJSON_AddItemToArray(req, cJSON_CreateString("arguments"));
    }
    lmc_status st = schema_grammar(s, "tools", x, e);
    cJSON_Delete(s);
    return st;
}

static lmc_status parse_response_format(const cJSON *rf, struct lmc_serve_ext *x, struct lmc_serve_error *e) {
    if (!rf || cJSON_IsNull(rf)) return LMC_OK;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(t))
        return lmc_serve_fail(e, 400, "response_format", "invalid_value",
                              "'response_format' must be an object with a 'type'");
    if (!strcmp(t->valuestring, "text")) return LMC_OK;
    if (!strcmp(t->valuestring, "json_object")) {
        x->rf = LMC_SERVE_RF_JSON_OBJECT;
        lmc_err err = {0};
        lmc_status st = lmc_grammar_json_object(&x->grammar, &err);
        return st ? lmc_serve_fail(e, st == LMC_ERR_OOM ? 500 : 400, "response_format", NULL, "%s", err.msg) : LMC_OK;
    }
    if (strcmp(t->valuestring, "json_schema"))
        return lmc_serve_fail(e, 400, "response_format", "invalid_value",
                              "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name");
    if (!cJSON_IsObject(js) || !cJSON_IsString(name))
        return lmc_serve_fail(e, 400, "response_format.json_schema", "invalid_value",
                              "'response_format.json_schema' must be an object with a 'name'");
    if (!cJSON_IsObject(schema))
        return lmc_serve_fail(e, 400, "response_format.json_schema.schema", "invalid_value",
                              "'response_format.json_schema.schema' must be a JSON Schema object");
    x->rf = LMC_SERVE_RF_JSON_SCHEMA;
    return schema_grammar(schema, "response_format.json_schema.schema", x, e);
}

lmc_status lmc_serve_ext_parse(const cJSON *root, struct lmc_serve_request *r, struct lmc_serve_error *e) {
    struct lmc_serve_ext *x = &r->x;
    x->parallel = true;
    bool chat = r->kind == LMC_SERVE_CHAT;
    if (chat) {
        if (parse_tools(cJSON_GetObjectItemCaseSensitive(root, "tools"), x, e) ||
            parse_choice(cJSON_GetObjectItemCaseSensitive(root, "tool_choice"), x, e))
            return e->err.status;
        const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parallel_tool_calls");
        if (par && !cJSON_IsNull(par)) {
            if (!cJSON_IsBool(par))
                return lmc_serve_fail(e, 400, "parallel_tool_calls", "invalid_type",
                                      "'parallel_tool_calls' must be a boolean");
            x->parallel = cJSON_IsTrue(par);
        }
        if (parse_messages(cJSON_GetObjectItemCaseSensitive(root, "messages"), r, x, e)) return e->err.status;
    }
    bool forced = x->choice == LMC_SERVE_TOOLS_REQUIRED || x->choice == LMC_SERVE_TOOLS_NAMED;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (parse_response_format(rf, x, e)) return e->err.status;
    if (forced && x->grammar)
        return lmc_serve_fail(e, 400, "response_format", "invalid_value",
                              "'response_format' cannot be combined with tool_choice \"required\" or a named function");
    if (forced && tool_grammar(x, e)) return e->err.status;
    r->r.grammar = x->grammar;
    return LMC_OK;
}

lmc_status lmc_serve_ext_render(const struct lmc_chat_template *ct, const struct lmc_serve_ext *x, char **out,
                                lmc_err *err) {
    struct lmc_chat_render_opts o = {0};
    o.add_generation_prompt = true;
    o.tools = x->choice == LMC_SERVE_TOOLS_NONE ? NULL : x->tools;
    return lmc_chat_template_render(ct, x->messages, &o, out, err);
}

/* ---- the "required" list [{"name": ..., "arguments": ...}, ...], read
 * as it decodes: where each call's name and raw arguments text lie */
struct req_call {
    size_t name_at, name_end, args_at, args_end;
    bool named, has_args, args_done;
};

static size_t sk_ws(const char *t, size_t n, size_t p) {
    while (p < n && (t[p] == ' ' || t[p] == '\n' || t[p] == '\t' || t[p] == '\r')) p++;
    return p;
}

/* a JSON value at t[p]: 1 complete (*end after it), 0 cut by the end of text */
static int sk_value(const char *t, size_t n, size_t p, size_t *end) {
    if (p >= n) return 0;
    int depth = 0;
    bool in_str = false;
    if (t[p] != '"' && t[p] != '{' && t[p] != '[') { /* a scalar: up to a delimiter */
        while (p < n && !strchr(",]} \t\n\r", t[p])) p++;
        *end = p;
        return p < n;
    }
    for (; p < n; p++) {
        char ch = t[p];
        if (in_str) {
            if (ch == '\\') p++;
            else if (ch == '"') {
                in_str = false;
                if (depth == 0) break;
            }
        } else if (ch == '"') in_str = true;
        else if (ch == '{' || ch == '[') depth++;
        else if ((ch == '}' || ch == ']') && --depth == 0) break;
    }
    if (p >= n) return 0;
    *end = p + 1;
    return 1;
}

/* the calls of text (cap of them into c); returns how many were seen */
static int req_scan(const char *t, size_t n, struct req_call *c, int cap) {
    size_t p = sk_ws(t, n, 0), end = 0;
    if (p >= n || t[p] != '[') return 0;
    int cnt = 0;
    for (p++;;) {
        p = sk_ws(t, n, p);
        if (p < n && t[p] == ',') {
            p++;
            continue;
        }
        if (p >= n || t[p] != '{') return cnt;
        struct req_call dummy, *k = cnt < cap ? &c[cnt] : &dummy;
        memset(k, 0, sizeof *k);
        cnt++;
        for (p++;;) {
            p = sk_ws(t, n, p);
            if (p < n && t[p] == ',') {
                p++;
                continue;
            }
            if (p < n && t[p] == '}') {
                p++;
                break;
            }
            size_t ks = p;
            if (p >= n || t[p] != '"' || sk_value(t, n, p, &end) != 1) return cnt;
            size_t ke = end;
            p = sk_ws(t, n, ke);
            if (p >= n || t[p] != ':') return cnt;
            p = sk_ws(t, n, p + 1);
            int r = sk_value(t, n, p, &end);
            if (ke - ks == 11 && !memcmp(t + ks, "\"arguments\"", 11) && p < n) {
                k->has_args = true;
                k->args_at = p;
                k->args_end = r == 1 ? end : n;
                k->args_done = r == 1;
            } else if (ke - ks == 6 && !memcmp(t + ks, "\"name\"", 6) && r == 1 && t[p] == '"') {
                k->named = true;
                k->name_at = p;
                k->name_end = end;
            }
            if (r != 1) return cnt;
            p = end;
        }
    }
}

/* the calls of text in a new array (NULL with *cnt 0 when none, or out of memory) */
static struct req_call *req_calls(const char *t, size_t n, int *cnt) {
    *cnt = req_scan(t, n, NULL, 0);
    struct req_call *c = *cnt ? calloc((size_t)*cnt, sizeof *c) : NULL;
    if (!c) *cnt = 0;
    else req_scan(t, n, c, *cnt);
    return c;
}

/* The raw arguments texts of a "required" reply in place of the reprinted
 * ones, so that the streamed fragments join to them; left as they are
 * unless the list holds exactly the parsed calls, complete and named. */
static lmc_status raw_arguments(struct lmc_tool_parse *p, const char *t, size_t n) {
    int cnt = 0;
    struct req_call *c = req_calls(t, n, &cnt);
    bool ok = cnt == p->n_calls && cnt > 0;
    for (int i = 0; i < cnt && ok; i++) ok = c[i].named && c[i].args_done;
    for (int i = 0; i < cnt && ok; i++) {
        size_t m = c[i].args_end - c[i].args_at;
        char *a = malloc(m + 1);
        if (!a) {
            free(c);
            return LMC_ERR_OOM;
        }
        memcpy(a, t + c[i].args_at, m);
        a[m] = 0;
        free(p->calls[i].arguments);
        p->calls[i].arguments = a;
    }
    free(c);
    return LMC_OK;
}

/* ---- replies */
static cJSON *calls_json(const struct lmc_tool_parse *p, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject(), *f = cJSON_CreateObject();
        cJSON_AddItemToArray(a, c);
        cJSON_AddStringToObject(c, "id", p->calls[i].id);
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddItemToObject(c, "function", f);
        cJSON_AddStringToObject(f, "name", p->calls[i].name);
        cJSON_AddStringToObject(f, "arguments", p->calls[i].arguments);
    }
    return a;
}

cJSON *lmc_serve_ext_reply(const struct lmc_serve_ext *x, const char *format, const char *text, size_t len,
                           const char *finish_reason) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    struct lmc_tool_parse p = {0};
    lmc_err err = {0};
    lmc_status st = LMC_OK;
    if (x->choice == LMC_SERVE_TOOLS_NAMED) { /* the text is the arguments */
        char *t = malloc(len + 1);
        if (t) {
            memcpy(t, text, len);
            t[len] = 0;
        }
        cJSON *args = t ? cJSON_Parse(t) : NULL;
        free(t);
        if (cJSON_IsObject(args)) { /* a call in the shape of the generic format, parsed by it */
            cJSON *call = cJSON_CreateObject();
            cJSON_AddStringToObject(call, "name", x->choice_name);
            cJSON_AddItemToObject(call, "arguments", args);
            args = NULL;
            char *ct = cJSON_PrintUnformatted(call);
            cJSON_Delete(call);
            st = ct ? lmc_tool_calls_parse(ct, strlen(ct), LMC_TOOL_JSON, &p, &err) : LMC_ERR_OOM;
            free(ct);
            if (!st && p.n_calls == 1) {
                free(p.content);
                p.content = strdup("");
            }
        } else {
            st = lmc_tool_calls_parse("", 0, LMC_TOOL_JSON, &p, &err); /* no call: the text stays content */
        }
        cJSON_Delete(args);
        if (!st && p.n_calls == 0) {
            free(p.content);
            p.content = malloc(len + 1);
            if (p.content) {
                memcpy(p.content, text, len);
                p.content[len] = 0;
            }
        }
    } else {
        enum lmc_tool_format f = x->choice == LMC_SERVE_TOOLS_REQUIRED ? LMC_TOOL_JSON : lmc_tool_format_from_name(format);
        st = lmc_tool_calls_parse(text, len, f, &p, &err);
        if (!st && x->choice == LMC_SERVE_TOOLS_REQUIRED) st = raw_arguments(&p, text, len);
    }
    if (st || !p.content) {
        lmc_tool_parse_free(&p);
        cJSON_Delete(o);
        return NULL;
    }
    int n = x->parallel ? p.n_calls : LMC_MIN(p.n_calls, 1);
    bool calls = n > 0 && strcmp(finish_reason ? finish_reason : "stop", "length") != 0;
    if (calls && !p.content[0]) cJSON_AddNullToObject(o, "content");
    else if (calls) cJSON_AddStringToObject(o, "content", p.content);
    else {
        char *t = malloc(len + 1);
        if (t) {
            memcpy(t, text, len);
            t[len] = 0;
            cJSON_AddStringToObject(o, "content", t);
        }
        free(t);
    }
    if (calls) cJSON_AddItemToObject(o, "tool_calls", calls_json(&p, n));
    cJSON_AddStringToObject(o, "finish_reason", calls ? "tool_calls" : finish_reason ? finish_reason : "stop");
    lmc_tool_parse_free(&p);
    return o;
}

/* Generated call ids ("call_" + a hash of the reply) made unique per
 * response and choice, so that the same call made in two turns of a
 * conversation does not repeat an id; ids the model gave are kept. */
static void salt_ids(cJSON *rep, const char *rid, int index) {
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(rep, "tool_calls");
    int k = 0;
    for (cJSON *c = tc ? tc->child : NULL; c; c = c->next, k++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        if (!cJSON_IsString(id) || strncmp(id->valuestring, "call_", 5)) continue;
        uint64_t h = 1469598103934665603ull;
        for (const char *p = rid ? rid : ""; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        for (const char *p = id->valuestring; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ (uint64_t)index) * 1099511628211ull;
        h = (h ^ (uint64_t)k) * 1099511628211ull;
        char buf[48];
        snprintf(buf, sizeof buf, "call_%016llx%08llx", (unsigned long long)h,
                 (unsigned long long)((h * 0x9e3779b97f4a7c15ull) >> 32));
        cJSON_ReplaceItemInObjectCaseSensitive(c, "id", cJSON_CreateString(buf));
    }
}

char *lmc_serve_ext_response(char *body, const struct lmc_serve_ext *x, const char *format, const char *const *texts,
                             const size_t *lens, int n) {
    cJSON *root = body ? cJSON_Parse(body) : NULL;
    free(body);
    if (!root) return NULL;
    const cJSON *chs = cJSON_GetObjectItemCaseSensitive(root, "choices");
    int i = 0;
    bool ok = true;
    for (cJSON *c = chs ? chs->child : NULL; c && i < n && ok; c = c->next, i++) {
        cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        cJSON *rep = lmc_serve_ext_reply(x, format, texts[i], lens[i], cJSON_IsString(fr) ? fr->valuestring : NULL);
        if (!rep || !msg) {
            cJSON_Delete(rep);
            ok = false;
            break;
        }
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(root, "id");
        salt_ids(rep, cJSON_IsString(rid) ? rid->valuestring : NULL, i);
        cJSON_ReplaceItemInObjectCaseSensitive(msg, "content", cJSON_DetachItemFromObject(rep, "content"));
        cJSON *tc = cJSON_DetachItemFromObject(rep, "tool_calls");
        if (tc) cJSON_AddItemToObject(msg, "tool_calls", tc);
        cJSON_ReplaceItemInObjectCaseSensitive(c, "finish_reason", cJSON_DetachItemFromObject(rep, "finish_reason"));
        cJSON_Delete(rep);
    }
    char *out = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return out;
}

/* ---- stream events */
static cJSON *chunk(const char *id, int64_t created, const char *model, int index, cJSON **delta) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
    cJSON_AddNumberToObject(ch, "index", index);
    *delta = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddNullToObject(ch, "finish_reason");
    return o;
}

struct sbuf { char *p; size_t n, cap; bool oom; };

static void emit(struct sbuf *b, cJSON *o) {
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    size_t k = t ? strlen(t) : 0;
    if (!t || b->oom) {
        free(t);
        b->oom = true;
        return;
    }
    if (b->n + k + 9 > b->cap) {
        size_t nc = (b->n + k + 9) * 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            free(t);
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, "data: ", 6);
    memcpy(b->p + b->n + 6, t, k);
    memcpy(b->p + b->n + 6 + k, "\n\n", 3);
    b->n += k + 8;
    free(t);
}

/* the length of a prefix of s of about n bytes that ends on a character boundary */
static size_t utf8_cut(const char *s, size_t len, size_t n) {
    if (n >= len) return len;
    while (n < len && ((unsigned char)s[n] & 0xc0) == 0x80) n++;
    return n;
}

char *lmc_serve_ext_stream(const struct lmc_serve_ext *x, const char *format, const char *id, int64_t created,
                           const char *model, int index, bool first, const char *text, size_t len,
                           const char *finish_reason) {
    cJSON *rep = lmc_serve_ext_reply(x, format, text, len, finish_reason);
    if (!rep) return NULL;
    salt_ids(rep, id, index);
    struct sbuf b = {0};
    cJSON *d;
    if (first) {
        cJSON *o = chunk(id, created, model, index, &d);
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        emit(&b, o);
    }
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(rep, "content");
    if (cJSON_IsString(content) && content->valuestring[0]) {
        cJSON *o = chunk(id, created, model, index, &d);
        cJSON_AddStringToObject(d, "content", content->valuestring);
        emit(&b, o);
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(rep, "tool_calls");
    int k = 0;
    for (const cJSON *c = tc ? tc->child : NULL; c; c = c->next, k++) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const char *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring;
        cJSON *o = chunk(id, created, model, index, &d), *call = cJSON_CreateObject(), *f = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call);
        cJSON_AddNumberToObject(call, "index", k);
        cJSON_AddStringToObject(call, "id", cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring);
        cJSON_AddStringToObject(call, "type", "function");
        cJSON_AddItemToObject(call, "function", f);
        cJSON_AddStringToObject(f, "name", cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring);
        cJSON_AddStringToObject(f, "arguments", "");
        emit(&b, o);
        size_t n = strlen(args);
        for (size_t at = 0; at < n;) {
            size_t m = utf8_cut(args + at, n - at, ARG_FRAGMENT);
            char frag[ARG_FRAGMENT + 8];
            size_t fm = LMC_MIN(m, sizeof frag - 1);
            m = fm;
            memcpy(frag, args + at, m);
            frag[m] = 0;
            o = chunk(id, created, model, index, &d);
            call = cJSON_CreateObject();
            f = cJSON_CreateObject();
            cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call);
            cJSON_AddNumberToObject(call, "index", k);
            cJSON_AddItemToObject(call, "function", f);
            cJSON_AddStringToObject(f, "arguments", frag);
            emit(&b, o);
            at += m;
        }
    }
    cJSON *o = chunk(id, created, model, index, &d);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    cJSON_ReplaceItemInObjectCaseSensitive(ch, "finish_reason",
                                           cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rep, "finish_reason"), 0));
    emit(&b, o);
    cJSON_Delete(rep);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *lmc_serve_ext_stream_named(const struct lmc_serve_ext *x, const char *id, int64_t created, const char *model,
                                 int index, bool first, const char *text, size_t len, const char *finish_reason) {
    struct sbuf b = {0};
    cJSON *d, *o, *call, *f;
    if (first) {
        o = chunk(id, created, model, index, &d);
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        emit(&b, o);
        uint64_t h = 1469598103934665603ull;
        for (const char *p = id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ (uint64_t)index) * 1099511628211ull;
        char cid[48];
        snprintf(cid, sizeof cid, "call_%016llx%08llx", (unsigned long long)h,
                 (unsigned long long)((h * 0x9e3779b97f4a7c15ull) >> 32));
        o = chunk(id, created, model, index, &d);
        call = cJSON_CreateObject();
        f = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call);
        cJSON_AddNumberToObject(call, "index", 0);
        cJSON_AddStringToObject(call, "id", cid);
        cJSON_AddStringToObject(call, "type", "function");
        cJSON_AddItemToObject(call, "function", f);
        cJSON_AddStringToObject(f, "name", x->choice_name ? x->choice_name : "");
        cJSON_AddStringToObject(f, "arguments", "");
        emit(&b, o);
    }
    if (len) {
        char *t = malloc(len + 1);
        if (!t) b.oom = true;
        else {
            memcpy(t, text, len);
            t[len] = 0;
            o = chunk(id, created, model, index, &d);
            call = cJSON_CreateObject();
            f = cJSON_CreateObject();
            cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call);
            cJSON_AddNumberToObject(call, "index", 0);
            cJSON_AddItemToObject(call, "function", f);
            cJSON_AddStringToObject(f, "arguments", t);
            emit(&b, o);
            free(t);
        }
    }
    if (finish_reason) {
        o = chunk(id, created, model, index, &d);
        cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
        cJSON_ReplaceItemInObjectCaseSensitive(
            ch, "finish_reason", cJSON_CreateString(strcmp(finish_reason, "length") ? "tool_calls" : "length"));
        emit(&b, o);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : calloc(1, 1);
}

/* where a tool call may begin in text[from..n): the held part starts there */
static size_t hold_point(const char *format, const char *text, size_t n, size_t from) {
    bool json_start = !strcmp(format, "llama3") || !strcmp(format, "json");
    if (json_start && from == 0) { /* a reply that opens with JSON (or a fence) may be a call */
        size_t i = 0;
        while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r')) i++;
        if (i == n || text[i] == '{' || text[i] == '[' || !strncmp(text + i, "```", LMC_MIN(3, n - i))) return 0;
    }
    static const char *const hermes[] = {"<tool_call>", NULL}, *const mistral[] = {"[TOOL_CALLS]", NULL},
                             *const llama[] = {"<|python_tag|>", NULL}, *const none[] = {NULL};
    const char *const *mk = !strcmp(format, "hermes") || !strcmp(format, "qwen3_xml") || !strcmp(format, "glm") ? hermes
                            : !strcmp(format, "mistral")                                                    ? mistral
                            : !strcmp(format, "llama3")                                                     ? llama
                                                                                                            : none;
    size_t limit = n;
    for (; *mk; mk++) {
        size_t m = strlen(*mk);
        for (size_t p = from; p < n; p++) {
            size_t k = LMC_MIN(m, n - p);
            if (!memcmp(text + p, *mk, k)) { /* the marker, or its beginning at the end */
                limit = LMC_MIN(limit, p);
                break;
            }
        }
    }
    return limit;
}

char *lmc_serve_ext_stream_auto(const struct lmc_serve_ext *x, const char *format, const char *id, int64_t created,
                                const char *model, int index, bool first, const char *text, size_t len, size_t *sent,
                                const char *finish_reason) {
    size_t s0 = LMC_MIN(*sent, len);
    size_t upto = finish_reason ? s0 : LMC_MAX(s0, hold_point(format, text, len, s0));
    struct sbuf b = {0};
    cJSON *d;
    if (first) {
        cJSON *o = chunk(id, created, model, index, &d);
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        emit(&b, o);
    }
    if (upto > s0) {
        char *t = malloc(upto - s0 + 1);
        if (!t) b.oom = true;
        else {
            memcpy(t, text + s0, upto - s0);
            t[upto - s0] = 0;
            cJSON *o = chunk(id, created, model, index, &d);
            cJSON_AddStringToObject(d, "content", t);
            emit(&b, o);
            free(t);
        }
        *sent = upto;
    }
    if (finish_reason && !b.oom) { /* the held rest, read as calls */
        char *rest = lmc_serve_ext_stream(x, format, id, created, model, index, false, text + s0, len - s0, finish_reason);
        if (!rest) b.oom = true;
        else {
            size_t k = strlen(rest);
            char *q = realloc(b.p, b.n + k + 1);
            if (!q) b.oom = true;
            else {
                memcpy(q + b.n, rest, k + 1);
                b.p = q;
                b.n += k;
            }
            free(rest);
        }
        *sent = len;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : calloc(1, 1);
}

/* n, or less so that s[0..n) does not end inside a UTF-8 character */
static size_t utf8_whole(const char *s, size_t n) {
    size_t i = n;
    while (i > 0 && n - i < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) i--;
    if (i == 0) return n;
    unsigned char lead = (unsigned char)s[i - 1];
    if (lead < 0xc0) return n;
    size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
    return n - (i - 1) < need ? i - 1 : n;
}

static void call_delta(struct sbuf *b, const char *id, int64_t created, const char *model, int index, int k,
                       const char *cid, const char *name, const char *args, size_t m) {
    char *a = malloc(m + 1);
    if (!a) {
        b->oom = true;
        return;
    }
    memcpy(a, args, m);
    a[m] = 0;
    cJSON *d, *o = chunk(id, created, model, index, &d), *call = cJSON_CreateObject(), *f = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "tool_calls"), call);
    cJSON_AddNumberToObject(call, "index", k);
    if (cid) {
        cJSON_AddStringToObject(call, "id", cid);
        cJSON_AddStringToObject(call, "type", "function");
    }
    cJSON_AddItemToObject(call, "function", f);
    if (name) cJSON_AddStringToObject(f, "name", name);
    cJSON_AddStringToObject(f, "arguments", a);
    free(a);
    emit(b, o);
}

char *lmc_serve_ext_stream_required(const struct lmc_serve_ext *x, const char *id, int64_t created, const char *model,
                                    int index, bool first, const char *text, size_t len,
                                    struct lmc_serve_req_stream *st, const char *finish_reason) {
    struct sbuf b = {0};
    cJSON *d, *o;
    if (first) {
        o = chunk(id, created, model, index, &d);
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        emit(&b, o);
    }
    int cnt = 0;
    struct req_call *c = req_calls(text, len, &cnt);
    int lim = x->parallel ? cnt : LMC_MIN(cnt, 1);
    for (int k = LMC_MAX(st->calls - 1, 0); k < lim && !b.oom; k++) {
        if (k >= st->calls) { /* the head, once the name is whole */
            if (!c[k].named) break;
            cJSON *nm = cJSON_ParseWithLength(text + c[k].name_at, c[k].name_end - c[k].name_at);
            uint64_t h = 1469598103934665603ull;
            for (const char *p = id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
            h = (h ^ (uint64_t)index) * 1099511628211ull;
            h = (h ^ (uint64_t)k) * 1099511628211ull;
            char cid[48];
            snprintf(cid, sizeof cid, "call_%016llx%08llx", (unsigned long long)h,
                     (unsigned long long)((h * 0x9e3779b97f4a7c15ull) >> 32));
            if (!cJSON_IsString(nm)) b.oom = true;
            else call_delta(&b, id, created, model, index, k, cid, nm->valuestring, "", 0);
            cJSON_Delete(nm);
            st->calls = k + 1;
            st->args_sent = 0;
        }
        if (c[k].has_args) { /* what is new of the arguments */
            size_t m = c[k].args_end - c[k].args_at;
            if (!c[k].args_done && !finish_reason) m = utf8_whole(text + c[k].args_at, m);
            if (m > st->args_sent)
                call_delta(&b, id, created, model, index, k, NULL, NULL, text + c[k].args_at + st->args_sent,
                           m - st->args_sent);
            st->args_sent = LMC_MAX(st->args_sent, m);
        }
        if (!c[k].args_done) break;
    }
    free(c);
    if (finish_reason && !b.oom) {
        if (st->calls == 0) { /* no call: as the buffered stream reads it */
            char *rest = lmc_serve_ext_stream(x, "json", id, created, model, index, false, text, len, finish_reason);
            size_t k = rest ? strlen(rest) : 0;
            char *q = rest ? realloc(b.p, b.n + k + 1) : NULL;
            if (!q) b.oom = true;
            else {
                memcpy(q + b.n, rest, k + 1);
                b.p = q;
                b.n += k;
            }
            free(rest);
        } else {
            o = chunk(id, created, model, index, &d);
            cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
            cJSON_ReplaceItemInObjectCaseSensitive(
                ch, "finish_reason", cJSON_CreateString(strcmp(finish_reason, "length") ? "tool_calls" : "length"));
            emit(&b, o);
        }
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : calloc(1, 1);
}
