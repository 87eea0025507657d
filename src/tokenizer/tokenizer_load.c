/* tokenizer_load.c — reads tokenizer.json (BPE model, added tokens,
 * normalizer, pre-tokenizer, post-processor, decoder) and
 * tokenizer_config.json (bos/eos, add_bos_token/add_eos_token, chat
 * template) into a struct lmc_tokenizer. Every type or option we do not
 * implement fails the load with LMC_ERR_UNSUPPORTED naming it; malformed
 * files fail with LMC_ERR_FORMAT naming the field. */
#include "tokenizer/tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_FILE ((size_t)1 << 29)

static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct ld {
    struct lmc_tokenizer *t;
    const char *src; /* file name used in messages */
    lmc_err *err;
};

static lmc_status fmt(struct ld *L, const char *field, const char *expected) {
    return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: %s: expected %s", L->src, field, expected);
}

static lmc_status oom(struct ld *L) {
    return lmc_err_set(L->err, LMC_ERR_OOM, "%s: out of memory while loading", L->src);
}

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* Reads an optional bool field; absent or null keeps *out. */
static lmc_status get_bool(struct ld *L, const cJSON *o, const char *key, const char *where, bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return LMC_OK;
    if (!cJSON_IsBool(v)) {
        char f[256];
        snprintf(f, sizeof f, "%s.%s", where, key);
        return fmt(L, f, "true or false");
    }
    *out = cJSON_IsTrue(v);
    return LMC_OK;
}

/* A required string field. */
static lmc_status get_str(struct ld *L, const cJSON *o, const char *key, const char *where, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) {
        char f[256];
        snprintf(f, sizeof f, "%s.%s", where, key);
        return fmt(L, f, "a string");
    }
    *out = v->valuestring;
    return LMC_OK;
}

static bool as_id(const cJSON *v, int32_t *id) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < 2147483647.0) || d != floor(d)) return false;
    *id = (int32_t)d;
    return true;
}

static lmc_status unsupported(struct ld *L, const char *what, const char *type) {
    return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s type '%s' is not supported", L->src, what, type);
}

/* The "type" of a pipeline component. */
static lmc_status get_type(struct ld *L, const cJSON *o, const char *where, const char **type) {
    if (!cJSON_IsObject(o)) return fmt(L, where, "an object or null");
    return get_str(L, o, "type", where, type);
}

/* A single-character string field (replacement chars), copied to buf. */
static lmc_status get_char(struct ld *L, const cJSON *o, const char *key, const char *where, char *buf,
                           size_t *len) {
    const char *s;
    lmc_status st = get_str(L, o, key, where, &s);
    if (st) return st;
    size_t n = strlen(s);
    uint32_t cp;
    if (n == 0 || n > 4 || (size_t)lmc_tok_utf8_next(s, n, &cp) != n) {
        char f[256];
        snprintf(f, sizeof f, "%s.%s", where, key);
        return fmt(L, f, "a single character");
    }
    memcpy(buf, s, n);
    *len = n;
    return LMC_OK;
}

/* Replace's {"pattern": {"String": s}, "content": c}. */
static lmc_status get_replace(struct ld *L, const cJSON *o, const char *where, char **pat, size_t *pl, char **rep,
                              size_t *rl) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    char f[256];
    snprintf(f, sizeof f, "%s.pattern", where);
    if (!cJSON_IsObject(p)) return fmt(L, f, "an object {\"String\": ...}");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    if (!s) {
        if (cJSON_GetObjectItemCaseSensitive(p, "Regex"))
            return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s: Regex patterns in Replace are not supported",
                               L->src, f);
        return fmt(L, f, "an object {\"String\": ...}");
    }
    if (!cJSON_IsString(s) || !s->valuestring[0]) return fmt(L, f, "a non-empty String");
    const char *c;
    lmc_status st = get_str(L, o, "content", where, &c);
    if (st) return st;
    *pl = strlen(s->valuestring);
    *rl = strlen(c);
    *pat = dupn(s->valuestring, *pl);
    *rep = dupn(c, *rl);
    if (!*pat || !*rep) return oom(L);
    return LMC_OK;
}

static lmc_status too_many(struct ld *L, const char *where) {
    return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s: more than %d steps are not supported", L->src, where,
                       TOK_MAX_STAGES);
}

