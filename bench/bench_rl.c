/* bench_rl.c — rollout throughput of `lmc rl` against plain serving at the
 * same batch: B = prompts x group requests of max-new tokens through the
 * scheduler, (a) as GRPO's rollouts on the inference view of the policy's
 * f32 training arena (lmc_rl_step's gen_s, lr 0 so every round samples the
 * same policy), and the same requests through the same scheduler code on
 * (a') the inference view of the policy's arena and (b) the model loaded
 * for serving (lmc_model_load): each times the scheduler's start, the
 * submissions and the wait until idle, in wall and in process-CPU seconds
 * (the latter robust to a loaded machine). Rounds alternate the order of
 * (a') and (b); prints medians, ratios, and the RL step's split between
 * generation and training.
 * Usage: bench_rl MODEL_DIR [prompts group max_new rounds threads] */
#include "core/core.h"
#include "infer/scheduler.h"
#include "ops/backend.h"
#include "train/rl.h"
#include "train/rl_model.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void on_ev(void *user, const struct lmc_sched_event *ev) {
    if (ev->kind == LMC_EV_TOKEN) (*(int64_t *)user)++;
}

/* B = P*G requests (seeds as lmc_rl_step's round r) on model m: tokens per
 * wall second and per process-CPU second (robust to a loaded machine) */
static int serve(const struct lmc_model *m, const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                 const struct lmc_rl_task *t, int64_t P, int64_t G, int64_t N, int64_t T, uint64_t seed,
                 int64_t r, double *wall, double *cpu) {
    lmc_err err = {0};
    struct lmc_sched_opts so;
    lmc_sched_opts_default(&so);
    so.ctx = T + 1;
    so.max_batch = (int)LMC_MIN(P * G, 256);
    so.kv_blocks = P * G * (so.ctx / so.block_size + 2) + 16;
    double t0 = bench_wall(), c0 = bench_cpu();
    struct lmc_sched *sc;
    if (lmc_sched_init(&sc, m, be, tok, &so, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int64_t toks = 0;
    for (int64_t j = 0; j < P * G; j++) {
        struct lmc_request q = {0};
        lmc_sampler_defaults(&q.sampling);
        q.sampling.temperature = 1.0;
        q.sampling.seed = seed * 0x9E3779B97F4A7C15ull + (uint64_t)r * 1000003ull + (uint64_t)j;
        q.max_tokens = N;
        q.top_logprobs = 0;
        uint64_t id;
        if (lmc_sched_submit(sc, t[j / G].ids, t[j / G].n_ids, &q, on_ev, &toks, &id, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    lmc_sched_wait_idle(sc, 1e9, NULL);
    lmc_sched_free(sc);
    *wall = (double)toks / (bench_wall() - t0);
    *cpu = (double)toks / (bench_cpu() - c0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_rl MODEL_DIR [prompts group max_new rounds threads]\n");
        return 2;
    }
    const char *dir = argv[1];
    int64_t P = argc > 2 ? atoll(argv[2]) : 4, G = argc > 3 ? atoll(argv[3]) : 8;
    int64_t N = argc > 4 ? atoll(argv[4]) : 64, R = argc > 5 ? atoll(argv[5]) : 5;
    int th = argc > 6 ? atoi(argv[6]) : 1;
    if (R < 1 || R > 64 || P < 1 || G < 1 || N < 1) return 2;
    lmc_err err = {0};
    struct lmc_backend be;
    struct lmc_tokenizer *tok;
    if (lmc_backend_cpu_init(&be, th, &err) || lmc_tokenizer_load(&tok, dir, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char jl[4096] = "";
    for (int64_t p = 0; p < P; p++) {
        char line[128];
        snprintf(line, sizeof line, "{\"prompt\": \"task number %lld says\", \"answer\": \"e\"}\n", (long long)p);
        strncat(jl, line, sizeof jl - strlen(jl) - 1);
    }
    struct lmc_rl_task *t;
    int64_t n;
    struct lmc_rl_opts o;
    lmc_rl_opts_default(&o);
    o.group = G, o.prompts = P, o.max_new = N, o.lr = 0, o.grpo.beta = 0;
    o.extract = LMC_EXTRACT_REGEX, o.regex = "([aeiou])";
    struct lmc_rl rl;
    struct lmc_model m;
    struct lmc_model_opts mo = {.wdtype = LMC_WDTYPE_F32, .be = &be};
    if (lmc_rl_tasks_parse(jl, strlen(jl), "bench", &t, &n, &err) || lmc_rl_init(&rl, dir, &be, tok, t, n, &o, &err) ||
        lmc_model_load(&m, dir, &mo, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double a[64], b[64], ca[64], cb[64], rs[64], gen = 0, train = 0;
    struct lmc_model view;
    for (int64_t r = 0; r < R; r++) {
        struct lmc_rl_metrics mt;
        if (lmc_rl_step(&rl, &mt, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        rs[r] = (double)mt.rollout_tokens / mt.gen_s;
        gen += mt.gen_s, train += mt.train_s;
        /* the same requests on (a) the policy's arena, (b) the loaded model;
         * the order alternates between rounds */
        lmc_rl_model_view(&view, &rl.pol);
        for (int k = 0; k < 2; k++) {
            bool on_view = (k == 0) == (r % 2 == 0);
            double w, c;
            if (serve(on_view ? &view : &m, &be, tok, t, P, G, N, rl.T, o.seed, r, &w, &c)) return 1;
            (on_view ? a : b)[r] = w;
            (on_view ? ca : cb)[r] = c;
        }
    }
    printf("model %s, batch %lld (%lld prompts x %lld), max_new %lld, %lld rounds, %d threads\n", dir,
           (long long)(P * G), (long long)P, (long long)G, (long long)N, (long long)R, th);
    printf("rl_step rollouts (wall):          median %.0f tok/s\n", bench_median_upper(rs, R));
    printf("policy arena view (wall / cpu):   median %.0f / %.0f tok/s\n", bench_median_upper(a, R), bench_median_upper(ca, R));
    printf("loaded model, serving (wall/cpu): median %.0f / %.0f tok/s\n", bench_median_upper(b, R), bench_median_upper(cb, R));
    printf("ratio view/serving: wall %.3f, cpu %.3f\n", bench_median_upper(a, R) / bench_median_upper(b, R), bench_median_upper(ca, R) / bench_median_upper(cb, R));
    printf("rl step split: generation %.1f%%, training %.1f%% (of gen+train time)\n", 100 * gen / (gen + train),
           100 * train / (gen + train));
    lmc_model_free(&m);
    lmc_rl_free(&rl);
    lmc_rl_tasks_free(t, n);
    lmc_tokenizer_free(tok);
    lmc_backend_cpu_free(&be);
    return 0;
}
