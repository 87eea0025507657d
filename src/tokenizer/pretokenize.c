/* pretokenize.c — the encode pipeline in front of BPE, in Hugging Face
 * order: added tokens are cut out of the raw text (non-normalized ones), the
 * rest is normalized piece by piece (Prepend, Replace, NFC on text NFC leaves
 * unchanged), normalized added tokens are cut out, and each remaining piece
 * runs through the pre-tokenizer stages (regex Split, ByteLevel, Metaspace)
 * recursively, the last stage handing pre-tokens to the BPE model. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

void lmc_tok_bytes_to_unicode(struct lmc_tokenizer *t) {
    /* Printable Latin-1 bytes keep their code point; the others (controls,
     * space, 0x7f-0xa0, soft hyphen) are moved to 256, 257, ... in order. */
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        t->byte_cp[b] = keep ? (uint32_t)b : next++;
    }
    for (int c = 0; c < 324; c++) t->cp_byte[c] = -1;
    for (int b = 0; b < 256; b++) {
        LMC_ASSERT(t->byte_cp[b] < 324);
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
        char tmp[4];
        int l = lmc_tok_utf8_put(tmp, t->byte_cp[b]);
        LMC_ASSERT(l <= 2);
        memcpy(t->byte_utf8[b], tmp, (size_t)l);
        t->byte_utf8_len[b] = (uint8_t)l;
    }
}

bool lmc_tok_is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

