/* tool_call.c — parses tool calls out of a model's reply (see tool_call.h):
 * every call must be a JSON object with a string "name" and an object (or
 * JSON-object string) "arguments"/"parameters"; one bad call makes the
 * whole reply plain content. */
#include "infer/tool_call.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CALLS 64

enum lmc_tool_format lmc_tool_format_from_name(const char *name) {
    if (!name) return LMC_TOOL_JSON;
    if (!strcmp(name, "hermes")) return LMC_TOOL_HERMES;
    if (!strcmp(name, "llama3")) return LMC_TOOL_LLAMA3;
    if (!strcmp(name, "mistral")) return LMC_TOOL_MISTRAL;
    if (!strcmp(name, "qwen3_xml")) return LMC_TOOL_QWEN3_XML;
    if (!strcmp(name, "glm")) return LMC_TOOL_GLM;
    return LMC_TOOL_JSON;
}

void lmc_tool_parse_free(struct lmc_tool_parse *p) {
    if (!p) return;
    for (int i = 0; i < p->n_calls; i++) {
        free(p->calls[i].id);
        free(p->calls[i].name);
        free(p->calls[i].arguments);
    }
    free(p->calls);
    free(p->content);
    memset(p, 0, sizeof *p);
}

static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

static char *dup_trim(const char *s, size_t n) {
    size_t a = 0, b = n;
    while (a < b && is_ws(s[a])) a++;
    while (b > a && is_ws(s[b - 1])) b--;
    char *d = malloc(b - a + 1);
    if (!d) return NULL;
    memcpy(d, s + a, b - a);
    d[b - a] = 0;
    return d;
}

struct acc {
    struct lmc_tool_call *calls;
    int n;
    bool bad, oom;
    uint64_t seed;
};

static uint64_t fnv(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* one call object -> acc (marks bad on any deviation) */
static void add_call(struct acc *a, const cJSON *o, const char *args_key_alt) {
    if (a->bad || a->oom) return;
    if (!cJSON_IsObject(o) || a->n == MAX_CALLS) {
        a->bad = true;
        return;
    }
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(o, "function");
    const cJSON *src = cJSON_IsObject(fn) ? fn : o; /* {"type":"function","function":{...}} too */
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(src, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(src, "arguments");
    if (!args && args_key_alt) args = cJSON_GetObjectItemCaseSensitive(src, args_key_alt);
    if (!args) args = cJSON_GetObjectItemCaseSensitive(src, "parameters");
    if (!cJSON_IsString(name) || !name->valuestring[0]) {
        a->bad = true;
        return;
    }
    char *argtext = NULL;
    if (!args) argtext = strdup("{}");
    else if (cJSON_IsObject(args)) argtext = cJSON_PrintUnformatted(args);
    else if (cJSON_IsString(args)) { /* already JSON text: must be an object */
        cJSON *p = cJSON_Parse(args->valuestring);
        bool obj = cJSON_IsObject(p);
        cJSON_Delete(p);
        if (!obj) {
            a->bad = true;
            return;
        }
        argtext = strdup(args->valuestring);
    } else {
        a->bad = true;
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    char idbuf[40];
    if (cJSON_IsString(id) && id->valuestring[0]) snprintf(idbuf, sizeof idbuf, "%.32s", id->valuestring);
    else {
        uint64_t h = a->seed ^ ((uint64_t)(a->n + 1) * 0x9e3779b97f4a7c15ull), g = fnv(name->valuestring, strlen(name->valuestring)) ^ h;
        snprintf(idbuf, sizeof idbuf, "call_%016llx%08llx", (unsigned long long)h, (unsigned long long)(g & 0xffffffffu));
    }
    struct lmc_tool_call *c = realloc(a->calls, (size_t)(a->n + 1) * sizeof *c);
    if (!c || !argtext) {
        free(argtext);
        if (c) a->calls = c;
        a->oom = true;
        return;
    }
    a->calls = c;
    c[a->n].id = strdup(idbuf);
    c[a->n].name = strdup(name->valuestring);
    c[a->n].arguments = argtext;
    if (!c[a->n].id || !c[a->n].name) {
        free(c[a->n].id);
        free(c[a->n].name);
        free(argtext);
        a->oom = true;
        return;
    }
    a->n++;
}

/* a JSON value at s[0..n) with only whitespace around it; NULL if not */
static cJSON *parse_exact(const char *s, size_t n) {
    char *buf = malloc(n + 1);
    if (!buf) return NULL;
    memcpy(buf, s, n);
    buf[n] = 0;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(buf, &end, false);
    if (j && end) {
        while (*end && is_ws(*end)) end++;
        if (*end) {
            cJSON_Delete(j);
            j = NULL;
        }
    }
    free(buf);
    return j;
}

/* a call object, a list of them, or {"tool_calls": [...]} */
static void add_any(struct acc *a, const cJSON *j, const char *alt) {
    if (cJSON_IsArray(j)) {
        if (!cJSON_GetArraySize(j)) a->bad = true;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) add_call(a, e, alt);
    } else if (cJSON_IsObject(j) && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "tool_calls")))
        add_any(a, cJSON_GetObjectItemCaseSensitive(j, "tool_calls"), alt);
    else add_call(a, j, alt);
}

