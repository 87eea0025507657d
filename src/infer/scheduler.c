/* scheduler.c — continuous batching (see scheduler.h). One thread owns the
 * model's batch scratch and the paged KV cache. Each step it takes new and
 * cancelled requests from the submitting threads (one mutex), gives every
 * running sequence its decode token, then prefill chunks in admission order
 * within max_step_tokens (the decode tokens come on top), admits waiting requests while blocks allow (after
 * a prefix-cache lookup: a prompt found whole runs only its last token, in
 * a copy of its last block), runs one lmc_model_forward_batch, and samples each
 * sequence that reached its last token with its own sampler (a step whose
 * sampled sequences are all plain greedy takes the argmax on the backend
 * and downloads only the ids). When blocks
 * run out, the most recently admitted running sequence is preempted: its
 * blocks are released (full ones stay in the prefix cache) and it waits at
 * the front of the queue to recompute prompt + generated tokens; what it
 * already emitted stays emitted and its sampler state is kept, so its
 * output does not change. A request with a grammar (structured output)
 * is sampled from its logits row with the tokens its parse state cannot
 * take masked out; the state is freed before its last event. With
 * speculation on (opts.spec), a decode row may carry drafts after its last
 * token (several logits rows per sequence in the one forward); their
 * drafting, verification and rollback live in scheduler_spec.c. */
#include "infer/scheduler_int.h"
#include "core/core.h"
#include "core/rng.h"
#include "infer/detok.h"
#include "infer/paged_kv.h"
#include "model/forward_batch.h"
#include "infer/sched_tp.h"
#include "model/moe_ep.h"
#include "dist/comm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void lmc_sched_opts_default(struct lmc_sched_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_batch = 64;
    o->block_size = 8;
    o->max_step_tokens = 512;
    o->prefix_cache = true;
    o->spec_k = 4;
    o->spec_ngram = 3;
    o->spec_max_batch = 16;
    o->kv_residual = 32;
    o->bf16_prefill = true;
}

static int64_t n_total(const struct req *q) { return lmc_sched_req_total(q); }

/* Whether q's rows this step are prompt positions (the bf16 route by
 * kind; a chunk never mixes prompt and generated positions: cut_take). */
static bool prompt_rows(const struct req *q) { return q->n_computed < q->n_prompt; }

/* KIVI-2 pools: a running sequence's ring slot (empty when taken) */
static void ring_take(struct lmc_sched *s, struct req *q) {
    if (!s->ring_used || q->ring >= 0) return;
    int64_t i = 0;
    while (s->ring_used[i]) i++; /* running <= max_batch = slots */
    LMC_ASSERT(i < s->o.max_batch);
    s->ring_used[i] = true;
    q->ring = (int)i;
    lmc_kv_pool_ring_reset(&s->kv.pool, i);
    if (s->o.draft) lmc_kv_pool_ring_reset(&s->dkv.pool, i);
}
static void ring_give(struct lmc_sched *s, struct req *q) {
    if (q->ring >= 0) s->ring_used[q->ring] = false;
    q->ring = -1;
}

static void req_free(struct lmc_sched *s, struct req *q) {
    ring_give(s, q);
    /* the prompt's full blocks stay cached longest: a repeated prompt hits
     * (as llama-server's slot cache does) however many outputs came since */
    if (!s->kv.pool.state) lmc_kv_seq_release_outputs_first(&s->kv, &q->seq, q->n_prompt / s->kv.block_size);
    lmc_kv_seq_free(&s->kv, &q->seq);
    if (s->o.draft) lmc_kv_seq_free(&s->dkv, &q->dseq);
    if (q->dsmp_ok) lmc_sampler_free(&q->dsmp);
    lmc_sampler_free(&q->smp);
    lmc_grammar_state_free(q->gs);
    lmc_detok_free(&q->dt);
    for (int i = 0; i < LMC_SCHED_MAX_STOP; i++) free(q->stop[i]);
    free(q->toks);
    free(q);
}

static void emit_done(struct lmc_sched *s, struct req *q, const char *reason, const char *text,
                      size_t len) {
    lmc_grammar_state_free(q->gs); /* the grammar it points to may go with the last event */
    q->gs = NULL;
    struct lmc_sched_event ev = {0};
    ev.kind = LMC_EV_DONE;
    ev.req_id = q->id;
    ev.token = -1;
    ev.text = text ? text : "";
    ev.text_len = len;
    ev.finish_reason = reason;
    ev.prompt_tokens = q->n_prompt;
    ev.completion_tokens = q->n_gen;
    ev.cached_prompt_tokens = q->cached_prompt;
    s->n_finished++;
    q->fn(q->user, &ev);
}

static void emit_error(struct lmc_sched *s, struct req *q, const char *msg) {
    lmc_grammar_state_free(q->gs);
    q->gs = NULL;
    s->n_finished++;
    struct lmc_sched_event ev = {0};
    ev.kind = LMC_EV_ERROR;
    ev.req_id = q->id;
    ev.token = -1;
    ev.text = "";
    ev.error = msg;
    q->fn(q->user, &ev);
}

/* ---- queues (scheduler thread) */

static bool waiting_insert(struct lmc_sched *s, struct req *q, bool front) {
    if (s->n_waiting == s->cap_waiting) {
        int64_t cap = LMC_MAX(16, 2 * s->cap_waiting);
        struct req **w = realloc(s->waiting, (size_t)cap * sizeof *w);
        if (!w) return false;
        s->waiting = w;
        s->cap_waiting = cap;
    }
    if (front) {
        memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof *s->waiting);
        s->waiting[0] = q;
    } else {
        s->waiting[s->n_waiting] = q;
    }
    s->n_waiting++;
    return true;
}

static void remove_at(struct req **a, int64_t *n, int64_t i) {
    memmove(a + i, a + i + 1, (size_t)(*n - i - 1) * sizeof *a);
    (*n)--;
}

/* Frees the last running sequence's blocks and requeues it first in line. */
static void preempt_last(struct lmc_sched *s) {
    struct req *q = s->running[--s->n_running];
    lmc_kv_seq_release(&s->kv, &q->seq);
    if (s->o.draft) lmc_kv_seq_release(&s->dkv, &q->dseq);
    ring_give(s, q);
    q->n_computed = q->d_computed = q->d_ready = 0;
    q->take = 0;
    q->n_draft = 0;
    s->n_preempted++;
    if (!waiting_insert(s, q, true)) { /* no memory to requeue: cannot go on silently */
        emit_error(s, q, "out of memory while preempting");
        req_free(s, q);
    }
}

/* ---- one step */

/* Log-softmax of the processed logits (after penalties and temperature)
 * for the chosen token and the top n. */
