/* test_grammar.c — JSON Schema -> grammar -> accepted strings, checked by
 * brute force on small cases: every string over a small alphabet of bytes
 * (or of JSON pieces) up to a length is accepted by the grammar exactly
 * when an independent check (cJSON parse + the schema's rule, written out
 * per case) accepts it. Then token masks: mask[t] equals "the state accepts
 * t's bytes" for every token of a toy vocabulary at many random states,
 * masking never leaves no token before the sentence can end, and seeded
 * random walks through the masks always end in JSON that satisfies the
 * schema. Left recursion and unsupported keywords are clear errors. */
#include "infer/grammar.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static struct lmc_grammar *schema(const char *s) {
    struct lmc_grammar *g = NULL;
    lmc_err err = {0};
    lmc_status st = lmc_grammar_from_json_schema(s, strlen(s), &g, &err);
    CHECK_MSG(st == LMC_OK, "%s: %s", s, err.msg);
    return g;
}

static bool accepts(const struct lmc_grammar *g, const char *s, size_t n) {
    struct lmc_grammar_state *st = NULL;
    lmc_err err = {0};
    if (lmc_grammar_state_new(g, &st, &err)) return false;
    bool ok = (n == 0 || lmc_grammar_accept(st, s, n)) && lmc_grammar_can_end(st);
    lmc_grammar_state_free(st);
    return ok;
}

static cJSON *parse_all(const char *s) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(s, &end, true);
    return j;
}

typedef bool (*ref_fn)(const char *s);

/* JSON text must be UTF-8 (RFC 8259); cJSON does not check */
static bool utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int k = *p < 0x80 ? 0 : *p >= 0xc2 && *p <= 0xdf ? 1 : *p >= 0xe0 && *p <= 0xef ? 2 : *p >= 0xf0 && *p <= 0xf4 ? 3 : -1;
        if (k < 0) return false;
        p++;
        for (int i = 0; i < k; i++, p++)
            if ((*p & 0xc0) != 0x80) return false;
    }
    return true;
}

static size_t utf8_chars(const char *s) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xc0) != 0x80;
    return n;
}

/* no number in s has a leading zero ("01"): JSON forbids it, cJSON takes it */
static bool no_leading_zero(const char *s) {
    for (size_t i = 0; s[i]; i++) {
        bool starts = i == 0 || !(s[i - 1] >= '0' && s[i - 1] <= '9');
        if (s[i] == '0' && starts && s[i + 1] >= '0' && s[i + 1] <= '9') return false;
    }
    return true;
}

/* every concatenation of up to max_pieces pieces */
static void brute(const char *name, const struct lmc_grammar *g, const char *const *pieces, int np, int max_pieces,
                  ref_fn ref, int *n_accepted) {
    int idx[16];
    char buf[512];
    long total = 0, bad = 0;
    *n_accepted = 0;
    for (int len = 0; len <= max_pieces; len++) {
        for (int i = 0; i < len; i++) idx[i] = 0;
        for (;;) {
            size_t k = 0;
            for (int i = 0; i < len; i++) {
                size_t l = strlen(pieces[idx[i]]);
                memcpy(buf + k, pieces[idx[i]], l);
                k += l;
            }
            buf[k] = 0;
            bool want = ref(buf), got = accepts(g, buf, k);
            total++;
            if (want != got) {
                if (bad++ < 5) fprintf(stderr, "  %s: [%s] grammar %d, reference %d\n", name, buf, got, want);
            }
            *n_accepted += got;
            int p = len - 1;
            while (p >= 0 && ++idx[p] == np) idx[p--] = 0;
            if (p < 0) break;
        }
    }
    CHECK_MSG(bad == 0, "%s: %ld of %ld strings disagree", name, bad, total);
}

/* ---- references, one per case ---- */
static bool ref_enum(const char *s) { return !strcmp(s, "\"a\"") || !strcmp(s, "\"b\"") || !strcmp(s, "1"); }

static bool ref_int_range(const char *s) {
    char *e;
    if (!*s) return false;
    long long v = strtoll(s, &e, 10);
    char canon[32];
    snprintf(canon, sizeof canon, "%lld", v);
    return !*e && !strcmp(canon, s) && v >= -3 && v <= 12;
}

