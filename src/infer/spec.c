/* spec.c — speculative decoding of one sequence (see spec.h): drafting by
 * prompt lookup, a draft model or the target's first layers, one batched
 * verification forward per round, acceptance by spec_sample.c, position
 * rollback and adaptive K; streaming and stops as session.c does them. */
#include "infer/spec.h"
#include "infer/detok.h"
#include "infer/kvq.h"
#include "infer/kvq_stream.h"
#include "infer/sampler.h"
#include "infer/spec_sample.h"
#include "infer/spec_tree.h"
#include "core/core.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The verification's default slope: the small-M kernel of the build
 * (matmul_smallm.c). AVX-512: 4 W rows x up to 6 x rows, 0.02 per row
 * (bench_spec, a 91M bf16 target on a 2-core Zen 4). The AVX2 twin's
 * 2-row tiles run blocks of 3, 4 and 5 x rows in about the same time
 * (bench_gemv16 -t 1 -c 1, BF16 K = 768: 13.5, 13.4, 13.0 GB/s against
 * 18.1 at M = 1), so a 4-row verification already costs what a 5-row one
 * does: bench_spec -t 2 -cpu 1 on the 12x576 kjv-target, 2-core Zen 3,
 * M = 2..6: 1.00, 1.09, 1.25-1.31, 1.25-1.26, 1.37 1-token forwards;
 * 1 + 0.065 (M - 1) follows that (0.02 took K = 3 where K = 4 gives
 * 14% more tokens per round for the same verification). */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LMC_SPEC_DEFAULT_SLOPE 0.02
#else
#define LMC_SPEC_DEFAULT_SLOPE 0.065
#endif

double lmc_spec_default_slope(void) { return LMC_SPEC_DEFAULT_SLOPE; }