static void logprobs(const struct req *q, const float *row, int64_t V, int32_t id,
                     struct lmc_sched_event *ev) {
    double T = q->r.sampling.temperature > 0 ? q->r.sampling.temperature : 1.0;
    double mx = row[lmc_argmax(row, V)] / T, sum = 0;
    for (int64_t i = 0; i < V; i++) sum += exp(row[i] / T - mx);
    double lse = mx + log(sum);
    ev->logprob = (float)(row[id] / T - lse);
    int n = (int)LMC_MIN((int64_t)q->r.top_logprobs, V), have = 0;
    for (int64_t i = 0; n > 0 && i < V; i++) { /* insertion into the sorted top n (none when n = 0); first index on ties */
        if (have == n && !(row[i] > row[ev->top_ids[n - 1]])) continue;
        int k = have < n ? have++ : n - 1;
        while (k > 0 && row[i] > row[ev->top_ids[k - 1]]) {
            ev->top_ids[k] = ev->top_ids[k - 1];
            k--;
        }
        ev->top_ids[k] = (int32_t)i;
    }
    for (int k = 0; k < n; k++) ev->top_logprobs[k] = (float)(row[ev->top_ids[k]] / T - lse);
    ev->n_top = n;
}

/* True when q's next token is the plain argmax of its logits: greedy, no
 * penalties (which change the logits with the history), no logprobs. Steps
 * where every sampled sequence is so take the argmax on the backend
 * (lmc_model_forward_batch_argmax) and never download the logits. */
static bool plain_greedy(const struct req *q) {
    const struct lmc_sampler_params *p = &q->r.sampling;
    return p->temperature == 0 && p->repeat_penalty == 1.0 && p->presence_penalty == 0 &&
           p->frequency_penalty == 0 && q->r.top_logprobs < 0 && !q->gs;
}

/* True when q's next token depends on its logits row alone (the sampler
 * without penalties or logprobs): steps where every sampled sequence is so
 * sample on the backend (sample_rows, lmc_model_forward_batch_sample), with
 * one uniform per row drawn here from the request's own rng, as
 * lmc_sampler_sample would. */
static bool plain_sample(const struct req *q) {
    const struct lmc_sampler_params *p = &q->r.sampling;
    return p->repeat_penalty == 1.0 && p->presence_penalty == 0 && p->frequency_penalty == 0 &&
           q->r.top_logprobs < 0 && !q->gs;
}

/* Masks row to the tokens q's grammar state can take (eos where the text
 * is complete). false with *msg set on a dead end or no memory. */
static bool grammar_mask(struct lmc_sched *s, struct req *q, float *row, lmc_err *err) {
    int64_t V = s->m->cfg.vocab_size;
    if (!s->gv) {
        const struct lmc_config *c = &s->m->cfg;
        int32_t eos[LMC_MAX_EOS + 1];
        int n_eos = 0;
        for (int i = 0; i < c->n_eos && n_eos < LMC_MAX_EOS; i++) eos[n_eos++] = c->eos_token_ids[i];
        if (s->tok && lmc_tokenizer_eos(s->tok) >= 0) eos[n_eos++] = lmc_tokenizer_eos(s->tok);
        if (!s->tok) {
            lmc_err_set(err, LMC_ERR_ARG, "structured output needs a tokenizer");
            return false;
        }
        if (lmc_grammar_vocab_from_tokenizer(s->tok, V, eos, n_eos, &s->gv, err)) return false;
    }
    if (!s->allowed && !(s->allowed = malloc((size_t)V))) {
        lmc_err_set(err, LMC_ERR_OOM, "structured output: out of memory");
        return false;
    }
    if (lmc_grammar_mask(q->gs, s->gv, s->allowed, err)) return false;
    for (int64_t v = 0; v < V; v++)
        if (!s->allowed[v]) row[v] = -INFINITY;
    return true;
}

/* Samples q's next token from row (row NULL: the token is given, from the
 * backend's argmax or sampler, or from speculation's verification, and q
 * has no grammar or logprobs) and emits it; true when q is finished (DONE
 * or ERROR emitted). */
bool lmc_sched_emit_token(struct lmc_sched *s, struct req *q, float *row, int32_t given) {
    int64_t V = s->m->cfg.vocab_size;
    if (q->gs) {
        lmc_err gerr = {0};
        if (!row || !grammar_mask(s, q, row, &gerr)) {
            emit_error(s, q, row ? gerr.msg : "structured output: no logits row");
            return true;
        }
    }
    int32_t id = row ? lmc_sampler_sample(&q->smp, row, q->toks, n_total(q)) : given;
    const char *piece;
    size_t plen;
    bool stopped;
    if (q->gs && !lmc_grammar_accept_token(q->gs, s->gv, id)) {
        emit_error(s, q, "structured output: the sampler chose a token the grammar does not allow");
        return true;
    }
    if ((!q->r.ignore_eos || q->gs) && lmc_detok_is_eos(&s->m->cfg, s->tok, id)) {
        lmc_detok_finish(&q->dt, &piece, &plen, &stopped);
        emit_done(s, q, "stop", piece, plen);
        return true;
    }
    q->toks[q->n_prompt + q->n_gen++] = id;
    lmc_err err = {0};
    if (lmc_detok_push(&q->dt, id, &piece, &plen, &stopped, &err)) {
        emit_error(s, q, err.msg);
        return true;
    }
    struct lmc_sched_event ev = {0};
    ev.kind = LMC_EV_TOKEN;
    ev.req_id = q->id;
    ev.token = id;
    ev.text = piece;
    ev.text_len = plen;
    if (q->r.top_logprobs >= 0 && row) logprobs(q, row, V, id, &ev);
    if (s->o.trace && q->n_gen == 1) {
        double now = lmc_time_now();
        fprintf(s->o.trace,
                "first req=%llu submit=%.4f sched_ms=%.2f token_ms=%.2f steps_before=%lld steps_to_token=%lld "
                "prompt=%lld cached=%lld\n",
                (unsigned long long)q->id, q->t_submit - s->t_init,
                1e3 * (q->t_first_sched - q->t_submit), 1e3 * (now - q->t_submit),
                (long long)(q->step_first - q->step_submit), (long long)(s->n_steps - q->step_first),
                (long long)q->n_prompt, (long long)q->cached_prompt);
    }
    q->fn(q->user, &ev);
    if (stopped) {
        emit_done(s, q, "stop", NULL, 0);
        return true;
    }
    if (q->n_gen >= q->r.max_tokens || n_total(q) >= s->o.ctx) {
        lmc_detok_finish(&q->dt, &piece, &plen, &stopped);
        emit_done(s, q, stopped ? "stop" : "length", piece, plen);
        return true;
    }
    return false;
}

/* Tokens of work for a sequence at n_computed wanting take more: for a
 * recurrent model with snapshots, a chunk that would cross a snapshot
 * boundary ends on the last one it reaches (the state there is kept; the
 * rest follows in the next step). */
static int64_t cut_take(const struct lmc_sched *s, const struct req *q, int64_t n_computed, int64_t take) {
    /* the bf16 route by kind: a chunk ends at the prompt's end (a preempted
     * request recomputes its generated positions as fp32 rows, as decoded) */
    if (s->route && n_computed < q->n_prompt) take = LMC_MIN(take, q->n_prompt - n_computed);
    if (!s->kv.pool.state || !s->kv.prefix_cache) return take;
    int64_t bs = s->kv.block_size, edge = (n_computed + take) / bs * bs;
    return edge > n_computed ? edge - n_computed : take;
}

/* Gives q up to *budget tokens of work, preempting later-admitted running
 * sequences for blocks. false when q itself had to be preempted. */
