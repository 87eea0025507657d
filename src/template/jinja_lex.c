/* jinja_lex.c — splits a template into tokens the way Jinja's lexer does
 * with transformers' settings: newlines normalised to \n, one trailing
 * newline dropped, {# #} comments removed, {% raw %} kept verbatim, "-" and
 * "+" whitespace control, trim_blocks (the newline after a block or comment
 * tag) and lstrip_blocks (spaces and tabs before a block or comment tag at
 * the start of a line). Inside tags: names, strings (Python escapes),
 * integers, floats and operators; end tags inside open brackets are
 * operators, as in Jinja. */
#include "template/jinja_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lexer {
    struct jarena *a;
    const char *s;
    size_t n, pos;
    int line;
    struct jtoks *out;
    lmc_err *err;
};

static lmc_status lex_err(struct lexer *L, const char *msg) {
    return lmc_err_set(L->err, LMC_ERR_FORMAT, "TemplateSyntaxError: %s (template line %d)", msg, L->line);
}

static lmc_status push(struct lexer *L, int kind, const char *s, size_t n) {
    struct jtoks *t = L->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct jtok *v = ja_alloc(L->a, cap * sizeof *v);
        if (!v) return lmc_err_set(L->err, LMC_ERR_OOM, "template too large");
        if (t->n) memcpy(v, t->v, t->n * sizeof *v);
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n++] = (struct jtok){.kind = kind, .line = L->line, .s = s, .n = n};
    return LMC_OK;
}

static void count_lines(struct lexer *L, size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        if (L->s[i] == '\n') L->line++;
}

/* length of the whitespace (Python \s) at s[i..] */
static size_t ws_run(const char *s, size_t n, size_t i) {
    size_t j = i;
    while (j < n) {
        uint32_t cp;
        int l = ju_next(s + j, n - j, &cp);
        if (!ju_isspace(cp)) break;
        j += (size_t)l;
    }
    return j - i;
}

/* text with trailing whitespace removed (str.rstrip()) */
static size_t rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t q = n - 1;
        while (q > 0 && ((unsigned char)s[q] & 0xc0) == 0x80) q--;
        uint32_t cp;
        ju_next(s + q, n - q, &cp);
        if (!ju_isspace(cp)) break;
        n = q;
    }
    return n;
}

static bool all_space(const char *s, size_t n) { return n > 0 && ws_run(s, n, 0) == n; }

/* Python unicode-escape decoding of a string literal body */
static lmc_status unescape(struct lexer *L, const char *s, size_t n, const char **out, size_t *outn) {
    char *p = ja_alloc(L->a, n + 1);
    if (!p) return lmc_err_set(L->err, LMC_ERR_OOM, "template too large");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            p[k++] = s[i];
            continue;
        }
        char e = s[++i];
        uint32_t cp = 0;
        int hex = 0;
        switch (e) {
        case 'n': p[k++] = '\n'; break;
        case 't': p[k++] = '\t'; break;
        case 'r': p[k++] = '\r'; break;
        case '\\': p[k++] = '\\'; break;
        case '\'': p[k++] = '\''; break;
        case '"': p[k++] = '"'; break;
        case 'a': p[k++] = '\a'; break;
        case 'b': p[k++] = '\b'; break;
        case 'f': p[k++] = '\f'; break;
        case 'v': p[k++] = '\v'; break;
        case '\n': break;
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                int d = 0;
                while (d < 3 && i < n && s[i] >= '0' && s[i] <= '7') cp = cp * 8 + (uint32_t)(s[i++] - '0'), d++;
                i--;
                k += (size_t)ju_put(p + k, cp);
            } else {
                p[k++] = '\\';
                p[k++] = e;
            }
        }
        if (hex) {
            if (i + (size_t)hex >= n) return lex_err(L, "truncated \\x, \\u or \\U escape in a string");
            for (int d = 0; d < hex; d++) {
                char h = s[i + 1 + (size_t)d];
                int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (v < 0) return lex_err(L, "bad \\x, \\u or \\U escape in a string");
                cp = cp * 16 + (uint32_t)v;
            }
            if (cp > 0x10ffff) return lex_err(L, "\\U escape out of range");
            i += (size_t)hex;
            k += (size_t)ju_put(p + k, cp);
        }
    }
    p[k] = 0;
    *out = p;
    *outn = k;
    return LMC_OK;
}