static lmc_status load_normalizer(struct ld *L, const cJSON *o, const char *where, int depth) {
    struct lmc_tokenizer *t = L->t;
    if (!o || cJSON_IsNull(o)) return LMC_OK;
    const char *type;
    lmc_status st = get_type(L, o, where, &type);
    if (st) return st;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        char f[256];
        snprintf(f, sizeof f, "%s.normalizers", where);
        if (!cJSON_IsArray(arr)) return fmt(L, f, "an array");
        if (depth > 4) return too_many(L, where);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            snprintf(f, sizeof f, "%s.normalizers[%d]", where, i);
            if ((st = load_normalizer(L, c, f, depth + 1))) return st;
        }
        return LMC_OK;
    }
    if (t->n_norm >= TOK_MAX_STAGES) return too_many(L, where);
    struct tok_norm *n = &t->norm[t->n_norm];
    if (strcmp(type, "Prepend") == 0) {
        const char *p;
        if ((st = get_str(L, o, "prepend", where, &p))) return st;
        n->kind = TOK_NORM_PREPEND;
        n->rep_len = strlen(p);
        if (!(n->rep = dupn(p, n->rep_len))) return oom(L);
    } else if (strcmp(type, "Replace") == 0) {
        n->kind = TOK_NORM_REPLACE;
        if ((st = get_replace(L, o, where, &n->pat, &n->pat_len, &n->rep, &n->rep_len))) {
            t->n_norm++; /* so that whatever was allocated is freed */
            return st;
        }
    } else if (strcmp(type, "NFC") == 0) {
        n->kind = TOK_NORM_NFC;
    } else {
        return unsupported(L, "normalizer", type);
    }
    t->n_norm++;
    return LMC_OK;
}

static lmc_status get_prepend_scheme(struct ld *L, const cJSON *o, const char *where, enum tok_prepend *out) {
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(o, "prepend_scheme");
    char f[256];
    snprintf(f, sizeof f, "%s.prepend_scheme", where);
    if (ps && !cJSON_IsNull(ps)) {
        if (!cJSON_IsString(ps)) return fmt(L, f, "\"first\", \"always\" or \"never\"");
        if (strcmp(ps->valuestring, "first") == 0) *out = TOK_PREPEND_FIRST;
        else if (strcmp(ps->valuestring, "always") == 0) *out = TOK_PREPEND_ALWAYS;
        else if (strcmp(ps->valuestring, "never") == 0) *out = TOK_PREPEND_NEVER;
        else return fmt(L, f, "\"first\", \"always\" or \"never\"");
        return LMC_OK;
    }
    bool aps = true; /* legacy files: add_prefix_space */
    lmc_status st = get_bool(L, o, "add_prefix_space", where, &aps);
    *out = aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    return st;
}

static lmc_status load_pre(struct ld *L, const cJSON *o, const char *where, int depth) {
    struct lmc_tokenizer *t = L->t;
    if (!o || cJSON_IsNull(o)) return LMC_OK;
    const char *type;
    lmc_status st = get_type(L, o, where, &type);
    if (st) return st;
    char f[256];
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        snprintf(f, sizeof f, "%s.pretokenizers", where);
        if (!cJSON_IsArray(arr)) return fmt(L, f, "an array");
        if (depth > 4) return too_many(L, where);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            snprintf(f, sizeof f, "%s.pretokenizers[%d]", where, i);
            if ((st = load_pre(L, c, f, depth + 1))) return st;
        }
        return LMC_OK;
    }
    if (t->n_pre >= TOK_MAX_STAGES) return too_many(L, where);
    struct tok_pre *p = &t->pre[t->n_pre];
    if (strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        snprintf(f, sizeof f, "%s.pattern", where);
        if (!cJSON_IsObject(pat)) return fmt(L, f, "an object {\"Regex\": ...}");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        if (!re) {
            if (cJSON_GetObjectItemCaseSensitive(pat, "String"))
                return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s: String patterns in Split are not supported",
                                   L->src, f);
            return fmt(L, f, "an object {\"Regex\": ...}");
        }
        if (!cJSON_IsString(re)) return fmt(L, f, "a Regex string");
        const char *beh;
        if ((st = get_str(L, o, "behavior", where, &beh))) return st;
        if (strcmp(beh, "Isolated") != 0)
            return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s.behavior '%s' is not supported (only Isolated)",
                               L->src, where, beh);
        bool invert = false;
        if ((st = get_bool(L, o, "invert", where, &invert))) return st;
        if (invert)
            return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s.invert = true is not supported", L->src, where);
        p->kind = TOK_PRE_SPLIT;
        if ((st = lmc_tok_regex_compile(&p->re, re->valuestring, strlen(re->valuestring), f, L->err)))
            return lmc_err_prefix(L->err, "%s: ", L->src);
    } else if (strcmp(type, "ByteLevel") == 0) {
        bool use_regex = true, aps = false;
        if ((st = get_bool(L, o, "add_prefix_space", where, &aps)) || (st = get_bool(L, o, "use_regex", where, &use_regex)))
            return st;
        p->kind = TOK_PRE_BYTELEVEL;
        p->add_prefix_space = aps;
        if (use_regex && (st = lmc_tok_regex_compile(&p->re, gpt2_pattern, sizeof gpt2_pattern - 1, where, L->err)))
            return st;
    } else if (strcmp(type, "Metaspace") == 0) {
        p->kind = TOK_PRE_METASPACE;
        p->split = true;
        if ((st = get_char(L, o, "replacement", where, p->repl, &p->repl_len)) ||
            (st = get_prepend_scheme(L, o, where, &p->scheme)) || (st = get_bool(L, o, "split", where, &p->split)))
            return st;
    } else {
        return unsupported(L, "pre_tokenizer", type);
    }
    t->n_pre++;
    return LMC_OK;
}

