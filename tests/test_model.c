/* test_model.c — model loading and forward: broken model folders (missing,
 * extra, mis-shaped and non-float tensors, unknown model_type, missing
 * folder) give clear errors; prefill in one call, in chunks and token by
 * token give the same logits; session prefix reuse; bad ids rejected. The
 * architectures' tensor spec tables: each names exactly the tensors of its
 * fixture, the trainer's parameter table is the same list in the same
 * order, configs built from sizes and overflowing configs; the sequence
 * state the scheduler asks for. */
#include "test.h"
#include "model_fixture.h"
#include "infer/session.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/model.h"
#include "core/core.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/llama-tiny"

static void copy_file(const char *src, const char *dst) {
    char *buf;
    size_t n;
    lmc_err err = {0};
    if (lmc_file_read(src, 1 << 24, &buf, &n, &err)) return;
    FILE *f = fopen(dst, "wb");
    if (f) {
        fwrite(buf, 1, n, f);
        fclose(f);
    }
    free(buf);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

enum edit { DROP, EXTRA, RESHAPE, INTS };

/* Writes a copy of llama-tiny into dir with one tensor edited. */
static void make_variant_of(const char *src, const char *dir, enum edit e, const char *target) {
    struct lmc_st st = {0};
    lmc_err err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    if (lmc_st_open_file(&st, path, &err)) return;
    struct lmc_st_write_tensor *w = calloc((size_t)st.n_tensors + 1, sizeof *w);
    int64_t n = 0;
    static int32_t ints[64];
    for (int64_t i = 0; i < st.n_tensors; i++) {
        const struct lmc_st_tensor *t = &st.tensors[i];
        bool hit = !strcmp(t->name, target);
        if (hit && e == DROP) continue;
        w[n].name = t->name;
        w[n].dtype = t->dtype;
        w[n].ndim = t->ndim;
        memcpy(w[n].shape, t->shape, sizeof t->shape);
        w[n].data = t->data;
        if (hit && e == RESHAPE) { /* same bytes, transposed shape */
            w[n].shape[0] = t->shape[1];
            w[n].shape[1] = t->shape[0];
        }
        if (hit && e == INTS) { /* norm weight as I32 */
            w[n].dtype = LMC_DTYPE_I32;
            w[n].data = ints;
        }
        n++;
    }
    if (e == EXTRA) {
        w[n] = (struct lmc_st_write_tensor){.name = target, .dtype = LMC_DTYPE_I32, .ndim = 1,
                                            .shape = {4}, .data = ints};
        n++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(lmc_st_write(path, w, n, NULL, 0, &err) == LMC_OK);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/config.json", src);
    snprintf(path, sizeof path, "%s/config.json", dir);
    copy_file(cfg, path);
    free(w);
    lmc_st_free(&st);
}

static void make_variant(const char *dir, enum edit e, const char *target) {
    make_variant_of(FIX, dir, e, target);
}

static void expect_load_error(const char *dir, lmc_status want, const char *needle) {
    struct lmc_model m;
    lmc_err err = {0};
    lmc_status s = lmc_model_load(&m, dir, NULL, &err);
    CHECK_MSG(s == want, "status %d want %d (%s)", s, want, err.msg);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    if (s == LMC_OK) lmc_model_free(&m);
}

static void test_bad_folders(void) {
    char dir[] = "/tmp/lmc-test-model-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    make_variant(dir, DROP, "model.norm.weight");
    expect_load_error(dir, LMC_ERR_FORMAT, "missing tensor 'model.norm.weight'");
    make_variant(dir, EXTRA, "model.layers.9.extra.weight");
    expect_load_error(dir, LMC_ERR_FORMAT, "unexpected tensor 'model.layers.9.extra.weight'");
    make_variant(dir, RESHAPE, "model.layers.0.self_attn.k_proj.weight");
    expect_load_error(dir, LMC_ERR_FORMAT, "'model.layers.0.self_attn.k_proj.weight' has shape [64, 32], expected [32, 64]");
    make_variant(dir, INTS, "model.layers.1.input_layernorm.weight");
    expect_load_error(dir, LMC_ERR_UNSUPPORTED, "dtype I32");
    make_variant(dir, DROP, "none");
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"model_type\": \"bert\", \"hidden_size\": 64}");
    expect_load_error(dir, LMC_ERR_UNSUPPORTED, "bert");
    write_text(path, "{\"model_type\": \"llama\", ");
    expect_load_error(dir, LMC_ERR_FORMAT, "config.json");
    expect_load_error("/nonexistent/lmc-model", LMC_ERR_IO, "/nonexistent/lmc-model");
    /* qwen3: its per-head norms are required, shaped (head_dim) */
    make_variant_of("tests/fixtures/qwen3-tiny", dir, DROP, "model.layers.1.self_attn.k_norm.weight");
    expect_load_error(dir, LMC_ERR_FORMAT, "missing tensor 'model.layers.1.self_attn.k_norm.weight' (expected shape [24])");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        num = d > num ? d : num;
        den = fabs(b[i]) > den ? fabs(b[i]) : den;
    }
    return num / den;
}

