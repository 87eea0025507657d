/* jinja_value.c — the Jinja engine's values: the arena they live in, lists
 * and dicts (insertion-ordered, like Python's), truth, equality and order,
 * Python's str() and repr() of every value, json.dumps as transformers calls
 * it (tojson), conversion from cJSON, and UTF-8 helpers. */
#include "template/jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */
struct jchunk {
    struct jchunk *next;
    size_t used, size;
    max_align_t data[];
};

void *ja_alloc(struct jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    struct jchunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > 65536 ? n : 65536;
        if (a->cap && (a->used + size > a->cap || size > a->cap)) return NULL;
        c = malloc(sizeof *c + size);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->size = size;
        a->head = c;
        a->used += size;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void ja_free(struct jarena *a) {
    struct jchunk *c = a->head;
    while (c) {
        struct jchunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}

char *ja_strdup(struct jarena *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- byte buffer ---- */
bool jbuf_put(struct jbuf *b, const char *s, size_t n) {
    if (b->over) return false;
    if (b->limit && b->n + n > b->limit) {
        b->over = true;
        return false;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->over = true;
            return false;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}
bool jbuf_puts(struct jbuf *b, const char *s) { return jbuf_put(b, s, strlen(s)); }
bool jbuf_putc(struct jbuf *b, char c) { return jbuf_put(b, &c, 1); }
bool jbuf_printf(struct jbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return false;
    return jbuf_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

jv jv_make_str(struct jctx *c, struct jbuf *b) {
    if (b->over) {
        free(b->p);
        *b = (struct jbuf){0};
        joom(c);
        return jv_undef(NULL);
    }
    jv v = jv_str_dup(c, b->p ? b->p : "", b->n);
    free(b->p);
    *b = (struct jbuf){0};
    return v;
}

/* ---- UTF-8 ---- */
int ju_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) {
        *cp = 0;
        return 0;
    }
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    int len = u[0] >= 0xf0 ? 4 : u[0] >= 0xe0 ? 3 : u[0] >= 0xc0 ? 2 : 1;
    if (len == 1 || (size_t)len > n) {
        *cp = 0xfffd;
        return 1;
    }
    uint32_t c = u[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xc0) != 0x80) {
            *cp = 0xfffd;
            return 1;
        }
        c = (c << 6) | (u[i] & 0x3f);
    }
    *cp = c;
    return len;
}

int ju_put(char *b, uint32_t cp) {
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

size_t ju_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)ju_next(s + i, n - i, &cp);
        k++;
    }
    return k;
}

bool ju_isspace(uint32_t c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* ---- lists and dicts ---- */
struct jlist *jl_new(struct jctx *c, size_t cap) {
    struct jlist *l = ja_alloc(&c->arena, sizeof *l);
    if (!l) return joom(c), NULL;
    if (cap) {
        l->v = ja_alloc(&c->arena, cap * sizeof(jv));
        if (!l->v) return joom(c), NULL;
        l->cap = cap;
    }
    return l;
}

bool jl_push(struct jctx *c, struct jlist *l, jv v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *p = ja_alloc(&c->arena, cap * sizeof(jv));
        if (!p) return joom(c);
        if (l->n) memcpy(p, l->v, l->n * sizeof(jv));
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = v;
    return true;
}

struct jdict *jd_new(struct jctx *c, size_t cap) {
    struct jdict *d = ja_alloc(&c->arena, sizeof *d);
    if (!d) return joom(c), NULL;
    (void)cap;
    return d;
}

bool jd_get(const struct jdict *d, jv k, jv *out) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], k)) {
            *out = d->v[i];
            return true;
        }
    return false;
}

bool jd_get_str(const struct jdict *d, const char *k, jv *out) {
    size_t n = strlen(k);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].n == n && memcmp(d->k[i].u.s, k, n) == 0) {
            *out = d->v[i];
            return true;
        }
    return false;
}

bool jd_set(struct jctx *c, struct jdict *d, jv k, jv v) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], k)) {
            d->v[i] = v;
            return true;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *nk = ja_alloc(&c->arena, cap * sizeof(jv)), *nv = ja_alloc(&c->arena, cap * sizeof(jv));
        if (!nk || !nv) return joom(c);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(jv));
            memcpy(nv, d->v, d->n * sizeof(jv));
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
    return true;
}

