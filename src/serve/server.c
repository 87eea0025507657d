/* server.c — the civetweb HTTP server of `lmc serve`: routing, Bearer
 * auth, body and concurrency limits, and the generation endpoints. Each
 * generation request (struct gen) is owned by its handler thread: submit
 * (one scheduler request per choice), pump (the events the scheduler
 * callback queues, on the scheduler thread and never blocking, become SSE
 * chunks or are collected), final response, and one release point. A
 * write that fails means the client left: its choices are cancelled, and
 * the handler still waits for their DONE events so the scheduler never
 * calls back into freed memory. While nothing is written for heartbeat_s
 * the handler sends an SSE comment (or, before a non-streamed answer,
 * JSON-legal whitespace) so that a vanished client is noticed while it
 * waits. lmc_server_stop wakes every request being generated: each stream
 * ends with an error event and [DONE], each waiting answer is a 503. */
#include "serve/serve.h"
#include "core/core.h"

#include <civetweb.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lmc_server {
    struct mg_context *mg;
    struct lmc_serve_opts o;
    char *host, *api_key, *model_name;
    struct lmc_serve_engine eng;
    const struct lmc_tokenizer *tok;
    struct lmc_chat_template *chat;   /* NULL: the model has none */
    lmc_err chat_err;                 /* why there is no chat template, if none */
    struct lmc_serve_metrics *metrics;
    int port;
    int64_t created;
    pthread_mutex_t mu;               /* guards what follows */
    pthread_cond_t idle;              /* signalled when active drops to 0 */
    uint64_t counter;
    int active;                       /* generation requests being handled */
    struct gen *active_gens;          /* their list, for lmc_server_stop to wake */
    bool stopping;
};

/* the most choices per request (--max-n's upper bound) */
#define LMC_SERVE_MAX_N 64

void lmc_serve_opts_default(struct lmc_serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->model_name = "lmc";
    o->max_connections = 128;
    o->request_timeout_s = 600;
    o->io_timeout_ms = 30000;
    o->heartbeat_s = 1.0;
    lmc_serve_limits_default(&o->lim);
}

/* ---------------------------------------------------------------- replies */

static const char *reason_phrase(int s) {
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return s >= 500 ? "Internal Server Error" : "Error";
    }
}

static int send_body(struct lmc_server *s, struct mg_connection *c, int status, const char *ctype,
                     const char *body, size_t n, const char *extra) {
    char h[512];
    int k = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s\r\n",
                     status, reason_phrase(status), ctype, n, extra ? extra : "");
    const char *method = mg_get_request_info(c)->request_method;
    bool head = method && !strcmp(method, "HEAD");
    if (k > 0 && (size_t)k < sizeof h && mg_write(c, h, (size_t)k) > 0 && n && !head) mg_write(c, body, n);
    lmc_serve_metrics_http(s->metrics, status);
    return status;
}

static int send_json(struct lmc_server *s, struct mg_connection *c, int status, char *json, const char *extra) {
    if (!json) return send_body(s, c, 500, "application/json", "{}", 2, NULL);
    int r = send_body(s, c, status, "application/json", json, strlen(json), extra);
    free(json);
    return r;
}

static int send_error(struct lmc_server *s, struct mg_connection *c, const struct lmc_serve_error *e) {
    const char *extra = e->http == 401   ? "WWW-Authenticate: Bearer\r\n"
                        : e->http == 413 ? "Connection: close\r\n"
                                         : NULL;
    if (e->http == 413) mg_disable_connection_keep_alive(c);
    return send_json(s, c, e->http, lmc_serve_format_error(e), extra);
}

static int fail(struct lmc_server *s, struct mg_connection *c, int http, const char *code, const char *msg) {
    struct lmc_serve_error e;
    lmc_serve_fail(&e, http, NULL, code, "%s", msg);
    return send_error(s, c, &e);
}

/* Streaming writer: chunked transfer on HTTP/1.1, raw bytes and a closed
 * connection on HTTP/1.0. Returns false once the client is gone. */
struct writer {
    struct mg_connection *c;
    bool chunked, started, broken;
};

static bool w_write(struct writer *w, const char *p, size_t n) {
    if (w->broken) return false;
    if (n == 0) return true;
    int r;
    if (w->chunked) { /* framed by hand, sent in one write */
        char *f = malloc(n + 32);
        if (!f) return !(w->broken = true);
        int k = snprintf(f, 32, "%zx\r\n", n);
        memcpy(f + k, p, n);
        memcpy(f + k + n, "\r\n", 2);
        r = mg_write(w->c, f, (size_t)k + n + 2);
        free(f);
    } else {
        r = mg_write(w->c, p, n);
    }
    if (r <= 0) w->broken = true;
    return !w->broken;
}

static bool w_start(struct lmc_server *s, struct writer *w, const char *ctype) {
    const struct mg_request_info *ri = mg_get_request_info(w->c);
    w->chunked = !(ri->http_version && !strcmp(ri->http_version, "1.0"));
    if (!w->chunked) mg_disable_connection_keep_alive(w->c);
    char h[256];
    int k = snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n%s\r\n", ctype,
                     w->chunked ? "Transfer-Encoding: chunked\r\nX-Accel-Buffering: no\r\n" : "Connection: close\r\n");
    int r = k > 0 && (size_t)k < sizeof h ? mg_write(w->c, h, (size_t)k) : -1;
    w->started = true;
    lmc_serve_metrics_http(s->metrics, 200);
    if (r <= 0) w->broken = true;
    return !w->broken;
}

