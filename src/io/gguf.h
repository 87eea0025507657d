/* gguf.h — GGUF files (llama.cpp's single-file models), version 3 (and 2):
 * a reader that validates the whole header up front (metadata of every
 * value type, tensor infos, alignment, offsets and sizes, counts bounded by
 * the file's size) and maps the tensor data in place; typed metadata
 * accessors whose errors name the key; a writer; and llama.cpp's Q/K row
 * permutation (its converter reorders Llama's q_proj/k_proj rows per head
 * for its rotary layout; lmc undoes it on read and applies it on write). */
#ifndef LMC_GGUF_H
#define LMC_GGUF_H

#include "lmc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lmc_gguf_vtype {
    LMC_GGUF_U8 = 0, LMC_GGUF_I8 = 1, LMC_GGUF_U16 = 2, LMC_GGUF_I16 = 3, LMC_GGUF_U32 = 4,
    LMC_GGUF_I32 = 5, LMC_GGUF_F32 = 6, LMC_GGUF_BOOL = 7, LMC_GGUF_STRING = 8, LMC_GGUF_ARRAY = 9,
    LMC_GGUF_U64 = 10, LMC_GGUF_I64 = 11, LMC_GGUF_F64 = 12, LMC_GGUF_VTYPE_COUNT
};

#define LMC_GGUF_MAX_DIMS 4
#define LMC_GGUF_DEFAULT_ALIGNMENT 32

struct lmc_gguf_str {
    const char *s; /* into the file image, not NUL-terminated */
    uint64_t len;
};

struct lmc_gguf_kv {
    char *key;                  /* owned, NUL-terminated */
    enum lmc_gguf_vtype type;
    /* scalars */
    union { uint64_t u; int64_t i; double f; } v;
    struct lmc_gguf_str str;    /* STRING */
    /* ARRAY: arr_type elements; numbers at arr (little-endian, unaligned),
     * strings in strs (owned table of pointers into the image) */
    enum lmc_gguf_vtype arr_type;
    uint64_t n;
    const uint8_t *arr;
    struct lmc_gguf_str *strs;
};

struct lmc_gguf_tensor {
    char *name;                 /* owned */
    int n_dims;
    int64_t ne[LMC_GGUF_MAX_DIMS]; /* ne[0] fastest (a Linear's in-features), unused dims 1 */
    int type;                   /* enum lmc_ggml_type */
    uint64_t offset;            /* from the data section's start */
    const void *data;
    size_t nbytes;
};

struct lmc_gguf {
    uint32_t version;
    uint64_t alignment;
    struct lmc_gguf_kv *kv;
    int64_t n_kv;
    struct lmc_gguf_tensor *tensors;
    int64_t n_tensors;
    const uint8_t *image;       /* the whole file */
    size_t size;
    size_t data_start;
    int map_kind;               /* 0 borrowed, 1 mmap */
};

/* Parses and validates a GGUF image in memory (borrowed: kept alive by the
 * caller); `label` names it in errors. On error *g is left empty. */
lmc_status lmc_gguf_parse(struct lmc_gguf *g, const void *buf, size_t len, const char *label, lmc_err *err);
/* Maps and parses a file. */
lmc_status lmc_gguf_open(struct lmc_gguf *g, const char *path, lmc_err *err);
void lmc_gguf_free(struct lmc_gguf *g);
/* True when path is a regular file: `-m` takes a Hugging Face folder or a
 * GGUF file, so a file is read as GGUF (and its parse errors name it). */
bool lmc_gguf_is_file(const char *path);

const struct lmc_gguf_kv *lmc_gguf_find(const struct lmc_gguf *g, const char *key);
const struct lmc_gguf_tensor *lmc_gguf_find_tensor(const struct lmc_gguf *g, const char *name);
/* Typed getters: LMC_ERR_FORMAT naming the key when it is absent (unless
 * *found is given: then absent sets *found = false and returns LMC_OK) or
 * holds another type. Integers of any width convert when the value fits. */
