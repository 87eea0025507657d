/* session.c — prompt feeding with prefix reuse, the generation loop, and
 * streaming detokenisation (valid UTF-8 only, stop strings held back). */
#include "infer/session.h"
#include "core/core.h"

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

static bool is_eos(const struct lmc_session *s, int32_t id) {
    const struct lmc_config *c = &s->model->cfg;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return true;
    return s->tok && id == lmc_tokenizer_eos(s->tok);
}

/* Longest suffix of text[0..n) that is a proper prefix of some stop string. */
static size_t stop_holdback(const char *text, size_t n, const struct lmc_gen_opts *o) {
    size_t hold = 0;
    for (int i = 0; i < o->n_stop; i++) {
        size_t L = strlen(o->stop[i]);
        for (size_t k = LMC_MIN(L - 1, n); k > hold; k--)
            if (memcmp(text + n - k, o->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Earliest occurrence of any stop string in text[0..n), or n if none. */
static size_t stop_find(const char *text, size_t n, const struct lmc_gen_opts *o) {
    size_t best = n;
    for (int i = 0; i < o->n_stop; i++) {
        size_t L = strlen(o->stop[i]);
        if (L == 0 || L > n) continue;
        for (size_t j = 0; j + L <= n && j < best; j++)
            if (memcmp(text + j, o->stop[i], L) == 0) {
                best = j;
                break;
            }
    }
    return best;
}

/* Text of the generated ids: decode(ctx + gen) minus decode(ctx), where ctx
 * is a few prompt ids, so decoders that strip or merge at the start see the
 * same context the model did. */
static lmc_status decode_gen(const struct lmc_session *s, const int32_t *all, int64_t n_ctx,
                             int64_t n_gen, char **out, size_t *len, lmc_err *err) {
    char *pre = NULL, *full = NULL;
    size_t lp = 0, lf = 0;
    lmc_status st = lmc_tokenizer_decode(s->tok, all, n_ctx, &pre, &lp, err);
    if (!st) st = lmc_tokenizer_decode(s->tok, all, n_ctx + n_gen, &full, &lf, err);
    if (st) {
        free(pre);
        free(full);
        return st;
    }
    if (lf >= lp && memcmp(full, pre, lp) == 0) {
        memmove(full, full + lp, lf - lp + 1);
        lf -= lp;
    } else { /* context did not decode to a prefix: decode the new ids alone */
        free(full);
        full = NULL;
        st = lmc_tokenizer_decode(s->tok, all + n_ctx, n_gen, &full, &lf, err);
    }
    free(pre);
    *out = full;
    *len = lf;
    return st;
}

lmc_status lmc_session_generate(struct lmc_session *s, const int32_t *prompt, int64_t n_prompt,
                                const struct lmc_gen_opts *o, lmc_emit_fn emit, void *user,
                                struct lmc_gen_result *res, lmc_err *err) {
    memset(res, 0, sizeof *res);
    int64_t V = s->model->cfg.vocab_size;
    if (o->max_new < 0) return lmc_err_set(err, LMC_ERR_ARG, "max new tokens must be >= 0");
    struct lmc_sampler smp;
    lmc_status st = lmc_sampler_init(&smp, &o->sampling, V, err);
    if (st) return st;
    int64_t cap = n_prompt + o->max_new;
    int32_t *all = malloc((size_t)LMC_MAX(cap, 1) * sizeof *all);
    if (!all) {
        lmc_sampler_free(&smp);
        return lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
    }
    memcpy(all, prompt, (size_t)n_prompt * sizeof *all);
    int64_t n_ctx = LMC_MIN(n_prompt, 8);
    const int32_t *dec_base = all + n_prompt - n_ctx;
    double t0 = lmc_time_now();
    int64_t before = s->n_cached;
    st = lmc_session_feed(s, prompt, n_prompt, err);
    res->n_prompt_new = n_prompt - LMC_MIN(before, n_prompt);
    double t1 = lmc_time_now();
    res->prefill_s = t1 - t0;
    res->finish_reason = "length";
    /* raw: decoded bytes of the generated ids; clean: raw with invalid
     * UTF-8 replaced by U+FFFD and an unfinished character held back;
     * emitted: bytes of clean already passed to emit. */
    size_t emitted = 0, rl = 0, cl = 0;
    char *raw = NULL, *clean = NULL;
    bool done = false;
    int64_t n_gen = 0;
    while (!st && !done && n_gen < o->max_new) {
        int32_t id = lmc_sampler_sample(&smp, s->logits, all, n_prompt + n_gen);
        if (!o->ignore_eos && is_eos(s, id)) {
            res->finish_reason = "stop";
            break;
        }
        all[n_prompt + n_gen++] = id;
        free(raw);
        raw = NULL;
        st = decode_gen(s, dec_base, n_ctx, n_gen, &raw, &rl, err);
        if (st) break;
        char *c2 = realloc(clean, 3 * rl + 1);
        if (!c2) {
            st = lmc_err_set(err, LMC_ERR_OOM, "generate: out of memory");
            break;
        }
        clean = c2;
        cl = lmc_utf8_sanitize(raw, rl, false, clean, NULL);
        size_t stop_at = stop_find(clean, cl, o), ready;
        if (stop_at < cl) {
            ready = stop_at;
            done = true;
            res->finish_reason = "stop";
        } else {
            ready = cl - stop_holdback(clean, cl, o);
        }
        if (ready > emitted) {
            if (emit && !emit(user, clean + emitted, ready - emitted)) done = true;
            emitted = ready;
        }
        if (done || n_gen == o->max_new) break;
        if (s->n_cached >= s->kv.ctx) {
            st = lmc_err_set(err, LMC_ERR_ARG, "context of %lld tokens is full", (long long)s->kv.ctx);
            break;
        }
        st = lmc_model_forward(s->model, s->be, &s->acts, &s->kv, &id, 1, s->n_cached, s->logits,
                               false, err);
        if (!st) s->cached[s->n_cached++] = id;
    }
    if (!st && !done && clean) {
        /* end of generation: an unfinished character becomes U+FFFD, held
         * back stop-string prefixes are released */
        cl = lmc_utf8_sanitize(raw, rl, true, clean, NULL);
        size_t end = stop_find(clean, cl, o);
        if (end < cl) res->finish_reason = "stop";
        if (end > emitted && emit) emit(user, clean + emitted, end - emitted);
        if (end > emitted) emitted = end;
    }
    free(raw);
    char *text = clean;
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
    if (text) text[emitted] = 0;
    res->text = text;
    res->text_len = emitted;
    return LMC_OK;
}
