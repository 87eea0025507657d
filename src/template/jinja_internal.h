/* jinja_internal.h — what the Jinja engine's files share: the arena, values
 * (Python-like: None, bool, int, float, str, list/tuple, dict, namespace,
 * macro, builtin, bound method, loop), the token and syntax-tree types, and
 * the render context. */
#ifndef LMC_JINJA_INTERNAL_H
#define LMC_JINJA_INTERNAL_H

#include "template/jinja.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena: every allocation of a parse or a render; freed at once ---- */
struct jchunk;
struct jarena {
    struct jchunk *head;
    size_t used, cap;   /* bytes handed out so far, limit */
};
void *ja_alloc(struct jarena *a, size_t n);   /* zeroed; NULL past the limit */
void ja_free(struct jarena *a);
char *ja_strdup(struct jarena *a, const char *s, size_t n);

/* ---- values ---- */
enum jv_type {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_MACRO, JV_BUILTIN, JV_BOUND, JV_LOOP,
};
struct jlist;
struct jdict;
struct jnode;
struct jframe;
struct jloop;
struct jbound;
struct jmacro;

typedef struct jv {
    uint8_t t;
    uint8_t flag;        /* JV_LIST: 1 = tuple; JV_DICT: 1 = namespace; JV_UNDEF: 1 = attribute */
    size_t n;            /* JV_STR: bytes */
    union {
        bool b;
        int64_t i;
        double f;
        const char *s;   /* JV_STR (not NUL-terminated); JV_UNDEF: the missing name (or NULL) */
        struct jlist *l;
        struct jdict *d;
        struct jmacro *m;       /* JV_MACRO */
        int builtin;
        struct jbound *bm;
        struct jloop *loop;
    } u;
} jv;

struct jlist { jv *v; size_t n, cap; };
struct jdict { jv *k, *v; size_t n, cap; };
struct jbound { jv self; const char *name; };
struct jmacro { const struct jnode *def; struct jframe *closure; };  /* def: JN_MACRO or JN_CALLBLOCK */
struct jloop { int64_t index0, length; struct jlist *items; int depth; };

enum { JB_RAISE = 1, JB_STRFTIME, JB_RANGE, JB_NAMESPACE, JB_DICT, JB_CALLER_NONE };

static inline jv jv_undef(const char *name) { jv v = {0}; v.t = JV_UNDEF; v.u.s = name; return v; }
static inline jv jv_none(void) { jv v = {0}; v.t = JV_NONE; return v; }
static inline jv jv_bool(bool b) { jv v = {0}; v.t = JV_BOOL; v.u.b = b; return v; }
static inline jv jv_int(int64_t i) { jv v = {0}; v.t = JV_INT; v.u.i = i; return v; }
static inline jv jv_float(double f) { jv v = {0}; v.t = JV_FLOAT; v.u.f = f; return v; }
static inline jv jv_strn(const char *s, size_t n) { jv v = {0}; v.t = JV_STR; v.u.s = s; v.n = n; return v; }

