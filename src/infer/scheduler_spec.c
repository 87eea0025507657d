/* scheduler_spec.c — speculative decoding inside continuous batching (see
 * scheduler.h, spec options). A sequence in decode state proposes drafts
 * by prompt lookup over its own tokens (spec.h's lmc_spec_lookup) and
 * writes them after its last token in its token array; the step runs the
 * last token and the drafts as rows of the one batched forward, each with
 * a logits row. Verification: greedy requests keep the drafts equal to
 * the argmax of the row before them (from the backend's argmax when the
 * step is all greedy) and then take that argmax, so their tokens are the
 * plain greedy tokens; other requests accept by the speculative sampling
 * rule with a one-hot draft distribution (spec_sample.h), over the
 * distributions lmc_sampler_probs gives with the penalties' history
 * including the drafts. The cache then rolls back: n_computed stops after
 * the last accepted draft, only full blocks of accepted tokens enter the
 * prefix cache, and blocks past the sequence's end are released. */
#include "infer/scheduler_int.h"
#include "core/core.h"
#include "infer/spec.h"
#include "infer/spec_sample.h"

bool lmc_sched_spec_ok(const struct lmc_sched *s, const struct req *q) {
    return !q->gs && q->r.top_logprobs < 0 && !s->kv.pool.state;
}

int64_t lmc_sched_spec_propose(struct lmc_sched *s, struct req *q, int64_t max_drafts) {
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
        a = lmc_spec_accept(s->spec_p, NULL, V, draft, k, &q->smp.rng, out);
    }
    q->n_draft = 0;
    s->n_spec_proposed += k;
    s->n_spec_accepted += a;
    q->spec_alpha = 0.8 * q->spec_alpha + 0.2 * ((double)a / (double)k);
    q->spec_k = lmc_spec_next_k(q->spec_alpha, s->o.spec_k);
    /* the last token and the accepted drafts hold valid K/V */
    q->n_computed = n0 + a;
    for (int64_t i = 0; i <= a; i++)
        if (lmc_sched_emit_token(s, q, NULL, out[i])) return true;
    LMC_ASSERT(q->n_computed == lmc_sched_req_total(q) - 1);
    lmc_kv_seq_commit(&s->kv, &q->seq, q->toks, q->n_computed);
    lmc_kv_seq_truncate(&s->kv, &q->seq, lmc_sched_req_total(q));
    return false;
}