static bool ref_string_len(const char *s) {
    cJSON *j = utf8_ok(s) ? parse_all(s) : NULL;
    bool ok = cJSON_IsString(j);
    if (ok) {
        size_t n = utf8_chars(j->valuestring);
        ok = n >= 1 && n <= 2;
    }
    cJSON_Delete(j);
    return ok;
}

static bool ref_object(const char *s) { /* {"a": boolean (optional), "b": 1 (required)}, in that order, compact */
    cJSON *j = parse_all(s);
    bool ok = cJSON_IsObject(j);
    if (ok) {
        const cJSON *c = j->child;
        if (c && !strcmp(c->string, "a")) {
            ok = cJSON_IsBool(c);
            c = c->next;
        }
        ok = ok && c && !strcmp(c->string, "b") && cJSON_IsNumber(c) && c->valuedouble == 1 && !c->next;
    }
    cJSON_Delete(j);
    return ok;
}

static bool ref_array(const char *s) { /* 1..2 items, each 0 or 1 */
    cJSON *j = parse_all(s);
    bool ok = cJSON_IsArray(j) && cJSON_GetArraySize(j) >= 1 && cJSON_GetArraySize(j) <= 2 && !strchr(s, ' ');
    const cJSON *e;
    if (ok)
        cJSON_ArrayForEach(e, j) ok = ok && cJSON_IsNumber(e) && (e->valuedouble == 0 || e->valuedouble == 1) &&
                                      e->valueint == (int)e->valuedouble;
    cJSON_Delete(j);
    /* canonical integers only: no "01", "-0" or "1.0" */
    return ok && no_leading_zero(s) && !strchr(s, '-') && !strchr(s, '.');
}

static bool nested_ok(const cJSON *j) {
    if (!cJSON_IsObject(j)) return false;
    if (!j->child) return true;
    return !strcmp(j->child->string, "c") && !j->child->next && nested_ok(j->child);
}
static bool ref_recursive(const char *s) {
    cJSON *j = parse_all(s);
    bool ok = nested_ok(j);
    cJSON_Delete(j);
    return ok;
}

static bool ref_nullable(const char *s) { /* anyOf [string maxLength 1, null] */
    cJSON *j = parse_all(s);
    bool ok = cJSON_IsNull(j) || (cJSON_IsString(j) && strlen(j->valuestring) <= 1);
    cJSON_Delete(j);
    return ok && !strchr(s, ' ');
}

static void test_brute_force(void) {
    int n;
    struct lmc_grammar *g = schema("{\"enum\": [\"a\", \"b\", 1]}");
    const char *p1[] = {"\"", "a", "b", "1", "c"};
    brute("enum", g, p1, 5, 4, ref_enum, &n);
    CHECK(n == 3);
    lmc_grammar_free(g);

    g = schema("{\"type\": \"integer\", \"minimum\": -3, \"maximum\": 12}");
    const char *p2[] = {"-", "0", "1", "2", "3", "4", "9"};
    brute("integer range", g, p2, 7, 3, ref_int_range, &n);
    CHECK(n == 12); /* -3..4, 9..12 */
    lmc_grammar_free(g);

    g = schema("{\"type\": \"string\", \"minLength\": 1, \"maxLength\": 2}");
    const char *p3[] = {"\"", "a", "\\", "n", "u", "0", "\xc3\xa9", "\xc3"};
    brute("string length", g, p3, 8, 5, ref_string_len, &n);
    lmc_grammar_free(g);

    g = schema("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"boolean\"}, \"b\": {\"const\": 1}}, "
               "\"required\": [\"b\"]}");
    const char *p4[] = {"{\"a\":", "{\"b\":", ",\"a\":", ",\"b\":", "true", "1", "}", "{"};
    brute("object", g, p4, 8, 5, ref_object, &n);
    CHECK(n == 2); /* {"b":1} and {"a":true,"b":1} */
    lmc_grammar_free(g);

    g = schema("{\"type\": \"array\", \"items\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 1}, "
               "\"minItems\": 1, \"maxItems\": 2}");
    const char *p5[] = {"[", "]", ",", "0", "1", "-"};
    brute("array", g, p5, 6, 6, ref_array, &n);
    CHECK(n == 6);
    lmc_grammar_free(g);

    g = schema("{\"$defs\": {\"n\": {\"type\": \"object\", \"properties\": {\"c\": {\"$ref\": \"#/$defs/n\"}}}}, "
               "\"$ref\": \"#/$defs/n\"}");
    const char *p6[] = {"{\"c\":", "}", "{", ":"};
    brute("recursive $ref", g, p6, 4, 7, ref_recursive, &n);
    CHECK(n == 3);
    lmc_grammar_free(g);

    g = schema("{\"anyOf\": [{\"type\": \"string\", \"maxLength\": 1}, {\"type\": \"null\"}]}");
    const char *p7[] = {"\"", "x", "null", "nul"};
    brute("anyOf nullable", g, p7, 4, 4, ref_nullable, &n);
    CHECK(n == 3);
    lmc_grammar_free(g);
}

