/* test_spec_reuse.c — prefix reuse across lmc_spec_generate calls
 * (infer/spec.c) on models/kjv-llama: a second call whose prompt extends
 * the first call's prompt and output gives exactly the ids of a fresh
 * lmc_spec on that prompt, prefilling only the ids past what the caches
 * kept (res.n_prompt_new); a third prompt that diverges early is
 * re-prefilled from the divergence and again equals a fresh run. Plain
 * decoding through the loop, prompt lookup, self-speculation and a draft
 * model (its own cache rewound too), greedy and seeded sampling; q8 and
 * kivi2 caches (a KIVI residual of 32, so quantized blocks are rewound
 * into). Streaming (sinks + window): a window that never fills reuses like
 * the plain cache; with a small one a prompt longer than sinks + window is
 * accepted (fed in steps, evicting) and generation continues, a follow-up
 * that extends the history feeds only its new ids, and one that diverges
 * before the evicted ids starts over. */
#include "test.h"
#include "model_fixture.h"
#include "core/core.h"
#include "infer/kvq.h"
#include "infer/sampler.h"
#include "infer/spec.h"

#include <stdlib.h>
#include <string.h>

static struct lmc_model kjv;
static struct lmc_backend cpu, kvq;
static struct lmc_tokenizer *tok;

static void gen_opts(struct lmc_gen_opts *g, int64_t max_new, double temp) {
    memset(g, 0, sizeof *g);
    lmc_sampler_defaults(&g->sampling);
    g->sampling.temperature = temp;
    g->sampling.seed = 7;
    g->max_new = max_new;
    g->ignore_eos = true;
}

static int32_t *encode(const char *text, int64_t *n) {
    lmc_err err = {0};
    int32_t *ids = NULL;
    CHECK_MSG(lmc_tokenizer_encode(tok, text, strlen(text), false, &ids, n, &err) == LMC_OK, "%s", err.msg);
    return ids;
}

/* a + b (malloc'd) */
static int32_t *cat(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int32_t *r = malloc((size_t)(na + nb) * sizeof *r);
    memcpy(r, a, (size_t)na * sizeof *r);
    memcpy(r + na, b, (size_t)nb * sizeof *r);
    return r;
}

static bool run(struct lmc_spec *sp, const int32_t *p, int64_t n, int64_t max_new, double temp,
                struct lmc_gen_result *r, struct lmc_spec_stats *st) {
    lmc_err err = {0};
    struct lmc_gen_opts g;
    gen_opts(&g, max_new, temp);
    lmc_status s = lmc_spec_generate(sp, p, n, &g, NULL, NULL, r, st, &err);
    CHECK_MSG(s == LMC_OK, "%s", err.msg);
    return s == LMC_OK;
}

