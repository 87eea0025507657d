/* jinja_eval.c — runs a parsed template: scopes (a fresh scope per loop
 * iteration and macro call, as Jinja compiles them), expressions with
 * Python's operator semantics and error wording, attribute and item access
 * (dict keys, methods, loop fields; mutating list and dict methods refused
 * as the immutable sandbox refuses them), statements, macros with caller,
 * the globals (raise_exception, strftime_now, range, namespace, dict), and
 * the bounds on steps, depth, output and memory. */
#include "template/jinja_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool jerr(struct jctx *c, const char *kind, const char *fmt, ...) {
    if (c->failed) return false;
    c->failed = true;
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lmc_status st = !strcmp(kind, "MemoryError") ? LMC_ERR_OOM
                  : !strcmp(kind, "TemplateSyntaxError") ? LMC_ERR_FORMAT : LMC_ERR_ARG;
    if (!strcmp(kind, "TemplateError")) lmc_err_set(c->err, st, "TemplateError: %s", msg);
    else lmc_err_set(c->err, st, "%s: %s (template line %d)", kind, msg, c->line);
    return false;
}

bool joom(struct jctx *c) {
    return jerr(c, "MemoryError", "rendering exceeds its memory or output limit");
}

bool jstep(struct jctx *c) {
    if (++c->steps > c->max_steps)
        return jerr(c, "SecurityError", "the template ran more than %lld steps", (long long)c->max_steps);
    return true;
}

/* ---- scopes ---- */
static struct jframe *frame_new(struct jctx *c, struct jframe *parent) {
    struct jframe *f = ja_alloc(&c->arena, sizeof *f);
    if (!f) return joom(c), NULL;
    f->parent = parent;
    return f;
}

static bool frame_set(struct jctx *c, struct jframe *f, const char *name, jv v) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->v[i].name, name)) {
            f->v[i].val = v;
            return true;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct jvar *p = ja_alloc(&c->arena, cap * sizeof *p);
        if (!p) return joom(c);
        if (f->n) memcpy(p, f->v, f->n * sizeof *p);
        f->v = p;
        f->cap = cap;
    }
    f->v[f->n++] = (struct jvar){name, v};
    return true;
}

static bool frame_get(struct jframe *f, const char *name, jv *out) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (!strcmp(f->v[i].name, name)) {
                *out = f->v[i].val;
                return true;
            }
    return false;
}

static bool exec_body(struct jctx *c, struct jframe *f, struct jnode **kids, size_t n);

/* ---- attribute and item access ---- */
static const char *const dict_methods[] = {"items", "keys", "values", "get", "pop", "update", "copy", "setdefault",
                                           "clear", "popitem", NULL};
static const char *const list_methods[] = {"append", "pop", "extend", "insert", "remove", "sort", "reverse", "index",
                                           "count", "copy", "clear", NULL};

static bool in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return true;
    return false;
}

static bool undefined_error(struct jctx *c, jv u) {
    if (u.flag == 1) return jerr(c, "UndefinedError", "'dict object' has no attribute '%s'", u.u.s ? u.u.s : "?");
    if (u.flag == 2) return jerr(c, "UndefinedError", "object has no attribute or item '%s'", u.u.s ? u.u.s : "?");
    return jerr(c, "UndefinedError", "'%s' is undefined", u.u.s ? u.u.s : "value");
}

static jv bound(struct jctx *c, jv self, const char *name) {
    struct jbound *b = ja_alloc(&c->arena, sizeof *b);
    if (!b) {
        joom(c);
        return jv_undef(NULL);
    }
    b->self = self;
    b->name = name;
    jv v = {0};
    v.t = JV_BOUND;
    v.u.bm = b;
    return v;
}

static jv undef_attr(const char *name, int kind) {
    jv u = jv_undef(name);
    u.flag = (uint8_t)kind;
    return u;
}

bool jgetattr(struct jctx *c, jv obj, const char *name, jv *out) {
    switch (obj.t) {
    case JV_UNDEF: return undefined_error(c, obj);
    case JV_DICT:
        if (obj.flag) {
            if (!jd_get_str(obj.u.d, name, out)) *out = undef_attr(name, 2);
            return true;
        }
        if (in_list(dict_methods, name)) *out = bound(c, obj, name);
        else if (!jd_get_str(obj.u.d, name, out)) *out = undef_attr(name, 1);
        return !c->failed;
    case JV_LIST:
        *out = in_list(list_methods, name) ? bound(c, obj, name) : undef_attr(name, 2);
        return !c->failed;
    case JV_STR:
        *out = jmethod_exists(obj, name) ? bound(c, obj, name) : undef_attr(name, 2);
        return !c->failed;
    case JV_LOOP: {
        struct jloop *l = obj.u.loop;
        int64_t i = l->index0, n = l->length;
        if (!strcmp(name, "index")) *out = jv_int(i + 1);
        else if (!strcmp(name, "index0")) *out = jv_int(i);
        else if (!strcmp(name, "revindex")) *out = jv_int(n - i);
        else if (!strcmp(name, "revindex0")) *out = jv_int(n - i - 1);
        else if (!strcmp(name, "first")) *out = jv_bool(i == 0);
        else if (!strcmp(name, "last")) *out = jv_bool(i == n - 1);
        else if (!strcmp(name, "length")) *out = jv_int(n);
        else if (!strcmp(name, "depth")) *out = jv_int(l->depth);
        else if (!strcmp(name, "depth0")) *out = jv_int(l->depth - 1);
        else if (!strcmp(name, "previtem")) *out = i > 0 ? l->items->v[i - 1] : jv_undef("previtem");
        else if (!strcmp(name, "nextitem")) *out = i + 1 < n ? l->items->v[i + 1] : jv_undef("nextitem");
        else if (!strcmp(name, "cycle")) *out = bound(c, obj, "cycle");
        else *out = undef_attr(name, 2);
        return !c->failed;
    }
    default: *out = undef_attr(name, 2); return true;
    }
}