static const char *find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    return k <= n ? memmem(s, n, needle, k) : NULL;
}

/* a JSON value at the start of s[0..n) (after whitespace); *used: bytes to its end */
static cJSON *parse_prefix(const char *s, size_t n, size_t *used) {
    char *buf = malloc(n + 1);
    if (!buf) return NULL;
    memcpy(buf, s, n);
    buf[n] = 0;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(buf, &end, false);
    *used = j && end ? (size_t)(end - buf) : 0;
    free(buf);
    return j;
}

static void parse_hermes(struct acc *a, const char *s, size_t n, size_t *content_end) {
    static const char open[] = "<tool_call>", close[] = "</tool_call>";
    const char *p = find(s, n, open);
    if (!p) return;
    *content_end = (size_t)(p - s);
    while (p && !a->bad) {
        /* the JSON decides where the call ends, so tags inside its strings are content */
        const char *body = p + strlen(open);
        size_t used = 0;
        cJSON *j = parse_prefix(body, n - (size_t)(body - s), &used);
        if (!j) {
            a->bad = true; /* malformed or truncated */
            break;
        }
        add_any(a, j, NULL);
        cJSON_Delete(j);
        const char *q = body + used;
        while (q < s + n && is_ws(*q)) q++;
        if ((size_t)(s + n - q) < strlen(close) || memcmp(q, close, strlen(close))) {
            a->bad = true;
            break;
        }
        const char *next = q + strlen(close);
        p = find(next, n - (size_t)(next - s), open);
        /* only whitespace may sit between and after calls */
        for (const char *r = next; r < (p ? p : s + n); r++)
            if (!is_ws(*r)) a->bad = true;
    }
}

static void parse_llama3(struct acc *a, const char *s, size_t n) {
    const char *tag = find(s, n, "<|python_tag|>");
    if (tag) {
        n -= (size_t)(tag - s) + strlen("<|python_tag|>");
        s = tag + strlen("<|python_tag|>");
    }
    size_t i = 0;
    while (i < n && is_ws(s[i])) i++;
    if (i >= n || s[i] != '{') {
        a->bad = true;
        return;
    }
    /* one or more objects separated by ';' */
    size_t start = i;
    int depth = 0;
    bool in_str = false;
    for (size_t k = i; k <= n && !a->bad; k++) {
        char c = k < n ? s[k] : ';';
        if (in_str) {
            if (c == '\\') k++;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == '"') in_str = true;
        else if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') depth--;
        else if (c == ';' && depth == 0) {
            cJSON *j = parse_exact(s + start, k - start);
            if (!j || !cJSON_IsObject(j)) a->bad = true;
            else add_call(a, j, "parameters");
            cJSON_Delete(j);
            start = k + 1;
            while (start < n && is_ws(s[start])) start++;
            if (start >= n) break;
        }
    }
    if (in_str || depth) a->bad = true;
}