/* A fresh lmc_spec's ids on p equal got (n_got of them). */
static void check_fresh(const char *name, const struct lmc_backend *be, const struct lmc_model *draft,
                        const struct lmc_spec_opts *o, const int32_t *p, int64_t n, int64_t max_new, double temp,
                        const int32_t *got, int64_t n_got) {
    struct lmc_spec sp;
    lmc_err err = {0};
    if (lmc_spec_init(&sp, &kjv, be, tok, draft, o, 256, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return;
    }
    struct lmc_gen_result r;
    if (run(&sp, p, n, max_new, temp, &r, NULL)) {
        int64_t same = 0;
        while (same < r.n_ids && same < n_got && r.ids[same] == got[same]) same++;
        CHECK_MSG(r.n_ids == n_got && same == n_got, "%s: first difference from a fresh run at token %lld of %lld",
                  name, (long long)same, (long long)n_got);
        lmc_gen_result_free(&r);
    }
    lmc_spec_free(&sp);
}

/* Three calls on one lmc_spec: p1; p1 + its output + more (reused: only
 * the new ids prefilled); an early divergence (re-prefilled from there);
 * each equal to a fresh run. */
static void check_reuse(const char *name, const struct lmc_backend *be, const struct lmc_model *draft,
                        struct lmc_spec_opts o, double temp, const int32_t *p1, int64_t n1, const int32_t *more,
                        int64_t nm) {
    struct lmc_spec sp;
    lmc_err err = {0};
    if (lmc_spec_init(&sp, &kjv, be, tok, draft, &o, 256, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return;
    }
    struct lmc_gen_result r1, r2, r3;
    const int64_t N1 = 16, N2 = 24;
    int64_t new3 = -1;
    if (!run(&sp, p1, n1, N1, temp, &r1, NULL)) goto out1;
    CHECK_MSG(r1.n_prompt_new == n1 && r1.n_ids == N1, "%s: first call prefilled %lld of %lld", name,
              (long long)r1.n_prompt_new, (long long)n1);
    int32_t *h = cat(p1, n1, r1.ids, r1.n_ids);
    int32_t *p2 = cat(h, n1 + r1.n_ids, more, nm);
    int64_t n2 = n1 + r1.n_ids + nm;
    if (!run(&sp, p2, n2, N2, temp, &r2, NULL)) goto out2;
    /* kept: the prompt and the output but its last id (never fed) */
    CHECK_MSG(r2.n_prompt_new == n2 - (n1 + N1 - 1), "%s: extended prompt prefilled %lld of %lld (want %lld)", name,
              (long long)r2.n_prompt_new, (long long)n2, (long long)(n2 - (n1 + N1 - 1)));
    char nm2[160];
    snprintf(nm2, sizeof nm2, "%s, extended", name);
    check_fresh(nm2, be, draft, &o, p2, n2, N2, temp, r2.ids, r2.n_ids);
    /* diverges at id 5 of the kept ones: re-prefilled from there */
    int32_t *p3 = cat(p2, n2, more, nm);
    p3[5] = p3[5] == more[0] ? more[1] : more[0];
    if (run(&sp, p3, n2 + nm, N2, temp, &r3, NULL)) {
        new3 = r3.n_prompt_new;
        CHECK_MSG(r3.n_prompt_new == n2 + nm - 5, "%s: divergent prompt prefilled %lld (want %lld)", name,
                  (long long)r3.n_prompt_new, (long long)(n2 + nm - 5));
        snprintf(nm2, sizeof nm2, "%s, diverged", name);
        check_fresh(nm2, be, draft, &o, p3, n2 + nm, N2, temp, r3.ids, r3.n_ids);
        lmc_gen_result_free(&r3);
    }
    printf("  %-44s prefilled %lld, %lld, %lld of %lld, %lld, %lld prompt ids\n", name, (long long)r1.n_prompt_new,
           (long long)r2.n_prompt_new, (long long)new3, (long long)n1, (long long)n2, (long long)(n2 + nm));
    free(p3);
    lmc_gen_result_free(&r2);
out2:
    free(h);
    free(p2);
    lmc_gen_result_free(&r1);
out1:
    lmc_spec_free(&sp);
}

/* Streaming with a small window: a long prompt, an extension, an early divergence. */
static void check_stream(const char *name, struct lmc_spec_opts o, const int32_t *p, int64_t n, const int32_t *more,
                         int64_t nm) {
    struct lmc_spec sp;
    lmc_err err = {0};
    o.sinks = 4;
    o.window = 48;
    CHECK(n > o.sinks + o.window); /* longer than the cache */
    if (lmc_spec_init(&sp, &kjv, &cpu, tok, NULL, &o, 256, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return;
    }
    struct lmc_gen_result r1, r2, r3;
    struct lmc_spec_stats st1, st2, st3;
    const int64_t N = 80;
    if (!run(&sp, p, n, N, 0.8, &r1, &st1)) goto out1;
    CHECK_MSG(r1.n_ids == N && r1.n_prompt_new == n && st1.evicted > 0, "%s: %lld ids, %lld evicted", name,
              (long long)r1.n_ids, (long long)st1.evicted);
    int32_t *h = cat(p, n, r1.ids, r1.n_ids);
    int32_t *p2 = cat(h, n + N, more, nm);
    int64_t n2 = n + N + nm;
    if (run(&sp, p2, n2, N, 0.8, &r2, &st2)) {
        CHECK_MSG(r2.n_ids == N && r2.n_prompt_new == nm + 1 && st2.evicted > 0,
                  "%s, extended: %lld ids, %lld prefilled (want %lld), %lld evicted", name, (long long)r2.n_ids,
                  (long long)r2.n_prompt_new, (long long)(nm + 1), (long long)st2.evicted);
        lmc_gen_result_free(&r2);
    }
    p2[o.sinks + 1] = p2[o.sinks + 1] == more[0] ? more[1] : more[0]; /* an evicted id differs */
    if (run(&sp, p2, n2, 20, 0.8, &r3, &st3)) {
        CHECK_MSG(r3.n_ids == 20 && r3.n_prompt_new == n2, "%s, diverged: %lld ids, %lld prefilled of %lld", name,
                  (long long)r3.n_ids, (long long)r3.n_prompt_new, (long long)n2);
        lmc_gen_result_free(&r3);
    }
    printf("  %-44s %lld-id prompt, %lld then %lld evicted\n", name, (long long)n, (long long)st1.evicted,
           (long long)st2.evicted);
    free(h);
    free(p2);
    lmc_gen_result_free(&r1);
out1:
    lmc_spec_free(&sp);
}

int main(void) {
    lmc_err err = {0};
    if (!fixture_open_cpu(&kjv, &cpu, &tok, "models/kjv-llama", NULL, 2)) return test_finish("test_spec_reuse");
    CHECK_MSG(lmc_kvq_backend(&kvq, &cpu, &err) == LMC_OK, "%s", err.msg);
    int64_t n1, nm, nl;
    int32_t *p1 = encode("In the beginning God created the heaven and the earth. And the earth was without form, "
                         "and void; and darkness was upon the face of the deep.", &n1);
    int32_t *more = encode(" And God said, Let there be light: and there was light.", &nm);
    int32_t *pl = encode("And God said, Let there be a firmament in the midst of the waters, and let it divide the "
                         "waters from the waters. And God made the firmament, and divided the waters which were "
                         "under the firmament from the waters which were above the firmament: and it was so. And "
                         "God called the firmament Heaven. And the evening and the morning were the second day. "
                         "And God said, Let the waters under the heaven be gathered together unto one place.", &nl);
    struct lmc_spec_opts none = {.mode = LMC_SPEC_NONE, .draft_tokens = 4};
    struct lmc_spec_opts look = {.mode = LMC_SPEC_LOOKUP, .draft_tokens = 4, .lookup_ngram = 3, .adaptive = true};
    struct lmc_spec_opts self = {.mode = LMC_SPEC_SELF, .draft_tokens = 3, .self_layers = 2};
    struct lmc_spec_opts drft = {.mode = LMC_SPEC_DRAFT, .draft_tokens = 4, .adaptive = true};
    check_reuse("plain greedy", &cpu, NULL, none, 0, p1, n1, more, nm);
    check_reuse("lookup greedy", &cpu, NULL, look, 0, p1, n1, more, nm);
    check_reuse("self-spec greedy", &cpu, NULL, self, 0, p1, n1, more, nm);
    check_reuse("draft model greedy", &cpu, &kjv, drft, 0, p1, n1, more, nm);
    check_reuse("draft model sampled (T 0.8, seed 7)", &cpu, &kjv, drft, 0.8, p1, n1, more, nm);
    check_reuse("self-spec sampled (T 0.8, seed 7)", &cpu, NULL, self, 0.8, p1, n1, more, nm);
    struct lmc_spec_opts q = self;
    q.kv_fmt = LMC_KVQ_Q8;
    check_reuse("self-spec greedy, q8 cache", &kvq, NULL, q, 0, p1, n1, more, nm);
    q = drft;
    q.kv_fmt = LMC_KVQ_Q8;
    check_reuse("draft model sampled, q8 caches", &kvq, &kjv, q, 0.8, p1, n1, more, nm);
    q = look;
    q.kv_fmt = LMC_KVQ_KIVI2;
    q.kv_residual = 32;
    check_reuse("lookup greedy, kivi2 cache", &kvq, NULL, q, 0, p1, n1, more, nm);
    q = drft;
    q.kv_fmt = LMC_KVQ_KIVI2;
    q.kv_residual = 32;
    check_reuse("draft model greedy, kivi2 caches", &kvq, &kjv, q, 0, p1, n1, more, nm);
    q = self; /* a window that never fills: the plain cache's reuse */
    q.sinks = 4;
    q.window = 1000;
    check_reuse("self-spec greedy, sinks + big window", &cpu, NULL, q, 0, p1, n1, more, nm);
    check_stream("streaming, plain", none, pl, nl, more, nm);
    check_stream("streaming, self-spec", self, pl, nl, more, nm);
    check_stream("streaming, lookup", look, pl, nl, more, nm);
    free(p1);
    free(more);
    free(pl);
    fixture_close_cpu(&kjv, &cpu, tok);
    return test_finish("test_spec_reuse");
}
