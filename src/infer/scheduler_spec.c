/* scheduler_spec.c — speculative decoding inside continuous batching (see
 * scheduler.h, spec options). A sequence in decode state proposes drafts
 * by prompt lookup over its own tokens (spec.h's lmc_spec_lookup), or
 * takes those a draft model wrote in the step's draft phase (spec_k
 * batched forwards of the draft over all such sequences, each draft drawn
 * from the request's sampler over the draft's logits), after its last
 * token in its token array; the step runs the
 * last token and the drafts as rows of the one batched forward, each with
 * a logits row. Verification: greedy requests keep the drafts equal to
 * the argmax of the row before them (from the backend's argmax when the
 * step is all greedy) and then take that argmax, so their tokens are the
 * plain greedy tokens; other requests accept by the speculative sampling
 * rule (spec_sample.h; the draft model's q, or one-hot for lookup), over the
 * distributions lmc_sampler_probs gives with the penalties' history
 * including the drafts. The cache then rolls back: n_computed stops after
 * the last accepted draft, only full blocks of accepted tokens enter the
 * prefix cache, and blocks past the sequence's end are released. K per
 * sequence and step (lmc_sched_spec_plan): the cost model's choice for the
 * sequence's running acceptance estimate and, for greedy requests, the
 * batch (spec.h's lmc_spec_choose_k_batch). */
#include "infer/scheduler_int.h"
#include "core/core.h"
#include "infer/spec.h"
#include "infer/spec_sample.h"
#include "core/rng.h"

#include <string.h>

bool lmc_sched_spec_ok(const struct lmc_sched *s, const struct req *q) {
    return !q->gs && q->r.top_logprobs < 0 && !s->kv.pool.state;
}

void lmc_sched_spec_plan(struct lmc_sched *s) {
    for (int64_t i = 0; i < s->n_running; i++) {
        struct req *q = s->running[i];
        if (lmc_sched_req_total(q) - q->n_computed != 1 || !lmc_sched_spec_ok(s, q)) continue;
        if (!s->o.spec_fixed_k) {
            /* greedy: its tokens do not depend on K, so the batch may price
             * it; sampled: as if alone (its tokens then do not depend on the
             * batch) */
            int64_t batch = q->r.sampling.temperature == 0 ? s->n_running : 1;
            int64_t k = lmc_spec_choose_k_batch(lmc_spec_rate_alpha(&q->spec_rate), s->o.spec_k, &s->spec_cost, batch);
            if (k > 0) q->spec_plain = 0;
            else if (++q->spec_plain >= 8) { /* a probe, to follow the acceptance rate */
                k = 1;
                q->spec_plain = 0;
            }
            q->spec_k = k;
        }
        LMC_ASSERT(q->spec_k >= 0 && q->spec_k <= LMC_SCHED_SPEC_KMAX);
        s->spec_k_steps[q->spec_k]++;
    }
}

/* The most drafts q may take now: spec_k (adapted), and the step fills
 * positions n-1 .. n-1+k (within the context) and the round emits k+1
 * tokens (within max_tokens). */
static int64_t draft_cap(const struct lmc_sched *s, const struct req *q) {
    int64_t n = lmc_sched_req_total(q);
    return LMC_MIN(q->spec_k, LMC_MIN(q->r.max_tokens - q->n_gen - 1, s->o.ctx - n));
}

/* Adds toks[from..to) of q (draft sequence index ns) to the draft batch;
 * a logits row for the last one when want_row. */
static void draft_add(struct lmc_sched *s, struct req *q, int64_t ns, int64_t from, int64_t to, bool want_row,
                      int64_t *T, int64_t *nl) {
    for (int64_t p = from; p < to; p++, (*T)++) {
        s->d_ids[*T] = q->toks[p];
        s->d_seq[*T] = (int32_t)ns;
        s->d_pos[*T] = (int32_t)p;
    }
    if (want_row) s->d_rows[(*nl)++] = (int32_t)(*T - 1);
}

