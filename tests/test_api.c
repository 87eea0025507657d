/* test_api.c — the public API of include/lmc.h only: open a fixture, encode
 * a reference prompt, generate greedily and compare with transformers'
 * greedy ids from ref.json (read with cJSON); streaming callback text equals
 * the returned text; bad arguments give errors, not crashes. */
#include "lmc.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int collect(void *user, const char *text, size_t len) {
    char *buf = user;
    size_t have = strlen(buf);
    if (have + len < 4096) {
        memcpy(buf + have, text, len);
        buf[have + len] = 0;
    }
    return 1;
}

static void check_fixture(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/ref.json", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *ref = cJSON_Parse(buf);
    const cJSON *p0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "prompts"), 0);
    const char *text = cJSON_GetObjectItem(p0, "text")->valuestring;
    const cJSON *want = cJSON_GetObjectItem(p0, "greedy_new_ids");

    lmc_engine *e = NULL;
    lmc_err err = {0};
    CHECK_MSG(lmc_engine_open(&e, dir, NULL, &err) == LMC_OK, "%s", err.msg);
    if (!e) {
        cJSON_Delete(ref);
        return;
    }
    int32_t *ids = NULL;
    int64_t nids = 0;
    CHECK(lmc_engine_tokenize(e, text, strlen(text), 0, &ids, &nids, &err) == LMC_OK);
    lmc_generate_params p;
    lmc_generate_params_default(&p);
    p.max_tokens = cJSON_GetArraySize(want);
    p.ignore_eos = 1;
    static char streamed[4096];
    streamed[0] = 0;
    lmc_generation g;
    CHECK(lmc_engine_generate(e, ids, nids, &p, collect, streamed, &g, &err) == LMC_OK);
    CHECK(g.n_ids == cJSON_GetArraySize(want));
    int same = 1;
    for (int64_t i = 0; i < g.n_ids; i++) same &= g.ids[i] == cJSON_GetArrayItem(want, (int)i)->valueint;
    CHECK_MSG(same, "%s: greedy ids differ from transformers", dir);
    CHECK(strlen(streamed) == g.text_len && !memcmp(streamed, g.text, g.text_len));
    CHECK(g.stopped == 0);
    /* the same prompt again reuses the cache and gives the same ids */
    lmc_generation g2;
    CHECK(lmc_engine_generate(e, ids, nids, &p, NULL, NULL, &g2, &err) == LMC_OK);
    CHECK(g2.n_ids == g.n_ids && !memcmp(g2.ids, g.ids, (size_t)g.n_ids * sizeof *g.ids));
    /* detokenize inverts tokenize on this text */
    char *back = NULL;
    size_t blen = 0;
    CHECK(lmc_engine_detokenize(e, ids, nids, &back, &blen, &err) == LMC_OK);
    CHECK(back && blen == strlen(text) && !memcmp(back, text, blen));
    /* bad arguments */
    int32_t bad = (int32_t)lmc_engine_vocab(e);
    lmc_generation g3;
    CHECK(lmc_engine_generate(e, &bad, 1, &p, NULL, NULL, &g3, &err) == LMC_ERR_ARG);
    CHECK(lmc_engine_generate(e, ids, 0, &p, NULL, NULL, &g3, &err) == LMC_ERR_ARG);
    int32_t *none = NULL;
    int64_t nnone = 0;
    CHECK(lmc_engine_tokenize(e, "\xff", 1, 0, &none, &nnone, &err) == LMC_ERR_ARG);
    lmc_free(none);
    lmc_free(back);
    lmc_free(g.ids);
    lmc_free(g.text);
    lmc_free(g2.ids);
    lmc_free(g2.text);
    lmc_free(ids);
    lmc_engine_close(e);
    cJSON_Delete(ref);
}

int main(void) {
    check_fixture("tests/fixtures/llama-tiny");
    check_fixture("tests/fixtures/qwen2-tiny");
    check_fixture("tests/fixtures/gpt2-tiny");
    lmc_engine *e = NULL;
    lmc_err err = {0};
    lmc_engine_opts o = {.dtype = "int3"};
    CHECK(lmc_engine_open(&e, "tests/fixtures/llama-tiny", &o, &err) == LMC_ERR_ARG && e == NULL);
    CHECK(strstr(err.msg, "int3") != NULL);
    CHECK(lmc_engine_open(&e, "/nonexistent", NULL, &err) != LMC_OK && e == NULL);
    return test_finish("test_api");
}
