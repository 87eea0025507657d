/* test_grammar_regex.c — JSON Schema "pattern" compiled into the grammar
 * (grammar_regex.c), checked by brute force against the C library's POSIX
 * regex as the reference: for each pattern, every JSON string made of up
 * to N pieces of a small alphabet (escaped characters included) is
 * accepted by the grammar exactly when regexec matches its value (search
 * semantics, as JSON Schema says, unless anchored). Unsupported syntax
 * is refused with a message naming the pattern. */
#include "infer/grammar.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

/* minLength/maxLength when >= 0 */
static struct lmc_grammar *compile_len(const char *pattern, int min_len, int max_len, lmc_err *err) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "string");
    cJSON_AddStringToObject(s, "pattern", pattern);
    if (min_len >= 0) cJSON_AddNumberToObject(s, "minLength", min_len);
    if (max_len >= 0) cJSON_AddNumberToObject(s, "maxLength", max_len);
    char *t = cJSON_PrintUnformatted(s);
    cJSON_Delete(s);
    struct lmc_grammar *g = NULL;
    if (lmc_grammar_from_json_schema(t, strlen(t), &g, err)) g = NULL;
    free(t);
    return g;
}

static struct lmc_grammar *compile(const char *pattern, lmc_err *err) { return compile_len(pattern, -1, -1, err); }

static bool accepts(const struct lmc_grammar *g, const char *s, size_t n) {
    struct lmc_grammar_state *st = NULL;
    lmc_err err = {0};
    if (lmc_grammar_state_new(g, &st, &err)) return false;
    bool ok = lmc_grammar_accept(st, s, n) && lmc_grammar_can_end(st);
    lmc_grammar_state_free(st);
    return ok;
}

/* a piece: its JSON spelling and its value */
struct piece { const char *json, *value; };

/* every string of up to max pieces from alphabet a (n pieces, one
 * character each), with minLength/maxLength when >= 0: accepted exactly
 * when the reference matches and the length is within them */
static void brute_len(const char *pattern, const char *posix, const struct piece *a, int n, int max, int min_len,
                      int max_len) {
    lmc_err err = {0};
    struct lmc_grammar *g = compile_len(pattern, min_len, max_len, &err);
    CHECK_MSG(g != NULL, "%s: %s", pattern, err.msg);
    regex_t re;
    int rc = regcomp(&re, posix, REG_EXTENDED | REG_NOSUB);
    CHECK_MSG(rc == 0, "reference %s does not compile", posix);
    if (!g || rc) {
        lmc_grammar_free(g);
        if (!rc) regfree(&re);
        return;
    }
    int idx[16];
    long total = 0, bad = 0, yes = 0;
    for (int len = 0; len <= max; len++) {
        for (int i = 0; i < len; i++) idx[i] = 0;
        for (;;) {
            char json[256] = "\"", value[128] = "";
            for (int i = 0; i < len; i++) {
                strcat(json, a[idx[i]].json);
                strcat(value, a[idx[i]].value);
            }
            strcat(json, "\"");
            bool want = regexec(&re, value, 0, NULL, 0) == 0 && len >= min_len && (max_len < 0 || len <= max_len), got = accepts(g, json, strlen(json));
            if (want != got && bad++ < 5)
                fprintf(stderr, "  %s: %s grammar %d, reference %d\n", pattern, json, got, want);
            total++;
            yes += got;
            int p = len - 1;
            while (p >= 0 && ++idx[p] == n) idx[p--] = 0;
            if (p < 0) break;
        }
    }
    CHECK_MSG(bad == 0, "%s: %ld of %ld strings disagree", pattern, bad, total);
    CHECK_MSG(yes > 0 && yes < total, "%s: %ld of %ld accepted (a trivial case)", pattern, yes, total);
    regfree(&re);
    lmc_grammar_free(g);
}

static void brute(const char *pattern, const char *posix, const struct piece *a, int n, int max) {
    brute_len(pattern, posix, a, n, max, -1, -1);
}

static void test_brute(void) {
    static const struct piece ab1[] = {{"a", "a"}, {"b", "b"}, {"1", "1"}, {"-", "-"}};
    static const struct piece digits[] = {{"1", "1"}, {"2", "2"}, {"a", "a"}};
    static const struct piece mixed[] = {{"a", "a"}, {"b", "b"}, {"_", "_"}, {"-", "-"}, {"\\\"", "\""}, {" ", " "}};
    static const struct piece ws[] = {{" ", " "}, {"x", "x"}, {"\\n", "\n"}, {"\\t", "\t"}, {"a", "a"}, {"\\\\", "\\"}};
    static const struct piece dot[] = {{"a", "a"}, {".", "."}, {"b", "b"}, {"\\u00e9", "\xc3\xa9"}};
    static const struct piece quote[] = {{"\\\"", "\""}, {"x", "x"}, {"\\\\", "\\"}};
    brute("^[a-b]+1?$", "^[a-b]+1?$", ab1, 4, 5);
    brute("^\\d{2,3}$", "^[0-9]{2,3}$", digits, 3, 5);
    brute("^(ab|b)*-?$", "^(ab|b)*-?$", ab1, 4, 5);
    brute("a1", "a1", ab1, 4, 4);                  /* unanchored: anywhere */
    brute("b$", "b$", ab1, 4, 4);                  /* anchored at the end only */
    brute("^a-", "^a-", ab1, 4, 4);                /* at the start only */
    brute("^[^a]\\w$", "^[^a][[:alnum:]_]$", mixed, 6, 3);
    brute("^(?:a|bb){1,2}$", "^(a|bb){1,2}$", ab1, 4, 5);
    brute("^a\\.b*$", "^a\\.b*$", dot, 4, 4);
    brute("^a.b?$", "^a.b?$", dot, 4, 4);         /* '.' takes a non-ASCII character too */
    brute("^[a\\-]+$", "^[-a]+$", ab1, 4, 4);
    brute("^\\s?x\\S$", "^[[:space:]]?x[^[:space:]]$", ws, 6, 3);
    brute("^\"x?\\\\*$", "^\"x?\\\\*$", quote, 3, 4);
    brute("^a{3}$", "^a{3}$", ab1, 4, 4);
    brute("^(a|b-?){2,}$", "^(a|b-?){2,}$", ab1, 4, 5);
    brute("^[ab]+?1*?$", "^[ab]+1*$", ab1, 4, 4);  /* lazy quantifiers: the same language */
    brute("^\\x61\\u0062$", "^ab$", ab1, 4, 3);
}

