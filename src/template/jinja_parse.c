/* jinja_parse.c — turns the token list into a syntax tree with Jinja's
 * grammar and operator precedence (conditional < or < and < not < compare <
 * + - < ~ < * / // % < ** < unary < filters and tests < postfix), and the
 * statements chat templates use: if/elif/else, for (targets, condition,
 * else), set (plain, tuple, namespace attribute, block with filters), macro,
 * call, filter, break/continue, generation. Nesting is bounded. */
#include "template/jinja_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NEST 256

struct parser {
    struct jarena *a;
    struct jtok *t;
    size_t n, i;
    int depth;
    lmc_err *err;
    bool failed;
};

static bool perr(struct parser *P, const char *fmt, const char *arg) {
    if (!P->failed) {
        char msg[256];
        snprintf(msg, sizeof msg, fmt, arg ? arg : "");
        lmc_err_set(P->err, LMC_ERR_FORMAT, "TemplateSyntaxError: %s (template line %d)", msg, P->t[P->i].line);
    }
    P->failed = true;
    return false;
}

static struct jtok *cur(struct parser *P) { return &P->t[P->i]; }
static bool is_op(struct parser *P, const char *op) {
    struct jtok *t = cur(P);
    return t->kind == JT_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}
static bool is_name(struct parser *P, const char *name) {
    struct jtok *t = cur(P);
    return t->kind == JT_NAME && t->n == strlen(name) && memcmp(t->s, name, t->n) == 0;
}
static bool is_op_at(struct parser *P, size_t k, const char *op) {
    if (P->i + k >= P->n) return false;
    struct jtok *t = &P->t[P->i + k];
    return t->kind == JT_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}
static void adv(struct parser *P) {
    if (P->t[P->i].kind != JT_EOF) P->i++;
}
static bool expect_op(struct parser *P, const char *op) {
    if (!is_op(P, op)) return perr(P, "expected '%s'", op);
    adv(P);
    return true;
}

static struct jnode *node(struct parser *P, int kind) {
    struct jnode *n = ja_alloc(P->a, sizeof *n);
    if (!n) {
        if (!P->failed) lmc_err_set(P->err, LMC_ERR_OOM, "template too large");
        P->failed = true;
        return NULL;
    }
    n->kind = kind;
    n->line = cur(P)->line;
    return n;
}

static const char *tokstr(struct parser *P, struct jtok *t) {
    char *s = ja_strdup(P->a, t->s ? t->s : "", t->n);
    if (!s) {
        if (!P->failed) lmc_err_set(P->err, LMC_ERR_OOM, "template too large");
        P->failed = true;
    }
    return s;
}

/* growable pointer arrays in the arena */
struct vec { void **v; size_t n, cap; };
static bool vpush(struct parser *P, struct vec *v, void *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        void **p = ja_alloc(P->a, cap * sizeof *p);
        if (!p) {
            if (!P->failed) lmc_err_set(P->err, LMC_ERR_OOM, "template too large");
            P->failed = true;
            return false;
        }
        if (v->n) memcpy(p, v->v, v->n * sizeof *p);
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return true;
}

static struct jnode *p_expr(struct parser *P, bool condexpr);
static struct jnode *p_or(struct parser *P);
static struct jnode *p_unary(struct parser *P, bool filters);
static struct jnode *p_primary(struct parser *P);
static struct jnode *p_postfix(struct parser *P, struct jnode *n);

static bool enter(struct parser *P) {
    if (++P->depth > MAX_NEST) return perr(P, "expression or block nested too deeply", NULL);
    return true;
}