void lmc_sched_spec_draft_phase(struct lmc_sched *s) {
    int64_t V = s->m->cfg.vocab_size, K = s->o.spec_k, mb = s->max_blocks, nr = 0;
    for (int64_t i = 0; i < s->n_running; i++) { /* the rows that draft this step */
        struct req *q = s->running[i];
        q->d_ready = q->d_want = 0;
        int64_t n = lmc_sched_req_total(q), k = draft_cap(s, q);
        if (n - q->n_computed != 1 || k <= 0 || !lmc_sched_spec_ok(s, q)) continue;
        q->d_computed = LMC_MIN(q->d_computed, n - 1);
        /* the draft writes positions d_computed .. n+k-2 (its last draft is not fed) */
        if (!lmc_kv_seq_reserve(&s->dkv, &q->dseq, q->d_computed, n + k - 1)) continue;
        q->d_want = k;
        q->d_slot = (int)nr;
        s->drows[nr++] = q;
    }
    for (int64_t j = 0; j < K && nr; j++) {
        int64_t T = 0, nl = 0, ns = 0, budget = s->o.max_step_tokens;
        for (int64_t r = 0; r < nr; r++) {
            struct req *q = s->drows[r];
            int64_t n = lmc_sched_req_total(q);
            q->d_fed = -1;
            if (j >= q->d_want || budget <= 0) {
                q->d_want = LMC_MIN(q->d_want, j);
                continue;
            }
            int64_t from = j == 0 ? q->d_computed : n + j - 1, need = n + j - from;
            bool whole = need <= budget; /* else catch up partly, no drafts this step */
            int64_t feed = whole ? need : budget;
            int32_t *bt = s->d_bt + ns * mb;
            memcpy(bt, q->dseq.blocks, (size_t)q->dseq.n_blocks * sizeof *bt);
            for (int64_t b = q->dseq.n_blocks; b < mb; b++) bt[b] = 0;
            if (s->d_ring) s->d_ring[ns] = q->ring;
            draft_add(s, q, ns++, from, from + feed, whole, &T, &nl);
            budget -= feed;
            q->d_fed = from + feed;
            if (!whole) q->d_want = 0;
        }
        if (!ns) break;
        struct lmc_batch b = {T, s->d_ids, s->d_seq, s->d_pos, ns, s->d_bt, mb, s->d_rows, nl, NULL};
        s->dkv.pool.ring_slot = s->d_ring; /* KIVI-2: the draft batch's ring slots */
        lmc_err err = {0};
        if (lmc_model_forward_batch(s->o.draft, s->be, &s->dacts, &s->dkv.pool, &b, s->dlogits, &err)) {
            /* drafting stops here (the cache rows of this forward count for
             * nothing); what is ready stays usable */
            for (int64_t r = 0; r < nr; r++) s->drows[r]->d_want = LMC_MIN(s->drows[r]->d_want, j);
            break;
        }
        int64_t row = 0;
        for (int64_t r = 0; r < nr; r++) {
            struct req *q = s->drows[r];
            if (q->d_fed < 0) continue;
            q->d_computed = q->d_fed;
            if (j >= q->d_want) continue; /* a partial catch-up */
            int64_t n = lmc_sched_req_total(q);
            float *qd = s->dq + ((int64_t)q->d_slot * K + j) * V;
            lmc_sampler_probs(&q->dsmp, s->dlogits + (row++) * V, q->toks, n + j, qd);
            q->toks[n + j] = lmc_spec_draw(qd, V, lmc_rng_uniform(&q->dsmp.rng));
            q->d_ready = j + 1;
        }
    }
}

int64_t lmc_sched_spec_propose(struct lmc_sched *s, struct req *q, int64_t max_drafts) {
    if (s->o.draft) return LMC_MIN(q->d_ready, max_drafts);
    int64_t n = lmc_sched_req_total(q);
    /* the step fills positions n-1 .. n-1+k (within the context), and the
     * round emits k+1 tokens (within max_tokens) */
    int64_t k = LMC_MIN(LMC_MIN(q->spec_k, max_drafts),
                        LMC_MIN(q->r.max_tokens - q->n_gen - 1, s->o.ctx - n));
    if (k <= 0) return 0;
    return lmc_spec_lookup(q->toks, n, s->o.spec_ngram, k, q->toks + n);
}

bool lmc_sched_spec_verify(struct lmc_sched *s, struct req *q, const int32_t *ids, float *logits) {
    int64_t k = q->n_draft, n0 = lmc_sched_req_total(q), V = s->m->cfg.vocab_size, a = 0;
    const int32_t *draft = q->toks + n0;
    int32_t out[17];
    LMC_ASSERT(k >= 1 && k <= 16 && q->n_computed == n0 + k);
    if (ids) { /* greedy: the drafts that equal the argmax before them, then the argmax */
        while (a < k && ids[a] == draft[a]) a++;
        for (int64_t i = 0; i < a; i++) out[i] = draft[i];
        out[a] = ids[a];
    } else {
        for (int64_t i = 0; i <= k; i++)
            lmc_sampler_probs(&q->smp, logits + i * V, q->toks, n0 + i, s->spec_p + i * V);
        const float *qd = s->o.draft ? s->dq + (int64_t)q->d_slot * s->o.spec_k * V : NULL;
        a = lmc_spec_accept(s->spec_p, qd, V, draft, k, &q->smp.rng, out);
    }
    q->n_draft = 0;
    s->n_spec_proposed += k;
    s->n_spec_accepted += a;
    lmc_spec_rate_add(&q->spec_rate, a, k);
    /* the last token and the accepted drafts hold valid K/V (here and in
     * the draft's cache) */
    q->n_computed = n0 + a;
    q->d_computed = LMC_MIN(q->d_computed, n0 + a);
    q->d_ready = 0;
    for (int64_t i = 0; i <= a; i++)
        if (lmc_sched_emit_token(s, q, NULL, out[i])) return true;
    LMC_ASSERT(q->n_computed == lmc_sched_req_total(q) - 1);
    lmc_kv_seq_commit(&s->kv, &q->seq, q->toks, lmc_sched_shareable(s, q));
    lmc_kv_seq_truncate(&s->kv, &q->seq, lmc_sched_req_total(q));
    if (s->o.draft) lmc_kv_seq_truncate(&s->dkv, &q->dseq, lmc_sched_req_total(q));
    return false;
}
