/* test_gguf.c — GGUF read/write (src/io/gguf*.c): a file with metadata of
 * every value type and tensors of plain and quantized types written and
 * read back exactly; typed getters (conversions, wrong types named); the
 * Q/K row permutation against its definition and its inverse; and bad
 * files: every truncation, bad magic/version, unknown tensor type, n_dims
 * > 4, offsets past the end or misaligned, absurd counts, rows that are
 * not whole blocks, duplicate names, bad alignment — each a clear error. */
#include "core/core.h"
#include "io/gguf.h"
#include "quant/quant.h"
#include "test.h"

#include <stdlib.h>
#include <unistd.h>

static const char *tmp_path(const char *name) {
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/lmc_test_gguf_%d_%s", (int)getpid(), name);
    return buf;
}

static uint8_t *slurp(const char *path, size_t *len) {
    char *b = NULL;
    lmc_err err = {0};
    if (lmc_file_read(path, (size_t)1 << 28, &b, len, &err)) return NULL;
    return (uint8_t *)b;
}

static float w32[6 * 64], wq_src[4 * 256];
static uint8_t wq[4 * 144];
static uint16_t w16[3 * 5];

static void write_sample(const char *path) {
    lmc_err err = {0};
    struct lmc_gguf_writer *w;
    CHECK(lmc_gguf_writer_init(&w, &err) == LMC_OK);
    lmc_gguf_add_str(w, "general.architecture", "llama");
    lmc_gguf_add_u32(w, "llama.block_count", 2);
    lmc_gguf_add_i32(w, "i32", -7);
    lmc_gguf_add_u64(w, "u64", 1ull << 40);
    lmc_gguf_add_f32(w, "llama.rope.freq_base", 10000.0f);
    lmc_gguf_add_f64(w, "f64", 0.125);
    lmc_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    const char *toks[] = {"<s>", "</s>", "a", ""};
    lmc_gguf_add_str_arr(w, "tokenizer.ggml.tokens", toks, 4);
    float scores[] = {0, -1.5f, -2, 3};
    lmc_gguf_add_arr(w, "tokenizer.ggml.scores", LMC_GGUF_F32, scores, 4);
    int8_t i8[] = {-3, 4};
    lmc_gguf_add_arr(w, "i8arr", LMC_GGUF_I8, i8, 2);
    uint16_t u16 = 65535;
    lmc_gguf_add_arr(w, "u16arr", LMC_GGUF_U16, &u16, 1);
    uint64_t seed = 3;
    for (int i = 0; i < 6 * 64; i++) w32[i] = test_rand(&seed);
    for (int i = 0; i < 4 * 256; i++) wq_src[i] = test_rand(&seed);
    for (int r = 0; r < 4; r++) lmc_ggml_quantize_row(LMC_GGML_Q4_K, wq_src + 256 * r, wq + 144 * r, 256);
    for (int i = 0; i < 15; i++) w16[i] = (uint16_t)(0x3c00 + i);
    int64_t ne1[] = {64, 6}, ne2[] = {256, 4}, ne3[] = {5, 3};
    lmc_gguf_add_tensor(w, "blk.0.attn_q.weight", LMC_GGML_F32, 2, ne1, w32);
    lmc_gguf_add_tensor(w, "blk.0.ffn_up.weight", LMC_GGML_Q4_K, 2, ne2, wq);
    lmc_gguf_add_tensor(w, "output_norm.weight", LMC_GGML_F16, 2, ne3, w16); /* 30 bytes: padded */
    CHECK(lmc_gguf_write(w, path, &err) == LMC_OK);
    lmc_gguf_writer_free(w);
}

