/* test_scheduler.c — continuous batching on the CPU with the tiny
 * fixtures: 64 concurrent greedy requests give exactly what single-sequence
 * lmc_session_generate gives (ids, text, finish reason); seeded sampling
 * gives the same tokens alone or among 63 others; a tiny KV pool forces
 * preemption without changing any output; shared prompts hit the prefix
 * cache (counted) with identical outputs, also with the cache bounded to a
 * few blocks (LRU eviction, bound held); stop strings, logprobs on every
 * token, cancelling mid-stream (and cancels of finished or unknown ids that
 * change nothing), bad requests; shutting down with requests running and
 * waiting (each ends once, with its tokens so far and "shutting down");
 * all blocks come back at the end. The Mamba fixtures run the greedy and
 * sampling checks with per-request recurrent state slots. A session's
 * prefix reuse (same prompt, a diverging one, an extension) equals fresh
 * sessions on every fixture. */
#include "test.h"
#include "core/core.h"
#include "infer/detok.h"
#include "infer/scheduler.h"
#include "infer/session.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAXGEN 48
#define NREQ 64

struct result {
    int32_t ids[MAXGEN];
    int64_t n;
    char text[8 * MAXGEN + 64];
    size_t text_len;
    const char *finish;
    int64_t prompt_tokens, completion_tokens, cached;
    int n_events_after_done;
    int64_t n_top_events;          /* TOKEN events that carried top logprobs */
    char error[64];                /* the ERROR event's message */
    int64_t n_all;                 /* every TOKEN event (n stops at MAXGEN) */
    bool gate;                     /* may hold the scheduler in its callback (see gate_pair) */
    bool done, logprob_ok;
    uint64_t id;
    int cancel_after;              /* > 0: cancel from the callback after this many tokens */
    bool watch_kv;                 /* read the stats at every token: KV tokens vs blocks */
    int64_t kv_over, kv_seen;      /* max of stored - used x 16, max stored */
    struct lmc_sched *s;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int n_done;
static bool at_gate, gate_open;
static struct result *gate_pair[2]; /* the first of them to reach its 2nd token once both
                                     * have one holds the scheduler thread until gate_open */

static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct result *r = user;
    pthread_mutex_lock(&mu);
    if (r->done) r->n_events_after_done++;
    if (ev->kind == LMC_EV_TOKEN && r->n < MAXGEN) {
        r->ids[r->n++] = ev->token;
        if (ev->n_top > 0) { /* the chosen token's logprob is among the top ones, sorted */
            /* (used with greedy requests: the chosen token is the top one) */
            bool ok = ev->logprob <= 0 && ev->top_logprobs[0] == ev->logprob && ev->top_ids[0] == ev->token;
            double mass = exp(ev->top_logprobs[0]);
            for (int i = 1; i < ev->n_top; i++) {
                ok &= ev->top_logprobs[i] <= ev->top_logprobs[i - 1] && ev->top_ids[i] != ev->top_ids[0];
                mass += exp(ev->top_logprobs[i]);
            }
            r->logprob_ok &= ok && mass <= 1.0 + 1e-5 && ev->n_top == 5;
            r->n_top_events++;
        }
    }
    if (ev->text_len && r->text_len + ev->text_len < sizeof r->text) {
        memcpy(r->text + r->text_len, ev->text, ev->text_len);
        r->text_len += ev->text_len;
    }
    if (ev->kind == LMC_EV_DONE || ev->kind == LMC_EV_ERROR) {
        r->finish = ev->kind == LMC_EV_DONE ? ev->finish_reason : "error";
        if (ev->kind == LMC_EV_ERROR) snprintf(r->error, sizeof r->error, "%s", ev->error ? ev->error : "");
        r->prompt_tokens = ev->prompt_tokens;
        r->completion_tokens = ev->completion_tokens;
        r->cached = ev->cached_prompt_tokens;
        r->done = true;
        n_done++;
        pthread_cond_broadcast(&cv);
    }
    bool cancel = ev->kind == LMC_EV_TOKEN && r->cancel_after > 0 && r->n == r->cancel_after;
    if (ev->kind == LMC_EV_TOKEN) r->n_all++;
    if (ev->kind == LMC_EV_TOKEN && r->n_all == 1) pthread_cond_broadcast(&cv); /* first token */
    if (ev->kind == LMC_EV_TOKEN && r->gate && !at_gate && r->n_all >= 2 && gate_pair[0]->n_all > 0 &&
        gate_pair[1]->n_all > 0) { /* hold the scheduler thread here */
        at_gate = true;
        pthread_cond_broadcast(&cv);
        while (!gate_open) pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    if (cancel) lmc_sched_cancel(r->s, r->id);
    if (r->watch_kv && ev->kind == LMC_EV_TOKEN) { /* the stats of the step before */
        struct lmc_sched_stats st;
        lmc_sched_stats(r->s, &st);
        r->kv_over = LMC_MAX(r->kv_over, st.kv_tokens_stored - st.kv_blocks_used * 16);
        r->kv_seen = LMC_MAX(r->kv_seen, st.kv_tokens_stored);
    }
}

static void wait_done(int n) {
    pthread_mutex_lock(&mu);
    while (n_done < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

/* Waits for the scheduler's idle state (published after the step that
 * sent the last events); a minute without it is a failure. */
static void wait_idle(struct lmc_sched *s, struct lmc_sched_stats *st) {
    CHECK_MSG(lmc_sched_wait_idle(s, 60, st), "scheduler not idle: %lld running, %lld waiting, %lld blocks",
              (long long)st->running, (long long)st->waiting, (long long)st->kv_blocks_used);
}

static bool finish_is(const struct result *r, const char *reason) {
    return r->finish && !strcmp(r->finish, reason);
}

struct fixture {
    struct lmc_model m;
    struct lmc_tokenizer *tok;
    struct lmc_backend be_ref, be;
    int32_t prompts[NREQ][64];
    int64_t n_prompt[NREQ];
};

static bool fixture_open(struct fixture *f, const char *dir) {
    lmc_err err = {0};
    memset(f, 0, sizeof *f);
    if (lmc_model_load(&f->m, dir, NULL, &err) || lmc_tokenizer_load(&f->tok, dir, &err) ||
        lmc_backend_cpu_init(&f->be_ref, 1, &err) || lmc_backend_cpu_init(&f->be, 2, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        return false;
    }
    uint64_t seed = 99;
    int64_t V = f->m.cfg.vocab_size;
    for (int i = 0; i < NREQ; i++) {
        f->n_prompt[i] = 1 + (int64_t)(test_rng_next(&seed) % 40);
        for (int64_t j = 0; j < f->n_prompt[i]; j++)
            f->prompts[i][j] = (int32_t)(test_rng_next(&seed) % (uint64_t)V);
    }
    return true;
}

static void fixture_close(struct fixture *f) {
    lmc_backend_cpu_free(&f->be_ref);
    lmc_backend_cpu_free(&f->be);
    lmc_tokenizer_free(f->tok);
    lmc_model_free(&f->m);
}

static void request_params(struct lmc_request *r, int i, bool sample) {
    memset(r, 0, sizeof *r);
    lmc_sampler_defaults(&r->sampling);
    r->max_tokens = 8 + (i * 7) % (MAXGEN - 8);
    r->top_logprobs = -1;
    if (sample) {
        r->sampling.temperature = 0.9;
        r->sampling.top_p = 0.95;
        r->sampling.seed = 1000 + (uint64_t)i;
        r->ignore_eos = i % 3 == 0;
    } else {
        r->sampling.temperature = 0;
    }
}

/* Single-sequence reference. */
static void reference(struct fixture *f, const int32_t *prompt, int64_t n, const struct lmc_request *r,
                      struct result *out) {
    struct lmc_session s;
    lmc_err err = {0};
    memset(out, 0, sizeof *out);
    if (lmc_session_init(&s, &f->m, &f->be_ref, f->tok, 128, 64, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    struct lmc_gen_opts o = {r->max_tokens, r->sampling, (const char *const *)r->stop, r->n_stop,
                             r->ignore_eos};
    struct lmc_gen_result g;
    CHECK(lmc_session_generate(&s, prompt, n, &o, NULL, NULL, &g, &err) == LMC_OK);
    out->n = LMC_MIN(g.n_ids, MAXGEN);
    memcpy(out->ids, g.ids, (size_t)out->n * sizeof *g.ids);
    out->text_len = LMC_MIN(g.text_len, sizeof out->text - 1);
    memcpy(out->text, g.text, out->text_len);
    out->finish = g.finish_reason;
    lmc_gen_result_free(&g);
    lmc_session_free(&s);
}

static bool same(const struct result *a, const struct result *b) {
    return a->n == b->n && !memcmp(a->ids, b->ids, (size_t)a->n * sizeof *a->ids) &&
           a->text_len == b->text_len && !memcmp(a->text, b->text, a->text_len) &&
           a->finish && b->finish && !strcmp(a->finish, b->finish);
}

/* Submits requests idx[0..n) together and waits for all. */
static void run_all(struct fixture *f, struct lmc_sched *s, const int *idx, int n,
                    struct lmc_request *reqs, struct result *res) {
    pthread_mutex_lock(&mu);
    n_done = 0;
    pthread_mutex_unlock(&mu);
    lmc_err err = {0};
    for (int k = 0; k < n; k++) {
        int i = idx[k];
        memset(&res[k], 0, sizeof res[k]);
        res[k].logprob_ok = true;
        res[k].s = s;
        CHECK_MSG(lmc_sched_submit(s, f->prompts[i], f->n_prompt[i], &reqs[k], on_event, &res[k],
                                   &res[k].id, &err) == LMC_OK, "%s", err.msg);
    }
    wait_done(n);
}

static struct lmc_sched *open_sched_opts(struct fixture *f, int64_t kv_blocks, int block_size,
                                         int64_t step_tokens, bool prefix, int64_t cache_blocks, int max_batch) {
    struct lmc_sched_opts o;
    lmc_sched_opts_default(&o);
    o.prefix_cache_blocks = cache_blocks;
    if (max_batch) o.max_batch = max_batch;
    o.kv_blocks = kv_blocks;
    o.block_size = block_size;
    o.max_step_tokens = step_tokens;
    o.ctx = 128;
    o.prefix_cache = prefix;
    struct lmc_sched *s = NULL;
    lmc_err err = {0};
    CHECK_MSG(lmc_sched_init(&s, &f->m, &f->be, f->tok, &o, &err) == LMC_OK, "%s", err.msg);
    return s;
}

static struct lmc_sched *open_sched(struct fixture *f, int64_t kv_blocks, int block_size,
                                    int64_t step_tokens, bool prefix) {
    return open_sched_opts(f, kv_blocks, block_size, step_tokens, prefix, 0, 0);
}

/* A session's prefix reuse (chat turns): feeding the same prompt again, a
 * prompt that diverges inside what is cached (a recurrent state cannot
 * rewind: it restarts) and one that extends it give the logits of a fresh
 * session (max abs diff <= 1e-4). */
static void session_logits(struct fixture *f, struct lmc_session *s, const int32_t *ids, int64_t n,
                           float *out) {
    lmc_err err = {0};
    CHECK_MSG(lmc_session_feed(s, ids, n, &err) == LMC_OK, "%s", err.msg);
    memcpy(out, s->logits, (size_t)f->m.cfg.vocab_size * sizeof *out);
}

static void test_session_reuse(struct fixture *f, const char *dir) {
    const int64_t V = f->m.cfg.vocab_size;
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
    int32_t p1[40], p2[40];
    for (int i = 0; i < 40; i++) p1[i] = (int32_t)((i * 37 + 5) % V), p2[i] = p1[i];
    for (int i = 12; i < 40; i++) p2[i] = (int32_t)((i * 11 + 3) % V); /* diverges at 12 */
    const struct { const int32_t *ids; int64_t n; } seq[4] = {{p1, 30}, {p1, 30}, {p2, 25}, {p2, 38}};
    struct lmc_session s;
    lmc_err err = {0};
    if (!a || !b || lmc_session_init(&s, &f->m, &f->be_ref, f->tok, 64, 64, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        free(a), free(b);
        return;
    }
    for (int k = 0; k < 4; k++) {
        session_logits(f, &s, seq[k].ids, seq[k].n, a);
        struct lmc_session fresh;
        CHECK(lmc_session_init(&fresh, &f->m, &f->be_ref, f->tok, 64, 64, &err) == LMC_OK);
        session_logits(f, &fresh, seq[k].ids, seq[k].n, b);
        lmc_session_free(&fresh);
        double worst = 0;
        for (int64_t i = 0; i < V; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
        CHECK_MSG(worst <= 1e-4, "%s session reuse step %d: logits differ by %g from a fresh session", dir, k,
                  worst);
    }
    lmc_session_free(&s);
    free(a), free(b);
}

/* Recurrent prefix reuse (Mamba): state snapshots every 8 tokens. 16
 * requests share a 37-token prompt (the last token differs), greedy and
 * seeded: the first fills the cache (prefill chunks end on snapshot
 * boundaries), the other 15 resume from the snapshot after 32 tokens, and
 * each gives the tokens of a fresh single-sequence run. Then the same with
 * the cache bounded to 2 snapshots (the bound holds, outputs unchanged), and
 * with the cache off (no snapshot, no hit). */
static void test_state_prefix(struct fixture *f, const char *dir) {
    static struct lmc_request reqs[16];
    static struct result ref[16], got[16];
    int idx[16];
    for (int i = 0; i < 16; i++) {
        idx[i] = i;
        f->n_prompt[i] = 37;
        for (int j = 0; j < 37; j++) f->prompts[i][j] = (int32_t)((7 + 13 * j) % f->m.cfg.vocab_size);
        f->prompts[i][36] = (int32_t)(i % 3);
    }
    for (int mode = 0; mode < 3; mode++) { /* 0: cache, 1: bounded to 2, 2: off */
        struct lmc_sched_opts o;
        lmc_sched_opts_default(&o);
        o.ctx = 128;
        o.snapshot_tokens = 8;
        o.max_step_tokens = 64;
        o.prefix_cache = mode != 2;
        o.prefix_cache_blocks = mode == 1 ? 2 : 0;
        struct lmc_sched *s = NULL;
        lmc_err err = {0};
        CHECK_MSG(lmc_sched_init(&s, &f->m, &f->be, f->tok, &o, &err) == LMC_OK, "%s", err.msg);
        if (!s) return;
        for (int i = 0; i < 16; i++) {
            request_params(&reqs[i], i, i % 2 == 1);
            reference(f, f->prompts[i], f->n_prompt[i], &reqs[i], &ref[i]);
        }
        run_all(f, s, idx, 1, reqs, got); /* the first fills the cache */
        run_all(f, s, idx + 1, 15, reqs + 1, got + 1);
        int n_same = 0;
        int64_t cached = 0;
        for (int i = 0; i < 16; i++) {
            n_same += same(&got[i], &ref[i]);
            cached += got[i].cached;
        }
        struct lmc_sched_stats st;
        wait_idle(s, &st);
        CHECK_MSG(n_same == 16, "%s state prefix (mode %d): %d of 16 identical", dir, mode, n_same);
        CHECK(st.kv_blocks_used == 0 && got[0].cached == 0);
        if (mode == 0)
            CHECK_MSG(st.state_restores == 15 && st.prefix_hits_tokens == 15 * 32 && cached == 15 * 32 &&
                          st.state_snapshots >= 4 && st.prefix_cache_blocks <= st.prefix_cache_blocks_max,
                      "%s: %lld restores, %lld hit tokens, %lld cached, %lld snapshots", dir,
                      (long long)st.state_restores, (long long)st.prefix_hits_tokens, (long long)cached,
                      (long long)st.state_snapshots);
        if (mode == 1)
            CHECK_MSG(st.prefix_cache_blocks_max == 2 && st.prefix_cache_blocks <= 2 && st.prefix_evictions > 0,
                      "%s bounded: %lld of %lld snapshots kept, %lld evictions", dir,
                      (long long)st.prefix_cache_blocks, (long long)st.prefix_cache_blocks_max,
                      (long long)st.prefix_evictions);
        if (mode == 2) CHECK(st.state_snapshots == 0 && st.state_restores == 0 && cached == 0);
        lmc_sched_free(s);
    }
}

static void test_fixture(const char *dir, bool full) {
    struct fixture *f = calloc(1, sizeof *f);
    if (!fixture_open(f, dir)) {
        free(f);
        return;
    }
    static struct lmc_request reqs[NREQ];
    static struct result ref[NREQ], got[NREQ], alone[NREQ];
    int idx[NREQ];
    for (int i = 0; i < NREQ; i++) idx[i] = i;
    struct lmc_sched_stats st;
    test_session_reuse(f, dir);

    /* greedy: 64 at once (chunked prefill: 64-token steps) == one by one */
    for (int i = 0; i < NREQ; i++) {
        request_params(&reqs[i], i, false);
        reference(f, f->prompts[i], f->n_prompt[i], &reqs[i], &ref[i]);
    }
    struct lmc_sched *s = open_sched(f, 0, 16, 64, true);
    if (!s) goto out;
    run_all(f, s, idx, NREQ, reqs, got);
    int n_same = 0;
    for (int i = 0; i < NREQ; i++) n_same += same(&got[i], &ref[i]) && got[i].prompt_tokens == f->n_prompt[i] &&
                                             got[i].completion_tokens == ref[i].n;
    CHECK_MSG(n_same == NREQ, "%s greedy: %d of %d identical", dir, n_same, NREQ);
    wait_idle(s, &st);
    CHECK(st.kv_blocks_used == 0 && st.running == 0 && st.requests_total == NREQ);

    /* seeded sampling: the same tokens alone and among 63 others */
    for (int i = 0; i < NREQ; i++) request_params(&reqs[i], i, true);
    run_all(f, s, idx, NREQ, reqs, got);
    int n_alone = full ? 6 : 2;
    n_same = 0;
    for (int k = 0; k < n_alone; k++) {
        int i = k * 11;
        run_all(f, s, &i, 1, &reqs[i], &alone[i]);
        n_same += same(&alone[i], &got[i]);
        reference(f, f->prompts[i], f->n_prompt[i], &reqs[i], &ref[i]);
        n_same += same(&ref[i], &got[i]);
    }
    CHECK_MSG(n_same == 2 * n_alone, "%s sampling: %d of %d identical", dir, n_same, 2 * n_alone);
    wait_idle(s, &st);
    CHECK(st.kv_blocks_used == 0);
    lmc_sched_free(s);

    if (full) {
        /* a tiny pool (24 blocks of 4 tokens, no prefix cache): preemption,
         * same outputs */
        for (int i = 0; i < NREQ; i++) {
            request_params(&reqs[i], i, false);
            reference(f, f->prompts[i], f->n_prompt[i], &reqs[i], &ref[i]);
        }
        s = open_sched(f, 24, 4, 40, false);
        if (!s) goto out;
        run_all(f, s, idx, NREQ, reqs, got);
        n_same = 0;
        for (int i = 0; i < NREQ; i++) n_same += same(&got[i], &ref[i]);
        wait_idle(s, &st);
        CHECK_MSG(n_same == NREQ, "%s preemption: %d of %d identical", dir, n_same, NREQ);
        CHECK_MSG(st.preempted_total > 0, "no preemption happened");
        CHECK(st.kv_blocks_used == 0);
        lmc_sched_free(s);

        /* prefix cache: 16 requests with one 37-token prompt (n > 1 as the
         * caller does it: same prompt, own seeds), plus a tiny pool with
         * caching on (hits, evictions and preemption together) */
        /* pool 2: the cache bounded to 3 blocks with no user: after the
         * first request only its 3 leading blocks stay (12 tokens), the
         * rest is evicted, and the bound holds at the end */
        for (int pool = 0; pool < 3; pool++) {
            s = open_sched_opts(f, pool == 1 ? 40 : 0, 4, 64, true, pool == 2 ? 3 : 0, 0);
            if (!s) goto out;
            for (int i = 0; i < 16; i++) {
                f->n_prompt[i] = 37;
                memcpy(f->prompts[i], f->prompts[40], 37 * sizeof(int32_t));
                f->prompts[i][36] = (int32_t)(i % 3); /* last token differs: full blocks still shared */
                request_params(&reqs[i], i, true);
                reference(f, f->prompts[i], f->n_prompt[i], &reqs[i], &ref[i]);
            }
            run_all(f, s, idx, 1, reqs, got); /* the first fills the cache */
            run_all(f, s, idx + 1, 15, reqs + 1, got + 1);
            n_same = 0;
            int64_t cached = 0;
            for (int i = 0; i < 16; i++) {
                n_same += same(&got[i], &ref[i]);
                cached += got[i].cached;
            }
            wait_idle(s, &st);
            CHECK_MSG(n_same == 16, "%s prefix (pool %d): %d of 16 identical", dir, pool, n_same);
            int64_t want = pool == 2 ? 15 * 12 : 15 * 36;
            CHECK_MSG(st.prefix_hits_tokens >= want && cached >= want && got[0].cached == 0,
                      "pool %d: prefix hits %lld of %lld queried, %lld cached", pool,
                      (long long)st.prefix_hits_tokens, (long long)st.prefix_queries_tokens, (long long)cached);
            CHECK(st.kv_blocks_used == 0 && st.prefix_hits_blocks * 4 == st.prefix_hits_tokens);
            if (pool == 2)
                CHECK_MSG(st.prefix_cache_blocks_max == 3 && st.prefix_cache_blocks == 3 && st.prefix_evictions > 0,
                          "bounded cache: %lld of %lld blocks, %lld evictions", (long long)st.prefix_cache_blocks,
                          (long long)st.prefix_cache_blocks_max, (long long)st.prefix_evictions);
            else
                CHECK(st.prefix_cache_blocks > 0 && st.prefix_cache_blocks <= st.prefix_cache_blocks_max);
            lmc_sched_free(s);
        }
    }

    /* stop strings, logprobs, cancelling, bad requests */
    s = open_sched(f, 0, 16, 512, true);
    if (!s) goto out;
    {
        int i = 5;
        request_params(&reqs[0], i, false);
        reqs[0].max_tokens = 40;
        reqs[0].ignore_eos = true;
        reference(f, f->prompts[i], f->n_prompt[i], &reqs[0], &ref[0]);
        char stop[8] = {0};
        size_t full_len = ref[0].text_len;
        CHECK_MSG(full_len > 6, "%s: 40 tokens gave only %zu bytes of text", dir, full_len);
        if (full_len > 6) memcpy(stop, ref[0].text + full_len / 2, 3);
        CHECK(stop[0] != 0);
        reqs[0].stop[0] = stop;
        reqs[0].n_stop = 1;
        reqs[0].top_logprobs = 5;
        reference(f, f->prompts[i], f->n_prompt[i], &reqs[0], &ref[0]);
        run_all(f, s, &i, 1, reqs, got);
        CHECK_MSG(same(&got[0], &ref[0]), "stop string '%s': %.*s vs %.*s", stop,
                  (int)got[0].text_len, got[0].text, (int)ref[0].text_len, ref[0].text);
        CHECK(got[0].logprob_ok);
        CHECK_MSG(got[0].n > 0 && got[0].n_top_events == got[0].n, "%lld tokens, %lld with top logprobs",
                  (long long)got[0].n, (long long)got[0].n_top_events);
        CHECK(finish_is(&got[0], "stop") && finish_is(&ref[0], "stop") && got[0].text_len < full_len);
        /* cancel from the callback after 3 tokens, while 3 others run on */
        int four[4] = {1, 2, 3, 4};
        for (int k = 0; k < 4; k++) {
            request_params(&reqs[k], four[k], false);
            reqs[k].max_tokens = 40;
            reqs[k].ignore_eos = true;
        }
        pthread_mutex_lock(&mu);
        n_done = 0;
        pthread_mutex_unlock(&mu);
        lmc_err err = {0};
        for (int k = 0; k < 4; k++) {
            memset(&got[k], 0, sizeof got[k]);
            got[k].s = s;
            got[k].cancel_after = k == 0 ? 3 : 0;
            CHECK(lmc_sched_submit(s, f->prompts[four[k]], f->n_prompt[four[k]], &reqs[k], on_event,
                                   &got[k], &got[k].id, &err) == LMC_OK);
        }
        wait_done(4);
        CHECK_MSG(finish_is(&got[0], "cancelled") && got[0].n == 3 && got[0].completion_tokens == 3,
                  "cancel: %s after %lld", got[0].finish ? got[0].finish : "(none)", (long long)got[0].n);
        for (int k = 1; k < 4; k++)
            CHECK_MSG(got[k].n == 40 && finish_is(&got[k], "length"), "request beside the cancelled one: %s after %lld",
                      got[k].finish ? got[k].finish : "(none)", (long long)got[k].n);
        for (int k = 0; k < 4; k++) CHECK(got[k].n_events_after_done == 0);
        wait_idle(s, &st);
        CHECK(st.kv_blocks_used == 0 && st.running == 0);
        /* the waste metric's numerator counts each block once: four equal
         * prompts share their prefix blocks, so tokens stored never exceed
         * used blocks x block size */
        pthread_mutex_lock(&mu);
        n_done = 0;
        pthread_mutex_unlock(&mu);
        for (int k = 0; k < 4; k++) {
            request_params(&reqs[k], 1, false);
            reqs[k].max_tokens = 30;
            reqs[k].ignore_eos = true;
            memset(&got[k], 0, sizeof got[k]);
            got[k].s = s;
            got[k].watch_kv = true;
            CHECK(lmc_sched_submit(s, f->prompts[1], f->n_prompt[1], &reqs[k], on_event, &got[k],
                                   &got[k].id, &err) == LMC_OK);
        }
        wait_done(4);
        int64_t worst = 0, seen_stored = 0;
        for (int k = 0; k < 4; k++) {
            worst = LMC_MAX(worst, got[k].kv_over);
            seen_stored = LMC_MAX(seen_stored, got[k].kv_seen);
        }
        CHECK_MSG(worst <= 0, "kv tokens stored exceed used blocks x 16 by %lld", (long long)worst);
        CHECK(seen_stored > 0);
        wait_idle(s, &st);
        CHECK(st.kv_blocks_used == 0 && st.kv_tokens_stored == 0);
        /* cancelling a finished id or an unknown one changes nothing: no
         * late event for the finished one, and a request submitted right
         * after runs to its full length */
        lmc_sched_cancel(s, got[1].id);
        lmc_sched_cancel(s, got[1].id + 1000000);
        {
            int i1 = 1;
            struct result late;
            request_params(&reqs[0], 1, false);
            reqs[0].max_tokens = 20;
            reqs[0].ignore_eos = true;
            run_all(f, s, &i1, 1, reqs, &late);
            CHECK_MSG(finish_is(&late, "length") && late.n == 20, "after stale cancels: %s after %lld",
                      late.finish ? late.finish : "(none)", (long long)late.n);
            for (int k = 0; k < 4; k++) CHECK(got[k].n_events_after_done == 0);
            wait_idle(s, &st);
            CHECK(st.finished_total == st.requests_total);
        }
        /* bad requests: clear errors */
        struct lmc_request r;
        request_params(&r, 0, false);
        uint64_t id;
        int32_t bad = (int32_t)f->m.cfg.vocab_size;
        CHECK(lmc_sched_submit(s, &bad, 1, &r, on_event, &got[0], &id, &err) == LMC_ERR_ARG);
        CHECK(strstr(err.msg, "vocabulary") != NULL);
        CHECK(lmc_sched_submit(s, f->prompts[0], 0, &r, on_event, &got[0], &id, &err) == LMC_ERR_ARG);
        r.max_tokens = 200;
        CHECK(lmc_sched_submit(s, f->prompts[0], 1, &r, on_event, &got[0], &id, &err) == LMC_ERR_ARG);
        CHECK(strstr(err.msg, "context") != NULL);
        r.max_tokens = 4;
        r.sampling.temperature = -1;
        CHECK(lmc_sched_submit(s, f->prompts[0], 1, &r, on_event, &got[0], &id, &err) == LMC_ERR_ARG);
    }
    lmc_sched_free(s);

    /* shutting down with requests in flight: a batch of 2, so requests 0
     * and 1 run and 2 and 3 wait; the scheduler thread is held inside the
     * callback of 0 or 1 (the first to reach a 2nd token once both have
     * one: their first steps may differ) while the test checks that
     * (0 and 1 have streamed tokens, none is done, 2 and 3 have nothing)
     * and begins the shutdown; released, the thread ends its step and
     * then every request: each of the 4 gets exactly one final event,
     * ERROR "shutting down", after the tokens it had */
    s = open_sched_opts(f, 0, 16, 512, true, 0, 2);
    if (!s) goto out;
    {
        struct lmc_request r;
        request_params(&r, 0, false);
        r.ignore_eos = true;
        pthread_mutex_lock(&mu);
        n_done = 0;
        at_gate = gate_open = false;
        gate_pair[0] = &got[0];
        gate_pair[1] = &got[1];
        pthread_mutex_unlock(&mu);
        lmc_err err = {0};
        for (int k = 0; k < 4; k++) {
            memset(&got[k], 0, sizeof got[k]);
            got[k].gate = k < 2;
            r.max_tokens = 128 - f->n_prompt[k];
            CHECK(lmc_sched_submit(s, f->prompts[k], f->n_prompt[k], &r, on_event, &got[k], &got[k].id, &err) ==
                  LMC_OK);
        }
        pthread_mutex_lock(&mu);
        while (!at_gate) pthread_cond_wait(&cv, &mu);
        int running = 0, waiting = 0;
        for (int k = 0; k < 4; k++) {
            running += k < 2 && got[k].n_all > 0 && !got[k].done;
            waiting += k >= 2 && got[k].n_all == 0 && !got[k].done;
        }
        int64_t before[4];
        for (int k = 0; k < 4; k++) before[k] = got[k].n_all;
        pthread_mutex_unlock(&mu);
        /* the gate holds the first of 0 and 1 to stream a 2nd token; the
         * other may not have its first yet when a step ran only one of them */
        CHECK_MSG(running >= 1 && waiting == 2, "before shutdown: %d running with tokens, %d waiting", running,
                  waiting);
        lmc_sched_stop(s);
        pthread_mutex_lock(&mu);
        gate_open = true;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        lmc_sched_free(s);
        CHECK(n_done == 4);
        for (int k = 0; k < 4; k++) {
            /* the step the thread was in may give the other of 0 and 1 one more token */
            bool tokens_ok = k < 2 ? got[k].n_all >= before[k] && got[k].n_all <= before[k] + 1 &&
                                         got[k].n_all < 128 - f->n_prompt[k]
                                   : got[k].n_all == 0;
            CHECK_MSG(got[k].done && finish_is(&got[k], "error") && !strcmp(got[k].error, "shutting down") &&
                          tokens_ok && got[k].n_events_after_done == 0,
                      "request %d after shutdown: %s (%s) after %lld tokens (%lld before), %d late events", k,
                      got[k].finish ? got[k].finish : "(none)", got[k].error, (long long)got[k].n_all,
                      (long long)before[k], got[k].n_events_after_done);
        }
    }
    if (lmc_model_seq_slot_bytes(&f->m) > 0) test_state_prefix(f, dir);
out:
    fixture_close(f);
    free(f);
}

/* The streaming detokenizer (moving window) releases exactly the text of
 * decoding all generated ids at once after the same context, sanitised,
 * and cuts at the first stop string. Random ids: partial and invalid UTF-8,
 * special tokens. */
static void test_detok(const char *dir) {
    struct lmc_tokenizer *tok;
    lmc_err err = {0};
    if (lmc_tokenizer_load(&tok, dir, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    int64_t V = lmc_tokenizer_vocab_size(tok);
    uint64_t seed = 5;
    int n_ok = 0, n_stop_ok = 0;
    enum { N = 120, CTX = 3 };
    for (int trial = 0; trial < 20; trial++) {
        int32_t ids[CTX + N];
        for (int i = 0; i < CTX + N; i++) {
            /* mostly low ids (bytes, short pieces), some anywhere */
            uint64_t r = test_rng_next(&seed);
            ids[i] = (int32_t)(r % 4 ? (r >> 8) % (uint64_t)LMC_MIN(V, 300) : (r >> 8) % (uint64_t)V);
        }
        char *pre, *full;
        size_t lp, lf;
        CHECK(lmc_tokenizer_decode(tok, ids, CTX, &pre, &lp, &err) == LMC_OK);
        CHECK(lmc_tokenizer_decode(tok, ids, CTX + N, &full, &lf, &err) == LMC_OK);
        char *want = malloc(3 * lf + 1), *got = malloc(3 * lf + 64);
        size_t wl = lf >= lp && !memcmp(full, pre, lp) ? lmc_utf8_sanitize(full + lp, lf - lp, true, want, NULL) : 0;
        for (int with_stop = 0; with_stop < 2; with_stop++) {
            char stop[4] = {0};
            if (with_stop && wl > 20) memcpy(stop, want + wl / 2, 2);
            const char *stops[1] = {stop};
            struct lmc_detok d;
            CHECK(lmc_detok_init(&d, tok, ids, CTX, stops, stop[0] ? 1 : 0, &err) == LMC_OK);
            size_t gl = 0;
            const char *p;
            size_t n;
            bool stopped = false;
            for (int i = 0; i < N && !stopped; i++) {
                CHECK(lmc_detok_push(&d, ids[CTX + i], &p, &n, &stopped, &err) == LMC_OK);
                memcpy(got + gl, p, n);
                gl += n;
            }
            if (!stopped) {
                lmc_detok_finish(&d, &p, &n, &stopped);
                memcpy(got + gl, p, n);
                gl += n;
            }
            lmc_detok_free(&d);
            if (!with_stop) {
                n_ok += gl == wl && !memcmp(got, want, wl);
            } else {
                const char *at = stop[0] ? memmem(want, wl, stop, strlen(stop)) : NULL;
                size_t cut = at ? (size_t)(at - want) : wl;
                n_stop_ok += gl == cut && !memcmp(got, want, cut) && stopped == (at != NULL);
            }
        }
        free(pre);
        free(full);
        free(want);
        free(got);
    }
    CHECK_MSG(n_ok == 20, "%s: detok %d of 20 as one decode", dir, n_ok);
    CHECK_MSG(n_stop_ok == 20, "%s: detok with a stop string %d of 20", dir, n_stop_ok);
    lmc_tokenizer_free(tok);
}

int main(void) {
    double t0 = lmc_time_now();
    test_detok("tests/fixtures/llama-tiny");
    test_detok("tests/fixtures/qwen2-tiny");
    test_detok("tests/fixtures/gpt2-tiny");
    test_fixture("tests/fixtures/llama-tiny", true);
    test_fixture("tests/fixtures/qwen2-tiny", false);
    test_fixture("tests/fixtures/gpt2-tiny", false);
    test_fixture("tests/fixtures/mixtral-tiny", false);   /* mixture of experts: each row routed */
    test_fixture("tests/fixtures/qwen3moe-tiny", false);
    test_fixture("tests/fixtures/qwen2moe-tiny", false);  /* shared expert, a dense layer among sparse ones */
    test_fixture("tests/fixtures/olmoe-tiny", false);
    test_fixture("tests/fixtures/olmoe-clip-tiny", false); /* clip_qkv in the paged batch */
    /* Mamba / Mamba-2: a recurrent-state slot per request instead of KV blocks */
    test_fixture("tests/fixtures/mamba-tiny", false);
    test_fixture("tests/fixtures/mamba2-tiny", false);
    printf("test_scheduler: %.1f s\n", lmc_time_now() - t0);
    return test_finish("test_scheduler");
}
