/* bench_rl.c — rollout throughput of `lmc rl` against plain serving at the
 * same batch: B = prompts x group requests of max-new tokens through the
 * scheduler, (a) as GRPO's rollouts on the inference view of the policy's
 * f32 training arena (lmc_rl_step's gen_s, lr 0 so every round samples the
 * same policy), (b) on the model loaded for serving (lmc_model_load, its
 * own scheduler, the same prompts, seeds and sampling). Both time the
 * scheduler's start, the submissions and the wait until idle. Rounds
 * interleave (a) and (b); prints the medians, their ratio, and the RL
 * step's split between generation and training.
 * Usage: bench_rl MODEL_DIR [prompts group max_new rounds threads] */
#include "core/core.h"
#include "infer/scheduler.h"
#include "ops/backend.h"
#include "train/rl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void on_ev(void *user, const struct lmc_sched_event *ev) {
    if (ev->kind == LMC_EV_TOKEN) (*(int64_t *)user)++;
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
    double a[64], b[64], gen = 0, train = 0;
    for (int64_t r = 0; r < R; r++) {
        struct lmc_rl_metrics mt;
        if (lmc_rl_step(&rl, &mt, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        a[r] = (double)mt.rollout_tokens / mt.gen_s;
        gen += mt.gen_s, train += mt.train_s;
        /* plain serving, the same requests (seeds as rl's round r) */
        struct lmc_sched_opts so;
        lmc_sched_opts_default(&so);
        so.ctx = rl.T + 1;
        so.max_batch = (int)LMC_MIN(P * G, 256);
        so.kv_blocks = P * G * (so.ctx / so.block_size + 2) + 16;
        double t0 = now_s();
        struct lmc_sched *sc;
        if (lmc_sched_init(&sc, &m, &be, tok, &so, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        int64_t toks = 0;
        for (int64_t j = 0; j < P * G; j++) {
            struct lmc_request q = {0};
            lmc_sampler_defaults(&q.sampling);
            q.sampling.temperature = 1.0;
            q.sampling.seed = o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)r * 1000003ull + (uint64_t)j;
            q.max_tokens = N;
            q.top_logprobs = 0;
            uint64_t id;
            if (lmc_sched_submit(sc, t[j / G].ids, t[j / G].n_ids, &q, on_ev, &toks, &id, &err)) return 1;
        }
        lmc_sched_wait_idle(sc, 1e9, NULL);
        lmc_sched_free(sc);
        b[r] = (double)toks / (now_s() - t0);
    }
    double sa[64], sb[64];
    memcpy(sa, a, sizeof a), memcpy(sb, b, sizeof b);
    qsort(sa, (size_t)R, sizeof(double), cmp_d);
    qsort(sb, (size_t)R, sizeof(double), cmp_d);
    printf("model %s, batch %lld (%lld prompts x %lld), max_new %lld, %lld rounds, %d threads\n", dir,
           (long long)(P * G), (long long)P, (long long)G, (long long)N, (long long)R, th);
    printf("rl rollouts:   median %.0f tok/s\nplain serving: median %.0f tok/s\nratio rl/serving: %.3f\n",
           sa[R / 2], sb[R / 2], sa[R / 2] / sb[R / 2]);
    printf("rl step split: generation %.1f%%, training %.1f%% (of gen+train time)\n", 100 * gen / (gen + train),
           100 * train / (gen + train));
    lmc_model_free(&m);
    lmc_rl_free(&rl);
    lmc_rl_tasks_free(t, n);
    lmc_tokenizer_free(tok);
    lmc_backend_cpu_free(&be);
    return 0;
}
