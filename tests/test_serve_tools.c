/* test_serve_tools.c — tool calling and structured output of `lmc serve`
 * without sockets: the request fields (tools, tool_choice,
 * parallel_tool_calls, response_format, tool_calls and role "tool" in
 * messages) accepted or refused with the field named; the messages and
 * tools a template renders; replies read back as tool calls (Hermes,
 * named, required, malformed -> content) in responses and in OpenAI-style
 * stream deltas; and the scheduler's per-request grammar: concurrent
 * requests with and without a schema on llama-tiny, every constrained
 * output a complete sentence of its grammar, greedy ones equal to the
 * single-sequence lmc_session_generate_grammar. */
#include "serve/serve.h"
#include "serve/tools.h"
#include "infer/session.h"
#include "model_fixture.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static struct lmc_serve_limits lim(void) {
    struct lmc_serve_limits l;
    lmc_serve_limits_default(&l);
    l.ctx = 256;
    l.vocab = 512;
    l.max_body = 1 << 16;
    return l;
}

#define TOOLS "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"d\"," \
              "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}," \
              "\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]"
#define USER "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"

static int parse(enum lmc_serve_kind k, const char *body, char *param, struct lmc_serve_request *keep) {
    struct lmc_serve_limits l = lim();
    struct lmc_serve_request r;
    struct lmc_serve_error e;
    lmc_status st = lmc_serve_parse(k, body, strlen(body), &l, &r, &e);
    if (param) strcpy(param, st ? e.param : "");
    if (st) {
        CHECK_MSG(e.err.msg[0] != 0 && e.http >= 400 && e.http < 500, "%s", body);
        return e.http;
    }
    if (keep) *keep = r;
    else lmc_serve_request_free(&r);
    return 200;
}

