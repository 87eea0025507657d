/* scheduler.h — continuous batching over a paged KV cache. One scheduler
 * thread owns the model and the cache; requests are submitted from any
 * thread and join the running batch between decode steps; prompts are
 * prefilled in chunks so a long prompt does not stall the others; when KV
 * blocks run out, requests wait or are preempted (freed and recomputed
 * later), never failed mid-stream. Results stream back through a callback
 * called on the scheduler thread. */
#ifndef LMC_SCHEDULER_H
#define LMC_SCHEDULER_H

#include "lmc.h"
#include "infer/grammar.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct lmc_sched; /* opaque */

struct lmc_sched_opts {
    int max_batch;              /* sequences decoded together (default 64) */
    int block_size;             /* tokens per KV block (default 8) */
    int64_t kv_blocks;          /* blocks in the pool (0: from kv_bytes) */
    size_t kv_bytes;            /* memory for the pool when kv_blocks == 0 */
    int64_t max_step_tokens;    /* prompt tokens per step (default 512); each decoding sequence's
                                 * token comes on top (a step holds at most max_step_tokens +
                                 * max_batch rows; speculative drafts count in the budget) */
    int64_t ctx;                /* longest sequence (prompt + output) */
    bool prefix_cache;          /* reuse full blocks with equal token prefixes (default on) */
    int64_t prefix_cache_blocks; /* blocks the prefix cache may keep with no running user,
                                  * least recently used evicted beyond (0: a quarter of the pool) */
    /* Recurrent models (Mamba): the prefix cache keeps state snapshots every
     * snapshot_tokens tokens of a sequence (0: 256); the pool holds max_batch
     * live slots plus prefix_cache_blocks snapshots (0: max_batch) when
     * kv_blocks is 0. */
    int64_t snapshot_tokens;
    /* Tensor-parallel serving (infer/sched_tp.h; NULL: none): m is rank 0's
     * shard; each forward step is sent over tp to the other ranks
     * (lmc_sched_follow), tp_group's status checked after it. */
    struct lmc_comm *tp;
    struct lmc_tp_group *tp_group;
    /* Expert-parallel serving (lmc serve --ep; NULL: none): m holds rank
     * 0's experts (model/moe_ep.h, replicated mode), the steps go to the
     * other ranks over tp as above (tp_group NULL), and the group's status
     * is checked after each step. */
    struct lmc_ep_group *ep_group;
    /* Speculative decoding inside the batch (LMC_SCHED_SPEC_LOOKUP: n-gram
     * drafts from the sequence's own prompt and output, no second model):
     * a sequence in decode state runs its last token and up to spec_k
     * drafts (1..16, default 4; adapted per request to its acceptance
     * rate) as rows of the step's one forward; greedy requests keep the
     * drafts equal to the argmax (so their tokens are exactly those without
     * speculation), sampled ones accept by the speculative sampling rule
     * (the target's distribution exactly); rejected drafts' KV rows are
     * rolled back and their blocks released. Requests with a grammar or
     * logprobs do not speculate; recurrent models refuse it. Only while at
     * most spec_max_batch sequences run (0: always; default 16): a large
     * batch already reads each weight once for many tokens. */
    int spec;                   /* enum lmc_sched_spec (default NONE) */
    /* LMC_SCHED_SPEC_DRAFT: a smaller model with the same vocabulary
     * (borrowed; outlives the scheduler) drafts instead, batched over the
     * speculating sequences (spec_k draft forwards per step, its own
     * paged pool of as many blocks, no prefix cache), each draft drawn
     * from the request's sampler over the draft's logits (its own rng);
     * acceptance by min(1, p/q) and the residual norm(max(0, p - q)). */
    const struct lmc_model *draft;
    int64_t spec_k;             /* most drafts per sequence and step (1..16, default 4) */
    int64_t spec_ngram;         /* longest n-gram prompt lookup matches (default 3) */
    int spec_max_batch;
    /* Adaptive K (default; spec_fixed_k: always spec_k): each step, every
     * sequence in decode state that may speculate takes the K in 0..spec_k
     * of lmc_spec_choose_k_batch (infer/spec.h) for its own running
     * acceptance estimate (lmc_spec_rate: decayed counts, prior 0.7), K = 0
     * being a plain step, with a 1-draft probe after every 8 of them.
     * Greedy requests (temperature 0: their tokens do not depend on K)
     * price a round in a batch of the running sequences (a big batch is
     * compute-bound: drafts stop paying); sampled ones as if alone, so a
     * seeded request's tokens do not depend on its batch. No timing input:
     * the choices are deterministic. The cost model's draft cost (0: the
     * draft's weight bytes over the target's, prompt lookup 0.01),
     * verification slope (0: lmc_spec_default_slope(), 0.02 with AVX-512,
     * 0.065 otherwise) and row cost (0: 0.25), as lmc
     * generate's --draft-model. */
    bool spec_fixed_k;
    double spec_draft_cost, spec_verify_slope, spec_verify_row;
    /* KIVI-2 pools (a backend with attention_paged_ring, infer/kvq.h):
     * positions each running sequence keeps in f16 besides the pool
     * (0..4096, default 32); the block size must be a multiple of 32 */
    int64_t kv_residual;
    /* Prompt rows through the CPU's bf16 prefill GEMM (AVX512-BF16, F16/BF16
     * weights; default on; on AVX2 CPUs our fp32 GEMM, gemm_f32.c): each
     * step sends its prompt rows (first in the batch) through it and
     * generated rows (decode, drafts, a preempted request's recomputed
     * output) through the decode-row GEMM, so a row's
     * bits depend only on the request. Off for recurrent models, LoRA
     * banks, tensor/expert/pipeline parallel serving and other backends.
     * With it on, blocks holding generated positions stay out of the
     * prefix cache (their rows differ from a prompt's). */
    bool bf16_prefill;
    /* Debug trace (borrowed; NULL: none): one line per step (its rows and
     * how long scheduling, the forward and the emits took) and one per
     * request's first token (when it was submitted, first scheduled and
     * got its token, and in which steps), for finding where time to first
     * token goes. Written on the scheduler thread. */
    FILE *trace;
};
enum lmc_sched_spec { LMC_SCHED_SPEC_NONE = 0, LMC_SCHED_SPEC_LOOKUP = 1, LMC_SCHED_SPEC_DRAFT = 2 };
void lmc_sched_opts_default(struct lmc_sched_opts *o);