static bool is_name0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* tokens inside a tag until its end; returns with L->pos after the end tag */
static lmc_status lex_tag(struct lexer *L, bool block, bool *line_starting) {
    static const char *ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=",
                                "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
    const char *s = L->s;
    size_t n = L->n;
    int depth = 0;
    lmc_status st;
    for (;;) {
        size_t w = ws_run(s, n, L->pos);
        count_lines(L, L->pos, L->pos + w);
        L->pos += w;
        if (L->pos >= n) return lex_err(L, block ? "unexpected end of template, expected '%}'" :
                                                   "unexpected end of template, expected '}}'");
        size_t p = L->pos;
        char c = s[p];
        const char *end = block ? "%}" : "}}";
        if (depth == 0) {
            size_t m = 0;
            int mod = 0;
            if ((c == '-' || c == '+') && p + 2 < n + 0 && p + 3 <= n && memcmp(s + p + 1, end, 2) == 0) {
                m = 3;
                mod = c;
            } else if (p + 2 <= n && memcmp(s + p, end, 2) == 0) m = 2;
            if (m) {
                if ((st = push(L, block ? JT_BLOCK_END : JT_VAR_END, NULL, 0))) return st;
                L->pos = p + m;
                if (mod == '-') {
                    size_t w2 = ws_run(s, n, L->pos);
                    count_lines(L, L->pos, L->pos + w2);
                    L->pos += w2;
                    *line_starting = w2 > 0 && s[L->pos - 1] == '\n';
                } else if (mod == 0 && block && L->pos < n && s[L->pos] == '\n') {
                    L->pos++;
                    L->line++;
                    *line_starting = true;
                } else *line_starting = false;
                return LMC_OK;
            }
        }
        if (is_name0(c)) {
            size_t q = p;
            while (q < n && (is_name0(s[q]) || is_digit(s[q]))) q++;
            if ((st = push(L, JT_NAME, s + p, q - p))) return st;
            L->pos = q;
        } else if (c == '\'' || c == '"') {
            size_t q = p + 1;
            while (q < n && s[q] != c) q += s[q] == '\\' ? 2 : 1;
            if (q >= n) return lex_err(L, "unterminated string");
            const char *u = NULL;
            size_t un = 0;
            if ((st = unescape(L, s + p + 1, q - p - 1, &u, &un))) return st;
            if ((st = push(L, JT_STRING, u, un))) return st;
            count_lines(L, p, q);
            L->pos = q + 1;
        } else if (is_digit(c)) {
            size_t q = p;
            bool isf = false;
            while (q < n && (is_digit(s[q]) || s[q] == '_')) q++;
            if (q + 1 < n && s[q] == '.' && is_digit(s[q + 1])) {
                isf = true;
                q++;
                while (q < n && (is_digit(s[q]) || s[q] == '_')) q++;
            }
            if (q < n && (s[q] == 'e' || s[q] == 'E')) {
                size_t r = q + 1;
                if (r < n && (s[r] == '+' || s[r] == '-')) r++;
                if (r < n && is_digit(s[r])) {
                    isf = true;
                    q = r;
                    while (q < n && is_digit(s[q])) q++;
                }
            }
            char buf[64];
            size_t k = 0;
            for (size_t i = p; i < q && k < sizeof buf - 1; i++)
                if (s[i] != '_') buf[k++] = s[i];
            buf[k] = 0;
            if ((st = push(L, isf ? JT_FLOAT : JT_INT, s + p, q - p))) return st;
            errno = 0;
            if (isf) L->out->v[L->out->n - 1].f = strtod(buf, NULL);
            else {
                L->out->v[L->out->n - 1].i = strtoll(buf, NULL, 10);
                if (errno) return lex_err(L, "integer literal too large");
            }
            L->pos = q;
        } else {
            size_t k;
            for (k = 0; k < sizeof ops / sizeof *ops; k++) {
                size_t ol = strlen(ops[k]);
                if (p + ol <= n && memcmp(s + p, ops[k], ol) == 0) break;
            }
            if (k == sizeof ops / sizeof *ops) {
                char msg[64];
                snprintf(msg, sizeof msg, "unexpected char '%c'", c);
                return lex_err(L, msg);
            }
            size_t ol = strlen(ops[k]);
            if (c == '(' || c == '[' || c == '{') depth++;
            else if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
            if ((st = push(L, JT_OP, ops[k], ol))) return st;
            L->pos = p + ol;
        }
    }
}

