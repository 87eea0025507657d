/* bpe_train.h — trains a byte-level BPE tokenizer (GPT-2 or Llama 3 style)
 * and writes it as Hugging Face tokenizer.json + tokenizer_config.json,
 * loadable by lmc_tokenizer_load and by HF tokenizers.
 *
 * Training: text is cut at special-token strings, split with the style's
 * regex (PCRE2, as the tokenizer does), and the pieces are counted as
 * words of bytes. Then the most frequent adjacent pair is merged repeatedly
 * (ties: smaller left id, then smaller right id), with pair counts updated
 * incrementally from the words that hold the merged pair and a lazy max-heap
 * of candidate pairs. Ids: 0..255 the bytes, then merges in order, then the
 * special tokens, so the vocabulary has exactly vocab_size entries unless
 * the corpus runs out of pairs seen min_frequency times. */
#ifndef LMC_TRAIN_BPE_TRAIN_H
#define LMC_TRAIN_BPE_TRAIN_H

#include "lmc.h"

#include <stdint.h>
#include <stddef.h>

enum lmc_bpe_style { LMC_BPE_GPT2, LMC_BPE_LLAMA3 };

/* Parses "gpt2" / "llama3"; 0 if unknown. */
int lmc_bpe_style_parse(const char *name, enum lmc_bpe_style *out);

/* Word counts gathered from any number of texts. */
struct lmc_bpe_counts;
lmc_status lmc_bpe_counts_init(struct lmc_bpe_counts **out, enum lmc_bpe_style style, lmc_err *err);
/* Adds text (valid UTF-8, else LMC_ERR_ARG naming the byte offset; `label`
 * names the source in messages). */
lmc_status lmc_bpe_counts_add(struct lmc_bpe_counts *c, const char *text, size_t len, const char *label,
                              lmc_err *err);
int64_t lmc_bpe_counts_words(const struct lmc_bpe_counts *c); /* distinct words */
void lmc_bpe_counts_free(struct lmc_bpe_counts *c);

struct lmc_bpe_opts {
    int64_t vocab_size;     /* total, special tokens included (>= 256 + specials) */
    int64_t min_frequency;  /* stop when the best pair is seen fewer times (default 2) */
};

/* A trained tokenizer. Token strings are raw bytes (not byte-level mapped). */
struct lmc_bpe_model {
    enum lmc_bpe_style style;
    int64_t n_tokens;       /* bytes + merged tokens (specials not included) */
    char **tok;             /* (n_tokens) bytes of each token */
    uint32_t *tok_len;      /* (n_tokens) */
    int32_t (*merges)[2];   /* (n_merges) left, right ids, in rank order */
    int64_t n_merges;
    int n_special;          /* specials get ids n_tokens .. n_tokens + n_special - 1 */
    const char *const *special; /* static strings */
    int bos, eos;           /* indices into special[] (bos may equal eos) */
};

lmc_status lmc_bpe_train(struct lmc_bpe_model *out, const struct lmc_bpe_counts *c,
                         const struct lmc_bpe_opts *opts, lmc_err *err);
void lmc_bpe_model_free(struct lmc_bpe_model *m);

/* Renders tokenizer.json and tokenizer_config.json (malloc'd, caller frees). */
lmc_status lmc_bpe_to_json(const struct lmc_bpe_model *m, char **tokenizer_json, char **config_json,
                           lmc_err *err);
/* Writes dir/tokenizer.json and dir/tokenizer_config.json (dir must exist). */
lmc_status lmc_bpe_save(const struct lmc_bpe_model *m, const char *dir, lmc_err *err);

#endif
