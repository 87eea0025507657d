/* grammar_regex.c — a JSON Schema "pattern" (an ECMA-262 regular
 * expression, the common subset) compiled into grammar rules for a JSON
 * string whose value matches it: literals, `.`, classes `[a-z0-9_-]` and
 * `[^...]`, `\d \w \s \D \W \S`, escapes (`\n \t \r \f \v \uXXXX` and
 * escaped punctuation), groups `( )` and `(?: )`, alternation `|`,
 * quantifiers `? * + {m} {m,} {m,n}` (lazy `?` suffixes accepted: the
 * language is the same), and anchors `^` `$` at the ends. As JSON Schema
 * says, a pattern without `^` (or `$`) may match anywhere: any text may
 * come before (after) it. Characters the pattern matches are written as
 * JSON wants them (`"` and `\` escaped, control characters as `\n` or
 * `\u00XX`); anything else (backreferences, lookaround, named groups,
 * `\b`, non-ASCII in a class) is an error naming it. */
#include "infer/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RX_MAX_REPEAT 256    /* largest bound in {m,n} */
#define RX_MAX_RULES 20000   /* rules one pattern may create */
#define RX_MAX_DEPTH 64      /* nested groups */
#define RX_MAX_SEQ 1024      /* atoms in one alternative */
#define RX_MAX_LEN 256       /* largest maxLength (or minLength) taken with a pattern */
#define RX_MAX_WORK 50000000 /* length-pair steps of all length-set concatenations */

struct rx {
    struct lmc_grammar *g;
    const char *p;
    size_t n, i;
    lmc_err *err;
    bool failed;
    int depth, rules;
    int top_alts;            /* alternatives at the top level */
    /* length mode (minLength/maxLength with the pattern): each expression
     * is a "length set", L + 1 rules where rule k holds its strings of
     * exactly k characters (-1: none); with sat, k = L means L or more */
    bool lenmode, sat;
    int L;
    int *ls;                 /* the length sets, L + 1 rules each */
    size_t n_ls, cap_ls;
    int64_t work;            /* length-pair steps so far */
};

/* a set of characters: ASCII members as bits, and whether every non-ASCII character is in */
struct cset { uint8_t bits[16]; bool nonascii; };

static int rx_fail(struct rx *x, const char *what) {
    if (!x->failed)
        lmc_err_set(x->err, LMC_ERR_UNSUPPORTED, "json schema: pattern \"%.*s\": %s (at offset %zu)",
                    (int)(x->n < 80 ? x->n : 80), x->p, what, x->i); /* p is not NUL-terminated */
    x->failed = true;
    return -1;
}

static int rx_rule(struct rx *x, const char *name) {
    if (x->failed) return -1;
    if (++x->rules > RX_MAX_RULES) return rx_fail(x, "too large (more than 20000 grammar rules)");
    int r = lmc_grammar_rule(x->g, name);
    if (r < 0) x->failed = true;
    return r;
}

static void cs_add(struct cset *s, unsigned c) { s->bits[c >> 3] |= (uint8_t)(1u << (c & 7)); }
static bool cs_has(const struct cset *s, unsigned c) { return s->bits[c >> 3] >> (c & 7) & 1; }
static void cs_range(struct cset *s, unsigned lo, unsigned hi) {
    for (unsigned c = lo; c <= hi && c < 128; c++) cs_add(s, c);
}
static void cs_negate(struct cset *s) {
    for (int i = 0; i < 16; i++) s->bits[i] = (uint8_t)~s->bits[i];
    s->nonascii = !s->nonascii;
}
static void cs_union(struct cset *a, const struct cset *b) {
    for (int i = 0; i < 16; i++) a->bits[i] |= b->bits[i];
    a->nonascii |= b->nonascii;
}

