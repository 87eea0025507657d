/* session.c — prompt feeding with prefix reuse, the generation loop, and
 * streaming detokenisation through detok.c (valid UTF-8 only, stop strings
 * held back). */
#include "infer/session.h"
#include "infer/detok.h"
#include "infer/kvq.h"
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lmc_status lmc_session_init(struct lmc_session *s, const struct lmc_model *m,
                            const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                            int64_t ctx, int64_t max_batch, lmc_err *err) {
    memset(s, 0, sizeof *s);
    s->model = m;
    s->be = be;
    s->tok = tok;
    lmc_status st = lmc_kv_init(&s->kv, m, be, ctx, err);
    if (!st) st = lmc_acts_init(&s->acts, m, be, LMC_MAX(1, LMC_MIN(max_batch, ctx)), 1, err);
    if (st) {
        lmc_session_free(s);
        return st;
    }
    s->logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
    s->cached = malloc((size_t)ctx * sizeof(int32_t));
    if (!s->logits || !s->cached) {
        lmc_session_free(s);
        return lmc_err_set(err, LMC_ERR_OOM, "session: out of memory");
    }
    return LMC_OK;
}

lmc_status lmc_session_kv_format(struct lmc_session *s, int f, int64_t residual, lmc_err *err) {
    int64_t ctx = s->kv.ctx;
    lmc_kv_free(&s->kv);
    s->n_cached = 0;
    return lmc_kvq_kv_init(&s->kv, s->model, s->be, ctx, (enum lmc_kvq_fmt)f, residual, err);
}

void lmc_session_free(struct lmc_session *s) {
    lmc_kv_free(&s->kv);
    lmc_acts_free(&s->acts);
    free(s->logits);
    free(s->cached);
    memset(s, 0, sizeof *s);
}

lmc_status lmc_session_feed(struct lmc_session *s, const int32_t *ids, int64_t n, lmc_err *err) {
    if (n <= 0) return lmc_err_set(err, LMC_ERR_ARG, "empty prompt: nothing to condition on");
    if (n > s->kv.ctx)
        return lmc_err_set(err, LMC_ERR_ARG, "prompt of %lld tokens exceeds the context of %lld",
                           (long long)n, (long long)s->kv.ctx);
    int64_t keep = 0;
    while (keep < s->n_cached && keep < n && s->cached[keep] == ids[keep]) keep++;
    if (keep == n) keep = n - 1; /* recompute the last one to get its logits */
    if (s->kv.state_bytes && keep != s->n_cached) {
        /* a recurrent state holds all n_cached tokens and cannot rewind to
         * keep: start over from a zero state */
        s->be->zero(s->be->ctx, s->kv.state, s->kv.state_bytes);
        keep = 0;
    }
    s->n_cached = keep;
    lmc_status st = lmc_model_forward(s->model, s->be, &s->acts, &s->kv, ids + keep, n - keep, keep,
                                      s->logits, false, err);
    if (st) return st;
    memcpy(s->cached + keep, ids + keep, (size_t)(n - keep) * sizeof *ids);
    s->n_cached = n;
    return LMC_OK;
}

void lmc_gen_result_free(struct lmc_gen_result *r) {
    free(r->ids);
    free(r->text);
    memset(r, 0, sizeof *r);
}

lmc_status lmc_session_generate(struct lmc_session *s, const int32_t *prompt, int64_t n_prompt,
                                const struct lmc_gen_opts *o, lmc_emit_fn emit, void *user,
                                struct lmc_gen_result *res, lmc_err *err) {
    return lmc_session_generate_grammar(s, prompt, n_prompt, o, NULL, NULL, emit, user, res, err);
}