lmc_status lmc_tok_regex_compile(pcre2_code **out, const char *pat, size_t len, const char *where,
                                 lmc_err *err) {
    int ec;
    PCRE2_SIZE eoff;
    *out = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ec, &eoff, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return lmc_err_set(err, LMC_ERR_FORMAT, "%s: regex does not compile at offset %zu: %s", where,
                           (size_t)eoff, (const char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back to the interpreter */
    return LMC_OK;
}

/* Growable byte buffer. */
struct buf {
    char *p;
    size_t n, cap;
};

static bool buf_reserve(struct buf *b, size_t extra) {
    if (b->n + extra <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static bool buf_add(struct buf *b, const char *s, size_t n) {
    if (!buf_reserve(b, n + 1)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

/* Code points NFC leaves unchanged whatever surrounds them: canonical
 * combining class 0, NFC_Quick_Check = Yes and never the second half of a
 * canonical composition (checked against the Unicode 14 tables when these
 * ranges were chosen). Text made only of these is its own NFC. */
static bool nfc_stable(uint32_t cp) {
    static const uint32_t r[][2] = {
        {0x0, 0x2ff},       {0x370, 0x373},     {0x376, 0x37d},     {0x384, 0x386},   {0x388, 0x482},
        {0x48a, 0x52f},     {0x5d0, 0x5ea},     {0x620, 0x64a},     {0x2010, 0x2027}, {0x2030, 0x205e},
        {0x20a0, 0x20c0},   {0x2190, 0x21ff},   {0x3000, 0x3029},   {0x3030, 0x303f}, {0x3041, 0x3096},
        {0x309b, 0x30ff},   {0x4e00, 0x9fff},   {0xac00, 0xd7a3},   {0xff01, 0xff60}, {0x1f300, 0x1faff},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (cp >= r[i][0] && cp <= r[i][1]) return true;
    return false;
}

lmc_status lmc_tok_normalize(const struct lmc_tokenizer *t, const char *s, size_t n, char **out,
                             size_t *out_len, lmc_err *err) {
    struct buf cur = {0}, nxt = {0};
    if (!buf_add(&cur, s, n)) goto oom;
    for (int k = 0; k < t->n_norm; k++) {
        const struct tok_norm *nm = &t->norm[k];
        nxt.n = 0;
        switch (nm->kind) {
        case TOK_NORM_PREPEND:
            if (cur.n > 0 && (!buf_add(&nxt, nm->rep, nm->rep_len) || !buf_add(&nxt, cur.p, cur.n))) goto oom;
            break;
        case TOK_NORM_REPLACE:
            for (size_t i = 0; i < cur.n;) {
                if (i + nm->pat_len <= cur.n && memcmp(cur.p + i, nm->pat, nm->pat_len) == 0) {
                    if (!buf_add(&nxt, nm->rep, nm->rep_len)) goto oom;
                    i += nm->pat_len;
                } else {
                    if (!buf_add(&nxt, cur.p + i, 1)) goto oom;
                    i++;
                }
            }
            break;
        case TOK_NORM_NFC:
            for (size_t i = 0; i < cur.n;) {
                uint32_t cp;
                i += (size_t)lmc_tok_utf8_next(cur.p + i, cur.n - i, &cp);
                if (!nfc_stable(cp)) {
                    free(cur.p);
                    free(nxt.p);
                    return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                                       "tokenizer: NFC normalizer: text with U+%04X (which NFC may "
                                       "change) is not supported; only text NFC leaves unchanged is",
                                       (unsigned)cp);
                }
            }
            if (!buf_add(&nxt, cur.p, cur.n)) goto oom;
            break;
        }
        struct buf tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    free(nxt.p);
    if (!cur.p && !buf_add(&cur, "", 0)) goto oom;
    *out = cur.p;
    *out_len = cur.n;
    return LMC_OK;
oom:
    free(cur.p);
    free(nxt.p);
    return lmc_err_set(err, LMC_ERR_OOM, "tokenizer: out of memory while normalizing");
}

/* ---- encoding context ---- */

struct enc {
    const struct lmc_tokenizer *t;
    struct tok_ids *out;
    struct tok_bpe_scratch bpe;
    struct buf a[TOK_MAX_STAGES], b[TOK_MAX_STAGES];
    pcre2_match_data *md[TOK_MAX_STAGES];
    lmc_err *err;
};

static lmc_status enc_oom(struct enc *e) {
    return lmc_err_set(e->err, LMC_ERR_OOM, "tokenizer: out of memory while encoding");
}

static lmc_status pre_apply(struct enc *e, int stage, const char *s, size_t n, bool at_start);

/* Splits s with re (Isolated: matches and the gaps between them are both
 * pieces) and hands each piece to stage next; if map_bytes, each piece is
 * first mapped through the byte-level table into buffer mb. */
static lmc_status split_regex(struct enc *e, int stage, pcre2_code *re, const char *s, size_t n,
                              bool at_start, bool map_bytes, struct buf *mb);

static lmc_status emit(struct enc *e, int stage, const char *s, size_t n, bool at_start, bool map_bytes,
                       struct buf *mb) {
    if (n == 0) return LMC_OK;
    if (!map_bytes) return pre_apply(e, stage + 1, s, n, at_start);
    const struct lmc_tokenizer *t = e->t;
    mb->n = 0;
    if (!buf_reserve(mb, 2 * n + 1)) return enc_oom(e);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        memcpy(mb->p + mb->n, t->byte_utf8[c], t->byte_utf8_len[c]);
        mb->n += t->byte_utf8_len[c];
    }
    return pre_apply(e, stage + 1, mb->p, mb->n, at_start);
}

static lmc_status split_regex(struct enc *e, int stage, pcre2_code *re, const char *s, size_t n,
                              bool at_start, bool map_bytes, struct buf *mb) {
    if (!e->md[stage]) {
        e->md[stage] = pcre2_match_data_create_from_pattern(re, NULL);
        if (!e->md[stage]) return enc_oom(e);
    }
    pcre2_match_data *md = e->md[stage];
    size_t off = 0, last = 0;
    lmc_status st;
    while (off < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lmc_err_set(e->err, LMC_ERR_ARG, "tokenizer: split regex failed on the input: %s",
                               (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        LMC_ASSERT(ms <= me && me <= n && ms >= off);
        if (me == ms) { /* empty match: no piece; step one character */
            uint32_t cp;
            off = ms + (size_t)lmc_tok_utf8_next(s + ms, n - ms, &cp);
            continue;
        }
        if (ms > last && (st = emit(e, stage, s + last, ms - last, at_start && last == 0, map_bytes, mb)))
            return st;
        if ((st = emit(e, stage, s + ms, me - ms, at_start && ms == 0, map_bytes, mb))) return st;
        last = off = me;
    }
    if (last < n) return emit(e, stage, s + last, n - last, at_start && last == 0, map_bytes, mb);
    return LMC_OK;
}

static lmc_status pre_apply(struct enc *e, int stage, const char *s, size_t n, bool at_start) {
    const struct lmc_tokenizer *t = e->t;
    if (n == 0) return LMC_OK;
    if (stage == t->n_pre) {
        if (!lmc_tok_bpe_word(t, s, n, &e->bpe, e->out)) return enc_oom(e);
        return LMC_OK;
    }
    const struct tok_pre *p = &t->pre[stage];
    struct buf *a = &e->a[stage], *b = &e->b[stage];
    switch (p->kind) {
    case TOK_PRE_SPLIT:
        return split_regex(e, stage, p->re, s, n, at_start, false, NULL);
    case TOK_PRE_BYTELEVEL:
        if (p->add_prefix_space && s[0] != ' ') {
            a->n = 0;
            if (!buf_add(a, " ", 1) || !buf_add(a, s, n)) return enc_oom(e);
            s = a->p;
            n = a->n;
        }
        if (p->re) return split_regex(e, stage, p->re, s, n, at_start, true, b);
        return emit(e, stage, s, n, at_start, true, b);
    case TOK_PRE_METASPACE: {
        a->n = 0;
        bool prepend = (p->scheme == TOK_PREPEND_ALWAYS || (p->scheme == TOK_PREPEND_FIRST && at_start));
        bool starts_repl = n >= p->repl_len && memcmp(s, p->repl, p->repl_len) == 0;
        if (!starts_repl && s[0] == ' ') starts_repl = true; /* the space becomes the replacement */
        if (prepend && !starts_repl && !buf_add(a, p->repl, p->repl_len)) return enc_oom(e);
        if (!buf_reserve(a, n * p->repl_len + 1)) return enc_oom(e);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') {
                if (!buf_add(a, p->repl, p->repl_len)) return enc_oom(e);
            } else if (!buf_add(a, s + i, 1)) {
                return enc_oom(e);
            }
        }
        if (!p->split) return pre_apply(e, stage + 1, a->p, a->n, at_start);
        /* MergedWithNext: every replacement char starts a new piece. */
        size_t last = 0;
        lmc_status st;
        for (size_t i = 1; i + p->repl_len <= a->n; i++) {
            if (memcmp(a->p + i, p->repl, p->repl_len) == 0) {
                if ((st = pre_apply(e, stage + 1, a->p + last, i - last, at_start && last == 0))) return st;
                last = i;
                i += p->repl_len - 1;
            }
        }
        return pre_apply(e, stage + 1, a->p + last, a->n - last, at_start && last == 0);
    }
    }
    return LMC_OK;
}

/* ---- added tokens ---- */

static bool is_word_char(uint32_t cp) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_' ||
           (cp >= 0x80 && !lmc_tok_is_space(cp));
}

/* Code point ending at s[end) (end > 0). */
static uint32_t cp_before(const char *s, size_t end, size_t *start) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80 && end - i < 4) i--;
    uint32_t cp;
    lmc_tok_utf8_next(s + i, end - i, &cp);
    *start = i;
    return cp;
}

/* Finds the leftmost-longest added token in s[from, n) usable at its place;
 * returns its added[] index with the span [*ms, *me) grown by lstrip/rstrip
 * (never below floor), or -1. */
static int32_t find_added(const struct lmc_tokenizer *t, const int32_t *order, const uint32_t *start,
                          bool norm, const char *s, size_t n, size_t from, size_t floor, size_t *ms,
                          size_t *me) {
    for (size_t i = from; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        for (uint32_t k = start[c]; k < start[c + 1]; k++) {
            const struct tok_added *ad = &t->added[order[k]];
            const char *txt = norm ? ad->norm : ad->content;
            size_t len = norm ? ad->norm_len : ad->len;
            if (len == 0 || i + len > n || memcmp(s + i, txt, len) != 0) continue;
            size_t a = i, b = i + len;
            if (ad->single_word) {
                size_t q;
                uint32_t cp;
                if (a > 0 && is_word_char(cp_before(s, a, &q))) continue;
                if (b < n) {
                    lmc_tok_utf8_next(s + b, n - b, &cp);
                    if (is_word_char(cp)) continue;
                }
            }
            if (ad->lstrip) {
                while (a > floor) {
                    size_t q;
                    if (!lmc_tok_is_space(cp_before(s, a, &q))) break;
                    a = q;
                }
            }
            if (ad->rstrip) {
                while (b < n) {
                    uint32_t cp;
                    int l = lmc_tok_utf8_next(s + b, n - b, &cp);
                    if (!lmc_tok_is_space(cp)) break;
                    b += (size_t)l;
                }
            }
            *ms = a;
            *me = b;
            return order[k];
        }
    }
    return -1;
}

static lmc_status encode_normalized(struct enc *e, const char *s, size_t n, bool at_start) {
    const struct lmc_tokenizer *t = e->t;
    size_t last = 0, ms, me;
    lmc_status st;
    while (t->norm_start[256] > 0 && last < n) {
        int32_t k = find_added(t, t->norm_order, t->norm_start, true, s, n, last, last, &ms, &me);
        if (k < 0) break;
        if (ms > last && (st = pre_apply(e, 0, s + last, ms - last, at_start && last == 0))) return st;
        if (!lmc_tok_ids_push(e->out, t->added[k].id)) return enc_oom(e);
        last = me;
    }
    return pre_apply(e, 0, s + last, n - last, at_start && last == 0);
}

static lmc_status encode_segment(struct enc *e, const char *s, size_t n, bool at_start) {
    if (n == 0) return LMC_OK;
    if (e->t->n_norm == 0) return encode_normalized(e, s, n, at_start);
    char *ns;
    size_t nn;
    lmc_status st = lmc_tok_normalize(e->t, s, n, &ns, &nn, e->err);
    if (st) return st;
    st = encode_normalized(e, ns, nn, at_start);
    free(ns);
    return st;
}

lmc_status lmc_tok_encode_text(const struct lmc_tokenizer *t, const char *text, size_t len,
                               struct tok_ids *out, lmc_err *err) {
    struct enc e = {.t = t, .out = out, .err = err};
    size_t last = 0, ms, me;
    lmc_status st = LMC_OK;
    while (t->raw_start[256] > 0 && last < len) {
        int32_t k = find_added(t, t->raw_order, t->raw_start, false, text, len, last, last, &ms, &me);
        if (k < 0) break;
        if (ms > last && (st = encode_segment(&e, text + last, ms - last, last == 0))) goto done;
        if (!lmc_tok_ids_push(out, t->added[k].id)) {
            st = enc_oom(&e);
            goto done;
        }
        last = me;
    }
    st = encode_segment(&e, text + last, len - last, last == 0);
done:
    lmc_tok_bpe_scratch_free(&e.bpe);
    for (int i = 0; i < TOK_MAX_STAGES; i++) {
        free(e.a[i].p);
        free(e.b[i].p);
        pcre2_match_data_free(e.md[i]);
    }
    return st;
}
