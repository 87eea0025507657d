/* test_tokenizer.c — tokenizer parity with Hugging Face tokenizers on the
 * fixtures (tokenizer_probes and prompts of ref.json: ids and decode), plus
 * hand-written cases: empty input, invalid UTF-8, out-of-range ids, special
 * tokens in the text, add_special, and malformed / unsupported
 * tokenizer.json variants that must fail cleanly with a named field. */
#include "core/core.h"
#include "tokenizer/tokenizer.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static bool ids_equal(const int32_t *a, int64_t na, const cJSON *ref) {
    if (!cJSON_IsArray(ref) || cJSON_GetArraySize(ref) != na) return false;
    int64_t i = 0;
    for (const cJSON *c = ref->child; c; c = c->next, i++)
        if (!cJSON_IsNumber(c) || (int32_t)c->valuedouble != a[i]) return false;
    return true;
}

static void print_ids(const char *what, const int32_t *a, int64_t n) {
    fprintf(stderr, "  %s:", what);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", a[i]);
    fputc('\n', stderr);
}

/* Encodes text and checks ids (and, if decoded != NULL, the decode). */
static void check_case(const struct lmc_tokenizer *t, const char *name, const char *text, const cJSON *ids,
                       const char *decoded) {
    lmc_err err = {0};
    int32_t *got = NULL;
    int64_t n = 0;
    lmc_status st = lmc_tokenizer_encode(t, text, strlen(text), false, &got, &n, &err);
    CHECK_MSG(st == LMC_OK, "%s: encode '%s': %s", name, text, err.msg);
    if (st) return;
    bool eq = ids_equal(got, n, ids);
    CHECK_MSG(eq, "%s: ids of '%s' differ", name, text);
    if (!eq) {
        print_ids("got", got, n);
        char *r = cJSON_PrintUnformatted(ids);
        fprintf(stderr, "  want: %s\n", r);
        free(r);
    }
    if (decoded) {
        char *out = NULL;
        size_t len = 0;
        st = lmc_tokenizer_decode(t, got, n, &out, &len, &err);
        CHECK_MSG(st == LMC_OK, "%s: decode: %s", name, err.msg);
        if (!st) CHECK_MSG(len == strlen(decoded) && memcmp(out, decoded, len) == 0,
                           "%s: decode gave '%s', want '%s'", name, out, decoded);
        free(out);
    }
    free(got);
}

static void test_fixture(const char *name) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    snprintf(path, sizeof path, "%s/ref.json", dir);
    lmc_err err = {0};
    char *js = NULL;
    size_t jl = 0;
    lmc_status st = lmc_file_read(path, (size_t)1 << 28, &js, &jl, &err);
    CHECK_MSG(st == LMC_OK, "%s", err.msg);
    if (st) return;
    cJSON *ref = cJSON_ParseWithLength(js, jl);
    free(js);
    CHECK_MSG(ref != NULL, "%s: bad JSON", path);
    struct lmc_tokenizer *t = NULL;
    st = lmc_tokenizer_load(&t, dir, &err);
    CHECK_MSG(st == LMC_OK, "%s: load: %s", name, err.msg);
    if (st || !ref) {
        cJSON_Delete(ref);
        return;
    }
    int np = 0;
    const cJSON *probes = cJSON_GetObjectItemCaseSensitive(ref, "tokenizer_probes");
    CHECK(cJSON_GetArraySize(probes) > 0);
    for (const cJSON *p = probes ? probes->child : NULL; p; p = p->next, np++) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(p, "decoded");
        check_case(t, name, text->valuestring, cJSON_GetObjectItemCaseSensitive(p, "ids"), dec->valuestring);
    }
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(ref, "prompts");
    CHECK(cJSON_GetArraySize(prompts) > 0);
    for (const cJSON *p = prompts ? prompts->child : NULL; p; p = p->next, np++) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        check_case(t, name, text->valuestring, cJSON_GetObjectItemCaseSensitive(p, "ids"), text->valuestring);
    }
    printf("%s: %d reference cases checked\n", name, np);
    lmc_tokenizer_free(t);
    cJSON_Delete(ref);
}

