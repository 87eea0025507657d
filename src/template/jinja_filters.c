/* jinja_filters.c — Jinja's filters and tests as Jinja 3.1 defines them
 * (argument names, defaults and quirks: case-insensitive unique/sort/
 * dictsort/min/max, indent's first/blank, default's boolean, int's
 * fallback), with tojson replaced by transformers' json.dumps wrapper
 * (ensure_ascii=False, indent, separators, sort_keys). */
#include "template/jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fargs {
    jv *a;
    size_t na;
    const char **kwn;
    jv *kwv;
    size_t nkw;
};

/* argument by position or name; false if absent */
static bool arg(const struct fargs *f, size_t pos, const char *name, jv *out) {
    for (size_t i = 0; i < f->nkw; i++)
        if (!strcmp(f->kwn[i], name)) {
            *out = f->kwv[i];
            return true;
        }
    if (pos < f->na) {
        *out = f->a[pos];
        return true;
    }
    return false;
}
static jv argd(const struct fargs *f, size_t pos, const char *name, jv def) {
    jv v;
    return arg(f, pos, name, &v) ? v : def;
}

/* item lookup along a dotted path ("a.b", "0") as Jinja's make_attrgetter */
static bool attr_path(struct jctx *c, jv item, jv path, jv *out) {
    if (path.t == JV_INT) return jgetitem(c, item, path, out);
    if (path.t != JV_STR) return jerr(c, "TypeError", "attribute must be a string");
    size_t i = 0;
    jv cur = item;
    while (i <= path.n) {
        const char *dot = memchr(path.u.s + i, '.', path.n - i);
        size_t e = dot ? (size_t)(dot - path.u.s) : path.n;
        jv key = jv_strn(path.u.s + i, e - i);
        bool digits = key.n > 0;
        for (size_t k = 0; k < key.n; k++)
            if (key.u.s[k] < '0' || key.u.s[k] > '9') digits = false;
        if (digits && key.n < 18) { /* not NUL-terminated: digits read by hand */
            int64_t x = 0;
            for (size_t k = 0; k < key.n; k++) x = x * 10 + (key.u.s[k] - '0');
            key = jv_int(x);
        }
        if (cur.t == JV_UNDEF) return jerr(c, "UndefinedError", "'%.*s' is undefined", (int)path.n, path.u.s);
        if (!jgetitem(c, cur, key, &cur)) return false;
        if (!dot) break;
        i = e + 1;
    }
    *out = cur;
    return true;
}

/* the key a case-insensitive sort/unique compares */
static jv fold(struct jctx *c, jv v, bool case_sensitive) {
    if (case_sensitive || v.t != JV_STR) return v;
    jv r;
    return jstr_case(c, v, 2, &r) ? r : v;
}

