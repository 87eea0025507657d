/* test_spec_model.c — speculative decoding through real models
 * (infer/spec.c): greedy speculative output equals plain greedy decoding
 * (lmc_session_generate) token for token on every fixture and on
 * models/kjv-llama, for prompt lookup, self-speculation and a draft model,
 * fixed and adaptive K (from the cost model, and from the loop's timings
 * with the draft on its own 2-thread CPU backend), with rejections (and so
 * cache rollbacks) counted;
 * and the distribution of the first and second sampled tokens of
 * llama-tiny over 20,000 seeded runs matches the target's own (exact
 * marginals from enumerating the first token), under self-speculation
 * (temperature 1, top-k 24) and with gpt2-tiny as the draft model
 * (temperature 0.8, top-p 0.9, repetition/presence/frequency penalties):
 * chi-square p > 0.001 and total variation below 3x the expected sampling
 * TV. Token trees (spec_tree.h; fixed and adaptive, a draft model and
 * self-speculation) give plain greedy's ids too, with siblings verified
 * and paths through them; at a temperature > 0 the chain runs instead (the
 * self-speculation distribution test has a tree budget set). Bad options
 * give LMC_ERR_ARG. Draft vocabulary pruning (FR-Spec, opts.draft_vocab):
 * greedy output still plain greedy's (a draft model, a tree, self-spec),
 * the distribution test again with the gpt2 draft pruned to 2/3 of the
 * vocabulary; bad subsets and ranking files rejected.
 * LMC_TEST_QUICK=1 (CI's sanitizer stage; test.h): each distribution test
 * draws 4,000 seeded runs instead of 20,000 (same checks and bounds, which
 * scale with the count); everything else runs as in full. */
#include "test.h"
#include "test_chi2.h"
#include "core/core.h"
#include "infer/sampler.h"
#include "infer/session.h"
#include "infer/spec.h"
#include "infer/spec_sample.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static struct lmc_backend be;
static const struct lmc_tokenizer *cur_tok; /* the model's, for streaming */

static bool load(struct lmc_model *m, const char *dir) {
    lmc_err err = {0};
    if (lmc_model_load(m, dir, NULL, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        return false;
    }
    return true;
}

static void greedy_opts(struct lmc_gen_opts *g, int64_t max_new) {
    memset(g, 0, sizeof *g);
    lmc_sampler_defaults(&g->sampling);
    g->sampling.temperature = 0;
    g->max_new = max_new;
    g->ignore_eos = true;
}

/* Plain greedy ids of prompt through a session. */
static int32_t *plain(const struct lmc_model *m, const int32_t *prompt, int64_t n, int64_t max_new) {
    struct lmc_session s;
    lmc_err err = {0};
    struct lmc_gen_opts g;
    greedy_opts(&g, max_new);
    struct lmc_gen_result r;
    CHECK(lmc_session_init(&s, m, &be, cur_tok, 256, 64, &err) == LMC_OK);
    CHECK_MSG(lmc_session_generate(&s, prompt, n, &g, NULL, NULL, &r, &err) == LMC_OK, "%s", err.msg);
    CHECK(r.n_ids == max_new);
    int32_t *ids = r.ids;
    r.ids = NULL;
    lmc_gen_result_free(&r);
    lmc_session_free(&s);
    return ids;
}

enum { ACCEPT = 1, REJECT = 2, ALL = 4, TREE = 8 };

static void check_greedy(const char *name, const struct lmc_model *m, const struct lmc_model *draft,
                         struct lmc_spec_opts o, const int32_t *prompt, int64_t n, int64_t max_new,
                         const int32_t *want, int expect) {
    struct lmc_spec sp;
    lmc_err err = {0};
    if (lmc_spec_init(&sp, m, &be, cur_tok, draft, &o, 256, &err)) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return;
    }
    struct lmc_gen_opts g;
    greedy_opts(&g, max_new);
    struct lmc_gen_result r;
    struct lmc_spec_stats stt;
    CHECK_MSG(lmc_spec_generate(&sp, prompt, n, &g, NULL, NULL, &r, &stt, &err) == LMC_OK, "%s", err.msg);
    int64_t same = 0;
    while (same < r.n_ids && same < max_new && r.ids[same] == want[same]) same++;
    CHECK_MSG(r.n_ids == max_new && same == max_new, "%s: first difference at token %lld of %lld",
              name, (long long)same, (long long)max_new);
    CHECK(stt.rounds + stt.accepted == max_new); /* each round gives accepted + 1 tokens */
    if (expect & ACCEPT)
        CHECK_MSG(stt.rounds < max_new && stt.accepted > 0, "%s: %lld rounds, %lld accepted", name,
                  (long long)stt.rounds, (long long)stt.accepted);
    if (expect & REJECT)
        CHECK_MSG(stt.accepted < stt.drafted, "%s: no rejection exercised", name);
    if (expect & ALL) /* the target drafting for itself */
        CHECK_MSG(stt.accepted == stt.drafted, "%s: %lld of %lld accepted", name,
                  (long long)stt.accepted, (long long)stt.drafted);
    if (expect & TREE) /* siblings verified (and, on these pairs, some path through one) */
        CHECK_MSG(stt.tree_rounds > 0 && stt.tree_siblings >= stt.tree_rounds, "%s: no tree round", name);
    printf("  %-34s %3lld tokens in %3lld target forwards, %lld/%lld drafts accepted", name,
           (long long)max_new, (long long)stt.rounds, (long long)stt.accepted, (long long)stt.drafted);
    if (stt.tree_rounds)
        printf(", tree: %lld rounds, %lld siblings, %lld paths through one", (long long)stt.tree_rounds,
               (long long)stt.tree_siblings, (long long)stt.tree_hits);
    printf("\n");
    lmc_gen_result_free(&r);
    lmc_spec_free(&sp);
}