static void test_roundtrip(void) {
    const char *path = tmp_path("ok.gguf");
    write_sample(path);
    struct lmc_gguf g;
    lmc_err err = {0};
    CHECK_MSG(lmc_gguf_open(&g, path, &err) == LMC_OK, "%s", err.msg);
    CHECK(g.version == 3 && g.n_kv == 11 && g.n_tensors == 3 && g.alignment == 32);
    int64_t iv;
    double fv;
    bool bv, found;
    char *s;
    CHECK(lmc_gguf_get_int(&g, "llama.block_count", &iv, NULL, &err) == LMC_OK && iv == 2);
    CHECK(lmc_gguf_get_int(&g, "i32", &iv, NULL, &err) == LMC_OK && iv == -7);
    CHECK(lmc_gguf_get_int(&g, "u64", &iv, NULL, &err) == LMC_OK && iv == (1ll << 40));
    CHECK(lmc_gguf_get_float(&g, "llama.rope.freq_base", &fv, NULL, &err) == LMC_OK && fv == 10000.0);
    CHECK(lmc_gguf_get_float(&g, "f64", &fv, NULL, &err) == LMC_OK && fv == 0.125);
    CHECK(lmc_gguf_get_float(&g, "i32", &fv, NULL, &err) == LMC_OK && fv == -7);
    CHECK(lmc_gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &bv, NULL, &err) == LMC_OK && bv);
    CHECK(lmc_gguf_get_str(&g, "general.architecture", &s, NULL, &err) == LMC_OK && !strcmp(s, "llama"));
    free(s);
    /* wrong types and absent keys name the key */
    CHECK(lmc_gguf_get_int(&g, "general.architecture", &iv, NULL, &err) == LMC_ERR_FORMAT &&
          strstr(err.msg, "'general.architecture': expected an integer, found string"));
    CHECK(lmc_gguf_get_str(&g, "llama.block_count", &s, NULL, &err) == LMC_ERR_FORMAT && strstr(err.msg, "uint32"));
    CHECK(lmc_gguf_get_bool(&g, "i32", &bv, NULL, &err) == LMC_ERR_FORMAT);
    CHECK(lmc_gguf_get_int(&g, "nope", &iv, NULL, &err) == LMC_ERR_FORMAT && strstr(err.msg, "'nope' is missing"));
    CHECK(lmc_gguf_get_int(&g, "nope", &iv, &found, &err) == LMC_OK && !found);
    const struct lmc_gguf_kv *kv;
    CHECK(lmc_gguf_get_arr(&g, "tokenizer.ggml.tokens", LMC_GGUF_STRING, &kv, NULL, &err) == LMC_OK && kv->n == 4);
    CHECK(kv->strs[2].len == 1 && kv->strs[2].s[0] == 'a' && kv->strs[3].len == 0);
    CHECK(lmc_gguf_get_arr(&g, "tokenizer.ggml.scores", LMC_GGUF_I32, &kv, NULL, &err) == LMC_ERR_FORMAT &&
          strstr(err.msg, "found an array of float32"));
    CHECK(lmc_gguf_get_arr(&g, "tokenizer.ggml.scores", LMC_GGUF_F32, &kv, NULL, &err) == LMC_OK &&
          lmc_gguf_arr_f(kv, 1) == -1.5);
    CHECK(lmc_gguf_get_arr(&g, "i8arr", LMC_GGUF_I8, &kv, NULL, &err) == LMC_OK && lmc_gguf_arr_i(kv, 0) == -3);
    CHECK(lmc_gguf_get_arr(&g, "u16arr", LMC_GGUF_U16, &kv, NULL, &err) == LMC_OK && lmc_gguf_arr_i(kv, 0) == 65535);
    const struct lmc_gguf_tensor *t = lmc_gguf_find_tensor(&g, "blk.0.attn_q.weight");
    CHECK(t && t->type == LMC_GGML_F32 && t->ne[0] == 64 && t->ne[1] == 6 && t->n_dims == 2 &&
          !memcmp(t->data, w32, sizeof w32) && ((uintptr_t)t->data - (uintptr_t)g.image - g.data_start) % 32 == 0);
    t = lmc_gguf_find_tensor(&g, "blk.0.ffn_up.weight");
    CHECK(t && t->type == LMC_GGML_Q4_K && t->nbytes == sizeof wq && !memcmp(t->data, wq, sizeof wq));
    t = lmc_gguf_find_tensor(&g, "output_norm.weight");
    CHECK(t && t->nbytes == 30 && !memcmp(t->data, w16, 30) && t->offset % 32 == 0);
    CHECK(lmc_gguf_find_tensor(&g, "missing") == NULL);
    lmc_gguf_free(&g);
}

/* Expects parsing buf to fail with status st and a message containing want. */
static void expect_bad(const uint8_t *buf, size_t len, lmc_status st, const char *want, const char *what) {
    struct lmc_gguf g;
    lmc_err err = {0};
    lmc_status got = lmc_gguf_parse(&g, buf, len, "bad.gguf", &err);
    CHECK_MSG(got == st && strstr(err.msg, want), "%s: status %d, message '%s' (want '%s')", what, got, err.msg, want);
    CHECK(g.tensors == NULL && g.kv == NULL);
}