/* (args, kw=args) after '(' has been seen at cur */
static bool p_callargs(struct parser *P, struct jnode *n) {
    if (!expect_op(P, "(")) return false;
    struct vec args = {0}, kwv = {0}, kwn = {0};
    while (!is_op(P, ")")) {
        if (args.n + kwv.n && !expect_op(P, ",")) return false;
        if (is_op(P, ")")) break;
        if (cur(P)->kind == JT_NAME && P->t[P->i + 1].kind == JT_OP && P->t[P->i + 1].n == 1 &&
            P->t[P->i + 1].s[0] == '=') {
            const char *k = tokstr(P, cur(P));
            adv(P);
            adv(P);
            struct jnode *v = p_expr(P, true);
            if (!v || !vpush(P, &kwn, (void *)k) || !vpush(P, &kwv, v)) return false;
        } else {
            if (kwv.n) return perr(P, "positional argument after a keyword argument", NULL);
            struct jnode *v = p_expr(P, true);
            if (!v || !vpush(P, &args, v)) return false;
        }
    }
    adv(P);
    n->kids = (struct jnode **)args.v;
    n->nkids = args.n;
    n->kids2 = (struct jnode **)kwv.v;
    n->nkids2 = kwv.n;
    n->names = (const char **)kwn.v;
    n->nnames = kwn.n;
    return true;
}

static struct jnode *p_filter(struct parser *P, struct jnode *in) {
    /* at a name after '|' */
    if (cur(P)->kind != JT_NAME) return perr(P, "expected a filter name after '|'", NULL), NULL;
    struct jnode *f = node(P, JN_FILTER);
    if (!f) return NULL;
    f->name = tokstr(P, cur(P));
    adv(P);
    while (is_op(P, ".") && P->t[P->i + 1].kind == JT_NAME) { /* dotted filter names */
        adv(P);
        size_t l = strlen(f->name);
        char *nm = ja_alloc(P->a, l + cur(P)->n + 2);
        if (!nm) return perr(P, "out of memory", NULL), NULL;
        memcpy(nm, f->name, l);
        nm[l] = '.';
        memcpy(nm + l + 1, cur(P)->s, cur(P)->n);
        f->name = nm;
        adv(P);
    }
    f->a = in;
    if (is_op(P, "(") && !p_callargs(P, f)) return NULL;
    return f;
}

static struct jnode *p_filters_tests(struct parser *P, struct jnode *n) {
    for (;;) {
        if (!n) return NULL;
        if (is_op(P, "|")) {
            adv(P);
            n = p_filter(P, n);
        } else if (is_name(P, "is")) {
            adv(P);
            struct jnode *t = node(P, JN_TEST);
            if (!t) return NULL;
            if (is_name(P, "not")) {
                t->neg = true;
                adv(P);
            }
            if (cur(P)->kind != JT_NAME) return perr(P, "expected a test name after 'is'", NULL), NULL;
            t->name = tokstr(P, cur(P));
            adv(P);
            t->a = n;
            struct jtok *c = cur(P);
            if (is_op(P, "(")) {
                if (!p_callargs(P, t)) return NULL;
            } else if ((c->kind == JT_NAME || c->kind == JT_STRING || c->kind == JT_INT || c->kind == JT_FLOAT ||
                        is_op(P, "[") || is_op(P, "{")) &&
                       !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and") && !is_name(P, "if") &&
                       !is_name(P, "is")) {
                struct jnode *arg = p_postfix(P, p_primary(P));
                if (!arg) return NULL;
                t->kids = ja_alloc(P->a, sizeof *t->kids);
                if (!t->kids) return perr(P, "out of memory", NULL), NULL;
                t->kids[0] = arg;
                t->nkids = 1;
            }
            n = t;
        } else if (is_op(P, "(")) {
            struct jnode *c = node(P, JN_CALL);
            if (!c) return NULL;
            c->a = n;
            if (!p_callargs(P, c)) return NULL;
            n = c;
        } else return n;
    }
}

