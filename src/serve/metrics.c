/* metrics.c — the server's counters and latency histograms, rendered in
 * the Prometheus text format for GET /metrics together with the
 * scheduler's gauges (running/waiting requests, KV blocks, prefix cache)
 * and the process's own (resident and virtual memory, open descriptors,
 * read from /proc/self as Prometheus client libraries name them). All
 * updates take one mutex; they happen a few times per token at most. */
#include "serve/serve.h"

#include <dirent.h>
#include <unistd.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double ttft_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double itl_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5};
static const double e2e_le[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
static const int http_codes[] = {200, 400, 401, 404, 405, 408, 413, 429, 500, 503};
#define N_CODES (int)(sizeof http_codes / sizeof *http_codes)
static const char *const reasons[] = {"stop", "length", "cancelled", "error"};
#define N_REASONS 4

struct lmc_serve_metrics {
    pthread_mutex_t mu;
    uint64_t http[N_CODES + 1];       /* last: other codes */
    uint64_t requests, prompt_tokens, completion_tokens;
    uint64_t finished[N_REASONS];
    int64_t connections;
    struct lmc_serve_hist ttft, itl, e2e;
};

static void hist_init(struct lmc_serve_hist *h, const double *le, int nb) {
    memset(h, 0, sizeof *h);
    h->le = le;
    h->nb = nb;
}

static void hist_add(struct lmc_serve_hist *h, double v) {
    int b = 0;
    while (b < h->nb && v > h->le[b]) b++;
    h->count[b]++;
    h->sum += v;
    h->n++;
}

lmc_status lmc_serve_metrics_init(struct lmc_serve_metrics **out, lmc_err *err) {
    struct lmc_serve_metrics *m = calloc(1, sizeof *m);
    if (!m) return lmc_err_set(err, LMC_ERR_OOM, "metrics: out of memory");
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, ttft_le, (int)(sizeof ttft_le / sizeof *ttft_le));
    hist_init(&m->itl, itl_le, (int)(sizeof itl_le / sizeof *itl_le));
    hist_init(&m->e2e, e2e_le, (int)(sizeof e2e_le / sizeof *e2e_le));
    *out = m;
    return LMC_OK;
}

void lmc_serve_metrics_free(struct lmc_serve_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void lmc_serve_metrics_http(struct lmc_serve_metrics *m, int status) {
    int i = 0;
    while (i < N_CODES && http_codes[i] != status) i++;
    pthread_mutex_lock(&m->mu);
    m->http[i]++;
    pthread_mutex_unlock(&m->mu);
}

void lmc_serve_metrics_request(struct lmc_serve_metrics *m, int64_t prompt_tokens) {
    pthread_mutex_lock(&m->mu);
    m->requests++;
    m->prompt_tokens += (uint64_t)prompt_tokens;
    pthread_mutex_unlock(&m->mu);
}

void lmc_serve_metrics_finish(struct lmc_serve_metrics *m, const char *finish_reason,
                              int64_t completion_tokens, double seconds) {
    int r = 0;
    while (r < N_REASONS - 1 && (!finish_reason || strcmp(reasons[r], finish_reason))) r++;
    pthread_mutex_lock(&m->mu);
    m->finished[r]++;
    m->completion_tokens += (uint64_t)completion_tokens;
    hist_add(&m->e2e, seconds);
    pthread_mutex_unlock(&m->mu);
}

void lmc_serve_metrics_ttft(struct lmc_serve_metrics *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->ttft, seconds);
    pthread_mutex_unlock(&m->mu);
}

void lmc_serve_metrics_itl(struct lmc_serve_metrics *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->itl, seconds);
    pthread_mutex_unlock(&m->mu);
}

void lmc_serve_metrics_conn(struct lmc_serve_metrics *m, int delta) {
    pthread_mutex_lock(&m->mu);
    m->connections += delta;
    pthread_mutex_unlock(&m->mu);
}

/* A growing text buffer; on OOM it stays failed and render returns NULL. */
struct sbuf {
    char *s;
    size_t n, cap;
    bool bad;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    if (b->bad) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->bad = true;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)k + 256;
        char *t = realloc(b->s, nc);
        if (!t) {
            b->bad = true;
            return;
        }
        b->s = t;
        b->cap = nc;
    }
}

static void metric(struct sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A metric with one integer sample: its HELP/TYPE lines, then "name value". */
static void metric_i64(struct sbuf *b, const char *name, const char *type, const char *help, long long v) {
    metric(b, name, type, help);
    sb_printf(b, "%s %lld\n", name, v);
}

static void hist_render(struct sbuf *b, const char *name, const char *help, const struct lmc_serve_hist *h) {
    metric(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->nb; i++) {
        cum += h->count[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    cum += h->count[h->nb];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum, name,
              h->sum, name, (unsigned long long)h->n);
}

/* Resident and virtual bytes from /proc/self/statm; false when unreadable. */
static bool proc_memory(double *rss, double *vsz) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return false;
    unsigned long long size = 0, res = 0;
    int k = fscanf(f, "%llu %llu", &size, &res);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (k != 2 || page <= 0) return false;
    *rss = (double)res * (double)page;
    *vsz = (double)size * (double)page;
    return true;
}

/* Open file descriptors (entries of /proc/self/fd less the one opendir
 * holds); -1 when unreadable. */
static int64_t proc_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int64_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;
}