static bool schedule_running(struct lmc_sched *s, struct req *q, int64_t *budget) {
    int64_t rest = n_total(q) - q->n_computed;
    q->n_draft = 0;
    if (rest == 1 && s->spec_now && *budget > 1 && lmc_sched_spec_ok(s, q) && !(s->route && prompt_rows(q)))
        q->n_draft = lmc_sched_spec_propose(s, q, *budget - 1);
    int64_t take = cut_take(s, q, q->n_computed, LMC_MIN(rest + q->n_draft, *budget));
    if (take <= 0) return true;
    q->n_draft = LMC_MAX(0, take - rest);
    /* drafts only with blocks to spare: never preempt anyone for them */
    if (q->n_draft && !lmc_kv_seq_reserve(&s->kv, &q->seq, q->n_computed, q->n_computed + take))
        take = rest, q->n_draft = 0;
    while (!lmc_kv_seq_reserve(&s->kv, &q->seq, q->n_computed, q->n_computed + take)) {
        bool self = s->running[s->n_running - 1] == q;
        struct req *victim = s->running[s->n_running - 1];
        if (victim->take) *budget += victim->take;
        preempt_last(s);
        if (self) return false;
    }
    q->take = take;
    *budget -= take;
    return true;
}

/* Moves waiting requests into the running set while there is room. */
static void admit(struct lmc_sched *s, int64_t *budget) {
    while (s->n_waiting && s->n_running < s->o.max_batch && *budget > 0) {
        struct req *q = s->waiting[0];
        int64_t total = n_total(q);
        int64_t hits = s->kv.hits_tokens, queries = s->kv.queries_tokens, hit_blocks = s->kv.hits_blocks;
        /* KIVI-2: the last residual positions are computed again, so they
         * sit in the sequence's f16 ring as if it had never been preempted */
        int64_t keep = s->kv.pool.ring ? s->kv.pool.residual : 0;
        int64_t lim = LMC_MAX(0, total - 1 - keep);
        if (s->route) lim = LMC_MIN(lim, q->n_prompt); /* a preempted request's output: its own fp32 rows */
        /* K/V pools: the hit may take the block holding the last token too
         * (a whole prompt found: one row to run, not a block's worth); the
         * positions from lim on are recomputed, in a copy of that block */
        int64_t whole = LMC_MIN(total, s->route ? q->n_prompt : total);
        int64_t mlim = s->kv.pool.ring || s->kv.pool.state ? lim : LMC_MAX(lim, whole);
        int64_t matched = lmc_kv_seq_match_prefix(&s->kv, &q->seq, q->toks, total, mlim);
        matched = LMC_MIN(matched, lim);
        if (!lmc_kv_seq_reserve(&s->kv, &q->seq, matched, total)) {
            lmc_kv_seq_release(&s->kv, &q->seq); /* wait for blocks; counted when admitted */
            s->kv.hits_tokens = hits;
            s->kv.queries_tokens = queries;
            s->kv.hits_blocks = hit_blocks;
            break;
        }
        remove_at(s->waiting, &s->n_waiting, 0);
        q->n_computed = matched;
        if (!q->admitted_once) q->cached_prompt = LMC_MIN(matched, q->n_prompt);
        q->admitted_once = true;
        s->running[s->n_running++] = q;
        ring_take(s, q);
        q->take = cut_take(s, q, matched, LMC_MIN(total - matched, *budget));
        *budget -= q->take;
    }
}

/* Removes running[i] after it finished, releasing its blocks. */
static void finish_running(struct lmc_sched *s, int64_t i) {
    struct req *q = s->running[i];
    remove_at(s->running, &s->n_running, i);
    req_free(s, q);
}

/* the batch order's key (step): recurrent prefill after the one-token
 * rows, then the adapter; with the bf16 route by kind, prompt rows first */
static int64_t sched_key(const struct req *q, bool recurrent, bool route) {
    return (recurrent && q->take != 1 ? (int64_t)1 << 32 : 0) + (route && !prompt_rows(q) ? (int64_t)1 << 33 : 0) +
           q->r.adapter;
}

