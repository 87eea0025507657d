/* test_safetensors.c — safetensors reading and writing: the fixture models
 * load with the right shapes, a write/read round trip is byte-exact, a
 * sharded folder loads through its index, and every kind of corrupt or
 * hostile input gives the right status with a message naming the field. */
#include "test.h"
#include "io/safetensors.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n && fwrite(p, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

/* Builds a safetensors image: 8-byte length, header text, data_len zero
 * bytes (or the given length field when hlen_override != 0). */
static unsigned char *make_image(const char *hdr, size_t data_len, uint64_t hlen_override, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + data_len;
    unsigned char *b = calloc(1, *len + 1);
    uint64_t n = hlen_override ? hlen_override : h;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(n >> (8 * i));
    memcpy(b + 8, hdr, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (unsigned char)(i * 7 + 1);
    return b;
}

/* Parses an image made from hdr; checks status and message substrings. */
static void expect_bad(const char *what, const char *hdr, size_t data_len, uint64_t hlen, lmc_status want,
                       const char *sub1, const char *sub2) {
    size_t len;
    unsigned char *img = make_image(hdr, data_len, hlen, &len);
    struct lmc_st st;
    lmc_err err = {0};
    lmc_status s = lmc_st_parse(&st, img, len, "bad.safetensors", &err);
    CHECK_MSG(s == want, "%s: status %d (%s), want %d", what, (int)s, err.msg, (int)want);
    CHECK_MSG(strstr(err.msg, "bad.safetensors") != NULL, "%s: message lacks file: %s", what, err.msg);
    if (sub1) CHECK_MSG(strstr(err.msg, sub1) != NULL, "%s: message lacks '%s': %s", what, sub1, err.msg);
    if (sub2) CHECK_MSG(strstr(err.msg, sub2) != NULL, "%s: message lacks '%s': %s", what, sub2, err.msg);
    CHECK(st.n_tensors == 0 && st.tensors == NULL && st.files == NULL);
    lmc_st_free(&st); /* safe on a failed parse */
    free(img);
}

static void test_fixtures(void) {
    static const struct { const char *dir, *name; int64_t n, d0, d1; int ndim; } cases[] = {
        {"tests/fixtures/llama-tiny", "model.embed_tokens.weight", 21, 512, 64, 2},
        {"tests/fixtures/llama-tiny", "lm_head.weight", 21, 512, 64, 2},
        {"tests/fixtures/llama-tiny", "model.layers.1.mlp.down_proj.weight", 21, 64, 176, 2},
        {"tests/fixtures/qwen2-tiny", "model.layers.0.self_attn.k_proj.bias", 26, 16, 0, 1},
        {"tests/fixtures/qwen2-tiny", "model.embed_tokens.weight", 26, 768, 64, 2},
        {"tests/fixtures/gpt2-tiny", "transformer.h.0.attn.c_attn.weight", 28, 64, 192, 2},
        {"tests/fixtures/gpt2-tiny", "transformer.wpe.weight", 28, 256, 64, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct lmc_st st;
        lmc_err err = {0};
        lmc_status s = lmc_st_open_dir(&st, cases[i].dir, &err);
        CHECK_MSG(s == LMC_OK, "%s: %s", cases[i].dir, err.msg);
        if (s != LMC_OK) continue;
        CHECK(st.n_tensors == cases[i].n && st.n_files == 1);
        const struct lmc_st_tensor *t = lmc_st_find(&st, cases[i].name);
        CHECK_MSG(t != NULL, "%s not found", cases[i].name);
        if (t) {
            CHECK(t->dtype == LMC_DTYPE_F32 && t->ndim == cases[i].ndim && t->shape[0] == cases[i].d0);
            if (t->ndim == 2) CHECK(t->shape[1] == cases[i].d1);
            CHECK(t->nbytes == (size_t)t->numel * 4);
            CHECK(((uintptr_t)t->data & 3) == 0);
        }
        CHECK(lmc_st_find(&st, "no.such.tensor") == NULL);
        const char *fmt = lmc_st_meta_get(&st, "format");
        CHECK(fmt && strcmp(fmt, "pt") == 0);
        for (int64_t k = 1; k < st.n_tensors; k++) CHECK(strcmp(st.tensors[k - 1].name, st.tensors[k].name) < 0);
        /* every tensor is findable */
        int64_t found = 0;
        for (int64_t k = 0; k < st.n_tensors; k++) found += lmc_st_find(&st, st.tensors[k].name) == &st.tensors[k];
        CHECK(found == st.n_tensors);
        lmc_st_free(&st);
        lmc_st_free(&st); /* twice is fine */
        CHECK(st.n_tensors == 0 && st.files == NULL);
    }
    /* the mapped bytes are the file's bytes */
    struct lmc_st st;
    lmc_err err = {0};
    char *text = NULL;
    size_t len = 0;
    CHECK(lmc_file_read("tests/fixtures/llama-tiny/model.safetensors", 1 << 24, &text, &len, &err) == LMC_OK);
    CHECK(lmc_st_open_file(&st, "tests/fixtures/llama-tiny/model.safetensors", &err) == LMC_OK);
    const struct lmc_st_tensor *t = lmc_st_find(&st, "model.norm.weight");
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)text[i];
    CHECK(t && memcmp(t->data, text + 8 + n + 631808, 256) == 0);
    lmc_st_free(&st);
    /* lmc_st_parse on the same bytes agrees */
    CHECK(lmc_st_parse(&st, text, len, "mem", &err) == LMC_OK);
    t = lmc_st_find(&st, "model.norm.weight");
    CHECK(t && (const char *)t->data == text + 8 + n + 631808 && t->nbytes == 256);
    lmc_st_free(&st);
    free(text);
}

static void fill_random(void *p, size_t n, uint64_t *rng) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)test_rng_next(rng);
}