jv jv_list(struct jlist *l, bool tuple) { jv v = {0}; v.t = JV_LIST; v.flag = tuple; v.u.l = l; return v; }
jv jv_dict(struct jdict *d) { jv v = {0}; v.t = JV_DICT; v.u.d = d; return v; }

jv jv_str_dup(struct jctx *c, const char *s, size_t n) {
    char *p = ja_strdup(&c->arena, s, n);
    if (!p) {
        joom(c);
        return jv_undef(NULL);
    }
    return jv_strn(p, n);
}

bool jv_is_str(jv v, const char *s) { return v.t == JV_STR && v.n == strlen(s) && memcmp(v.u.s, s, v.n) == 0; }

/* ---- Python semantics ---- */
const char *jv_typename(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.flag == 1 ? "tuple" : v.flag == 2 ? "dict_items" : v.flag == 3 ? "dict_keys"
                       : v.flag == 4 ? "dict_values" : "list";
    case JV_DICT: return v.flag ? "Namespace" : "dict";
    case JV_MACRO: return "Macro";
    case JV_BUILTIN: return "function";
    case JV_BOUND: return "builtin_function_or_method";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

bool jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.flag || v.u.d->n != 0;
    default: return true;
    }
}

static bool is_num(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double num(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b; }

static bool equal_d(jv a, jv b, int depth);
bool jv_equal(jv a, jv b) { return equal_d(a, b, 0); }

static bool equal_d(jv a, jv b, int depth) {
    if (depth > 200) return false; /* deeper than any template's data; never recurse unbounded */
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
            int64_t x = a.t == JV_INT ? a.u.i : a.u.b, y = b.t == JV_INT ? b.u.i : b.u.b;
            return x == y;
        }
        return num(a) == num(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return a.n == b.n && (a.n == 0 || memcmp(a.u.s, b.u.s, a.n) == 0);
    case JV_LIST:
        if (a.flag != b.flag || a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!equal_d(a.u.l->v[i], b.u.l->v[i], depth + 1)) return false;
        return true;
    case JV_DICT:
        if (a.flag || b.flag) return a.u.d == b.u.d;
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv o;
            if (!jd_get(b.u.d, a.u.d->k[i], &o) || !equal_d(a.u.d->v[i], o, depth + 1)) return false;
        }
        return true;
    case JV_MACRO: return a.u.m == b.u.m;
    case JV_BUILTIN: return a.u.builtin == b.u.builtin;
    default: return false;
    }
}

static bool compare_d(struct jctx *c, jv a, jv b, int *cmp, int depth);
bool jv_compare(struct jctx *c, jv a, jv b, int *cmp) { return compare_d(c, a, b, cmp, 0); }

static bool compare_d(struct jctx *c, jv a, jv b, int *cmp, int depth) {
    if (depth > 200) return jerr(c, "RecursionError", "maximum recursion depth exceeded in comparison");
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_INT && b.t == JV_INT) *cmp = a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
        else {
            double x = num(a), y = num(b);
            *cmp = x < y ? -1 : x > y;
        }
        return true;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t m = a.n < b.n ? a.n : b.n;
        int r = m ? memcmp(a.u.s, b.u.s, m) : 0;
        *cmp = r ? (r < 0 ? -1 : 1) : a.n < b.n ? -1 : a.n > b.n;
        return true;
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.flag == b.flag) {
        size_t m = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < m; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return compare_d(c, a.u.l->v[i], b.u.l->v[i], cmp, depth + 1);
        }
        *cmp = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
        return true;
    }
    return jerr(c, "TypeError", "'<' not supported between instances of '%s' and '%s'", jv_typename(a),
                jv_typename(b));
}

/* Python repr(float): the shortest digits that round-trip, fixed notation
 * for exponents -4..15, else d.ddde+XX. */