/* ---- growing byte buffer (arena-free; malloc'd) ---- */
struct jbuf { char *p; size_t n, cap, limit; bool over; };
bool jbuf_put(struct jbuf *b, const char *s, size_t n);   /* false: out of memory or past limit */
bool jbuf_puts(struct jbuf *b, const char *s);
bool jbuf_putc(struct jbuf *b, char c);
bool jbuf_printf(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- syntax tree ---- */
enum jnode_kind {
    /* expressions */
    JN_LIT, JN_NAME, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_BIN, JN_NEG, JN_POS,
    JN_NOT, JN_AND, JN_OR, JN_COND, JN_LIST, JN_TUPLE, JN_DICT, JN_BLOCKVAL,
    /* statements */
    JN_TEXT, JN_OUT, JN_IF, JN_FOR, JN_SET, JN_SETATTR, JN_SETBLOCK, JN_MACRO, JN_CALLBLOCK, JN_FILTERBLOCK,
    JN_BREAK, JN_CONTINUE, JN_BODY,
};
enum jop {
    JO_ADD = 1, JO_SUB, JO_MUL, JO_DIV, JO_FLOORDIV, JO_MOD, JO_POW, JO_CONCAT,
    JO_EQ, JO_NE, JO_LT, JO_LE, JO_GT, JO_GE, JO_IN, JO_NOTIN,
};
struct jnode {
    int kind, op, line;
    bool neg;                 /* JN_TEST: "is not" */
    bool recursive;           /* JN_FOR */
    jv lit;                   /* JN_LIT; JN_TEXT: the text */
    const char *name;         /* NAME/ATTR/FILTER/TEST/MACRO name; SETATTR: namespace variable */
    const char *name2;        /* SETATTR: attribute */
    struct jnode *a, *b, *c;  /* operands; FOR: a = iterable, b = condition; SLICE: start/stop/step in b,c,kids */
    struct jnode **kids;      /* arguments, items, body */
    size_t nkids;
    struct jnode **kids2;     /* keyword argument values, dict values, else body, parameter defaults */
    size_t nkids2;
    const char **names;       /* keyword argument names, loop/set targets, macro parameters */
    size_t nnames;
};

struct lmc_jinja_tmpl {
    struct jarena arena;
    struct jnode *root;      /* JN_BODY */
};

/* ---- lexer / parser ---- */
enum jtok_kind { JT_EOF, JT_TEXT, JT_VAR_BEGIN, JT_VAR_END, JT_BLOCK_BEGIN, JT_BLOCK_END, JT_NAME, JT_STRING,
                 JT_INT, JT_FLOAT, JT_OP };
struct jtok {
    int kind, line;
    const char *s;   /* TEXT/NAME/STRING/OP: bytes (arena); */
    size_t n;
    int64_t i;
    double f;
};
struct jtoks { struct jtok *v; size_t n, cap; };
lmc_status jinja_lex(struct jarena *a, const char *src, size_t n, struct jtoks *out, lmc_err *err);

/* ---- render context ---- */
struct jvar { const char *name; jv val; };
struct jframe {
    struct jframe *parent;
    struct jvar *v;
    size_t n, cap;
};
struct jctx {
    struct jarena arena;
    struct jbuf *out;         /* current output (call/filter blocks and block sets redirect it) */
    lmc_err *err;
    bool failed;
    int64_t steps, max_steps;
    int depth, max_depth;
    int eval_depth;           /* nesting of expression evaluation (long operator chains) */
    size_t max_output;
    struct jframe *globals;
    struct jframe *frame;     /* the innermost scope */
    const struct lmc_jinja_opts *opts;
    int line;                 /* line of the node being evaluated, for messages */
    int loop_ctl;             /* 1 break, 2 continue pending */
    jv blockval;              /* the text a block set or filter block feeds its filters */
};

/* errors: sets ctx->err once ("Kind: message (template line N)") and returns false */
bool jerr(struct jctx *c, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool joom(struct jctx *c);

/* values (jinja_value.c) */
const char *jv_typename(jv v);                       /* Python's: 'str', 'dict', 'NoneType', ... */
bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
bool jv_compare(struct jctx *c, jv a, jv b, int *cmp);  /* <, > on numbers and strings (else TypeError) */
struct jlist *jl_new(struct jctx *c, size_t cap);
bool jl_push(struct jctx *c, struct jlist *l, jv v);
struct jdict *jd_new(struct jctx *c, size_t cap);
bool jd_set(struct jctx *c, struct jdict *d, jv k, jv v);
bool jd_get(const struct jdict *d, jv k, jv *out);
bool jd_get_str(const struct jdict *d, const char *k, jv *out);
jv jv_list(struct jlist *l, bool tuple);
jv jv_dict(struct jdict *d);
jv jv_str_dup(struct jctx *c, const char *s, size_t n);   /* JV_UNDEF on failure (c->failed set) */
bool jv_is_str(jv v, const char *s);
/* str(v) / repr(v) into b (Python's formatting). */
bool jv_write_str(struct jctx *c, struct jbuf *b, jv v);
bool jv_write_repr(struct jctx *c, struct jbuf *b, jv v);
bool jv_to_str(struct jctx *c, jv v, jv *out);          /* JV_STR holding str(v) */
void jv_float_repr(double d, char *buf, size_t n);      /* Python repr(float) */
/* json.dumps(v, ensure_ascii, indent (<0: None), separators (NULL: default), sort_keys) */
bool jv_write_json(struct jctx *c, struct jbuf *b, jv v, bool ensure_ascii, int indent, const char *item_sep,
                   const char *key_sep, bool sort_keys);
bool jv_from_cjson(struct jctx *c, const cJSON *j, jv *out);
/* UTF-8 helpers */
int ju_next(const char *s, size_t n, uint32_t *cp);     /* bytes of the code point at s (1 on bad bytes) */
int ju_put(char *buf, uint32_t cp);
size_t ju_len(const char *s, size_t n);                 /* code points */
bool ju_isspace(uint32_t cp);                           /* Python str.isspace */
jv jv_make_str(struct jctx *c, struct jbuf *b);         /* copies b into the arena and frees it */

/* evaluation (jinja_eval.c) */
bool jeval(struct jctx *c, const struct jnode *n, jv *out);
bool jcall(struct jctx *c, jv fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw, jv *out);
bool jgetattr(struct jctx *c, jv obj, const char *name, jv *out);
bool jgetitem(struct jctx *c, jv obj, jv key, jv *out);
bool jiter(struct jctx *c, jv v, struct jlist **out);    /* list of the items of an iterable */
bool jstep(struct jctx *c);
bool jbuiltin(struct jctx *c, int id, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw, jv *out);

/* filters and tests (jinja_filters.c), methods (jinja_methods.c) */
bool jfilter(struct jctx *c, const char *name, jv in, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw,
             jv *out);
bool jtest(struct jctx *c, const char *name, jv in, jv *args, size_t nargs, bool *out);
bool jmethod(struct jctx *c, jv self, const char *name, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw,
             jv *out);
bool jmethod_exists(jv self, const char *name);
bool jstr_strip(struct jctx *c, jv s, jv chars, int which, jv *out);  /* which: 1 left, 2 right, 3 both */
bool jstr_case(struct jctx *c, jv s, int mode, jv *out);  /* 1 upper 2 lower 3 capitalize 4 swapcase 5 title */
bool jstr_splitlines(struct jctx *c, jv s, bool keepends, jv *out);
bool jstr_replace(struct jctx *c, jv s, jv old, jv new_, int64_t count, jv *out);
bool jpy_format(struct jctx *c, jv fmt, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw, jv *out);
bool jpy_percent(struct jctx *c, jv fmt, jv arg, jv *out);

#endif
