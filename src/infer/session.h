/* session.h — one sequence of generation over a loaded model: backend,
 * KV cache, activation scratch and the ids currently in the cache (so a
 * follow-up prompt that extends them, as in chat, prefills only the new
 * part). Generation streams valid UTF-8 text through a callback, holding
 * back partial characters and possible stop-string prefixes. */
#ifndef LMC_SESSION_H
#define LMC_SESSION_H

#include "lmc.h"
#include "infer/grammar.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>

struct lmc_session {
    const struct lmc_model *model;
    const struct lmc_backend *be;
    const struct lmc_tokenizer *tok;
    struct lmc_kv kv;
    struct lmc_acts acts;
    float *logits;            /* (V) last row; or (max_tokens, V) for eval */
    int32_t *cached;          /* ids whose K/V are in the cache */
    int64_t n_cached;
};

lmc_status lmc_session_init(struct lmc_session *s, const struct lmc_model *m,
                            const struct lmc_backend *be, const struct lmc_tokenizer *tok,
                            int64_t ctx, int64_t max_batch, lmc_err *err);
void lmc_session_free(struct lmc_session *s);
/* Replaces the session's cache with one of format f (infer/kvq.h's
 * lmc_kvq_kv_init: sized by the format; the session's backend must be
 * lmc_kvq_backend_fmt's for f) and forgets what was cached. On error the
 * session has no cache and is only fit for lmc_session_free. */
lmc_status lmc_session_kv_format(struct lmc_session *s, int f, int64_t residual, lmc_err *err);

/* Brings the cache to exactly ids[0..n) (reusing the common prefix with
 * what is cached) and leaves the next-token logits of the last id in
 * s->logits. */
lmc_status lmc_session_feed(struct lmc_session *s, const int32_t *ids, int64_t n, lmc_err *err);

/* Called with each new piece of valid UTF-8 text; return false to stop. */
typedef bool (*lmc_emit_fn)(void *user, const char *text, size_t len);

struct lmc_gen_opts {
    int64_t max_new;                  /* tokens to generate at most */
    struct lmc_sampler_params sampling;
    const char *const *stop;          /* stop strings (not included in the output) */
    int n_stop;
    bool ignore_eos;
};

struct lmc_gen_result {
    int32_t *ids;                     /* generated ids (malloc'd) */
    int64_t n_ids;
    char *text;                       /* generated text as emitted (malloc'd) */
    size_t text_len;
    const char *finish_reason;        /* "stop" or "length" */
    double prefill_s, decode_s;
    int64_t n_prompt_new;             /* prompt tokens actually prefilled */
};
void lmc_gen_result_free(struct lmc_gen_result *r);

lmc_status lmc_session_generate(struct lmc_session *s, const int32_t *prompt, int64_t n_prompt,
                                const struct lmc_gen_opts *o, lmc_emit_fn emit, void *user,
                                struct lmc_gen_result *res, lmc_err *err);
/* The same with structured output: tokens the grammar state cannot take
 * are masked out before sampling, end of sequence only once the output is
 * complete (eos ends it even with ignore_eos); the state advances. */
lmc_status lmc_session_generate_grammar(struct lmc_session *s, const int32_t *prompt, int64_t n_prompt,
                                        const struct lmc_gen_opts *o, struct lmc_grammar_state *grammar,
                                        struct lmc_grammar_vocab *vocab, lmc_emit_fn emit, void *user,
                                        struct lmc_gen_result *res, lmc_err *err);

#endif
