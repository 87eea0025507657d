/* cmd_serve.c — `lmc serve`: opens a model, starts the continuous-batching
 * scheduler and the OpenAI-compatible HTTP server on top of it, and runs
 * until SIGINT/SIGTERM. Prints "lmc serve: listening on http://HOST:PORT"
 * on stderr once it accepts connections (tests read the port from it when
 * started with --port 0). */
#include "cli.h"
#include "core/core.h"
#include "infer/kvq.h"
/* 1: lmc serve's paged KV pool is f16 on the CPU backend unless --kv-dtype says otherwise */
#ifndef LMC_SERVE_KV_F16_DEFAULT
#define LMC_SERVE_KV_F16_DEFAULT 1
#endif
#include "infer/scheduler.h"
#include "infer/sched_tp.h"
#include "dist/tp_model.h"
#include "dist/ep_model.h"
#include "cli_pp.h"
#include "serve/serve.h"
#include "train/lora_bank.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "512M", "2G", "1.5GiB", "1000000" -> bytes */
static bool parse_size(const char *s, size_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v <= 0) return false;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end || v * mul > 1e15) return false;
    *out = (size_t)(v * mul);
    return true;
}

/* The one piece of process state: set by the SIGINT/SIGTERM handler
 * (signals can land on any thread, OpenBLAS's included, so a mask plus
 * sigwait is not enough). */
static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static lmc_status eng_submit(void *ctx, const int32_t *prompt, int64_t n, const struct lmc_request *r,
                             lmc_sched_fn fn, void *user, uint64_t *id, lmc_err *err) {
    return lmc_sched_submit(ctx, prompt, n, r, fn, user, id, err);
}
static void eng_cancel(void *ctx, uint64_t id) { lmc_sched_cancel(ctx, id); }
static void eng_stats(void *ctx, struct lmc_sched_stats *st) { lmc_sched_stats(ctx, st); }

/* ---- named adapters (multi-adapter serving): --lora NAME=DIR[:SCALE] */
#define SERVE_MAX_ADAPTERS 32
struct serve_adapters {
    int n;
    char name[SERVE_MAX_ADAPTERS][128];
    const char *names[SERVE_MAX_ADAPTERS];
    char dir[SERVE_MAX_ADAPTERS][1024];
    double mul[SERVE_MAX_ADAPTERS];
    struct lmc_lora lora[SERVE_MAX_ADAPTERS];
    int n_loaded;
    struct lmc_lora_bank bank;
    bool bound;
};

/* A --lora value NAME=DIR[:SCALE] (a NAME has no '/'): 1 taken, 0 not a
 * named adapter (a plain DIR[:SCALE], applied to every request), -1 bad. */
static int named_adapter_arg(struct serve_adapters *a, const char *v) {
    const char *eq = strchr(v, '=');
    if (!eq || memchr(v, '/', (size_t)(eq - v))) return 0;
    size_t nl = (size_t)(eq - v);
    if (nl == 0 || nl >= sizeof a->name[0]) {
        fprintf(stderr, "lmc serve: --lora '%s': expected NAME=DIR[:SCALE] with a name of 1..127 bytes\n", v);
        return -1;
    }
    if (a->n == SERVE_MAX_ADAPTERS) {
        fprintf(stderr, "lmc serve: at most %d named adapters\n", SERVE_MAX_ADAPTERS);
        return -1;
    }
    struct cli_common tmp = {0};
    if (!cli_lora_arg(&tmp, eq + 1)) return -1;
    memcpy(a->name[a->n], v, nl);
    a->name[a->n][nl] = 0;
    for (int k = 0; k < a->n; k++)
        if (!strcmp(a->name[k], a->name[a->n])) {
            fprintf(stderr, "lmc serve: adapter name '%s' given twice\n", a->name[k]);
            return -1;
        }
    snprintf(a->dir[a->n], sizeof a->dir[0], "%s", tmp.lora_dir[0]);
    a->mul[a->n] = tmp.lora_mul[0];
    a->names[a->n] = a->name[a->n];
    a->n++;
    return 1;
}

