/* test_serve_api.c — the OpenAI request parser and response formatter of
 * `lmc serve` on their own (no model, no sockets): valid completion and
 * chat requests, each kind of bad input (malformed JSON, wrong types,
 * unknown fields, huge bodies, negative or absurd values, invalid UTF-8)
 * giving a 4xx error that names the field, the context-length check,
 * response/chunk/error/models JSON that parses back with the expected
 * fields, and the Prometheus metrics text. */
#include "serve/serve.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static struct lmc_serve_limits lim(void) {
    struct lmc_serve_limits l;
    lmc_serve_limits_default(&l);
    l.ctx = 256;
    l.vocab = 512;
    l.max_body = 4096;
    return l;
}

/* Parses body; returns the HTTP status (200 if accepted) and the param. */
static int parse(enum lmc_serve_kind k, const char *body, char *param) {
    struct lmc_serve_limits l = lim();
    struct lmc_serve_request r;
    struct lmc_serve_error e;
    lmc_status st = lmc_serve_parse(k, body, strlen(body), &l, &r, &e);
    if (param) strcpy(param, st ? e.param : "");
    if (st) {
        CHECK_MSG(e.err.msg[0] != 0 && e.http >= 400 && e.http < 500, "%s", body);
        return e.http;
    }
    lmc_serve_request_free(&r);
    return 200;
}