/* \d \w \s and their negations; false if k is none of them */
static bool cs_class(char k, struct cset *s) {
    memset(s, 0, sizeof *s);
    char l = (char)(k | 0x20);
    if (l == 'd') cs_range(s, '0', '9');
    else if (l == 'w') {
        cs_range(s, '0', '9');
        cs_range(s, 'a', 'z');
        cs_range(s, 'A', 'Z');
        cs_add(s, '_');
    } else if (l == 's') {
        cs_add(s, ' ');
        cs_range(s, '\t', '\r'); /* \t \n \v \f \r */
    } else
        return false;
    if (k != l) cs_negate(s); /* \D \W \S */
    return true;
}

static void alt_lit(struct rx *x, int r, const char *s) {
    lmc_grammar_alt_begin(x->g, r);
    lmc_grammar_add_literal(x->g, s, strlen(s));
    lmc_grammar_alt_end(x->g);
}

/* the rule for one character of s, as JSON text */
static int cs_rule(struct rx *x, const struct cset *s) {
    int r = rx_rule(x, "re-char");
    if (r < 0) return -1;
    uint8_t ranges[128][2];
    int nr = 0, any = 0;
    for (unsigned c = 0x20; c < 0x80; c++) {
        if (!cs_has(s, c) || c == '"' || c == '\\') continue;
        if (nr && ranges[nr - 1][1] == c - 1) ranges[nr - 1][1] = (uint8_t)c;
        else {
            ranges[nr][0] = ranges[nr][1] = (uint8_t)c;
            nr++;
        }
    }
    if (nr) {
        lmc_grammar_alt_begin(x->g, r);
        lmc_grammar_add_bytes(x->g, (const uint8_t(*)[2])ranges, nr, false);
        lmc_grammar_alt_end(x->g);
        any++;
    }
    static const char *const short_esc[32] = {['\b'] = "\\b", ['\t'] = "\\t", ['\n'] = "\\n", ['\f'] = "\\f",
                                              ['\r'] = "\\r"};
    for (unsigned c = 0; c < 0x20; c++) {
        if (!cs_has(s, c)) continue;
        char u[8];
        snprintf(u, sizeof u, "\\u%04x", c);
        alt_lit(x, r, short_esc[c] ? short_esc[c] : u);
        any++;
    }
    if (cs_has(s, '"')) alt_lit(x, r, "\\\""), any++;
    if (cs_has(s, '\\')) alt_lit(x, r, "\\\\"), any++;
    if (s->nonascii) { /* any UTF-8 sequence of 2..4 bytes */
        static const uint8_t lead[3][2] = {{0xc2, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf4}}, cont[1][2] = {{0x80, 0xbf}};
        for (int k = 0; k < 3; k++) {
            lmc_grammar_alt_begin(x->g, r);
            lmc_grammar_add_bytes(x->g, &lead[k], 1, false);
            for (int j = 0; j <= k; j++) lmc_grammar_add_bytes(x->g, cont, 1, false);
            lmc_grammar_alt_end(x->g);
        }
        any++;
    }
    if (!any) return rx_fail(x, "a character class that matches nothing");
    return r;
}

static int lit_rule(struct rx *x, const char *bytes, size_t n) {
    int r = rx_rule(x, "re-lit");
    if (r < 0) return -1;
    lmc_grammar_alt_begin(x->g, r);
    lmc_grammar_add_literal(x->g, bytes, n);
    lmc_grammar_alt_end(x->g);
    return r;
}