/* ---- masks ---- */
struct toyvocab {
    char *tok[200];
    size_t len[200];
    int n;
};

static void toy_vocab(struct toyvocab *v, uint64_t *rng) {
    static const char alpha[] = "\"}]{[,:0123456789-.eEtrufalsnmg abc\\";
    v->n = 0;
    v->tok[v->n] = strdup(""); /* the eos token: no bytes */
    v->len[v->n++] = 0;
    for (const char *a = alpha; *a; a++) {
        v->tok[v->n] = strndup(a, 1);
        v->len[v->n++] = 1;
    }
    static const char *multi[] = {"true", "false", "null", "\"name\"", "\":", "\": \"", "\"}", "},", "\xc3\xa9", "\xc3", "\xa9",
                                  "12", "{\"", "\"a\"", ", \"", "\"b\":"};
    for (size_t i = 0; i < sizeof multi / sizeof *multi; i++) {
        v->tok[v->n] = strdup(multi[i]);
        v->len[v->n++] = strlen(multi[i]);
    }
    while (v->n < 120) { /* random short strings from the alphabet */
        int l = 1 + (int)(test_rng_next(rng) % 3);
        char b[4];
        for (int i = 0; i < l; i++) b[i] = alpha[test_rng_next(rng) % (sizeof alpha - 1)];
        v->tok[v->n] = strndup(b, (size_t)l);
        v->len[v->n++] = (size_t)l;
    }
    v->tok[v->n] = strdup("a"); /* a duplicate byte string */
    v->len[v->n++] = 1;
}

static void walk_schema(const char *sch, bool (*valid)(const cJSON *), uint64_t seed) {
    struct lmc_grammar *g = schema(sch);
    if (!g) return;
    struct toyvocab tv;
    uint64_t rng = seed;
    toy_vocab(&tv, &rng);
    struct lmc_grammar_vocab *v = NULL;
    lmc_err err = {0};
    int32_t eos = 0;
    CHECK(lmc_grammar_vocab_new((const char *const *)tv.tok, tv.len, tv.n, &eos, 1, &v, &err) == LMC_OK);
    uint8_t mask[256];
    int finished = 0, mask_checks = 0, mask_bad = 0;
    for (int run = 0; run < 30; run++) {
        struct lmc_grammar_state *s = NULL;
        CHECK(lmc_grammar_state_new(g, &s, &err) == LMC_OK);
        char out[1024];
        size_t n = 0;
        bool done = false;
        for (int step = 0; step < 200 && !done; step++) {
            lmc_status st = lmc_grammar_mask(s, v, mask, &err);
            CHECK_MSG(st == LMC_OK, "mask dead end after [%.*s]: %s", (int)n, out, err.msg);
            if (st) break;
            /* the mask equals trying every token on a fresh state at this prefix */
            if (run < 2 && step < 30) {
                for (int t = 1; t < tv.n; t++) {
                    struct lmc_grammar_state *p = NULL;
                    lmc_grammar_state_new(g, &p, &err);
                    bool ok = (n == 0 || lmc_grammar_accept(p, out, n)) && tv.len[t] > 0 &&
                              lmc_grammar_accept(p, tv.tok[t], tv.len[t]);
                    mask_checks++;
                    if (ok != (mask[t] != 0)) mask_bad++;
                    lmc_grammar_state_free(p);
                }
                mask_checks++;
                if ((mask[0] != 0) != lmc_grammar_can_end(s)) mask_bad++;
            }
            /* pick: eos when allowed half the time, else a random allowed token, biased to closing ones */
            int pick = -1;
            if (mask[0] && (test_rng_next(&rng) & 1)) pick = 0;
            else {
                int allowed[256], na = 0;
                for (int t = 1; t < tv.n; t++)
                    if (mask[t]) allowed[na++] = t;
                if (!na) pick = 0;
                else if (step > 40) pick = allowed[0]; /* the lowest ids are the closing punctuation */
                else pick = allowed[test_rng_next(&rng) % (uint64_t)na];
            }
            if (pick == 0) {
                CHECK(mask[0]);
                done = true;
                break;
            }
            CHECK(lmc_grammar_accept(s, tv.tok[pick], tv.len[pick]));
            memcpy(out + n, tv.tok[pick], tv.len[pick]);
            n += tv.len[pick];
        }
        out[n] = 0;
        if (done) {
            finished++;
            cJSON *j = parse_all(out);
            CHECK_MSG(j && valid(j), "%s: generated [%s] is not valid", sch, out);
            cJSON_Delete(j);
        }
        lmc_grammar_state_free(s);
    }
    CHECK_MSG(mask_bad == 0, "%s: %d of %d mask entries differ from trying the token", sch, mask_bad, mask_checks);
    CHECK_MSG(finished >= 20, "%s: only %d of 30 walks ended", sch, finished);
    for (int i = 0; i < tv.n; i++) free(tv.tok[i]);
    lmc_grammar_vocab_free(v);
    lmc_grammar_free(g);
}

