/* bench_spec.c — batch-1 decode speed of speculative decoding against plain
 * decoding, same process, same weights, interleaved rounds, medians.
 * Configurations: plain (lmc_session_generate), prompt lookup (n-gram 3),
 * self-speculation with the first L layers as the draft (L = layers/4 and
 * layers/2), and the target drafting for itself (every draft accepted: the
 * ceiling of acceptance, which shows the cost of verification, not a
 * meaningful pair). Greedy, so every configuration must produce plain
 * decoding's ids: checked before anything is timed. With -d DRAFT_DIR also
 * the draft model (adaptive K, and fixed K).
 *
 * First the cost of each part of a round, interleaved, medians (all in
 * units of a 1-token target forward): an M-token verification forward
 * of M = 2..max(K+1, 8) tokens (all logits; K+1 with the last logit only:
 * the head's share; with a draft also each M right after M - 1 draft
 * forwards, as in a round: the pool's worker idle meanwhile), a draft
 * forward of 1 token (after a target forward and after a draft forward)
 * and of 2 (the catch-up after a full acceptance),
 * the target probabilities of K+1 rows and the acceptance; then the cost
 * model (spec.h's lmc_spec_round_cost with the measured draft, slope and
 * row) over acceptance rates: the best K, lmc_spec_choose_k's with the
 * measured costs and with the defaults, the old rule's.
 *
 * usage: bench_spec MODEL_DIR [-n tokens 128] [-r rounds 5] [-k draft_tokens 4] [-t threads 1]
 *        [-d DRAFT_DIR] [-p prompts 3] [-m cost reps 21] [-s configs PLSHODF] [-cpu 1: costs in CPU time]
 *        [-u bytes: the CPU matmul scheduler's claim unit (mm_unit_bytes), default LMC_CPU_MM_UNIT_BYTES]
 * configs: P plain, L lookup, S/H self-spec L/4, L/2, O target as its own
 * draft (fixed K), D draft model (adaptive), F draft model (fixed K); -s C
 * measures only the costs. */
#include "core/core.h"
#include "infer/session.h"
#include "infer/sampler.h"
#include "infer/spec.h"
#include "infer/spec_sample.h"
#include "model/model.h"
#include "ops/cpu/ops_cpu.h"
#include "tokenizer/tokenizer.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCONF 7
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

static void die(const lmc_err *err) {
    fprintf(stderr, "bench_spec: %s\n", err->msg);
    exit(1);
}

/* wall time, or the process's CPU time (with 1 thread: the work, less the
 * time other processes on a loaded machine take) */
static double clk(bool cpu) { return cpu ? bench_cpu() : lmc_time_now(); }

/* cost of each part of a round, in units of a 1-token target forward;
 * fills *cm (the draft token, the verification slope and row; no draft: 1) */
