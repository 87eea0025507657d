/* tokenizer_internal.h — private structures shared by the tokenizer's .c
 * files: the vocabulary hash, the merge-rank table, the flattened
 * normalizer / pre-tokenizer / decoder pipelines and the tokenizer itself.
 * Not part of the public API. */
#ifndef LMC_TOKENIZER_INTERNAL_H
#define LMC_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/core.h"
#include "tokenizer/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bound on entries per pipeline (normalizers, pre-tokenizers, decoders)
 * after nested Sequences are flattened. */
#define TOK_MAX_STAGES 16
/* Upper bound on special tokens a post-processor may add around $A. */
#define TOK_MAX_AFFIX 8

/* string -> id, open addressing; slots hold ids (-1 = empty) and the key
 * bytes live in the owner's id -> string table. */
struct tok_strmap {
    int32_t *slots;
    size_t mask;
};

/* (left id, right id) -> (rank, merged id), open addressing. */
struct tok_mergemap {
    uint64_t *keys; /* UINT64_MAX = empty */
    int32_t *rank;
    int32_t *merged;
    size_t mask;
};

enum tok_norm_kind { TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_NFC };
struct tok_norm {
    enum tok_norm_kind kind;
    char *pat, *rep; /* PREPEND: rep; REPLACE: pat -> rep */
    size_t pat_len, rep_len;
};

enum tok_pre_kind { TOK_PRE_SPLIT, TOK_PRE_BYTELEVEL, TOK_PRE_METASPACE };
enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };
struct tok_pre {
    enum tok_pre_kind kind;
    pcre2_code *re;         /* SPLIT: pattern; BYTELEVEL with use_regex: GPT-2 */
    bool add_prefix_space;  /* BYTELEVEL */
    char repl[8];           /* METASPACE replacement char (UTF-8) */
    size_t repl_len;
    enum tok_prepend scheme; /* METASPACE */
    bool split;             /* METASPACE */
};

enum tok_dec_kind {
    TOK_DEC_BYTELEVEL, TOK_DEC_REPLACE, TOK_DEC_BYTEFALLBACK, TOK_DEC_FUSE, TOK_DEC_STRIP,
    TOK_DEC_METASPACE,
};
struct tok_dec {
    enum tok_dec_kind kind;
    char *pat, *rep;        /* REPLACE */
    size_t pat_len, rep_len;
    char ch[8];             /* STRIP content / METASPACE replacement (UTF-8) */
    size_t ch_len;
    int64_t start, stop;    /* STRIP */
    bool prepend;           /* METASPACE: strip the leading space of token 0 */
};

struct tok_added {
    char *content;          /* as written in added_tokens */
    size_t len;
    char *norm;             /* content after the normalizers (normalized tokens) */
    size_t norm_len;
    int32_t id;
    bool lstrip, rstrip, single_word, normalized, special;
};

struct lmc_tokenizer {
    int64_t n_ids;          /* vocab size: max id + 1 over vocab and added tokens */
    char **tok;             /* (n_ids) model-vocab token strings, NULL for holes */
    uint32_t *tok_len;      /* (n_ids) */
    int32_t *added_of;      /* (n_ids) index into added[], or -1 */
    struct tok_strmap vocab;
    struct tok_mergemap merges;
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;         /* -1 when none */
    int32_t byte_id[256];   /* "<0xXX>" ids for byte fallback, -1 if absent */

    struct tok_added *added;
    size_t n_added;
    /* added[] indices of non-normalized (raw) and normalized tokens, grouped
     * by first byte b in [start[b], start[b+1]) and longest first. */
    int32_t *raw_order, *norm_order;
    uint32_t raw_start[257], norm_start[257];

    struct tok_norm norm[TOK_MAX_STAGES];
    int n_norm;
    struct tok_pre pre[TOK_MAX_STAGES];
    int n_pre;
    struct tok_dec dec[TOK_MAX_STAGES];
    int n_dec;
    bool has_decoder;

    int32_t prefix[TOK_MAX_AFFIX], suffix[TOK_MAX_AFFIX];
    int n_prefix, n_suffix;

    int32_t bos, eos;
    char *bos_str, *eos_str, *chat_template;
    bool cleanup_spaces;    /* tokenizer_config clean_up_tokenization_spaces */

    uint32_t byte_cp[256];  /* GPT-2 bytes_to_unicode */
    int16_t cp_byte[324];   /* inverse for code points < 324, -1 elsewhere */
    char byte_utf8[256][2]; /* byte_cp[b] as UTF-8 (always 1 or 2 bytes) */
    uint8_t byte_utf8_len[256];
};

