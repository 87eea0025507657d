/* detok.c — streaming detokenisation with UTF-8 and stop-string holdback
 * (see detok.h). Each push decodes the ids generated since the window last
 * moved after LMC_DETOK_CTX context ids, so byte-level and metaspace
 * decoders see what the model saw; once all text is out with no character
 * or stop-string prefix pending, the window moves on, so the work per token
 * stays bounded however long the output grows. */
#include "infer/detok.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

size_t lmc_detok_stop_holdback(const char *text, size_t n, const char *const *stop, int n_stop) {
    size_t hold = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t L = strlen(stop[i]);
        if (L == 0) continue;
        for (size_t k = LMC_MIN(L - 1, n); k > hold; k--)
            if (memcmp(text + n - k, stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

size_t lmc_detok_stop_find(const char *text, size_t n, const char *const *stop, int n_stop) {
    size_t best = n;
    for (int i = 0; i < n_stop; i++) {
        size_t L = strlen(stop[i]);
        if (L == 0 || L > n) continue;
        for (size_t j = 0; j + L <= n && j < best; j++)
            if (memcmp(text + j, stop[i], L) == 0) {
                best = j;
                break;
            }
    }
    return best;
}

bool lmc_detok_is_eos(const struct lmc_config *c, const struct lmc_tokenizer *tok, int32_t id) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] == id) return true;
    return tok && id == lmc_tokenizer_eos(tok);
}

bool lmc_detok_text_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = LMC_MAX(2 * *cap, *len + n + 1);
        char *b = realloc(*buf, c);
        if (!b) return false;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return true;
}

lmc_status lmc_detok_init(struct lmc_detok *d, const struct lmc_tokenizer *tok,
                          const int32_t *prompt, int64_t n_prompt, const char *const *stop,
                          int n_stop, lmc_err *err) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->stop = stop;
    d->n_stop = n_stop;
    d->n_ctx = LMC_MIN(LMC_MAX(n_prompt, 0), LMC_DETOK_CTX);
    d->cap = d->n_ctx + 16;
    d->ids = malloc((size_t)d->cap * sizeof *d->ids);
    if (!d->ids) return lmc_err_set(err, LMC_ERR_OOM, "detokenizer: out of memory");
    if (d->n_ctx) memcpy(d->ids, prompt + n_prompt - d->n_ctx, (size_t)d->n_ctx * sizeof *d->ids);
    return LMC_OK;
}

void lmc_detok_free(struct lmc_detok *d) {
    free(d->ids);
    free(d->raw);
    free(d->clean);
    memset(d, 0, sizeof *d);
}

/* d->raw = decode(ctx + gen) minus decode(ctx); decode(gen) alone when the
 * context does not decode to a prefix. */
static lmc_status decode_gen(struct lmc_detok *d, lmc_err *err) {
    char *pre = NULL, *full = NULL;
    size_t lp = 0, lf = 0;
    lmc_status st = lmc_tokenizer_decode(d->tok, d->ids, d->n_ctx, &pre, &lp, err);
    if (!st) st = lmc_tokenizer_decode(d->tok, d->ids, d->n_ctx + d->n_gen, &full, &lf, err);
    if (!st && lf >= lp && memcmp(full, pre, lp) == 0) {
        memmove(full, full + lp, lf - lp + 1);
        lf -= lp;
    } else if (!st) {
        free(full);
        full = NULL;
        st = lmc_tokenizer_decode(d->tok, d->ids + d->n_ctx, d->n_gen, &full, &lf, err);
    }
    free(pre);
    if (st) {
        free(full);
        return st;
    }
    free(d->raw);
    d->raw = full;
    d->rl = lf;
    if (d->clean_cap < 3 * lf + 1) {
        char *c2 = realloc(d->clean, 3 * lf + 1);
        if (!c2) return lmc_err_set(err, LMC_ERR_OOM, "detokenizer: out of memory");
        d->clean = c2;
        d->clean_cap = 3 * lf + 1;
    }
    return LMC_OK;
}

lmc_status lmc_detok_push(struct lmc_detok *d, int32_t id, const char **text, size_t *len,
                          bool *stopped, lmc_err *err) {
    *text = "";
    *len = 0;
    *stopped = d->stopped;
    if (d->stopped) return LMC_OK;
    if (d->n_ctx + d->n_gen == d->cap) {
        int32_t *n2 = realloc(d->ids, (size_t)(2 * d->cap) * sizeof *n2);
        if (!n2) return lmc_err_set(err, LMC_ERR_OOM, "detokenizer: out of memory");
        d->ids = n2;
        d->cap *= 2;
    }
    if (d->settled) { /* all text out, none pending: the window moves on */
        int64_t n = d->n_ctx + d->n_gen, keep = LMC_MIN(n, LMC_DETOK_CTX);
        memmove(d->ids, d->ids + n - keep, (size_t)keep * sizeof *d->ids);
        d->n_ctx = keep;
        d->n_gen = 0;
        d->rl = d->cl = d->emitted = 0;
        d->settled = false;
    }
    d->ids[d->n_ctx + d->n_gen++] = id;
    lmc_status st = decode_gen(d, err);
    if (st) return st;
    size_t used;
    d->cl = lmc_utf8_sanitize(d->raw, d->rl, false, d->clean, &used);
    size_t stop_at = lmc_detok_stop_find(d->clean, d->cl, d->stop, d->n_stop), ready;
    if (stop_at < d->cl) {
        ready = stop_at;
        d->stopped = *stopped = true;
    } else {
        ready = d->cl - lmc_detok_stop_holdback(d->clean, d->cl, d->stop, d->n_stop);
    }
    if (ready > d->emitted) {
        *text = d->clean + d->emitted;
        *len = ready - d->emitted;
        d->emitted = ready;
    }
    d->settled = !d->stopped && d->emitted == d->cl && used == d->rl;
    return LMC_OK;
}

void lmc_detok_finish(struct lmc_detok *d, const char **text, size_t *len, bool *stopped) {
    *text = "";
    *len = 0;
    *stopped = d->stopped;
    if (d->stopped || d->n_gen == 0 || !d->clean) return;
    d->cl = lmc_utf8_sanitize(d->raw, d->rl, true, d->clean, NULL);
    size_t end = lmc_detok_stop_find(d->clean, d->cl, d->stop, d->n_stop);
    if (end < d->cl) d->stopped = *stopped = true;
    if (end > d->emitted) {
        *text = d->clean + d->emitted;
        *len = end - d->emitted;
        d->emitted = end;
    }
}
