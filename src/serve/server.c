/* server.c — the civetweb HTTP server of `lmc serve`: routing, Bearer
 * auth, body and concurrency limits, and the generation endpoints. Each
 * generation request's handler thread submits one scheduler request per
 * choice and then waits on its own event queue, which the scheduler
 * callback fills (on the scheduler thread, never blocking); the handler
 * writes SSE chunks (or collects the whole answer). A write that fails
 * means the client left: its requests are cancelled, and the handler
 * still waits for their DONE events so the scheduler never calls back
 * into freed memory. While nothing is written for heartbeat_s the handler
 * sends an SSE comment (or, before a non-streamed answer, JSON-legal
 * whitespace) so that a vanished client is noticed while it waits. */
#include "serve/serve.h"
#include "core/core.h"

#include <civetweb.h>
#include <errno.h>
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
    uint64_t counter;
    int active;                       /* generation requests being handled */
    bool stopping;
};

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

/* ----------------------------------------------------- per-request queue */

struct ev_node {
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

struct job;
struct slot {
    struct job *job;
    int index;
    uint64_t id;
    bool live;                        /* submitted and not yet DONE/ERROR */
};

struct job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ev_node *head, *tail;
    int n_live;
    bool want_top;
    struct slot *slots;
    int n;
};

/* The scheduler callback (scheduler thread): copy, queue, signal. */
static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct slot *sl = user;
    struct job *j = sl->job;
    struct ev_node *nd = calloc(1, sizeof *nd);
    if (nd) {
        nd->choice = sl->index;
        nd->kind = ev->kind;
        nd->t = lmc_time_now();
        if (ev->kind == LMC_EV_TOKEN) {
            nd->tk.id = ev->token;
            nd->tk.logprob = ev->logprob;
            if (j->want_top) {
                nd->tk.n_top = LMC_MAX(0, LMC_MIN(ev->n_top, LMC_SCHED_MAX_TOP_LOGPROBS));
                memcpy(nd->tk.top_ids, ev->top_ids, (size_t)nd->tk.n_top * sizeof *ev->top_ids);
                memcpy(nd->tk.top_logprobs, ev->top_logprobs, (size_t)nd->tk.n_top * sizeof *ev->top_logprobs);
            }
            if (ev->text_len && (nd->text = malloc(ev->text_len))) {
                memcpy(nd->text, ev->text, ev->text_len);
                nd->len = ev->text_len;
            }
        } else if (ev->kind == LMC_EV_DONE) {
            if (ev->text_len && (nd->text = malloc(ev->text_len))) { /* text held back until the end */
                memcpy(nd->text, ev->text, ev->text_len);
                nd->len = ev->text_len;
            }
            snprintf(nd->finish, sizeof nd->finish, "%s", ev->finish_reason ? ev->finish_reason : "stop");
            nd->prompt_tokens = ev->prompt_tokens;
            nd->completion_tokens = ev->completion_tokens;
            nd->cached = ev->cached_prompt_tokens;
        } else {
            snprintf(nd->error, sizeof nd->error, "%s", ev->error ? ev->error : "generation failed");
        }
    }
    pthread_mutex_lock(&j->mu);
    if (nd) {
        if (j->tail) j->tail->next = nd;
        else j->head = nd;
        j->tail = nd;
    }
    if (ev->kind != LMC_EV_TOKEN && sl->live) {
        sl->live = false;
        j->n_live--;
    }
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void job_cancel_all(struct lmc_server *s, struct job *j) {
    uint64_t ids[64];
    int k = 0;
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->n && k < 64; i++)
        if (j->slots[i].live) ids[k++] = j->slots[i].id;
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; i < k; i++) s->eng.cancel(s->eng.ctx, ids[i]);
}

/* Takes the queued events (NULL after timeout_s); *open gets the number
 * of choices still running. */
