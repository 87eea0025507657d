/* grammar_gbnf.c — GBNF text (llama.cpp's grammar notation) to a byte
 * grammar: `name ::= alternatives`, `|`, sequences, "literals" and
 * [character classes] (ranges, ^ negation, \n \t \\ \" \] \xHH \uHHHH
 * escapes), `.` (any character), ( groups ), the operators * + ? {m}
 * {m,} {m,n}, and # comments; the start rule is `root`. Characters are
 * Unicode code points matched as their UTF-8 bytes; a class may hold
 * non-ASCII single characters, but a non-ASCII range or a negated class
 * listing non-ASCII characters is refused. */
#include "infer/grammar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAMES 1024

struct gp {
    struct lmc_grammar *g;
    const char *s;
    size_t n, i;
    int line;
    lmc_err *err;
    bool failed;
    int depth;
    struct { char name[64]; int rule; bool defined; } names[MAX_NAMES];
    int n_names;
    int anon;
};

static bool gfail(struct gp *p, const char *msg) {
    if (!p->failed) lmc_err_set(p->err, LMC_ERR_ARG, "grammar line %d: %s", p->line, msg);
    p->failed = true;
    return false;
}

static void skip(struct gp *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '#') {
            while (p->i < p->n && p->s[p->i] != '\n') p->i++;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (c == '\n') p->line++;
            p->i++;
        } else break;
    }
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static size_t name_len(struct gp *p, size_t at) {
    size_t k = at;
    while (k < p->n && is_name_char(p->s[k])) k++;
    return k - at;
}

/* a NAME followed by ::= starts the next rule */
static bool at_rule_start(struct gp *p) {
    size_t l = name_len(p, p->i);
    if (!l) return false;
    size_t k = p->i + l;
    while (k < p->n && (p->s[k] == ' ' || p->s[k] == '\t' || p->s[k] == '\r' || p->s[k] == '\n')) k++;
    return k + 3 <= p->n && !memcmp(p->s + k, "::=", 3);
}

static int name_rule(struct gp *p, const char *name, size_t l, bool define) {
    if (l >= sizeof p->names[0].name) return gfail(p, "rule name too long"), -1;
    for (int i = 0; i < p->n_names; i++)
        if (strlen(p->names[i].name) == l && !memcmp(p->names[i].name, name, l)) {
            if (define) {
                if (p->names[i].defined) return gfail(p, "rule defined twice"), -1;
                p->names[i].defined = true;
            }
            return p->names[i].rule;
        }
    if (p->n_names == MAX_NAMES) return gfail(p, "too many rules"), -1;
    memcpy(p->names[p->n_names].name, name, l);
    p->names[p->n_names].name[l] = 0;
    int r = lmc_grammar_rule(p->g, p->names[p->n_names].name);
    if (r < 0) return gfail(p, "out of memory"), -1;
    p->names[p->n_names].rule = r;
    p->names[p->n_names].defined = define;
    p->n_names++;
    return r;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* one (possibly escaped) character of a literal or class -> code point */
static bool read_char(struct gp *p, uint32_t *cp) {
    if (p->i >= p->n) return gfail(p, "unexpected end");
    unsigned char c = (unsigned char)p->s[p->i++];
    if (c == '\\') {
        if (p->i >= p->n) return gfail(p, "unexpected end after \\");
        char e = p->s[p->i++];
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int k = 0; k < digits; k++) {
                int h = p->i < p->n ? hexval(p->s[p->i]) : -1;
                if (h < 0) return gfail(p, "bad hex escape");
                v = v * 16 + (uint32_t)h;
                p->i++;
            }
            if (v > 0x10ffff) return gfail(p, "escape out of range");
            *cp = v;
            return true;
        }
        *cp = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : (uint32_t)(unsigned char)e;
        return true;
    }
    if (c < 0x80) {
        *cp = c;
        return true;
    }
    /* UTF-8 in the grammar text */
    int k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
    if (k < 0) return gfail(p, "invalid UTF-8");
    uint32_t v = c & (0x3f >> k);
    for (int j = 0; j < k; j++) {
        if (p->i >= p->n || ((unsigned char)p->s[p->i] & 0xc0) != 0x80) return gfail(p, "invalid UTF-8");
        v = (v << 6) | ((unsigned char)p->s[p->i++] & 0x3f);
    }
    *cp = v;
    return true;
}