static void test_valid(void) {
    struct lmc_serve_limits l = lim();
    struct lmc_serve_request r;
    struct lmc_serve_error e;
    const char *b = "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,"
                    "\"top_k\":40,\"min_p\":0.05,\"seed\":42,\"stop\":[\"\\n\",\"END\"],\"n\":2,"
                    "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"logprobs\":3,\"user\":\"u\","
                    "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"echo\":false}";
    CHECK(lmc_serve_parse(LMC_SERVE_COMPLETION, b, strlen(b), &l, &r, &e) == LMC_OK);
    CHECK(r.prompt && !strcmp(r.prompt, "Hello") && r.model && !strcmp(r.model, "m"));
    CHECK(r.r.max_tokens == 7 && r.r.sampling.temperature == 0.5 && r.r.sampling.top_k == 40);
    CHECK(r.r.sampling.seed == 42 && r.seed_set && r.n == 2 && r.stream && r.include_usage);
    CHECK(r.r.n_stop == 2 && !strcmp(r.r.stop[0], "\n") && !strcmp(r.r.stop[1], "END"));
    CHECK(r.logprobs && r.r.top_logprobs == 3 && r.add_special == -1);
    CHECK(r.r.sampling.presence_penalty == 0.5 && r.r.sampling.frequency_penalty == -0.5);
    CHECK(lmc_serve_check_length(&r, 200, &l, &e) == LMC_OK);
    CHECK(lmc_serve_check_length(&r, 250, &l, &e) != LMC_OK && e.http == 400 &&
          !strcmp(e.code, "context_length_exceeded"));
    CHECK(lmc_serve_check_length(&r, 256, &l, &e) != LMC_OK);
    CHECK(lmc_serve_check_length(&r, 0, &l, &e) != LMC_OK);
    lmc_serve_request_free(&r);

    /* defaults; max_tokens from the room left; token-id prompt */
    b = "{\"prompt\":[1,2,3]}";
    CHECK(lmc_serve_parse(LMC_SERVE_COMPLETION, b, strlen(b), &l, &r, &e) == LMC_OK);
    CHECK(r.n_prompt_ids == 3 && r.prompt_ids[2] == 3 && r.n == 1 && !r.stream && r.r.top_logprobs < 0);
    CHECK(r.r.sampling.temperature == 1.0 && r.r.sampling.top_p == 1.0 && !r.seed_set);
    CHECK(lmc_serve_check_length(&r, 3, &l, &e) == LMC_OK && r.r.max_tokens == 253);
    lmc_serve_request_free(&r);

    b = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null}],"
        "\"logprobs\":true,\"top_logprobs\":2,\"max_completion_tokens\":5}";
    CHECK(lmc_serve_parse(LMC_SERVE_CHAT, b, strlen(b), &l, &r, &e) == LMC_OK);
    CHECK(r.n_msgs == 3 && !strcmp(r.msgs[1].content, "ab") && !strcmp(r.msgs[2].content, "") &&
          !strcmp(r.msgs[0].role, "system"));
    CHECK(r.logprobs && r.r.top_logprobs == 2 && r.r.max_tokens == 5);
    struct lmc_chat_template *ct = NULL;
    lmc_err ce = {0};
    CHECK(lmc_chat_template_new("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                "{% endfor %}", NULL, "<|im_end|>", &ct, &ce) == LMC_OK);
    CHECK(lmc_serve_add_turn_stops(&r, ct, &e) == LMC_OK && r.r.n_stop == 1 && !strcmp(r.r.stop[0], "<|im_end|>"));
    lmc_chat_template_free(ct);
    lmc_serve_request_free(&r);
}

static void test_errors(void) {
    char p[64];
    /* malformed JSON */
    CHECK(parse(LMC_SERVE_COMPLETION, "", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\"", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\"} x", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "[1,2]", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "\"prompt\"", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"\\ud800\"}", NULL) == 400); /* lone surrogate */
    /* invalid UTF-8 */
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"\xff\xfe\"}", NULL) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"\xc3\"}", NULL) == 400);
    /* missing, wrong types */
    CHECK(parse(LMC_SERVE_COMPLETION, "{}", p) == 400 && !strcmp(p, "prompt"));
    CHECK(parse(LMC_SERVE_CHAT, "{}", p) == 400 && !strcmp(p, "messages"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":5}", p) == 400 && !strcmp(p, "prompt"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":\"5\"}", p) == 400 && !strcmp(p, "max_tokens"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":1.5}", p) == 400 && !strcmp(p, "max_tokens"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", p) == 400 && !strcmp(p, "temperature"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"stream\":1}", p) == 400 && !strcmp(p, "stream"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"stop\":5}", p) == 400 && !strcmp(p, "stop"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"\"]}", p) == 400 && !strcmp(p, "stop"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\"]}", p) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":\"hi\"}", p) == 400 && !strcmp(p, "messages"));
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[]}", p) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", p) == 400 &&
          !strcmp(p, "messages[0].role"));
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":7}]}", p) == 400 &&
          !strcmp(p, "messages[0].content"));
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", p) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", p) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", p) == 400 &&
          !strcmp(p, "top_logprobs"));
    /* unknown fields, per endpoint */
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"bogus\":1}", p) == 400 && !strcmp(p, "bogus"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"messages\":[]}", p) == 400 && !strcmp(p, "messages"));
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"prompt\":\"a\"}", p) == 400);
    CHECK(parse(LMC_SERVE_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":[]}", p) == 400);
    /* negative or absurd values */
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":-1}", p) == 400 && !strcmp(p, "max_tokens"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":0}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":1e300}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":257}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"temperature\":-0.1}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"temperature\":1e999}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"top_p\":0}", p) == 400 && !strcmp(p, "top_p"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"top_p\":1.5}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"top_k\":-5}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"min_p\":2}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"presence_penalty\":3}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"frequency_penalty\":-2.5}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"n\":0}", p) == 400 && !strcmp(p, "n"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"n\":1000}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":21}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"seed\":1e30}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":[1,2,99999]}", p) == 400 && !strcmp(p, "prompt"));
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":[1,-2]}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":[]}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"logit_bias\":{\"1\":5}}", p) == 400);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"best_of\":3}", p) == 400);
    /* null means absent */
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":null,\"stop\":null,\"seed\":null}", p) == 200);
    CHECK(parse(LMC_SERVE_COMPLETION, "{\"prompt\":[\"a\"]}", p) == 200);
    /* a body over the limit; deep nesting */
    char *big = malloc(10000);
    memset(big, ' ', 9999);
    big[9999] = 0;
    memcpy(big, "{\"prompt\":\"", 11);
    big[9997] = '"';
    big[9998] = '}';
    CHECK(parse(LMC_SERVE_COMPLETION, big, NULL) == 413);
    for (int i = 0; i < 3000; i++) big[i] = '[';
    big[3000] = 0;
    CHECK(parse(LMC_SERVE_COMPLETION, big, NULL) == 413 || parse(LMC_SERVE_COMPLETION, big, NULL) == 400);
    big[2000] = 0;
    CHECK(parse(LMC_SERVE_COMPLETION, big, NULL) == 400);
    free(big);
    /* NUL inside the body */
    struct lmc_serve_limits l = lim();
    struct lmc_serve_request r;
    struct lmc_serve_error e;
    CHECK(lmc_serve_parse(LMC_SERVE_COMPLETION, "{\"prompt\":\"a\0b\"}", 15, &l, &r, &e) != LMC_OK && e.http == 400);
}

static cJSON *parse_json(const char *s) {
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    CHECK_MSG(j != NULL, "%s", s ? s : "(null)");
    return j;
}