void jv_float_repr(double d, char *buf, size_t n) {
    if (isnan(d)) { snprintf(buf, n, "nan"); return; }
    if (isinf(d)) { snprintf(buf, n, d < 0 ? "-inf" : "inf"); return; }
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) break;
    }
    /* tmp = [-]D.DDDDe[+-]XX */
    char digits[24];
    int nd = 0;
    const char *p = tmp;
    bool negv = false;
    if (*p == '-') { negv = true; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    char out[64];
    int k = 0;
    if (negv) out[k++] = '-';
    if (exp10 >= -5 + 1 && exp10 < 16) {
        if (exp10 < 0) {
            out[k++] = '0'; out[k++] = '.';
            for (int i = 0; i < -exp10 - 1; i++) out[k++] = '0';
            for (int i = 0; i < nd; i++) out[k++] = digits[i];
        } else {
            for (int i = 0; i <= exp10; i++) out[k++] = i < nd ? digits[i] : '0';
            out[k++] = '.';
            if (nd > exp10 + 1) for (int i = exp10 + 1; i < nd; i++) out[k++] = digits[i];
            else out[k++] = '0';
        }
        out[k] = 0;
    } else {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        out[k] = 0;
        snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    snprintf(buf, n, "%s", out);
}

static bool write_str_repr(struct jbuf *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    bool ok = jbuf_putc(b, q);
    for (size_t i = 0; i < n && ok;) {
        uint32_t cp;
        int l = ju_next(s + i, n - i, &cp);
        if (cp == (uint32_t)q || cp == '\\') ok = jbuf_putc(b, '\\') && jbuf_putc(b, (char)cp);
        else if (cp == '\n') ok = jbuf_puts(b, "\\n");
        else if (cp == '\r') ok = jbuf_puts(b, "\\r");
        else if (cp == '\t') ok = jbuf_puts(b, "\\t");
        else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) ok = jbuf_printf(b, "\\x%02x", cp);
        else if (cp == 0xad) ok = jbuf_puts(b, "\\xad");
        else if (cp == 0x2028 || cp == 0x2029 || (cp >= 0x200b && cp <= 0x200f) || cp == 0xfeff)
            ok = jbuf_printf(b, "\\u%04x", cp);
        else ok = jbuf_put(b, s + i, (size_t)l);
        i += (size_t)l;
    }
    return ok && jbuf_putc(b, q);
}

static bool write_value(struct jctx *c, struct jbuf *b, jv v, bool repr, int depth) {
    if (depth > 100) return jerr(c, "RecursionError", "maximum recursion depth exceeded while printing a value");
    char tmp[64];
    switch (v.t) {
    case JV_UNDEF: return true;
    case JV_NONE: return jbuf_puts(b, "None");
    case JV_BOOL: return jbuf_puts(b, v.u.b ? "True" : "False");
    case JV_INT: return jbuf_printf(b, "%lld", (long long)v.u.i);
    case JV_FLOAT: jv_float_repr(v.u.f, tmp, sizeof tmp); return jbuf_puts(b, tmp);
    case JV_STR: return repr ? write_str_repr(b, v.u.s, v.n) : jbuf_put(b, v.u.s, v.n);
    case JV_LIST: {
        static const char *const view[] = {"", "", "dict_items(", "dict_keys(", "dict_values("};
        bool ok = jbuf_puts(b, view[v.flag <= 4 ? v.flag : 0]) && jbuf_putc(b, v.flag == 1 ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n && ok; i++) {
            if (i) ok = jbuf_puts(b, ", ");
            ok = ok && write_value(c, b, v.u.l->v[i], true, depth + 1);
        }
        if (v.flag == 1 && v.u.l->n == 1) ok = ok && jbuf_putc(b, ',');
        return ok && jbuf_putc(b, v.flag == 1 ? ')' : ']') && (v.flag < 2 || jbuf_putc(b, ')'));
    }
    case JV_DICT: {
        bool ok = jbuf_puts(b, v.flag ? "<Namespace {" : "{");
        for (size_t i = 0; i < v.u.d->n && ok; i++) {
            if (i) ok = jbuf_puts(b, ", ");
            ok = ok && write_value(c, b, v.u.d->k[i], true, depth + 1) && jbuf_puts(b, ": ") &&
                 write_value(c, b, v.u.d->v[i], true, depth + 1);
        }
        return ok && jbuf_puts(b, v.flag ? "}>" : "}");
    }
    case JV_MACRO: return jbuf_printf(b, "<Macro '%s'>", v.u.m->def->name ? v.u.m->def->name : "caller");
    case JV_LOOP: return jbuf_puts(b, "<LoopContext>");
    default: return jbuf_puts(b, "<function>");
    }
}