static void step(struct lmc_sched *s) {
    double t_a = s->o.trace ? lmc_time_now() : 0;
    /* max_step_tokens of prompt work per step, and each decoding sequence's
     * token on top (the batch holds max_step_tokens + max_batch rows): a
     * step's decode rows never push the last prompt of a group arriving
     * together into the next step (its first token a whole step later) */
    int64_t budget = s->o.max_step_tokens;
    for (int64_t i = 0; i < s->n_running; i++) {
        s->running[i]->take = 0;
        budget += n_total(s->running[i]) - s->running[i]->n_computed == 1;
    }
    s->spec_now = s->o.spec && (!s->o.spec_max_batch || s->n_running <= s->o.spec_max_batch);
    if (s->spec_now) lmc_sched_spec_plan(s); /* each sequence's K */
    if (s->spec_now && s->o.draft) lmc_sched_spec_draft_phase(s); /* the drafts, before the budget is split */
    /* decode tokens first, then prefill chunks, both in admission order */
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < s->n_running && budget > 0; i++) {
            struct req *q = s->running[i];
            bool decode = n_total(q) - q->n_computed == 1;
            if (q->take || decode != (pass == 0)) continue;
            if (!schedule_running(s, q, &budget)) break;
        }
    admit(s, &budget);
    /* the batch */
    int64_t T = 0, ns = 0, nl = 0, mb = s->max_blocks;
    bool greedy = true; /* every sampled sequence plain_greedy */
    bool plain = s->be->sample_rows != NULL; /* every sampled sequence plain_sample */
    /* the scheduled sequences in admission order, then stably by key:
     * recurrent models run their one-token rows first, together (one
     * batched decode step over their state slots), then the prefill
     * chunks; within that, each adapter's rows contiguous (one GEMM pair
     * per adapter) */
    const bool recurrent = s->kv.pool.state != NULL;
    const bool route = s->route && !s->m->row_groups;
    int64_t nsch = 0, n_pf = 0; /* rows through the bf16 GEMM: the leading ones */
    int64_t n_prompt_rows = 0;  /* trace */
    bool adapters = false, spec_step = false;
    for (int64_t i = 0; i < s->n_running; i++)
        if (s->running[i]->take) {
            struct req *q = s->running[i];
            int64_t k = nsch++, key = sched_key(q, recurrent, route);
            adapters = adapters || q->r.adapter;
            while (k > 0 && sched_key(s->sched[k - 1], recurrent, route) > key) {
                s->sched[k] = s->sched[k - 1];
                k--;
            }
            s->sched[k] = q;
        }
    for (int64_t i = 0; i < nsch; i++) {
        struct req *q = s->sched[i];
        s->b_ad[ns] = q->r.adapter;
        if (s->b_ring) s->b_ring[ns] = q->ring;
        q->slot = (int)ns;
        s->sched[ns] = q;
        int32_t *bt = s->b_bt + ns * mb;
        memcpy(bt, q->seq.blocks, (size_t)q->seq.n_blocks * sizeof *bt);
        for (int64_t j = q->seq.n_blocks; j < mb; j++) bt[j] = 0;
        if (route && prompt_rows(q)) n_pf += q->take;
        if (prompt_rows(q)) n_prompt_rows += q->take;
        for (int64_t j = 0; j < q->take; j++, T++) {
            s->b_ids[T] = q->toks[q->n_computed + j];
            s->b_seq[T] = (int32_t)ns;
            s->b_pos[T] = (int32_t)(q->n_computed + j);
        }
        if (q->n_computed + q->take >= n_total(q)) { /* the last token, and any drafts after it */
            for (int64_t j = n_total(q) - 1; j < q->n_computed + q->take; j++)
                s->b_rows[nl++] = (int32_t)(T - (q->n_computed + q->take - j));
            greedy = greedy && plain_greedy(q);
            plain = plain && plain_sample(q) && !q->n_draft; /* sampled drafts need the rows */
            spec_step = spec_step || q->n_draft;
        }
        ns++;
    }
    if (!ns) return;
    double t_b = 0;
    if (s->o.trace) {
        t_b = lmc_time_now();
        for (int64_t k = 0; k < ns; k++)
            if (s->sched[k]->step_first < 0) {
                s->sched[k]->step_first = s->n_steps;
                s->sched[k]->t_first_sched = t_a;
            }
    }
    struct lmc_batch b = {T, s->b_ids, s->b_seq, s->b_pos, ns, s->b_bt, mb, s->b_rows, nl,
                          adapters ? s->b_ad : NULL};
    s->kv.pool.ring_slot = s->b_ring; /* KIVI-2: the batch's ring slots */
    lmc_err err = {0};
    if (!nl) greedy = plain = false;
    if (plain && !greedy) { /* the uniforms, in logits-row order (the order of sched) */
        int64_t r = 0;
        for (int64_t k = 0; k < ns; k++) {
            struct req *q = s->sched[k];
            if (q->n_computed + q->take != n_total(q)) continue;
            const struct lmc_sampler_params *p = &q->smp.p;
            s->sprm[r] = (struct lmc_sample_row){.temperature = p->temperature, .top_p = p->top_p,
                                                 .min_p = p->min_p, .top_k = p->top_k};
            if (p->temperature != 0) s->sprm[r].u = lmc_rng_uniform(&q->smp.rng);
            r++;
        }
    }
    lmc_status st = LMC_OK;
    if (s->o.tp) { /* the other ranks run this step too (with the blocks copied since the last) */
        st = s->kv.copy_log_lost ? lmc_err_set(&err, LMC_ERR_OOM, "tensor parallel: KV copy log lost")
                                 : lmc_sched_tp_step(s->o.tp, &b, s->kv.copy_log, s->kv.n_copy_log, &err);
        s->kv.n_copy_log = 0;
    }
    /* by kind: prompt rows through the bf16 prefill GEMM, generated rows and
     * the head's logits rows through the batch-invariant decode-row GEMM */
    if (route) lmc_backend_cpu_route_rows(s->be, T, n_pf, s->m->w.head.w.data);
    if (!st)
        st = greedy ? lmc_model_forward_batch_argmax(s->m, s->be, &s->acts, &s->kv.pool, &b, s->ids, &err)
             : plain ? lmc_model_forward_batch_sample(s->m, s->be, &s->acts, &s->kv.pool, &b, s->sprm, s->ids, &err)
                     : lmc_model_forward_batch(s->m, s->be, &s->acts, &s->kv.pool, &b, s->logits, &err);
    if (route) lmc_backend_cpu_route_rows(s->be, 0, 0, NULL);
    if (!st && s->o.tp_group && s->o.tp_group->st) { /* a collective inside the step failed */
        st = s->o.tp_group->st;
        err = s->o.tp_group->err;
        s->o.tp_group->st = LMC_OK;
    }
    if (!st && s->o.ep_group) st = lmc_ep_group_check(s->o.ep_group, &err);
    double t_c = s->o.trace ? lmc_time_now() : 0;
    s->n_steps++;
    s->n_spec_steps += spec_step;
    int64_t row = 0;
    for (int64_t k = 0; k < ns; k++) {
        struct req *q = s->sched[k];
        int64_t i = 0;
        while (s->running[i] != q) i++;
        if (st) {
            emit_error(s, q, err.msg);
            finish_running(s, i);
            continue;
        }
        if (q->n_draft) { /* speculation: verify, emit, roll back */
            int64_t before = q->n_gen, nr = q->n_draft + 1;
            q->n_computed += q->take;
            q->take = 0;
            bool done = lmc_sched_spec_verify(s, q, greedy || plain ? s->ids + row : NULL,
                                              greedy || plain ? NULL : s->logits + row * s->m->cfg.vocab_size);
            row += nr;
            s->n_generated += q->n_gen - before;
            if (done) finish_running(s, i);
            continue;
        }
        q->n_computed += q->take;
        /* with the route by kind, blocks holding generated positions (fp32
         * rows) stay private: a prompt repeating them computes bf16 rows */
        lmc_kv_seq_commit(&s->kv, &q->seq, q->toks, lmc_sched_shareable(s, q));
        bool sampled = q->n_computed == n_total(q);
        q->take = 0;
        if (!sampled) continue;
        int64_t before = q->n_gen;
        bool done = greedy || plain ? lmc_sched_emit_token(s, q, NULL, s->ids[row++])
                           : lmc_sched_emit_token(s, q, s->logits + (row++) * s->m->cfg.vocab_size, 0);
        s->n_generated += q->n_gen - before;
        if (done) finish_running(s, i);
    }
    if (s->o.trace) {
        fprintf(s->o.trace,
                "step %lld start=%.4f sched_ms=%.2f fwd_ms=%.2f emit_ms=%.2f seqs=%lld rows=%lld prompt_rows=%lld "
                "sampled=%lld running=%lld waiting=%lld\n",
                (long long)s->n_steps - 1, t_a - s->t_init, 1e3 * (t_b - t_a), 1e3 * (t_c - t_b),
                1e3 * (lmc_time_now() - t_c), (long long)ns, (long long)T, (long long)n_prompt_rows,
                (long long)nl, (long long)s->n_running, (long long)s->n_waiting);
        fflush(s->o.trace);
    }
}

/* ---- the thread */

/* Tokens held in the blocks running sequences use, each block counted
 * once (prefix-cache and n > 1 sharers hold the same blocks): the
 * numerator of the KV waste metric, 1 - stored / (used blocks x size). */
static int64_t stored_tokens(struct lmc_sched *s) {
    /* recurrent: kv.block_size is the snapshot interval; a slot counts as
     * one block of the configured size, as before snapshots */
    int64_t bs = s->kv.pool.state ? s->o.block_size : s->kv.block_size, stored = 0;
    if (++s->stamp == 0) { /* wrapped: forget every old stamp */
        memset(s->blk_seen, 0, (size_t)s->kv.n_blocks * sizeof *s->blk_seen);
        s->stamp = 1;
    }
    for (int64_t i = 0; i < s->n_running; i++) {
        const struct req *q = s->running[i];
        for (int64_t j = 0; j < q->seq.n_blocks; j++) {
            int32_t b = q->seq.blocks[j];
            int32_t fill = (int32_t)LMC_MIN(bs, LMC_MAX(0, q->n_computed - j * bs));
            if (s->blk_seen[b] != s->stamp) {
                s->blk_seen[b] = s->stamp;
                s->blk_fill[b] = fill;
                stored += fill;
            } else if (fill > s->blk_fill[b]) {
                stored += fill - s->blk_fill[b];
                s->blk_fill[b] = fill;
            }
        }
    }
    return stored;
}

