/* bench_chat_tools.c — the server-side cost of tool calling and
 * structured output on a real model (default models/kjv-llama, CPU):
 * (1) preparing a chat request with tools (lmc_serve_parse, rendering
 * with a short Hermes-style template and with Qwen2.5's real template,
 * tokenizing) against the time to first token of the same request
 * through the batched scheduler (prefix cache off); (2) decode tokens/s
 * through the scheduler with a JSON-Schema grammar (the per-request mask
 * on the logits row) against the same requests without one (the plain
 * greedy path), at 1 and 8 concurrent requests, runs interleaved, the
 * same number of tokens each (the schema fixes the output's length).
 * Usage: bench_chat_tools [MODEL_DIR] (run from the repository root). */
#include "core/core.h"
#include "infer/scheduler.h"
#include "serve/serve.h"
#include "tokenizer/chat_template.h"
#include "bench_util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int64_t tokens;
    double t_first;
    char err[128];
};
static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct waiter *w = user;
    pthread_mutex_lock(&w->mu);
    if (ev->kind == LMC_EV_TOKEN && w->t_first == 0) w->t_first = lmc_time_now();
    if (ev->kind != LMC_EV_TOKEN) {
        w->tokens += ev->completion_tokens;
        if (ev->kind == LMC_EV_ERROR) snprintf(w->err, sizeof w->err, "%s", ev->error);
        w->done++;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}