lmc_status jinja_lex(struct jarena *a, const char *src, size_t n, struct jtoks *out, lmc_err *err) {
    /* newlines normalised; the one trailing newline dropped (keep_trailing_newline=False) */
    char *s = ja_alloc(a, n + 1);
    if (!s) return lmc_err_set(err, LMC_ERR_OOM, "template too large");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else s[k++] = src[i];
    }
    if (k > 0 && s[k - 1] == '\n') k--;
    s[k] = 0;
    struct lexer L = {a, s, k, 0, 1, out, err};
    bool line_starting = true;
    lmc_status st;
    while (L.pos < L.n) {
        /* the next tag */
        size_t t = L.pos;
        const char *tag = NULL;
        while ((tag = memchr(s + t, '{', L.n - t))) {
            t = (size_t)(tag - s);
            if (t + 1 < L.n && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')) break;
            t++;
            tag = NULL;
        }
        size_t text_end = tag ? t : L.n;
        size_t text_len = text_end - L.pos;
        char kind = tag ? s[t + 1] : 0;
        char mod = tag && t + 2 < L.n && (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        if (tag) {
            if (mod == '-') text_len = rstrip_len(s + L.pos, text_len);
            else if (mod != '+' && kind != '{') {
                size_t l_pos = text_len;
                while (l_pos > 0 && s[L.pos + l_pos - 1] != '\n') l_pos--;
                if ((l_pos > 0 || line_starting) && all_space(s + L.pos + l_pos, text_len - l_pos))
                    text_len = l_pos;
            }
        }
        if (text_len && (st = push(&L, JT_TEXT, s + L.pos, text_len))) return st;
        count_lines(&L, L.pos, text_end);
        if (!tag) {
            L.pos = L.n;
            break;
        }
        size_t body = t + 2 + (mod ? 1 : 0);
        if (kind == '#') {
            const char *e = NULL;
            for (size_t q = body; q + 1 < L.n; q++)
                if (s[q] == '#' && s[q + 1] == '}') {
                    e = s + q;
                    break;
                }
            if (!e) return lex_err(&L, "missing end of comment tag");
            size_t q = (size_t)(e - s);
            char emod = q > body && (s[q - 1] == '-' || s[q - 1] == '+') ? s[q - 1] : 0;
            count_lines(&L, t, q + 2);
            L.pos = q + 2;
            if (emod == '-') {
                size_t w = ws_run(s, L.n, L.pos);
                count_lines(&L, L.pos, L.pos + w);
                L.pos += w;
                line_starting = w > 0 && s[L.pos - 1] == '\n';
            } else if (emod == 0 && L.pos < L.n && s[L.pos] == '\n') {
                L.pos++;
                L.line++;
                line_starting = true;
            } else line_starting = false;
            continue;
        }
        if (kind == '%') {
            /* {% raw %} ... {% endraw %} */
            size_t q = body + ws_run(s, L.n, body);
            if (q + 3 <= L.n && memcmp(s + q, "raw", 3) == 0 && !(q + 3 < L.n && (is_name0(s[q + 3]) || is_digit(s[q + 3])))) {
                size_t r = q + 3 + ws_run(s, L.n, q + 3);
                char rmod = 0;
                if (r < L.n && (s[r] == '-' || s[r] == '+')) rmod = s[r++];
                if (r + 2 <= L.n && memcmp(s + r, "%}", 2) == 0) {
                    size_t cstart = r + 2;
                    if (rmod == '-') cstart += ws_run(s, L.n, cstart);
                    else if (rmod == 0 && cstart < L.n && s[cstart] == '\n') cstart++;
                    /* find {%[-+]? endraw [-+]?%} */
                    for (size_t x = cstart; x + 1 < L.n; x++) {
                        if (s[x] != '{' || s[x + 1] != '%') continue;
                        size_t y = x + 2;
                        char m1 = 0;
                        if (y < L.n && (s[y] == '-' || s[y] == '+')) m1 = s[y++];
                        y += ws_run(s, L.n, y);
                        if (!(y + 6 <= L.n && memcmp(s + y, "endraw", 6) == 0)) continue;
                        y += 6;
                        y += ws_run(s, L.n, y);
                        char m2 = 0;
                        if (y < L.n && (s[y] == '-' || s[y] == '+')) m2 = s[y++];
                        if (!(y + 2 <= L.n && memcmp(s + y, "%}", 2) == 0)) continue;
                        size_t clen = x - cstart;
                        if (m1 == '-') clen = rstrip_len(s + cstart, clen);
                        if (clen && (st = push(&L, JT_TEXT, s + cstart, clen))) return st;
                        count_lines(&L, t, y + 2);
                        L.pos = y + 2;
                        if (m2 == '-') L.pos += ws_run(s, L.n, L.pos);
                        else if (m2 == 0 && L.pos < L.n && s[L.pos] == '\n') L.pos++, L.line++;
                        line_starting = s[L.pos - 1] == '\n';
                        goto next;
                    }
                    return lex_err(&L, "missing {% endraw %}");
                }
            }
        }
        if ((st = push(&L, kind == '%' ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, NULL, 0))) return st;
        L.pos = body;
        if ((st = lex_tag(&L, kind == '%', &line_starting))) return st;
    next:;
    }
    return push(&L, JT_EOF, NULL, 0);
}