static void test_round_trip(void) {
    uint64_t rng = 42;
    float a[3 * 5 * 7];
    uint16_t h[13], bf[15];
    float scalar = 3.25f;
    int64_t ids[3] = {1, -2, 1LL << 40};
    for (int i = 0; i < 105; i++) a[i] = test_rand(&rng);
    for (int i = 0; i < 13; i++) h[i] = lmc_f32_to_f16(test_rand(&rng));
    for (int i = 0; i < 15; i++) bf[i] = lmc_f32_to_bf16(test_rand(&rng));
    unsigned char u8[5];
    fill_random(u8, sizeof u8, &rng);
    struct lmc_st_write_tensor w[] = {
        {"a.weight", LMC_DTYPE_F32, 3, {3, 5, 7}, a},
        {"half", LMC_DTYPE_F16, 1, {13}, h},
        {"bf.\"quoted\"\\name", LMC_DTYPE_BF16, 4, {1, 3, 1, 5}, bf},
        {"scalar", LMC_DTYPE_F32, 0, {0}, &scalar},
        {"empty", LMC_DTYPE_F32, 2, {0, 4}, NULL},
        {"ids", LMC_DTYPE_I64, 1, {3}, ids},
        {"bytes", LMC_DTYPE_U8, 1, {5}, u8},
    };
    const int64_t nw = sizeof w / sizeof w[0];
    const char *meta[] = {"format", "pt", "step", "12", "odd\"key\n", "va\\lue"};
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    lmc_err err = {0};
    lmc_status s = lmc_st_write(path, w, nw, meta, 3, &err);
    CHECK_MSG(s == LMC_OK, "write: %s", err.msg);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!lmc_file_exists(tmp));
    struct lmc_st st;
    s = lmc_st_open_file(&st, path, &err);
    CHECK_MSG(s == LMC_OK, "read back: %s", err.msg);
    if (s != LMC_OK) return;
    CHECK(st.n_tensors == nw);
    const unsigned char *base = st.files[0].map;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | base[i];
    CHECK(hl % 8 == 0);
    size_t expect_data = 0;
    for (int64_t i = 0; i < nw; i++) {
        const struct lmc_st_tensor *t = lmc_st_find(&st, w[i].name);
        CHECK_MSG(t != NULL, "missing %s", w[i].name);
        if (!t) continue;
        CHECK(t->dtype == w[i].dtype && t->ndim == w[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < w[i].ndim; d++) {
            CHECK(t->shape[d] == w[i].shape[d]);
            numel *= w[i].shape[d];
        }
        CHECK(t->numel == numel);
        size_t nb = (size_t)numel * (size_t)lmc_dtype_size(w[i].dtype);
        CHECK(t->nbytes == nb);
        if (nb) CHECK_MSG(memcmp(t->data, w[i].data, nb) == 0, "data of %s differs", w[i].name);
        /* contiguous, in the order given */
        CHECK((const unsigned char *)t->data == base + 8 + hl + expect_data);
        expect_data += nb;
    }
    CHECK(st.files[0].size == 8 + hl + expect_data);
    CHECK(strcmp(lmc_st_meta_get(&st, "step"), "12") == 0);
    CHECK(strcmp(lmc_st_meta_get(&st, "odd\"key\n"), "va\\lue") == 0);
    CHECK(lmc_st_meta_get(&st, "absent") == NULL);
    lmc_st_free(&st);

    /* an empty file of tensors round-trips too */
    CHECK(lmc_st_write(path, NULL, 0, NULL, 0, &err) == LMC_OK);
    CHECK(lmc_st_open_file(&st, path, &err) == LMC_OK && st.n_tensors == 0);
    lmc_st_free(&st);

    /* writer errors name the path */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", tmpdir);
    s = lmc_st_write(bad, w, nw, NULL, 0, &err);
    CHECK(s == LMC_ERR_IO && strstr(err.msg, "no/such/dir/x.safetensors"));
    struct lmc_st_write_tensor dup[2] = {w[0], w[0]};
    s = lmc_st_write(path, dup, 2, NULL, 0, &err);
    CHECK(s == LMC_ERR_ARG && strstr(err.msg, "a.weight") && strstr(err.msg, path));
    struct lmc_st_write_tensor neg = {"neg", LMC_DTYPE_F32, 1, {-3}, a};
    s = lmc_st_write(path, &neg, 1, NULL, 0, &err);
    CHECK(s == LMC_ERR_ARG && strstr(err.msg, "neg"));
}

