/* bpe_train.c — byte-level BPE training: word counting over regex
 * pre-tokens (the tokenizer's PCRE2 compile and its GPT-2 byte <-> char
 * table are reused from src/tokenizer/), the merge loop with incremental
 * pair counts, and the tokenizer.json / tokenizer_config.json writer. */
#include "train/bpe_train.h"

#include "tokenizer/tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *const gpt2_special[] = {"<|endoftext|>"};
static const char *const llama3_special[] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_2|>", "<|eot_id|>",
};

int lmc_bpe_style_parse(const char *name, enum lmc_bpe_style *out) {
    if (!strcmp(name, "gpt2")) *out = LMC_BPE_GPT2;
    else if (!strcmp(name, "llama3")) *out = LMC_BPE_LLAMA3;
    else return 0;
    return 1;
}

static void style_specials(enum lmc_bpe_style s, const char *const **names, int *n, int *bos, int *eos) {
    if (s == LMC_BPE_GPT2) {
        *names = gpt2_special;
        *n = 1;
        *bos = *eos = 0;
    } else {
        *names = llama3_special;
        *n = (int)(sizeof llama3_special / sizeof *llama3_special);
        *bos = 0;
        *eos = 1;
    }
}

/* ---- word counter: bytes -> count, open addressing over an entry table ---- */

struct word {
    int64_t off;     /* into bytes */
    uint32_t len;
    int64_t count;
};

struct lmc_bpe_counts {
    enum lmc_bpe_style style;
    pcre2_code *re;
    pcre2_match_data *md;
    char *bytes;
    int64_t n_bytes, cap_bytes;
    struct word *w;
    int64_t n, cap;
    int32_t *slots;  /* -1 empty */
    size_t mask;
};

lmc_status lmc_bpe_counts_init(struct lmc_bpe_counts **out, enum lmc_bpe_style style, lmc_err *err) {
    struct lmc_bpe_counts *c = calloc(1, sizeof *c);
    if (!c) return lmc_err_set(err, LMC_ERR_OOM, "bpe train: out of memory");
    c->style = style;
    const char *pat = style == LMC_BPE_GPT2 ? gpt2_pattern : llama3_pattern;
    lmc_status st = lmc_tok_regex_compile(&c->re, pat, strlen(pat), "bpe train split pattern", err);
    if (st) {
        free(c);
        return st;
    }
    c->md = pcre2_match_data_create_from_pattern(c->re, NULL);
    c->mask = 4095;
    c->slots = malloc((c->mask + 1) * sizeof *c->slots);
    if (!c->md || !c->slots) {
        lmc_bpe_counts_free(c);
        return lmc_err_set(err, LMC_ERR_OOM, "bpe train: out of memory");
    }
    memset(c->slots, 0xff, (c->mask + 1) * sizeof *c->slots);
    *out = c;
    return LMC_OK;
}

void lmc_bpe_counts_free(struct lmc_bpe_counts *c) {
    if (!c) return;
    pcre2_match_data_free(c->md);
    pcre2_code_free(c->re);
    free(c->bytes);
    free(c->w);
    free(c->slots);
    free(c);
}

int64_t lmc_bpe_counts_words(const struct lmc_bpe_counts *c) { return c->n; }

static bool counts_grow(struct lmc_bpe_counts *c) {
    size_t cap = (c->mask + 1) * 2;
    int32_t *s = malloc(cap * sizeof *s);
    if (!s) return false;
    memset(s, 0xff, cap * sizeof *s);
    for (int64_t k = 0; k < c->n; k++) {
        size_t i = lmc_tok_hash(c->bytes + c->w[k].off, c->w[k].len) & (cap - 1);
        while (s[i] >= 0) i = (i + 1) & (cap - 1);
        s[i] = (int32_t)k;
    }
    free(c->slots);
    c->slots = s;
    c->mask = cap - 1;
    return true;
}