static bool index_of(int64_t i, size_t n, size_t *out) {
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *out = (size_t)i;
    return true;
}

/* byte offset of code point k in s (n bytes) */
static size_t cp_offset(const char *s, size_t n, size_t k) {
    size_t i = 0;
    while (k-- > 0 && i < n) {
        uint32_t cp;
        i += (size_t)ju_next(s + i, n - i, &cp);
    }
    return i;
}

bool jgetitem(struct jctx *c, jv obj, jv key, jv *out) {
    if (obj.t == JV_UNDEF) return undefined_error(c, obj);
    if (key.t == JV_BOOL) key = jv_int(key.u.b);
    if (obj.t == JV_DICT) {
        if (jd_get(obj.u.d, key, out)) return true;
        if (key.t == JV_STR && !obj.flag) {
            char *k = ja_strdup(&c->arena, key.u.s, key.n);
            if (!k) return joom(c);
            if (in_list(dict_methods, k)) return jgetattr(c, obj, k, out);
            *out = undef_attr(k, 1);
            return true;
        }
        *out = jv_undef(NULL);
        return true;
    }
    if (key.t == JV_STR) {
        char *k = ja_strdup(&c->arena, key.u.s, key.n);
        if (!k) return joom(c);
        return jgetattr(c, obj, k, out);
    }
    size_t i;
    if (obj.t == JV_LIST && key.t == JV_INT) {
        if (index_of(key.u.i, obj.u.l->n, &i)) *out = obj.u.l->v[i];
        else *out = jv_undef("item");
        return true;
    }
    if (obj.t == JV_STR && key.t == JV_INT) {
        size_t len = ju_len(obj.u.s, obj.n);
        if (!index_of(key.u.i, len, &i)) {
            *out = jv_undef("item");
            return true;
        }
        size_t a = cp_offset(obj.u.s, obj.n, i), b = cp_offset(obj.u.s, obj.n, i + 1);
        *out = jv_strn(obj.u.s + a, b - a);
        return true;
    }
    *out = jv_undef(NULL);
    return true;
}

static bool slice_bound(struct jctx *c, const struct jnode *e, int64_t *v, bool *given) {
    *given = false;
    if (!e) return true;
    jv x;
    if (!jeval(c, e, &x)) return false;
    if (x.t == JV_NONE || x.t == JV_UNDEF) return true;
    if (x.t == JV_BOOL) x = jv_int(x.u.b);
    if (x.t != JV_INT) return jerr(c, "TypeError", "slice indices must be integers or None");
    *v = x.u.i;
    *given = true;
    return true;
}

static bool eval_slice(struct jctx *c, const struct jnode *n, jv *out) {
    jv obj;
    if (!jeval(c, n->a, &obj)) return false;
    int64_t a = 0, b = 0, st = 1;
    bool ga, gb, gs;
    if (!slice_bound(c, n->b, &a, &ga) || !slice_bound(c, n->c, &b, &gb) ||
        !slice_bound(c, n->nkids ? n->kids[0] : NULL, &st, &gs))
        return false;
    if (st == 0) return jerr(c, "ValueError", "slice step cannot be zero");
    if (obj.t == JV_UNDEF) return undefined_error(c, obj);
    int64_t len;
    if (obj.t == JV_LIST) len = (int64_t)obj.u.l->n;
    else if (obj.t == JV_STR) len = (int64_t)ju_len(obj.u.s, obj.n);
    else return jerr(c, "TypeError", "'%s' object is not subscriptable", jv_typename(obj));
    /* Python's slice.indices */
    if (!ga) a = st > 0 ? 0 : len - 1;
    else {
        if (a < 0) a += len;
        if (a < 0) a = st > 0 ? 0 : -1;
        if (a >= len) a = st > 0 ? len : len - 1;
    }
    if (!gb) b = st > 0 ? len : -1;
    else {
        if (b < 0) b += len;
        if (b < 0) b = st > 0 ? 0 : -1;
        if (b >= len) b = st > 0 ? len : len - 1;
    }
    if (obj.t == JV_LIST) {
        struct jlist *l = jl_new(c, 0);
        if (!l) return false;
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            if (!jl_push(c, l, obj.u.l->v[i])) return false;
        *out = jv_list(l, obj.flag == 1);
        return true;
    }
    if (st == 1) {
        size_t x = cp_offset(obj.u.s, obj.n, (size_t)a), y = b > a ? cp_offset(obj.u.s, obj.n, (size_t)b) : x;
        *out = jv_strn(obj.u.s + x, y - x);
        return true;
    }
    struct jbuf buf = {0};
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
        size_t x = cp_offset(obj.u.s, obj.n, (size_t)i), y = cp_offset(obj.u.s, obj.n, (size_t)i + 1);
        jbuf_put(&buf, obj.u.s + x, y - x);
    }
    *out = jv_make_str(c, &buf);
    return !c->failed;
}

