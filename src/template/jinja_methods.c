/* jinja_methods.c — Python's methods on the values templates call them on:
 * str (strip family, split/rsplit/splitlines, startswith/endswith, replace,
 * case changes, find/count/index, join, format, is* predicates,
 * removeprefix/removesuffix), dict (items, keys, values, get, copy) and list
 * (index, count, copy), plus str.format and the % operator on strings. */
#include "template/jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const str_methods[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "replace", "upper",
    "lower", "title", "capitalize", "swapcase", "find", "rfind", "index", "rindex", "count", "join", "format",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric", "isdecimal", "removeprefix",
    "removesuffix", "zfill", "casefold", "partition", "rpartition", "ljust", "rjust", "center", NULL};

bool jmethod_exists(jv self, const char *name) {
    if (self.t != JV_STR) return false;
    for (const char *const *m = str_methods; *m; m++)
        if (!strcmp(*m, name)) return true;
    return false;
}

/* ---- case ---- */
static uint32_t up(uint32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if ((c >= 0xe0 && c <= 0xfe && c != 0xf7)) return c - 32;
    if (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2) return c - 32;
    if (c >= 0x430 && c <= 0x44f) return c - 32;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
    if (c >= 0x100 && c <= 0x17f && (c & 1) && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17f) return c - 1;
    return c;
}
static uint32_t low(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7)) return c + 32;
    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
    if (c >= 0x410 && c <= 0x42f) return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
    if (c >= 0x100 && c <= 0x17f && !(c & 1) && c != 0x130 && c != 0x138) return c + 1;
    return c;
}
static bool is_cased(uint32_t c) { return up(c) != c || low(c) != c; }
static bool is_alpha(uint32_t c) { return is_cased(c) || (c >= 0x80 && !ju_isspace(c) && c > 0x2ff); }
static bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }

/* mode: 1 upper, 2 lower, 3 capitalize, 4 swapcase, 5 title (str.title) */
bool jstr_case(struct jctx *c, jv s, int mode, jv *out) {
    struct jbuf b = {0};
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp, r;
        int l = ju_next(s.u.s + i, s.n - i, &cp);
        switch (mode) {
        case 0: r = cp; break;
        case 1: r = up(cp); break;
        case 2: r = low(cp); break;
        case 3: r = first ? up(cp) : low(cp); break;
        case 4: r = up(cp) != cp ? up(cp) : low(cp); break;
        default: r = prev_cased ? low(cp) : up(cp); prev_cased = is_cased(cp); break;
        }
        char tmp[4];
        if (r == cp) jbuf_put(&b, s.u.s + i, (size_t)l);
        else jbuf_put(&b, tmp, (size_t)ju_put(tmp, r));
        first = false;
        i += (size_t)l;
    }
    *out = jv_make_str(c, &b);
    return !c->failed;
}

/* ---- strip ---- */
static bool in_chars(uint32_t cp, jv chars) {
    if (chars.t != JV_STR) return ju_isspace(cp);
    for (size_t i = 0; i < chars.n;) {
        uint32_t x;
        i += (size_t)ju_next(chars.u.s + i, chars.n - i, &x);
        if (x == cp) return true;
    }
    return false;
}

bool jstr_strip(struct jctx *c, jv s, jv chars, int which, jv *out) {
    if (chars.t != JV_STR && chars.t != JV_NONE && chars.t != JV_UNDEF)
        return jerr(c, "TypeError", "strip arg must be None or str");
    size_t a = 0, b = s.n;
    if (which & 1)
        while (a < b) {
            uint32_t cp;
            int l = ju_next(s.u.s + a, b - a, &cp);
            if (!in_chars(cp, chars)) break;
            a += (size_t)l;
        }
    if (which & 2)
        while (b > a) {
            size_t q = b - 1;
            while (q > a && ((unsigned char)s.u.s[q] & 0xc0) == 0x80) q--;
            uint32_t cp;
            ju_next(s.u.s + q, b - q, &cp);
            if (!in_chars(cp, chars)) break;
            b = q;
        }
    *out = jv_strn(s.u.s + a, b - a);
    return true;
}

