/* grammar_vocab.c — a grammar vocabulary from a tokenizer: each id's bytes
 * as they appear after other text (byte-level BPE: decode([id]), partial
 * UTF-8 included; metaspace: decode([id, id]) shows the leading space that
 * decode([id]) strips at the start of a text), special tokens given no bytes
 * so that masks never allow them except as end of sequence (byte-fallback
 * tokens such as <0x7B>, one byte each, keep theirs). */
#include "infer/grammar.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

lmc_status lmc_grammar_vocab_from_tokenizer(const struct lmc_tokenizer *t, int64_t n_vocab, const int32_t *eos,
                                            int n_eos, struct lmc_grammar_vocab **out, lmc_err *err) {
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > INT32_MAX) return lmc_err_set(err, LMC_ERR_ARG, "grammar vocab: bad size");
    int64_t tv = lmc_tokenizer_vocab_size(t);
    char **tok = calloc((size_t)n_vocab, sizeof *tok);
    size_t *len = calloc((size_t)n_vocab, sizeof *len);
    lmc_status st = tok && len ? LMC_OK : lmc_err_set(err, LMC_ERR_OOM, "grammar vocab: out of memory");
    static char empty[1];
    for (int64_t i = 0; i < n_vocab && !st; i++) {
        int32_t id = (int32_t)i, two[2] = {id, id};
        tok[i] = empty;
        if (i >= tv) continue; /* padding rows of the embedding */
        char *text = NULL, *text2 = NULL;
        size_t n = 0, n2 = 0;
        lmc_err e = {0};
        if (lmc_tokenizer_decode(t, &id, 1, &text, &n, &e)) continue; /* an id the tokenizer cannot decode */
        if (lmc_tokenizer_is_special(t, id) && n != 1) { /* special tokens: none */
            free(text);
            continue;
        }
        if (!lmc_tokenizer_decode(t, two, 2, &text2, &n2, &e) && n2 >= n && n2 <= 2 * n + 4 &&
            !memcmp(text2, text, n) && (n2 != 2 * n || memcmp(text2 + n, text, n))) {
            /* the second copy differs from the first: that is how the token reads mid-text */
            memmove(text2, text2 + n, n2 - n);
            text2[n2 - n] = 0;
            free(text);
            text = text2;
            n = n2 - n;
            text2 = NULL;
        }
        free(text2);
        tok[i] = text;
        len[i] = n;
    }
    if (!st) st = lmc_grammar_vocab_new((const char *const *)tok, len, (int32_t)n_vocab, eos, n_eos, out, err);
    for (int64_t i = 0; tok && i < n_vocab; i++)
        if (tok[i] != empty) free(tok[i]);
    free(tok);
    free(len);
    return st;
}
