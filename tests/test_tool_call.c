/* test_tool_call.c — tool-call parsing per format (Hermes/Qwen, Llama 3.x,
 * Mistral both styles, generic JSON): single and multiple calls, content
 * before calls, arguments given as objects or JSON strings, quotes and tags
 * inside argument strings, and the all-or-nothing rule: truncated or
 * malformed replies come back whole as plain content with no calls. Round
 * trip: the assistant tool-call turn that real templates render (from
 * tests/fixtures/chat_templates) parses back, in the format the template's
 * text selects, to the call that was rendered. */
#include "core/core.h"
#include "infer/tool_call.h"
#include "tokenizer/chat_template.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static struct lmc_tool_parse parse(const char *text, enum lmc_tool_format f) {
    struct lmc_tool_parse p;
    lmc_err err = {0};
    CHECK(lmc_tool_calls_parse(text, strlen(text), f, &p, &err) == LMC_OK);
    return p;
}

/* expects n calls; names and arguments given as "name|args" pairs */
static void expect(const char *text, enum lmc_tool_format f, const char *content, int n, const char *const *calls) {
    struct lmc_tool_parse p = parse(text, f);
    CHECK_MSG(p.n_calls == n, "%s: %d calls, want %d", text, p.n_calls, n);
    CHECK_MSG(p.content && !strcmp(p.content, content), "%s: content [%s] want [%s]", text, p.content, content);
    for (int i = 0; i < n && i < p.n_calls; i++) {
        const char *bar = strchr(calls[i], '|');
        CHECK_MSG(!strncmp(p.calls[i].name, calls[i], (size_t)(bar - calls[i])) &&
                      strlen(p.calls[i].name) == (size_t)(bar - calls[i]),
                  "%s: name %s", text, p.calls[i].name);
        CHECK_MSG(!strcmp(p.calls[i].arguments, bar + 1), "%s: arguments %s want %s", text, p.calls[i].arguments,
                  bar + 1);
        CHECK(p.calls[i].id && strlen(p.calls[i].id) > 5);
    }
    lmc_tool_parse_free(&p);
}

static void plain(const char *text, enum lmc_tool_format f) { expect(text, f, text, 0, NULL); }

/* the assistant turn between two markers of a fixture's tool-call rendering */
static void round_trip(const char *file, const char *begin, const char *end, const char *want_fmt) {
    char path[256], *text = NULL;
    snprintf(path, sizeof path, "tests/fixtures/chat_templates/%s.json", file);
    lmc_err err = {0};
    CHECK(lmc_file_read(path, 8u << 20, &text, NULL, &err) == LMC_OK);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!j) return;
    const char *tmpl = cJSON_GetObjectItem(j, "template")->valuestring;
    const char *r = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "cases"), 6), "rendered")->valuestring;
    struct lmc_chat_template *ct = NULL;
    CHECK(lmc_chat_template_new(tmpl, "<s>", "</s>", &ct, &err) == LMC_OK);
    const char *fmt = lmc_chat_template_tool_format(ct);
    CHECK_MSG(!strcmp(fmt, want_fmt), "%s: format %s", file, fmt);
    const char *a = strstr(strstr(r, "Weather in Paris?"), begin);
    const char *b = a ? strstr(a + strlen(begin), end) : NULL;
    CHECK_MSG(a && b, "%s: markers not found", file);
    if (a && b) {
        a += strlen(begin);
        struct lmc_tool_parse p;
        CHECK(lmc_tool_calls_parse(a, (size_t)(b - a), lmc_tool_format_from_name(fmt), &p, &err) == LMC_OK);
        CHECK_MSG(p.n_calls == 1 && !strcmp(p.calls[0].name, "get_weather") &&
                      !strcmp(p.calls[0].arguments, "{\"city\":\"Paris\"}"),
                  "%s: [%.*s] -> %d calls", file, (int)(b - a), a, p.n_calls);
        lmc_tool_parse_free(&p);
    }
    lmc_chat_template_free(ct);
    cJSON_Delete(j);
}