lmc_status lmc_session_generate_grammar(struct lmc_session *s, const int32_t *prompt, int64_t n_prompt,
                                        const struct lmc_gen_opts *o, struct lmc_grammar_state *grammar,
                                        struct lmc_grammar_vocab *vocab, lmc_emit_fn emit, void *user,
                                        struct lmc_gen_result *res, lmc_err *err) {
    memset(res, 0, sizeof *res);
    if (grammar && !vocab) return lmc_err_set(err, LMC_ERR_ARG, "structured output: no grammar vocabulary");
    int64_t V = s->model->cfg.vocab_size;
    if (o->max_new < 0) return lmc_err_set(err, LMC_ERR_ARG, "max new tokens must be >= 0");
    struct lmc_sampler smp;
    lmc_status st = lmc_sampler_init(&smp, &o->sampling, V, err);
    if (st) return st;
    int64_t cap = n_prompt + o->max_new;
    int32_t *all = malloc((size_t)LMC_MAX(cap, 1) * sizeof *all);
    uint8_t *allowed = grammar ? malloc((size_t)V) : NULL;
    struct lmc_detok dt;
    if (!all || (grammar && !allowed)) {
        free(allowed);
        lmc_sampler_free(&smp);
        return lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
    }
    st = lmc_detok_init(&dt, s->tok, prompt, n_prompt, o->stop, o->n_stop, err);
    if (st) {
        free(allowed);
        free(all);
        lmc_sampler_free(&smp);
        return st;
    }
    memcpy(all, prompt, (size_t)n_prompt * sizeof *all);
    double t0 = lmc_time_now();
    int64_t before = s->n_cached;
    st = lmc_session_feed(s, prompt, n_prompt, err);
    res->n_prompt_new = n_prompt - LMC_MIN(before, n_prompt);
    double t1 = lmc_time_now();
    res->prefill_s = t1 - t0;
    res->finish_reason = "length";
    bool done = false, stopped = false;
    int64_t n_gen = 0;
    const char *piece;
    size_t plen;
    char *text = NULL; /* all emitted text */
    size_t tlen = 0, tcap = 0;
    while (!st && !done && n_gen < o->max_new) {
        if (grammar) { /* structured output: only tokens that keep the output valid */
            if ((st = lmc_grammar_mask(grammar, vocab, allowed, err))) break;
            for (int64_t v = 0; v < V; v++)
                if (!allowed[v]) s->logits[v] = -INFINITY;
        }
        int32_t id = lmc_sampler_sample(&smp, s->logits, all, n_prompt + n_gen);
        if (grammar && !lmc_grammar_accept_token(grammar, vocab, id)) {
            st = lmc_err_set(err, LMC_ERR_INTERNAL, "structured output: the sampler chose token %d, which the "
                             "grammar does not allow", (int)id);
            break;
        }
        if ((!o->ignore_eos || grammar) && lmc_detok_is_eos(&s->model->cfg, s->tok, id)) {
            res->finish_reason = "stop";
            break;
        }
        all[n_prompt + n_gen++] = id;
        st = lmc_detok_push(&dt, id, &piece, &plen, &stopped, err);
        if (st) break;
        if (stopped) {
            done = true;
            res->finish_reason = "stop";
        }
        if (plen && !lmc_detok_text_append(&text, &tlen, &tcap, piece, plen)) {
            st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
            break;
        }
        if (plen && emit && !emit(user, piece, plen)) done = true;
        if (done || n_gen == o->max_new) break;
        if (s->n_cached >= s->kv.ctx) {
            st = lmc_err_set(err, LMC_ERR_ARG, "context of %lld tokens is full", (long long)s->kv.ctx);
            break;
        }
        st = lmc_model_forward(s->model, s->be, &s->acts, &s->kv, &id, 1, s->n_cached, s->logits,
                               false, err);
        if (!st) s->cached[s->n_cached++] = id;
    }
    if (!st && !done) {
        lmc_detok_finish(&dt, &piece, &plen, &stopped);
        if (stopped) res->finish_reason = "stop";
        if (plen && !lmc_detok_text_append(&text, &tlen, &tcap, piece, plen))
            st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
        else if (plen && emit)
            emit(user, piece, plen);
    }
    lmc_detok_free(&dt);
    free(allowed);
    res->decode_s = lmc_time_now() - t1;
    lmc_sampler_free(&smp);
    if (st) {
        free(text);
        free(all);
        return st;
    }
    res->ids = malloc((size_t)LMC_MAX(n_gen, 1) * sizeof *res->ids);
    if (res->ids) memcpy(res->ids, all + n_prompt, (size_t)n_gen * sizeof *res->ids);
    res->n_ids = n_gen;
    free(all);
    if (!text) text = calloc(1, 1);
    res->text = text;
    res->text_len = text ? tlen : 0;
    return LMC_OK;
}