static void w_end(struct writer *w) {
    if (w->chunked && !w->broken && mg_write(w->c, "0\r\n\r\n", 5) <= 0) w->broken = true;
}

/* ------------------------------------------------------ one generation
 *
 * A generation request is a struct gen, owned by its handler thread from
 * gen_submit to gen_release (its only release point). gen_submit encodes
 * the prompt and submits one scheduler request per choice; gen_pump turns
 * the events the scheduler callback queues into SSE chunks or collects
 * them, until every choice has had its last event; gen_respond writes the
 * end of the stream or the whole answer. How the request ends is one
 * value, set once (the first reason wins): the scheduler's choices are
 * cancelled then, and the pump still waits for each one's DONE/ERROR so
 * that the callback never touches freed memory. */

struct ev_node {                      /* one scheduler event, copied */
    struct ev_node *next;
    int choice;
    enum lmc_sched_event_kind kind;
    double t;
    struct lmc_serve_token tk;
    char *text;
    size_t len;
    char finish[16];
    int64_t prompt_tokens, completion_tokens, cached;
    char error[256];
};

struct gen;
struct slot {                         /* one choice as the scheduler sees it (its user pointer) */
    struct gen *g;
    int index;
    uint64_t id;
    bool live;                        /* submitted and not yet DONE/ERROR */
};

struct choice_acc {                   /* what a choice has produced so far */
    char *text;
    size_t len, cap;
    struct lmc_serve_token *toks;
    int64_t n_toks, cap_toks;
    char finish[16];
    int64_t completion_tokens;
    double t_last;
    bool first_sent;
    size_t sent;                      /* tool mode "auto", streamed: bytes of text sent as content */
    struct lmc_serve_req_stream rs;   /* tool mode "required", streamed: what went out */
};

enum gen_end {                        /* why a request ends; the first reason wins */
    END_NONE = 0,                     /* still running, or finished normally */
    END_CLIENT_GONE,                  /* a write failed: nobody to answer */
    END_FAILED,                       /* a choice failed (ERROR event, out of memory): 500 */
    END_TIMEOUT,                      /* request_timeout_s passed: 408 */
    END_BUSY,                         /* the engine refused a choice (out of memory): 503 */
    END_SHUTDOWN,                     /* the server is stopping: 503 */
};

struct gen {
    struct lmc_server *s;
    struct mg_connection *c;
    struct lmc_serve_request *r;
    struct gen *prev, *next;          /* the server's active list (under s->mu) */
    double t0, t_write;
    char id[48];
    int64_t created;
    int32_t *ids;                     /* the encoded prompt */
    int64_t n_ids;
    char *echo;
    size_t echo_len;
    struct slot *slots;               /* (r->n) */
    struct choice_acc *acc;           /* (r->n) */
    struct writer w;
    struct lmc_serve_usage u;
    bool stream;
    enum gen_end end;
    char errmsg[256];
    /* shared with the scheduler callback, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ev_node *head, *tail;
    int n_live;
    bool lost;                        /* an event could not be queued (out of memory) */
    bool wake;                        /* lmc_server_stop asks the pump to look at s->stopping */
};

/* the name a response carries: the request's adapter, or the base */
static const char *gen_model(const struct gen *g) {
    int a = g->r->r.adapter;
    return a > 0 && a <= g->s->o.n_adapters ? g->s->o.adapter_names[a - 1] : g->s->model_name;
}

/* The scheduler callback (scheduler thread): copy, queue, signal. */
static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct slot *sl = user;
    struct gen *g = sl->g;
    struct ev_node *nd = calloc(1, sizeof *nd);
    if (nd) {
        nd->choice = sl->index;
        nd->kind = ev->kind;
        nd->t = lmc_time_now();
        if (ev->kind == LMC_EV_TOKEN || ev->kind == LMC_EV_DONE) { /* DONE: text held back until the end */
            if (ev->text_len && (nd->text = malloc(ev->text_len))) {
                memcpy(nd->text, ev->text, ev->text_len);
                nd->len = ev->text_len;
            } else if (ev->text_len) {
                free(nd);
                nd = NULL;
            }
        }
    }
    if (nd && ev->kind == LMC_EV_TOKEN) {
        nd->tk.id = ev->token;
        nd->tk.logprob = ev->logprob;
        if (g->r->r.top_logprobs > 0) {
            nd->tk.n_top = LMC_MAX(0, LMC_MIN(ev->n_top, LMC_SCHED_MAX_TOP_LOGPROBS));
            memcpy(nd->tk.top_ids, ev->top_ids, (size_t)nd->tk.n_top * sizeof *ev->top_ids);
            memcpy(nd->tk.top_logprobs, ev->top_logprobs, (size_t)nd->tk.n_top * sizeof *ev->top_logprobs);
        }
    } else if (nd && ev->kind == LMC_EV_DONE) {
        snprintf(nd->finish, sizeof nd->finish, "%s", ev->finish_reason ? ev->finish_reason : "stop");
        nd->prompt_tokens = ev->prompt_tokens;
        nd->completion_tokens = ev->completion_tokens;
        nd->cached = ev->cached_prompt_tokens;
    } else if (nd) {
        snprintf(nd->error, sizeof nd->error, "%s", ev->error ? ev->error : "generation failed");
    }
    pthread_mutex_lock(&g->mu);
    if (nd) {
        if (g->tail) g->tail->next = nd;
        else g->head = nd;
        g->tail = nd;
    } else {
        g->lost = true;
    }
    if (ev->kind != LMC_EV_TOKEN && sl->live) {
        sl->live = false;
        g->n_live--;
    }
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void free_nodes(struct ev_node *n) {
    while (n) {
        struct ev_node *x = n->next;
        free(n->text);
        free(n);
        n = x;
    }
}

