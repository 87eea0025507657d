/* bench_kvq.c — quality and size of the compressed KV caches (infer/kvq.h)
 * on a real model: perplexity of a text with `lmc eval`'s windows (context
 * C from an empty cache, stride S, each target scored once) with the float
 * cache and with q8, q4 and KIVI-2 (residual R), and KV bytes per token per
 * format against bf16. One process, same weights and ids for every format.
 *
 * usage: bench_kvq MODEL_DIR TEXT_FILE [-c ctx 256] [-s stride 128]
 *                  [-r kivi_residual 32] [-n max_tokens 0=all] [-t threads 1]
 * (the kjv-llama validation text: tail -n +71726 data/kjv.txt) */
#include "core/core.h"
#include "infer/kvq.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 128

static void score(const float *logits, int64_t V, int64_t rows, int64_t first, const int32_t *ids,
                  int64_t lo, int64_t hi, double *nll, int64_t *count) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = first + r + 1;
        if (t < lo || t >= hi) continue;
        const float *l = logits + r * V;
        double mx = l[0], sum = 0;
        for (int64_t i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        for (int64_t i = 0; i < V; i++) sum += exp((double)l[i] - mx);
        *nll += mx + log(sum) - (double)l[ids[t]];
        (*count)++;
    }
}

/* Mean NLL of ids with fmt (NONE: the float cache). */
static double eval_nll(const struct lmc_model *m, const struct lmc_backend *be, enum lmc_kvq_fmt f,
                       int64_t R, const int32_t *ids, int64_t n, int64_t ctx, int64_t stride,
                       double *secs) {
    lmc_err err = {0};
    struct lmc_kv kv;
    struct lmc_acts a;
    int64_t V = m->cfg.vocab_size;
    if (lmc_kv_init(&kv, m, be, ctx, &err) || lmc_acts_init(&a, m, be, CHUNK, CHUNK, &err)) {
        fprintf(stderr, "bench_kvq: %s\n", err.msg);
        exit(1);
    }
    float *logits = malloc((size_t)CHUNK * (size_t)V * sizeof *logits);
    double nll = 0, t0 = lmc_time_now();
    int64_t count = 0, prev_end = 1;
    for (int64_t begin = 0;; begin += stride) {
        int64_t end = LMC_MIN(begin + ctx, n);
        if (f && lmc_kvq_kv_format(&kv, f, R, &err)) {
            fprintf(stderr, "bench_kvq: %s\n", err.msg);
            exit(1);
        }
        for (int64_t p = 0; p < end - begin; p += CHUNK) {
            int64_t k = LMC_MIN(CHUNK, end - begin - p);
            bool want = begin + p + k >= prev_end;
            if (lmc_model_forward(m, be, &a, &kv, ids + begin + p, k, p, logits, want, &err)) {
                fprintf(stderr, "bench_kvq: %s\n", err.msg);
                exit(1);
            }
            if (want) score(logits, V, k, begin + p, ids, prev_end, end, &nll, &count);
        }
        prev_end = end;
        if (end == n) break;
    }
    *secs = lmc_time_now() - t0;
    free(logits);
    lmc_kv_free(&kv);
    lmc_acts_free(&a);
    return nll / (double)count;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_kvq MODEL_DIR TEXT_FILE [-c ctx] [-s stride] [-r R] [-n max_tokens] [-t threads]\n");
        return 2;
    }
    int64_t ctx = 256, stride = 128, R = 32, max_tokens = 0, threads = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        int64_t v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "-c")) ctx = v;
        else if (!strcmp(argv[i], "-s")) stride = v;
        else if (!strcmp(argv[i], "-r")) R = v;
        else if (!strcmp(argv[i], "-n")) max_tokens = v;
        else if (!strcmp(argv[i], "-t")) threads = v;
    }
    lmc_err err = {0};
    struct lmc_model m;
    struct lmc_tokenizer *tok;
    struct lmc_backend cpu, kq;
    char *text;
    size_t len;
    int32_t *ids;
    int64_t n;
    if (lmc_model_load(&m, argv[1], NULL, &err) || lmc_tokenizer_load(&tok, argv[1], &err) ||
        lmc_file_read(argv[2], (size_t)1 << 30, &text, &len, &err) ||
        lmc_tokenizer_encode(tok, text, len, false, &ids, &n, &err) ||
        lmc_backend_cpu_init(&cpu, (int)threads, &err) || lmc_kvq_backend(&kq, &cpu, &err)) {
        fprintf(stderr, "bench_kvq: %s\n", err.msg);
        return 1;
    }
    if (max_tokens > 0 && n > max_tokens) n = max_tokens;
    int64_t row = m.cfg.num_kv_heads * m.cfg.head_dim, L = m.cfg.num_layers;
    printf("model %s, text %s: %lld tokens, context %lld, stride %lld, KIVI residual %lld, %lld thread(s)\n\n",
           argv[1], argv[2], (long long)n, (long long)ctx, (long long)stride, (long long)R, (long long)threads);
    printf("| KV format | perplexity | vs float cache | KV bytes/token (all layers) | vs bf16 | eval s |\n");
    printf("|---|---|---|---|---|---|\n");
    double base = 0;
    for (int f = LMC_KVQ_NONE; f <= LMC_KVQ_KIVI2; f++) {
        double secs, nll = eval_nll(&m, f ? &kq : &cpu, (enum lmc_kvq_fmt)f, R, ids, n, ctx, stride, &secs);
        if (!f) base = exp(nll);
        double bpt = (double)L * (f ? lmc_kvq_bytes_per_token((enum lmc_kvq_fmt)f, row) : 8.0 * (double)row);
        printf("| %s | %.4f | %+.2f%% | %.0f | %.3f | %.1f |\n", f ? lmc_kvq_name((enum lmc_kvq_fmt)f) : "f32",
               exp(nll), 100 * (exp(nll) / base - 1), bpt, bpt / (4.0 * (double)row * (double)L), secs);
        fflush(stdout);
    }
    free(ids);
    free(text);
    lmc_tokenizer_free(tok);
    lmc_backend_cpu_free(&cpu);
    lmc_model_free(&m);
    return 0;
}