/* Encodes s and compares with want[0..nw). */
static void expect_ids(const struct lmc_tokenizer *t, const char *s, bool add_special, const int32_t *want, int64_t nw) {
    lmc_err err = {0};
    int32_t *got = NULL;
    int64_t n = -1;
    lmc_status st = lmc_tokenizer_encode(t, s, strlen(s), add_special, &got, &n, &err);
    CHECK_MSG(st == LMC_OK, "encode '%s': %s", s, err.msg);
    bool eq = st == LMC_OK && n == nw && (nw == 0 || memcmp(got, want, (size_t)nw * sizeof *want) == 0);
    CHECK_MSG(eq, "ids of '%s'", s);
    if (!eq && st == LMC_OK) print_ids("got", got, n);
    free(got);
}

static struct lmc_tokenizer *load_fixture(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fixtures/%s", name);
    struct lmc_tokenizer *t = NULL;
    lmc_err err = {0};
    lmc_status st = lmc_tokenizer_load(&t, dir, &err);
    CHECK_MSG(st == LMC_OK, "%s: %s", name, err.msg);
    return t;
}

static void test_hand_cases(void) {
    struct lmc_tokenizer *g = load_fixture("gpt2-tiny"), *q = load_fixture("qwen2-tiny"),
                         *l = load_fixture("llama-tiny");
    if (!g || !q || !l) goto done;
    lmc_err err = {0};
    int32_t *ids = NULL;
    int64_t n = -1;

    /* empty string: no ids, a non-NULL empty array */
    CHECK(lmc_tokenizer_encode(g, "", 0, false, &ids, &n, &err) == LMC_OK && n == 0);
    free(ids);
    char *txt = NULL;
    size_t tl = 99;
    CHECK(lmc_tokenizer_decode(l, NULL, 0, &txt, &tl, &err) == LMC_OK && tl == 0 && txt && txt[0] == 0);
    free(txt);

    /* invalid UTF-8 is rejected with the byte offset */
    const char bad[] = "ab\xc3(";
    CHECK(lmc_tokenizer_encode(q, bad, 4, false, &ids, &n, &err) == LMC_ERR_ARG);
    CHECK_MSG(strstr(err.msg, "offset 2") != NULL, "message: %s", err.msg);
    CHECK(lmc_tokenizer_encode(l, "\xff", 1, false, &ids, &n, &err) == LMC_ERR_ARG);
    CHECK(lmc_tokenizer_encode(g, "\xed\xa0\x80", 3, false, &ids, &n, &err) == LMC_ERR_ARG); /* surrogate */

    /* ids past the vocabulary (an embedding padded beyond the tokenizer, as
     * Qwen2's and padded GPT-2's are) decode as no text, as transformers
     * does; a negative id is an error naming its position */
    {
        int32_t v = (int32_t)lmc_tokenizer_vocab_size(g);
        int32_t plain[] = {5, 100}, padded[] = {v, 5, v + 7, 100, INT32_MAX};
        char *want = NULL, *got = NULL;
        size_t wl = 0, gl = 0;
        CHECK(lmc_tokenizer_decode(g, plain, 2, &want, &wl, &err) == LMC_OK);
        CHECK_MSG(lmc_tokenizer_decode(g, padded, 5, &got, &gl, &err) == LMC_OK, "%s", err.msg);
        CHECK(want && got && wl == gl && wl > 0 && memcmp(want, got, wl) == 0);
        free(want);
        free(got);
        int32_t only[] = {v};
        CHECK(lmc_tokenizer_decode(l, only, 1, &got, &gl, &err) == LMC_OK && gl == 0 && got && got[0] == 0);
        free(got);
    }
    int32_t neg[] = {7, -1};
    CHECK(lmc_tokenizer_decode(l, neg, 2, &txt, &tl, &err) == LMC_ERR_ARG);
    CHECK_MSG(strstr(err.msg, "position 1") != NULL, "message: %s", err.msg);

    /* special tokens in the text are matched as their ids */
    CHECK(lmc_tokenizer_token_id(g, "<|endoftext|>") == 0);
    CHECK(lmc_tokenizer_is_special(g, 0));
    CHECK(!lmc_tokenizer_is_special(g, 100));
    CHECK(lmc_tokenizer_bos(g) == 0 && lmc_tokenizer_eos(g) == 0);
    CHECK(lmc_tokenizer_bos(q) == 0 && lmc_tokenizer_eos(q) == 1);
    CHECK(lmc_tokenizer_bos(l) == 1 && lmc_tokenizer_eos(l) == 2);
    CHECK(strcmp(lmc_tokenizer_bos_str(l), "<s>") == 0);
    CHECK(lmc_tokenizer_vocab_size(g) == 512 && lmc_tokenizer_vocab_size(l) == 512);
    {
        int32_t w[] = {0, 0};
        expect_ids(g, "<|endoftext|><|endoftext|>", false, w, 2);
    }
    {
        int32_t eot = lmc_tokenizer_token_id(q, "<|eot_id|>");
        CHECK(eot == 2);
        int32_t *a = NULL, *b = NULL;
        int64_t na = 0, nb = 0;
        /* "hi<|eot_id|>there" == enc("hi") + [eot] + enc("there") */
        CHECK(lmc_tokenizer_encode(q, "hi", 2, false, &a, &na, &err) == LMC_OK);
        CHECK(lmc_tokenizer_encode(q, "there", 5, false, &b, &nb, &err) == LMC_OK);
        int32_t want[64];
        int64_t nw = 0;
        for (int64_t i = 0; i < na && nw < 60; i++) want[nw++] = a[i];
        want[nw++] = eot;
        for (int64_t i = 0; i < nb && nw < 63; i++) want[nw++] = b[i];
        expect_ids(q, "hi<|eot_id|>there", false, want, nw);
        free(a);
        free(b);
        /* decode keeps special tokens (skip_special_tokens=False) */
        int32_t one[] = {eot};
        CHECK(lmc_tokenizer_decode(q, one, 1, &txt, &tl, &err) == LMC_OK && strcmp(txt, "<|eot_id|>") == 0);
        free(txt);
    }
    {
        /* llama: "<s>" inside text is the BOS id; the Prepend normalizer applies
         * to the piece after it as HF does */
        int32_t *a = NULL;
        int64_t na = 0;
        CHECK(lmc_tokenizer_encode(l, "<s>a", 4, false, &a, &na, &err) == LMC_OK);
        CHECK(na >= 2 && a[0] == 1);
        free(a);
        int32_t want[] = {334};
        expect_ids(l, "a", true, want, 1); /* the fixture's template adds nothing */
    }
done:
    lmc_tokenizer_free(g);
    lmc_tokenizer_free(q);
    lmc_tokenizer_free(l);
}