/* Ends the request for reason (unless it already ended): its choices
 * still running are cancelled; each will still send DONE or ERROR. */
static void gen_end(struct gen *g, enum gen_end reason, const char *msg) {
    if (g->end != END_NONE) return;
    g->end = reason;
    snprintf(g->errmsg, sizeof g->errmsg, "%s", msg ? msg : "");
    uint64_t ids[LMC_SERVE_MAX_N];
    int k = 0;
    pthread_mutex_lock(&g->mu);
    for (int i = 0; g->slots && i < g->r->n && k < LMC_SERVE_MAX_N; i++)
        if (g->slots[i].live) ids[k++] = g->slots[i].id;
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < k; i++) g->s->eng.cancel(g->s->eng.ctx, ids[i]);
}

/* Takes the queued events (NULL after timeout_s); *open gets the number
 * of choices still running. */
static struct ev_node *gen_take(struct gen *g, double timeout_s, int *open, bool *lost) {
    pthread_mutex_lock(&g->mu);
    if (!g->head && g->n_live > 0 && !g->wake) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_nsec / 1e9 + timeout_s;
        ts.tv_sec += (time_t)t;
        ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    struct ev_node *h = g->head;
    g->head = g->tail = NULL;
    g->wake = false;
    *open = g->n_live;
    *lost = g->lost;
    pthread_mutex_unlock(&g->mu);
    return h;
}

static bool acc_text(struct choice_acc *a, const char *p, size_t n) {
    if (a->len + n + 1 > a->cap) {
        size_t nc = LMC_MAX(a->cap * 2, a->len + n + 64);
        char *t = realloc(a->text, nc);
        if (!t) return false;
        a->text = t;
        a->cap = nc;
    }
    memcpy(a->text + a->len, p, n);
    a->len += n;
    a->text[a->len] = 0;
    return true;
}

static bool acc_tok(struct choice_acc *a, const struct lmc_serve_token *t) {
    if (a->n_toks == a->cap_toks) {
        int64_t nc = a->cap_toks ? a->cap_toks * 2 : 64;
        void *p = realloc(a->toks, (size_t)nc * sizeof *a->toks);
        if (!p) return false;
        a->toks = p;
        a->cap_toks = nc;
    }
    a->toks[a->n_toks++] = *t;
    return true;
}

/* Encodes the request's prompt into *ids (malloc'd); on error fills e. */
static lmc_status build_prompt(struct lmc_server *s, struct lmc_serve_request *r, int32_t **ids, int64_t *n,
                               char **echo, size_t *echo_len, struct lmc_serve_error *e) {
    lmc_err err = {0};
    *ids = NULL;
    *n = 0;
    if (r->kind == LMC_SERVE_CHAT) {
        if (!s->chat)
            return lmc_serve_fail(e, 400, "messages", "no_chat_template", "%s",
                                  s->chat_err.msg[0] ? s->chat_err.msg
                                                     : "this model has no chat template "
                                                       "(tokenizer_config.json); use /v1/completions");
        char *text = NULL;
        if (lmc_serve_ext_render(s->chat, &r->x, &text, &err)) /* messages and tools (tools.c) */
            return lmc_serve_fail(e, 400, "messages", "invalid_value", "%s", err.msg);
        lmc_status st = lmc_tokenizer_encode(s->tok, text, strlen(text), false, ids, n, &err);
        free(text);
        if (st) return lmc_serve_fail(e, 400, "messages", "invalid_value", "%s", err.msg);
        return lmc_serve_add_turn_stops(r, s->chat, e);
    }
    if (r->prompt_ids) {
        *ids = r->prompt_ids;
        *n = r->n_prompt_ids;
        r->prompt_ids = NULL;
        if (r->echo && lmc_tokenizer_decode(s->tok, *ids, *n, echo, echo_len, &err))
            return lmc_serve_fail(e, 400, "prompt", "invalid_value", "%s", err.msg);
        return LMC_OK;
    }
    if (lmc_tokenizer_encode(s->tok, r->prompt, strlen(r->prompt), r->add_special != 0, ids, n, &err))
        return lmc_serve_fail(e, 400, "prompt", "invalid_value", "%s", err.msg);
    if (r->echo) {
        *echo_len = strlen(r->prompt);
        if (!(*echo = strdup(r->prompt))) return lmc_serve_fail(e, 500, NULL, NULL, "out of memory");
    }
    return LMC_OK;
}

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Encodes the prompt and submits every choice. 0 when the pump may run
 * (some choices may already have failed: g->end says so), else the HTTP
 * status of an error sent already (nothing was submitted). */