static void publish_stats(struct lmc_sched *s) {
    int64_t stored = stored_tokens(s);
    pthread_mutex_lock(&s->mu);
    s->st.running = s->n_running;
    s->st.waiting = s->n_waiting + s->n_incoming;
    s->st.kv_blocks_total = s->kv.n_blocks;
    s->st.kv_blocks_used = lmc_paged_kv_used(&s->kv);
    s->st.kv_tokens_stored = stored;
    s->st.prefix_hits_tokens = s->kv.hits_tokens;
    s->st.prefix_queries_tokens = s->kv.queries_tokens;
    s->st.prefix_cache_blocks = s->kv.n_lru;
    s->st.prefix_cache_blocks_max = s->kv.prefix_cache ? s->kv.max_cached : 0;
    s->st.prefix_hits_blocks = s->kv.hits_blocks;
    s->st.prefix_evictions = s->kv.evictions;
    s->st.state_snapshots = s->kv.state_snapshots;
    s->st.state_restores = s->kv.state_restores;
    s->st.finished_total = s->n_finished;
    s->st.preempted_total = s->n_preempted;
    s->st.steps = s->n_steps;
    s->st.generated_tokens_total = s->n_generated;
    s->st.spec_proposed_total = s->n_spec_proposed;
    s->st.spec_accepted_total = s->n_spec_accepted;
    s->st.spec_steps = s->n_spec_steps;
    memcpy(s->st.spec_k_steps, s->spec_k_steps, sizeof s->st.spec_k_steps);
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Cancels id wherever it is (scheduler thread). */
static void do_cancel(struct lmc_sched *s, uint64_t id) {
    for (int64_t i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->id == id) {
            struct req *q = s->waiting[i];
            remove_at(s->waiting, &s->n_waiting, i);
            emit_done(s, q, "cancelled", NULL, 0);
            req_free(s, q);
            return;
        }
    for (int64_t i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id) {
            emit_done(s, s->running[i], "cancelled", NULL, 0);
            finish_running(s, i);
            return;
        }
}

static void *sched_main(void *arg) {
    struct lmc_sched *s = arg;
    uint64_t *cancels = NULL;
    int64_t cap = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && !s->in_head && !s->n_cancels && !s->n_running && !s->n_waiting) {
            if (!s->o.tp) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            /* tensor parallel: idle, the followers hear from rank 0 within their
             * communicator's timeout (a keep-alive every quarter of it) */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double at = (double)ts.tv_nsec / 1e9 + lmc_comm_default_timeout() / 4;
            ts.tv_sec += (time_t)at;
            ts.tv_nsec = (long)((at - floor(at)) * 1e9);
            if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
                pthread_mutex_unlock(&s->mu);
                lmc_err e = {0};
                lmc_sched_tp_keepalive(s->o.tp, &e); /* a lost follower: the next step fails */
                pthread_mutex_lock(&s->mu);
            }
        }
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        struct req *in = s->in_head;
        s->in_head = s->in_tail = NULL;
        s->n_incoming = 0;
        int64_t nc = s->n_cancels;
        if (nc > cap) {
            uint64_t *c2 = realloc(cancels, (size_t)nc * sizeof *c2);
            if (c2) {
                cancels = c2;
                cap = nc;
            }
        }
        nc = LMC_MIN(nc, cap); /* out of memory: the rest are kept for the next step */
        if (nc) memcpy(cancels, s->cancels, (size_t)nc * sizeof *cancels);
        if (nc) {
            memmove(s->cancels, s->cancels + nc, (size_t)(s->n_cancels - nc) * sizeof *cancels);
            s->n_cancels -= nc;
        }
        pthread_mutex_unlock(&s->mu);
        while (in) {
            struct req *q = in;
            in = in->next;
            if (q->r.max_tokens == 0) {
                emit_done(s, q, "length", NULL, 0);
                req_free(s, q);
            } else if (!waiting_insert(s, q, false)) {
                emit_error(s, q, "scheduler: out of memory");
                req_free(s, q);
            }
        }
        for (int64_t i = 0; i < nc; i++) do_cancel(s, cancels[i]);
        step(s);
        publish_stats(s);
    }
    free(cancels);
    /* shutting down: everyone still here gets an error */
    pthread_mutex_lock(&s->mu);
    struct req *in = s->in_head;
    s->in_head = s->in_tail = NULL;
    s->n_incoming = 0;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        struct req *q = in;
        in = in->next;
        emit_error(s, q, "shutting down");
        req_free(s, q);
    }
    while (s->n_running) {
        emit_error(s, s->running[s->n_running - 1], "shutting down");
        finish_running(s, s->n_running - 1);
    }
    while (s->n_waiting) {
        struct req *q = s->waiting[--s->n_waiting];
        emit_error(s, q, "shutting down");
        req_free(s, q);
    }
    publish_stats(s);
    return NULL;
}

/* Frees everything lmc_sched_init allocates (the thread already gone). */
static void sched_release(struct lmc_sched *s) {
    lmc_paged_kv_free(&s->kv);
    lmc_batch_acts_free(&s->acts);
    free(s->logits);
    free(s->ids);
    free(s->spec_p);
    lmc_paged_kv_free(&s->dkv);
    lmc_batch_acts_free(&s->dacts);
    void *dbufs[] = {s->dlogits, s->dq, s->d_ids, s->d_seq, s->d_pos, s->d_bt, s->d_rows, s->drows};
    for (size_t i = 0; i < sizeof dbufs / sizeof *dbufs; i++) free(dbufs[i]);
    free(s->sprm);
    lmc_grammar_vocab_free(s->gv);
    free(s->allowed);
    free(s->b_ids);
    free(s->b_seq);
    free(s->b_pos);
    free(s->b_rows);
    free(s->b_ad);
    free(s->b_bt);
    free(s->sched);
    free(s->blk_seen);
    free(s->blk_fill);
    free(s->ring_used);
    free(s->b_ring);
    free(s->d_ring);
    free(s->running);
    free(s->waiting);
    free(s->cancels);
    free(s);
}

/* Whether a layer linear of m holds dense F16/BF16 weights (what the CPU's
 * bf16 prefill GEMM takes; F32 and quantized models keep their kernels). */
static bool half_weights(const struct lmc_model *m) {
    for (int64_t l = 0; l < m->cfg.num_layers && m->w.layers; l++)
        for (int i = 0; i < LMC_L_N; i++) {
            const struct lmc_linear *L = &m->w.layers[l].lin[i];
            if (L->w.data && L->format == LMC_WFMT_DENSE &&
                (L->w.dtype == LMC_DTYPE_F16 || L->w.dtype == LMC_DTYPE_BF16))
                return true;
        }
    return false;
}