static bool count_word(struct lmc_bpe_counts *c, const char *s, size_t n) {
    if (n == 0) return true;
    if (n > 0xffffffu) n = 0xffffffu; /* pathological runs: counted truncated */
    size_t i = lmc_tok_hash(s, n) & c->mask;
    while (c->slots[i] >= 0) {
        struct word *w = &c->w[c->slots[i]];
        if (w->len == n && memcmp(c->bytes + w->off, s, n) == 0) {
            w->count++;
            return true;
        }
        i = (i + 1) & c->mask;
    }
    if (c->n >= INT32_MAX - 1) return false;
    if (c->n == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 4096;
        struct word *p = realloc(c->w, (size_t)cap * sizeof *p);
        if (!p) return false;
        c->w = p;
        c->cap = cap;
    }
    if (c->n_bytes + (int64_t)n > c->cap_bytes) {
        int64_t cap = c->cap_bytes ? 2 * c->cap_bytes : 1 << 16;
        while (cap < c->n_bytes + (int64_t)n) cap *= 2;
        char *p = realloc(c->bytes, (size_t)cap);
        if (!p) return false;
        c->bytes = p;
        c->cap_bytes = cap;
    }
    memcpy(c->bytes + c->n_bytes, s, n);
    c->w[c->n] = (struct word){.off = c->n_bytes, .len = (uint32_t)n, .count = 1};
    c->n_bytes += (int64_t)n;
    c->slots[i] = (int32_t)c->n++;
    if ((size_t)c->n * 2 > c->mask) return counts_grow(c);
    return true;
}

/* Splits s as the tokenizer's Split(Isolated) does: matches and the gaps
 * between them are pieces; empty matches make no piece. */
static lmc_status count_segment(struct lmc_bpe_counts *c, const char *s, size_t n, const char *label,
                                lmc_err *err) {
    size_t off = 0, last = 0;
    while (off < n) {
        int rc = pcre2_match(c->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(c->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return lmc_err_set(err, LMC_ERR_ARG, "%s: split regex failed (pcre2 error %d)", label, rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        LMC_ASSERT(ms <= me && me <= n && ms >= off);
        if (me == ms) {
            uint32_t cp;
            off = ms + (size_t)lmc_tok_utf8_next(s + ms, n - ms, &cp);
            continue;
        }
        if ((ms > last && !count_word(c, s + last, ms - last)) || !count_word(c, s + ms, me - ms)) goto oom;
        last = off = me;
    }
    if (last < n && !count_word(c, s + last, n - last)) goto oom;
    return LMC_OK;
oom:
    return lmc_err_set(err, LMC_ERR_OOM, "%s: out of memory while counting words", label);
}

lmc_status lmc_bpe_counts_add(struct lmc_bpe_counts *c, const char *text, size_t len, const char *label,
                              lmc_err *err) {
    size_t ok = lmc_utf8_valid_prefix(text, len);
    if (ok != len)
        return lmc_err_set(err, LMC_ERR_ARG, "%s: invalid UTF-8 at byte offset %zu", label, ok);
    const char *const *sp;
    int n_sp, bos, eos;
    style_specials(c->style, &sp, &n_sp, &bos, &eos);
    /* special-token strings are cut out (they never take part in merges) */
    size_t last = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] != '<' || text[i + 1] != '|') continue;
        for (int k = 0; k < n_sp; k++) {
            size_t l = strlen(sp[k]);
            if (i + l <= len && memcmp(text + i, sp[k], l) == 0) {
                lmc_status st = count_segment(c, text + last, i - last, label, err);
                if (st) return st;
                last = i + l;
                i = last - 1;
                break;
            }
        }
    }
    return count_segment(c, text + last, len - last, label, err);
}

/* ---- training ---- */

struct pair {
    int32_t a, b;
    int64_t count;
    int32_t *words;  /* words that held this pair when it was counted (may repeat) */
    int32_t n_words, cap_words;
    int32_t last_word;
    uint32_t stamp;  /* merge step that last changed the count */
};

struct heap_ent {
    int64_t count;
    int32_t a, b, pair;
};

struct trainer {
    struct pair *p;
    int32_t n_p, cap_p;
    int32_t *slots;  /* pair hash: -1 empty */
    size_t mask;
    struct heap_ent *h;
    int64_t n_h, cap_h;
    int32_t *changed;
    int32_t n_changed, cap_changed;
    uint32_t stamp;
    bool oom;
};

static inline size_t pair_slot(int32_t a, int32_t b, size_t mask) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k & mask;
}

static bool pairs_grow(struct trainer *T) {
    size_t cap = T->slots ? (T->mask + 1) * 2 : 1 << 16;
    int32_t *s = malloc(cap * sizeof *s);
    if (!s) return false;
    memset(s, 0xff, cap * sizeof *s);
    for (int32_t k = 0; k < T->n_p; k++) {
        size_t i = pair_slot(T->p[k].a, T->p[k].b, cap - 1);
        while (s[i] >= 0) i = (i + 1) & (cap - 1);
        s[i] = k;
    }
    free(T->slots);
    T->slots = s;
    T->mask = cap - 1;
    return true;
}