/* A small hand-made byte-level tokenizer to exercise options. */
static const char *mini_json =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":7,\"content\":\"<eos>\",\"special\":true,\"normalized\":false},"
    "{\"id\":8,\"content\":\"<bos>\",\"special\":true,\"normalized\":false}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<bos>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<bos>\":{\"id\":\"<bos>\",\"ids\":[8],"
    "\"tokens\":[\"<bos>\"]}}},\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120a\":4,\"\\u0120ab\":5,\"c\":6},"
    "\"merges\":[\"a b\",[\"\\u0120\",\"a\"],\"\\u0120a b\"]}}";

static void test_mini(void) {
    struct lmc_tokenizer *t = NULL;
    lmc_err err = {0};
    lmc_status st = lmc_tokenizer_load_json(&t, mini_json, strlen(mini_json), "{\"add_bos_token\":false}", 23, &err);
    CHECK_MSG(st == LMC_OK, "%s", err.msg);
    if (st) return;
    int32_t w1[] = {2, 3, 2, 6, 7}; /* "a b" outranks "Ġa b" */
    expect_ids(t, "ab abc<eos>", false, w1, 5);
    /* add_bos_token=false in the config overrides the template */
    expect_ids(t, "ab", true, w1, 1);
    lmc_tokenizer_free(t);
    st = lmc_tokenizer_load_json(&t, mini_json, strlen(mini_json), NULL, 0, &err);
    CHECK_MSG(st == LMC_OK, "%s", err.msg);
    if (st) return;
    int32_t w2[] = {8, 2};
    expect_ids(t, "ab", true, w2, 2);
    /* characters outside the vocab with no unk token are dropped, as HF does */
    int32_t w3[] = {0};
    expect_ids(t, "az", false, w3, 1);
    lmc_tokenizer_free(t);
}

/* Replaces the first occurrence of from with to in mini_json. */
static char *variant(const char *from, const char *to) {
    const char *p = strstr(mini_json, from);
    LMC_ASSERT(p);
    size_t n = strlen(mini_json), fl = strlen(from), tl = strlen(to);
    char *s = malloc(n - fl + tl + 1);
    memcpy(s, mini_json, (size_t)(p - mini_json));
    memcpy(s + (p - mini_json), to, tl);
    strcpy(s + (p - mini_json) + tl, p + fl);
    return s;
}

static void expect_fail(const char *json, size_t len, lmc_status want, const char *needle) {
    struct lmc_tokenizer *t = (struct lmc_tokenizer *)1;
    lmc_err err = {0};
    lmc_status st = lmc_tokenizer_load_json(&t, json, len, NULL, 0, &err);
    CHECK_MSG(st == want, "want %s, got %s (%s)", lmc_status_str(want), lmc_status_str(st), err.msg);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message '%s' should mention '%s'", err.msg, needle);
}

