/* grammar_schema.c — JSON Schema to byte grammar (see grammar.h for the
 * keywords). Output is compact JSON with at most one space or newline where
 * JSON allows whitespace, object properties in schema order (required ones
 * present, optional ones may be left out), strings of any UTF-8 text with
 * JSON escapes. Integer bounds are exact for ranges of up to 1000 values;
 * otherwise minimum >= 0 only removes the sign. */
#include "infer/grammar.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPEAT 4096

struct sc {
    struct lmc_grammar *g;
    const cJSON *root;
    lmc_err *err;
    bool failed;
    int depth;
    int ws, chr, str, num, intr, val, obj, arr, digits;   /* shared rules, made on first use */
    struct { char path[256]; int rule; } refs[128];
    int n_refs;
};

static int fail(struct sc *c, const char *fmt, const char *a) {
    if (!c->failed) lmc_err_set(c->err, LMC_ERR_UNSUPPORTED, fmt, a ? a : "");
    c->failed = true;
    return -1;
}

static int rule(struct sc *c, const char *name) {
    int r = lmc_grammar_rule(c->g, name);
    if (r < 0) c->failed = true;
    return r;
}

static void lit(struct sc *c, const char *s) { lmc_grammar_add_literal(c->g, s, strlen(s)); }
static void range(struct sc *c, uint8_t lo, uint8_t hi) {
    uint8_t r[1][2] = {{lo, hi}};
    lmc_grammar_add_bytes(c->g, r, 1, false);
}
/* alternative made of one literal */
static void alt_lit(struct sc *c, int r, const char *s) {
    lmc_grammar_alt_begin(c->g, r);
    lit(c, s);
    lmc_grammar_alt_end(c->g);
}
static void alt_empty(struct sc *c, int r) {
    lmc_grammar_alt_begin(c->g, r);
    lmc_grammar_alt_end(c->g);
}

static int ws(struct sc *c) {
    if (c->ws >= 0) return c->ws;
    int r = c->ws = rule(c, "ws");
    alt_empty(c, r);
    alt_lit(c, r, " ");
    alt_lit(c, r, "\n");
    return r;
}