static int32_t pair_get(struct trainer *T, int32_t a, int32_t b) {
    size_t i = pair_slot(a, b, T->mask);
    while (T->slots[i] >= 0) {
        struct pair *p = &T->p[T->slots[i]];
        if (p->a == a && p->b == b) return T->slots[i];
        i = (i + 1) & T->mask;
    }
    if (T->n_p == T->cap_p) {
        if (T->cap_p >= INT32_MAX / 2) return -1;
        int32_t cap = T->cap_p ? 2 * T->cap_p : 1 << 14;
        struct pair *q = realloc(T->p, (size_t)cap * sizeof *q);
        if (!q) return -1;
        T->p = q;
        T->cap_p = cap;
    }
    int32_t k = T->n_p++;
    T->p[k] = (struct pair){.a = a, .b = b, .last_word = -1};
    T->slots[i] = k;
    if ((size_t)T->n_p * 2 > T->mask && !pairs_grow(T)) return -1;
    return k;
}

/* Adds delta to pair (a, b)'s count; a positive delta records word w. */
static void pair_add(struct trainer *T, int32_t a, int32_t b, int64_t delta, int32_t w) {
    int32_t k = pair_get(T, a, b);
    if (k < 0) {
        T->oom = true;
        return;
    }
    struct pair *p = &T->p[k];
    p->count += delta;
    if (delta > 0 && p->last_word != w) {
        if (p->n_words == p->cap_words) {
            int32_t cap = p->cap_words ? 2 * p->cap_words : 4;
            int32_t *q = realloc(p->words, (size_t)cap * sizeof *q);
            if (!q) {
                T->oom = true;
                return;
            }
            p->words = q;
            p->cap_words = cap;
        }
        p->words[p->n_words++] = w;
        p->last_word = w;
    }
    if (p->stamp != T->stamp) {
        p->stamp = T->stamp;
        if (T->n_changed == T->cap_changed) {
            int32_t cap = T->cap_changed ? 2 * T->cap_changed : 1024;
            int32_t *q = realloc(T->changed, (size_t)cap * sizeof *q);
            if (!q) {
                T->oom = true;
                return;
            }
            T->changed = q;
            T->cap_changed = cap;
        }
        T->changed[T->n_changed++] = k;
    }
}

/* Max-heap order: higher count first, then smaller (a, b). */
static inline bool heap_before(const struct heap_ent *x, const struct heap_ent *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static bool heap_push(struct trainer *T, int32_t k) {
    if (T->n_h == T->cap_h) {
        int64_t cap = T->cap_h ? 2 * T->cap_h : 1 << 14;
        struct heap_ent *q = realloc(T->h, (size_t)cap * sizeof *q);
        if (!q) return false;
        T->h = q;
        T->cap_h = cap;
    }
    struct heap_ent e = {.count = T->p[k].count, .a = T->p[k].a, .b = T->p[k].b, .pair = k};
    int64_t i = T->n_h++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!heap_before(&e, &T->h[up])) break;
        T->h[i] = T->h[up];
        i = up;
    }
    T->h[i] = e;
    return true;
}

static struct heap_ent heap_pop(struct trainer *T) {
    struct heap_ent top = T->h[0], e = T->h[--T->n_h];
    int64_t i = 0, n = T->n_h;
    for (;;) {
        int64_t l = 2 * i + 1, best = i;
        const struct heap_ent *bv = &e;
        if (l < n && heap_before(&T->h[l], bv)) best = l, bv = &T->h[l];
        if (l + 1 < n && heap_before(&T->h[l + 1], bv)) best = l + 1;
        if (best == i) break;
        T->h[i] = T->h[best];
        i = best;
    }
    if (n > 0) T->h[i] = e;
    return top;
}

static void trainer_free(struct trainer *T) {
    for (int32_t k = 0; k < T->n_p; k++) free(T->p[k].words);
    free(T->p);
    free(T->slots);
    free(T->h);
    free(T->changed);
}

void lmc_bpe_model_free(struct lmc_bpe_model *m) {
    if (m->tok)
        for (int64_t i = 0; i < m->n_tokens; i++) free(m->tok[i]);
    free(m->tok);
    free(m->tok_len);
    free(m->merges);
    memset(m, 0, sizeof *m);
}