/* ---- split ---- */
static bool push_str(struct jctx *c, struct jlist *l, const char *s, size_t n) { return jl_push(c, l, jv_strn(s, n)); }

static bool str_split(struct jctx *c, jv s, jv sep, int64_t maxsplit, bool right, jv *out) {
    struct jlist *l = jl_new(c, 0);
    if (!l) return false;
    if (sep.t == JV_STR && sep.n == 0) return jerr(c, "ValueError", "empty separator");
    if (sep.t == JV_STR) {
        if (!right) {
            size_t i = 0;
            int64_t k = 0;
            for (;;) {
                const char *f = (maxsplit < 0 || k < maxsplit) ? memmem(s.u.s + i, s.n - i, sep.u.s, sep.n) : NULL;
                if (!f) break;
                if (!push_str(c, l, s.u.s + i, (size_t)(f - s.u.s) - i)) return false;
                i = (size_t)(f - s.u.s) + sep.n;
                k++;
            }
            if (!push_str(c, l, s.u.s + i, s.n - i)) return false;
        } else {
            /* from the right: collect then reverse */
            size_t end = s.n;
            int64_t k = 0;
            struct jlist *r = jl_new(c, 0);
            if (!r) return false;
            while (maxsplit < 0 || k < maxsplit) {
                size_t p = end;
                bool found = false;
                while (p >= sep.n) {
                    if (memcmp(s.u.s + p - sep.n, sep.u.s, sep.n) == 0) {
                        found = true;
                        break;
                    }
                    p--;
                }
                if (!found) break;
                if (!push_str(c, r, s.u.s + p, end - p)) return false;
                end = p - sep.n;
                k++;
            }
            if (!push_str(c, l, s.u.s, end)) return false;
            for (size_t i = r->n; i-- > 0;)
                if (!jl_push(c, l, r->v[i])) return false;
        }
    } else {
        /* whitespace runs; empty strings dropped */
        size_t i = 0;
        int64_t k = 0;
        if (right) { /* rare: split all, then join the head back */
            jv all;
            if (!str_split(c, s, sep, -1, false, &all)) return false;
            struct jlist *w = all.u.l;
            if (maxsplit < 0 || (size_t)maxsplit >= w->n) {
                *out = all;
                return true;
            }
            size_t head = w->n - (size_t)maxsplit;
            const char *hs = w->v[0].u.s, *he = w->v[head - 1].u.s + w->v[head - 1].n;
            if (!push_str(c, l, hs, (size_t)(he - hs))) return false;
            for (size_t j = head; j < w->n; j++)
                if (!jl_push(c, l, w->v[j])) return false;
            *out = jv_list(l, false);
            return true;
        }
        for (;;) {
            while (i < s.n) {
                uint32_t cp;
                int n = ju_next(s.u.s + i, s.n - i, &cp);
                if (!ju_isspace(cp)) break;
                i += (size_t)n;
            }
            if (i >= s.n) break;
            if (maxsplit >= 0 && k >= maxsplit) {
                size_t e = s.n;
                if (!push_str(c, l, s.u.s + i, e - i)) return false;
                break;
            }
            size_t j = i;
            while (j < s.n) {
                uint32_t cp;
                int n = ju_next(s.u.s + j, s.n - j, &cp);
                if (ju_isspace(cp)) break;
                j += (size_t)n;
            }
            if (!push_str(c, l, s.u.s + i, j - i)) return false;
            k++;
            i = j;
        }
    }
    *out = jv_list(l, false);
    return true;
}

static bool is_linebreak(uint32_t cp) {
    return cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1c && cp <= 0x1e) || cp == 0x85 ||
           cp == 0x2028 || cp == 0x2029;
}

bool jstr_splitlines(struct jctx *c, jv s, bool keepends, jv *out) {
    struct jlist *l = jl_new(c, 0);
    if (!l) return false;
    size_t start = 0, i = 0;
    while (i < s.n) {
        uint32_t cp;
        int n = ju_next(s.u.s + i, s.n - i, &cp);
        if (is_linebreak(cp)) {
            size_t e = i;
            i += (size_t)n;
            if (cp == '\r' && i < s.n && s.u.s[i] == '\n') i++;
            if (!push_str(c, l, s.u.s + start, (keepends ? i : e) - start)) return false;
            start = i;
        } else i += (size_t)n;
    }
    if (start < s.n && !push_str(c, l, s.u.s + start, s.n - start)) return false;
    *out = jv_list(l, false);
    return true;
}