/* one character of a JSON string's content */
static int chr(struct sc *c) {
    if (c->chr >= 0) return c->chr;
    int r = c->chr = rule(c, "char");
    static const uint8_t plain[][2] = {{0x20, 0x21}, {0x23, 0x5b}, {0x5d, 0x7f}};
    lmc_grammar_alt_begin(c->g, r);
    lmc_grammar_add_bytes(c->g, plain, 3, false);
    lmc_grammar_alt_end(c->g);
    static const uint8_t esc[][2] = {{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', 'b'}, {'f', 'f'}, {'n', 'n'},
                                     {'r', 'r'}, {'t', 't'}};
    lmc_grammar_alt_begin(c->g, r);
    lit(c, "\\");
    lmc_grammar_add_bytes(c->g, esc, 8, false);
    lmc_grammar_alt_end(c->g);
    static const uint8_t hex[][2] = {{'0', '9'}, {'a', 'f'}, {'A', 'F'}};
    lmc_grammar_alt_begin(c->g, r);
    lit(c, "\\u");
    for (int i = 0; i < 4; i++) lmc_grammar_add_bytes(c->g, hex, 3, false);
    lmc_grammar_alt_end(c->g);
    for (int k = 2; k <= 4; k++) { /* UTF-8 sequences */
        lmc_grammar_alt_begin(c->g, r);
        if (k == 2) range(c, 0xc2, 0xdf);
        else if (k == 3) range(c, 0xe0, 0xef);
        else range(c, 0xf0, 0xf4);
        for (int i = 1; i < k; i++) range(c, 0x80, 0xbf);
        lmc_grammar_alt_end(c->g);
    }
    return r;
}

/* x* as a right-recursive rule */
static int star(struct sc *c, int x, const char *name) {
    int r = rule(c, name);
    alt_empty(c, r);
    lmc_grammar_alt_begin(c->g, r);
    lmc_grammar_add_rule(c->g, x);
    lmc_grammar_add_rule(c->g, r);
    lmc_grammar_alt_end(c->g);
    return r;
}

/* x{min,max} (max < 0: unbounded) */
static int repeat(struct sc *c, int x, int64_t min, int64_t max, const char *name) {
    if (min > MAX_REPEAT || max > MAX_REPEAT) return fail(c, "json schema: %s bound above 4096", name);
    int tail;
    if (max < 0) tail = star(c, x, name);
    else { /* opt_k = "" | x opt_{k-1} */
        tail = rule(c, name);
        alt_empty(c, tail);
        for (int64_t k = 1; k <= max - min; k++) {
            int t = rule(c, name);
            alt_empty(c, t);
            lmc_grammar_alt_begin(c->g, t);
            lmc_grammar_add_rule(c->g, x);
            lmc_grammar_add_rule(c->g, tail);
            lmc_grammar_alt_end(c->g);
            tail = t;
        }
    }
    int r = rule(c, name);
    lmc_grammar_alt_begin(c->g, r);
    for (int64_t i = 0; i < min; i++) lmc_grammar_add_rule(c->g, x);
    lmc_grammar_add_rule(c->g, tail);
    lmc_grammar_alt_end(c->g);
    return r;
}

static int string_rule(struct sc *c, int64_t min, int64_t max) {
    if (min == 0 && max < 0 && c->str >= 0) return c->str;
    int body = repeat(c, chr(c), min, max, "string-chars"), r = rule(c, "string");
    lmc_grammar_alt_begin(c->g, r);
    lit(c, "\"");
    lmc_grammar_add_rule(c->g, body);
    lit(c, "\"");
    lmc_grammar_alt_end(c->g);
    if (min == 0 && max < 0) c->str = r;
    return r;
}

static int digits(struct sc *c) { /* [0-9]* */
    if (c->digits >= 0) return c->digits;
    int d = rule(c, "digit");
    lmc_grammar_alt_begin(c->g, d);
    range(c, '0', '9');
    lmc_grammar_alt_end(c->g);
    return c->digits = star(c, d, "digits");
}

/* "0" | [1-9][0-9]*, with an optional "-" unless nonneg */
static int integer_rule(struct sc *c, bool nonneg) {
    if (!nonneg && c->intr >= 0) return c->intr;
    int r = rule(c, "integer");
    for (int neg = 0; neg <= (nonneg ? 0 : 1); neg++) {
        lmc_grammar_alt_begin(c->g, r);
        if (neg) lit(c, "-");
        lit(c, "0");
        lmc_grammar_alt_end(c->g);
        lmc_grammar_alt_begin(c->g, r);
        if (neg) lit(c, "-");
        range(c, '1', '9');
        lmc_grammar_add_rule(c->g, digits(c));
        lmc_grammar_alt_end(c->g);
    }
    if (!nonneg) c->intr = r;
    return r;
}

static int number_rule(struct sc *c) {
    if (c->num >= 0) return c->num;
    int in = integer_rule(c, false), d = digits(c);
    int frac = rule(c, "frac"), exp = rule(c, "exp");
    alt_empty(c, frac);
    lmc_grammar_alt_begin(c->g, frac);
    lit(c, ".");
    range(c, '0', '9');
    lmc_grammar_add_rule(c->g, d);
    lmc_grammar_alt_end(c->g);
    alt_empty(c, exp);
    static const uint8_t e[][2] = {{'e', 'e'}, {'E', 'E'}}, sign[][2] = {{'+', '+'}, {'-', '-'}};
    for (int s = 0; s < 2; s++) {
        lmc_grammar_alt_begin(c->g, exp);
        lmc_grammar_add_bytes(c->g, e, 2, false);
        if (s) lmc_grammar_add_bytes(c->g, sign, 2, false);
        range(c, '0', '9');
        lmc_grammar_add_rule(c->g, d);
        lmc_grammar_alt_end(c->g);
    }
    int r = c->num = rule(c, "number");
    lmc_grammar_alt_begin(c->g, r);
    lmc_grammar_add_rule(c->g, in);
    lmc_grammar_add_rule(c->g, frac);
    lmc_grammar_add_rule(c->g, exp);
    lmc_grammar_alt_end(c->g);
    return r;
}

/* "[" ws (item (ws "," ws item){min-1,max-1})? ws "]" */
static int array_of(struct sc *c, int item, int64_t min, int64_t max) {
    if (max >= 0 && max < min) return fail(c, "json schema: maxItems below minItems%s", NULL);
    int more = rule(c, "array-more");
    lmc_grammar_alt_begin(c->g, more);
    lmc_grammar_add_rule(c->g, ws(c));
    lit(c, ",");
    lmc_grammar_add_rule(c->g, ws(c));
    lmc_grammar_add_rule(c->g, item);
    lmc_grammar_alt_end(c->g);
    int r = rule(c, "array");
    if (min == 0) {
        lmc_grammar_alt_begin(c->g, r);
        lit(c, "[");
        lmc_grammar_add_rule(c->g, ws(c));
        lit(c, "]");
        lmc_grammar_alt_end(c->g);
    }
    if (max != 0) {
        int rest = repeat(c, more, min > 0 ? min - 1 : 0, max < 0 ? -1 : max - 1, "array-items");
        lmc_grammar_alt_begin(c->g, r);
        lit(c, "[");
        lmc_grammar_add_rule(c->g, ws(c));
        lmc_grammar_add_rule(c->g, item);
        lmc_grammar_add_rule(c->g, rest);
        lmc_grammar_add_rule(c->g, ws(c));
        lit(c, "]");
        lmc_grammar_alt_end(c->g);
    }
    return r;
}

static int value_rule(struct sc *c);

static int any_object(struct sc *c) {
    if (c->obj >= 0) return c->obj;
    int r = c->obj = rule(c, "object"), member = rule(c, "member"), more = rule(c, "member-more");
    lmc_grammar_alt_begin(c->g, member);
    lmc_grammar_add_rule(c->g, string_rule(c, 0, -1));
    lmc_grammar_add_rule(c->g, ws(c));
    lit(c, ":");
    lmc_grammar_add_rule(c->g, ws(c));
    lmc_grammar_add_rule(c->g, value_rule(c));
    lmc_grammar_alt_end(c->g);
    lmc_grammar_alt_begin(c->g, more);
    lmc_grammar_add_rule(c->g, ws(c));
    lit(c, ",");
    lmc_grammar_add_rule(c->g, ws(c));
    lmc_grammar_add_rule(c->g, member);
    lmc_grammar_alt_end(c->g);
    int tail = star(c, more, "members");
    lmc_grammar_alt_begin(c->g, r);
    lit(c, "{");
    lmc_grammar_add_rule(c->g, ws(c));
    lit(c, "}");
    lmc_grammar_alt_end(c->g);
    lmc_grammar_alt_begin(c->g, r);
    lit(c, "{");
    lmc_grammar_add_rule(c->g, ws(c));
    lmc_grammar_add_rule(c->g, member);
    lmc_grammar_add_rule(c->g, tail);
    lmc_grammar_add_rule(c->g, ws(c));
    lit(c, "}");
    lmc_grammar_alt_end(c->g);
    return r;
}

static int value_rule(struct sc *c) {
    if (c->val >= 0) return c->val;
    int r = c->val = rule(c, "value");
    int parts[] = {any_object(c), -1, string_rule(c, 0, -1), number_rule(c)};
    if (c->arr < 0) c->arr = array_of(c, r, 0, -1);
    parts[1] = c->arr;
    for (int i = 0; i < 4; i++) {
        lmc_grammar_alt_begin(c->g, r);
        lmc_grammar_add_rule(c->g, parts[i]);
        lmc_grammar_alt_end(c->g);
    }
    alt_lit(c, r, "true");
    alt_lit(c, r, "false");
    alt_lit(c, r, "null");
    return r;
}

static int compile(struct sc *c, const cJSON *s);

/* literal JSON text of v (enum / const values) as an alternative of r */
static void alt_json(struct sc *c, int r, const cJSON *v) {
    char *t = cJSON_PrintUnformatted(v);
    if (!t) {
        c->failed = true;
        return;
    }
    alt_lit(c, r, t);
    free(t);
}

static int object_rule(struct sc *c, const cJSON *s) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties"),
                *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    int n = cJSON_GetArraySize(props);
    if (!props || n == 0) return any_object(c);
    if (n > 256) return fail(c, "json schema: more than 256 properties%s", NULL);
    int P[256];
    bool required[256];
    int i = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, props) {
        required[i] = false;
        const cJSON *q;
        cJSON_ArrayForEach(q, req) if (cJSON_IsString(q) && !strcmp(q->valuestring, p->string)) required[i] = true;
        int v = compile(c, p);
        if (v < 0) return -1;
        P[i] = rule(c, "property");
        cJSON *key = cJSON_CreateString(p->string);
        char *kt = key ? cJSON_PrintUnformatted(key) : NULL;
        cJSON_Delete(key);
        if (!kt) return fail(c, "json schema: out of memory%s", NULL);
        lmc_grammar_alt_begin(c->g, P[i]);
        lit(c, kt);
        lmc_grammar_add_rule(c->g, ws(c));
        lit(c, ":");
        lmc_grammar_add_rule(c->g, ws(c));
        lmc_grammar_add_rule(c->g, v);
        lmc_grammar_alt_end(c->g);
        free(kt);
        i++;
    }
    /* R[i]: the rest from property i after something was written; S[i]: the first written is at i or later */
    int R[257], S[257];
    R[n] = rule(c, "props-rest");
    alt_empty(c, R[n]);
    for (i = n - 1; i >= 0; i--) {
        R[i] = rule(c, "props-rest");
        lmc_grammar_alt_begin(c->g, R[i]);
        lmc_grammar_add_rule(c->g, ws(c));
        lit(c, ",");
        lmc_grammar_add_rule(c->g, ws(c));
        lmc_grammar_add_rule(c->g, P[i]);
        lmc_grammar_add_rule(c->g, R[i + 1]);
        lmc_grammar_alt_end(c->g);
        if (!required[i]) {
            lmc_grammar_alt_begin(c->g, R[i]);
            lmc_grammar_add_rule(c->g, R[i + 1]);
            lmc_grammar_alt_end(c->g);
        }
    }
    bool all_optional_from[257];
    all_optional_from[n] = true;
    for (i = n - 1; i >= 0; i--) all_optional_from[i] = all_optional_from[i + 1] && !required[i];
    S[n] = -1;
    for (i = n - 1; i >= 0; i--) {
        S[i] = rule(c, "props");
        lmc_grammar_alt_begin(c->g, S[i]);
        lmc_grammar_add_rule(c->g, P[i]);
        lmc_grammar_add_rule(c->g, R[i + 1]);
        lmc_grammar_alt_end(c->g);
        if (!required[i] && S[i + 1] >= 0) {
            lmc_grammar_alt_begin(c->g, S[i]);
            lmc_grammar_add_rule(c->g, S[i + 1]);
            lmc_grammar_alt_end(c->g);
        }
    }
    int r = rule(c, "object");
    lmc_grammar_alt_begin(c->g, r);
    lit(c, "{");
    lmc_grammar_add_rule(c->g, ws(c));
    lmc_grammar_add_rule(c->g, S[0]);
    lmc_grammar_add_rule(c->g, ws(c));
    lit(c, "}");
    lmc_grammar_alt_end(c->g);
    if (all_optional_from[0]) {
        lmc_grammar_alt_begin(c->g, r);
        lit(c, "{");
        lmc_grammar_add_rule(c->g, ws(c));
        lit(c, "}");
        lmc_grammar_alt_end(c->g);
    }
    return r;
}

