/* cmd_bench_serve.c — `lmc bench-serve`: drives an OpenAI-compatible
 * server with C concurrent clients sending N streamed /v1/completions
 * requests of P prompt tokens (given as token ids, so the length is exact)
 * and M generated tokens (ignore_eos), then prints throughput and
 * percentiles of time to first token, inter-token latency and request
 * latency. --model A,B,... makes request k name the (k mod count)-th model
 * (mixed-adapter runs). --prompt-set S (0..239, default 0) picks another
 * family of prompts: no prefix-cache hits on a server that saw set S' != S
 * (A/B rounds on servers that stay up). The prompt tokens each server says it
 * took from its cache (usage.prompt_tokens_details.cached_tokens, or
 * llama-server's timings.cache_n) are summed into cached_prompt_tokens, so
 * a run shows whether it measured prefill or cache hits. Plain POSIX sockets
 * and HTTP/1.1 (no TLS): no dependency. */
#include "cli.h"
#include "core/core.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct bench {
    char host[256], port[16];
    const char *api_key, *model;
    int64_t concurrency, requests, prompt_len, max_tokens, prompt_set;
    double timeout_s;
    pthread_mutex_t mu;
    int64_t next, ok, failed, out_tokens, cached_tokens, cached_reported;
    double *ttft, *e2e, *itl;       /* (requests), (requests), (requests * max_tokens) */
    int64_t n_ttft, n_e2e, n_itl;
    char first_error[256];
};