static void costs(const struct lmc_model *m, const struct lmc_model *dm, const struct lmc_backend *be,
                  int64_t K, int reps, bool cpu, struct lmc_spec_cost *cm) {
    lmc_err err = {0};
    int64_t V = m->cfg.vocab_size, ctx = 256, M8 = LMC_MAX(K + 1, 8);
    struct lmc_kv kv, dkv;
    struct lmc_acts a, da;
    float *lg = malloc((size_t)M8 * (size_t)V * sizeof *lg), *p = malloc((size_t)M8 * (size_t)V * sizeof *p);
    int32_t tk[128], out[65];
    for (int i = 0; i < 128; i++) tk[i] = 100 + 37 * i % 4000;
    if (lmc_kv_init(&kv, m, be, ctx, &err) || lmc_acts_init(&a, m, be, 128, M8, &err)) die(&err);
    if (dm && (lmc_kv_init(&dkv, dm, be, ctx, &err) || lmc_acts_init(&da, dm, be, 128, 2, &err))) die(&err);
    /* a 100-token context first, then every forward at position 100 */
    if (lmc_model_forward(m, be, &a, &kv, tk, 100, 0, lg, false, &err)) die(&err);
    if (dm && lmc_model_forward(dm, be, &da, &dkv, tk, 100, 0, lg, false, &err)) die(&err);
    struct lmc_sampler smp;
    struct lmc_sampler_params sp;
    lmc_sampler_defaults(&sp);
    sp.temperature = 0;
    if (lmc_sampler_init(&smp, &sp, V, &err)) die(&err);
    enum { ONE, ALL, LAST, D1, D1W, D2, ACC, AFT, NT };
    int64_t Ms[64], nM = 0; /* M = 2..max(K+1, 8) */
    for (int64_t M = 2; M <= M8 && nM < 64; M++) Ms[nM++] = M;
    static double t[NT][64][64];
    for (int r = 0; r < reps; r++) {
        double t0 = clk(cpu);
        lmc_model_forward(m, be, &a, &kv, tk, 1, 100, lg, false, &err);
        t[ONE][0][r] = clk(cpu) - t0;
        for (int64_t j = 0; j < nM; j++) {
            t0 = clk(cpu);
            lmc_model_forward(m, be, &a, &kv, tk, Ms[j], 100, lg, true, &err);
            t[ALL][j][r] = clk(cpu) - t0;
        }
        /* as in a round: M - 1 draft forwards first (the pool's worker idle, the draft's weights in cache) */
        for (int64_t j = 0; dm && j < nM; j++) {
            for (int64_t d = 0; d < Ms[j] - 1; d++) lmc_model_forward(dm, be, &da, &dkv, tk + d, 1, 100 + d, lg, false, &err);
            t0 = clk(cpu);
            lmc_model_forward(m, be, &a, &kv, tk, Ms[j], 100, lg, true, &err);
            t[AFT][j][r] = clk(cpu) - t0;
        }
        t0 = clk(cpu);
        lmc_model_forward(m, be, &a, &kv, tk, K + 1, 100, lg, false, &err);
        t[LAST][0][r] = clk(cpu) - t0;
        lmc_model_forward(m, be, &a, &kv, tk, K + 1, 100, lg, true, &err);
        t0 = clk(cpu);
        for (int64_t i = 0; i <= K; i++) lmc_sampler_probs(&smp, lg + i * V, tk, 100 + i, p + i * V);
        uint64_t rng = 1;
        lmc_spec_accept(p, NULL, V, tk + 100, K, &rng, out);
        t[ACC][0][r] = clk(cpu) - t0;
        if (dm) {
            t0 = clk(cpu);
            lmc_model_forward(dm, be, &da, &dkv, tk, 1, 100, lg, false, &err);
            t[D1][0][r] = clk(cpu) - t0;
            t0 = clk(cpu);
            lmc_model_forward(dm, be, &da, &dkv, tk, 1, 100, lg, false, &err);
            t[D1W][0][r] = clk(cpu) - t0;
            t0 = clk(cpu);
            lmc_model_forward(dm, be, &da, &dkv, tk, 2, 100, lg, false, &err);
            t[D2][0][r] = clk(cpu) - t0;
        }
    }
    double one = bench_median_upper(t[ONE][0], reps);
    printf("## costs (units of a 1-token target forward = %.3f ms of %s; medians of %d, interleaved)\n\n", one * 1e3,
           cpu ? "process CPU time" : "wall time", reps);
    printf("| part of a round | ms | x 1-token forward |\n|---|---|---|\n");
    /* the roofline of lmc_spec_round_cost: slope from 2 rows (memory-bound),
     * row = the cost per row at the largest M (the most compute-bound) */
    for (int64_t j = 0; j < nM; j++) {
        double v = bench_median_upper(t[ALL][j], reps);
        printf("| target forward, %lld tokens, all logits | %.3f | %.3f |\n", (long long)Ms[j], v * 1e3, v / one);
        if (Ms[j] == 2) cm->slope = LMC_MAX(0, v / one - 1);
        cm->row = v / one / (double)Ms[j];
    }
    for (int64_t j = 0; dm && j < nM; j++) {
        double v = bench_median_upper(t[AFT][j], reps);
        printf("| target forward, %lld tokens, all logits, after %lld draft forwards | %.3f | %.3f |\n", (long long)Ms[j],
               (long long)(Ms[j] - 1), v * 1e3, v / one);
    }
    double v = bench_median_upper(t[LAST][0], reps);
    printf("| target forward, %lld tokens, last logit only | %.3f | %.3f |\n", (long long)(K + 1), v * 1e3, v / one);
    v = bench_median_upper(t[ACC][0], reps);
    printf("| greedy probabilities of %lld rows + acceptance | %.3f | %.4f |\n", (long long)(K + 1), v * 1e3, v / one);
    double cd = 1; /* no draft: the target as its own */
    if (dm) {
        cd = bench_median_upper(t[D1][0], reps) / one;
        printf("| draft forward, 1 token, right after a target forward | %.3f | %.3f |\n", cd * one * 1e3, cd);
        double w = bench_median_upper(t[D1W][0], reps) / one;
        printf("| draft forward, 1 token, right after a draft forward | %.3f | %.3f |\n", w * one * 1e3, w);
        /* a round of K drafts: the first after the target's forward, the rest after the draft's */
        cd = (cd + (double)(K - 1) * w) / (double)K;
        v = bench_median_upper(t[D2][0], reps);
        printf("| draft forward, 2 tokens (catch-up) | %.3f | %.3f |\n", v * 1e3, v / one);
        printf("\ndraft cost per token in a round of %lld drafts: %.3f; weight bytes: draft %zu, target %zu: ratio %.3f (the default draft cost)\n",
               (long long)K, cd, dm->weight_bytes, m->weight_bytes, (double)dm->weight_bytes / (double)m->weight_bytes);
    }
    cm->draft = cd;
    printf("\nverification model: max(1 + %.3f (M - 1), %.3f M) (lmc_spec_round_cost's slope and row)\n\n", cm->slope,
           cm->row);
    lmc_sampler_free(&smp);
    lmc_kv_free(&kv);
    lmc_acts_free(&a);
    if (dm) {
        lmc_kv_free(&dkv);
        lmc_acts_free(&da);
    }
    free(lg);
    free(p);
}

