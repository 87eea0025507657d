/* jinja_globals.c — the functions a chat template can call by name, as
 * transformers provides them: raise_exception (the template's own error),
 * strftime_now (the clock, or the date the caller fixed), range (bounded
 * like the sandbox's MAX_RANGE), namespace and dict. */
#include "template/jinja_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RANGE 100000

static bool builtin_strftime(struct jctx *c, jv fmt, jv *out) {
    if (fmt.t != JV_STR) return jerr(c, "TypeError", "strftime_now() argument must be str, not %s", jv_typename(fmt));
    struct tm tmv = {0};
    const struct lmc_jinja_opts *o = c->opts;
    if (o && o->now_set) {
        tmv.tm_year = o->now_year - 1900;
        tmv.tm_mon = o->now_month - 1;
        tmv.tm_mday = o->now_day;
        tmv.tm_hour = o->now_hour;
        tmv.tm_min = o->now_min;
        tmv.tm_sec = o->now_sec;
        time_t t = timegm(&tmv); /* fills in the weekday and the day of the year */
        gmtime_r(&t, &tmv);
    } else {
        time_t now = time(NULL);
        localtime_r(&now, &tmv);
    }
    char f[256], res[1024];
    if (fmt.n >= sizeof f) return jerr(c, "ValueError", "strftime format too long");
    memcpy(f, fmt.u.s, fmt.n);
    f[fmt.n] = 0;
    size_t k = strftime(res, sizeof res, f, &tmv);
    *out = jv_str_dup(c, res, k);
    return !c->failed;
}

bool jbuiltin(struct jctx *c, int id, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw, jv *out) {
    switch (id) {
    case JB_RAISE: {
        jv m = nargs ? args[0] : jv_strn("", 0);
        struct jbuf b = {0};
        if (!jv_write_str(c, &b, m)) return free(b.p), false;
        jerr(c, "TemplateError", "%s", b.p ? b.p : "");
        free(b.p);
        return false;
    }
    case JB_STRFTIME:
        if (nargs != 1) return jerr(c, "TypeError", "strftime_now() takes one argument");
        return builtin_strftime(c, args[0], out);
    case JB_RANGE: {
        int64_t a = 0, b, st = 1;
        for (size_t i = 0; i < nargs; i++) {
            if (args[i].t == JV_BOOL) args[i] = jv_int(args[i].u.b);
            if (args[i].t != JV_INT)
                return jerr(c, "TypeError", "'%s' object cannot be interpreted as an integer", jv_typename(args[i]));
        }
        if (nargs == 1) b = args[0].u.i;
        else if (nargs == 2 || nargs == 3) {
            a = args[0].u.i;
            b = args[1].u.i;
            if (nargs == 3) st = args[2].u.i;
        } else return jerr(c, "TypeError", "range expected 1 to 3 arguments, got %zu", nargs);
        if (st == 0) return jerr(c, "ValueError", "range() arg 3 must not be zero");
        double cnt = st > 0 ? ceil(((double)b - (double)a) / (double)st) : ceil(((double)a - (double)b) / (double)-st);
        if (cnt > MAX_RANGE)
            return jerr(c, "OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
                        MAX_RANGE);
        struct jlist *l = jl_new(c, cnt > 0 ? (size_t)cnt : 0);
        if (!l) return false;
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st) l->v[l->n++] = jv_int(i);
        *out = jv_list(l, false);
        return true;
    }
    case JB_NAMESPACE:
    case JB_DICT: {
        struct jdict *d = jd_new(c, 0);
        if (!d) return false;
        for (size_t i = 0; i < nargs; i++) {
            if (args[i].t == JV_DICT) {
                for (size_t k = 0; k < args[i].u.d->n; k++)
                    if (!jd_set(c, d, args[i].u.d->k[k], args[i].u.d->v[k])) return false;
            } else if (args[i].t == JV_LIST) {
                for (size_t k = 0; k < args[i].u.l->n; k++) {
                    jv p = args[i].u.l->v[k];
                    if (p.t != JV_LIST || p.u.l->n != 2)
                        return jerr(c, "ValueError", "dictionary update sequence element has wrong length");
                    if (!jd_set(c, d, p.u.l->v[0], p.u.l->v[1])) return false;
                }
            } else return jerr(c, "TypeError", "'%s' object is not iterable", jv_typename(args[i]));
        }
        for (size_t i = 0; i < nkw; i++)
            if (!jd_set(c, d, jv_strn(kwn[i], strlen(kwn[i])), kwv[i])) return false;
        *out = jv_dict(d);
        out->flag = id == JB_NAMESPACE;
        return true;
    }
    }
    return jerr(c, "TypeError", "unknown builtin");
}

