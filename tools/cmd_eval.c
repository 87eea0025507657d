/* cmd_eval.c — `lmc eval` (mean NLL and perplexity of a text with a
 * sliding window, or llama-perplexity's chunks with --chunks) and `lmc info` (architecture, parameters, dtypes, memory
 * for a context). */
#include "quant/qmatmul.h"
#include "cli.h"
#include "io/gguf.h"
#include "quant/quant.h"
#include "dist/mp_mem.h"
#include "dist/pp_infer.h"
#include "cli_pp.h"
#include "dist/zero.h"
#include "train/trainer.h"
#include "train/qlora.h"
#include "core/core.h"
#include "infer/kvq.h"
#include "ops/cpu/kvquant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVAL_CHUNK 256

/* Adds -log p(ids[t+1] | ..ids[t]) for rows whose target index is in
 * [lo, hi) to *nll. Row r of logits predicts ids[first + r + 1]. */
static void score_rows(const float *logits, int64_t V, int64_t rows, int64_t first,
                       const int32_t *ids, int64_t lo, int64_t hi, double *nll, int64_t *count) {
    for (int64_t r = 0; r < rows; r++) {
        int64_t tgt = first + r + 1;
        if (tgt < lo || tgt >= hi) continue;
        const float *l = logits + r * V;
        double mx = l[0], sum = 0;
        for (int64_t i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        for (int64_t i = 0; i < V; i++) sum += exp((double)l[i] - mx);
        *nll += mx + log(sum) - (double)l[ids[tgt]];
        (*count)++;
    }
}

/* --kl-base: KL(base || model) of row r's next-token distributions, and
 * whether their argmaxes agree. */
static double kl_row(const float *lb, const float *lq, int64_t V, bool *agree) {
    double mb = lb[0], mq = lq[0], sb = 0, sq = 0, kl = 0;
    int64_t ab = 0, aq = 0;
    for (int64_t i = 1; i < V; i++) {
        if (lb[i] > mb) mb = lb[i], ab = i;
        if (lq[i] > mq) mq = lq[i], aq = i;
    }
    for (int64_t i = 0; i < V; i++) {
        sb += exp((double)lb[i] - mb);
        sq += exp((double)lq[i] - mq);
    }
    double zb = mb + log(sb), zq = mq + log(sq);
    for (int64_t i = 0; i < V; i++) {
        double pb = (double)lb[i] - zb;
        kl += exp(pb) * (pb - ((double)lq[i] - zq));
    }
    *agree = ab == aq;
    return kl > 0 ? kl : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_eval(int argc, char **argv) {
    struct cli_common c = {0};
    const char *file = NULL, *text_arg = NULL, *kl_base = NULL, *pp_layers = NULL;
    int64_t stride = 0;
    bool chunks = false; /* --chunks: llama-perplexity's scoring */
    enum lmc_kvq_fmt kv_fmt = LMC_KVQ_NONE; /* --kv-dtype (issue 17) */
    int64_t kv_residual = 128, pp = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--text-file") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--pp") && i + 1 < argc) { /* pipeline stages, one a rank (cli_pp.h) */
            if (!cli_parse_i64(argv[++i], 1, 4096, &pp)) {
                fprintf(stderr, "lmc eval: --pp expects a positive integer\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--pp-layers") && i + 1 < argc) pp_layers = argv[++i]; /* dist/pp_split.h */
        else if (!strcmp(argv[i], "--kl-base") && i + 1 < argc) kl_base = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text_arg = argv[++i];
        else if (!strcmp(argv[i], "--chunks")) chunks = true;
        else if (!strcmp(argv[i], "--kv-dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            kv_fmt = lmc_kvq_parse(v);
            if (!kv_fmt && strcmp(v, "f32")) {
                fprintf(stderr, "lmc eval: --kv-dtype expects f32, f16, bf16, q8, q4 or kivi2\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--kv-residual") && i + 1 < argc) {
            if (!cli_parse_i64(argv[++i], 0, 4096, &kv_residual)) {
                fprintf(stderr, "lmc eval: --kv-residual expects 0..4096\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--stride") && i + 1 < argc) {
            if (!cli_parse_i64(argv[++i], 1, 1 << 24, &stride)) {
                fprintf(stderr, "lmc eval: --stride expects a positive integer\n");
                return 2;
            }
        } else {
            fprintf(stderr, "lmc eval: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!file == !text_arg) {
        fprintf(stderr, "lmc eval: give exactly one of --text-file F or --text TEXT\n");
        return 2;
    }
    if (pp && kv_fmt) {
        fprintf(stderr, "lmc eval: --pp does not combine with a compressed --kv-dtype yet\n");
        return 2;
    }
    if (pp_layers && !pp) {
        fprintf(stderr, "lmc eval: --pp-layers gives the layers of each --pp stage (give --pp N)\n");
        return 2;
    }
    lmc_err err = {0};
    char *text = NULL;
    size_t len = 0;
    if (file) {
        if (lmc_file_read(file, (size_t)1 << 31, &text, &len, &err)) return cli_fail("eval", &err);
    } else {
        text = strdup(text_arg);
        len = strlen(text);
    }
    struct cli_model cm;
    if (cli_open(&cm, &c, !pp)) {
        free(text);
        return 1;
    }
    /* --pp P: every rank runs this loop on its stage, the last stage's
     * logits broadcast to all; rank 0 prints */
    struct cli_pp ppx;
    memset(&ppx, 0, sizeof ppx);
    const struct lmc_model *model = &cm.model;
    if (pp) {
        int r = cli_pp_open(&ppx, pp, 1, &cm, &c, pp_layers, "eval");
        if (r) {
            cli_close(&cm);
            cli_pp_close(&ppx);
            free(text);
            return r;
        }
        model = ppx.model;
        if (ppx.comm.rank != 0 && !freopen("/dev/null", "w", stdout)) {
            cli_close(&cm);
            cli_pp_close(&ppx);
            free(text);
            return 1;
        }
    }
    int rc = 0;
    int32_t *ids = NULL;
    int64_t n = 0;
    struct lmc_kv kv = {0}, kvb = {0};
    struct lmc_acts acts = {0}, actsb = {0};
    float *logits = NULL, *logitsb = NULL;
    double *kls = NULL, kl_sum = 0;
    int64_t agree = 0;
    struct cli_model cb;
    bool have_base = false;
    if (kl_base) {
        struct cli_common cbc = c;
        cbc.model_dir = kl_base;
        if (cli_open(&cb, &cbc, true)) {
            rc = 1;
            goto done;
        }
        have_base = true;
        if (cb.model.cfg.vocab_size != cm.model.cfg.vocab_size) {
            fprintf(stderr, "lmc eval: --kl-base %s has %lld tokens in its vocabulary, the model %lld\n", kl_base,
                    (long long)cb.model.cfg.vocab_size, (long long)cm.model.cfg.vocab_size);
            rc = 1;
            goto done;
        }
    }
    if (lmc_tokenizer_encode(cm.tok, text, len, chunks, &ids, &n, &err)) {
        rc = cli_fail("eval", &err);
        goto done;
    }
    if (n < 2) {
        fprintf(stderr, "lmc eval: the text has %lld token(s); at least 2 are needed\n", (long long)n);
        rc = 1;
        goto done;
    }
    int64_t ctx = LMC_MIN(cli_ctx(&c, &cm.model), n);
    /* --chunks, as llama-perplexity: the text (BOS prepended when the
     * tokenizer adds one) cut into n / ctx whole chunks of ctx tokens, each
     * run from an empty cache with its first token replaced by BOS (when
     * added), and scored on its second half: targets ctx/2+1 .. ctx-1 */
    int32_t bos = lmc_tokenizer_bos(cm.tok);
    bool add_bos = chunks && bos >= 0 && ids[0] == bos;
    int64_t n_chunks = chunks ? n / ctx : 0;
    if (chunks && (n_chunks < 1 || ctx < 4)) {
        fprintf(stderr, "lmc eval: --chunks needs at least one chunk of --ctx tokens (>= 4; the text has %lld)\n",
                (long long)n);
        rc = 1;
        goto done;
    }
    if (stride <= 0 || stride > ctx) stride = ctx > 1 ? ctx / 2 : 1;
    if (ctx == n) stride = ctx;
    int64_t V = cm.model.cfg.vocab_size;
    struct lmc_backend kqbe;
    const struct lmc_backend *be = &cm.be;
    if (kv_fmt) { /* a compressed or 2-byte cache: every window restarts it at position 0 */
        if (lmc_kvq_backend_fmt(&kqbe, &cm.be, kv_fmt, &err)) {
            rc = cli_fail("eval", &err);
            goto done;
        }
        be = &kqbe;
    }
    if (lmc_kvq_kv_init(&kv, model, be, ctx, kv_fmt, kv_residual, &err) ||
        lmc_acts_init(&acts, model, be, EVAL_CHUNK, EVAL_CHUNK, &err) ||
        (have_base && (lmc_kv_init(&kvb, &cb.model, &cb.be, ctx, &err) ||
                       lmc_acts_init(&actsb, &cb.model, &cb.be, EVAL_CHUNK, EVAL_CHUNK, &err)))) {
        rc = cli_fail("eval", &err);
        goto done;
    }
    logits = malloc((size_t)EVAL_CHUNK * (size_t)V * sizeof(float));
    if (have_base) {
        logitsb = malloc((size_t)EVAL_CHUNK * (size_t)V * sizeof(float));
        kls = malloc((size_t)n * sizeof *kls);
    }
    if (!logits || (have_base && (!logitsb || !kls))) {
        rc = 1;
        goto done;
    }
    double nll = 0, t0 = lmc_time_now();
    int64_t count = 0, prev_end = 1, processed = 0;
    for (int64_t ch = 0; ch < n_chunks; ch++) {
        int32_t *cid = ids + ch * ctx, keep = cid[0];
        if (add_bos) cid[0] = bos;
        for (int64_t p = 0; p < ctx && !err.status; p += EVAL_CHUNK) {
            int64_t m = LMC_MIN(EVAL_CHUNK, ctx - p);
            if (lmc_model_forward(model, be, &acts, &kv, cid + p, m, p, logits, true, &err) ||
                (have_base && lmc_model_forward(&cb.model, &cb.be, &actsb, &kvb, cid + p, m, p, logitsb, true, &err)))
                break;
            processed += m;
            int64_t count0 = count;
            score_rows(logits, V, m, p, cid, ctx / 2 + 1, ctx, &nll, &count);
            for (int64_t r = 0; have_base && r < m; r++) {
                int64_t tgt = p + r + 1;
                if (tgt < ctx / 2 + 1 || tgt >= ctx) continue;
                bool ag;
                double k = kl_row(logitsb + r * V, logits + r * V, V, &ag);
                kls[count0++] = k;
                kl_sum += k;
                agree += ag;
            }
        }
        cid[0] = keep;
        if (err.status) {
            rc = cli_fail("eval", &err);
            goto done;
        }
    }
    for (int64_t begin = 0; !chunks; begin += stride) {
        int64_t end = LMC_MIN(begin + ctx, n);
        /* window ids[begin, end) from an empty cache; score targets in [prev_end, end) */
        for (int64_t p = 0; p < end - begin; p += EVAL_CHUNK) {
            int64_t m = LMC_MIN(EVAL_CHUNK, end - begin - p);
            if (begin + p + m < prev_end) { /* nothing to score: only build the cache */
                if (lmc_model_forward(model, be, &acts, &kv, ids + begin + p, m, p, logits,
                                      false, &err) ||
                    (have_base && lmc_model_forward(&cb.model, &cb.be, &actsb, &kvb, ids + begin + p, m, p,
                                                    logitsb, false, &err)))
                    break;
                processed += m;
                continue;
            }
            if (lmc_model_forward(model, be, &acts, &kv, ids + begin + p, m, p, logits, true,
                                  &err))
                break;
            if (have_base && lmc_model_forward(&cb.model, &cb.be, &actsb, &kvb, ids + begin + p, m, p, logitsb,
                                               true, &err))
                break;
            processed += m;
            int64_t count0 = count;
            score_rows(logits, V, m, begin + p, ids, prev_end, end, &nll, &count);
            for (int64_t r = 0; have_base && r < m; r++) { /* the rows score_rows counted */
                int64_t tgt = begin + p + r + 1;
                if (tgt < prev_end || tgt >= end) continue;
                bool ag;
                double k = kl_row(logitsb + r * V, logits + r * V, V, &ag);
                kls[count0++] = k;
                kl_sum += k;
                agree += ag;
            }
        }
        if (err.status) {
            rc = cli_fail("eval", &err);
            goto done;
        }
        prev_end = end;
        if (end == n) break;
    }
    if (pp && lmc_pp_infer_check(&ppx.pp, &err)) {
        rc = cli_fail("eval", &err);
        goto done;
    }
    double secs = lmc_time_now() - t0;
    double mean = nll / (double)count;
    double kl_mean = 0, kl_p99 = 0, top1 = 0;
    if (have_base) {
        qsort(kls, (size_t)count, sizeof *kls, cmp_double);
        kl_mean = kl_sum / (double)count;
        int64_t i99 = (int64_t)ceil(0.99 * (double)count) - 1; /* nearest rank */
        kl_p99 = kls[LMC_MAX(i99, 0)];
        top1 = (double)agree / (double)count;
    }
    if (c.json) {
        printf("{\"tokens\":%lld,\"nll\":%.9g,\"ppl\":%.9g", (long long)n, mean, exp(mean));
        if (have_base) printf(",\"kl_mean\":%.9g,\"kl_p99\":%.9g,\"top1_agree\":%.9g", kl_mean, kl_p99, top1);
        printf("}\n");
    } else {
        printf("tokens %lld  predicted %lld  nll %.6f  perplexity %.4f%s\n", (long long)n,
               (long long)count, mean, exp(mean), chunks ? "  (chunks, as llama-perplexity)" : "");
        if (have_base)
            printf("vs %s: KL mean %.6f  KL p99 %.6f  top-1 agreement %.2f%%\n", kl_base, kl_mean, kl_p99,
                   100 * top1);
    }
    if (chunks)
        fprintf(stderr, "lmc: eval %lld chunks of %lld (second halves scored%s): %lld tokens processed in %.2f s\n",
                (long long)n_chunks, (long long)ctx, add_bos ? ", BOS first" : "", (long long)processed, secs);
    else
        fprintf(stderr, "lmc: eval ctx %lld stride %lld: %lld tokens processed in %.2f s (%.1f tok/s)\n",
                (long long)ctx, (long long)stride, (long long)processed, secs, (double)processed / secs);
done:
    free(logits);
    free(logitsb);
    free(kls);
    lmc_kv_free(&kv);
    lmc_acts_free(&acts);
    lmc_kv_free(&kvb);
    lmc_acts_free(&actsb);
    if (have_base) cli_close(&cb);
    free(ids);
    free(text);
    cli_close(&cm);
    cli_pp_close(&ppx);
    return rc;
}

static const char *rope_name(enum lmc_rope_type t) {
    static const char *names[] = {"default", "linear", "dynamic", "llama3", "yarn"};
    return (unsigned)t < 5 ? names[t] : "?";
}

/* The per-rank training memory of --zero S --world N (zero.h's formulas). */
static void print_zero_mem(int stage, int world, int64_t psi, bool json) {
    struct lmc_zero_mem mx, f;
    lmc_zero_mem_mixed(stage, world, psi, &mx);
    lmc_zero_mem_fp32(stage, world, psi, &f);
    if (json) {
        printf("{\"zero_stage\":%d,\"world\":%d,\"parameters\":%lld,\"mixed\":{\"weights\":%.0f,\"grads\":%.0f,"
               "\"optimizer\":%.0f,\"total\":%.0f},\"fp32\":{\"weights\":%.0f,\"grads\":%.0f,\"optimizer\":%.0f,"
               "\"total\":%.0f}}\n", stage, world, (long long)psi, mx.weights, mx.grads, mx.optimizer, mx.total,
               f.weights, f.grads, f.optimizer, f.total);
        return;
    }
    const double M = 1048576.0;
    printf("ZeRO-%d, %d rank%s, %lld parameters: per rank (activations not included: ZeRO does not shard them)\n",
           stage, world, world == 1 ? "" : "s", (long long)psi);
    printf("  mixed precision (bf16 weights+grads, fp32 master+Adam): weights %.1f MiB, grads %.1f MiB, "
           "optimizer %.1f MiB, total %.1f MiB\n", mx.weights / M, mx.grads / M, mx.optimizer / M, mx.total / M);
    printf("  fp32 (lmc's ZeRO layout today):                        weights %.1f MiB, grads %.1f MiB, "
           "optimizer %.1f MiB, total %.1f MiB\n", f.weights / M, f.grads / M, f.optimizer / M, f.total / M);
}

/* `lmc info --tp T --pp P [--pp-chunks V] [--pp-layers a,b,...] --cp C [--tp-vocab] [--seq N] [--batch B] [--micro-batches M]
 * [--fits GIB]`: per-rank training memory of a model-parallel layout
 * (dist/mp_mem.h); with --fits, which power-of-two layouts up to 8 in each
 * dimension fit that many GiB per rank. */
struct mp_opts {
    int64_t tp, pp, cp, seq, batch, micro, chunks;
    double fits_gib;
    bool any;
    bool vocab;                    /* --tp-vocab */
    const char *pp_layers;         /* --pp-layers a,b,...: the P x V chunks' layers (dist/pp_split.h) */
};

/* --pp P: the stages of pipeline-parallel inference (lmc generate/serve
 * --pp, dist/pp_infer.h): each stage's layers and float32 weights. */
static int print_pp_stages(const struct lmc_config *c, int P, const char *layers, bool json) {
    lmc_err err = {0};
    int64_t b[4097];
    if (P > 4096 || lmc_pp_split_plan(c, P, 1, layers, b, &err)) {
        if (!json) return 0; /* the training layout above already said why */
        printf(",\"inference_stages\":null");
        return 0;
    }
    if (json) printf(",\"inference_stages\":[");
    else printf("inference (generate/serve --pp %d), per stage:", P);
    for (int s = 0; s < P; s++) {
        int64_t n = lmc_pp_infer_stage_params(c, b, P, s);
        if (n < 0) return cli_fail("info", &err);
        if (json)
            printf("%s{\"stage\":%d,\"layers\":[%lld,%lld],\"params\":%lld,\"weights\":%lld}", s ? "," : "", s,
                   (long long)b[s], (long long)b[s + 1], (long long)n, (long long)(4 * n));
        else
            printf(" stage %d layers [%lld, %lld) %lld parameters, %.1f MiB fp32;", s, (long long)b[s],
                   (long long)b[s + 1], (long long)n, 4.0 * (double)n / 1048576.0);
    }
    printf(json ? "]" : "\n");
    return 0;
}

/* --pp P [--pp-chunks V] [--pp-layers ...]: the training split (dist/pp_split.h), each stage's chunks'
 * layers and parameters (the largest stage, whose memory the line above gives, marked). */
static int print_pp_split(const struct lmc_config *c, int P, int V, const char *layers, int largest, bool json) {
    lmc_err err = {0};
    struct lmc_pp_costs k;
    int64_t *b = malloc(sizeof *b * (size_t)(P * V + 1));
    if (!b) return 1;
    if (lmc_pp_split_plan(c, P, V, layers, b, &err) || lmc_pp_costs_init(&k, c, &err)) {
        free(b);
        return cli_fail("info", &err);
    }
    if (json) printf(",\"pp_split\":{\"given\":%s,\"stages\":[", layers && *layers ? "true" : "false");
    else printf("pipeline split (%s), per stage:", layers && *layers ? "--pp-layers" : "balanced by parameters");
    for (int s = 0; s < P; s++) {
        int64_t n = 0, params = 0, l0, l1;
        if (json) printf("%s{\"stage\":%d,\"largest\":%s,\"chunks\":[", s ? "," : "", s, s == largest ? "true" : "false");
        else printf(" stage %d%s", s, s == largest ? " (largest)" : "");
        for (int v = 0; v < V; v++) {
            lmc_pp_chunk_layers(b, P, V, s, v, &l0, &l1);
            n += l1 - l0, params += lmc_pp_costs_chunk(&k, l0, l1);
            if (json) printf("%s[%lld,%lld]", v ? "," : "", (long long)l0, (long long)l1);
            else printf(" layers [%lld, %lld)", (long long)l0, (long long)l1);
        }
        if (json) printf("],\"layers\":%lld,\"params\":%lld}", (long long)n, (long long)params);
        else printf(" = %lld layers, %lld parameters;", (long long)n, (long long)params);
    }
    printf(json ? "]}" : "\n");
    lmc_pp_costs_free(&k);
    free(b);
    return 0;
}

static int print_mp_mem(const struct lmc_config *c, const struct mp_opts *o, bool json) {
    lmc_err err = {0};
    const double G = 1073741824.0;
    struct lmc_mp_layout l = {(int)o->tp, (int)o->pp, (int)o->cp, o->batch, o->seq, (int)o->micro, o->vocab, (int)o->chunks,
                              o->pp_layers};
    struct lmc_mp_mem m;
    if (lmc_mp_mem(c, &l, &m, &err)) return cli_fail("info", &err);
    int P = (int)o->pp, V = o->chunks > 1 ? (int)o->chunks : 1;
    if (json)
        printf("{\"tp\":%d,\"pp\":%d,\"cp\":%d,\"seq\":%lld,\"batch\":%lld,\"micro_batches\":%d,"
               "\"params\":%lld,\"layers\":%lld,\"weights\":%.0f,\"grads\":%.0f,\"optimizer\":%.0f,"
               "\"activations\":%.0f,\"total\":%.0f,\"tp_vocab\":%s,\"pp_chunks\":%d,\"stage\":%d", l.tp, l.pp, l.cp,
               (long long)l.seq, (long long)l.micro_batch, l.micro_batches, (long long)m.params, (long long)m.layers,
               m.weights, m.grads, m.optimizer, m.activations, m.total, l.vocab ? "true" : "false", l.chunks, m.stage);
    else
        printf("TP %d%s x PP %d%s x CP %d, %lld x %lld tokens, %d micro-batches: per rank %lld parameters (%lld layers), "
               "weights %.3f GiB, grads %.3f GiB, AdamW %.3f GiB, activations %.3f GiB (%d live), total %.3f GiB\n",
               l.tp, l.vocab ? " (vocabulary split)" : "", l.pp, l.chunks > 1 ? " (interleaved)" : "", l.cp, (long long)l.micro_batch, (long long)l.seq,
               l.micro_batches, (long long)m.params, (long long)m.layers, m.weights / G, m.grads / G,
               m.optimizer / G, m.activations / G, m.live, m.total / G);
    if (P > 1 && print_pp_split(c, P, V, o->pp_layers, m.stage, json)) return 1;
    if (P > 1 && print_pp_stages(c, P, V == 1 ? o->pp_layers : NULL, json)) return 1;
    if (o->fits_gib > 0) {
        if (json) printf(",\"fits\":[");
        else printf("layouts that fit %.3f GiB per rank (tp x pp x cp: GiB):", o->fits_gib);
        int n = 0;
        for (int t = 1; t <= 8; t *= 2)
            for (int p = 1; p <= 8; p *= 2)
                for (int k = 1; k <= 8; k *= 2) {
                    struct lmc_mp_layout x = {t, p, k, o->batch, o->seq, (int)o->micro, o->vocab, 1, NULL};
                    struct lmc_mp_mem y;
                    if (lmc_mp_mem(c, &x, &y, &err) || y.total > o->fits_gib * G) continue;
                    if (json) printf("%s{\"tp\":%d,\"pp\":%d,\"cp\":%d,\"total\":%.0f}", n ? "," : "", t, p, k, y.total);
                    else printf(" %dx%dx%d: %.3f", t, p, k, y.total / G);
                    n++;
                }
        if (json) printf("]");
        else printf("%s\n", n ? "" : " none");
    }
    if (json) printf("}\n");
    return 0;
}

/* `lmc info --tensors`: the architecture's tensor spec table expanded for
 * this model, with each tensor's role and what the file holds. */
struct tensor_list {
    const struct lmc_model *m;
    bool json;
    int n;
};

static lmc_status print_tensor(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct tensor_list *tl = user;
    static const char *roles[] = {"embedding", "matrix", "norm", "bias"};
    const struct lmc_st_tensor *x = lmc_st_find(&tl->m->st, t->name);
    const char *ap = tl->m->arch->alt_prefix;
    if (!x && ap && !strncmp(t->name, ap, strlen(ap))) x = lmc_st_find(&tl->m->st, t->name + strlen(ap));
    const char *role = t->spec->role < 4 ? roles[t->spec->role] : "?";
    const char *dt = x ? lmc_dtype_name(x->dtype) : t->required ? "missing" : "absent (tied)";
    char gname[192], buf[256];
    if (tl->m->gguf && lmc_gguf_tensor_name(tl->m->arch, t, gname, sizeof gname)) { /* -m FILE.gguf */
        const struct lmc_gguf_tensor *g = lmc_gguf_find_tensor(tl->m->gguf, gname);
        const char *tn = g ? lmc_ggml_type_name(g->type) : NULL;
        snprintf(buf, sizeof buf, "%s %s", gname, g ? (tn ? tn : "?") : t->required ? "missing" : "absent (tied)");
        dt = buf;
    }
    bool tr = (t->spec->flags & LMC_TF_TRANSPOSED) != 0;
    char shape[64];
    if (t->ndim == 2) snprintf(shape, sizeof shape, "%lld,%lld", (long long)t->disk[0], (long long)t->disk[1]);
    else snprintf(shape, sizeof shape, "%lld", (long long)t->disk[0]);
    if (tl->json)
        printf("%s{\"name\":\"%s\",\"role\":\"%s\",\"shape\":[%s],\"dtype\":\"%s\","
               "\"transposed\":%s,\"required\":%s}", tl->n ? "," : "", x ? x->name : t->name, role, shape,
               dt, tr ? "true" : "false", t->required ? "true" : "false");
    else if (t->ndim == 2)
        printf("%-56s %-9s [%lld, %lld]%s %s\n", x ? x->name : t->name, role, (long long)t->disk[0],
               (long long)t->disk[1], tr ? " (in, out)" : "", dt);
    else
        printf("%-56s %-9s [%lld] %s\n", x ? x->name : t->name, role, (long long)t->disk[0], dt);
    tl->n++;
    return LMC_OK;
}

/* `lmc info --optim X`: the trainer's parameter list (the spec table's
 * tensors the file holds, tied heads left out) and the optimizer's groups
 * and state bytes for it. */
struct optim_list {
    const struct lmc_model *m;
    struct lmc_optim_param *p;
    char (*names)[160];
    int n, cap;
};

static lmc_status add_optim_param(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct optim_list *ol = user;
    const struct lmc_st_tensor *x = lmc_st_find(&ol->m->st, t->name);
    const char *ap = ol->m->arch->alt_prefix;
    if (!x && ap && !strncmp(t->name, ap, strlen(ap))) x = lmc_st_find(&ol->m->st, t->name + strlen(ap));
    if ((!x && !t->required) || ol->n >= ol->cap) return LMC_OK; /* tied: trained as the embedding */
    static float dummy;
    snprintf(ol->names[ol->n], sizeof ol->names[ol->n], "%s", t->name);
    struct lmc_optim_param *q = &ol->p[ol->n++];
    q->name = ol->names[ol->n - 1];
    q->p = &dummy;
    q->g = &dummy;
    q->rows = t->ndim == 2 ? t->rows : 1;
    q->cols = t->ndim == 2 ? t->cols : t->numel;
    q->role = lmc_trainer_param_role((enum lmc_role)t->spec->role, t->name);
    q->decay = t->spec->role == LMC_ROLE_MATRIX;
    return LMC_OK;
}

static int print_optim(const struct lmc_model *m, const struct lmc_optim_cfg *oc, bool json) {
    struct optim_list ol = {m, NULL, NULL, 0, (int)lmc_arch_count(m->arch, &m->cfg)};
    ol.p = calloc((size_t)ol.cap + 1, sizeof *ol.p);
    ol.names = calloc((size_t)ol.cap + 1, sizeof *ol.names);
    lmc_err err = {0};
    char buf[1024];
    size_t bytes = 0;
    int64_t np = 0;
    int rc = 0;
    if (!ol.p || !ol.names) {
        lmc_err_set(&err, LMC_ERR_OOM, "out of memory");
        rc = cli_fail("info", &err);
    } else if (lmc_arch_walk(m->arch, &m->cfg, add_optim_param, &ol, &err) ||
               lmc_optim_info(oc, ol.p, ol.n, buf, sizeof buf, &bytes, &err)) {
        rc = cli_fail("info", &err);
    } else {
        for (int i = 0; i < ol.n; i++) np += ol.p[i].rows * ol.p[i].cols;
        if (json)
            printf("{\"optimizer\":\"%s\",\"parameters\":%lld,\"state_bytes\":%zu,\"bytes_per_parameter\":%.6g}\n",
                   lmc_optim_kind_name(oc->kind), (long long)np, bytes, np ? (double)bytes / (double)np : 0.0);
        else
            printf("%s\n", buf);
    }
    free(ol.p);
    free(ol.names);
    return rc;
}

/* Bytes of the weights by kind, and the quantized linears' bits per weight. */
struct wkinds {
    const char *method;
    double bpw;
    size_t emb, lin_q, lin_dense, head;
};

static size_t mat_size(const struct lmc_mat *w) {
    return w->data ? (size_t)w->rows * (size_t)w->cols * (size_t)lmc_dtype_size(w->dtype) : 0;
}

static void weight_kinds(const struct lmc_model *m, struct wkinds *k) {
    static const char *names[] = {"none", "gptq", "awq", "bitsandbytes nf4", "bitnet ternary"};
    memset(k, 0, sizeof *k);
    k->method = m->quant_method >= 0 && m->quant_method < 5 ? names[m->quant_method] : "?";
    if (m->gguf) k->method = m->n_qw ? "gguf blocks" : "none (gguf)";
    k->emb = mat_size(&m->w.tok_emb) + mat_size(&m->w.pos_emb);
    if (!m->w.tok_emb.data && m->w.tok_emb_q && !(m->w.head.q && m->w.head.q->data == m->w.tok_emb_q->data))
        k->emb += lmc_qweight_bytes(m->w.tok_emb_q); /* a quantized GGUF embedding (a tied one counts as the head) */
    if (m->w.head.format == LMC_WFMT_QUANT) k->head = lmc_qweight_bytes(m->w.head.q);
    else if (m->w.head.w.data != m->w.tok_emb.data) k->head = mat_size(&m->w.head.w);
    double elems = 0;
    for (int i = 0; i < m->n_qw; i++) {
        if (m->qw[i] == m->w.head.q) continue; /* the head's bytes are counted as the head */
        k->lin_q += lmc_qweight_bytes(m->qw[i]);
        elems += (double)m->qw[i]->n * (double)m->qw[i]->k;
    }
    k->bpw = elems > 0 ? 8.0 * (double)k->lin_q / elems : 0;
    for (int64_t l = 0; l < m->cfg.num_layers; l++)
        for (int i = 0; i < LMC_L_N; i++)
            if (m->w.layers[l].lin[i].format == LMC_WFMT_DENSE) k->lin_dense += mat_size(&m->w.layers[l].lin[i].w);
}

/* `lmc info --qlora nf4|int4`: the QLoRA base lmc finetune would train
 * over (quantized at load on the CPU, or as the folder stores it): its
 * 4-bit bytes on the host and in the compact form a GPU keeps
 * (qweight_upload_f), and the f32 rest. */
static int print_qlora_mem(const struct cli_common *c, enum lmc_qlora_kind kind) {
    lmc_err err = {0};
    struct lmc_backend be;
    struct lmc_tmodel tm;
    struct lmc_qlora ql;
    if (lmc_backend_cpu_init(&be, c->threads, &err)) return cli_fail("info", &err);
    if (lmc_qlora_load(&tm, &ql, c->model_dir, kind, &be, &err)) {
        lmc_backend_cpu_free(&be);
        return cli_fail("info", &err);
    }
    const char *kn = ql.prequantized ? "as stored" : kind == LMC_QLORA_NF4 ? "nf4" : "int4";
    double w = (double)ql.quant_params, hb = w > 0 ? 8.0 * (double)ql.quant_bytes / w : 0,
           db = w > 0 ? 8.0 * (double)ql.compact_bytes / w : 0;
    size_t fb = (size_t)tm.numel * sizeof(float);
    if (c->json)
        printf("{\"qlora\":\"%s\",\"linears\":%lld,\"weights\":%lld,\"host_bytes\":%zu,\"device_bytes\":%zu,"
               "\"host_bits_per_weight\":%.4f,\"device_bits_per_weight\":%.4f,\"f32_bytes\":%zu}\n", kn,
               (long long)ql.n_quant, (long long)ql.quant_params, ql.quant_bytes, ql.compact_bytes, hb, db, fb);
    else
        printf("QLoRA base   %s: %lld linears, %lld weights\n"
               "  4-bit      %.1f MiB on the host (%.2f bits/weight), %.1f MiB on a GPU (%.2f bits/weight)\n"
               "  f32        %.1f MiB (embeddings, norms, biases, head; adapters and optimizer not included)\n",
               kn, (long long)ql.n_quant, (long long)ql.quant_params, (double)ql.quant_bytes / 1048576.0, hb,
               (double)ql.compact_bytes / 1048576.0, db, (double)fb / 1048576.0);
    lmc_tmodel_free(&tm);
    lmc_qlora_free(&ql);
    lmc_backend_cpu_free(&be);
    return 0;
}

/* lmc info --acts: the training activation arena (lmc_tacts_bytes_opts,
 * what lmc finetune / lmc train allocate) for B x T in each way of holding
 * the layers' saves (f32 or bf16 saves; no, selective or full recompute;
 * full_bf16: full recompute with the residual stream's checkpoints in bf16;
 * full_offload: with the checkpoints in host memory, the device's part;
 * attn: the MLP's saves kept, norms and attention recomputed (lmc_tacts_opts.mixer),
 * attn_bf16 with them in bf16, attn_bf16_offload with the checkpoints in host memory). */
static int print_acts_mem(const struct cli_common *c, int64_t B, int64_t T) {
    lmc_err err = {0};
    struct lmc_config cfg;
    if (lmc_config_load(&cfg, c->model_dir, &err)) return cli_fail("info", &err);
    static const struct {
        const char *name;
        struct lmc_tacts_opts o;
    } modes[] = {{"none", {.recompute = false}},
                 {"none_bf16", {.save_bf16 = true}},
                 {"selective", {.selective = true}},
                 {"selective_bf16", {.selective = true, .save_bf16 = true}},
                 {"full", {.recompute = true}},
                 {"full_bf16", {.recompute = true, .save_bf16 = true}},
                 {"full_offload", {.recompute = true, .offload = true}},
                 {"attn", {.mixer = true}},
                 {"attn_bf16", {.mixer = true, .save_bf16 = true}},
                 {"attn_bf16_offload", {.mixer = true, .save_bf16 = true, .offload = true}}};
    if (c->json) printf("{\"batch\":%lld,\"seq\":%lld", (long long)B, (long long)T);
    else printf("training activations for %lld x %lld tokens (the arena; adapters, weights, optimizer and op scratch not included)\n",
                (long long)B, (long long)T);
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        size_t b = lmc_tacts_bytes_opts(&cfg, B, T, &modes[i].o);
        if (!b) {
            if (c->json) printf("}\n");
            fprintf(stderr, "lmc info: --acts: batch %lld x %lld out of range\n", (long long)B, (long long)T);
            return 1;
        }
        if (c->json) printf(",\"%s\":%zu", modes[i].name, b);
        else printf("  %-16s %10.1f MiB\n", modes[i].name, (double)b / 1048576.0);
    }
    if (c->json) printf("}\n");
    return 0;
}

int cmd_info(int argc, char **argv) {
    struct cli_common c = {0};
    bool acts = false;
    int64_t zero = -1, world = 1, params = 0;
    bool tensors = false, optim = false, qlora = false;
    enum lmc_qlora_kind qkind = LMC_QLORA_NF4;
    struct lmc_optim_cfg ocfg;
    lmc_optim_cfg_default(&ocfg, LMC_OPTIM_ADAMW);
    struct mp_opts mp = {1, 1, 1, 4096, 1, 1, 1, 0, false, false, NULL};
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--tp") || !strcmp(argv[i], "--pp") || !strcmp(argv[i], "--cp") ||
             !strcmp(argv[i], "--seq") || !strcmp(argv[i], "--batch") || !strcmp(argv[i], "--micro-batches") ||
             !strcmp(argv[i], "--fits") || !strcmp(argv[i], "--pp-chunks")) && i + 1 < argc) {
            const char *o = argv[i++];
            bool ok = !strcmp(o, "--tp")      ? cli_parse_i64(argv[i], 1, 4096, &mp.tp)
                      : !strcmp(o, "--pp")    ? cli_parse_i64(argv[i], 1, 4096, &mp.pp)
                      : !strcmp(o, "--cp")    ? cli_parse_i64(argv[i], 1, 4096, &mp.cp)
                      : !strcmp(o, "--seq")   ? cli_parse_i64(argv[i], 1, INT64_C(1) << 32, &mp.seq)
                      : !strcmp(o, "--batch") ? cli_parse_i64(argv[i], 1, 1 << 20, &mp.batch)
                      : !strcmp(o, "--fits")  ? cli_parse_f64(argv[i], 1e-9, 1e9, &mp.fits_gib)
                      : !strcmp(o, "--pp-chunks") ? cli_parse_i64(argv[i], 1, 4096, &mp.chunks)
                                              : cli_parse_i64(argv[i], 1, 1 << 20, &mp.micro);
            if (!ok) {
                fprintf(stderr, "lmc info: bad value for %s: '%s'\n", o, argv[i]);
                return 2;
            }
            mp.any = true;
            continue;
        }
        if (!strcmp(argv[i], "--tp-vocab")) {
            mp.vocab = mp.any = true;
            continue;
        }
        if (!strcmp(argv[i], "--pp-layers") && i + 1 < argc) {
            mp.pp_layers = argv[++i];
            mp.any = true;
            continue;
        }
        if (!strcmp(argv[i], "--tensors")) {
            tensors = true;
            continue;
        }
        if (!strcmp(argv[i], "--acts")) { /* with --seq N --batch B */
            acts = true;
            continue;
        }
        if (!strcmp(argv[i], "--qlora") && i + 1 < argc) {
            if (!lmc_qlora_kind_parse(argv[++i], &qkind)) {
                fprintf(stderr, "lmc info: --qlora takes nf4 or int4, not '%s'\n", argv[i]);
                return 2;
            }
            qlora = true;
            continue;
        }
        bool used = false;
        int j = i;
        lmc_err oerr = {0};
        if (lmc_optim_parse_arg(&ocfg, argc, argv, &j, &used, &oerr) || (used && lmc_optim_cfg_check(&ocfg, &oerr))) {
            fprintf(stderr, "lmc info: %s\n", oerr.msg);
            return 2;
        }
        if (used) {
            optim = true;
            i = j - 1;
            continue;
        }
        if ((!strcmp(argv[i], "--zero") || !strcmp(argv[i], "--world") || !strcmp(argv[i], "--params")) &&
            i + 1 < argc) {
            const char *o = argv[i++];
            bool ok = !strcmp(o, "--zero")    ? cli_parse_i64(argv[i], 0, 3, &zero)
                      : !strcmp(o, "--world") ? cli_parse_i64(argv[i], 1, 1 << 20, &world)
                                              : cli_parse_i64(argv[i], 1, INT64_C(1) << 50, &params);
            if (!ok) {
                fprintf(stderr, "lmc info: bad value for %s: '%s' (--zero 0..3, --world >= 1, --params >= 1)\n", o,
                        argv[i]);
                return 2;
            }
            continue;
        }
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r == 0) {
            fprintf(stderr, "lmc info: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (zero < 0 && (world != 1 || params)) {
        fprintf(stderr, "lmc info: --world and --params go with --zero S\n");
        return 2;
    }
    if (zero >= 0 && !c.model_dir) {
        if (!params) {
            fprintf(stderr, "lmc info: --zero needs -m DIR or --params N\n");
            return 2;
        }
        print_zero_mem((int)zero, (int)world, params, c.json);
        return 0;
    }
    if (qlora) {
        if (!c.model_dir) {
            fprintf(stderr, "lmc info: --qlora needs -m DIR\n");
            return 2;
        }
        return print_qlora_mem(&c, qkind);
    }
    if (acts) {
        if (!c.model_dir) {
            fprintf(stderr, "lmc info: --acts needs -m DIR\n");
            return 2;
        }
        return print_acts_mem(&c, mp.batch, mp.seq);
    }
    struct cli_model cm;
    if (cli_open(&cm, &c, true)) return 1;
    if (zero >= 0) {
        print_zero_mem((int)zero, (int)world, params ? params : cm.model.n_params, c.json);
        cli_close(&cm);
        return 0;
    }
    if (mp.any) {
        int r = print_mp_mem(&cm.model.cfg, &mp, c.json);
        cli_close(&cm);
        return r;
    }
    const struct lmc_model *m = &cm.model;
    const struct lmc_config *k = &m->cfg;
    if (optim) {
        int rc = print_optim(m, &ocfg, c.json);
        cli_close(&cm);
        return rc;
    }
    if (tensors) {
        struct tensor_list tl = {m, c.json, 0};
        lmc_err err = {0};
        if (c.json) printf("[");
        lmc_arch_walk(m->arch, &m->cfg, print_tensor, &tl, &err);
        if (c.json) printf("]\n");
        cli_close(&cm);
        return 0;
    }
    int64_t ctx = cli_ctx(&c, m);
    int64_t by_dtype[LMC_DTYPE_COUNT] = {0};
    for (int64_t i = 0; i < m->st.n_tensors; i++) by_dtype[m->st.tensors[i].dtype] += m->st.tensors[i].numel;
    size_t kvb = lmc_kv_bytes(m, ctx), actb = lmc_acts_bytes(m, LMC_MIN(ctx, 512), 1);
    size_t logitb = (size_t)k->vocab_size * sizeof(float); /* host copy for the sampler */
    size_t stb = lmc_model_seq_slot_bytes(m); /* recurrent state per sequence (Mamba) */
    size_t total = m->weight_bytes + kvb + stb + actb + logitb;
    struct wkinds wk;
    weight_kinds(m, &wk);
    if (c.json) {
        printf("{\"model_type\":\"%s\",\"architecture\":\"%s\",\"parameters\":%lld,\"active_parameters\":%lld,"
               "\"experts\":%lld,\"experts_per_token\":%lld,\"layers\":%lld,"
               "\"hidden\":%lld,\"heads\":%lld,\"kv_heads\":%lld,\"head_dim\":%lld,"
               "\"intermediate\":%lld,\"vocab\":%lld,\"max_positions\":%lld,\"weight_bytes\":%zu,"
               "\"ctx\":%lld,\"kv_bytes\":%zu,\"state_bytes_per_sequence\":%zu,\"activation_bytes\":%zu,\"total_bytes\":%zu,",
               k->model_type, m->arch->name, (long long)m->n_params,
               (long long)lmc_arch_active_params(k, m->n_params), (long long)k->num_experts,
               (long long)k->num_experts_per_tok, (long long)k->num_layers, (long long)k->hidden_size, (long long)k->num_heads,
               (long long)k->num_kv_heads, (long long)k->head_dim, (long long)k->intermediate_size,
               (long long)k->vocab_size, (long long)k->max_position_embeddings, m->weight_bytes,
               (long long)ctx, kvb, stb, actb + logitb, total);
        printf("\"quant_method\":\"%s\",\"quantized_bits_per_weight\":%.4f,\"bytes_embedding\":%zu,"
               "\"bytes_linear_quantized\":%zu,\"bytes_linear_dense\":%zu,\"bytes_head\":%zu}\n",
               wk.method, wk.bpw, wk.emb, wk.lin_q, wk.lin_dense, wk.head);
    } else {
        printf("model        %s (%s family)\n", k->model_type, m->arch->name);
        printf("parameters   %lld (%.2f M)\n", (long long)m->n_params, (double)m->n_params / 1e6);
        if (k->num_experts > 0) {
            int64_t act = lmc_arch_active_params(k, m->n_params), sparse = 0;
            for (int64_t l = 0; l < k->num_layers; l++) sparse += lmc_config_layer_sparse(k, l);
            printf("experts      %lld per layer, %lld per token, width %lld, in %lld of %lld layers; active parameters "
                   "%lld (%.2f M)\n", (long long)k->num_experts, (long long)k->num_experts_per_tok,
                   (long long)k->moe_intermediate_size, (long long)sparse, (long long)k->num_layers, (long long)act,
                   (double)act / 1e6);
        }
        printf("layers       %lld, hidden %lld, intermediate %lld, vocab %lld\n", (long long)k->num_layers,
               (long long)k->hidden_size, (long long)k->intermediate_size, (long long)k->vocab_size);
        if (stb)
            printf("ssm          %s, d_inner %lld, state %lld, conv kernel %lld\n", k->model_type,
                   (long long)k->mamba.d_inner, (long long)k->mamba.state_size,
                   (long long)k->mamba.conv_kernel);
        else
            printf("attention    %lld heads, %lld kv heads, head_dim %lld%s\n", (long long)k->num_heads,
                   (long long)k->num_kv_heads, (long long)k->head_dim, k->qkv_bias ? ", qkv bias" : "");
        if (m->rot_dim)
            printf("rope         %s, theta %g, factor %g\n", rope_name(k->rope.type), k->rope.theta, k->rope.factor);
        printf("positions    %lld%s\n", (long long)k->max_position_embeddings,
               k->tie_word_embeddings ? ", tied embeddings" : "");
        printf("on disk      ");
        for (int t = 0; t < LMC_DTYPE_COUNT; t++)
            if (by_dtype[t]) printf("%s %lld elems  ", lmc_dtype_name(t), (long long)by_dtype[t]);
        if (m->gguf) {
            int64_t by_type[LMC_GGML_TYPE_LIMIT] = {0};
            for (int64_t i = 0; i < m->gguf->n_tensors; i++)
                if (m->gguf->tensors[i].type >= 0 && m->gguf->tensors[i].type < LMC_GGML_TYPE_LIMIT)
                    by_type[m->gguf->tensors[i].type]++;
            for (int t = 0; t < LMC_GGML_TYPE_LIMIT; t++)
                if (by_type[t] && lmc_ggml_type_name(t)) printf("%s %lld tensors  ", lmc_ggml_type_name(t), (long long)by_type[t]);
            printf("(GGUF v%u)\n", m->gguf->version);
        } else {
            printf("(%d file%s)\n", m->st.n_files, m->st.n_files == 1 ? "" : "s");
        }
        printf("weights      %.1f MiB as used\n", (double)m->weight_bytes / 1048576.0);
        if (stb)
            printf("state        %zu bytes per sequence (recurrent, no KV cache)\n", stb);
        printf("quantization %s", wk.method);
        if (wk.lin_q) printf(", %.3f bits per quantized weight", wk.bpw);
        printf("\nbytes        embedding %zu, linears quantized %zu, linears dense %zu, head %zu\n", wk.emb,
               wk.lin_q, wk.lin_dense, wk.head);
        printf("context %-5lld KV cache %.1f MiB + activations %.1f MiB -> total %.1f MiB\n",
               (long long)ctx, (double)kvb / 1048576.0, (double)(actb + logitb) / 1048576.0,
               (double)total / 1048576.0);
        /* KV bytes per token by format (lmc generate --kv-dtype; issue 17) */
        int64_t row = k->num_kv_heads * k->head_dim, nl = k->num_layers;
        printf("KV bytes/token  f32 %lld, f16 %lld, bf16 %lld, q8 %.0f, q4 %.0f, kivi2 %.0f\n",
               (long long)(8 * row * nl), (long long)(4 * row * nl), (long long)(4 * row * nl),
               (double)nl * lmc_kvq_bytes_per_token(LMC_KVQ_Q8, row),
               (double)nl * lmc_kvq_bytes_per_token(LMC_KVQ_Q4, row),
               (double)nl * lmc_kvq_bytes_per_token(LMC_KVQ_KIVI2, row));
    }
    cli_close(&cm);
    return 0;
}