static int gen_submit(struct gen *g, struct lmc_serve_error *e) {
    struct lmc_server *s = g->s;
    struct lmc_serve_request *r = g->r;
    if (build_prompt(s, r, &g->ids, &g->n_ids, &g->echo, &g->echo_len, e) ||
        lmc_serve_check_length(r, g->n_ids, &s->o.lim, e))
        return send_error(s, g->c, e);
    g->slots = calloc((size_t)r->n, sizeof *g->slots);
    g->acc = calloc((size_t)r->n, sizeof *g->acc);
    if (!g->slots || !g->acc) return fail(s, g->c, 500, NULL, "out of memory");
    pthread_mutex_lock(&s->mu);
    uint64_t serial = ++s->counter;
    pthread_mutex_unlock(&s->mu);
    uint64_t rnd = mix64(serial ^ (uint64_t)(lmc_time_now() * 1e9));
    snprintf(g->id, sizeof g->id, "%s-%016llx", r->kind == LMC_SERVE_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)rnd);
    g->created = (int64_t)time(NULL);
    if (!r->seed_set) r->r.sampling.seed = mix64(rnd);
    g->u.prompt_tokens = g->n_ids;
    lmc_serve_metrics_request(s->metrics, g->n_ids);
    for (int i = 0; i < r->n; i++) {
        struct lmc_request rq = r->r;
        rq.sampling.seed = r->r.sampling.seed + (uint64_t)i;
        g->slots[i] = (struct slot){.g = g, .index = i};
        pthread_mutex_lock(&g->mu); /* the first event may come before submit returns */
        g->slots[i].live = true;
        g->n_live++;
        pthread_mutex_unlock(&g->mu);
        lmc_err err = {0};
        uint64_t rid = 0;
        lmc_status st = s->eng.submit(s->eng.ctx, g->ids, g->n_ids, &rq, on_event, &g->slots[i], &rid, &err);
        pthread_mutex_lock(&g->mu);
        if (st) {
            g->slots[i].live = false;
            g->n_live--;
        } else {
            g->slots[i].id = rid;
        }
        pthread_mutex_unlock(&g->mu);
        if (!st) continue;
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (i == 0) /* nothing running: answer now */
            return st == LMC_ERR_ARG ? fail(s, g->c, 400, "invalid_value", err.msg[0] ? err.msg : lmc_status_str(st))
                                     : fail(s, g->c, 503, stopping ? "server_shutting_down" : "server_busy",
                                            err.msg[0] ? err.msg : lmc_status_str(st));
        { /* some choices run: end them, then answer with the error */
            gen_end(g, stopping ? END_SHUTDOWN : st == LMC_ERR_ARG ? END_FAILED : END_BUSY,
                    err.msg[0] ? err.msg : lmc_status_str(st));
            break;
        }
    }
    g->stream = r->stream;
    if (g->stream && g->end == END_NONE) {
        if (!w_start(s, &g->w, "text/event-stream")) gen_end(g, END_CLIENT_GONE, NULL);
        for (int i = 0; i < r->n && g->echo_len && g->end == END_NONE; i++) {
            char *ch = lmc_serve_format_chunk(r->kind, g->id, g->created, gen_model(g), i, g->echo, g->echo_len,
                                              NULL, NULL, false, s->tok);
            if (!ch || !w_write(&g->w, ch, strlen(ch))) gen_end(g, ch ? END_CLIENT_GONE : END_FAILED, "out of memory");
            free(ch);
        }
    }
    for (int i = 0; i < r->n && g->echo_len && !g->stream; i++)
        if (!acc_text(&g->acc[i], g->echo, g->echo_len)) gen_end(g, END_FAILED, "out of memory");
    g->t_write = lmc_time_now();
    return 0;
}

/* Replies are read as tool calls (tools.c): tools given, tool_choice not none. */
static bool tool_mode(const struct gen *g) {
    return g->r->kind == LMC_SERVE_CHAT && g->s->chat && lmc_serve_ext_tool_mode(&g->r->x);
}

/* A named tool_choice streams its arguments as they come (tools.c); true
 * when it handled the event. */
static bool named_stream(struct gen *g, struct choice_acc *a, const struct ev_node *nd, const char *finish) {
    struct lmc_serve_request *r = g->r;
    if (!tool_mode(g) || r->x.choice != LMC_SERVE_TOOLS_NAMED) return false;
    char *ev = lmc_serve_ext_stream_named(&r->x, g->id, g->created, gen_model(g), nd->choice, !a->first_sent,
                                          nd->text ? nd->text : "", nd->len, finish);
    a->first_sent = true;
    if (!ev) gen_end(g, END_FAILED, "out of memory");
    else if (ev[0] && !w_write(&g->w, ev, strlen(ev))) gen_end(g, END_CLIENT_GONE, NULL);
    free(ev);
    g->t_write = lmc_time_now();
    return true;
}

/* tool_choice auto, streamed: content as it comes, up to where a call may
 * begin; the rest read as calls at the end (tools.c). */
static void auto_stream(struct gen *g, struct choice_acc *a, const struct ev_node *nd, const char *finish) {
    char *ev = lmc_serve_ext_stream_auto(&g->r->x, lmc_chat_template_tool_format(g->s->chat), g->id, g->created,
                                         gen_model(g), nd->choice, !a->first_sent, a->text ? a->text : "", a->len,
                                         &a->sent, finish);
    a->first_sent = true;
    if (!ev) gen_end(g, END_FAILED, "out of memory");
    else if (ev[0] && !w_write(&g->w, ev, strlen(ev))) gen_end(g, END_CLIENT_GONE, NULL);
    free(ev);
    g->t_write = lmc_time_now();
}

/* tool_choice required, streamed: each call's head and arguments as they
 * decode (tools.c). */
static void required_stream(struct gen *g, struct choice_acc *a, const struct ev_node *nd, const char *finish) {
    char *ev = lmc_serve_ext_stream_required(&g->r->x, g->id, g->created, gen_model(g), nd->choice, !a->first_sent,
                                             a->text ? a->text : "", a->len, &a->rs, finish);
    a->first_sent = true;
    if (!ev) gen_end(g, END_FAILED, "out of memory");
    else if (ev[0] && !w_write(&g->w, ev, strlen(ev))) gen_end(g, END_CLIENT_GONE, NULL);
    free(ev);
    g->t_write = lmc_time_now();
}