static size_t utf8_put(char *b, uint32_t cp) {
    if (cp < 0x80) { b[0] = (char)cp; return 1; }
    if (cp < 0x800) { b[0] = (char)(0xc0 | (cp >> 6)); b[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12)); b[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); b[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    b[0] = (char)(0xf0 | (cp >> 18)); b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); b[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* alternatives of r: any multi-byte UTF-8 character */
static void any_multibyte(struct gp *p, int r) {
    static const uint8_t lead[3][2] = {{0xc2, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf4}}, cont[1][2] = {{0x80, 0xbf}};
    for (int k = 0; k < 3; k++) {
        lmc_grammar_alt_begin(p->g, r);
        lmc_grammar_add_bytes(p->g, &lead[k], 1, false);
        for (int j = 0; j <= k; j++) lmc_grammar_add_bytes(p->g, cont, 1, false);
        lmc_grammar_alt_end(p->g);
    }
}

/* [class] (p->i after '[') -> a new rule */
static int char_class(struct gp *p) {
    bool neg = p->i < p->n && p->s[p->i] == '^';
    if (neg) p->i++;
    uint8_t ranges[256][2];
    int nr = 0;
    uint32_t wide[64];
    int nw = 0;
    while (p->i < p->n && p->s[p->i] != ']') {
        uint32_t a, b;
        if (!read_char(p, &a)) return -1;
        b = a;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            if (!read_char(p, &b)) return -1;
        }
        if (b < a) return gfail(p, "empty range in a character class"), -1;
        if (b < 0x80) {
            if (nr == 256) return gfail(p, "character class too long"), -1;
            ranges[nr][0] = (uint8_t)a;
            ranges[nr++][1] = (uint8_t)b;
        } else if (a != b || neg) return gfail(p, "non-ASCII ranges and negated non-ASCII characters are not supported"), -1;
        else if (nw < 64) wide[nw++] = a;
        else return gfail(p, "character class too long"), -1;
    }
    if (p->i >= p->n) return gfail(p, "unterminated character class"), -1;
    p->i++;
    int r = lmc_grammar_rule(p->g, "class");
    if (r < 0) return gfail(p, "out of memory"), -1;
    if (neg) { /* ASCII outside the ranges, or any multi-byte character */
        uint8_t all[1][2] = {{0x00, 0x7f}};
        uint64_t set[2] = {0};
        for (int k = 0; k < nr; k++)
            for (int c = ranges[k][0]; c <= ranges[k][1]; c++) set[c >> 6] |= 1ull << (c & 63);
        uint8_t keep[128][2];
        int nk = 0;
        for (int c = 0; c < 128; c++)
            if (!((set[c >> 6] >> (c & 63)) & 1)) keep[nk][0] = keep[nk][1] = (uint8_t)c, nk++;
        (void)all;
        if (nk) {
            lmc_grammar_alt_begin(p->g, r);
            lmc_grammar_add_bytes(p->g, keep, nk, false);
            lmc_grammar_alt_end(p->g);
        }
        any_multibyte(p, r);
        return r;
    }
    if (nr) {
        lmc_grammar_alt_begin(p->g, r);
        lmc_grammar_add_bytes(p->g, ranges, nr, false);
        lmc_grammar_alt_end(p->g);
    }
    for (int k = 0; k < nw; k++) {
        char b[4];
        size_t l = utf8_put(b, wide[k]);
        lmc_grammar_alt_begin(p->g, r);
        lmc_grammar_add_literal(p->g, b, l);
        lmc_grammar_alt_end(p->g);
    }
    if (!nr && !nw) return gfail(p, "empty character class"), -1;
    return r;
}

static int alternatives(struct gp *p, int into);

/* one item -> a rule id (literals and classes get small rules of their own) */
static int primary(struct gp *p) {
    skip(p);
    if (p->i >= p->n) return gfail(p, "expected an item"), -1;
    char c = p->s[p->i];
    if (c == '"') {
        p->i++;
        char buf[4096];
        size_t k = 0;
        while (p->i < p->n && p->s[p->i] != '"') {
            uint32_t cp;
            if (!read_char(p, &cp)) return -1;
            if (k + 4 > sizeof buf) return gfail(p, "literal too long"), -1;
            k += utf8_put(buf + k, cp);
        }
        if (p->i >= p->n) return gfail(p, "unterminated literal"), -1;
        p->i++;
        int r = lmc_grammar_rule(p->g, "literal");
        if (r < 0) return gfail(p, "out of memory"), -1;
        lmc_grammar_alt_begin(p->g, r);
        lmc_grammar_add_literal(p->g, buf, k);
        lmc_grammar_alt_end(p->g);
        return r;
    }
    if (c == '[') {
        p->i++;
        return char_class(p);
    }
    if (c == '.') {
        p->i++;
        int r = lmc_grammar_rule(p->g, "any");
        if (r < 0) return gfail(p, "out of memory"), -1;
        uint8_t ascii[1][2] = {{0x00, 0x7f}};
        lmc_grammar_alt_begin(p->g, r);
        lmc_grammar_add_bytes(p->g, ascii, 1, false);
        lmc_grammar_alt_end(p->g);
        any_multibyte(p, r);
        return r;
    }
    if (c == '(') {
        p->i++;
        if (++p->depth > 64) return gfail(p, "groups nested too deeply"), -1;
        int r = lmc_grammar_rule(p->g, "group");
        if (r < 0) return gfail(p, "out of memory"), -1;
        if (alternatives(p, r) < 0) return -1;
        skip(p);
        if (p->i >= p->n || p->s[p->i] != ')') return gfail(p, "expected ')'"), -1;
        p->i++;
        p->depth--;
        return r;
    }
    size_t l = name_len(p, p->i);
    if (!l) return gfail(p, "unexpected character"), -1;
    int r = name_rule(p, p->s + p->i, l, false);
    p->i += l;
    return r;
}

static int repeat_rule(struct gp *p, int x, long min, long max) {
    /* x{min,max}: min copies, then max-min optional ones (or x* when max < 0) */
    if (min > 1000 || max > 1000) return gfail(p, "repetition count above 1000"), -1;
    int tail = lmc_grammar_rule(p->g, "repeat");
    if (tail < 0) return gfail(p, "out of memory"), -1;
    lmc_grammar_alt_begin(p->g, tail);
    lmc_grammar_alt_end(p->g);
    if (max < 0) {
        lmc_grammar_alt_begin(p->g, tail);
        lmc_grammar_add_rule(p->g, x);
        lmc_grammar_add_rule(p->g, tail);
        lmc_grammar_alt_end(p->g);
    } else
        for (long k = 0; k < max - min; k++) {
            int t = lmc_grammar_rule(p->g, "repeat");
            if (t < 0) return gfail(p, "out of memory"), -1;
            lmc_grammar_alt_begin(p->g, t);
            lmc_grammar_alt_end(p->g);
            lmc_grammar_alt_begin(p->g, t);
            lmc_grammar_add_rule(p->g, x);
            lmc_grammar_add_rule(p->g, tail);
            lmc_grammar_alt_end(p->g);
            tail = t;
        }
    int r = lmc_grammar_rule(p->g, "repeat");
    if (r < 0) return gfail(p, "out of memory"), -1;
    lmc_grammar_alt_begin(p->g, r);
    for (long k = 0; k < min; k++) lmc_grammar_add_rule(p->g, x);
    lmc_grammar_add_rule(p->g, tail);
    lmc_grammar_alt_end(p->g);
    return r;
}

static int item(struct gp *p) {
    int x = primary(p);
    if (x < 0) return -1;
    for (;;) {
        if (p->i >= p->n) return x;
        char c = p->s[p->i];
        if (c == '*') { p->i++; x = repeat_rule(p, x, 0, -1); }
        else if (c == '+') { p->i++; x = repeat_rule(p, x, 1, -1); }
        else if (c == '?') { p->i++; x = repeat_rule(p, x, 0, 1); }
        else if (c == '{') { /* {m} {m,} {m,n}; the text is not NUL-terminated: digits read by hand */
            p->i++;
            long m = 0, n;
            size_t d0 = p->i;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && m <= 100000) m = m * 10 + (p->s[p->i++] - '0');
            if (p->i == d0) return gfail(p, "expected a count after '{'"), -1;
            n = m;
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                n = -1;
                if (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
                    n = 0;
                    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && n <= 100000)
                        n = n * 10 + (p->s[p->i++] - '0');
                }
            }
            if (p->i >= p->n || p->s[p->i] != '}' || (n >= 0 && n < m)) return gfail(p, "bad {m,n}"), -1;
            p->i++;
            x = repeat_rule(p, x, m, n);
        } else return x;
        if (x < 0) return -1;
    }
}

