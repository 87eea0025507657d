/* tokenizer.h — Hugging Face tokenizer.json BPE tokenizers:
 * byte-level BPE with regex split (GPT-2, Llama 3, Qwen2 patterns, PCRE2)
 * and metaspace BPE with byte fallback (Llama 2 / Mistral: Prepend+Replace
 * normalizer or Metaspace pre-tokenizer). Added/special tokens are matched
 * before splitting. tokenizer_config.json supplies bos/eos, add_bos_token and
 * the chat template. Anything unsupported is reported by name at load. */
#ifndef LMC_TOKENIZER_H
#define LMC_TOKENIZER_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lmc_tokenizer; /* opaque */

/* Loads dir/tokenizer.json and (if present) dir/tokenizer_config.json. */
lmc_status lmc_tokenizer_load(struct lmc_tokenizer **out, const char *dir, lmc_err *err);
/* Loads from in-memory texts (config_json may be NULL). For fuzzing/tests. */
lmc_status lmc_tokenizer_load_json(struct lmc_tokenizer **out, const char *tok_json, size_t tok_len,
                                   const char *config_json, size_t config_len, lmc_err *err);
void lmc_tokenizer_free(struct lmc_tokenizer *t);

/* Encodes text (len bytes, must be valid UTF-8 else LMC_ERR_ARG naming the
 * byte offset). add_special: prepend BOS when the tokenizer's post-processor /
 * add_bos_token says so. *ids is malloc'd (caller frees). */
lmc_status lmc_tokenizer_encode(const struct lmc_tokenizer *t, const char *text, size_t len,
                                bool add_special, int32_t **ids, int64_t *n_ids, lmc_err *err);
/* Decodes ids to bytes as HF decode(ids) does (skip_special_tokens=false).
 * *text is malloc'd NUL-terminated; may contain invalid UTF-8 only if the
 * tokens themselves are partial (caller handles). Out-of-range ids ->
 * LMC_ERR_ARG. */
lmc_status lmc_tokenizer_decode(const struct lmc_tokenizer *t, const int32_t *ids, int64_t n,
                                char **text, size_t *len, lmc_err *err);

int64_t lmc_tokenizer_vocab_size(const struct lmc_tokenizer *t);
/* -1 when the tokenizer has none. */
int32_t lmc_tokenizer_bos(const struct lmc_tokenizer *t);
int32_t lmc_tokenizer_eos(const struct lmc_tokenizer *t);
/* Id of an exact token string (vocab or added token), or -1. */
int32_t lmc_tokenizer_token_id(const struct lmc_tokenizer *t, const char *s);
/* Whether id is a special added token. */
bool lmc_tokenizer_is_special(const struct lmc_tokenizer *t, int32_t id);
/* The chat_template string from tokenizer_config.json, or NULL. */
const char *lmc_tokenizer_chat_template(const struct lmc_tokenizer *t);
/* bos_token / eos_token strings from tokenizer_config.json, or NULL. */
const char *lmc_tokenizer_bos_str(const struct lmc_tokenizer *t);
const char *lmc_tokenizer_eos_str(const struct lmc_tokenizer *t);

#endif