/* One queued event. */
static void gen_event(struct gen *g, const struct ev_node *nd) {
    struct lmc_server *s = g->s;
    struct lmc_serve_request *r = g->r;
    struct choice_acc *a = &g->acc[nd->choice];
    if (nd->kind == LMC_EV_TOKEN) {
        if (a->t_last == 0) lmc_serve_metrics_ttft(s->metrics, nd->t - g->t0);
        else lmc_serve_metrics_itl(s->metrics, nd->t - a->t_last);
        a->t_last = nd->t;
        a->completion_tokens++;
        if (g->end != END_NONE) return;
        if (g->stream && named_stream(g, a, nd, NULL)) return;
        if (!g->stream || tool_mode(g)) { /* tool mode streams the reply once it is read as calls */
            if (!acc_text(a, nd->text ? nd->text : "", nd->len) || (r->logprobs && !acc_tok(a, &nd->tk)))
                gen_end(g, END_FAILED, "out of memory");
            if (g->stream && g->end == END_NONE && r->x.choice == LMC_SERVE_TOOLS_AUTO) auto_stream(g, a, nd, NULL);
            if (g->stream && g->end == END_NONE && r->x.choice == LMC_SERVE_TOOLS_REQUIRED && nd->len)
                required_stream(g, a, nd, NULL);
            return;
        }
        if (!nd->len && !r->logprobs && (r->kind != LMC_SERVE_CHAT || a->first_sent)) return;
        char *ch = lmc_serve_format_chunk(r->kind, g->id, g->created, gen_model(g), nd->choice, nd->text, nd->len,
                                          r->logprobs ? &nd->tk : NULL, NULL, !a->first_sent, s->tok);
        a->first_sent = true;
        if (!ch) gen_end(g, END_FAILED, "out of memory");
        else if (!w_write(&g->w, ch, strlen(ch))) gen_end(g, END_CLIENT_GONE, NULL);
        free(ch);
        g->t_write = lmc_time_now();
    } else if (nd->kind == LMC_EV_DONE) {
        snprintf(a->finish, sizeof a->finish, "%s", nd->finish);
        g->u.prompt_tokens = nd->prompt_tokens > 0 ? nd->prompt_tokens : g->n_ids;
        g->u.completion_tokens += nd->completion_tokens;
        g->u.cached_tokens = LMC_MAX(g->u.cached_tokens, nd->cached);
        lmc_serve_metrics_finish(s->metrics, g->end != END_NONE ? "cancelled" : nd->finish, nd->completion_tokens,
                                 nd->t - g->t0);
        if (g->end != END_NONE) return;
        if (g->stream && named_stream(g, a, nd, nd->finish)) return;
        if (!g->stream || tool_mode(g)) {
            if (!acc_text(a, nd->text ? nd->text : "", nd->len)) gen_end(g, END_FAILED, "out of memory");
            if (!g->stream || g->end != END_NONE) return;
            if (r->x.choice == LMC_SERVE_TOOLS_AUTO) {
                auto_stream(g, a, nd, nd->finish);
                return;
            }
            if (r->x.choice == LMC_SERVE_TOOLS_REQUIRED) {
                required_stream(g, a, nd, nd->finish);
                return;
            }
            char *ev = lmc_serve_ext_stream(&r->x, lmc_chat_template_tool_format(s->chat), g->id, g->created,
                                            gen_model(g), nd->choice, !a->first_sent, a->text ? a->text : "",
                                            a->len, nd->finish);
            a->first_sent = true;
            if (!ev) gen_end(g, END_FAILED, "out of memory");
            else if (!w_write(&g->w, ev, strlen(ev))) gen_end(g, END_CLIENT_GONE, NULL);
            free(ev);
            g->t_write = lmc_time_now();
            return;
        }
        char *ch = lmc_serve_format_chunk(r->kind, g->id, g->created, gen_model(g), nd->choice,
                                          nd->text ? nd->text : "", nd->len, NULL, nd->finish, !a->first_sent, s->tok);
        if (!ch) gen_end(g, END_FAILED, "out of memory");
        else if (!w_write(&g->w, ch, strlen(ch))) gen_end(g, END_CLIENT_GONE, NULL);
        free(ch);
        g->t_write = lmc_time_now();
    } else {
        lmc_serve_metrics_finish(s->metrics, "error", a->completion_tokens, nd->t - g->t0);
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        gen_end(g, stopping ? END_SHUTDOWN : END_FAILED, stopping ? "server shutting down" : nd->error);
    }
}

/* Runs until every choice has had its last event: events in, chunks out,
 * and between them the checks that may end the request early (shutdown,
 * timeout, a client that no longer reads the heartbeat). */
static void gen_pump(struct gen *g) {
    struct lmc_server *s = g->s;
    int open = 1;
    while (open > 0) {
        bool lost;
        struct ev_node *nodes = gen_take(g, s->o.heartbeat_s, &open, &lost);
        for (struct ev_node *nd = nodes; nd; nd = nd->next) gen_event(g, nd);
        free_nodes(nodes);
        if (lost) gen_end(g, END_FAILED, "out of memory");
        if (open == 0) break;
        double now = lmc_time_now();
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) gen_end(g, END_SHUTDOWN, "server shutting down");
        else if (now - g->t0 > s->o.request_timeout_s) gen_end(g, END_TIMEOUT, "request timed out");
        if (g->end == END_NONE && now - g->t_write >= s->o.heartbeat_s) {
            /* probe the client: an SSE comment, or whitespace before the JSON */
            if (!g->w.started) w_start(s, &g->w, "application/json");
            if (!w_write(&g->w, g->stream ? ": keep-alive\n\n" : " ", g->stream ? 14 : 1))
                gen_end(g, END_CLIENT_GONE, NULL);
            g->t_write = now;
        }
    }
}