static struct ev_node *job_take(struct job *j, double timeout_s, int *open) {
    pthread_mutex_lock(&j->mu);
    if (!j->head && j->n_live > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_nsec / 1e9 + timeout_s;
        ts.tv_sec += (time_t)t;
        ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    struct ev_node *h = j->head;
    j->head = j->tail = NULL;
    *open = j->n_live;
    pthread_mutex_unlock(&j->mu);
    return h;
}

static void free_nodes(struct ev_node *n) {
    while (n) {
        struct ev_node *x = n->next;
        free(n->text);
        free(n);
        n = x;
    }
}

/* --------------------------------------------------------- generation */

struct choice_acc {                  /* what a choice has produced so far */
    char *text;
    size_t len, cap;
    struct lmc_serve_token *toks;
    int64_t n_toks, cap_toks;
    char finish[16];
    int64_t completion_tokens;
    double t_last;
    bool first_sent;
};

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
        if (lmc_chat_template_render_msgs(s->chat, r->msgs, r->n_msgs, &text, &err))
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
        *echo = strdup(r->prompt);
    }
    return LMC_OK;
}

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Runs a parsed request to completion on this handler thread. */
static int generate(struct lmc_server *s, struct mg_connection *c, struct lmc_serve_request *r, double t0) {
    struct lmc_serve_error e;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    char *echo = NULL;
    size_t echo_len = 0;
    if (build_prompt(s, r, &ids, &n_ids, &echo, &echo_len, &e) ||
        lmc_serve_check_length(r, n_ids, &s->o.lim, &e)) {
        free(ids);
        free(echo);
        return send_error(s, c, &e);
    }
    pthread_mutex_lock(&s->mu);
    uint64_t serial = ++s->counter;
    pthread_mutex_unlock(&s->mu);
    char id[48];
    uint64_t rnd = mix64(serial ^ (uint64_t)(lmc_time_now() * 1e9));
    snprintf(id, sizeof id, "%s-%016llx", r->kind == LMC_SERVE_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)rnd);
    int64_t created = (int64_t)time(NULL);
    if (!r->seed_set) r->r.sampling.seed = mix64(rnd);

    struct job j = {0};
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    j.n = r->n;
    j.want_top = r->r.top_logprobs > 0;
    j.slots = calloc((size_t)r->n, sizeof *j.slots);
    struct choice_acc *acc = calloc((size_t)r->n, sizeof *acc);
    int status = 200;
    if (!j.slots || !acc) {
        status = fail(s, c, 500, NULL, "out of memory");
        goto out;
    }
    lmc_serve_metrics_request(s->metrics, n_ids);
    for (int i = 0; i < r->n; i++) {
        struct lmc_request rq = r->r;
        rq.sampling.seed = r->r.sampling.seed + (uint64_t)i;
        j.slots[i] = (struct slot){.job = &j, .index = i};
        lmc_err err = {0};
        pthread_mutex_lock(&j.mu); /* the first event may come before submit returns */
        j.slots[i].live = true;
        j.n_live++;
        pthread_mutex_unlock(&j.mu);
        uint64_t rid = 0;
        lmc_status st = s->eng.submit(s->eng.ctx, ids, n_ids, &rq, on_event, &j.slots[i], &rid, &err);
        pthread_mutex_lock(&j.mu);
        if (st) {
            j.slots[i].live = false;
            j.n_live--;
        } else {
            j.slots[i].id = rid;
        }
        pthread_mutex_unlock(&j.mu);
        if (st) {
            lmc_serve_fail(&e, st == LMC_ERR_ARG ? 400 : 503, NULL, st == LMC_ERR_ARG ? "invalid_value" : NULL,
                           "%s", err.msg[0] ? err.msg : lmc_status_str(st));
            status = -1;
            break;
        }
    }

    bool stream = r->stream && status == 200;
    struct writer w = {.c = c};
    if (stream && !w_start(s, &w, "text/event-stream")) job_cancel_all(s, &j);
    if (stream && echo_len) {
        for (int i = 0; i < r->n; i++) {
            char *ch = lmc_serve_format_chunk(r->kind, id, created, s->model_name, i, echo, echo_len, NULL, NULL,
                                              false, s->tok);
            if (ch && !w_write(&w, ch, strlen(ch))) job_cancel_all(s, &j);
            free(ch);
        }
    }
    for (int i = 0; i < r->n && echo_len; i++) acc_text(&acc[i], echo, echo_len);
    double t_write = lmc_time_now();
    bool cancelled = status != 200 || w.broken, timed_out = false, failed = false;
    if (cancelled) job_cancel_all(s, &j);
    char errmsg[256] = "";
    struct lmc_serve_usage u = {.prompt_tokens = n_ids};
    int open = 1;
    while (open > 0) {
        struct ev_node *nodes = job_take(&j, s->o.heartbeat_s, &open);
        for (struct ev_node *nd = nodes; nd; nd = nd->next) {
            struct choice_acc *a = &acc[nd->choice];
            if (nd->kind == LMC_EV_TOKEN) {
                if (a->t_last == 0) lmc_serve_metrics_ttft(s->metrics, nd->t - t0);
                else lmc_serve_metrics_itl(s->metrics, nd->t - a->t_last);
                a->t_last = nd->t;
                a->completion_tokens++;
                if (cancelled) continue;
                if (stream) {
                    if (!nd->len && !r->logprobs && (r->kind != LMC_SERVE_CHAT || a->first_sent)) continue;
                    char *ch = lmc_serve_format_chunk(r->kind, id, created, s->model_name, nd->choice, nd->text,
                                                      nd->len, r->logprobs ? &nd->tk : NULL, NULL, !a->first_sent,
                                                      s->tok);
                    a->first_sent = true;
                    if (!ch || !w_write(&w, ch, strlen(ch))) cancelled = true;
                    free(ch);
                    t_write = lmc_time_now();
                } else if (!acc_text(a, nd->text ? nd->text : "", nd->len) || (r->logprobs && !acc_tok(a, &nd->tk))) {
                    cancelled = failed = true;
                    snprintf(errmsg, sizeof errmsg, "out of memory");
                }
                if (cancelled) job_cancel_all(s, &j);
            } else if (nd->kind == LMC_EV_DONE) {
                snprintf(a->finish, sizeof a->finish, "%s", nd->finish);
                u.prompt_tokens = nd->prompt_tokens > 0 ? nd->prompt_tokens : n_ids;
                u.completion_tokens += nd->completion_tokens;
                u.cached_tokens = LMC_MAX(u.cached_tokens, nd->cached);
                lmc_serve_metrics_finish(s->metrics, timed_out ? "cancelled" : nd->finish, nd->completion_tokens,
                                         nd->t - t0);
                if (!stream && !cancelled && !acc_text(a, nd->text ? nd->text : "", nd->len)) {
                    cancelled = failed = true;
                    snprintf(errmsg, sizeof errmsg, "out of memory");
                }
                if (stream && !cancelled) {
                    char *ch = lmc_serve_format_chunk(r->kind, id, created, s->model_name, nd->choice,
                                                      nd->text ? nd->text : "", nd->len, NULL, nd->finish,
                                                      !a->first_sent, s->tok);
                    if (!ch || !w_write(&w, ch, strlen(ch))) cancelled = true;
                    free(ch);
                }
            } else {
                lmc_serve_metrics_finish(s->metrics, "error", a->completion_tokens, nd->t - t0);
                snprintf(errmsg, sizeof errmsg, "%s", nd->error);
                if (!failed) {
                    failed = cancelled = true;
                    job_cancel_all(s, &j);
                }
            }
        }
        free_nodes(nodes);
        if (open == 0) break;
        double now = lmc_time_now();
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (!cancelled && (stopping || now - t0 > s->o.request_timeout_s)) {
            cancelled = timed_out = true;
            snprintf(errmsg, sizeof errmsg, "%s", stopping ? "server shutting down" : "request timed out");
            job_cancel_all(s, &j);
        }
        if (!cancelled && now - t_write >= s->o.heartbeat_s) {
            /* probe the client: an SSE comment, or whitespace before the JSON */
            if (!w.started) w_start(s, &w, "application/json");
            if (!w_write(&w, stream ? ": keep-alive\n\n" : " ", stream ? 14 : 1)) {
                cancelled = true;
                job_cancel_all(s, &j);
            }
            t_write = now;
        }
    }

    if (status == -1) {
        status = send_error(s, c, &e);
    } else if (stream) {
        if (!w.broken && (failed || timed_out)) {
            lmc_serve_fail(&e, timed_out ? 408 : 500, NULL, timed_out ? "timeout" : NULL, "%s", errmsg);
            char *js = lmc_serve_format_error(&e);
            if (js) {
                w_write(&w, "data: ", 6);
                w_write(&w, js, strlen(js));
                w_write(&w, "\n\n", 2);
            }
            free(js);
        } else if (!w.broken && r->include_usage) {
            char *ch = lmc_serve_format_usage_chunk(r->kind, id, created, s->model_name, &u);
            if (ch) w_write(&w, ch, strlen(ch));
            free(ch);
        }
        w_write(&w, "data: [DONE]\n\n", 14);
        w_end(&w);
    } else if (!w.broken) {
        char *body;
        if (failed || timed_out) {
            status = timed_out ? 408 : 500;
            lmc_serve_fail(&e, status, NULL, timed_out ? "timeout" : NULL, "%s", errmsg);
            body = lmc_serve_format_error(&e);
        } else {
            struct lmc_serve_choice *chs = calloc((size_t)r->n, sizeof *chs);
            for (int i = 0; chs && i < r->n; i++)
                chs[i] = (struct lmc_serve_choice){acc[i].text ? acc[i].text : "", acc[i].len, acc[i].finish,
                                                   acc[i].toks, acc[i].n_toks};
            body = chs ? lmc_serve_format_response(r->kind, id, created, s->model_name, chs, r->n, &u, r->logprobs,
                                                   s->tok)
                       : NULL;
            free(chs);
        }
        if (w.started) { /* after heartbeat whitespace the status is already 200 */
            if (body) w_write(&w, body, strlen(body));
            w_end(&w);
            free(body);
        } else {
            status = send_json(s, c, status, body, NULL);
        }
    }
