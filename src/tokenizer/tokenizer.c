/* tokenizer.c — the public tokenizer entry points: encode (UTF-8 check,
 * pipeline, post-processor special tokens) and the small accessors. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

lmc_status lmc_tokenizer_encode(const struct lmc_tokenizer *t, const char *text, size_t len, bool add_special,
                                int32_t **ids, int64_t *n_ids, lmc_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len > 0) return lmc_err_set(err, LMC_ERR_ARG, "tokenizer encode: NULL text of %zu bytes", len);
    size_t ok = len ? lmc_utf8_valid_prefix(text, len) : 0;
    if (ok != len)
        return lmc_err_set(err, LMC_ERR_ARG, "tokenizer encode: input is not valid UTF-8 at byte offset %zu (byte 0x%02x)",
                           ok, (unsigned char)text[ok]);
    struct tok_ids out = {0};
    lmc_status st = LMC_OK;
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++)
            if (!lmc_tok_ids_push(&out, t->prefix[i])) goto oom;
    if (len > 0 && (st = lmc_tok_encode_text(t, text, len, &out, err))) {
        free(out.v);
        return st;
    }
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++)
            if (!lmc_tok_ids_push(&out, t->suffix[i])) goto oom;
    if (!out.v && !(out.v = malloc(sizeof *out.v))) goto oom; /* never hand back NULL on success */
    *ids = out.v;
    *n_ids = out.n;
    return LMC_OK;
oom:
    free(out.v);
    return lmc_err_set(err, LMC_ERR_OOM, "tokenizer encode: out of memory");
}

int64_t lmc_tokenizer_vocab_size(const struct lmc_tokenizer *t) { return t->n_ids; }
int32_t lmc_tokenizer_bos(const struct lmc_tokenizer *t) { return t->bos; }
int32_t lmc_tokenizer_eos(const struct lmc_tokenizer *t) { return t->eos; }

int32_t lmc_tokenizer_token_id(const struct lmc_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, s, n) == 0) return t->added[i].id;
    return lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, s, n);
}

bool lmc_tokenizer_is_special(const struct lmc_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids || t->added_of[id] < 0) return false;
    return t->added[t->added_of[id]].special;
}

const char *lmc_tokenizer_chat_template(const struct lmc_tokenizer *t) { return t->chat_template; }
const char *lmc_tokenizer_bos_str(const struct lmc_tokenizer *t) { return t->bos_str; }
const char *lmc_tokenizer_eos_str(const struct lmc_tokenizer *t) { return t->eos_str; }