static void test_greedy_model(const char *dir, const struct lmc_model *m, const struct lmc_model *draft,
                              const int32_t *prompt, int64_t n, int64_t max_new) {
    int32_t *want = plain(m, prompt, n, max_new);
    char name[128];
    struct lmc_spec_opts o = {.mode = LMC_SPEC_LOOKUP, .draft_tokens = 4, .lookup_ngram = 3};
    snprintf(name, sizeof name, "%s lookup K4", dir);
    check_greedy(name, m, NULL, o, prompt, n, max_new, want, ACCEPT);
    o.adaptive = true;
    o.draft_tokens = 8;
    snprintf(name, sizeof name, "%s lookup adaptive", dir);
    check_greedy(name, m, NULL, o, prompt, n, max_new, want, ACCEPT);
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 3, .self_layers = 1};
    snprintf(name, sizeof name, "%s self-spec L1", dir);
    check_greedy(name, m, NULL, o, prompt, n, max_new, want, 0); /* acceptance: whatever L1 gives */
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 5, .adaptive = true};
    snprintf(name, sizeof name, "%s draft model", dir);
    check_greedy(name, m, draft, o, prompt, n, max_new, want, draft != m ? REJECT : ACCEPT | ALL);
    /* the draft on its own 2-thread CPU backend, K from the loop's timings */
    struct lmc_backend dbe;
    lmc_err err = {0};
    CHECK(lmc_backend_cpu_init(&dbe, 2, &err) == LMC_OK);
    o.draft_be = &dbe;
    o.measured = true;
    snprintf(name, sizeof name, "%s draft model, own backend, timed", dir);
    check_greedy(name, m, draft, o, prompt, n, max_new, want, 0); /* timed K: counts vary */
    lmc_backend_cpu_free(&dbe);
    /* draft vocabulary pruning (FR-Spec): the draft proposes from a subset
     * (every third id left out, the rest in reverse order: the ranking's
     * order must not matter), a chain and a tree; self-speculation too */
    int64_t V = m->cfg.vocab_size, nv = 0;
    int32_t *sub = malloc((size_t)V * sizeof *sub);
    for (int64_t i = V - 1; i >= 0; i--)
        if (i % 3) sub[nv++] = (int32_t)i;
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 4, .adaptive = true, .draft_vocab = sub,
                               .draft_vocab_n = nv};
    snprintf(name, sizeof name, "%s draft model, vocab %lld", dir, (long long)nv);
    check_greedy(name, m, draft, o, prompt, n, max_new, want, draft != m ? REJECT : 0);
    o.tree_rows = 8;
    snprintf(name, sizeof name, "%s draft model, vocab %lld, tree 8", dir, (long long)nv);
    check_greedy(name, m, draft, o, prompt, n, max_new, want, 0);
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 3, .self_layers = 1, .draft_vocab = sub,
                               .draft_vocab_n = nv / 4};
    snprintf(name, sizeof name, "%s self-spec L1, vocab %lld", dir, (long long)nv / 4);
    check_greedy(name, m, NULL, o, prompt, n, max_new, want, 0);
    free(sub);
    /* token trees: adaptive (a few rows, K up to 6), fixed K with a wide
     * budget (siblings at every depth), self-speculation */
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 6, .adaptive = true, .tree_rows = 6};
    snprintf(name, sizeof name, "%s draft model, tree 6", dir);
    check_greedy(name, m, draft, o, prompt, n, max_new, want, draft != m ? TREE : ACCEPT);
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 4, .tree_rows = 13};
    snprintf(name, sizeof name, "%s draft model, K4 tree 13", dir);
    check_greedy(name, m, draft, o, prompt, n, max_new, want, draft != m ? TREE : ACCEPT);
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 3, .self_layers = 1, .tree_rows = 9};
    snprintf(name, sizeof name, "%s self-spec L1, K3 tree 9", dir);
    check_greedy(name, m, NULL, o, prompt, n, max_new, want, TREE);
    free(want);
}