static struct jnode *p_subscript(struct parser *P, struct jnode *obj) {
    /* after '[' */
    struct jnode *parts[3] = {0};
    int k = 0;
    bool slice = false;
    for (;;) {
        if (is_op(P, ":")) {
            slice = true;
            if (k >= 2) return perr(P, "bad slice", NULL), NULL;
            adv(P);
            k++;
            continue;
        }
        if (is_op(P, "]")) break;
        if (parts[k]) return perr(P, "expected ']'", NULL), NULL;
        parts[k] = p_expr(P, true);
        if (!parts[k]) return NULL;
    }
    adv(P);
    struct jnode *n = node(P, slice ? JN_SLICE : JN_ITEM);
    if (!n) return NULL;
    n->a = obj;
    if (slice) {
        n->b = parts[0];
        n->c = parts[1];
        if (parts[2]) {
            n->kids = ja_alloc(P->a, sizeof *n->kids);
            if (!n->kids) return perr(P, "out of memory", NULL), NULL;
            n->kids[0] = parts[2];
            n->nkids = 1;
        }
    } else {
        if (!parts[0]) return perr(P, "empty subscript", NULL), NULL;
        n->b = parts[0];
    }
    return n;
}

static struct jnode *p_postfix(struct parser *P, struct jnode *n) {
    for (;;) {
        if (!n) return NULL;
        if (is_op(P, ".")) {
            adv(P);
            struct jtok *t = cur(P);
            if (t->kind == JT_NAME) {
                struct jnode *a = node(P, JN_ATTR);
                if (!a) return NULL;
                a->a = n;
                a->name = tokstr(P, t);
                adv(P);
                n = a;
            } else if (t->kind == JT_INT) {
                struct jnode *a = node(P, JN_ITEM), *k = node(P, JN_LIT);
                if (!a || !k) return NULL;
                k->lit = jv_int(t->i);
                a->a = n;
                a->b = k;
                adv(P);
                n = a;
            } else return perr(P, "expected a name after '.'", NULL), NULL;
        } else if (is_op(P, "[")) {
            adv(P);
            n = p_subscript(P, n);
        } else if (is_op(P, "(")) {
            struct jnode *c = node(P, JN_CALL);
            if (!c) return NULL;
            c->a = n;
            if (!p_callargs(P, c)) return NULL;
            n = c;
        } else return n;
    }
}

static struct jnode *p_seq(struct parser *P, int kind, const char *close) {
    struct jnode *n = node(P, kind);
    if (!n) return NULL;
    struct vec items = {0}, vals = {0};
    while (!is_op(P, close)) {
        if (items.n && !expect_op(P, ",")) return NULL;
        if (is_op(P, close)) break;
        struct jnode *e = p_expr(P, true);
        if (!e || !vpush(P, &items, e)) return NULL;
        if (kind == JN_DICT) {
            if (!expect_op(P, ":")) return NULL;
            struct jnode *v = p_expr(P, true);
            if (!v || !vpush(P, &vals, v)) return NULL;
        }
    }
    adv(P);
    n->kids = (struct jnode **)items.v;
    n->nkids = items.n;
    n->kids2 = (struct jnode **)vals.v;
    n->nkids2 = vals.n;
    return n;
}