static void test_parse(void) {
    char p[64];
    struct lmc_serve_request r;
    /* tools with each tool_choice */
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS "}", p, &r) == 200);
    CHECK(r.x.tools && cJSON_GetArraySize(r.x.tools) == 2 && r.x.choice == LMC_SERVE_TOOLS_AUTO && r.x.parallel);
    CHECK(!r.r.grammar && lmc_serve_ext_tool_mode(&r.x));
    lmc_serve_request_free(&r);
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"tool_choice\":\"none\"}", p, &r) == 200);
    CHECK(r.x.choice == LMC_SERVE_TOOLS_NONE && !lmc_serve_ext_tool_mode(&r.x) && !r.r.grammar);
    lmc_serve_request_free(&r);
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"tool_choice\":\"required\",\"parallel_tool_calls\":false}", p,
                &r) == 200);
    CHECK(r.x.choice == LMC_SERVE_TOOLS_REQUIRED && !r.x.parallel && r.r.grammar == r.x.grammar && r.x.grammar);
    if (r.x.grammar) { /* a list of exactly one call */
        struct lmc_grammar_state *gs = NULL;
        lmc_err err = {0};
        CHECK(lmc_grammar_state_new(r.x.grammar, &gs, &err) == LMC_OK);
        const char *ok = "[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}]";
        CHECK(lmc_grammar_accept(gs, ok, strlen(ok)) && lmc_grammar_can_end(gs));
        lmc_grammar_state_free(gs);
        CHECK(lmc_grammar_state_new(r.x.grammar, &gs, &err) == LMC_OK);
        const char *two = "[{\"name\":\"now\",\"arguments\":{}},";
        CHECK(!lmc_grammar_accept(gs, two, strlen(two)));
        const char *bad = "[{\"name\":\"nope\"";
        CHECK(!lmc_grammar_accept(gs, bad, strlen(bad)));
        lmc_grammar_state_free(gs);
    }
    lmc_serve_request_free(&r);
    CHECK(parse(LMC_SERVE_CHAT,
                "{" USER "," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}", p,
                &r) == 200);
    CHECK(r.x.choice == LMC_SERVE_TOOLS_NAMED && r.x.choice_name && !strcmp(r.x.choice_name, "get_weather"));
    if (r.x.grammar) { /* the output is the arguments */
        struct lmc_grammar_state *gs = NULL;
        lmc_err err = {0};
        CHECK(lmc_grammar_state_new(r.x.grammar, &gs, &err) == LMC_OK);
        CHECK(lmc_grammar_accept(gs, "{\"city\":\"P\"}", 12) && lmc_grammar_can_end(gs));
        lmc_grammar_state_free(gs);
        CHECK(lmc_grammar_state_new(r.x.grammar, &gs, &err) == LMC_OK);
        CHECK(lmc_grammar_accept(gs, "{", 1) && !lmc_grammar_accept(gs, "}", 1)); /* city is required */
        lmc_grammar_state_free(gs);
    }
    lmc_serve_request_free(&r);
    /* messages carrying tool calls and tool results */
    const char *conv = "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},"
                       "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
                       "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"}]," TOOLS "}";
    CHECK(parse(LMC_SERVE_CHAT, conv, p, &r) == 200);
    if (r.x.messages) {
        const cJSON *a = cJSON_GetArrayItem(r.x.messages, 1), *t = cJSON_GetArrayItem(r.x.messages, 2);
        const cJSON *fn = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(a, "tool_calls"), 0), "function");
        const cJSON *args = cJSON_GetObjectItem(fn, "arguments");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(a, "content")));
        CHECK(cJSON_IsObject(args) && !strcmp(cJSON_GetObjectItem(args, "city")->valuestring, "Paris"));
        CHECK(!strcmp(cJSON_GetObjectItem(t, "role")->valuestring, "tool") &&
              !strcmp(cJSON_GetObjectItem(t, "tool_call_id")->valuestring, "call_1"));
        /* rendered by a template that shows calls and results */
        struct lmc_chat_template *ct = NULL;
        lmc_err err = {0};
        const char *tpl = "{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif %}"
                          "{% for m in messages %}"
                          "{{ m.role }}:{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>"
                          "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>"
                          "{% endfor %}{% else %}{{ m.content }}{% endif %}|{% endfor %}";
        CHECK(lmc_chat_template_new(tpl, NULL, NULL, &ct, &err) == LMC_OK);
        char *out = NULL;
        CHECK(ct && lmc_serve_ext_render(ct, &r.x, &out, &err) == LMC_OK);
        CHECK_MSG(out && !strcmp(out, "[get_weather][now]user:w?|assistant:<tool_call>{\"name\": \"get_weather\", "
                                      "\"arguments\": {\"city\": \"Paris\"}}</tool_call>|tool:sunny|"),
                  "%s", out ? out : err.msg);
        free(out);
        r.x.choice = LMC_SERVE_TOOLS_NONE; /* tools not shown */
        CHECK(ct && lmc_serve_ext_render(ct, &r.x, &out, &err) == LMC_OK && out && strncmp(out, "[get", 4) != 0);
        free(out);
        lmc_chat_template_free(ct);
    }
    lmc_serve_request_free(&r);
    /* response_format in both endpoints */
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"response_format\":{\"type\":\"json_object\"}}", p, &r) == 200);
    CHECK(r.x.rf == LMC_SERVE_RF_JSON_OBJECT && r.r.grammar);
    { /* no turn stops under a grammar: a marker's text inside a JSON string must not cut it */
        struct lmc_chat_template *ct = NULL;
        lmc_err err = {0};
        struct lmc_serve_error e;
        CHECK(lmc_chat_template_new("{{ messages[0].content }}<|im_end|>", NULL, "</s>", &ct, &err) == LMC_OK);
        CHECK(ct && lmc_serve_add_turn_stops(&r, ct, &e) == LMC_OK && r.r.n_stop == 0);
        lmc_chat_template_free(ct);
    }
    lmc_serve_request_free(&r);
    CHECK(parse(LMC_SERVE_COMPLETION,
                "{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
                "\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
                "\"required\":[\"a\"]}}}}",
                p, &r) == 200);
    CHECK(r.x.rf == LMC_SERVE_RF_JSON_SCHEMA && r.r.grammar);
    lmc_serve_request_free(&r);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"response_format\":{\"type\":\"text\"}}", p, &r) == 200);
    CHECK(!r.r.grammar);
    lmc_serve_request_free(&r);
    /* refusals name the field */
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"tools\":{}}", p, NULL) == 400 && !strcmp(p, "tools"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"tools\":[{\"type\":\"function\"}]}", p, NULL) == 400 &&
          !strcmp(p, "tools[0]"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":7}}]}", p, NULL) ==
          400);
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"tool_choice\":\"required\"}", p, NULL) == 400 && !strcmp(p, "tool_choice"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"tool_choice\":\"sometimes\"}", p, NULL) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"x\"}}}",
                p, NULL) == 400 && !strcmp(p, "tool_choice"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"parallel_tool_calls\":1}", p, NULL) == 400 &&
          !strcmp(p, "parallel_tool_calls"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"response_format\":{\"type\":\"xml\"}}", p, NULL) == 400 &&
          !strcmp(p, "response_format"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER ",\"response_format\":{\"type\":\"json_schema\"}}", p, NULL) == 400);
    CHECK(parse(LMC_SERVE_CHAT,
                "{" USER ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
                "\"schema\":{\"allOf\":[]}}}}",
                p, NULL) == 400 && !strcmp(p, "response_format.json_schema.schema"));
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"tool_choice\":\"required\",\"response_format\":"
                "{\"type\":\"json_object\"}}", p, NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\"," TOOLS "}", p, NULL) == 400 && !strcmp(p, "tools"));
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", p, NULL) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":3}]}]}", p,
                NULL) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":5,\"content\":\"x\"}]}", p, NULL) ==
          400 && !strcmp(p, "messages[0].tool_call_id"));
}