static bool num_field(const cJSON *s, const char *k, double *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, k);
    if (!cJSON_IsNumber(x)) return false;
    *v = x->valuedouble;
    return true;
}

/* A bound from the schema as an integer, clamped to +-1e15 before the cast
 * (a double past int64's range converts with undefined behaviour); the
 * callers refuse anything out of their own, far smaller, range. */
static int64_t bound_i64(double v) {
    if (!(v > -1e15)) return (int64_t)-1e15;
    if (!(v < 1e15)) return (int64_t)1e15;
    return (int64_t)v;
}

static int typed(struct sc *c, const cJSON *s, const char *type) {
    double lo = 0, hi = 0;
    bool has_lo, has_hi;
    if (!strcmp(type, "string")) {
        int64_t mn = num_field(s, "minLength", &lo) ? bound_i64(lo) : 0, mx = num_field(s, "maxLength", &hi) ? bound_i64(hi) : -1;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
        if (pat) { /* a regular expression (grammar_regex.c) */
            if (!cJSON_IsString(pat)) return fail(c, "json schema: \"pattern\" must be a string%s", NULL);
            if (mn < 0 || (mx >= 0 && mx < mn)) return fail(c, "json schema: bad string length bounds%s", NULL);
            int r = lmc_grammar_regex_string_len(c->g, pat->valuestring, strlen(pat->valuestring), mn, mx, c->err);
            if (r < 0) c->failed = true;
            return r;
        }
        if (mn < 0 || (mx >= 0 && mx < mn)) return fail(c, "json schema: bad string length bounds%s", NULL);
        return string_rule(c, mn, mx);
    }
    if (!strcmp(type, "integer")) {
        has_lo = num_field(s, "minimum", &lo);
        has_hi = num_field(s, "maximum", &hi);
        double xlo, xhi;
        if (num_field(s, "exclusiveMinimum", &xlo)) { lo = floor(xlo) + 1; has_lo = true; }
        if (num_field(s, "exclusiveMaximum", &xhi)) { hi = ceil(xhi) - 1; has_hi = true; }
        if (has_lo) lo = ceil(lo);
        if (has_hi) hi = floor(hi);
        if (has_lo && has_hi) {
            if (hi < lo) return fail(c, "json schema: integer maximum below minimum%s", NULL);
            if (hi - lo <= 1000 && fabs(lo) < 1e15 && fabs(hi) < 1e15) { /* exact: every value (v++ moves) */
                int r = rule(c, "integer-range");
                for (double v = lo; v <= hi; v++) {
                    char t[32];
                    snprintf(t, sizeof t, "%lld", (long long)v);
                    alt_lit(c, r, t);
                }
                return r;
            }
        }
        return integer_rule(c, has_lo && lo >= 0);
    }
    if (!strcmp(type, "number")) return number_rule(c);
    if (!strcmp(type, "boolean")) {
        int r = rule(c, "boolean");
        alt_lit(c, r, "true");
        alt_lit(c, r, "false");
        return r;
    }
    if (!strcmp(type, "null")) {
        int r = rule(c, "null");
        alt_lit(c, r, "null");
        return r;
    }
    if (!strcmp(type, "array")) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        int it = items ? compile(c, items) : value_rule(c);
        if (it < 0) return -1;
        int64_t mn = num_field(s, "minItems", &lo) ? bound_i64(lo) : 0, mx = num_field(s, "maxItems", &hi) ? bound_i64(hi) : -1;
        if (mn < 0) return fail(c, "json schema: bad minItems%s", NULL);
        return array_of(c, it, mn, mx);
    }
    if (!strcmp(type, "object")) return object_rule(c, s);
    return fail(c, "json schema: unknown type \"%s\"", type);
}