static struct jnode *p_primary(struct parser *P) {
    struct jtok *t = cur(P);
    struct jnode *n;
    if (t->kind == JT_NAME) {
        n = node(P, JN_LIT);
        if (!n) return NULL;
        const char *s = t->s;
        size_t l = t->n;
#define IS(w) (l == strlen(w) && memcmp(s, w, l) == 0)
        if (IS("true") || IS("True")) n->lit = jv_bool(true);
        else if (IS("false") || IS("False")) n->lit = jv_bool(false);
        else if (IS("none") || IS("None")) n->lit = jv_none();
        else {
            n->kind = JN_NAME;
            n->name = tokstr(P, t);
        }
#undef IS
        adv(P);
        return n;
    }
    if (t->kind == JT_STRING) {
        n = node(P, JN_LIT);
        if (!n) return NULL;
        /* adjacent string literals are joined */
        size_t total = 0, j = P->i;
        while (P->t[j].kind == JT_STRING) total += P->t[j++].n;
        char *s = ja_alloc(P->a, total + 1);
        if (!s) return perr(P, "out of memory", NULL), NULL;
        size_t k = 0;
        while (cur(P)->kind == JT_STRING) {
            if (cur(P)->n) memcpy(s + k, cur(P)->s, cur(P)->n);
            k += cur(P)->n;
            adv(P);
        }
        n->lit = jv_strn(s, k);
        return n;
    }
    if (t->kind == JT_INT || t->kind == JT_FLOAT) {
        n = node(P, JN_LIT);
        if (!n) return NULL;
        n->lit = t->kind == JT_INT ? jv_int(t->i) : jv_float(t->f);
        adv(P);
        return n;
    }
    if (is_op(P, "(")) {
        adv(P);
        if (is_op(P, ")")) { /* empty tuple */
            adv(P);
            return node(P, JN_TUPLE);
        }
        struct jnode *e = p_expr(P, true);
        if (!e) return NULL;
        if (is_op(P, ",")) {
            struct jnode *tu = node(P, JN_TUPLE);
            struct vec items = {0};
            if (!tu || !vpush(P, &items, e)) return NULL;
            while (is_op(P, ",")) {
                adv(P);
                if (is_op(P, ")")) break;
                struct jnode *x = p_expr(P, true);
                if (!x || !vpush(P, &items, x)) return NULL;
            }
            tu->kids = (struct jnode **)items.v;
            tu->nkids = items.n;
            e = tu;
        }
        if (!expect_op(P, ")")) return NULL;
        return e;
    }
    if (is_op(P, "[")) {
        adv(P);
        return p_seq(P, JN_LIST, "]");
    }
    if (is_op(P, "{")) {
        adv(P);
        return p_seq(P, JN_DICT, "}");
    }
    if (t->kind == JT_EOF) return perr(P, "unexpected end of template", NULL), NULL;
    if (t->kind == JT_BLOCK_END || t->kind == JT_VAR_END) return perr(P, "expected an expression", NULL), NULL;
    return perr(P, "unexpected token '%s'", t->kind == JT_OP ? tokstr(P, t) : "?"), NULL;
}

static struct jnode *p_unary(struct parser *P, bool filters) {
    if (!enter(P)) return NULL;
    struct jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        n = node(P, is_op(P, "-") ? JN_NEG : JN_POS);
        adv(P);
        if (!n || !(n->a = p_unary(P, false))) return NULL;
    } else n = p_primary(P);
    n = p_postfix(P, n);
    if (filters) n = p_filters_tests(P, n);
    P->depth--;
    return n;
}

