/* test_model.c — model loading and forward: broken model folders (missing,
 * extra, mis-shaped and non-float tensors, unknown model_type, missing
 * folder) give clear errors; prefill in one call, in chunks and token by
 * token give the same logits; session prefix reuse; bad ids rejected. */
#include "test.h"
#include "infer/session.h"
#include "io/safetensors.h"
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
static void make_variant(const char *dir, enum edit e, const char *target) {
    struct lmc_st st = {0};
    lmc_err err = {0};
    if (lmc_st_open_file(&st, FIX "/model.safetensors", &err)) return;
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
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(lmc_st_write(path, w, n, NULL, 0, &err) == LMC_OK);
    snprintf(path, sizeof path, "%s/config.json", dir);
    copy_file(FIX "/config.json", path);
    free(w);
    lmc_st_free(&st);
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
    if (lmc_model_load(&m, dir, NULL, &err) || lmc_backend_cpu_init(&be, threads, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
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

int main(void) {
    test_bad_folders();
    test_forward_consistency("tests/fixtures/llama-tiny", 1);
    test_forward_consistency("tests/fixtures/qwen2-tiny", 2);
    test_forward_consistency("tests/fixtures/gpt2-tiny", 3);
    return test_finish("test_model");
}
