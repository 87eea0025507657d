/* spec.h — speculative decoding of one sequence: drafts K tokens (prompt
 * lookup: n-gram matches in the prompt and output so far; a draft model
 * with the same vocabulary; or self-speculation: the target's first L
 * layers and its head), verifies them in one batched forward of the target
 * (all K+1 logit rows), accepts by the speculative sampling rule
 * (spec_sample.h) and rolls the caches back past rejected tokens (the
 * single-sequence cache is position-indexed: rollback is a position reset).
 * The output has exactly the target's sampling distribution for every
 * sampler setting; greedy output equals plain greedy decoding up to the
 * rounding differences of a batched versus a one-token forward. K adapts
 * to the running acceptance rate. Greedy with a model draft may verify a
 * token tree instead of the chain (spec_tree.h, opts.tree_rows). Uses
 * session.h's options and result.
 * The same loop runs StreamingLLM eviction (kvq_stream.h) and compressed
 * caches (kvq.h); mode NONE is plain decoding through it. */
#ifndef LMC_SPEC_H
#define LMC_SPEC_H

#include "lmc.h"
#include "infer/session.h"
#include "model/model.h"
#include "ops/cpu/kvquant.h"

#include <stdbool.h>
#include <stdint.h>

/* NONE: no drafts (plain decoding through this loop, for streaming) */
enum lmc_spec_mode { LMC_SPEC_NONE = 0, LMC_SPEC_LOOKUP, LMC_SPEC_DRAFT, LMC_SPEC_SELF };

struct lmc_spec_opts {
    enum lmc_spec_mode mode;
    int64_t draft_tokens;      /* K: the most drafts per round (1..64) */
    int64_t lookup_ngram;      /* LOOKUP: longest n-gram matched (1..16) */
    int64_t self_layers;       /* SELF: layers of the draft (1..num_layers-1) */
    bool adaptive;             /* K from the running acceptance rate (else fixed) */
    /* adaptive K's costs from this loop's own timings (struct lmc_spec_timing:
     * seconds per draft token and per verification of each M rows, the
     * cost model filling M not yet timed); else the model alone */
    bool measured;
    /* DRAFT: the draft model's backend (NULL: the target's); a host-memory
     * backend like the target's (e.g. the CPU backend with fewer threads:
     * a small draft's ops are too short to split) */
    const struct lmc_backend *draft_be;
    /* adaptive K's cost model (struct lmc_spec_cost; 0: the defaults) */
    double draft_cost, verify_slope, verify_row;
    /* compressed KV caches (infer/kvq.h): the backend must be made by
     * lmc_kvq_backend; NONE: the backend's own cache */
    enum lmc_kvq_fmt kv_fmt;
    int64_t kv_residual;       /* KIVI: recent tokens kept in f16 */
    /* StreamingLLM (infer/kvq_stream.h): window > 0 bounds the cache to
     * sinks + window positions for unbounded generation (rotary models, the
     * CPU f32 cache, no draft model, no compressed cache; ctx is then
     * sinks + window) */
    int64_t sinks, window;
    /* token tree (spec_tree.h): the most verification rows of a round (the
     * last id, K chain drafts and sibling leaves; 2..64, <= 11 keeps the
     * AVX2 small-M kernel); 0: a chain. Greedy with a draft model or
     * self-speculation on a model lmc_model_mask_ok takes; otherwise (a
     * temperature > 0: the chain's exact rejection rule) the chain. */
    int64_t tree_rows;
    /* draft vocabulary pruning (FR-Spec, Zhao et al. 2025): DRAFT or SELF
     * with draft_vocab_n > 0: the draft's head computes only the logits of
     * draft_vocab[0..n) (distinct ids < V: the most frequent tokens of a
     * corpus, lmc_spec_vocab_parse) and proposes only from them (q: its
     * distribution renormalised over the subset); the target verifies as
     * always. A dense head on a host backend. Copied at init. */
    const int32_t *draft_vocab;
    int64_t draft_vocab_n;
};

#define LMC_SPEC_PROF_ROWS 12

struct lmc_spec_stats {
    int64_t rounds;            /* target verification forwards */
    int64_t drafted, accepted; /* draft tokens proposed / accepted (a token tree: drafted counts
                                * the chain's, tree_siblings the rest; a path through a sibling
                                * below the chain's end accepts one more than the chain's) */
    int64_t draft_forwards;    /* draft-model forwards (DRAFT, SELF) */
    int64_t evicted;           /* tokens evicted by streaming */
    int64_t plain_rounds;      /* rounds adaptive K ran without drafts (k = 0) */
    double draft_s, verify_s;  /* seconds in drafting, in target forwards */
    double accept_s;           /* seconds in target probabilities + acceptance */
    double decode_cpu_s;       /* the process's CPU seconds in the decode loop (all threads) */
    int64_t tree_rounds;       /* rounds verified as a tree with siblings */
    int64_t tree_siblings;     /* sibling rows verified */
    int64_t tree_hits;         /* rounds whose accepted path ended in a sibling */
    int64_t layerskip_rounds;  /* SELF: verifications that went on from the draft's layer L (LayerSkip) */
    /* the profile (docs/speculation-and-kv.md): draft_s split into the
     * draft model's forwards (head included) and its probabilities and
     * draws; verify_s by verification rows M = k + 1 (index
     * min(M, LMC_SPEC_PROF_ROWS - 1)) */
    double draft_fwd_s, draft_probs_s;
    double draft_fwd_tcpu_s;   /* the calling thread's CPU seconds in the draft's forwards */
    double verify_rows_s[LMC_SPEC_PROF_ROWS];
    int64_t verify_rows_n[LMC_SPEC_PROF_ROWS];
};