/* x{min,max} (max < 0: unbounded), right-recursive */
static int repeat(struct rx *x, int a, int min, int max) {
    int tail = rx_rule(x, "re-rep");
    if (tail < 0) return -1;
    lmc_grammar_alt_begin(x->g, tail);
    lmc_grammar_alt_end(x->g);
    if (max < 0) { /* tail = "" | a tail */
        lmc_grammar_alt_begin(x->g, tail);
        lmc_grammar_add_rule(x->g, a);
        lmc_grammar_add_rule(x->g, tail);
        lmc_grammar_alt_end(x->g);
    } else {
        for (int k = 1; k <= max - min; k++) { /* opt_k = "" | a opt_{k-1} */
            int t = rx_rule(x, "re-rep");
            if (t < 0) return -1;
            lmc_grammar_alt_begin(x->g, t);
            lmc_grammar_alt_end(x->g);
            lmc_grammar_alt_begin(x->g, t);
            lmc_grammar_add_rule(x->g, a);
            lmc_grammar_add_rule(x->g, tail);
            lmc_grammar_alt_end(x->g);
            tail = t;
        }
    }
    int r = rx_rule(x, "re-rep");
    if (r < 0) return -1;
    lmc_grammar_alt_begin(x->g, r);
    for (int i = 0; i < min; i++) lmc_grammar_add_rule(x->g, a);
    lmc_grammar_add_rule(x->g, tail);
    lmc_grammar_alt_end(x->g);
    return r;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* After a backslash (x->i on the escaped character): a class (*is_set) or
 * one code point. */
static bool escape(struct rx *x, struct cset *set, bool *is_set, unsigned *cp) {
    if (x->i >= x->n) return rx_fail(x, "a pattern ending in a backslash"), false;
    char k = x->p[x->i++];
    *is_set = cs_class(k, set);
    if (*is_set) return true;
    switch (k) {
    case 'n': *cp = '\n'; return true;
    case 't': *cp = '\t'; return true;
    case 'r': *cp = '\r'; return true;
    case 'f': *cp = '\f'; return true;
    case 'v': *cp = '\v'; return true;
    case '0': *cp = 0; return true;
    case 'u': {
        unsigned v = 0;
        for (int j = 0; j < 4; j++) {
            int h = x->i < x->n ? hexval(x->p[x->i]) : -1;
            if (h < 0) return rx_fail(x, "\\u needs 4 hex digits"), false;
            v = v * 16 + (unsigned)h;
            x->i++;
        }
        if (v >= 0xd800 && v <= 0xdfff) return rx_fail(x, "a surrogate \\u escape"), false;
        *cp = v;
        return true;
    }
    case 'x': {
        int h1 = x->i + 1 < x->n ? hexval(x->p[x->i]) : -1, h2 = h1 >= 0 ? hexval(x->p[x->i + 1]) : -1;
        if (h2 < 0) return rx_fail(x, "\\x needs 2 hex digits"), false;
        x->i += 2;
        *cp = (unsigned)(h1 * 16 + h2);
        return true;
    }
    default:
        if ((k >= 'a' && k <= 'z') || (k >= 'A' && k <= 'Z') || (k >= '1' && k <= '9') || (unsigned char)k >= 0x80) {
            x->i--;
            return rx_fail(x, k == 'b' || k == 'B' ? "word boundaries (\\b, \\B) are not supported"
                              : k >= '1' && k <= '9' ? "backreferences are not supported"
                                                     : "an unsupported escape"),
                   false;
        }
        *cp = (unsigned char)k; /* escaped punctuation */
        return true;
    }
}

/* one code point as a rule (non-ASCII: its UTF-8 bytes) */
static int cp_rule(struct rx *x, unsigned cp) {
    if (cp < 0x80) {
        struct cset s = {{0}, false};
        cs_add(&s, cp);
        return cs_rule(x, &s);
    }
    char b[4];
    size_t n;
    if (cp < 0x800) b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3f)), b[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    return lit_rule(x, b, n);
}

/* [...] (x->i after the '[') */
static int class_rule(struct rx *x) {
    struct cset s = {{0}, false};
    bool neg = x->i < x->n && x->p[x->i] == '^';
    if (neg) x->i++;
    bool first = true;
    for (;;) {
        if (x->i >= x->n) return rx_fail(x, "an unclosed character class");
        char c = x->p[x->i];
        if (c == ']' && !first) {
            x->i++;
            break;
        }
        first = false;
        unsigned lo;
        x->i++;
        if (c == '\\') {
            struct cset sub;
            bool is_set;
            if (!escape(x, &sub, &is_set, &lo)) return -1;
            if (is_set) {
                cs_union(&s, &sub);
                continue;
            }
        } else if (c == '[' && x->i < x->n && x->p[x->i] == ':') {
            return rx_fail(x, "POSIX classes ([:alpha:]) are not supported");
        } else {
            lo = (unsigned char)c;
        }
        if (lo >= 0x80) return rx_fail(x, "non-ASCII characters in a class are not supported");
        unsigned hi = lo;
        if (x->i + 1 < x->n && x->p[x->i] == '-' && x->p[x->i + 1] != ']') {
            x->i++;
            char d = x->p[x->i++];
            if (d == '\\') {
                struct cset sub;
                bool is_set;
                if (!escape(x, &sub, &is_set, &hi)) return -1;
                if (is_set) return rx_fail(x, "a range ending in a class escape");
            } else {
                hi = (unsigned char)d;
            }
            if (hi >= 0x80) return rx_fail(x, "non-ASCII characters in a class are not supported");
            if (hi < lo) return rx_fail(x, "a character range out of order");
        }
        cs_range(&s, lo, hi);
    }
    if (neg) cs_negate(&s);
    return cs_rule(x, &s);
}