/* Same logits whether a prompt runs in one call, in chunks of 3, or token
 * by token through the cache. */
static void test_forward_consistency(const char *dir, int threads) {
    struct lmc_model m;
    struct lmc_backend be;
    lmc_err err = {0};
    if (!fixture_open_cpu(&m, &be, NULL, dir, NULL, threads)) return;
    int64_t V = m.cfg.vocab_size, n = 11;
    int32_t ids[11];
    uint64_t seed = 7;
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)V);
    float *full = malloc((size_t)(n * V) * sizeof(float)), *one = malloc((size_t)(n * V) * sizeof(float));
    struct lmc_kv kv;
    struct lmc_acts big, small;
    CHECK(lmc_kv_init(&kv, &m, &be, 32, &err) == LMC_OK);
    CHECK(lmc_acts_init(&big, &m, &be, 16, 16, &err) == LMC_OK);
    CHECK(lmc_acts_init(&small, &m, &be, 3, 3, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &big, &kv, ids, n, 0, full, true, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &small, &kv, ids, n, 0, one, true, &err) == LMC_OK);
    CHECK_MSG(max_rel(one, full, n * V) < 1e-5, "chunked vs full %g", max_rel(one, full, n * V));
    for (int64_t i = 0; i < n; i++)
        CHECK(lmc_model_forward(&m, &be, &small, &kv, ids + i, 1, i, one + i * V, false, &err) == LMC_OK);
    CHECK_MSG(max_rel(one, full, n * V) < 1e-5, "token by token vs full %g", max_rel(one, full, n * V));
    /* fused matmuls sharing an input (q/k/v, gate/up through matmul_multi)
     * give the logits of separate matmul calls */
    struct lmc_backend plain = be;
    plain.matmul_multi = NULL;
    float *sep = malloc((size_t)(n * V) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        CHECK(lmc_model_forward(&m, &plain, &small, &kv, ids + i, 1, i, sep + i * V, false, &err) == LMC_OK);
    CHECK(be.matmul_multi != NULL);
    CHECK_MSG(max_rel(sep, one, n * V) < 1e-6, "matmul_multi vs matmul %g", max_rel(sep, one, n * V));
    free(sep);
    /* last-row-only output equals the last row of all logits */
    CHECK(lmc_model_forward(&m, &be, &small, &kv, ids, n, 0, one, false, &err) == LMC_OK);
    CHECK(max_rel(one, full + (n - 1) * V, V) < 1e-5);
    /* bad ids and overflowing positions are rejected, not crashes */
    int32_t bad[2] = {1, (int32_t)V};
    CHECK(lmc_model_forward(&m, &be, &small, &kv, bad, 2, 0, one, false, &err) == LMC_ERR_ARG);
    CHECK(strstr(err.msg, "outside the vocabulary") != NULL);
    CHECK(lmc_model_forward(&m, &be, &small, &kv, ids, 2, 31, one, false, &err) == LMC_ERR_ARG);
    /* session: a prompt extending the cached one reuses it */
    struct lmc_session s;
    CHECK(lmc_session_init(&s, &m, &be, NULL, 32, 4, &err) == LMC_OK);
    CHECK(lmc_session_feed(&s, ids, 6, &err) == LMC_OK);
    CHECK(lmc_session_feed(&s, ids, n, &err) == LMC_OK);
    CHECK(max_rel(s.logits, full + (n - 1) * V, V) < 1e-5);
    CHECK(lmc_session_feed(&s, ids, 4, &err) == LMC_OK); /* shorter: recompute the last */
    CHECK(max_rel(s.logits, full + 3 * V, V) < 1e-5);
    CHECK(lmc_session_feed(&s, ids, 0, &err) == LMC_ERR_ARG);
    lmc_session_free(&s);
    lmc_kv_free(&kv);
    lmc_acts_free(&big);
    lmc_acts_free(&small);
    free(full);
    free(one);
    lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
}