static void parse_mistral(struct acc *a, const char *s, size_t n, size_t *content_end) {
    const char *p = find(s, n, "[TOOL_CALLS]");
    if (!p) return;
    *content_end = (size_t)(p - s);
    const char *body = p + strlen("[TOOL_CALLS]");
    size_t bn = n - (size_t)(body - s);
    const char *args = find(body, bn, "[ARGS]");
    if (!args) { /* [TOOL_CALLS][{...}, ...] */
        cJSON *j = parse_exact(body, bn);
        if (!j) a->bad = true;
        else add_any(a, j, NULL);
        cJSON_Delete(j);
        return;
    }
    /* [TOOL_CALLS]name[ARGS]{...}[TOOL_CALLS]name2[ARGS]{...} */
    while (body && !a->bad) {
        const char *ar = find(body, n - (size_t)(body - s), "[ARGS]");
        if (!ar) {
            a->bad = true;
            break;
        }
        char name[256];
        size_t nl = (size_t)(ar - body);
        while (nl && is_ws(body[nl - 1])) nl--;
        if (nl == 0 || nl >= sizeof name) {
            a->bad = true;
            break;
        }
        memcpy(name, body, nl);
        name[nl] = 0;
        const char *js = ar + strlen("[ARGS]");
        const char *next = find(js, n - (size_t)(js - s), "[TOOL_CALLS]");
        size_t jl = next ? (size_t)(next - js) : n - (size_t)(js - s);
        cJSON *argsj = parse_exact(js, jl), *call = cJSON_CreateObject();
        if (!argsj || !cJSON_IsObject(argsj) || !call) a->bad = true;
        else {
            cJSON_AddStringToObject(call, "name", name);
            cJSON_AddItemToObject(call, "arguments", argsj);
            argsj = NULL;
            add_call(a, call, NULL);
        }
        cJSON_Delete(argsj);
        cJSON_Delete(call);
        body = next ? next + strlen("[TOOL_CALLS]") : NULL;
    }
}

static void parse_json(struct acc *a, const char *s, size_t n) {
    size_t i = 0, e = n;
    while (i < e && is_ws(s[i])) i++;
    while (e > i && is_ws(s[e - 1])) e--;
    if (e - i >= 7 && !memcmp(s + i, "```", 3)) { /* ```json ... ``` */
        const char *nl = memchr(s + i, '\n', e - i);
        if (!nl || e - i < 6 || memcmp(s + e - 3, "```", 3)) {
            a->bad = true;
            return;
        }
        i = (size_t)(nl - s) + 1;
        e -= 3;
    }
    if (i >= e || (s[i] != '{' && s[i] != '[')) {
        a->bad = true;
        return;
    }
    cJSON *j = parse_exact(s + i, e - i);
    if (!j) a->bad = true;
    else add_any(a, j, NULL);
    cJSON_Delete(j);
}

/* s[0..n) with one leading and one trailing newline dropped, as a JSON value if it is one, else a string */
static cJSON *xml_value(const char *s, size_t n) {
    if (n && s[0] == '\n') s++, n--;
    if (n && s[n - 1] == '\n') n--;
    cJSON *v = parse_exact(s, n);
    if (v && !cJSON_IsString(v)) return v;
    cJSON_Delete(v);
    char *t = malloc(n + 1);
    if (!t) return NULL;
    memcpy(t, s, n);
    t[n] = 0;
    v = cJSON_CreateString(t);
    free(t);
    return v;
}

/* expects literal `lit` at *p (after whitespace when ws); advances past it */
static bool eat(const char **p, const char *end, const char *lit, bool ws) {
    const char *q = *p;
    if (ws)
        while (q < end && is_ws(*q)) q++;
    size_t l = strlen(lit);
    if ((size_t)(end - q) < l || memcmp(q, lit, l)) return false;
    *p = q + l;
    return true;
}

/* text up to the next `stop` (not included); NULL when absent */
static const char *until(const char *p, const char *end, const char *stop) { return find(p, (size_t)(end - p), stop); }