static void test_format(void) {
    struct lmc_serve_usage u = {5, 3, 1};
    struct lmc_serve_token toks[2] = {{.id = 65, .logprob = -0.5f, .n_top = 2, .top_ids = {65, 66}, .top_logprobs = {-0.5f, -1.5f}},
                                      {.id = 66, .logprob = -0.25f}};
    struct lmc_serve_choice ch[2] = {{"h\xc3\xa9\"\n", 5, "length", toks, 2}, {"b", 1, "stop", NULL, 0}};
    char *s = lmc_serve_format_response(LMC_SERVE_COMPLETION, "cmpl-1", 123, "m", ch, 2, &u, false, NULL);
    cJSON *j = parse_json(s);
    if (j) {
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK(!strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion"));
        CHECK(!strcmp(cJSON_GetObjectItem(c0, "text")->valuestring, "h\xc3\xa9\"\n"));
        CHECK(!strcmp(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "length"));
        cJSON *us = cJSON_GetObjectItem(j, "usage");
        CHECK(cJSON_GetObjectItem(us, "total_tokens")->valueint == 8);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")) == 2);
    }
    cJSON_Delete(j);
    free(s);
    s = lmc_serve_format_response(LMC_SERVE_CHAT, "chatcmpl-1", 123, "m", ch, 1, &u, true, NULL);
    j = parse_json(s);
    if (j) {
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        cJSON *msg = cJSON_GetObjectItem(c0, "message");
        CHECK(!strcmp(cJSON_GetObjectItem(msg, "role")->valuestring, "assistant"));
        cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "logprobs"), "content");
        CHECK(cJSON_GetArraySize(content) == 2);
        cJSON *t0 = cJSON_GetArrayItem(content, 0);
        CHECK(cJSON_GetObjectItem(t0, "logprob")->valuedouble == -0.5);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(t0, "top_logprobs")) == 2);
    }
    cJSON_Delete(j);
    free(s);
    s = lmc_serve_format_response(LMC_SERVE_COMPLETION, "cmpl-1", 123, "m", ch, 1, &u, true, NULL);
    j = parse_json(s);
    if (j) {
        cJSON *lp = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "logprobs");
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "tokens")) == 2);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "token_logprobs")) == 2);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "top_logprobs")) == 2);
    }
    cJSON_Delete(j);
    free(s);
    /* SSE chunks */
    s = lmc_serve_format_chunk(LMC_SERVE_CHAT, "chatcmpl-1", 1, "m", 0, "hi", 2, NULL, NULL, true, NULL);
    CHECK(s && !strncmp(s, "data: ", 6) && strlen(s) > 8 && !strcmp(s + strlen(s) - 2, "\n\n"));
    j = s ? parse_json(s + 6) : NULL;
    if (j) {
        cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta");
        CHECK(!strcmp(cJSON_GetObjectItem(d, "role")->valuestring, "assistant"));
        CHECK(!strcmp(cJSON_GetObjectItem(d, "content")->valuestring, "hi"));
        CHECK(!strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion.chunk"));
    }
    cJSON_Delete(j);
    free(s);
    s = lmc_serve_format_chunk(LMC_SERVE_COMPLETION, "cmpl-1", 1, "m", 1, "", 0, NULL, "stop", false, NULL);
    j = s ? parse_json(s + 6) : NULL;
    if (j) {
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK(cJSON_GetObjectItem(c, "index")->valueint == 1);
        CHECK(!strcmp(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "stop"));
    }
    cJSON_Delete(j);
    free(s);
    s = lmc_serve_format_usage_chunk(LMC_SERVE_CHAT, "c", 1, "m", &u);
    j = s ? parse_json(s + 6) : NULL;
    if (j) CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint == 5);
    cJSON_Delete(j);
    free(s);
    /* errors: message with invalid UTF-8 stays valid JSON */
    struct lmc_serve_error e;
    lmc_serve_fail(&e, 400, "pa\xff", "invalid_value", "bad \xc3 value");
    s = lmc_serve_format_error(&e);
    j = parse_json(s);
    if (j) {
        cJSON *x = cJSON_GetObjectItem(j, "error");
        CHECK(!strcmp(cJSON_GetObjectItem(x, "type")->valuestring, "invalid_request_error"));
        CHECK(!strcmp(cJSON_GetObjectItem(x, "code")->valuestring, "invalid_value"));
        CHECK(cJSON_IsString(cJSON_GetObjectItem(x, "message")) && cJSON_IsString(cJSON_GetObjectItem(x, "param")));
    }
    cJSON_Delete(j);
    free(s);
    lmc_serve_fail(&e, 401, NULL, NULL, "no");
    CHECK(!strcmp(e.type, "authentication_error"));
    s = lmc_serve_format_models("tiny", 7, 256, true);
    j = parse_json(s);
    if (j) {
        cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0);
        CHECK(!strcmp(cJSON_GetObjectItem(m, "id")->valuestring, "tiny"));
        CHECK(cJSON_GetObjectItem(m, "max_model_len")->valueint == 256);
    }
    cJSON_Delete(j);
    free(s);
}

