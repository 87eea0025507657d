/* bench_mamba_model.c — one timing of a Hugging Face Mamba / Mamba-2 folder
 * on the CPU through the model layer (lmc_model_load + lmc_model_forward,
 * the path of `lmc generate`), for bench/run_ssm_llamacpp.sh, which runs it
 * interleaved with llama-bench on the same weights:
 *   prefill: T random tokens from an empty state, logits of the last row
 *            (after a 16-token warm-up pass that touches every weight);
 *   decode:  after a context of D tokens (prefilled in chunks of T), N
 *            greedy steps of one token (full logits row each, argmax on the
 *            host), tokens/s of the N steps alone.
 * Prints one line: `prefill_tps X decode_tps Y` (one run; the script takes
 * medians over runs).
 *   usage: bench_mamba_model -m DIR [-t threads] [-T prefill] [-N decode] [-D depth] */
#include "core/core.h"
#include "model/model.h"
#include "ops/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_mamba_model: %s: %s\n", what, e->msg);
    exit(1);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 2;
    int64_t T = 512, N = 128, D = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-T")) T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-N")) N = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-D")) D = atoll(argv[i + 1]);
    }
    if (!dir || threads < 1 || T < 1 || N < 1 || D < 0) {
        fprintf(stderr, "usage: bench_mamba_model -m DIR [-t threads] [-T prefill] [-N decode] [-D depth]\n");
        return 2;
    }
    lmc_err err = {0};
    struct lmc_backend be;
    struct lmc_model m;
    if (lmc_backend_cpu_init(&be, threads, &err)) die("backend", &err);
    if (lmc_model_load(&m, dir, NULL, &err)) die(dir, &err);
    const int64_t V = m.cfg.vocab_size;
    struct lmc_acts a;
    struct lmc_kv kv;
    if (lmc_acts_init(&a, &m, &be, T, 1, &err)) die("acts", &err);
    int64_t ctx = LMC_MAX(T, D) + N + 1;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    LMC_ASSERT(ids && logits);
    uint64_t s = 12345;
    for (int64_t i = 0; i < T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    /* warm-up: every weight page touched once (the folder is mapped) */
    if (lmc_kv_init(&kv, &m, &be, ctx, &err)) die("state", &err);
    if (lmc_model_forward(&m, &be, &a, &kv, ids, LMC_MIN(T, 16), 0, logits, false, &err)) die("warm-up", &err);
    lmc_kv_free(&kv);
    /* prefill */
    if (lmc_kv_init(&kv, &m, &be, ctx, &err)) die("state", &err);
    double t0 = lmc_time_now();
    if (lmc_model_forward(&m, &be, &a, &kv, ids, T, 0, logits, false, &err)) die("prefill", &err);
    double prefill = (double)T / (lmc_time_now() - t0);
    lmc_kv_free(&kv);
    /* decode after D tokens of context */
    if (lmc_kv_init(&kv, &m, &be, ctx, &err)) die("state", &err);
    for (int64_t p = 0; p < D; p += T)
        if (lmc_model_forward(&m, &be, &a, &kv, ids, LMC_MIN(T, D - p), p, logits, false, &err))
            die("context", &err);
    int32_t tok = ids[0];
    t0 = lmc_time_now();
    for (int64_t i = 0; i < N; i++) {
        if (lmc_model_forward(&m, &be, &a, &kv, &tok, 1, D + i, logits, false, &err)) die("decode", &err);
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        tok = (int32_t)best;
    }
    double decode = (double)N / (lmc_time_now() - t0);
    printf("prefill_tps %.2f decode_tps %.2f\n", prefill, decode);
    lmc_kv_free(&kv);
    lmc_acts_free(&a);
    free(ids);
    free(logits);
    lmc_model_free(&m);
    lmc_backend_cpu_free(&be);
    return 0;
}