static cJSON *reply(struct lmc_serve_ext *x, const char *fmt, const char *text, const char *finish) {
    return lmc_serve_ext_reply(x, fmt, text, strlen(text), finish);
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void test_replies(void) {
    char p[64];
    struct lmc_serve_request r;
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS "}", p, &r) == 200);
    /* Hermes: two calls, content around them kept */
    cJSON *o = reply(&r.x, "hermes",
                     "ok <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"a\\\"b\"}}</tool_call>"
                     "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>",
                     "stop");
    const cJSON *tc = cJSON_GetObjectItem(o, "tool_calls");
    CHECK(cJSON_GetArraySize(tc) == 2 && !strcmp(str(o, "finish_reason"), "tool_calls") && !strcmp(str(o, "content"), "ok"));
    const cJSON *c0 = cJSON_GetArrayItem(tc, 0), *f0 = cJSON_GetObjectItem(c0, "function");
    CHECK(str(c0, "id") && !strncmp(str(c0, "id"), "call_", 5) && !strcmp(str(c0, "type"), "function"));
    CHECK(!strcmp(str(f0, "name"), "get_weather") && !strcmp(str(f0, "arguments"), "{\"city\":\"a\\\"b\"}"));
    cJSON_Delete(o);
    /* parallel_tool_calls false keeps the first */
    r.x.parallel = false;
    o = reply(&r.x, "hermes", "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"now\", "
                              "\"arguments\": {}}</tool_call>", "stop");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "tool_calls")) == 1 && cJSON_IsNull(cJSON_GetObjectItem(o, "content")));
    cJSON_Delete(o);
    r.x.parallel = true;
    /* malformed or truncated: plain content, no calls */
    const char *bad[] = {"<tool_call>{\"name\": \"now\", \"arguments\": {</tool_call>", "<tool_call>{\"name\": \"now\"",
                         "just words"};
    for (int i = 0; i < 3; i++) {
        o = reply(&r.x, "hermes", bad[i], "stop");
        CHECK(o && !cJSON_GetObjectItem(o, "tool_calls") && !strcmp(str(o, "content"), bad[i]) &&
              !strcmp(str(o, "finish_reason"), "stop"));
        cJSON_Delete(o);
    }
    /* a call cut by max_tokens is content with finish "length" */
    o = reply(&r.x, "hermes", "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>", "length");
    CHECK(!cJSON_GetObjectItem(o, "tool_calls") && !strcmp(str(o, "finish_reason"), "length"));
    cJSON_Delete(o);
    /* required: a JSON list */
    r.x.choice = LMC_SERVE_TOOLS_REQUIRED;
    o = reply(&r.x, "hermes", "[{\"name\": \"now\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": "
                              "{\"city\": \"x\"}}]", "stop");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "tool_calls")) == 2);
    cJSON_Delete(o);
    /* named: the text is the arguments */
    r.x.choice = LMC_SERVE_TOOLS_NAMED;
    r.x.choice_name = strdup("get_weather");
    o = reply(&r.x, "hermes", "{ \"city\" : \"Rome\" }", "stop");
    tc = cJSON_GetObjectItem(o, "tool_calls");
    f0 = cJSON_GetObjectItem(cJSON_GetArrayItem(tc, 0), "function");
    CHECK(cJSON_GetArraySize(tc) == 1 && !strcmp(str(f0, "name"), "get_weather") &&
          !strcmp(str(f0, "arguments"), "{\"city\":\"Rome\"}") && cJSON_IsNull(cJSON_GetObjectItem(o, "content")));
    cJSON_Delete(o);
    o = reply(&r.x, "hermes", "{ \"city\" : \"Ro", "length");
    CHECK(!cJSON_GetObjectItem(o, "tool_calls") && !strcmp(str(o, "content"), "{ \"city\" : \"Ro"));
    cJSON_Delete(o);
    /* the stream: role, then id/type/name with arguments "", then fragments that join to the arguments, then finish */
    const char *args = "{\"city\": \"Rome, a long name that takes several fragments \\u00e9\"}";
    char *ev = lmc_serve_ext_stream(&r.x, "hermes", "chatcmpl-1", 5, "m", 0, true, args, strlen(args), "stop");
    CHECK(ev != NULL);
    int n = 0, n_frag = 0;
    bool role = false, head = false, fin = false, order = true;
    char joined[256] = "";
    for (char *line = ev ? strstr(ev, "data: ") : NULL; line; line = strstr(line + 1, "data: ")) {
        cJSON *ch = cJSON_Parse(line + 6);
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(ch, "choices"), 0), *d = cJSON_GetObjectItem(c, "delta");
        CHECK(ch && !strcmp(str(ch, "object"), "chat.completion.chunk") && !strcmp(str(ch, "id"), "chatcmpl-1"));
        const cJSON *calls = cJSON_GetObjectItem(d, "tool_calls");
        if (str(d, "role")) role = n == 0;
        if (calls) {
            const cJSON *k = cJSON_GetArrayItem(calls, 0), *fn = cJSON_GetObjectItem(k, "function");
            CHECK(cJSON_GetObjectItem(k, "index")->valueint == 0);
            if (str(k, "id")) {
                head = !strcmp(str(fn, "name"), "get_weather") && !strcmp(str(k, "type"), "function") &&
                       !strcmp(str(fn, "arguments"), "");
                order &= n_frag == 0;
            } else {
                order &= head && !cJSON_GetObjectItem(fn, "name");
                strncat(joined, str(fn, "arguments"), sizeof joined - strlen(joined) - 1);
                n_frag++;
            }
        }
        if (str(c, "finish_reason")) fin = !strcmp(str(c, "finish_reason"), "tool_calls") && !cJSON_GetObjectItem(d, "tool_calls");
        cJSON_Delete(ch);
        n++;
    }
    cJSON *want = cJSON_Parse(args), *got = cJSON_Parse(joined);
    CHECK(role && head && fin && order && n_frag >= 2 && cJSON_Compare(want, got, true));
    cJSON_Delete(want);
    cJSON_Delete(got);
    free(ev);
    /* a named function streams as it decodes: role + head first, then each piece as a fragment, then finish */
    const char *pieces[] = {"{\"ci", "", "ty\": \"Ro", "me\"}"};
    char all[256] = "";
    int heads = 0, frags = 0, fins = 0, roles = 0;
    for (int i = 0; i < 5; i++) {
        const char *t = i < 4 ? pieces[i] : "";
        char *e2 = lmc_serve_ext_stream_named(&r.x, "chatcmpl-3", 5, "m", 0, i == 0, t, strlen(t), i == 4 ? "stop" : NULL);
        CHECK(e2 != NULL);
        for (char *line = e2 ? strstr(e2, "data: ") : NULL; line; line = strstr(line + 1, "data: ")) {
            cJSON *chj = cJSON_Parse(line + 6);
            cJSON *c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(chj, "choices"), 0), *d = cJSON_GetObjectItem(c1, "delta");
            const cJSON *k = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0), *fn = cJSON_GetObjectItem(k, "function");
            roles += str(d, "role") != NULL;
            if (k && str(k, "id")) heads += !strcmp(str(fn, "name"), "get_weather") && !strncmp(str(k, "id"), "call_", 5) && i == 0;
            else if (k) {
                strcat(all, str(fn, "arguments"));
                frags++;
            }
            if (str(c1, "finish_reason")) fins += !strcmp(str(c1, "finish_reason"), "tool_calls") && i == 4;
            cJSON_Delete(chj);
        }
        free(e2);
    }
    CHECK_MSG(roles == 1 && heads == 1 && frags == 3 && fins == 1 && !strcmp(all, "{\"city\": \"Rome\"}"),
              "%d %d %d %d %s", roles, heads, frags, fins, all);
    /* auto: content streams until a call may begin, the held rest is read as calls at the end */
    r.x.choice = LMC_SERVE_TOOLS_AUTO;
    struct { const char *fmt, *pieces[4], *content; int calls; const char *finish; } cases[] = {
        {"hermes", {"Hello ", "wor", "ld <tool", "_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>"},
         "Hello world ", 1, "tool_calls"},
        {"hermes", {"Hello", " <", "b>", " done"}, "Hello <b> done", 0, "stop"},
        {"hermes", {"a ", "<tool_call>", "{\"name\": \"now\", ", "\"argum"}, "a <tool_call>{\"name\": \"now\", \"argum", 0,
         "stop"},
        {"llama3", {" {\"name\": ", "\"now\", \"parameters\"", ": {}}", ""}, "", 1, "tool_calls"},
        {"json", {"Plain ", "{words}", "", ""}, "Plain {words}", 0, "stop"},
    };
    for (int ci = 0; ci < 5; ci++) {
        char acc[256] = "", content[256] = "";
        size_t sent = 0;
        int n_calls = 0, n_content_before_end = 0;
        const char *fin = NULL;
        for (int i = 0; i <= 4; i++) {
            if (i < 4) strcat(acc, cases[ci].pieces[i]);
            char *e3 = lmc_serve_ext_stream_auto(&r.x, cases[ci].fmt, "chatcmpl-4", 5, "m", 0, i == 0, acc, strlen(acc),
                                                 &sent, i == 4 ? "stop" : NULL);
            CHECK(e3 != NULL);
            for (char *line = e3 ? strstr(e3, "data: ") : NULL; line; line = strstr(line + 1, "data: ")) {
                cJSON *chj = cJSON_Parse(line + 6);
                cJSON *c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(chj, "choices"), 0), *d = cJSON_GetObjectItem(c1, "delta");
                if (str(d, "content") && !str(d, "role")) {
                    strcat(content, str(d, "content"));
                    n_content_before_end += i < 4;
                }
                const cJSON *k = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0);
                if (k && str(k, "id")) n_calls++;
                if (str(c1, "finish_reason")) fin = !strcmp(str(c1, "finish_reason"), "tool_calls") ? "tool_calls" : "stop";
                cJSON_Delete(chj);
            }
            free(e3);
        }
        CHECK_MSG(!strcmp(content, cases[ci].content) && n_calls == cases[ci].calls && fin && !strcmp(fin, cases[ci].finish),
                  "case %d: content [%s] calls %d finish %s", ci, content, n_calls, fin ? fin : "-");
        if (ci == 1) CHECK(n_content_before_end >= 3); /* it streamed as it came */
    }
    r.x.choice = LMC_SERVE_TOOLS_NAMED;
    /* a non-streamed response rewritten */
    struct lmc_serve_choice ch = {"{\"city\":\"Oslo\"}", 15, "stop", NULL, 0};
    struct lmc_serve_usage u = {3, 4, 0};
    char *body = lmc_serve_format_response(LMC_SERVE_CHAT, "chatcmpl-2", 5, "m", &ch, 1, &u, false, NULL);
    const char *texts[1] = {ch.text};
    size_t lens[1] = {ch.text_len};
    body = lmc_serve_ext_response(body, &r.x, "hermes", texts, lens, 1);
    cJSON *resp = body ? cJSON_Parse(body) : NULL;
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(resp, "choices"), 0), *msg = cJSON_GetObjectItem(c, "message");
    CHECK(!strcmp(str(c, "finish_reason"), "tool_calls") && !strcmp(str(msg, "role"), "assistant") &&
          cJSON_IsNull(cJSON_GetObjectItem(msg, "content")) && cJSON_GetArraySize(cJSON_GetObjectItem(msg, "tool_calls")) == 1);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "usage"), "completion_tokens")->valueint == 4);
    { /* the same call in another response gets another id */
        char *b2 = lmc_serve_ext_response(lmc_serve_format_response(LMC_SERVE_CHAT, "chatcmpl-9", 5, "m", &ch, 1, &u, false,
                                                                    NULL),
                                          &r.x, "hermes", texts, lens, 1);
        cJSON *r2 = b2 ? cJSON_Parse(b2) : NULL;
        const cJSON *m2 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r2, "choices"), 0), "message");
        const char *id1 = str(cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0), "id");
        const char *id2 = str(cJSON_GetArrayItem(cJSON_GetObjectItem(m2, "tool_calls"), 0), "id");
        CHECK(id1 && id2 && !strncmp(id1, "call_", 5) && strlen(id1) == 29 && strcmp(id1, id2) != 0);
        cJSON_Delete(r2);
        free(b2);
    }
    cJSON_Delete(resp);
    free(body);
    lmc_serve_request_free(&r);
}