/* alternatives into rule `into`, until ')' or the next rule or the end */
static int alternatives(struct gp *p, int into) {
    for (;;) {
        int items[256], ni = 0;
        for (;;) {
            skip(p);
            if (p->i >= p->n || p->s[p->i] == '|' || p->s[p->i] == ')' || at_rule_start(p)) break;
            if (ni == 256) return gfail(p, "sequence too long"), -1;
            if ((items[ni++] = item(p)) < 0) return -1;
        }
        lmc_grammar_alt_begin(p->g, into);
        for (int k = 0; k < ni; k++) lmc_grammar_add_rule(p->g, items[k]);
        lmc_grammar_alt_end(p->g);
        if (p->i < p->n && p->s[p->i] == '|') {
            p->i++;
            continue;
        }
        return into;
    }
}

lmc_status lmc_grammar_from_gbnf(const char *text, size_t n, struct lmc_grammar **out, lmc_err *err) {
    *out = NULL;
    struct gp *p = calloc(1, sizeof *p);
    if (!p) return lmc_err_set(err, LMC_ERR_OOM, "grammar: out of memory");
    p->s = text;
    p->n = n;
    p->line = 1;
    p->err = err;
    lmc_status st = lmc_grammar_new(&p->g, err);
    if (st) {
        free(p);
        return st;
    }
    for (;;) {
        skip(p);
        if (p->i >= p->n || p->failed) break;
        size_t l = name_len(p, p->i);
        if (!l || !at_rule_start(p)) {
            gfail(p, "expected 'name ::='");
            break;
        }
        int r = name_rule(p, p->s + p->i, l, true);
        if (r < 0) break;
        p->i += l;
        skip(p);
        p->i += 3; /* ::= */
        if (alternatives(p, r) < 0) break;
        skip(p);
        if (p->i < p->n && p->s[p->i] == ')') {
            gfail(p, "unbalanced ')'");
            break;
        }
    }
    int root = -1;
    for (int i = 0; i < p->n_names && !p->failed; i++) {
        if (!p->names[i].defined) {
            char msg[128];
            snprintf(msg, sizeof msg, "rule '%s' is used but not defined", p->names[i].name);
            gfail(p, msg);
        }
        if (!strcmp(p->names[i].name, "root")) root = p->names[i].rule;
    }
    if (!p->failed && root < 0) gfail(p, "no 'root' rule");
    st = p->failed ? LMC_ERR_ARG : lmc_grammar_finish(p->g, root, err);
    if (st) lmc_grammar_free(p->g);
    else *out = p->g;
    free(p);
    return st;
}