static bool valid_person(const cJSON *j) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name"), *age = cJSON_GetObjectItemCaseSensitive(j, "age"),
                *tags = cJSON_GetObjectItemCaseSensitive(j, "tags");
    if (!cJSON_IsObject(j) || !cJSON_IsString(name) || utf8_chars(name->valuestring) > 8) return false;
    if (age && (!cJSON_IsNumber(age) || age->valuedouble < 0 || age->valuedouble > 120)) return false;
    if (tags) {
        if (!cJSON_IsArray(tags) || cJSON_GetArraySize(tags) > 3) return false;
        const cJSON *t;
        cJSON_ArrayForEach(t, tags) if (!cJSON_IsString(t) || (strcmp(t->valuestring, "a") && strcmp(t->valuestring, "b")))
            return false;
    }
    for (const cJSON *c = j->child; c; c = c->next)
        if (strcmp(c->string, "name") && strcmp(c->string, "age") && strcmp(c->string, "tags")) return false;
    return true;
}
static bool any_json(const cJSON *j) { return j != NULL; }
static bool valid_number_or_null(const cJSON *j) { return cJSON_IsNumber(j) || cJSON_IsNull(j); }

static void test_masks(void) {
    walk_schema("{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 8}, "
                "\"age\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 120}, "
                "\"tags\": {\"type\": \"array\", \"items\": {\"enum\": [\"a\", \"b\"]}, \"maxItems\": 3}}, "
                "\"required\": [\"name\"]}",
                valid_person, 7);
    walk_schema("{}", any_json, 11); /* any JSON value */
    walk_schema("{\"type\": [\"number\", \"null\"]}", valid_number_or_null, 13);
    /* response_format json_object */
    struct lmc_grammar *g = NULL;
    lmc_err err = {0};
    CHECK(lmc_grammar_json_object(&g, &err) == LMC_OK);
    const char *ok1 = "{\"a\": [1, 2.5e3, \"x\\n\", {\"b\": null}], \"c\": true}";
    CHECK(accepts(g, ok1, strlen(ok1)));
    CHECK(!accepts(g, "[1]", 3) && !accepts(g, "{\"a\" 1}", 7) && !accepts(g, "{", 1));
    lmc_grammar_free(g);
}