lmc_status lmc_sched_init(struct lmc_sched **out, const struct lmc_model *m,
                          const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                          const struct lmc_sched_opts *o, lmc_err *err) {
    *out = NULL;
    if (!be->attention_paged)
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED, "backend %s has no paged attention", be->name);
    struct lmc_sched_opts op;
    if (o) op = *o;
    else lmc_sched_opts_default(&op);
    const struct lmc_config *c = &m->cfg;
    if (op.ctx <= 0) op.ctx = LMC_MIN(c->max_position_embeddings > 0 ? c->max_position_embeddings : 4096, 4096);
    if (m->w.pos_emb.data) op.ctx = LMC_MIN(op.ctx, m->w.pos_emb.rows);
    if (op.max_batch <= 0 || op.max_batch > 4096 || op.block_size <= 0 || op.block_size > 1024 ||
        op.max_step_tokens <= 0 || op.max_step_tokens > (1 << 20) || op.kv_blocks < 0 || op.prefix_cache_blocks < 0 ||
        op.ctx > (1 << 24))
        return lmc_err_set(err, LMC_ERR_ARG,
                           "scheduler options out of range (max_batch %d, block_size %d, "
                           "max_step_tokens %lld, kv_blocks %lld, ctx %lld)",
                           op.max_batch, op.block_size, (long long)op.max_step_tokens,
                           (long long)op.kv_blocks, (long long)op.ctx);
    /* recurrent models: a block is a state slot; the paged tables' block
     * size is the snapshot interval of their prefix cache */
    const bool recurrent = lmc_model_seq_slot_bytes(m) > 0;
    if (op.snapshot_tokens == 0) op.snapshot_tokens = 256;
    if (op.snapshot_tokens < 1 || op.snapshot_tokens > 4096)
        return lmc_err_set(err, LMC_ERR_ARG, "snapshot_tokens %lld out of range (1..4096)",
                           (long long)op.snapshot_tokens);
    const int64_t kv_bs = recurrent ? op.snapshot_tokens : op.block_size;
    if (op.spec) {
        if ((op.spec != LMC_SCHED_SPEC_LOOKUP && op.spec != LMC_SCHED_SPEC_DRAFT) || op.spec_k < 1 || op.spec_k > 16 || op.spec_ngram < 1 ||
            op.spec_ngram > 16 || op.spec_max_batch < 0)
            return lmc_err_set(err, LMC_ERR_ARG,
                               "speculation options out of range (mode %d, spec_k %lld: 1..16, "
                               "spec_ngram %lld: 1..16, spec_max_batch %d: >= 0)",
                               op.spec, (long long)op.spec_k, (long long)op.spec_ngram, op.spec_max_batch);
        if (recurrent || (op.spec == LMC_SCHED_SPEC_DRAFT && op.draft && lmc_model_seq_slot_bytes(op.draft)))
            return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                               "speculative decoding needs an attention KV cache (a recurrent state "
                               "cannot roll back rejected drafts)");
        if ((op.spec == LMC_SCHED_SPEC_DRAFT) != (op.draft != NULL))
            return lmc_err_set(err, LMC_ERR_ARG, "a draft model goes with speculation mode draft, and only with it");
        if (op.draft && op.draft->cfg.vocab_size != c->vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG, "draft model vocabulary %lld differs from the target's %lld",
                               (long long)op.draft->cfg.vocab_size, (long long)c->vocab_size);
        if (!(op.spec_draft_cost >= 0 && op.spec_draft_cost <= 100 && op.spec_verify_slope >= 0 &&
              op.spec_verify_slope <= 100 && op.spec_verify_row >= 0 && op.spec_verify_row <= 100))
            return lmc_err_set(err, LMC_ERR_ARG, "speculation cost model out of range (draft %g, slope %g, row %g: 0..100)",
                               op.spec_draft_cost, op.spec_verify_slope, op.spec_verify_row);
    } else {
        op.draft = NULL;
    }
    if (be->attention_paged_ring && (op.block_size % 32 || op.kv_residual < 0 || op.kv_residual > 4096 || op.tp))
        return lmc_err_set(err, LMC_ERR_ARG,
                           "a KIVI-2 KV pool needs a block size that is a multiple of 32 (not %d), a "
                           "residual of 0..4096 (not %lld) and no tensor parallelism",
                           op.block_size, (long long)op.kv_residual);
    int64_t per_seq = LMC_MAX(1, lmc_model_seq_blocks(m, op.ctx, op.block_size));
    if (op.kv_blocks == 0) {
        size_t bb = lmc_kv_pool_block_bytes(m, be, kv_bs);
        size_t bytes = op.kv_bytes ? op.kv_bytes : (size_t)2 << 30;
        if (be->attention_paged_ring) { /* KIVI-2: the rings come out of the budget */
            int64_t row = m->arch->mixer->kv_row(c);
            size_t ring = (size_t)op.max_batch * (size_t)c->num_layers *
                          lmc_kv_ring_slot_bytes(row, lmc_kv_pool_ring_rows(op.kv_residual));
            if (op.kv_bytes && op.kv_bytes <= ring)
                return lmc_err_set(err, LMC_ERR_ARG, "kv_bytes %zu do not hold the KIVI-2 rings of %d "
                                   "sequences (%zu bytes)", op.kv_bytes, op.max_batch, ring);
            bytes = bytes > ring ? bytes - ring : 0;
        }
        op.kv_blocks = (int64_t)(bytes / bb);
        int64_t snaps = recurrent && op.prefix_cache
                            ? (op.prefix_cache_blocks > 0 ? op.prefix_cache_blocks : op.max_batch) : 0;
        if (!op.kv_bytes) op.kv_blocks = LMC_MIN(op.kv_blocks, (int64_t)op.max_batch * per_seq + snaps);
        if (op.kv_blocks < 1)
            return lmc_err_set(err, LMC_ERR_ARG, "kv_bytes %zu holds no block of %zu bytes",
                               op.kv_bytes, bb);
    }
    struct lmc_sched *s = calloc(1, sizeof *s);
    if (!s) return lmc_err_set(err, LMC_ERR_OOM, "scheduler: out of memory");
    s->m = m;
    s->be = be;
    s->tok = tok;
    s->o = op;
    s->t_init = lmc_time_now();
    s->max_blocks = per_seq;
    /* adaptive K's cost model, defaults as lmc generate's */
    s->spec_cost.draft = op.spec_draft_cost > 0 ? op.spec_draft_cost
                         : op.draft ? LMC_MAX(0.01, (double)op.draft->weight_bytes / (double)LMC_MAX(m->weight_bytes, 1))
                                    : 0.01;
    s->spec_cost.slope = op.spec_verify_slope > 0 ? op.spec_verify_slope : lmc_spec_default_slope();
    s->spec_cost.row = op.spec_verify_row > 0 ? op.spec_verify_row : 0.25;
    s->next_id = 1;
    lmc_status st = lmc_paged_kv_init(&s->kv, m, be, op.kv_blocks, kv_bs, op.prefix_cache, err);
    if (!st) {
        if (op.prefix_cache_blocks <= 0)
            op.prefix_cache_blocks = recurrent ? LMC_MAX(1, op.kv_blocks - op.max_batch)
                                               : LMC_MAX(1, op.kv_blocks / 4);
        s->o.prefix_cache_blocks = op.prefix_cache_blocks = LMC_MIN(op.prefix_cache_blocks, op.kv_blocks);
        lmc_paged_kv_set_cache_limit(&s->kv, op.prefix_cache_blocks);
    }
    /* logits rows: one per sequence, and its drafts when speculating */
    s->max_logits = (int64_t)op.max_batch * (op.spec ? op.spec_k + 1 : 1);
    if (!st)
        st = lmc_batch_acts_init(&s->acts, m, be, op.max_step_tokens + op.max_batch, op.max_batch, per_seq,
                                 s->max_logits, err);
    int64_t T = op.max_step_tokens + op.max_batch, B = op.max_batch, R = s->max_logits;
    if (!st && op.spec && !(s->spec_p = malloc((size_t)(op.spec_k + 1) * (size_t)c->vocab_size * sizeof(float))))
        st = lmc_err_set(err, LMC_ERR_OOM, "scheduler: out of memory");
    if (!st && be->attention_paged_ring) { /* KIVI-2: a ring slot per running sequence */
        st = lmc_kv_pool_ring_init(&s->kv.pool, op.max_batch, op.kv_residual, err);
        s->ring_used = calloc((size_t)op.max_batch, sizeof *s->ring_used);
        s->b_ring = malloc((size_t)op.max_batch * sizeof *s->b_ring);
        s->d_ring = malloc((size_t)op.max_batch * sizeof *s->d_ring);
        if (!st && (!s->ring_used || !s->b_ring || !s->d_ring))
            st = lmc_err_set(err, LMC_ERR_OOM, "scheduler: out of memory");
    }
    if (!st && op.draft) { /* the draft's pool (as many blocks), scratch and batch */
        st = lmc_paged_kv_init(&s->dkv, op.draft, be, op.kv_blocks, op.block_size, false, err);
        if (!st) st = lmc_kv_pool_ring_init(&s->dkv.pool, op.max_batch, op.kv_residual, err);
        if (!st)
            st = lmc_batch_acts_init(&s->dacts, op.draft, be, op.max_step_tokens, op.max_batch, per_seq,
                                     op.max_batch, err);
        size_t V = (size_t)c->vocab_size, Bz = (size_t)op.max_batch, Tz = (size_t)op.max_step_tokens;
        if (!st) {
            s->dlogits = malloc(Bz * V * sizeof(float));
            s->dq = malloc(Bz * (size_t)op.spec_k * V * sizeof(float));
            s->d_ids = malloc(Tz * sizeof(int32_t));
            s->d_seq = malloc(Tz * sizeof(int32_t));
            s->d_pos = malloc(Tz * sizeof(int32_t));
            s->d_bt = malloc(Bz * (size_t)per_seq * sizeof(int32_t));
            s->d_rows = malloc(Bz * sizeof(int32_t));
            s->drows = malloc(Bz * sizeof *s->drows);
            if (!s->dlogits || !s->dq || !s->d_ids || !s->d_seq || !s->d_pos || !s->d_bt || !s->d_rows || !s->drows)
                st = lmc_err_set(err, LMC_ERR_OOM, "scheduler: out of memory for the draft model");
        }
    }
    if (!st) {
        s->logits = malloc((size_t)R * (size_t)c->vocab_size * sizeof(float));
        s->ids = malloc((size_t)R * sizeof(int32_t));
        s->sprm = malloc((size_t)B * sizeof *s->sprm);
        s->b_ids = malloc((size_t)T * sizeof(int32_t));
        s->b_seq = malloc((size_t)T * sizeof(int32_t));
        s->b_pos = malloc((size_t)T * sizeof(int32_t));
        s->b_rows = malloc((size_t)R * sizeof(int32_t));
        s->b_ad = malloc((size_t)B * sizeof(int32_t));
        s->b_bt = malloc((size_t)(B * per_seq) * sizeof(int32_t));
        s->sched = malloc((size_t)B * sizeof *s->sched);
        s->running = malloc((size_t)B * sizeof *s->running);
        s->blk_seen = calloc((size_t)s->kv.n_blocks, sizeof *s->blk_seen);
        s->blk_fill = malloc((size_t)s->kv.n_blocks * sizeof *s->blk_fill);
        if (!s->logits || !s->ids || !s->sprm || !s->b_ids || !s->b_seq || !s->b_pos || !s->b_rows || !s->b_ad || !s->b_bt ||
            !s->sched || !s->running || !s->blk_seen || !s->blk_fill)
            st = lmc_err_set(err, LMC_ERR_OOM, "scheduler: out of memory");
    }
    bool mu_ok = false;
    if (!st) {
        mu_ok = !pthread_mutex_init(&s->mu, NULL);
        bool cv_ok = mu_ok && !pthread_cond_init(&s->cv, NULL);
        if (!cv_ok || pthread_cond_init(&s->idle_cv, NULL)) {
            if (cv_ok) pthread_cond_destroy(&s->cv);
            if (mu_ok) pthread_mutex_destroy(&s->mu);
            mu_ok = false;
            st = lmc_err_set(err, LMC_ERR_INTERNAL, "scheduler: cannot create a mutex");
        }
    }
    s->st.kv_blocks_total = op.kv_blocks;
    s->st.kv_bytes_per_token = (int64_t)lmc_kv_pool_token_bytes(m, be);
    s->st.kv_pool_bytes = (int64_t)lmc_kv_pool_block_bytes(m, be, kv_bs) * op.kv_blocks +
                          (int64_t)lmc_kv_pool_ring_bytes(&s->kv.pool); /* KIVI-2: the f16 rings */
    s->st.prefix_cache_blocks_max = op.prefix_cache ? op.prefix_cache_blocks : 0;
    if (!st && op.tp) { /* tensor parallel: the other ranks learn the pool's shape and follow every step */
        if (recurrent) st = lmc_err_set(err, LMC_ERR_UNSUPPORTED, "tensor-parallel serving: recurrent models");
        s->kv.log_copies = true;
        struct lmc_sched_tp_shape sh = {op.kv_blocks, kv_bs, op.max_step_tokens + op.max_batch, op.max_batch,
                                        per_seq}; /* the batch's rows at most */
        if (!st) st = lmc_sched_tp_hello(op.tp, &sh, err);
        if (st) {
            pthread_cond_destroy(&s->idle_cv);
            pthread_cond_destroy(&s->cv);
            pthread_mutex_destroy(&s->mu);
        }
    }
    if (!st) {
        /* A request's bits must not depend on what shares its batch (seeded
         * requests repeat; speculation gives the plain greedy tokens): the
         * CPU's row-count bf16 route is off for every forward of this
         * backend while the scheduler runs (followers: lmc_sched_follow),
         * and prompt rows take the bf16 GEMM by kind instead (step). */
        s->bf16_restore = lmc_backend_cpu_bf16_prefill(be);
        lmc_backend_cpu_set_bf16_prefill(be, false);
        s->route = op.bf16_prefill && lmc_backend_cpu_can_route_rows(be) && !recurrent && !op.tp &&
                   !op.ep_group && !m->w.pipe && !m->row_groups && half_weights(m);
    }
    if (!st && pthread_create(&s->thread, NULL, sched_main, s)) {
        pthread_cond_destroy(&s->idle_cv);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        st = lmc_err_set(err, LMC_ERR_INTERNAL, "scheduler: cannot start its thread");
    }
    if (st) {
        if (s->bf16_restore) lmc_backend_cpu_set_bf16_prefill(be, true);
        sched_release(s);
        return st;
    }
    *out = s;
    return LMC_OK;
}