#define LMC_SCHED_MAX_STOP 8
#define LMC_SCHED_SPEC_KMAX 16 /* the most spec_k */
#define LMC_SCHED_MAX_TOP_LOGPROBS 20

struct lmc_request {
    struct lmc_sampler_params sampling; /* seed: per request, so results do not depend on the batch */
    int64_t max_tokens;
    const char *stop[LMC_SCHED_MAX_STOP]; /* copied at submit */
    int n_stop;
    bool ignore_eos;
    int top_logprobs;           /* 0..LMC_SCHED_MAX_TOP_LOGPROBS; <0: no logprobs */
    /* structured output: sampling keeps the text a valid prefix of this
     * grammar's language and ends only where it is complete (NULL: none).
     * Borrowed: it must outlive the request's last event. The request gets
     * its own parse state; the vocabulary's byte strings are built once per
     * scheduler, on the first such request. */
    const struct lmc_grammar *grammar;
    int adapter;                /* the model's serving adapter (train/lora_bank.h), 1..n; 0: the base.
                                 * Its prefix-cache blocks are its own (never shared across adapters) */
};

enum lmc_sched_event_kind { LMC_EV_TOKEN = 0, LMC_EV_DONE, LMC_EV_ERROR };

struct lmc_sched_event {
    enum lmc_sched_event_kind kind;
    uint64_t req_id;
    /* TOKEN: the token and the new valid UTF-8 text it completes (may be
     * empty while a character or a possible stop string is pending). text
     * points into the scheduler's buffers: valid only during the callback.
     * An end-of-sequence token ends the request with DONE "stop" and gets
     * no TOKEN event (nor a place in completion_tokens). */
    int32_t token;
    const char *text;
    size_t text_len;
    float logprob;              /* log p(token) after processing (penalties, then
                                 * temperature when > 0), if requested; top_ids /
                                 * top_logprobs: the n_top most likely, best first */
    int n_top;
    int32_t top_ids[LMC_SCHED_MAX_TOP_LOGPROBS];
    float top_logprobs[LMC_SCHED_MAX_TOP_LOGPROBS];
    /* DONE: "stop", "length" or "cancelled"; usage counts. text/text_len
     * may carry the last text held back until the end (an unfinished
     * character as U+FFFD, a stop-string prefix that never completed):
     * append it to the output. */
    const char *finish_reason;
    int64_t prompt_tokens, completion_tokens, cached_prompt_tokens;
    /* ERROR */
    const char *error;
};