char *lmc_serve_metrics_render(struct lmc_serve_metrics *m, const struct lmc_sched_stats *st) {
    struct sbuf b = {0};
    b.cap = 4096;
    b.s = malloc(b.cap);
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    metric(&b, "lmc_requests_total", "counter", "Generation requests accepted.");
    sb_printf(&b, "lmc_requests_total %llu\n", (unsigned long long)m->requests);
    metric(&b, "lmc_requests_finished_total", "counter", "Generation requests finished, by reason.");
    for (int i = 0; i < N_REASONS; i++)
        sb_printf(&b, "lmc_requests_finished_total{reason=\"%s\"} %llu\n", reasons[i],
                  (unsigned long long)m->finished[i]);
    metric(&b, "lmc_http_responses_total", "counter", "HTTP responses by status code.");
    for (int i = 0; i <= N_CODES; i++) {
        if (i == N_CODES) sb_printf(&b, "lmc_http_responses_total{code=\"other\"} %llu\n", (unsigned long long)m->http[i]);
        else sb_printf(&b, "lmc_http_responses_total{code=\"%d\"} %llu\n", http_codes[i], (unsigned long long)m->http[i]);
    }
    metric(&b, "lmc_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.");
    sb_printf(&b, "lmc_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    metric(&b, "lmc_generation_tokens_total", "counter", "Tokens generated.");
    sb_printf(&b, "lmc_generation_tokens_total %llu\n", (unsigned long long)m->completion_tokens);
    metric_i64(&b, "lmc_http_connections", "gauge", "Requests being handled.", m->connections);
    hist_render(&b, "lmc_time_to_first_token_seconds", "Time from request to its first token.", &m->ttft);
    hist_render(&b, "lmc_inter_token_latency_seconds", "Time between consecutive tokens of a request.", &m->itl);
    hist_render(&b, "lmc_request_duration_seconds", "Time from request to its last token.", &m->e2e);
    pthread_mutex_unlock(&m->mu);
    if (st) {
        metric_i64(&b, "lmc_requests_running", "gauge", "Sequences in the running batch.", st->running);
        metric_i64(&b, "lmc_requests_waiting", "gauge", "Sequences waiting for KV blocks or a batch slot.",
                   st->waiting);
        metric_i64(&b, "lmc_kv_blocks_total", "gauge", "KV cache blocks in the pool.", st->kv_blocks_total);
        metric_i64(&b, "lmc_kv_blocks_used", "gauge", "KV cache blocks in use.", st->kv_blocks_used);
        metric_i64(&b, "lmc_kv_blocks_free", "gauge", "KV cache blocks free.",
                   st->kv_blocks_total - st->kv_blocks_used);
        metric_i64(&b, "lmc_kv_tokens_stored", "gauge",
                   "Tokens held in the used KV blocks (1 - stored / (used * block size) is the waste).",
                   st->kv_tokens_stored);
        metric_i64(&b, "lmc_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.",
                   st->preempted_total);
        metric_i64(&b, "lmc_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
                   st->prefix_hits_tokens);
        metric_i64(&b, "lmc_prefix_cache_query_tokens_total", "counter", "Prompt tokens looked up in the prefix cache.",
                   st->prefix_queries_tokens);
        metric_i64(&b, "lmc_prefix_cache_blocks", "gauge",
                   "KV blocks held only by the prefix cache (no running request uses them).", st->prefix_cache_blocks);
        metric_i64(&b, "lmc_prefix_cache_blocks_max", "gauge",
                   "Bound on lmc_prefix_cache_blocks (least recently used blocks are evicted beyond it).",
                   st->prefix_cache_blocks_max);
        metric_i64(&b, "lmc_prefix_cache_hits_total", "counter", "KV blocks reused from the prefix cache.",
                   st->prefix_hits_blocks);
        metric_i64(&b, "lmc_prefix_cache_evictions_total", "counter", "KV blocks evicted from the prefix cache.",
                   st->prefix_evictions);
        metric_i64(&b, "lmc_scheduler_steps_total", "counter", "Scheduler steps (batched forwards).", st->steps);
        metric_i64(&b, "lmc_kv_bytes_per_token", "gauge",
                   "KV cache bytes of one token (K and V, all layers) in the pool's format.", st->kv_bytes_per_token);
        metric_i64(&b, "lmc_kv_pool_bytes", "gauge", "Memory of the KV pool (blocks x bytes per block, plus KIVI-2 f16 rings).",
                   st->kv_pool_bytes);
        metric_i64(&b, "lmc_spec_draft_tokens_total", "counter", "Speculative draft tokens verified.",
                   st->spec_proposed_total);
        metric_i64(&b, "lmc_spec_accepted_tokens_total", "counter", "Speculative draft tokens accepted.",
                   st->spec_accepted_total);
        metric_i64(&b, "lmc_spec_steps_total", "counter", "Scheduler steps in which some sequence speculated.",
                   st->spec_steps);
        metric(&b, "lmc_spec_k_steps_total", "counter",
               "Decode steps of sequences that may speculate, by the number of drafts K chosen (adaptive K; k=0: a "
               "plain step).");
        for (int k = 0; k <= LMC_SCHED_SPEC_KMAX; k++)
            sb_printf(&b, "lmc_spec_k_steps_total{k=\"%d\"} %lld\n", k, (long long)st->spec_k_steps[k]);
    }
    double rss, vsz;
    if (proc_memory(&rss, &vsz)) {
        metric(&b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        sb_printf(&b, "process_resident_memory_bytes %.0f\n", rss);
        metric(&b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        sb_printf(&b, "process_virtual_memory_bytes %.0f\n", vsz);
    }
    int64_t fds = proc_open_fds();
    if (fds >= 0) {
        metric_i64(&b, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
    }
    if (b.bad) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