static void test_metrics(void) {
    struct lmc_serve_metrics *m;
    lmc_err err = {0};
    CHECK(lmc_serve_metrics_init(&m, &err) == LMC_OK);
    lmc_serve_metrics_http(m, 200);
    lmc_serve_metrics_http(m, 418);
    lmc_serve_metrics_request(m, 10);
    lmc_serve_metrics_ttft(m, 0.02);
    lmc_serve_metrics_itl(m, 0.003);
    lmc_serve_metrics_itl(m, 100);
    lmc_serve_metrics_finish(m, "length", 4, 0.5);
    struct lmc_sched_stats st = {.running = 2, .waiting = 1, .kv_blocks_total = 100, .kv_blocks_used = 30,
                                 .prefix_cache_blocks = 7, .prefix_cache_blocks_max = 25, .prefix_hits_blocks = 11,
                                 .prefix_evictions = 13};
    /* the process's resident memory, as Prometheus clients name it: this
     * process's own, so at least the 1 MiB touched here */
    static char touched[1 << 20];
    memset(touched, 1, sizeof touched);
    char *t = lmc_serve_metrics_render(m, &st);
    CHECK(t != NULL);
    if (t) {
        CHECK(strstr(t, "lmc_requests_total 1\n") != NULL);
        CHECK(strstr(t, "lmc_prompt_tokens_total 10\n") != NULL);
        CHECK(strstr(t, "lmc_generation_tokens_total 4\n") != NULL);
        CHECK(strstr(t, "lmc_requests_running 2\n") && strstr(t, "lmc_requests_waiting 1\n"));
        CHECK(strstr(t, "lmc_kv_blocks_used 30\n") && strstr(t, "lmc_kv_blocks_free 70\n"));
        CHECK(strstr(t, "lmc_time_to_first_token_seconds_bucket{le=\"0.01\"} 0\n") != NULL);
        CHECK(strstr(t, "lmc_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n") != NULL);
        CHECK(strstr(t, "lmc_inter_token_latency_seconds_bucket{le=\"2.5\"} 1\n") != NULL);
        CHECK(strstr(t, "lmc_inter_token_latency_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
        CHECK(strstr(t, "lmc_inter_token_latency_seconds_count 2\n") != NULL);
        CHECK(strstr(t, "lmc_http_responses_total{code=\"other\"} 1\n") != NULL);
        CHECK(strstr(t, "lmc_requests_finished_total{reason=\"length\"} 1\n") != NULL);
        CHECK(strstr(t, "# TYPE lmc_time_to_first_token_seconds histogram\n") != NULL);
        CHECK(strstr(t, "lmc_prefix_cache_blocks 7\n") && strstr(t, "lmc_prefix_cache_blocks_max 25\n"));
        CHECK(strstr(t, "lmc_prefix_cache_hits_total 11\n") && strstr(t, "lmc_prefix_cache_evictions_total 13\n"));
        CHECK(strstr(t, "# TYPE lmc_prefix_cache_evictions_total counter\n") != NULL);
        const char *rss = strstr(t, "\nprocess_resident_memory_bytes ");
        CHECK(rss && strtod(rss + 31, NULL) >= (double)sizeof touched && touched[12345] == 1);
        CHECK(strstr(t, "# TYPE process_resident_memory_bytes gauge\n") != NULL);
        const char *fds = strstr(t, "\nprocess_open_fds ");
        CHECK(fds && strtod(fds + 18, NULL) >= 3);
    }
    free(t);
    lmc_serve_metrics_free(m);
    size_t n = 0;
    const char *page = lmc_serve_webui(&n);
    CHECK(n > 1000 && strlen(page) == n && strstr(page, "/v1/chat/completions") && !strstr(page, "http://") &&
          !strstr(page, "https://"));
}

int main(void) {
    test_valid();
    test_errors();
    test_format();
    test_metrics();
    return test_finish("test_serve_api");
}
