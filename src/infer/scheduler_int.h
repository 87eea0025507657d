/* scheduler_int.h — the scheduler's internals shared by its files:
 * scheduler.c (queues, steps, the thread, submit/cancel/stats) and
 * scheduler_spec.c (speculative decoding inside the batch). Not a public
 * interface: everything here runs on the scheduler thread unless a field
 * says "under mu". */
#ifndef LMC_SCHEDULER_INT_H
#define LMC_SCHEDULER_INT_H

#include "infer/scheduler.h"
#include "infer/detok.h"
#include "infer/paged_kv.h"
#include "infer/spec.h"
#include "model/forward_batch.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct req {
    uint64_t id;
    struct req *next;              /* incoming list */
    int32_t *toks;                 /* (n_prompt + max_tokens) prompt, then generated */
    int64_t n_prompt, n_gen;
    struct lmc_request r;
    char *stop[LMC_SCHED_MAX_STOP];
    lmc_sched_fn fn;
    void *user;
    struct lmc_sampler smp;
    struct lmc_grammar_state *gs;  /* structured output: the parse state, or NULL */
    struct lmc_detok dt;
    struct lmc_kv_seq seq;
    int64_t n_computed;            /* leading tokens whose K/V are in the cache */
    int64_t cached_prompt;         /* prompt tokens found in the prefix cache at first admission */
    bool admitted_once, cancelled;
    int64_t take;                  /* tokens scheduled this step (0: none) */
    int64_t n_draft;               /* speculation: drafts at toks[n_total..) in this step's take */
    int64_t spec_k;                /* speculation: drafts asked for this step (adaptive, 0..opts.spec_k) */
    struct lmc_spec_rate spec_rate; /* speculation: running acceptance estimate per draft */
    int64_t spec_plain;            /* speculation: plain steps (K = 0) since the last probe */
    /* draft model (opts.draft): its cache, the leading tokens whose K/V
     * it holds, its sampler (the request's parameters, its own rng), and
     * this step's drafts ready at toks[n_total..) with their distributions
     * at dq + d_slot * spec_k * V */
    struct lmc_kv_seq dseq;
    int64_t d_computed, d_ready, d_want, d_fed;
    int d_slot;
    struct lmc_sampler dsmp;
    bool dsmp_ok;
    int slot;                      /* sequence index in this step's batch */
    int ring;                      /* KIVI-2 pool: its ring slot while running (-1: none) */
    double t_submit, t_first_sched; /* trace: lmc_time_now() at submit; at the start of its first step */
    int64_t step_submit, step_first; /* trace: steps run before submit; first step scheduling it (-1: none) */
};

struct lmc_sched {
    const struct lmc_model *m;
    const struct lmc_backend *be;
    const struct lmc_tokenizer *tok;
    struct lmc_sched_opts o;
    int64_t max_blocks;            /* blocks per sequence: ceil(ctx / block_size) */
    struct lmc_paged_kv kv;
    struct lmc_batch_acts acts;
    int64_t max_logits;            /* logits rows per step: max_batch, plus max_batch * spec_k */
    float *logits;                 /* (max_logits, V) host */
    int32_t *ids;                  /* (max_logits) host: argmax ids of an all-greedy step */
    float *spec_p;                 /* (spec_k + 1, V) host: a speculating row's target distributions */
    bool spec_now;                 /* this step speculates (spec on, batch small enough) */
    bool route;                    /* prompt rows through the CPU's bf16 GEMM, by kind (step) */
    bool bf16_restore;             /* the backend's row-count bf16 route was on before init */
    /* draft model (opts.draft): its paged pool, scratch, logits, the
     * drafts' distributions (max_batch, spec_k, V) and its batch */
    struct lmc_paged_kv dkv;
    struct lmc_batch_acts dacts;
    float *dlogits, *dq;
    int32_t *d_ids, *d_seq, *d_pos, *d_bt, *d_rows;
    struct req **drows;
    int64_t n_spec_proposed, n_spec_accepted, n_spec_steps;
    int64_t spec_k_steps[LMC_SCHED_SPEC_KMAX + 1]; /* sequence-steps by chosen K */
    struct lmc_spec_cost spec_cost; /* adaptive K's cost model (defaults filled in) */
    struct lmc_grammar_vocab *gv;  /* the vocabulary as bytes for grammar masks (built on first use) */
    uint8_t *allowed;              /* (V) a grammar mask */
    struct lmc_sample_row *sprm;   /* (max_batch) host: sample_rows params of an all-plain step */
    int32_t *b_ids, *b_seq, *b_pos, *b_bt, *b_rows, *b_ad; /* this step's batch (host; b_rows max_logits) */
    int32_t *b_ring, *d_ring;      /* (max_batch) the batch's ring slots (KIVI-2 pools), target and draft */
    bool *ring_used;               /* (max_batch) ring slots taken, when the pool has a ring */
    struct req **sched;            /* (max_batch) scheduled this step */
    uint32_t *blk_seen;            /* (kv blocks) publish_stats' visit stamp of each block */
    int32_t *blk_fill;             /* (kv blocks) tokens counted in it this visit */
    uint32_t stamp;
    /* scheduler thread only */
    struct req **waiting, **running;
    int64_t n_waiting, cap_waiting, n_running;
    int64_t n_preempted, n_steps, n_generated, n_finished; /* published into st by publish_stats */
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t idle_cv;        /* broadcast by publish_stats */
    pthread_t thread;
    bool stopping;
    struct req *in_head, *in_tail;
    int64_t n_incoming;
    uint64_t *cancels;
    int64_t n_cancels, cap_cancels;
    uint64_t next_id;
    struct lmc_sched_stats st;
    double t_init;                 /* trace: times are seconds since init */
};