/* ---- length mode: the pattern's language intersected with a length
 * range, as rules per exact length (counter 0..L, saturating at L when
 * there is no maxLength) */
static int *ls_at(struct rx *x, int h) { return x->ls + (size_t)h * (size_t)(x->L + 1); }

static int ls_new(struct rx *x) {
    if (x->failed) return -1;
    size_t w = (size_t)x->L + 1;
    if (x->n_ls == x->cap_ls) {
        size_t nc = x->cap_ls ? x->cap_ls * 2 : 64;
        int *q = realloc(x->ls, nc * w * sizeof *q);
        if (!q) return rx_fail(x, "out of memory");
        x->ls = q;
        x->cap_ls = nc;
    }
    int h = (int)x->n_ls++;
    for (size_t k = 0; k < w; k++) ls_at(x, h)[k] = -1;
    return h;
}

/* the length class of i + j characters: -1 past maxLength */
static int ls_len(const struct rx *x, int i, int j) {
    int k = i + j;
    return k <= x->L ? k : x->sat ? x->L : -1;
}

static int ls_one(struct rx *x, int r) { /* one character */
    if (r < 0) return -1;
    int h = ls_new(x), k = ls_len(x, 0, 1);
    if (h >= 0 && k >= 0) ls_at(x, h)[k] = r;
    return h;
}

static int ls_eps(struct rx *x) {
    int h = ls_new(x), r = rx_rule(x, "re-len");
    if (h < 0 || r < 0) return -1;
    lmc_grammar_alt_begin(x->g, r);
    lmc_grammar_alt_end(x->g);
    ls_at(x, h)[0] = r;
    return h;
}

/* every pair (i, j) of a and b whose lengths make k */
static int ls_concat(struct rx *x, int a, int b) {
    int h = ls_new(x);
    if (h < 0 || a < 0 || b < 0) return -1;
    x->work += (int64_t)(x->L + 1) * (x->L + 1);
    if (x->work > RX_MAX_WORK) return rx_fail(x, "too large with this maxLength/minLength (more than 5e7 steps)");
    for (int k = 0; k <= x->L && !x->failed; k++) {
        int r = -1;
        for (int i = 0; i <= k || (x->sat && k == x->L && i <= x->L); i++) {
            int jlo = i <= k ? k - i : 0, jhi = x->sat && k == x->L ? x->L : jlo;
            for (int j = jlo; j <= jhi; j++) {
                if (ls_len(x, i, j) != k) continue;
                int ra = ls_at(x, a)[i], rb = ls_at(x, b)[j];
                if (ra < 0 || rb < 0) continue;
                if (r < 0 && (r = rx_rule(x, "re-len")) < 0) return -1;
                lmc_grammar_alt_begin(x->g, r);
                lmc_grammar_add_rule(x->g, ra);
                lmc_grammar_add_rule(x->g, rb);
                lmc_grammar_alt_end(x->g);
            }
        }
        ls_at(x, h)[k] = r;
    }
    return x->failed ? -1 : h;
}