bool jstr_replace(struct jctx *c, jv s, jv old, jv new_, int64_t count, jv *out) {
    if (old.t != JV_STR || new_.t != JV_STR)
        return jerr(c, "TypeError", "replace() argument must be str, not %s",
                    jv_typename(old.t != JV_STR ? old : new_));
    struct jbuf b = {.limit = c->max_output};
    int64_t k = 0;
    if (old.n == 0) {
        for (size_t i = 0; i <= s.n;) {
            if (count < 0 || k < count) {
                jbuf_put(&b, new_.u.s, new_.n);
                k++;
            }
            if (i == s.n) break;
            uint32_t cp;
            int n = ju_next(s.u.s + i, s.n - i, &cp);
            jbuf_put(&b, s.u.s + i, (size_t)n);
            i += (size_t)n;
        }
    } else {
        size_t i = 0;
        for (;;) {
            const char *f = (count < 0 || k < count) ? memmem(s.u.s + i, s.n - i, old.u.s, old.n) : NULL;
            if (!f) break;
            jbuf_put(&b, s.u.s + i, (size_t)(f - s.u.s) - i);
            jbuf_put(&b, new_.u.s, new_.n);
            i = (size_t)(f - s.u.s) + old.n;
            k++;
        }
        jbuf_put(&b, s.u.s + i, s.n - i);
    }
    *out = jv_make_str(c, &b);
    return !c->failed;
}

static bool affix(struct jctx *c, jv s, jv p, bool end, bool *out) {
    if (p.t == JV_LIST && p.flag == 1) {
        *out = false;
        for (size_t i = 0; i < p.u.l->n; i++) {
            bool r;
            if (!affix(c, s, p.u.l->v[i], end, &r)) return false;
            if (r) *out = true;
        }
        return true;
    }
    if (p.t != JV_STR)
        return jerr(c, "TypeError", "%s first arg must be str or a tuple of str, not %s",
                    end ? "endswith" : "startswith", jv_typename(p));
    *out = p.n <= s.n && memcmp(end ? s.u.s + s.n - p.n : s.u.s, p.u.s, p.n) == 0;
    return true;
}

/* code point index of byte offset */
static int64_t cp_index(const char *s, size_t off) { return (int64_t)ju_len(s, off); }

static bool need(struct jctx *c, const char *name, size_t nargs, size_t lo, size_t hi) {
    if (nargs < lo || nargs > hi)
        return jerr(c, "TypeError", "%s() takes %zu to %zu arguments (%zu given)", name, lo, hi, nargs);
    return true;
}

static bool all_cp(jv s, bool (*pred)(uint32_t), bool *out) {
    *out = s.n > 0;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        i += (size_t)ju_next(s.u.s + i, s.n - i, &cp);
        if (!pred(cp)) *out = false;
    }
    return true;
}
static bool p_alnum(uint32_t c) { return is_alpha(c) || is_digit(c); }