static double thread_cpu_now(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_now(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t lmc_spec_lookup(const int32_t *ids, int64_t n, int64_t ngram, int64_t k, int32_t *out) {
    for (int64_t g = LMC_MIN(ngram, n - 1); g >= 1; g--) {
        const int32_t *tail = ids + n - g;
        for (int64_t j = n - g - 1; j >= 0; j--) {
            if (memcmp(ids + j, tail, (size_t)g * sizeof *ids)) continue;
            int64_t m = LMC_MIN(k, n - (j + g));
            memcpy(out, ids + j + g, (size_t)m * sizeof *out);
            return m;
        }
    }
    return 0;
}

int64_t lmc_spec_next_k(double alpha, int64_t kmax) {
    if (!(alpha >= 0)) alpha = 0;
    if (alpha > 0.98) alpha = 0.98;
    double k = 1 + alpha / (1 - alpha);
    return k >= (double)kmax ? kmax : LMC_MAX(1, (int64_t)k);
}

/* a forward of R rows in 1-row forwards: the weights read once, or the rows' arithmetic */
static double forward_cost(double s, double r, double rows) {
    double mem = 1 + s * (rows - 1), comp = r * rows;
    return mem > comp ? mem : comp;
}

double lmc_spec_round_cost_batch(const struct lmc_spec_cost *c, int64_t k, int64_t batch) {
    double d = c->draft >= 0 ? c->draft : 0, s = c->slope >= 0 ? c->slope : 0, r = c->row >= 0 ? c->row : 0;
    double b = (double)LMC_MAX(batch, 1), plain = forward_cost(s, r, b);
    if (batch <= 1) plain = 1; /* one row: the weight read (row < 1) */
    return ((double)k * d * plain + forward_cost(s, r, b * (double)(k + 1))) / plain;
}

double lmc_spec_round_cost(const struct lmc_spec_cost *c, int64_t k) {
    return lmc_spec_round_cost_batch(c, k, 1);
}

int64_t lmc_spec_choose_k_batch(double alpha, int64_t kmax, const struct lmc_spec_cost *c, int64_t batch) {
    if (!(alpha >= 0)) alpha = 0;
    if (alpha > 0.99) alpha = 0.99;
    int64_t best = 0;
    double best_rate = 1, tokens = 1, ak = 1; /* K = 0: a plain step */
    for (int64_t k = 1; k <= kmax; k++) {
        ak *= alpha;
        tokens += ak; /* 1 + alpha + ... + alpha^k */
        double rate = tokens / lmc_spec_round_cost_batch(c, k, batch);
        if (rate > best_rate * (1 + 1e-9)) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

int64_t lmc_spec_choose_k(double alpha, int64_t kmax, const struct lmc_spec_cost *c) {
    return lmc_spec_choose_k_batch(alpha, kmax, c, 1);
}

static double clip_add(double *sum, double *n, double x, double w) {
    if (*n > 0.5 && x * w > 3 * *sum / *n * w) x = 3 * *sum / *n; /* a preempted round */
    *sum = 0.8 * *sum + x;
    *n = 0.8 * *n + w;
    return *sum / *n;
}

void lmc_spec_timing_add(struct lmc_spec_timing *t, int64_t k, double draft_s, double verify_s) {
    if (k < 0 || k + 1 >= LMC_SPEC_TIMING_MAX) return;
    if (k > 0) clip_add(&t->dsum, &t->dn, draft_s / (double)k, 1);
    clip_add(&t->vsum[k + 1], &t->vn[k + 1], verify_s, 1);
}

/* seconds of a verification of M rows: timed, or the nearest timed M
 * scaled by the model's shape; -1 when nothing is timed */
static double timed_verify(const struct lmc_spec_timing *t, int64_t M, const struct lmc_spec_cost *c) {
    if (t->vn[M] > 0.5) return t->vsum[M] / t->vn[M];
    for (int64_t d = 1; d < LMC_SPEC_TIMING_MAX; d++)
        for (int sg = -1; sg <= 1; sg += 2) {
            int64_t j = M + sg * d;
            if (j < 1 || j >= LMC_SPEC_TIMING_MAX || !(t->vn[j] > 0.5)) continue;
            double s = c->slope >= 0 ? c->slope : 0, r = c->row >= 0 ? c->row : 0;
            double cm = M == 1 ? 1 : forward_cost(s, r, (double)M), cj = j == 1 ? 1 : forward_cost(s, r, (double)j);
            return t->vsum[j] / t->vn[j] * cm / cj;
        }
    return -1;
}

int64_t lmc_spec_choose_k_timed(struct lmc_spec_timing *t, double alpha, int64_t kmax,
                                const struct lmc_spec_cost *c) {
    kmax = LMC_MIN(kmax, LMC_SPEC_TIMING_MAX - 2);
    double t1 = timed_verify(t, 1, c);
    if (t1 <= 0) return lmc_spec_choose_k(alpha, kmax, c);
    if (!(alpha >= 0)) alpha = 0;
    if (alpha > 0.99) alpha = 0.99;
    double dtok = t->dn > 0.5 ? t->dsum / t->dn : (c->draft >= 0 ? c->draft : 0) * t1;
    int64_t best = 0;
    double best_rate = 1 / t1, tokens = 1, ak = 1;
    for (int64_t k = 1; k <= kmax; k++) {
        ak *= alpha;
        tokens += ak;
        double rate = tokens / ((double)k * dtok + timed_verify(t, k + 1, c));
        if (rate > best_rate * (1 + 1e-9)) {
            best_rate = rate;
            best = k;
        }
    }
    if (best > 0 && ++t->rounds % 8 == 0) { /* probe a neighbour */
        int64_t p = (t->rounds / 8) % 2 ? best + 1 : best - 1;
        if (p >= 1 && p <= kmax) best = p;
    }
    return best;
}

/* the prior: 0.7 over 2 trials; each round's counts decay by 0.85 */
void lmc_spec_rate_init(struct lmc_spec_rate *r) {
    r->acc = 1.4;
    r->trials = 2;
}

void lmc_spec_rate_add(struct lmc_spec_rate *r, int64_t accepted, int64_t drafted) {
    if (drafted <= 0) return;
    r->acc = 0.85 * r->acc + (double)accepted;
    r->trials = 0.85 * r->trials + (double)(accepted + (accepted < drafted));
}

double lmc_spec_rate_alpha(const struct lmc_spec_rate *r) {
    return r->trials > 0 ? r->acc / r->trials : 0;
}

static lmc_status check_stream(const struct lmc_spec_opts *o, const struct lmc_model *m,
                               const struct lmc_backend *be, lmc_err *err) {
    struct lmc_stream_policy p = {o->sinks, o->window, 1};
    lmc_status st = lmc_stream_check(&p, err);
    if (st) return st;
    if (!m->rot_dim)
        return lmc_err_set(err, LMC_ERR_ARG, "attention sinks need rotary positions (this model has learned ones)");
    if (!be->host_memory)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "attention sinks need a host (CPU) cache");
    if (o->window <= o->draft_tokens)
        return lmc_err_set(err, LMC_ERR_ARG, "KV window %lld must exceed the draft tokens %lld",
                           (long long)o->window, (long long)o->draft_tokens);
    return LMC_OK;
}

static lmc_status check_opts(const struct lmc_spec_opts *o, const struct lmc_model *m,
                             const struct lmc_model *draft, lmc_err *err) {
    if (o->draft_tokens < 1 || o->draft_tokens > 64)
        return lmc_err_set(err, LMC_ERR_ARG, "draft tokens %lld out of range (1..64)",
                           (long long)o->draft_tokens);
    if (o->tree_rows && (o->tree_rows < 2 || o->tree_rows > LMC_SPEC_TREE_ROWS))
        return lmc_err_set(err, LMC_ERR_ARG, "token tree rows %lld out of range (0: off, 2..%d)",
                           (long long)o->tree_rows, LMC_SPEC_TREE_ROWS);
    switch (o->mode) {
    case LMC_SPEC_NONE:
        return LMC_OK;
    case LMC_SPEC_LOOKUP:
        if (o->lookup_ngram < 1 || o->lookup_ngram > 16)
            return lmc_err_set(err, LMC_ERR_ARG, "prompt lookup n-gram %lld out of range (1..16)",
                               (long long)o->lookup_ngram);
        return LMC_OK;
    case LMC_SPEC_DRAFT:
        if (!draft) return lmc_err_set(err, LMC_ERR_ARG, "speculative decoding: no draft model");
        if (draft->cfg.vocab_size != m->cfg.vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG,
                               "draft model vocabulary of %lld tokens differs from the target's %lld",
                               (long long)draft->cfg.vocab_size, (long long)m->cfg.vocab_size);
        return LMC_OK;
    case LMC_SPEC_SELF:
        if (o->self_layers < 1 || o->self_layers >= m->cfg.num_layers)
            return lmc_err_set(err, LMC_ERR_ARG, "self-speculation layers %lld out of range (1..%lld)",
                               (long long)o->self_layers, (long long)m->cfg.num_layers - 1);
        return LMC_OK;
    }
    return lmc_err_set(err, LMC_ERR_ARG, "speculative decoding: unknown mode %d", (int)o->mode);
}

/* Draft vocabulary pruning: a view of the draft whose head holds only the
 * subset's rows (gathered once into dhead), so its last matmul reads N of
 * the V rows. */
static lmc_status prune_head(struct lmc_spec *sp, const struct lmc_spec_opts *o, lmc_err *err) {
    const struct lmc_model *d = sp->draft;
    const struct lmc_linear *H = &d->w.head;
    int64_t V = d->cfg.vocab_size, N = o->draft_vocab_n, C = H->w.cols;
    if (!o->draft_vocab || N > V)
        return lmc_err_set(err, LMC_ERR_ARG, "draft vocabulary of %lld tokens: more than the %lld of the model",
                           (long long)N, (long long)V);
    if (H->format != LMC_WFMT_DENSE || !sp->dbe->host_memory || d->w.vocab || d->w.pipe || H->w.rows != V ||
        H->n_adapters || H->n_slots || H->split != LMC_SPLIT_NONE)
        return lmc_err_set(err, LMC_ERR_ARG, "draft vocabulary pruning needs a dense float head in host memory");
    size_t es = H->w.dtype == LMC_DTYPE_F32 ? 4 : 2, rb = (size_t)C * es;
    sp->dhead = aligned_alloc(64, ((size_t)N * rb + 63) / 64 * 64);
    sp->dmap = malloc((size_t)N * sizeof *sp->dmap);
    sp->dsub = malloc((size_t)N * sizeof *sp->dsub);
    if (H->bias) sp->dhead_bias = malloc((size_t)N * sizeof *sp->dhead_bias);
    if (!sp->dhead || !sp->dmap || !sp->dsub || (H->bias && !sp->dhead_bias))
        return lmc_err_set(err, LMC_ERR_OOM, "draft vocabulary: out of memory");
    uint8_t *seen = calloc((size_t)V, 1);
    if (!seen) return lmc_err_set(err, LMC_ERR_OOM, "draft vocabulary: out of memory");
    for (int64_t i = 0; i < N; i++) {
        int32_t id = o->draft_vocab[i];
        if (id < 0 || id >= V || seen[id]) {
            free(seen);
            return lmc_err_set(err, LMC_ERR_ARG, "draft vocabulary: token id %d out of range or repeated", id);
        }
        seen[id] = 1;
        sp->dmap[i] = id;
        memcpy((char *)sp->dhead + (size_t)i * rb, (const char *)H->w.data + (size_t)id * rb, rb);
        if (H->bias) sp->dhead_bias[i] = H->bias[id];
    }
    free(seen);
    sp->dview = *d;
    sp->dview.w.head.w = (struct lmc_mat){H->w.dtype, N, C, sp->dhead};
    sp->dview.w.head.bias = sp->dhead_bias;
    sp->dn = N;
    return LMC_OK;
}

lmc_status lmc_spec_init(struct lmc_spec *sp, const struct lmc_model *m, const struct lmc_backend *be,
                         const struct lmc_tokenizer *tok, const struct lmc_model *draft,
                         const struct lmc_spec_opts *o, int64_t ctx, lmc_err *err) {
    memset(sp, 0, sizeof *sp);
    lmc_status st = check_opts(o, m, draft, err);
    if (!st && o->window > 0) st = check_stream(o, m, be, err);
    if (st) return st;
    if (o->window > 0) {
        float scale = 1, dscale = 1;
        bool dr = o->mode == LMC_SPEC_DRAFT; /* the draft's own rotary table */
        if (dr && !draft->rot_dim)
            return lmc_err_set(err, LMC_ERR_ARG, "attention sinks need rotary positions (the draft model has learned ones)");
        sp->inv_freq = malloc((size_t)(m->rot_dim / 2 + 1) * sizeof *sp->inv_freq);
        sp->dinv_freq = dr ? malloc((size_t)(draft->rot_dim / 2 + 1) * sizeof *sp->dinv_freq) : NULL;
        if (!sp->inv_freq || (dr && !sp->dinv_freq)) {
            free(sp->inv_freq), free(sp->dinv_freq);
            sp->inv_freq = sp->dinv_freq = NULL;
            return lmc_err_set(err, LMC_ERR_OOM, "speculative decoding: out of memory");
        }
        ctx = o->sinks + o->window;
        lmc_rope_freqs(&m->cfg, m->rot_dim, ctx, sp->inv_freq, &scale);
        if (dr) lmc_rope_freqs(&draft->cfg, draft->rot_dim, ctx, sp->dinv_freq, &dscale);
        if (scale != 1.0f || dscale != 1.0f) {
            free(sp->inv_freq), free(sp->dinv_freq);
            sp->inv_freq = sp->dinv_freq = NULL;
            return lmc_err_set(err, LMC_ERR_ARG, "attention sinks: rotary scaling with an attention factor is not supported");
        }
    }
    sp->model = m;
    sp->be = be;
    sp->dbe = be;
    sp->tok = tok;
    sp->o = *o;
    if (!(sp->o.verify_slope > 0)) sp->o.verify_slope = LMC_SPEC_DEFAULT_SLOPE;
    if (!(sp->o.verify_row > 0)) sp->o.verify_row = 0.25;
    if (!(sp->o.draft_cost > 0)) {
        if (o->mode == LMC_SPEC_DRAFT && m->weight_bytes)
            sp->o.draft_cost = LMC_MAX(0.01, (double)draft->weight_bytes / (double)m->weight_bytes);
        else if (o->mode == LMC_SPEC_SELF)
            sp->o.draft_cost = (double)o->self_layers / (double)m->cfg.num_layers;
        else
            sp->o.draft_cost = 0.01;
    }
    int64_t K = o->draft_tokens, V = m->cfg.vocab_size, R = LMC_MAX(K + 1, o->tree_rows);
    /* a compressed or 2-byte cache sized by its format (be is its backend) */
    st = lmc_kvq_kv_init(&sp->kv, m, be, ctx, o->kv_fmt, o->kv_residual, err);
    if (!st) st = lmc_acts_init(&sp->acts, m, be, LMC_MAX(R, LMC_MIN(512, ctx)), R, err);
    if (st) goto fail;
    sp->logits = malloc((size_t)R * (size_t)V * sizeof(float));
    sp->p = malloc((size_t)R * (size_t)V * sizeof(float));
    if (!sp->logits || !sp->p) goto oom;
    if (o->window > 0 && o->kv_fmt) { /* eviction decodes the rows from the sinks on (lmc_kvq_evict) */
        int64_t row = LMC_MAX(sp->kv.row, draft && o->mode == LMC_SPEC_DRAFT ? draft->arch->mixer->kv_row(&draft->cfg) : 0);
        sp->evict_buf = malloc((size_t)(2 * ctx * row) * sizeof(float));
        if (!sp->evict_buf) goto oom;
    }
    if (o->mode == LMC_SPEC_SELF && !o->tree_rows) { /* LayerSkip: the draft's hidden states for the verifier */
        sp->xs = malloc((size_t)((K + 1) * m->cfg.hidden_size) * sizeof(float));
        if (!sp->xs) goto oom;
    }
    if (o->mode == LMC_SPEC_LOOKUP || o->mode == LMC_SPEC_NONE) return LMC_OK;
    if (o->mode == LMC_SPEC_SELF) {
        /* a shallow view: same weights, the first L layers, the shared head */
        sp->self_view = *m;
        sp->self_view.cfg.num_layers = o->self_layers;
        sp->draft = &sp->self_view;
        sp->dkv = sp->kv;
        sp->dkv.n_layers = o->self_layers;
    } else {
        sp->draft = draft;
        if (o->draft_be) {
            if (!o->draft_be->host_memory || !be->host_memory || o->draft_be->kv_dtype != be->kv_dtype) {
                st = lmc_err_set(err, LMC_ERR_ARG, "speculative decoding: the draft's backend must be a host one like the target's");
                goto fail;
            }
            sp->dbe = o->draft_be;
        }
        st = lmc_kvq_kv_init(&sp->dkv, draft, sp->dbe, ctx, o->kv_fmt, o->kv_residual, err);
        if (st) goto fail;
        sp->dkv_owned = true;
    }
    st = lmc_acts_init(&sp->dacts, sp->draft, sp->dbe, LMC_MIN(512, ctx), 1, err);
    if (st) goto fail;
    if (o->draft_vocab_n > 0) {
        st = prune_head(sp, o, err);
        if (st) goto fail;
        /* the default draft cost: the bytes a pruned draft step reads */
        const struct lmc_mat *H = &sp->draft->w.head.w;
        size_t skip = (size_t)(H->rows - sp->dn) * (size_t)H->cols * (H->dtype == LMC_DTYPE_F32 ? 4 : 2);
        if (!(o->draft_cost > 0) && o->mode == LMC_SPEC_DRAFT && m->weight_bytes && draft->weight_bytes > skip)
            sp->o.draft_cost = LMC_MAX(0.01, (double)(draft->weight_bytes - skip) / (double)m->weight_bytes);
    }
    sp->dlogits = malloc((size_t)V * sizeof(float));
    sp->q = malloc((size_t)K * (size_t)V * sizeof(float));
    if (!sp->dlogits || !sp->q) goto oom;
    return LMC_OK;
oom:
    st = lmc_err_set(err, LMC_ERR_OOM, "speculative decoding: out of memory");
fail:
    lmc_spec_free(sp);
    return st;
}

void lmc_spec_free(struct lmc_spec *sp) {
    lmc_kv_free(&sp->kv);
    if (sp->dkv_owned) lmc_kv_free(&sp->dkv);
    lmc_acts_free(&sp->acts);
    lmc_acts_free(&sp->dacts);
    free(sp->logits);
    free(sp->p);
    free(sp->dlogits);
    free(sp->q);
    free(sp->inv_freq);
    free(sp->dinv_freq);
    free(sp->dhead);
    free(sp->dhead_bias);
    free(sp->dmap);
    free(sp->dsub);
    free(sp->hist);
    free(sp->evict_buf);
    free(sp->xs);
    memset(sp, 0, sizeof *sp);
}

/* Everything one generation carries between rounds. */
struct gen {
    int32_t *all;              /* prompt + output + room for K drafts */
    int64_t n;                 /* ids decided (prompt + generated) */
    int64_t tc, dc;            /* ids whose rows are valid in the target / draft cache */
    int64_t shift;             /* streaming: ids evicted; id i >= sinks sits at position i - shift */
    struct lmc_sampler ts, ds; /* target (acceptance uniforms), draft (draws) */
    struct lmc_detok dt;
    bool have_dt;
    char *text;
    size_t tlen, tcap;
    /* token tree (spec_tree.h): on for this generation; at each drafted
     * depth the draft's rank 1.. choices and its confidence; the
     * confidence's calibration */
    bool tree;
    bool xs_bad; /* SELF chain: a draft step of this round ran more than one row (no LayerSkip verify) */
    int32_t alt[LMC_SPEC_TREE_DEPTH * (LMC_SPEC_TREE_RANKS - 1)];
    float conf[LMC_SPEC_TREE_DEPTH];
    struct lmc_spec_tree_stats tst;
    struct lmc_spec_stats *stats;
};

/* Runs the draft model over the ids it has not seen up to all[n+k-1] and
 * leaves its distribution for position n+k in q. */
static lmc_status draft_step(struct lmc_spec *sp, struct gen *g, int64_t k, float *q, lmc_err *err) {
    int64_t upto = g->n + k; /* ids all[0..upto) conditioned on */
    double t0 = lmc_time_now(), c0 = thread_cpu_now();
    int64_t n = upto - g->dc;
    lmc_status st = lmc_model_forward(sp->draft, sp->dbe, &sp->dacts, &sp->dkv, g->all + g->dc, n,
                                      g->dc - g->shift, sp->dn ? NULL : sp->dlogits, false, err);
    if (st) return st;
    /* Pruned (FR-Spec): the subset's logits, the rest -inf, so q is the
     * draft's distribution renormalised over the subset (after the same
     * penalties and filters) and drafts come from the subset only. The
     * output stays exactly the target's for any q: a draft x ~ q is kept
     * with probability min(1, p(x)/q(x)), so P(x drafted and kept) =
     * q(x) min(1, p(x)/q(x)) = min(p(x), q(x)) (0 where q(x) = 0: never
     * drawn); a rejection happens with probability 1 - sum min(p, q) =
     * sum max(0, p - q) = Z and then draws from max(0, p - q) / Z, so
     * P(x) = min(p(x), q(x)) + max(0, p(x) - q(x)) = p(x) for every x,
     * those outside the subset (q = 0) through the residual alone. Each
     * position is that argument conditioned on the accepted prefix (q and
     * p both computed after it); Z = 0 means p = q and no rejection.
     * Greedy: q is one-hot at the subset's argmax, p at the target's; the
     * target's argmax is what comes out either way. test_spec_model's
     * chi-square tests cover a pruned draft. */
    if (sp->dn) {
        int64_t C = sp->draft->cfg.hidden_size, V = sp->draft->cfg.vocab_size;
        int64_t last = (n - 1) % sp->dacts.max_tokens; /* the last chunk's last row */
        lmc_model_logits(&sp->dview, sp->dbe, &sp->dacts, sp->dacts.x + last * C, 1);
        sp->dbe->download(sp->dbe->ctx, sp->dsub, sp->dacts.logits, (size_t)sp->dn * sizeof(float));
        for (int64_t i = 0; i < V; i++) sp->dlogits[i] = -INFINITY;
        for (int64_t i = 0; i < sp->dn; i++) sp->dlogits[sp->dmap[i]] = sp->dsub[i];
    }
    if (sp->xs && !g->tree) { /* LayerSkip: the row's hidden state after the draft's layers, for the verifier */
        int64_t C = sp->draft->cfg.hidden_size;
        if (n == 1 && k <= sp->o.draft_tokens) sp->dbe->download(sp->dbe->ctx, sp->xs + k * C, sp->dacts.x, (size_t)C * sizeof(float));
        else g->xs_bad = true;
    }
    double t1 = lmc_time_now();
    g->stats->draft_fwd_tcpu_s += thread_cpu_now() - c0;
    g->dc = upto;
    lmc_sampler_probs(&g->ds, sp->dlogits, g->all, upto, q);
    g->stats->draft_fwd_s += t1 - t0;
    g->stats->draft_probs_s += lmc_time_now() - t1;
    return LMC_OK;
}

/* Streaming: makes room in the target cache for m more rows (sinks kept,
 * the oldest window rows evicted, the rest moved down and re-rotated), and
 * evicts the same ids from a draft model's cache (which may hold fewer of
 * the newest rows: where it holds too few, it keeps only its sinks and
 * the next draft step feeds the kept window again). A compressed or 2-byte
 * cache evicts a quarter window at a time: each eviction rounds or
 * quantizes the moved rows again (lmc_kvq_evict). */
static void stream_make_room(struct lmc_spec *sp, struct gen *g, int64_t m,
                             struct lmc_spec_stats *stats) {
    struct lmc_stream_policy p = {sp->o.sinks, sp->o.window, sp->o.kv_fmt ? LMC_MAX(1, sp->o.window / 4) : 1};
    int64_t used = g->tc - g->shift;
    int64_t e = lmc_stream_evict_count(&p, used, m);
    if (!e) return;
    const struct lmc_config *c = &sp->model->cfg;
    lmc_kvq_evict(&sp->kv, used, c->num_kv_heads, c->head_dim, sp->model->rot_dim, sp->inv_freq, p.sinks, e,
                  sp->evict_buf);
    if (sp->o.mode == LMC_SPEC_DRAFT) {
        const struct lmc_config *dc = &sp->draft->cfg;
        int64_t dused = g->dc - g->shift, de = LMC_MIN(e, LMC_MAX(0, dused - p.sinks));
        lmc_kvq_evict(&sp->dkv, dused, dc->num_kv_heads, dc->head_dim, sp->draft->rot_dim, sp->dinv_freq, p.sinks,
                      de, sp->evict_buf);
        if (de < e) g->dc = g->shift + e + p.sinks; /* its rows are the sinks only: the window is fed again */
    }
    g->shift += e;
    stats->evicted += e;
}

/* Streaming: feeds all[tc..upto) to the target: at once where it fits the
 * sinks + window rows, else in steps of a quarter window (each token sees
 * at least 3/4 of the window), each after evicting what it needs. */
static lmc_status stream_prefill(struct lmc_spec *sp, struct gen *g, int64_t upto, lmc_err *err) {
    int64_t cap = sp->o.sinks + sp->o.window, step = LMC_MAX(1, sp->o.window / 4);
    while (g->tc < upto) {
        int64_t rem = upto - g->tc, room = cap - (g->tc - g->shift);
        int64_t c = rem <= room ? rem : LMC_MAX(room, LMC_MIN(rem, step));
        if (c > room) stream_make_room(sp, g, c, g->stats);
        lmc_status st = lmc_model_forward(sp->model, sp->be, &sp->acts, &sp->kv, g->all + g->tc, c,
                                          g->tc - g->shift, sp->logits, false, err);
        if (st) return st;
        g->tc += c;
    }
    return LMC_OK;
}

/* The prompt ids whose cached rows the call reuses: the common prefix of
 * prompt and the kept ids, all but the last prompt id; streaming: none
 * (the caches start over) unless every evicted id is in that prefix. */
static int64_t reuse_prefix(const struct lmc_spec *sp, const int32_t *prompt, int64_t n_prompt) {
    int64_t keep = 0;
    if (sp->kv.state_bytes) return 0; /* a recurrent state cannot rewind */
    while (keep < sp->n_tc && keep < n_prompt - 1 && sp->hist[keep] == prompt[keep]) keep++;
    if (sp->shift > 0 && keep < sp->o.sinks + sp->shift) keep = 0;
    return keep;
}

/* Keeps what the caches hold after a successful call (struct lmc_spec's
 * hist); where the ids do not fit in memory the next call starts over. */
static void keep_state(struct lmc_spec *sp, const struct gen *g) {
    if (g->tc > sp->hist_cap) {
        int64_t cap = LMC_MAX(g->tc, 2 * sp->hist_cap);
        int32_t *h = realloc(sp->hist, (size_t)cap * sizeof *h);
        if (!h) return;
        sp->hist = h;
        sp->hist_cap = cap;
    }
    memcpy(sp->hist, g->all, (size_t)g->tc * sizeof *g->all);
    sp->n_tc = g->tc;
    /* streaming: the draft's rows are fed again from the kept layout each call */
    sp->n_dc = sp->o.mode == LMC_SPEC_DRAFT && !sp->o.window ? LMC_MIN(g->dc, g->tc) : 0;
    sp->shift = g->shift;
}

/* Drafts up to K tokens into all[n..n+k); returns k. */
static lmc_status draft(struct lmc_spec *sp, struct gen *g, int64_t K, int64_t *k_out, lmc_err *err) {
    int64_t V = sp->model->cfg.vocab_size;
    if (sp->o.mode == LMC_SPEC_LOOKUP) {
        *k_out = lmc_spec_lookup(g->all, g->n, sp->o.lookup_ngram, K, g->all + g->n);
        return LMC_OK;
    }
    if (sp->o.mode == LMC_SPEC_SELF) g->dc = g->tc; /* the shared cache is the target's */
    g->xs_bad = false;
    for (int64_t k = 0; k < K; k++) {
        float *q = sp->q + k * V;
        lmc_status st = draft_step(sp, g, k, q, err);
        if (st) return st;
        double t0 = lmc_time_now();
        g->all[g->n + k] = lmc_spec_draw(q, V, lmc_rng_uniform(&g->ds.rng));
        g->stats->draft_probs_s += lmc_time_now() - t0;
    }
    *k_out = K;
    return LMC_OK;
}

/* The chain's verification: the target over all[n-1..n-1+k] (k + 1 rows,
 * all logits). Self-speculation reuses the draft's work (LayerSkip): the
 * first L layers of rows 0..k-1 ran in the draft steps (their K/V are in
 * the shared cache, their hidden states in sp->xs), row k runs them here
 * (no head), and the target goes on from layer L for the k + 1 rows
 * (lmc_model_forward_from; on the CPU the same bits as the whole
 * forward: test_forward_from). */
static lmc_status verify(struct lmc_spec *sp, struct gen *g, int64_t k, lmc_err *err) {
    const struct lmc_model *m = sp->model;
    int64_t p0 = g->n - 1 - g->shift;
    if (!(sp->xs && sp->o.mode == LMC_SPEC_SELF && k > 0 && !g->xs_bad))
        return lmc_model_forward(m, sp->be, &sp->acts, &sp->kv, g->all + g->n - 1, k + 1, p0, sp->logits, true, err);
    int64_t C = m->cfg.hidden_size;
    lmc_status st = lmc_model_forward(sp->draft, sp->dbe, &sp->dacts, &sp->dkv, g->all + g->n - 1 + k, 1, p0 + k,
                                      NULL, false, err);
    if (st) return st;
    sp->dbe->download(sp->dbe->ctx, sp->xs + k * C, sp->dacts.x, (size_t)C * sizeof(float));
    g->stats->layerskip_rounds++;
    return lmc_model_forward_from(m, sp->be, &sp->acts, &sp->kv, sp->xs, k + 1, p0, sp->o.self_layers, sp->logits,
                                  err);
}

/* A greedy token-tree round (spec_tree.h): drafts a chain of up to kcap
 * (adaptive: until the chain's estimated reach falls below 0.1), picks the
 * tree from the draft's confidences, verifies it in one masked forward,
 * walks it by the target's argmax (its processed probabilities at each
 * node with the path so far as history: exactly plain greedy decoding) and
 * moves an accepted sibling's cache row into place. out[0..a] are the
 * round's ids; *k_out the chain drafts verified; *rate the picked tree's
 * expected tokens per unit of cost. */
static lmc_status tree_round(struct lmc_spec *sp, struct gen *g, int64_t kcap, int32_t *out, int64_t *a_out,
                             int64_t *k_out, double *rate, struct lmc_spec_stats *stats, double *ts, lmc_err *err) {
    int64_t V = sp->model->cfg.vocab_size, kd = 0, A = LMC_SPEC_TREE_RANKS - 1;
    /* rows past the chain fill cache rows n-1+1+k..: within the context */
    int64_t rows_max = LMC_MIN(sp->o.tree_rows, sp->kv.ctx - g->n + 1);
    ts[0] = lmc_time_now();
    if (sp->o.mode == LMC_SPEC_SELF) g->dc = g->tc; /* the shared cache is the target's */
    double reach = 1;
    kcap = LMC_MIN(kcap, LMC_SPEC_TREE_DEPTH - 1);
    while (kd < kcap && (reach >= 0.1 || !sp->o.adaptive)) {
        float *q = sp->q + kd * V;
        lmc_status st = draft_step(sp, g, kd, q, err);
        if (st) return st;
        int32_t top[LMC_SPEC_TREE_RANKS];
        g->conf[kd] = (float)lmc_spec_tree_topk(sp->dlogits, V, top); /* the (penalized) logits' runners-up */
        for (int r = 1; r < LMC_SPEC_TREE_RANKS; r++) g->alt[kd * A + r - 1] = top[r] >= 0 ? top[r] : top[0];
        g->all[g->n + kd] = lmc_spec_draw(q, V, lmc_rng_uniform(&g->ds.rng));
        reach *= lmc_spec_tree_p(&g->tst, g->conf[kd], 0);
        kd++;
    }
    stats->draft_forwards += kd;
    struct lmc_spec_cost cost = {sp->o.draft_cost, sp->o.verify_slope, sp->o.verify_row};
    struct lmc_spec_tree t;
    *rate = lmc_spec_tree_pick(&g->tst, g->conf, kd, rows_max, &cost, &t);
    int64_t k = t.k;
    ts[1] = lmc_time_now();
    int32_t ids[LMC_SPEC_TREE_ROWS], depth[LMC_SPEC_TREE_ROWS], chain[LMC_SPEC_TREE_DEPTH];
    uint64_t mask[LMC_SPEC_TREE_ROWS];
    memcpy(chain, g->all + g->n, (size_t)kd * sizeof *chain);
    int64_t rows = lmc_spec_tree_rows(&t, g->all[g->n - 1], chain, g->alt, ids, depth, mask);
    int64_t pos0 = g->n - 1;
    lmc_status st = t.n_sib ? lmc_model_forward_mask(sp->model, sp->be, &sp->acts, &sp->kv, ids, rows, pos0, depth,
                                                     mask, sp->logits, err)
                            : lmc_model_forward(sp->model, sp->be, &sp->acts, &sp->kv, ids, rows, pos0, sp->logits,
                                                true, err);
    if (st) return st;
    ts[2] = lmc_time_now();
    g->tc = g->n + k;
    /* the walk: row cur at depth d (cur == d: on the chain) */
    int64_t cur = 0, d = 0;
    for (;;) {
        lmc_sampler_probs(&g->ts, sp->logits + cur * V, g->all, g->n + d, sp->p);
        int32_t id = lmc_argmax(sp->p, V);
        out[d] = id;
        if (cur != d) break; /* a sibling: a leaf */
        int64_t next = -1;
        if (d < kd) { /* the draft's choices here are known: a calibration trial */
            int rank = chain[d] == id ? 0 : -1;
            for (int r = 1; r < LMC_SPEC_TREE_RANKS && rank < 0; r++)
                if (g->alt[d * A + r - 1] == id) rank = r;
            lmc_spec_tree_stats_add(&g->tst, g->conf[d], rank);
            if (rank == 0 && d < k) next = d + 1;
        }
        for (int64_t i = 0; i < t.n_sib && next < 0; i++)
            if (t.sib_depth[i] == d + 1 && ids[1 + k + i] == id) next = 1 + k + i;
        if (next < 0) break;
        g->all[g->n + d] = id;
        d++;
        cur = next;
    }
    if (cur != d) { /* through a sibling: its row to its depth's; the draft's rows from there stale */
        int64_t src = pos0 + cur, dst = pos0 + d;
        lmc_kv_move_rows(&sp->kv, &src, &dst, 1);
        if (g->dc > g->n + d - 1) g->dc = g->n + d - 1;
        stats->tree_hits++;
    }
    if (t.n_sib) {
        stats->tree_rounds++;
        stats->tree_siblings += t.n_sib;
    }
    *a_out = d;
    *k_out = k;
    return LMC_OK;
}

lmc_status lmc_spec_generate(struct lmc_spec *sp, const int32_t *prompt, int64_t n_prompt,
                             const struct lmc_gen_opts *o, lmc_emit_fn emit, void *user,
                             struct lmc_gen_result *res, struct lmc_spec_stats *stats, lmc_err *err) {
    memset(res, 0, sizeof *res);
    struct lmc_spec_stats stl = {0};
    if (!stats) stats = &stl;
    memset(stats, 0, sizeof *stats);
    const struct lmc_model *m = sp->model;
    int64_t V = m->cfg.vocab_size, Kmax = sp->o.draft_tokens, ctx = sp->kv.ctx;
    if (o->max_new < 0) return lmc_err_set(err, LMC_ERR_ARG, "max new tokens must be >= 0");
    if (n_prompt <= 0) return lmc_err_set(err, LMC_ERR_ARG, "empty prompt: nothing to condition on");
    bool stream = sp->o.window > 0;
    if (n_prompt > ctx && !stream) /* streaming: any length, evicting */
        return lmc_err_set(err, LMC_ERR_ARG, "prompt of %lld tokens exceeds the context of %lld",
                           (long long)n_prompt, (long long)ctx);
    struct gen g;
    memset(&g, 0, sizeof g);
    g.stats = stats;
    lmc_status st = lmc_sampler_init(&g.ts, &o->sampling, V, err);
    if (st) return st;
    struct lmc_sampler_params dp = o->sampling;
    dp.seed ^= 0xd4af7ull; /* the draft's draws: their own stream */
    st = lmc_sampler_init(&g.ds, &dp, V, err);
    if (st) goto out;
    g.all = malloc((size_t)(n_prompt + o->max_new + Kmax + 2) * sizeof *g.all);
    if (!g.all) {
        st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
        goto out;
    }
    if (sp->tok) {
        st = lmc_detok_init(&g.dt, sp->tok, prompt, n_prompt, o->stop, o->n_stop, err);
        if (st) goto out;
        g.have_dt = true;
    }
    memcpy(g.all, prompt, (size_t)n_prompt * sizeof *g.all);
    g.n = n_prompt;
    double t0 = lmc_time_now();
    /* prefill all but the last prompt id past the rows kept from the last
     * call: each round feeds the last decided id and the drafts together */
    int64_t keep = reuse_prefix(sp, prompt, n_prompt), dkeep = LMC_MIN(keep, sp->n_dc);
    g.shift = keep ? sp->shift : 0;
    g.tc = keep;
    sp->n_tc = sp->n_dc = sp->shift = 0; /* the caches change: kept again once the call succeeds */
    if (stream) st = stream_prefill(sp, &g, n_prompt - 1, err);
    else if (n_prompt - 1 > keep)
        st = lmc_model_forward(m, sp->be, &sp->acts, &sp->kv, g.all + keep, n_prompt - 1 - keep, keep,
                               sp->logits, false, err);
    if (st) goto out;
    if (sp->o.mode == LMC_SPEC_DRAFT && stream) {
        /* the draft's cache in the target's layout: the sinks' ids, then the window's (those not evicted) */
        int64_t ns = LMC_MIN(sp->o.sinks, n_prompt - 1), w0 = LMC_MAX(ns, g.shift + sp->o.sinks);
        if (ns > 0)
            st = lmc_model_forward(sp->draft, sp->dbe, &sp->dacts, &sp->dkv, g.all, ns, 0, sp->dlogits, false, err);
        if (!st && n_prompt - 1 > w0)
            st = lmc_model_forward(sp->draft, sp->dbe, &sp->dacts, &sp->dkv, g.all + w0, n_prompt - 1 - w0,
                                   w0 - g.shift, sp->dlogits, false, err);
        if (st) goto out;
    } else if (sp->o.mode == LMC_SPEC_DRAFT && n_prompt - 1 > dkeep) {
        st = lmc_model_forward(sp->draft, sp->dbe, &sp->dacts, &sp->dkv, g.all + dkeep, n_prompt - 1 - dkeep,
                               dkeep, sp->dlogits, false, err);
        if (st) goto out;
    }
    g.tc = g.dc = n_prompt - 1;
    res->n_prompt_new = n_prompt - keep;
    double t1 = lmc_time_now();
    res->prefill_s = t1 - t0;
    res->finish_reason = "length";
    int64_t n_gen = 0, K = Kmax, since_probe = 0;
    struct lmc_spec_rate rate;
    lmc_spec_rate_init(&rate);
    struct lmc_spec_timing timing;
    memset(&timing, 0, sizeof timing);
    /* the token tree: greedy, a model draft or self-speculation, a model and
     * backend the masked forward runs on, no streaming or compressed cache */
    g.tree = sp->o.tree_rows > 0 && o->sampling.temperature == 0 &&
             (sp->o.mode == LMC_SPEC_DRAFT || sp->o.mode == LMC_SPEC_SELF) && !stream && !sp->o.kv_fmt &&
             lmc_model_mask_ok(m, sp->be);
    if (g.tree) lmc_spec_tree_stats_init(&g.tst);
    double cpu0 = cpu_now();
    bool done = false, stopped = false, eos = false;
    while (!done && !eos && n_gen < o->max_new) {
        /* no drafts past what is still wanted (the round adds one more) or
         * past the context (the verify forward fills positions n-1..n-1+k) */
        int64_t kcap = LMC_MIN(K, LMC_MIN(o->max_new - n_gen - 1, stream ? sp->o.window - 1 : ctx - g.n));
        if (sp->o.mode == LMC_SPEC_NONE) kcap = 0;
        int64_t k = 0;
        if (stream) stream_make_room(sp, &g, LMC_MAX(kcap, 0) + 1, stats);
        else if (g.n > ctx) {
            st = lmc_err_set(err, LMC_ERR_ARG, "context of %lld tokens is full", (long long)ctx);
            break;
        }
        int32_t out[65];
        int64_t a;
        if (g.tree) {
            double ts[3], rate = 1;
            st = tree_round(sp, &g, kcap, out, &a, &k, &rate, stats, ts, err);
            if (st) break;
            stats->draft_s += ts[1] - ts[0];
            stats->verify_s += ts[2] - ts[1];
            stats->accept_s += lmc_time_now() - ts[2];
            stats->rounds++;
            stats->drafted += k; /* the chain's; tree_siblings the rest */
            stats->accepted += a;
            if (sp->o.adaptive) { /* a plain step next where the tree did not pay; a probe every 8 */
                if (k == 0 && K == 0) stats->plain_rounds++;
                K = rate > 1 ? Kmax : 0;
                if (K == 0 && ++since_probe >= 8) {
                    K = Kmax;
                    since_probe = 0;
                }
            }
        } else {
            double ts0 = lmc_time_now();
            if (kcap > 0) {
                st = draft(sp, &g, kcap, &k, err);
                if (st) break;
                if (sp->o.mode != LMC_SPEC_LOOKUP) stats->draft_forwards += k;
            }
            double ts1 = lmc_time_now();
            st = verify(sp, &g, k, err);
            if (st) break;
            double ts2 = lmc_time_now();
            g.tc = g.n + k;
            for (int64_t i = 0; i <= k; i++)
                lmc_sampler_probs(&g.ts, sp->logits + i * V, g.all, g.n + i, sp->p + i * V);
            const float *q = sp->o.mode == LMC_SPEC_LOOKUP ? NULL : sp->q;
            a = lmc_spec_accept(sp->p, q, V, g.all + g.n, k, &g.ts.rng, out);
            stats->draft_s += ts1 - ts0;
            stats->verify_s += ts2 - ts1;
            stats->verify_rows_s[LMC_MIN(k + 1, LMC_SPEC_PROF_ROWS - 1)] += ts2 - ts1;
            stats->verify_rows_n[LMC_MIN(k + 1, LMC_SPEC_PROF_ROWS - 1)]++;
            stats->accept_s += lmc_time_now() - ts2;
            stats->rounds++;
            stats->drafted += k;
            stats->accepted += a;
            if (sp->o.adaptive && sp->o.mode != LMC_SPEC_NONE) {
                /* K from the cost model; K = 0 runs plain steps, with a 1-draft
                 * probe every 8 of them to follow the acceptance rate (a
                 * lookup that found nothing is not a trial) */
                lmc_spec_rate_add(&rate, a, k);
                if (k == 0 && K == 0) stats->plain_rounds++;
                struct lmc_spec_cost cost = {sp->o.draft_cost, sp->o.verify_slope, sp->o.verify_row};
                if (sp->o.measured) {
                    lmc_spec_timing_add(&timing, k, ts1 - ts0, ts2 - ts1);
                    K = lmc_spec_choose_k_timed(&timing, lmc_spec_rate_alpha(&rate), Kmax, &cost);
                } else {
                    K = lmc_spec_choose_k(lmc_spec_rate_alpha(&rate), Kmax, &cost);
                }
                if (K == 0 && ++since_probe >= 8) {
                    K = 1;
                    since_probe = 0;
                }
            }
        }
        for (int64_t i = 0; i <= a && !done && n_gen < o->max_new; i++) {
            int32_t id = out[i];
            if (!o->ignore_eos && lmc_detok_is_eos(&sp->model->cfg, sp->tok, id)) {
                res->finish_reason = "stop";
                eos = true;
                break;
            }
            g.all[g.n++] = id;
            n_gen++;
            const char *piece = NULL;
            size_t plen = 0;
            if (g.have_dt) {
                st = lmc_detok_push(&g.dt, id, &piece, &plen, &stopped, err);
                if (st) break;
            }
            if (stopped) {
                done = true;
                res->finish_reason = "stop";
            }
            if (plen && !lmc_detok_text_append(&g.text, &g.tlen, &g.tcap, piece, plen)) {
                st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
                break;
            }
            if (plen && emit && !emit(user, piece, plen)) done = true;
        }
        if (st) break;
        /* rollback: rows past the last decided id's predecessor are stale */
        g.tc = g.n - 1;
        if (g.dc > g.n - 1) g.dc = g.n - 1;
    }
    if (!st && !done && g.have_dt) {
        const char *piece = NULL;
        size_t plen = 0;
        lmc_detok_finish(&g.dt, &piece, &plen, &stopped);
        if (stopped) res->finish_reason = "stop";
        if (plen && !lmc_detok_text_append(&g.text, &g.tlen, &g.tcap, piece, plen))
            st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
        else if (plen && emit)
            emit(user, piece, plen);
    }
    res->decode_s = lmc_time_now() - t1;
    stats->decode_cpu_s = cpu_now() - cpu0;
    if (!st) {
        int64_t np = n_prompt;
        res->ids = malloc((size_t)LMC_MAX(n_gen, 1) * sizeof *res->ids);
        if (!res->ids) {
            st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
        } else {
            memcpy(res->ids, g.all + np, (size_t)n_gen * sizeof *res->ids);
            res->n_ids = n_gen;
            res->text = g.text ? g.text : calloc(1, 1);
            res->text_len = g.text ? g.tlen : 0;
            g.text = NULL;
            keep_state(sp, &g);
        }
    }
out:
    if (g.have_dt) lmc_detok_free(&g.dt);
    free(g.text);
    free(g.all);
    lmc_sampler_free(&g.ts);
    lmc_sampler_free(&g.ds);
    return st;
}