lmc_status lmc_bpe_train(struct lmc_bpe_model *out, const struct lmc_bpe_counts *c,
                         const struct lmc_bpe_opts *opts, lmc_err *err) {
    memset(out, 0, sizeof *out);
    out->style = c->style;
    style_specials(c->style, &out->special, &out->n_special, &out->bos, &out->eos);
    int64_t target = opts->vocab_size - out->n_special;
    if (opts->vocab_size > (1 << 24) || target < 256)
        return lmc_err_set(err, LMC_ERR_ARG, "bpe train: vocab size %lld: expected %d .. %d (256 bytes + %d special tokens at least)",
                           (long long)opts->vocab_size, 256 + out->n_special, 1 << 24, out->n_special);
    int64_t min_freq = opts->min_frequency > 0 ? opts->min_frequency : 1;

    struct trainer T = {0};
    struct tok_strmap vocab = {0};
    int32_t *sym = NULL, *wlen = NULL;
    int64_t *wstart = NULL;
    uint32_t *wstamp = NULL;
    lmc_status st = LMC_OK;
    int64_t nw = c->n;
    out->tok = calloc((size_t)target, sizeof *out->tok);
    out->tok_len = calloc((size_t)target, sizeof *out->tok_len);
    out->merges = malloc((size_t)(target - 256 + 1) * sizeof *out->merges);
    sym = malloc(((size_t)c->n_bytes + 1) * sizeof *sym);
    wstart = malloc(((size_t)nw + 1) * sizeof *wstart);
    wlen = malloc(((size_t)nw + 1) * sizeof *wlen);
    wstamp = calloc((size_t)nw + 1, sizeof *wstamp);
    if (!out->tok || !out->tok_len || !out->merges || !sym || !wstart || !wlen || !wstamp ||
        lmc_tok_strmap_init(&vocab, (size_t)target) || !pairs_grow(&T))
        goto oom;
    for (int b = 0; b < 256; b++) {
        if (!(out->tok[b] = malloc(1))) goto oom;
        out->tok[b][0] = (char)b;
        out->tok_len[b] = 1;
        lmc_tok_strmap_put(&vocab, out->tok, out->tok_len, b);
    }
    out->n_tokens = 256;

    /* words as symbol arrays and the initial pair counts */
    for (int64_t w = 0; w < nw; w++) {
        const struct word *wd = &c->w[w];
        wstart[w] = wd->off;
        wlen[w] = (int32_t)wd->len;
        for (uint32_t i = 0; i < wd->len; i++) sym[wd->off + i] = (unsigned char)c->bytes[wd->off + i];
        for (uint32_t i = 0; i + 1 < wd->len; i++)
            pair_add(&T, sym[wd->off + i], sym[wd->off + i + 1], wd->count, (int32_t)w);
        if (T.oom) goto oom;
    }
    for (int32_t k = 0; k < T.n_p; k++)
        if (!heap_push(&T, k)) goto oom;

    while (out->n_tokens < target && T.n_h > 0) {
        struct heap_ent e = heap_pop(&T);
        struct pair *pp = &T.p[e.pair];
        if (e.count != pp->count || pp->count <= 0) continue; /* stale entry */
        if (pp->count < min_freq) break;
        int32_t a = pp->a, b = pp->b;
        /* the merged token: reuse its id if another merge already made it */
        size_t la = out->tok_len[a], lb = out->tok_len[b];
        char *s = malloc(la + lb);
        if (!s) goto oom;
        memcpy(s, out->tok[a], la);
        memcpy(s + la, out->tok[b], lb);
        int32_t z = lmc_tok_strmap_get(&vocab, out->tok, out->tok_len, s, la + lb);
        if (z < 0) {
            z = (int32_t)out->n_tokens++;
            out->tok[z] = s;
            out->tok_len[z] = (uint32_t)(la + lb);
            lmc_tok_strmap_put(&vocab, out->tok, out->tok_len, z);
        } else {
            free(s);
        }
        out->merges[out->n_merges][0] = a;
        out->merges[out->n_merges][1] = b;
        out->n_merges++;

        T.stamp++;
        T.n_changed = 0;
        int32_t *words = pp->words, n_words = pp->n_words;
        pp->words = NULL;
        pp->n_words = pp->cap_words = 0;
        pp->last_word = -1;
        for (int32_t q = 0; q < n_words; q++) {
            int32_t w = words[q];
            if (wstamp[w] == T.stamp) continue;
            wstamp[w] = T.stamp;
            int32_t *ws = sym + wstart[w];
            int32_t n = wlen[w], j = 0;
            int64_t cnt = c->w[w].count;
            for (int32_t i = 0; i < n;) {
                if (i + 1 < n && ws[i] == a && ws[i + 1] == b) {
                    if (j > 0) {
                        pair_add(&T, ws[j - 1], a, -cnt, w);
                        pair_add(&T, ws[j - 1], z, cnt, w);
                    }
                    if (i + 2 < n) {
                        pair_add(&T, b, ws[i + 2], -cnt, w);
                        pair_add(&T, z, ws[i + 2], cnt, w);
                    }
                    pair_add(&T, a, b, -cnt, w);
                    ws[j++] = z;
                    i += 2;
                } else {
                    ws[j++] = ws[i++];
                }
            }
            wlen[w] = j;
            if (T.oom) break;
        }
        free(words);
        if (T.oom) goto oom;
        pp = &T.p[e.pair];
        LMC_ASSERT(pp->count == 0);
        for (int32_t q = 0; q < T.n_changed; q++) {
            int32_t k = T.changed[q];
            if (T.p[k].count > 0 && !heap_push(&T, k)) goto oom;
            if (T.p[k].count <= 0) { /* a pair that vanished keeps no word list */
                free(T.p[k].words);
                T.p[k].words = NULL;
                T.p[k].n_words = T.p[k].cap_words = 0;
                T.p[k].last_word = -1;
            }
        }
    }
    goto done;
oom:
    st = lmc_err_set(err, LMC_ERR_OOM, "bpe train: out of memory");
    lmc_bpe_model_free(out);
done:
    trainer_free(&T);
    lmc_tok_strmap_free(&vocab);
    free(sym);
    free(wstart);
    free(wlen);
    free(wstamp);
    return st;
}