static int ls_union(struct rx *x, const int *hs, int n) {
    int h = ls_new(x);
    if (h < 0) return -1;
    for (int k = 0; k <= x->L; k++) {
        int r = -1;
        for (int t = 0; t < n; t++) {
            int rt = ls_at(x, hs[t])[k];
            if (rt < 0) continue;
            if (r < 0 && (r = rx_rule(x, "re-len")) < 0) return -1;
            lmc_grammar_alt_begin(x->g, r);
            lmc_grammar_add_rule(x->g, rt);
            lmc_grammar_alt_end(x->g);
        }
        ls_at(x, h)[k] = r;
    }
    return h;
}

/* a*: R_0 = "" | ..., R_k = a_i R_j for i >= 1 (the empty a adds nothing) */
static int ls_star(struct rx *x, int a) {
    int h = ls_new(x);
    if (h < 0 || a < 0) return -1;
    bool reach[RX_MAX_LEN + 1] = {true};
    for (int j = 0; j <= x->L; j++)
        for (int i = 1; reach[j] && i <= x->L; i++) {
            int k = ls_len(x, i, j);
            if (k >= 0 && ls_at(x, a)[i] >= 0) reach[k] = true;
        }
    for (int k = 0; k <= x->L; k++)
        if (reach[k] && (ls_at(x, h)[k] = rx_rule(x, "re-len")) < 0) return -1;
    int r0 = ls_at(x, h)[0];
    lmc_grammar_alt_begin(x->g, r0);
    lmc_grammar_alt_end(x->g);
    for (int j = 0; j <= x->L; j++)
        for (int i = 1; reach[j] && i <= x->L; i++) {
            int k = ls_len(x, i, j), ra = ls_at(x, a)[i];
            if (k < 0 || ra < 0) continue;
            lmc_grammar_alt_begin(x->g, ls_at(x, h)[k]);
            lmc_grammar_add_rule(x->g, ra);
            lmc_grammar_add_rule(x->g, ls_at(x, h)[j]);
            lmc_grammar_alt_end(x->g);
        }
    return h;
}

static int ls_repeat(struct rx *x, int a, int min, int max) {
    int r = ls_eps(x);
    for (int t = 0; t < min && r >= 0; t++) r = ls_concat(x, r, a);
    if (max < 0) return r >= 0 ? ls_concat(x, r, ls_star(x, a)) : -1;
    if (max > min) {
        int pair[2] = {ls_eps(x), a};
        int opt = pair[0] >= 0 ? ls_union(x, pair, 2) : -1;
        for (int t = 0; t < max - min && r >= 0; t++) r = ls_concat(x, r, opt);
    }
    return r;
}

static int parse_alt(struct rx *x);

static int parse_char(struct rx *x);

/* an atom: a group, or one character (in length mode, as a length set) */
static int parse_atom(struct rx *x) {
    if (x->p[x->i] == '(') return parse_char(x);
    int r = parse_char(x);
    return x->lenmode ? ls_one(x, r) : r;
}

static int parse_char(struct rx *x) {
    char c = x->p[x->i];
    if (c == '(') {
        x->i++;
        if (x->i < x->n && x->p[x->i] == '?') {
            if (x->i + 1 < x->n && x->p[x->i + 1] == ':') x->i += 2;
            else return rx_fail(x, "lookaround and named groups are not supported");
        }
        if (++x->depth > RX_MAX_DEPTH) return rx_fail(x, "groups nested too deep");
        int r = parse_alt(x);
        x->depth--;
        if (r < 0) return -1;
        if (x->i >= x->n || x->p[x->i] != ')') return rx_fail(x, "an unclosed group");
        x->i++;
        return r;
    }
    if (c == '[') {
        x->i++;
        return class_rule(x);
    }
    if (c == '.') {
        x->i++;
        struct cset s = {{0}, false};
        cs_add(&s, '\n');
        cs_negate(&s);
        return cs_rule(x, &s);
    }
    if (c == '*' || c == '+' || c == '?' || c == '{') return rx_fail(x, "a quantifier with nothing to repeat");
    if (c == '^' || c == '$') return rx_fail(x, "anchors (^, $) only at the start and end of the pattern");
    x->i++;
    if (c == '\\') {
        struct cset s;
        bool is_set;
        unsigned cp;
        if (!escape(x, &s, &is_set, &cp)) return -1;
        return is_set ? cs_rule(x, &s) : cp_rule(x, cp);
    }
    unsigned char u = (unsigned char)c;
    if (u < 0x80) return cp_rule(x, u);
    /* a UTF-8 character of the pattern, kept as its bytes */
    size_t k = u >= 0xf0 ? 4 : u >= 0xe0 ? 3 : u >= 0xc0 ? 2 : 0;
    if (!k || x->i - 1 + k > x->n) return rx_fail(x, "invalid UTF-8");
    for (size_t j = 1; j < k; j++)
        if (((unsigned char)x->p[x->i - 1 + j] & 0xc0) != 0x80) return rx_fail(x, "invalid UTF-8");
    x->i += k - 1;
    return lit_rule(x, x->p + x->i - k, k);
}