static void test_malformed(void) {
    /* truncated JSON at many lengths */
    size_t n = strlen(mini_json);
    for (size_t cut = 0; cut < n; cut += 7) {
        struct lmc_tokenizer *t = NULL;
        lmc_err err = {0};
        lmc_status st = lmc_tokenizer_load_json(&t, mini_json, cut, NULL, 0, &err);
        CHECK_MSG(st == LMC_ERR_FORMAT && t == NULL, "cut at %zu: %s", cut, err.msg);
    }
    expect_fail(mini_json, n / 2, LMC_ERR_FORMAT, "not valid JSON");
    expect_fail("[1,2]", 5, LMC_ERR_FORMAT, "top level");
    struct { const char *from, *to; lmc_status st; const char *needle; } cases[] = {
        {"\"vocab\":{", "\"vocab\":5,\"v\":{", LMC_ERR_FORMAT, "model.vocab"},
        {"\"vocab\":{\"a\":0,", "\"vocab\":\"oops\",\"x\":{\"a\":0,", LMC_ERR_FORMAT, "model.vocab"},
        {"\"vocab\":{\"a\":0,", "\"vocab\":{\"a\":0.5,", LMC_ERR_FORMAT, "model.vocab[\"a\"]: expected a non-negative"},
        {"\"a b\"", "\"a q\"", LMC_ERR_FORMAT, "model.merges[0]"},
        {"\"a b\"", "\"ab\"", LMC_ERR_FORMAT, "model.merges[0]"},
        {"[\"\\u0120\",\"a\"]", "[\"\\u0120\",1]", LMC_ERR_FORMAT, "model.merges[1]"},
        {"\"type\":\"ByteLevel\",\"add_prefix_space\"", "\"type\":\"Whitespace\",\"add_prefix_space\"",
         LMC_ERR_UNSUPPORTED, "pre_tokenizer type 'Whitespace' is not supported"},
        {"\"normalizer\":null", "\"normalizer\":{\"type\":\"NFKC\"}", LMC_ERR_UNSUPPORTED, "normalizer type 'NFKC'"},
        {"\"normalizer\":null", "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"}]}",
         LMC_ERR_UNSUPPORTED, "Lowercase"},
        {"\"decoder\":{\"type\":\"ByteLevel\"}", "\"decoder\":{\"type\":\"WordPiece\"}", LMC_ERR_UNSUPPORTED,
         "decoder type 'WordPiece'"},
        {"\"type\":\"BPE\"", "\"type\":\"Unigram\"", LMC_ERR_UNSUPPORTED, "model type 'Unigram'"},
        {"\"type\":\"TemplateProcessing\"", "\"type\":\"BertProcessing\"", LMC_ERR_UNSUPPORTED, "post_processor"},
        {"\"type\":\"BPE\"", "\"type\":\"BPE\",\"dropout\":0.1", LMC_ERR_UNSUPPORTED, "dropout"},
        {"\"type\":\"BPE\"", "\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\"", LMC_ERR_UNSUPPORTED,
         "continuing_subword_prefix"},
        {"\"version\":\"1.0\"", "\"version\":\"1.0\",\"truncation\":{\"max_length\":5}", LMC_ERR_UNSUPPORTED,
         "truncation"},
        {"\"id\":7,", "\"id\":\"7\",", LMC_ERR_FORMAT, "added_tokens[0].id"},
        {"\"\\u0120\":3", "\"\\u0120\":2", LMC_ERR_FORMAT, "id 2"},
        {"\"c\":6", "\"c\":6000000", LMC_ERR_FORMAT, "6000000"},
        {"\"use_regex\":true", "\"use_regex\":1", LMC_ERR_FORMAT, "use_regex"},
        {"\"type\":\"BPE\"", "\"type\":\"BPE\",\"unk_token\":\"<nope>\"", LMC_ERR_FORMAT, "unk_token"},
        {"\"normalizer\":null", "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\" \"}",
         LMC_ERR_UNSUPPORTED, "Regex"},
        {"\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
         "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}",
         LMC_ERR_FORMAT, "regex"},
        {"\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
         "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"}",
         LMC_ERR_UNSUPPORTED, "behavior 'Removed'"},
        {"\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
         "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"}", LMC_ERR_FORMAT, "replacement"},
        {"\"model\":{", "\"modelx\":{", LMC_ERR_FORMAT, "model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = variant(cases[i].from, cases[i].to);
        expect_fail(s, strlen(s), cases[i].st, cases[i].needle);
        free(s);
    }
    /* a bad tokenizer_config.json */
    struct lmc_tokenizer *t = NULL;
    lmc_err err = {0};
    CHECK(lmc_tokenizer_load_json(&t, mini_json, n, "{\"bos_token\": 5}", 16, &err) == LMC_ERR_FORMAT && !t);
    CHECK_MSG(strstr(err.msg, "tokenizer_config.json: bos_token") != NULL, "%s", err.msg);
    const char *cfg = "{\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"Y\"},{\"name\":\"default\","
                      "\"template\":\"X\"}],\"eos_token\":{\"content\":\"<eos>\"}}";
    CHECK_MSG(lmc_tokenizer_load_json(&t, mini_json, n, cfg, strlen(cfg), &err) == LMC_OK, "%s", err.msg);
    if (t) {
        CHECK(strcmp(lmc_tokenizer_chat_template(t), "X") == 0);
        CHECK(lmc_tokenizer_eos(t) == 7);
        lmc_tokenizer_free(t);
    }
    /* tokenizer.json must be UTF-8 */
    {
        char *s = variant("\"c\":6", "\"\xc3(\":6");
        expect_fail(s, strlen(s), LMC_ERR_FORMAT, "UTF-8");
        free(s);
    }
    /* the ByteLevel decoder maps a token byte by byte only when every char is
     * in the byte table; an added token with a space is written as it is */
    {
        char *s = variant("{\"id\":8,", "{\"id\":9,\"content\":\"x y\",\"normalized\":false},{\"id\":8,");
        CHECK_MSG(lmc_tokenizer_load_json(&t, s, strlen(s), NULL, 0, &err) == LMC_OK, "%s", err.msg);
        free(s);
        if (t) {
            int32_t ids[] = {9, 3, 0, 9};
            char *txt = NULL;
            size_t tl = 0;
            CHECK(lmc_tokenizer_decode(t, ids, 4, &txt, &tl, &err) == LMC_OK);
            CHECK_MSG(txt && strcmp(txt, "x y ax y") == 0, "decode: '%s'", txt);
            free(txt);
            int32_t w[] = {9, 4}; /* "x y" then "\u0120a" */
            expect_ids(t, "x y a", false, w, 2);
            lmc_tokenizer_free(t);
            t = NULL;
        }
    }
    /* a folder without tokenizer.json */
    CHECK(lmc_tokenizer_load(&t, "tests/fixtures/no-such-model", &err) == LMC_ERR_IO && !t);
}

