/* test_sched_spec.c — speculative decoding inside continuous batching
 * (prompt lookup, issue 17) and the compressed paged pool under the
 * scheduler:
 *  - 64 concurrent greedy requests (repetitive and random prompts) give
 *    exactly the tokens, text and finish reasons of the same requests
 *    without speculation, on llama-tiny and on the default model
 *    (kjv-llama, KJV verses); drafts were proposed, some accepted and some
 *    rejected; every block comes back;
 *  - the same with a pool so small that sequences are preempted, with a q8
 *    pool (against q8 without speculation), and with a repetition penalty
 *    (verification from the logits rows instead of the backend's argmax);
 *    with a KIVI-2 pool (blocks of 32, residual 32; against KIVI-2 without
 *    speculation: exact, since a sequence's output does not depend on its
 *    batches), also preempted in a 12-block pool and with a draft model;
 *  - seeded sampled requests with speculation give the same tokens alone
 *    as among 63 others; a rejection storm (temperature 1.5) frees every
 *    block;
 *  - distribution: tokens 2, 3 and 4 (the first speculative round: up to
 *    two drafts and the corrected or bonus token) of 2,000 sampled
 *    requests with speculation against 2,000 without (other seeds),
 *    llama-tiny on a prompt ending in its own greedy loop, temperature
 *    0.02 (its logits are small), top-k 40, presence penalty 0.005:
 *    two-sample chi-square p > 0.001 each, with drafts both accepted and
 *    rejected;
 *  - a draft model (batched draft forwards): llama-tiny's weights in bf16
 *    drafting for llama-tiny, greedy identity as above (also with
 *    preemption); with it and with gpt2-tiny (mostly rejected) drafting
 *    for llama-tiny, the same two-sample test at temperature 1 with a
 *    presence penalty (drafts from a non-one-hot q: the min(1, p/q) rule,
 *    and the residual draw); llama-tiny as its own draft, sampled at T 1:
 *    at least 99% of the drafts kept (q = p: checks the q rows' wiring,
 *    which the two-sample tests on flat distributions cannot);
 *  - adaptive K (the cost model per sequence, batch-aware for greedy
 *    requests): the greedy cases above on llama-tiny (also preempted and
 *    with a repetition penalty), with the bf16 draft and on kjv-llama
 *    give the plain tokens, with plain steps (K = 0) among the choices in
 *    a batch of 64; alone (batch 1, draft cost 0.05) llama-tiny as its own
 *    draft keeps > 95% of drafts and chooses K = spec_k (3) on > 80% of
 *    decode steps, gpt2-tiny keeps < 30% and runs plain steps on > 50%
 *    (with probes), never K > spec_k; outputs equal plain greedy's;
 *    seeded sampled requests give the same tokens alone as in the batch
 *    with adaptive K too (priced as if alone), and the rejection storm;
 *  - bad options refused (the cost model's too);
 *  - the server's default verification slope is lmc generate's
 *    (lmc_spec_default_slope: one constant per build).
 * LMC_TEST_QUICK=1 (CI's sanitizer stage; test.h) drops the two kjv-llama
 * greedy cases (fixed and adaptive K; llama-tiny runs the same paths above);
 * the release stage runs them. */
#include "test.h"
#include "test_chi2.h"
#include "core/core.h"
#include "infer/kvq.h"
#include "infer/scheduler.h"
#include "infer/scheduler_int.h"
#include "infer/spec.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAXGEN 48
#define NREQ 64
#define NDIST 2000