/* pattern with minLength/maxLength: both enforced (the unanchored sides count too) */
static void test_lengths(void) {
    static const struct piece ab1[] = {{"a", "a"}, {"b", "b"}, {"1", "1"}, {"-", "-"}};
    static const struct piece dot[] = {{"a", "a"}, {".", "."}, {"b", "b"}, {"\\u00e9", "\xc3\xa9"}};
    brute_len("^[a-b]+1?$", "^[a-b]+1?$", ab1, 4, 6, 2, 4);
    brute_len("^(ab|b)*-?$", "^(ab|b)*-?$", ab1, 4, 6, -1, 3);
    brute_len("^(ab|b)*-?$", "^(ab|b)*-?$", ab1, 4, 6, 3, -1);   /* minLength only: a saturating counter */
    brute_len("a1", "a1", ab1, 4, 5, 3, 4);                       /* unanchored: the sides count */
    brute_len("b$", "b$", ab1, 4, 5, 2, -1);
    brute_len("^(a|b-?){2,}$", "^(a|b-?){2,}$", ab1, 4, 6, 0, 4);
    brute_len("^a.b?$", "^a.b?$", dot, 4, 4, 3, 3);               /* characters, not bytes */
    brute_len("^(?:a|bb){1,3}1*$", "^(a|bb){1,3}1*$", ab1, 4, 7, 3, 5);
    brute_len("", "", ab1, 4, 4, 1, 2);
    /* refused: no string fits, or a bound above 256 */
    static const char *const pats[] = {"^a{5}$", "^a+$", "^a+$", "^a$"};
    static const int mins[] = {0, 300, -1, 2}, maxs[] = {3, -1, 257, 5};
    for (int i = 0; i < 4; i++) {
        lmc_err err = {0};
        struct lmc_grammar *g = compile_len(pats[i], mins[i], maxs[i], &err);
        CHECK_MSG(!g && strstr(err.msg, "pattern") && (strstr(err.msg, "256") || strstr(err.msg, "Length")), "%s: %s",
                  pats[i], g ? "accepted" : err.msg);
        lmc_grammar_free(g);
    }
    lmc_err err = {0};
    char big[1300] = "^"; /* many long repeats under a long bound: refused by the work bound, quickly */
    for (int i = 0; i < 150; i++) strcat(big, "a{0,256}");
    strcat(big, "$");
    struct lmc_grammar *g = compile_len(big, 0, 256, &err);
    CHECK_MSG(!g && strstr(err.msg, "too large"), "%s", g ? "accepted" : err.msg);
    lmc_grammar_free(g);
    g = compile_len("^a+$", 0, 256, &err); /* the bound itself is taken */
    CHECK_MSG(g != NULL, "%s", err.msg);
    lmc_grammar_free(g);
}

static void test_errors(void) {
    static const char *const bad[] = {"(?=a)", "(?<n>a)", "(a)\\1", "\\bfoo", "a**", "[z-a]", "(a", "a)", "^a|b$",
                                      "[\xc3\xa9]", "a{300}", "*", "[[:alpha:]]", "\\p{L}", "a{2,1}", "[a", "a$b",
                                      "\\", "a{,3}", "\\u12"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lmc_err err = {0};
        struct lmc_grammar *g = compile(bad[i], &err);
        CHECK_MSG(!g && strstr(err.msg, "pattern"), "%s: %s", bad[i], g ? "accepted" : err.msg);
        lmc_grammar_free(g);
    }
    /* a pattern with bad length bounds */
    const char *s = "{\"type\":\"string\",\"pattern\":\"^a+$\",\"minLength\":3,\"maxLength\":2}";
    struct lmc_grammar *g = NULL;
    lmc_err err = {0};
    CHECK(lmc_grammar_from_json_schema(s, strlen(s), &g, &err) != LMC_OK && strstr(err.msg, "length"));
    /* inside an object, with other properties */
    s = "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3}$\"},"
        "\"n\":{\"type\":\"integer\"}},\"required\":[\"id\",\"n\"]}";
    CHECK_MSG(lmc_grammar_from_json_schema(s, strlen(s), &g, &err) == LMC_OK, "%s", err.msg);
    if (g) {
        const char *ok = "{\"id\":\"AB-123\",\"n\":4}", *no = "{\"id\":\"AB-12\",\"n\":4}";
        CHECK(accepts(g, ok, strlen(ok)) && !accepts(g, no, strlen(no)));
        lmc_grammar_free(g);
    }
    /* raw control characters and unescaped quotes never pass */
    g = compile("^.*$", &err);
    CHECK(g && accepts(g, "\"a\\\"b\"", 6) && !accepts(g, "\"a\"b\"", 5) && !accepts(g, "\"a\tb\"", 5) &&
          accepts(g, "\"\"", 2));
    lmc_grammar_free(g);
}

int main(void) {
    test_brute();
    test_lengths();
    test_errors();
    printf("test_grammar_regex: %d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}