static void write_index(const char *dir, const char *body) {
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, body, strlen(body));
}

static void expect_dir_bad(const char *what, const char *dir, lmc_status want, const char *sub1, const char *sub2) {
    struct lmc_st st;
    lmc_err err = {0};
    lmc_status s = lmc_st_open_dir(&st, dir, &err);
    CHECK_MSG(s == want, "%s: status %d (%s), want %d", what, (int)s, err.msg, (int)want);
    if (sub1) CHECK_MSG(strstr(err.msg, sub1) != NULL, "%s: message lacks '%s': %s", what, sub1, err.msg);
    if (sub2) CHECK_MSG(strstr(err.msg, sub2) != NULL, "%s: message lacks '%s': %s", what, sub2, err.msg);
    CHECK(st.n_tensors == 0 && st.files == NULL && st.tensors == NULL);
    lmc_st_free(&st);
}

static void test_sharded(void) {
    char dir[512], p[700];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    CHECK(mkdir(dir, 0755) == 0);
    float x[6] = {1, 2, 3, 4, 5, 6}, y[4] = {7, 8, 9, 10};
    uint16_t z[3] = {0x3c00, 0x4000, 0x4200};
    struct lmc_st_write_tensor s1[] = {{"model.x", LMC_DTYPE_F32, 2, {2, 3}, x},
                                       {"model.y", LMC_DTYPE_F32, 1, {4}, y}};
    struct lmc_st_write_tensor s2[] = {{"lm_head.z", LMC_DTYPE_BF16, 1, {3}, z}};
    lmc_err err = {0};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK(lmc_st_write(p, s1, 2, NULL, 0, &err) == LMC_OK);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(lmc_st_write(p, s2, 1, NULL, 0, &err) == LMC_OK);
    write_index(dir, "{\"metadata\": {\"total_size\": 46}, \"weight_map\": {"
                     "\"model.x\": \"model-00001-of-00002.safetensors\","
                     "\"lm_head.z\": \"model-00002-of-00002.safetensors\","
                     "\"model.y\": \"model-00001-of-00002.safetensors\"}}");
    struct lmc_st st;
    lmc_status s = lmc_st_open_dir(&st, dir, &err);
    CHECK_MSG(s == LMC_OK, "sharded: %s", err.msg);
    if (s == LMC_OK) {
        CHECK(st.n_files == 2 && st.n_tensors == 3);
        const struct lmc_st_tensor *tx = lmc_st_find(&st, "model.x"), *ty = lmc_st_find(&st, "model.y"),
                                   *tz = lmc_st_find(&st, "lm_head.z");
        CHECK(tx && ty && tz);
        if (tx && ty && tz) {
            CHECK(tx->file == ty->file && tx->file != tz->file);
            CHECK(strstr(st.files[tz->file].path, "00002-of-00002"));
            CHECK(memcmp(tx->data, x, sizeof x) == 0 && memcmp(ty->data, y, sizeof y) == 0);
            CHECK(memcmp(tz->data, z, sizeof z) == 0 && tz->dtype == LMC_DTYPE_BF16);
        }
        lmc_st_free(&st);
    }
    /* index naming a tensor that is not in its shard */
    write_index(dir, "{\"weight_map\": {\"model.x\": \"model-00001-of-00002.safetensors\","
                     "\"model.ghost\": \"model-00002-of-00002.safetensors\"}}");
    expect_dir_bad("tensor missing from shard", dir, LMC_ERR_FORMAT, "model.ghost", "model-00002-of-00002");
    /* index placing a tensor in the wrong shard */
    write_index(dir, "{\"weight_map\": {\"model.x\": \"model-00002-of-00002.safetensors\","
                     "\"lm_head.z\": \"model-00001-of-00002.safetensors\"}}");
    expect_dir_bad("tensor in the other shard", dir, LMC_ERR_FORMAT, "model.x", "index.json");
    /* index naming a shard that does not exist */
    write_index(dir, "{\"weight_map\": {\"model.x\": \"model-00001-of-00002.safetensors\","
                     "\"model.q\": \"model-00003-of-00003.safetensors\"}}");
    expect_dir_bad("missing shard", dir, LMC_ERR_IO, "model-00003-of-00003.safetensors", NULL);
    /* hostile shard names */
    write_index(dir, "{\"weight_map\": {\"model.x\": \"../rt.safetensors\"}}");
    expect_dir_bad("../ shard", dir, LMC_ERR_FORMAT, "../rt.safetensors", "model.x");
    write_index(dir, "{\"weight_map\": {\"model.x\": \"/etc/passwd\"}}");
    expect_dir_bad("absolute shard", dir, LMC_ERR_FORMAT, "/etc/passwd", NULL);
    write_index(dir, "{\"weight_map\": {\"model.x\": \"..\"}}");
    expect_dir_bad(".. shard", dir, LMC_ERR_FORMAT, "'..'", NULL);
    /* malformed index */
    write_index(dir, "{\"weight_map\": [1, 2]}");
    expect_dir_bad("weight_map array", dir, LMC_ERR_FORMAT, "weight_map", "an object");
    write_index(dir, "{\"weight_map\": {\"model.x\": 3}}");
    expect_dir_bad("weight_map number", dir, LMC_ERR_FORMAT, "model.x", "file name");
    write_index(dir, "{\"weight_map\": {\"model.x\": \"model-00001-of");
    expect_dir_bad("truncated index", dir, LMC_ERR_FORMAT, "index.json", "JSON");
    write_index(dir, "{\"weight_map\": {}}");
    expect_dir_bad("empty weight_map", dir, LMC_ERR_FORMAT, "weight_map", NULL);
    /* the same tensor in two shards */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(lmc_st_write(p, s1, 1, NULL, 0, &err) == LMC_OK);
    write_index(dir, "{\"weight_map\": {\"model.x\": \"model-00001-of-00002.safetensors\","
                     "\"model.y\": \"model-00002-of-00002.safetensors\"}}");
    expect_dir_bad("duplicate across shards", dir, LMC_ERR_FORMAT, "model.x", "unique");
    /* a shard that is corrupt */
    write_bytes(p, "1234567", 7);
    expect_dir_bad("corrupt shard", dir, LMC_ERR_FORMAT, "model-00002-of-00002.safetensors", "too short");

    /* folders without weights, or not there at all */
    char empty[600];
    snprintf(empty, sizeof empty, "%s/empty", tmpdir);
    CHECK(mkdir(empty, 0755) == 0);
    expect_dir_bad("empty folder", empty, LMC_ERR_IO, "model.safetensors.index.json", "model.safetensors ");
    snprintf(empty, sizeof empty, "%s/does-not-exist", tmpdir);
    expect_dir_bad("missing folder", empty, LMC_ERR_IO, "does-not-exist", "model.safetensors");
    snprintf(empty, sizeof empty, "%s/rt.safetensors", tmpdir);
    expect_dir_bad("a file, not a folder", empty, LMC_ERR_IO, "rt.safetensors", NULL);
    /* model.safetensors that is a folder */
    snprintf(empty, sizeof empty, "%s/dirmodel", tmpdir);
    CHECK(mkdir(empty, 0755) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors", empty);
    CHECK(mkdir(p, 0755) == 0);
    expect_dir_bad("model.safetensors is a folder", empty, LMC_ERR_IO, "dirmodel", NULL);
}

static void test_bad_files(void) {
    /* through the file path (mmap) too */
    char p[600];
    struct lmc_st st;
    lmc_err err = {0};
    snprintf(p, sizeof p, "%s/empty.safetensors", tmpdir);
    write_bytes(p, "", 0);
    CHECK(lmc_st_open_file(&st, p, &err) == LMC_ERR_FORMAT && strstr(err.msg, "empty.safetensors") &&
          strstr(err.msg, "0 bytes"));
    lmc_st_free(&st);
    snprintf(p, sizeof p, "%s/seven.safetensors", tmpdir);
    write_bytes(p, "\x10\0\0\0\0\0\0", 7);
    CHECK(lmc_st_open_file(&st, p, &err) == LMC_ERR_FORMAT && strstr(err.msg, "seven.safetensors"));
    lmc_st_free(&st);
    snprintf(p, sizeof p, "%s/longhdr.safetensors", tmpdir);
    size_t len;
    unsigned char *img = make_image("{}", 0, 4096, &len);
    write_bytes(p, img, len);
    free(img);
    CHECK(lmc_st_open_file(&st, p, &err) == LMC_ERR_FORMAT && strstr(err.msg, "header length 4096"));
    lmc_st_free(&st);
    snprintf(p, sizeof p, "%s/absent.safetensors", tmpdir);
    CHECK(lmc_st_open_file(&st, p, &err) == LMC_ERR_IO && strstr(err.msg, "absent.safetensors"));
    lmc_st_free(&st);

    /* in memory */
    struct lmc_st st2;
    CHECK(lmc_st_parse(&st2, "", 0, "bad.safetensors", &err) == LMC_ERR_FORMAT && strstr(err.msg, "bad.safetensors"));
    CHECK(lmc_st_parse(&st2, "\x02\0\0\0\0\0\0", 7, "bad.safetensors", &err) == LMC_ERR_FORMAT);
    expect_bad("header longer than file", "{}", 0, 3, LMC_ERR_FORMAT, "header length 3", NULL);
    expect_bad("header length 2^63", "{}", 0, 1ULL << 63, LMC_ERR_FORMAT, "header length 9223372036854775808",
               NULL);
    expect_bad("header length > 100MB", "{}", 0, 200000000ULL, LMC_ERR_FORMAT, "100 MB", NULL);
    expect_bad("not an object", "[1, 2, 3]", 0, 0, LMC_ERR_FORMAT, "an array", "expected a JSON object");
    expect_bad("string header", "\"hello\"", 0, 0, LMC_ERR_FORMAT, "a string", NULL);
    expect_bad("truncated JSON", "{\"w\": {\"dtype\": \"F32\", \"sha", 0, 0, LMC_ERR_FORMAT, "not valid JSON", NULL);
    expect_bad("trailing garbage", "{}  xyz", 0, 0, LMC_ERR_FORMAT, "after the JSON", NULL);
    expect_bad("zero header length", "", 16, 0, LMC_ERR_FORMAT, "JSON", NULL);
    expect_bad("unknown dtype", "{\"w.q\": {\"dtype\": \"Q4_K\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4, 0,
               LMC_ERR_UNSUPPORTED, "'w.q'", "Q4_K");
    expect_bad("dtype not a string", "{\"w\": {\"dtype\": 4, \"shape\": [4], \"data_offsets\": [0, 16]}}", 16, 0,
               LMC_ERR_FORMAT, "'w'", "dtype");
    expect_bad("missing dtype", "{\"w\": {\"shape\": [4], \"data_offsets\": [0, 16]}}", 16, 0, LMC_ERR_FORMAT,
               "dtype", "missing");
    expect_bad("entry not an object", "{\"w\": [1, 2]}", 0, 0, LMC_ERR_FORMAT, "'w'", "expected an object");
    expect_bad("negative shape", "{\"neg\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", 0, 0,
               LMC_ERR_FORMAT, "'neg'", "shape");
    expect_bad("fractional shape", "{\"frac\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 8,
               0, LMC_ERR_FORMAT, "'frac'", "shape");
    expect_bad("huge shape", "{\"huge\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 4]}}", 8, 0,
               LMC_ERR_FORMAT, "'huge'", "shape");
    expect_bad("string shape", "{\"s\": {\"dtype\": \"F32\", \"shape\": [\"4\"], \"data_offsets\": [0, 16]}}", 16, 0,
               LMC_ERR_FORMAT, "'s'", "a string");
    expect_bad("shape not an array", "{\"s\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}", 16, 0,
               LMC_ERR_FORMAT, "'s'", "shape");
    expect_bad("shape overflow",
               "{\"big\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 8, 0,
               LMC_ERR_FORMAT, "'big'", "overflows");
    expect_bad("byte size overflow",
               "{\"big\": {\"dtype\": \"F64\", \"shape\": [2147483648, 2147483648], \"data_offsets\": [0, 4]}}", 8,
               0, LMC_ERR_FORMAT, "'big'", "overflows");
    expect_bad("too many dims",
               "{\"d9\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1, 0,
               LMC_ERR_UNSUPPORTED, "'d9'", "9 dimensions");
    expect_bad("offsets out of range", "{\"far\": {\"dtype\": \"F32\", \"shape\": [250], \"data_offsets\": [0, 1000]}}",
               16, 0, LMC_ERR_FORMAT, "'far'", "data_offsets [0, 1000]");
    expect_bad("end before begin", "{\"rev\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 16, 0,
               LMC_ERR_FORMAT, "'rev'", "end before begin");
    expect_bad("negative offset", "{\"no\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 16, 0,
               LMC_ERR_FORMAT, "'no'", "data_offsets");
    expect_bad("one offset", "{\"one\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4]}}", 16, 0,
               LMC_ERR_FORMAT, "'one'", "data_offsets");
    expect_bad("size mismatch",
               "{\"lm_head.weight\": {\"dtype\": \"F32\", \"shape\": [16, 64], \"data_offsets\": [0, 100]}}", 128,
               0, LMC_ERR_FORMAT, "'lm_head.weight'", "hold 100 bytes but shape [16, 64] of F32 needs 4096");
    expect_bad("overlap",
               "{\"first\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
               " \"second\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}",
               32, 0, LMC_ERR_FORMAT, "'second'", "'first'");
    expect_bad("same range",
               "{\"p\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]},"
               " \"q\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [0, 0]},"
               " \"r\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
               32, 0, LMC_ERR_FORMAT, "overlaps", NULL);
    expect_bad("duplicate name",
               "{\"twin\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
               " \"twin\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
               8, 0, LMC_ERR_FORMAT, "'twin'", "duplicate");
    expect_bad("metadata not strings", "{\"__metadata__\": {\"step\": 3}}", 0, 0, LMC_ERR_FORMAT, "__metadata__",
               "step");
    expect_bad("metadata array", "{\"__metadata__\": [1]}", 0, 0, LMC_ERR_FORMAT, "__metadata__", NULL);

    /* valid corner cases */
    size_t n;
    img = make_image("{\"__metadata__\": {}, \"z\": {\"dtype\": \"BOOL\", \"shape\": [0, 3], \"data_offsets\": [4, 4]},"
                     " \"s\": {\"dtype\": \"I32\", \"shape\": [], \"data_offsets\": [0, 4]}}   ",
                     4, 0, &n);
    lmc_status s = lmc_st_parse(&st2, img, n, "ok.safetensors", &err);
    CHECK_MSG(s == LMC_OK, "corner cases: %s", err.msg);
    if (s == LMC_OK) {
        const struct lmc_st_tensor *t = lmc_st_find(&st2, "s");
        CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
        t = lmc_st_find(&st2, "z");
        CHECK(t && t->numel == 0 && t->nbytes == 0);
        lmc_st_free(&st2);
    }
    free(img);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmc_test_st_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }
    test_fixtures();
    test_round_trip();
    test_sharded();
    test_bad_files();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("test_safetensors");
}