static void test_errors(void) {
    lmc_err err = {0};
    struct lmc_grammar *g = NULL;
    CHECK(lmc_grammar_from_json_schema("{\"allOf\": []}", 13, &g, &err) == LMC_ERR_UNSUPPORTED && !g);
    CHECK(strstr(err.msg, "allOf") != NULL);
    const char *lookahead = "{\"type\": \"string\", \"pattern\": \"(?=a)\"}"; /* unsupported regex syntax */
    CHECK(lmc_grammar_from_json_schema(lookahead, strlen(lookahead), &g, &err) != LMC_OK && strstr(err.msg, "lookaround"));
    CHECK(lmc_grammar_from_json_schema("{\"$ref\": \"#/$defs/missing\"}", 27, &g, &err) != LMC_OK);
    CHECK(lmc_grammar_from_json_schema("{\"type\": \"wat\"}", 15, &g, &err) != LMC_OK);
    CHECK(lmc_grammar_from_json_schema("{nope", 5, &g, &err) == LMC_ERR_ARG);
    CHECK(lmc_grammar_from_json_schema("{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 1}", 47, &g, &err) != LMC_OK);
    /* a hand-made left-recursive grammar is refused */
    CHECK(lmc_grammar_new(&g, &err) == LMC_OK);
    int a = lmc_grammar_rule(g, "a");
    lmc_grammar_alt_begin(g, a);
    lmc_grammar_add_rule(g, a);
    lmc_grammar_add_literal(g, "x", 1);
    lmc_grammar_alt_end(g);
    lmc_grammar_alt_begin(g, a);
    lmc_grammar_add_literal(g, "y", 1);
    lmc_grammar_alt_end(g);
    CHECK(lmc_grammar_finish(g, a, &err) == LMC_ERR_ARG && strstr(err.msg, "left-recursive"));
    lmc_grammar_free(g);
}

static bool ref_gbnf(const char *s) { /* root ::= ("ab" | [x-y]+) "!"? — or a single "é" */
    size_t n = strlen(s);
    if (!strcmp(s, "\xc3\xa9")) return true;
    if (n && s[n - 1] == '!') n--;
    if (n == 2 && !memcmp(s, "ab", 2)) return true;
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] != 'x' && s[i] != 'y') return false;
    return true;
}

static bool ref_gbnf_neg(const char *s) { /* root ::= [^a"]{1,2} : one or two characters, none of them a or " */
    size_t chars = 0;
    if (!utf8_ok(s)) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == 'a' || *p == '"') return false;
        chars += (*p & 0xc0) != 0x80;
    }
    return chars >= 1 && chars <= 2;
}

static void test_gbnf(void) {
    lmc_err err = {0};
    struct lmc_grammar *g = NULL;
    const char *t1 = "# a comment\nroot ::= (\"ab\" | xy) \"!\"? | [\u00e9]\nxy ::= [x-y]+\n";
    CHECK_MSG(lmc_grammar_from_gbnf(t1, strlen(t1), &g, &err) == LMC_OK, "%s", err.msg);
    const char *p1[] = {"a", "b", "x", "y", "!", "\xc3\xa9", "\xc3"};
    int n;
    if (g) brute("gbnf", g, p1, 7, 4, ref_gbnf, &n);
    lmc_grammar_free(g);
    const char *t2 = "root ::= [^a\"]{1,2}";
    CHECK_MSG(lmc_grammar_from_gbnf(t2, strlen(t2), &g, &err) == LMC_OK, "%s", err.msg);
    const char *p2[] = {"a", "\"", "b", "\xc3\xa9", "\xc3", "\n"};
    if (g) brute("gbnf negated class", g, p2, 6, 4, ref_gbnf_neg, &n);
    lmc_grammar_free(g);
    static const char *bad[] = {"root ::= x", "x ::= \"a\"", "root ::= \"a", "root ::= [b-a]", "root ::= (\"a\"",
                                "root ::= \"a\"\nroot ::= \"b\"", "root ::= \"a\"{3,1}", "root ::= root \"a\" | \"b\"",
                                "root ::= [^\u00e9]", "::= \"a\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        g = NULL;
        CHECK_MSG(lmc_grammar_from_gbnf(bad[i], strlen(bad[i]), &g, &err) != LMC_OK && !g && err.msg[0], "%s", bad[i]);
    }
}

int main(void) {
    test_gbnf();
    test_brute_force();
    test_masks();
    test_errors();
    return test_finish("test_grammar");
}