static lmc_status load_decoder(struct ld *L, const cJSON *o, const char *where, int depth) {
    struct lmc_tokenizer *t = L->t;
    if (!o || cJSON_IsNull(o)) return LMC_OK;
    const char *type;
    lmc_status st = get_type(L, o, where, &type);
    if (st) return st;
    t->has_decoder = true;
    char f[256];
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        snprintf(f, sizeof f, "%s.decoders", where);
        if (!cJSON_IsArray(arr)) return fmt(L, f, "an array");
        if (depth > 4) return too_many(L, where);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            snprintf(f, sizeof f, "%s.decoders[%d]", where, i);
            if ((st = load_decoder(L, c, f, depth + 1))) return st;
        }
        return LMC_OK;
    }
    if (t->n_dec >= TOK_MAX_STAGES) return too_many(L, where);
    struct tok_dec *d = &t->dec[t->n_dec];
    if (strcmp(type, "ByteLevel") == 0) {
        d->kind = TOK_DEC_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        d->kind = TOK_DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        d->kind = TOK_DEC_FUSE;
    } else if (strcmp(type, "Replace") == 0) {
        d->kind = TOK_DEC_REPLACE;
        st = get_replace(L, o, where, &d->pat, &d->pat_len, &d->rep, &d->rep_len);
        t->n_dec++;
        return st;
    } else if (strcmp(type, "Strip") == 0) {
        d->kind = TOK_DEC_STRIP;
        if ((st = get_char(L, o, "content", where, d->ch, &d->ch_len))) return st;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "start"), *b = cJSON_GetObjectItemCaseSensitive(o, "stop");
        int32_t sa, sb;
        if (!as_id(a, &sa)) return fmt(L, "decoder Strip.start", "a non-negative integer");
        if (!as_id(b, &sb)) return fmt(L, "decoder Strip.stop", "a non-negative integer");
        d->start = sa;
        d->stop = sb;
    } else if (strcmp(type, "Metaspace") == 0) {
        d->kind = TOK_DEC_METASPACE;
        enum tok_prepend scheme;
        if ((st = get_char(L, o, "replacement", where, d->ch, &d->ch_len)) ||
            (st = get_prepend_scheme(L, o, where, &scheme)))
            return st;
        d->prepend = scheme != TOK_PREPEND_NEVER;
    } else {
        return unsupported(L, "decoder", type);
    }
    t->n_dec++;
    return LMC_OK;
}

/* Adds the ids of special token `name` (post_processor.special_tokens) to
 * the prefix or suffix. */