struct names {
    const char *list[64];
    bool required[64];
    int n;
};

static lmc_status collect(void *user, const struct lmc_tensor_ref *t, lmc_err *err) {
    (void)err;
    struct names *nm = user;
    LMC_ASSERT(nm->n < 64);
    nm->list[nm->n] = strdup(t->name);
    nm->required[nm->n++] = t->required;
    return LMC_OK;
}

/* The spec table of dir's architecture names each tensor of its file once
 * (the loader's unexpected-tensor check would fail otherwise; here names
 * and counts directly), binds every slot the block reads, and the
 * trainer's parameter table is the table's required tensors in order. */
static void test_spec_table(const char *dir, const char *arch, int want_tensors) {
    struct lmc_model m;
    lmc_err err = {0};
    if (lmc_model_load(&m, dir, NULL, &err)) {
        CHECK_MSG(0, "%s: %s", dir, err.msg);
        return;
    }
    CHECK_MSG(!strcmp(m.arch->name, arch), "%s: architecture %s", dir, m.arch->name);
    struct names nm = {0};
    CHECK(!lmc_arch_walk(m.arch, &m.cfg, collect, &nm, &err));
    CHECK_MSG(lmc_arch_count(m.arch, &m.cfg) == nm.n, "%s: count %d", dir, nm.n);
    int on_disk = 0;
    for (int i = 0; i < nm.n; i++) {
        bool found = false;
        for (int64_t k = 0; k < m.st.n_tensors; k++) {
            const char *name = m.st.tensors[k].name, *ap = m.arch->alt_prefix;
            found |= !strcmp(name, nm.list[i]) ||
                     (ap && !strncmp(nm.list[i], ap, strlen(ap)) && !strcmp(name, nm.list[i] + strlen(ap)));
        }
        CHECK_MSG(found || !nm.required[i], "%s: required %s on disk", dir, nm.list[i]);
        on_disk += found;
        for (int k = 0; k < i; k++) CHECK_MSG(strcmp(nm.list[k], nm.list[i]), "%s twice", nm.list[i]);
    }
    CHECK_MSG(on_disk == m.st.n_tensors && on_disk == want_tensors, "%s: %d of %lld tensors named (want %d)",
              dir, on_disk, (long long)m.st.n_tensors, want_tensors);
    for (int64_t l = 0; l < m.cfg.num_layers; l++) {
        const struct lmc_block_w *b = &m.w.layers[l];
        CHECK(b->lin[LMC_L_Q].w.data && b->lin[LMC_L_K].w.data && b->lin[LMC_L_V].w.data &&
              b->lin[LMC_L_O].w.data && b->lin[LMC_L_UP].w.data && b->lin[LMC_L_DOWN].w.data &&
              b->vec[LMC_V_NORM1] && b->vec[LMC_V_NORM2]);
        CHECK((b->vec[LMC_V_Q_NORM] != NULL) == m.cfg.qk_norm && (b->vec[LMC_V_K_NORM] != NULL) == m.cfg.qk_norm);
        CHECK((b->lin[LMC_L_GATE].w.data != NULL) == (m.arch->ffn == &lmc_ffn_swiglu));
    }
    CHECK(m.w.tok_emb.data && m.w.head.w.data && m.w.norm_f);
    struct lmc_backend be;
    LMC_ASSERT(!lmc_backend_cpu_init(&be, 1, &err));
    struct lmc_tmodel tm;
    CHECK_MSG(!lmc_tmodel_init(&tm, &m.cfg, &be, &err), "%s", err.msg);
    int k = 0;
    for (int i = 0; i < nm.n; i++) {
        if (!nm.required[i]) continue;
        CHECK_MSG(k < tm.n_params && !strcmp(tm.params[k].name, nm.list[i]), "%s: param %d is %s", dir, k,
                  k < tm.n_params ? tm.params[k].name : "-");
        k++;
    }
    CHECK(k == tm.n_params);
    lmc_tmodel_free(&tm);
    lmc_backend_cpu_free(&be);
    /* sequence state: K/V rows per token, blocks for n tokens, no fixed slots */
    CHECK(lmc_model_kv_floats_per_token(&m.cfg) == m.cfg.num_layers * m.cfg.num_kv_heads * m.cfg.head_dim);
    CHECK(lmc_model_seq_blocks(&m, 17, 8) == 3 && lmc_model_seq_blocks(&m, 16, 8) == 2);
    CHECK(lmc_model_seq_slot_bytes(&m) == 0);
    for (int i = 0; i < nm.n; i++) free((void *)nm.list[i]);
    lmc_model_free(&m);
}