/* ---- tool_choice "required", streamed as it decodes */
static bool utf8_ok(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = *p < 0x80 ? 0 : *p >= 0xf0 ? 3 : *p >= 0xe0 ? 2 : *p >= 0xc0 ? 1 : -1;
        if (n < 0) return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80) return false;
    }
    return true;
}

/* feeds text one byte at a time; returns how many heads went out; fills
 * joined[k] with call k's fragments, names[k] its name */
static int required_run(struct lmc_serve_ext *x, const char *text, char joined[2][256], char names[2][32],
                        const char **fin, bool *order) {
    struct lmc_serve_req_stream st = {0};
    size_t n = strlen(text);
    int heads = 0, roles = 0, last_head_at = -1;
    bool frag_early = false;
    *fin = NULL;
    *order = true;
    memset(joined, 0, 2 * 256);
    memset(names, 0, 2 * 32);
    for (size_t i = 1; i <= n + 1; i++) {
        size_t m = i < n ? i : n;
        char *ev = lmc_serve_ext_stream_required(x, "chatcmpl-7", 5, "m", 0, i == 1, text, m, &st,
                                                 i == n + 1 ? "stop" : NULL);
        CHECK(ev != NULL);
        for (char *line = ev ? strstr(ev, "data: ") : NULL; line; line = strstr(line + 1, "data: ")) {
            cJSON *chj = cJSON_Parse(line + 6);
            CHECK(chj != NULL);
            cJSON *c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(chj, "choices"), 0), *d = cJSON_GetObjectItem(c1, "delta");
            roles += str(d, "role") != NULL;
            *order &= roles == 1;
            const cJSON *k = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0);
            const cJSON *fn = cJSON_GetObjectItem(k, "function");
            if (k) {
                int idx = cJSON_GetObjectItem(k, "index")->valueint;
                CHECK(idx >= 0 && idx < 2);
                if (str(k, "id")) { /* heads in order, each before its fragments */
                    *order &= idx == heads && !strcmp(str(k, "type"), "function") && !strncmp(str(k, "id"), "call_", 5) &&
                              !strcmp(str(fn, "arguments"), "");
                    snprintf(names[idx & 1], 32, "%s", str(fn, "name"));
                    heads++;
                    last_head_at = (int)i;
                } else { /* fragments of the newest call only */
                    *order &= idx == heads - 1 && !cJSON_GetObjectItem(fn, "name") && utf8_ok(str(fn, "arguments"));
                    strncat(joined[idx & 1], str(fn, "arguments"), 255 - strlen(joined[idx & 1]));
                    frag_early |= i < n;
                }
            }
            if (str(c1, "finish_reason")) {
                *order &= i == n + 1 && !*fin;
                *fin = str(c1, "finish_reason");
                *fin = !strcmp(*fin, "tool_calls") ? "tool_calls" : !strcmp(*fin, "stop") ? "stop" : "other";
            }
            cJSON_Delete(chj);
        }
        free(ev);
    }
    *order &= heads == 0 || (frag_early && last_head_at < (int)n); /* it streamed before the end */
    return heads;
}