static double pct(double *v, int64_t n, double p) {
    if (n == 0) return 0;
    int64_t k = (int64_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[LMC_MIN(k, n - 1)];
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int dial(struct bench *b) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(b->host, b->port, &hints, &res) || !res) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {(time_t)b->timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* One streamed request; records its timings. Returns false on failure
 * (with a message in err). */
static bool one_request(struct bench *b, int64_t k, double *itl, int64_t *n_itl, double *ttft, double *e2e,
                        int64_t *tokens, int64_t *cached, char *err, size_t errcap) {
    size_t cap = 256 + (size_t)b->prompt_len * 8;
    char *body = malloc(cap), *req = malloc(cap + 1024);
    char *buf = malloc(1 << 16);
    bool ok = false;
    int fd = -1;
    if (!body || !req || !buf) {
        snprintf(err, errcap, "out of memory");
        goto out;
    }
    /* --model A,B,...: request k names the (k mod count)-th (mixed-adapter runs) */
    const char *mname = b->model ? b->model : "";
    int mlen = (int)strcspn(mname, ",");
    if (b->model) {
        int64_t count = 1;
        for (const char *c = b->model; *c; c++) count += *c == ',';
        for (int64_t j = 0; j < k % count; j++) mname += strcspn(mname, ",") + 1;
        mlen = (int)strcspn(mname, ",");
    }
    size_t n = (size_t)snprintf(body, cap, "{%s%.*s%s\"prompt\":[", b->model ? "\"model\":\"" : "", mlen,
                                mname, b->model ? "\"," : "");
    /* distinct per request: no prefix-cache hits (set S: token i of request k
     * is 10 + (37 k + (13 + S) i + S) mod 240, so sets share no first block) */
    const int64_t S = b->prompt_set;
    for (int64_t i = 0; i < b->prompt_len; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s%lld", i ? "," : "",
                              (long long)(10 + (k * 37 + i * (13 + S) + S) % 240));
    n += (size_t)snprintf(body + n, cap - n,
                          "],\"max_tokens\":%lld,\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
                          "\"stream_options\":{\"include_usage\":true}}",
                          (long long)b->max_tokens);
    char auth[600] = "";
    if (b->api_key) snprintf(auth, sizeof auth, "Authorization: Bearer %.500s\r\n", b->api_key);
    int rn = snprintf(req, cap + 1024,
                      "POST /v1/completions HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                      b->host, b->port, n, auth);
    double t0 = lmc_time_now();
    fd = dial(b);
    if (fd < 0) {
        snprintf(err, errcap, "cannot connect to %.100s:%.15s", b->host, b->port);
        goto out;
    }
    if (!send_all(fd, req, (size_t)rn) || !send_all(fd, body, n)) {
        snprintf(err, errcap, "send failed");
        goto out;
    }
    size_t have = 0, scan = 0;
    bool status_ok = false, got_status = false, done = false;
    double t_last = 0;
    *tokens = 0;
    *cached = -1;
    *ttft = -1;
    for (;;) {
        if (have + 1 >= (1 << 16)) { /* drop what was scanned */
            memmove(buf, buf + scan, have - scan);
            have -= scan;
            scan = 0;
            if (have + 1 >= (1 << 16)) {
                snprintf(err, errcap, "response event too large");
                goto out;
            }
        }
        ssize_t r = recv(fd, buf + have, (1 << 16) - 1 - have, 0);
        if (r <= 0) break;
        have += (size_t)r;
        buf[have] = 0;
        double now = lmc_time_now();
        if (!got_status) {
            if (!memchr(buf, '\n', have)) continue;
            got_status = true;
            int code = 0;
            sscanf(buf, "HTTP/1.%*d %d", &code);
            status_ok = code == 200;
            if (!status_ok) {
                char *j = strstr(buf, "\r\n\r\n");
                snprintf(err, errcap, "HTTP %d: %.200s", code, j ? j + 4 : "");
                goto out;
            }
        }
        /* events: "data: ...\n\n" (chunk framing sits between events) */
        for (;;) {
            char *d = strstr(buf + scan, "data: ");
            if (!d) break;
            char *e = strstr(d, "\n\n");
            if (!e) break;
            *e = 0;
            if (!strncmp(d + 6, "[DONE]", 6)) done = true;
            else if (strstr(d, "\"error\"")) {
                snprintf(err, errcap, "%.200s", d + 6);
                goto out;
            } else if (strstr(d, "\"usage\":{")) {
                char *u = strstr(d, "\"completion_tokens\":");
                if (u) *tokens = strtoll(u + 20, NULL, 10);
                char *ct = strstr(d, "\"cached_tokens\":"), *cn = strstr(d, "\"cache_n\":"); /* (llama-server's timings) */
                if (ct) *cached = strtoll(ct + 16, NULL, 10);
                else if (cn) *cached = strtoll(cn + 10, NULL, 10);
            } else if (strstr(d, "\"text\":\"") && !strstr(d, "\"text\":\"\"")) {
                if (*ttft < 0) *ttft = now - t0;
                else if (*n_itl < b->max_tokens) itl[(*n_itl)++] = now - t_last;
                t_last = now;
            }
            scan = (size_t)(e - buf) + 2;
        }
        if (done) break;
    }
    if (!done) {
        snprintf(err, errcap, "stream ended without [DONE]");
        goto out;
    }
    *e2e = lmc_time_now() - t0;
    if (*ttft < 0) *ttft = *e2e;
    ok = true;
out:
    if (fd >= 0) close(fd);
    free(body);
    free(req);
    free(buf);
    return ok;
}

static void *worker(void *arg) {
    struct bench *b = arg;
    double *itl = malloc((size_t)b->max_tokens * sizeof *itl);
    if (!itl) return NULL;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        int64_t k = b->next < b->requests ? b->next++ : -1;
        pthread_mutex_unlock(&b->mu);
        if (k < 0) break;
        int64_t n_itl = 0, toks = 0, cached = -1;
        double ttft = 0, e2e = 0;
        char err[256];
        bool ok = one_request(b, k, itl, &n_itl, &ttft, &e2e, &toks, &cached, err, sizeof err);
        pthread_mutex_lock(&b->mu);
        if (ok) {
            b->ok++;
            b->out_tokens += toks;
            if (cached >= 0) b->cached_tokens += cached, b->cached_reported++;
            b->ttft[b->n_ttft++] = ttft;
            b->e2e[b->n_e2e++] = e2e;
            memcpy(b->itl + b->n_itl, itl, (size_t)n_itl * sizeof *itl);
            b->n_itl += n_itl;
        } else {
            b->failed++;
            if (!b->first_error[0]) snprintf(b->first_error, sizeof b->first_error, "%s", err);
        }
        pthread_mutex_unlock(&b->mu);
    }
    free(itl);
    return NULL;
}

int cmd_bench_serve(int argc, char **argv) {
    struct bench b;
    memset(&b, 0, sizeof b);
    const char *url = NULL;
    bool json = false;
    b.concurrency = 8;
    b.requests = 64;
    b.prompt_len = 128;
    b.max_tokens = 128;
    b.timeout_s = 600;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--json")) {
            json = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "usage: lmc bench-serve --url http://HOST:PORT [--concurrency C] [--requests N]\n"
                            "       [--prompt-len P] [--max-tokens M] [--prompt-set S] [--api-key KEY] [--model NAME[,NAME...]]\n"
                            "       [--json]\n");
            return 2;
        }
        i++;
        bool ok = true;
        if (!strcmp(o, "--url")) url = v;
        else if (!strcmp(o, "--concurrency") || !strcmp(o, "-c")) ok = cli_parse_i64(v, 1, 1024, &b.concurrency);
        else if (!strcmp(o, "--requests") || !strcmp(o, "-n")) ok = cli_parse_i64(v, 1, 1000000, &b.requests);
        else if (!strcmp(o, "--prompt-len")) ok = cli_parse_i64(v, 1, 1 << 20, &b.prompt_len);
        else if (!strcmp(o, "--max-tokens")) ok = cli_parse_i64(v, 1, 1 << 20, &b.max_tokens);
        else if (!strcmp(o, "--prompt-set")) ok = cli_parse_i64(v, 0, 239, &b.prompt_set);
        else if (!strcmp(o, "--timeout")) ok = cli_parse_f64(v, 1, 86400, &b.timeout_s);
        else if (!strcmp(o, "--api-key")) b.api_key = v;
        else if (!strcmp(o, "--model")) b.model = v;
        else {
            fprintf(stderr, "lmc bench-serve: unknown option %s\n", o);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "lmc bench-serve: invalid value '%s' for %s\n", v, o);
            return 2;
        }
    }
    if (!b.api_key) b.api_key = getenv("LMC_API_KEY");
    if (!url || strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, "lmc bench-serve: --url http://HOST:PORT is required (no TLS)\n");
        return 2;
    }
    const char *h = url + 7, *he;
    if (*h == '[') {
        he = strchr(h, ']');
        if (!he) return fprintf(stderr, "lmc bench-serve: bad URL %s\n", url), 2;
        snprintf(b.host, sizeof b.host, "%.*s", (int)(he - h - 1), h + 1);
        he++;
    } else {
        he = h + strcspn(h, ":/");
        snprintf(b.host, sizeof b.host, "%.*s", (int)(he - h), h);
    }
    if (*he == ':') snprintf(b.port, sizeof b.port, "%.*s", (int)strcspn(he + 1, "/"), he + 1);
    else snprintf(b.port, sizeof b.port, "80");
    if (b.model && strpbrk(b.model, "\"\\")) {
        fprintf(stderr, "lmc bench-serve: --model must not contain quotes or backslashes\n");
        return 2;
    }
    pthread_mutex_init(&b.mu, NULL);
    b.ttft = malloc((size_t)b.requests * sizeof *b.ttft);
    b.e2e = malloc((size_t)b.requests * sizeof *b.e2e);
    b.itl = malloc((size_t)b.requests * (size_t)b.max_tokens * sizeof *b.itl);
    pthread_t *th = malloc((size_t)b.concurrency * sizeof *th);
    if (!b.ttft || !b.e2e || !b.itl || !th) {
        fprintf(stderr, "lmc bench-serve: out of memory\n");
        return 1;
    }
    double t0 = lmc_time_now();
    int64_t started = 0;
    for (int64_t i = 0; i < b.concurrency; i++, started++)
        if (pthread_create(&th[i], NULL, worker, &b)) break;
    for (int64_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    double wall = lmc_time_now() - t0;
    qsort(b.ttft, (size_t)b.n_ttft, sizeof *b.ttft, cmp_d);
    qsort(b.e2e, (size_t)b.n_e2e, sizeof *b.e2e, cmp_d);
    qsort(b.itl, (size_t)b.n_itl, sizeof *b.itl, cmp_d);
    double in_tok = (double)(b.ok * b.prompt_len);
    if (json) {
        printf("{\"requests\":%lld,\"ok\":%lld,\"failed\":%lld,\"concurrency\":%lld,\"prompt_len\":%lld,"
               "\"max_tokens\":%lld,\"wall_s\":%.4f,\"requests_per_s\":%.4f,\"output_tokens\":%lld,"
               "\"output_tokens_per_s\":%.3f,\"total_tokens_per_s\":%.3f,"
               "\"cached_prompt_tokens\":%lld,\"cached_reported\":%lld,"
               "\"ttft_s\":{\"p50\":%.6f,\"p90\":%.6f,\"p99\":%.6f},"
               "\"itl_s\":{\"p50\":%.6f,\"p90\":%.6f,\"p99\":%.6f},"
               "\"e2e_s\":{\"p50\":%.6f,\"p90\":%.6f,\"p99\":%.6f}}\n",
               (long long)b.requests, (long long)b.ok, (long long)b.failed, (long long)b.concurrency,
               (long long)b.prompt_len, (long long)b.max_tokens, wall, (double)b.ok / wall, (long long)b.out_tokens,
               (double)b.out_tokens / wall, ((double)b.out_tokens + in_tok) / wall, (long long)b.cached_tokens,
               (long long)b.cached_reported, pct(b.ttft, b.n_ttft, 50),
               pct(b.ttft, b.n_ttft, 90), pct(b.ttft, b.n_ttft, 99), pct(b.itl, b.n_itl, 50), pct(b.itl, b.n_itl, 90),
               pct(b.itl, b.n_itl, 99), pct(b.e2e, b.n_e2e, 50), pct(b.e2e, b.n_e2e, 90), pct(b.e2e, b.n_e2e, 99));
    } else {
        printf("lmc bench-serve: %s, concurrency %lld, %lld requests, prompt %lld tokens, %lld new tokens\n", url,
               (long long)b.concurrency, (long long)b.requests, (long long)b.prompt_len, (long long)b.max_tokens);
        printf("  ok %lld, failed %lld, wall %.3f s\n", (long long)b.ok, (long long)b.failed, wall);
        printf("  throughput: %.2f req/s, %.1f output tok/s, %.1f total tok/s\n", (double)b.ok / wall,
               (double)b.out_tokens / wall, ((double)b.out_tokens + in_tok) / wall);
        printf("  prompt tokens the server took from its cache: %lld of %lld (reported by %lld requests)\n",
               (long long)b.cached_tokens, (long long)in_tok, (long long)b.cached_reported);
        printf("  %-22s %10s %10s %10s\n", "latency (ms)", "p50", "p90", "p99");
        printf("  %-22s %10.2f %10.2f %10.2f\n", "time to first token", 1e3 * pct(b.ttft, b.n_ttft, 50),
               1e3 * pct(b.ttft, b.n_ttft, 90), 1e3 * pct(b.ttft, b.n_ttft, 99));
        printf("  %-22s %10.2f %10.2f %10.2f\n", "inter-token", 1e3 * pct(b.itl, b.n_itl, 50),
               1e3 * pct(b.itl, b.n_itl, 90), 1e3 * pct(b.itl, b.n_itl, 99));
        printf("  %-22s %10.2f %10.2f %10.2f\n", "request", 1e3 * pct(b.e2e, b.n_e2e, 50), 1e3 * pct(b.e2e, b.n_e2e, 90),
               1e3 * pct(b.e2e, b.n_e2e, 99));
    }
    if (b.failed) fprintf(stderr, "lmc bench-serve: %lld requests failed; first: %s\n", (long long)b.failed, b.first_error);
    free(b.ttft);
    free(b.e2e);
    free(b.itl);
    free(th);
    pthread_mutex_destroy(&b.mu);
    return b.failed ? 1 : 0;
}