static int ref_rule(struct sc *c, const char *ref) {
    for (int i = 0; i < c->n_refs; i++)
        if (!strcmp(c->refs[i].path, ref)) return c->refs[i].rule;
    const char *name = NULL;
    const cJSON *defs = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) {
        defs = cJSON_GetObjectItemCaseSensitive(c->root, "$defs");
        name = ref + 8;
    } else if (!strncmp(ref, "#/definitions/", 14)) {
        defs = cJSON_GetObjectItemCaseSensitive(c->root, "definitions");
        name = ref + 14;
    } else if (!strcmp(ref, "#")) {
        defs = NULL;
    } else return fail(c, "json schema: $ref \"%s\" (only #, #/$defs/NAME and #/definitions/NAME)", ref);
    const cJSON *target = name ? cJSON_GetObjectItemCaseSensitive(defs, name) : c->root;
    if (!target) return fail(c, "json schema: $ref \"%s\" not found", ref);
    if (c->n_refs == 128 || strlen(ref) >= sizeof c->refs[0].path) return fail(c, "json schema: too many $refs%s", NULL);
    /* the rule exists before its body, so recursive definitions refer to it */
    int r = rule(c, "ref");
    snprintf(c->refs[c->n_refs].path, sizeof c->refs[0].path, "%s", ref);
    c->refs[c->n_refs++].rule = r;
    int body = compile(c, target);
    if (body < 0) return -1;
    lmc_grammar_alt_begin(c->g, r);
    lmc_grammar_add_rule(c->g, body);
    lmc_grammar_alt_end(c->g);
    return r;
}