static bool sort_list(struct jctx *c, struct jlist *l, jv *keys, bool reverse) {
    /* stable insertion-merge: a simple stable merge sort over indices */
    size_t n = l->n;
    size_t *idx = malloc((n ? n : 1) * sizeof *idx), *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return joom(c);
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    bool ok = true;
    for (size_t w = 1; w < n && ok; w *= 2) {
        for (size_t lo = 0; lo < n && ok; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, i = lo, j = mid, k = lo;
            while (i < mid && j < hi && ok) {
                int cmp;
                ok = jv_compare(c, keys[idx[j]], keys[idx[i]], &cmp);
                if (reverse) cmp = -cmp;
                tmp[k++] = cmp < 0 ? idx[j++] : idx[i++];
            }
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        if (n) memcpy(idx, tmp, n * sizeof *idx);
    }
    if (ok) {
        jv *v = malloc((n ? n : 1) * sizeof *v);
        if (!v) ok = joom(c);
        else {
            for (size_t i = 0; i < n; i++) v[i] = l->v[idx[i]];
            if (n) memcpy(l->v, v, n * sizeof *v);
            free(v);
        }
    }
    free(idx);
    free(tmp);
    return ok;
}

static struct jlist *copy_list(struct jctx *c, struct jlist *src) {
    struct jlist *l = jl_new(c, src->n);
    if (!l) return NULL;
    if (src->n) memcpy(l->v, src->v, src->n * sizeof(jv));
    l->n = src->n;
    return l;
}

static bool py_len(struct jctx *c, jv v, int64_t *n) {
    switch (v.t) {
    case JV_STR: *n = (int64_t)ju_len(v.u.s, v.n); return true;
    case JV_LIST: *n = (int64_t)v.u.l->n; return true;
    case JV_DICT: if (!v.flag) { *n = (int64_t)v.u.d->n; return true; } break;
    case JV_UNDEF: *n = 0; return true;
    default: break;
    }
    return jerr(c, "TypeError", "object of type '%s' has no len()", jv_typename(v));
}

static bool to_int(struct jctx *c, jv v, jv def, int64_t base, jv *out) {
    if (v.t == JV_INT) { *out = v; return true; }
    if (v.t == JV_BOOL) { *out = jv_int(v.u.b); return true; }
    if (v.t == JV_FLOAT) {
        if (isfinite(v.u.f) && fabs(v.u.f) < 9.2e18) { *out = jv_int((int64_t)v.u.f); return true; }
        *out = def;
        return true;
    }
    if (v.t == JV_STR) {
        char buf[64];
        size_t n = v.n < sizeof buf - 1 ? v.n : sizeof buf - 1;
        memcpy(buf, v.u.s, n);
        buf[n] = 0;
        char *e;
        long long x = strtoll(buf, &e, (int)base);
        while (*e == ' ' || *e == '\t' || *e == '\n') e++;
        if (e != buf && !*e) { *out = jv_int(x); return true; }
        double d = strtod(buf, &e);
        while (*e == ' ' || *e == '\t' || *e == '\n') e++;
        if (base == 10 && e != buf && !*e && isfinite(d) && fabs(d) < 9.2e18) { *out = jv_int((int64_t)d); return true; }
    }
    (void)c;
    *out = def;
    return true;
}

static bool tojson(struct jctx *c, jv in, const struct fargs *f, jv *out) {
    jv ea = argd(f, 0, "ensure_ascii", jv_bool(false)), ind = argd(f, 1, "indent", jv_none()),
       sep = argd(f, 2, "separators", jv_none()), sk = argd(f, 3, "sort_keys", jv_bool(false));
    int indent = -1;
    if (ind.t == JV_INT) indent = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : (int)ind.u.i;
    else if (ind.t != JV_NONE) return jerr(c, "TypeError", "tojson: indent must be an integer or None");
    char *isep = NULL, *ksep = NULL;
    if (sep.t == JV_LIST) {
        if (sep.u.l->n != 2 || sep.u.l->v[0].t != JV_STR || sep.u.l->v[1].t != JV_STR)
            return jerr(c, "ValueError", "tojson: separators must be a pair of strings");
        isep = ja_strdup(&c->arena, sep.u.l->v[0].u.s, sep.u.l->v[0].n);
        ksep = ja_strdup(&c->arena, sep.u.l->v[1].u.s, sep.u.l->v[1].n);
        if (!isep || !ksep) return joom(c);
    } else if (sep.t != JV_NONE) return jerr(c, "TypeError", "tojson: separators must be a pair of strings");
    struct jbuf b = {.limit = c->max_output};
    if (!jv_write_json(c, &b, in, jv_truthy(ea), indent, isep, ksep, jv_truthy(sk))) {
        free(b.p);
        return false;
    }
    *out = jv_make_str(c, &b);
    return !c->failed;
}

static bool indent(struct jctx *c, jv s, const struct fargs *f, jv *out) {
    jv w = argd(f, 0, "width", jv_int(4)), first = argd(f, 1, "first", jv_bool(false)),
       blank = argd(f, 2, "blank", jv_bool(false));
    struct jbuf ind = {0};
    if (w.t == JV_STR) jbuf_put(&ind, w.u.s, w.n);
    else if (w.t == JV_INT && w.u.i >= 0 && w.u.i < 4096)
        for (int64_t i = 0; i < w.u.i; i++) jbuf_putc(&ind, ' ');
    else return jerr(c, "TypeError", "indent width must be an integer or a string");
    jv sn;
    if (!jv_to_str(c, s, &sn)) return free(ind.p), false;
    struct jbuf t = {0};
    jbuf_put(&t, sn.u.s, sn.n);
    jbuf_putc(&t, '\n');
    jv withnl = jv_make_str(c, &t), lines;
    if (c->failed || !jstr_splitlines(c, withnl, false, &lines)) return free(ind.p), false;
    struct jbuf b = {.limit = c->max_output};
    const char *is = ind.p ? ind.p : "";
    if (jv_truthy(first)) jbuf_put(&b, is, ind.n);
    struct jlist *l = lines.u.l;
    for (size_t i = 0; i < l->n; i++) {
        if (i) {
            jbuf_putc(&b, '\n');
            if (jv_truthy(blank) || l->v[i].n) jbuf_put(&b, is, ind.n);
        }
        jbuf_put(&b, l->v[i].u.s, l->v[i].n);
    }
    free(ind.p);
    *out = jv_make_str(c, &b);
    return !c->failed;
}

/* select / reject / selectattr / rejectattr / map */
static bool select_like(struct jctx *c, jv in, const struct fargs *f, bool attr, bool keep, jv *out) {
    struct jlist *items, *res = jl_new(c, 0);
    if (!res || !jiter(c, in, &items)) return false;
    size_t first = attr ? 1 : 0;
    jv attrname = jv_undef(NULL), testname = jv_undef(NULL);
    if (attr && !arg(f, 0, "attribute", &attrname)) return jerr(c, "TypeError", "selectattr needs an attribute");
    bool has_test = first < f->na;
    if (has_test) testname = f->a[first];
    char tname[64] = "";
    if (has_test) {
        if (testname.t != JV_STR || testname.n >= sizeof tname) return jerr(c, "TypeError", "test name must be a string");
        memcpy(tname, testname.u.s, testname.n);
        tname[testname.n] = 0;
    }
    for (size_t i = 0; i < items->n; i++) {
        jv v = items->v[i];
        if (attr && !attr_path(c, v, attrname, &v)) return false;
        bool r;
        if (has_test) {
            if (!jtest(c, tname, v, f->a + first + 1, f->na - first - 1, &r)) return false;
        } else r = jv_truthy(v);
        if (r == keep && !jl_push(c, res, items->v[i])) return false;
    }
    *out = jv_list(res, false);
    return true;
}

static bool map_filter(struct jctx *c, jv in, const struct fargs *f, jv *out) {
    struct jlist *items, *res = jl_new(c, 0);
    if (!res || !jiter(c, in, &items)) return false;
    jv attrname, def = jv_undef(NULL);
    bool by_attr = false;
    for (size_t i = 0; i < f->nkw; i++) {
        if (!strcmp(f->kwn[i], "attribute")) { attrname = f->kwv[i]; by_attr = true; }
        else if (!strcmp(f->kwn[i], "default")) def = f->kwv[i];
    }
    char fname[64] = "";
    if (!by_attr) {
        if (f->na < 1 || f->a[0].t != JV_STR || f->a[0].n >= sizeof fname)
            return jerr(c, "TypeError", "map needs a filter name or attribute=");
        memcpy(fname, f->a[0].u.s, f->a[0].n);
    }
    for (size_t i = 0; i < items->n; i++) {
        jv v = items->v[i];
        if (by_attr) {
            if (!attr_path(c, v, attrname, &v)) return false;
            if (v.t == JV_UNDEF && def.t != JV_UNDEF) v = def;
        } else if (!jfilter(c, fname, v, f->a + 1, f->na - 1, NULL, NULL, 0, &v)) return false;
        if (!jl_push(c, res, v)) return false;
    }
    *out = jv_list(res, false);
    return true;
}

static bool minmax(struct jctx *c, jv in, const struct fargs *f, bool want_max, jv *out) {
    struct jlist *items;
    if (!jiter(c, in, &items)) return false;
    bool cs = jv_truthy(argd(f, 0, "case_sensitive", jv_bool(false)));
    jv at;
    bool has_attr = arg(f, 1, "attribute", &at);
    if (items->n == 0) {
        *out = jv_undef("min/max of an empty sequence");
        return true;
    }
    size_t best = 0;
    jv bk = items->v[0];
    if (has_attr && !attr_path(c, bk, at, &bk)) return false;
    bk = fold(c, bk, cs);
    for (size_t i = 1; i < items->n; i++) {
        jv k = items->v[i];
        if (has_attr && !attr_path(c, k, at, &k)) return false;
        k = fold(c, k, cs);
        int cmp;
        if (!jv_compare(c, k, bk, &cmp)) return false;
        if (want_max ? cmp > 0 : cmp < 0) {
            best = i;
            bk = k;
        }
    }
    *out = items->v[best];
    return true;
}

static bool html_escape(struct jctx *c, jv in, jv *out) {
    jv s;
    if (!jv_to_str(c, in, &s)) return false;
    struct jbuf b = {.limit = c->max_output};
    for (size_t i = 0; i < s.n; i++) {
        switch (s.u.s[i]) {
        case '&': jbuf_puts(&b, "&amp;"); break;
        case '<': jbuf_puts(&b, "&lt;"); break;
        case '>': jbuf_puts(&b, "&gt;"); break;
        case '"': jbuf_puts(&b, "&#34;"); break;
        case '\'': jbuf_puts(&b, "&#39;"); break;
        default: jbuf_putc(&b, s.u.s[i]);
        }
    }
    *out = jv_make_str(c, &b);
    return !c->failed;
}

bool jfilter(struct jctx *c, const char *name, jv in, jv *a, size_t na, const char **kwn, jv *kwv, size_t nkw,
             jv *out) {
    struct fargs F = {a, na, kwn, kwv, nkw}, *f = &F;
    const char *n = name;
    jv s;
    if (!strcmp(n, "tojson")) return tojson(c, in, f, out);
    if (!strcmp(n, "safe") || !strcmp(n, "string")) {
        if (n[1] == 'a' && in.t == JV_UNDEF) { *out = jv_strn("", 0); return true; }
        return jv_to_str(c, in, out);
    }
    if (!strcmp(n, "length") || !strcmp(n, "count")) {
        int64_t k = 0;
        if (!py_len(c, in, &k)) return false;
        *out = jv_int(k);
        return true;
    }
    if (!strcmp(n, "default") || !strcmp(n, "d")) {
        jv def = argd(f, 0, "default_value", jv_strn("", 0));
        bool boolean = jv_truthy(argd(f, 1, "boolean", jv_bool(false)));
        *out = in.t == JV_UNDEF || (boolean && !jv_truthy(in)) ? def : in;
        return true;
    }
    if (!strcmp(n, "trim")) {
        if (!jv_to_str(c, in, &s)) return false;
        return jstr_strip(c, s, argd(f, 0, "chars", jv_none()), 3, out);
    }
    if (!strcmp(n, "upper") || !strcmp(n, "lower") || !strcmp(n, "capitalize")) {
        if (!jv_to_str(c, in, &s)) return false;
        return jstr_case(c, s, n[0] == 'u' ? 1 : n[0] == 'l' ? 2 : 3, out);
    }
    if (!strcmp(n, "title")) { /* Jinja: words begin after -, whitespace, ( { [ < */
        if (!jv_to_str(c, in, &s)) return false;
        struct jbuf b = {.limit = c->max_output};
        bool start = true;
        for (size_t i = 0; i < s.n;) {
            uint32_t cp;
            int l = ju_next(s.u.s + i, s.n - i, &cp);
            jv ch = jv_strn(s.u.s + i, (size_t)l), r;
            bool sep = ju_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            if (!jstr_case(c, ch, sep ? 0 : start ? 1 : 2, &r)) return free(b.p), false;
            jbuf_put(&b, r.u.s, r.n);
            start = sep;
            i += (size_t)l;
        }
        *out = jv_make_str(c, &b);
        return !c->failed;
    }
    if (!strcmp(n, "replace")) {
        if (!jv_to_str(c, in, &s)) return false;
        jv old, nw, cnt = argd(f, 2, "count", jv_none());
        if (!arg(f, 0, "old", &old) || !arg(f, 1, "new", &nw)) return jerr(c, "TypeError", "replace needs old and new");
        return jstr_replace(c, s, old, nw, cnt.t == JV_INT ? cnt.u.i : -1, out);
    }
    if (!strcmp(n, "first") || !strcmp(n, "last")) {
        struct jlist *l;
        if (!jiter(c, in, &l)) return false;
        *out = l->n ? l->v[n[0] == 'f' ? 0 : l->n - 1] : jv_undef(n);
        return true;
    }
    if (!strcmp(n, "join")) {
        struct jlist *l;
        if (!jiter(c, in, &l)) return false;
        jv d = argd(f, 0, "d", jv_strn("", 0)), at;
        bool has_attr = arg(f, 1, "attribute", &at);
        struct jbuf b = {.limit = c->max_output};
        for (size_t i = 0; i < l->n; i++) {
            jv v = l->v[i];
            if (has_attr && !attr_path(c, v, at, &v)) return free(b.p), false;
            if (i && !jv_write_str(c, &b, d)) return free(b.p), false;
            if (!jv_write_str(c, &b, v)) return free(b.p), false;
        }
        *out = jv_make_str(c, &b);
        return !c->failed;
    }
    if (!strcmp(n, "int")) {
        jv base = argd(f, 1, "base", jv_int(10));
        return to_int(c, in, argd(f, 0, "default", jv_int(0)), base.t == JV_INT ? base.u.i : 10, out);
    }
    if (!strcmp(n, "float")) {
        jv def = argd(f, 0, "default", jv_float(0.0));
        if (in.t == JV_FLOAT) *out = in;
        else if (in.t == JV_INT || in.t == JV_BOOL) *out = jv_float(in.t == JV_INT ? (double)in.u.i : in.u.b);
        else if (in.t == JV_STR) {
            char buf[64], *e;
            size_t k = in.n < 63 ? in.n : 63;
            memcpy(buf, in.u.s, k);
            buf[k] = 0;
            double d = strtod(buf, &e);
            while (*e == ' ' || *e == '\n' || *e == '\t') e++;
            *out = e != buf && !*e ? jv_float(d) : def;
        } else *out = def;
        return true;
    }
    if (!strcmp(n, "abs")) {
        if (in.t == JV_INT) *out = jv_int(in.u.i < 0 ? -in.u.i : in.u.i);
        else if (in.t == JV_FLOAT) *out = jv_float(fabs(in.u.f));
        else return jerr(c, "TypeError", "bad operand type for abs(): '%s'", jv_typename(in));
        return true;
    }
    if (!strcmp(n, "round")) {
        jv p = argd(f, 0, "precision", jv_int(0)), m = argd(f, 1, "method", jv_strn("common", 6));
        double x = in.t == JV_FLOAT ? in.u.f : in.t == JV_INT ? (double)in.u.i : NAN;
        if (isnan(x) && in.t != JV_FLOAT) return jerr(c, "TypeError", "round needs a number");
        double sc = pow(10, p.t == JV_INT ? (double)p.u.i : 0);
        double r = jv_is_str(m, "floor") ? floor(x * sc) / sc : jv_is_str(m, "ceil") ? ceil(x * sc) / sc
                                                                                     : rint(x * sc) / sc;
        *out = jv_float(r);
        return true;
    }
    if (!strcmp(n, "list")) {
        struct jlist *l;
        if (!jiter(c, in, &l) || !(l = copy_list(c, l))) return false;
        *out = jv_list(l, false);
        return true;
    }
    if (!strcmp(n, "items")) {
        if (in.t == JV_UNDEF) { struct jlist *l = jl_new(c, 0); if (!l) return false; *out = jv_list(l, false); return true; }
        if (in.t != JV_DICT) return jerr(c, "TypeError", "Can only get item pairs from a mapping.");
        if (!jmethod(c, in, "items", NULL, 0, NULL, NULL, 0, out)) return false;
        out->flag = 0;
        return true;
    }
    if (!strcmp(n, "dictsort")) {
        if (in.t != JV_DICT) return jerr(c, "TypeError", "dictsort needs a mapping");
        jv items;
        if (!jmethod(c, in, "items", NULL, 0, NULL, NULL, 0, &items)) return false;
        bool cs = jv_truthy(argd(f, 0, "case_sensitive", jv_bool(false)));
        jv by = argd(f, 1, "by", jv_strn("key", 3));
        bool rev = jv_truthy(argd(f, 2, "reverse", jv_bool(false)));
        int pos = jv_is_str(by, "value") ? 1 : 0;
        struct jlist *l = items.u.l;
        jv *keys = ja_alloc(&c->arena, (l->n + 1) * sizeof(jv));
        if (!keys) return joom(c);
        for (size_t i = 0; i < l->n; i++) keys[i] = fold(c, l->v[i].u.l->v[pos], cs);
        if (!sort_list(c, l, keys, rev)) return false;
        *out = jv_list(l, false);
        return true;
    }
    if (!strcmp(n, "sort")) {
        struct jlist *l;
        if (!jiter(c, in, &l) || !(l = copy_list(c, l))) return false;
        bool rev = jv_truthy(argd(f, 0, "reverse", jv_bool(false)));
        bool cs = jv_truthy(argd(f, 1, "case_sensitive", jv_bool(false)));
        jv at;
        bool has_attr = arg(f, 2, "attribute", &at);
        jv *keys = ja_alloc(&c->arena, (l->n + 1) * sizeof(jv));
        if (!keys) return joom(c);
        for (size_t i = 0; i < l->n; i++) {
            keys[i] = l->v[i];
            if (has_attr && !attr_path(c, keys[i], at, &keys[i])) return false;
            keys[i] = fold(c, keys[i], cs);
        }
        if (!sort_list(c, l, keys, rev)) return false;
        *out = jv_list(l, false);
        return true;
    }
    if (!strcmp(n, "unique")) {
        struct jlist *l, *res = jl_new(c, 0);
        if (!res || !jiter(c, in, &l)) return false;
        bool cs = jv_truthy(argd(f, 0, "case_sensitive", jv_bool(false)));
        jv at;
        bool has_attr = arg(f, 1, "attribute", &at);
        struct jlist *seen = jl_new(c, 0);
        if (!seen) return false;
        for (size_t i = 0; i < l->n; i++) {
            jv k = l->v[i];
            if (has_attr && !attr_path(c, k, at, &k)) return false;
            k = fold(c, k, cs);
            bool dup = false;
            for (size_t j = 0; j < seen->n && !dup; j++) dup = jv_equal(seen->v[j], k);
            if (!dup && (!jl_push(c, seen, k) || !jl_push(c, res, l->v[i]))) return false;
        }
        *out = jv_list(res, false);
        return true;
    }
    if (!strcmp(n, "reverse")) {
        if (in.t == JV_STR) {
            struct jbuf b = {0};
            for (size_t i = in.n; i > 0;) {
                size_t q = i - 1;
                while (q > 0 && ((unsigned char)in.u.s[q] & 0xc0) == 0x80) q--;
                jbuf_put(&b, in.u.s + q, i - q);
                i = q;
            }
            *out = jv_make_str(c, &b);
            return !c->failed;
        }
        struct jlist *l, *r;
        if (!jiter(c, in, &l) || !(r = jl_new(c, l->n))) return false;
        for (size_t i = 0; i < l->n; i++) r->v[i] = l->v[l->n - 1 - i];
        r->n = l->n;
        *out = jv_list(r, false);
        return true;
    }
    if (!strcmp(n, "min") || !strcmp(n, "max")) return minmax(c, in, f, n[1] == 'a', out);
    if (!strcmp(n, "sum")) {
        struct jlist *l;
        if (!jiter(c, in, &l)) return false;
        jv at, acc = argd(f, 1, "start", jv_int(0));
        bool has_attr = arg(f, 0, "attribute", &at);
        for (size_t i = 0; i < l->n; i++) {
            jv v = l->v[i];
            if (has_attr && !attr_path(c, v, at, &v)) return false;
            if (acc.t == JV_INT && v.t == JV_INT) {
                if (__builtin_add_overflow(acc.u.i, v.u.i, &acc.u.i)) return jerr(c, "OverflowError", "integer too large");
            } else if ((acc.t == JV_INT || acc.t == JV_FLOAT) && (v.t == JV_INT || v.t == JV_FLOAT))
                acc = jv_float((acc.t == JV_INT ? (double)acc.u.i : acc.u.f) + (v.t == JV_INT ? (double)v.u.i : v.u.f));
            else return jerr(c, "TypeError", "unsupported operand type(s) for +: '%s' and '%s'", jv_typename(acc), jv_typename(v));
        }
        *out = acc;
        return true;
    }
    if (!strcmp(n, "indent")) return indent(c, in, f, out);
    if (!strcmp(n, "select") || !strcmp(n, "reject")) return select_like(c, in, f, false, n[0] == 's', out);
    if (!strcmp(n, "selectattr") || !strcmp(n, "rejectattr")) return select_like(c, in, f, true, n[0] == 's', out);
    if (!strcmp(n, "map")) return map_filter(c, in, f, out);
    if (!strcmp(n, "attr")) {
        jv at;
        if (!arg(f, 0, "name", &at) || at.t != JV_STR) return jerr(c, "TypeError", "attr needs a name");
        char *k = ja_strdup(&c->arena, at.u.s, at.n);
        if (!k) return joom(c);
        return jgetattr(c, in, k, out);
    }
    if (!strcmp(n, "format")) {
        if (!jv_to_str(c, in, &s)) return false;
        if (nkw) {
            struct jdict *d = jd_new(c, nkw);
            if (!d) return false;
            for (size_t i = 0; i < nkw; i++)
                if (!jd_set(c, d, jv_strn(kwn[i], strlen(kwn[i])), kwv[i])) return false;
            return jpy_percent(c, s, jv_dict(d), out);
        }
        struct jlist *l = jl_new(c, na);
        if (!l) return false;
        if (na) memcpy(l->v, a, na * sizeof(jv));
        l->n = na;
        return jpy_percent(c, s, jv_list(l, true), out);
    }
    if (!strcmp(n, "escape") || !strcmp(n, "e") || !strcmp(n, "forceescape")) return html_escape(c, in, out);
    if (!strcmp(n, "wordcount")) {
        if (!jv_to_str(c, in, &s)) return false;
        jv words;
        if (!jmethod(c, s, "split", NULL, 0, NULL, NULL, 0, &words)) return false;
        *out = jv_int((int64_t)words.u.l->n);
        return true;
    }
    if (!strcmp(n, "center")) {
        if (!jv_to_str(c, in, &s)) return false;
        jv w = argd(f, 0, "width", jv_int(80));
        return jmethod(c, s, "center", &w, 1, NULL, NULL, 0, out);
    }
    if (!strcmp(n, "batch")) {
        struct jlist *l, *res = jl_new(c, 0), *cur = NULL;
        jv size = argd(f, 0, "linecount", jv_int(1)), fill;
        bool has_fill = arg(f, 1, "fill_with", &fill);
        if (!res || !jiter(c, in, &l)) return false;
        if (size.t != JV_INT || size.u.i < 1) return jerr(c, "ValueError", "batch size must be a positive integer");
        for (size_t i = 0; i < l->n; i++) {
            if (!cur || (int64_t)cur->n == size.u.i) {
                if (!(cur = jl_new(c, 0)) || !jl_push(c, res, jv_list(cur, false))) return false;
            }
            if (!jl_push(c, cur, l->v[i])) return false;
        }
        if (cur && has_fill)
            while ((int64_t)cur->n < size.u.i)
                if (!jl_push(c, cur, fill)) return false;
        *out = jv_list(res, false);
        return true;
    }
    return jerr(c, "TemplateRuntimeError", "No filter named '%s'.", n);
}

bool jtest(struct jctx *c, const char *n, jv v, jv *a, size_t na, bool *out) {
    jv x = na ? a[0] : jv_undef(NULL);
    if (!strcmp(n, "defined")) *out = v.t != JV_UNDEF;
    else if (!strcmp(n, "undefined")) *out = v.t == JV_UNDEF;
    else if (!strcmp(n, "none")) *out = v.t == JV_NONE;
    else if (!strcmp(n, "string")) *out = v.t == JV_STR;
    else if (!strcmp(n, "mapping")) *out = v.t == JV_DICT && !v.flag;
    else if (!strcmp(n, "iterable")) *out = v.t == JV_STR || v.t == JV_LIST || (v.t == JV_DICT && !v.flag) || v.t == JV_UNDEF;
    else if (!strcmp(n, "sequence")) *out = v.t == JV_STR || v.t == JV_LIST || (v.t == JV_DICT && !v.flag) || v.t == JV_UNDEF;
    else if (!strcmp(n, "number")) *out = v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
    else if (!strcmp(n, "integer")) *out = v.t == JV_INT;
    else if (!strcmp(n, "float")) *out = v.t == JV_FLOAT;
    else if (!strcmp(n, "boolean")) *out = v.t == JV_BOOL;
    else if (!strcmp(n, "true")) *out = v.t == JV_BOOL && v.u.b;
    else if (!strcmp(n, "false")) *out = v.t == JV_BOOL && !v.u.b;
    else if (!strcmp(n, "callable")) *out = v.t == JV_MACRO || v.t == JV_BUILTIN || v.t == JV_BOUND;
    else if (!strcmp(n, "odd") || !strcmp(n, "even") || !strcmp(n, "divisibleby")) {
        int64_t d = 2, r;
        if (n[0] == 'd') {
            if (x.t != JV_INT || x.u.i == 0) return jerr(c, "TypeError", "divisibleby needs a non-zero integer");
            d = x.u.i;
        }
        if (v.t != JV_INT && v.t != JV_BOOL)
            return jerr(c, "TypeError", "unsupported operand type(s) for %%: '%s' and 'int'", jv_typename(v));
        r = (v.t == JV_INT ? v.u.i : v.u.b) % d;
        if (r < 0) r += d < 0 ? -d : d;
        *out = n[0] == 'o' ? r == 1 : r == 0;
    } else if (!strcmp(n, "equalto") || !strcmp(n, "eq") || !strcmp(n, "==") || !strcmp(n, "sameas"))
        *out = jv_equal(v, x) && (n[0] != 's' || v.t == x.t);
    else if (!strcmp(n, "ne") || !strcmp(n, "!=")) *out = !jv_equal(v, x);
    else if (!strcmp(n, "lt") || !strcmp(n, "le") || !strcmp(n, "gt") || !strcmp(n, "ge") ||
             !strcmp(n, "lessthan") || !strcmp(n, "greaterthan")) {
        int cmp;
        if (!jv_compare(c, v, x, &cmp)) return false;
        *out = n[0] == 'l' ? (n[1] == 'e' && n[2] == 0 ? cmp <= 0 : cmp < 0)
                           : (n[1] == 'e' && n[2] == 0 ? cmp >= 0 : cmp > 0);
    } else if (!strcmp(n, "in")) {
        jv r;
        struct jlist *l;
        if (x.t == JV_STR) {
            if (v.t != JV_STR) return jerr(c, "TypeError", "'in <string>' requires string as left operand");
            *out = v.n == 0 || memmem(x.u.s, x.n, v.u.s, v.n) != NULL;
        } else if (x.t == JV_DICT) *out = jd_get(x.u.d, v, &r);
        else {
            if (!jiter(c, x, &l)) return false;
            *out = false;
            for (size_t i = 0; i < l->n; i++)
                if (jv_equal(l->v[i], v)) *out = true;
        }
    } else if (!strcmp(n, "lower") || !strcmp(n, "upper")) {
        jv r;
        if (v.t != JV_STR) return jerr(c, "AttributeError", "'%s' object has no attribute 'is%s'", jv_typename(v), n);
        if (!jmethod(c, v, n[0] == 'l' ? "islower" : "isupper", NULL, 0, NULL, NULL, 0, &r)) return false;
        *out = r.u.b;
    } else return jerr(c, "TemplateRuntimeError", "No test named '%s'.", n);
    return true;
}