/* the cost model over acceptance rates with the measured costs */
static void model_table(int64_t K, const struct lmc_spec_cost *cm, const struct lmc_spec_cost *def) {
    printf("## cost model: speedup = (1 - a^(K+1)) / (1 - a) / (K d + max(1 + s K, r (K+1))), d = %.3f, s = %.3f, "
           "r = %.3f\n\n",
           cm->draft, cm->slope, cm->row);
    printf("| acceptance a |");
    for (int64_t k = 1; k <= K; k++) printf(" K=%lld |", (long long)k);
    printf(" best K | choose_k (measured costs) | choose_k (defaults d %.3f, s %.2f, r %.2f) | old 1+a/(1-a) |\n|---|",
           def->draft, def->slope, def->row);
    for (int64_t k = 0; k <= K + 3; k++) printf("---|");
    printf("\n");
    static const double as[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
    for (int i = 0; i < 10; i++) {
        double al = as[i], tok = 1, ak = 1, best = 1;
        int64_t bk = 0;
        printf("| %.1f |", al);
        for (int64_t k = 1; k <= K; k++) {
            ak *= al;
            tok += ak;
            double sp = tok / lmc_spec_round_cost(cm, k);
            if (sp > best) best = sp, bk = k;
            printf(" %.2fx |", sp);
        }
        printf(" %lld | %lld | %lld | %lld |\n", (long long)bk, (long long)lmc_spec_choose_k(al, K, cm),
               (long long)lmc_spec_choose_k(al, K, def), (long long)lmc_spec_next_k(al, K));
    }
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_spec MODEL_DIR [-n tokens] [-r rounds] [-k K] [-t threads] [-d DRAFT] "
                        "[-p prompts] [-m reps] [-s PLSHODF|C] [-cpu 0|1] [-u unit bytes]\n");
        return 2;
    }
    int64_t ntok = 128, rounds = 5, K = 4, threads = 1, nprompt = 3, reps = 21, cpu = 0, unit = 0;
    const char *draft_dir = NULL, *sel = "PLSHODF";
    for (int i = 2; i + 1 < argc; i += 2) {
        int64_t v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "-n")) ntok = v;
        else if (!strcmp(argv[i], "-r")) rounds = LMC_MAX(1, LMC_MIN(v, MAXR));
        else if (!strcmp(argv[i], "-k")) K = LMC_MAX(1, LMC_MIN(v, 60));
        else if (!strcmp(argv[i], "-t")) threads = v;
        else if (!strcmp(argv[i], "-d")) draft_dir = argv[i + 1];
        else if (!strcmp(argv[i], "-p")) nprompt = v;
        else if (!strcmp(argv[i], "-m")) reps = LMC_MAX(1, LMC_MIN(v, 64));
        else if (!strcmp(argv[i], "-s")) sel = argv[i + 1];
        else if (!strcmp(argv[i], "-cpu")) cpu = v;
        else if (!strcmp(argv[i], "-u")) unit = v;
    }
    lmc_err err = {0};
    struct lmc_model m, dm;
    struct lmc_tokenizer *tok;
    struct lmc_backend be;
    if (lmc_model_load(&m, argv[1], NULL, &err) || lmc_tokenizer_load(&tok, argv[1], &err) ||
        lmc_backend_cpu_init(&be, (int)threads, &err))
        die(&err);
    if (draft_dir && lmc_model_load(&dm, draft_dir, NULL, &err)) die(&err);
    if (unit > 0) ((struct lmc_cpu_ctx *)be.ctx)->mm_unit_bytes = unit; /* the matmul scheduler's claim grain */
    int64_t L = m.cfg.num_layers, ctx = 1024;
    struct lmc_spec_opts conf[NCONF] = {
        {0},
        {.mode = LMC_SPEC_LOOKUP, .draft_tokens = K, .lookup_ngram = 3, .adaptive = true},
        {.mode = LMC_SPEC_SELF, .draft_tokens = K, .self_layers = LMC_MAX(1, L / 4), .adaptive = true},
        {.mode = LMC_SPEC_SELF, .draft_tokens = K, .self_layers = LMC_MAX(1, L / 2), .adaptive = true},
        {.mode = LMC_SPEC_DRAFT, .draft_tokens = K, .adaptive = false},
        {.mode = LMC_SPEC_DRAFT, .draft_tokens = K, .adaptive = true},
        {.mode = LMC_SPEC_DRAFT, .draft_tokens = K, .adaptive = false},
    };
    const char letters[NCONF + 1] = "PLSHODF";
    bool on[NCONF];
    for (int c = 0; c < NCONF; c++) on[c] = strchr(sel, letters[c]) && (c < 5 || draft_dir);
    on[0] = on[0] || strcmp(sel, "C"); /* plain is every comparison's base */
    char names[NCONF][64];
    snprintf(names[0], 64, "plain");
    snprintf(names[1], 64, "prompt lookup n=3");
    snprintf(names[2], 64, "self-spec L=%lld of %lld", (long long)conf[2].self_layers, (long long)L);
    snprintf(names[3], 64, "self-spec L=%lld of %lld", (long long)conf[3].self_layers, (long long)L);
    snprintf(names[4], 64, "target as its own draft, K=%lld", (long long)K);
    snprintf(names[5], 64, "draft model, adaptive K<=%lld", (long long)K);
    snprintf(names[6], 64, "draft model, K=%lld", (long long)K);
    struct lmc_gen_opts g;
    memset(&g, 0, sizeof g);
    lmc_sampler_defaults(&g.sampling);
    g.sampling.temperature = 0;
    g.max_new = ntok;
    g.ignore_eos = true;
    int np = (int)LMC_MIN(nprompt, (int64_t)(sizeof prompts / sizeof *prompts));
    struct lmc_spec_cost cm = {0}, def = {1, 0.02, 0.25};
    if (draft_dir) def.draft = LMC_MAX(0.01, (double)dm.weight_bytes / (double)m.weight_bytes);
    costs(&m, draft_dir ? &dm : NULL, &be, K, (int)reps, cpu != 0, &cm);
    model_table(K, &cm, &def);
    fflush(stdout);
    if (!strcmp(sel, "C")) np = 0;
    if (np)
        printf("model %s, draft %s, %lld threads, %lld greedy tokens per prompt, K=%lld, %lld rounds\n\n", argv[1],
               draft_dir ? draft_dir : "-", (long long)threads, (long long)ntok, (long long)K, (long long)rounds);
    if (np)
        printf("| prompt | configuration | decode tok/s (median) | vs plain | drafts accepted | tokens per target "
               "forward | ms per round: draft / verify / accept | plain rounds |\n|---|---|---|---|---|---|---|---|\n");
    for (int pi = 0; pi < np; pi++) {
        int32_t *ids;
        int64_t n;
        if (lmc_tokenizer_encode(tok, prompts[pi], strlen(prompts[pi]), true, &ids, &n, &err)) die(&err);
        double tps[NCONF][MAXR];
        struct lmc_spec_stats st[NCONF] = {{0}};
        int32_t *want = NULL;
        for (int64_t r = -1; r < rounds; r++) { /* round -1: correctness + warm-up */
            for (int ci = 0; ci < NCONF; ci++) {
                int c = (int)((ci + (r < 0 ? 0 : r)) % NCONF); /* rotate the order */
                if (r < 0) c = ci; /* plain first: the reference ids */
                if (!on[c]) continue;
                struct lmc_gen_result res;
                if (c == 0) {
                    struct lmc_session s;
                    if (lmc_session_init(&s, &m, &be, tok, ctx, 512, &err) ||
                        lmc_session_generate(&s, ids, n, &g, NULL, NULL, &res, &err))
                        die(&err);
                    lmc_session_free(&s);
                } else {
                    struct lmc_spec sp;
                    struct lmc_spec_stats one;
                    const struct lmc_model *d = c >= 5 ? &dm : &m;
                    if (lmc_spec_init(&sp, &m, &be, tok, d, &conf[c], ctx, &err) ||
                        lmc_spec_generate(&sp, ids, n, &g, NULL, NULL, &res, &one, &err))
                        die(&err);
                    lmc_spec_free(&sp);
                    if (r >= 0) {
                        st[c].rounds += one.rounds;
                        st[c].drafted += one.drafted;
                        st[c].accepted += one.accepted;
                        st[c].plain_rounds += one.plain_rounds;
                        st[c].draft_s += one.draft_s;
                        st[c].verify_s += one.verify_s;
                        st[c].accept_s += one.accept_s;
                    }
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
            if (!on[c]) continue;
            double md = bench_median_upper(tps[c], (int)rounds);
            if (c == 0) base = md;
            char acc[64] = "-", per[32] = "1.00", ms[96] = "-", pr[32] = "-";
            if (c) {
                double R = (double)LMC_MAX(1, st[c].rounds);
                snprintf(acc, sizeof acc, "%lld/%lld (%.0f%%)", (long long)st[c].accepted, (long long)st[c].drafted,
                         st[c].drafted ? 100.0 * (double)st[c].accepted / (double)st[c].drafted : 0.0);
                snprintf(per, sizeof per, "%.2f", (double)(ntok * rounds) / R);
                snprintf(ms, sizeof ms, "%.3f / %.3f / %.4f", st[c].draft_s / R * 1e3, st[c].verify_s / R * 1e3,
                         st[c].accept_s / R * 1e3);
                snprintf(pr, sizeof pr, "%lld", (long long)st[c].plain_rounds);
            }
            printf("| %d | %s | %.1f | %.2fx | %s | %s | %s | %s |\n", pi + 1, names[c], md, md / base, acc, per, ms,
                   pr);
        }
        fflush(stdout);
        free(want);
        free(ids);
    }
    lmc_tokenizer_free(tok);
    lmc_backend_cpu_free(&be);
    if (draft_dir) lmc_model_free(&dm);
    lmc_model_free(&m);
    return 0;
}