static void test_required_stream(void) {
    char p[64];
    struct lmc_serve_request r;
    CHECK(parse(LMC_SERVE_CHAT, "{" USER "," TOOLS ",\"tool_choice\":\"required\"}", p, &r) == 200);
    CHECK(r.x.choice == LMC_SERVE_TOOLS_REQUIRED && r.x.parallel);
    char joined[2][256], names[2][32];
    const char *fin;
    bool order;
    /* two calls, whitespace, a nested object, an escaped quote, raw UTF-8 (split across feeds) and a \u escape */
    const char *text = "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"K\xc3\xb8" "ge \\\"x\\\" \\u00e9\", "
                       "\"opt\": {\"a\": [1, 2.50]}}},\n {\"name\": \"now\", \"arguments\": {}}]";
    int heads = required_run(&r.x, text, joined, names, &fin, &order);
    cJSON *o = reply(&r.x, "hermes", text, "stop");
    const cJSON *tc = cJSON_GetObjectItem(o, "tool_calls");
    CHECK_MSG(heads == 2 && order && fin && !strcmp(fin, "tool_calls"), "heads %d order %d fin %s", heads, order,
              fin ? fin : "-");
    CHECK(cJSON_GetArraySize(tc) == 2 && cJSON_IsNull(cJSON_GetObjectItem(o, "content")));
    for (int k = 0; k < 2; k++) { /* the fragments join to the non-streamed arguments, byte for byte */
        const cJSON *f = cJSON_GetObjectItem(cJSON_GetArrayItem(tc, k), "function");
        CHECK_MSG(!strcmp(str(f, "name"), names[k]) && !strcmp(str(f, "arguments"), joined[k]), "call %d: [%s] [%s]", k,
                  str(f, "arguments"), joined[k]);
    }
    CHECK(!strcmp(joined[1], "{}") && strstr(joined[0], "{\"a\": [1, 2.50]}"));
    cJSON_Delete(o);
    /* not a list: no call is streamed, the text is content at the end */
    heads = required_run(&r.x, "hello", joined, names, &fin, &order);
    CHECK(heads == 0 && order && fin && !strcmp(fin, "stop"));
    /* one call allowed: the second is not streamed, as the non-streamed reply keeps one */
    r.x.parallel = false;
    heads = required_run(&r.x, text, joined, names, &fin, &order);
    o = reply(&r.x, "hermes", text, "stop");
    tc = cJSON_GetObjectItem(o, "tool_calls");
    CHECK(heads == 1 && order && cJSON_GetArraySize(tc) == 1 &&
          !strcmp(str(cJSON_GetObjectItem(cJSON_GetArrayItem(tc, 0), "function"), "arguments"), joined[0]));
    cJSON_Delete(o);
    lmc_serve_request_free(&r);
}