static bool str_method(struct jctx *c, jv s, const char *m, jv *a, size_t na, const char **kwn, jv *kwv, size_t nkw,
                       jv *out) {
    jv none = jv_none();
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        if (!need(c, m, na, 0, 1)) return false;
        return jstr_strip(c, s, na ? a[0] : none, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3, out);
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        jv sep = na > 0 ? a[0] : none;
        int64_t maxsplit = -1;
        if (na > 1 && a[1].t == JV_INT) maxsplit = a[1].u.i;
        for (size_t i = 0; i < nkw; i++) {
            if (!strcmp(kwn[i], "sep")) sep = kwv[i];
            else if (!strcmp(kwn[i], "maxsplit") && kwv[i].t == JV_INT) maxsplit = kwv[i].u.i;
        }
        if (sep.t != JV_STR && sep.t != JV_NONE) return jerr(c, "TypeError", "must be str or None, not %s", jv_typename(sep));
        return str_split(c, s, sep, maxsplit, m[0] == 'r', out);
    }
    if (!strcmp(m, "splitlines")) return jstr_splitlines(c, s, na && jv_truthy(a[0]), out);
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        if (!need(c, m, na, 1, 1)) return false;
        bool r;
        if (!affix(c, s, a[0], m[0] == 'e', &r)) return false;
        *out = jv_bool(r);
        return true;
    }
    if (!strcmp(m, "replace")) {
        if (!need(c, m, na, 2, 3)) return false;
        return jstr_replace(c, s, a[0], a[1], na > 2 && a[2].t == JV_INT ? a[2].u.i : -1, out);
    }
    if (!strcmp(m, "upper")) return jstr_case(c, s, 1, out);
    if (!strcmp(m, "lower") || !strcmp(m, "casefold")) return jstr_case(c, s, 2, out);
    if (!strcmp(m, "capitalize")) return jstr_case(c, s, 3, out);
    if (!strcmp(m, "swapcase")) return jstr_case(c, s, 4, out);
    if (!strcmp(m, "title")) return jstr_case(c, s, 5, out);
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "rindex") ||
        !strcmp(m, "count")) {
        if (!need(c, m, na, 1, 1)) return false;
        if (a[0].t != JV_STR) return jerr(c, "TypeError", "must be str, not %s", jv_typename(a[0]));
        jv sub = a[0];
        if (m[0] == 'c') {
            int64_t k = 0;
            if (sub.n == 0) k = (int64_t)ju_len(s.u.s, s.n) + 1;
            else
                for (const char *p = s.u.s; (p = memmem(p, s.n - (size_t)(p - s.u.s), sub.u.s, sub.n)); p += sub.n) k++;
            *out = jv_int(k);
            return true;
        }
        int64_t pos = -1;
        if (m[0] == 'r') {
            for (size_t i = s.n + 1; i-- > 0;)
                if (i + sub.n <= s.n && memcmp(s.u.s + i, sub.u.s, sub.n) == 0) {
                    pos = cp_index(s.u.s, i);
                    break;
                }
        } else {
            const char *f = sub.n ? memmem(s.u.s, s.n, sub.u.s, sub.n) : s.u.s;
            if (f) pos = cp_index(s.u.s, (size_t)(f - s.u.s));
        }
        if (pos < 0 && strstr(m, "index")) return jerr(c, "ValueError", "substring not found");
        *out = jv_int(pos);
        return true;
    }
    if (!strcmp(m, "join")) {
        if (!need(c, m, na, 1, 1)) return false;
        struct jlist *l;
        if (!jiter(c, a[0], &l)) return false;
        struct jbuf b = {.limit = c->max_output};
        for (size_t i = 0; i < l->n; i++) {
            if (l->v[i].t != JV_STR) {
                free(b.p);
                return jerr(c, "TypeError", "sequence item %zu: expected str instance, %s found", i,
                            jv_typename(l->v[i]));
            }
            if (i) jbuf_put(&b, s.u.s, s.n);
            jbuf_put(&b, l->v[i].u.s, l->v[i].n);
        }
        *out = jv_make_str(c, &b);
        return !c->failed;
    }
    if (!strcmp(m, "format")) return jpy_format(c, s, a, na, kwn, kwv, nkw, out);
    bool r = false;
    if (!strcmp(m, "isdigit") || !strcmp(m, "isnumeric") || !strcmp(m, "isdecimal")) all_cp(s, is_digit, &r);
    else if (!strcmp(m, "isalpha")) all_cp(s, is_alpha, &r);
    else if (!strcmp(m, "isalnum")) all_cp(s, p_alnum, &r);
    else if (!strcmp(m, "isspace")) all_cp(s, ju_isspace, &r);
    else if (!strcmp(m, "islower") || !strcmp(m, "isupper")) {
        bool any = false, bad = false, want_low = m[2] == 'l';
        for (size_t i = 0; i < s.n;) {
            uint32_t cp;
            i += (size_t)ju_next(s.u.s + i, s.n - i, &cp);
            if (!is_cased(cp)) continue;
            any = true;
            if (want_low ? up(cp) == cp : low(cp) == cp) bad = true;
        }
        r = any && !bad;
    } else if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        if (!need(c, m, na, 1, 1)) return false;
        if (a[0].t != JV_STR) return jerr(c, "TypeError", "must be str, not %s", jv_typename(a[0]));
        bool suf = m[6] == 's';
        bool hit;
        affix(c, s, a[0], suf, &hit);
        *out = !hit ? s : suf ? jv_strn(s.u.s, s.n - a[0].n) : jv_strn(s.u.s + a[0].n, s.n - a[0].n);
        return true;
    } else if (!strcmp(m, "partition") || !strcmp(m, "rpartition")) {
        if (!need(c, m, na, 1, 1)) return false;
        if (a[0].t != JV_STR || a[0].n == 0) return jerr(c, "ValueError", "empty separator");
        struct jlist *l = jl_new(c, 3);
        if (!l) return false;
        const char *f = NULL;
        if (m[0] == 'r') {
            for (size_t i = s.n + 1; i-- > 0;)
                if (i + a[0].n <= s.n && memcmp(s.u.s + i, a[0].u.s, a[0].n) == 0) {
                    f = s.u.s + i;
                    break;
                }
        } else f = memmem(s.u.s, s.n, a[0].u.s, a[0].n);
        if (!f) {
            l->v[0] = m[0] == 'r' ? jv_strn("", 0) : s;
            l->v[1] = jv_strn("", 0);
            l->v[2] = m[0] == 'r' ? s : jv_strn("", 0);
        } else {
            l->v[0] = jv_strn(s.u.s, (size_t)(f - s.u.s));
            l->v[1] = a[0];
            l->v[2] = jv_strn(f + a[0].n, s.n - (size_t)(f - s.u.s) - a[0].n);
        }
        l->n = 3;
        *out = jv_list(l, true);
        return true;
    } else if (!strcmp(m, "zfill") || !strcmp(m, "ljust") || !strcmp(m, "rjust") || !strcmp(m, "center")) {
        if (!need(c, m, na, 1, 2) || a[0].t != JV_INT) return jerr(c, "TypeError", "%s() needs an integer width", m);
        int64_t w = a[0].u.i, len = (int64_t)ju_len(s.u.s, s.n);
        if (w > (int64_t)c->max_output) return joom(c);
        jv fill = na > 1 ? a[1] : jv_strn(m[0] == 'z' ? "0" : " ", 1);
        if (fill.t != JV_STR || ju_len(fill.u.s, fill.n) != 1)
            return jerr(c, "TypeError", "The fill character must be exactly one character long");
        int64_t pad = w > len ? w - len : 0, left = m[0] == 'r' || m[0] == 'z' ? pad : m[0] == 'c' ? pad / 2 + (pad & w & 1) : 0;
        struct jbuf b = {0};
        for (int64_t i = 0; i < left; i++) jbuf_put(&b, fill.u.s, fill.n);
        jbuf_put(&b, s.u.s, s.n);
        for (int64_t i = left; i < pad; i++) jbuf_put(&b, fill.u.s, fill.n);
        *out = jv_make_str(c, &b);
        return !c->failed;
    } else return jerr(c, "TypeError", "str has no method '%s'", m);
    *out = jv_bool(r);
    return true;
}