/* Configs from sizes (what lmc train --arch builds) and size checks. */
static void test_config_build(void) {
    struct lmc_config c;
    lmc_err err = {0};
    struct lmc_model_shape sh = {.vocab = 100, .hidden = 64, .layers = 2, .heads = 4, .max_pos = 32};
    CHECK(!lmc_config_build(&c, "llama", &sh, &err) && c.intermediate_size == 192 && c.num_kv_heads == 4 &&
          c.head_dim == 16 && !c.tie_word_embeddings && lmc_arch_of(&c) == &lmc_arch_llama);
    CHECK(!lmc_config_build(&c, "gpt2", &sh, &err) && c.intermediate_size == 256 && c.tie_word_embeddings &&
          lmc_arch_of(&c) == &lmc_arch_gpt2 && lmc_arch_rot_dim(&lmc_arch_gpt2, &c) == 0);
    CHECK(!lmc_config_build(&c, "qwen3", &sh, &err) && c.qk_norm && lmc_arch_of(&c) == &lmc_arch_qwen3);
    /* written as transformers would, read back as the same model */
    const char *names[] = {"llama", "gpt2", "qwen3"};
    for (int i = 0; i < 3; i++) {
        struct lmc_config back;
        char path[] = "/tmp/lmc-test-config-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        close(fd);
        sh.tie = i == 0;
        CHECK(!lmc_config_build(&c, names[i], &sh, &err));
        c.qkv_bias = i == 2;
        c.o_bias = i == 2;
        c.eos_token_ids[0] = 7;
        c.n_eos = 1;
        CHECK_MSG(!lmc_config_write(&c, path, &err), "%s", err.msg);
        char *text = NULL;
        size_t len = 0;
        CHECK(!lmc_file_read(path, 1 << 20, &text, &len, &err));
        CHECK_MSG(text && !lmc_config_parse(&back, text, len, path, &err), "%s: %s", names[i], err.msg);
        CHECK_MSG(lmc_arch_of(&back) == lmc_arch_of(&c) && back.hidden_size == c.hidden_size &&
                  back.intermediate_size == c.intermediate_size && back.num_kv_heads == c.num_kv_heads &&
                  back.head_dim == c.head_dim && back.qk_norm == c.qk_norm && (i == 1 || back.qkv_bias == c.qkv_bias) &&
                  back.tie_word_embeddings == c.tie_word_embeddings && back.n_eos == 1 &&
                  back.eos_token_ids[0] == 7, "%s config round trip", names[i]);
        free(text);
        unlink(path);
    }
    sh.tie = false;
    CHECK(lmc_config_build(&c, "bert", &sh, &err) == LMC_ERR_ARG && strstr(err.msg, "bert"));
    sh.hidden = 30;
    CHECK(lmc_config_build(&c, "llama", &sh, &err) == LMC_ERR_ARG && strstr(err.msg, "multiple"));
    sh.hidden = 64;
    sh.kv_heads = 3;
    CHECK(lmc_config_build(&c, "llama", &sh, &err) == LMC_ERR_ARG);
    sh.kv_heads = 0;
    sh.vocab = (int64_t)1 << 40; /* vocab x hidden overflows the limit */
    CHECK_MSG(lmc_config_build(&c, "llama", &sh, &err) == LMC_ERR_ARG && strstr(err.msg, "vocab_size"), "%s",
              err.msg);
}