struct result {
    int32_t ids[MAXGEN];
    int64_t n;
    char text[16 * MAXGEN];
    size_t text_len;
    char finish[16];
    bool done;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int n_done;

static void on_event(void *user, const struct lmc_sched_event *ev) {
    struct result *r = user;
    pthread_mutex_lock(&mu);
    if (ev->kind == LMC_EV_TOKEN && r->n < MAXGEN) r->ids[r->n++] = ev->token;
    if (ev->text_len && r->text_len + ev->text_len < sizeof r->text) {
        memcpy(r->text + r->text_len, ev->text, ev->text_len);
        r->text_len += ev->text_len;
    }
    if (ev->kind != LMC_EV_TOKEN) {
        snprintf(r->finish, sizeof r->finish, "%s", ev->kind == LMC_EV_DONE ? ev->finish_reason : "error");
        r->done = true;
        n_done++;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
}

struct prompts {
    int32_t ids[NREQ][152];
    int64_t n[NREQ];
};

/* Submits n requests together (prompt i % NREQ, params reqs[i]) and waits
 * for every last event, then for the scheduler's idle state. */
static void run_all(struct lmc_sched *s, const struct prompts *p, int n, const struct lmc_request *reqs,
                    struct result *res, struct lmc_sched_stats *st) {
    pthread_mutex_lock(&mu);
    n_done = 0;
    pthread_mutex_unlock(&mu);
    lmc_err err = {0};
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof res[i]);
        CHECK_MSG(lmc_sched_submit(s, p->ids[i % NREQ], p->n[i % NREQ], &reqs[i], on_event, &res[i], NULL, &err) ==
                      LMC_OK, "%s", err.msg);
    }
    pthread_mutex_lock(&mu);
    while (n_done < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    CHECK_MSG(lmc_sched_wait_idle(s, 60, st), "not idle: %lld blocks in use", (long long)st->kv_blocks_used);
    CHECK(st->kv_blocks_used == 0 && st->running == 0);
}

/* the draft model of the next schedulers opened with spec (NULL: prompt
 * lookup); K fixed at spec_k (else adaptive); the cost model's draft cost
 * (0: the default) */
static const struct lmc_model *g_draft;
static bool g_fixed = true;
static double g_draft_cost;

static struct lmc_sched *open_sched(const struct lmc_model *m, const struct lmc_backend *be,
                                    const struct lmc_tokenizer *tok, bool spec, int64_t kv_blocks) {
    struct lmc_sched_opts o;
    lmc_sched_opts_default(&o);
    o.ctx = 160;
    o.kv_blocks = kv_blocks;
    if (be->attention_paged_ring) o.block_size = 32; /* KIVI-2: a key group per block */
    if (spec) {
        o.spec = g_draft ? LMC_SCHED_SPEC_DRAFT : LMC_SCHED_SPEC_LOOKUP;
        o.draft = g_draft;
        o.spec_k = g_draft ? 3 : 5;
        o.spec_max_batch = 0; /* always, whatever the batch */
        o.spec_fixed_k = g_fixed;
        o.spec_draft_cost = g_draft_cost;
    }
    struct lmc_sched *s = NULL;
    lmc_err err = {0};
    CHECK_MSG(lmc_sched_init(&s, m, be, tok, &o, &err) == LMC_OK, "%s", err.msg);
    return s;
}

/* Adaptive K's default verification slope: the server's is lmc generate's
 * (lmc_spec_default_slope: 0.02 with AVX-512, 0.065 on AVX2 builds), one
 * constant for both. */
static void default_slope_case(const struct lmc_model *m, const struct lmc_backend *be,
                               const struct lmc_tokenizer *tok) {
    struct lmc_sched *s = open_sched(m, be, tok, true, 0);
    if (!s) return;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    CHECK(lmc_spec_default_slope() == 0.02);
#else
    CHECK(lmc_spec_default_slope() == 0.065);
#endif
    CHECK_MSG(s->spec_cost.slope == lmc_spec_default_slope(), "server slope %g, lmc generate's %g",
              s->spec_cost.slope, lmc_spec_default_slope());
    lmc_sched_free(s);
}

static void greedy_params(struct lmc_request *r, int i, double penalty) {
    memset(r, 0, sizeof *r);
    lmc_sampler_defaults(&r->sampling);
    r->sampling.temperature = 0;
    r->sampling.repeat_penalty = penalty;
    r->max_tokens = 12 + (i * 7) % (MAXGEN - 12);
    r->top_logprobs = -1;
}

static bool same(const struct result *a, const struct result *b) {
    return a->n == b->n && !memcmp(a->ids, b->ids, (size_t)a->n * sizeof *a->ids) && a->text_len == b->text_len &&
           !memcmp(a->text, b->text, a->text_len) && !strcmp(a->finish, b->finish);
}

/* Greedy requests with and without speculation: the same outputs. */
static void greedy_case(const char *name, const struct lmc_model *m, const struct lmc_backend *be,
                        const struct lmc_tokenizer *tok, const struct prompts *p, int64_t kv_blocks,
                        double penalty, bool expect_preempt) {
    static struct lmc_request reqs[NREQ];
    static struct result plain[NREQ], spec[NREQ];
    for (int i = 0; i < NREQ; i++) greedy_params(&reqs[i], i, penalty);
    struct lmc_sched_stats st0, st1;
    struct lmc_sched *s = open_sched(m, be, tok, false, kv_blocks);
    if (!s) return;
    run_all(s, p, NREQ, reqs, plain, &st0);
    lmc_sched_free(s);
    s = open_sched(m, be, tok, true, kv_blocks);
    if (!s) return;
    run_all(s, p, NREQ, reqs, spec, &st1);
    lmc_sched_free(s);
    int differ = 0;
    for (int i = 0; i < NREQ; i++) differ += !same(&plain[i], &spec[i]);
    CHECK_MSG(differ == 0, "%s: %d of %d greedy requests differ with speculation", name, differ, NREQ);
    /* fixed K: drafts every step, some kept, some rolled back; adaptive K
     * (64 greedy requests: a compute-bound batch, plain steps and probes) */
    CHECK_MSG(st1.spec_proposed_total > 0 &&
                  (!g_fixed || (st1.spec_accepted_total > 0 && st1.spec_accepted_total < st1.spec_proposed_total)),
              "%s: proposed %lld accepted %lld", name, (long long)st1.spec_proposed_total,
              (long long)st1.spec_accepted_total);
    if (!g_fixed) { /* every speculating decode step chose a K, and plain ones were among them */
        int64_t ksum = 0;
        for (int k = 0; k <= LMC_SCHED_SPEC_KMAX; k++) ksum += st1.spec_k_steps[k];
        CHECK_MSG(ksum > 0 && st1.spec_k_steps[0] > 0, "%s: K histogram: %lld steps, %lld plain", name,
                  (long long)ksum, (long long)st1.spec_k_steps[0]);
    }
    CHECK(st0.spec_proposed_total == 0 && st1.generated_tokens_total == st0.generated_tokens_total);
    if (expect_preempt) CHECK_MSG(st1.preempted_total > 0, "%s: no preemption", name);
    printf("%s%s: %d greedy requests equal; %lld steps without, %lld with speculation; drafts %lld, accepted %lld "
           "(%.0f%%), preempted %lld; K chosen 0/1/2/3/4/5: %lld/%lld/%lld/%lld/%lld/%lld\n", name,
           g_fixed ? "" : ", adaptive K", NREQ, (long long)st0.steps, (long long)st1.steps,
           (long long)st1.spec_proposed_total, (long long)st1.spec_accepted_total,
           100.0 * (double)st1.spec_accepted_total / (double)LMC_MAX(1, st1.spec_proposed_total),
           (long long)st1.preempted_total, (long long)st1.spec_k_steps[0], (long long)st1.spec_k_steps[1],
           (long long)st1.spec_k_steps[2], (long long)st1.spec_k_steps[3], (long long)st1.spec_k_steps[4],
           (long long)st1.spec_k_steps[5]);
}

/* Adaptive K follows acceptance: greedy requests one at a time (batch 1),
 * draft cost 0.05 for both drafts; the target as its own draft (every
 * draft kept) chooses spec_k (3) on most steps, gpt2-tiny (an unrelated
 * model: drafts rejected) plain steps (K = 0) on most; outputs equal the
 * plain ones either way. */
static void k_follow_case(const char *name, const struct lmc_model *m, const struct lmc_backend *be,
                          const struct lmc_tokenizer *tok, const struct lmc_model *draft, const struct prompts *p,
                          bool expect_high) {
    enum { N = 8 };
    static struct lmc_request reqs[N];
    static struct result plain[N], spec[N];
    for (int i = 0; i < N; i++) {
        greedy_params(&reqs[i], i, 1.0);
        reqs[i].max_tokens = MAXGEN;
        reqs[i].ignore_eos = true;
    }
    struct lmc_sched_stats st;
    struct lmc_sched *s = open_sched(m, be, tok, false, 0);
    if (!s) return;
    for (int i = 0; i < N; i++) {
        struct prompts one;
        memcpy(one.ids[0], p->ids[i], sizeof one.ids[0]);
        one.n[0] = p->n[i];
        run_all(s, &one, 1, &reqs[i], &plain[i], &st);
    }
    lmc_sched_free(s);
    g_draft = draft, g_fixed = false, g_draft_cost = 0.05;
    s = open_sched(m, be, tok, true, 0);
    g_draft = NULL, g_fixed = true, g_draft_cost = 0;
    if (!s) return;
    int differ = 0;
    for (int i = 0; i < N; i++) { /* alone: batch 1 */
        struct prompts one;
        memcpy(one.ids[0], p->ids[i], sizeof one.ids[0]);
        one.n[0] = p->n[i];
        run_all(s, &one, 1, &reqs[i], &spec[i], &st);
        differ += !same(&plain[i], &spec[i]);
    }
    lmc_sched_free(s);
    CHECK_MSG(differ == 0, "%s: %d of %d greedy requests differ with adaptive K", name, differ, N);
    int64_t total = 0;
    for (int k = 0; k <= LMC_SCHED_SPEC_KMAX; k++) total += st.spec_k_steps[k];
    for (int k = 4; k <= LMC_SCHED_SPEC_KMAX; k++) CHECK(st.spec_k_steps[k] == 0); /* at most spec_k */
    double acc = (double)st.spec_accepted_total / (double)LMC_MAX(1, st.spec_proposed_total);
    if (expect_high)
        CHECK_MSG(acc > 0.95 && st.spec_k_steps[3] * 10 > total * 8,
                  "%s: acceptance %.2f, K 3 on %lld of %lld steps", name, acc, (long long)st.spec_k_steps[3],
                  (long long)total);
    else
        CHECK_MSG(acc < 0.3 && st.spec_k_steps[0] * 2 > total && st.spec_proposed_total > 0,
                  "%s: acceptance %.2f, K 0 on %lld of %lld steps", name, acc, (long long)st.spec_k_steps[0],
                  (long long)total);
    printf("%s, adaptive K, alone: %d greedy requests equal; acceptance %lld/%lld (%.0f%%); K chosen 0/1/2/3: "
           "%lld/%lld/%lld/%lld of %lld decode steps\n", name, N, (long long)st.spec_accepted_total,
           (long long)st.spec_proposed_total, 100 * acc, (long long)st.spec_k_steps[0], (long long)st.spec_k_steps[1],
           (long long)st.spec_k_steps[2], (long long)st.spec_k_steps[3], (long long)total);
}

static void sampled_cases(const struct lmc_model *m, const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                          const struct prompts *p) {
    static struct lmc_request reqs[NREQ];
    static struct result all[NREQ], one;
    for (int i = 0; i < NREQ; i++) {
        greedy_params(&reqs[i], i, 1.0);
        reqs[i].sampling.temperature = 0.9;
        reqs[i].sampling.top_p = 0.95;
        reqs[i].sampling.frequency_penalty = i % 2 ? 0.5 : 0;
        reqs[i].sampling.seed = 77 + (uint64_t)i;
    }
    struct lmc_sched *s = open_sched(m, be, tok, true, 0);
    if (!s) return;
    struct lmc_sched_stats st;
    run_all(s, p, NREQ, reqs, all, &st);
    int differ = 0;
    for (int i = 0; i < 8; i++) { /* alone: the same tokens */
        struct prompts one_p;
        memcpy(one_p.ids[0], p->ids[i], sizeof one_p.ids[0]);
        one_p.n[0] = p->n[i];
        run_all(s, &one_p, 1, &reqs[i], &one, &st);
        differ += !same(&one, &all[i]);
    }
    CHECK_MSG(differ == 0, "sampled with speculation: %d of 8 differ alone vs in the batch", differ);
    lmc_sched_free(s);
    /* a rejection storm: hot sampling rejects most drafts */
    for (int i = 0; i < NREQ; i++) reqs[i].sampling.temperature = 1.5, reqs[i].sampling.top_p = 1;
    s = open_sched(m, be, tok, true, 0);
    if (!s) return;
    run_all(s, p, NREQ, reqs, all, &st);
    CHECK(st.spec_proposed_total > 2 * st.spec_accepted_total);
    printf("rejection storm: drafts %lld, accepted %lld, blocks in use after %lld\n",
           (long long)st.spec_proposed_total, (long long)st.spec_accepted_total, (long long)st.kv_blocks_used);
    lmc_sched_free(s);
}

/* two-sample chi-square p of token t's counts, cells of < 10 pooled */
static double two_sample_p(const int64_t *a, const int64_t *b, int64_t V) {
    double stat = 0, pa = 0, pb = 0; /* equal sample sizes */
    int64_t cells = 0;
    for (int64_t v = 0; v <= V; v++) {
        double x = v < V ? (double)a[v] : pa, y = v < V ? (double)b[v] : pb;
        if (v < V && x + y < 10) {
            pa += x, pb += y;
            continue;
        }
        if (x + y == 0) continue;
        stat += (x - y) * (x - y) / (x + y);
        cells++;
    }
    return cells > 1 ? gamma_q((double)(cells - 1) / 2, stat / 2) : 1.0;
}

static void distribution_case(const char *name, const struct lmc_model *m, const struct lmc_backend *be,
                              const struct lmc_tokenizer *tok, double temp, double presence) {
    int64_t V = m->cfg.vocab_size;
    static struct prompts p;
    static struct lmc_request reqs[NDIST];
    static struct result res[2][NDIST];
    /* a prompt that predicts much of what follows: 6 ids and the model's
     * own greedy continuation of them (a tiny model's greedy text loops) */
    struct prompts seed_p;
    struct lmc_request g;
    struct result gr;
    struct lmc_sched_stats gst;
    greedy_params(&g, 0, 1.0);
    g.max_tokens = 40;
    g.ignore_eos = true;
    seed_p.n[0] = 6;
    for (int j = 0; j < 6; j++) seed_p.ids[0][j] = (int32_t)(5 + 37 * j) % (int32_t)V;
    struct lmc_sched *gs = open_sched(m, be, tok, false, 0);
    if (!gs) return;
    run_all(gs, &seed_p, 1, &g, &gr, &gst);
    lmc_sched_free(gs);
    for (int i = 0; i < NREQ; i++) {
        p.n[i] = 6 + gr.n;
        memcpy(p.ids[i], seed_p.ids[0], 6 * sizeof(int32_t));
        memcpy(p.ids[i] + 6, gr.ids, (size_t)gr.n * sizeof(int32_t));
    }
    for (int i = 0; i < NDIST; i++) {
        greedy_params(&reqs[i], i, 1.0);
        reqs[i].max_tokens = 4;
        reqs[i].ignore_eos = true;
        reqs[i].sampling.temperature = temp;
        reqs[i].sampling.top_k = 40;
        reqs[i].sampling.presence_penalty = presence;
    }
    int64_t *cnt = calloc((size_t)(6 * V), sizeof *cnt);
    struct lmc_sched_stats st[2];
    for (int sp = 0; sp < 2; sp++) {
        for (int i = 0; i < NDIST; i++) reqs[i].sampling.seed = 1 + (uint64_t)(i + sp * NDIST); /* independent */
        struct lmc_sched *s = open_sched(m, be, tok, sp == 1, 0);
        if (!s) break;
        run_all(s, &p, NDIST, reqs, res[sp], &st[sp]);
        lmc_sched_free(s);
        for (int i = 0; i < NDIST; i++)
            for (int t = 1; t < 4; t++)
                if (res[sp][i].n == 4) cnt[(3 * sp + t - 1) * V + res[sp][i].ids[t]]++;
    }
    double pv[3];
    for (int t = 0; t < 3; t++) {
        pv[t] = two_sample_p(cnt + t * V, cnt + (3 + t) * V, V);
        CHECK_MSG(pv[t] > 0.001, "%s: speculative vs plain sampling: token %d p %.3g", name, t + 2, pv[t]);
    }
    CHECK(st[1].spec_proposed_total >= NDIST / 2 && st[1].spec_accepted_total > st[1].spec_proposed_total / 20 &&
          st[1].spec_accepted_total < st[1].spec_proposed_total);
    printf("distribution (%s, T %g, top-k 40, presence %g, %d runs each): two-sample chi-square p of "
           "tokens 2, 3, 4: %.3f %.3f %.3f; drafts %lld, accepted %lld\n", name, temp, presence, NDIST, pv[0], pv[1], pv[2],
           (long long)st[1].spec_proposed_total, (long long)st[1].spec_accepted_total);
    free(cnt);
}

/* The target as its own draft, sampled: q equals p up to rounding, so
 * min(1, p/q) keeps (nearly) every draft; a q row of another position or
 * sequence, or none, would reject most of them. */
static void self_draft_case(const struct lmc_model *m, const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                            const struct prompts *p) {
    static struct lmc_request reqs[NREQ];
    static struct result res[NREQ];
    for (int i = 0; i < NREQ; i++) {
        greedy_params(&reqs[i], i, 1.0);
        reqs[i].sampling.temperature = 1.0;
        reqs[i].sampling.top_k = 40;
        reqs[i].sampling.presence_penalty = 0.3;
        reqs[i].sampling.seed = 500 + (uint64_t)i;
    }
    g_draft = m;
    struct lmc_sched *s = open_sched(m, be, tok, true, 0);
    g_draft = NULL;
    if (!s) return;
    struct lmc_sched_stats st;
    run_all(s, p, NREQ, reqs, res, &st);
    lmc_sched_free(s);
    CHECK_MSG(st.spec_proposed_total > 500 && st.spec_accepted_total >= st.spec_proposed_total * 99 / 100,
              "the target as its own draft, T 1: %lld of %lld drafts accepted", (long long)st.spec_accepted_total,
              (long long)st.spec_proposed_total);
    printf("the target as its own draft, sampled at T 1: %lld of %lld drafts accepted\n",
           (long long)st.spec_accepted_total, (long long)st.spec_proposed_total);
}

static void bad_options(const struct lmc_model *m, const struct lmc_backend *be) {
    struct lmc_sched_opts o;
    lmc_err err = {0};
    struct lmc_sched *s = NULL;
    lmc_sched_opts_default(&o);
    o.spec = LMC_SCHED_SPEC_LOOKUP;
    o.spec_k = 17;
    CHECK(lmc_sched_init(&s, m, be, NULL, &o, &err) == LMC_ERR_ARG && strstr(err.msg, "spec_k") && !s);
    o.spec_k = 4;
    o.spec_verify_row = -1; /* the cost model */
    CHECK(lmc_sched_init(&s, m, be, NULL, &o, &err) == LMC_ERR_ARG && strstr(err.msg, "cost model") && !s);
    o.spec_verify_row = NAN;
    CHECK(lmc_sched_init(&s, m, be, NULL, &o, &err) == LMC_ERR_ARG && !s);
    o.spec_verify_row = 0;
    o.spec = 9;
    CHECK(lmc_sched_init(&s, m, be, NULL, &o, &err) == LMC_ERR_ARG && !s);
}

/* repetitive prompts (a motif repeated) and random ones */
static void make_prompts(struct prompts *p, int64_t V, uint64_t seed) {
    for (int i = 0; i < NREQ; i++) {
        int64_t motif = 2 + (int64_t)(test_rng_next(&seed) % 6), n = 8 + (int64_t)(test_rng_next(&seed) % 40);
        int32_t mo[8];
        for (int64_t j = 0; j < motif; j++) mo[j] = (int32_t)(test_rng_next(&seed) % (uint64_t)V);
        for (int64_t j = 0; j < n; j++)
            p->ids[i][j] = i % 2 ? mo[j % motif] : (int32_t)(test_rng_next(&seed) % (uint64_t)V);
        p->n[i] = n;
    }
}

/* KJV verses through the default model's tokenizer */
static bool kjv_prompts(struct prompts *p, const struct lmc_tokenizer *tok) {
    FILE *f = fopen("data/kjv.txt", "rb");
    if (!f) return false;
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *line = buf;
    int i = 0;
    lmc_err err = {0};
    while (i < NREQ && line && *line) {
        char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        if (ll > 40) {
            int32_t *ids = NULL;
            int64_t n = 0;
            if (lmc_tokenizer_encode(tok, line, ll, true, &ids, &n, &err)) return false;
            p->n[i] = LMC_MIN(n, 96);
            memcpy(p->ids[i], ids, (size_t)p->n[i] * sizeof *ids);
            free(ids);
            i++;
        }
        line = nl ? nl + 1 : NULL;
    }
    return i == NREQ;
}

int main(void) {
    lmc_err err = {0};
    struct lmc_model m, kjv;
    struct lmc_tokenizer *tok = NULL, *ktok = NULL;
    struct lmc_backend cpu, q8;
    if (lmc_model_load(&m, "tests/fixtures/llama-tiny", NULL, &err) ||
        lmc_tokenizer_load(&tok, "tests/fixtures/llama-tiny", &err) || lmc_backend_cpu_init(&cpu, 2, &err) ||
        lmc_kvq_paged_backend(&q8, &cpu, LMC_KVQ_Q8, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_sched_spec");
    }
    static struct prompts p;
    make_prompts(&p, m.cfg.vocab_size, 4242);
    default_slope_case(&m, &cpu, tok);
    greedy_case("llama-tiny", &m, &cpu, tok, &p, 0, 1.0, false);
    greedy_case("llama-tiny, 40-block pool", &m, &cpu, tok, &p, 40, 1.0, true);
    greedy_case("llama-tiny, q8 pool", &m, &q8, tok, &p, 0, 1.0, false);
    struct lmc_backend kivi;
    CHECK(lmc_kvq_paged_backend(&kivi, &cpu, LMC_KVQ_KIVI2, &err) == LMC_OK);
    greedy_case("llama-tiny, kivi2 pool", &m, &kivi, tok, &p, 0, 1.0, false);
    greedy_case("llama-tiny, kivi2 pool of 12 blocks", &m, &kivi, tok, &p, 12, 1.0, true);
    greedy_case("llama-tiny, repetition penalty 1.2", &m, &cpu, tok, &p, 0, 1.2, false);
    g_fixed = false; /* adaptive K: batch-aware for greedy requests */
    greedy_case("llama-tiny", &m, &cpu, tok, &p, 0, 1.0, false);
    greedy_case("llama-tiny, 40-block pool", &m, &cpu, tok, &p, 40, 1.0, true);
    greedy_case("llama-tiny, repetition penalty 1.2", &m, &cpu, tok, &p, 0, 1.2, false);
    g_fixed = true;
    sampled_cases(&m, &cpu, tok, &p);
    g_fixed = false; /* adaptive K: a sampled request's K does not depend on its batch */
    sampled_cases(&m, &cpu, tok, &p);
    g_fixed = true;
    /* T 0.02: llama-tiny's logits are small (presence 0.005 is 0.25 after it) */
    distribution_case("llama-tiny, prompt lookup", &m, &cpu, tok, 0.02, 0.005);
    bad_options(&m, &cpu);
    /* draft models: llama-tiny's own weights rounded to bf16 (agrees with
     * the target's argmax mostly, not always), and gpt2-tiny (the same
     * 512-id vocabulary, an unrelated model: mostly rejected) */
    struct lmc_model d, d16;
    struct lmc_model_opts mo16 = {.wdtype = LMC_WDTYPE_BF16};
    if (!lmc_model_load(&d, "tests/fixtures/gpt2-tiny", NULL, &err) &&
        !lmc_model_load(&d16, "tests/fixtures/llama-tiny", &mo16, &err)) {
        self_draft_case(&m, &cpu, tok, &p);
        g_draft = &d16;
        greedy_case("llama-tiny, bf16 llama-tiny draft", &m, &cpu, tok, &p, 0, 1.0, false);
        greedy_case("llama-tiny, bf16 llama-tiny draft, 40-block pool", &m, &cpu, tok, &p, 40, 1.0, true);
        greedy_case("llama-tiny, kivi2 pools, bf16 llama-tiny draft", &m, &kivi, tok, &p, 0, 1.0, false);
        g_fixed = false;
        greedy_case("llama-tiny, bf16 llama-tiny draft", &m, &cpu, tok, &p, 0, 1.0, false);
        g_fixed = true;
        distribution_case("llama-tiny, bf16 llama-tiny draft", &m, &cpu, tok, 1.0, 0.3);
        g_draft = &d;
        distribution_case("llama-tiny, gpt2-tiny draft", &m, &cpu, tok, 1.0, 0.3);
        g_draft = NULL;
        k_follow_case("llama-tiny, itself as draft", &m, &cpu, tok, &m, &p, true);
        k_follow_case("llama-tiny, gpt2-tiny draft", &m, &cpu, tok, &d, &p, false);
        struct lmc_sched_opts o;
        struct lmc_sched *s = NULL;
        lmc_sched_opts_default(&o);
        o.spec = LMC_SCHED_SPEC_DRAFT; /* no draft given */
        CHECK(lmc_sched_init(&s, &m, &cpu, tok, &o, &err) == LMC_ERR_ARG && !s);
        lmc_model_free(&d);
        lmc_model_free(&d16);
    } else {
        CHECK_MSG(0, "gpt2-tiny: %s", err.msg);
    }
    static struct prompts kp;
    if (test_quick()) {
        printf("kjv-llama cases skipped (LMC_TEST_QUICK)\n");
    } else if (!lmc_model_load(&kjv, "models/kjv-llama", NULL, &err) && !lmc_tokenizer_load(&ktok, "models/kjv-llama", &err)) {
        CHECK_MSG(kjv_prompts(&kp, ktok), "data/kjv.txt: 64 verses");
        greedy_case("kjv-llama", &kjv, &cpu, ktok, &kp, 0, 1.0, false);
        g_fixed = false;
        greedy_case("kjv-llama", &kjv, &cpu, ktok, &kp, 0, 1.0, false);
        g_fixed = true;
        lmc_tokenizer_free(ktok);
        lmc_model_free(&kjv);
    } else {
        CHECK_MSG(0, "models/kjv-llama: %s", err.msg);
    }
    lmc_backend_cpu_free(&cpu);
    lmc_tokenizer_free(tok);
    lmc_model_free(&m);
    return test_finish("test_sched_spec");
}