/* The end of the stream, or the whole answer; returns the HTTP status. */
static int gen_respond(struct gen *g) {
    struct lmc_server *s = g->s;
    struct lmc_serve_request *r = g->r;
    int http = g->end == END_TIMEOUT ? 408 : g->end == END_SHUTDOWN || g->end == END_BUSY ? 503 : 500;
    const char *code = g->end == END_TIMEOUT    ? "timeout"
                       : g->end == END_SHUTDOWN ? "server_shutting_down"
                       : g->end == END_BUSY     ? "server_busy"
                                                : NULL;
    struct lmc_serve_error e;
    if (g->end == END_CLIENT_GONE) return 200; /* its status line went out (or nobody reads it) */
    if (g->stream && g->w.started) {
        if (g->end != END_NONE) { /* the error as the stream's last event */
            lmc_serve_fail(&e, http, NULL, code, "%s", g->errmsg);
            char *js = lmc_serve_format_error(&e);
            if (js) {
                w_write(&g->w, "data: ", 6);
                w_write(&g->w, js, strlen(js));
                w_write(&g->w, "\n\n", 2);
            }
            free(js);
        } else if (r->include_usage) {
            char *ch = lmc_serve_format_usage_chunk(r->kind, g->id, g->created, gen_model(g), &g->u);
            if (ch) w_write(&g->w, ch, strlen(ch));
            free(ch);
        }
        w_write(&g->w, "data: [DONE]\n\n", 14);
        w_end(&g->w);
        return 200;
    }
    char *body = NULL;
    if (g->end != END_NONE) {
        lmc_serve_fail(&e, http, NULL, code, "%s", g->errmsg);
        body = lmc_serve_format_error(&e);
    } else {
        http = 200;
        struct lmc_serve_choice *chs = calloc((size_t)r->n, sizeof *chs);
        for (int i = 0; chs && i < r->n; i++)
            chs[i] = (struct lmc_serve_choice){g->acc[i].text ? g->acc[i].text : "", g->acc[i].len, g->acc[i].finish,
                                               g->acc[i].toks, g->acc[i].n_toks};
        body = chs ? lmc_serve_format_response(r->kind, g->id, g->created, gen_model(g), chs, r->n, &g->u,
                                               r->logprobs, s->tok)
                   : NULL;
        if (chs && tool_mode(g)) { /* replies read as tool calls (tools.c) */
            const char **texts = calloc((size_t)r->n, sizeof *texts);
            size_t *lens = calloc((size_t)r->n, sizeof *lens);
            for (int i = 0; texts && lens && i < r->n; i++) {
                texts[i] = chs[i].text;
                lens[i] = chs[i].text_len;
            }
            body = texts && lens ? lmc_serve_ext_response(body, &r->x, lmc_chat_template_tool_format(s->chat), texts,
                                                          lens, r->n)
                                 : (free(body), NULL);
            free(texts);
            free(lens);
        }
        free(chs);
    }
    if (!g->w.started) return send_json(s, g->c, http, body, NULL);
    /* after heartbeat whitespace the status line (200) is sent already */
    if (body) w_write(&g->w, body, strlen(body));
    w_end(&g->w);
    free(body);
    return 200;
}

/* The one release point of everything a request holds. Every choice has
 * had its last event (gen_pump ran, or nothing was submitted). */