static lmc_status add_affix(struct ld *L, const cJSON *specials, const char *name, bool before) {
    struct lmc_tokenizer *t = L->t;
    const cJSON *sp = cJSON_IsObject(specials) ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
    char f[256];
    snprintf(f, sizeof f, "post_processor.special_tokens['%s'].ids", name);
    const cJSON *ids = sp ? cJSON_GetObjectItemCaseSensitive(sp, "ids") : NULL;
    if (!cJSON_IsArray(ids)) return fmt(L, f, "an array of token ids");
    for (const cJSON *c = ids->child; c; c = c->next) {
        int32_t id;
        if (!as_id(c, &id) || id >= t->n_ids) return fmt(L, f, "ids inside the vocabulary");
        int *n = before ? &t->n_prefix : &t->n_suffix;
        if (*n >= TOK_MAX_AFFIX) return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s: too many special tokens", L->src, f);
        (before ? t->prefix : t->suffix)[(*n)++] = id;
    }
    return LMC_OK;
}

static lmc_status load_post(struct ld *L, const cJSON *o, const char *where, int depth) {
    if (!o || cJSON_IsNull(o)) return LMC_OK;
    const char *type;
    lmc_status st = get_type(L, o, where, &type);
    if (st) return st;
    if (strcmp(type, "ByteLevel") == 0) return LMC_OK; /* only adjusts offsets */
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(arr)) return fmt(L, "post_processor.processors", "an array");
        if (depth > 4) return too_many(L, where);
        for (const cJSON *c = arr->child; c; c = c->next)
            if ((st = load_post(L, c, where, depth + 1))) return st;
        return LMC_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return unsupported(L, "post_processor", type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single)) return fmt(L, "post_processor.single", "an array");
    bool seen_a = false;
    for (const cJSON *c = single->child; c; c = c->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(c, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(c, "Sequence");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(sp ? sp : sq, "id");
        if ((!sp && !sq) || !cJSON_IsString(id))
            return fmt(L, "post_processor.single[]", "{\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": {\"id\": \"A\"}}");
        if (sq) {
            if (strcmp(id->valuestring, "A") != 0 || seen_a) return fmt(L, "post_processor.single", "one Sequence $A");
            seen_a = true;
        } else if ((st = add_affix(L, specials, id->valuestring, !seen_a))) {
            return st;
        }
    }
    if (!seen_a) return fmt(L, "post_processor.single", "a Sequence $A");
    return LMC_OK;
}

static int cmp_order(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Builds an index of the added tokens with normalized == norm. */
static lmc_status index_added(struct ld *L, bool norm, int32_t **order_out, uint32_t start[257]) {
    struct lmc_tokenizer *t = L->t;
    memset(start, 0, 257 * sizeof *start);
    uint64_t *keys = malloc((t->n_added + 1) * sizeof *keys);
    int32_t *order = malloc((t->n_added + 1) * sizeof *order);
    if (!keys || !order) {
        free(keys);
        free(order);
        return oom(L);
    }
    size_t m = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        const struct tok_added *a = &t->added[i];
        size_t len = norm ? a->norm_len : a->len;
        if (a->normalized != norm || len == 0 || len > 0xffffff) continue;
        unsigned char c0 = (unsigned char)(norm ? a->norm : a->content)[0];
        /* first byte ascending, length descending, index ascending */
        keys[m++] = ((uint64_t)c0 << 56) | ((uint64_t)(0xffffff - len) << 32) | (uint64_t)i;
    }
    qsort(keys, m, sizeof *keys, cmp_order);
    for (size_t k = 0; k < m; k++) {
        order[k] = (int32_t)(keys[k] & 0xffffffffu);
        start[(keys[k] >> 56) + 1]++;
    }
    for (int b = 0; b < 256; b++) start[b + 1] += start[b];
    free(keys);
    *order_out = order;
    return LMC_OK;
}

static lmc_status load_added(struct ld *L, const cJSON *arr) {
    struct lmc_tokenizer *t = L->t;
    if (!arr || cJSON_IsNull(arr)) return LMC_OK;
    if (!cJSON_IsArray(arr)) return fmt(L, "added_tokens", "an array");
    size_t n = (size_t)cJSON_GetArraySize(arr);
    t->added = calloc(n + 1, sizeof *t->added);
    if (!t->added) return oom(L);
    char f[64];
    for (const cJSON *c = arr->child; c; c = c->next) {
        struct tok_added *a = &t->added[t->n_added];
        snprintf(f, sizeof f, "added_tokens[%zu]", t->n_added);
        if (!cJSON_IsObject(c)) return fmt(L, f, "an object");
        const char *content;
        lmc_status st = get_str(L, c, "content", f, &content);
        if (st) return st;
        if (!as_id(cJSON_GetObjectItemCaseSensitive(c, "id"), &a->id)) {
            snprintf(f, sizeof f, "added_tokens[%zu].id", t->n_added);
            return fmt(L, f, "a non-negative integer");
        }
        a->len = strlen(content);
        if (!(a->content = dupn(content, a->len))) return oom(L);
        t->n_added++;
        a->normalized = true; /* HF's default for a missing flag */
        if ((st = get_bool(L, c, "lstrip", f, &a->lstrip)) || (st = get_bool(L, c, "rstrip", f, &a->rstrip)) ||
            (st = get_bool(L, c, "single_word", f, &a->single_word)) ||
            (st = get_bool(L, c, "normalized", f, &a->normalized)) || (st = get_bool(L, c, "special", f, &a->special)))
            return st;
    }
    return LMC_OK;
}

/* model.type (BPE), and the BPE options: those we do not implement must be
 * absent or neutral; byte_fallback, fuse_unk and ignore_merges are read. */
static lmc_status load_model_options(struct ld *L, const cJSON *model) {
    struct lmc_tokenizer *t = L->t;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !cJSON_IsString(type)) return fmt(L, "model.type", "a string");
    if (type && strcmp(type->valuestring, "BPE") != 0) return unsupported(L, "model", type->valuestring);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (v && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0.0))
        return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: model.dropout is not supported", L->src);
    const char *opt[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(model, opt[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: model.%s is not supported", L->src, opt[i]);
    }
    lmc_status st;
    if ((st = get_bool(L, model, "byte_fallback", "model", &t->byte_fallback)) ||
        (st = get_bool(L, model, "fuse_unk", "model", &t->fuse_unk)) ||
        (st = get_bool(L, model, "ignore_merges", "model", &t->ignore_merges)))
        return st;
    return LMC_OK;
}

/* model.vocab (token string -> id) into the id tables (t->tok, tok_len,
 * added_of sized by the largest id of the vocab and the added tokens,
 * which load_added has read) and the string -> id map. Ids must be unique
 * among vocab entries and among added tokens (an added token may reuse a
 * vocab id), and not far beyond the entry count (a guard on the tables'
 * size). */
static lmc_status load_vocab(struct ld *L, const cJSON *vocab) {
    struct lmc_tokenizer *t = L->t;
    int64_t n_entries = cJSON_GetArraySize(vocab), max_id = -1;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        int32_t id;
        if (!as_id(c, &id)) {
            char f[96];
            size_t n = strlen(c->string);
            int shown = (int)lmc_utf8_valid_prefix(c->string, n < 48 ? n : 48); /* whole characters */
            snprintf(f, sizeof f, "model.vocab[\"%.*s\"]", shown, c->string);
            return fmt(L, f, "a non-negative integer id");
        }
        if (id > max_id) max_id = id;
    }
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id > max_id) max_id = t->added[i].id;
    int64_t limit = 2 * (n_entries + (int64_t)t->n_added) + 1024;
    if (max_id >= limit)
        return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: token id %lld is far beyond the %lld entries of model.vocab",
                           L->src, (long long)max_id, (long long)n_entries);
    t->n_ids = max_id + 1;
    t->tok = calloc((size_t)t->n_ids + 1, sizeof *t->tok);
    t->tok_len = calloc((size_t)t->n_ids + 1, sizeof *t->tok_len);
    t->added_of = malloc(((size_t)t->n_ids + 1) * sizeof *t->added_of);
    if (!t->tok || !t->tok_len || !t->added_of) return oom(L);
    for (int64_t i = 0; i < t->n_ids; i++) t->added_of[i] = -1;
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added_of[t->added[i].id] >= 0)
            return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: added_tokens: id %d is used twice", L->src, t->added[i].id);
        t->added_of[t->added[i].id] = (int32_t)i;
    }
    if (lmc_tok_strmap_init(&t->vocab, (size_t)n_entries)) return oom(L);
    for (const cJSON *c = vocab->child; c; c = c->next) {
        int32_t id = (int32_t)c->valuedouble;
        if (t->tok[id])
            return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: model.vocab: id %d is given to both '%s' and '%s'", L->src,
                               id, t->tok[id], c->string);
        size_t len = strlen(c->string);
        if (len > 0xffffff) return fmt(L, "model.vocab", "tokens shorter than 16 MiB");
        if (!(t->tok[id] = dupn(c->string, len))) return oom(L);
        t->tok_len[id] = (uint32_t)len;
        if (!lmc_tok_strmap_put(&t->vocab, t->tok, t->tok_len, id))
            return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: model.vocab: token '%s' appears twice", L->src, c->string);
    }
    return LMC_OK;
}