bool jmethod(struct jctx *c, jv self, const char *m, jv *a, size_t na, const char **kwn, jv *kwv, size_t nkw,
             jv *out) {
    if (self.t == JV_STR) return str_method(c, self, m, a, na, kwn, kwv, nkw, out);
    if (self.t == JV_DICT) {
        struct jdict *d = self.u.d;
        if (!strcmp(m, "get")) {
            if (!need(c, m, na, 1, 2)) return false;
            if (!jd_get(d, a[0], out)) *out = na > 1 ? a[1] : jv_none();
            return true;
        }
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            struct jlist *l = jl_new(c, d->n);
            if (!l) return false;
            for (size_t i = 0; i < d->n; i++) {
                if (m[0] == 'k') l->v[i] = d->k[i];
                else if (m[0] == 'v') l->v[i] = d->v[i];
                else {
                    struct jlist *p = jl_new(c, 2);
                    if (!p) return false;
                    p->v[0] = d->k[i];
                    p->v[1] = d->v[i];
                    p->n = 2;
                    l->v[i] = jv_list(p, true);
                }
            }
            l->n = d->n;
            *out = jv_list(l, false);
            out->flag = m[0] == 'i' ? 2 : m[0] == 'k' ? 3 : 4; /* dict_items / dict_keys / dict_values */
            return true;
        }
        if (!strcmp(m, "copy")) {
            struct jdict *n = jd_new(c, d->n);
            if (!n) return false;
            for (size_t i = 0; i < d->n; i++)
                if (!jd_set(c, n, d->k[i], d->v[i])) return false;
            *out = jv_dict(n);
            return true;
        }
    }
    if (self.t == JV_LIST) {
        struct jlist *l = self.u.l;
        if (!strcmp(m, "index") || !strcmp(m, "count")) {
            if (!need(c, m, na, 1, 1)) return false;
            int64_t k = 0, pos = -1;
            for (size_t i = 0; i < l->n; i++)
                if (jv_equal(l->v[i], a[0])) {
                    if (pos < 0) pos = (int64_t)i;
                    k++;
                }
            if (m[0] == 'i' && pos < 0) return jerr(c, "ValueError", "value is not in list");
            *out = jv_int(m[0] == 'i' ? pos : k);
            return true;
        }
        if (!strcmp(m, "copy")) {
            struct jlist *n = jl_new(c, l->n);
            if (!n) return false;
            if (l->n) memcpy(n->v, l->v, l->n * sizeof(jv));
            n->n = l->n;
            *out = jv_list(n, self.flag);
            return true;
        }
    }
    return jerr(c, "TypeError", "'%s' object has no method '%s'", jv_typename(self), m);
}

