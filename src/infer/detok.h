/* detok.h — streaming detokenisation shared by single-sequence generation
 * (session.c) and the batch scheduler: generated ids are decoded against a
 * few prompt ids of context, only valid UTF-8 leaves (an unfinished
 * character is held back, invalid bytes become U+FFFD), and text that could
 * be the start of a stop string is held back until it is decided. */
#ifndef LMC_DETOK_H
#define LMC_DETOK_H

#include "lmc.h"
#include "tokenizer/tokenizer.h"
#include "io/hf_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LMC_DETOK_CTX 8 /* prompt ids decoded as context before the generated ones */

/* Longest suffix of text[0..n) that is a proper prefix of some stop string. */
size_t lmc_detok_stop_holdback(const char *text, size_t n, const char *const *stop, int n_stop);
/* Earliest occurrence of any stop string in text[0..n), or n if none. */
size_t lmc_detok_stop_find(const char *text, size_t n, const char *const *stop, int n_stop);

/* One stream. The stop array (and its strings) must outlive the stream. */
struct lmc_detok {
    const struct lmc_tokenizer *tok;
    const char *const *stop;
    int n_stop;
    int32_t *ids;             /* (n_ctx + n_gen) context ids, then the ids generated
                               * since the window last moved */
    int64_t n_ctx, n_gen, cap;
    char *raw, *clean;        /* decoded bytes of those ids; sanitised copy (3*raw+1) */
    size_t rl, cl, clean_cap;
    size_t emitted;           /* bytes of clean handed out */
    bool settled;             /* all of clean is out and nothing pends: move the window */
    bool stopped;             /* a stop string was found: nothing more comes out */
};

/* ctx: the last min(n_prompt, LMC_DETOK_CTX) prompt ids are kept as context. */
lmc_status lmc_detok_init(struct lmc_detok *d, const struct lmc_tokenizer *tok,
                          const int32_t *prompt, int64_t n_prompt, const char *const *stop,
                          int n_stop, lmc_err *err);
void lmc_detok_free(struct lmc_detok *d);

/* Appends a generated id. *text and *len receive the new text that is ready
 * (pointing into d, valid until the next call); *stopped is set when a stop
 * string appeared (the text before it is released, the rest never). */
lmc_status lmc_detok_push(struct lmc_detok *d, int32_t id, const char **text, size_t *len,
                          bool *stopped, lmc_err *err);
/* End of generation: an unfinished character becomes U+FFFD and held-back
 * stop-string prefixes are released (up to a stop string, if one is now
 * complete: *stopped). No-op after a stop or with nothing generated. */
void lmc_detok_finish(struct lmc_detok *d, const char **text, size_t *len, bool *stopped);

/* True when id ends generation: one of the config's eos ids, or the
 * tokenizer's (tok may be NULL). Shared by session, speculative decoding and
 * the scheduler. */
bool lmc_detok_is_eos(const struct lmc_config *c, const struct lmc_tokenizer *tok, int32_t id);
/* Appends p[0..n) to the NUL-terminated growing buffer *buf (false: out of memory). */
bool lmc_detok_text_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n);

#endif