int main(void) {
    round_trip("Qwen-Qwen2.5-7B-Instruct", "<|im_start|>assistant\n", "<|im_end|>", "hermes");
    round_trip("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "<|im_start|>assistant\n", "<|im_end|>", "hermes");
    round_trip("MiMo-VL", "<|im_start|>assistant\n", "<|im_end|>", "hermes");
    round_trip("ibm-granite-granite-4.0", "<|end_of_role|>", "<|end_of_text|>", "hermes");
    round_trip("meta-llama-Llama-3.2-3B-Instruct", "assistant<|end_header_id|>\n\n", "<|eot_id|>", "llama3");
    round_trip("unsloth-mistral-Devstral-Small-2507", "[/INST]", "</s>", "mistral");
    round_trip("Qwen3-Coder", "<|im_start|>assistant\n", "<|im_end|>", "qwen3_xml");
    round_trip("StepFun3.5-Flash", "</think>\n", "<|im_end|>", "qwen3_xml");
    round_trip("GLM-4.7-Flash", "</think>", "<|observation|>", "glm");
    round_trip("poolside-Laguna-XS-2.1", "</think>\n", "\n</assistant>", "glm");
    round_trip("inclusionai-ling-3.0-flash", "<think></think>", "<|role_end|>", "glm");
    /* XML-style values: JSON when they parse, strings otherwise; malformed -> plain */
    const char *x1[] = {"f|{\"n\":21,\"s\":\"two words\",\"o\":{\"k\":[1]}}"};
    expect("<tool_call>\n<function=f>\n<parameter=n>\n21\n</parameter>\n<parameter=s>\ntwo words\n</parameter>\n"
           "<parameter=o>\n{\"k\": [1]}\n</parameter>\n</function>\n</tool_call>",
           LMC_TOOL_QWEN3_XML, "", 1, x1);
    plain("<tool_call>\n<function=f>\n<parameter=n>\n21\n</parameter>\n", LMC_TOOL_QWEN3_XML);
    plain("<tool_call>\n<function=f>\n<parameter=n>\n21\n</function>\n</tool_call>", LMC_TOOL_QWEN3_XML);
    const char *g1[] = {"get|{\"a\":\"x\"}", "put|{}"};
    expect("ok <tool_call>get<arg_key>a</arg_key><arg_value>x</arg_value></tool_call><tool_call>put</tool_call>",
           LMC_TOOL_GLM, "ok", 2, g1);
    plain("<tool_call>get<arg_key>a</arg_key></tool_call>", LMC_TOOL_GLM);
    plain("<tool_call>get<arg_key>a</arg_key><arg_value>x", LMC_TOOL_GLM);
    /* Hermes / Qwen */
    const char *w1[] = {"get_weather|{\"city\":\"Paris\"}"};
    expect("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
           LMC_TOOL_HERMES, "", 1, w1);
    const char *w2[] = {"a|{\"x\":1}", "b|{\"q\":\"say \\\"</tool_call>\\\" ok\"}"};
    expect("Let me check.\n<tool_call>{\"name\":\"a\",\"arguments\":{\"x\":1}}</tool_call>\n"
           "<tool_call>{\"name\":\"b\",\"arguments\":\"{\\\"q\\\":\\\"say \\\\\\\"</tool_call>\\\\\\\" ok\\\"}\"}</tool_call>",
           LMC_TOOL_HERMES, "Let me check.", 2, w2);
    plain("<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par", LMC_TOOL_HERMES);   /* truncated */
    plain("<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{bad}</tool_call>", LMC_TOOL_HERMES);
    plain("<tool_call>{\"arguments\": {}}</tool_call>", LMC_TOOL_HERMES);                            /* no name */
    plain("<tool_call>{\"name\": \"a\", \"arguments\": 5}</tool_call>", LMC_TOOL_HERMES);           /* args not object */
    plain("<tool_call>{\"name\": \"a\", \"arguments\": \"[1]\"}</tool_call>", LMC_TOOL_HERMES);
    plain("Just an answer, no tools.", LMC_TOOL_HERMES);
    plain("", LMC_TOOL_HERMES);
    const char *w3[] = {"noargs|{}"};
    expect("<tool_call>{\"name\": \"noargs\"}</tool_call>", LMC_TOOL_HERMES, "", 1, w3);

    /* Llama 3.x */
    const char *l1[] = {"get_weather|{\"city\":\"Paris\",\"unit\":\"c\"}"};
    expect("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"c\"}}", LMC_TOOL_LLAMA3, "", 1,
           l1);
    expect("<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"c\"}}",
           LMC_TOOL_LLAMA3, "", 1, l1);
    const char *l2[] = {"a|{\"s\":\"x;y}\"}", "b|{}"};
    expect("{\"name\": \"a\", \"parameters\": {\"s\": \"x;y}\"}}; {\"name\": \"b\", \"parameters\": {}}",
           LMC_TOOL_LLAMA3, "", 2, l2);
    plain("{\"name\": \"a\", \"parameters\": {\"s\": \"unterminated", LMC_TOOL_LLAMA3);
    plain("The answer is {\"name\": \"a\"}", LMC_TOOL_LLAMA3);
    plain("{\"name\": \"a\", \"parameters\": {}} trailing words", LMC_TOOL_LLAMA3);

    /* Mistral */
    const char *m1[] = {"get_weather|{\"city\":\"Paris\"}", "f|{}"};
    expect("[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}, "
           "{\"name\": \"f\", \"arguments\": {}}]",
           LMC_TOOL_MISTRAL, "", 2, m1);
    struct lmc_tool_parse p = parse("[TOOL_CALLS][{\"name\": \"g\", \"arguments\": {}, \"id\": \"abcDEF123\"}]",
                                    LMC_TOOL_MISTRAL);
    CHECK(p.n_calls == 1 && !strcmp(p.calls[0].id, "abcDEF123"));
    lmc_tool_parse_free(&p);
    const char *m2[] = {"get_weather|{\"city\":\"Paris\"}", "time|{\"tz\":\"CET\"}"};
    expect("Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]time[ARGS]{\"tz\": \"CET\"}",
           LMC_TOOL_MISTRAL, "Sure.", 2, m2);
    plain("[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\"", LMC_TOOL_MISTRAL);
    plain("[TOOL_CALLS]get_weather[ARGS]{\"city\": ", LMC_TOOL_MISTRAL);
    plain("[TOOL_CALLS][]", LMC_TOOL_MISTRAL);

    /* generic JSON */
    const char *j1[] = {"f|{\"a\":[1,2]}"};
    expect("{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}", LMC_TOOL_JSON, "", 1, j1);
    expect("```json\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}\n```", LMC_TOOL_JSON, "", 1, j1);
    expect("{\"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a\\\": [1, 2]}\"}}]}",
           LMC_TOOL_JSON, "", 1, (const char *[]){"f|{\"a\": [1, 2]}"});
    plain("{\"not\": \"a call\"}", LMC_TOOL_JSON);
    plain("[1, 2, 3]", LMC_TOOL_JSON);
    plain("hello", LMC_TOOL_JSON);

    /* ids are distinct within a reply and stable for the same text */
    struct lmc_tool_parse a = parse("<tool_call>{\"name\":\"a\"}</tool_call><tool_call>{\"name\":\"a\"}</tool_call>",
                                    LMC_TOOL_HERMES);
    struct lmc_tool_parse b = parse("<tool_call>{\"name\":\"a\"}</tool_call><tool_call>{\"name\":\"a\"}</tool_call>",
                                    LMC_TOOL_HERMES);
    CHECK(a.n_calls == 2 && b.n_calls == 2 && strcmp(a.calls[0].id, a.calls[1].id) != 0 &&
          !strcmp(a.calls[0].id, b.calls[0].id));
    lmc_tool_parse_free(&a);
    lmc_tool_parse_free(&b);
    CHECK(lmc_tool_format_from_name("hermes") == LMC_TOOL_HERMES && lmc_tool_format_from_name("x") == LMC_TOOL_JSON);
    return test_finish("test_tool_call");
}