/* a {m}, {m,} or {m,n} bound (x->i after '{'); false on error */
static bool bound(struct rx *x, int *min, int *max) {
    long v[2] = {0, -1};
    int which = 0;
    bool digits = false;
    while (x->i < x->n && x->p[x->i] != '}') {
        char d = x->p[x->i++];
        if (d >= '0' && d <= '9') {
            if (v[which] < 0) v[which] = 0;
            v[which] = v[which] * 10 + (d - '0');
            if (v[which] > RX_MAX_REPEAT) return rx_fail(x, "a repetition bound above 256"), false;
            digits = true;
        } else if (d == ',' && which == 0 && digits) {
            which = 1;
        } else {
            return rx_fail(x, "a malformed {m,n} quantifier"), false;
        }
    }
    if (x->i >= x->n || !digits) return rx_fail(x, "a malformed {m,n} quantifier"), false;
    x->i++;
    *min = (int)v[0];
    *max = which == 0 ? (int)v[0] : (int)v[1];
    if (*max >= 0 && *max < *min) return rx_fail(x, "a {m,n} quantifier with n < m"), false;
    return true;
}

static int parse_seq(struct rx *x) {
    int ids[RX_MAX_SEQ], n = 0;
    while (x->i < x->n && x->p[x->i] != '|' && x->p[x->i] != ')') {
        if (x->p[x->i] == '$' && x->i + 1 == x->n && x->depth == 0) break; /* the end anchor */
        if (n == RX_MAX_SEQ) return rx_fail(x, "too many atoms in a row");
        int a = parse_atom(x);
        if (a < 0) return -1;
        if (x->i < x->n && strchr("?*+{", x->p[x->i])) {
            char q = x->p[x->i++];
            int min = q == '+', max = q == '?' ? 1 : -1;
            if (q == '{' && !bound(x, &min, &max)) return -1;
            if (x->i < x->n && x->p[x->i] == '?') x->i++; /* lazy: the same language */
            if (x->i < x->n && strchr("*+{", x->p[x->i])) return rx_fail(x, "a quantifier with nothing to repeat");
            a = x->lenmode ? ls_repeat(x, a, min, max) : repeat(x, a, min, max);
            if (a < 0) return -1;
        }
        ids[n++] = a;
    }
    if (x->lenmode) {
        int h = ls_eps(x);
        for (int k = 0; k < n && h >= 0; k++) h = ls_concat(x, h, ids[k]);
        return h;
    }
    int r = rx_rule(x, "re-seq");
    if (r < 0) return -1;
    lmc_grammar_alt_begin(x->g, r);
    for (int k = 0; k < n; k++) lmc_grammar_add_rule(x->g, ids[k]);
    lmc_grammar_alt_end(x->g);
    return r;
}

static int parse_alt(struct rx *x) {
    int alts[64], n = 0;
    for (;;) {
        if (n == 64) return rx_fail(x, "more than 64 alternatives in a group");
        int s = parse_seq(x);
        if (s < 0) return -1;
        alts[n++] = s;
        if (x->i < x->n && x->p[x->i] == '|') {
            x->i++;
            continue;
        }
        break;
    }
    if (x->depth == 0) x->top_alts = n;
    if (x->lenmode) return ls_union(x, alts, n);
    int r = rx_rule(x, "re-alt");
    if (r < 0) return -1;
    for (int k = 0; k < n; k++) {
        lmc_grammar_alt_begin(x->g, r);
        lmc_grammar_add_rule(x->g, alts[k]);
        lmc_grammar_alt_end(x->g);
    }
    return r;
}