static inline int64_t lmc_sched_req_total(const struct req *q) { return q->n_prompt + q->n_gen; }
/* Positions of q the prefix cache may share once computed: all of them,
 * or with the bf16 route by kind (lmc_sched_opts.bf16_prefill) its
 * prompt's only (generated positions were fp32 rows; a prompt repeating
 * them computes bf16 rows, and a hit must give the bits a miss gives). */
static inline int64_t lmc_sched_shareable(const struct lmc_sched *s, const struct req *q) {
    return s->route && q->n_computed > q->n_prompt ? q->n_prompt : q->n_computed;
}

/* Emits q's next token id (scheduler.c: end of sequence, stop strings,
 * max_tokens and the context end handled there); row: its logits row for
 * grammar masks and logprobs, or NULL when id was chosen elsewhere (q has
 * no grammar and no logprobs). True when q finished (DONE or ERROR sent). */
bool lmc_sched_emit_token(struct lmc_sched *s, struct req *q, float *row, int32_t id);

/* ---- speculation (scheduler_spec.c): prompt-lookup drafts, verified in
 * the step's one batched forward */

/* True when q may speculate: no grammar, no logprobs, attention KV (not a
 * recurrent state). */
bool lmc_sched_spec_ok(const struct lmc_sched *s, const struct req *q);
/* Adaptive K (opts.spec_fixed_k off): sets spec_k of every running
 * sequence in decode state that may speculate from its acceptance
 * estimate and the batch (scheduler.h), counting the choices. Called at the
 * start of a speculating step. */
void lmc_sched_spec_plan(struct lmc_sched *s);
/* Draft model: runs the draft over every running sequence in decode state
 * that may speculate (catching its cache up first, partly when the step's
 * token budget runs out), spec_k batched forwards, leaving each one's
 * drafts at toks[n_total..) (d_ready of them) and their distributions in
 * dq. A failing draft forward only ends this step's drafting. */
void lmc_sched_spec_draft_phase(struct lmc_sched *s);
/* For q in decode state: drafts up to LMC_MIN(q->spec_k, max_drafts) tokens
 * by prompt lookup (or takes that many of the draft model's d_ready) into
 * q->toks[n_total..) (never past max_tokens - 1 more or the context) and
 * returns how many. */
int64_t lmc_sched_spec_propose(struct lmc_sched *s, struct req *q, int64_t max_drafts);
/* After the forward that ran q's last token and its q->n_draft drafts:
 * ids (n_draft + 1 argmax ids; greedy q) or logits (n_draft + 1 rows)
 * decide how many drafts stand (greedy: equal to the argmax; sampled: the
 * speculative sampling rule), the accepted tokens and the corrected or
 * bonus one are emitted, and q's cache rolls back past the rejected ones
 * (n_computed, prefix-cache commit, blocks past the sequence released).
 * True when q finished. */
bool lmc_sched_spec_verify(struct lmc_sched *s, struct req *q, const int32_t *ids, float *logits);

#endif
