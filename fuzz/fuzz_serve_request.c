/* fuzz_serve_request.c — libFuzzer target: arbitrary bytes as the body of
 * /v1/completions and /v1/chat/completions through lmc_serve_parse. A
 * refused body must carry a 4xx/5xx status and a message; an accepted one
 * must satisfy the documented ranges, survive the length check and the
 * turn-stop addition, and format into a response and an error that are
 * valid JSON; a chat request's messages and tools render through a template
 * that shows tool calls (or are refused with a message), and its first
 * message read back as a reply in tool mode gives a valid response and
 * stream events (tools.c). */
#include "serve/serve.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_json(char *s) {
    if (!s) return;
    cJSON *j = cJSON_Parse(s);
    LMC_ASSERT(j != NULL);
    cJSON_Delete(j);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1); /* exact size, not NUL-terminated */
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct lmc_serve_limits lim;
    lmc_serve_limits_default(&lim);
    lim.ctx = 256;
    lim.vocab = 512;
    lim.max_body = 1 << 16;
    for (int k = 0; k < 2; k++) {
        struct lmc_serve_request r;
        struct lmc_serve_error e;
        enum lmc_serve_kind kind = k ? LMC_SERVE_CHAT : LMC_SERVE_COMPLETION;
        if (lmc_serve_parse(kind, buf, size, &lim, &r, &e) != LMC_OK) {
            LMC_ASSERT(e.http >= 400 && e.http < 600 && e.err.msg[0]);
            check_json(lmc_serve_format_error(&e));
            continue;
        }
        LMC_ASSERT(r.n >= 1 && r.n <= lim.max_n && r.r.n_stop <= LMC_SCHED_MAX_STOP - 2);
        LMC_ASSERT(r.r.max_tokens >= 0 && r.r.max_tokens <= lim.ctx);
        LMC_ASSERT(r.r.top_logprobs <= LMC_SCHED_MAX_TOP_LOGPROBS);
        LMC_ASSERT(kind == LMC_SERVE_CHAT ? r.n_msgs > 0 : (r.prompt != NULL) != (r.prompt_ids != NULL));
        for (int64_t i = 0; i < r.n_prompt_ids; i++) LMC_ASSERT(r.prompt_ids[i] >= 0 && r.prompt_ids[i] < 512);
        for (int i = 0; i < r.n_msgs; i++) LMC_ASSERT(r.msgs[i].role && r.msgs[i].content);
        lmc_err se = {0};
        LMC_ASSERT(lmc_sampler_check(&r.r.sampling, &se) == LMC_OK);
        struct lmc_chat_template *ct = NULL; /* its stop strings are referenced by r */
        if (kind == LMC_SERVE_CHAT) {
            lmc_err ce = {0};
            LMC_ASSERT(lmc_chat_template_new("[INST] {{ messages[0].content }} [/INST]<|im_end|>", "<s>", "</s>", &ct,
                                             &ce) == LMC_OK);
            LMC_ASSERT(lmc_serve_add_turn_stops(&r, ct, &e) == LMC_OK);
        }
        int64_t n_prompt = r.prompt ? (int64_t)strlen(r.prompt) % 300 : r.n_prompt_ids;
        if (lmc_serve_check_length(&r, n_prompt, &lim, &e) == LMC_OK)
            LMC_ASSERT(r.r.max_tokens >= 1 && n_prompt + r.r.max_tokens <= lim.ctx);
        const char *text = r.prompt ? r.prompt : (r.n_msgs ? r.msgs[0].content : "");
        struct lmc_serve_choice ch = {text, strlen(text), "stop", NULL, 0};
        struct lmc_serve_usage u = {n_prompt, 1, 0};
        check_json(lmc_serve_format_response(kind, "id", 1, r.model ? r.model : "m", &ch, 1, &u, false, NULL));
        LMC_ASSERT(r.r.grammar == r.x.grammar);
        if (kind == LMC_SERVE_CHAT) {
            struct lmc_chat_template *tt = NULL;
            lmc_err te = {0};
            LMC_ASSERT(lmc_chat_template_new("{% for t in tools or [] %}{{ t.function.name }}{% endfor %}"
                                             "{% for m in messages %}{{ m.role }}{{ m.content }}{% for c in "
                                             "m.tool_calls or [] %}{{ c.function.name }}{{ c.function.arguments | "
                                             "tojson }}{% endfor %}{% endfor %}",
                                             NULL, NULL, &tt, &te) == LMC_OK);
            char *out = NULL;
            if (lmc_serve_ext_render(tt, &r.x, &out, &te) != LMC_OK) LMC_ASSERT(te.msg[0]);
            free(out);
            lmc_chat_template_free(tt);
            static const char *const fmts[] = {"hermes", "llama3", "mistral", "json"};
            const char *f = fmts[size % 4];
            check_json(lmc_serve_ext_response(
                lmc_serve_format_response(kind, "id", 1, "m", &ch, 1, &u, false, NULL), &r.x, f, &text, &ch.text_len, 1));
            char *ev = lmc_serve_ext_stream(&r.x, f, "id", 1, "m", 0, true, text, strlen(text), "stop");
            /* events one after another, each "data: <json>\n\n" (the text may
             * itself hold "data: ", escaped inside a JSON string) */
            for (char *d = ev; d && *d;) {
                LMC_ASSERT(!strncmp(d, "data: ", 6));
                char *end = strstr(d, "\n\n");
                LMC_ASSERT(end != NULL);
                *end = 0;
                if (strcmp(d + 6, "[DONE]")) {
                    cJSON *j = cJSON_Parse(d + 6);
                    LMC_ASSERT(j != NULL);
                    cJSON_Delete(j);
                }
                *end = '\n';
                d = end + 2;
            }
            free(ev);
        }
        lmc_serve_request_free(&r);
        lmc_chat_template_free(ct);
    }
    free(buf);
    return 0;
}