struct lmc_spec {
    const struct lmc_model *model;
    const struct lmc_backend *be;
    const struct lmc_tokenizer *tok;
    struct lmc_spec_opts o;
    struct lmc_kv kv;
    struct lmc_acts acts;      /* logit_rows = K + 1 */
    float *logits, *p;         /* (K+1, V) target logits, target probabilities */
    /* the draft (DRAFT: its own model, cache and scratch; SELF: a view of
     * the target with num_layers = L writing the target's cache rows of
     * layers 0..L-1, which the verifier overwrites with equal values) */
    const struct lmc_model *draft;
    const struct lmc_backend *dbe; /* the draft's backend */
    struct lmc_model self_view;
    struct lmc_kv dkv;
    bool dkv_owned;
    struct lmc_acts dacts;
    float *dlogits, *q;        /* (V) draft logits, (K, V) draft probabilities */
    double *inv_freq;          /* (rot_dim/2) streaming: the keys' re-rotation */
    double *dinv_freq;         /* the draft model's (DRAFT) */
    float *evict_buf;          /* streaming with a compressed or 2-byte cache: lmc_kvq_evict's rows */
    float *xs;                 /* SELF chain: the draft's hidden states of a round's K + 1 rows (LayerSkip) */
    /* draft vocabulary pruning (opts.draft_vocab): a view of the draft
     * whose head holds the subset's rows (dhead, owned), the subset's ids
     * and the draft's logits over them */
    struct lmc_model dview;
    void *dhead;
    float *dhead_bias;
    int32_t *dmap;
    float *dsub;
    int64_t dn;
    /* what the caches hold after a call, for the next call's prefix reuse:
     * hist[0..n_tc) the ids whose rows are valid in the target cache, the
     * first n_dc of them in the draft model's (DRAFT; SELF shares the
     * target's); streaming: every id fed since the last start, evicted
     * ones included, shift of them evicted (id i >= sinks at slot i - shift) */
    int32_t *hist;
    int64_t hist_cap, n_tc, n_dc, shift;
};

/* draft: the draft model for LMC_SPEC_DRAFT (same vocabulary size: checked,
 * LMC_ERR_ARG), NULL otherwise. Options checked with LMC_ERR_ARG. With
 * streaming, ctx is ignored (the cache holds sinks + window positions). */
lmc_status lmc_spec_init(struct lmc_spec *sp, const struct lmc_model *m, const struct lmc_backend *be,
                         const struct lmc_tokenizer *tok, const struct lmc_model *draft,
                         const struct lmc_spec_opts *o, int64_t ctx, lmc_err *err);
void lmc_spec_free(struct lmc_spec *sp);

/* Generates like lmc_session_generate (same options, stop strings, EOS,
 * streaming and result). stats may be NULL. The caches keep what a call
 * leaves: the next call prefills only the prompt past its common prefix
 * with the ids kept (at least the last prompt id is fed by the first
 * round; res->n_prompt_new: the prompt ids not reused), as a session does,
 * the compressed caches and the draft's included. Streaming (o.window > 0):
 * a prompt of any length runs (what does not fit the sinks + window rows
 * is fed in steps, evicting as the rounds do); the kept state is continued
 * when the prompt starts with every id evicted so far and diverges from
 * the kept ids, if at all, within the rows still cached (a conversation
 * that only grows), else the caches start over. After an error the next
 * call starts over. */
lmc_status lmc_spec_generate(struct lmc_spec *sp, const int32_t *prompt, int64_t n_prompt,
                             const struct lmc_gen_opts *o, lmc_emit_fn emit, void *user,
                             struct lmc_gen_result *res, struct lmc_spec_stats *stats, lmc_err *err);

/* Reads a draft vocabulary ranking (FR-Spec): text, one token id per line
 * (the first integer of the line; anything after it, e.g. a count, is
 * ignored; blank lines and lines starting with '#' skipped), most frequent
 * first. Writes the first min(n, ids in the file) to ids and their number
 * to *n_out. Ids outside 0..V-1, duplicates and lines not starting with an
 * id are LMC_ERR_FORMAT (line number in the message). */
