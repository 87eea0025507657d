/* decode.c — ids back to text: the token strings run through the decoder
 * chain (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace), each step
 * mapping a list of strings to a list of strings as Hugging Face's
 * decode_chain does, then are joined. Byte-level and byte-fallback bytes are
 * kept raw (no U+FFFD substitution) so that partial UTF-8 reaches streaming
 * callers intact. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* A list of byte strings: string i is data[off[i], off[i+1]). */
struct tlist {
    char *data;
    size_t len, cap;
    size_t *off;
    size_t n, ncap;
};

static void tl_free(struct tlist *l) {
    free(l->data);
    free(l->off);
    memset(l, 0, sizeof *l);
}

static bool tl_bytes(struct tlist *l, const char *s, size_t n) {
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 256;
        while (cap < l->len + n + 1) cap *= 2;
        char *p = realloc(l->data, cap);
        if (!p) return false;
        l->data = p;
        l->cap = cap;
    }
    if (n) memcpy(l->data + l->len, s, n);
    l->len += n;
    l->data[l->len] = 0;
    return true;
}

/* Closes the current string (everything appended since the last close). */
static bool tl_close(struct tlist *l) {
    if (l->n + 2 > l->ncap) {
        size_t cap = l->ncap ? l->ncap * 2 : 64;
        size_t *p = realloc(l->off, cap * sizeof *p);
        if (!p) return false;
        l->off = p;
        l->ncap = cap;
    }
    if (l->n == 0) l->off[0] = 0;
    l->off[++l->n] = l->len;
    return true;
}

static const char *tl_str(const struct tlist *l, size_t i, size_t *n) {
    *n = l->off[i + 1] - l->off[i];
    return l->data + l->off[i];
}

static bool replace_into(struct tlist *o, const char *s, size_t n, const char *pat, size_t pl,
                         const char *rep, size_t rl) {
    for (size_t i = 0; i < n;) {
        if (pl > 0 && i + pl <= n && memcmp(s + i, pat, pl) == 0) {
            if (!tl_bytes(o, rep, rl)) return false;
            i += pl;
        } else {
            if (!tl_bytes(o, s + i, 1)) return false;
            i++;
        }
    }
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xAB>" -> 0xAB, else -1. */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static bool dec_step(const struct lmc_tokenizer *t, const struct tok_dec *d, const struct tlist *in,
                     struct tlist *o) {
    size_t n;
    const char *s;
    switch (d->kind) {
    case TOK_DEC_BYTELEVEL:
        for (size_t i = 0; i < in->n; i++) {
            s = tl_str(in, i, &n);
            /* A token maps byte by byte only if every char is in the table. */
            bool all = true;
            for (size_t j = 0; j < n && all;) {
                uint32_t cp;
                j += (size_t)lmc_tok_utf8_next(s + j, n - j, &cp);
                all = cp < 324 && t->cp_byte[cp] >= 0;
            }
            if (!all) {
                if (!tl_bytes(o, s, n)) return false;
                continue;
            }
            for (size_t j = 0; j < n;) {
                uint32_t cp;
                j += (size_t)lmc_tok_utf8_next(s + j, n - j, &cp);
                char b = (char)t->cp_byte[cp];
                if (!tl_bytes(o, &b, 1)) return false;
            }
        }
        return tl_close(o);
    case TOK_DEC_FUSE:
        for (size_t i = 0; i < in->n; i++) {
            s = tl_str(in, i, &n);
            if (!tl_bytes(o, s, n)) return false;
        }
        return tl_close(o);
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            s = tl_str(in, i, &n);
            if (!replace_into(o, s, n, d->pat, d->pat_len, d->rep, d->rep_len) || !tl_close(o)) return false;
        }
        return true;
    case TOK_DEC_BYTEFALLBACK: {
        bool pending = false; /* an open run of byte tokens */
        for (size_t i = 0; i < in->n; i++) {
            s = tl_str(in, i, &n);
            int b = byte_token(s, n);
            if (b >= 0) {
                char c = (char)b;
                if (!tl_bytes(o, &c, 1)) return false;
                pending = true;
                continue;
            }
            if (pending && !tl_close(o)) return false;
            pending = false;
            if (!tl_bytes(o, s, n) || !tl_close(o)) return false;
        }
        return !pending || tl_close(o);
    }
    case TOK_DEC_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            s = tl_str(in, i, &n);
            size_t a = 0, b = n;
            for (int64_t k = 0; k < d->start && a + d->ch_len <= b && memcmp(s + a, d->ch, d->ch_len) == 0; k++)
                a += d->ch_len;
            for (int64_t k = 0; k < d->stop && b >= a + d->ch_len && memcmp(s + b - d->ch_len, d->ch, d->ch_len) == 0;
                 k++)
                b -= d->ch_len;
            if (!tl_bytes(o, s + a, b - a) || !tl_close(o)) return false;
        }
        return true;
    case TOK_DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            s = tl_str(in, i, &n);
            /* HF drops every replacement char of the first token when a prefix
             * was prepended at encode time, and maps the rest to spaces. */
            const char *rep = (i == 0 && d->prepend) ? "" : " ";
            if (!replace_into(o, s, n, d->ch, d->ch_len, rep, strlen(rep)) || !tl_close(o)) return false;
        }
        return true;
    }
    return false;
}