/* The two sides of merge c (field name f): "left right" (one space) as
 * older files write it, or a [left, right] pair as newer ones do. */
static lmc_status merge_sides(struct ld *L, const cJSON *c, const char *f, const char **a, size_t *al, const char **b,
                              size_t *bl) {
    if (cJSON_IsString(c)) {
        const char *sp = strchr(c->valuestring, ' ');
        if (!sp || strchr(sp + 1, ' ')) return fmt(L, f, "\"left right\" (one space)");
        *a = c->valuestring;
        *al = (size_t)(sp - *a);
        *b = sp + 1;
        *bl = strlen(*b);
        return LMC_OK;
    }
    if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 && cJSON_IsString(c->child) && cJSON_IsString(c->child->next)) {
        *a = c->child->valuestring;
        *al = strlen(*a);
        *b = c->child->next->valuestring;
        *bl = strlen(*b);
        return LMC_OK;
    }
    return fmt(L, f, "a \"left right\" string or a [left, right] pair");
}

/* model.merges (optional) into the merge map: rank = position in the list;
 * the left, right and concatenated tokens must all be in the vocab. A
 * repeated pair keeps its first rank. */
static lmc_status load_merges(struct ld *L, const cJSON *merges) {
    struct lmc_tokenizer *t = L->t;
    if (merges && !cJSON_IsArray(merges)) return fmt(L, "model.merges", "an array");
    int n_merges = merges ? cJSON_GetArraySize(merges) : 0;
    if (lmc_tok_mergemap_init(&t->merges, (size_t)n_merges)) return oom(L);
    char *cat = NULL;
    size_t cat_cap = 0;
    int rank = 0;
    lmc_status st = LMC_OK;
    for (const cJSON *c = merges ? merges->child : NULL; c && !st; c = c->next, rank++) {
        char f[96];
        snprintf(f, sizeof f, "model.merges[%d]", rank);
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if ((st = merge_sides(L, c, f, &a, &al, &b, &bl))) break;
        if (al + bl + 1 > cat_cap) {
            cat_cap = 2 * (al + bl + 1);
            char *p = realloc(cat, cat_cap);
            if (!p) {
                st = oom(L);
                break;
            }
            cat = p;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t ia = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, a, al);
        int32_t ib = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, b, bl);
        int32_t im = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, cat, al + bl);
        if (ia < 0 || ib < 0 || im < 0) {
            const char *which = ia < 0 ? "left token" : ib < 0 ? "right token" : "merged token";
            st = lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: %s: %s '%.*s' is not in model.vocab", L->src, f, which,
                             (int)(ia < 0 ? al : ib < 0 ? bl : al + bl), ia < 0 ? a : ib < 0 ? b : cat);
            break;
        }
        lmc_tok_mergemap_put(&t->merges, ia, ib, rank, im);
    }
    free(cat);
    return st;
}