static int regex_body(struct rx *x, int64_t min_len, int64_t max_len);

int lmc_grammar_regex_string(struct lmc_grammar *g, const char *pattern, size_t n, lmc_err *err) {
    return lmc_grammar_regex_string_len(g, pattern, n, 0, -1, err);
}

int lmc_grammar_regex_string_len(struct lmc_grammar *g, const char *pattern, size_t n, int64_t min_len,
                                 int64_t max_len, lmc_err *err) {
    struct rx x = {.g = g, .p = pattern, .n = n, .err = err};
    if (min_len < 0 || (max_len >= 0 && max_len < min_len)) return rx_fail(&x, "bad minLength/maxLength");
    if (min_len > 0 || max_len >= 0) {
        if ((max_len >= 0 ? max_len : min_len) > RX_MAX_LEN)
            return rx_fail(&x, "maxLength (or minLength without maxLength) above 256 together with a pattern");
        x.lenmode = true;
        x.sat = max_len < 0;
        x.L = (int)(max_len >= 0 ? max_len : min_len);
    }
    int r = regex_body(&x, min_len, max_len);
    free(x.ls);
    return r;
}

static int regex_body(struct rx *x, int64_t min_len, int64_t max_len) {
    struct lmc_grammar *g = x->g;
    const char *pattern = x->p;
    size_t n = x->n;
    if (memchr(pattern, 0, n)) return rx_fail(x, "a NUL byte");
    bool start = n > 0 && pattern[0] == '^';
    if (start) x->i = 1;
    int body = parse_alt(x);
    if (body < 0) return -1;
    bool end = x->i < x->n && x->p[x->i] == '$';
    if (end) x->i++;
    if (x->i != x->n) return rx_fail(x, x->p[x->i] == ')' ? "an unmatched ')'" : "unexpected text");
    if ((start || end) && x->top_alts > 1) /* ^a|b$ is (^a)|(b$): rarely what was meant */
        return rx_fail(x, "anchors around a top-level '|' (write ^(a|b)$)");
    int any = -1;
    if (!start || !end) { /* an unanchored side: any text there */
        struct cset s = {{0}, false};
        cs_negate(&s);
        int ch = cs_rule(x, &s);
        if (ch < 0) return -1;
        any = x->lenmode ? ls_star(x, ls_one(x, ch)) : repeat(x, ch, 0, -1);
        if (any < 0) return -1;
    }
    int r = rx_rule(x, "pattern-string");
    if (r < 0) return -1;
    if (x->lenmode) { /* "..." of each length in [min_len, max_len] (with sat: L means min_len or more) */
        int t = body;
        if (!start) t = ls_concat(x, any, t);
        if (t >= 0 && !end) t = ls_concat(x, t, any);
        if (t < 0) return -1;
        int alts = 0;
        for (int k = (int)min_len; k <= x->L; k++) {
            int rk = ls_at(x, t)[k];
            if (rk < 0 || (max_len >= 0 && k > max_len)) continue;
            lmc_grammar_alt_begin(g, r);
            lmc_grammar_add_literal(g, "\"", 1);
            lmc_grammar_add_rule(g, rk);
            lmc_grammar_add_literal(g, "\"", 1);
            lmc_grammar_alt_end(g);
            alts++;
        }
        if (!alts) return rx_fail(x, "no string matching it has a length within minLength/maxLength");
        return r;
    }
    lmc_grammar_alt_begin(g, r);
    lmc_grammar_add_literal(g, "\"", 1);
    if (!start) lmc_grammar_add_rule(g, any);
    lmc_grammar_add_rule(g, body);
    if (!end) lmc_grammar_add_rule(g, any);
    lmc_grammar_add_literal(g, "\"", 1);
    lmc_grammar_alt_end(g);
    return r;
}
