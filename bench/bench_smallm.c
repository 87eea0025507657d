/* bench_smallm.c — what M activation rows cost on the CPU, before and after
 * the small-M kernels (ops/cpu/matmul_smallm.c, quant/qmatmul_smallm.c), in
 * one process: "before" is the same backend with them switched off
 * (ctx->mm_small_max = 0, qctx->small_max = 0: matmul.c's 2x4/4x4 blocks,
 * qmatmul.c's per-row and four-row kernels), interleaved with "after".
 *  1. A model forward of M tokens at position 100 with all logits (a
 *     speculative verification), M = 1, 2, 4, 5, 8, 16, 24, 32: median
 *     time and its ratio to the 1-token forward of the same setting.
 *  2. Greedy decoding, plain against prompt lookup (n-gram 3) and
 *     self-speculation (first half of the layers), before and after:
 *     tokens/s and the speed-up over plain in the same setting; every
 *     configuration must give plain decoding's ids (checked first).
 * Rounds rotate the order of the configurations; medians of the rounds.
 * Each figure is given twice: by wall time, and by the process's CPU time
 * (with one thread every op runs on the calling thread, so CPU time is the
 * work done, less what other programs on a shared machine take from the
 * wall clock; for decoding it covers the whole call, the prompt included).
 *
 * usage: bench_smallm MODEL_DIR [-r rounds 9] [-n tokens 128] [-t threads 1] */
#include "core/core.h"
#include "infer/session.h"
#include "infer/spec.h"
#include "model/model.h"
#include "ops/cpu/ops_cpu.h"
#include "quant/qmatmul.h"
#include "tokenizer/tokenizer.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXR 64
#define NM 8
static const int64_t Ms[NM] = {1, 2, 4, 5, 8, 16, 24, 32};

static const char *prompt =
    "O give thanks unto the LORD; for he is good: for his mercy endureth for ever. O give thanks unto the "
    "God of gods: for his mercy endureth for ever. O give thanks to the Lord of lords:";

/* after = true: the small-M kernels on (the defaults); false: off. */
static void set_kernels(struct lmc_backend *be, bool after) {
    struct lmc_cpu_ctx *c = be->ctx;
    c->mm_small_max = after ? LMC_CPU_MM_SMALL_MAX : 0;
    c->qctx->small_max = after ? LMC_QSMALL_MAX : 0;
}