static double chi2_p(const int64_t *cnt, const double *prob, int64_t n, int64_t N, double *tv,
                     double *tvb) {
    double stat = 0, pe = 0, po = 0;
    int64_t dof = -1;
    *tv = *tvb = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = prob[i] * (double)N;
        *tv += fabs((double)cnt[i] / (double)N - prob[i]) / 2;
        *tvb += sqrt(prob[i] * (1 - prob[i]) / (double)N) / 2;
        if (e < 5) {
            pe += e;
            po += (double)cnt[i];
            continue;
        }
        stat += ((double)cnt[i] - e) * ((double)cnt[i] - e) / e;
        dof++;
    }
    if (pe > 0) {
        stat += (po - pe) * (po - pe) / pe;
        dof++;
    }
    return dof < 1 ? 1.0 : gamma_q(dof / 2.0, stat / 2.0);
}

static void test_distribution(const char *name, const struct lmc_model *m,
                              const struct lmc_model *draft, struct lmc_spec_opts o,
                              const struct lmc_sampler_params *sampling) {
    const int N = test_quick() ? 4000 : 20000;
    int64_t V = m->cfg.vocab_size;
    const int32_t prompt[5] = {7, 100, 33, 7, 250};
    struct lmc_gen_opts g;
    memset(&g, 0, sizeof g);
    g.sampling = *sampling;
    g.max_new = 3;
    g.ignore_eos = true;
    /* exact marginals of tokens 1 and 2 and their joint */
    lmc_err err = {0};
    struct lmc_session s;
    struct lmc_sampler smp;
    CHECK(lmc_session_init(&s, m, &be, NULL, 64, 16, &err) == LMC_OK); /* feed only */
    CHECK(lmc_sampler_init(&smp, &g.sampling, V, &err) == LMC_OK);
    float *p1 = malloc((size_t)V * sizeof *p1), *p2 = malloc((size_t)V * sizeof *p2);
    double *m1 = calloc((size_t)V, sizeof *m1), *m2 = calloc((size_t)V, sizeof *m2);
    double *joint = calloc((size_t)(V * V), sizeof *joint);
    int64_t *c1 = calloc((size_t)V, sizeof *c1), *c2 = calloc((size_t)V, sizeof *c2);
    int64_t *cj = calloc((size_t)(V * V), sizeof *cj);
    int32_t h[6];
    memcpy(h, prompt, sizeof prompt);
    CHECK(lmc_session_feed(&s, h, 5, &err) == LMC_OK);
    lmc_sampler_probs(&smp, s.logits, h, 5, p1);
    for (int64_t a = 0; a < V; a++) {
        m1[a] = p1[a];
        if (p1[a] == 0) continue;
        h[5] = (int32_t)a;
        CHECK(lmc_session_feed(&s, h, 6, &err) == LMC_OK);
        lmc_sampler_probs(&smp, s.logits, h, 6, p2);
        for (int64_t b = 0; b < V; b++) {
            joint[a * V + b] = (double)p1[a] * p2[b];
            m2[b] += joint[a * V + b];
        }
    }
    struct lmc_spec sp;
    CHECK(lmc_spec_init(&sp, m, &be, NULL, draft, &o, 64, &err) == LMC_OK);
    int64_t acc = 0, drafted = 0;
    for (int i = 0; i < N; i++) {
        g.sampling.seed = 1000 + (uint64_t)i;
        struct lmc_gen_result r;
        struct lmc_spec_stats stt;
        if (lmc_spec_generate(&sp, prompt, 5, &g, NULL, NULL, &r, &stt, &err) || r.n_ids != 3) {
            CHECK_MSG(0, "run %d: %s", i, err.msg);
            break;
        }
        c1[r.ids[0]]++;
        c2[r.ids[1]]++;
        cj[r.ids[0] * V + r.ids[1]]++;
        acc += stt.accepted;
        drafted += stt.drafted;
        lmc_gen_result_free(&r);
    }
    double tv, tvb;
    double pa = chi2_p(c1, m1, V, N, &tv, &tvb);
    printf("  %-34s token 1 chi2 p = %.4f TV = %.4f (bound %.4f)\n", name, pa, tv, 3 * tvb);
    CHECK_MSG(pa > 0.001 && tv < 3 * tvb, "token 1: p %.3g TV %.4f", pa, tv);
    pa = chi2_p(c2, m2, V, N, &tv, &tvb);
    printf("  %34s token 2 chi2 p = %.4f TV = %.4f (bound %.4f)\n", "", pa, tv, 3 * tvb);
    CHECK_MSG(pa > 0.001 && tv < 3 * tvb, "token 2: p %.3g TV %.4f", pa, tv);
    pa = chi2_p(cj, joint, V * V, N, &tv, &tvb);
    printf("  %34s joint 1-2 chi2 p = %.4f TV = %.4f (bound %.4f); %lld/%lld drafts accepted\n", "",
           pa, tv, 3 * tvb, (long long)acc, (long long)drafted);
    CHECK_MSG(pa > 0.001 && tv < 3 * tvb, "joint: p %.3g TV %.4f", pa, tv);
    CHECK(acc > 0 && acc < drafted);
    lmc_spec_free(&sp);
    lmc_session_free(&s);
    lmc_sampler_free(&smp);
    free(p1), free(p2), free(m1), free(m2), free(joint), free(c1), free(c2), free(cj);
}