/* The byte-fallback tokens <0xXX> present in the vocab, and model.unk_token
 * (a string naming a vocab token, or null). */
static lmc_status load_special_ids(struct ld *L, const cJSON *model) {
    struct lmc_tokenizer *t = L->t;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, name, 6);
    }
    t->unk_id = -1;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) return fmt(L, "model.unk_token", "a string or null");
        t->unk_id = lmc_tok_strmap_get(&t->vocab, t->tok, t->tok_len, v->valuestring, strlen(v->valuestring));
        if (t->unk_id < 0)
            return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: model.unk_token '%s' is not in model.vocab", L->src,
                               v->valuestring);
    }
    return LMC_OK;
}

/* The "model" object: options, then the added tokens (their ids size the
 * id tables with the vocab's), the vocab, the merges, the special ids. */
static lmc_status load_model(struct ld *L, const cJSON *model, const cJSON *added_arr) {
    if (!cJSON_IsObject(model)) return fmt(L, "model", "an object");
    lmc_status st = load_model_options(L, model);
    if (st) return st;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return fmt(L, "model.vocab", "an object mapping token strings to ids");
    if ((st = load_added(L, added_arr)) || (st = load_vocab(L, vocab)) ||
        (st = load_merges(L, cJSON_GetObjectItemCaseSensitive(model, "merges"))))
        return st;
    return load_special_ids(L, model);
}