static struct jnode *bin(struct parser *P, int op, struct jnode *a, struct jnode *b) {
    if (!a || !b) return NULL;
    struct jnode *n = node(P, JN_BIN);
    if (!n) return NULL;
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static struct jnode *p_pow(struct parser *P) {
    struct jnode *n = p_unary(P, true);
    while (n && is_op(P, "**")) {
        adv(P);
        n = bin(P, JO_POW, n, p_unary(P, true));
    }
    return n;
}
static struct jnode *p_math2(struct parser *P) {
    struct jnode *n = p_pow(P);
    for (;;) {
        int op = is_op(P, "*") ? JO_MUL : is_op(P, "/") ? JO_DIV : is_op(P, "//") ? JO_FLOORDIV
               : is_op(P, "%") ? JO_MOD : 0;
        if (!op || !n) return n;
        adv(P);
        n = bin(P, op, n, p_pow(P));
    }
}
static struct jnode *p_concat(struct parser *P) {
    struct jnode *n = p_math2(P);
    while (n && is_op(P, "~")) {
        adv(P);
        n = bin(P, JO_CONCAT, n, p_math2(P));
    }
    return n;
}
static struct jnode *p_math1(struct parser *P) {
    struct jnode *n = p_concat(P);
    for (;;) {
        int op = is_op(P, "+") ? JO_ADD : is_op(P, "-") ? JO_SUB : 0;
        if (!op || !n) return n;
        adv(P);
        n = bin(P, op, n, p_concat(P));
    }
}
static struct jnode *p_compare(struct parser *P) {
    struct jnode *n = p_math1(P);
    for (;;) {
        if (!n) return NULL;
        int op = is_op(P, "==") ? JO_EQ : is_op(P, "!=") ? JO_NE : is_op(P, "<") ? JO_LT : is_op(P, "<=") ? JO_LE
               : is_op(P, ">") ? JO_GT : is_op(P, ">=") ? JO_GE : is_name(P, "in") ? JO_IN : 0;
        if (!op && is_name(P, "not") && P->t[P->i + 1].kind == JT_NAME && P->t[P->i + 1].n == 2 &&
            memcmp(P->t[P->i + 1].s, "in", 2) == 0) {
            adv(P);
            op = JO_NOTIN;
        }
        if (!op) return n;
        adv(P);
        n = bin(P, op, n, p_math1(P));
    }
}
static struct jnode *p_not(struct parser *P) {
    if (is_name(P, "not")) {
        if (!enter(P)) return NULL;
        struct jnode *n = node(P, JN_NOT);
        adv(P);
        if (!n || !(n->a = p_not(P))) return NULL;
        P->depth--;
        return n;
    }
    return p_compare(P);
}
static struct jnode *p_and(struct parser *P) {
    struct jnode *n = p_not(P);
    while (n && is_name(P, "and")) {
        adv(P);
        struct jnode *x = node(P, JN_AND);
        if (!x) return NULL;
        x->a = n;
        if (!(x->b = p_not(P))) return NULL;
        n = x;
    }
    return n;
}
static struct jnode *p_or(struct parser *P) {
    struct jnode *n = p_and(P);
    while (n && is_name(P, "or")) {
        adv(P);
        struct jnode *x = node(P, JN_OR);
        if (!x) return NULL;
        x->a = n;
        if (!(x->b = p_and(P))) return NULL;
        n = x;
    }
    return n;
}
static struct jnode *p_expr(struct parser *P, bool condexpr) {
    if (!enter(P)) return NULL;
    struct jnode *n = p_or(P);
    while (condexpr && n && is_name(P, "if")) {
        adv(P);
        struct jnode *c = node(P, JN_COND);
        if (!c) return NULL;
        c->b = n;
        if (!(c->a = p_or(P))) return NULL;
        if (is_name(P, "else")) {
            adv(P);
            if (!(c->c = p_expr(P, true))) return NULL;
        }
        n = c;
    }
    P->depth--;
    return n;
}

/* an expression, or a tuple of them without parentheses (a, b) */
static struct jnode *p_tuple(struct parser *P, bool condexpr) {
    struct jnode *e = p_expr(P, condexpr);
    if (!e || !is_op(P, ",")) return e;
    struct jnode *tu = node(P, JN_TUPLE);
    struct vec items = {0};
    if (!tu || !vpush(P, &items, e)) return NULL;
    while (is_op(P, ",")) {
        adv(P);
        if (cur(P)->kind == JT_BLOCK_END || cur(P)->kind == JT_VAR_END || is_op(P, "=")) break;
        struct jnode *x = p_expr(P, condexpr);
        if (!x || !vpush(P, &items, x)) return NULL;
    }
    tu->kids = (struct jnode **)items.v;
    tu->nkids = items.n;
    return tu;
}

/* ---- statements ---- */
static bool p_body(struct parser *P, struct vec *body, const char *const *stops, const char **stopped);

static bool block_end(struct parser *P) {
    if (cur(P)->kind != JT_BLOCK_END) return perr(P, "expected '%%}'", NULL);
    adv(P);
    return true;
}

static bool p_names(struct parser *P, struct vec *names) {
    bool paren = is_op(P, "(");
    if (paren) adv(P);
    for (;;) {
        if (cur(P)->kind != JT_NAME) return perr(P, "expected a variable name", NULL);
        const char *nm = tokstr(P, cur(P));
        if (!nm || !vpush(P, names, (void *)nm)) return false;
        adv(P);
        if (!is_op(P, ",")) break;
        adv(P);
    }
    if (paren && !expect_op(P, ")")) return false;
    return true;
}

static struct jnode *p_stmt(struct parser *P);

static bool finish_body(struct parser *P, struct jnode *n, const char *const *stops, const char **stopped,
                        bool second) {
    struct vec body = {0};
    if (!p_body(P, &body, stops, stopped)) return false;
    if (second) {
        n->kids2 = (struct jnode **)body.v;
        n->nkids2 = body.n;
    } else {
        n->kids = (struct jnode **)body.v;
        n->nkids = body.n;
    }
    return true;
}

static struct jnode *p_if(struct parser *P) {
    struct jnode *n = node(P, JN_IF);
    if (!n || !(n->a = p_tuple(P, true)) || !block_end(P)) return NULL;
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    const char *st;
    if (!finish_body(P, n, stops, &st, false)) return NULL;
    if (!strcmp(st, "elif")) {
        struct jnode *e = p_if(P);
        if (!e) return NULL;
        n->kids2 = ja_alloc(P->a, sizeof *n->kids2);
        if (!n->kids2) return perr(P, "out of memory", NULL), NULL;
        n->kids2[0] = e;
        n->nkids2 = 1;
        return n;
    }
    if (!strcmp(st, "else")) {
        static const char *const stops2[] = {"endif", NULL};
        if (!block_end(P) || !finish_body(P, n, stops2, &st, true)) return NULL;
    }
    return block_end(P) ? n : NULL;
}

static struct jnode *p_stmt(struct parser *P) {
    struct jtok *t = cur(P);
    if (t->kind != JT_NAME) return perr(P, "expected a statement name", NULL), NULL;
    const char *kw = tokstr(P, t);
    if (!kw) return NULL;
    adv(P);
    const char *st;
    if (!strcmp(kw, "if")) return p_if(P);
    if (!strcmp(kw, "for")) {
        struct jnode *n = node(P, JN_FOR);
        struct vec names = {0};
        if (!n || !p_names(P, &names)) return NULL;
        n->names = (const char **)names.v;
        n->nnames = names.n;
        if (!is_name(P, "in")) return perr(P, "expected 'in' in a for statement", NULL), NULL;
        adv(P);
        if (!(n->a = p_tuple(P, false))) return NULL;
        if (is_name(P, "if")) {
            adv(P);
            if (!(n->b = p_expr(P, true))) return NULL;
        }
        if (is_name(P, "recursive")) {
            adv(P);
            n->recursive = true;
        }
        static const char *const stops[] = {"else", "endfor", NULL};
        if (!block_end(P) || !finish_body(P, n, stops, &st, false)) return NULL;
        if (!strcmp(st, "else")) {
            static const char *const stops2[] = {"endfor", NULL};
            if (!block_end(P) || !finish_body(P, n, stops2, &st, true)) return NULL;
        }
        return block_end(P) ? n : NULL;
    }
    if (!strcmp(kw, "set")) {
        if (cur(P)->kind == JT_NAME && is_op_at(P, 1, ".")) {
            struct jnode *n = node(P, JN_SETATTR);
            if (!n) return NULL;
            n->name = tokstr(P, cur(P));
            adv(P);
            adv(P);
            if (cur(P)->kind != JT_NAME) return perr(P, "expected an attribute name", NULL), NULL;
            n->name2 = tokstr(P, cur(P));
            adv(P);
            if (!expect_op(P, "=") || !(n->a = p_tuple(P, true)) || !block_end(P)) return NULL;
            return n;
        }
        struct vec names = {0};
        if (!p_names(P, &names)) return NULL;
        if (is_op(P, "=")) {
            struct jnode *n = node(P, JN_SET);
            adv(P);
            if (!n || !(n->a = p_tuple(P, true)) || !block_end(P)) return NULL;
            n->names = (const char **)names.v;
            n->nnames = names.n;
            return n;
        }
        struct jnode *n = node(P, JN_SETBLOCK);
        if (!n) return NULL;
        n->names = (const char **)names.v;
        n->nnames = names.n;
        if (names.n != 1) return perr(P, "a block set takes one name", NULL), NULL;
        if (is_op(P, "|")) { /* filters applied to the block's text */
            struct jnode *in = node(P, JN_BLOCKVAL);
            if (!in) return NULL;
            adv(P);
            if (!(n->a = p_filter(P, in))) return NULL;
            while (is_op(P, "|")) {
                adv(P);
                if (!(n->a = p_filter(P, n->a))) return NULL;
            }
        }
        static const char *const stops[] = {"endset", NULL};
        if (!block_end(P) || !finish_body(P, n, stops, &st, false)) return NULL;
        return block_end(P) ? n : NULL;
    }
    if (!strcmp(kw, "macro") || !strcmp(kw, "call")) {
        bool macro = kw[0] == 'm';
        struct jnode *n = node(P, macro ? JN_MACRO : JN_CALLBLOCK);
        if (!n) return NULL;
        if (macro) {
            if (cur(P)->kind != JT_NAME) return perr(P, "expected a macro name", NULL), NULL;
            n->name = tokstr(P, cur(P));
            adv(P);
        }
        struct vec params = {0}, defs = {0};
        if (macro || is_op(P, "(")) {
            if (!expect_op(P, "(")) return NULL;
            while (!is_op(P, ")")) {
                if (params.n && !expect_op(P, ",")) return NULL;
                if (is_op(P, ")")) break;
                if (cur(P)->kind != JT_NAME) return perr(P, "expected a parameter name", NULL), NULL;
                const char *pn = tokstr(P, cur(P));
                adv(P);
                struct jnode *d = NULL;
                if (is_op(P, "=")) {
                    adv(P);
                    if (!(d = p_expr(P, true))) return NULL;
                }
                if (!vpush(P, &params, (void *)pn) || !vpush(P, &defs, d)) return NULL;
            }
            adv(P);
        }
        n->names = (const char **)params.v;
        n->nnames = params.n;
        /* defaults live beside the body: kids2 = defaults */
        n->kids2 = (struct jnode **)defs.v;
        n->nkids2 = defs.n;
        if (!macro) {
            struct jnode *call = p_expr(P, true);
            if (!call) return NULL;
            if (call->kind != JN_CALL) return perr(P, "expected a macro call after 'call'", NULL), NULL;
            n->a = call;
        }
        static const char *const mstops[] = {"endmacro", NULL}, *const cstops[] = {"endcall", NULL};
        struct vec body = {0};
        if (!block_end(P) || !p_body(P, &body, macro ? mstops : cstops, &st)) return NULL;
        struct jnode *b = node(P, JN_BODY);
        if (!b) return NULL;
        b->kids = (struct jnode **)body.v;
        b->nkids = body.n;
        n->b = b;
        if (cur(P)->kind == JT_NAME) adv(P); /* endmacro NAME is allowed */
        return block_end(P) ? n : NULL;
    }
    if (!strcmp(kw, "filter")) {
        struct jnode *n = node(P, JN_FILTERBLOCK), *in = node(P, JN_BLOCKVAL);
        if (!n || !in || !(n->a = p_filter(P, in))) return NULL;
        while (is_op(P, "|")) {
            adv(P);
            if (!(n->a = p_filter(P, n->a))) return NULL;
        }
        static const char *const stops[] = {"endfilter", NULL};
        if (!block_end(P) || !finish_body(P, n, stops, &st, false)) return NULL;
        return block_end(P) ? n : NULL;
    }
    if (!strcmp(kw, "generation")) {
        struct jnode *n = node(P, JN_BODY);
        static const char *const stops[] = {"endgeneration", NULL};
        if (!n || !block_end(P) || !finish_body(P, n, stops, &st, false)) return NULL;
        return block_end(P) ? n : NULL;
    }
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        struct jnode *n = node(P, kw[0] == 'b' ? JN_BREAK : JN_CONTINUE);
        return n && block_end(P) ? n : NULL;
    }
    return perr(P, "unsupported or unknown statement '%s'", kw), NULL;
}