/* ---- tokenizer.json ---- */

static char *byte_level(const struct lmc_tokenizer *map, const char *s, size_t n) {
    char *o = malloc(2 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        memcpy(o + k, map->byte_utf8[c], map->byte_utf8_len[c]);
        k += map->byte_utf8_len[c];
    }
    o[k] = 0;
    return o;
}

static cJSON *byte_level_obj(bool aps, bool trim, bool use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", aps);
    cJSON_AddBoolToObject(o, "trim_offsets", trim);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *template_piece(const char *kind, const char *id, int type_id) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(o, kind);
    cJSON_AddStringToObject(in, "id", id);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    return o;
}

static cJSON *build_tokenizer(const struct lmc_bpe_model *m, const struct lmc_tokenizer *map, bool *oom) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < m->n_special; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", (double)(m->n_tokens + i));
        cJSON_AddStringToObject(a, "content", m->special[i]);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", true);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddNullToObject(root, "normalizer");
    if (m->style == LMC_BPE_GPT2) {
        cJSON_AddItemToObject(root, "pre_tokenizer", byte_level_obj(false, true, true));
        cJSON_AddItemToObject(root, "post_processor", byte_level_obj(true, false, true));
    } else {
        cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(pre, "type", "Sequence");
        cJSON *arr = cJSON_AddArrayToObject(pre, "pretokenizers");
        cJSON *split = cJSON_CreateObject();
        cJSON_AddStringToObject(split, "type", "Split");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", llama3_pattern);
        cJSON_AddStringToObject(split, "behavior", "Isolated");
        cJSON_AddBoolToObject(split, "invert", false);
        cJSON_AddItemToArray(arr, split);
        cJSON_AddItemToArray(arr, byte_level_obj(false, true, false));
        /* BOS before every sequence, as Llama 3's post-processor does */
        cJSON *post = cJSON_AddObjectToObject(root, "post_processor");
        cJSON_AddStringToObject(post, "type", "Sequence");
        cJSON *procs = cJSON_AddArrayToObject(post, "processors");
        cJSON_AddItemToArray(procs, byte_level_obj(true, false, true));
        cJSON *tp = cJSON_CreateObject();
        cJSON_AddStringToObject(tp, "type", "TemplateProcessing");
        const char *bos = m->special[m->bos];
        cJSON *single = cJSON_AddArrayToObject(tp, "single");
        cJSON_AddItemToArray(single, template_piece("SpecialToken", bos, 0));
        cJSON_AddItemToArray(single, template_piece("Sequence", "A", 0));
        cJSON *pair = cJSON_AddArrayToObject(tp, "pair");
        cJSON_AddItemToArray(pair, template_piece("SpecialToken", bos, 0));
        cJSON_AddItemToArray(pair, template_piece("Sequence", "A", 0));
        cJSON_AddItemToArray(pair, template_piece("SpecialToken", bos, 1));
        cJSON_AddItemToArray(pair, template_piece("Sequence", "B", 1));
        cJSON *sp = cJSON_AddObjectToObject(cJSON_AddObjectToObject(tp, "special_tokens"), bos);
        cJSON_AddStringToObject(sp, "id", bos);
        cJSON_AddItemToObject(sp, "ids", cJSON_CreateIntArray((const int[]){(int)m->n_tokens + m->bos}, 1));
        cJSON *toks = cJSON_AddArrayToObject(sp, "tokens");
        cJSON_AddItemToArray(toks, cJSON_CreateString(bos));
        cJSON_AddItemToArray(procs, tp);
    }
    cJSON_AddItemToObject(root, "decoder", byte_level_obj(true, true, true));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", false);
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON_AddBoolToObject(model, "ignore_merges", false);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    char **bl = calloc((size_t)m->n_tokens, sizeof *bl);
    if (!bl) {
        *oom = true;
        return root;
    }
    for (int64_t i = 0; i < m->n_tokens; i++) {
        if (!(bl[i] = byte_level(map, m->tok[i], m->tok_len[i]))) *oom = true;
        else cJSON_AddNumberToObject(vocab, bl[i], (double)i);
    }
    for (int i = 0; i < m->n_special; i++) cJSON_AddNumberToObject(vocab, m->special[i], (double)(m->n_tokens + i));
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int64_t k = 0; k < m->n_merges && !*oom; k++) {
        cJSON *pr = cJSON_CreateArray();
        cJSON_AddItemToArray(pr, cJSON_CreateString(bl[m->merges[k][0]]));
        cJSON_AddItemToArray(pr, cJSON_CreateString(bl[m->merges[k][1]]));
        cJSON_AddItemToArray(merges, pr);
    }
    for (int64_t i = 0; i < m->n_tokens; i++) free(bl[i]);
    free(bl);
    return root;
}