static int compile(struct sc *c, const cJSON *s) {
    if (c->failed) return -1;
    if (++c->depth > 64) return fail(c, "json schema: nested more than 64 deep%s", NULL);
    int r = -1;
    if (cJSON_IsTrue(s) || (cJSON_IsObject(s) && !s->child)) r = value_rule(c);
    else if (!cJSON_IsObject(s)) r = fail(c, "json schema: a schema must be an object or true%s", NULL);
    else {
        static const char *const unsupported[] = {"allOf", "not", "if", "patternProperties", "dependentSchemas",
                                                  "prefixItems", "contains", "uniqueItems", "multipleOf", NULL};
        for (int i = 0; unsupported[i]; i++)
            if (cJSON_GetObjectItemCaseSensitive(s, unsupported[i])) {
                c->depth--;
                return fail(c, "json schema: \"%s\" is not supported", unsupported[i]);
            }
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref"), *en = cJSON_GetObjectItemCaseSensitive(s, "enum"),
                    *cn = cJSON_GetObjectItemCaseSensitive(s, "const"),
                    *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf"),
                    *one = cJSON_GetObjectItemCaseSensitive(s, "oneOf"),
                    *type = cJSON_GetObjectItemCaseSensitive(s, "type"),
                    *nullable = cJSON_GetObjectItemCaseSensitive(s, "nullable");
        r = rule(c, "schema");
        int inner = -1;
        if (cJSON_IsString(ref)) inner = ref_rule(c, ref->valuestring);
        else if (cn) {
            inner = rule(c, "const");
            alt_json(c, inner, cn);
        } else if (cJSON_IsArray(en)) {
            if (!cJSON_GetArraySize(en)) inner = fail(c, "json schema: empty enum%s", NULL);
            else {
                inner = rule(c, "enum");
                const cJSON *e;
                cJSON_ArrayForEach(e, en) alt_json(c, inner, e);
            }
        } else if (cJSON_IsArray(any) || cJSON_IsArray(one)) {
            inner = rule(c, "anyof");
            const cJSON *e, *list = cJSON_IsArray(any) ? any : one;
            cJSON_ArrayForEach(e, list) {
                int x = compile(c, e);
                if (x < 0) break;
                lmc_grammar_alt_begin(c->g, inner);
                lmc_grammar_add_rule(c->g, x);
                lmc_grammar_alt_end(c->g);
            }
        } else if (cJSON_IsString(type)) inner = typed(c, s, type->valuestring);
        else if (cJSON_IsArray(type)) {
            inner = rule(c, "types");
            const cJSON *e;
            cJSON_ArrayForEach(e, type) {
                int x = cJSON_IsString(e) ? typed(c, s, e->valuestring) : fail(c, "json schema: bad type list%s", NULL);
                if (x < 0) break;
                lmc_grammar_alt_begin(c->g, inner);
                lmc_grammar_add_rule(c->g, x);
                lmc_grammar_alt_end(c->g);
            }
        } else if (cJSON_GetObjectItemCaseSensitive(s, "properties")) inner = object_rule(c, s);
        else inner = value_rule(c);
        if (inner >= 0 && !c->failed) {
            lmc_grammar_alt_begin(c->g, r);
            lmc_grammar_add_rule(c->g, inner);
            lmc_grammar_alt_end(c->g);
            if (cJSON_IsTrue(nullable)) alt_lit(c, r, "null");
        }
    }
    c->depth--;
    return c->failed ? -1 : r;
}