/* one <tool_call> body in Qwen3-Coder XML (glm: GLM's arg_key/arg_value) -> a call */
static void xml_call(struct acc *a, const char *p, const char *end, bool glm) {
    cJSON *call = cJSON_CreateObject(), *args = cJSON_CreateObject();
    char name[256];
    const char *q;
    bool ok = call && args;
    if (ok && !glm) {
        ok = eat(&p, end, "<function=", true) && (q = until(p, end, ">")) && (size_t)(q - p) < sizeof name;
        if (ok) {
            memcpy(name, p, (size_t)(q - p));
            name[q - p] = 0;
            p = q + 1;
        }
        while (ok && eat(&p, end, "<parameter=", true)) {
            const char *k = p, *ke = until(p, end, ">");
            const char *ve = ke ? until(ke + 1, end, "</parameter>") : NULL;
            ok = ke && ve && ke > k;
            if (!ok) break;
            char key[256];
            size_t kl = (size_t)(ke - k) < sizeof key - 1 ? (size_t)(ke - k) : sizeof key - 1;
            memcpy(key, k, kl);
            key[kl] = 0;
            cJSON *v = xml_value(ke + 1, (size_t)(ve - ke - 1));
            ok = v != NULL;
            if (ok) cJSON_AddItemToObject(args, key, v);
            p = ve + strlen("</parameter>");
        }
        ok = ok && eat(&p, end, "</function>", true);
    } else if (ok) {
        const char *ne = p;
        while (ne < end && *ne != '<' && *ne != '\n') ne++;
        size_t nl = (size_t)(ne - p);
        while (nl && is_ws(p[nl - 1])) nl--;
        while (nl && is_ws(*p)) p++, nl--;
        ok = nl > 0 && nl < sizeof name;
        if (ok) {
            memcpy(name, p, nl);
            name[nl] = 0;
            p = ne;
        }
        while (ok && eat(&p, end, "<arg_key>", true)) {
            const char *ke = until(p, end, "</arg_key>");
            ok = ke && ke > p;
            if (!ok) break;
            char key[256];
            size_t kl = (size_t)(ke - p) < sizeof key - 1 ? (size_t)(ke - p) : sizeof key - 1;
            memcpy(key, p, kl);
            key[kl] = 0;
            p = ke + strlen("</arg_key>");
            ok = eat(&p, end, "<arg_value>", true);
            const char *ve = ok ? until(p, end, "</arg_value>") : NULL;
            ok = ok && ve;
            if (!ok) break;
            cJSON *v = xml_value(p, (size_t)(ve - p));
            ok = v != NULL;
            if (ok) cJSON_AddItemToObject(args, key, v);
            p = ve + strlen("</arg_value>");
        }
    }
    while (ok && p < end && is_ws(*p)) p++;
    ok = ok && p == end;
    if (ok) {
        cJSON_AddStringToObject(call, "name", name);
        cJSON_AddItemToObject(call, "arguments", args);
        args = NULL;
        add_call(a, call, NULL);
    } else a->bad = true;
    cJSON_Delete(args);
    cJSON_Delete(call);
}

static void parse_xml(struct acc *a, const char *s, size_t n, size_t *content_end, bool glm) {
    static const char open[] = "<tool_call>", close[] = "</tool_call>";
    const char *end = s + n, *p = find(s, n, open);
    if (!p) return;
    *content_end = (size_t)(p - s);
    while (p && !a->bad) {
        const char *body = p + strlen(open), *e = until(body, end, close);
        if (!e) { /* truncated */
            a->bad = true;
            break;
        }
        xml_call(a, body, e, glm);
        const char *next = e + strlen(close);
        p = until(next, end, open);
        for (const char *r = next; r < (p ? p : end); r++)
            if (!is_ws(*r)) a->bad = true;
    }
}

lmc_status lmc_tool_calls_parse(const char *text, size_t n, enum lmc_tool_format fmt, struct lmc_tool_parse *out,
                                lmc_err *err) {
    memset(out, 0, sizeof *out);
    if (!text) n = 0;
    const char *s = text ? text : "";
    struct acc a = {0};
    a.seed = fnv(s, n);
    size_t content_end = n;
    switch (fmt) {
    case LMC_TOOL_HERMES: parse_hermes(&a, s, n, &content_end); break;
    case LMC_TOOL_MISTRAL: parse_mistral(&a, s, n, &content_end); break;
    case LMC_TOOL_QWEN3_XML: parse_xml(&a, s, n, &content_end, false); break;
    case LMC_TOOL_GLM: parse_xml(&a, s, n, &content_end, true); break;
    case LMC_TOOL_LLAMA3:
        parse_llama3(&a, s, n);
        content_end = 0;
        break;
    default:
        parse_json(&a, s, n);
        content_end = 0;
        break;
    }
    if (a.oom) {
        out->calls = a.calls;
        out->n_calls = a.n;
        lmc_tool_parse_free(out);
        return lmc_err_set(err, LMC_ERR_OOM, "tool calls: out of memory");
    }
    if (a.bad || a.n == 0) { /* plain content */
        out->calls = a.calls;
        out->n_calls = a.n;
        lmc_tool_parse_free(out);
        content_end = n;
    } else {
        out->calls = a.calls;
        out->n_calls = a.n;
    }
    out->content = dup_trim(s, content_end);
    if (!out->content) {
        lmc_tool_parse_free(out);
        return lmc_err_set(err, LMC_ERR_OOM, "tool calls: out of memory");
    }
    if (out->n_calls == 0) { /* plain content keeps the reply as it was */
        free(out->content);
        out->content = malloc(n + 1);
        if (!out->content) return lmc_err_set(err, LMC_ERR_OOM, "tool calls: out of memory");
        if (n) memcpy(out->content, s, n);
        out->content[n] = 0;
    }
    return LMC_OK;
}