/* Loads the named adapters and binds them side by side (per request). */
static int open_adapters(struct serve_adapters *a, struct cli_model *cm, const char *base) {
    lmc_err err = {0};
    const struct lmc_lora *los[SERVE_MAX_ADAPTERS];
    for (int k = 0; k < a->n; k++) {
        if (!strcmp(a->name[k], base)) {
            fprintf(stderr, "lmc serve: adapter name '%s' is the base model's name (--model-name)\n", base);
            return 1;
        }
        if (lmc_lora_load(&a->lora[k], a->dir[k], &cm->model.cfg, &err)) {
            char what[200];
            snprintf(what, sizeof what, "--lora %s", a->name[k]);
            return cli_fail(what, &err);
        }
        a->n_loaded++;
        los[k] = &a->lora[k];
    }
    if (lmc_lora_bank_bind(&a->bank, &cm->model, los, a->mul, a->n, &cm->be, &err)) return cli_fail("--lora", &err);
    a->bound = true;
    return 0;
}

static void close_adapters(struct serve_adapters *a, struct cli_model *cm) {
    if (a->bound) lmc_lora_bank_unbind(&a->bank, &cm->model);
    for (int k = 0; k < a->n_loaded; k++) lmc_lora_free(&a->lora[k]);
    a->bound = false;
    a->n_loaded = 0;
}

/* --tp N: the communicator of the launcher's ranks and this rank's shard. */
struct serve_tp {
    struct lmc_comm comm;
    struct lmc_tp_model m;
    bool comm_up, sharded;
};

/* Opens the group and shards the model; on a rank other than 0 it then
 * follows rank 0's steps until rank 0 stops (returns the exit code). */
static int serve_tp_open(struct serve_tp *t, int tp, bool vocab, struct cli_model *cm) {
    lmc_err err = {0};
    if (lmc_dist_init(&t->comm, LMC_DIST_HOST, &err)) return cli_fail("serve --tp", &err);
    t->comm_up = true;
    if (t->comm.world != tp) {
        fprintf(stderr, "lmc serve: --tp %d needs %d ranks (torchrun/Slurm variables or mpirun); this run has %d\n",
                tp, tp, t->comm.world);
        return 2;
    }
    if (lmc_tp_model_shard_vocab(&t->m, &cm->model, &t->comm, vocab, &err)) return cli_fail("serve --tp", &err);
    t->sharded = true;
    if (t->comm.rank == 0) return 0;
    struct lmc_sched_follow_stats st;
    if (lmc_sched_follow(&t->m.m, &cm->be, &t->comm, &t->m.group, &st, &err)) return cli_fail("serve --tp", &err);
    fprintf(stderr, "lmc serve: rank %d followed %lld steps (%lld tokens, %lld KV blocks copied on write)\n",
            t->comm.rank, (long long)st.steps, (long long)st.tokens, (long long)st.copies);
    return 0;
}

static void serve_tp_close(struct serve_tp *t) {
    if (t->sharded) lmc_tp_model_free(&t->m);
    if (t->comm_up) t->comm.free(&t->comm);
    t->sharded = t->comm_up = false;
}

/* --ep N: the communicator and this rank's experts (dist/ep_model.h,
 * replicated mode: every rank runs the same batched steps, the MoE layers
 * exchange each rank's slice of the step's tokens). */
struct serve_ep {
    struct lmc_comm comm;
    struct lmc_ep_group g;
    bool comm_up, loaded;
};

/* Opens the group and this rank's experts into cm (its CPU backend: threads
 * split among the host's ranks unless --threads); on a rank other than 0 it
 * then follows rank 0's steps until rank 0 stops (returns the exit code). */