lmc_status lmc_bpe_to_json(const struct lmc_bpe_model *m, char **tokenizer_json, char **config_json,
                           lmc_err *err) {
    *tokenizer_json = *config_json = NULL;
    struct lmc_tokenizer *map = calloc(1, sizeof *map);
    if (!map) return lmc_err_set(err, LMC_ERR_OOM, "bpe train: out of memory");
    lmc_tok_bytes_to_unicode(map);
    bool oom = false;
    cJSON *root = build_tokenizer(m, map, &oom);
    free(map);
    if (!oom) *tokenizer_json = cJSON_Print(root);
    cJSON_Delete(root);

    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "bos_token", m->special[m->bos]);
    cJSON_AddStringToObject(cfg, "eos_token", m->special[m->eos]);
    if (m->style == LMC_BPE_GPT2) cJSON_AddStringToObject(cfg, "unk_token", m->special[m->eos]);
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", false);
    cJSON_AddNumberToObject(cfg, "model_max_length", m->style == LMC_BPE_GPT2 ? 1024 : 131072);
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    *config_json = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    if (oom || !*tokenizer_json || !*config_json) {
        free(*tokenizer_json);
        free(*config_json);
        *tokenizer_json = *config_json = NULL;
        return lmc_err_set(err, LMC_ERR_OOM, "bpe train: out of memory while writing JSON");
    }
    return LMC_OK;
}

static lmc_status write_text(const char *dir, const char *name, const char *text, lmc_err *err) {
    char path[4096];
    if (!lmc_path_join(path, sizeof path, dir, name))
        return lmc_err_set(err, LMC_ERR_ARG, "%s: path too long", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return lmc_err_set(err, LMC_ERR_IO, "%s: cannot create", path);
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    if (fclose(f) != 0) ok = false;
    if (!ok) return lmc_err_set(err, LMC_ERR_IO, "%s: write failed", path);
    return LMC_OK;
}

lmc_status lmc_bpe_save(const struct lmc_bpe_model *m, const char *dir, lmc_err *err) {
    char *tj, *cj;
    lmc_status st = lmc_bpe_to_json(m, &tj, &cj, err);
    if (st) return st;
    st = write_text(dir, "tokenizer.json", tj, err);
    if (!st) st = write_text(dir, "tokenizer_config.json", cj, err);
    free(tj);
    free(cj);
    return st;
}