/* ---- str.format ---- */
bool jpy_format(struct jctx *c, jv fmt, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw, jv *out) {
    struct jbuf b = {.limit = c->max_output};
    size_t auto_i = 0;
    const char *s = fmt.u.s;
    size_t n = fmt.n;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '}' ) {
            if (i + 1 < n && s[i + 1] == '}') i++;
            else return free(b.p), jerr(c, "ValueError", "Single '}' encountered in format string");
            jbuf_putc(&b, '}');
            continue;
        }
        if (s[i] != '{') {
            jbuf_putc(&b, s[i]);
            continue;
        }
        if (i + 1 < n && s[i + 1] == '{') {
            jbuf_putc(&b, '{');
            i++;
            continue;
        }
        const char *e = memchr(s + i, '}', n - i);
        if (!e) return free(b.p), jerr(c, "ValueError", "Single '{' encountered in format string");
        const char *f = s + i + 1;
        size_t fl = (size_t)(e - f);
        size_t name_len = 0;
        while (name_len < fl && f[name_len] != '!' && f[name_len] != ':') name_len++;
        bool conv_r = name_len + 1 < fl && f[name_len] == '!' && f[name_len + 1] == 'r';
        const char *spec = memchr(f, ':', fl);
        if (spec && spec + 1 < e) return free(b.p), jerr(c, "ValueError", "format specs in str.format are not supported");
        jv v;
        if (name_len == 0) {
            if (auto_i >= nargs) return free(b.p), jerr(c, "IndexError", "Replacement index %zu out of range for positional args tuple", auto_i);
            v = args[auto_i++];
        } else if (f[0] >= '0' && f[0] <= '9') {
            size_t k = (size_t)strtoul(f, NULL, 10);
            if (k >= nargs) return free(b.p), jerr(c, "IndexError", "Replacement index %zu out of range for positional args tuple", k);
            v = args[k];
        } else {
            size_t k;
            for (k = 0; k < nkw; k++)
                if (strlen(kwn[k]) == name_len && !memcmp(kwn[k], f, name_len)) break;
            if (k == nkw) return free(b.p), jerr(c, "KeyError", "'%.*s'", (int)name_len, f);
            v = kwv[k];
        }
        if (!(conv_r ? jv_write_repr(c, &b, v) : jv_write_str(c, &b, v))) return free(b.p), false;
        i = (size_t)(e - s);
    }
    *out = jv_make_str(c, &b);
    return !c->failed;
}