bool jiter(struct jctx *c, jv v, struct jlist **out) {
    switch (v.t) {
    case JV_UNDEF: return (*out = jl_new(c, 0)) != NULL;
    case JV_LIST: *out = v.u.l; return true;
    case JV_DICT: {
        if (v.flag) break;
        struct jlist *l = jl_new(c, v.u.d->n);
        if (!l) return false;
        for (size_t i = 0; i < v.u.d->n; i++) l->v[l->n++] = v.u.d->k[i];
        *out = l;
        return true;
    }
    case JV_STR: {
        struct jlist *l = jl_new(c, 0);
        if (!l) return false;
        for (size_t i = 0; i < v.n;) {
            uint32_t cp;
            int k = ju_next(v.u.s + i, v.n - i, &cp);
            if (!jl_push(c, l, jv_strn(v.u.s + i, (size_t)k))) return false;
            i += (size_t)k;
        }
        *out = l;
        return true;
    }
    default: break;
    }
    return jerr(c, "TypeError", "'%s' object is not iterable", jv_typename(v));
}

/* ---- operators ---- */
static bool is_num(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double numd(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b; }
static int64_t numi(jv v) { return v.t == JV_INT ? v.u.i : v.t == JV_BOOL ? (int64_t)v.u.b : 0; }

static const char *op_sym(int op) {
    static const char *s[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    return op >= 1 && op <= 8 ? s[op] : "?";
}

static bool binop_err(struct jctx *c, int op, jv a, jv b) {
    if (a.t == JV_UNDEF) return undefined_error(c, a);
    if (b.t == JV_UNDEF) return undefined_error(c, b);
    if (op == JO_ADD && a.t == JV_STR) return jerr(c, "TypeError", "can only concatenate str (not \"%s\") to str", jv_typename(b));
    if (op == JO_ADD && a.t == JV_LIST) return jerr(c, "TypeError", "can only concatenate %s (not \"%s\") to %s",
                                                    jv_typename(a), jv_typename(b), jv_typename(a));
    return jerr(c, "TypeError", "unsupported operand type(s) for %s: '%s' and '%s'", op_sym(op), jv_typename(a),
                jv_typename(b));
}

static bool repeat(struct jctx *c, jv seq, int64_t k, jv *out) {
    if (k < 0) k = 0;
    if (seq.t == JV_STR) {
        if (seq.n && (uint64_t)k > c->max_output / seq.n) return joom(c);
        struct jbuf b = {0};
        for (int64_t i = 0; i < k; i++) jbuf_put(&b, seq.u.s, seq.n);
        *out = jv_make_str(c, &b);
        return !c->failed;
    }
    if (seq.u.l->n && (uint64_t)k > (uint64_t)c->max_steps / seq.u.l->n) return joom(c);
    struct jlist *l = jl_new(c, 0);
    if (!l) return false;
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < seq.u.l->n; j++)
            if (!jl_push(c, l, seq.u.l->v[j])) return false;
    *out = jv_list(l, seq.flag == 1);
    return true;
}

static bool contains(struct jctx *c, jv hay, jv needle, bool *out) {
    if (hay.t == JV_STR) {
        if (needle.t != JV_STR)
            return jerr(c, "TypeError", "'in <string>' requires string as left operand, not %s", jv_typename(needle));
        *out = needle.n == 0 || memmem(hay.u.s, hay.n, needle.u.s, needle.n) != NULL;
        return true;
    }
    if (hay.t == JV_DICT && !hay.flag) {
        jv x;
        *out = jd_get(hay.u.d, needle, &x);
        return true;
    }
    if (hay.t == JV_LIST) {
        *out = false;
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (jv_equal(hay.u.l->v[i], needle)) *out = true;
        return true;
    }
    if (hay.t == JV_UNDEF) {
        *out = false;
        return true;
    }
    return jerr(c, "TypeError", "argument of type '%s' is not iterable", jv_typename(hay));
}

static bool binop(struct jctx *c, int op, jv a, jv b, jv *out) {
    if (op == JO_CONCAT) {
        struct jbuf buf = {0};
        if (!jv_write_str(c, &buf, a) || !jv_write_str(c, &buf, b)) {
            free(buf.p);
            return false;
        }
        *out = jv_make_str(c, &buf);
        return !c->failed;
    }
    if (op == JO_EQ || op == JO_NE) {
        *out = jv_bool(jv_equal(a, b) == (op == JO_EQ));
        return true;
    }
    if (op >= JO_LT && op <= JO_GE) {
        int cmp;
        if (a.t == JV_UNDEF) return undefined_error(c, a);
        if (b.t == JV_UNDEF) return undefined_error(c, b);
        if (!jv_compare(c, a, b, &cmp)) return false;
        *out = jv_bool(op == JO_LT ? cmp < 0 : op == JO_LE ? cmp <= 0 : op == JO_GT ? cmp > 0 : cmp >= 0);
        return true;
    }
    if (op == JO_IN || op == JO_NOTIN) {
        bool r = false;
        if (!contains(c, b, a, &r)) return false;
        *out = jv_bool(r == (op == JO_IN));
        return true;
    }
    if (is_num(a) && is_num(b)) {
        bool ints = a.t != JV_FLOAT && b.t != JV_FLOAT;
        int64_t x = numi(a), y = numi(b), r;
        double fx = numd(a), fy = numd(b);
        switch (op) {
        case JO_ADD:
            if (ints) {
                if (__builtin_add_overflow(x, y, &r)) return jerr(c, "OverflowError", "integer too large");
                *out = jv_int(r);
            } else *out = jv_float(fx + fy);
            return true;
        case JO_SUB:
            if (ints) {
                if (__builtin_sub_overflow(x, y, &r)) return jerr(c, "OverflowError", "integer too large");
                *out = jv_int(r);
            } else *out = jv_float(fx - fy);
            return true;
        case JO_MUL:
            if (ints) {
                if (__builtin_mul_overflow(x, y, &r)) return jerr(c, "OverflowError", "integer too large");
                *out = jv_int(r);
            } else *out = jv_float(fx * fy);
            return true;
        case JO_DIV:
            if (fy == 0) return jerr(c, "ZeroDivisionError", "division by zero");
            *out = jv_float(fx / fy);
            return true;
        case JO_FLOORDIV:
        case JO_MOD:
            if (ints) {
                if (y == 0) return jerr(c, "ZeroDivisionError", "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) return jerr(c, "OverflowError", "integer too large");
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q--;
                    m += y;
                }
                *out = jv_int(op == JO_MOD ? m : q);
            } else {
                if (fy == 0) return jerr(c, "ZeroDivisionError", "float modulo");
                double q = floor(fx / fy), m = fx - q * fy;
                *out = jv_float(op == JO_MOD ? m : q);
            }
            return true;
        case JO_POW:
            if (ints && y >= 0) {
                int64_t acc = 1;
                for (int64_t i = 0; i < y; i++) {
                    if (__builtin_mul_overflow(acc, x, &acc)) return jerr(c, "OverflowError", "integer too large");
                    if (acc == 0 || acc == 1) break;
                }
                *out = jv_int(acc);
            } else *out = jv_float(pow(fx, fy));
            return true;
        }
    }
    if (op == JO_ADD && a.t == JV_STR && b.t == JV_STR) {
        struct jbuf buf = {0};
        jbuf_put(&buf, a.u.s, a.n);
        jbuf_put(&buf, b.u.s, b.n);
        *out = jv_make_str(c, &buf);
        return !c->failed;
    }
    if (op == JO_ADD && a.t == JV_LIST && b.t == JV_LIST && a.flag == b.flag) {
        struct jlist *l = jl_new(c, a.u.l->n + b.u.l->n);
        if (!l) return false;
        if (a.u.l->n) memcpy(l->v, a.u.l->v, a.u.l->n * sizeof(jv));
        if (b.u.l->n) memcpy(l->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof(jv));
        l->n = a.u.l->n + b.u.l->n;
        *out = jv_list(l, a.flag == 1);
        return true;
    }
    if (op == JO_MUL && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(c, a, numi(b), out);
    if (op == JO_MUL && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(c, b, numi(a), out);
    if (op == JO_MOD && a.t == JV_STR) return jpy_percent(c, a, b, out);
    return binop_err(c, op, a, b);
}

/* ---- calls ---- */
static bool eval_args(struct jctx *c, const struct jnode *n, jv **args, jv **kwv) {
    *args = *kwv = NULL;
    if (n->nkids) {
        *args = ja_alloc(&c->arena, n->nkids * sizeof(jv));
        if (!*args) return joom(c);
        for (size_t i = 0; i < n->nkids; i++)
            if (!jeval(c, n->kids[i], &(*args)[i])) return false;
    }
    if (n->nkids2) {
        *kwv = ja_alloc(&c->arena, (n->nkids2 + 1) * sizeof(jv));
        if (!*kwv) return joom(c);
        for (size_t i = 0; i < n->nkids2; i++)
            if (!jeval(c, n->kids2[i], &(*kwv)[i])) return false;
    }
    return true;
}

static bool call_macro(struct jctx *c, struct jmacro *m, jv *args, size_t nargs, const char **kwn, jv *kwv,
                       size_t nkw, jv *out) {
    const struct jnode *d = m->def;
    if (++c->depth > c->max_depth) return jerr(c, "RecursionError", "macros nested more than %d deep", c->max_depth);
    struct jframe *f = frame_new(c, m->closure);
    if (!f) return false;
    struct jlist *varargs = jl_new(c, 0);
    struct jdict *kwargs = jd_new(c, 0);
    if (!varargs || !kwargs) return false;
    bool *bound_p = ja_alloc(&c->arena, (d->nnames + 1) * sizeof(bool));
    if (!bound_p) return joom(c);
    for (size_t i = 0; i < nargs; i++) {
        if (i < d->nnames) {
            if (!frame_set(c, f, d->names[i], args[i])) return false;
            bound_p[i] = true;
        } else if (!jl_push(c, varargs, args[i])) return false;
    }
    for (size_t k = 0; k < nkw; k++) {
        if (!strcmp(kwn[k], "caller") && d->kind == JN_MACRO) {
            if (!frame_set(c, f, "caller", kwv[k])) return false;
            continue;
        }
        size_t i;
        for (i = 0; i < d->nnames; i++)
            if (!strcmp(d->names[i], kwn[k])) break;
        if (i < d->nnames) {
            if (bound_p[i])
                return jerr(c, "TypeError", "macro '%s' got multiple values for argument '%s'",
                            d->name ? d->name : "caller", kwn[k]);
            if (!frame_set(c, f, d->names[i], kwv[k])) return false;
            bound_p[i] = true;
        } else if (!jd_set(c, kwargs, jv_strn(kwn[k], strlen(kwn[k])), kwv[k])) return false;
    }
    for (size_t i = 0; i < d->nnames; i++)
        if (!bound_p[i] && !frame_set(c, f, d->names[i], jv_undef(d->names[i]))) return false;
    if (!frame_set(c, f, "varargs", jv_list(varargs, true)) || !frame_set(c, f, "kwargs", jv_dict(kwargs)))
        return false;
    /* defaults: evaluated now, in the macro's scope, seeing the parameters before them */
    struct jframe *saved_frame = c->frame;
    c->frame = f;
    for (size_t i = 0; i < d->nnames; i++) {
        if (bound_p[i] || i >= d->nkids2 || !d->kids2[i]) continue;
        jv v;
        if (!jeval(c, d->kids2[i], &v) || !frame_set(c, f, d->names[i], v)) {
            c->frame = saved_frame;
            return false;
        }
    }
    c->frame = saved_frame;
    struct jbuf buf = {0}, *saved_out = c->out;
    buf.limit = c->max_output;
    c->out = &buf;
    int saved_ctl = c->loop_ctl;
    bool ok = exec_body(c, f, d->b->kids, d->b->nkids);
    c->out = saved_out;
    c->loop_ctl = saved_ctl;
    c->depth--;
    if (!ok) {
        free(buf.p);
        return false;
    }
    *out = jv_make_str(c, &buf);
    return !c->failed;
}

bool jcall(struct jctx *c, jv fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw, jv *out) {
    if (!jstep(c)) return false;
    switch (fn.t) {
    case JV_MACRO: return call_macro(c, fn.u.m, args, nargs, kwn, kwv, nkw, out);
    case JV_BUILTIN: return jbuiltin(c, fn.u.builtin, args, nargs, kwn, kwv, nkw, out);
    case JV_BOUND: {
        jv self = fn.u.bm->self;
        const char *name = fn.u.bm->name;
        if (self.t == JV_LOOP && !strcmp(name, "cycle")) {
            if (!nargs) return jerr(c, "TypeError", "no items for cycling given");
            *out = args[self.u.loop->index0 % (int64_t)nargs];
            return true;
        }
        if ((self.t == JV_LIST && in_list(list_methods, name) && strcmp(name, "index") && strcmp(name, "count") &&
             strcmp(name, "copy")) ||
            (self.t == JV_DICT && in_list(dict_methods, name) && strcmp(name, "items") && strcmp(name, "keys") &&
             strcmp(name, "values") && strcmp(name, "get") && strcmp(name, "copy")))
            return jerr(c, "SecurityError", "access to attribute '%s' of '%s' object is unsafe.", name,
                        jv_typename(self));
        return jmethod(c, self, name, args, nargs, kwn, kwv, nkw, out);
    }
    case JV_UNDEF: return undefined_error(c, fn);
    default: return jerr(c, "TypeError", "'%s' object is not callable", jv_typename(fn));
    }
}

static bool eval_filter(struct jctx *c, const struct jnode *n, jv *out) {
    jv in;
    if (n->a->kind == JN_BLOCKVAL) in = c->blockval;
    else if (!jeval(c, n->a, &in)) return false;
    jv *args, *kwv;
    if (!eval_args(c, n, &args, &kwv)) return false;
    c->line = n->line;
    if (++c->depth > c->max_depth) return jerr(c, "RecursionError", "filters nested more than %d deep", c->max_depth);
    bool ok = jfilter(c, n->name, in, args, n->nkids, n->names, kwv, n->nkids2, out);
    c->depth--;
    return ok;
}

static bool jeval_node(struct jctx *c, const struct jnode *n, jv *out);

/* bounds the C recursion of long chains (a + b + c ..., x|f|g|...) that the parser builds without nesting */
bool jeval(struct jctx *c, const struct jnode *n, jv *out) {
    if (++c->eval_depth > 1000) {
        c->eval_depth--;
        return jerr(c, "RecursionError", "expression nested more than 1000 deep");
    }
    bool ok = jeval_node(c, n, out);
    c->eval_depth--;
    return ok;
}

static bool jeval_node(struct jctx *c, const struct jnode *n, jv *out) {
    if (!jstep(c)) return false;
    c->line = n->line;
    switch (n->kind) {
    case JN_LIT: *out = n->lit; return true;
    case JN_NAME:
        if (!frame_get(c->frame, n->name, out)) *out = jv_undef(n->name);
        return true;
    case JN_ATTR: {
        jv o;
        if (!jeval(c, n->a, &o)) return false;
        c->line = n->line;
        return jgetattr(c, o, n->name, out);
    }
    case JN_ITEM: {
        jv o, k;
        if (!jeval(c, n->a, &o) || !jeval(c, n->b, &k)) return false;
        c->line = n->line;
        return jgetitem(c, o, k, out);
    }
    case JN_SLICE: return eval_slice(c, n, out);
    case JN_CALL: {
        jv fn, *args, *kwv;
        if (!jeval(c, n->a, &fn) || !eval_args(c, n, &args, &kwv)) return false;
        c->line = n->line;
        return jcall(c, fn, args, n->nkids, n->names, kwv, n->nkids2, out);
    }
    case JN_FILTER: return eval_filter(c, n, out);
    case JN_TEST: {
        jv in, *args, *kwv;
        if (!jeval(c, n->a, &in) || !eval_args(c, n, &args, &kwv)) return false;
        c->line = n->line;
        bool r;
        if (!jtest(c, n->name, in, args, n->nkids, &r)) return false;
        *out = jv_bool(r != n->neg);
        return true;
    }
    case JN_BIN: {
        jv a, b;
        if (!jeval(c, n->a, &a) || !jeval(c, n->b, &b)) return false;
        c->line = n->line;
        return binop(c, n->op, a, b, out);
    }
    case JN_NEG:
    case JN_POS: {
        jv a;
        if (!jeval(c, n->a, &a)) return false;
        if (a.t == JV_BOOL) a = jv_int(a.u.b);
        if (a.t == JV_INT) {
            if (n->kind == JN_NEG && a.u.i == INT64_MIN) return jerr(c, "OverflowError", "integer too large");
            *out = jv_int(n->kind == JN_NEG ? -a.u.i : a.u.i);
        } else if (a.t == JV_FLOAT) *out = jv_float(n->kind == JN_NEG ? -a.u.f : a.u.f);
        else if (a.t == JV_UNDEF) return undefined_error(c, a);
        else return jerr(c, "TypeError", "bad operand type for unary %s: '%s'", n->kind == JN_NEG ? "-" : "+",
                         jv_typename(a));
        return true;
    }
    case JN_NOT: {
        jv a;
        if (!jeval(c, n->a, &a)) return false;
        *out = jv_bool(!jv_truthy(a));
        return true;
    }
    case JN_AND:
    case JN_OR: {
        jv a;
        if (!jeval(c, n->a, &a)) return false;
        if (jv_truthy(a) == (n->kind == JN_OR)) {
            *out = a;
            return true;
        }
        return jeval(c, n->b, out);
    }
    case JN_COND: {
        jv cond;
        if (!jeval(c, n->a, &cond)) return false;
        if (jv_truthy(cond)) return jeval(c, n->b, out);
        if (n->c) return jeval(c, n->c, out);
        *out = jv_undef(NULL);
        return true;
    }
    case JN_LIST:
    case JN_TUPLE: {
        struct jlist *l = jl_new(c, n->nkids);
        if (!l) return false;
        for (size_t i = 0; i < n->nkids; i++)
            if (!jeval(c, n->kids[i], &l->v[i])) return false;
        l->n = n->nkids;
        *out = jv_list(l, n->kind == JN_TUPLE);
        return true;
    }
    case JN_DICT: {
        struct jdict *d = jd_new(c, n->nkids);
        if (!d) return false;
        for (size_t i = 0; i < n->nkids; i++) {
            jv k = jv_none(), v = jv_none();
            if (!jeval(c, n->kids[i], &k) || !jeval(c, n->kids2[i], &v) || !jd_set(c, d, k, v)) return false;
        }
        *out = jv_dict(d);
        return true;
    }
    case JN_BLOCKVAL: *out = c->blockval; return true;
    default: return jerr(c, "TemplateSyntaxError", "statement used as an expression");
    }
}

/* ---- statements ---- */
static bool emit(struct jctx *c, jv v) {
    if (!jv_write_str(c, c->out, v)) return false;
    if (c->out->over) return joom(c);
    return true;
}

static bool assign(struct jctx *c, const char *const *names, size_t nn, jv v) {
    if (nn == 1) return frame_set(c, c->frame, names[0], v);
    struct jlist *l;
    if (!jiter(c, v, &l)) return false;
    if (l->n != nn)
        return jerr(c, "ValueError", l->n > nn ? "too many values to unpack (expected %zu)"
                                               : "not enough values to unpack (expected %zu)", nn);
    for (size_t i = 0; i < nn; i++)
        if (!frame_set(c, c->frame, names[i], l->v[i])) return false;
    return true;
}

/* renders kids into a fresh buffer; *out the text */
static bool capture(struct jctx *c, struct jnode **kids, size_t n, jv *out) {
    struct jbuf buf = {0}, *saved = c->out;
    buf.limit = c->max_output;
    c->out = &buf;
    bool ok = exec_body(c, c->frame, kids, n);
    c->out = saved;
    if (!ok) {
        free(buf.p);
        return false;
    }
    *out = jv_make_str(c, &buf);
    return !c->failed;
}

static bool exec_for(struct jctx *c, const struct jnode *n) {
    if (n->recursive) return jerr(c, "TemplateSyntaxError", "recursive for loops are not supported");
    jv it;
    if (!jeval(c, n->a, &it)) return false;
    c->line = n->line;
    struct jlist *items;
    if (!jiter(c, it, &items)) return false;
    struct jframe *outer = c->frame;
    if (n->b) { /* the loop's filter runs before loop.length is known */
        struct jlist *kept = jl_new(c, 0);
        if (!kept) return false;
        for (size_t i = 0; i < items->n; i++) {
            struct jframe *f = frame_new(c, outer);
            if (!f) return false;
            c->frame = f;
            jv cond;
            bool ok = assign(c, n->names, n->nnames, items->v[i]) && jeval(c, n->b, &cond);
            c->frame = outer;
            if (!ok) return false;
            if (jv_truthy(cond) && !jl_push(c, kept, items->v[i])) return false;
        }
        items = kept;
    }
    struct jloop *lp = ja_alloc(&c->arena, sizeof *lp);
    if (!lp) return joom(c);
    jv parent_loop;
    (void)parent_loop;
    lp->depth = 1; /* depth counts recursive loop() calls only, which are not supported */
    lp->items = items;
    lp->length = (int64_t)items->n;
    jv lv = {0};
    lv.t = JV_LOOP;
    lv.u.loop = lp;
    for (size_t i = 0; i < items->n; i++) {
        if (!jstep(c)) return false;
        lp->index0 = (int64_t)i;
        struct jframe *f = frame_new(c, outer);
        if (!f) return false;
        c->frame = f;
        bool ok = frame_set(c, f, "loop", lv) && assign(c, n->names, n->nnames, items->v[i]);
        c->frame = outer;
        if (!ok || !exec_body(c, f, n->kids, n->nkids)) return false;
        int ctl = c->loop_ctl;
        c->loop_ctl = 0;
        if (ctl == 1) break;
    }
    if (items->n == 0 && n->nkids2) return exec_body(c, outer, n->kids2, n->nkids2);
    return true;
}

static bool exec_stmt(struct jctx *c, const struct jnode *n) {
    if (!jstep(c)) return false;
    c->line = n->line;
    switch (n->kind) {
    case JN_TEXT:
        if (!jbuf_put(c->out, n->lit.u.s, n->lit.n)) return joom(c);
        return true;
    case JN_OUT: {
        jv v;
        return jeval(c, n->a, &v) && emit(c, v);
    }
    case JN_IF: {
        jv cond;
        if (!jeval(c, n->a, &cond)) return false;
        if (jv_truthy(cond)) return exec_body(c, c->frame, n->kids, n->nkids);
        return exec_body(c, c->frame, n->kids2, n->nkids2);
    }
    case JN_FOR: return exec_for(c, n);
    case JN_SET: {
        jv v;
        return jeval(c, n->a, &v) && assign(c, n->names, n->nnames, v);
    }
    case JN_SETATTR: {
        jv ns, v;
        if (!jeval(c, n->a, &v)) return false;
        if (!frame_get(c->frame, n->name, &ns) || ns.t != JV_DICT || !ns.flag)
            return jerr(c, "TemplateRuntimeError", "cannot assign attribute on non-namespace object");
        return jd_set(c, ns.u.d, jv_strn(n->name2, strlen(n->name2)), v);
    }
    case JN_SETBLOCK: {
        jv v;
        if (!capture(c, n->kids, n->nkids, &v)) return false;
        if (n->a) {
            jv saved = c->blockval;
            c->blockval = v;
            bool ok = jeval(c, n->a, &v);
            c->blockval = saved;
            if (!ok) return false;
        }
        return frame_set(c, c->frame, n->names[0], v);
    }
    case JN_FILTERBLOCK: {
        jv v;
        if (!capture(c, n->kids, n->nkids, &v)) return false;
        jv saved = c->blockval;
        c->blockval = v;
        bool ok = jeval(c, n->a, &v);
        c->blockval = saved;
        return ok && emit(c, v);
    }
    case JN_MACRO: {
        struct jmacro *m = ja_alloc(&c->arena, sizeof *m);
        if (!m) return joom(c);
        m->def = n;
        m->closure = c->frame;
        jv v = {0};
        v.t = JV_MACRO;
        v.u.m = m;
        return frame_set(c, c->frame, n->name, v);
    }
    case JN_CALLBLOCK: {
        struct jmacro *m = ja_alloc(&c->arena, sizeof *m);
        if (!m) return joom(c);
        m->def = n;
        m->closure = c->frame;
        jv caller = {0};
        caller.t = JV_MACRO;
        caller.u.m = m;
        const struct jnode *call = n->a;
        jv fn, *args, *kwv, r;
        if (!jeval(c, call->a, &fn) || !eval_args(c, call, &args, &kwv)) return false;
        const char **kwn = ja_alloc(&c->arena, (call->nkids2 + 1) * sizeof *kwn);
        jv *kwv2 = ja_alloc(&c->arena, (call->nkids2 + 1) * sizeof *kwv2);
        if (!kwn || !kwv2) return joom(c);
        for (size_t i = 0; i < call->nkids2; i++) {
            kwn[i] = call->names[i];
            kwv2[i] = kwv[i];
        }
        kwn[call->nkids2] = "caller";
        kwv2[call->nkids2] = caller;
        return jcall(c, fn, args, call->nkids, kwn, kwv2, call->nkids2 + 1, &r) && emit(c, r);
    }
    case JN_BREAK:
        c->loop_ctl = 1;
        return true;
    case JN_CONTINUE:
        c->loop_ctl = 2;
        return true;
    case JN_BODY: return exec_body(c, c->frame, n->kids, n->nkids);
    default: {
        jv v;
        return jeval(c, n, &v);
    }
    }
}

static bool exec_body(struct jctx *c, struct jframe *f, struct jnode **kids, size_t n) {
    struct jframe *saved = c->frame;
    c->frame = f;
    bool ok = true;
    for (size_t i = 0; i < n && ok && !c->loop_ctl; i++) ok = exec_stmt(c, kids[i]);
    c->frame = saved;
    return ok;
}

lmc_status lmc_jinja_render(const lmc_jinja_tmpl *t, const cJSON *vars, const struct lmc_jinja_opts *opts,
                            char **out, size_t *out_len, lmc_err *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    struct lmc_jinja_opts o = opts ? *opts : (struct lmc_jinja_opts){0};
    if (!o.max_output) o.max_output = (size_t)16 << 20;
    if (!o.max_steps) o.max_steps = 10000000;
    if (!o.max_depth) o.max_depth = 200;
    if (!o.max_memory) o.max_memory = (size_t)256 << 20;
    lmc_err local;
    struct jbuf buf = {.limit = o.max_output};
    struct jctx c = {.out = &buf, .err = err ? err : &local, .max_steps = o.max_steps, .max_depth = o.max_depth,
                     .max_output = o.max_output, .opts = &o};
    c.arena.cap = o.max_memory;
    bool ok = (c.globals = frame_new(&c, NULL)) != NULL;
    static const struct { const char *name; int id; } globals[] = {
        {"raise_exception", JB_RAISE}, {"strftime_now", JB_STRFTIME}, {"range", JB_RANGE},
        {"namespace", JB_NAMESPACE}, {"dict", JB_DICT}};
    for (size_t i = 0; ok && i < sizeof globals / sizeof *globals; i++) {
        jv v = {0};
        v.t = JV_BUILTIN;
        v.u.builtin = globals[i].id;
        ok = frame_set(&c, c.globals, globals[i].name, v);
    }
    if (ok && vars && cJSON_IsObject(vars))
        for (const cJSON *e = vars->child; e && ok; e = e->next) {
            jv v;
            ok = e->string && jv_from_cjson(&c, e, &v) && frame_set(&c, c.globals, e->string, v);
        }
    struct jframe *top = ok ? frame_new(&c, c.globals) : NULL;
    ok = ok && top && exec_body(&c, top, t->root->kids, t->root->nkids);
    if (ok && buf.over) ok = joom(&c);
    lmc_status st = LMC_OK;
    if (!ok) {
        if (!c.failed) joom(&c);
        st = c.err->status ? c.err->status : LMC_ERR_ARG;
        free(buf.p);
    } else {
        if (!buf.p && !jbuf_put(&buf, "", 0)) {
            st = lmc_err_set(err, LMC_ERR_OOM, "out of memory");
        } else {
            *out = buf.p;
            if (out_len) *out_len = buf.n;
        }
    }
    ja_free(&c.arena);
    return st;
}