static int serve_ep_open(struct serve_ep *t, int ep, struct cli_model *cm, const struct cli_common *c) {
    lmc_err err = {0};
    struct lmc_dist_env env;
    if (lmc_dist_env_parse(&env, NULL, NULL, &err)) return cli_fail("serve --ep", &err);
    if (lmc_dist_init(&t->comm, LMC_DIST_HOST, &err)) return cli_fail("serve --ep", &err);
    t->comm_up = true;
    if (t->comm.world != ep) {
        fprintf(stderr, "lmc serve: --ep %d needs %d ranks (torchrun/Slurm variables or mpirun); this run has %d\n",
                ep, ep, t->comm.world);
        return 2;
    }
    int threads = c->threads ? c->threads : lmc_dist_cpu_threads(&env, (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (lmc_backend_cpu_init(&cm->be, threads, &err)) return cli_fail("backend", &err);
    cm->have_be = true;
    struct lmc_model_opts mo = {.wdtype = c->wdtype, .be = &cm->be};
    if (lmc_ep_model_load(&cm->model, &t->g, c->model_dir, &mo, &t->comm, true, &err))
        return cli_fail("serve --ep", &err);
    cm->have_model = t->loaded = true;
    if (t->comm.rank == 0) return 0;
    struct lmc_sched_follow_stats st;
    if (lmc_sched_follow(&cm->model, &cm->be, &t->comm, NULL, &st, &err) || lmc_ep_group_check(&t->g, &err))
        return cli_fail("serve --ep", &err);
    fprintf(stderr, "lmc serve: rank %d followed %lld steps (%lld tokens, %lld KV blocks copied on write)\n",
            t->comm.rank, (long long)st.steps, (long long)st.tokens, (long long)st.copies);
    return 0;
}

/* After cli_close (the model points at the group). */
static void serve_ep_close(struct serve_ep *t) {
    if (t->loaded) lmc_ep_group_free(&t->g);
    if (t->comm_up) t->comm.free(&t->comm);
    t->loaded = t->comm_up = false;
}

/* --pp with --kv-memory: the blocks that budget holds on the stage with
 * the most layers (rank 0's scheduler sends the count to every stage, so
 * no stage's pool exceeds it). Returns 0, or the exit code after printing. */
static int pp_kv_blocks(const struct cli_pp *t, const struct cli_model *cm, int P, const char *layers, int block_size,
                        size_t bytes, int64_t *blocks) {
    int64_t b[4097], most = 0;
    lmc_err err = {0};
    if (P > 4096 || lmc_pp_split_plan(&cm->model.cfg, P, 1, layers, b, &err)) return cli_fail("serve --pp", &err);
    for (int s = 0; s < P; s++) most = LMC_MAX(most, b[s + 1] - b[s]);
    struct lmc_model v = *t->model; /* the stage's (shard's) layout with the most layers */
    v.cfg.num_layers = most;
    size_t bb = lmc_kv_pool_block_bytes(&v, &cm->be, block_size);
    *blocks = bb ? (int64_t)(bytes / bb) : 0;
    if (*blocks < 1) {
        fprintf(stderr, "lmc serve: --kv-memory %zu holds no KV block of %zu bytes on a %lld-layer stage\n", bytes, bb,
                (long long)most);
        return 2;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: lmc serve -m DIR [--host 127.0.0.1] [--port 8080] [--device cpu|cuda]\n"
            "                 [--max-batch N] [--kv-blocks N | --kv-memory SIZE] [--api-key KEY]\n"
            "                 [--model-name NAME] [--ctx N] [--threads N] [--dtype D]\n"
            "                 [--max-connections N] [--max-active N] [--max-body SIZE]\n"
            "                 [--max-tokens N] [--max-n N] [--timeout SECONDS] [--io-timeout SECONDS]\n"
            "                 [--block-size N] [--max-step-tokens N] [--no-prefix-cache] [--no-bf16-prefill]\n"
            "                 [--trace-sched FILE]\n"
            "                 [--prefix-cache-blocks N] [--lora DIR[:SCALE]] [--lora NAME=DIR[:SCALE] ...]\n"
            "                 [--tp N [--tp-vocab]] [--ep N | --pp N] [--kv-dtype f16|bf16|f32|q8|q4|kivi2 [--kv-residual R]] [--spec prompt-lookup|draft:DIR [--spec-k K]\n"
            "                 [--spec-ngram N] [--spec-max-batch N] [--spec-adapt on|off]]\n"
            "--lora NAME=DIR: a request whose \"model\" is NAME runs with that adapter (many may share a batch).\n"
            "--tp N: under a launcher with N ranks (torchrun/Slurm variables or mpirun), the model sharded\n"
            "by heads and MLP features (float32, CPU); rank 0 serves HTTP, the others follow its steps.\n"
            "--tp-vocab: the embedding and head split by vocabulary rows too (the logits gathered).\n"
            "--ep N: mixture-of-experts models under a launcher with N ranks: each rank holds 1/N of every\n"
            "layer's experts (CPU); rank 0 serves HTTP, every rank runs its steps, tokens go to their experts.\n"
            "--pp N: under a launcher with N ranks, the layers split into N pipeline stages (CPU); rank 0\n"
            "serves HTTP and runs the scheduler, each step's micro-batches flow through the stages.\n"
            "--pp-layers a,b,...: each stage's layer count (default: balanced by parameters).\n"
            "--kv-dtype: f16 by default on the CPU (half f32's bytes; bf16 the same bytes with f32's range;\n"
            "f32 keeps the full-precision pool).\n"
            "--kv-dtype kivi2: 2-bit keys per channel, values per token, each running sequence's last R\n"
            "positions (default 32) in f16; block size 32 unless given (a multiple of 32).\n"
            "--no-bf16-prefill: F16/BF16 rows through the row-count fp32 kernels (by default, with AVX512-BF16\n"
            "prompt rows take the bf16 GEMM and generated rows the decode-row GEMM; with AVX2 only every row\n"
            "takes the decode-row GEMM's f32 kernels: a request's bits then do not depend on its batch).\n"
            "--trace-sched FILE: a line per scheduler step and per request's first token (timings, for debugging).\n"
            "API key also from $LMC_API_KEY. Port 0 picks a free port.\n");
}

int cmd_serve(int argc, char **argv) {
    struct cli_common c = {0};
    struct lmc_serve_opts so;
    lmc_serve_opts_default(&so);
    struct lmc_sched_opts sc;
    lmc_sched_opts_default(&sc);
    const char *name = NULL;
    char name_buf[256];
    size_t kv_bytes = 0;
    int64_t kv_blocks = 0, tp = 1, ep = 1, pp = 0, spec_max_batch = -1;
    bool tp_vocab = false;
    bool block_size_set = false;
    enum lmc_kvq_fmt kv_fmt = LMC_KVQ_NONE; /* --kv-dtype f16|q8|q4|kivi2 (NONE: f32) */
    bool kv_set = false; /* --kv-dtype given; if not, f16 where the pool allows it */
    const char *trace_path = NULL; /* --trace-sched: the scheduler's debug trace (scheduler.h) */
    const char *draft_dir = NULL, *pp_layers = NULL; /* --pp-layers: the stages' layers (dist/pp_split.h) */
    struct lmc_model draft;
    bool have_draft = false;
    so.api_key = getenv("LMC_API_KEY");
    struct serve_adapters ad; /* about 80 KB */
    memset(&ad, 0, sizeof ad);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lora") && i + 1 < argc) {
            int t = named_adapter_arg(&ad, argv[i + 1]);
            if (t < 0) return 2;
            if (t > 0) {
                i++;
                continue;
            }
        }
        int r = cli_common_arg(&c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage();
            return 0;
        }
        if (!strcmp(o, "--no-prefix-cache")) {
            sc.prefix_cache = false;
            continue;
        }
        if (!strcmp(o, "--no-bf16-prefill")) {
            sc.bf16_prefill = false;
            continue;
        }
        if (!strcmp(o, "--tp-vocab")) {
            tp_vocab = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "lmc serve: unknown option or missing value: %s\n", o);
            usage();
            return 2;
        }
        i++;
        int64_t n = 0;
        double d = 0;
        bool ok = true;
        if (!strcmp(o, "--host")) so.host = v;
        else if (!strcmp(o, "--port")) ok = cli_parse_i64(v, 0, 65535, &n), so.port = (int)n;
        else if (!strcmp(o, "--api-key")) so.api_key = v;
        else if (!strcmp(o, "--model-name")) name = v;
        else if (!strcmp(o, "--max-batch")) ok = cli_parse_i64(v, 1, 4096, &n), sc.max_batch = (int)n;
        else if (!strcmp(o, "--kv-blocks")) ok = cli_parse_i64(v, 1, INT64_C(1) << 40, &kv_blocks);
        else if (!strcmp(o, "--kv-memory")) ok = parse_size(v, &kv_bytes);
        else if (!strcmp(o, "--tp")) ok = cli_parse_i64(v, 1, 64, &tp);
        else if (!strcmp(o, "--ep")) ok = cli_parse_i64(v, 1, 4096, &ep);
        else if (!strcmp(o, "--pp")) ok = cli_parse_i64(v, 1, 4096, &pp);
        else if (!strcmp(o, "--pp-layers")) pp_layers = v;
        else if (!strcmp(o, "--block-size")) ok = cli_parse_i64(v, 1, 1024, &n), sc.block_size = (int)n, block_size_set = true;
        else if (!strcmp(o, "--max-step-tokens")) ok = cli_parse_i64(v, 1, 1 << 20, &sc.max_step_tokens);
        else if (!strcmp(o, "--trace-sched")) ok = v != NULL, trace_path = v;
        else if (!strcmp(o, "--prefix-cache-blocks")) ok = cli_parse_i64(v, 1, INT64_C(1) << 40, &sc.prefix_cache_blocks);
        else if (!strcmp(o, "--max-connections")) ok = cli_parse_i64(v, 1, 4096, &n), so.max_connections = (int)n;
        else if (!strcmp(o, "--max-active")) ok = cli_parse_i64(v, 1, 4096, &n), so.max_active = (int)n;
        else if (!strcmp(o, "--max-body")) ok = parse_size(v, &so.lim.max_body) && so.lim.max_body >= 64;
        else if (!strcmp(o, "--max-tokens")) ok = cli_parse_i64(v, 1, 1 << 24, &so.lim.max_tokens);
        else if (!strcmp(o, "--max-n")) ok = cli_parse_i64(v, 1, 64, &n), so.lim.max_n = (int)n;
        else if (!strcmp(o, "--timeout")) ok = cli_parse_i64(v, 1, 86400, &n), so.request_timeout_s = (int)n;
        else if (!strcmp(o, "--kv-dtype")) {
            kv_fmt = lmc_kvq_parse(v);
            ok = kv_fmt != LMC_KVQ_NONE || !strcmp(v, "f32");
            kv_set = true;
        }
        else if (!strcmp(o, "--spec")) {
            if (!strcmp(v, "prompt-lookup")) {
                sc.spec = LMC_SCHED_SPEC_LOOKUP;
            } else if (!strncmp(v, "draft:", 6) && v[6]) {
                sc.spec = LMC_SCHED_SPEC_DRAFT;
                draft_dir = v + 6;
            } else {
                ok = false;
            }
        }
        else if (!strcmp(o, "--kv-residual")) ok = cli_parse_i64(v, 0, 4096, &sc.kv_residual);
        else if (!strcmp(o, "--spec-k")) ok = cli_parse_i64(v, 1, 16, &sc.spec_k);
        else if (!strcmp(o, "--spec-ngram")) ok = cli_parse_i64(v, 1, 16, &sc.spec_ngram);
        else if (!strcmp(o, "--spec-max-batch")) ok = cli_parse_i64(v, 0, 4096, &spec_max_batch);
        else if (!strcmp(o, "--spec-adapt")) ok = !strcmp(v, "on") || !strcmp(v, "off"), sc.spec_fixed_k = !strcmp(v, "off");
        else if (!strcmp(o, "--io-timeout")) ok = cli_parse_f64(v, 0.1, 3600, &d), so.io_timeout_ms = (int)(d * 1000);
        else {
            fprintf(stderr, "lmc serve: unknown option %s\n", o);
            usage();
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "lmc serve: invalid value '%s' for %s\n", v, o);
            return 2;
        }
    }
    if (spec_max_batch >= 0) sc.spec_max_batch = (int)spec_max_batch;
    if (kv_fmt == LMC_KVQ_KIVI2 && !block_size_set) sc.block_size = 32; /* a key group per block */
    if (kv_blocks && kv_bytes) {
        fprintf(stderr, "lmc serve: give --kv-blocks or --kv-memory, not both\n");
        return 2;
    }
    if (!c.model_dir) {
        usage();
        return 2;
    }
    if (!name) { /* the folder's last component */
        const char *e = c.model_dir + strlen(c.model_dir);
        while (e > c.model_dir && e[-1] == '/') e--;
        const char *b = e;
        while (b > c.model_dir && b[-1] != '/') b--;
        snprintf(name_buf, sizeof name_buf, "%.*s", (int)(e - b), b);
        name = name_buf[0] ? name_buf : "lmc";
    }
    so.model_name = name;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    bool caps[CLI_CAP_N] = {[CLI_CAP_EP] = ep > 1, [CLI_CAP_TP] = tp > 1, [CLI_CAP_PP] = pp != 0};
    if (cli_caps_check("serve", c.device, caps, NULL)) return 2;
    if (lmc_kvq_is_half(kv_fmt) && (tp > 1 || ep > 1 || pp)) {
        fprintf(stderr, "lmc serve: --kv-dtype %s does not combine with --tp, --ep or --pp yet\n", lmc_kvq_name(kv_fmt));
        return 2;
    }
    if (ep > 1) {
        const char *why = tp > 1 ? "--tp" : pp ? "--pp" : ad.n || c.n_lora ? "--lora adapters" : sc.spec ? "--spec"
                        : kv_fmt ? "a compressed --kv-dtype" : NULL;
        if (why) {
            fprintf(stderr, "lmc serve: --ep does not combine with %s yet\n", why);
            return 2;
        }
    }
    if (tp_vocab && tp < 2) {
        fprintf(stderr, "lmc serve: --tp-vocab splits the vocabulary over the --tp ranks (give --tp N, N >= 2)\n");
        return 2;
    }
    if (tp > 1 && ad.n) {
        fprintf(stderr, "lmc serve: --tp does not combine with named --lora NAME=DIR adapters (per request) yet; "
                        "--lora DIR (every request) does\n");
        return 2;
    }
    if (tp > 1 && (sc.spec || kv_fmt)) {
        fprintf(stderr, "lmc serve: --tp does not combine with --spec or a compressed --kv-dtype yet\n");
        return 2;
    }
    if (pp_layers && !pp) {
        fprintf(stderr, "lmc serve: --pp-layers gives the layers of each --pp stage (give --pp N)\n");
        return 2;
    }
    if (pp && (tp_vocab || ad.n || sc.spec || kv_fmt)) {
        fprintf(stderr, "lmc serve: --pp does not combine with %s yet\n",
                tp_vocab ? "--tp-vocab" : ad.n ? "--lora adapters" : "--spec or a compressed --kv-dtype");
        return 2;
    }
    struct cli_model cm;
    if (cli_open(&cm, &c, ep <= 1 && !pp)) return 1;
    /* --ep: this rank's experts; the ranks other than 0 follow rank 0's steps until it stops */
    struct serve_ep epx;
    memset(&epx, 0, sizeof epx);
    if (ep > 1) {
        int r = serve_ep_open(&epx, (int)ep, &cm, &c);
        if (r || epx.comm.rank != 0) {
            cli_close(&cm);
            serve_ep_close(&epx);
            return r;
        }
        sc.tp = &epx.comm;
        sc.ep_group = &epx.g;
    }
    /* --pp: this rank's pipeline stage; the ranks other than 0 follow rank 0's steps until it stops */
    struct cli_pp ppx;
    memset(&ppx, 0, sizeof ppx);
    if (pp) {
        int r = cli_pp_open(&ppx, pp, tp, &cm, &c, pp_layers, "serve"); /* --tp T: T ranks a stage */
        if (!r && ppx.comm.rank != 0) {
            lmc_err err = {0};
            struct lmc_sched_follow_stats fs;
            if (lmc_sched_follow(ppx.model, &cm.be, &ppx.comm, ppx.pp.g, &fs, &err)) r = cli_fail("serve --pp", &err);
            else
                fprintf(stderr, "lmc serve: rank %d (pipeline stage %d) followed %lld steps (%lld tokens)\n",
                        ppx.comm.rank, ppx.pp.stage, (long long)fs.steps, (long long)fs.tokens);
        }
        if (r || ppx.comm.rank != 0) {
            cli_close(&cm);
            cli_pp_close(&ppx);
            return r;
        }
        sc.tp = &ppx.comm;
        sc.tp_group = ppx.pp.g;
        if (kv_bytes && !kv_blocks && (r = pp_kv_blocks(&ppx, &cm, (int)pp, pp_layers, sc.block_size, kv_bytes, &kv_blocks))) {
            cli_close(&cm);
            cli_pp_close(&ppx);
            return r;
        }
        if (kv_blocks) kv_bytes = 0;
    }
    /* --tp: this rank's shard; the ranks other than 0 follow rank 0's steps until it stops */
    struct serve_tp tpx;
    memset(&tpx, 0, sizeof tpx);
    const struct lmc_model *model = pp ? ppx.model : &cm.model;
    if (tp > 1 && !pp) {
        int r = serve_tp_open(&tpx, (int)tp, tp_vocab, &cm);
        if (r || tpx.comm.rank != 0) {
            serve_tp_close(&tpx);
            cli_close(&cm);
            serve_ep_close(&epx);
            return r;
        }
        model = &tpx.m.m;
        sc.tp = &tpx.comm;
        sc.tp_group = &tpx.m.group;
    }
    if (ad.n && open_adapters(&ad, &cm, name)) {
        close_adapters(&ad, &cm);
        cli_close(&cm);
        serve_ep_close(&epx);
        cli_pp_close(&ppx);
        return 1;
    }
    so.adapter_names = ad.names;
    so.n_adapters = ad.n;
    lmc_err err = {0};
    sc.ctx = cli_ctx(&c, &cm.model);
    sc.kv_blocks = kv_blocks;
    sc.kv_bytes = kv_bytes;
    if (draft_dir) { /* --spec draft:DIR: the draft model, loaded as the target */
        struct lmc_model_opts mo = {.wdtype = c.wdtype, .be = &cm.be};
        if (lmc_model_load(&draft, draft_dir, &mo, &err)) {
            close_adapters(&ad, &cm);
            cli_close(&cm);
            serve_ep_close(&epx);
            return cli_fail("--spec draft", &err);
        }
        have_draft = true;
        sc.draft = &draft;
    }
    struct lmc_sched *sched = NULL;
    struct lmc_backend kq; /* --kv-dtype f16|bf16|q8|q4|kivi2: the backend with that paged pool */
    /* the f16 pool: the default on the CPU backend where nothing else asks for f32 */
    if (!kv_set && tp <= 1 && ep <= 1 && !pp && cm.be.name && !strcmp(cm.be.name, "cpu") &&
        LMC_SERVE_KV_F16_DEFAULT)
        kv_fmt = LMC_KVQ_F16;
    if (kv_fmt && lmc_kvq_paged_backend(&kq, &cm.be, kv_fmt, &err)) {
        if (have_draft) lmc_model_free(&draft);
        close_adapters(&ad, &cm);
        cli_close(&cm);
        serve_ep_close(&epx);
        cli_pp_close(&ppx);
        return cli_fail("--kv-dtype", &err);
    }
    if (trace_path && !(sc.trace = fopen(trace_path, "w")))
        fprintf(stderr, "lmc serve: --trace-sched %s: %s (no trace)\n", trace_path, strerror(errno));
    if (lmc_sched_init(&sched, model, kv_fmt ? &kq : &cm.be, cm.tok, &sc, &err)) {
        if (sc.trace) fclose(sc.trace);
        if (have_draft) lmc_model_free(&draft);
        close_adapters(&ad, &cm);
        serve_tp_close(&tpx);
        cli_close(&cm);
        serve_ep_close(&epx);
        cli_pp_close(&ppx);
        return cli_fail("scheduler", &err);
    }
    so.lim.ctx = sc.ctx;
    so.lim.vocab = lmc_tokenizer_vocab_size(cm.tok);
    struct lmc_serve_engine eng = {sched, eng_submit, eng_cancel, eng_stats};
    struct lmc_server *srv = NULL;
    if (lmc_server_start(&srv, &so, &eng, cm.tok, &err)) {
        lmc_sched_free(sched);
        serve_tp_close(&tpx);
        if (have_draft) lmc_model_free(&draft);
        close_adapters(&ad, &cm);
        cli_close(&cm);
        serve_ep_close(&epx);
        cli_pp_close(&ppx);
        return cli_fail("serve", &err);
    }
    struct lmc_sched_stats st;
    lmc_sched_stats(sched, &st);
    size_t state_bytes = lmc_model_seq_slot_bytes(&cm.model); /* recurrent models: state slots */
    if (state_bytes)
        fprintf(stderr, "lmc serve: model %s on %s, ctx %lld, %lld recurrent state slots of %zu bytes "
                "(no KV cache; prefix cache up to %lld state snapshots), max batch %d%s\n",
                name, cm.be.name, (long long)sc.ctx, (long long)st.kv_blocks_total, state_bytes,
                (long long)st.prefix_cache_blocks_max, sc.max_batch,
                so.api_key && *so.api_key ? ", API key required" : "");
    else
        fprintf(stderr,
                "lmc serve: model %s on %s, ctx %lld, %lld KV blocks of %d tokens (%s, %lld bytes per token, "
                "%.1f MiB; prefix cache up to %lld), max batch %d%s%s\n",
                name, cm.be.name, (long long)sc.ctx, (long long)st.kv_blocks_total, sc.block_size,
                kv_fmt ? lmc_kvq_name(kv_fmt) : "f32", (long long)st.kv_bytes_per_token,
                (double)st.kv_pool_bytes / (1024.0 * 1024.0), (long long)st.prefix_cache_blocks_max, sc.max_batch,
                sc.spec == LMC_SCHED_SPEC_LOOKUP ? ", speculation: prompt lookup"
                : sc.spec == LMC_SCHED_SPEC_DRAFT ? ", speculation: draft model" : "",
                so.api_key && *so.api_key ? ", API key required" : "");
    if (ep > 1)
        fprintf(stderr, "lmc serve: expert parallel over %lld ranks (this rank: experts %lld-%lld of %lld per layer)\n",
                (long long)ep, (long long)epx.g.e0, (long long)(epx.g.e0 + epx.g.ne - 1), (long long)epx.g.E);
    if (pp)
        fprintf(stderr, "lmc serve: pipeline parallel over %lld stages of %lld rank%s (micro-batches of a step up to "
                "%d)\n", (long long)pp, (long long)tp, tp > 1 ? "s" : "", ppx.pp.micro);
    if (tp > 1)
        fprintf(stderr, "lmc serve: tensor parallel over %lld ranks (this rank: %lld of %lld heads, %lld of %lld MLP "
                "features)\n", (long long)tp, (long long)model->cfg.num_heads, (long long)cm.model.cfg.num_heads,
                (long long)model->cfg.intermediate_size, (long long)cm.model.cfg.intermediate_size);
    for (int k = 0; k < ad.n; k++)
        fprintf(stderr, "lmc serve: adapter %s = %s (scale x%g, r %lld)\n", ad.name[k], ad.dir[k], ad.mul[k],
                (long long)ad.lora[k].cfg.r);
    fprintf(stderr, "lmc serve: listening on http://%s%s%s:%d\n", strchr(so.host, ':') ? "[" : "", so.host,
            strchr(so.host, ':') ? "]" : "", lmc_server_port(srv));
    while (!stop_signal) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "lmc serve: signal %d, shutting down\n", (int)stop_signal);
    lmc_server_stop(srv);
    lmc_sched_free(sched); /* --tp/--pp: tells the other ranks to end */
    if (sc.trace) fclose(sc.trace);
    if (pp)
        fprintf(stderr, "lmc serve: pipeline: %lld steps in %lld micro-batches\n", (long long)ppx.pp.steps,
                (long long)ppx.pp.micro_batches);
    serve_tp_close(&tpx);
    if (have_draft) lmc_model_free(&draft);
    close_adapters(&ad, &cm);
    cli_close(&cm);
    serve_ep_close(&epx);
    cli_pp_close(&ppx);
    return 0;
}
