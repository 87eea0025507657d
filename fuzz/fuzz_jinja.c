/* fuzz_jinja.c — libFuzzer target for the Jinja engine: the input is a
 * template, then (after a NUL byte, if any) a JSON object of variables, e.g.
 * {"messages": [...], "tools": [...]}. The template is parsed and rendered
 * with tight bounds (steps, output, memory, depth); any outcome but a crash,
 * a leak or an error without a message is a bug. The JSON part also goes
 * through the chat-template path as messages, and the whole input through
 * the tool-call parser in every format. */
#include "core/core.h"
#include "template/jinja.h"
#include "infer/tool_call.h"
#include "tokenizer/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 16)) return 0;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    buf[size] = 0;
    size_t tlen = strlen(buf);
    const char *json = tlen < size ? buf + tlen + 1 : NULL;
    cJSON *vars = json ? cJSON_Parse(json) : NULL;
    struct lmc_jinja_opts o = {.max_output = 1u << 16, .max_steps = 20000, .max_depth = 40,
                               .max_memory = 16u << 20, .now_set = true, .now_year = 2026, .now_month = 12,
                               .now_day = 5};
    lmc_err err;
    memset(&err, 0, sizeof err);
    lmc_jinja_tmpl *t = NULL;
    if (lmc_jinja_parse(buf, tlen, &t, &err) == LMC_OK) {
        char *out = NULL;
        size_t n = 0;
        memset(&err, 0, sizeof err);
        if (lmc_jinja_render(t, cJSON_IsObject(vars) ? vars : NULL, &o, &out, &n, &err) == LMC_OK) {
            LMC_ASSERT(out && strlen(out) <= n && n <= o.max_output);
            free(out);
        } else {
            LMC_ASSERT(!out && err.msg[0]);
        }
        lmc_jinja_free(t);
    } else {
        LMC_ASSERT(!t && err.msg[0]);
    }
    /* the chat path: the JSON's "messages" (or the whole of it, if a list) */
    const cJSON *msgs = cJSON_IsArray(vars) ? vars : cJSON_GetObjectItemCaseSensitive(vars, "messages");
    if (cJSON_IsArray(msgs) && tlen < 4096) {
        struct lmc_chat_template *ct = NULL;
        if (lmc_chat_template_new(buf, "<s>", "</s>", &ct, &err) == LMC_OK) {
            char *out = NULL;
            struct lmc_chat_render_opts ro = {.tools = cJSON_GetObjectItemCaseSensitive(vars, "tools"),
                                              .add_generation_prompt = true, .now_year = 2026, .now_month = 12,
                                              .now_day = 5};
            if (lmc_chat_template_render(ct, msgs, &ro, &out, &err) == LMC_OK) LMC_ASSERT(out != NULL);
            free(out);
            lmc_chat_template_free(ct);
        }
    }
    /* the input as a model's reply: calls are whole and valid, or there are none */
    for (int f = 0; f < 6; f++) {
        struct lmc_tool_parse tp;
        if (lmc_tool_calls_parse((const char *)data, size, (enum lmc_tool_format)f, &tp, &err) != LMC_OK) continue;
        LMC_ASSERT(tp.content != NULL);
        for (int i = 0; i < tp.n_calls; i++) {
            cJSON *a = cJSON_Parse(tp.calls[i].arguments);
            LMC_ASSERT(tp.calls[i].name[0] && tp.calls[i].id[0] && cJSON_IsObject(a));
            cJSON_Delete(a);
        }
        lmc_tool_parse_free(&tp);
    }
    cJSON_Delete(vars);
    free(buf);
    return 0;
}