lmc_status lmc_gguf_get_int(const struct lmc_gguf *g, const char *key, int64_t *out, bool *found, lmc_err *err);
lmc_status lmc_gguf_get_float(const struct lmc_gguf *g, const char *key, double *out, bool *found, lmc_err *err);
lmc_status lmc_gguf_get_bool(const struct lmc_gguf *g, const char *key, bool *out, bool *found, lmc_err *err);
/* *out is NUL-terminated, malloc'd (caller frees). */
lmc_status lmc_gguf_get_str(const struct lmc_gguf *g, const char *key, char **out, bool *found, lmc_err *err);
/* An array whose elements are of type `elem`. */
lmc_status lmc_gguf_get_arr(const struct lmc_gguf *g, const char *key, enum lmc_gguf_vtype elem,
                            const struct lmc_gguf_kv **out, bool *found, lmc_err *err);
/* Element i of a numeric array as double / int64. */
double lmc_gguf_arr_f(const struct lmc_gguf_kv *kv, uint64_t i);
int64_t lmc_gguf_arr_i(const struct lmc_gguf_kv *kv, uint64_t i);
const char *lmc_gguf_vtype_name(enum lmc_gguf_vtype t);

/* llama.cpp's rotary row order for q_proj/k_proj: within each head of hd
 * rows, HF row i*hd/2 + j (half i, index j) is GGUF row 2j + i. Permutes
 * n_rows rows of row_bytes from src to dst (not overlapping); inverse = true
 * maps GGUF order back to HF's. n_rows must be a multiple of 2*n_head. */
void lmc_gguf_permute_qk(const void *src, void *dst, int64_t n_rows, size_t row_bytes, int64_t n_head,
                         bool inverse);

/* ---- tokenizer metadata (gguf_tokenizer.c) ---- */
/* The split pattern of a llama.cpp pre-tokenizer name ("gpt-2",
 * "llama-bpe", "qwen2") and back; NULL when unknown. */
const char *lmc_gguf_pre_regex(const char *pre);
const char *lmc_gguf_pre_name(const char *regex);
/* A Hugging Face tokenizer.json and tokenizer_config.json (malloc'd texts)
 * from tokenizer.ggml.* (models `gpt2` and `llama`); errors name the key. */
lmc_status lmc_gguf_tokenizer_json(const struct lmc_gguf *g, char **tok_json, char **cfg_json, lmc_err *err);
/* The tokenizer of `-m`: from a GGUF file's metadata (the JSON above,
 * tokenizer.chat_template included), or lmc_tokenizer_load of a folder. */
struct lmc_tokenizer;
lmc_status lmc_gguf_tokenizer_load(struct lmc_tokenizer **out, const char *path_or_dir, lmc_err *err);

/* ---- writer ---- */
struct lmc_gguf_writer;
lmc_status lmc_gguf_writer_init(struct lmc_gguf_writer **w, lmc_err *err);
void lmc_gguf_writer_free(struct lmc_gguf_writer *w);
/* Metadata (copied). Failures are remembered and reported by write. */
void lmc_gguf_add_u32(struct lmc_gguf_writer *w, const char *key, uint32_t v);
void lmc_gguf_add_i32(struct lmc_gguf_writer *w, const char *key, int32_t v);
void lmc_gguf_add_u64(struct lmc_gguf_writer *w, const char *key, uint64_t v);
void lmc_gguf_add_f32(struct lmc_gguf_writer *w, const char *key, float v);
void lmc_gguf_add_f64(struct lmc_gguf_writer *w, const char *key, double v);
void lmc_gguf_add_bool(struct lmc_gguf_writer *w, const char *key, bool v);
void lmc_gguf_add_str(struct lmc_gguf_writer *w, const char *key, const char *v);
/* Numeric array of n elements of elem (little-endian host values). */
void lmc_gguf_add_arr(struct lmc_gguf_writer *w, const char *key, enum lmc_gguf_vtype elem, const void *data,
                      uint64_t n);
void lmc_gguf_add_str_arr(struct lmc_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* A tensor of `type` with ne[0..n_dims) (ne[0] fastest); data (the packed
 * rows) is borrowed until lmc_gguf_write returns. */
void lmc_gguf_add_tensor(struct lmc_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                         const void *data);
lmc_status lmc_gguf_write(struct lmc_gguf_writer *w, const char *path, lmc_err *err);

#endif
