/* serve.h — the OpenAI-compatible HTTP server behind `lmc serve`:
 * request parsing and validation (api_parse.c), response/SSE/error JSON
 * (api_format.c), Prometheus metrics (metrics.c), the embedded chat page
 * (webui.c) and the civetweb server that ties them to the scheduler
 * (server.c). The server reaches the engine only through struct
 * lmc_serve_engine (submit/cancel/stats), which `lmc serve` fills with the
 * lmc_sched_* functions and tests may fill with a fake. */
#ifndef LMC_SERVE_H
#define LMC_SERVE_H

#include "lmc.h"
#include "infer/scheduler.h"
#include "serve/tools.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits the parser and server enforce (all configurable from the CLI) */
struct lmc_serve_limits {
    size_t max_body;            /* request body bytes (default 1 MiB) */
    int64_t ctx;                /* prompt + max_tokens must fit (from the scheduler) */
    int64_t max_tokens;         /* cap on max_tokens (0: ctx) */
    int max_n;                  /* choices per request (default 8) */
    int max_messages;           /* chat messages per request (default 512) */
    int64_t vocab;              /* prompt token ids must be below this (0: unchecked) */
};
void lmc_serve_limits_default(struct lmc_serve_limits *l);

/* ---- an OpenAI-style error: HTTP status, type, param, code and message */
struct lmc_serve_error {
    int http;                   /* 400, 401, 404, 405, 413, 429, 500, 503, ... */
    const char *type;           /* "invalid_request_error", "authentication_error", ... */
    char param[64];             /* offending field, "" for none */
    const char *code;           /* e.g. "context_length_exceeded", NULL for none */
    lmc_err err;                /* message */
};
/* Fills e and returns LMC_ERR_ARG (or the status implied by http >= 500). */
lmc_status lmc_serve_fail(struct lmc_serve_error *e, int http, const char *param, const char *code,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- a parsed, validated generation request */
enum lmc_serve_kind { LMC_SERVE_COMPLETION = 0, LMC_SERVE_CHAT };

struct lmc_serve_request {
    enum lmc_serve_kind kind;
    char *model;                      /* as sent, or NULL */
    char *prompt;                     /* completion prompt text, or NULL when ids were given */
    int32_t *prompt_ids;              /* completion prompt given as token ids */
    int64_t n_prompt_ids;
    struct lmc_chat_msg *msgs;        /* chat: role/content strings owned by this struct */
    int n_msgs;
    struct lmc_request r;             /* sampling, max_tokens (<=0: unset), stops, top_logprobs */
    char *stops[LMC_SCHED_MAX_STOP];  /* owned copies behind r.stop */
    bool seed_set;
    int n;                            /* choices */
    bool stream, include_usage;
    bool logprobs;                    /* return logprobs (top_logprobs in r.top_logprobs) */
    bool echo;                        /* completions: prepend the prompt to the text */
    int add_special;                  /* -1 default, 0/1 as sent (add_special_tokens) */
    char *user;
    struct lmc_serve_ext x;           /* tools, tool_choice, response_format (tools.h) */
};

/* Parses a request body (len bytes, need not be NUL-terminated) for the
 * given endpoint. Checks: valid UTF-8 JSON object, known fields with the
 * right types, ranges (lmc_sampler_check's plus ours), sizes against lim.
 * Unknown fields are refused (400 naming the field). Does not tokenize:
 * the prompt length check against lim->ctx happens in
 * lmc_serve_check_length once the prompt is encoded. On failure e is
 * filled and *out is left empty. */
lmc_status lmc_serve_parse(enum lmc_serve_kind kind, const char *body, size_t len,
                           const struct lmc_serve_limits *lim, struct lmc_serve_request *out,
                           struct lmc_serve_error *e);
void lmc_serve_request_free(struct lmc_serve_request *r);
/* Sets r->r.max_tokens when unset (ctx - n_prompt, capped) and checks
 * prompt + max_tokens against the context (400 context_length_exceeded). */
lmc_status lmc_serve_check_length(struct lmc_serve_request *r, int64_t n_prompt,
                                  const struct lmc_serve_limits *lim, struct lmc_serve_error *e);
/* Appends the end-of-turn stop strings of a chat template to r (owned by
 * ct, not r); 400 if they do not fit with the request's own. None for a
 * request with a grammar (it ends at end of sequence once complete). */
lmc_status lmc_serve_add_turn_stops(struct lmc_serve_request *r, const struct lmc_chat_template *ct,
                                    struct lmc_serve_error *e);

/* ---- response formatting. Every function returns a malloc'd
 * NUL-terminated string (NULL only when out of memory). */
struct lmc_serve_token {              /* one generated token with logprobs */
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[LMC_SCHED_MAX_TOP_LOGPROBS];
    float top_logprobs[LMC_SCHED_MAX_TOP_LOGPROBS];
};
struct lmc_serve_choice {             /* one finished choice */
    const char *text;
    size_t text_len;
    const char *finish_reason;        /* "stop", "length" (NULL in a stream delta) */
    const struct lmc_serve_token *toks; /* for logprobs, or NULL */
    int64_t n_toks;
};
struct lmc_serve_usage {
    int64_t prompt_tokens, completion_tokens, cached_tokens;
};
/* id: "cmpl-..." / "chatcmpl-..."; tok: to spell tokens in logprobs. */
char *lmc_serve_format_response(enum lmc_serve_kind kind, const char *id, int64_t created,
                                const char *model, const struct lmc_serve_choice *ch, int n,
                                const struct lmc_serve_usage *u, bool logprobs,
                                const struct lmc_tokenizer *tok);
/* One SSE event "data: {...}\n\n" for choice index: a text delta (with the
 * token's logprobs if tk != NULL), or, with finish_reason set, the final
 * chunk of that choice. first: chat's first chunk carries the role. */
char *lmc_serve_format_chunk(enum lmc_serve_kind kind, const char *id, int64_t created,
                             const char *model, int index, const char *text, size_t text_len,
                             const struct lmc_serve_token *tk, const char *finish_reason,
                             bool first, const struct lmc_tokenizer *tok);
/* The usage-only chunk of stream_options.include_usage. */
char *lmc_serve_format_usage_chunk(enum lmc_serve_kind kind, const char *id, int64_t created,
                                   const char *model, const struct lmc_serve_usage *u);
/* {"error":{"message","type","param","code"}} */
char *lmc_serve_format_error(const struct lmc_serve_error *e);
/* chat: whether /v1/chat/completions can render prompts (the page uses it). */
char *lmc_serve_format_models(const char *model, int64_t created, int64_t ctx, bool chat);

/* ---- multi-adapter serving (adapters.c) */
/* The adapter a request's model field names (vLLM's convention): NULL or
 * base: 0; names[k]: k + 1; anything else: 404 model_not_found. */
lmc_status lmc_serve_pick_model(const char *base, const char *const *names, int n, const char *model,
                                int *adapter, struct lmc_serve_error *e);
/* /v1/models listing the base (as lmc_serve_format_models) and then each
 * adapter, with "parent": base. */
char *lmc_serve_format_models_lora(const char *base, const char *const *names, int n, int64_t created,
                                   int64_t ctx, bool chat);

/* ---- metrics (thread-safe) */
#define LMC_SERVE_HIST_MAX 16
struct lmc_serve_hist {
    int nb;
    const double *le;                  /* upper bounds of nb buckets (+Inf implied) */
    uint64_t count[LMC_SERVE_HIST_MAX + 1];
    double sum;
    uint64_t n;
};
struct lmc_serve_metrics;              /* opaque */
lmc_status lmc_serve_metrics_init(struct lmc_serve_metrics **out, lmc_err *err);
void lmc_serve_metrics_free(struct lmc_serve_metrics *m);
void lmc_serve_metrics_http(struct lmc_serve_metrics *m, int status);
void lmc_serve_metrics_request(struct lmc_serve_metrics *m, int64_t prompt_tokens);
void lmc_serve_metrics_finish(struct lmc_serve_metrics *m, const char *finish_reason,
                              int64_t completion_tokens, double seconds);
void lmc_serve_metrics_ttft(struct lmc_serve_metrics *m, double seconds);
void lmc_serve_metrics_itl(struct lmc_serve_metrics *m, double seconds);
void lmc_serve_metrics_conn(struct lmc_serve_metrics *m, int delta);
/* Prometheus text exposition (version 0.0.4) with the scheduler's gauges. */
char *lmc_serve_metrics_render(struct lmc_serve_metrics *m, const struct lmc_sched_stats *st);

/* ---- the embedded chat page */
/* The page (HTML with inline CSS and JS, no external resource). */
const char *lmc_serve_webui(size_t *len);

/* ---- the engine as the server sees it */
struct lmc_serve_engine {
    void *ctx;
    lmc_status (*submit)(void *ctx, const int32_t *prompt, int64_t n_prompt,
                         const struct lmc_request *r, lmc_sched_fn fn, void *user,
                         uint64_t *req_id, lmc_err *err);
    void (*cancel)(void *ctx, uint64_t req_id);
    void (*stats)(void *ctx, struct lmc_sched_stats *out);
};

struct lmc_serve_opts {
    const char *host;                 /* default "127.0.0.1" */
    int port;                         /* default 8080; 0 = any free port */
    const char *api_key;              /* NULL: no auth */
    const char *model_name;           /* id in /v1/models and responses */
    int max_connections;              /* civetweb worker threads (default 128) */
    int request_timeout_s;            /* whole generation time limit (default 600) */
    int io_timeout_ms;                /* socket read/write timeout (default 30000) */
    double heartbeat_s;               /* keep-alive bytes while waiting (default 1) */
    int max_active;                   /* generation requests at once; more get 503 (0: max_connections - 4) */
    struct lmc_serve_limits lim;
    /* Multi-adapter serving (adapters.c): the names of the engine's
     * adapters 1..n_adapters; a request's "model" picks the base
     * (model_name) or one of them. Must outlive the server. */
    const char *const *adapter_names;
    int n_adapters;
};
void lmc_serve_opts_default(struct lmc_serve_opts *o);

struct lmc_server; /* opaque */
/* Starts listening (threads of its own). The tokenizer and engine must
 * outlive the server. */
lmc_status lmc_server_start(struct lmc_server **out, const struct lmc_serve_opts *o,
                            const struct lmc_serve_engine *eng, const struct lmc_tokenizer *tok,
                            lmc_err *err);
int lmc_server_port(const struct lmc_server *s);
/* Stops accepting, cancels what is running, waits for handlers, frees. */
void lmc_server_stop(struct lmc_server *s);

#endif
