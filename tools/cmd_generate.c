/* cmd_generate.c — `lmc generate` (stream a continuation, or --json) and
 * `lmc chat` (interactive multi-turn chat with the model's template). */
#include "cli.h"
#include "core/core.h"
#include "infer/session.h"
#include "infer/kvq.h"
#include "infer/spec.h"
#include "dist/tp_model.h"
#include "dist/ep_model.h"
#include "cli_pp.h"
#include "tokenizer/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_STOP 16

struct gen_args {
    struct cli_common c;
    const char *prompt;
    struct lmc_gen_opts g;
    const char *stops[MAX_STOP + LMC_CHAT_MAX_TURN_STOPS]; /* chat adds the turn stops */
    bool temp_set, no_special;
    const char *system;
    const char *chat_template;   /* --chat-template FILE */
    const char *json_schema;     /* --json-schema FILE */
    const char *grammar;         /* --grammar json */
    /* speculative decoding (generate only): mode 0 = off */
    struct lmc_spec_opts spec;
    const char *draft_dir;
    int64_t draft_threads; /* --draft-threads: the draft model's CPU threads (0, the default: the target's) */
    /* draft vocabulary pruning (FR-Spec): --draft-vocab N (0: off), the
     * ranking file (--draft-vocab-file; default DRAFT/token_freq.txt) and
     * --draft-vocab-corpus TEXT (writes that ranking from TEXT first) */
    int64_t draft_vocab_n;
    const char *draft_vocab_file, *draft_vocab_corpus;
    /* compressed KV cache (issue 17): NONE = the backend's own */
    enum lmc_kvq_fmt kv_fmt;
    int64_t kv_residual;
    int64_t tp;                  /* --tp N (generate): tensor-parallel ranks */
    bool tp_vocab;               /* --tp-vocab: the embedding and head split by vocabulary rows too */
    int64_t ep;                  /* --ep N (generate): expert-parallel ranks */
    int64_t pp;                  /* --pp N (generate): pipeline stages, one a rank */
    const char *pp_layers;       /* --pp-layers a,b,...: the stages' layers (dist/pp_split.h) */
};

/* --- speculative decoding options (issue 17) -------------------------- */

static bool emit_stdout(void *user, const char *text, size_t len);

/* Consumes a speculative-decoding option o with value v; returns 1 if it
 * was one (*ok: the value parsed), 0 otherwise. */
static int parse_spec_arg(struct gen_args *a, const char *o, const char *v, bool *ok) {
    struct lmc_spec_opts *sp = &a->spec;
    if (!strcmp(o, "--prompt-lookup")) {
        sp->mode = LMC_SPEC_LOOKUP;
        *ok = cli_parse_i64(v, 1, 16, &sp->lookup_ngram);
    } else if (!strcmp(o, "--draft-model")) {
        sp->mode = LMC_SPEC_DRAFT;
        a->draft_dir = v;
    } else if (!strcmp(o, "--self-spec")) {
        sp->mode = LMC_SPEC_SELF;
        *ok = cli_parse_i64(v, 1, 1 << 20, &sp->self_layers);
    } else if (!strcmp(o, "--draft-tokens")) {
        *ok = cli_parse_i64(v, 1, 64, &sp->draft_tokens);
    } else if (!strcmp(o, "--kv-dtype")) {
        a->kv_fmt = lmc_kvq_parse(v);
        *ok = a->kv_fmt != LMC_KVQ_NONE || !strcmp(v, "f32");
    } else if (!strcmp(o, "--kv-residual")) {
        *ok = cli_parse_i64(v, 0, 4096, &a->kv_residual);
    } else if (!strcmp(o, "--attention-sinks")) {
        *ok = cli_parse_i64(v, 0, 1 << 20, &sp->sinks);
    } else if (!strcmp(o, "--kv-window")) {
        *ok = cli_parse_i64(v, 1, 1 << 24, &sp->window);
    } else if (!strcmp(o, "--draft-costs")) { /* adaptive K's cost model: draft,slope,row (0: the default) */
        char *e = NULL;
        sp->draft_cost = strtod(v, &e);
        *ok = e && *e == ',';
        if (*ok) sp->verify_slope = strtod(e + 1, &e);
        *ok = *ok && e && *e == ',';
        if (*ok) sp->verify_row = strtod(e + 1, &e);
        *ok = *ok && e && !*e && sp->draft_cost >= 0 && sp->draft_cost <= 100 && sp->verify_slope >= 0 &&
              sp->verify_slope <= 100 && sp->verify_row >= 0 && sp->verify_row <= 100;
    } else if (!strcmp(o, "--draft-tree")) { /* token tree: verification rows (0: a chain) */
        *ok = cli_parse_i64(v, 0, 64, &sp->tree_rows) && sp->tree_rows != 1;
    } else if (!strcmp(o, "--draft-threads")) {
        *ok = cli_parse_i64(v, 0, 1024, &a->draft_threads);
    } else if (!strcmp(o, "--draft-vocab")) {
        *ok = cli_parse_i64(v, 0, 1 << 24, &a->draft_vocab_n);
    } else if (!strcmp(o, "--draft-vocab-file")) {
        a->draft_vocab_file = v;
    } else if (!strcmp(o, "--draft-vocab-corpus")) {
        a->draft_vocab_corpus = v;
    } else if (!strcmp(o, "--draft-adapt")) {
        *ok = !strcmp(v, "on") || !strcmp(v, "off") || !strcmp(v, "timed");
        sp->adaptive = strcmp(v, "off") != 0;
        sp->measured = !strcmp(v, "timed");
    } else {
        return 0;
    }
    return 1;
}

