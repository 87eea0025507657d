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
 * With -B n (n > 1), instead: the serving path (lmc_model_forward_batch
 * over a pool of n state slots, as the scheduler drives it), n sequences
 * each prefilled with 8 tokens, then N decode steps of all n rows in one
 * batched step, against N rounds of n one-row steps (the per-sequence loop
 * the batched step replaced); prints `batched_tps X looped_tps Y` (tokens
 * of all sequences per second).
 *   usage: bench_mamba_model -m DIR [-t threads] [-T prefill] [-N decode] [-D depth] [-B n] */
#include "core/core.h"
#include "infer/paged_kv.h"
#include "model/forward_batch.h"
#include "model/model.h"
#include "ops/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const lmc_err *e) {
    fprintf(stderr, "bench_mamba_model: %s: %s\n", what, e->msg);
    exit(1);
}

/* -B: n sequences decoding together, batched step vs one-row steps */
static int batched(struct lmc_model *m, struct lmc_backend *be, int64_t n, int64_t N) {
    lmc_err err = {0};
    struct lmc_paged_kv kv;
    struct lmc_batch_acts ba;
    if (lmc_paged_kv_init(&kv, m, be, n, 256, false, &err)) die("pool", &err);
    if (lmc_batch_acts_init(&ba, m, be, 8 * n, n, 1, n, &err)) die("acts", &err);
    int32_t *ids = malloc((size_t)(8 * n) * sizeof *ids), *seq = malloc((size_t)(8 * n) * sizeof *seq);
    int32_t *pos = malloc((size_t)(8 * n) * sizeof *pos), *bt = malloc((size_t)n * sizeof *bt);
    int32_t *rows = malloc((size_t)n * sizeof *rows), *out = malloc((size_t)n * sizeof *out);
    LMC_ASSERT(ids && seq && pos && bt && rows && out);
    struct lmc_kv_seq *sq = calloc((size_t)n, sizeof *sq);
    LMC_ASSERT(sq);
    for (int64_t s = 0; s < n; s++) {
        lmc_kv_seq_init(&sq[s]);
        LMC_ASSERT(lmc_kv_seq_reserve(&kv, &sq[s], 0, 1));
        bt[s] = sq[s].blocks[0];
        for (int64_t p = 0; p < 8; p++)
            ids[s * 8 + p] = (int32_t)((s * 977 + p * 131) % m->cfg.vocab_size), seq[s * 8 + p] = (int32_t)s,
            pos[s * 8 + p] = (int32_t)p;
        rows[s] = (int32_t)(s * 8 + 7);
    }
    struct lmc_batch b = {8 * n, ids, seq, pos, n, bt, 1, rows, n, NULL};
    if (lmc_model_forward_batch_argmax(m, be, &ba, &kv.pool, &b, out, &err)) die("prefill", &err);
    double t[2];
    for (int mode = 0; mode < 2; mode++) { /* 0: one batched step; 1: n one-row steps */
        double t0 = lmc_time_now();
        for (int64_t i = 0; i < N; i++) {
            for (int64_t s = 0; s < n; s++) ids[s] = out[s], seq[s] = (int32_t)s, pos[s] = (int32_t)(8 + mode * N + i), rows[s] = (int32_t)s;
            if (mode == 0) {
                struct lmc_batch d = {n, ids, seq, pos, n, bt, 1, rows, n, NULL};
                if (lmc_model_forward_batch_argmax(m, be, &ba, &kv.pool, &d, out, &err)) die("decode", &err);
            } else {
                for (int64_t s = 0; s < n; s++) {
                    int32_t z = 0;
                    struct lmc_batch d = {1, &ids[s], &z, &pos[s], 1, &bt[s], 1, &z, 1, NULL};
                    if (lmc_model_forward_batch_argmax(m, be, &ba, &kv.pool, &d, &out[s], &err)) die("decode", &err);
                }
            }
        }
        t[mode] = (double)(N * n) / (lmc_time_now() - t0);
    }
    printf("batched_tps %.2f looped_tps %.2f\n", t[0], t[1]);
    for (int64_t s = 0; s < n; s++) lmc_kv_seq_free(&kv, &sq[s]);
    free(sq), free(ids), free(seq), free(pos), free(bt), free(rows), free(out);
    lmc_batch_acts_free(&ba);
    lmc_paged_kv_free(&kv);
    lmc_model_free(m);
    lmc_backend_cpu_free(be);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 2;
    int64_t T = 512, N = 128, D = 0, Bn = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-T")) T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-N")) N = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-D")) D = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-B")) Bn = atoll(argv[i + 1]);
    }
    if (!dir || threads < 1 || T < 1 || N < 1 || D < 0 || Bn < 1 || Bn > 256) {
        fprintf(stderr, "usage: bench_mamba_model -m DIR [-t threads] [-T prefill] [-N decode] [-D depth]\n");
        return 2;
    }
    lmc_err err = {0};
    struct lmc_backend be;
    struct lmc_model m;
    if (lmc_backend_cpu_init(&be, threads, &err)) die("backend", &err);
    if (lmc_model_load(&m, dir, NULL, &err)) die(dir, &err);
    const int64_t V = m.cfg.vocab_size;
    if (Bn > 1) return batched(&m, &be, Bn, N);
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