/* A 4 MB corpus must encode in seconds and round-trip. */
static void test_speed(void) {
    struct lmc_tokenizer *t = load_fixture("qwen2-tiny");
    if (!t) return;
    const char *para = "In the beginning God created the heaven and the earth. And the earth was without form, "
                       "and void; and darkness was upon the face of the deep. 12345 caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd\n";
    size_t pl = strlen(para), want = (size_t)4 << 20;
    char *big = malloc(want + pl);
    size_t n = 0;
    while (n < want) {
        memcpy(big + n, para, pl);
        n += pl;
    }
    lmc_err err = {0};
    int32_t *ids = NULL;
    int64_t ni = 0;
    double t0 = lmc_time_now();
    lmc_status st = lmc_tokenizer_encode(t, big, n, false, &ids, &ni, &err);
    double t1 = lmc_time_now();
    CHECK_MSG(st == LMC_OK, "%s", err.msg);
    char *back = NULL;
    size_t bl = 0;
    if (st == LMC_OK) {
        CHECK(lmc_tokenizer_decode(t, ids, ni, &back, &bl, &err) == LMC_OK);
        CHECK(bl == n && memcmp(back, big, n) == 0);
    }
    printf("encoded %.1f MB into %lld ids in %.2f s\n", n / 1e6, (long long)ni, t1 - t0);
    CHECK_MSG(t1 - t0 < 20.0, "encoding took %.1f s", t1 - t0);
    free(back);
    free(ids);
    free(big);
    lmc_tokenizer_free(t);
}

int main(void) {
    test_fixture("llama-tiny");
    test_fixture("qwen2-tiny");
    test_fixture("gpt2-tiny");
    test_hand_cases();
    test_mini();
    test_malformed();
    test_speed();
    return test_finish("test_tokenizer");
}