static bool p_body(struct parser *P, struct vec *body, const char *const *stops, const char **stopped) {
    if (!enter(P)) return false;
    for (;;) {
        struct jtok *t = cur(P);
        if (t->kind == JT_EOF) {
            if (stops) return perr(P, "unexpected end of template, expected '%s'", stops[0]);
            break;
        }
        if (t->kind == JT_TEXT) {
            struct jnode *n = node(P, JN_TEXT);
            if (!n) return false;
            n->lit = jv_strn(t->s, t->n);
            adv(P);
            if (!vpush(P, body, n)) return false;
        } else if (t->kind == JT_VAR_BEGIN) {
            adv(P);
            struct jnode *n = node(P, JN_OUT);
            if (!n || !(n->a = p_tuple(P, true))) return false;
            if (cur(P)->kind != JT_VAR_END) return perr(P, "expected '}}'", NULL);
            adv(P);
            if (!vpush(P, body, n)) return false;
        } else if (t->kind == JT_BLOCK_BEGIN) {
            adv(P);
            if (stops && cur(P)->kind == JT_NAME)
                for (int i = 0; stops[i]; i++)
                    if (is_name(P, stops[i])) {
                        *stopped = stops[i];
                        adv(P);
                        P->depth--;
                        return true;
                    }
            if (cur(P)->kind == JT_NAME && cur(P)->n > 3 && memcmp(cur(P)->s, "end", 3) == 0)
                return perr(P, "unexpected '%s'", tokstr(P, cur(P)));
            if (is_name(P, "elif") || is_name(P, "else"))
                return perr(P, "unexpected '%s'", tokstr(P, cur(P)));
            struct jnode *n = p_stmt(P);
            if (!n || !vpush(P, body, n)) return false;
        } else return perr(P, "unexpected token", NULL);
    }
    P->depth--;
    return true;
}

lmc_status lmc_jinja_parse(const char *src, size_t n, lmc_jinja_tmpl **out, lmc_err *err) {
    *out = NULL;
    lmc_jinja_tmpl *t = calloc(1, sizeof *t);
    if (!t) return lmc_err_set(err, LMC_ERR_OOM, "out of memory");
    t->arena.cap = (size_t)64 << 20;
    struct jtoks toks = {0};
    lmc_status st = jinja_lex(&t->arena, src ? src : "", src ? n : 0, &toks, err);
    if (st) {
        lmc_jinja_free(t);
        return st;
    }
    struct parser P = {&t->arena, toks.v, toks.n, 0, 0, err, false};
    struct vec body = {0};
    if (!p_body(&P, &body, NULL, NULL) || P.failed || !(t->root = node(&P, JN_BODY))) {
        lmc_jinja_free(t);
        return err && err->status ? err->status : LMC_ERR_FORMAT;
    }
    t->root->kids = (struct jnode **)body.v;
    t->root->nkids = body.n;
    *out = t;
    return LMC_OK;
}

void lmc_jinja_free(lmc_jinja_tmpl *t) {
    if (!t) return;
    ja_free(&t->arena);
    free(t);
}