static void test_bad_opts(const struct lmc_model *m, const struct lmc_model *other_vocab) {
    struct lmc_spec sp;
    lmc_err err = {0};
    struct lmc_spec_opts o = {.mode = LMC_SPEC_LOOKUP, .draft_tokens = 0, .lookup_ngram = 2};
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG);
    o.draft_tokens = 4;
    o.lookup_ngram = 0;
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG);
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 4, .self_layers = 2};
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG && strstr(err.msg, "1..1"));
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 4};
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG);
    CHECK(lmc_spec_init(&sp, m, &be, NULL, other_vocab, &o, 64, &err) == LMC_ERR_ARG &&
          strstr(err.msg, "vocabulary"));
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 4, .self_layers = 1, .tree_rows = 1};
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG && strstr(err.msg, "tree"));
    o.tree_rows = 65;
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG);
    /* a temperature > 0: the chain (its exact rejection rule), no tree round */
    o.tree_rows = 9;
    if (lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_OK) {
        struct lmc_gen_opts g;
        greedy_opts(&g, 20);
        g.sampling.temperature = 1;
        const int32_t pr[3] = {5, 6, 7};
        struct lmc_gen_result r;
        struct lmc_spec_stats stt;
        CHECK(lmc_spec_generate(&sp, pr, 3, &g, NULL, NULL, &r, &stt, &err) == LMC_OK);
        CHECK(r.n_ids == 20 && stt.rounds > 0 && stt.drafted > 0 && stt.tree_rounds == 0);
        lmc_gen_result_free(&r);
        lmc_spec_free(&sp);
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }
    /* draft vocabulary: bad subsets; the ranking file's parser */
    int32_t dv[8] = {3, 5, 3, 1};
    o = (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 2, .self_layers = 1, .draft_vocab = dv,
                               .draft_vocab_n = 4};
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG && strstr(err.msg, "repeated"));
    dv[2] = (int32_t)m->cfg.vocab_size;
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG);
    o.draft_vocab_n = m->cfg.vocab_size + 1;
    CHECK(lmc_spec_init(&sp, m, &be, NULL, NULL, &o, 64, &err) == LMC_ERR_ARG);
    int64_t got = -1;
    const char *rk = "# ranking\n 44 65928\n32 10\r\n\n258\n7,3\n9\n";
    CHECK(lmc_spec_vocab_parse(rk, strlen(rk), 300, 10, dv, &got, &err) == LMC_OK && got == 5 && dv[0] == 44 &&
          dv[1] == 32 && dv[2] == 258 && dv[3] == 7 && dv[4] == 9);
    CHECK(lmc_spec_vocab_parse(rk, strlen(rk), 300, 2, dv, &got, &err) == LMC_OK && got == 2);
    CHECK(lmc_spec_vocab_parse(rk, strlen(rk), 258, 4, dv, &got, &err) == LMC_ERR_FORMAT && strstr(err.msg, "line 5"));
    const char *bad[] = {"5\n5\n", "x\n", "-1\n", "12a\n", "99999999999999999999999\n", "4 5\n 6\n7x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(lmc_spec_vocab_parse(bad[i], strlen(bad[i]), 300, 4, dv, &got, &err) == LMC_ERR_FORMAT, "%s", bad[i]);
    CHECK(lmc_spec_vocab_parse("", 0, 300, 4, dv, &got, &err) == LMC_OK && got == 0);
    /* lookup itself */
    const int32_t ids[10] = {5, 6, 7, 8, 9, 5, 6, 7, 1, 6};
    int32_t out[4];
    CHECK(lmc_spec_lookup(ids, 8, 3, 4, out) == 4 && out[0] == 8 && out[3] == 6); /* "5 6 7" -> 8 9 5 6 */
    CHECK(lmc_spec_lookup(ids, 10, 3, 4, out) == 3 && out[0] == 7 && out[1] == 1 && out[2] == 6); /* "6" latest -> 7 1 6 */
    CHECK(lmc_spec_lookup(ids, 9, 3, 4, out) == 0); /* "1" never before */
    CHECK(lmc_spec_next_k(0.0, 8) == 1 && lmc_spec_next_k(0.75, 8) == 4 && lmc_spec_next_k(0.99, 8) == 8);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    lmc_err err = {0};
    if (lmc_backend_cpu_init(&be, 1, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return test_finish("test_spec_model");
    }
    struct lmc_model llama, gpt2, qwen, kjv;
    bool ok = load(&llama, "tests/fixtures/llama-tiny") && load(&gpt2, "tests/fixtures/gpt2-tiny") &&
              load(&qwen, "tests/fixtures/qwen2-tiny") && load(&kjv, "models/kjv-llama");
    if (!ok) return test_finish("test_spec_model");
    test_bad_opts(&llama, &qwen);
    /* fixtures: a prompt with repeats so lookup finds matches; gpt2-tiny
     * (same vocabulary size, other weights) drafts for llama-tiny */
    const int32_t fp[12] = {17, 42, 99, 3, 17, 42, 99, 250, 3, 17, 42, 5};
    struct lmc_tokenizer *tok = NULL;
    const char *fx[3] = {"llama-tiny", "gpt2-tiny", "qwen2-tiny"};
    struct lmc_model *fm[3] = {&llama, &gpt2, &qwen}, *fd[3] = {&gpt2, &llama, &qwen};
    for (int i = 0; i < 3; i++) {
        char dir[64];
        snprintf(dir, sizeof dir, "tests/fixtures/%s", fx[i]);
        if (lmc_tokenizer_load(&tok, dir, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        cur_tok = tok;
        test_greedy_model(fx[i], fm[i], fd[i], fp, 12, 60);
        lmc_tokenizer_free(tok);
        tok = NULL;
    }
    /* the default model on KJV text (its tokenizer) */
    int32_t *ids = NULL;
    int64_t n = 0;
    const char *text = "In the beginning God created the heaven and the earth. And the earth was "
                       "without form, and void; and darkness was upon the face of the deep. And the";
    if (lmc_tokenizer_load(&tok, "models/kjv-llama", &err) ||
        lmc_tokenizer_encode(tok, text, strlen(text), true, &ids, &n, &err)) {
        CHECK_MSG(0, "%s", err.msg);
    } else {
        cur_tok = tok;
        test_greedy_model("kjv-llama", &kjv, &kjv, ids, n, 120);
    }
    free(ids);
    if (tok) lmc_tokenizer_free(tok);
    cur_tok = NULL;
    struct lmc_sampler_params sp1;
    lmc_sampler_defaults(&sp1);
    sp1.top_k = 24;
    test_distribution("llama-tiny self-spec T=1 top-k 24", &llama, NULL,
                      (struct lmc_spec_opts){.mode = LMC_SPEC_SELF, .draft_tokens = 2, .self_layers = 1, .tree_rows = 9},
                      &sp1); /* tree_rows: at T = 1 the chain runs */
    /* a draft model of other weights, penalties over the drafted history, top-p */
    struct lmc_sampler_params sp2;
    lmc_sampler_defaults(&sp2);
    sp2.temperature = 0.8;
    sp2.top_p = 0.9;
    sp2.repeat_penalty = 1.3;
    sp2.presence_penalty = 0.4;
    sp2.frequency_penalty = 0.2;
    test_distribution("llama-tiny gpt2 draft, penalties", &llama, &gpt2,
                      (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 2}, &sp2);
    /* the same with the draft pruned to a subset (FR-Spec): q renormalised
     * over it; tokens outside it come from the residual alone */
    int64_t V = llama.cfg.vocab_size, nv = 0;
    int32_t *sub = malloc((size_t)V * sizeof *sub);
    for (int64_t i = 0; i < V; i++)
        if (i % 3 != 1) sub[nv++] = (int32_t)i;
    test_distribution("llama-tiny gpt2 draft pruned, penalties", &llama, &gpt2,
                      (struct lmc_spec_opts){.mode = LMC_SPEC_DRAFT, .draft_tokens = 2, .draft_vocab = sub,
                                             .draft_vocab_n = nv},
                      &sp2);
    free(sub);
    lmc_model_free(&llama);
    lmc_model_free(&gpt2);
    lmc_model_free(&qwen);
    lmc_model_free(&kjv);
    lmc_backend_cpu_free(&be);
    return test_finish("test_spec_model");
}