static lmc_status finish(struct sc *c, int start, struct lmc_grammar **out, lmc_err *err) {
    lmc_status st = c->failed ? (err && err->status ? err->status : LMC_ERR_UNSUPPORTED)
                              : lmc_grammar_finish(c->g, start, err);
    if (st) {
        lmc_grammar_free(c->g);
        return st;
    }
    *out = c->g;
    return LMC_OK;
}

static void sc_init(struct sc *c, lmc_err *err) {
    memset(c, 0, sizeof *c);
    c->err = err;
    c->ws = c->chr = c->str = c->num = c->intr = c->val = c->obj = c->arr = c->digits = -1;
}

lmc_status lmc_grammar_from_json_schema(const char *schema, size_t n, struct lmc_grammar **out, lmc_err *err) {
    *out = NULL;
    cJSON *j = cJSON_ParseWithLength(schema, n);
    if (!j) return lmc_err_set(err, LMC_ERR_ARG, "json schema: not valid JSON");
    struct sc c;
    sc_init(&c, err);
    lmc_status st = lmc_grammar_new(&c.g, err);
    if (st) {
        cJSON_Delete(j);
        return st;
    }
    c.root = j;
    int start = compile(&c, j);
    st = finish(&c, start, out, err);
    cJSON_Delete(j);
    return st;
}

lmc_status lmc_grammar_json_object(struct lmc_grammar **out, lmc_err *err) {
    *out = NULL;
    struct sc c;
    sc_init(&c, err);
    lmc_status st = lmc_grammar_new(&c.g, err);
    if (st) return st;
    int start = any_object(&c);
    return finish(&c, start, out, err);
}