/* Called on the scheduler thread; must not block for long. After DONE or
 * ERROR no further events come for that request. */
typedef void (*lmc_sched_fn)(void *user, const struct lmc_sched_event *ev);

lmc_status lmc_sched_init(struct lmc_sched **out, const struct lmc_model *m,
                          const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                          const struct lmc_sched_opts *o, lmc_err *err);
/* Begins the shutdown without waiting: from now on submit refuses, and the
 * thread, once the step it is in ends, sends every request it still has
 * (running, waiting or just submitted) one ERROR "shutting down" and
 * exits. */
void lmc_sched_stop(struct lmc_sched *s);
/* lmc_sched_stop, then waits for the thread and frees. */
void lmc_sched_free(struct lmc_sched *s);

/* Queues a request (prompt ids are copied). LMC_ERR_ARG for a prompt that
 * with max_tokens cannot fit ctx or the whole pool, or bad parameters. */
lmc_status lmc_sched_submit(struct lmc_sched *s, const int32_t *prompt, int64_t n_prompt,
                            const struct lmc_request *r, lmc_sched_fn fn, void *user,
                            uint64_t *req_id, lmc_err *err);
/* Cancels a request (e.g. the client went away): its blocks are freed and
 * it gets a DONE event with finish_reason "cancelled" unless already done. */
void lmc_sched_cancel(struct lmc_sched *s, uint64_t req_id);

struct lmc_sched_stats {
    int64_t running, waiting, preempted_total;
    int64_t kv_blocks_total, kv_blocks_used;
    int64_t kv_tokens_stored;      /* tokens held in used blocks (for waste) */
    int64_t prefix_hits_tokens, prefix_queries_tokens;
    int64_t prefix_cache_blocks;   /* blocks held only by the prefix cache (no running user) */
    int64_t prefix_cache_blocks_max; /* its bound */
    int64_t prefix_hits_blocks, prefix_evictions; /* blocks reused; blocks evicted */
    int64_t state_snapshots, state_restores; /* recurrent: snapshots taken; requests resumed from one */
    int64_t requests_total, prompt_tokens_total, generated_tokens_total;
    int64_t finished_total;        /* requests that got their DONE or ERROR event */
    int64_t steps;
    int64_t kv_bytes_per_token;    /* K and V of one token over all layers in the pool's format */
    int64_t kv_pool_bytes;         /* the pool's memory (blocks x block bytes, plus KIVI-2 rings) */
    int64_t spec_proposed_total, spec_accepted_total; /* draft tokens verified / kept */
    int64_t spec_steps;            /* steps in which some sequence speculated */
    /* sequence-steps by the K chosen (0..16; speculating decode rows only;
     * fewer drafts may come: lookup without a match, max_tokens, context) */
    int64_t spec_k_steps[LMC_SCHED_SPEC_KMAX + 1];
};
void lmc_sched_stats(struct lmc_sched *s, struct lmc_sched_stats *out);
/* Waits until the scheduler has published a state with nothing running,
 * waiting or incoming and no KV block in use (every submitted request has
 * had its last event), or timeout_s passes; true when idle. */
bool lmc_sched_wait_idle(struct lmc_sched *s, double timeout_s, struct lmc_sched_stats *out);

#endif