void lmc_sched_stop(struct lmc_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void lmc_sched_free(struct lmc_sched *s) {
    if (!s) return;
    lmc_sched_stop(s);
    pthread_join(s->thread, NULL);
    if (s->o.tp) { /* the followers end (a broken group: they end on its error) */
        lmc_err e = {0};
        lmc_sched_tp_stop(s->o.tp, &e);
    }
    pthread_cond_destroy(&s->idle_cv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    if (s->bf16_restore) lmc_backend_cpu_set_bf16_prefill(s->be, true);
    sched_release(s);
}

lmc_status lmc_sched_submit(struct lmc_sched *s, const int32_t *prompt, int64_t n_prompt,
                            const struct lmc_request *r, lmc_sched_fn fn, void *user,
                            uint64_t *req_id, lmc_err *err) {
    const struct lmc_config *c = &s->m->cfg;
    if (!fn) return lmc_err_set(err, LMC_ERR_ARG, "request: no event callback");
    if (n_prompt <= 0) return lmc_err_set(err, LMC_ERR_ARG, "empty prompt: nothing to condition on");
    if (r->max_tokens < 0) return lmc_err_set(err, LMC_ERR_ARG, "max_tokens must be >= 0");
    if (n_prompt > s->o.ctx || r->max_tokens > s->o.ctx - n_prompt)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "prompt of %lld tokens plus max_tokens %lld exceeds the context of %lld",
                           (long long)n_prompt, (long long)r->max_tokens, (long long)s->o.ctx);
    int64_t need = (n_prompt + r->max_tokens + s->o.block_size - 1) / s->o.block_size;
    if (s->kv.pool.state) need = 1; /* recurrent model: one state slot per request */
    if (need > s->kv.n_blocks)
        return lmc_err_set(err, LMC_ERR_ARG,
                           "prompt of %lld tokens plus max_tokens %lld needs %lld KV blocks; the pool has %lld",
                           (long long)n_prompt, (long long)r->max_tokens, (long long)need,
                           (long long)s->kv.n_blocks);
    if (r->n_stop < 0 || r->n_stop > LMC_SCHED_MAX_STOP)
        return lmc_err_set(err, LMC_ERR_ARG, "%d stop strings: at most %d", r->n_stop, LMC_SCHED_MAX_STOP);
    if (r->top_logprobs > LMC_SCHED_MAX_TOP_LOGPROBS)
        return lmc_err_set(err, LMC_ERR_ARG, "top_logprobs %d: at most %d", r->top_logprobs,
                           LMC_SCHED_MAX_TOP_LOGPROBS);
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return lmc_err_set(err, LMC_ERR_ARG, "token id %d at index %lld is outside the vocabulary (0..%lld)",
                               prompt[i], (long long)i, (long long)c->vocab_size - 1);
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i]) return lmc_err_set(err, LMC_ERR_ARG, "stop string %d is NULL", i);
    int n_ad = s->m->row_groups ? s->m->row_groups->n_ids : 0;
    if (r->adapter < 0 || r->adapter > n_ad)
        return lmc_err_set(err, LMC_ERR_ARG, "adapter %d: the model has %d serving adapters", r->adapter, n_ad);
    struct req *q = calloc(1, sizeof *q);
    if (!q) return lmc_err_set(err, LMC_ERR_OOM, "request: out of memory");
    lmc_kv_seq_init(&q->seq);
    q->ring = -1;
    /* each adapter's prefix-cache namespace: a fixed odd mix of its id (0 for the base) */
    if (r->adapter) lmc_kv_seq_set_namespace(&q->seq, (uint64_t)r->adapter * UINT64_C(0x9e3779b97f4a7c15) | 1);
    lmc_status st = lmc_sampler_init(&q->smp, &r->sampling, c->vocab_size, err);
    if (st) {
        free(q);
        return st;
    }
    if (r->grammar && (st = lmc_grammar_state_new(r->grammar, &q->gs, err))) {
        lmc_sampler_free(&q->smp);
        free(q);
        return st;
    }
    if (s->o.draft) { /* the draft's draws: the request's parameters, their own stream */
        struct lmc_sampler_params dp = r->sampling;
        dp.seed ^= 0xd4af7ull;
        if ((st = lmc_sampler_init(&q->dsmp, &dp, c->vocab_size, err))) {
            lmc_grammar_state_free(q->gs);
            lmc_sampler_free(&q->smp);
            free(q);
            return st;
        }
        q->dsmp_ok = true;
    }
    q->r = *r;
    q->spec_k = s->o.spec_k;
    lmc_spec_rate_init(&q->spec_rate); /* as lmc generate's adaptive K starts */
    q->spec_plain = 0;
    q->fn = fn;
    q->user = user;
    q->n_prompt = n_prompt;
    q->toks = malloc((size_t)(n_prompt + r->max_tokens) * sizeof *q->toks);
    bool ok = q->toks != NULL;
    for (int i = 0; i < r->n_stop && ok; i++) ok = (q->stop[i] = strdup(r->stop[i])) != NULL;
    for (int i = 0; i < LMC_SCHED_MAX_STOP; i++) q->r.stop[i] = i < r->n_stop ? q->stop[i] : NULL;
    if (ok) memcpy(q->toks, prompt, (size_t)n_prompt * sizeof *prompt);
    if (!ok || lmc_detok_init(&q->dt, s->tok, prompt, n_prompt, (const char *const *)q->stop,
                              r->n_stop, err)) {
        req_free(s, q);
        return lmc_err_set(err, LMC_ERR_OOM, "request: out of memory");
    }
    q->step_first = -1;
    q->t_submit = lmc_time_now();
    pthread_mutex_lock(&s->mu);
    q->step_submit = s->st.steps;
    if (s->stopping) { /* the thread may be gone: nobody would ever answer it */
        pthread_mutex_unlock(&s->mu);
        req_free(s, q);
        return lmc_err_set(err, LMC_ERR_INTERNAL, "scheduler: shutting down");
    }
    q->id = s->next_id++;
    if (req_id) *req_id = q->id;
    if (s->in_tail) s->in_tail->next = q;
    else s->in_head = q;
    s->in_tail = q;
    s->n_incoming++;
    s->st.requests_total++;
    s->st.prompt_tokens_total += n_prompt;
    s->st.waiting++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return LMC_OK;
}

void lmc_sched_cancel(struct lmc_sched *s, uint64_t req_id) {
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        int64_t cap = LMC_MAX(16, 2 * s->cap_cancels);
        uint64_t *c2 = realloc(s->cancels, (size_t)cap * sizeof *c2);
        if (c2) {
            s->cancels = c2;
            s->cap_cancels = cap;
        }
    }
    if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = req_id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void lmc_sched_stats(struct lmc_sched *s, struct lmc_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

bool lmc_sched_wait_idle(struct lmc_sched *s, double timeout_s, struct lmc_sched_stats *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_nsec / 1e9 + LMC_MAX(0.0, timeout_s);
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
    pthread_mutex_lock(&s->mu);
    bool idle;
    /* st.waiting counts incoming requests too (submit bumps it) */
    while (!(idle = !s->st.running && !s->st.waiting && !s->st.kv_blocks_used &&
                    s->st.finished_total == s->st.requests_total))
        if (pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts)) {
            idle = !s->st.running && !s->st.waiting && !s->st.kv_blocks_used &&
                   s->st.finished_total == s->st.requests_total;
            break;
        }
    if (out) *out = s->st;
    pthread_mutex_unlock(&s->mu);
    return idle;
}