/* ---- "fmt" % args ---- */
bool jpy_percent(struct jctx *c, jv fmt, jv arg, jv *out) {
    struct jbuf b = {.limit = c->max_output};
    size_t ai = 0;
    bool tuple = arg.t == JV_LIST && arg.flag == 1;
    const char *s = fmt.u.s;
    size_t n = fmt.n;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            jbuf_putc(&b, s[i]);
            continue;
        }
        if (++i >= n) return free(b.p), jerr(c, "ValueError", "incomplete format");
        jv v;
        if (s[i] == '%') {
            jbuf_putc(&b, '%');
            continue;
        }
        bool named = false;
        if (s[i] == '(') {
            const char *e = memchr(s + i, ')', n - i);
            if (!e || arg.t != JV_DICT) return free(b.p), jerr(c, "TypeError", "format requires a mapping");
            jv key = jv_strn(s + i + 1, (size_t)(e - s) - i - 1);
            if (!jd_get(arg.u.d, key, &v)) return free(b.p), jerr(c, "KeyError", "'%.*s'", (int)key.n, key.u.s);
            i = (size_t)(e - s) + 1;
            named = true;
        }
        char spec[32] = "%";
        size_t k = 1;
        while (i < n && strchr("-+ #0123456789.", s[i]) && k < sizeof spec - 4) spec[k++] = s[i++];
        if (i >= n) return free(b.p), jerr(c, "ValueError", "incomplete format");
        char conv = s[i];
        if (!named) {
            if (tuple) {
                if (ai >= arg.u.l->n) return free(b.p), jerr(c, "TypeError", "not enough arguments for format string");
                v = arg.u.l->v[ai++];
            } else {
                if (ai++ > 0) return free(b.p), jerr(c, "TypeError", "not enough arguments for format string");
                v = arg;
            }
        }
        if (conv == 's' || conv == 'r') {
            struct jbuf t = {0};
            bool ok = conv == 's' ? jv_write_str(c, &t, v) : jv_write_repr(c, &t, v);
            if (!ok) return free(t.p), free(b.p), false;
            spec[k++] = 's';
            spec[k] = 0;
            int w = atoi(spec + 1 + (spec[1] == '-'));
            size_t len = ju_len(t.p ? t.p : "", t.n);
            if (spec[1] != '-')
                for (size_t x = len; (int)x < w; x++) jbuf_putc(&b, ' ');
            jbuf_put(&b, t.p ? t.p : "", t.n);
            if (spec[1] == '-')
                for (size_t x = len; (int)x < w; x++) jbuf_putc(&b, ' ');
            free(t.p);
        } else if (strchr("diouxXeEfFgG", conv)) {
            bool isint = v.t == JV_INT || v.t == JV_BOOL;
            double d = v.t == JV_FLOAT ? v.u.f : isint ? (double)(v.t == JV_INT ? v.u.i : v.u.b) : NAN;
            if (v.t != JV_FLOAT && !isint)
                return free(b.p), jerr(c, "TypeError", "%%%c format: a real number is required, not %s", conv, jv_typename(v));
            if (strchr("diouxX", conv)) {
                spec[k++] = 'l';
                spec[k++] = 'l';
                spec[k++] = conv == 'i' || conv == 'u' ? 'd' : conv;
                spec[k] = 0;
                jbuf_printf(&b, spec, isint ? (long long)(v.t == JV_INT ? v.u.i : v.u.b) : (long long)d);
            } else {
                spec[k++] = conv;
                spec[k] = 0;
                jbuf_printf(&b, spec, d);
            }
        } else return free(b.p), jerr(c, "ValueError", "unsupported format character '%c'", conv);
    }
    if (tuple && ai < arg.u.l->n) return free(b.p), jerr(c, "TypeError", "not all arguments converted during string formatting");
    *out = jv_make_str(c, &b);
    return !c->failed;
}