/* ---- the scheduler with per-request grammars */
#define NR 6
struct res {
    char text[2048];
    size_t len;
    int32_t ids[256];
    int n;
    const char *finish;
    bool done;
};
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int n_done;

static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct res *r = user;
    pthread_mutex_lock(&mu);
    if (ev->kind == LMC_EV_TOKEN && r->n < 256) r->ids[r->n++] = ev->token;
    if (ev->text_len && r->len + ev->text_len < sizeof r->text) {
        memcpy(r->text + r->len, ev->text, ev->text_len);
        r->len += ev->text_len;
    }
    if (ev->kind != LMC_EV_TOKEN) {
        r->finish = ev->kind == LMC_EV_DONE ? ev->finish_reason : "error";
        r->done = true;
        n_done++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
}

static void test_sched_grammar(const char *dir) {
    struct lmc_model m;
    struct lmc_tokenizer *tok = NULL;
    struct lmc_backend be;
    lmc_err err = {0};
    if (!fixture_open_cpu(&m, &be, &tok, dir, NULL, 2)) return;
    const char *schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":99},"
                         "\"s\":{\"type\":\"string\",\"maxLength\":6},\"b\":{\"enum\":[\"x\",\"yy\",null]}},"
                         "\"required\":[\"n\",\"s\",\"b\"]}";
    struct lmc_grammar *g = NULL;
    CHECK(lmc_grammar_from_json_schema(schema, strlen(schema), &g, &err) == LMC_OK);
    struct lmc_sched *s = NULL;
    struct lmc_sched_opts o;
    lmc_sched_opts_default(&o);
    o.ctx = 256;
    CHECK_MSG(lmc_sched_init(&s, &m, &be, tok, &o, &err) == LMC_OK, "%s", err.msg);
    static struct res res[NR];
    memset(res, 0, sizeof res);
    n_done = 0;
    int32_t prompt[NR][8];
    uint64_t seed = 7;
    for (int i = 0; i < NR; i++)
        for (int j = 0; j < 8; j++) prompt[i][j] = (int32_t)(test_rng_next(&seed) % (uint64_t)m.cfg.vocab_size);
    for (int i = 0; s && i < NR; i++) { /* even: schema (greedy or sampled), odd: free text */
        struct lmc_request rq;
        memset(&rq, 0, sizeof rq);
        lmc_sampler_defaults(&rq.sampling);
        rq.sampling.temperature = i % 4 == 2 ? 0.9 : 0;
        rq.sampling.seed = (uint64_t)i;
        rq.max_tokens = 120;
        rq.top_logprobs = i == 4 ? 3 : -1;
        rq.grammar = i % 2 == 0 ? g : NULL;
        CHECK(lmc_sched_submit(s, prompt[i], 8, &rq, on_event, &res[i], NULL, &err) == LMC_OK);
    }
    pthread_mutex_lock(&mu);
    while (s && n_done < NR) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    lmc_sched_free(s);
    struct lmc_grammar_vocab *gv = NULL;
    int32_t eos[LMC_MAX_EOS + 1];
    int n_eos = 0;
    for (int i = 0; i < m.cfg.n_eos; i++) eos[n_eos++] = m.cfg.eos_token_ids[i];
    if (lmc_tokenizer_eos(tok) >= 0) eos[n_eos++] = lmc_tokenizer_eos(tok);
    CHECK(lmc_grammar_vocab_from_tokenizer(tok, m.cfg.vocab_size, eos, n_eos, &gv, &err) == LMC_OK);
    struct lmc_session ss;
    CHECK(lmc_session_init(&ss, &m, &be, tok, 256, 1, &err) == LMC_OK);
    for (int i = 0; i < NR; i += 2) {
        struct lmc_grammar_state *st = NULL;
        CHECK(lmc_grammar_state_new(g, &st, &err) == LMC_OK);
        CHECK_MSG(res[i].finish && !strcmp(res[i].finish, "stop"), "request %d: %s", i, res[i].finish);
        CHECK_MSG(lmc_grammar_accept(st, res[i].text, res[i].len) && lmc_grammar_can_end(st), "request %d: %.*s", i,
                  (int)res[i].len, res[i].text);
        cJSON *j = cJSON_ParseWithLength(res[i].text, res[i].len);
        CHECK_MSG(cJSON_IsObject(j) && cJSON_IsNumber(cJSON_GetObjectItem(j, "n")), "%.*s", (int)res[i].len, res[i].text);
        cJSON_Delete(j);
        lmc_grammar_state_free(st);
        if (i % 4 == 2) continue; /* sampled */
        /* greedy: the same tokens as one sequence through the session */
        CHECK(lmc_grammar_state_new(g, &st, &err) == LMC_OK);
        struct lmc_gen_opts go = {0};
        go.max_new = 120;
        lmc_sampler_defaults(&go.sampling);
        go.sampling.temperature = 0;
        struct lmc_gen_result gr;
        CHECK(lmc_session_generate_grammar(&ss, prompt[i], 8, &go, st, gv, NULL, NULL, &gr, &err) == LMC_OK);
        CHECK_MSG(gr.n_ids == res[i].n && !memcmp(gr.ids, res[i].ids, (size_t)gr.n_ids * sizeof *gr.ids),
                  "request %d: %lld vs %d tokens", i, (long long)gr.n_ids, res[i].n);
        lmc_gen_result_free(&gr);
        lmc_grammar_state_free(st);
    }
    for (int i = 1; i < NR; i += 2) CHECK(res[i].done && res[i].finish && strcmp(res[i].finish, "error"));
    lmc_session_free(&ss);
    lmc_grammar_vocab_free(gv);
    lmc_grammar_free(g);
    fixture_close_cpu(&m, &be, tok);
}

int main(void) {
    test_parse();
    test_replies();
    test_required_stream();
    test_sched_grammar("tests/fixtures/llama-tiny");
    test_sched_grammar("tests/fixtures/qwen2-tiny");
    printf("test_serve_tools: %d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}