static void test_bad(void) {
    /* a minimal file: one key "a" (uint32 5) and one tensor "t" (F32, 8 x 1) */
    lmc_err err = {0};
    struct lmc_gguf_writer *w;
    lmc_gguf_writer_init(&w, &err);
    lmc_gguf_add_u32(w, "a", 5);
    float d[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t ne[] = {8};
    lmc_gguf_add_tensor(w, "t", LMC_GGML_F32, 1, ne, d);
    const char *path = tmp_path("min.gguf");
    CHECK(lmc_gguf_write(w, path, &err) == LMC_OK);
    lmc_gguf_writer_free(w);
    size_t len;
    uint8_t *ok = slurp(path, &len), *b = malloc(len);
    /* layout: 24 header | key "a": 8+1, type 4, value 4 (at 24..41) | tensor
     * info at 41: name 8+1, n_dims 4 (50), ne 8 (54), type 4 (62), offset 8 (66) | pad to 96 | data */
    CHECK(len == 96 + 32);
    struct lmc_gguf g;
    CHECK(lmc_gguf_parse(&g, ok, len, "min", &err) == LMC_OK);
    lmc_gguf_free(&g);
    /* every truncation: an error, never a crash (ASan builds check the reads) */
    int trunc_ok = 0;
    for (size_t n = 0; n < len; n++) {
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, ok, n);
        lmc_status st = lmc_gguf_parse(&g, c, n, "cut", &err);
        trunc_ok += st == LMC_ERR_FORMAT && (strstr(err.msg, "truncated") || strstr(err.msg, "cannot fit") ||
                                             strstr(err.msg, "past the end"));
        free(c);
    }
    CHECK_MSG(trunc_ok == (int)len, "%d of %zu truncations gave a truncation error", trunc_ok, len);
    uint64_t u64;
    uint32_t u32;
#define RESET() memcpy(b, ok, len)
    RESET(); b[0] = 'X';
    expect_bad(b, len, LMC_ERR_FORMAT, "not a GGUF file", "magic");
    RESET(); u32 = 4; memcpy(b + 4, &u32, 4);
    expect_bad(b, len, LMC_ERR_UNSUPPORTED, "version 4", "version");
    RESET(); u64 = 1ull << 60; memcpy(b + 8, &u64, 8);
    expect_bad(b, len, LMC_ERR_FORMAT, "tensors cannot fit", "tensor count");
    RESET(); u64 = 1000000; memcpy(b + 16, &u64, 8);
    expect_bad(b, len, LMC_ERR_FORMAT, "metadata entries cannot fit", "kv count");
    RESET(); u64 = 1ull << 62; memcpy(b + 24, &u64, 8);
    expect_bad(b, len, LMC_ERR_FORMAT, "truncated", "key length");
    RESET(); u32 = 13; memcpy(b + 33, &u32, 4);
    expect_bad(b, len, LMC_ERR_FORMAT, "'a' has unknown value type 13", "value type");
    RESET(); u32 = 5; memcpy(b + 50, &u32, 4);
    expect_bad(b, len, LMC_ERR_FORMAT, "'t' has 5 dimensions", "n_dims");
    RESET(); u32 = 99; memcpy(b + 62, &u32, 4);
    expect_bad(b, len, LMC_ERR_UNSUPPORTED, "'t' has ggml type 99", "unknown type");
    RESET(); u32 = LMC_GGML_Q4_0; memcpy(b + 62, &u32, 4);
    expect_bad(b, len, LMC_ERR_FORMAT, "not whole Q4_0 blocks", "partial block");
    RESET(); u64 = 64; memcpy(b + 66, &u64, 8);
    expect_bad(b, len, LMC_ERR_FORMAT, "'t': bytes [64, 96)", "offset past the end");
    RESET(); u64 = 4; memcpy(b + 66, &u64, 8);
    expect_bad(b, len, LMC_ERR_FORMAT, "offset 4 is not a multiple of the alignment 32", "misaligned");
    RESET(); u64 = 1ull << 50; memcpy(b + 54, &u64, 8);
    expect_bad(b, len, LMC_ERR_FORMAT, "dimension 0", "absurd dimension");
    free(b);
    free(ok);

    /* metadata-level problems: duplicate keys, bad alignment, wrong-typed alignment */
    for (int c = 0; c < 4; c++) {
        lmc_gguf_writer_init(&w, &err);
        if (c == 0) { lmc_gguf_add_u32(w, "k", 1); lmc_gguf_add_u32(w, "k", 2); }
        if (c == 1) lmc_gguf_add_u32(w, "general.alignment", 24);
        if (c == 2) lmc_gguf_add_str(w, "general.alignment", "32");
        lmc_gguf_add_tensor(w, "t", LMC_GGML_F32, 1, ne, d);
        if (c == 3) lmc_gguf_add_tensor(w, "t", LMC_GGML_F32, 1, ne, d);
        CHECK(lmc_gguf_write(w, path, &err) == LMC_OK);
        lmc_gguf_writer_free(w);
        uint8_t *f = slurp(path, &len);
        static const char *want[] = {"'k' appears twice", "alignment 24 is not a power of two",
                                     "'general.alignment': expected an integer", "tensor 't' appears twice"};
        expect_bad(f, len, LMC_ERR_FORMAT, want[c], want[c]);
        free(f);
    }
    CHECK(lmc_gguf_open(&g, "/nonexistent/x.gguf", &err) == LMC_ERR_IO && strstr(err.msg, "/nonexistent/x.gguf"));
    unlink(path);
}

static void test_permute(void) {
    /* 2 heads of head_dim 6: HF row h*6 + i*3 + j is GGUF row h*6 + 2j + i */
    int64_t rows = 12;
    int32_t src[12], dst[12], back[12];
    for (int i = 0; i < 12; i++) src[i] = i;
    lmc_gguf_permute_qk(src, dst, rows, 4, 2, false);
    const int32_t want[12] = {0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11};
    CHECK(!memcmp(dst, want, sizeof want));
    lmc_gguf_permute_qk(dst, back, rows, 4, 2, true);
    CHECK(!memcmp(back, src, sizeof src));
}

int main(void) {
    test_roundtrip();
    test_bad();
    test_permute();
    unlink(tmp_path("ok.gguf"));
    return test_finish("test_gguf");
}