/* --- bpe.c --- */
uint64_t lmc_tok_hash(const char *s, size_t n);
lmc_status lmc_tok_strmap_init(struct tok_strmap *m, size_t n_keys);
void lmc_tok_strmap_free(struct tok_strmap *m);
/* Inserts id under key tok[id]; returns false if the key is already present
 * (the map keeps the first id). */
bool lmc_tok_strmap_put(struct tok_strmap *m, char *const *tok, const uint32_t *tok_len, int32_t id);
int32_t lmc_tok_strmap_get(const struct tok_strmap *m, char *const *tok, const uint32_t *tok_len,
                           const char *s, size_t n);
lmc_status lmc_tok_mergemap_init(struct tok_mergemap *m, size_t n_keys);
void lmc_tok_mergemap_free(struct tok_mergemap *m);
/* Returns false if the pair is already present (the first rank is kept). */
bool lmc_tok_mergemap_put(struct tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
/* Returns the rank (and *merged) of pair (a, b), or -1. */
int32_t lmc_tok_mergemap_get(const struct tok_mergemap *m, int32_t a, int32_t b, int32_t *merged);

/* Growable id vector used while encoding. */
struct tok_ids {
    int32_t *v;
    int64_t n, cap;
};
bool lmc_tok_ids_push(struct tok_ids *ids, int32_t id);

/* Per-call scratch of the BPE merge loop (grown on demand, freed by caller). */
struct tok_bpe_scratch {
    void *sym, *heap;
    size_t sym_cap, heap_cap;
};
void lmc_tok_bpe_scratch_free(struct tok_bpe_scratch *s);
/* BPE-encodes one pre-token (valid UTF-8, already mapped by the
 * pre-tokenizers) and appends its ids. false only on allocation failure. */
bool lmc_tok_bpe_word(const struct lmc_tokenizer *t, const char *w, size_t n, struct tok_bpe_scratch *s,
                      struct tok_ids *out);

/* --- pretokenize.c --- */
/* Compiles a split pattern with UTF + UCP; LMC_ERR_FORMAT naming where on failure. */
lmc_status lmc_tok_regex_compile(pcre2_code **out, const char *pat, size_t len, const char *where,
                                 lmc_err *err);
/* Fills t->byte_cp, cp_byte, byte_utf8 (the GPT-2 byte <-> char table). */
void lmc_tok_bytes_to_unicode(struct lmc_tokenizer *t);
/* Whether cp is White_Space (Rust char::is_whitespace). */
bool lmc_tok_is_space(uint32_t cp);
/* Applies the normalizers to s, writing a malloc'd result. */
lmc_status lmc_tok_normalize(const struct lmc_tokenizer *t, const char *s, size_t n, char **out,
                             size_t *out_len, lmc_err *err);
/* Full encoding (added tokens, normalizers, pre-tokenizers, BPE) without
 * post-processor tokens. */
lmc_status lmc_tok_encode_text(const struct lmc_tokenizer *t, const char *text, size_t len,
                               struct tok_ids *out, lmc_err *err);

/* --- utf8 helper shared by the files --- */
/* Decodes one code point from valid UTF-8 at s (n bytes left); returns its
 * length in bytes (1 if s is not valid, with *cp = the byte). */
static inline int lmc_tok_utf8_next(const char *str, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    unsigned char c = s[0];
    if (c < 0x80 || n < 2) { *cp = c; return 1; }
    if (c >= 0xc0 && c < 0xe0 && (s[1] & 0xc0) == 0x80) {
        *cp = ((uint32_t)(c & 0x1f) << 6) | (s[1] & 0x3f);
        return 2;
    }
    if (c >= 0xe0 && c < 0xf0 && n >= 3 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80) {
        *cp = ((uint32_t)(c & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
        return 3;
    }
    if (c >= 0xf0 && c < 0xf8 && n >= 4 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 &&
        (s[3] & 0xc0) == 0x80) {
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3f) << 12) |
              ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
        return 4;
    }
    *cp = c;
    return 1;
}
/* Encodes cp as UTF-8 into buf (4 bytes room); returns its length. */
static inline int lmc_tok_utf8_put(char *buf, uint32_t cp) {
    if (cp < 0x80) { buf[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        buf[0] = (char)(0xc0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xe0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        buf[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    buf[0] = (char)(0xf0 | (cp >> 18));
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    buf[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

#endif