static const char *cleanup_pairs[][2] = {
    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
    {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
};

/* transformers' clean_up_tokenization: applied in place, left to right per pair. */
static void cleanup_spaces(char *s, size_t *len) {
    for (size_t p = 0; p < sizeof cleanup_pairs / sizeof cleanup_pairs[0]; p++) {
        const char *from = cleanup_pairs[p][0], *to = cleanup_pairs[p][1];
        size_t fl = strlen(from), tl = strlen(to), w = 0;
        for (size_t r = 0; r < *len;) {
            if (r + fl <= *len && memcmp(s + r, from, fl) == 0) {
                memmove(s + w, to, tl);
                w += tl;
                r += fl;
            } else {
                s[w++] = s[r++];
            }
        }
        *len = w;
        s[w] = 0;
    }
}

lmc_status lmc_tokenizer_decode(const struct lmc_tokenizer *t, const int32_t *ids, int64_t n, char **text,
                                size_t *len, lmc_err *err) {
    *text = NULL;
    if (len) *len = 0;
    if (n < 0 || (n > 0 && !ids)) return lmc_err_set(err, LMC_ERR_ARG, "tokenizer decode: %lld ids given", (long long)n);
    struct tlist a = {0}, b = {0};
    int64_t n_out = 0; /* tokens that produced a string */
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0) {
            tl_free(&a);
            return lmc_err_set(err, LMC_ERR_ARG, "tokenizer decode: id %d at position %lld is negative", id,
                               (long long)i);
        }
        /* An id the tokenizer has no token for (a model whose embedding has
         * more rows than the vocabulary: Qwen2, padded GPT-2) decodes as no
         * text, as Hugging Face's decode skips ids it cannot map. */
        if (id >= t->n_ids) continue;
        const char *s;
        size_t sl;
        if (t->added_of[id] >= 0) {
            /* HF decodes a normalized added token as its normalized form */
            const struct tok_added *ad = &t->added[t->added_of[id]];
            s = ad->normalized ? ad->norm : ad->content;
            sl = ad->normalized ? ad->norm_len : ad->len;
        } else if (t->tok[id]) {
            s = t->tok[id];
            sl = t->tok_len[id];
        } else {
            continue; /* a hole in the vocabulary: no text, as above */
        }
        if (!t->has_decoder && n_out > 0 && !tl_bytes(&a, " ", 1)) goto oom;
        n_out++;
        if (!tl_bytes(&a, s, sl)) goto oom;
        if (t->has_decoder && !tl_close(&a)) goto oom;
    }
    for (int k = 0; k < t->n_dec && a.n > 0; k++) {
        b.len = b.n = 0;
        if (!dec_step(t, &t->dec[k], &a, &b)) goto oom;
        struct tlist tmp = a;
        a = b;
        b = tmp;
    }
    tl_free(&b);
    if (!a.data && !tl_bytes(&a, "", 0)) goto oom;
    /* The strings of the list are contiguous: joining them is the buffer. */
    size_t total = a.len;
    if (t->cleanup_spaces) cleanup_spaces(a.data, &total);
    free(a.off);
    *text = a.data;
    if (len) *len = total;
    return LMC_OK;
oom:
    tl_free(&a);
    tl_free(&b);
    return lmc_err_set(err, LMC_ERR_OOM, "tokenizer decode: out of memory");
}