static int fail(const lmc_err *err) {
    fprintf(stderr, "bench_smallm: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_smallm MODEL_DIR [-r rounds] [-n tokens] [-t threads]\n");
        return 2;
    }
    int64_t rounds = 9, ntok = 128, threads = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        int64_t v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "-r")) rounds = LMC_MAX(1, LMC_MIN(v, MAXR));
        else if (!strcmp(argv[i], "-n")) ntok = LMC_MAX(1, v);
        else if (!strcmp(argv[i], "-t")) threads = LMC_MAX(1, v);
    }
    lmc_err err = {0};
    struct lmc_model m;
    struct lmc_tokenizer *tok;
    struct lmc_backend be;
    if (lmc_model_load(&m, argv[1], NULL, &err) || lmc_tokenizer_load(&tok, argv[1], &err) ||
        lmc_backend_cpu_init(&be, (int)threads, &err))
        return fail(&err);
    int64_t ctx = 1024, V = m.cfg.vocab_size;
    printf("model %s, %lld threads, %lld rounds (medians), before = small-M kernels off, after = on "
           "(float: mm_small_max %d; quantized: every M)\n\n",
           argv[1], (long long)threads, (long long)rounds, LMC_CPU_MM_SMALL_MAX);

    /* 1. forward of M tokens, all logits */
    {
        struct lmc_kv kv;
        struct lmc_acts a;
        float *lg = malloc((size_t)(Ms[NM - 1] * V) * sizeof *lg);
        int32_t ids[64];
        for (int i = 0; i < 64; i++) ids[i] = 100 + i;
        if (!lg || lmc_kv_init(&kv, &m, &be, ctx, &err) || lmc_acts_init(&a, &m, &be, 128, Ms[NM - 1], &err))
            return fail(&err);
        static double t[2][2][NM][MAXR]; /* [wall, cpu][before, after] */
        int reps = 5; /* forwards per timed sample */
        for (int64_t r = -1; r < rounds; r++)
            for (int k = 0; k < 2 * NM; k++) {
                int c = (int)((k + (r < 0 ? 0 : r)) % (2 * NM)), after = c / NM, mi = c % NM;
                set_kernels(&be, after);
                double t0 = lmc_time_now(), c0 = bench_cpu();
                for (int i = 0; i < reps; i++)
                    if (lmc_model_forward(&m, &be, &a, &kv, ids, Ms[mi], 100, lg, true, &err)) return fail(&err);
                if (r >= 0) {
                    t[0][after][mi][r] = (lmc_time_now() - t0) / reps;
                    t[1][after][mi][r] = (bench_cpu() - c0) / reps;
                }
            }
        for (int clk = 0; clk < 2; clk++) {
            double med[2][NM];
            for (int v = 0; v < 2; v++)
                for (int i = 0; i < NM; i++) med[v][i] = bench_median(t[clk][v][i], rounds);
            printf("Forward of M tokens, all logits, by %s:\n\n", clk ? "CPU time" : "wall time");
            printf("| M | before: ms | before: / 1 token | after: ms | after: / 1 token | before / after |\n");
            printf("|---|---|---|---|---|---|\n");
            for (int i = 0; i < NM; i++)
                printf("| %lld | %.3f | %.2fx | %.3f | %.2fx | %.2fx |\n", (long long)Ms[i], med[0][i] * 1e3,
                       med[0][i] / med[0][0], med[1][i] * 1e3, med[1][i] / med[1][0], med[0][i] / med[1][i]);
            printf("\n");
        }
        free(lg);
        lmc_kv_free(&kv);
        lmc_acts_free(&a);
    }

    /* 2. greedy decoding: plain, prompt lookup, self-speculation; before and after */
    enum { NC = 3 };
    struct lmc_spec_opts conf[NC] = {
        {0},
        {.mode = LMC_SPEC_LOOKUP, .draft_tokens = 4, .lookup_ngram = 3, .adaptive = true},
        {.mode = LMC_SPEC_SELF, .draft_tokens = 4, .self_layers = LMC_MAX(1, m.cfg.num_layers / 2), .adaptive = true},
    };
    char names[NC][64] = {"plain", "prompt lookup n=3"};
    snprintf(names[2], 64, "self-spec L=%lld of %lld", (long long)conf[2].self_layers, (long long)m.cfg.num_layers);
    struct lmc_gen_opts g;
    memset(&g, 0, sizeof g);
    lmc_sampler_defaults(&g.sampling);
    g.sampling.temperature = 0;
    g.max_new = ntok;
    g.ignore_eos = true;
    int32_t *ids, *want = NULL;
    int64_t n;
    if (lmc_tokenizer_encode(tok, prompt, strlen(prompt), true, &ids, &n, &err)) return fail(&err);
    static double tps[2][2][NC][MAXR]; /* [wall, cpu][before, after] */
    struct lmc_spec_stats st[NC] = {{0}};
    for (int64_t r = -1; r < rounds; r++)
        for (int k = 0; k < 2 * NC; k++) {
            int c = (int)((k + (r < 0 ? 0 : r)) % (2 * NC)), after = c / NC, ci = c % NC;
            set_kernels(&be, after);
            struct lmc_gen_result res;
            double c0 = bench_cpu();
            if (ci == 0) {
                struct lmc_session s;
                if (lmc_session_init(&s, &m, &be, tok, ctx, 512, &err) ||
                    lmc_session_generate(&s, ids, n, &g, NULL, NULL, &res, &err))
                    return fail(&err);
                lmc_session_free(&s);
            } else {
                struct lmc_spec sp;
                if (lmc_spec_init(&sp, &m, &be, tok, &m, &conf[ci], ctx, &err) ||
                    lmc_spec_generate(&sp, ids, n, &g, NULL, NULL, &res, after ? &st[ci] : NULL, &err))
                    return fail(&err);
                lmc_spec_free(&sp);
            }
            if (r < 0 && !want) {
                want = res.ids;
                res.ids = NULL;
            } else if (r < 0 && (res.n_ids != ntok || memcmp(res.ids, want, (size_t)ntok * sizeof *want))) {
                fprintf(stderr, "bench_smallm: %s (%s) gave other ids than plain greedy\n", names[ci],
                        after ? "after" : "before");
                return 1;
            }
            if (r >= 0) {
                tps[0][after][ci][r] = (double)res.n_ids / res.decode_s;
                tps[1][after][ci][r] = (double)res.n_ids / (bench_cpu() - c0);
            }
            lmc_gen_result_free(&res);
        }
    printf("%lld greedy tokens (ignore EOS), K = 4 adaptive; every configuration gave plain decoding's ids\n\n",
           (long long)ntok);
    for (int clk = 0; clk < 2; clk++) {
        printf("%s:\n\n", clk ? "By CPU time (whole call, prompt included)" : "By wall time (decoding only)");
        printf("| configuration | before: tok/s | before: vs plain | after: tok/s | after: vs plain | tokens per target forward |\n");
        printf("|---|---|---|---|---|---|\n");
        double base[2] = {0, 0};
        for (int ci = 0; ci < NC; ci++) {
            double md[2];
            for (int v = 0; v < 2; v++) {
                md[v] = bench_median(tps[clk][v][ci], rounds);
                if (ci == 0) base[v] = md[v];
            }
            char per[32] = "1.00";
            if (ci && st[ci].rounds) snprintf(per, sizeof per, "%.2f", (double)ntok / (double)st[ci].rounds);
            printf("| %s | %.1f | %.2fx | %.1f | %.2fx | %s |\n", names[ci], md[0], md[0] / base[0], md[1],
                   md[1] / base[1], per);
        }
        printf("\n");
    }
    free(want);
    free(ids);
    lmc_tokenizer_free(tok);
    lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
    return 0;
}