static void gen_release(struct gen *g) {
    LMC_ASSERT(g->n_live == 0);
    pthread_mutex_lock(&g->s->mu);
    if (g->prev) g->prev->next = g->next;
    else g->s->active_gens = g->next;
    if (g->next) g->next->prev = g->prev;
    pthread_mutex_unlock(&g->s->mu);
    free_nodes(g->head);
    for (int i = 0; g->acc && i < g->r->n; i++) {
        free(g->acc[i].text);
        free(g->acc[i].toks);
    }
    free(g->acc);
    free(g->slots);
    free(g->ids);
    free(g->echo);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

/* Runs a parsed request to completion on this handler thread. g is on
 * the server's active list already. */
static int generate(struct gen *g) {
    struct lmc_serve_error e;
    int status = gen_submit(g, &e);
    if (status == 0) {
        gen_pump(g);
        status = gen_respond(g);
    }
    gen_release(g);
    return status;
}

/* Gives the heap's free pages back to the system (glibc keeps them in
 * each thread arena, fragmented among live chunks, so a server's resident
 * memory would creep up to the worst interleaving it ever met). Called
 * when the last generation request in progress ends: the server at rest
 * holds what it uses. A walk over the arenas' free chunks: 0.2 ms after
 * a single request, 1.3 ms after a round of 128 (kjv-llama, 2 cores). */
static void release_free_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* ----------------------------------------------------------- routing */

static bool authorized(struct lmc_server *s, struct mg_connection *c) {
    if (!s->api_key) return true;
    const char *h = mg_get_header(c, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    size_t n = strlen(h), k = strlen(s->api_key);
    unsigned char d = n != k;
    for (size_t i = 0; i < n && i < k; i++) d |= (unsigned char)(h[i] ^ s->api_key[i]);
    return d == 0;
}

/* Reads the whole body (at most lim.max_body bytes) into *out. */
static int read_body(struct lmc_server *s, struct mg_connection *c, char **out, size_t *len) {
    const struct mg_request_info *ri = mg_get_request_info(c);
    size_t max = s->o.lim.max_body;
    char msg[128];
    snprintf(msg, sizeof msg, "request body exceeds the limit of %zu bytes", max);
    if (ri->content_length > 0 && (unsigned long long)ri->content_length > max)
        return fail(s, c, 413, "request_too_large", msg);
    size_t cap = ri->content_length >= 0 ? (size_t)ri->content_length + 1 : 4096, n = 0;
    char *b = malloc(cap);
    if (!b) return fail(s, c, 500, NULL, "out of memory");
    for (;;) {
        if (n + 1 >= cap) {
            size_t nc = LMC_MIN(cap * 2, max + 2);
            char *t = nc > cap ? realloc(b, nc) : NULL;
            if (!t) {
                free(b);
                return fail(s, c, 413, "request_too_large", msg);
            }
            b = t;
            cap = nc;
        }
        int r = mg_read(c, b + n, cap - n - 1);
        if (r < 0) {
            free(b);
            return fail(s, c, 400, "invalid_request", "could not read the request body");
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            free(b);
            return fail(s, c, 413, "request_too_large", msg);
        }
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
}

static int handle_generate(struct lmc_server *s, struct mg_connection *c, enum lmc_serve_kind kind, double t0) {
    char *body = NULL;
    size_t len = 0;
    int st = read_body(s, c, &body, &len);
    if (st) return st;
    struct lmc_serve_request r;
    struct lmc_serve_error e;
    if (lmc_serve_parse(kind, body, len, &s->o.lim, &r, &e)) {
        free(body);
        return send_error(s, c, &e);
    }
    free(body);
    if (lmc_serve_pick_model(s->model_name, s->o.adapter_names, s->o.n_adapters, r.model, &r.r.adapter, &e)) {
        lmc_serve_request_free(&r);
        return send_error(s, c, &e);
    }
    int max_active = s->o.max_active > 0 ? s->o.max_active : LMC_MAX(1, s->o.max_connections - 4);
    struct gen g = {.s = s, .c = c, .r = &r, .t0 = t0, .w = {.c = c}};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping, busy = stopping || s->active >= max_active;
    if (!busy) { /* on the active list before anything is submitted */
        s->active++;
        g.next = s->active_gens;
        if (g.next) g.next->prev = &g;
        s->active_gens = &g;
    }
    pthread_mutex_unlock(&s->mu);
    if (busy) {
        pthread_cond_destroy(&g.cv);
        pthread_mutex_destroy(&g.mu);
        lmc_serve_request_free(&r);
        return stopping ? fail(s, c, 503, "server_shutting_down", "the server is shutting down")
                        : fail(s, c, 503, "server_busy", "the server is at its limit of concurrent requests; retry later");
    }
    st = generate(&g);
    pthread_mutex_lock(&s->mu);
    bool idle = --s->active == 0;
    if (idle) pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    if (idle) release_free_memory();
    lmc_serve_request_free(&r);
    return st;
}

static int handle(struct mg_connection *c, struct lmc_server *s) {
    double t0 = lmc_time_now();
    const struct mg_request_info *ri = mg_get_request_info(c);
    const char *uri = ri->local_uri ? ri->local_uri : "/";
    const char *m = ri->request_method ? ri->request_method : "";
    bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST");
    bool gen_c = !strcmp(uri, "/v1/completions"), gen_ch = !strcmp(uri, "/v1/chat/completions");
    bool models = !strcmp(uri, "/v1/models"), metrics = !strcmp(uri, "/metrics");
    bool page = !strcmp(uri, "/") || !strcmp(uri, "/index.html"), health = !strcmp(uri, "/health");
    if (!gen_c && !gen_ch && !models && !metrics && !page && !health) {
        char msg[160];
        snprintf(msg, sizeof msg, "no route for %.100s %.40s", uri, m);
        return fail(s, c, 404, "not_found", msg);
    }
    if (((gen_c || gen_ch) && !post) || (!(gen_c || gen_ch) && !get)) {
        struct lmc_serve_error e;
        lmc_serve_fail(&e, 405, NULL, "method_not_allowed", "%s is not allowed on %.100s", m, uri);
        return send_json(s, c, 405, lmc_serve_format_error(&e),
                         gen_c || gen_ch ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n");
    }
    if (page) {
        size_t n;
        const char *html = lmc_serve_webui(&n);
        return send_body(s, c, 200, "text/html; charset=utf-8", html, n, NULL);
    }
    if (health) return send_body(s, c, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    if (!authorized(s, c)) {
        struct lmc_serve_error e;
        lmc_serve_fail(&e, 401, NULL, "invalid_api_key", "Missing or incorrect API key (Authorization: Bearer KEY)");
        return send_error(s, c, &e);
    }
    if (metrics) {
        struct lmc_sched_stats st;
        s->eng.stats(s->eng.ctx, &st);
        char *txt = lmc_serve_metrics_render(s->metrics, &st);
        if (!txt) return fail(s, c, 500, NULL, "out of memory");
        int r = send_body(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", txt, strlen(txt), NULL);
        free(txt);
        return r;
    }
    if (models)
        return send_json(s, c, 200,
                         lmc_serve_format_models_lora(s->model_name, s->o.adapter_names, s->o.n_adapters,
                                                      s->created, s->o.lim.ctx, s->chat != NULL),
                         NULL);
    lmc_serve_metrics_conn(s->metrics, 1);
    int r = handle_generate(s, c, gen_ch ? LMC_SERVE_CHAT : LMC_SERVE_COMPLETION, t0);
    lmc_serve_metrics_conn(s->metrics, -1);
    return r;
}

/* civetweb's workers run on 100 KiB stacks (Debian builds it so), too
 * small for tokenizing, JSON and sanitizer builds: each request is handled
 * on a thread of our own with a normal stack while the worker waits. */
struct call {
    struct mg_connection *c;
    struct lmc_server *s;
    int status;
};

static void *call_main(void *arg) {
    struct call *k = arg;
    k->status = handle(k->c, k->s);
    return NULL;
}

static int handler(struct mg_connection *c, void *user) {
    struct call k = {c, user, 0};
    pthread_attr_t a;
    pthread_t th;
    bool ok = pthread_attr_init(&a) == 0;
    if (ok) {
        pthread_attr_setstacksize(&a, (size_t)8 << 20);
        ok = pthread_create(&th, &a, call_main, &k) == 0;
        pthread_attr_destroy(&a);
    }
    if (!ok) return fail(user, c, 503, "server_busy", "cannot start a request thread");
    pthread_join(th, NULL);
    return k.status;
}

static int log_message(const struct mg_connection *c, const char *msg) {
    (void)c;
    lmc_log(2, "civetweb: %s", msg);
    return 1;
}

/* ----------------------------------------------------------- lifecycle */

lmc_status lmc_server_start(struct lmc_server **out, const struct lmc_serve_opts *o,
                            const struct lmc_serve_engine *eng, const struct lmc_tokenizer *tok,
                            lmc_err *err) {
    *out = NULL;
    if (o->port < 0 || o->port > 65535) return lmc_err_set(err, LMC_ERR_ARG, "port %d out of range", o->port);
    if (o->max_connections < 1 || o->max_connections > 4096)
        return lmc_err_set(err, LMC_ERR_ARG, "max connections %d out of range [1, 4096]", o->max_connections);
    struct lmc_server *s = calloc(1, sizeof *s);
    if (!s) return lmc_err_set(err, LMC_ERR_OOM, "server: out of memory");
    s->o = *o;
    s->eng = *eng;
    s->tok = tok;
    s->host = strdup(o->host ? o->host : "127.0.0.1");
    s->model_name = strdup(o->model_name ? o->model_name : "lmc");
    s->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    s->created = (int64_t)time(NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    if (!s->host || !s->model_name || (o->api_key && *o->api_key && !s->api_key)) {
        lmc_server_stop(s);
        return lmc_err_set(err, LMC_ERR_OOM, "server: out of memory");
    }
    if (lmc_chat_template_from_tokenizer(tok, &s->chat, &s->chat_err)) s->chat = NULL;
    lmc_status st = lmc_serve_metrics_init(&s->metrics, err);
    if (st) {
        lmc_server_stop(s);
        return st;
    }
    char ports[300], threads[16], timeout[16];
    snprintf(ports, sizeof ports, strchr(s->host, ':') ? "[%s]:%d" : "%s:%d", s->host, o->port);
    snprintf(threads, sizeof threads, "%d", o->max_connections);
    snprintf(timeout, sizeof timeout, "%d", o->io_timeout_ms > 0 ? o->io_timeout_ms : 30000);
    const char *cfg[] = {"listening_ports", ports, "num_threads", threads, "request_timeout_ms", timeout,
                         "enable_keep_alive", "yes", "keep_alive_timeout_ms", "5000", "tcp_nodelay", "1",
                         "listen_backlog", "256", NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_message;
    mg_init_library(0);
    char ebuf[256] = "";
    unsigned ecode = 0;
    struct mg_error_data ed = {.code = &ecode, .text = ebuf, .text_buffer_size = sizeof ebuf};
    struct mg_init_data id = {.callbacks = &cb, .user_data = s, .configuration_options = cfg};
    s->mg = mg_start2(&id, &ed);
    if (!s->mg) {
        lmc_server_stop(s);
        return lmc_err_set(err, LMC_ERR_IO, "cannot listen on %s: %s", ports, ebuf[0] ? ebuf : "civetweb failed to start");
    }
    mg_set_request_handler(s->mg, "/", handler, s);
    struct mg_server_port sp[4];
    memset(sp, 0, sizeof sp);
    int np = mg_get_server_ports(s->mg, 4, sp);
    s->port = np > 0 ? sp[0].port : o->port;
    *out = s;
    return LMC_OK;
}

int lmc_server_port(const struct lmc_server *s) { return s->port; }

void lmc_server_stop(struct lmc_server *s) {
    if (!s) return;
    /* every request being generated ends now (each stream gets an error
     * event, each waiting answer a 503; new ones get 503), and their last
     * bytes are written before civetweb stops (from then on its writes
     * fail); the wait is bounded by the socket write timeout */
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (struct gen *g = s->active_gens; g; g = g->next) {
        pthread_mutex_lock(&g->mu);
        g->wake = true;
        pthread_cond_signal(&g->cv);
        pthread_mutex_unlock(&g->mu);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 2 + (s->o.io_timeout_ms > 0 ? s->o.io_timeout_ms : 30000) / 1000;
    while (s->active > 0)
        if (pthread_cond_timedwait(&s->idle, &s->mu, &ts)) break;
    if (s->active > 0) lmc_log(1, "serve: %d requests still being answered at shutdown", s->active);
    pthread_mutex_unlock(&s->mu);
    if (s->mg) {
        mg_stop(s->mg);
        mg_exit_library();
    }
    lmc_serve_metrics_free(s->metrics);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->mu);
    free(s->host);
    free(s->model_name);
    lmc_chat_template_free(s->chat);
    free(s->api_key);
    free(s);
}