static void count_rows(void *user, const struct lmc_linear *L, const float *x, int64_t M) {
    (void)L, (void)x;
    *(int64_t *)user += M;
}

/* A prompt longer than the last layer's tail (forward.c's FWD_TAIL rows):
 * the last row's logits equal those of all rows, and the cache the
 * prompt leaves is the same bits (the next token's logits equal). */
static void test_last_rows(const char *dir, int threads) {
    struct lmc_model m;
    struct lmc_backend be;
    lmc_err err = {0};
    if (!fixture_open_cpu(&m, &be, NULL, dir, NULL, threads)) return;
    int64_t V = m.cfg.vocab_size, n = 45;
    int32_t ids[46];
    uint64_t seed = 11;
    for (int i = 0; i < n + 1; i++) ids[i] = (int32_t)(test_rng_next(&seed) % (uint64_t)V);
    float *full = malloc((size_t)(n * V) * sizeof(float)), *last = malloc((size_t)V * sizeof(float));
    float *next1 = malloc((size_t)V * sizeof(float)), *next2 = malloc((size_t)V * sizeof(float));
    struct lmc_kv kv;
    struct lmc_acts a;
    CHECK(lmc_kv_init(&kv, &m, &be, 64, &err) == LMC_OK);
    CHECK(lmc_acts_init(&a, &m, &be, 64, 64, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a, &kv, ids, n, 0, full, true, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a, &kv, ids + n, 1, n, next1, false, &err) == LMC_OK);
    CHECK(lmc_model_forward(&m, &be, &a, &kv, ids, n, 0, last, false, &err) == LMC_OK);
    CHECK_MSG(max_rel(last, full + (n - 1) * V, V) < 1e-5, "last row vs all rows %g",
              max_rel(last, full + (n - 1) * V, V));
    CHECK(lmc_model_forward(&m, &be, &a, &kv, ids + n, 1, n, next2, false, &err) == LMC_OK);
    CHECK(memcmp(next1, next2, (size_t)V * sizeof(float)) == 0);
    /* an observed layer (GPTQ calibration) still sees every row */
    int64_t rows = 0;
    struct lmc_linear *down = &m.w.layers[m.cfg.num_layers - 1].lin[LMC_L_DOWN];
    if (!down->w.data) down = &m.w.layers[m.cfg.num_layers - 1].lin[LMC_L_O];
    down->observe = count_rows, down->observe_user = &rows;
    CHECK(lmc_model_forward(&m, &be, &a, &kv, ids, n, 0, last, false, &err) == LMC_OK);
    CHECK_MSG(rows == n, "observed rows %lld", (long long)rows);
    down->observe = NULL;
    CHECK(max_rel(last, full + (n - 1) * V, V) < 1e-5);
    lmc_acts_free(&a);
    lmc_kv_free(&kv);
    free(full);
    free(last);
    free(next1);
    free(next2);
    lmc_backend_cpu_free(&be);
    lmc_model_free(&m);
}

int main(void) {
    test_bad_folders();
    test_config_build();
    test_spec_table("tests/fixtures/llama-tiny", "llama", 21);
    test_spec_table("tests/fixtures/qwen2-tiny", "llama", 26);
    test_spec_table("tests/fixtures/gpt2-tiny", "gpt2", 28);
    test_spec_table("tests/fixtures/qwen3-tiny", "qwen3", 25);
    test_forward_consistency("tests/fixtures/llama-tiny", 1);
    test_forward_consistency("tests/fixtures/qwen2-tiny", 2);
    test_forward_consistency("tests/fixtures/gpt2-tiny", 3);
    test_forward_consistency("tests/fixtures/qwen3-tiny", 2);
    test_last_rows("tests/fixtures/llama-tiny", 2);
    test_last_rows("tests/fixtures/gpt2-tiny", 1);
    test_last_rows("tests/fixtures/qwen3-tiny", 2);
    return test_finish("test_model");
}