bool jv_write_str(struct jctx *c, struct jbuf *b, jv v) {
    if (!write_value(c, b, v, false, 0)) return c->failed ? false : joom(c);
    return true;
}
bool jv_write_repr(struct jctx *c, struct jbuf *b, jv v) {
    if (!write_value(c, b, v, true, 0)) return c->failed ? false : joom(c);
    return true;
}

bool jv_to_str(struct jctx *c, jv v, jv *out) {
    if (v.t == JV_STR) {
        *out = v;
        return true;
    }
    struct jbuf b = {0};
    if (!jv_write_str(c, &b, v)) {
        free(b.p);
        return false;
    }
    *out = jv_make_str(c, &b);
    return !c->failed;
}

/* ---- json.dumps ---- */
static bool json_str(struct jbuf *b, const char *s, size_t n, bool ascii) {
    bool ok = jbuf_putc(b, '"');
    for (size_t i = 0; i < n && ok;) {
        uint32_t cp;
        int l = ju_next(s + i, n - i, &cp);
        switch (cp) {
        case '"': ok = jbuf_puts(b, "\\\""); break;
        case '\\': ok = jbuf_puts(b, "\\\\"); break;
        case '\n': ok = jbuf_puts(b, "\\n"); break;
        case '\r': ok = jbuf_puts(b, "\\r"); break;
        case '\t': ok = jbuf_puts(b, "\\t"); break;
        case '\b': ok = jbuf_puts(b, "\\b"); break;
        case '\f': ok = jbuf_puts(b, "\\f"); break;
        default:
            if (cp < 0x20) ok = jbuf_printf(b, "\\u%04x", cp);
            else if (ascii && cp >= 0x80) {
                if (cp >= 0x10000) {
                    uint32_t x = cp - 0x10000;
                    ok = jbuf_printf(b, "\\u%04x\\u%04x", 0xd800 + (x >> 10), 0xdc00 + (x & 0x3ff));
                } else ok = jbuf_printf(b, "\\u%04x", cp);
            } else ok = jbuf_put(b, s + i, (size_t)l);
        }
        i += (size_t)l;
    }
    return ok && jbuf_putc(b, '"');
}

struct jsonopt { bool ascii, sort; int indent; const char *isep, *ksep; };

static bool json_nl(struct jbuf *b, const struct jsonopt *o, int level) {
    if (o->indent < 0) return true;
    bool ok = jbuf_putc(b, '\n');
    for (int i = 0; i < o->indent * level && ok; i++) ok = jbuf_putc(b, ' ');
    return ok;
}

static bool json_key(struct jctx *c, struct jbuf *b, jv k, const struct jsonopt *o) {
    char tmp[64];
    switch (k.t) {
    case JV_STR: return json_str(b, k.u.s, k.n, o->ascii);
    case JV_INT: return jbuf_printf(b, "\"%lld\"", (long long)k.u.i);
    case JV_BOOL: return jbuf_puts(b, k.u.b ? "\"true\"" : "\"false\"");
    case JV_NONE: return jbuf_puts(b, "\"null\"");
    case JV_FLOAT: jv_float_repr(k.u.f, tmp, sizeof tmp); return jbuf_printf(b, "\"%s\"", tmp);
    default: return jerr(c, "TypeError", "keys must be str, int, float, bool or None, not %s", jv_typename(k));
    }
}