/* A token field of tokenizer_config.json: a string, {"content": ...} or null. */
static lmc_status config_token(struct ld *L, const cJSON *cfg, const char *key, char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return LMC_OK;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return fmt(L, key, "a string, {\"content\": string} or null");
    if (!(*out = dupn(v->valuestring, strlen(v->valuestring)))) return oom(L);
    return LMC_OK;
}

static lmc_status load_config(struct ld *L, const char *json, size_t len) {
    struct lmc_tokenizer *t = L->t;
    size_t valid = lmc_utf8_valid_prefix(json, len);
    if (valid != len)
        return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: not valid UTF-8 at byte offset %zu", L->src, valid);
    cJSON *cfg = cJSON_ParseWithLength(json, len);
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return fmt(L, "top level", "a JSON object");
    }
    lmc_status st;
    bool add_bos = false, add_eos = false;
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    if ((st = config_token(L, cfg, "bos_token", &t->bos_str)) || (st = config_token(L, cfg, "eos_token", &t->eos_str)) ||
        (st = get_bool(L, cfg, "add_bos_token", "config", &add_bos)) ||
        (st = get_bool(L, cfg, "add_eos_token", "config", &add_eos)) ||
        (st = get_bool(L, cfg, "clean_up_tokenization_spaces", "config", &t->cleanup_spaces)))
        goto done;
    if (t->bos_str) t->bos = lmc_tokenizer_token_id(t, t->bos_str);
    if (t->eos_str) t->eos = lmc_tokenizer_token_id(t, t->eos_str);
    /* Explicit add_bos_token / add_eos_token override the post-processor, as
     * transformers' update_post_processor does. */
    if (cJSON_IsBool(ab)) {
        t->n_prefix = 0;
        if (add_bos && t->bos >= 0) t->prefix[t->n_prefix++] = t->bos;
    }
    if (cJSON_IsBool(ae)) {
        t->n_suffix = 0;
        if (add_eos && t->eos >= 0) t->suffix[t->n_suffix++] = t->eos;
    }
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const char *tmpl = NULL;
    if (cJSON_IsString(ct)) {
        tmpl = ct->valuestring;
    } else if (cJSON_IsArray(ct)) {
        for (const cJSON *c = ct->child; c; c = c->next) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(c, "name");
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(c, "template");
            if (!cJSON_IsString(nm) || !cJSON_IsString(tx)) {
                st = fmt(L, "chat_template[]", "{\"name\": string, \"template\": string}");
                goto done;
            }
            if (strcmp(nm->valuestring, "default") == 0) tmpl = tx->valuestring;
        }
    } else if (ct && !cJSON_IsNull(ct)) {
        st = fmt(L, "chat_template", "a string or a list of {name, template}");
        goto done;
    }
    if (tmpl && !(t->chat_template = dupn(tmpl, strlen(tmpl)))) st = oom(L);
done:
    cJSON_Delete(cfg);
    return st;
}

void lmc_tokenizer_free(struct lmc_tokenizer *t) {
    if (!t) return;
    if (t->tok)
        for (int64_t i = 0; i < t->n_ids; i++) free(t->tok[i]);
    free(t->tok);
    free(t->tok_len);
    free(t->added_of);
    lmc_tok_strmap_free(&t->vocab);
    lmc_tok_mergemap_free(&t->merges);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].norm);
    }
    free(t->added);
    free(t->raw_order);
    free(t->norm_order);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].pat);
        free(t->norm[i].rep);
    }
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    if (t->n_pre < TOK_MAX_STAGES) pcre2_code_free(t->pre[t->n_pre].re); /* a stage that failed half-way */
    for (int i = 0; i < t->n_dec; i++) {
        free(t->dec[i].pat);
        free(t->dec[i].rep);
    }
    free(t->bos_str);
    free(t->eos_str);
    free(t->chat_template);
    free(t);
}