struct vcount {
    int64_t n;
    int32_t id;
};
static int vcount_cmp(const void *x, const void *y) { /* count descending, then id */
    const struct vcount *a = x, *b = y;
    if (a->n != b->n) return a->n > b->n ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Draft vocabulary pruning (FR-Spec): with --draft-vocab-corpus TEXT,
 * tokenizes TEXT (the target's tokenizer, a line at a time, no special
 * tokens) and writes the ranking file: "id count" lines, most frequent
 * first (ties by id), tokens never seen left out; then reads the first
 * --draft-vocab ids of the ranking into *ids and a->spec. */
static lmc_status draft_vocab_load(struct gen_args *a, struct cli_model *cm, int32_t **ids, lmc_err *err) {
    char def[4096];
    const char *file = a->draft_vocab_file;
    if (!file) {
        const char *dir = a->draft_dir ? a->draft_dir : a->c.model_dir;
        if (snprintf(def, sizeof def, "%s/token_freq.txt", dir) >= (int)sizeof def)
            return lmc_err_set(err, LMC_ERR_ARG, "draft vocabulary: path too long");
        file = def;
    }
    int64_t V = cm->model.cfg.vocab_size;
    lmc_status st = LMC_OK;
    if (a->draft_vocab_corpus) {
        size_t len = 0;
        char *text = NULL;
        st = lmc_file_read(a->draft_vocab_corpus, (size_t)1 << 32, &text, &len, err);
        if (st) return st;
        int64_t *cnt = calloc((size_t)V, sizeof *cnt);
        struct vcount *order = malloc((size_t)V * sizeof *order);
        if (!cnt || !order) st = lmc_err_set(err, LMC_ERR_OOM, "draft vocabulary: out of memory");
        for (size_t i = 0; !st && i < len;) {
            size_t e = i;
            while (e < len && text[e] != '\n') e++;
            if (e < len) e++; /* the newline is part of the line's text */
            int32_t *t = NULL;
            int64_t nt = 0;
            st = lmc_tokenizer_encode(cm->tok, text + i, e - i, false, &t, &nt, err);
            for (int64_t j = 0; !st && j < nt; j++)
                if (t[j] >= 0 && t[j] < V) cnt[t[j]]++;
            free(t);
            i = e;
        }
        free(text);
        FILE *f = NULL;
        if (!st && !(f = fopen(file, "w")))
            st = lmc_err_set(err, LMC_ERR_IO, "draft vocabulary: cannot write %s", file);
        if (!st) {
            for (int64_t i = 0; i < V; i++) order[i] = (struct vcount){cnt[i], (int32_t)i};
            qsort(order, (size_t)V, sizeof *order, vcount_cmp);
            fprintf(f, "# token frequencies of %s (lmc generate --draft-vocab-corpus): id count, most frequent first\n",
                    a->draft_vocab_corpus);
            for (int64_t i = 0; i < V && order[i].n > 0; i++)
                fprintf(f, "%d %lld\n", order[i].id, (long long)order[i].n);
            if (fclose(f)) st = lmc_err_set(err, LMC_ERR_IO, "draft vocabulary: cannot write %s", file);
            else fprintf(stderr, "lmc: draft vocabulary ranking written to %s\n", file);
        }
        free(cnt);
        free(order);
        if (st) return st;
    }
    if (a->draft_vocab_n <= 0) return LMC_OK;
    size_t len = 0;
    char *text = NULL;
    st = lmc_file_read(file, (size_t)1 << 28, &text, &len, err);
    if (st) return st;
    *ids = malloc((size_t)LMC_MIN(a->draft_vocab_n, V) * sizeof **ids);
    int64_t got = 0;
    if (!*ids) st = lmc_err_set(err, LMC_ERR_OOM, "draft vocabulary: out of memory");
    if (!st) st = lmc_spec_vocab_parse(text, len, V, LMC_MIN(a->draft_vocab_n, V), *ids, &got, err);
    free(text);
    if (!st && got < a->draft_vocab_n && a->draft_vocab_n < V)
        fprintf(stderr, "lmc: draft vocabulary: %s ranks %lld tokens (asked for %lld)\n", file, (long long)got,
                (long long)a->draft_vocab_n);
    if (!st && got == 0) st = lmc_err_set(err, LMC_ERR_ARG, "draft vocabulary: %s ranks no tokens", file);
    if (st) {
        free(*ids);
        *ids = NULL;
        return st;
    }
    a->spec.draft_vocab = *ids;
    a->spec.draft_vocab_n = got;
    return LMC_OK;
}

/* The speculative loop of a generation or of a whole chat (a->spec.mode
 * or streaming set): the draft model when one is named (same options as
 * the target), its vocabulary subset and its own backend, loaded once,
 * and the lmc_spec, whose caches a chat's turns reuse. Stays in place
 * while open (the spec points at dbe). */
struct gen_spec {
    struct lmc_spec sp;
    struct lmc_model draft;
    struct lmc_backend dbe;
    int32_t *dv;
    bool have_draft, have_dbe, have_sp;
};

static void gen_spec_close(struct gen_spec *s) {
    if (s->have_sp) lmc_spec_free(&s->sp);
    free(s->dv);
    if (s->have_dbe) lmc_backend_cpu_free(&s->dbe);
    if (s->have_draft) lmc_model_free(&s->draft);
    memset(s, 0, sizeof *s);
}

static lmc_status gen_spec_open(struct gen_spec *s, struct gen_args *a, struct cli_model *cm,
                                const struct lmc_backend *gbe, int64_t ctx, lmc_err *err) {
    memset(s, 0, sizeof *s);
    lmc_status st = LMC_OK;
    if (a->spec.mode == LMC_SPEC_DRAFT) {
        struct lmc_model_opts mo = {.wdtype = a->c.wdtype, .be = &cm->be};
        st = lmc_model_load(&s->draft, a->draft_dir, &mo, err);
        if (st) return st;
        s->have_draft = true;
    }
    if (a->draft_vocab_n > 0 || a->draft_vocab_corpus) st = draft_vocab_load(a, cm, &s->dv, err);
    a->spec.kv_fmt = a->kv_fmt;
    a->spec.kv_residual = a->kv_residual;
    /* the draft on its own CPU backend of --draft-threads threads (the
     * plain CPU backend only: not a compressed cache's or a device's);
     * default 0: the target's backend (a 1-thread backend for small drafts
     * measured 0.95x / 0.98x quiet; docs/speculation-and-kv.md) */
    if (!st && s->have_draft && a->draft_threads > 0 && gbe == &cm->be && !strcmp(gbe->name, "cpu")) {
        st = lmc_backend_cpu_init(&s->dbe, (int)a->draft_threads, err);
        s->have_dbe = !st;
        if (!st) a->spec.draft_be = &s->dbe;
    }
    if (!st) st = lmc_spec_init(&s->sp, &cm->model, gbe, cm->tok, s->have_draft ? &s->draft : NULL, &a->spec, ctx, err);
    s->have_sp = !st;
    a->spec.draft_be = NULL; /* copied by lmc_spec_init */
    a->spec.draft_vocab = NULL;
    if (st) gen_spec_close(s);
    return st;
}

/* Generates with speculative decoding (a->spec.mode set) or streaming. */
static lmc_status generate_spec(struct gen_args *a, struct cli_model *cm,
                                const struct lmc_backend *gbe, const int32_t *ids, int64_t n,
                                int64_t ctx, struct lmc_gen_result *res,
                                struct lmc_spec_stats *stats, lmc_err *err) {
    struct gen_spec s;
    lmc_status st = gen_spec_open(&s, a, cm, gbe, ctx, err);
    if (st) return st;
    st = lmc_spec_generate(&s.sp, ids, n, &a->g, a->c.json ? NULL : emit_stdout, NULL, res, stats, err);
    gen_spec_close(&s);
    return st;
}

/* The acceptance statistics of a speculative generation, on stderr. */
static void print_spec_stats(const struct lmc_spec_stats *s, const struct lmc_gen_result *res) {
    fprintf(stderr, "lmc: speculative: %lld rounds, %lld drafted, %lld accepted (%.1f%%), "
                    "%.2f tokens per target forward, %lld evicted\n",
            (long long)s->rounds, (long long)s->drafted, (long long)s->accepted,
            s->drafted ? 100.0 * (double)s->accepted / (double)s->drafted : 0.0,
            s->rounds ? (double)res->n_ids / (double)s->rounds : 0.0, (long long)s->evicted);
}

/* The backend generation runs on: cm's, or its compressed-KV variant
 * (--kv-dtype) in *kq. */
static lmc_status gen_backend(const struct gen_args *a, const struct cli_model *cm,
                              struct lmc_backend *kq, const struct lmc_backend **out, lmc_err *err) {
    *out = &cm->be;
    if (!a->kv_fmt) return LMC_OK;
    lmc_status st = lmc_kvq_backend_fmt(kq, &cm->be, a->kv_fmt, err);
    if (!st) *out = kq;
    return st;
}

/* ---------------------------------------------------------------------- */


/* ---- --tp N: the model sharded over the N ranks of a launcher
 * (torchrun/Slurm variables or mpirun; dist/tp_model.h); rank 0 prints. */
struct gen_tp {
    struct lmc_comm comm;
    struct lmc_tp_model m;
    bool comm_up, sharded;
};

static int gen_tp_open(struct gen_tp *t, int64_t tp, bool vocab, const struct lmc_model *full) {
    lmc_err err = {0};
    memset(t, 0, sizeof *t);
    if (lmc_dist_init(&t->comm, LMC_DIST_HOST, &err)) return cli_fail("--tp", &err);
    t->comm_up = true;
    if (t->comm.world != tp) {
        fprintf(stderr, "lmc: --tp %lld needs %lld ranks (torchrun/Slurm variables or mpirun); this run has %d\n",
                (long long)tp, (long long)tp, t->comm.world);
        return 2;
    }
    if (lmc_tp_model_shard_vocab(&t->m, full, &t->comm, vocab, &err)) return cli_fail("--tp", &err);
    t->sharded = true;
    return 0;
}

static void gen_tp_close(struct gen_tp *t) {
    if (t->sharded) lmc_tp_model_free(&t->m);
    if (t->comm_up) t->comm.free(&t->comm);
}

/* ---- --ep N: each of the N ranks of a launcher loads only its experts
 * (dist/ep_model.h) and runs the prompt; the MoE layers exchange their
 * tokens by alltoallv; rank 0 prints. Opens cm's CPU backend (threads
 * split among the host's ranks unless --threads) and model. */
struct gen_ep {
    struct lmc_comm comm;
    struct lmc_ep_group g;
    bool comm_up, loaded;
};

static int gen_ep_open(struct gen_ep *t, int64_t ep, struct cli_model *cm, const struct cli_common *c) {
    lmc_err err = {0};
    memset(t, 0, sizeof *t);
    if (c->n_lora) {
        fprintf(stderr, "lmc: --ep does not combine with --lora yet\n");
        return 2;
    }
    struct lmc_dist_env env;
    if (lmc_dist_env_parse(&env, NULL, NULL, &err)) return cli_fail("--ep", &err);
    if (lmc_dist_init(&t->comm, LMC_DIST_HOST, &err)) return cli_fail("--ep", &err);
    t->comm_up = true;
    if (t->comm.world != ep) {
        fprintf(stderr, "lmc: --ep %lld needs %lld ranks (torchrun/Slurm variables or mpirun); this run has %d\n",
                (long long)ep, (long long)ep, t->comm.world);
        return 2;
    }
    int threads = c->threads ? c->threads : lmc_dist_cpu_threads(&env, (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (lmc_backend_cpu_init(&cm->be, threads, &err)) return cli_fail("backend", &err);
    cm->have_be = true;
    struct lmc_model_opts mo = {.wdtype = c->wdtype, .be = &cm->be};
    if (lmc_ep_model_load(&cm->model, &t->g, c->model_dir, &mo, &t->comm, true, &err)) return cli_fail("--ep", &err);
    cm->have_model = t->loaded = true;
    return 0;
}

/* After cli_close (the model points at the group). */
static void gen_ep_close(struct gen_ep *t) {
    if (t->loaded) lmc_ep_group_free(&t->g);
    if (t->comm_up) t->comm.free(&t->comm);
}

static bool emit_stdout(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

/* Parses generation options shared by generate and chat; returns 0 ok,
 * 2 on a usage error. */
static int parse_gen_args(struct gen_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    lmc_sampler_defaults(&a->g.sampling);
    a->g.max_new = 128;
    a->g.stop = a->stops;
    a->spec.draft_tokens = 4;
    a->spec.adaptive = true;
    a->kv_residual = 128;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_arg(&a->c, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        struct lmc_sampler_params *p = &a->g.sampling;
        if (!strcmp(o, "--ignore-eos")) { a->g.ignore_eos = true; continue; }
        if (!strcmp(o, "--no-special")) { a->no_special = true; continue; }
        if (!strcmp(o, "--tp-vocab")) { a->tp_vocab = true; continue; }
        if (!v) {
            fprintf(stderr, "lmc: unknown option or missing value: %s\n", o);
            return 2;
        }
        i++;
        if (parse_spec_arg(a, o, v, &ok)) {}
        else if (!strcmp(o, "-p") || !strcmp(o, "--prompt")) a->prompt = v;
        else if (!strcmp(o, "-n") || !strcmp(o, "--max-tokens")) ok = cli_parse_i64(v, 0, 1 << 24, &a->g.max_new);
        else if (!strcmp(o, "--tp")) ok = cli_parse_i64(v, 1, 64, &a->tp);
        else if (!strcmp(o, "--ep")) ok = cli_parse_i64(v, 1, 4096, &a->ep);
        else if (!strcmp(o, "--pp")) ok = cli_parse_i64(v, 1, 4096, &a->pp);
        else if (!strcmp(o, "--pp-layers")) a->pp_layers = v;
        else if (!strcmp(o, "--temp")) { ok = cli_parse_f64(v, 0, 100, &p->temperature); a->temp_set = true; }
        else if (!strcmp(o, "--top-k")) ok = cli_parse_i64(v, 0, 1 << 30, &p->top_k);
        else if (!strcmp(o, "--top-p")) ok = cli_parse_f64(v, 1e-9, 1, &p->top_p);
        else if (!strcmp(o, "--min-p")) ok = cli_parse_f64(v, 0, 1, &p->min_p);
        else if (!strcmp(o, "--repeat-penalty")) ok = cli_parse_f64(v, 1e-3, 100, &p->repeat_penalty);
        else if (!strcmp(o, "--repeat-last-n")) ok = cli_parse_i64(v, 0, 1 << 24, &p->repeat_last_n);
        else if (!strcmp(o, "--seed")) {
            int64_t s;
            ok = cli_parse_i64(v, 0, INT64_MAX, &s);
            p->seed = (uint64_t)s;
        } else if (!strcmp(o, "--stop")) {
            if (a->g.n_stop == MAX_STOP || !*v) ok = false;
            else a->stops[a->g.n_stop++] = v;
        } else if (!strcmp(o, "--system")) a->system = v;
        else if (!strcmp(o, "--chat-template")) a->chat_template = v;
        else if (!strcmp(o, "--json-schema")) a->json_schema = v;
        else if (!strcmp(o, "--grammar")) a->grammar = v;
        else {
            fprintf(stderr, "lmc: unknown option %s\n", o);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "lmc: invalid value '%s' for %s\n", v, o);
            return 2;
        }
    }
    return 0;
}

/* Sampling defaults from generation_config.json unless given on the
 * command line: greedy when do_sample is false. */
static void apply_model_defaults(struct gen_args *a, const struct lmc_config *c) {
    if (a->temp_set) return;
    a->g.sampling.temperature = c->gen_do_sample ? c->gen_temperature : 0.0;
}

/* --json-schema FILE / --grammar json|FILE.gbnf: the grammar, its parse state and the
 * tokenizer's vocabulary as bytes; prints the error and returns non-zero. */
static int open_grammar(const struct gen_args *a, const struct cli_model *cm, struct lmc_grammar **g,
                        struct lmc_grammar_state **gs, struct lmc_grammar_vocab **gv) {
    lmc_err err = {0};
    lmc_status st;
    if (a->json_schema && a->grammar) {
        fprintf(stderr, "lmc generate: give --json-schema or --grammar, not both\n");
        return 2;
    }
    if (a->grammar && !strcmp(a->grammar, "json")) st = lmc_grammar_json_object(g, &err);
    else { /* a JSON Schema file or a GBNF file */
        const char *path = a->grammar ? a->grammar : a->json_schema;
        char *text = NULL;
        size_t len = 0;
        st = lmc_file_read(path, (size_t)16 << 20, &text, &len, &err);
        if (!st) st = a->grammar ? lmc_grammar_from_gbnf(text, len, g, &err)
                                 : lmc_grammar_from_json_schema(text, len, g, &err);
        if (st) lmc_err_prefix(&err, "%s: ", path);
        free(text);
    }
    int32_t eos[LMC_MAX_EOS + 1];
    int n_eos = 0;
    for (int i = 0; i < cm->model.cfg.n_eos && n_eos < LMC_MAX_EOS; i++) eos[n_eos++] = cm->model.cfg.eos_token_ids[i];
    if (lmc_tokenizer_eos(cm->tok) >= 0) eos[n_eos++] = lmc_tokenizer_eos(cm->tok);
    if (!st) st = lmc_grammar_vocab_from_tokenizer(cm->tok, cm->model.cfg.vocab_size, eos, n_eos, gv, &err);
    if (!st) st = lmc_grammar_state_new(*g, gs, &err);
    return st ? cli_fail("structured output", &err) : 0;
}

int cmd_generate(int argc, char **argv) {
    struct gen_args a;
    if (parse_gen_args(&a, argc, argv)) return 2;
    if (!a.prompt) {
        fprintf(stderr, "lmc generate: no prompt (-p TEXT)\n");
        return 2;
    }
    struct cli_model cm;
    if (a.tp_vocab && a.tp < 2) {
        fprintf(stderr, "lmc generate: --tp-vocab splits the vocabulary over the --tp ranks (give --tp N, N >= 2)\n");
        return 2;
    }
    if (a.tp > 1 && a.ep > 1) {
        fprintf(stderr, "lmc generate: --tp and --ep do not combine yet\n");
        return 2;
    }
    if (a.pp_layers && !a.pp) {
        fprintf(stderr, "lmc generate: --pp-layers gives the layers of each --pp stage (give --pp N)\n");
        return 2;
    }
    if (a.pp && (a.ep > 1 || a.tp_vocab)) {
        fprintf(stderr, "lmc generate: --pp does not combine with %s yet\n", a.ep > 1 ? "--ep" : "--tp-vocab");
        return 2;
    }
    bool caps[CLI_CAP_N] = {[CLI_CAP_EP] = a.ep > 1, [CLI_CAP_PP] = a.pp != 0};
    if (cli_caps_check("generate", a.c.device, caps, NULL)) return 2;
    struct gen_ep ep = {0};
    struct cli_pp pp = {0};
    if (cli_open(&cm, &a.c, a.ep <= 1 && !a.pp)) return 1;
    if (a.pp) {
        int r = cli_pp_open(&pp, a.pp, a.tp > 1 ? a.tp : 1, &cm, &a.c, a.pp_layers, "generate"); /* --tp T: T ranks a stage */
        if (r) {
            cli_close(&cm);
            cli_pp_close(&pp);
            return r;
        }
    }
    if (a.ep > 1) {
        int r = gen_ep_open(&ep, a.ep, &cm, &a.c);
        if (r) {
            cli_close(&cm);
            gen_ep_close(&ep);
            return r;
        }
    }
    apply_model_defaults(&a, &cm.model.cfg);
    struct gen_tp tp = {0};
    const struct lmc_model *model = &cm.model;
    bool quiet = a.ep > 1 && ep.comm.rank != 0; /* ranks other than 0 of --tp / --ep / --pp */
    if (a.pp) {
        model = pp.model;
        quiet = pp.comm.rank != 0;
    }
    if (a.tp > 1 && !a.pp) {
        int r = gen_tp_open(&tp, a.tp, a.tp_vocab, &cm.model);
        if (r) {
            gen_tp_close(&tp);
            cli_close(&cm);
            return r;
        }
        model = &tp.m.m;
        quiet = tp.comm.rank != 0;
    }
    lmc_err err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = 0;
    struct lmc_session s;
    struct lmc_gen_result res = {0};
    bool have_s = false;
    struct lmc_grammar *gr = NULL;
    struct lmc_grammar_state *gs = NULL;
    struct lmc_grammar_vocab *gv = NULL;
    if (lmc_tokenizer_encode(cm.tok, a.prompt, strlen(a.prompt), !a.no_special, &ids, &n, &err)) {
        rc = cli_fail("prompt", &err);
        goto done;
    }
    int64_t ctx = cli_ctx(&a.c, model);
    struct lmc_spec_stats sstats = {0};
    struct lmc_backend kqbe;
    const struct lmc_backend *gbe;
    if (gen_backend(&a, &cm, &kqbe, &gbe, &err)) {
        rc = cli_fail("--kv-dtype", &err);
        goto done;
    }
    if ((a.spec.mode || a.spec.window || a.kv_fmt) && (a.tp > 1 || a.ep > 1 || a.pp)) {
        fprintf(stderr, "lmc generate: --tp/--ep/--pp do not combine with speculative decoding, --kv-dtype or "
                        "--attention-sinks/--kv-window yet\n");
        rc = 2;
        goto done;
    }
    if ((a.spec.mode || a.spec.window) && (a.json_schema || a.grammar)) {
        fprintf(stderr, "lmc generate: --json-schema/--grammar do not combine with speculative decoding or "
                        "--attention-sinks/--kv-window (the speculative loop applies no grammar)\n");
        rc = 2;
        goto done;
    }
    if (a.spec.mode || a.spec.window) {
        if (a.spec.window) ctx = a.spec.sinks + a.spec.window; /* unbounded generation */
        else if (n + a.g.max_new > ctx) a.g.max_new = LMC_MAX(0, ctx - n);
        if (generate_spec(&a, &cm, gbe, ids, n, ctx, &res, &sstats, &err)) {
            rc = cli_fail("generate", &err);
            goto done;
        }
        print_spec_stats(&sstats, &res);
        /* where the decode time went (spec.c's round timers; the rest: emission, detokenizing, the loop) */
        fprintf(stderr, "lmc: speculative time: draft %.4f s, verify %.4f s, accept %.4f s, other %.4f s "
                        "(%lld plain rounds); decode CPU %.4f s\n",
                sstats.draft_s, sstats.verify_s, sstats.accept_s,
                res.decode_s - sstats.draft_s - sstats.verify_s - sstats.accept_s, (long long)sstats.plain_rounds,
                sstats.decode_cpu_s);
        if (getenv("LMC_SPEC_PROFILE")) { /* the round profile (docs/speculation-and-kv.md) */
            fprintf(stderr, "lmc: spec profile: draft forwards %lld in %.4f s (%.1f us each, %.1f us main-thread CPU), "
                            "draft probs+draws %.4f s",
                    (long long)sstats.draft_forwards, sstats.draft_fwd_s,
                    sstats.draft_forwards ? 1e6 * sstats.draft_fwd_s / (double)sstats.draft_forwards : 0.0,
                    sstats.draft_forwards ? 1e6 * sstats.draft_fwd_tcpu_s / (double)sstats.draft_forwards : 0.0,
                    sstats.draft_probs_s);
            for (int i = 1; i < LMC_SPEC_PROF_ROWS; i++)
                if (sstats.verify_rows_n[i])
                    fprintf(stderr, "; verify M=%d x%lld %.1f us", i, (long long)sstats.verify_rows_n[i],
                            1e6 * sstats.verify_rows_s[i] / (double)sstats.verify_rows_n[i]);
            fprintf(stderr, "\n");
        }
        if (sstats.tree_rounds)
            fprintf(stderr, "lmc: token tree: %lld rounds with siblings, %lld sibling rows, %lld paths through one\n",
                    (long long)sstats.tree_rounds, (long long)sstats.tree_siblings, (long long)sstats.tree_hits);
        if (sstats.layerskip_rounds)
            fprintf(stderr, "lmc: self-speculation: %lld verifications went on from layer %lld (the draft's hidden "
                            "states and K/V reused)\n",
                    (long long)sstats.layerskip_rounds, (long long)a.spec.self_layers);
        goto report;
    }
    if (lmc_session_init(&s, model, gbe, cm.tok, ctx, 512, &err)) {
        rc = cli_fail("session", &err);
        goto done;
    }
    have_s = true;
    if (a.kv_fmt && lmc_session_kv_format(&s, a.kv_fmt, a.kv_residual, &err)) {
        rc = cli_fail("--kv-dtype", &err);
        goto done;
    }
    if (n + a.g.max_new > ctx) a.g.max_new = LMC_MAX(0, ctx - n);
    if (a.json_schema || a.grammar) { /* structured output */
        if ((rc = open_grammar(&a, &cm, &gr, &gs, &gv))) goto done;
    }
    if (lmc_session_generate_grammar(&s, ids, n, &a.g, gs, gv, a.c.json || quiet ? NULL : emit_stdout, NULL, &res,
                                     &err) ||
        (a.tp > 1 && !a.pp && lmc_tp_model_check(&tp.m, &err)) || (a.ep > 1 && lmc_ep_group_check(&ep.g, &err)) ||
        (a.pp && lmc_pp_infer_check(&pp.pp, &err))) {
        rc = cli_fail("generate", &err);
        goto done;
    }
report:;
    if (quiet) goto done;
    double tps = res.decode_s > 0 && res.n_ids > 1 ? (double)(res.n_ids - 1) / res.decode_s : 0;
    if (a.c.json) {
        printf("{\"prompt_ids\":[");
        for (int64_t i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("],\"ids\":[");
        for (int64_t i = 0; i < res.n_ids; i++) printf("%s%d", i ? "," : "", res.ids[i]);
        printf("],\"text\":");
        cli_json_str(res.text, res.text_len);
        printf(",\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"tokens_per_s\":%.3f,"
               "\"finish_reason\":\"%s\"}\n",
               (long long)n, (long long)res.n_ids, tps, res.finish_reason);
    } else {
        printf("\n");
    }
    fprintf(stderr, "lmc: prompt %lld tokens in %.3f s (%.1f tok/s), generated %lld tokens at %.2f tok/s (%s)\n",
            (long long)n, res.prefill_s, res.prefill_s > 0 ? (double)n / res.prefill_s : 0.0,
            (long long)res.n_ids, tps, res.finish_reason);
done:
    lmc_grammar_state_free(gs);
    lmc_grammar_vocab_free(gv);
    lmc_grammar_free(gr);
    lmc_gen_result_free(&res);
    free(ids);
    if (have_s) lmc_session_free(&s);
    gen_tp_close(&tp);
    cli_close(&cm);
    gen_ep_close(&ep);
    cli_pp_close(&pp);
    return rc;
}

static bool emit_collect(void *user, const char *text, size_t len) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    (void)user;
    return true;
}

int cmd_chat(int argc, char **argv) {
    struct gen_args a;
    if (parse_gen_args(&a, argc, argv)) return 2;
    if (a.pp || a.tp > 1 || a.ep > 1) {
        fprintf(stderr, "lmc chat: --pp/--tp/--ep run in `lmc generate` and `lmc serve` (chat reads one terminal)\n");
        return 2;
    }
    struct cli_model cm;
    if (cli_open(&cm, &a.c, true)) return 1;
    if (!a.temp_set) {
        a.g.sampling.temperature = cm.model.cfg.gen_do_sample ? cm.model.cfg.gen_temperature : 0.7;
    }
    lmc_err err = {0};
    int rc = 0;
    struct lmc_chat_template *ct = NULL;
    if (lmc_chat_template_load(a.c.model_dir, a.chat_template, cm.tok, &ct, &err)) {
        cli_close(&cm);
        return cli_fail("chat template", &err);
    }
    a.g.n_stop += lmc_chat_template_turn_stops(ct, a.stops + a.g.n_stop);
    /* speculative decoding or attention sinks: one speculative loop for the
     * conversation (its caches keep the turns' common prefix); else a
     * session (the same reuse), on the --kv-dtype backend if given */
    bool spec = a.spec.mode || a.spec.window;
    int64_t ctx = a.spec.window ? a.spec.sinks + a.spec.window : cli_ctx(&a.c, &cm.model);
    struct lmc_backend kqbe;
    const struct lmc_backend *gbe;
    struct lmc_session s;
    struct gen_spec gs;
    lmc_status st = gen_backend(&a, &cm, &kqbe, &gbe, &err);
    if (!st && spec) {
        st = gen_spec_open(&gs, &a, &cm, gbe, ctx, &err);
    } else if (!st) {
        st = lmc_session_init(&s, &cm.model, gbe, cm.tok, ctx, 512, &err);
        if (!st && a.kv_fmt && (st = lmc_session_kv_format(&s, a.kv_fmt, a.kv_residual, &err))) lmc_session_free(&s);
    }
    if (st) {
        lmc_chat_template_free(ct);
        cli_close(&cm);
        return cli_fail("chat", &err);
    }
    struct lmc_chat_msg *msgs = NULL;
    int n_msgs = 0, cap = 0;
    char **owned = NULL;
    fprintf(stderr, "lmc chat (the model's chat template%s); empty line or /exit quits, /reset starts over\n",
            a.chat_template ? ", from --chat-template" : "");
    char line[16384];
    int64_t max_new = a.g.max_new;
    for (;;) {
        fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset")) {
            for (int i = 0; i < n_msgs; i++) free(owned[i]);
            n_msgs = 0;
            continue;
        }
        if (n_msgs + 3 > cap) {
            cap = cap ? cap * 2 : 16;
            msgs = realloc(msgs, (size_t)cap * sizeof *msgs);
            owned = realloc(owned, (size_t)cap * sizeof *owned);
            if (!msgs || !owned) { rc = 1; break; }
        }
        if (n_msgs == 0 && a.system) {
            owned[n_msgs] = strdup(a.system);
            msgs[n_msgs] = (struct lmc_chat_msg){"system", owned[n_msgs]};
            n_msgs++;
        }
        owned[n_msgs] = strdup(line);
        msgs[n_msgs] = (struct lmc_chat_msg){"user", owned[n_msgs]};
        n_msgs++;
        char *prompt = NULL;
        int32_t *ids = NULL;
        int64_t n = 0;
        struct lmc_gen_result res = {0};
        if (lmc_chat_template_render_msgs(ct, msgs, n_msgs, &prompt, &err) ||
            lmc_tokenizer_encode(cm.tok, prompt, strlen(prompt), false, &ids, &n, &err)) {
            cli_fail("chat", &err);
            free(owned[--n_msgs]);
            free(prompt);
            continue;
        }
        /* streaming: unbounded (the cache evicts) */
        a.g.max_new = a.spec.window ? max_new : LMC_MIN(max_new, ctx - n);
        struct lmc_spec_stats sstats;
        if (a.g.max_new <= 0 ||
            (spec ? lmc_spec_generate(&gs.sp, ids, n, &a.g, emit_collect, NULL, &res, &sstats, &err)
                  : lmc_session_generate(&s, ids, n, &a.g, emit_collect, NULL, &res, &err))) {
            if (a.g.max_new <= 0) lmc_err_set(&err, LMC_ERR_ARG, "conversation fills the context; /reset");
            cli_fail("chat", &err);
            free(owned[--n_msgs]);
        } else {
            printf("\n");
            fprintf(stderr, "[%lld tokens, %.1f tok/s]\n", (long long)res.n_ids,
                    res.decode_s > 0 ? (double)res.n_ids / res.decode_s : 0.0);
            if (spec) print_spec_stats(&sstats, &res);
            owned[n_msgs] = strdup(res.text);
            msgs[n_msgs] = (struct lmc_chat_msg){"assistant", owned[n_msgs]};
            n_msgs++;
        }
        lmc_gen_result_free(&res);
        free(ids);
        free(prompt);
    }
    for (int i = 0; i < n_msgs; i++) free(owned[i]);
    free(owned);
    free(msgs);
    if (spec) gen_spec_close(&gs);
    else lmc_session_free(&s);
    lmc_chat_template_free(ct);
    cli_close(&cm);
    return rc;
}