static bool json_val(struct jctx *c, struct jbuf *b, jv v, const struct jsonopt *o, int level) {
    if (level > 200) return jerr(c, "RecursionError", "maximum recursion depth exceeded in tojson");
    char tmp[64];
    bool ok = true;
    switch (v.t) {
    case JV_NONE: return jbuf_puts(b, "null");
    case JV_BOOL: return jbuf_puts(b, v.u.b ? "true" : "false");
    case JV_INT: return jbuf_printf(b, "%lld", (long long)v.u.i);
    case JV_FLOAT:
        if (isnan(v.u.f)) return jbuf_puts(b, "NaN");
        if (isinf(v.u.f)) return jbuf_puts(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        jv_float_repr(v.u.f, tmp, sizeof tmp);
        return jbuf_puts(b, tmp);
    case JV_STR: return json_str(b, v.u.s, v.n, o->ascii);
    case JV_LIST:
        if (v.u.l->n == 0) return jbuf_puts(b, "[]");
        ok = jbuf_putc(b, '[');
        for (size_t i = 0; i < v.u.l->n && ok; i++) {
            if (i) ok = jbuf_puts(b, o->isep);
            ok = ok && json_nl(b, o, level + 1) && json_val(c, b, v.u.l->v[i], o, level + 1);
        }
        return ok && json_nl(b, o, level) && jbuf_putc(b, ']');
    case JV_DICT: {
        if (v.flag) break;
        struct jdict *d = v.u.d;
        if (d->n == 0) return jbuf_puts(b, "{}");
        size_t *ord = malloc(d->n * sizeof *ord);
        if (!ord) return joom(c);
        for (size_t i = 0; i < d->n; i++) ord[i] = i;
        if (o->sort) /* insertion sort: stable, and dicts are small */
            for (size_t i = 1; i < d->n; i++) {
                size_t x = ord[i], j = i;
                while (j > 0) {
                    int cmp;
                    if (!jv_compare(c, d->k[ord[j - 1]], d->k[x], &cmp)) {
                        free(ord);
                        return false;
                    }
                    if (cmp <= 0) break;
                    ord[j] = ord[j - 1];
                    j--;
                }
                ord[j] = x;
            }
        ok = jbuf_putc(b, '{');
        for (size_t i = 0; i < d->n && ok; i++) {
            if (i) ok = jbuf_puts(b, o->isep);
            ok = ok && json_nl(b, o, level + 1) && json_key(c, b, d->k[ord[i]], o) && jbuf_puts(b, o->ksep) &&
                 json_val(c, b, d->v[ord[i]], o, level + 1);
        }
        free(ord);
        return ok && json_nl(b, o, level) && jbuf_putc(b, '}');
    }
    default: break;
    }
    return jerr(c, "TypeError", "Object of type %s is not JSON serializable", jv_typename(v));
}

bool jv_write_json(struct jctx *c, struct jbuf *b, jv v, bool ensure_ascii, int indent, const char *item_sep,
                   const char *key_sep, bool sort_keys) {
    struct jsonopt o = {ensure_ascii, sort_keys, indent, item_sep, key_sep};
    if (!o.isep) o.isep = indent >= 0 ? "," : ", ";
    if (!o.ksep) o.ksep = ": ";
    if (!json_val(c, b, v, &o, 0)) return c->failed ? false : joom(c);
    return true;
}

bool jv_from_cjson(struct jctx *c, const cJSON *j, jv *out) {
    if (!j || cJSON_IsNull(j)) *out = jv_none();
    else if (cJSON_IsBool(j)) *out = jv_bool(cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        /* cJSON keeps no int/float distinction: integral values within int64 are ints */
        if (d == floor(d) && fabs(d) < 9.2e18) *out = jv_int((int64_t)d);
        else *out = jv_float(d);
    } else if (cJSON_IsString(j)) {
        const char *s = j->valuestring ? j->valuestring : "";
        *out = jv_strn(s, strlen(s));
    } else if (cJSON_IsArray(j)) {
        struct jlist *l = jl_new(c, 0);
        if (!l) return false;
        for (const cJSON *e = j->child; e; e = e->next) {
            jv x;
            if (!jv_from_cjson(c, e, &x) || !jl_push(c, l, x)) return false;
        }
        *out = jv_list(l, false);
    } else if (cJSON_IsObject(j)) {
        struct jdict *d = jd_new(c, 0);
        if (!d) return false;
        for (const cJSON *e = j->child; e; e = e->next) {
            jv x;
            const char *k = e->string ? e->string : "";
            if (!jv_from_cjson(c, e, &x) || !jd_set(c, d, jv_strn(k, strlen(k)), x)) return false;
        }
        *out = jv_dict(d);
    } else *out = jv_none();
    return true;
}
