/* lmc.h — the public C API of liblmc: status codes and error messages,
 * model loading, tokenization and generation. Handles are opaque; every
 * _init/_load has a matching _free. Functions that can fail because of user
 * input return lmc_status and write a message naming the file/field into an
 * lmc_err supplied by the caller. */
#ifndef LMC_H
#define LMC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lmc_status {
    LMC_OK = 0,
    LMC_ERR_ARG,         /* bad argument / option / request value */
    LMC_ERR_IO,          /* a file or folder cannot be opened or read */
    LMC_ERR_FORMAT,      /* a file's content is malformed */
    LMC_ERR_UNSUPPORTED, /* well-formed but not supported (dtype, arch, ...) */
    LMC_ERR_OOM,         /* an allocation failed or a size is impossible */
    LMC_ERR_INTERNAL,    /* anything else (should not happen) */
} lmc_status;

/* Caller-owned error record. lmc functions fill it only on failure. */
typedef struct lmc_err {
    lmc_status status;
    char msg[1024];
} lmc_err;

const char *lmc_status_str(lmc_status s);
/* Formats msg into e (if non-NULL) and returns s, so callers can write
 * `return lmc_err_set(err, LMC_ERR_FORMAT, "%s: ...", path);` */
lmc_status lmc_err_set(lmc_err *e, lmc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes context to an existing message ("loading X: " + old msg). */
lmc_status lmc_err_prefix(lmc_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Inference engine: a Hugging Face model folder opened for generation.
 * One engine holds the weights, tokenizer, backend and one sequence's KV
 * cache; a prompt that extends the previous one reuses its cache. */
typedef struct lmc_engine lmc_engine;

typedef struct lmc_engine_opts {
    const char *device;  /* "cpu" (NULL = cpu) */
    int threads;         /* 0 = all cores */
    int64_t ctx;         /* context length; 0 = the model's, capped at 4096 */
    const char *dtype;   /* weights: NULL/"auto" as on disk, "fp32", "bf16", "f16" */
} lmc_engine_opts;

lmc_status lmc_engine_open(lmc_engine **out, const char *model_dir, const lmc_engine_opts *opts,
                           lmc_err *err);
void lmc_engine_close(lmc_engine *e);
int64_t lmc_engine_ctx(const lmc_engine *e);
int64_t lmc_engine_vocab(const lmc_engine *e);

/* Text <-> ids. Results are malloc'd; release with lmc_free. */
lmc_status lmc_engine_tokenize(lmc_engine *e, const char *text, size_t len, int add_special,
                               int32_t **ids, int64_t *n, lmc_err *err);
lmc_status lmc_engine_detokenize(lmc_engine *e, const int32_t *ids, int64_t n, char **text,
                                 size_t *len, lmc_err *err);
void lmc_free(void *p);

typedef struct lmc_generate_params {
    int64_t max_tokens;
    double temperature;       /* 0 = greedy */
    int64_t top_k;            /* 0 = off */
    double top_p;             /* 1 = off */
    double min_p;             /* 0 = off */
    double repeat_penalty;    /* 1 = off */
    uint64_t seed;
    const char *const *stop;  /* stop strings, not included in the text */
    int n_stop;
    int ignore_eos;
} lmc_generate_params;

/* Defaults: 128 tokens, greedy, no filters, seed 0x5eed. */
void lmc_generate_params_default(lmc_generate_params *p);

/* Receives each new piece of valid UTF-8 text; return 0 to stop early. */
typedef int (*lmc_text_fn)(void *user, const char *text, size_t len);

typedef struct lmc_generation {
    int32_t *ids;             /* generated ids (release with lmc_free) */
    int64_t n_ids;
    char *text;               /* generated text (release with lmc_free) */
    size_t text_len;
    int stopped;              /* 1: EOS or a stop string; 0: max_tokens */
    double prefill_s, decode_s;
} lmc_generation;

lmc_status lmc_engine_generate(lmc_engine *e, const int32_t *prompt, int64_t n_prompt,
                               const lmc_generate_params *p, lmc_text_fn on_text, void *user,
                               lmc_generation *out, lmc_err *err);

#ifdef __cplusplus
}
#endif
#endif
