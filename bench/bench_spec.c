/* bench_spec.c — batch-1 decode speed of speculative decoding against plain
 * decoding, same process, same weights, interleaved rounds, medians.
 * Configurations: plain (lmc_session_generate), prompt lookup (n-gram 3),
 * self-speculation with the first L layers as the draft (L = layers/4 and
 * layers/2), and the target drafting for itself (every draft accepted: the
 * ceiling of acceptance, which shows the cost of verification, not a
 * meaningful pair). Greedy, so every configuration must produce plain
 * decoding's ids: checked before anything is timed.
 *
 * usage: bench_spec MODEL_DIR [-n tokens 128] [-r rounds 5] [-k draft_tokens 4] [-t threads 1] */
#include "core/core.h"
#include "infer/session.h"
#include "infer/spec.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCONF 5
#define MAXR 64

static const char *prompts[] = {
    /* narrative: little verbatim repetition */
    "In the beginning God created the heaven and the earth. And the earth was without form, and void;",
    /* genealogy: strongly repetitive */
    ("And Adam lived an hundred and thirty years, and begat a son in his own likeness, after his image; "
     "and called his name Seth: And the days of Adam after he had begotten Seth were eight hundred years: "
     "and he begat sons and daughters: And all the days that Adam lived were nine hundred and thirty "
     "years: and he died. And Seth lived an hundred and five years, and begat Enos:"),
    /* psalm with refrain */
    ("O give thanks unto the LORD; for he is good: for his mercy endureth for ever. O give thanks unto the "
     "God of gods: for his mercy endureth for ever. O give thanks to the Lord of lords:"),
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_spec MODEL_DIR [-n tokens] [-r rounds] [-k K] [-t threads]\n");
        return 2;
    }
    int64_t ntok = 128, rounds = 5, K = 4, threads = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        int64_t v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "-n")) ntok = v;
        else if (!strcmp(argv[i], "-r")) rounds = LMC_MIN(v, MAXR);
        else if (!strcmp(argv[i], "-k")) K = v;
        else if (!strcmp(argv[i], "-t")) threads = v;
    }
    lmc_err err = {0};
    struct lmc_model m;
    struct lmc_tokenizer *tok;
    struct lmc_backend be;
    if (lmc_model_load(&m, argv[1], NULL, &err) || lmc_tokenizer_load(&tok, argv[1], &err) ||
        lmc_backend_cpu_init(&be, (int)threads, &err)) {
        fprintf(stderr, "bench_spec: %s\n", err.msg);
        return 1;
    }
    int64_t L = m.cfg.num_layers, ctx = 1024;
    struct lmc_spec_opts conf[NCONF] = {
        {0},
        {.mode = LMC_SPEC_LOOKUP, .draft_tokens = K, .lookup_ngram = 3, .adaptive = true},
        {.mode = LMC_SPEC_SELF, .draft_tokens = K, .self_layers = LMC_MAX(1, L / 4), .adaptive = true},
        {.mode = LMC_SPEC_SELF, .draft_tokens = K, .self_layers = LMC_MAX(1, L / 2), .adaptive = true},
        {.mode = LMC_SPEC_DRAFT, .draft_tokens = K, .adaptive = true},
    };
    char names[NCONF][64];
    snprintf(names[0], 64, "plain");
    snprintf(names[1], 64, "prompt lookup n=3");
    snprintf(names[2], 64, "self-spec L=%lld of %lld", (long long)conf[2].self_layers, (long long)L);
    snprintf(names[3], 64, "self-spec L=%lld of %lld", (long long)conf[3].self_layers, (long long)L);
    snprintf(names[4], 64, "target as its own draft");
    struct lmc_gen_opts g;
    memset(&g, 0, sizeof g);
    lmc_sampler_defaults(&g.sampling);
    g.sampling.temperature = 0;
    g.max_new = ntok;
    g.ignore_eos = true;
    int np = (int)(sizeof prompts / sizeof *prompts);
    /* what verification costs: one forward of 1 token vs of K+1 tokens (all
     * logits) at position 100, medians of 21 */
    {
        struct lmc_kv kv;
        struct lmc_acts a;
        int64_t V = m.cfg.vocab_size;
        float *lg = malloc((size_t)(K + 1) * (size_t)V * sizeof *lg);
        int32_t tk[65] = {0};
        for (int i = 0; i < 65; i++) tk[i] = 100 + i;
        if (lmc_kv_init(&kv, &m, &be, ctx, &err) || lmc_acts_init(&a, &m, &be, 128, K + 1, &err)) {
            fprintf(stderr, "bench_spec: %s\n", err.msg);
            return 1;
        }
        double t1[21], tk1[21];
        for (int i = 0; i < 21; i++) {
            double t0 = lmc_time_now();
            lmc_model_forward(&m, &be, &a, &kv, tk, 1, 100, lg, false, &err);
            double t2 = lmc_time_now();
            lmc_model_forward(&m, &be, &a, &kv, tk, K + 1, 100, lg, true, &err);
            double t3 = lmc_time_now();
            t1[i] = t2 - t0;
            tk1[i] = t3 - t2;
        }
        qsort(t1, 21, sizeof(double), cmp_d);
        qsort(tk1, 21, sizeof(double), cmp_d);
        printf("target forward: 1 token %.3f ms, %lld tokens (all logits) %.3f ms = %.2fx of one token\n\n",
               t1[10] * 1e3, (long long)(K + 1), tk1[10] * 1e3, tk1[10] / t1[10]);
        free(lg);
        lmc_kv_free(&kv);
        lmc_acts_free(&a);
    }
    printf("model %s, %lld threads, %lld greedy tokens per prompt, K=%lld (adaptive), %lld rounds\n\n",
           argv[1], (long long)threads, (long long)ntok, (long long)K, (long long)rounds);
    printf("| prompt | configuration | decode tok/s (median) | vs plain | drafts accepted | tokens per target forward |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int pi = 0; pi < np; pi++) {
        int32_t *ids;
        int64_t n;
        if (lmc_tokenizer_encode(tok, prompts[pi], strlen(prompts[pi]), true, &ids, &n, &err)) {
            fprintf(stderr, "bench_spec: %s\n", err.msg);
            return 1;
        }
        double tps[NCONF][MAXR];
        struct lmc_spec_stats st[NCONF] = {{0}};
        int32_t *want = NULL;
        for (int64_t r = -1; r < rounds; r++) { /* round -1: correctness + warm-up */
            for (int ci = 0; ci < NCONF; ci++) {
                int c = (int)((ci + (r < 0 ? 0 : r)) % NCONF); /* rotate the order */
                struct lmc_gen_result res;
                if (c == 0) {
                    struct lmc_session s;
                    if (lmc_session_init(&s, &m, &be, tok, ctx, 512, &err) ||
                        lmc_session_generate(&s, ids, n, &g, NULL, NULL, &res, &err)) {
                        fprintf(stderr, "bench_spec: %s\n", err.msg);
                        return 1;
                    }
                    lmc_session_free(&s);
                } else {
                    struct lmc_spec sp;
                    if (lmc_spec_init(&sp, &m, &be, tok, &m, &conf[c], ctx, &err) ||
                        lmc_spec_generate(&sp, ids, n, &g, NULL, NULL, &res, &st[c], &err)) {
                        fprintf(stderr, "bench_spec: %s\n", err.msg);
                        return 1;
                    }
                    lmc_spec_free(&sp);
                }
                if (r < 0 && c == 0) {
                    want = res.ids;
                    res.ids = NULL;
                } else if (r < 0 && (res.n_ids != ntok || memcmp(res.ids, want, (size_t)ntok * sizeof *want))) {
                    fprintf(stderr, "bench_spec: %s gave other ids than plain greedy\n", names[c]);
                    return 1;
                }
                if (r >= 0) tps[c][r] = (double)res.n_ids / res.decode_s;
                lmc_gen_result_free(&res);
            }
        }
        double base = 0;
        for (int c = 0; c < NCONF; c++) {
            qsort(tps[c], (size_t)rounds, sizeof(double), cmp_d);
            double med = tps[c][rounds / 2];
            if (c == 0) base = med;
            char acc[64] = "-", per[32] = "1.00";
            if (c) {
                snprintf(acc, sizeof acc, "%lld/%lld (%.0f%%)", (long long)st[c].accepted,
                         (long long)st[c].drafted,
                         st[c].drafted ? 100.0 * (double)st[c].accepted / (double)st[c].drafted : 0.0);
                snprintf(per, sizeof per, "%.2f", (double)ntok / (double)st[c].rounds);
            }
            printf("| %d | %s | %.1f | %.2fx | %s | %s |\n", pi + 1, names[c], med, med / base, acc, per);
        }
        fflush(stdout);
        free(want);
        free(ids);
    }
    lmc_tokenizer_free(tok);
    lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
    return 0;
}