static void wait_n(struct waiter *w, int n) {
    pthread_mutex_lock(&w->mu);
    while (w->done < n) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static const char *BODY =
    "{\"model\":\"kjv\",\"messages\":[{\"role\":\"system\",\"content\":\"You answer with tools.\"},"
    "{\"role\":\"user\",\"content\":\"What is the weather in Paris for three days, and the time?\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather forecast\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12},"
    "\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7}},\"required\":[\"city\",\"days\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"description\":\"Clock\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"zone\":{\"enum\":[\"UTC\",\"CET\"]}},\"required\":[\"zone\"]}}}],"
    "\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"temperature\":0}";

static const char *SHORT_TEMPLATE =
    "{%- if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t.function.name }} {% endfor %}. "
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>.<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/* median microseconds to parse the body and render it with ct (and tokenize) */
static double prep_us(const struct lmc_chat_template *ct, const struct lmc_tokenizer *tok, bool encode,
                      size_t *bytes, int64_t *n_tok) {
    struct lmc_serve_limits lim;
    lmc_serve_limits_default(&lim);
    double ts[200];
    for (int r = 0; r < 200; r++) {
        double t0 = lmc_time_now();
        struct lmc_serve_request rq;
        struct lmc_serve_error e;
        char *text = NULL;
        lmc_err err = {0};
        int32_t *ids = NULL;
        int64_t n = 0;
        if (lmc_serve_parse(LMC_SERVE_CHAT, BODY, strlen(BODY), &lim, &rq, &e) ||
            lmc_serve_ext_render(ct, &rq.x, &text, &err) ||
            (encode && lmc_tokenizer_encode(tok, text, strlen(text), false, &ids, &n, &err))) {
            fprintf(stderr, "bench_chat_tools: %s%s\n", e.err.msg, err.msg);
            exit(1);
        }
        ts[r] = (lmc_time_now() - t0) * 1e6;
        *bytes = strlen(text);
        *n_tok = n;
        free(ids);
        free(text);
        lmc_serve_request_free(&rq);
    }
    return bench_median_upper(ts, 200);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/kjv-llama";
    struct lmc_model m;
    struct lmc_tokenizer *tok = NULL;
    struct lmc_backend be;
    lmc_err err = {0};
    if (lmc_model_load(&m, dir, NULL, &err) || lmc_tokenizer_load(&tok, dir, &err) || lmc_backend_cpu_init(&be, 2, &err)) {
        fprintf(stderr, "bench_chat_tools: %s: %s\n", dir, err.msg);
        return 1;
    }
    /* (1) request preparation vs time to first token */
    struct lmc_chat_template *shortt = NULL, *qwen = NULL;
    if (lmc_chat_template_new(SHORT_TEMPLATE, NULL, NULL, &shortt, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    char *qj = NULL;
    if (!lmc_file_read("tests/fixtures/chat_templates/Qwen-Qwen2.5-7B-Instruct.json", 1 << 20, &qj, NULL, &err)) {
        cJSON *j = cJSON_Parse(qj);
        const cJSON *t = cJSON_GetObjectItem(j, "template");
        if (cJSON_IsString(t) && lmc_chat_template_new(t->valuestring, NULL, NULL, &qwen, &err)) qwen = NULL;
        cJSON_Delete(j);
        free(qj);
    }
    size_t b_short = 0, b_qwen = 0;
    int64_t n_short = 0, n_qwen = 0;
    double render_short = prep_us(shortt, tok, false, &b_short, &n_short);
    double prep_short = prep_us(shortt, tok, true, &b_short, &n_short);
    double render_qwen = qwen ? prep_us(qwen, tok, false, &b_qwen, &n_qwen) : 0;
    double prep_qwen = qwen ? prep_us(qwen, tok, true, &b_qwen, &n_qwen) : 0;

    struct lmc_sched_opts so;
    lmc_sched_opts_default(&so);
    so.prefix_cache = false;
    struct lmc_sched *s = NULL;
    if (lmc_sched_init(&s, &m, &be, tok, &so, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    struct lmc_serve_limits lim;
    lmc_serve_limits_default(&lim);
    struct lmc_serve_request rq;
    struct lmc_serve_error e;
    char *text = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    if (lmc_serve_parse(LMC_SERVE_CHAT, BODY, strlen(BODY), &lim, &rq, &e) ||
        lmc_serve_ext_render(shortt, &rq.x, &text, &err) ||
        lmc_tokenizer_encode(tok, text, strlen(text), false, &ids, &n_ids, &err))
        return fprintf(stderr, "%s%s\n", e.err.msg, err.msg), 1;
    double ttft[21];
    for (int r = 0; r < 21; r++) {
        struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, ""};
        struct lmc_request q = rq.r; /* with the tool grammar, as the server submits it */
        q.max_tokens = 1;
        double t0 = lmc_time_now();
        if (lmc_sched_submit(s, ids, n_ids, &q, on_event, &w, NULL, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
        wait_n(&w, 1);
        ttft[r] = (w.t_first - t0) * 1e6;
    }
    double ttft_us = bench_median_upper(ttft, 21);
    printf("## Request preparation vs time to first token\n\n");
    printf("Body: a chat request with 2 tools, tool_choice required (%zu bytes). Prep = lmc_serve_parse (tool grammar "
           "compiled) + render (+ tokenize); median of 200. TTFT: the short-template prompt (%lld tokens) through the "
           "scheduler, prefix cache off, max_tokens 1, median of 21.\n\n",
           strlen(BODY), (long long)n_ids);
    printf("| template | prompt bytes | prompt tokens | parse+render us | parse+render+tokenize us | %% of TTFT |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    printf("| short Hermes-style | %zu | %lld | %.1f | %.1f | %.2f%% |\n", b_short, (long long)n_short, render_short,
           prep_short, 100 * prep_short / ttft_us);
    if (qwen)
        printf("| Qwen2.5-7B-Instruct (real) | %zu | %lld | %.1f | %.1f | (prompt over ctx) |\n", b_qwen,
               (long long)n_qwen, render_qwen, prep_qwen);
    printf("\nTTFT median: %.1f us\n\n", ttft_us);

    /* (2) decode with and without a schema */
    const char *schema = "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9},"
                         "\"minItems\":40,\"maxItems\":40}";
    struct lmc_grammar *g = NULL;
    if (lmc_grammar_from_json_schema(schema, strlen(schema), &g, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    /* the schema's output length in tokens, from one greedy run: plain runs make as many */
    struct waiter w0 = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, ""};
    struct lmc_request base;
    memset(&base, 0, sizeof base);
    lmc_sampler_defaults(&base.sampling);
    base.sampling.temperature = 0;
    base.top_logprobs = -1;
    base.max_tokens = 200;
    struct lmc_request q = base;
    q.grammar = g;
    int32_t prompt[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    if (lmc_sched_submit(s, prompt, 8, &q, on_event, &w0, NULL, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    wait_n(&w0, 1);
    int64_t per_req = w0.tokens;
    printf("## Decode tokens/s with a JSON schema vs without\n\nSchema: an array of exactly 40 integers 0..9 (%lld tokens "
           "per request, greedy); without: the same prompts, ignore_eos, max_tokens %lld (the plain greedy path, argmax "
           "on the backend). Tokens/s = completion tokens / wall time of the batch; 5 interleaved rounds, median.\n\n",
           (long long)per_req, (long long)per_req);
    printf("'row path': no schema, but presence_penalty 1e-6 so that each step downloads the logits row and samples "
           "on the host as a constrained request does (the cost of leaving the argmax fast path, without the mask).\n\n");
    printf("Rates per wall second and per CPU second of the whole process (every thread; the loaded machine's "
           "waits do not count in the second).\n\n");
    printf("| concurrent | clock | plain tok/s | row path tok/s | schema tok/s | schema / plain | schema / row path |\n"
           "|---:|---|---:|---:|---:|---:|---:|\n");
    int conc[2] = {1, 8};
    for (int ci = 0; ci < 2; ci++) {
        double rate[3][5], crate[3][5];
        for (int round = 0; round < 5; round++)
            for (int with = 0; with < 3; with++) {
                struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, ""};
                double t0 = lmc_time_now(), c0 = bench_cpu();
                for (int k = 0; k < conc[ci]; k++) {
                    struct lmc_request r = base;
                    r.max_tokens = per_req;
                    r.ignore_eos = with != 1;
                    r.grammar = with == 1 ? g : NULL;
                    if (with == 2) r.sampling.presence_penalty = 1e-6;
                    int32_t p[8];
                    for (int j = 0; j < 8; j++) p[j] = (int32_t)(1 + (k * 131 + j * 17 + round) % (m.cfg.vocab_size - 1));
                    if (lmc_sched_submit(s, p, 8, &r, on_event, &w, NULL, &err))
                        return fprintf(stderr, "%s\n", err.msg), 1;
                }
                wait_n(&w, conc[ci]);
                if (w.err[0]) return fprintf(stderr, "bench_chat_tools: %s\n", w.err), 1;
                rate[with][round] = (double)w.tokens / (lmc_time_now() - t0);
                crate[with][round] = (double)w.tokens / (bench_cpu() - c0);
            }
        double p = bench_median_upper(rate[0], 5), sch = bench_median_upper(rate[1], 5), row = bench_median_upper(rate[2], 5);
        printf("| %d | wall | %.0f | %.0f | %.0f | %.2f | %.2f |\n", conc[ci], p, row, sch, sch / p, sch / row);
        p = bench_median_upper(crate[0], 5), sch = bench_median_upper(crate[1], 5), row = bench_median_upper(crate[2], 5);
        printf("| %d | CPU | %.0f | %.0f | %.0f | %.2f | %.2f |\n", conc[ci], p, row, sch, sch / p, sch / row);
    }
    lmc_sched_free(s);
    lmc_grammar_free(g);
    free(ids);
    free(text);
    lmc_serve_request_free(&rq);
    lmc_chat_template_free(shortt);
    lmc_chat_template_free(qwen);
    lmc_backend_cpu_free(&be);
    lmc_tokenizer_free(tok);
    lmc_model_free(&m);
    return 0;
}