static lmc_status load_all(struct ld *L, const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len,
                           const char *cfg_src) {
    struct lmc_tokenizer *t = L->t;
    /* Every string flows into UTF-8 text handling (PCRE2 runs without its
     * own UTF check), so the file must be UTF-8 as JSON requires. */
    size_t valid = lmc_utf8_valid_prefix(tok_json, tok_len);
    if (valid != tok_len)
        return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: not valid UTF-8 at byte offset %zu", L->src, valid);
    const char *e = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(tok_json, tok_len, &e, 0);
    if (!root) {
        size_t off = e && e >= tok_json && e <= tok_json + tok_len ? (size_t)(e - tok_json) : tok_len;
        return lmc_err_set(L->err, LMC_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", L->src, off);
    }
    lmc_status st;
    if (!cJSON_IsObject(root)) {
        st = fmt(L, "top level", "a JSON object");
        goto done;
    }
    const char *unsup[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, unsup[i]);
        if (v && !cJSON_IsNull(v)) {
            st = lmc_err_set(L->err, LMC_ERR_UNSUPPORTED, "%s: %s settings are not supported (expected null)", L->src,
                             unsup[i]);
            goto done;
        }
    }
    if ((st = load_model(L, cJSON_GetObjectItemCaseSensitive(root, "model"),
                         cJSON_GetObjectItemCaseSensitive(root, "added_tokens"))) ||
        (st = load_normalizer(L, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer", 0)) ||
        (st = load_pre(L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pre_tokenizer", 0)) ||
        (st = load_decoder(L, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder", 0)) ||
        (st = load_post(L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor", 0)))
        goto done;
    /* Normalized added tokens are matched in normalized text: normalize them. */
    for (size_t i = 0; i < t->n_added; i++) {
        struct tok_added *a = &t->added[i];
        if (!a->normalized) continue;
        lmc_err e2;
        if (lmc_tok_normalize(t, a->content, a->len, &a->norm, &a->norm_len, &e2) != LMC_OK) {
            if (e2.status == LMC_ERR_OOM) { st = oom(L); goto done; }
            a->normalized = false; /* NFC we cannot apply: match it as written */
        }
    }
    if ((st = index_added(L, false, &t->raw_order, t->raw_start)) ||
        (st = index_added(L, true, &t->norm_order, t->norm_start)))
        goto done;
    if (cfg_json) {
        const char *src = L->src;
        L->src = cfg_src;
        st = load_config(L, cfg_json, cfg_len);
        L->src = src;
    }
done:
    cJSON_Delete(root);
    return st;
}

static struct lmc_tokenizer *tok_new(void) {
    struct lmc_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->bos = t->eos = t->unk_id = -1;
    lmc_tok_bytes_to_unicode(t);
    return t;
}

lmc_status lmc_tokenizer_load_json(struct lmc_tokenizer **out, const char *tok_json, size_t tok_len,
                                   const char *config_json, size_t config_len, lmc_err *err) {
    *out = NULL;
    struct lmc_tokenizer *t = tok_new();
    if (!t) return lmc_err_set(err, LMC_ERR_OOM, "tokenizer: out of memory");
    struct ld L = {t, "tokenizer.json", err};
    lmc_status st = load_all(&L, tok_json, tok_len, config_json, config_len, "tokenizer_config.json");
    if (st) {
        lmc_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LMC_OK;
}

lmc_status lmc_tokenizer_load(struct lmc_tokenizer **out, const char *dir, lmc_err *err) {
    *out = NULL;
    char tpath[4096], cpath[4096], jpath[4096];
    if (!lmc_path_join(tpath, sizeof tpath, dir, "tokenizer.json") ||
        !lmc_path_join(cpath, sizeof cpath, dir, "tokenizer_config.json") ||
        !lmc_path_join(jpath, sizeof jpath, dir, "chat_template.jinja"))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    char *tj = NULL, *cj = NULL;
    size_t tl = 0, cl = 0;
    lmc_status st = lmc_file_read(tpath, TOK_MAX_FILE, &tj, &tl, err);
    if (st) return st;
    if (lmc_file_exists(cpath) && (st = lmc_file_read(cpath, TOK_MAX_FILE, &cj, &cl, err))) {
        free(tj);
        return st;
    }
    struct lmc_tokenizer *t = tok_new();
    if (!t) {
        free(tj);
        free(cj);
        return lmc_err_set(err, LMC_ERR_OOM, "tokenizer: out of memory");
    }
    struct ld L = {t, tpath, err};
    st = load_all(&L, tj, tl, cj, cl, cpath);
    free(tj);
    free(cj);
    /* transformers 5 saves the template beside the config. */
    if (!st && !t->chat_template && lmc_file_exists(jpath)) st = lmc_file_read(jpath, TOK_MAX_FILE, &t->chat_template, NULL, err);
    if (st) {
        lmc_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LMC_OK;
}