lmc_status lmc_spec_vocab_parse(const char *text, size_t len, int64_t V, int64_t n, int32_t *ids,
                                int64_t *n_out, lmc_err *err);

/* Prompt lookup: the longest n-gram (ngram down to 1) ending ids[n-1] that
 * also occurs earlier (the latest such occurrence) proposes the tokens that
 * followed it; writes up to k of them to out and returns how many (0 when
 * nothing matches). */
int64_t lmc_spec_lookup(const int32_t *ids, int64_t n, int64_t ngram, int64_t k, int32_t *out);

/* The next K from the running per-draft acceptance rate alpha in [0, 1]:
 * 1 + the expected run of acceptances alpha / (1 - alpha), in [1, kmax]
 * (the server's old rule; bench_spec prints it for comparison). */
int64_t lmc_spec_next_k(double alpha, int64_t kmax);

/* The time of a round in 1-token target forwards: k draft tokens of
 * `draft` each, and a (k+1)-token verification costing
 * max(1 + slope k, row (k+1)) — the weights read once (memory-bound: each
 * row adds only `slope`) until the rows' arithmetic takes longer than the
 * read (compute-bound: `row` per row). Defaults (lmc_spec_init, and the
 * server's scheduler): draft = the draft's weight bytes over the target's
 * (self-spec L / layers, lookup 0.01), slope lmc_spec_default_slope(), row
 * 0.25 (bench_spec measures all three; a 91M bf16 target on a 2-core Zen 4:
 * 0.15, 0.02, 0.35). */
struct lmc_spec_cost {
    double draft, slope, row;
};
/* The verification's default slope for this build's small-M kernel: 0.02
 * with AVX-512, 0.065 otherwise (spec.c says why); one constant for
 * `lmc generate` and `lmc serve`. */
double lmc_spec_default_slope(void);
double lmc_spec_round_cost(const struct lmc_spec_cost *c, int64_t k);
/* The same in a batch of `batch` sequences that each run k drafts (the
 * server's continuous batching), per sequence and in units of a plain step
 * of the batch: k batched draft forwards of `batch` rows and a verification
 * of batch (k+1) rows, where a forward of R rows costs
 * max(1 + slope (R - 1), row R); over the plain step's cost. batch 1 is
 * lmc_spec_round_cost; a big batch is compute-bound already, so its verify
 * rows cost `row` each and drafts stop paying. */
double lmc_spec_round_cost_batch(const struct lmc_spec_cost *c, int64_t k, int64_t batch);

/* The K in [0, kmax] that maximizes the expected tokens per unit of time of
 * a round, (1 - alpha^(K+1)) / (1 - alpha) tokens for
 * lmc_spec_round_cost(c, K) (K = 0: a plain step, cost 1).
 * lmc_spec_generate's adaptive rule. */
int64_t lmc_spec_choose_k(double alpha, int64_t kmax, const struct lmc_spec_cost *c);
/* The same with lmc_spec_round_cost_batch's cost (batch 1: choose_k). */
int64_t lmc_spec_choose_k_batch(double alpha, int64_t kmax, const struct lmc_spec_cost *c, int64_t batch);

/* Measured costs for adaptive K (lmc_spec_opts.measured): decayed sums of
 * the seconds of draft tokens and of verification forwards per row count
 * M = k + 1 (a sample over 3x the running mean is clipped: a preempted
 * round on a shared machine). An M not timed yet is estimated from the
 * nearest timed one through the cost model's shape; the draft token from
 * the model's draft cost until timed. Every 8th round probes K +- 1 of the
 * choice (alternating), so neighbours stay timed. */
#define LMC_SPEC_TIMING_MAX 66
struct lmc_spec_timing {
    double dsum, dn;                         /* draft seconds, draft tokens */
    double vsum[LMC_SPEC_TIMING_MAX], vn[LMC_SPEC_TIMING_MAX]; /* by M */
    int64_t rounds;
};
void lmc_spec_timing_add(struct lmc_spec_timing *t, int64_t k, double draft_s, double verify_s);
/* The K in [0, kmax] with the most expected tokens per measured second
 * (c: the model that fills the gaps); then the probe rule above. */
int64_t lmc_spec_choose_k_timed(struct lmc_spec_timing *t, double alpha, int64_t kmax,
                                const struct lmc_spec_cost *c);

/* Running per-draft acceptance estimate: decayed counts of accepted drafts
 * and of Bernoulli trials (a round that accepts a of k drafts ran a + 1
 * trials when a < k, k when all were kept: a / k would be biased low). */
struct lmc_spec_rate {
    double acc, trials;
};
void lmc_spec_rate_init(struct lmc_spec_rate *r);
void lmc_spec_rate_add(struct lmc_spec_rate *r, int64_t accepted, int64_t drafted);
double lmc_spec_rate_alpha(const struct lmc_spec_rate *r);

#endif