out:
    for (int i = 0; acc && i < r->n; i++) {
        free(acc[i].text);
        free(acc[i].toks);
    }
    free(acc);
    free(j.slots);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    free(ids);
    free(echo);
    return status;
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
    if (r.model && strcmp(r.model, s->model_name) != 0) {
        lmc_serve_fail(&e, 404, "model", "model_not_found", "The model '%.200s' does not exist; this server has '%s'",
                       r.model, s->model_name);
        lmc_serve_request_free(&r);
        return send_error(s, c, &e);
    }
    int max_active = s->o.max_active > 0 ? s->o.max_active : LMC_MAX(1, s->o.max_connections - 4);
    pthread_mutex_lock(&s->mu);
    bool busy = s->active >= max_active || s->stopping;
    if (!busy) s->active++;
    pthread_mutex_unlock(&s->mu);
    if (busy) {
        lmc_serve_request_free(&r);
        return fail(s, c, 503, "server_busy", "the server is at its limit of concurrent requests; retry later");
    }
    st = generate(s, c, &r, t0);
    pthread_mutex_lock(&s->mu);
    s->active--;
    pthread_mutex_unlock(&s->mu);
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
                         lmc_serve_format_models(s->model_name, s->created, s->o.lim.ctx, s->chat != NULL),
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
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    if (s->mg) {
        mg_stop(s->mg);
        mg_exit_library();
    }
    lmc_serve_metrics_free(s->metrics);
    pthread_mutex_destroy(&s->mu);
    free(s->host);
    free(s->model_name);
    lmc_chat_template_free(s->chat);
    free(s->api_key);
    free(s);
}
